/* Daemon-level test of shoal-dispatcher against a real shoal-store, acting as an agent over the
 * bus with the "agent" identity: registration writes a READY node, an ASSIGNED task reaches the
 * agent through the Assignments long-poll, a RUNNING report is written to the store, and a node
 * whose agent stops heartbeating goes DOWN. Skipped (with the reason) when the binaries are not
 * built. Starts its own store and dispatcher in a temporary state dir and kills only those. */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "bus.h"
#include "config.h"
#include "dispatcher.pb-c.h"
#include "objects.pb-c.h"
#include "storecli.h"

typedef struct cluster {
    char dir[128];
    shoal_config_t cfg;
    pid_t store_pid, dispatcher_pid;
    zcert_t *admin, *agent;
    store_client_t *store;
    bus_client_t *dispatcher;
} cluster_t;

static char skip_reason[256];

static const char *bin_dir(void) {
    const char *b = getenv("BIN");
    return b && *b ? b : "bin";
}

static pid_t spawn(cluster_t *c, const char *kind, const char *const *extra) {
    char bin[256], log[256];
    snprintf(bin, sizeof bin, "%s/shoal-%s", bin_dir(), kind);
    snprintf(log, sizeof log, "%s/logs/%s.log", c->dir, kind);
    pid_t pid = fork();
    if (pid == 0) {
        FILE *f = freopen(log, "a", stderr);
        (void)f;
        const char *argv[16] = {bin, "--state-dir", c->dir, "--log-level", "debug"};
        int n = 5;
        for (int i = 0; extra && extra[i] && n < 15; i++)
            argv[n++] = extra[i];
        argv[n] = NULL;
        execv(bin, (char *const *)argv);
        _exit(127);
    }
    return pid;
}

static void stop(pid_t *pid) {
    if (*pid > 0) {
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
}

static int setup(void **state) {
    char store_bin[256], disp_bin[256];
    snprintf(store_bin, sizeof store_bin, "%s/shoal-store", bin_dir());
    snprintf(disp_bin, sizeof disp_bin, "%s/shoal-dispatcher", bin_dir());
    if (access(store_bin, X_OK) < 0 || access(disp_bin, X_OK) < 0) {
        snprintf(skip_reason, sizeof skip_reason, "%s or %s not built", store_bin, disp_bin);
        *state = NULL;
        return 0;
    }
    cluster_t *c = calloc(1, sizeof *c);
    snprintf(c->dir, sizeof c->dir, "/tmp/shoal-dispatcher-test-XXXXXX");
    assert_non_null(mkdtemp(c->dir));
    static const char *const names[] = {"store", "dispatcher", "admin", "agent", NULL};
    assert_int_equal(config_init(c->dir, names), 0);
    assert_int_equal(config_load(c->dir, &c->cfg), 0);
    c->admin = bus_identity_load(c->dir, "admin");
    c->agent = bus_identity_load(c->dir, "agent");
    assert_non_null(c->admin);
    assert_non_null(c->agent);

    c->store_pid = spawn(c, "store", NULL);
    static const char *const disp_args[] = {"--heartbeat-period", "500", NULL};
    c->dispatcher_pid = spawn(c, "dispatcher", disp_args);
    assert_true(c->store_pid > 0 && c->dispatcher_pid > 0);

    c->store = store_client_new(&c->cfg, c->admin);
    assert_non_null(c->store);
    store_client_set_timeout(c->store, 1000);
    Shoal__Store__StatusResponse *st = NULL;
    int r = -1;
    for (int i = 0; i < 100 && r != 0; i++) {
        r = store_status(c->store, &st);
        if (r != 0)
            usleep(100 * 1000);
    }
    assert_int_equal(r, 0);
    shoal__store__status_response__free_unpacked(st, NULL);

    char ep[PATH_MAX + 32], key[41];
    config_rpc_endpoint(&c->cfg, "dispatcher", ep, sizeof ep);
    assert_int_equal(bus_public_key(c->dir, "dispatcher", key), 0);
    c->dispatcher = bus_client_new(c->agent, ep, key);
    assert_non_null(c->dispatcher);
    *state = c;
    return 0;
}

static int teardown(void **state) {
    cluster_t *c = *state;
    if (!c)
        return 0;
    bus_client_destroy(&c->dispatcher);
    store_client_destroy(&c->store);
    stop(&c->dispatcher_pid);
    stop(&c->store_pid);
    zcert_destroy(&c->admin);
    zcert_destroy(&c->agent);
    if (getenv("SHOAL_KEEP_TEST_DIR")) {
        printf("kept %s\n", c->dir);
    } else {
        char cmd[256];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", c->dir);
        (void)system(cmd);
    }
    free(c);
    return 0;
}

/* Calls the dispatcher, retrying while it is still loading the store (UNAVAILABLE). */
static int call(cluster_t *c, const char *method, const ProtobufCMessage *in,
                const ProtobufCMessageDescriptor *out, int timeout_ms, ProtobufCMessage **ret) {
    int r = -ETIMEDOUT;
    for (int i = 0; i < 50; i++) {
        r = bus_client_call(c->dispatcher, method, in, out, timeout_ms, ret);
        if (r != BUS_UNAVAILABLE && r != -ETIMEDOUT)
            return r;
        usleep(100 * 1000);
    }
    return r;
}

static Shoal__Node *get_node(cluster_t *c, const char *id) {
    char key[128];
    snprintf(key, sizeof key, "/nodes/%s", id);
    Shoal__Store__KeyValue *kv = NULL;
    if (store_get(c->store, key, &kv) < 0)
        return NULL;
    Shoal__Node *n = shoal__node__unpack(NULL, kv->value.len, kv->value.data);
    shoal__store__key_value__free_unpacked(kv, NULL);
    return n;
}

static Shoal__Task *get_task(cluster_t *c, const char *id) {
    char key[128];
    snprintf(key, sizeof key, "/tasks/%s", id);
    Shoal__Store__KeyValue *kv = NULL;
    if (store_get(c->store, key, &kv) < 0)
        return NULL;
    Shoal__Task *t = shoal__task__unpack(NULL, kv->value.len, kv->value.data);
    shoal__store__key_value__free_unpacked(kv, NULL);
    return t;
}

static void heartbeat(cluster_t *c, const char *node, const char *session) {
    Shoal__Dispatcher__HeartbeatRequest hb = SHOAL__DISPATCHER__HEARTBEAT_REQUEST__INIT;
    hb.node_id = (char *)node;
    hb.session_id = (char *)session;
    ProtobufCMessage *out = NULL;
    assert_int_equal(call(c, "dispatcher.Heartbeat", &hb.base,
                          &shoal__dispatcher__heartbeat_response__descriptor, 2000, &out),
                     BUS_OK);
    Shoal__Dispatcher__HeartbeatResponse *resp = (void *)out;
    assert_true(resp->period_ms >= 450 && resp->period_ms <= 550);
    protobuf_c_message_free_unpacked(out, NULL);
}

/* Writes an ASSIGNED task for `node` from another thread after a delay (the test thread is
 * blocked in the long-poll meanwhile). */
typedef struct writer {
    cluster_t *c;
    char task_id[32];
    char node_id[64];
    int delay_ms;
    int64_t written_ms;
    int rc;
} writer_t;

static void *write_task_later(void *arg) {
    writer_t *w = arg;
    usleep((useconds_t)w->delay_ms * 1000);
    zcert_t *id = bus_identity_load(w->c->dir, "admin");
    store_client_t *sc = store_client_new(&w->c->cfg, id);
    Shoal__Task t = SHOAL__TASK__INIT;
    Shoal__Meta meta = SHOAL__META__INIT;
    Shoal__TaskStatus status = SHOAL__TASK_STATUS__INIT;
    Shoal__TaskSpec spec = SHOAL__TASK_SPEC__INIT;
    Shoal__ContainerSpec cs = SHOAL__CONTAINER_SPEC__INIT;
    meta.id = w->task_id;
    meta.version = 1;
    status.state = SHOAL__TASK_STATE__ASSIGNED;
    cs.image = "shoal-test:latest";
    spec.container = &cs;
    t.meta = &meta;
    t.status = &status;
    t.spec = &spec;
    t.node_id = w->node_id;
    t.service_id = "svc1";
    t.service_name = "web";
    t.slot = 1;
    t.desired_state = SHOAL__TASK_STATE__RUNNING;
    char key[64];
    snprintf(key, sizeof key, "/tasks/%s", w->task_id);
    uint8_t buf[1024];
    size_t len = protobuf_c_message_pack(&t.base, buf);
    w->rc = store_put(sc, key, buf, len, 0, NULL);
    w->written_ms = clock_mono_ms();
    store_client_destroy(&sc);
    zcert_destroy(&id);
    return NULL;
}

static void test_dispatcher_daemon_serves_an_agent_end_to_end(void **state) {
    cluster_t *c = *state;
    if (!c) {
        printf("skipped: %s\n", skip_reason);
        skip();
    }

    /* A wrong cluster key is refused. */
    Shoal__Dispatcher__RegisterRequest reg = SHOAL__DISPATCHER__REGISTER_REQUEST__INIT;
    Shoal__NodeDescription desc = SHOAL__NODE_DESCRIPTION__INIT;
    desc.hostname = "agent-host-1";
    reg.cluster_key = "not-the-key";
    reg.description = &desc;
    reg.addr = "127.0.0.1";
    ProtobufCMessage *out = NULL;
    assert_int_equal(call(c, "dispatcher.Register", &reg.base,
                          &shoal__dispatcher__register_response__descriptor, 3000, &out),
                     BUS_PERMISSION_DENIED);
    assert_non_null(strstr(bus_client_error(c->dispatcher), "invalid cluster key"));

    /* Registration: a READY node object appears. */
    reg.cluster_key = c->cfg.cluster_key;
    assert_int_equal(call(c, "dispatcher.Register", &reg.base,
                          &shoal__dispatcher__register_response__descriptor, 3000, &out),
                     BUS_OK);
    Shoal__Dispatcher__RegisterResponse *rr = (void *)out;
    char node[64], session[64];
    snprintf(node, sizeof node, "%s", rr->node_id);
    snprintf(session, sizeof session, "%s", rr->session_id);
    assert_true(rr->heartbeat_period_ms >= 450 && rr->heartbeat_period_ms <= 550);
    protobuf_c_message_free_unpacked(out, NULL);
    Shoal__Node *n = get_node(c, node);
    assert_non_null(n);
    assert_int_equal(n->status->state, SHOAL__NODE_STATUS__STATE__READY);
    assert_string_equal(n->status->addr, "127.0.0.1");
    assert_string_equal(n->description->hostname, "agent-host-1");
    assert_int_equal(n->spec->availability, SHOAL__NODE_SPEC__AVAILABILITY__ACTIVE);
    assert_string_equal(n->meta->id, node);
    shoal__node__free_unpacked(n, NULL);
    heartbeat(c, node, session);

    /* The first Assignments answers at once with the (empty) set and its version. */
    Shoal__Dispatcher__AssignmentsRequest ar = SHOAL__DISPATCHER__ASSIGNMENTS_REQUEST__INIT;
    ar.node_id = node;
    ar.session_id = session;
    ar.known_version = 0;
    ar.timeout_ms = 3000;
    assert_int_equal(call(c, "dispatcher.Assignments", &ar.base,
                          &shoal__dispatcher__assignments_response__descriptor, 2000, &out),
                     BUS_OK);
    Shoal__Dispatcher__AssignmentsResponse *as = (void *)out;
    uint64_t version = as->version;
    assert_int_equal(as->n_tasks, 0);
    protobuf_c_message_free_unpacked(out, NULL);

    /* Long-poll: parked until a task is ASSIGNED to this node, then answered within 500 ms. */
    writer_t w = {.c = c, .delay_ms = 300};
    snprintf(w.task_id, sizeof w.task_id, "task-daemon-1");
    snprintf(w.node_id, sizeof w.node_id, "%s", node);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, write_task_later, &w), 0);
    ar.known_version = version;
    bus_client_set_retry(c->dispatcher, 5000);
    int64_t asked = clock_mono_ms();
    int r = bus_client_call(c->dispatcher, "dispatcher.Assignments", &ar.base,
                            &shoal__dispatcher__assignments_response__descriptor, 5000, &out);
    int64_t answered = clock_mono_ms();
    bus_client_set_retry(c->dispatcher, 0);
    pthread_join(th, NULL);
    assert_int_equal(w.rc, 0);
    assert_int_equal(r, BUS_OK);
    as = (void *)out;
    assert_true(answered - asked >= 250);       /* it did wait */
    assert_true(answered - w.written_ms < 500); /* and answered soon after the write */
    assert_true(as->version > version);
    assert_int_equal(as->n_tasks, 1);
    assert_string_equal(as->tasks[0]->meta->id, "task-daemon-1");
    assert_int_equal(as->tasks[0]->status->state, SHOAL__TASK_STATE__ASSIGNED);
    protobuf_c_message_free_unpacked(out, NULL);
    heartbeat(c, node, session);

    /* A RUNNING report is written to the store. */
    Shoal__Dispatcher__UpdateTaskStatusRequest ur =
        SHOAL__DISPATCHER__UPDATE_TASK_STATUS_REQUEST__INIT;
    Shoal__Dispatcher__TaskStatusUpdate up = SHOAL__DISPATCHER__TASK_STATUS_UPDATE__INIT;
    Shoal__TaskStatus ts = SHOAL__TASK_STATUS__INIT;
    Shoal__ContainerStatus cst = SHOAL__CONTAINER_STATUS__INIT;
    Shoal__Dispatcher__TaskStatusUpdate *ups[] = {&up};
    cst.container_id = "c0ffee";
    ts.state = SHOAL__TASK_STATE__RUNNING;
    ts.message = "started";
    ts.container = &cst;
    up.task_id = "task-daemon-1";
    up.status = &ts;
    ur.node_id = node;
    ur.session_id = session;
    ur.n_updates = 1;
    ur.updates = ups;
    assert_int_equal(call(c, "dispatcher.UpdateTaskStatus", &ur.base,
                          &shoal__dispatcher__update_task_status_response__descriptor, 3000, &out),
                     BUS_OK);
    assert_int_equal(((Shoal__Dispatcher__UpdateTaskStatusResponse *)out)->applied, 1);
    protobuf_c_message_free_unpacked(out, NULL);
    Shoal__Task *t = get_task(c, "task-daemon-1");
    assert_non_null(t);
    assert_int_equal(t->status->state, SHOAL__TASK_STATE__RUNNING);
    assert_string_equal(t->status->container->container_id, "c0ffee");
    assert_int_equal(t->meta->version, 2);
    assert_int_equal(t->desired_state, SHOAL__TASK_STATE__RUNNING);
    shoal__task__free_unpacked(t, NULL);

    /* A stale session is refused everywhere. */
    Shoal__Dispatcher__HeartbeatRequest hb = SHOAL__DISPATCHER__HEARTBEAT_REQUEST__INIT;
    hb.node_id = node;
    hb.session_id = "not-my-session";
    assert_int_equal(call(c, "dispatcher.Heartbeat", &hb.base,
                          &shoal__dispatcher__heartbeat_response__descriptor, 2000, &out),
                     BUS_FAILED_PRECONDITION);
    assert_non_null(strstr(bus_client_error(c->dispatcher), "register again"));

    /* The agent goes silent: DOWN within ~2 s of its last heartbeat. */
    heartbeat(c, node, session);
    int64_t last_beat = clock_mono_ms();
    int64_t down_at = 0;
    while (clock_mono_ms() - last_beat < 4000 && !down_at) {
        n = get_node(c, node);
        assert_non_null(n);
        if (n->status->state == SHOAL__NODE_STATUS__STATE__DOWN) {
            down_at = clock_mono_ms();
            assert_string_equal(n->status->message, "heartbeat failure");
        }
        shoal__node__free_unpacked(n, NULL);
        usleep(50 * 1000);
    }
    assert_true(down_at > 0);
    printf("node down %lld ms after its last heartbeat\n", (long long)(down_at - last_beat));
    assert_true(down_at - last_beat >= 1300);
    assert_true(down_at - last_beat <= 2200);

    /* Its old session is gone; registering again with its id brings it back READY. */
    hb.session_id = session;
    assert_int_equal(call(c, "dispatcher.Heartbeat", &hb.base,
                          &shoal__dispatcher__heartbeat_response__descriptor, 2000, &out),
                     BUS_FAILED_PRECONDITION);
    reg.node_id = node;
    assert_int_equal(call(c, "dispatcher.Register", &reg.base,
                          &shoal__dispatcher__register_response__descriptor, 3000, &out),
                     BUS_OK);
    assert_string_equal(((Shoal__Dispatcher__RegisterResponse *)out)->node_id, node);
    protobuf_c_message_free_unpacked(out, NULL);
    n = get_node(c, node);
    assert_non_null(n);
    assert_int_equal(n->status->state, SHOAL__NODE_STATUS__STATE__READY);
    shoal__node__free_unpacked(n, NULL);

    /* bus.Stats counts what happened. */
    Shoal__Bus__Empty empty = SHOAL__BUS__EMPTY__INIT;
    assert_int_equal(
        call(c, "bus.Stats", &empty.base, &shoal__bus__stats_response__descriptor, 2000, &out),
        BUS_OK);
    Shoal__Bus__StatsResponse *stats = (void *)out;
    int64_t heartbeats = -1, downs = -1, batches = -1;
    for (size_t i = 0; i < stats->n_stats; i++) {
        if (!strcmp(stats->stats[i]->name, "heartbeats_total"))
            heartbeats = stats->stats[i]->value;
        if (!strcmp(stats->stats[i]->name, "nodes_marked_down_total"))
            downs = stats->stats[i]->value;
        if (!strcmp(stats->stats[i]->name, "batches_total"))
            batches = stats->stats[i]->value;
    }
    assert_true(heartbeats >= 3);
    assert_int_equal(downs, 1);
    assert_true(batches >= 1);
    protobuf_c_message_free_unpacked(out, NULL);
}

static void register_node(cluster_t *c, const char *hostname, const char *id, char *node,
                          char *session) {
    Shoal__Dispatcher__RegisterRequest reg = SHOAL__DISPATCHER__REGISTER_REQUEST__INIT;
    Shoal__NodeDescription desc = SHOAL__NODE_DESCRIPTION__INIT;
    desc.hostname = (char *)hostname;
    reg.cluster_key = c->cfg.cluster_key;
    reg.node_id = (char *)(id ? id : "");
    reg.description = &desc;
    ProtobufCMessage *out = NULL;
    assert_int_equal(call(c, "dispatcher.Register", &reg.base,
                          &shoal__dispatcher__register_response__descriptor, 3000, &out),
                     BUS_OK);
    Shoal__Dispatcher__RegisterResponse *rr = (void *)out;
    snprintf(node, 64, "%s", rr->node_id);
    snprintf(session, 64, "%s", rr->session_id);
    protobuf_c_message_free_unpacked(out, NULL);
}

static int node_state(cluster_t *c, const char *id) {
    Shoal__Node *n = get_node(c, id);
    assert_non_null(n);
    int state = n->status ? (int)n->status->state : -1;
    shoal__node__free_unpacked(n, NULL);
    return state;
}

static void test_dispatcher_restart_gives_unknown_nodes_double_grace(void **state) {
    cluster_t *c = *state;
    if (!c) {
        printf("skipped: %s\n", skip_reason);
        skip();
    }
    char a[64], a_session[64], b[64], b_session[64];
    register_node(c, "host-a", NULL, a, a_session);
    register_node(c, "host-b", NULL, b, b_session);
    heartbeat(c, a, a_session);
    heartbeat(c, b, b_session);

    /* A new dispatcher takes over: both nodes are UNKNOWN until their agents come back. */
    stop(&c->dispatcher_pid);
    static const char *const disp_args[] = {"--heartbeat-period", "500", NULL};
    c->dispatcher_pid = spawn(c, "dispatcher", disp_args);
    int64_t started = clock_mono_ms();
    while (node_state(c, b) != SHOAL__NODE_STATUS__STATE__UNKNOWN &&
           clock_mono_ms() - started < 5000)
        usleep(20 * 1000);
    int64_t unknown_at = clock_mono_ms();
    assert_int_equal(node_state(c, b), SHOAL__NODE_STATUS__STATE__UNKNOWN);

    /* A's agent finds its session gone, registers again with its id and keeps beating. */
    Shoal__Dispatcher__HeartbeatRequest hb = SHOAL__DISPATCHER__HEARTBEAT_REQUEST__INIT;
    hb.node_id = a;
    hb.session_id = a_session;
    ProtobufCMessage *out = NULL;
    assert_int_equal(call(c, "dispatcher.Heartbeat", &hb.base,
                          &shoal__dispatcher__heartbeat_response__descriptor, 2000, &out),
                     BUS_FAILED_PRECONDITION);
    char a_again[64];
    register_node(c, "host-a", a, a_again, a_session);
    assert_string_equal(a_again, a);

    /* B stays UNKNOWN past a normal grace (1.5 s) and goes DOWN after the double one (3 s). */
    int64_t down_at = 0;
    while (!down_at && clock_mono_ms() - unknown_at < 6000) {
        heartbeat(c, a, a_session);
        int st = node_state(c, b);
        if (st == SHOAL__NODE_STATUS__STATE__DOWN)
            down_at = clock_mono_ms();
        else
            assert_int_equal(st, SHOAL__NODE_STATUS__STATE__UNKNOWN);
        usleep(100 * 1000);
    }
    assert_true(down_at > 0);
    printf("unknown node down %lld ms after it was marked unknown\n",
           (long long)(down_at - unknown_at));
    assert_true(down_at - unknown_at >= 2500);
    assert_int_equal(node_state(c, a), SHOAL__NODE_STATUS__STATE__READY);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_dispatcher_daemon_serves_an_agent_end_to_end, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_dispatcher_restart_gives_unknown_nodes_double_grace,
                                        setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
