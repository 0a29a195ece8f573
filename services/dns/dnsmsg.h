/* dnsmsg — the DNS wire format (RFC 1035, EDNS0 from RFC 6891) as far as shoal-dns needs it:
 * parse one message (header, the question, the OPT record), build answers (A records or an
 * error code) with truncation, and build queries (tests, tools). No allocation: every function
 * works in caller buffers, and every count in a packet is checked against the bytes present. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define DNS_HEADER_SIZE  12
#define DNS_UDP_MIN_SIZE 512 /* RFC 1035 limit without EDNS0 */
#define DNS_EDNS_UDP_MAX                                                                           \
    1232                        /* what we announce and the most we send over UDP (DNS flag day    \
                                   2020): bigger answers are truncated, clients retry on TCP */
#define DNS_TCP_MAX_SIZE  65535 /* the 2-byte length prefix */
#define DNS_NAME_WIRE_MAX 255   /* RFC 1035 2.3.4, with the terminating root label */
#define DNS_LABEL_MAX     63
#define DNS_NAME_TEXT_MAX 1024 /* presentation form: 4 bytes per octet at worst ("\255") */

enum dns_opcode { DNS_OPCODE_QUERY = 0 };

enum dns_rcode {
    DNS_RCODE_NOERROR = 0,
    DNS_RCODE_FORMERR = 1,
    DNS_RCODE_SERVFAIL = 2,
    DNS_RCODE_NXDOMAIN = 3,
    DNS_RCODE_NOTIMP = 4,
    DNS_RCODE_REFUSED = 5,
    DNS_RCODE_BADVERS = 16, /* extended: only with EDNS0 (upper bits in the OPT TTL) */
};

enum dns_type {
    DNS_TYPE_A = 1,
    DNS_TYPE_NS = 2,
    DNS_TYPE_CNAME = 5,
    DNS_TYPE_SOA = 6,
    DNS_TYPE_PTR = 12,
    DNS_TYPE_MX = 15,
    DNS_TYPE_TXT = 16,
    DNS_TYPE_AAAA = 28,
    DNS_TYPE_SRV = 33,
    DNS_TYPE_OPT = 41,
    DNS_TYPE_AXFR = 252,
    DNS_TYPE_ANY = 255,
};

enum dns_class { DNS_CLASS_IN = 1, DNS_CLASS_CH = 3, DNS_CLASS_ANY = 255 };

typedef struct dns_question {
    uint8_t name[DNS_NAME_WIRE_MAX]; /* uncompressed wire form, case as sent (0x20 bits kept) */
    size_t name_len;                 /* including the root label */
    uint16_t type;
    uint16_t qclass;
} dns_question_t;

typedef struct dns_message {
    uint16_t id;
    bool qr, aa, tc, rd, ra;
    uint8_t opcode;
    int rcode; /* with the EDNS0 extended bits when an OPT record is present */
    uint16_t qdcount, ancount, nscount, arcount;
    bool has_question;
    dns_question_t question;
    bool has_edns;
    uint16_t edns_udp_size; /* as announced (values below 512 count as 512, RFC 6891 6.2.5) */
    uint8_t edns_version;
    bool edns_do;
} dns_message_t;

/* Parses a message. 0 when it is well formed. -EMSGSIZE when shorter than a header: nothing can
 * be answered. -EBADMSG when the header is readable but the rest is not (bad name, bad pointer,
 * a count larger than the records present, more than one question or OPT record...): ret's header
 * fields are set so that a FORMERR can be sent. Trailing bytes after the last record are
 * ignored. */
int dns_message_parse(const uint8_t *buf, size_t len, dns_message_t *ret);

/* The largest UDP answer a client accepts: 512, or its EDNS0 size capped at DNS_EDNS_UDP_MAX. */
size_t dns_udp_limit(const dns_message_t *query);

typedef struct dns_answer {
    int rcode;                /* DNS_RCODE_* (BADVERS needs the query's EDNS0) */
    bool authoritative;       /* AA: a cluster name */
    bool recursion_available; /* RA: we forward */
    uint32_t ttl;
    const uint32_t *addrs; /* IPv4 addresses, network byte order, for A records */
    size_t n_addrs;
} dns_answer_t;

/* Builds the response to `query` in out[cap], no larger than `limit` (dns_udp_limit() over UDP,
 * DNS_TCP_MAX_SIZE over TCP): header, the question as asked, as many whole A records (name
 * compressed to the question) as fit, and an OPT record when the query had one. When some records
 * did not fit the TC bit is set and *ret_truncated (may be NULL) is true. Without a question in
 * the query (FORMERR) only the header is sent back. Returns 0, or -ENOBUFS when not even the
 * header, question and OPT fit in min(limit, cap). */
int dns_answer_build(const dns_message_t *query, const dns_answer_t *answer, size_t limit,
                     uint8_t *out, size_t cap, size_t *ret_len, bool *ret_truncated);

/* Builds a standard query for `name` (presentation form, trailing dot optional; "\." and "\DDD"
 * escapes accepted). edns_udp_size 0: no OPT record. Returns 0, -EINVAL for a bad name,
 * -ENOBUFS. */
int dns_query_build(uint16_t id, const char *name, uint16_t type, bool rd, uint16_t edns_udp_size,
                    uint8_t *out, size_t cap, size_t *ret_len);

/* Presentation form <-> wire form of a name. Text has no trailing dot ("." for the root); dots
 * and backslashes inside labels and bytes outside 0x21..0x7e are written "\." "\\" "\DDD". */
int dns_name_to_text(const uint8_t *wire, size_t wire_len, char *out, size_t cap);
int dns_name_from_text(const char *text, uint8_t *out, size_t cap, size_t *ret_len);
/* Same name, ASCII case-insensitively (RFC 4343), both in uncompressed wire form. */
bool dns_name_equal(const uint8_t *a, size_t a_len, const uint8_t *b, size_t b_len);

/* The IPv4 addresses of the A records in the answer section of a response (any owner name),
 * at most cap of them, network byte order. Returns their number or -EBADMSG. */
int dns_answer_addrs(const uint8_t *buf, size_t len, uint32_t *addrs, size_t cap);

/* Header id, read and rewritten in place (forwarding). */
static inline uint16_t dns_get_id(const uint8_t *buf) {
    return (uint16_t)(buf[0] << 8 | buf[1]);
}
static inline void dns_set_id(uint8_t *buf, uint16_t id) {
    buf[0] = (uint8_t)(id >> 8);
    buf[1] = (uint8_t)id;
}
