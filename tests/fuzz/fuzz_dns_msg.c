/* fuzz_dns_msg — shoal-dns's codec and answer policy on arbitrary bytes.
 *
 * For each input: parse it; if it parses, the question name must survive a text round trip and
 * every answer built for it (each rcode, several size limits) must stay within its limit and
 * parse back with the same id and TC flag; the A-record reader and the full answer policy
 * (dns_server_process, UDP and TCP) run on it too, and any reply they produce must parse and fit.
 * A broken invariant aborts, which the driver (or libFuzzer) reports as a crash. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../services/dns/server.h"
#include "objects.pb-c.h"

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_dns_msg: invariant failed: %s (line %d)\n", #cond, __LINE__);    \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static uint8_t out[2 + DNS_TCP_MAX_SIZE];

static void add(resolver_t *r, const char *key, const ProtobufCMessage *msg) {
    uint8_t buf[512];
    size_t len = protobuf_c_message_pack(msg, buf);
    resolver_apply(r, key, false, buf, len);
}

/* A table with one service ("web") of 40 running tasks, so answers can be truncated. */
static dns_server_t *policy_server(void) {
    static dns_server_t *server;
    static resolver_t *table;
    if (server)
        return server;
    table = resolver_new("shoal");
    Shoal__Annotations ann = SHOAL__ANNOTATIONS__INIT;
    Shoal__ServiceSpec spec = SHOAL__SERVICE_SPEC__INIT;
    Shoal__Service svc = SHOAL__SERVICE__INIT;
    ann.name = "web";
    spec.annotations = &ann;
    svc.spec = &spec;
    add(table, "/services/s1", &svc.base);
    for (int i = 0; i < 40; i++) {
        char addr[32], key[32];
        snprintf(addr, sizeof addr, "10.0.0.%d", i + 1);
        snprintf(key, sizeof key, "/tasks/t%d", i);
        char *addrs[1] = {addr};
        Shoal__NetworkAttachment na = SHOAL__NETWORK_ATTACHMENT__INIT;
        Shoal__NetworkAttachment *nas[1] = {&na};
        Shoal__TaskStatus st = SHOAL__TASK_STATUS__INIT;
        Shoal__Task t = SHOAL__TASK__INIT;
        na.network = "shoal";
        na.addresses = addrs;
        na.n_addresses = 1;
        st.state = SHOAL__TASK_STATE__RUNNING;
        t.status = &st;
        t.desired_state = SHOAL__TASK_STATE__RUNNING;
        t.service_id = "s1";
        t.networks = nas;
        t.n_networks = 1;
        add(table, key, &t.base);
    }
    dns_server_config_t cfg = {.forward = false, .ttl = 1};
    server = dns_server_new(NULL, table, &cfg);
    CHECK(server);
    dns_server_set_synced(server, true);
    return server;
}

static void check_answers(const dns_message_t *m) {
    static uint32_t addrs[64];
    for (size_t i = 0; i < 64; i++)
        addrs[i] = 0x0100000au + (uint32_t)i;
    const int rcodes[] = {DNS_RCODE_NOERROR,  DNS_RCODE_FORMERR, DNS_RCODE_SERVFAIL,
                          DNS_RCODE_NXDOMAIN, DNS_RCODE_NOTIMP,  DNS_RCODE_REFUSED,
                          DNS_RCODE_BADVERS};
    const size_t limits[] = {12, 100, DNS_UDP_MIN_SIZE, dns_udp_limit(m), DNS_TCP_MAX_SIZE};
    for (size_t i = 0; i < sizeof rcodes / sizeof rcodes[0]; i++)
        for (size_t j = 0; j < sizeof limits / sizeof limits[0]; j++) {
            dns_answer_t a = {
                .rcode = rcodes[i], .authoritative = true, .ttl = 1, .addrs = addrs, .n_addrs = 64};
            size_t len = 0;
            bool tc = false;
            int rc = dns_answer_build(m, &a, limits[j], out, sizeof out, &len, &tc);
            if (rc < 0)
                continue;
            CHECK(len <= limits[j]);
            dns_message_t r;
            CHECK(dns_message_parse(out, len, &r) == 0);
            CHECK(r.qr && r.id == m->id && r.tc == tc && r.rcode == rcodes[i]);
            CHECK(r.has_question == m->has_question);
            CHECK(dns_answer_addrs(out, len, addrs, 64) == (int)r.ancount);
        }
}

static void check_policy(const uint8_t *data, size_t size, bool tcp) {
    dns_message_t q;
    size_t len = 0;
    dns_verdict_t v =
        dns_server_process(policy_server(), data, size, tcp, out, sizeof out, &len, &q);
    CHECK(v != DNS_VERDICT_FORWARD); /* forwarding is off in this server */
    if (v != DNS_VERDICT_REPLY)
        return;
    dns_message_t r;
    CHECK(dns_message_parse(out, len, &r) == 0);
    CHECK(r.qr && r.id == q.id);
    CHECK(len <= (tcp ? DNS_TCP_MAX_SIZE : dns_udp_limit(&q)));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static uint32_t addrs[256];
    (void)dns_answer_addrs(data, size, addrs, 256);

    dns_message_t m;
    int rc = dns_message_parse(data, size, &m);
    if (rc == 0 && m.has_question) {
        char text[DNS_NAME_TEXT_MAX];
        uint8_t wire[DNS_NAME_WIRE_MAX];
        size_t wire_len = 0;
        CHECK(m.question.name_len >= 1 && m.question.name_len <= DNS_NAME_WIRE_MAX);
        CHECK(dns_name_to_text(m.question.name, m.question.name_len, text, sizeof text) == 0);
        CHECK(dns_name_from_text(text, wire, sizeof wire, &wire_len) == 0);
        CHECK(wire_len == m.question.name_len);
        CHECK(memcmp(wire, m.question.name, wire_len) == 0);
        CHECK(dns_name_equal(wire, wire_len, m.question.name, m.question.name_len));
    }
    if (rc == 0 || rc == -EBADMSG)
        check_answers(&m);
    check_policy(data, size, false);
    check_policy(data, size, true);
    return 0;
}
