/* dns_daemon — bin/shoal-dns against a real bin/shoal-store: a Service and a RUNNING Task
 * written into the store become DNS answers over UDP and TCP (our codec, and dig when installed),
 * removing the task removes the answer, unknown names go to an upstream (a fake one in this
 * process), and dns.Lookup / bus.Stats answer on the bus.
 *
 * Skipped, with the reason printed, when the binaries are not built. Only the two daemons started
 * here are signalled, by pid; the state dir is a fresh /tmp/shoal-dns-test-* removed at the end. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "../../services/dns/dnsmsg.h"
#include "bus.h"
#include "config.h"
#include "dns.pb-c.h"
#include "objects.pb-c.h"
#include "storecli.h"

static struct {
    bool skip;
    char reason[256];
    char dir[PATH_MAX];
    char bin[PATH_MAX];
    pid_t store_pid, dns_pid;
    uint16_t port, upstream_port;
    int upstream_fd;
    shoal_config_t cfg;
    zcert_t *admin;
    store_client_t *store;
} T;

/* ---- helpers ---------------------------------------------------------------------------- */

static pid_t spawn(const char *name, char *const argv[]) {
    char log_path[PATH_MAX + 64];
    snprintf(log_path, sizeof log_path, "%s/%s.log", T.dir, name);
    pid_t pid = fork();
    if (pid == 0) {
        int fd = open(log_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        execv(argv[0], argv);
        _exit(127);
    }
    return pid;
}

static void stop(pid_t *pid) {
    if (*pid <= 0)
        return;
    kill(*pid, SIGTERM);
    for (int i = 0; i < 50; i++) {
        if (waitpid(*pid, NULL, WNOHANG) == *pid) {
            *pid = 0;
            return;
        }
        usleep(100 * 1000);
    }
    kill(*pid, SIGKILL);
    waitpid(*pid, NULL, 0);
    *pid = 0;
}

static void print_log(const char *name) {
    char cmd[PATH_MAX + 64];
    snprintf(cmd, sizeof cmd, "tail -n 20 '%s/%s.log'", T.dir, name);
    printf("--- %s log ---\n", name);
    fflush(stdout);
    if (system(cmd) != 0)
        printf("(no log)\n");
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    return remove(path);
}

/* A port free for both UDP and TCP on 127.0.0.1 right now. */
static uint16_t free_port(void) {
    for (int attempt = 0; attempt < 20; attempt++) {
        int u = socket(AF_INET, SOCK_DGRAM, 0), t = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        socklen_t len = sizeof a;
        uint16_t port = 0;
        if (bind(u, (struct sockaddr *)&a, sizeof a) == 0 &&
            getsockname(u, (struct sockaddr *)&a, &len) == 0 &&
            bind(t, (struct sockaddr *)&a, sizeof a) == 0)
            port = ntohs(a.sin_port);
        close(u);
        close(t);
        if (port)
            return port;
    }
    return 0;
}

static struct sockaddr_in loopback(uint16_t port) {
    struct sockaddr_in a = {
        .sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    return a;
}

typedef struct answer {
    int rcode; /* -1: no answer */
    bool tc;
    int n;
    uint32_t addrs[64];
} answer_t;

static void answer_parse(const uint8_t *buf, size_t len, uint16_t id, answer_t *a) {
    dns_message_t m;
    a->rcode = -1;
    if (dns_message_parse(buf, len, &m) < 0 || !m.qr || m.id != id)
        return;
    a->rcode = m.rcode;
    a->tc = m.tc;
    a->n = dns_answer_addrs(buf, len, a->addrs, 64);
}

static void query_udp(const char *name, answer_t *a) {
    static uint16_t next_id = 100;
    uint16_t id = ++next_id;
    uint8_t q[512], buf[4096];
    size_t qlen;
    a->rcode = -1;
    assert_int_equal(dns_query_build(id, name, DNS_TYPE_A, true, 1232, q, sizeof q, &qlen), 0);
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    struct timeval tv = {.tv_sec = 3};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    struct sockaddr_in to = loopback(T.port);
    if (sendto(fd, q, qlen, 0, (struct sockaddr *)&to, sizeof to) == (ssize_t)qlen) {
        ssize_t n = recv(fd, buf, sizeof buf, 0);
        if (n > 0)
            answer_parse(buf, (size_t)n, id, a);
    }
    close(fd);
}

static bool read_full(int fd, uint8_t *buf, size_t len) {
    for (size_t got = 0; got < len;) {
        ssize_t n = recv(fd, buf + got, len - got, 0);
        if (n <= 0)
            return false;
        got += (size_t)n;
    }
    return true;
}

static void query_tcp(const char *name, answer_t *a) {
    uint8_t q[514], buf[65536];
    size_t qlen;
    a->rcode = -1;
    assert_int_equal(dns_query_build(0x7a7a, name, DNS_TYPE_A, true, 0, q + 2, 512, &qlen), 0);
    q[0] = (uint8_t)(qlen >> 8), q[1] = (uint8_t)qlen;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct timeval tv = {.tv_sec = 3};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    struct sockaddr_in to = loopback(T.port);
    uint8_t hdr[2];
    if (connect(fd, (struct sockaddr *)&to, sizeof to) == 0 &&
        write(fd, q, qlen + 2) == (ssize_t)(qlen + 2) && read_full(fd, hdr, 2)) {
        size_t len = (size_t)hdr[0] << 8 | hdr[1];
        if (read_full(fd, buf, len))
            answer_parse(buf, len, 0x7a7a, a);
    }
    close(fd);
}

/* Polls `name` over UDP until it has `want` addresses (the first being `first` when given). */
static bool wait_for(const char *name, int want, const char *first, answer_t *a) {
    for (int i = 0; i < 100; i++) {
        query_udp(name, a);
        if (a->rcode == DNS_RCODE_NOERROR && a->n == want) {
            if (!first)
                return true;
            char buf[16];
            inet_ntop(AF_INET, &a->addrs[0], buf, sizeof buf);
            if (strcmp(buf, first) == 0)
                return true;
        }
        usleep(100 * 1000);
    }
    print_log("dns");
    print_log("store");
    return false;
}

static void put_msg(const char *key, const ProtobufCMessage *msg) {
    size_t len = protobuf_c_message_get_packed_size(msg);
    uint8_t *buf = malloc(len ? len : 1);
    protobuf_c_message_pack(msg, buf);
    int rc = store_put(T.store, key, buf, len, 0, NULL);
    free(buf);
    if (rc < 0)
        printf("store_put %s: %s\n", key, store_client_error(T.store));
    assert_int_equal(rc, 0);
}

static void put_service(const char *id, const char *name) {
    Shoal__Meta meta = SHOAL__META__INIT;
    Shoal__Annotations ann = SHOAL__ANNOTATIONS__INIT;
    Shoal__ServiceSpec spec = SHOAL__SERVICE_SPEC__INIT;
    Shoal__Service svc = SHOAL__SERVICE__INIT;
    meta.id = (char *)id;
    meta.version = 1;
    ann.name = (char *)name;
    spec.annotations = &ann;
    svc.meta = &meta;
    svc.spec = &spec;
    char key[128];
    snprintf(key, sizeof key, "/services/%s", id);
    put_msg(key, &svc.base);
}

static void put_task(const char *id, const char *service_id, int state, const char *addr) {
    Shoal__Meta meta = SHOAL__META__INIT;
    Shoal__TaskStatus st = SHOAL__TASK_STATUS__INIT;
    Shoal__NetworkAttachment na = SHOAL__NETWORK_ATTACHMENT__INIT;
    Shoal__NetworkAttachment *nas[1] = {&na};
    char *addrs[1] = {(char *)addr};
    Shoal__Task t = SHOAL__TASK__INIT;
    meta.id = (char *)id;
    t.meta = &meta;
    st.state = state;
    t.status = &st;
    t.desired_state = SHOAL__TASK_STATE__RUNNING;
    t.service_id = (char *)service_id;
    na.network = "shoal";
    na.addresses = addrs;
    na.n_addresses = 1;
    t.networks = nas;
    t.n_networks = 1;
    char key[128];
    snprintf(key, sizeof key, "/tasks/%s", id);
    put_msg(key, &t.base);
}

/* `dig @127.0.0.1 -p PORT name +short [+tcp]` output, or NULL when dig is not installed. */
static char *dig_short(const char *name, bool tcp) {
    static char out[1024];
    if (system("command -v dig >/dev/null 2>&1") != 0)
        return NULL;
    char cmd[512];
    snprintf(cmd, sizeof cmd, "dig @127.0.0.1 -p %u %s +short +time=2 +tries=1 %s 2>&1", T.port,
             name, tcp ? "+tcp" : "");
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    size_t n = fread(out, 1, sizeof out - 1, p);
    out[n] = '\0';
    pclose(p);
    return out;
}

#define SKIP_IF_NEEDED()                                                                           \
    do {                                                                                           \
        if (T.skip) {                                                                              \
            printf("skipped: %s\n", T.reason);                                                     \
            skip();                                                                                \
        }                                                                                          \
    } while (0)

/* ---- fixture ---------------------------------------------------------------------------- */

static int group_setup(void **state) {
    const char *bin = getenv("BIN") ? getenv("BIN") : "bin";
    snprintf(T.bin, sizeof T.bin, "%s", bin);
    char store_bin[PATH_MAX + 32], dns_bin[PATH_MAX + 32];
    snprintf(store_bin, sizeof store_bin, "%s/shoal-store", bin);
    snprintf(dns_bin, sizeof dns_bin, "%s/shoal-dns", bin);
    if (access(store_bin, X_OK) != 0 || access(dns_bin, X_OK) != 0) {
        T.skip = true;
        snprintf(T.reason, sizeof T.reason,
                 "%s or %s not built (make bin/shoal-store bin/shoal-dns)", store_bin, dns_bin);
        printf("dns_daemon: %s\n", T.reason);
        return 0;
    }
    snprintf(T.dir, sizeof T.dir, "/tmp/shoal-dns-test-XXXXXX");
    assert_non_null(mkdtemp(T.dir));
    const char *names[] = {"store", "dns", "admin", NULL};
    assert_int_equal(config_init(T.dir, names), 0);
    assert_int_equal(config_load(T.dir, &T.cfg), 0);

    T.port = free_port();
    assert_true(T.port > 0);
    T.upstream_fd = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in up = loopback(0);
    assert_int_equal(bind(T.upstream_fd, (struct sockaddr *)&up, sizeof up), 0);
    socklen_t len = sizeof up;
    getsockname(T.upstream_fd, (struct sockaddr *)&up, &len);
    T.upstream_port = ntohs(up.sin_port);
    struct timeval tv = {.tv_sec = 5};
    setsockopt(T.upstream_fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);

    char listen[64], upstream[64];
    snprintf(listen, sizeof listen, "127.0.0.1:%u", T.port);
    snprintf(upstream, sizeof upstream, "127.0.0.1:%u", T.upstream_port);
    char *store_argv[] = {store_bin, "--state-dir", T.dir, "--log-level", "info", NULL};
    char *dns_argv[] = {dns_bin,      "--state-dir", T.dir,         "--listen", listen,
                        "--upstream", upstream,      "--log-level", "debug",    NULL};
    T.store_pid = spawn("store", store_argv);
    T.dns_pid = spawn("dns", dns_argv);
    assert_true(T.store_pid > 0 && T.dns_pid > 0);

    T.admin = bus_identity_load(T.dir, "admin");
    assert_non_null(T.admin);
    T.store = store_client_new(&T.cfg, T.admin);
    assert_non_null(T.store);
    store_client_set_timeout(T.store, 10000);
    return 0;
}

static int group_teardown(void **state) {
    if (T.skip)
        return 0;
    store_client_destroy(&T.store);
    zcert_destroy(&T.admin);
    stop(&T.dns_pid);
    stop(&T.store_pid);
    close(T.upstream_fd);
    if (getenv("SHOAL_KEEP_TEST_DIR"))
        printf("state dir kept: %s\n", T.dir);
    else if (T.dir[0])
        nftw(T.dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    return 0;
}

/* ---- tests ------------------------------------------------------------------------------ */

static void test_daemon_resolves_a_running_task_over_udp_and_tcp(void **state) {
    SKIP_IF_NEEDED();
    put_service("svc1", "web");
    put_task("task1", "svc1", SHOAL__TASK_STATE__RUNNING, "10.0.9.5");
    answer_t a;
    assert_true(wait_for("web", 1, "10.0.9.5", &a));
    query_udp("WEB.", &a);
    assert_int_equal(a.rcode, DNS_RCODE_NOERROR);
    assert_int_equal(a.n, 1);
    query_tcp("tasks.web", &a);
    assert_int_equal(a.rcode, DNS_RCODE_NOERROR);
    assert_int_equal(a.n, 1);
    char buf[16];
    inet_ntop(AF_INET, &a.addrs[0], buf, sizeof buf);
    assert_string_equal(buf, "10.0.9.5");

    char *out = dig_short("web", false);
    if (!out) {
        printf("dig not installed: dig checks skipped\n");
        return;
    }
    assert_string_equal(out, "10.0.9.5\n");
    out = dig_short("tasks.web", true);
    assert_string_equal(out, "10.0.9.5\n");
}

static void test_daemon_follows_task_state_and_removal(void **state) {
    SKIP_IF_NEEDED();
    put_service("svc1", "web");
    put_task("task1", "svc1", SHOAL__TASK_STATE__RUNNING, "10.0.9.5");
    put_task("task2", "svc1", SHOAL__TASK_STATE__STARTING, "10.0.9.6");
    answer_t a;
    assert_true(wait_for("web", 1, "10.0.9.5", &a));
    put_task("task2", "svc1", SHOAL__TASK_STATE__RUNNING, "10.0.9.6");
    assert_true(wait_for("web", 2, NULL, &a));
    /* a task that stops leaves the answer */
    put_task("task1", "svc1", SHOAL__TASK_STATE__SHUTDOWN, "10.0.9.5");
    assert_true(wait_for("web", 1, "10.0.9.6", &a));
    /* a deleted task too: the service is still known, with no address (NOERROR, no records) */
    int64_t deleted = 0;
    assert_int_equal(store_delete(T.store, "/tasks/task2", &deleted), 0);
    assert_int_equal(deleted, 1);
    assert_true(wait_for("web", 0, NULL, &a));
    query_tcp("web", &a);
    assert_int_equal(a.rcode, DNS_RCODE_NOERROR);
    assert_int_equal(a.n, 0);
    char *out = dig_short("web", false);
    if (out)
        assert_string_equal(out, "");
}

static void test_daemon_forwards_other_names_upstream(void **state) {
    SKIP_IF_NEEDED();
    answer_t a;
    assert_true(wait_for("web", 0, NULL, &a) || wait_for("web", 1, NULL, &a) ||
                wait_for("web", 2, NULL, &a));
    /* the query goes to our fake upstream with another id; its answer comes back */
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    struct timeval tv = {.tv_sec = 5};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    uint8_t q[512], buf[4096];
    size_t qlen;
    assert_int_equal(
        dns_query_build(0x0bad, "outside.example", DNS_TYPE_A, true, 0, q, sizeof q, &qlen), 0);
    struct sockaddr_in to = loopback(T.port);
    assert_int_equal(sendto(fd, q, qlen, 0, (struct sockaddr *)&to, sizeof to), (ssize_t)qlen);

    struct sockaddr_in from;
    socklen_t from_len;
    dns_message_t fq;
    char name[DNS_NAME_TEXT_MAX] = "";
    /* skip queries forwarded earlier (a name asked while the table was still loading) */
    for (int tries = 0; tries < 10 && strcmp(name, "outside.example"); tries++) {
        from_len = sizeof from;
        ssize_t n =
            recvfrom(T.upstream_fd, buf, sizeof buf, 0, (struct sockaddr *)&from, &from_len);
        assert_true(n > 0);
        assert_int_equal(dns_message_parse(buf, (size_t)n, &fq), 0);
        assert_int_equal(
            dns_name_to_text(fq.question.name, fq.question.name_len, name, sizeof name), 0);
    }
    assert_string_equal(name, "outside.example");
    uint32_t addr = inet_addr("198.51.100.1");
    dns_answer_t ans = {.recursion_available = true, .ttl = 60, .addrs = &addr, .n_addrs = 1};
    size_t len;
    assert_int_equal(dns_answer_build(&fq, &ans, 512, buf, sizeof buf, &len, NULL), 0);
    assert_int_equal(sendto(T.upstream_fd, buf, len, 0, (struct sockaddr *)&from, from_len),
                     (ssize_t)len);

    ssize_t n = recv(fd, buf, sizeof buf, 0);
    assert_true(n > 0);
    answer_parse(buf, (size_t)n, 0x0bad, &a);
    assert_int_equal(a.rcode, DNS_RCODE_NOERROR);
    assert_int_equal(a.n, 1);
    assert_int_equal(a.addrs[0], addr);
    close(fd);
}

static void test_daemon_serves_lookup_and_stats_on_the_bus(void **state) {
    SKIP_IF_NEEDED();
    put_service("svc9", "api");
    put_task("task9", "svc9", SHOAL__TASK_STATE__RUNNING, "10.0.9.99");
    answer_t a;
    assert_true(wait_for("api", 1, "10.0.9.99", &a));

    char ep[PATH_MAX + 32], key[41];
    config_rpc_endpoint(&T.cfg, "dns", ep, sizeof ep);
    assert_int_equal(bus_public_key(T.dir, "dns", key), 0);
    bus_client_t *c = bus_client_new(T.admin, ep, key);
    assert_non_null(c);

    Shoal__Dns__LookupRequest req = SHOAL__DNS__LOOKUP_REQUEST__INIT;
    req.name = "API.";
    Shoal__Dns__LookupResponse *resp = NULL;
    int rc = bus_client_call(c, "dns.Lookup", &req.base, &shoal__dns__lookup_response__descriptor,
                             5000, (ProtobufCMessage **)&resp);
    assert_int_equal(rc, BUS_OK);
    assert_int_equal(resp->n_addresses, 1);
    assert_string_equal(resp->addresses[0], "10.0.9.99");
    shoal__dns__lookup_response__free_unpacked(resp, NULL);

    req.name = "no-such-service";
    rc = bus_client_call(c, "dns.Lookup", &req.base, &shoal__dns__lookup_response__descriptor, 5000,
                         (ProtobufCMessage **)&resp);
    assert_int_equal(rc, BUS_NOT_FOUND);
    req.name = "";
    rc = bus_client_call(c, "dns.Lookup", &req.base, &shoal__dns__lookup_response__descriptor, 5000,
                         (ProtobufCMessage **)&resp);
    assert_int_equal(rc, BUS_INVALID_ARGUMENT);

    Shoal__Bus__Empty empty = SHOAL__BUS__EMPTY__INIT;
    Shoal__Bus__StatsResponse *stats = NULL;
    rc = bus_client_call(c, "bus.Stats", &empty.base, &shoal__bus__stats_response__descriptor, 5000,
                         (ProtobufCMessage **)&stats);
    assert_int_equal(rc, BUS_OK);
    int64_t queries = -1, answered = -1, forwarded = -1, services = -1;
    for (size_t i = 0; i < stats->n_stats; i++) {
        if (!strcmp(stats->stats[i]->name, "dns.queries"))
            queries = stats->stats[i]->value;
        if (!strcmp(stats->stats[i]->name, "dns.answered"))
            answered = stats->stats[i]->value;
        if (!strcmp(stats->stats[i]->name, "dns.forwarded"))
            forwarded = stats->stats[i]->value;
        if (!strcmp(stats->stats[i]->name, "dns.services"))
            services = stats->stats[i]->value;
    }
    shoal__bus__stats_response__free_unpacked(stats, NULL);
    assert_true(queries > 0);
    assert_true(answered > 0);
    assert_true(forwarded >= 1);
    assert_int_equal(services, 2);

    Shoal__Bus__HealthResponse *health = NULL;
    rc = bus_client_call(c, "bus.Health", &empty.base, &shoal__bus__health_response__descriptor,
                         5000, (ProtobufCMessage **)&health);
    assert_int_equal(rc, BUS_OK);
    assert_true(health->healthy);
    shoal__bus__health_response__free_unpacked(health, NULL);
    bus_client_destroy(&c);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_daemon_resolves_a_running_task_over_udp_and_tcp),
        cmocka_unit_test(test_daemon_follows_task_state_and_removal),
        cmocka_unit_test(test_daemon_forwards_other_names_upstream),
        cmocka_unit_test(test_daemon_serves_lookup_and_stats_on_the_bus),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
