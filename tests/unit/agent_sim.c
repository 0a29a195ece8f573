/* Unit tests of the agent's simulated nodes: the sim executor (sim_executor.c), the pool's start
 * latency (pool.c), the pipelined dispatcher client (mux.c), the sim flags (sim.c) and a whole
 * sim agent of 200 nodes against a fake dispatcher — a real lib/bus server in an actor thread,
 * over ipc with Curve, that registers nodes, counts heartbeats, parks long-polls, hands each
 * node one task and records the states the nodes report. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "../../services/agent/controller.h"
#include "../../services/agent/executor.h"
#include "../../services/agent/mux.h"
#include "../../services/agent/pool.h"
#include "../../services/agent/sim.h"
#include "../../services/agent/worker.h"
#include "bus.h"
#include "daemon.h"
#include "dispatcher.pb-c.h"
#include "log.h"

static char state_dir[256];
static shoal_config_t cfg;

/* ---- a task ------------------------------------------------------------------------------ */

typedef struct test_task {
    Shoal__Task task;
    Shoal__Meta meta;
    Shoal__TaskSpec spec;
    Shoal__ContainerSpec container;
    Shoal__TaskStatus status;
    char id[32];
    char node[32];
} test_task_t;

static void task_init(test_task_t *t, const char *id, const char *node, Shoal__TaskState desired) {
    memset(t, 0, sizeof *t);
    shoal__task__init(&t->task);
    shoal__meta__init(&t->meta);
    shoal__task_spec__init(&t->spec);
    shoal__container_spec__init(&t->container);
    shoal__task_status__init(&t->status);
    snprintf(t->id, sizeof t->id, "%s", id);
    snprintf(t->node, sizeof t->node, "%s", node);
    t->meta.id = t->id;
    t->task.meta = &t->meta;
    t->task.spec = &t->spec;
    t->spec.container = &t->container;
    t->container.image = (char *)"shoal-test:latest";
    t->task.service_name = (char *)"web";
    t->task.node_id = t->node;
    t->task.slot = 1;
    t->task.desired_state = desired;
    t->task.status = &t->status;
    t->status.state = SHOAL__TASK_STATE__ASSIGNED;
}

/* ---- flags ------------------------------------------------------------------------------- */

static void test_sim_flags_parse_labels_spreads_sizes_and_rates(void **state) {
    sim_opts_t o;
    sim_opts_init(&o);
    char err[256];
    assert_int_equal(sim_parse_labels(&o, "tier=spot,rack=r1", err, sizeof err), 0);
    assert_int_equal(o.nlabels, 2);
    assert_string_equal(o.labels[1].key, "rack");
    assert_string_equal(o.labels[1].value, "r1");
    assert_int_equal(sim_parse_labels(&o, "novalue", err, sizeof err), -EINVAL);
    assert_non_null(strstr(err, "novalue"));
    assert_int_equal(sim_parse_labels(&o, "a=b,", err, sizeof err), -EINVAL);
    assert_int_equal(sim_parse_labels(&o, "bad key=x", err, sizeof err), -EINVAL);
    assert_int_equal(o.nlabels, 2);

    assert_int_equal(sim_parse_spread(&o, "zone=a|b|c", err, sizeof err), 0);
    assert_int_equal(o.nspreads, 1);
    assert_int_equal(o.spreads[0].nvalues, 3);
    assert_int_equal(sim_parse_spread(&o, "zone=a||c", err, sizeof err), -EINVAL);
    assert_int_equal(sim_parse_spread(&o, "=a", err, sizeof err), -EINVAL);

    const char *keys[8], *values[8];
    assert_int_equal(sim_node_labels(&o, 4, keys, values, 8), 3);
    assert_string_equal(keys[2], "zone");
    assert_string_equal(values[2], "b"); /* index 4 → values[4 % 3] */
    assert_int_equal(sim_node_labels(&o, 4, keys, values, 1), 1);

    int64_t v;
    assert_int_equal(sim_parse_size("8g", &v), 0);
    assert_int_equal(v, 8LL << 30);
    assert_int_equal(sim_parse_size("512MiB", &v), 0);
    assert_int_equal(v, 512LL << 20);
    assert_int_equal(sim_parse_size("1000", &v), 0);
    assert_int_equal(v, 1000);
    assert_int_equal(sim_parse_size("-1", &v), -EINVAL);
    assert_int_equal(sim_parse_size("9x", &v), -EINVAL);
    assert_int_equal(sim_parse_size("99999999999t", &v), -EINVAL);
    assert_int_equal(sim_parse_cpus("0.5", &v), 0);
    assert_int_equal(v, 500000000);
    assert_int_equal(sim_parse_cpus("0", &v), -EINVAL);
    assert_int_equal(sim_parse_cpus("two", &v), -EINVAL);
    double p;
    assert_int_equal(sim_parse_rate("0.25", &p), 0);
    assert_true(p > 0.24 && p < 0.26);
    assert_int_equal(sim_parse_rate("1.5", &p), -EINVAL);
    assert_int_equal(sim_parse_rate("nan", &p), -EINVAL);
}

static void test_sim_node_names_are_zero_padded_to_the_node_count(void **state) {
    sim_opts_t o;
    sim_opts_init(&o);
    char name[SIM_NAME_MAX];
    o.nodes = 50;
    sim_node_name(&o, 6, name, sizeof name);
    assert_string_equal(name, "sim-07");
    o.nodes = 10000;
    snprintf(o.prefix, sizeof o.prefix, "big");
    sim_node_name(&o, 0, name, sizeof name);
    assert_string_equal(name, "big-00001");
    sim_node_name(&o, 9999, name, sizeof name);
    assert_string_equal(name, "big-10000");
}

/* ---- executor, latency, worker ----------------------------------------------------------- */

static void test_sim_executor_keeps_containers_per_node(void **state) {
    sim_runtime_t *rt = sim_runtime_new(0, 1);
    executor_factory_t f;
    executor_sim_factory(&f, rt);
    executor_t *ex = f.open(&f);
    test_task_t a, b;
    task_init(&a, "ta", "n1", SHOAL__TASK_STATE__RUNNING);
    task_init(&b, "tb", "n2", SHOAL__TASK_STATE__RUNNING);
    char err[256], ida[EXECUTOR_ID_MAX], idb[EXECUTOR_ID_MAX], again[EXECUTOR_ID_MAX];
    assert_int_equal(ex->ops->prepare(ex, &a.task, err, sizeof err), 0);
    assert_int_equal(ex->ops->create(ex, &a.task, ida, sizeof ida, err, sizeof err), 0);
    assert_int_equal(ex->ops->create(ex, &a.task, again, sizeof again, err, sizeof err), 0);
    assert_string_equal(ida, again); /* one container per task */
    assert_int_equal(ex->ops->create(ex, &b.task, idb, sizeof idb, err, sizeof err), 0);
    assert_int_equal(strlen(ida), 64);
    assert_true(strncmp(ida, idb, 12) != 0); /* people see 12 characters */
    assert_int_equal(ex->ops->start(ex, ida, err, sizeof err), 0);
    assert_int_equal(sim_runtime_running(rt), 1);
    executor_container_t c;
    assert_int_equal(ex->ops->inspect(ex, ida, &c, err, sizeof err), 0);
    assert_true(c.running);
    assert_string_equal(c.status, "running");
    assert_string_equal(c.task_id, "ta");
    assert_true(c.pid > 0);

    executor_container_t *list = NULL;
    size_t n = 0;
    assert_int_equal(ex->ops->list(ex, "n2", &list, &n, err, sizeof err), 0);
    assert_int_equal(n, 1);
    assert_string_equal(list[0].task_id, "tb");
    free(list);

    assert_int_equal(ex->ops->stop(ex, ida, 10, err, sizeof err), 0);
    assert_int_equal(ex->ops->inspect(ex, ida, &c, err, sizeof err), 0);
    assert_false(c.running);
    assert_int_equal(c.exit_code, 0);
    assert_int_equal(sim_runtime_running(rt), 0);
    assert_int_equal(ex->ops->remove(ex, ida, err, sizeof err), 0);
    assert_int_equal(ex->ops->remove(ex, ida, err, sizeof err), -ENOENT);
    assert_int_equal(ex->ops->inspect(ex, ida, &c, err, sizeof err), -ENOENT);
    assert_int_equal(sim_runtime_containers(rt), 1);
    executor_close(&ex);
    sim_runtime_destroy(&rt);
}

static void test_sim_executor_fails_starts_at_the_failure_rate(void **state) {
    sim_runtime_t *rt = sim_runtime_new(0.3, 42);
    executor_factory_t f;
    executor_sim_factory(&f, rt);
    executor_t *ex = f.open(&f);
    int failed = 0;
    for (int i = 0; i < 1000; i++) {
        test_task_t t;
        char id[16], cid[EXECUTOR_ID_MAX], err[256];
        snprintf(id, sizeof id, "t%d", i);
        task_init(&t, id, "n1", SHOAL__TASK_STATE__RUNNING);
        assert_int_equal(ex->ops->create(ex, &t.task, cid, sizeof cid, err, sizeof err), 0);
        int r = ex->ops->start(ex, cid, err, sizeof err);
        if (r < 0) {
            assert_int_equal(r, -EIO);
            assert_string_equal(err, "sim: simulated start failure");
            failed++;
        }
    }
    assert_in_range(failed, 240, 360); /* 30 % of 1000, give or take */
    executor_close(&ex);
    sim_runtime_destroy(&rt);
}

static int64_t latency_fn(void *ctx, const agent_job_t *job) {
    return job->op == AGENT_OP_START ? *(int *)ctx : 0;
}

static void test_sim_task_runs_after_start_latency_through_the_worker(void **state) {
    sim_runtime_t *rt = sim_runtime_new(0, 1);
    executor_factory_t f;
    executor_sim_factory(&f, rt);
    pool_t *pool = pool_new(&f, 0);
    int latency = 200;
    pool_set_latency(pool, latency_fn, &latency);
    worker_t *w = worker_new(pool);
    worker_set_node_id(w, "n1");
    test_task_t t;
    task_init(&t, "t1", "n1", SHOAL__TASK_STATE__RUNNING);
    Shoal__Task *list[] = {&t.task};
    worker_set_assignments(w, list, 1);
    agent_task_t *at = worker_task(w, "t1");
    assert_int_equal(at->state, SHOAL__TASK_STATE__STARTING); /* started, completion delayed */
    assert_true(at->busy);
    assert_int_equal(pool_delayed(pool), 1);
    assert_int_equal(pool_deliver_due(pool, clock_mono_ms()), 0);
    assert_int_equal(worker_task(w, "t1")->state, SHOAL__TASK_STATE__STARTING);
    assert_int_equal(pool_deliver_due(pool, clock_mono_ms() + latency + 1), 1);
    at = worker_task(w, "t1");
    assert_int_equal(at->state, SHOAL__TASK_STATE__RUNNING);
    assert_true(ctl_task_healthy(at));

    /* desired SHUTDOWN: stopped at once (stops have no latency) */
    t.task.desired_state = SHOAL__TASK_STATE__SHUTDOWN;
    t.status.state = SHOAL__TASK_STATE__RUNNING;
    worker_set_assignments(w, list, 1);
    assert_int_equal(worker_task(w, "t1")->state, SHOAL__TASK_STATE__SHUTDOWN);
    assert_int_equal(sim_runtime_running(rt), 0);
    /* gone from the set: its container goes too */
    worker_set_assignments(w, NULL, 0);
    assert_int_equal(sim_runtime_containers(rt), 0);
    worker_destroy(&w);
    pool_destroy(&pool);
    sim_runtime_destroy(&rt);
}

static void test_sim_failed_start_fails_the_task_with_the_sim_message(void **state) {
    sim_runtime_t *rt = sim_runtime_new(1.0, 1);
    executor_factory_t f;
    executor_sim_factory(&f, rt);
    pool_t *pool = pool_new(&f, 0);
    worker_t *w = worker_new(pool);
    worker_set_node_id(w, "n1");
    test_task_t t;
    task_init(&t, "t1", "n1", SHOAL__TASK_STATE__RUNNING);
    Shoal__Task *list[] = {&t.task};
    worker_set_assignments(w, list, 1);
    agent_task_t *at = worker_task(w, "t1");
    assert_int_equal(at->state, SHOAL__TASK_STATE__FAILED);
    assert_string_equal(at->err, "starting container failed: sim: simulated start failure");
    worker_destroy(&w);
    pool_destroy(&pool);
    sim_runtime_destroy(&rt);
}

/* ---- the fake dispatcher (server thread only) ---------------------------------------------- */

#define FAKE_NODES  256
#define FAKE_PERIOD 100

typedef struct fake_node {
    char id[32], session[32], hostname[64];
    int64_t nano_cpus;
    char labels[256];
    int heartbeats;
    int registrations;
    uint64_t version;
    Shoal__TaskState desired;
    Shoal__TaskState reported; /* its task's state as reported */
    bool reported_healthy;
} fake_node_t;

typedef struct parked {
    bus_call_t *call;
    int node;
    uint64_t known;
    int64_t until;
} parked_t;

static struct {
    fake_node_t nodes[FAKE_NODES];
    int n;
    int sessions;
    parked_t parked[FAKE_NODES * 2];
    int nparked;
    int status_calls;
} fd;

static int fake_find(const char *id) {
    for (int i = 0; id && i < fd.n; i++)
        if (!strcmp(fd.nodes[i].id, id))
            return i;
    return -1;
}

static int fake_session_ok(const char *id, const char *session) {
    int i = fake_find(id);
    return i >= 0 && !strcmp(fd.nodes[i].session, session) ? i : -1;
}

static void on_register(void *ctx, bus_call_t *call, const ProtobufCMessage *input) {
    const Shoal__Dispatcher__RegisterRequest *req = (const void *)input;
    int i = fake_find(req->node_id);
    if (i < 0) {
        if (fd.n >= FAKE_NODES) {
            bus_reply_error(call, BUS_INTERNAL, "full");
            return;
        }
        i = fd.n++;
        memset(&fd.nodes[i], 0, sizeof fd.nodes[i]);
        snprintf(fd.nodes[i].id, sizeof fd.nodes[i].id, "node%d", i);
        fd.nodes[i].version = 1;
        fd.nodes[i].desired = SHOAL__TASK_STATE__RUNNING;
    }
    fake_node_t *n = &fd.nodes[i];
    n->registrations++;
    snprintf(n->session, sizeof n->session, "s%d", ++fd.sessions);
    const Shoal__NodeDescription *d = req->description;
    snprintf(n->hostname, sizeof n->hostname, "%s", d && d->hostname ? d->hostname : "");
    n->nano_cpus = d && d->resources ? d->resources->nano_cpus : 0;
    n->labels[0] = '\0';
    for (size_t k = 0; d && d->engine && k < d->engine->n_labels; k++) {
        size_t len = strlen(n->labels);
        snprintf(n->labels + len, sizeof n->labels - len, "%s%s=%s", k ? "," : "",
                 d->engine->labels[k]->key, d->engine->labels[k]->value);
    }
    Shoal__Dispatcher__RegisterResponse out = SHOAL__DISPATCHER__REGISTER_RESPONSE__INIT;
    out.node_id = n->id;
    out.session_id = n->session;
    out.heartbeat_period_ms = FAKE_PERIOD;
    bus_reply_ok(call, &out.base);
}

static void on_heartbeat(void *ctx, bus_call_t *call, const ProtobufCMessage *input) {
    const Shoal__Dispatcher__HeartbeatRequest *req = (const void *)input;
    int i = fake_session_ok(req->node_id, req->session_id);
    if (i < 0) {
        bus_reply_error(call, BUS_FAILED_PRECONDITION, "unknown session, register again");
        return;
    }
    fd.nodes[i].heartbeats++;
    Shoal__Dispatcher__HeartbeatResponse out = SHOAL__DISPATCHER__HEARTBEAT_RESPONSE__INIT;
    out.period_ms = FAKE_PERIOD;
    bus_reply_ok(call, &out.base);
}

static void reply_set(bus_call_t *call, int i) {
    fake_node_t *n = &fd.nodes[i];
    test_task_t t;
    char id[48];
    snprintf(id, sizeof id, "task-%s", n->id);
    task_init(&t, id, n->id, n->desired);
    Shoal__Task *tasks[] = {&t.task};
    Shoal__Dispatcher__AssignmentsResponse out = SHOAL__DISPATCHER__ASSIGNMENTS_RESPONSE__INIT;
    out.version = n->version;
    out.tasks = tasks;
    out.n_tasks = 1;
    bus_reply_ok(call, &out.base);
}

static void on_assignments(void *ctx, bus_call_t *call, const ProtobufCMessage *input) {
    const Shoal__Dispatcher__AssignmentsRequest *req = (const void *)input;
    int i = fake_session_ok(req->node_id, req->session_id);
    if (i < 0) {
        bus_reply_error(call, BUS_FAILED_PRECONDITION, "unknown session, register again");
        return;
    }
    if (req->known_version != fd.nodes[i].version ||
        fd.nparked >= (int)(sizeof fd.parked / sizeof fd.parked[0])) {
        reply_set(call, i);
        return;
    }
    fd.parked[fd.nparked++] =
        (parked_t){call, i, req->known_version, clock_mono_ms() + (int64_t)req->timeout_ms};
}

static void on_status(void *ctx, bus_call_t *call, const ProtobufCMessage *input) {
    const Shoal__Dispatcher__UpdateTaskStatusRequest *req = (const void *)input;
    int i = fake_session_ok(req->node_id, req->session_id);
    if (i < 0) {
        bus_reply_error(call, BUS_FAILED_PRECONDITION, "unknown session, register again");
        return;
    }
    fd.status_calls++;
    for (size_t k = 0; k < req->n_updates; k++) {
        const Shoal__TaskStatus *st = req->updates[k]->status;
        if (st && st->state > fd.nodes[i].reported) {
            fd.nodes[i].reported = st->state;
            fd.nodes[i].reported_healthy = st->healthy;
        }
    }
    Shoal__Dispatcher__UpdateTaskStatusResponse out =
        SHOAL__DISPATCHER__UPDATE_TASK_STATUS_RESPONSE__INIT;
    out.applied = (uint32_t)req->n_updates;
    bus_reply_ok(call, &out.base);
}

static int on_server_timer(zloop_t *loop, int id, void *arg) {
    int64_t now = clock_mono_ms();
    for (int k = 0; k < fd.nparked;) {
        parked_t *p = &fd.parked[k];
        if (now >= p->until || fd.nodes[p->node].version != p->known) {
            reply_set(p->call, p->node);
            fd.parked[k] = fd.parked[--fd.nparked];
        } else {
            k++;
        }
    }
    return 0;
}

static int hostname_node(const char *hostname) {
    for (int i = 0; i < fd.n; i++)
        if (!strcmp(fd.nodes[i].hostname, hostname))
            return i;
    return -1;
}

/* Commands: STATS → nodes heartbeats running shutdown healthy_running status_calls;
 * NODE hostname → heartbeats registrations nano_cpus labels id; SHUTDOWN → every task
 * desired SHUTDOWN. */
static int on_server_pipe(zloop_t *loop, zsock_t *pipe, void *arg) {
    zmsg_t *msg = zmsg_recv(pipe);
    char *cmd = msg ? zmsg_popstr(msg) : NULL;
    int rc = 0;
    if (!cmd || !strcmp(cmd, "$TERM")) {
        rc = -1;
    } else if (!strcmp(cmd, "STATS")) {
        int hb = 0, running = 0, shutdown = 0, healthy = 0;
        for (int i = 0; i < fd.n; i++) {
            hb += fd.nodes[i].heartbeats;
            running += fd.nodes[i].reported == SHOAL__TASK_STATE__RUNNING;
            healthy +=
                fd.nodes[i].reported == SHOAL__TASK_STATE__RUNNING && fd.nodes[i].reported_healthy;
            shutdown += fd.nodes[i].reported == SHOAL__TASK_STATE__SHUTDOWN;
        }
        zsock_send(pipe, "iiiiii", fd.n, hb, running, shutdown, healthy, fd.status_calls);
    } else if (!strcmp(cmd, "NODE")) {
        char *host = zmsg_popstr(msg);
        int i = hostname_node(host);
        fake_node_t none = {0};
        fake_node_t *n = i >= 0 ? &fd.nodes[i] : &none;
        zsock_send(pipe, "iissi", n->heartbeats, n->registrations, n->labels, n->id,
                   (int)(n->nano_cpus / 1000000));
        zstr_free(&host);
    } else if (!strcmp(cmd, "SHUTDOWN")) {
        for (int i = 0; i < fd.n; i++) {
            fd.nodes[i].desired = SHOAL__TASK_STATE__SHUTDOWN;
            fd.nodes[i].version++;
        }
        zsock_signal(pipe, 0);
    }
    zstr_free(&cmd);
    zmsg_destroy(&msg);
    return rc;
}

static const bus_method_t fake_methods[] = {
    {"dispatcher.Register", &shoal__dispatcher__register_request__descriptor,
     &shoal__dispatcher__register_response__descriptor, on_register, BUS_ROLES_ALL},
    {"dispatcher.Heartbeat", &shoal__dispatcher__heartbeat_request__descriptor,
     &shoal__dispatcher__heartbeat_response__descriptor, on_heartbeat, BUS_ROLES_ALL},
    {"dispatcher.Assignments", &shoal__dispatcher__assignments_request__descriptor,
     &shoal__dispatcher__assignments_response__descriptor, on_assignments, BUS_ROLES_ALL},
    {"dispatcher.UpdateTaskStatus", &shoal__dispatcher__update_task_status_request__descriptor,
     &shoal__dispatcher__update_task_status_response__descriptor, on_status, BUS_ROLES_ALL},
};

static void server_fn(zsock_t *pipe, void *arg) {
    bus_server_t *srv = bus_server_new(&cfg, "dispatcher", "test", NULL, NULL);
    bus_server_add(srv, fake_methods, sizeof fake_methods / sizeof fake_methods[0], NULL);
    zloop_t *loop = zloop_new();
    bus_server_attach(srv, loop);
    zloop_timer(loop, 10, 0, on_server_timer, NULL);
    zloop_reader(loop, pipe, on_server_pipe, NULL);
    zsock_signal(pipe, 0);
    zloop_start(loop);
    for (int k = 0; k < fd.nparked; k++)
        bus_reply_error(fd.parked[k].call, BUS_UNAVAILABLE, "shutting down");
    fd.nparked = 0;
    zloop_destroy(&loop);
    bus_server_destroy(&srv);
}

typedef struct server_stats {
    int nodes, heartbeats, running, shutdown, healthy, status_calls;
} server_stats_t;

static server_stats_t server_stats(zactor_t *server) {
    server_stats_t s = {0};
    zstr_send(server, "STATS");
    zsock_recv(server, "iiiiii", &s.nodes, &s.heartbeats, &s.running, &s.shutdown, &s.healthy,
               &s.status_calls);
    return s;
}

typedef struct server_node {
    int heartbeats, registrations, cpus_milli;
    char labels[256], id[32];
} server_node_t;

static server_node_t server_node(zactor_t *server, const char *hostname) {
    server_node_t n = {0};
    char *labels = NULL, *id = NULL;
    zstr_sendm(server, "NODE");
    zstr_send(server, hostname);
    zsock_recv(server, "iissi", &n.heartbeats, &n.registrations, &labels, &id, &n.cpus_milli);
    snprintf(n.labels, sizeof n.labels, "%s", labels ? labels : "");
    snprintf(n.id, sizeof n.id, "%s", id ? id : "");
    zstr_free(&labels);
    zstr_free(&id);
    return n;
}

/* ---- fixture ------------------------------------------------------------------------------ */

static int group_setup(void **state) {
    snprintf(state_dir, sizeof state_dir, "/tmp/shoal-test-agent-sim-%d", getpid());
    static const char *const names[] = {"dispatcher", "agent", NULL};
    if (config_init(state_dir, names) < 0 || config_load(state_dir, &cfg) < 0)
        return -1;
    return 0;
}

static int group_teardown(void **state) {
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", state_dir);
    (void)!system(cmd);
    return 0;
}

/* ---- mux --------------------------------------------------------------------------------- */

typedef struct mux_result {
    int calls;
    int code;
} mux_result_t;

static mux_result_t mux_results[64];

static void on_mux_done(void *ctx, uint64_t tag, int code, ProtobufCMessage *out,
                        const char *message) {
    assert_true(tag < 64);
    mux_results[tag].calls++;
    mux_results[tag].code = code;
    if (code == BUS_OK)
        assert_non_null(out);
}

static mux_t *mux_to_fake(void) {
    zcert_t *cert = bus_identity_load(state_dir, "agent");
    char ep[512], key[41];
    config_rpc_endpoint(&cfg, "dispatcher", ep, sizeof ep);
    assert_int_equal(bus_public_key(state_dir, "dispatcher", key), 0);
    mux_t *m = mux_new(cert, ep, key);
    zcert_destroy(&cert);
    assert_non_null(m);
    return m;
}

static void mux_run_until(mux_t *m, int want_callbacks, int timeout_ms) {
    int64_t end = clock_mono_ms() + timeout_ms;
    int seen = 0;
    while (seen < want_callbacks && clock_mono_ms() < end) {
        seen += (int)mux_process(m, clock_mono_ms());
        usleep(2000);
    }
}

static void test_mux_matches_out_of_order_replies_by_id_and_expires_the_rest(void **state) {
    memset(&fd, 0, sizeof fd);
    memset(mux_results, 0, sizeof mux_results);
    zactor_t *server = zactor_new(server_fn, NULL);
    mux_t *m = mux_to_fake();
    /* a node to poll for */
    Shoal__Dispatcher__RegisterRequest reg = SHOAL__DISPATCHER__REGISTER_REQUEST__INIT;
    reg.cluster_key = (char *)"k";
    assert_int_equal(mux_call(m, "dispatcher.Register", &reg.base,
                              &shoal__dispatcher__register_response__descriptor, 3000, on_mux_done,
                              NULL, 0),
                     0);
    mux_run_until(m, 1, 3000);
    assert_int_equal(mux_results[0].code, BUS_OK);

    /* 20 long-polls parked 300 ms, 20 heartbeats answered at once (with an error: wrong
     * session), 1 poll whose caller gives up after 100 ms */
    Shoal__Dispatcher__AssignmentsRequest poll = SHOAL__DISPATCHER__ASSIGNMENTS_REQUEST__INIT;
    poll.node_id = (char *)"node0";
    poll.session_id = (char *)"s1";
    poll.known_version = 1;
    poll.timeout_ms = 300;
    Shoal__Dispatcher__HeartbeatRequest hb = SHOAL__DISPATCHER__HEARTBEAT_REQUEST__INIT;
    hb.node_id = (char *)"node0";
    hb.session_id = (char *)"wrong";
    for (uint64_t t = 1; t <= 40; t++) {
        int r = t % 2 ? mux_call(m, "dispatcher.Assignments", &poll.base,
                                 &shoal__dispatcher__assignments_response__descriptor, 3000,
                                 on_mux_done, NULL, t)
                      : mux_call(m, "dispatcher.Heartbeat", &hb.base,
                                 &shoal__dispatcher__heartbeat_response__descriptor, 3000,
                                 on_mux_done, NULL, t);
        assert_int_equal(r, 0);
    }
    poll.timeout_ms = 2000;
    assert_int_equal(mux_call(m, "dispatcher.Assignments", &poll.base,
                              &shoal__dispatcher__assignments_response__descriptor, 100,
                              on_mux_done, NULL, 41),
                     0);
    mux_stats_t st;
    mux_get_stats(m, &st);
    assert_int_equal(st.pending, 41);
    mux_run_until(m, 41, 5000);
    for (int t = 1; t <= 40; t++) {
        assert_int_equal(mux_results[t].calls, 1);
        assert_int_equal(mux_results[t].code, t % 2 ? BUS_OK : BUS_FAILED_PRECONDITION);
    }
    assert_int_equal(mux_results[41].calls, 1);
    assert_int_equal(mux_results[41].code, -ETIMEDOUT);
    /* its reply comes later and is dropped as late, never delivered twice */
    int64_t end = clock_mono_ms() + 3000;
    do {
        mux_process(m, clock_mono_ms());
        mux_get_stats(m, &st);
        usleep(5000);
    } while (st.late == 0 && clock_mono_ms() < end);
    assert_int_equal(st.late, 1);
    assert_int_equal(mux_results[41].calls, 1);
    assert_int_equal(st.pending, 0);
    assert_int_equal(st.timeouts, 1);
    mux_destroy(&m);
    zactor_destroy(&server);
}

/* ---- a whole sim agent --------------------------------------------------------------------- */

#define SIM_N 200

typedef struct run_ctx {
    zactor_t *server;
    int64_t deadline;
    bool (*done)(struct run_ctx *);
    server_stats_t last;
} run_ctx_t;

static int on_check(zloop_t *loop, int id, void *arg) {
    run_ctx_t *r = arg;
    r->last = server_stats(r->server);
    if (r->done(r) || clock_mono_ms() >= r->deadline)
        return -1;
    return 0;
}

/* Runs the loop until done() or timeout_ms; returns done(). */
static bool run_until(daemon_t *d, run_ctx_t *r, bool (*done)(run_ctx_t *), int timeout_ms) {
    r->done = done;
    r->deadline = clock_mono_ms() + timeout_ms;
    int t = zloop_timer(d->loop, 20, 0, on_check, r);
    zloop_start(d->loop);
    zloop_timer_end(d->loop, t);
    return done(r);
}

static bool all_running(run_ctx_t *r) {
    return r->last.running == SIM_N;
}
static bool all_shutdown(run_ctx_t *r) {
    return r->last.shutdown == SIM_N;
}
static bool never_done(run_ctx_t *r) {
    return false;
}
static sim_t *current_sim;
static bool sim_all_registered(run_ctx_t *r) {
    return sim_registered(current_sim) == SIM_N;
}

static void daemon_for_sim(daemon_t *d) {
    memset(d, 0, sizeof *d);
    d->kind = "agent";
    snprintf(d->instance, sizeof d->instance, "simtest");
    d->cfg = cfg;
    d->identity = bus_identity_load(state_dir, "agent");
    char rpc[512], pub[512];
    snprintf(rpc, sizeof rpc, "ipc://%s/run/agent-simtest.rpc", state_dir);
    snprintf(pub, sizeof pub, "ipc://%s/run/agent-simtest.pub", state_dir);
    d->bus = bus_server_new(&cfg, "agent", "simtest", rpc, pub);
    d->loop = zloop_new();
    assert_non_null(d->identity);
    assert_non_null(d->bus);
    bus_server_attach(d->bus, d->loop);
}

static void daemon_for_sim_destroy(daemon_t *d, sim_t **sim) {
    zloop_destroy(&d->loop);
    sim_destroy(sim);
    bus_server_destroy(&d->bus);
    zcert_destroy(&d->identity);
}

static void test_sim_agent_runs_200_nodes_against_a_dispatcher(void **state) {
    memset(&fd, 0, sizeof fd);
    zactor_t *server = zactor_new(server_fn, NULL);
    daemon_t d;
    daemon_for_sim(&d);
    sim_opts_t o;
    sim_opts_init(&o);
    o.nodes = SIM_N;
    o.start_latency_ms = 50;
    o.nano_cpus = 2500000000LL;
    char err[128];
    assert_int_equal(sim_parse_labels(&o, "sim=true", err, sizeof err), 0);
    assert_int_equal(sim_parse_spread(&o, "zone=a|b", err, sizeof err), 0);
    char ep[512];
    config_rpc_endpoint(&cfg, "dispatcher", ep, sizeof ep);
    sim_t *sim = sim_new(&d, &o, ep, "192.0.2.7");
    assert_non_null(sim);
    run_ctx_t r = {.server = server};
    current_sim = sim;

    /* every node registers, with its own name, resources and labels */
    assert_true(run_until(&d, &r, sim_all_registered, 10000));
    assert_int_equal(r.last.nodes, SIM_N);
    assert_int_equal(sim_registered(sim), SIM_N);
    server_node_t n1 = server_node(server, "sim-001"), n2 = server_node(server, "sim-002");
    assert_int_equal(n1.registrations, 1);
    assert_int_equal(n1.cpus_milli, 2500);
    assert_string_equal(n1.labels, "sim=true,zone=a");
    assert_string_equal(n2.labels, "sim=true,zone=b");
    assert_int_equal(server_node(server, "sim-200").registrations, 1);
    /* its id is kept for the next start */
    char path[600], buf[64] = "";
    snprintf(path, sizeof path, "%s/agent/sim/sim-001", state_dir);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    assert_non_null(fgets(buf, sizeof buf, f));
    fclose(f);
    buf[strcspn(buf, "\n")] = '\0';
    assert_string_equal(buf, n1.id);

    /* every node's task runs (and a task without a health check counts as healthy) */
    assert_true(run_until(&d, &r, all_running, 10000));
    assert_int_equal(r.last.healthy, SIM_N);
    assert_true(r.last.status_calls <= 3 * SIM_N); /* batched per node, not per change */

    /* heartbeats every ~100 ms from every node */
    int hb0 = r.last.heartbeats;
    run_until(&d, &r, never_done, 500);
    assert_true(r.last.heartbeats - hb0 >= SIM_N * 3);

    /* a stopped node goes silent; the others do not */
    assert_int_equal(sim_node_stop(sim, "sim-001"), 0);
    assert_int_equal(sim_node_stop(sim, "nope"), -ENOENT);
    run_until(&d, &r, never_done, 150); /* a heartbeat in flight may still land */
    int stopped0 = server_node(server, "sim-001").heartbeats;
    int other0 = server_node(server, "sim-002").heartbeats;
    run_until(&d, &r, never_done, 500);
    assert_int_equal(server_node(server, "sim-001").heartbeats, stopped0);
    assert_true(server_node(server, "sim-002").heartbeats >= other0 + 3);
    /* started again, it heartbeats in its old session */
    assert_int_equal(sim_node_start(sim, "sim-001"), 0);
    run_until(&d, &r, never_done, 300);
    assert_true(server_node(server, "sim-001").heartbeats >= stopped0 + 2);
    assert_int_equal(server_node(server, "sim-001").registrations, 1);

    /* desired SHUTDOWN reaches every node through its parked long-poll */
    zstr_send(server, "SHUTDOWN");
    zsock_wait(server);
    assert_true(run_until(&d, &r, all_shutdown, 5000));
    daemon_for_sim_destroy(&d, &sim);

    /* a new sim agent on the same state dir comes back as the same nodes */
    daemon_for_sim(&d);
    sim = sim_new(&d, &o, ep, "192.0.2.7");
    assert_non_null(sim);
    int regs0 = server_node(server, "sim-001").registrations;
    current_sim = sim;
    assert_true(run_until(&d, &r, sim_all_registered, 10000));
    assert_int_equal(r.last.nodes, SIM_N); /* no new node ids */
    assert_int_equal(server_node(server, "sim-001").registrations, regs0 + 1);
    daemon_for_sim_destroy(&d, &sim);
    zactor_destroy(&server);
}

int main(void) {
    log_init("agent-test", LOG_LEVEL_ERR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sim_flags_parse_labels_spreads_sizes_and_rates),
        cmocka_unit_test(test_sim_node_names_are_zero_padded_to_the_node_count),
        cmocka_unit_test(test_sim_executor_keeps_containers_per_node),
        cmocka_unit_test(test_sim_executor_fails_starts_at_the_failure_rate),
        cmocka_unit_test(test_sim_task_runs_after_start_latency_through_the_worker),
        cmocka_unit_test(test_sim_failed_start_fails_the_task_with_the_sim_message),
        cmocka_unit_test(test_mux_matches_out_of_order_replies_by_id_and_expires_the_rest),
        cmocka_unit_test(test_sim_agent_runs_200_nodes_against_a_dispatcher),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
