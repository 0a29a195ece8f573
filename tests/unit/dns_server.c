/* dns_server — shoal-dns's answer policy and its sockets (services/dns/server.c): what each kind
 * of query gets, then real UDP/TCP clients and fake upstream servers against a server running in
 * its own zloop thread (forwarding, id mapping, spoof rejection, failover, timeout, pipelining). */
#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cmocka.h>

#include "../../services/dns/server.h"
#include "objects.pb-c.h"

static uint32_t ip(const char *s) {
    struct in_addr a;
    assert_int_equal(inet_pton(AF_INET, s, &a), 1);
    return a.s_addr;
}

static void put_service(resolver_t *r, const char *id, const char *name) {
    Shoal__Annotations ann = SHOAL__ANNOTATIONS__INIT;
    Shoal__ServiceSpec spec = SHOAL__SERVICE_SPEC__INIT;
    Shoal__Service svc = SHOAL__SERVICE__INIT;
    ann.name = (char *)name;
    spec.annotations = &ann;
    svc.spec = &spec;
    uint8_t buf[512];
    size_t len = shoal__service__pack(&svc, buf);
    char key[64];
    snprintf(key, sizeof key, "/services/%s", id);
    assert_int_equal(resolver_apply(r, key, false, buf, len), 0);
}

static void put_running_task(resolver_t *r, const char *id, const char *service_id,
                             const char *addr) {
    Shoal__TaskStatus st = SHOAL__TASK_STATUS__INIT;
    Shoal__NetworkAttachment na = SHOAL__NETWORK_ATTACHMENT__INIT;
    Shoal__NetworkAttachment *nas[1] = {&na};
    char *addrs[1] = {(char *)addr};
    Shoal__Task t = SHOAL__TASK__INIT;
    st.state = SHOAL__TASK_STATE__RUNNING;
    t.status = &st;
    t.desired_state = SHOAL__TASK_STATE__RUNNING;
    t.service_id = (char *)service_id;
    na.network = "shoal";
    na.addresses = addrs;
    na.n_addresses = 1;
    t.networks = nas;
    t.n_networks = 1;
    uint8_t buf[512];
    size_t len = shoal__task__pack(&t, buf);
    char key[64];
    snprintf(key, sizeof key, "/tasks/%s", id);
    assert_int_equal(resolver_apply(r, key, false, buf, len), 0);
}

/* web: 2 running tasks; big: 100; idle: none. */
static resolver_t *make_table(void) {
    resolver_t *r = resolver_new("shoal");
    assert_non_null(r);
    put_service(r, "s1", "web");
    put_running_task(r, "t1", "s1", "10.0.0.2");
    put_running_task(r, "t2", "s1", "10.0.0.3");
    put_service(r, "s2", "big");
    for (int i = 0; i < 100; i++) {
        char id[16], addr[32];
        snprintf(id, sizeof id, "b%d", i);
        snprintf(addr, sizeof addr, "10.2.0.%d", i + 1);
        put_running_task(r, id, "s2", addr);
    }
    put_service(r, "s3", "idle");
    return r;
}

typedef struct reply {
    dns_verdict_t verdict;
    dns_message_t msg;
    uint8_t wire[65536];
    size_t len;
    int n_addrs;
    uint32_t addrs[256];
} reply_t;

static reply_t R;

static void ask_ex(dns_server_t *s, const uint8_t *q, size_t qlen, bool tcp) {
    dns_message_t query;
    memset(&R, 0, sizeof R);
    R.verdict = dns_server_process(s, q, qlen, tcp, R.wire, sizeof R.wire, &R.len, &query);
    if (R.verdict == DNS_VERDICT_REPLY) {
        assert_int_equal(dns_message_parse(R.wire, R.len, &R.msg), 0);
        assert_true(R.msg.qr);
        R.n_addrs = dns_answer_addrs(R.wire, R.len, R.addrs, 256);
        assert_true(R.n_addrs >= 0);
    }
}

static void ask(dns_server_t *s, const char *name, uint16_t type, uint16_t edns, bool tcp) {
    uint8_t q[512];
    size_t qlen;
    assert_int_equal(dns_query_build(0x4242, name, type, true, edns, q, sizeof q, &qlen), 0);
    ask_ex(s, q, qlen, tcp);
}

static dns_server_t *policy_server(resolver_t *r, bool forward, const char *upstream) {
    const char *ups[1] = {upstream};
    dns_server_config_t cfg = {
        .forward = forward, .ttl = 1, .upstreams = ups, .n_upstreams = upstream ? 1 : 0};
    dns_server_t *s = dns_server_new(NULL, r, &cfg);
    assert_non_null(s);
    dns_server_set_synced(s, true);
    return s;
}

static void test_cluster_names_get_authoritative_a_records(void **state) {
    resolver_t *r = make_table();
    dns_server_t *s = policy_server(r, false, NULL);
    ask(s, "WEB.", DNS_TYPE_A, 0, false);
    assert_int_equal(R.verdict, DNS_VERDICT_REPLY);
    assert_int_equal(R.msg.rcode, DNS_RCODE_NOERROR);
    assert_true(R.msg.aa);
    assert_int_equal(R.msg.id, 0x4242);
    assert_int_equal(R.n_addrs, 2);
    assert_true((R.addrs[0] == ip("10.0.0.2") && R.addrs[1] == ip("10.0.0.3")) ||
                (R.addrs[0] == ip("10.0.0.3") && R.addrs[1] == ip("10.0.0.2")));
    ask(s, "tasks.web", DNS_TYPE_A, 0, false);
    assert_int_equal(R.n_addrs, 2);
    /* the name exists but has no AAAA, or no running task: NOERROR without records */
    ask(s, "web", DNS_TYPE_AAAA, 0, false);
    assert_int_equal(R.msg.rcode, DNS_RCODE_NOERROR);
    assert_true(R.msg.aa);
    assert_int_equal(R.msg.ancount, 0);
    ask(s, "idle", DNS_TYPE_A, 0, false);
    assert_int_equal(R.msg.rcode, DNS_RCODE_NOERROR);
    assert_int_equal(R.msg.ancount, 0);
    /* answers are shuffled: over many queries "big" does not always start the same way */
    uint32_t first = 0;
    bool varied = false;
    int asked = 0;
    for (; asked < 20 && !varied; asked++) {
        ask(s, "big", DNS_TYPE_A, 0, true);
        if (asked == 0)
            first = R.addrs[0];
        else if (R.addrs[0] != first)
            varied = true;
    }
    assert_true(varied);
    assert_int_equal(dns_server_stats(s)->answered, 4 + (uint64_t)asked);
    assert_int_equal(dns_server_stats(s)->queries, 4 + (uint64_t)asked);
    dns_server_destroy(&s);
    assert_null(s);
    resolver_destroy(&r);
}

static void test_udp_answers_are_truncated_tcp_answers_are_not(void **state) {
    resolver_t *r = make_table();
    dns_server_t *s = policy_server(r, false, NULL);
    ask(s, "big", DNS_TYPE_A, 0, false);
    assert_true(R.msg.tc);
    assert_true(R.len <= 512);
    assert_int_equal(R.n_addrs, (512 - 12 - 9) / 16);
    ask(s, "big", DNS_TYPE_A, 1232, false);
    assert_true(R.msg.tc);
    assert_true(R.len <= 1232);
    assert_int_equal(R.n_addrs, (1232 - 12 - 9 - 11) / 16);
    ask(s, "big", DNS_TYPE_A, 0, true);
    assert_false(R.msg.tc);
    assert_int_equal(R.n_addrs, 100);
    assert_int_equal(dns_server_stats(s)->truncated, 2);
    dns_server_destroy(&s);
    resolver_destroy(&r);
}

static void test_unknown_names_depend_on_forwarding(void **state) {
    resolver_t *r = make_table();
    /* forwarding off: we are the authority */
    dns_server_t *s = policy_server(r, false, NULL);
    ask(s, "nope", DNS_TYPE_A, 0, false);
    assert_int_equal(R.msg.rcode, DNS_RCODE_NXDOMAIN);
    assert_true(R.msg.aa);
    assert_false(R.msg.ra);
    assert_int_equal(dns_server_stats(s)->nxdomain, 1);
    dns_server_destroy(&s);
    /* forwarding on, no upstream: SERVFAIL like Docker */
    s = policy_server(r, true, NULL);
    ask(s, "nope", DNS_TYPE_A, 0, false);
    assert_int_equal(R.msg.rcode, DNS_RCODE_SERVFAIL);
    assert_false(R.msg.aa);
    dns_server_destroy(&s);
    /* forwarding on with an upstream: forwarded; cluster names still answered here, with RA */
    s = policy_server(r, true, "127.0.0.1:9");
    ask(s, "nope.example.com", DNS_TYPE_A, 0, false);
    assert_int_equal(R.verdict, DNS_VERDICT_FORWARD);
    ask(s, "web", DNS_TYPE_A, 0, false);
    assert_int_equal(R.verdict, DNS_VERDICT_REPLY);
    assert_true(R.msg.ra);
    assert_true(R.msg.aa);
    ask(s, "web", DNS_TYPE_MX, 0, false); /* other types of our names are not forwarded */
    assert_int_equal(R.verdict, DNS_VERDICT_REPLY);
    assert_int_equal(R.msg.ancount, 0);
    assert_int_equal(dns_server_upstream_count(s), 1);
    assert_string_equal(dns_server_upstream(s, 0), "127.0.0.1:9");
    dns_server_destroy(&s);
    resolver_destroy(&r);
}

static void test_unsupported_and_malformed_queries(void **state) {
    resolver_t *r = make_table();
    dns_server_t *s = policy_server(r, true, "127.0.0.1:9");
    uint8_t q[512];
    size_t qlen;

    /* class CH (version.bind and friends): REFUSED */
    assert_int_equal(dns_query_build(7, "version.bind", DNS_TYPE_TXT, false, 0, q, sizeof q, &qlen),
                     0);
    q[qlen - 1] = DNS_CLASS_CH;
    ask_ex(s, q, qlen, false);
    assert_int_equal(R.msg.rcode, DNS_RCODE_REFUSED);
    /* opcode STATUS (2): NOTIMP */
    assert_int_equal(dns_query_build(7, "web", DNS_TYPE_A, false, 0, q, sizeof q, &qlen), 0);
    q[2] |= 2 << 3;
    ask_ex(s, q, qlen, false);
    assert_int_equal(R.msg.rcode, DNS_RCODE_NOTIMP);
    assert_int_equal(R.msg.opcode, 2);
    /* zone transfer: NOTIMP */
    ask(s, "web", DNS_TYPE_AXFR, 0, true);
    assert_int_equal(R.msg.rcode, DNS_RCODE_NOTIMP);
    /* EDNS version 1: BADVERS */
    assert_int_equal(dns_query_build(7, "web", DNS_TYPE_A, false, 1232, q, sizeof q, &qlen), 0);
    q[qlen - 5] = 1;
    ask_ex(s, q, qlen, false);
    assert_int_equal(R.msg.rcode, DNS_RCODE_BADVERS);
    /* a garbled question: FORMERR with the client's id, no question */
    assert_int_equal(dns_query_build(0x7777, "web", DNS_TYPE_A, false, 0, q, sizeof q, &qlen), 0);
    q[12] = 0x80;
    ask_ex(s, q, qlen, false);
    assert_int_equal(R.verdict, DNS_VERDICT_REPLY);
    assert_int_equal(R.msg.rcode, DNS_RCODE_FORMERR);
    assert_int_equal(R.msg.id, 0x7777);
    assert_int_equal(R.msg.qdcount, 0);
    /* no question at all: FORMERR */
    static const uint8_t empty[12] = {0, 9, 1, 0};
    ask_ex(s, empty, sizeof empty, false);
    assert_int_equal(R.msg.rcode, DNS_RCODE_FORMERR);
    /* responses and runts are dropped, never answered (no reflection loops) */
    assert_int_equal(dns_query_build(7, "web", DNS_TYPE_A, false, 0, q, sizeof q, &qlen), 0);
    q[2] |= 0x80;
    ask_ex(s, q, qlen, false);
    assert_int_equal(R.verdict, DNS_VERDICT_DROP);
    ask_ex(s, q, 5, false);
    assert_int_equal(R.verdict, DNS_VERDICT_DROP);
    const dns_stats_t *st = dns_server_stats(s);
    assert_int_equal(st->queries, 8);
    assert_int_equal(st->refused, 1);
    assert_int_equal(st->notimp, 2);
    assert_int_equal(st->errors, 5); /* BADVERS, 2 FORMERR, 2 dropped */
    dns_server_destroy(&s);
    resolver_destroy(&r);
}

static void test_not_synced_answers_servfail(void **state) {
    resolver_t *r = make_table();
    dns_server_t *s = policy_server(r, true, "127.0.0.1:9");
    dns_server_set_synced(s, false);
    ask(s, "web", DNS_TYPE_A, 0, false);
    assert_int_equal(R.msg.rcode, DNS_RCODE_SERVFAIL);
    ask(s, "example.com", DNS_TYPE_A, 0, false);
    assert_int_equal(R.msg.rcode, DNS_RCODE_SERVFAIL);
    assert_int_equal(dns_server_stats(s)->servfail, 2);
    dns_server_destroy(&s);
    resolver_destroy(&r);
}

static void test_addresses_and_resolv_conf(void **state) {
    struct sockaddr_storage ss;
    socklen_t len;
    assert_int_equal(dns_addr_parse("127.0.0.1:8053", 0, &ss, &len), 0);
    assert_int_equal(ss.ss_family, AF_INET);
    assert_int_equal(ntohs(((struct sockaddr_in *)&ss)->sin_port), 8053);
    assert_int_equal(dns_addr_parse("[::1]:53", 0, &ss, &len), 0);
    assert_int_equal(ss.ss_family, AF_INET6);
    assert_int_equal(dns_addr_parse("10.0.0.1", 53, &ss, &len), 0);
    assert_int_equal(ntohs(((struct sockaddr_in *)&ss)->sin_port), 53);
    assert_int_equal(dns_addr_parse("2001:db8::1", 53, &ss, &len), 0);
    assert_int_equal(dns_addr_parse("10.0.0.1", 0, &ss, &len), -EINVAL);
    assert_int_equal(dns_addr_parse("10.0.0.1:99999", 0, &ss, &len), -EINVAL);
    assert_int_equal(dns_addr_parse("10.0.0.1:", 0, &ss, &len), -EINVAL);
    assert_int_equal(dns_addr_parse("example.com:53", 0, &ss, &len), -EINVAL);
    assert_int_equal(dns_addr_parse("[::1:53", 0, &ss, &len), -EINVAL);
    assert_int_equal(dns_addr_parse("", 53, &ss, &len), -EINVAL);

    char path[] = "/tmp/shoal-dns-resolv-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    const char *conf = "# generated\nsearch example.com\nnameserver 127.0.0.53\n"
                       "nameserver 10.1.2.3\nnameserver ::1\nnameserver 2001:db8::1\n"
                       "nameserver 192.168.9.9\nnameserver not-an-address\noptions ndots:1\n"
                       "nameserver 10.9.9.9\n";
    assert_int_equal(write(fd, conf, strlen(conf)), (ssize_t)strlen(conf));
    close(fd);
    struct sockaddr_storage self[1];
    assert_int_equal(dns_addr_parse("192.168.9.9:53", 0, &self[0], &len), 0);
    char out[4][64];
    int n = dns_upstreams_from_resolv_conf(path, self, 1, out, 4);
    assert_int_equal(n, 3);
    assert_string_equal(out[0], "10.1.2.3:53");
    assert_string_equal(out[1], "[2001:db8::1]:53");
    assert_string_equal(out[2], "10.9.9.9:53");
    assert_int_equal(dns_upstreams_from_resolv_conf(path, self, 1, out, 1), 1);
    unlink(path);
    assert_int_equal(dns_upstreams_from_resolv_conf(path, NULL, 0, out, 4), -ENOENT);
}

/* ---- against real sockets ------------------------------------------------------------- */

typedef struct loop_ctx {
    zloop_t *loop;
    atomic_int stop;
    pthread_t thread;
} loop_ctx_t;

static int on_stop_check(zloop_t *loop, int timer_id, void *arg) {
    loop_ctx_t *c = arg;
    return atomic_load(&c->stop) ? -1 : 0;
}

static void *loop_main(void *arg) {
    loop_ctx_t *c = arg;
    zloop_start(c->loop);
    return NULL;
}

static int udp_socket_bound(uint16_t *ret_port) {
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    socklen_t len = sizeof a;
    getsockname(fd, (struct sockaddr *)&a, &len);
    struct timeval tv = {.tv_sec = 3};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    if (ret_port)
        *ret_port = ntohs(a.sin_port);
    return fd;
}

static struct sockaddr_in loopback(uint16_t port) {
    struct sockaddr_in a = {
        .sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    return a;
}

/* Reads one query at a fake upstream; returns its length, fills *from. */
static size_t upstream_read(int fd, uint8_t *buf, struct sockaddr_in *from, dns_message_t *q) {
    socklen_t len = sizeof *from;
    ssize_t n = recvfrom(fd, buf, 65536, 0, (struct sockaddr *)from, &len);
    assert_true(n > 0);
    assert_int_equal(dns_message_parse(buf, (size_t)n, q), 0);
    return (size_t)n;
}

static void upstream_answer(int fd, const struct sockaddr_in *to, const dns_message_t *q, int rcode,
                            const char *addr) {
    uint8_t out[512];
    size_t len;
    uint32_t a = addr ? ip(addr) : 0;
    dns_answer_t ans = {.rcode = rcode,
                        .recursion_available = true,
                        .ttl = 30,
                        .addrs = &a,
                        .n_addrs = addr ? 1 : 0};
    assert_int_equal(dns_answer_build(q, &ans, 512, out, sizeof out, &len, NULL), 0);
    assert_int_equal(sendto(fd, out, len, 0, (const struct sockaddr *)to, sizeof *to),
                     (ssize_t)len);
}

static void client_send(int fd, uint16_t port, uint16_t id, const char *name) {
    uint8_t q[512];
    size_t len;
    assert_int_equal(dns_query_build(id, name, DNS_TYPE_A, true, 0, q, sizeof q, &len), 0);
    struct sockaddr_in to = loopback(port);
    assert_int_equal(sendto(fd, q, len, 0, (struct sockaddr *)&to, sizeof to), (ssize_t)len);
}

static size_t client_recv(int fd, uint8_t *buf, dns_message_t *m) {
    ssize_t n = recv(fd, buf, 65536, 0);
    assert_true(n > 0);
    assert_int_equal(dns_message_parse(buf, (size_t)n, m), 0);
    return (size_t)n;
}

static void read_full(int fd, uint8_t *buf, size_t len) {
    size_t got = 0;
    while (got < len) {
        ssize_t n = recv(fd, buf + got, len - got, 0);
        assert_true(n > 0);
        got += (size_t)n;
    }
}

/* Connects to the server and sends one framed query; returns the socket. */
static int tcp_query(uint16_t port, uint16_t id, const char *name) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in to = loopback(port);
    assert_int_equal(connect(fd, (struct sockaddr *)&to, sizeof to), 0);
    struct timeval tv = {.tv_sec = 3};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    uint8_t q[514];
    size_t len;
    assert_int_equal(dns_query_build(id, name, DNS_TYPE_A, true, 0, q + 2, 512, &len), 0);
    q[0] = (uint8_t)(len >> 8), q[1] = (uint8_t)len;
    assert_int_equal(write(fd, q, len + 2), (ssize_t)(len + 2));
    return fd;
}

static void test_forwarding_over_udp_and_tcp(void **state) {
    resolver_t *r = make_table();
    uint16_t up1_port, up2_port;
    int up1 = udp_socket_bound(&up1_port), up2 = udp_socket_bound(&up2_port);
    char up1_text[32], up2_text[32];
    snprintf(up1_text, sizeof up1_text, "127.0.0.1:%u", up1_port);
    snprintf(up2_text, sizeof up2_text, "127.0.0.1:%u", up2_port);
    const char *listen_on[1] = {"127.0.0.1:0"};
    const char *ups[2] = {up1_text, up2_text};
    loop_ctx_t lc = {.loop = zloop_new()};
    dns_server_config_t cfg = {.listen = listen_on,
                               .n_listen = 1,
                               .upstreams = ups,
                               .n_upstreams = 2,
                               .forward = true,
                               .ttl = 1,
                               .upstream_timeout_ms = 600,
                               .tcp_idle_ms = 300};
    dns_server_t *s = dns_server_new(lc.loop, r, &cfg);
    assert_non_null(s);
    dns_server_set_synced(s, true);
    const char *bound = dns_server_listen_address(s, 0);
    uint16_t port = (uint16_t)atoi(strrchr(bound, ':') + 1);
    assert_true(port > 0);
    zloop_timer(lc.loop, 10, 0, on_stop_check, &lc);
    assert_int_equal(pthread_create(&lc.thread, NULL, loop_main, &lc), 0);

    uint8_t *buf = malloc(65536), *cbuf = malloc(65536);
    dns_message_t q, m;
    struct sockaddr_in from;
    int client = udp_socket_bound(NULL);
    struct timeval tv = {.tv_sec = 3};
    size_t len;

    /* 0. a TCP client's question answered truncated over UDP is asked again over TCP */
    int up1_tcp = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in up1_addr = loopback(up1_port);
    int one = 1;
    setsockopt(up1_tcp, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    assert_int_equal(bind(up1_tcp, (struct sockaddr *)&up1_addr, sizeof up1_addr), 0);
    assert_int_equal(listen(up1_tcp, 4), 0);
    setsockopt(up1_tcp, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv); /* bounds accept() */
    int tc_client = tcp_query(port, 0x0101, "large.example.org");
    upstream_read(up1, buf, &from, &q);
    uint32_t many[100];
    for (int i = 0; i < 100; i++)
        many[i] = htonl(0xc6336400u + (uint32_t)i); /* 198.51.100.x */
    dns_answer_t big = {.recursion_available = true, .ttl = 30, .addrs = many, .n_addrs = 100};
    bool was_tc = false;
    assert_int_equal(dns_answer_build(&q, &big, 512, cbuf, 65536, &len, &was_tc), 0);
    assert_true(was_tc);
    assert_int_equal(sendto(up1, cbuf, len, 0, (struct sockaddr *)&from, sizeof from),
                     (ssize_t)len);
    int up_conn = accept(up1_tcp, NULL, NULL);
    assert_true(up_conn >= 0);
    setsockopt(up_conn, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    uint8_t hdr[2];
    read_full(up_conn, hdr, 2);
    size_t flen = (size_t)hdr[0] << 8 | hdr[1];
    read_full(up_conn, buf, flen);
    dns_message_t tq;
    assert_int_equal(dns_message_parse(buf, flen, &tq), 0);
    assert_int_equal(tq.id, q.id); /* the same upstream query, now over TCP */
    assert_int_equal(dns_answer_build(&tq, &big, DNS_TCP_MAX_SIZE, cbuf + 2, 65534, &len, NULL), 0);
    cbuf[0] = (uint8_t)(len >> 8), cbuf[1] = (uint8_t)len;
    assert_int_equal(write(up_conn, cbuf, len + 2), (ssize_t)(len + 2));
    read_full(tc_client, hdr, 2);
    flen = (size_t)hdr[0] << 8 | hdr[1];
    read_full(tc_client, cbuf, flen);
    assert_int_equal(dns_message_parse(cbuf, flen, &m), 0);
    assert_int_equal(m.id, 0x0101);
    assert_false(m.tc);
    uint32_t got[128];
    assert_int_equal(dns_answer_addrs(cbuf, flen, got, 128), 100);
    close(up_conn);
    close(up1_tcp);
    close(tc_client);

    /* 1. forwarded with our own id; a reply with another question is ignored (anti-spoofing),
     *    the right one reaches the client with the client's id */
    client_send(client, port, 0x1111, "www.example.org");
    upstream_read(up1, buf, &from, &q);
    char name[DNS_NAME_TEXT_MAX];
    dns_name_to_text(q.question.name, q.question.name_len, name, sizeof name);
    assert_string_equal(name, "www.example.org");
    dns_message_t wrong = q;
    assert_int_equal(dns_name_from_text("evil.example", wrong.question.name,
                                        sizeof wrong.question.name, &wrong.question.name_len),
                     0);
    upstream_answer(up1, &from, &wrong, DNS_RCODE_NOERROR, "6.6.6.6");
    upstream_answer(up1, &from, &q, DNS_RCODE_NOERROR, "192.0.2.7");
    size_t clen = client_recv(client, cbuf, &m);
    assert_int_equal(m.id, 0x1111);
    assert_int_equal(m.rcode, DNS_RCODE_NOERROR);
    uint32_t addr;
    assert_int_equal(dns_answer_addrs(cbuf, clen, &addr, 1), 1);
    assert_int_equal(addr, ip("192.0.2.7"));

    /* 2. REFUSED from the first upstream: the second one is asked */
    client_send(client, port, 0x2222, "b.example.org");
    upstream_read(up1, buf, &from, &q);
    upstream_answer(up1, &from, &q, DNS_RCODE_REFUSED, NULL);
    upstream_read(up2, buf, &from, &q);
    upstream_answer(up2, &from, &q, DNS_RCODE_NOERROR, "192.0.2.8");
    client_recv(client, cbuf, &m);
    assert_int_equal(m.id, 0x2222);
    assert_int_equal(m.rcode, DNS_RCODE_NOERROR);

    /* 3. nobody answers: retried on the other upstream at half the timeout, then SERVFAIL */
    client_send(client, port, 0x3333, "slow.example.org");
    upstream_read(up2, buf, &from, &q); /* up2 answered last, so it is asked first now */
    upstream_read(up1, buf, &from, &q);
    client_recv(client, cbuf, &m);
    assert_int_equal(m.id, 0x3333);
    assert_int_equal(m.rcode, DNS_RCODE_SERVFAIL);

    /* 4. TCP: two framed queries in one write, one ours and one forwarded; both answered */
    int t = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in to = loopback(port);
    assert_int_equal(connect(t, (struct sockaddr *)&to, sizeof to), 0);
    setsockopt(t, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    uint8_t frames[1024];
    size_t off = 0;
    assert_int_equal(
        dns_query_build(0x4444, "big", DNS_TYPE_A, true, 0, frames + off + 2, 500, &len), 0);
    frames[off] = (uint8_t)(len >> 8), frames[off + 1] = (uint8_t)len;
    off += 2 + len;
    assert_int_equal(
        dns_query_build(0x5555, "c.example.org", DNS_TYPE_A, true, 0, frames + off + 2, 500, &len),
        0);
    frames[off] = (uint8_t)(len >> 8), frames[off + 1] = (uint8_t)len;
    off += 2 + len;
    assert_int_equal(write(t, frames, off), (ssize_t)off);
    upstream_read(up2, buf, &from, &q);
    upstream_answer(up2, &from, &q, DNS_RCODE_NOERROR, "192.0.2.9");
    bool saw_big = false, saw_fwd = false;
    for (int i = 0; i < 2; i++) {
        uint8_t hdr[2];
        read_full(t, hdr, 2);
        size_t flen = (size_t)hdr[0] << 8 | hdr[1];
        read_full(t, cbuf, flen);
        assert_int_equal(dns_message_parse(cbuf, flen, &m), 0);
        uint32_t addrs[128];
        int n = dns_answer_addrs(cbuf, flen, addrs, 128);
        if (m.id == 0x4444) {
            saw_big = true;
            assert_false(m.tc);
            assert_int_equal(n, 100); /* TCP: no truncation */
        } else {
            assert_int_equal(m.id, 0x5555);
            saw_fwd = true;
            assert_int_equal(n, 1);
            assert_int_equal(addrs[0], ip("192.0.2.9"));
        }
    }
    assert_true(saw_big && saw_fwd);

    /* 5. a frame that is too long closes the connection */
    uint8_t bad[2] = {0xff, 0xff};
    assert_int_equal(write(t, bad, 2), 2);
    assert_int_equal(recv(t, cbuf, 10, 0), 0);
    close(t);

    /* 6. an idle connection is closed by the server (idle 300 ms, swept every second) */
    t = socket(AF_INET, SOCK_STREAM, 0);
    assert_int_equal(connect(t, (struct sockaddr *)&to, sizeof to), 0);
    setsockopt(t, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    assert_int_equal(recv(t, cbuf, 10, 0), 0);
    close(t);

    atomic_store(&lc.stop, 1);
    pthread_join(lc.thread, NULL);
    const dns_stats_t *st = dns_server_stats(s);
    assert_int_equal(st->forwarded, 5);
    assert_int_equal(st->upstream_timeouts, 1);
    assert_int_equal(st->tcp_accepted, 3);
    assert_int_equal(dns_server_pending(s), 0);
    assert_int_equal(dns_server_tcp_connections(s), 0);
    dns_server_destroy(&s);
    zloop_destroy(&lc.loop);
    resolver_destroy(&r);
    close(client);
    close(up1);
    close(up2);
    free(buf);
    free(cbuf);
}

static void test_bad_listen_or_self_upstream_fails_cleanly(void **state) {
    resolver_t *r = make_table();
    zloop_t *loop = zloop_new();
    const char *bad[1] = {"not-an-address"};
    dns_server_config_t cfg = {.listen = bad, .n_listen = 1, .forward = true};
    assert_null(dns_server_new(loop, r, &cfg));
    assert_int_equal(errno, EINVAL);

    int fd = udp_socket_bound(NULL); /* take a port, then ask for it */
    struct sockaddr_in a;
    socklen_t alen = sizeof a;
    getsockname(fd, (struct sockaddr *)&a, &alen);
    char taken[32];
    snprintf(taken, sizeof taken, "127.0.0.1:%u", ntohs(a.sin_port));
    const char *busy[1] = {taken};
    cfg.listen = busy;
    assert_null(dns_server_new(loop, r, &cfg));
    assert_int_equal(errno, EADDRINUSE);
    close(fd);

    const char *listen[1] = {"127.0.0.1:0"};
    dns_server_config_t ok = {.listen = listen, .n_listen = 1, .forward = true};
    dns_server_t *s = dns_server_new(loop, r, &ok);
    assert_non_null(s);
    char self_ep[64];
    snprintf(self_ep, sizeof self_ep, "%s", dns_server_listen_address(s, 0));
    dns_server_destroy(&s);
    const char *self_up[1] = {self_ep};
    dns_server_config_t loopy = {
        .listen = listen, .n_listen = 1, .forward = true, .upstreams = self_up, .n_upstreams = 1};
    listen[0] = self_ep;
    assert_null(dns_server_new(loop, r, &loopy));
    assert_int_equal(errno, ELOOP);
    zloop_destroy(&loop);
    resolver_destroy(&r);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cluster_names_get_authoritative_a_records),
        cmocka_unit_test(test_udp_answers_are_truncated_tcp_answers_are_not),
        cmocka_unit_test(test_unknown_names_depend_on_forwarding),
        cmocka_unit_test(test_unsupported_and_malformed_queries),
        cmocka_unit_test(test_not_synced_answers_servfail),
        cmocka_unit_test(test_addresses_and_resolv_conf),
        cmocka_unit_test(test_forwarding_over_udp_and_tcp),
        cmocka_unit_test(test_bad_listen_or_self_upstream_fails_cleanly),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
