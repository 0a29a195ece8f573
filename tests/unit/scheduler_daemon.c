/* shoal-scheduler end to end with a real shoal-store: a READY node and PENDING tasks written to
 * the store come back ASSIGNED to the node within 2 s; a task no node can satisfy stays PENDING
 * with status.err naming the constraints; scheduler.Status reports both.
 *
 * Starts $BIN/shoal-store and $BIN/shoal-scheduler (BIN defaults to bin) in a private state dir
 * under /tmp/shoal-scheduler-*, and stops exactly those two pids. Skipped, with the reason, when
 * the binaries are not built. */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
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
#include "objects.pb-c.h"
#include "registry.h"
#include "scheduler.pb-c.h"
#include "storecli.h"

typedef struct fixture {
    char state[64];
    shoal_config_t cfg;
    pid_t store_pid, sched_pid, standby_pid;
    zcert_t *admin;
    store_client_t *store;
} fixture_t;

static const char *bin_dir(void) {
    const char *b = getenv("BIN");
    return b && *b ? b : "bin";
}

static pid_t spawn(fixture_t *f, const char *kind, const char *instance) {
    char exe[PATH_MAX], log[PATH_MAX];
    snprintf(exe, sizeof exe, "%s/shoal-%s", bin_dir(), kind);
    snprintf(log, sizeof log, "%s/logs/%s-%s.log", f->state, kind, instance);
    mkdir(f->state, 0700);
    char logs[PATH_MAX];
    snprintf(logs, sizeof logs, "%s/logs", f->state);
    mkdir(logs, 0700);
    pid_t pid = fork();
    if (pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0600);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        execl(exe, exe, "--state-dir", f->state, "--instance", instance, "--log-level", "debug",
              (char *)NULL);
        _exit(127);
    }
    return pid;
}

static void stop(pid_t *pid) {
    if (*pid <= 0)
        return;
    kill(*pid, SIGTERM);
    for (int i = 0; i < 40; i++) {
        if (waitpid(*pid, NULL, WNOHANG) == *pid) {
            *pid = 0;
            return;
        }
        usleep(50 * 1000);
    }
    kill(*pid, SIGKILL);
    waitpid(*pid, NULL, 0);
    *pid = 0;
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    return remove(path);
}

static void dump_logs(fixture_t *f) {
    const char *logs[] = {"store-test-1", "scheduler-test-1", "scheduler-test-2"};
    for (int i = 0; i < 3; i++) {
        char path[PATH_MAX], cmd[PATH_MAX + 32];
        snprintf(path, sizeof path, "%s/logs/%s.log", f->state, logs[i]);
        if (access(path, R_OK) != 0)
            continue;
        snprintf(cmd, sizeof cmd, "tail -n 20 %s", path);
        print_message("--- %s\n", path);
        if (system(cmd) != 0)
            print_message("(cannot read)\n");
    }
}

static int setup(void **state) {
    static fixture_t f;
    memset(&f, 0, sizeof f);
    *state = &f;
    char store_bin[PATH_MAX], sched_bin[PATH_MAX];
    snprintf(store_bin, sizeof store_bin, "%s/shoal-store", bin_dir());
    snprintf(sched_bin, sizeof sched_bin, "%s/shoal-scheduler", bin_dir());
    if (access(store_bin, X_OK) != 0 || access(sched_bin, X_OK) != 0)
        return 0; /* the test skips with the reason */
    snprintf(f.state, sizeof f.state, "/tmp/shoal-scheduler-XXXXXX");
    assert_non_null(mkdtemp(f.state));
    const char *names[] = {"store", "scheduler", "admin", NULL};
    assert_int_equal(config_init(f.state, names), 0);
    assert_int_equal(config_load(f.state, &f.cfg), 0);
    f.admin = bus_identity_load(f.state, "admin");
    assert_non_null(f.admin);
    f.store_pid = spawn(&f, "store", "test-1");
    assert_true(f.store_pid > 0);
    f.store = store_client_new(&f.cfg, f.admin);
    assert_non_null(f.store);
    /* Wait until the store answers. */
    store_client_set_timeout(f.store, 500);
    int64_t deadline = clock_mono_ms() + 10000;
    Shoal__Store__StatusResponse *st = NULL;
    while (store_status(f.store, &st) < 0) {
        if (clock_mono_ms() > deadline) {
            dump_logs(&f);
            fail_msg("shoal-store did not answer within 10 s: %s", store_client_error(f.store));
        }
        usleep(50 * 1000);
    }
    protobuf_c_message_free_unpacked(&st->base, NULL);
    store_client_set_timeout(f.store, 2000);
    f.sched_pid = spawn(&f, "scheduler", "test-1");
    assert_true(f.sched_pid > 0);
    return 0;
}

static int teardown(void **state) {
    fixture_t *f = *state;
    if (getenv("SHOAL_TEST_VERBOSE"))
        dump_logs(f);
    stop(&f->sched_pid);
    stop(&f->standby_pid);
    stop(&f->store_pid);
    store_client_destroy(&f->store);
    zcert_destroy(&f->admin);
    if (f->state[0])
        nftw(f->state, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    return 0;
}

static void put_msg(fixture_t *f, const char *key, const ProtobufCMessage *m) {
    size_t len = protobuf_c_message_get_packed_size(m);
    uint8_t *buf = malloc(len + 1);
    protobuf_c_message_pack(m, buf);
    int r = store_put(f->store, key, buf, len, 0, NULL);
    free(buf);
    if (r < 0)
        fail_msg("store put %s: %s", key, store_client_error(f->store));
}

static void put_node(fixture_t *f, const char *id) {
    Shoal__Node n = SHOAL__NODE__INIT;
    Shoal__Meta meta = SHOAL__META__INIT;
    Shoal__NodeSpec spec = SHOAL__NODE_SPEC__INIT;
    Shoal__NodeDescription desc = SHOAL__NODE_DESCRIPTION__INIT;
    Shoal__Resources res = SHOAL__RESOURCES__INIT;
    Shoal__NodeStatus st = SHOAL__NODE_STATUS__INIT;
    meta.id = (char *)id;
    meta.version = 1;
    n.meta = &meta;
    spec.availability = SHOAL__NODE_SPEC__AVAILABILITY__ACTIVE;
    n.spec = &spec;
    res.nano_cpus = 4000000000;
    res.memory_bytes = 8LL << 30;
    desc.resources = &res;
    desc.hostname = "worker-1";
    n.description = &desc;
    st.state = SHOAL__NODE_STATUS__STATE__READY;
    st.heartbeat_ms = clock_wall_ms();
    n.status = &st;
    char key[128];
    snprintf(key, sizeof key, "/nodes/%s", id);
    put_msg(f, key, &n.base);
}

static void put_pending_task(fixture_t *f, const char *id, uint64_t slot, const char *constraint) {
    Shoal__Task t = SHOAL__TASK__INIT;
    Shoal__Meta meta = SHOAL__META__INIT;
    Shoal__TaskStatus st = SHOAL__TASK_STATUS__INIT;
    Shoal__TaskSpec spec = SHOAL__TASK_SPEC__INIT;
    Shoal__Placement pl = SHOAL__PLACEMENT__INIT;
    char *constraints[1] = {(char *)constraint};
    meta.id = (char *)id;
    meta.version = 1;
    meta.created_at_ms = meta.updated_at_ms = clock_wall_ms();
    t.meta = &meta;
    t.service_id = constraint ? "svc-pinned" : "svc-web";
    t.service_name = constraint ? "pinned" : "web";
    t.slot = slot;
    t.spec_version = 1;
    t.desired_state = SHOAL__TASK_STATE__RUNNING;
    st.state = SHOAL__TASK_STATE__PENDING;
    st.timestamp_ms = clock_wall_ms();
    t.status = &st;
    if (constraint) {
        pl.constraints = constraints;
        pl.n_constraints = 1;
        spec.placement = &pl;
    }
    t.spec = &spec;
    char key[128];
    snprintf(key, sizeof key, "/tasks/%s", id);
    put_msg(f, key, &t.base);
}

static Shoal__Task *get_task(fixture_t *f, const char *id) {
    char key[128];
    snprintf(key, sizeof key, "/tasks/%s", id);
    Shoal__Store__KeyValue *kv = NULL;
    if (store_get(f->store, key, &kv) < 0)
        return NULL;
    Shoal__Task *t = shoal__task__unpack(NULL, kv->value.len, kv->value.data);
    shoal__store__key_value__free_unpacked(kv, NULL);
    return t;
}

static bool is_assigned(fixture_t *f, const char *id, const char *node) {
    Shoal__Task *t = get_task(f, id);
    bool ok = t && t->status && t->status->state == SHOAL__TASK_STATE__ASSIGNED &&
              strcmp(t->node_id, node) == 0;
    if (t)
        shoal__task__free_unpacked(t, NULL);
    return ok;
}

static bool has_err(fixture_t *f, const char *id, const char *needle) {
    Shoal__Task *t = get_task(f, id);
    bool ok = t && t->status && t->status->err && strstr(t->status->err, needle);
    if (t)
        shoal__task__free_unpacked(t, NULL);
    return ok;
}

static void skip_unless_built(fixture_t *f) {
    if (f->store_pid <= 0) {
        print_message("skipped: %s/shoal-store or %s/shoal-scheduler not built "
                      "(run: make -j2 bin/shoal-store bin/shoal-scheduler)\n",
                      bin_dir(), bin_dir());
        skip();
    }
}

/* Waits until /leases/scheduler names `instance` (attached to a lease). */
static void wait_for_leader(fixture_t *f, const char *instance, int timeout_ms) {
    int64_t deadline = clock_mono_ms() + timeout_ms;
    for (;;) {
        Shoal__Store__KeyValue *kv = NULL;
        if (store_get(f->store, "/leases/scheduler", &kv) == 0) {
            bool ok = kv->lease != 0 && kv->value.len == strlen(instance) &&
                      memcmp(kv->value.data, instance, kv->value.len) == 0;
            shoal__store__key_value__free_unpacked(kv, NULL);
            if (ok)
                return;
        }
        if (clock_mono_ms() > deadline) {
            dump_logs(f);
            fail_msg("%s did not hold /leases/scheduler within %d ms", instance, timeout_ms);
        }
        usleep(20 * 1000);
    }
}

static void test_scheduler_daemon_assigns_pending_tasks_to_ready_node(void **state) {
    fixture_t *f = *state;
    skip_unless_built(f);
    wait_for_leader(f, "test-1", 10000);
    int64_t deadline;

    put_node(f, "node-a");
    const char *ids[] = {"task-1", "task-2", "task-3"};
    for (int i = 0; i < 3; i++)
        put_pending_task(f, ids[i], (uint64_t)i + 1, NULL);
    put_pending_task(f, "task-mars", 1, "node.labels.zone==mars");

    int64_t start = clock_mono_ms();
    deadline = start + 2000;
    bool all = false;
    while (!all && clock_mono_ms() < deadline) {
        all = true;
        for (int i = 0; i < 3 && all; i++)
            all = is_assigned(f, ids[i], "node-a");
        if (!all)
            usleep(20 * 1000);
    }
    if (!all) {
        dump_logs(f);
        fail_msg("tasks not ASSIGNED to node-a within 2 s");
    }
    print_message("3 tasks assigned in %lld ms\n", (long long)(clock_mono_ms() - start));

    Shoal__Task *t = get_task(f, "task-1");
    assert_non_null(t);
    assert_string_equal(t->status->message, "scheduler assigned task to node");
    assert_int_equal(t->meta->version, 2);
    assert_true(t->status->timestamp_ms > 0);
    assert_int_equal(t->desired_state, SHOAL__TASK_STATE__RUNNING);
    shoal__task__free_unpacked(t, NULL);

    deadline = clock_mono_ms() + 2000;
    while (!has_err(f, "task-mars", "constraint") && clock_mono_ms() < deadline)
        usleep(20 * 1000);
    t = get_task(f, "task-mars");
    assert_non_null(t);
    assert_int_equal(t->status->state, SHOAL__TASK_STATE__PENDING);
    assert_string_equal(t->node_id, "");
    assert_string_equal(t->status->err,
                        "no suitable node (scheduling constraints not satisfied on 1 node)");
    shoal__task__free_unpacked(t, NULL);

    /* scheduler.Status tells the same story. */
    bus_client_t *bc = registry_connect(f->store, f->admin, "scheduler");
    assert_non_null(bc);
    Shoal__Scheduler__StatusRequest req = SHOAL__SCHEDULER__STATUS_REQUEST__INIT;
    Shoal__Scheduler__StatusResponse *resp = NULL;
    int r = bus_client_call(bc, "scheduler.Status", &req.base,
                            &shoal__scheduler__status_response__descriptor, 3000,
                            (ProtobufCMessage **)&resp);
    if (r != BUS_OK)
        fail_msg("scheduler.Status: %d %s", r, bus_client_error(bc));
    assert_true(resp->leader);
    assert_int_equal(resp->nodes, 1);
    assert_int_equal(resp->pending, 1);
    assert_int_equal(resp->placed_total, 3);
    assert_int_equal(resp->n_unplaced, 1);
    assert_string_equal(resp->unplaced[0]->task_id, "task-mars");
    assert_non_null(strstr(resp->unplaced[0]->reason, "constraints not satisfied"));
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    bus_client_destroy(&bc);
}

static void test_scheduler_daemon_standby_takes_over_when_leader_stops(void **state) {
    fixture_t *f = *state;
    skip_unless_built(f);
    wait_for_leader(f, "test-1", 10000);
    f->standby_pid = spawn(f, "scheduler", "test-2");
    assert_true(f->standby_pid > 0);
    usleep(500 * 1000);  /* let it list and watch */
    stop(&f->sched_pid); /* the leader revokes its lease on the way out */
    int64_t start = clock_mono_ms();
    wait_for_leader(f, "test-2", 2000);
    print_message("standby took over in %lld ms\n", (long long)(clock_mono_ms() - start));

    put_node(f, "node-b");
    put_pending_task(f, "task-after", 1, NULL);
    int64_t deadline = clock_mono_ms() + 2000;
    while (!is_assigned(f, "task-after", "node-b") && clock_mono_ms() < deadline)
        usleep(20 * 1000);
    if (!is_assigned(f, "task-after", "node-b")) {
        dump_logs(f);
        fail_msg("the new leader did not assign task-after within 2 s");
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_scheduler_daemon_assigns_pending_tasks_to_ready_node,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_scheduler_daemon_standby_takes_over_when_leader_stops,
                                        setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
