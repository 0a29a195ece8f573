/* dnsmsg — DNS message codec for shoal-dns (see dnsmsg.h).
 *
 * Everything here reads bytes that came from the network, so the rules are:
 *   - every read is preceded by a bounds check against the message length;
 *   - counts in the header are never used to size anything: a section loop stops with -EBADMSG as
 *     soon as a record does not fit, so a loop runs at most len / 11 times;
 *   - compression pointers must point strictly before the run of labels that holds them (and
 *     after the header), so following them visits ever lower offsets and always ends; the jump
 *     count is capped as a second guard, and a decompressed name never exceeds 255 bytes;
 *   - names are kept in uncompressed wire form with their case (DNS 0x20 resolvers check that the
 *     answer echoes it) and compared case-insensitively.
 *
 * Answers are built in one pass into a caller buffer: header, the question copied as asked, A
 * records whose owner is a pointer to the question (0xC00C), then the OPT record. The OPT record's
 * space is reserved first so that truncation drops answers, never the EDNS0 signal (RFC 6891 7).
 * Called by server.c for every query and by the tests and fuzz target. */
#include "dnsmsg.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#define DNS_PTR_JUMPS_MAX 127 /* a 255-byte name has at most 127 labels */
#define DNS_RR_FIXED      10  /* type, class, ttl, rdlength */
#define DNS_OPT_RR_SIZE   11  /* root name + fixed part, no options */
#define DNS_A_RR_SIZE     16  /* pointer + fixed part + 4 bytes */

static uint16_t read16(const uint8_t *p) {
    return (uint16_t)(p[0] << 8 | p[1]);
}

static uint32_t read32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint8_t *write16(uint8_t *p, uint16_t v) {
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
    return p + 2;
}

static uint8_t *write32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
    return p + 4;
}

/* Reads the name at *off into out[DNS_NAME_WIRE_MAX] (uncompressed) and moves *off past the name
 * as it is written at that place (after the first pointer, if any). */
static int read_name(const uint8_t *msg, size_t len, size_t *off, uint8_t *out, size_t *ret_len) {
    size_t pos = *off, run_start = *off, n = 0, end = 0;
    bool jumped = false;
    int jumps = 0;
    for (;;) {
        if (pos >= len)
            return -EBADMSG;
        uint8_t c = msg[pos];
        if ((c & 0xC0) == 0xC0) {
            if (pos + 1 >= len)
                return -EBADMSG;
            size_t target = (size_t)(c & 0x3F) << 8 | msg[pos + 1];
            if (target < DNS_HEADER_SIZE || target >= run_start || ++jumps > DNS_PTR_JUMPS_MAX)
                return -EBADMSG;
            if (!jumped) {
                end = pos + 2;
                jumped = true;
            }
            pos = run_start = target;
            continue;
        }
        if (c & 0xC0) /* 0x40 (extended label types) and 0x80 are not in use */
            return -EBADMSG;
        if (n + 1 + c > DNS_NAME_WIRE_MAX || pos + 1 + c > len)
            return -EBADMSG;
        out[n++] = c;
        memcpy(out + n, msg + pos + 1, c);
        n += c;
        pos += 1 + (size_t)c;
        if (c == 0)
            break;
    }
    *off = jumped ? end : pos;
    *ret_len = n;
    return 0;
}

/* The EDNS0 options of an OPT record must tile its rdata exactly. */
static bool opt_options_valid(const uint8_t *p, size_t len) {
    size_t off = 0;
    while (off < len) {
        if (len - off < 4)
            return false;
        size_t olen = read16(p + off + 2);
        if (olen > len - off - 4)
            return false;
        off += 4 + olen;
    }
    return true;
}

/* One resource record at *off; in the additional section (`additional`) an OPT record fills the
 * EDNS0 fields of ret. */
static int parse_rr(const uint8_t *buf, size_t len, size_t *off, bool additional,
                    dns_message_t *ret) {
    uint8_t name[DNS_NAME_WIRE_MAX];
    size_t name_len;
    int rc = read_name(buf, len, off, name, &name_len);
    if (rc < 0)
        return rc;
    if (len - *off < DNS_RR_FIXED)
        return -EBADMSG;
    const uint8_t *p = buf + *off;
    uint16_t type = read16(p), rdlen = read16(p + 8);
    if (rdlen > len - *off - DNS_RR_FIXED)
        return -EBADMSG;
    if (type == DNS_TYPE_OPT) {
        /* RFC 6891 6.1.1: only in the additional section, at most once, owned by the root. */
        if (!additional || ret->has_edns || name_len != 1 ||
            !opt_options_valid(p + DNS_RR_FIXED, rdlen))
            return -EBADMSG;
        uint16_t size = read16(p + 2);
        uint32_t ttl = read32(p + 4);
        ret->has_edns = true;
        ret->edns_udp_size = size < DNS_UDP_MIN_SIZE ? DNS_UDP_MIN_SIZE : size;
        ret->rcode |= (int)(ttl >> 24) << 4;
        ret->edns_version = (uint8_t)(ttl >> 16);
        ret->edns_do = (ttl & 0x8000) != 0;
    }
    *off += DNS_RR_FIXED + (size_t)rdlen;
    return 0;
}

int dns_message_parse(const uint8_t *buf, size_t len, dns_message_t *ret) {
    memset(ret, 0, sizeof *ret);
    if (!buf || len < DNS_HEADER_SIZE)
        return -EMSGSIZE;
    uint16_t flags = read16(buf + 2);
    ret->id = read16(buf);
    ret->qr = flags & 0x8000;
    ret->opcode = (uint8_t)(flags >> 11 & 0xF);
    ret->aa = flags & 0x0400;
    ret->tc = flags & 0x0200;
    ret->rd = flags & 0x0100;
    ret->ra = flags & 0x0080;
    ret->rcode = flags & 0xF;
    ret->qdcount = read16(buf + 4);
    ret->ancount = read16(buf + 6);
    ret->nscount = read16(buf + 8);
    ret->arcount = read16(buf + 10);

    int rc = 0;
    size_t off = DNS_HEADER_SIZE;
    if (ret->qdcount > 1) { /* nobody implements several questions (RFC 9619) */
        rc = -EBADMSG;
        goto fail;
    }
    if (ret->qdcount == 1) {
        dns_question_t *q = &ret->question;
        rc = read_name(buf, len, &off, q->name, &q->name_len);
        if (rc < 0)
            goto fail;
        if (len - off < 4) {
            rc = -EBADMSG;
            goto fail;
        }
        q->type = read16(buf + off);
        q->qclass = read16(buf + off + 2);
        off += 4;
        ret->has_question = true;
    }
    size_t an_ns = (size_t)ret->ancount + ret->nscount;
    for (size_t i = 0; i < an_ns; i++)
        if ((rc = parse_rr(buf, len, &off, false, ret)) < 0)
            goto fail;
    for (size_t i = 0; i < ret->arcount; i++)
        if ((rc = parse_rr(buf, len, &off, true, ret)) < 0)
            goto fail;
    return 0;
fail:
    ret->has_question = false;
    ret->has_edns = false;
    ret->rcode = flags & 0xF;
    return rc;
}

size_t dns_udp_limit(const dns_message_t *query) {
    if (!query->has_edns || query->edns_udp_size <= DNS_UDP_MIN_SIZE)
        return DNS_UDP_MIN_SIZE;
    return query->edns_udp_size < DNS_EDNS_UDP_MAX ? query->edns_udp_size : DNS_EDNS_UDP_MAX;
}

int dns_answer_build(const dns_message_t *query, const dns_answer_t *answer, size_t limit,
                     uint8_t *out, size_t cap, size_t *ret_len, bool *ret_truncated) {
    size_t max = limit < cap ? limit : cap;
    if (max > DNS_TCP_MAX_SIZE)
        max = DNS_TCP_MAX_SIZE;
    bool with_opt = query->has_edns;
    if (answer->rcode > 0xF && !with_opt)
        return -EINVAL; /* an extended rcode needs the OPT record to carry its upper bits */
    const dns_question_t *q = query->has_question ? &query->question : NULL;
    size_t fixed = DNS_HEADER_SIZE + (q ? q->name_len + 4 : 0) + (with_opt ? DNS_OPT_RR_SIZE : 0);
    if (fixed > max)
        return -ENOBUFS;
    size_t want = q ? answer->n_addrs : 0; /* answers are named by a pointer to the question */
    size_t fit = (max - fixed) / DNS_A_RR_SIZE;
    if (fit > want)
        fit = want;
    bool truncated = fit < want;

    uint16_t flags = 0x8000 | (uint16_t)((query->opcode & 0xF) << 11);
    if (answer->authoritative)
        flags |= 0x0400;
    if (truncated)
        flags |= 0x0200;
    if (query->rd)
        flags |= 0x0100;
    if (answer->recursion_available)
        flags |= 0x0080;
    flags |= (uint16_t)(answer->rcode & 0xF);

    uint8_t *p = out;
    p = write16(p, query->id);
    p = write16(p, flags);
    p = write16(p, q ? 1 : 0);
    p = write16(p, (uint16_t)fit);
    p = write16(p, 0);
    p = write16(p, with_opt ? 1 : 0);
    if (q) {
        memcpy(p, q->name, q->name_len);
        p += q->name_len;
        p = write16(p, q->type);
        p = write16(p, q->qclass);
    }
    for (size_t i = 0; i < fit; i++) {
        p = write16(p, 0xC000 | DNS_HEADER_SIZE);
        p = write16(p, DNS_TYPE_A);
        p = write16(p, DNS_CLASS_IN);
        p = write32(p, answer->ttl);
        p = write16(p, 4);
        memcpy(p, &answer->addrs[i], 4); /* already in network byte order */
        p += 4;
    }
    if (with_opt) {
        *p++ = 0; /* root */
        p = write16(p, DNS_TYPE_OPT);
        p = write16(p, DNS_EDNS_UDP_MAX);
        p = write32(p, (uint32_t)(answer->rcode >> 4 & 0xFF) << 24); /* version 0, DO clear */
        p = write16(p, 0);
    }
    *ret_len = (size_t)(p - out);
    if (ret_truncated)
        *ret_truncated = truncated;
    return 0;
}

int dns_name_from_text(const char *text, uint8_t *out, size_t cap, size_t *ret_len) {
    size_t n = 0;
    if (!text || !*text)
        return -EINVAL;
    if (strcmp(text, ".") == 0)
        goto root;
    const char *s = text;
    while (*s) {
        if (n + 1 > cap || n + 1 > DNS_NAME_WIRE_MAX)
            return -EINVAL;
        size_t len_at = n++, label = 0;
        while (*s && *s != '.') {
            int c = (unsigned char)*s++;
            if (c == '\\') {
                if (isdigit((unsigned char)s[0]) && isdigit((unsigned char)s[1]) &&
                    isdigit((unsigned char)s[2])) {
                    c = (s[0] - '0') * 100 + (s[1] - '0') * 10 + (s[2] - '0');
                    if (c > 255)
                        return -EINVAL;
                    s += 3;
                } else if (*s) {
                    c = (unsigned char)*s++;
                } else {
                    return -EINVAL;
                }
            }
            if (label == DNS_LABEL_MAX || n + 1 > cap || n + 1 > DNS_NAME_WIRE_MAX)
                return -EINVAL;
            out[n++] = (uint8_t)c;
            label++;
        }
        if (label == 0) /* "a..b" or a leading dot */
            return -EINVAL;
        out[len_at] = (uint8_t)label;
        if (*s == '.')
            s++;
    }
root:
    if (n + 1 > cap || n + 1 > DNS_NAME_WIRE_MAX)
        return -EINVAL;
    out[n++] = 0;
    *ret_len = n;
    return 0;
}

int dns_name_to_text(const uint8_t *wire, size_t wire_len, char *out, size_t cap) {
    size_t pos = 0, n = 0;
    if (cap < 2)
        return -ENOBUFS;
    if (wire_len >= 1 && wire[0] == 0) {
        strcpy(out, ".");
        return 0;
    }
    while (pos < wire_len && wire[pos] != 0) {
        size_t l = wire[pos++];
        if (l > DNS_LABEL_MAX || l > wire_len - pos)
            return -EINVAL;
        if (n > 0) {
            if (n + 1 >= cap)
                return -ENOBUFS;
            out[n++] = '.';
        }
        for (size_t i = 0; i < l; i++) {
            uint8_t c = wire[pos + i];
            int w;
            if (c == '.' || c == '\\')
                w = snprintf(out + n, cap - n, "\\%c", c);
            else if (c < 0x21 || c > 0x7e)
                w = snprintf(out + n, cap - n, "\\%03u", c);
            else
                w = snprintf(out + n, cap - n, "%c", c);
            if (w < 0 || (size_t)w >= cap - n)
                return -ENOBUFS;
            n += (size_t)w;
        }
        pos += l;
    }
    if (pos >= wire_len) /* no root label */
        return -EINVAL;
    out[n] = '\0';
    return 0;
}

bool dns_name_equal(const uint8_t *a, size_t a_len, const uint8_t *b, size_t b_len) {
    if (a_len != b_len)
        return false;
    for (size_t i = 0; i < a_len; i++)
        if (tolower(a[i]) != tolower(b[i])) /* label lengths are < 64: never letters */
            return false;
    return true;
}

int dns_query_build(uint16_t id, const char *name, uint16_t type, bool rd, uint16_t edns_udp_size,
                    uint8_t *out, size_t cap, size_t *ret_len) {
    uint8_t wire[DNS_NAME_WIRE_MAX];
    size_t wire_len;
    int rc = dns_name_from_text(name, wire, sizeof wire, &wire_len);
    if (rc < 0)
        return rc;
    size_t need = DNS_HEADER_SIZE + wire_len + 4 + (edns_udp_size ? DNS_OPT_RR_SIZE : 0);
    if (need > cap)
        return -ENOBUFS;
    uint8_t *p = out;
    p = write16(p, id);
    p = write16(p, rd ? 0x0100 : 0);
    p = write16(p, 1);
    p = write16(p, 0);
    p = write16(p, 0);
    p = write16(p, edns_udp_size ? 1 : 0);
    memcpy(p, wire, wire_len);
    p += wire_len;
    p = write16(p, type);
    p = write16(p, DNS_CLASS_IN);
    if (edns_udp_size) {
        *p++ = 0;
        p = write16(p, DNS_TYPE_OPT);
        p = write16(p, edns_udp_size);
        p = write32(p, 0);
        p = write16(p, 0);
    }
    *ret_len = (size_t)(p - out);
    return 0;
}

int dns_answer_addrs(const uint8_t *buf, size_t len, uint32_t *addrs, size_t cap) {
    if (len < DNS_HEADER_SIZE)
        return -EBADMSG;
    uint16_t qd = read16(buf + 4), an = read16(buf + 6);
    uint8_t name[DNS_NAME_WIRE_MAX];
    size_t name_len, off = DNS_HEADER_SIZE, n = 0;
    for (size_t i = 0; i < qd; i++) {
        if (read_name(buf, len, &off, name, &name_len) < 0 || len - off < 4)
            return -EBADMSG;
        off += 4;
    }
    for (size_t i = 0; i < an; i++) {
        if (read_name(buf, len, &off, name, &name_len) < 0 || len - off < DNS_RR_FIXED)
            return -EBADMSG;
        const uint8_t *p = buf + off;
        uint16_t type = read16(p), qclass = read16(p + 2), rdlen = read16(p + 8);
        if (rdlen > len - off - DNS_RR_FIXED)
            return -EBADMSG;
        if (type == DNS_TYPE_A && qclass == DNS_CLASS_IN && rdlen == 4 && n < cap)
            memcpy(&addrs[n++], p + DNS_RR_FIXED, 4);
        off += DNS_RR_FIXED + (size_t)rdlen;
    }
    return (int)n;
}
