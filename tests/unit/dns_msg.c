/* dns_msg — the DNS codec of shoal-dns (services/dns/dnsmsg.c): round trips, compression,
 * hostile packets, truncation and EDNS0. */
#include <arpa/inet.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "../../services/dns/dnsmsg.h"

static uint32_t ip(const char *s) {
    struct in_addr a;
    assert_int_equal(inet_pton(AF_INET, s, &a), 1);
    return a.s_addr;
}

static size_t build_query(const char *name, uint16_t type, uint16_t edns, uint8_t *buf) {
    size_t len = 0;
    assert_int_equal(dns_query_build(0x1234, name, type, true, edns, buf, 512, &len), 0);
    return len;
}

static void test_query_round_trip_keeps_id_flags_name_case_and_edns(void **state) {
    uint8_t buf[512];
    size_t len = build_query("Web.Example.", DNS_TYPE_A, 1232, buf);
    dns_message_t m;
    assert_int_equal(dns_message_parse(buf, len, &m), 0);
    assert_int_equal(m.id, 0x1234);
    assert_false(m.qr);
    assert_true(m.rd);
    assert_int_equal(m.opcode, DNS_OPCODE_QUERY);
    assert_true(m.has_question);
    assert_int_equal(m.question.type, DNS_TYPE_A);
    assert_int_equal(m.question.qclass, DNS_CLASS_IN);
    char text[DNS_NAME_TEXT_MAX];
    assert_int_equal(dns_name_to_text(m.question.name, m.question.name_len, text, sizeof text), 0);
    assert_string_equal(text, "Web.Example");
    assert_true(m.has_edns);
    assert_int_equal(m.edns_udp_size, 1232);
    assert_int_equal(m.edns_version, 0);
    assert_int_equal(dns_udp_limit(&m), 1232);

    len = build_query("web", DNS_TYPE_AAAA, 0, buf);
    assert_int_equal(dns_message_parse(buf, len, &m), 0);
    assert_false(m.has_edns);
    assert_int_equal(dns_udp_limit(&m), DNS_UDP_MIN_SIZE);
}

static void test_answer_with_a_records_parses_back(void **state) {
    uint8_t q[512], out[1024];
    size_t qlen = build_query("wEb", DNS_TYPE_A, 0, q);
    dns_message_t m;
    assert_int_equal(dns_message_parse(q, qlen, &m), 0);
    uint32_t addrs[3] = {ip("10.0.0.1"), ip("10.0.0.2"), ip("10.0.0.3")};
    dns_answer_t a = {
        .rcode = DNS_RCODE_NOERROR, .authoritative = true, .ttl = 1, .addrs = addrs, .n_addrs = 3};
    size_t len;
    bool tc = true;
    assert_int_equal(dns_answer_build(&m, &a, 512, out, sizeof out, &len, &tc), 0);
    assert_false(tc);
    assert_int_equal(len, 12 + 5 + 4 + 3 * 16);

    dns_message_t r;
    assert_int_equal(dns_message_parse(out, len, &r), 0);
    assert_true(r.qr);
    assert_true(r.aa);
    assert_false(r.tc);
    assert_true(r.rd);
    assert_int_equal(r.id, 0x1234);
    assert_int_equal(r.rcode, DNS_RCODE_NOERROR);
    assert_int_equal(r.ancount, 3);
    /* the question is echoed byte for byte, case included (DNS 0x20) */
    assert_int_equal(r.question.name_len, m.question.name_len);
    assert_memory_equal(r.question.name, m.question.name, m.question.name_len);
    uint32_t got[8];
    assert_int_equal(dns_answer_addrs(out, len, got, 8), 3);
    assert_memory_equal(got, addrs, sizeof addrs);
    /* TTL of the first record (after header, question, 2-byte pointer, type, class) */
    const uint8_t *rr = out + 12 + 5 + 4;
    assert_int_equal(rr[0], 0xC0);
    assert_int_equal(rr[1], 12);
    assert_int_equal(rr[6] << 24 | rr[7] << 16 | rr[8] << 8 | rr[9], 1);
}

/* A response with names compressed against the question and against another answer. */
static void test_compression_pointers_are_followed(void **state) {
    static const uint8_t msg[] = {
        0xab,
        0xcd,
        0x81,
        0x80,
        0,
        1,
        0,
        2,
        0,
        0,
        0,
        0,
        /* 12: www.example.com A IN */
        3,
        'w',
        'w',
        'w',
        7,
        'e',
        'x',
        'a',
        'm',
        'p',
        'l',
        'e',
        3,
        'c',
        'o',
        'm',
        0,
        0,
        1,
        0,
        1,
        /* 33: answer owned by a pointer to the question */
        0xC0,
        12,
        0,
        1,
        0,
        1,
        0,
        0,
        0,
        60,
        0,
        4,
        192,
        0,
        2,
        1,
        /* 49: answer owned by "mail" + pointer to example.com (offset 16) */
        4,
        'm',
        'a',
        'i',
        'l',
        0xC0,
        16,
        0,
        1,
        0,
        1,
        0,
        0,
        0,
        60,
        0,
        4,
        192,
        0,
        2,
        2,
    };
    dns_message_t m;
    assert_int_equal(dns_message_parse(msg, sizeof msg, &m), 0);
    assert_true(m.qr);
    assert_true(m.ra);
    assert_int_equal(m.ancount, 2);
    uint32_t got[4];
    assert_int_equal(dns_answer_addrs(msg, sizeof msg, got, 4), 2);
    assert_int_equal(got[0], ip("192.0.2.1"));
    assert_int_equal(got[1], ip("192.0.2.2"));
}

static int parse_rc(const uint8_t *msg, size_t len) {
    dns_message_t m;
    return dns_message_parse(msg, len, &m);
}

static void test_compression_loops_and_bad_pointers_are_rejected(void **state) {
    /* answer owner is a pointer to itself */
    uint8_t self_loop[] = {0, 1, 0x81, 0x80, 0, 0, 0, 1, 0, 0, 0, 0, 0xC0, 12,
                           0, 1, 0,    1,    0, 0, 0, 1, 0, 4, 1, 2, 3,    4};
    assert_int_equal(parse_rc(self_loop, sizeof self_loop), -EBADMSG);
    /* label then a pointer back to that label: a loop through forward reading */
    uint8_t label_loop[] = {0,  1, 0x81, 0x80, 0, 0, 0, 1, 0, 0, 0, 0, 1, 'a', 0xC0,
                            12, 0, 1,    0,    1, 0, 0, 0, 1, 0, 4, 1, 2, 3,   4};
    assert_int_equal(parse_rc(label_loop, sizeof label_loop), -EBADMSG);
    /* two names pointing at each other */
    uint8_t ping_pong[] = {0, 1, 0x81, 0x80, 0, 0, 0, 2, 0, 0, 0, 0, 0xC0, 28,
                           0, 1, 0,    1,    0, 0, 0, 1, 0, 2, 9, 9, 0xC0, 12,
                           0, 1, 0,    1,    0, 0, 0, 1, 0, 2, 9, 9};
    assert_int_equal(parse_rc(ping_pong, sizeof ping_pong), -EBADMSG);
    /* a pointer into the header */
    uint8_t into_header[] = {0, 1, 0x81, 0x80, 0, 1, 0, 0, 0, 0, 0, 0, 0xC0, 2, 0, 1, 0, 1};
    assert_int_equal(parse_rc(into_header, sizeof into_header), -EBADMSG);
    /* a pointer cut in half at the end */
    uint8_t half[] = {0, 1, 0x81, 0x80, 0, 1, 0, 0, 0, 0, 0, 0, 0xC0};
    assert_int_equal(parse_rc(half, sizeof half), -EBADMSG);
}

static void test_malformed_packets_are_rejected(void **state) {
    uint8_t q[512];
    size_t len = build_query("example.org", DNS_TYPE_A, 0, q);
    assert_int_equal(parse_rc(q, 11), -EMSGSIZE);
    assert_int_equal(parse_rc(NULL, 0), -EMSGSIZE);
    for (size_t cut = 12; cut < len; cut++) /* every truncation of the question */
        assert_int_equal(parse_rc(q, cut), -EBADMSG);

    /* reserved label types 0x40 / 0x80 */
    uint8_t ext[sizeof q];
    memcpy(ext, q, len);
    ext[12] = 0x47;
    assert_int_equal(parse_rc(ext, len), -EBADMSG);
    ext[12] = 0x87;
    assert_int_equal(parse_rc(ext, len), -EBADMSG);

    /* two questions */
    memcpy(ext, q, len);
    ext[5] = 2;
    assert_int_equal(parse_rc(ext, len), -EBADMSG);

    /* counts promising records that are not there */
    memcpy(ext, q, len);
    ext[7] = 1; /* ancount */
    assert_int_equal(parse_rc(ext, len), -EBADMSG);
    memcpy(ext, q, len);
    ext[10] = 0xff, ext[11] = 0xff; /* arcount 65535 */
    assert_int_equal(parse_rc(ext, len), -EBADMSG);

    /* a name longer than 255 bytes: 5 labels of 63 */
    uint8_t longname[12 + 5 * 64 + 1 + 4] = {0, 1, 0, 0, 0, 1};
    size_t off = 12;
    for (int i = 0; i < 5; i++) {
        longname[off++] = 63;
        memset(longname + off, 'a', 63);
        off += 63;
    }
    longname[off++] = 0;
    longname[off + 1] = 1, longname[off + 3] = 1;
    assert_int_equal(parse_rc(longname, sizeof longname), -EBADMSG);

    /* rdlength past the end */
    uint8_t rd[] = {0, 1, 0x81, 0x80, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0,
                    1, 0, 1,    0,    0, 0, 1, 0, 9, 1, 2, 3, 4};
    assert_int_equal(parse_rc(rd, sizeof rd), -EBADMSG);
}

static void test_edns0_opt_record_rules(void **state) {
    uint8_t q[512];
    size_t len = build_query("a.b", DNS_TYPE_A, 4096, q);
    dns_message_t m;
    assert_int_equal(dns_message_parse(q, len, &m), 0);
    assert_int_equal(m.edns_udp_size, 4096);
    assert_int_equal(dns_udp_limit(&m), DNS_EDNS_UDP_MAX); /* capped */

    /* a size below 512 counts as 512 */
    uint8_t small[512];
    len = build_query("a.b", DNS_TYPE_A, 100, small);
    assert_int_equal(dns_message_parse(small, len, &m), 0);
    assert_int_equal(m.edns_udp_size, 512);
    assert_int_equal(dns_udp_limit(&m), 512);

    /* version, DO bit and extended rcode from the TTL field */
    len = build_query("a.b", DNS_TYPE_A, 1232, q);
    uint8_t *ttl = q + len - 6;
    ttl[0] = 0, ttl[1] = 1, ttl[2] = 0x80;
    assert_int_equal(dns_message_parse(q, len, &m), 0);
    assert_int_equal(m.edns_version, 1);
    assert_true(m.edns_do);

    /* two OPT records */
    uint8_t two[512];
    len = build_query("a.b", DNS_TYPE_A, 1232, two);
    memcpy(two + len, two + len - 11, 11);
    two[11] = 2;
    assert_int_equal(parse_rc(two, len + 11), -EBADMSG);

    /* OPT owned by a name other than the root */
    static const uint8_t named[] = {0,   1, 0, 0,  0, 0, 0, 0, 0, 0, 0, 1, 1,
                                    'x', 0, 0, 41, 4, 0, 0, 0, 0, 0, 0, 0};
    assert_int_equal(parse_rc(named, sizeof named), -EBADMSG);
    /* OPT in the answer section */
    static const uint8_t in_answer[] = {0, 1, 0,  0, 0, 0, 0, 1, 0, 0, 0, 0,
                                        0, 0, 41, 4, 0, 0, 0, 0, 0, 0, 0};
    assert_int_equal(parse_rc(in_answer, sizeof in_answer), -EBADMSG);
    /* an option whose length runs past the rdata */
    static const uint8_t bad_opt[] = {0, 1, 0, 0, 0, 0, 0, 0, 0, 0,  0, 1, 0, 0, 41,
                                      4, 0, 0, 0, 0, 0, 0, 6, 0, 10, 0, 8, 1, 2};
    assert_int_equal(parse_rc(bad_opt, sizeof bad_opt), -EBADMSG);
    /* a well-formed cookie option is fine */
    static const uint8_t cookie[] = {0, 1, 0, 0, 0,  0, 0,  0, 0, 0, 0, 1, 0, 0, 41, 4, 0, 0,
                                     0, 0, 0, 0, 12, 0, 10, 0, 8, 1, 2, 3, 4, 5, 6,  7, 8};
    assert_int_equal(parse_rc(cookie, sizeof cookie), 0);
}

static void fill_addrs(uint32_t *a, size_t n) {
    for (size_t i = 0; i < n; i++)
        a[i] = htonl(0x0a000000u + (uint32_t)i + 1);
}

static void test_udp_answer_over_512_bytes_is_truncated(void **state) {
    uint8_t q[512], out[65536];
    size_t qlen = build_query("big", DNS_TYPE_A, 0, q);
    dns_message_t m;
    assert_int_equal(dns_message_parse(q, qlen, &m), 0);
    uint32_t addrs[100];
    fill_addrs(addrs, 100);
    dns_answer_t a = {.authoritative = true, .ttl = 1, .addrs = addrs, .n_addrs = 100};
    size_t len;
    bool tc = false;
    assert_int_equal(dns_answer_build(&m, &a, dns_udp_limit(&m), out, sizeof out, &len, &tc), 0);
    assert_true(tc);
    assert_true(len <= 512);
    dns_message_t r;
    assert_int_equal(dns_message_parse(out, len, &r), 0);
    assert_true(r.tc);
    size_t fit = (512 - 12 - 9) / 16; /* header, "big" question */
    assert_int_equal(r.ancount, fit);
    uint32_t got[100];
    assert_int_equal(dns_answer_addrs(out, len, got, 100), (int)fit);

    /* over TCP everything fits and nothing is truncated */
    assert_int_equal(dns_answer_build(&m, &a, DNS_TCP_MAX_SIZE, out, sizeof out, &len, &tc), 0);
    assert_false(tc);
    assert_int_equal(dns_answer_addrs(out, len, got, 100), 100);
    assert_int_equal(len, 12 + 9 + 100 * 16);
}

static void test_edns0_size_sets_the_truncation_limit_and_keeps_opt(void **state) {
    uint8_t q[512], out[65536];
    size_t qlen = build_query("big", DNS_TYPE_A, 1000, q);
    dns_message_t m;
    assert_int_equal(dns_message_parse(q, qlen, &m), 0);
    assert_int_equal(dns_udp_limit(&m), 1000);
    uint32_t addrs[100];
    fill_addrs(addrs, 100);
    dns_answer_t a = {.ttl = 1, .addrs = addrs, .n_addrs = 100};
    size_t len;
    bool tc;
    assert_int_equal(dns_answer_build(&m, &a, dns_udp_limit(&m), out, sizeof out, &len, &tc), 0);
    assert_true(tc);
    assert_true(len <= 1000);
    assert_true(len > 1000 - 16);
    dns_message_t r;
    assert_int_equal(dns_message_parse(out, len, &r), 0);
    assert_true(r.tc);
    assert_true(r.has_edns); /* the OPT record survives truncation */
    assert_int_equal(r.edns_udp_size, DNS_EDNS_UDP_MAX);
    assert_int_equal(r.ancount, (1000 - 12 - 9 - 11) / 16);

    /* 60 records (981 bytes) fit in 1000: no TC */
    a.n_addrs = 60;
    assert_int_equal(dns_answer_build(&m, &a, dns_udp_limit(&m), out, sizeof out, &len, &tc), 0);
    assert_false(tc);
    assert_int_equal(len, 12 + 9 + 60 * 16 + 11);
}

static void test_error_answers_carry_rcode_and_question(void **state) {
    uint8_t q[512], out[512];
    size_t qlen = build_query("nope.example", DNS_TYPE_A, 0, q);
    dns_message_t m, r;
    assert_int_equal(dns_message_parse(q, qlen, &m), 0);
    const int codes[] = {DNS_RCODE_NXDOMAIN, DNS_RCODE_SERVFAIL, DNS_RCODE_REFUSED,
                         DNS_RCODE_NOTIMP};
    for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++) {
        dns_answer_t a = {.rcode = codes[i], .recursion_available = true};
        size_t len;
        assert_int_equal(dns_answer_build(&m, &a, 512, out, sizeof out, &len, NULL), 0);
        assert_int_equal(dns_message_parse(out, len, &r), 0);
        assert_int_equal(r.rcode, codes[i]);
        assert_true(r.ra);
        assert_false(r.aa);
        assert_int_equal(r.ancount, 0);
        assert_true(r.has_question);
        assert_int_equal(r.id, 0x1234);
    }

    /* FORMERR for a packet whose question could not be read: header only, same id */
    q[12] = 0x50;
    assert_int_equal(dns_message_parse(q, qlen, &m), -EBADMSG);
    assert_int_equal(m.id, 0x1234);
    assert_false(m.has_question);
    dns_answer_t fe = {.rcode = DNS_RCODE_FORMERR};
    size_t len;
    assert_int_equal(dns_answer_build(&m, &fe, 512, out, sizeof out, &len, NULL), 0);
    assert_int_equal(len, 12);
    assert_int_equal(dns_message_parse(out, len, &r), 0);
    assert_int_equal(r.rcode, DNS_RCODE_FORMERR);
    assert_int_equal(r.qdcount, 0);

    /* BADVERS (16) travels in the OPT record's extended rcode */
    qlen = build_query("x", DNS_TYPE_A, 1232, q);
    assert_int_equal(dns_message_parse(q, qlen, &m), 0);
    dns_answer_t bv = {.rcode = DNS_RCODE_BADVERS};
    assert_int_equal(dns_answer_build(&m, &bv, 512, out, sizeof out, &len, NULL), 0);
    assert_int_equal(dns_message_parse(out, len, &r), 0);
    assert_int_equal(r.rcode, DNS_RCODE_BADVERS);
    m.has_edns = false; /* and cannot be sent without one */
    assert_int_equal(dns_answer_build(&m, &bv, 512, out, sizeof out, &len, NULL), -EINVAL);
}

static void test_build_refuses_buffers_too_small(void **state) {
    uint8_t q[512], out[16];
    size_t qlen = build_query("example.org", DNS_TYPE_A, 0, q), len;
    dns_message_t m;
    assert_int_equal(dns_message_parse(q, qlen, &m), 0);
    dns_answer_t a = {0};
    assert_int_equal(dns_answer_build(&m, &a, 512, out, sizeof out, &len, NULL), -ENOBUFS);
    assert_int_equal(dns_query_build(1, "example.org", 1, true, 0, out, sizeof out, &len),
                     -ENOBUFS);
}

static void test_name_text_forms_and_escapes(void **state) {
    uint8_t wire[DNS_NAME_WIRE_MAX];
    size_t len;
    char text[DNS_NAME_TEXT_MAX];
    assert_int_equal(dns_name_from_text("a\\.b.c", wire, sizeof wire, &len), 0);
    assert_int_equal(len, 1 + 3 + 1 + 1 + 1);
    assert_int_equal(wire[0], 3);
    assert_int_equal(dns_name_to_text(wire, len, text, sizeof text), 0);
    assert_string_equal(text, "a\\.b.c");

    assert_int_equal(dns_name_from_text("\\065bc.", wire, sizeof wire, &len), 0);
    assert_int_equal(dns_name_to_text(wire, len, text, sizeof text), 0);
    assert_string_equal(text, "Abc");

    assert_int_equal(dns_name_from_text(".", wire, sizeof wire, &len), 0);
    assert_int_equal(len, 1);
    assert_int_equal(dns_name_to_text(wire, len, text, sizeof text), 0);
    assert_string_equal(text, ".");

    uint8_t odd[] = {2, 'a', 0x01, 0};
    assert_int_equal(dns_name_to_text(odd, sizeof odd, text, sizeof text), 0);
    assert_string_equal(text, "a\\001");
    assert_int_equal(dns_name_to_text(odd, sizeof odd, text, 4), -ENOBUFS);
    uint8_t no_root[] = {1, 'a'};
    assert_int_equal(dns_name_to_text(no_root, sizeof no_root, text, sizeof text), -EINVAL);

    assert_int_equal(dns_name_from_text("a..b", wire, sizeof wire, &len), -EINVAL);
    assert_int_equal(dns_name_from_text(".a", wire, sizeof wire, &len), -EINVAL);
    assert_int_equal(dns_name_from_text("", wire, sizeof wire, &len), -EINVAL);
    assert_int_equal(dns_name_from_text("a\\", wire, sizeof wire, &len), -EINVAL);
    assert_int_equal(dns_name_from_text("\\999", wire, sizeof wire, &len), -EINVAL);
    char label64[70];
    memset(label64, 'x', 64);
    label64[64] = '\0';
    assert_int_equal(dns_name_from_text(label64, wire, sizeof wire, &len), -EINVAL);
    label64[63] = '\0';
    assert_int_equal(dns_name_from_text(label64, wire, sizeof wire, &len), 0);
    char long_name[300];
    for (int i = 0; i < 100; i++)
        memcpy(long_name + 3 * i, "ab.", 3);
    long_name[299] = '\0';
    assert_int_equal(dns_name_from_text(long_name, wire, sizeof wire, &len), -EINVAL);
}

static void test_names_compare_case_insensitively(void **state) {
    uint8_t a[DNS_NAME_WIRE_MAX], b[DNS_NAME_WIRE_MAX];
    size_t al, bl;
    assert_int_equal(dns_name_from_text("WeB.ShOaL", a, sizeof a, &al), 0);
    assert_int_equal(dns_name_from_text("web.shoal.", b, sizeof b, &bl), 0);
    assert_true(dns_name_equal(a, al, b, bl));
    assert_int_equal(dns_name_from_text("web.shoa1", b, sizeof b, &bl), 0);
    assert_false(dns_name_equal(a, al, b, bl));
    assert_int_equal(dns_name_from_text("web", b, sizeof b, &bl), 0);
    assert_false(dns_name_equal(a, al, b, bl));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_query_round_trip_keeps_id_flags_name_case_and_edns),
        cmocka_unit_test(test_answer_with_a_records_parses_back),
        cmocka_unit_test(test_compression_pointers_are_followed),
        cmocka_unit_test(test_compression_loops_and_bad_pointers_are_rejected),
        cmocka_unit_test(test_malformed_packets_are_rejected),
        cmocka_unit_test(test_edns0_opt_record_rules),
        cmocka_unit_test(test_udp_answer_over_512_bytes_is_truncated),
        cmocka_unit_test(test_edns0_size_sets_the_truncation_limit_and_keeps_opt),
        cmocka_unit_test(test_error_answers_carry_rcode_and_question),
        cmocka_unit_test(test_build_refuses_buffers_too_small),
        cmocka_unit_test(test_name_text_forms_and_escapes),
        cmocka_unit_test(test_names_compare_case_insensitively),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
