/* shoal-orchestrator as a process, against a real shoal-store: a 3-replica service gets three
 * PENDING tasks in the store within a second; a bad spec is refused with INVALID_ARGUMENT naming
 * its fields and writes nothing; scaling to 1 gives two tasks desired REMOVE (reaped once their
 * agent reports them shut down); the node API drains and removes; removing the service deletes
 * it and marks its tasks REMOVE. The test plays the scheduler and the agent by writing task
 * states into the store itself.
 *
 * Needs bin/shoal-store and bin/shoal-orchestrator (set SHOAL_BIN_DIR to look elsewhere); skips
 * with the reason printed when they are missing. Runs in its own /tmp state dir and stops only
 * the processes it started. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "bus.h"
#include "config.h"
#include "orchestrator.pb-c.h"
#include "storecli.h"

#include "../../services/orchestrator/reconcile.h"

typedef struct fixture {
    char dir[128];
    char bin[PATH_MAX];
    pid_t store_pid, orch_pid;
    shoal_config_t cfg;
    zcert_t *admin;
    bus_client_t *orch;
    store_client_t *store;
    char service_id[64];
    char skip_reason[PATH_MAX + 128];
} fixture_t;

static fixture_t fx;

static pid_t spawn(const char *name) {
    char path[PATH_MAX + 32], log[256];
    snprintf(path, sizeof path, "%s/shoal-%s", fx.bin, name);
    snprintf(log, sizeof log, "%s/%s.log", fx.dir, name);
    pid_t pid = fork();
    if (pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        execl(path, path, "--state-dir", fx.dir, "--log-level", "debug", (char *)NULL);
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

static int setup(void **state) {
    const char *bin = getenv("SHOAL_BIN_DIR");
    if (!realpath(bin ? bin : "bin", fx.bin))
        snprintf(fx.bin, sizeof fx.bin, "%s", bin ? bin : "bin");
    char path[PATH_MAX + 32];
    for (int i = 0; i < 2; i++) {
        snprintf(path, sizeof path, "%s/shoal-%s", fx.bin, i ? "orchestrator" : "store");
        if (access(path, X_OK) != 0) {
            snprintf(fx.skip_reason, sizeof fx.skip_reason,
                     "%s is missing (build it: make bin/shoal-store bin/shoal-orchestrator)", path);
            printf("orchestrator_daemon: skipped: %s\n", fx.skip_reason);
            return 0;
        }
    }
    snprintf(fx.dir, sizeof fx.dir, "/tmp/shoal-orchestrator-test-XXXXXX");
    if (!mkdtemp(fx.dir))
        return -1;
    const char *names[] = {"store", "orchestrator", "admin", NULL};
    if (config_init(fx.dir, names) < 0 || config_load(fx.dir, &fx.cfg) < 0)
        return -1;
    fx.store_pid = spawn("store");
    fx.orch_pid = spawn("orchestrator");
    fx.admin = bus_identity_load(fx.dir, "admin");
    char ep[PATH_MAX + 32], key[41];
    config_rpc_endpoint(&fx.cfg, "orchestrator", ep, sizeof ep);
    if (!fx.admin || bus_public_key(fx.dir, "orchestrator", key) < 0)
        return -1;
    fx.orch = bus_client_new(fx.admin, ep, key);
    fx.store = store_client_new(&fx.cfg, fx.admin);
    if (!fx.orch || !fx.store)
        return -1;
    store_client_set_timeout(fx.store, 3000);
    /* ready when the orchestrator answers and leads (it created /cluster) */
    for (int i = 0; i < 100; i++) {
        Shoal__Store__KeyValue *kv = NULL;
        if (store_get(fx.store, "/cluster", &kv) == 0) {
            shoal__store__key_value__free_unpacked(kv, NULL);
            return 0;
        }
        usleep(100 * 1000);
    }
    fprintf(stderr, "orchestrator_daemon: daemons did not come up; logs in %s\n", fx.dir);
    return -1;
}

static int teardown(void **state) {
    bus_client_destroy(&fx.orch);
    store_client_destroy(&fx.store);
    stop(&fx.orch_pid);
    stop(&fx.store_pid);
    zcert_destroy(&fx.admin);
    if (fx.dir[0] && !getenv("SHOAL_KEEP_TEST_DIR")) {
        char cmd[256];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", fx.dir);
        if (system(cmd) != 0)
            fprintf(stderr, "could not remove %s\n", fx.dir);
    }
    return 0;
}

#define SKIP_IF_NO_DAEMONS()                                                                       \
    do {                                                                                           \
        if (fx.skip_reason[0]) {                                                                   \
            printf("skipped: %s\n", fx.skip_reason);                                               \
            skip();                                                                                \
        }                                                                                          \
    } while (0)

/* ---- helpers ------------------------------------------------------------------------------ */

static int call(const char *method, const ProtobufCMessage *in,
                const ProtobufCMessageDescriptor *out_desc, ProtobufCMessage **out) {
    ProtobufCMessage *tmp = NULL;
    int rc = bus_client_call(fx.orch, method, in, out_desc, 5000, out ? out : &tmp);
    if (tmp)
        protobuf_c_message_free_unpacked(tmp, NULL);
    return rc;
}

typedef struct spec_buf {
    Shoal__ServiceSpec spec;
    Shoal__Annotations ann;
    Shoal__TaskSpec task;
    Shoal__ContainerSpec container;
    Shoal__ReplicatedService replicated;
    Shoal__RestartPolicy restart;
} spec_buf_t;

static Shoal__ServiceSpec *make_spec(spec_buf_t *b, const char *name, const char *image,
                                     uint64_t replicas) {
    b->spec = (Shoal__ServiceSpec)SHOAL__SERVICE_SPEC__INIT;
    b->ann = (Shoal__Annotations)SHOAL__ANNOTATIONS__INIT;
    b->task = (Shoal__TaskSpec)SHOAL__TASK_SPEC__INIT;
    b->container = (Shoal__ContainerSpec)SHOAL__CONTAINER_SPEC__INIT;
    b->replicated = (Shoal__ReplicatedService)SHOAL__REPLICATED_SERVICE__INIT;
    b->restart = (Shoal__RestartPolicy)SHOAL__RESTART_POLICY__INIT;
    b->ann.name = (char *)name;
    b->container.image = (char *)image;
    b->task.container = &b->container;
    b->task.restart = &b->restart;
    b->replicated.replicas = replicas;
    b->spec.annotations = &b->ann;
    b->spec.task = &b->task;
    b->spec.mode_case = SHOAL__SERVICE_SPEC__MODE_REPLICATED;
    b->spec.replicated = &b->replicated;
    return &b->spec;
}

typedef struct tasks {
    Shoal__Task *t[64];
    int64_t mod[64];
    size_t n;
} tasks_t;

static void tasks_clear(tasks_t *ts) {
    for (size_t i = 0; i < ts->n; i++)
        shoal__task__free_unpacked(ts->t[i], NULL);
    ts->n = 0;
}

static void tasks_load(tasks_t *ts) {
    tasks_clear(ts);
    Shoal__Store__RangeResponse *r = NULL;
    assert_int_equal(store_list(fx.store, "/tasks/", &r), 0);
    for (size_t i = 0; i < r->n_kvs && ts->n < 64; i++) {
        Shoal__Task *t = shoal__task__unpack(NULL, r->kvs[i]->value.len, r->kvs[i]->value.data);
        assert_non_null(t);
        ts->mod[ts->n] = r->kvs[i]->mod_revision;
        ts->t[ts->n++] = t;
    }
    shoal__store__range_response__free_unpacked(r, NULL);
}

static size_t count_desired(const tasks_t *ts, int desired) {
    size_t n = 0;
    for (size_t i = 0; i < ts->n; i++)
        if ((int)ts->t[i]->desired_state == desired)
            n++;
    return n;
}

static size_t count_keys(const char *prefix) {
    Shoal__Store__RangeResponse *r = NULL;
    assert_int_equal(store_list(fx.store, prefix, &r), 0);
    size_t n = r->n_kvs;
    shoal__store__range_response__free_unpacked(r, NULL);
    return n;
}

/* Writes a task back as a scheduler/agent would (compare-and-swap on its revision). */
static void task_write(Shoal__Task *t, int64_t mod, int state, const char *node) {
    Shoal__Task *c = (Shoal__Task *)recon_copy_message(&t->base);
    assert_non_null(c);
    c->status->state = state;
    if (node) {
        if (c->node_id != protobuf_c_empty_string)
            free(c->node_id);
        c->node_id = strdup(node);
    }
    c->meta->version++;
    char key[128];
    snprintf(key, sizeof key, "/tasks/%s", c->meta->id);
    assert_int_equal(store_cas_put(fx.store, key, &c->base, mod, NULL), 0);
    shoal__task__free_unpacked(c, NULL);
}

static void put_node(const char *id, const char *hostname, int state) {
    Shoal__Meta meta = SHOAL__META__INIT;
    meta.id = (char *)id;
    meta.version = 1;
    Shoal__NodeSpec spec = SHOAL__NODE_SPEC__INIT;
    Shoal__NodeStatus st = SHOAL__NODE_STATUS__INIT;
    st.state = state;
    Shoal__NodeDescription desc = SHOAL__NODE_DESCRIPTION__INIT;
    desc.hostname = (char *)hostname;
    Shoal__Node n = SHOAL__NODE__INIT;
    n.meta = &meta;
    n.spec = &spec;
    n.status = &st;
    n.description = &desc;
    char key[128];
    snprintf(key, sizeof key, "/nodes/%s", id);
    size_t len = shoal__node__get_packed_size(&n);
    uint8_t *buf = malloc(len);
    shoal__node__pack(&n, buf);
    assert_int_equal(store_put(fx.store, key, buf, len, 0, NULL), 0);
    free(buf);
}

static int64_t now_ms(void) {
    return clock_mono_ms();
}

/* ---- tests -------------------------------------------------------------------------------- */

static void test_daemon_creates_three_pending_tasks_within_a_second(void **state) {
    SKIP_IF_NO_DAEMONS();
    put_node("node-1", "worker-1", SHOAL__NODE_STATUS__STATE__READY);
    spec_buf_t b;
    Shoal__Orchestrator__ServiceCreateRequest req =
        SHOAL__ORCHESTRATOR__SERVICE_CREATE_REQUEST__INIT;
    req.spec = make_spec(&b, "web", "shoal-test:latest", 3);
    Shoal__Orchestrator__ServiceCreateResponse *resp = NULL;
    int64_t start = now_ms();
    int rc =
        call("orchestrator.ServiceCreate", &req.base,
             &shoal__orchestrator__service_create_response__descriptor, (ProtobufCMessage **)&resp);
    assert_int_equal(rc, BUS_OK);
    assert_int_equal(resp->service->spec_version, 1);
    snprintf(fx.service_id, sizeof fx.service_id, "%s", resp->service->meta->id);
    protobuf_c_message_free_unpacked(&resp->base, NULL);

    tasks_t ts = {0};
    do {
        tasks_load(&ts);
        if (ts.n >= 3)
            break;
        usleep(20 * 1000);
    } while (now_ms() - start < 1000);
    printf("3 tasks in the store after %lld ms\n", (long long)(now_ms() - start));
    assert_int_equal(ts.n, 3);
    bool slots[4] = {false};
    for (size_t i = 0; i < ts.n; i++) {
        assert_int_equal(ts.t[i]->status->state, SHOAL__TASK_STATE__PENDING);
        assert_int_equal(ts.t[i]->desired_state, SHOAL__TASK_STATE__RUNNING);
        assert_string_equal(ts.t[i]->service_id, fx.service_id);
        assert_true(ts.t[i]->slot >= 1 && ts.t[i]->slot <= 3);
        slots[ts.t[i]->slot] = true;
    }
    assert_true(slots[1] && slots[2] && slots[3]);
    tasks_clear(&ts);

    /* a duplicate name is refused */
    rc = call("orchestrator.ServiceCreate", &req.base,
              &shoal__orchestrator__service_create_response__descriptor, NULL);
    assert_int_equal(rc, BUS_ALREADY_EXISTS);
}

static void test_daemon_refuses_a_bad_spec_naming_fields_and_writes_nothing(void **state) {
    SKIP_IF_NO_DAEMONS();
    size_t services = count_keys("/services/"), tasks = count_keys("/tasks/");
    spec_buf_t b;
    Shoal__Orchestrator__ServiceCreateRequest req =
        SHOAL__ORCHESTRATOR__SERVICE_CREATE_REQUEST__INIT;
    req.spec = make_spec(&b, "-web", "", 3);
    b.restart.delay_ms = -5;
    int rc = call("orchestrator.ServiceCreate", &req.base,
                  &shoal__orchestrator__service_create_response__descriptor, NULL);
    assert_int_equal(rc, BUS_INVALID_ARGUMENT);
    const char *msg = bus_client_error(fx.orch);
    printf("error: %s\n", msg);
    assert_non_null(strstr(msg, "annotations.name: must match"));
    assert_non_null(strstr(msg, "(got \"-web\")"));
    assert_non_null(strstr(msg, "task.container.image: required"));
    assert_non_null(strstr(msg, "task.restart.delay_ms: must be >= 0 (got -5)"));
    usleep(200 * 1000);
    assert_int_equal(count_keys("/services/"), services);
    assert_int_equal(count_keys("/tasks/"), tasks);
}

static void test_daemon_scale_down_marks_two_tasks_remove(void **state) {
    SKIP_IF_NO_DAEMONS();
    /* play the scheduler: every task ASSIGNED to node-1 (so REMOVE ones wait for the agent) */
    tasks_t ts = {0};
    tasks_load(&ts);
    for (size_t i = 0; i < ts.n; i++)
        task_write(ts.t[i], ts.mod[i], SHOAL__TASK_STATE__ASSIGNED, "node-1");
    spec_buf_t b;
    Shoal__Orchestrator__ServiceUpdateRequest req =
        SHOAL__ORCHESTRATOR__SERVICE_UPDATE_REQUEST__INIT;
    req.service = "web";
    req.spec = make_spec(&b, "web", "shoal-test:latest", 1);
    Shoal__Orchestrator__ServiceUpdateResponse *resp = NULL;
    int64_t start = now_ms();
    assert_int_equal(call("orchestrator.ServiceUpdate", &req.base,
                          &shoal__orchestrator__service_update_response__descriptor,
                          (ProtobufCMessage **)&resp),
                     BUS_OK);
    assert_int_equal(resp->service->spec_version, 1); /* replicas only: no rolling update */
    assert_int_equal(resp->service->spec->replicated->replicas, 1);
    assert_non_null(resp->service->previous_spec);
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    do {
        tasks_load(&ts);
        if (count_desired(&ts, SHOAL__TASK_STATE__REMOVE) == 2)
            break;
        usleep(20 * 1000);
    } while (now_ms() - start < 1000);
    assert_int_equal(ts.n, 3);
    assert_int_equal(count_desired(&ts, SHOAL__TASK_STATE__REMOVE), 2);
    assert_int_equal(count_desired(&ts, SHOAL__TASK_STATE__RUNNING), 1);
    for (size_t i = 0; i < ts.n; i++)
        if (ts.t[i]->desired_state == SHOAL__TASK_STATE__RUNNING)
            assert_int_equal(ts.t[i]->slot, 1);

    /* play the agent: the removed tasks shut down, and the orchestrator deletes them */
    for (size_t i = 0; i < ts.n; i++)
        if (ts.t[i]->desired_state == SHOAL__TASK_STATE__REMOVE)
            task_write(ts.t[i], ts.mod[i], SHOAL__TASK_STATE__SHUTDOWN, NULL);
    start = now_ms();
    do {
        tasks_load(&ts);
        if (ts.n == 1)
            break;
        usleep(20 * 1000);
    } while (now_ms() - start < 1000);
    assert_int_equal(ts.n, 1);
    tasks_clear(&ts);
}

static void test_daemon_node_api_drains_and_removes(void **state) {
    SKIP_IF_NO_DAEMONS();
    Shoal__Orchestrator__NodeInspectRequest ins = SHOAL__ORCHESTRATOR__NODE_INSPECT_REQUEST__INIT;
    ins.node = "worker-1";
    Shoal__Orchestrator__NodeInspectResponse *ir = NULL;
    assert_int_equal(call("orchestrator.NodeInspect", &ins.base,
                          &shoal__orchestrator__node_inspect_response__descriptor,
                          (ProtobufCMessage **)&ir),
                     BUS_OK);
    assert_string_equal(ir->node->meta->id, "node-1");
    protobuf_c_message_free_unpacked(&ir->base, NULL);

    Shoal__NodeSpec spec = SHOAL__NODE_SPEC__INIT;
    spec.availability = SHOAL__NODE_SPEC__AVAILABILITY__DRAIN;
    Shoal__Orchestrator__NodeUpdateRequest up = SHOAL__ORCHESTRATOR__NODE_UPDATE_REQUEST__INIT;
    up.node = "node-1";
    up.spec = &spec;
    assert_int_equal(call("orchestrator.NodeUpdate", &up.base,
                          &shoal__orchestrator__node_update_response__descriptor, NULL),
                     BUS_OK);
    /* the drained node's task is told to stop and a replacement waits for it (stop-first) */
    tasks_t ts = {0};
    int64_t start = now_ms();
    do {
        tasks_load(&ts);
        if (ts.n == 1 && ts.t[0]->desired_state == SHOAL__TASK_STATE__SHUTDOWN)
            break;
        usleep(20 * 1000);
    } while (now_ms() - start < 1000);
    assert_int_equal(ts.n, 1);
    assert_int_equal(ts.t[0]->desired_state, SHOAL__TASK_STATE__SHUTDOWN);
    task_write(ts.t[0], ts.mod[0], SHOAL__TASK_STATE__SHUTDOWN, NULL);
    start = now_ms();
    do {
        tasks_load(&ts);
        if (count_desired(&ts, SHOAL__TASK_STATE__RUNNING) == 1)
            break;
        usleep(20 * 1000);
    } while (now_ms() - start < 1000);
    assert_int_equal(count_desired(&ts, SHOAL__TASK_STATE__RUNNING), 1);
    tasks_clear(&ts);

    Shoal__Orchestrator__NodeRemoveRequest rm = SHOAL__ORCHESTRATOR__NODE_REMOVE_REQUEST__INIT;
    rm.node = "worker-1";
    assert_int_equal(call("orchestrator.NodeRemove", &rm.base,
                          &shoal__orchestrator__node_remove_response__descriptor, NULL),
                     BUS_FAILED_PRECONDITION);
    assert_non_null(strstr(bus_client_error(fx.orch), "not DOWN"));
    rm.force = true;
    assert_int_equal(call("orchestrator.NodeRemove", &rm.base,
                          &shoal__orchestrator__node_remove_response__descriptor, NULL),
                     BUS_OK);
    assert_int_equal(count_keys("/nodes/"), 0);
}

static void test_daemon_service_remove_deletes_the_service(void **state) {
    SKIP_IF_NO_DAEMONS();
    Shoal__Orchestrator__ServiceRemoveRequest req =
        SHOAL__ORCHESTRATOR__SERVICE_REMOVE_REQUEST__INIT;
    req.service = "web";
    assert_int_equal(call("orchestrator.ServiceRemove", &req.base,
                          &shoal__orchestrator__service_remove_response__descriptor, NULL),
                     BUS_OK);
    assert_int_equal(count_keys("/services/"), 0);
    Shoal__Orchestrator__ServiceInspectRequest ins =
        SHOAL__ORCHESTRATOR__SERVICE_INSPECT_REQUEST__INIT;
    ins.service = "web";
    assert_int_equal(call("orchestrator.ServiceInspect", &ins.base,
                          &shoal__orchestrator__service_inspect_response__descriptor, NULL),
                     BUS_NOT_FOUND);
    assert_string_equal(bus_client_error(fx.orch), "service \"web\" not found");
    /* its never-assigned task is deleted outright */
    int64_t start = now_ms();
    while (count_keys("/tasks/") > 0 && now_ms() - start < 1000)
        usleep(20 * 1000);
    assert_int_equal(count_keys("/tasks/"), 0);

    Shoal__Bus__StatsResponse *st = NULL;
    Shoal__Bus__Empty empty = SHOAL__BUS__EMPTY__INIT;
    assert_int_equal(call("bus.Stats", &empty.base, &shoal__bus__stats_response__descriptor,
                          (ProtobufCMessage **)&st),
                     BUS_OK);
    int64_t created = -1;
    for (size_t i = 0; i < st->n_stats; i++)
        if (!strcmp(st->stats[i]->name, "tasks_created_total"))
            created = st->stats[i]->value;
    protobuf_c_message_free_unpacked(&st->base, NULL);
    assert_true(created >= 4); /* 3 at creation + the drain replacement */
}

static Shoal__Service *update_service(const char *name, Shoal__ServiceSpec *spec, bool rollback) {
    Shoal__Orchestrator__ServiceUpdateRequest req =
        SHOAL__ORCHESTRATOR__SERVICE_UPDATE_REQUEST__INIT;
    req.service = (char *)name;
    req.spec = spec;
    req.rollback = rollback;
    Shoal__Orchestrator__ServiceUpdateResponse *resp = NULL;
    assert_int_equal(call("orchestrator.ServiceUpdate", &req.base,
                          &shoal__orchestrator__service_update_response__descriptor,
                          (ProtobufCMessage **)&resp),
                     BUS_OK);
    Shoal__Service *s = resp->service;
    resp->service = NULL;
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    return s;
}

/* What the reconciler writes when a new task fails: the update is PAUSED. */
static void pause_update(const char *id) {
    char key[128];
    snprintf(key, sizeof key, "/services/%s", id);
    for (int attempt = 0; attempt < 20; attempt++) {
        Shoal__Store__KeyValue *kv = NULL;
        assert_int_equal(store_get(fx.store, key, &kv), 0);
        Shoal__Service *s = shoal__service__unpack(NULL, kv->value.len, kv->value.data);
        assert_non_null(s);
        assert_non_null(s->update_status);
        s->update_status->state = SHOAL__UPDATE_STATUS__STATE__PAUSED;
        int rc = store_cas_put(fx.store, key, &s->base, kv->mod_revision, NULL);
        shoal__store__key_value__free_unpacked(kv, NULL);
        shoal__service__free_unpacked(s, NULL);
        if (rc == 0)
            return;
        usleep(50 * 1000);
    }
    fail_msg("could not pause the update of %s", id);
}

static void test_daemon_update_resumes_a_paused_update_and_rolls_back(void **state) {
    SKIP_IF_NO_DAEMONS();
    spec_buf_t b;
    Shoal__Orchestrator__ServiceCreateRequest req =
        SHOAL__ORCHESTRATOR__SERVICE_CREATE_REQUEST__INIT;
    req.spec = make_spec(&b, "resume", "shoal-test:1", 1);
    Shoal__Orchestrator__ServiceCreateResponse *created = NULL;
    assert_int_equal(call("orchestrator.ServiceCreate", &req.base,
                          &shoal__orchestrator__service_create_response__descriptor,
                          (ProtobufCMessage **)&created),
                     BUS_OK);
    char id[64];
    snprintf(id, sizeof id, "%s", created->service->meta->id);
    protobuf_c_message_free_unpacked(&created->base, NULL);

    Shoal__Service *s = update_service("resume", make_spec(&b, "resume", "shoal-test:2", 1), false);
    assert_int_equal(s->spec_version, 2);
    assert_int_equal(s->update_status->state, SHOAL__UPDATE_STATUS__STATE__UPDATING);
    assert_string_equal(s->previous_spec->task->container->image, "shoal-test:1");
    shoal__service__free_unpacked(s, NULL);

    /* paused; the same spec sent again resumes it and keeps the spec a rollback returns to */
    pause_update(id);
    s = update_service("resume", make_spec(&b, "resume", "shoal-test:2", 1), false);
    assert_int_equal(s->spec_version, 2);
    assert_int_equal(s->update_status->state, SHOAL__UPDATE_STATUS__STATE__UPDATING);
    assert_string_equal(s->update_status->message, "update resumed");
    assert_string_equal(s->previous_spec->task->container->image, "shoal-test:1");
    shoal__service__free_unpacked(s, NULL);

    /* shoal service rollback */
    s = update_service("resume", NULL, true);
    assert_int_equal(s->spec_version, 3);
    assert_int_equal(s->update_status->state, SHOAL__UPDATE_STATUS__STATE__ROLLBACK_STARTED);
    assert_string_equal(s->spec->task->container->image, "shoal-test:1");
    assert_string_equal(s->previous_spec->task->container->image, "shoal-test:2");
    shoal__service__free_unpacked(s, NULL);

    /* a replicated service cannot become a job */
    Shoal__ReplicatedJob rj = SHOAL__REPLICATED_JOB__INIT;
    Shoal__ServiceSpec *job = make_spec(&b, "resume", "shoal-test:1", 1);
    job->mode_case = SHOAL__SERVICE_SPEC__MODE_REPLICATED_JOB;
    job->replicated_job = &rj;
    Shoal__Orchestrator__ServiceUpdateRequest up =
        SHOAL__ORCHESTRATOR__SERVICE_UPDATE_REQUEST__INIT;
    up.service = "resume";
    up.spec = job;
    assert_int_equal(call("orchestrator.ServiceUpdate", &up.base,
                          &shoal__orchestrator__service_update_response__descriptor, NULL),
                     BUS_INVALID_ARGUMENT);
    assert_non_null(strstr(bus_client_error(fx.orch), "cannot change its mode"));

    Shoal__Orchestrator__ServiceRemoveRequest rm =
        SHOAL__ORCHESTRATOR__SERVICE_REMOVE_REQUEST__INIT;
    rm.service = "resume";
    assert_int_equal(call("orchestrator.ServiceRemove", &rm.base,
                          &shoal__orchestrator__service_remove_response__descriptor, NULL),
                     BUS_OK);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_daemon_creates_three_pending_tasks_within_a_second),
        cmocka_unit_test(test_daemon_refuses_a_bad_spec_naming_fields_and_writes_nothing),
        cmocka_unit_test(test_daemon_scale_down_marks_two_tasks_remove),
        cmocka_unit_test(test_daemon_node_api_drains_and_removes),
        cmocka_unit_test(test_daemon_service_remove_deletes_the_service),
        cmocka_unit_test(test_daemon_update_resumes_a_paused_update_and_rolls_back),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
