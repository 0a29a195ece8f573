/* Unit tests of the agent's task state machine (controller.c) and task table (worker.c),
 * driven through an inline pool (0 threads) over a fake, in-memory executor. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "../../services/agent/controller.h"
#include "../../services/agent/executor.h"
#include "log.h"
#include "../../services/agent/pool.h"
#include "../../services/agent/worker.h"

/* ---- fake executor ----------------------------------------------------------------------- */

#define FAKE_MAX 32

typedef struct fake_container {
    bool used;
    executor_container_t c;
} fake_container_t;

static struct fake {
    fake_container_t containers[FAKE_MAX];
    int next_id;
    int prepare_rc;
    char prepare_err[256];
    int start_rc;
    char start_err[256];
    int exit_on_start;        /* >= 0: the container exits with this code as soon as it starts */
    char health_on_start[16]; /* the runtime's health state right after a start ("" = none) */
    int stop_rc;
    int calls_prepare, calls_create, calls_start, calls_stop, calls_remove, calls_inspect,
        calls_list;
    int last_stop_grace;
    char removed[FAKE_MAX][EXECUTOR_ID_MAX];
    int nremoved;
} fake;

static void fake_reset(void) {
    memset(&fake, 0, sizeof fake);
    fake.exit_on_start = -1;
}

static fake_container_t *fake_find(const char *id) {
    for (int i = 0; i < FAKE_MAX; i++)
        if (fake.containers[i].used && strcmp(fake.containers[i].c.id, id) == 0)
            return &fake.containers[i];
    return NULL;
}

static fake_container_t *fake_add_on(const char *node_id, const char *task_id, const char *status,
                                     int exit_code) {
    for (int i = 0; i < FAKE_MAX; i++) {
        fake_container_t *f = &fake.containers[i];
        if (f->used)
            continue;
        memset(f, 0, sizeof *f);
        f->used = true;
        snprintf(f->c.id, sizeof f->c.id, "c%04d%s", ++fake.next_id, task_id);
        snprintf(f->c.task_id, sizeof f->c.task_id, "%s", task_id);
        snprintf(f->c.node_id, sizeof f->c.node_id, "%s", node_id);
        snprintf(f->c.status, sizeof f->c.status, "%s", status);
        f->c.running = strcmp(status, "running") == 0;
        f->c.exit_code = exit_code;
        if (f->c.running) {
            f->c.pid = 4242;
            snprintf(f->c.ip, sizeof f->c.ip, "172.30.0.%d", 10 + i);
        }
        return f;
    }
    return NULL;
}

#define NODE "n1"

static fake_container_t *fake_add(const char *task_id, const char *status, int exit_code) {
    return fake_add_on(NODE, task_id, status, exit_code);
}

/* The container exits behind the agent's back. */
static int fake_exit(const char *id, int code) {
    for (int i = 0; i < FAKE_MAX; i++) {
        fake_container_t *f = &fake.containers[i];
        if (!f->used || strcmp(f->c.id, id) != 0)
            continue;
        snprintf(f->c.status, sizeof f->c.status, "%s", "exited");
        f->c.running = false;
        f->c.exit_code = code;
        return 0;
    }
    return -ENOENT;
}

static executor_t fake_instance;

static void fake_close(executor_t *self) {
}

static int fake_describe(executor_t *self, Shoal__NodeDescription **ret, char *err, size_t n) {
    return -ENOTSUP;
}

static int fake_prepare(executor_t *self, const Shoal__Task *task, char *err, size_t n) {
    fake.calls_prepare++;
    if (fake.prepare_rc < 0)
        snprintf(err, n, "%s", fake.prepare_err);
    return fake.prepare_rc;
}

static int fake_create(executor_t *self, const Shoal__Task *task, char *ret_id, size_t idlen,
                       char *err, size_t n) {
    fake.calls_create++;
    fake_container_t *f = fake_add_on(task->node_id, task->meta->id, "created", 0);
    snprintf(ret_id, idlen, "%s", f->c.id);
    return 0;
}

static int fake_start(executor_t *self, const char *id, char *err, size_t n) {
    fake.calls_start++;
    if (fake.start_rc < 0) {
        snprintf(err, n, "%s", fake.start_err);
        return fake.start_rc;
    }
    fake_container_t *f = fake_find(id);
    if (!f) {
        snprintf(err, n, "No such container: %s", id);
        return -ENOENT;
    }
    if (fake.exit_on_start >= 0) {
        snprintf(f->c.status, sizeof f->c.status, "exited");
        f->c.running = false;
        f->c.exit_code = fake.exit_on_start;
        return 0;
    }
    snprintf(f->c.status, sizeof f->c.status, "running");
    f->c.running = true;
    f->c.pid = 4242;
    snprintf(f->c.ip, sizeof f->c.ip, "172.30.0.7");
    snprintf(f->c.health, sizeof f->c.health, "%s", fake.health_on_start);
    return 0;
}

static int fake_stop(executor_t *self, const char *id, int grace_s, char *err, size_t n) {
    fake.calls_stop++;
    fake.last_stop_grace = grace_s;
    if (fake.stop_rc < 0) {
        snprintf(err, n, "stop failed");
        return fake.stop_rc;
    }
    fake_container_t *f = fake_find(id);
    if (!f)
        return -ENOENT;
    if (f->c.running) {
        snprintf(f->c.status, sizeof f->c.status, "exited");
        f->c.running = false;
        f->c.exit_code = 143;
    }
    return 0;
}

static int fake_remove(executor_t *self, const char *id, char *err, size_t n) {
    fake.calls_remove++;
    fake_container_t *f = fake_find(id);
    if (fake.nremoved < FAKE_MAX)
        snprintf(fake.removed[fake.nremoved++], EXECUTOR_ID_MAX, "%s", id);
    if (!f)
        return -ENOENT;
    f->used = false;
    return 0;
}

static int fake_inspect(executor_t *self, const char *id, executor_container_t *ret, char *err,
                        size_t n) {
    fake.calls_inspect++;
    fake_container_t *f = fake_find(id);
    if (!f) {
        snprintf(err, n, "No such container: %s", id);
        return -ENOENT;
    }
    *ret = f->c;
    return 0;
}

static int fake_list(executor_t *self, const char *node_id, executor_container_t **ret,
                     size_t *ret_n, char *err, size_t n) {
    fake.calls_list++;
    executor_container_t *out = calloc(FAKE_MAX, sizeof *out);
    size_t k = 0;
    for (int i = 0; i < FAKE_MAX; i++)
        if (fake.containers[i].used && strcmp(fake.containers[i].c.node_id, node_id) == 0) {
            out[k] = fake.containers[i].c;
            out[k].exit_code = -1;
            out[k].ip[0] = '\0';
            k++;
        }
    *ret = out;
    *ret_n = k;
    return 0;
}

static const executor_ops_t fake_ops = {
    .name = "fake",
    .close = fake_close,
    .describe = fake_describe,
    .prepare = fake_prepare,
    .create = fake_create,
    .start = fake_start,
    .stop = fake_stop,
    .remove = fake_remove,
    .inspect = fake_inspect,
    .list = fake_list,
};

static executor_t *fake_open(const executor_factory_t *f) {
    fake_instance.ops = &fake_ops;
    return &fake_instance;
}

/* ---- task builder ------------------------------------------------------------------------ */

typedef struct test_task {
    Shoal__Task task;
    Shoal__Meta meta;
    Shoal__TaskSpec spec;
    Shoal__ContainerSpec container;
    Shoal__HealthConfig health;
    char *health_test[2];
    Shoal__TaskStatus status;
    Shoal__ContainerStatus cstatus;
    char id[32];
} test_task_t;

static void task_init(test_task_t *t, const char *id, Shoal__TaskState state,
                      Shoal__TaskState desired) {
    memset(t, 0, sizeof *t);
    shoal__task__init(&t->task);
    shoal__meta__init(&t->meta);
    shoal__task_spec__init(&t->spec);
    shoal__container_spec__init(&t->container);
    shoal__task_status__init(&t->status);
    shoal__container_status__init(&t->cstatus);
    snprintf(t->id, sizeof t->id, "%s", id);
    t->meta.id = t->id;
    t->task.meta = &t->meta;
    t->task.spec = &t->spec;
    t->spec.container = &t->container;
    t->container.image = (char *)"shoal-test:latest";
    t->container.stop_grace_period_ms = 2500;
    t->task.service_name = (char *)"web";
    t->task.node_id = (char *)NODE;
    t->task.slot = 1;
    t->task.desired_state = desired;
    t->task.status = &t->status;
    t->status.state = state;
}

typedef struct fixture {
    executor_factory_t factory;
    pool_t *pool;
    worker_t *worker;
} fixture_t;

static int setup(void **state) {
    fake_reset();
    fixture_t *fx = calloc(1, sizeof *fx);
    fx->factory.name = "fake";
    fx->factory.open = fake_open;
    fx->pool = pool_new(&fx->factory, 0);
    fx->worker = worker_new(fx->pool);
    assert_non_null(fx->pool);
    assert_non_null(fx->worker);
    worker_set_node_id(fx->worker, NODE);
    *state = fx;
    return 0;
}

static int teardown(void **state) {
    fixture_t *fx = *state;
    worker_destroy(&fx->worker);
    pool_destroy(&fx->pool);
    free(fx);
    return 0;
}

static void assign(fixture_t *fx, test_task_t **tasks, size_t n) {
    Shoal__Task *list[8];
    for (size_t i = 0; i < n; i++)
        list[i] = &tasks[i]->task;
    worker_set_assignments(fx->worker, list, n);
}

static void assign_one(fixture_t *fx, test_task_t *t) {
    assign(fx, &t, 1);
}

static void event(fixture_t *fx, enum executor_event_kind kind, const char *task_id,
                  const char *cid, int code) {
    executor_event_t ev = {.kind = kind, .exit_code = code};
    snprintf(ev.task_id, sizeof ev.task_id, "%s", task_id);
    snprintf(ev.container_id, sizeof ev.container_id, "%s", cid);
    worker_on_event(fx->worker, &ev);
}

/* ---- controller -------------------------------------------------------------------------- */

static void test_controller_steps_one_state_at_a_time_to_running(void **state) {
    fixture_t *fx = *state;
    test_task_t tt;
    task_init(&tt, "t1", SHOAL__TASK_STATE__ASSIGNED, SHOAL__TASK_STATE__RUNNING);
    agent_task_t *t = agent_task_new(&tt.task);
    assert_non_null(t);
    executor_t *ex = fx->factory.open(&fx->factory);
    Shoal__TaskState seen[16];
    int nseen = 0;
    seen[nseen++] = t->state;
    for (int i = 0; i < 20; i++) {
        agent_op_t op;
        ctl_step_t s = ctl_step(t, 0, &op);
        if (s == CTL_IDLE)
            break;
        if (s == CTL_RUN) {
            ctl_result_t res;
            ctl_run(ex, op, t->task, t->container_id, 10, &res);
            ctl_apply(t, op, &res, 0);
        }
        if (t->state != seen[nseen - 1])
            seen[nseen++] = t->state;
    }
    Shoal__TaskState want[] = {SHOAL__TASK_STATE__ASSIGNED,  SHOAL__TASK_STATE__ACCEPTED,
                               SHOAL__TASK_STATE__PREPARING, SHOAL__TASK_STATE__READY,
                               SHOAL__TASK_STATE__STARTING,  SHOAL__TASK_STATE__RUNNING};
    assert_int_equal(nseen, 6);
    for (int i = 0; i < 6; i++)
        assert_int_equal(seen[i], want[i]);
    assert_int_equal(fake.calls_prepare, 1);
    assert_int_equal(fake.calls_create, 1);
    assert_int_equal(fake.calls_start, 1);
    assert_string_equal(t->ip, "172.30.0.7");
    assert_int_equal(t->pid, 4242);
    assert_int_equal(t->status_seq, 5); /* one report-worthy change per forward move */
    agent_task_destroy(&t);
}

static void test_controller_never_moves_backwards(void **state) {
    test_task_t tt;
    task_init(&tt, "t1", SHOAL__TASK_STATE__RUNNING, SHOAL__TASK_STATE__RUNNING);
    agent_task_t *t = agent_task_new(&tt.task);
    assert_int_equal(t->state, SHOAL__TASK_STATE__RUNNING);
    assert_int_equal(ctl_set_state(t, SHOAL__TASK_STATE__STARTING, "x", NULL), -EINVAL);
    assert_int_equal(ctl_set_state(t, SHOAL__TASK_STATE__RUNNING, "x", NULL), -EINVAL);
    assert_int_equal(t->state, SHOAL__TASK_STATE__RUNNING);
    assert_int_equal(ctl_set_state(t, SHOAL__TASK_STATE__FAILED, "boom", "boom"), 0);
    /* a late start result must not revive it */
    ctl_result_t res = {.rc = 0, .have_info = true};
    snprintf(res.info.status, sizeof res.info.status, "running");
    res.info.running = true;
    ctl_apply(t, AGENT_OP_START, &res, 0);
    assert_int_equal(t->state, SHOAL__TASK_STATE__FAILED);
    /* an older assignment does not move it back either */
    tt.status.state = SHOAL__TASK_STATE__ASSIGNED;
    assert_int_equal(agent_task_update(t, &tt.task), 0);
    assert_int_equal(t->state, SHOAL__TASK_STATE__FAILED);
    agent_op_t op;
    assert_int_equal(ctl_step(t, 0, &op), CTL_IDLE);
    agent_task_destroy(&t);
}

static agent_task_t *run_to_running(fixture_t *fx, test_task_t *tt, const char *id);

static void test_controller_exit_seen_during_start_fails_task_after_start(void **state) {
    test_task_t tt;
    task_init(&tt, "t1", SHOAL__TASK_STATE__STARTING, SHOAL__TASK_STATE__RUNNING);
    tt.status.container = &tt.cstatus;
    tt.cstatus.container_id = (char *)"c1";
    agent_task_t *t = agent_task_new(&tt.task);
    agent_op_t op;
    assert_int_equal(ctl_step(t, 0, &op), CTL_RUN);
    assert_int_equal(op, AGENT_OP_START);
    t->busy = true;          /* the start call is in flight... */
    ctl_on_exit(t, "c1", 5); /* ...when the die event arrives */
    assert_int_equal(t->state, SHOAL__TASK_STATE__STARTING);
    ctl_result_t res = {.rc = 0, .have_info = true};
    snprintf(res.info.status, sizeof res.info.status, "running"); /* inspected before it died */
    res.info.running = true;
    ctl_apply(t, AGENT_OP_START, &res, 0);
    assert_int_equal(t->state, SHOAL__TASK_STATE__RUNNING);
    assert_int_equal(ctl_step(t, 0, &op), CTL_CHANGED);
    assert_int_equal(t->state, SHOAL__TASK_STATE__FAILED);
    assert_int_equal(t->exit_code, 5);
    agent_task_destroy(&t);
}

static void test_worker_resync_finds_container_that_died_while_events_were_lost(void **state) {
    fixture_t *fx = *state;
    test_task_t tt;
    agent_task_t *t = run_to_running(fx, &tt, "t1");
    assert_int_equal(fake_exit(t->container_id, 9), 0); /* no die event reached us */
    event(fx, EXECUTOR_EVENT_RESYNC, "", "", -1);
    t = worker_task(fx->worker, "t1");
    assert_int_equal(t->state, SHOAL__TASK_STATE__FAILED);
    assert_int_equal(t->exit_code, 9);
    assert_int_equal(fake.calls_list, 2);
}

/* ---- worker ------------------------------------------------------------------------------ */

static agent_task_t *run_to_running(fixture_t *fx, test_task_t *tt, const char *id) {
    task_init(tt, id, SHOAL__TASK_STATE__ASSIGNED, SHOAL__TASK_STATE__RUNNING);
    worker_resync(fx->worker);
    assign_one(fx, tt);
    agent_task_t *t = worker_task(fx->worker, id);
    assert_non_null(t);
    assert_int_equal(t->state, SHOAL__TASK_STATE__RUNNING);
    return t;
}

static void test_worker_runs_assigned_task_and_reports_running_with_address(void **state) {
    fixture_t *fx = *state;
    test_task_t tt;
    agent_task_t *t = run_to_running(fx, &tt, "t1");
    assert_true(t->container_id[0] != '\0');
    worker_batch_t *b = worker_batch_take(fx->worker, 100);
    assert_int_equal(worker_batch_size(b), 1);
    Shoal__Dispatcher__TaskStatusUpdate *u = worker_batch_updates(b)[0];
    assert_string_equal(u->task_id, "t1");
    assert_int_equal(u->status->state, SHOAL__TASK_STATE__RUNNING);
    assert_string_equal(u->status->container->container_id, t->container_id);
    assert_int_equal(u->n_networks, 1);
    assert_string_equal(u->networks[0]->network, "shoal");
    assert_string_equal(u->networks[0]->addresses[0], "172.30.0.7");
    worker_batch_ack(fx->worker, b);
    worker_batch_destroy(&b);
    assert_int_equal(worker_dirty_count(fx->worker), 0);
    assert_null(worker_batch_take(fx->worker, 100));
}

static void test_worker_die_with_nonzero_exit_fails_task_with_exit_code(void **state) {
    fixture_t *fx = *state;
    test_task_t tt;
    agent_task_t *t = run_to_running(fx, &tt, "t1");
    char cid[EXECUTOR_ID_MAX];
    snprintf(cid, sizeof cid, "%s", t->container_id);
    event(fx, EXECUTOR_EVENT_DIE, "t1", cid, 3);
    t = worker_task(fx->worker, "t1");
    assert_int_equal(t->state, SHOAL__TASK_STATE__FAILED);
    assert_int_equal(t->exit_code, 3);
    assert_string_equal(t->message, "task: non-zero exit (3)");
    worker_batch_t *b = worker_batch_take(fx->worker, 100);
    Shoal__Dispatcher__TaskStatusUpdate *u = worker_batch_updates(b)[0];
    assert_int_equal(u->status->state, SHOAL__TASK_STATE__FAILED);
    assert_int_equal(u->status->container->exit_code, 3);
    assert_string_equal(u->status->err, "task: non-zero exit (3)");
    worker_batch_destroy(&b);
    /* a later die of the same container changes nothing */
    event(fx, EXECUTOR_EVENT_DIE, "t1", cid, 0);
    assert_int_equal(worker_task(fx->worker, "t1")->state, SHOAL__TASK_STATE__FAILED);
}

static void test_worker_die_with_zero_exit_completes_task(void **state) {
    fixture_t *fx = *state;
    test_task_t tt;
    agent_task_t *t = run_to_running(fx, &tt, "t1");
    event(fx, EXECUTOR_EVENT_DIE, "t1", t->container_id, 0);
    assert_int_equal(worker_task(fx->worker, "t1")->state, SHOAL__TASK_STATE__COMPLETE);
}

static void test_worker_ignores_die_of_another_container(void **state) {
    fixture_t *fx = *state;
    test_task_t tt;
    run_to_running(fx, &tt, "t1");
    event(fx, EXECUTOR_EVENT_DIE, "t1", "someothercontainer", 1);
    assert_int_equal(worker_task(fx->worker, "t1")->state, SHOAL__TASK_STATE__RUNNING);
}

static void test_worker_container_exiting_at_start_fails_task(void **state) {
    fixture_t *fx = *state;
    fake.exit_on_start = 7;
    test_task_t tt;
    task_init(&tt, "t1", SHOAL__TASK_STATE__ASSIGNED, SHOAL__TASK_STATE__RUNNING);
    worker_resync(fx->worker);
    assign_one(fx, &tt);
    agent_task_t *t = worker_task(fx->worker, "t1");
    assert_int_equal(t->state, SHOAL__TASK_STATE__FAILED);
    assert_int_equal(t->exit_code, 7);
}

static void test_worker_desired_shutdown_stops_container_with_grace(void **state) {
    fixture_t *fx = *state;
    test_task_t tt;
    run_to_running(fx, &tt, "t1");
    tt.task.desired_state = SHOAL__TASK_STATE__SHUTDOWN;
    tt.status.state = SHOAL__TASK_STATE__RUNNING;
    assign_one(fx, &tt);
    agent_task_t *t = worker_task(fx->worker, "t1");
    assert_int_equal(fake.calls_stop, 1);
    assert_int_equal(fake.last_stop_grace, 3); /* 2500 ms rounded up */
    assert_int_equal(t->state, SHOAL__TASK_STATE__SHUTDOWN);
    assert_int_equal(fake.calls_remove, 0); /* still assigned: the container stays */
    /* the die that follows the stop does not turn SHUTDOWN into FAILED */
    event(fx, EXECUTOR_EVENT_DIE, "t1", t->container_id, 143);
    assert_int_equal(worker_task(fx->worker, "t1")->state, SHOAL__TASK_STATE__SHUTDOWN);
}

static void test_worker_shutdown_before_prepare_needs_no_container(void **state) {
    fixture_t *fx = *state;
    test_task_t tt;
    task_init(&tt, "t1", SHOAL__TASK_STATE__ASSIGNED, SHOAL__TASK_STATE__SHUTDOWN);
    worker_resync(fx->worker);
    assign_one(fx, &tt);
    assert_int_equal(worker_task(fx->worker, "t1")->state, SHOAL__TASK_STATE__SHUTDOWN);
    assert_int_equal(fake.calls_create, 0);
    assert_int_equal(fake.calls_stop, 0);
}

static void test_worker_pull_failure_rejects_task_with_engine_message(void **state) {
    fixture_t *fx = *state;
    fake.prepare_rc = -EIO;
    snprintf(fake.prepare_err, sizeof fake.prepare_err,
             "pull access denied for nope, repository does not exist");
    test_task_t tt;
    task_init(&tt, "t1", SHOAL__TASK_STATE__ASSIGNED, SHOAL__TASK_STATE__RUNNING);
    worker_resync(fx->worker);
    assign_one(fx, &tt);
    agent_task_t *t = worker_task(fx->worker, "t1");
    assert_int_equal(t->state, SHOAL__TASK_STATE__REJECTED);
    assert_string_equal(t->err, "pull access denied for nope, repository does not exist");
    assert_string_equal(t->message, t->err);
    assert_int_equal(fake.calls_create, 0);
    worker_stats_t st;
    worker_get_stats(fx->worker, &st);
    assert_int_equal(st.tasks_by_state[WORKER_STATE_INDEX(SHOAL__TASK_STATE__REJECTED)], 1);
    assert_int_equal(st.tasks_by_state[WORKER_STATE_INDEX(SHOAL__TASK_STATE__REMOVE)], 0);
}

static void test_worker_retries_when_runtime_is_down_instead_of_rejecting(void **state) {
    fixture_t *fx = *state;
    fake.prepare_rc = -ECONNREFUSED;
    snprintf(fake.prepare_err, sizeof fake.prepare_err, "cannot connect to the Docker daemon");
    test_task_t tt;
    task_init(&tt, "t1", SHOAL__TASK_STATE__ASSIGNED, SHOAL__TASK_STATE__RUNNING);
    worker_resync(fx->worker);
    assign_one(fx, &tt);
    agent_task_t *t = worker_task(fx->worker, "t1");
    assert_int_equal(t->state, SHOAL__TASK_STATE__PREPARING);
    assert_true(t->retry_at_ms > 0);
    /* the runtime comes back; the retry time passes */
    fake.prepare_rc = 0;
    t->retry_at_ms = 1;
    worker_tick(fx->worker);
    assert_int_equal(worker_task(fx->worker, "t1")->state, SHOAL__TASK_STATE__RUNNING);
}

static void test_worker_start_failure_fails_task(void **state) {
    fixture_t *fx = *state;
    fake.start_rc = -EIO;
    snprintf(fake.start_err, sizeof fake.start_err, "exec: \"nope\": executable file not found");
    test_task_t tt;
    task_init(&tt, "t1", SHOAL__TASK_STATE__ASSIGNED, SHOAL__TASK_STATE__RUNNING);
    worker_resync(fx->worker);
    assign_one(fx, &tt);
    agent_task_t *t = worker_task(fx->worker, "t1");
    assert_int_equal(t->state, SHOAL__TASK_STATE__FAILED);
    assert_non_null(strstr(t->err, "executable file not found"));
}

static void test_worker_held_at_ready_until_desired_running(void **state) {
    fixture_t *fx = *state;
    test_task_t tt;
    task_init(&tt, "t1", SHOAL__TASK_STATE__ASSIGNED, SHOAL__TASK_STATE__READY);
    worker_resync(fx->worker);
    assign_one(fx, &tt);
    assert_int_equal(worker_task(fx->worker, "t1")->state, SHOAL__TASK_STATE__READY);
    assert_int_equal(fake.calls_start, 0);
    tt.task.desired_state = SHOAL__TASK_STATE__RUNNING;
    assign_one(fx, &tt);
    assert_int_equal(worker_task(fx->worker, "t1")->state, SHOAL__TASK_STATE__RUNNING);
}

static void test_worker_removes_container_when_task_leaves_assignment_set(void **state) {
    fixture_t *fx = *state;
    test_task_t tt;
    agent_task_t *t = run_to_running(fx, &tt, "t1");
    char cid[EXECUTOR_ID_MAX];
    snprintf(cid, sizeof cid, "%s", t->container_id);
    assign(fx, NULL, 0);
    assert_null(worker_task(fx->worker, "t1"));
    assert_int_equal(fake.calls_remove, 1);
    assert_string_equal(fake.removed[0], cid);
    assert_null(fake_find(cid));
}

static void test_worker_readopts_running_container_after_restart(void **state) {
    fixture_t *fx = *state;
    fake_container_t *mine = fake_add("t1", "running", 0);
    fake_container_t *stale = fake_add("gone", "exited", -1);
    char mine_id[EXECUTOR_ID_MAX], stale_id[EXECUTOR_ID_MAX];
    snprintf(mine_id, sizeof mine_id, "%s", mine->c.id);
    snprintf(stale_id, sizeof stale_id, "%s", stale->c.id);
    worker_resync(fx->worker);
    /* nothing is removed before the first assignment set */
    assert_int_equal(fake.calls_remove, 0);
    test_task_t tt;
    task_init(&tt, "t1", SHOAL__TASK_STATE__RUNNING, SHOAL__TASK_STATE__RUNNING);
    tt.status.container = &tt.cstatus;
    tt.cstatus.container_id = mine_id;
    assign_one(fx, &tt);
    agent_task_t *t = worker_task(fx->worker, "t1");
    assert_int_equal(t->state, SHOAL__TASK_STATE__RUNNING);
    assert_string_equal(t->container_id, mine_id);
    assert_int_equal(fake.calls_create, 0);
    assert_int_equal(fake.calls_start, 0);
    assert_int_equal(fake.calls_remove, 1);
    assert_string_equal(fake.removed[0], stale_id);
    assert_non_null(fake_find(mine_id));
    worker_stats_t st;
    worker_get_stats(fx->worker, &st);
    assert_int_equal(st.containers_removed, 1);
}

static void test_worker_never_touches_containers_of_other_nodes(void **state) {
    fixture_t *fx = *state;
    fake_container_t *other = fake_add_on("n2", "theirs", "running", 0);
    char other_id[EXECUTOR_ID_MAX];
    snprintf(other_id, sizeof other_id, "%s", other->c.id);
    worker_resync(fx->worker);
    assign(fx, NULL, 0);
    event(fx, EXECUTOR_EVENT_RESYNC, "", "", -1);
    assert_int_equal(fake.calls_remove, 0);
    assert_non_null(fake_find(other_id));
}

static void test_worker_lists_containers_only_once_node_id_is_known(void **state) {
    fake_reset();
    executor_factory_t f = {.name = "fake", .open = fake_open};
    pool_t *pool = pool_new(&f, 0);
    worker_t *w = worker_new(pool);
    worker_resync(w);
    assert_int_equal(fake.calls_list, 0);
    assert_false(worker_listed(w));
    worker_set_node_id(w, NODE);
    assert_int_equal(fake.calls_list, 1);
    assert_true(worker_listed(w));
    worker_destroy(&w);
    pool_destroy(&pool);
}

static void test_worker_reports_container_that_exited_while_agent_was_down(void **state) {
    fixture_t *fx = *state;
    fake_container_t *mine = fake_add("t1", "exited", 2);
    char mine_id[EXECUTOR_ID_MAX];
    snprintf(mine_id, sizeof mine_id, "%s", mine->c.id);
    test_task_t tt;
    task_init(&tt, "t1", SHOAL__TASK_STATE__RUNNING, SHOAL__TASK_STATE__RUNNING);
    tt.status.container = &tt.cstatus;
    tt.cstatus.container_id = mine_id;
    /* the assignment set comes first this time */
    assign_one(fx, &tt);
    worker_resync(fx->worker);
    agent_task_t *t = worker_task(fx->worker, "t1");
    assert_int_equal(t->state, SHOAL__TASK_STATE__FAILED);
    assert_int_equal(t->exit_code, 2);
    assert_int_equal(fake.calls_create, 0);
    assert_int_equal(worker_dirty_count(fx->worker), 1);
}

static void test_worker_fails_running_task_whose_container_vanished(void **state) {
    fixture_t *fx = *state;
    test_task_t tt;
    task_init(&tt, "t1", SHOAL__TASK_STATE__RUNNING, SHOAL__TASK_STATE__RUNNING);
    tt.status.container = &tt.cstatus;
    tt.cstatus.container_id = (char *)"c9999deadbeef";
    worker_resync(fx->worker);
    assign_one(fx, &tt);
    agent_task_t *t = worker_task(fx->worker, "t1");
    assert_int_equal(t->state, SHOAL__TASK_STATE__FAILED);
    assert_int_equal(fake.calls_create, 0);
}

static void test_worker_reports_change_made_while_batch_in_flight(void **state) {
    fixture_t *fx = *state;
    test_task_t tt;
    agent_task_t *t = run_to_running(fx, &tt, "t1");
    worker_batch_t *b = worker_batch_take(fx->worker, 100);
    event(fx, EXECUTOR_EVENT_DIE, "t1", t->container_id, 1); /* while the batch is out */
    worker_batch_ack(fx->worker, b);
    worker_batch_destroy(&b);
    assert_int_equal(worker_dirty_count(fx->worker), 1);
    b = worker_batch_take(fx->worker, 100);
    assert_int_equal(worker_batch_updates(b)[0]->status->state, SHOAL__TASK_STATE__FAILED);
    worker_batch_destroy(&b);
}

/* ---- health ------------------------------------------------------------------------------ */

static void with_healthcheck(test_task_t *tt) {
    shoal__health_config__init(&tt->health);
    tt->health_test[0] = (char *)"CMD-SHELL";
    tt->health_test[1] = (char *)"test -f /tmp/ok";
    tt->health.test = tt->health_test;
    tt->health.n_test = 2;
    tt->health.interval_ms = 1000;
    tt->health.retries = 2;
    tt->container.healthcheck = &tt->health;
}

static Shoal__Dispatcher__TaskStatusUpdate *only_update(worker_batch_t *b) {
    assert_int_equal(worker_batch_size(b), 1);
    return worker_batch_updates(b)[0];
}

/* Takes the waiting report of one task, acknowledges it, returns its healthy flag. */
static bool report_healthy(fixture_t *fx, Shoal__TaskState want_state) {
    worker_batch_t *b = worker_batch_take(fx->worker, 100);
    assert_non_null(b);
    Shoal__Dispatcher__TaskStatusUpdate *u = only_update(b);
    assert_int_equal(u->status->state, want_state);
    bool healthy = u->status->healthy;
    worker_batch_ack(fx->worker, b);
    worker_batch_destroy(&b);
    return healthy;
}

static void
test_worker_task_with_healthcheck_is_running_but_unhealthy_until_healthy_event(void **state) {
    fixture_t *fx = *state;
    test_task_t tt;
    task_init(&tt, "t1", SHOAL__TASK_STATE__ASSIGNED, SHOAL__TASK_STATE__RUNNING);
    with_healthcheck(&tt);
    fake.health_on_start[0] = '\0'; /* the Engine may not have said "starting" yet */
    worker_resync(fx->worker);
    assign_one(fx, &tt);
    agent_task_t *t = worker_task(fx->worker, "t1");
    assert_int_equal(t->state, SHOAL__TASK_STATE__RUNNING);
    assert_true(t->has_healthcheck);
    assert_false(report_healthy(fx, SHOAL__TASK_STATE__RUNNING));
    /* the first healthy verdict is reported on its own, same state */
    event(fx, EXECUTOR_EVENT_HEALTHY, "t1", t->container_id, -1);
    assert_int_equal(worker_dirty_count(fx->worker), 1);
    assert_true(report_healthy(fx, SHOAL__TASK_STATE__RUNNING));
    assert_int_equal(worker_task(fx->worker, "t1")->state, SHOAL__TASK_STATE__RUNNING);
    /* a repeated verdict is not news */
    event(fx, EXECUTOR_EVENT_HEALTHY, "t1", t->container_id, -1);
    assert_int_equal(worker_dirty_count(fx->worker), 0);
}

static void test_worker_task_without_healthcheck_reports_healthy_once_running(void **state) {
    fixture_t *fx = *state;
    test_task_t tt;
    run_to_running(fx, &tt, "t1");
    assert_false(worker_task(fx->worker, "t1")->has_healthcheck);
    assert_true(report_healthy(fx, SHOAL__TASK_STATE__RUNNING));
}

static void test_worker_image_healthcheck_seen_at_start_holds_healthy_back(void **state) {
    fixture_t *fx = *state;
    snprintf(fake.health_on_start, sizeof fake.health_on_start, "starting");
    test_task_t tt;
    agent_task_t *t = run_to_running(fx, &tt, "t1"); /* no healthcheck in the spec */
    assert_true(t->has_healthcheck);
    assert_false(report_healthy(fx, SHOAL__TASK_STATE__RUNNING));
    event(fx, EXECUTOR_EVENT_HEALTHY, "t1", t->container_id, -1);
    assert_true(report_healthy(fx, SHOAL__TASK_STATE__RUNNING));
}

static void test_worker_unhealthy_event_fails_task_and_stops_its_container(void **state) {
    fixture_t *fx = *state;
    test_task_t tt;
    task_init(&tt, "t1", SHOAL__TASK_STATE__ASSIGNED, SHOAL__TASK_STATE__RUNNING);
    with_healthcheck(&tt);
    worker_resync(fx->worker);
    assign_one(fx, &tt);
    agent_task_t *t = worker_task(fx->worker, "t1");
    char cid[EXECUTOR_ID_MAX];
    snprintf(cid, sizeof cid, "%s", t->container_id);
    event(fx, EXECUTOR_EVENT_HEALTHY, "t1", cid, -1);
    (void)report_healthy(fx, SHOAL__TASK_STATE__RUNNING);
    assert_int_equal(fake.calls_stop, 0);

    event(fx, EXECUTOR_EVENT_UNHEALTHY, "t1", cid, -1);
    t = worker_task(fx->worker, "t1");
    assert_int_equal(t->state, SHOAL__TASK_STATE__FAILED);
    assert_string_equal(t->err, "task: container unhealthy");
    assert_string_equal(t->message, "task: container unhealthy");
    assert_int_equal(fake.calls_stop, 1); /* stopped after the failure */
    assert_false(fake_find(cid)->c.running);
    assert_false(t->reap);
    worker_batch_t *b = worker_batch_take(fx->worker, 100);
    Shoal__Dispatcher__TaskStatusUpdate *u = only_update(b);
    assert_int_equal(u->status->state, SHOAL__TASK_STATE__FAILED);
    assert_string_equal(u->status->err, "task: container unhealthy");
    assert_false(u->status->healthy);
    worker_batch_destroy(&b);
    /* the die that follows the stop changes nothing */
    event(fx, EXECUTOR_EVENT_DIE, "t1", cid, 143);
    assert_string_equal(worker_task(fx->worker, "t1")->err, "task: container unhealthy");
    assert_int_equal(fake.calls_stop, 1);
}

static void test_worker_unhealthy_while_desired_shutdown_ends_shutdown(void **state) {
    fixture_t *fx = *state;
    test_task_t tt;
    task_init(&tt, "t1", SHOAL__TASK_STATE__ASSIGNED, SHOAL__TASK_STATE__RUNNING);
    with_healthcheck(&tt);
    worker_resync(fx->worker);
    assign_one(fx, &tt);
    agent_task_t *t = worker_task(fx->worker, "t1");
    t->busy = true; /* the verdict arrives while a call is in flight */
    ctl_on_health(t, t->container_id, false);
    t->busy = false;
    t->desired = SHOAL__TASK_STATE__SHUTDOWN;
    worker_tick(fx->worker);
    assert_int_equal(worker_task(fx->worker, "t1")->state, SHOAL__TASK_STATE__SHUTDOWN);
}

static void test_worker_ignores_health_of_another_container(void **state) {
    fixture_t *fx = *state;
    test_task_t tt;
    task_init(&tt, "t1", SHOAL__TASK_STATE__ASSIGNED, SHOAL__TASK_STATE__RUNNING);
    with_healthcheck(&tt);
    worker_resync(fx->worker);
    assign_one(fx, &tt);
    event(fx, EXECUTOR_EVENT_UNHEALTHY, "t1", "someothercontainer", -1);
    assert_int_equal(worker_task(fx->worker, "t1")->state, SHOAL__TASK_STATE__RUNNING);
}

static void test_controller_health_event_wins_over_older_inspect(void **state) {
    test_task_t tt;
    task_init(&tt, "t1", SHOAL__TASK_STATE__STARTING, SHOAL__TASK_STATE__RUNNING);
    with_healthcheck(&tt);
    tt.status.container = &tt.cstatus;
    tt.cstatus.container_id = (char *)"c1";
    agent_task_t *t = agent_task_new(&tt.task);
    t->busy = true;               /* start (and its inspect) in flight... */
    ctl_on_health(t, "c1", true); /* ...the healthy event overtakes it */
    ctl_result_t res = {.rc = 0, .have_info = true};
    snprintf(res.info.status, sizeof res.info.status, "running");
    snprintf(res.info.health, sizeof res.info.health, "unhealthy"); /* stale */
    res.info.running = true;
    ctl_apply(t, AGENT_OP_START, &res, 0);
    assert_int_equal(t->state, SHOAL__TASK_STATE__RUNNING);
    assert_true(ctl_task_healthy(t));
    agent_op_t op;
    assert_int_equal(ctl_step(t, 0, &op), CTL_IDLE);
    agent_task_destroy(&t);
}

static void test_controller_none_healthcheck_counts_as_none(void **state) {
    test_task_t tt;
    task_init(&tt, "t1", SHOAL__TASK_STATE__ASSIGNED, SHOAL__TASK_STATE__RUNNING);
    assert_false(ctl_spec_has_healthcheck(&tt.task));
    with_healthcheck(&tt);
    assert_true(ctl_spec_has_healthcheck(&tt.task));
    tt.health_test[0] = (char *)"NONE";
    tt.health.n_test = 1;
    assert_false(ctl_spec_has_healthcheck(&tt.task));
}

static void test_worker_stops_running_container_of_finished_task_after_restart(void **state) {
    fixture_t *fx = *state;
    fake_container_t *mine = fake_add("t1", "running", 0); /* failed unhealthy, never stopped */
    char mine_id[EXECUTOR_ID_MAX];
    snprintf(mine_id, sizeof mine_id, "%s", mine->c.id);
    test_task_t tt;
    task_init(&tt, "t1", SHOAL__TASK_STATE__FAILED, SHOAL__TASK_STATE__SHUTDOWN);
    tt.status.container = &tt.cstatus;
    tt.cstatus.container_id = mine_id;
    tt.status.err = (char *)"task: container unhealthy";
    worker_resync(fx->worker);
    assign_one(fx, &tt);
    assert_int_equal(fake.calls_stop, 1);
    assert_false(fake_find(mine_id)->c.running);
    agent_task_t *t = worker_task(fx->worker, "t1");
    assert_int_equal(t->state, SHOAL__TASK_STATE__FAILED);
    assert_int_equal(fake.calls_remove, 0); /* still assigned: kept for the history */
}

static void test_worker_batches_at_most_max_updates(void **state) {
    fixture_t *fx = *state;
    test_task_t tts[5], *ptrs[5];
    char id[16];
    for (int i = 0; i < 5; i++) {
        snprintf(id, sizeof id, "t%d", i);
        task_init(&tts[i], id, SHOAL__TASK_STATE__ASSIGNED, SHOAL__TASK_STATE__RUNNING);
        ptrs[i] = &tts[i];
    }
    worker_resync(fx->worker);
    assign(fx, ptrs, 5);
    worker_batch_t *b = worker_batch_take(fx->worker, 3);
    assert_int_equal(worker_batch_size(b), 3);
    worker_batch_ack(fx->worker, b);
    worker_batch_destroy(&b);
    assert_int_equal(worker_dirty_count(fx->worker), 2);
    worker_stats_t st;
    worker_get_stats(fx->worker, &st);
    assert_int_equal(st.tasks, 5);
    assert_int_equal(st.tasks_by_state[WORKER_STATE_INDEX(SHOAL__TASK_STATE__RUNNING)], 5);
}

int main(void) {
    log_init("agent-test", LOG_LEVEL_ERR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_controller_steps_one_state_at_a_time_to_running, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_controller_never_moves_backwards, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_controller_exit_seen_during_start_fails_task_after_start, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_worker_resync_finds_container_that_died_while_events_were_lost, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_worker_runs_assigned_task_and_reports_running_with_address, setup, teardown),
        cmocka_unit_test_setup_teardown(test_worker_die_with_nonzero_exit_fails_task_with_exit_code,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_worker_die_with_zero_exit_completes_task, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_worker_ignores_die_of_another_container, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_worker_container_exiting_at_start_fails_task, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_worker_desired_shutdown_stops_container_with_grace,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_worker_shutdown_before_prepare_needs_no_container,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_worker_pull_failure_rejects_task_with_engine_message,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_worker_retries_when_runtime_is_down_instead_of_rejecting, setup, teardown),
        cmocka_unit_test_setup_teardown(test_worker_start_failure_fails_task, setup, teardown),
        cmocka_unit_test_setup_teardown(test_worker_held_at_ready_until_desired_running, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(
            test_worker_removes_container_when_task_leaves_assignment_set, setup, teardown),
        cmocka_unit_test_setup_teardown(test_worker_readopts_running_container_after_restart, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_worker_never_touches_containers_of_other_nodes, setup,
                                        teardown),
        cmocka_unit_test(test_worker_lists_containers_only_once_node_id_is_known),
        cmocka_unit_test_setup_teardown(
            test_worker_reports_container_that_exited_while_agent_was_down, setup, teardown),
        cmocka_unit_test_setup_teardown(test_worker_fails_running_task_whose_container_vanished,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_worker_reports_change_made_while_batch_in_flight,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_worker_batches_at_most_max_updates, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_worker_task_with_healthcheck_is_running_but_unhealthy_until_healthy_event, setup,
            teardown),
        cmocka_unit_test_setup_teardown(
            test_worker_task_without_healthcheck_reports_healthy_once_running, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_worker_image_healthcheck_seen_at_start_holds_healthy_back, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_worker_unhealthy_event_fails_task_and_stops_its_container, setup, teardown),
        cmocka_unit_test_setup_teardown(test_worker_unhealthy_while_desired_shutdown_ends_shutdown,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_worker_ignores_health_of_another_container, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_controller_health_event_wins_over_older_inspect, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_controller_none_healthcheck_counts_as_none, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(
            test_worker_stops_running_container_of_finished_task_after_restart, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
