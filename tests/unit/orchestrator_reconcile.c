/* The orchestrator's decisions (reconcile.c) driven against an in-memory "world": a service, its
 * tasks and the nodes. Each step runs reconcile_service() once and applies its actions as the
 * daemon would (create, update desired state, delete, replace the service); the tests then play
 * the scheduler and the agents by editing task states, and assert what the orchestrator did:
 * replica slots, scaling, restart policies with delay and max attempts, global services over
 * node availability, rolling updates with parallelism, the reaper, and node failure. */
#include <errno.h>
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "../../services/orchestrator/reconcile.h"

#define MAX_TASKS 512
#define MAX_NODES 16
#define T0        1000000

typedef struct world {
    Shoal__Service *svc;
    Shoal__Task *tasks[MAX_TASKS];
    int64_t mods[MAX_TASKS];
    size_t n;
    Shoal__Node *nodes[MAX_NODES];
    size_t nn;
    int64_t now;
    int64_t rev;
    int ids;
    /* what the last step did */
    size_t created, updated, deleted, service_updates;
    int64_t wake_at;
    uint64_t restarts;
    uint64_t default_history;
    /* what manager.c's cache remembers: when each task was first seen RUNNING */
    char since_id[MAX_TASKS * 4][32];
    int64_t since_ms[MAX_TASKS * 4];
    size_t nsince;
} world_t;

static int64_t *since_slot(world_t *w, const char *id) {
    for (size_t i = 0; i < w->nsince; i++)
        if (!strcmp(w->since_id[i], id))
            return &w->since_ms[i];
    assert_true(w->nsince < MAX_TASKS * 4);
    snprintf(w->since_id[w->nsince], sizeof w->since_id[0], "%s", id);
    w->since_ms[w->nsince] = 0;
    return &w->since_ms[w->nsince++];
}

typedef struct svc_opts {
    bool global;
    uint64_t replicas;
    int condition;
    int64_t delay_ms;
    uint64_t max_attempts;
    int64_t window_ms;
    bool update;
    uint64_t parallelism;
    int failure_action;
    int order;
    int64_t update_delay_ms;
    int64_t monitor_ms;
    float max_failure_ratio;
    bool rollback;                 /* a rollback config: */
    uint64_t rollback_parallelism; /* its parallelism */
    int rollback_failure_action;
    const char *constraint;
    bool healthcheck;
    uint64_t history_limit;
    int job; /* 0, SHOAL__SERVICE_SPEC__MODE_REPLICATED_JOB or SHOAL__SERVICE_SPEC__MODE_GLOBAL_JOB
              */
    uint64_t total_completions;
    uint64_t max_concurrent;
} svc_opts_t;

static void next_id(void *ctx, char *buf) {
    world_t *w = ctx;
    snprintf(buf, 26, "task%04d", ++w->ids);
}

static Shoal__Service *make_service(const svc_opts_t *o) {
    Shoal__Meta meta = SHOAL__META__INIT;
    meta.id = "svc1";
    meta.version = 1;
    Shoal__Annotations ann = SHOAL__ANNOTATIONS__INIT;
    ann.name = "web";
    Shoal__ContainerSpec c = SHOAL__CONTAINER_SPEC__INIT;
    c.image = "shoal-test:1";
    Shoal__RestartPolicy rp = SHOAL__RESTART_POLICY__INIT;
    rp.condition = o->condition;
    rp.delay_ms = o->delay_ms;
    rp.max_attempts = o->max_attempts;
    rp.window_ms = o->window_ms;
    char *constraints[1] = {(char *)o->constraint};
    Shoal__Placement pl = SHOAL__PLACEMENT__INIT;
    pl.constraints = constraints;
    pl.n_constraints = o->constraint ? 1 : 0;
    char *test[2] = {"CMD-SHELL", "true"};
    Shoal__HealthConfig hc = SHOAL__HEALTH_CONFIG__INIT;
    hc.test = test;
    hc.n_test = 2;
    if (o->healthcheck)
        c.healthcheck = &hc;
    Shoal__TaskSpec ts = SHOAL__TASK_SPEC__INIT;
    ts.container = &c;
    ts.restart = &rp;
    ts.placement = &pl;
    Shoal__ReplicatedService rs = SHOAL__REPLICATED_SERVICE__INIT;
    rs.replicas = o->replicas;
    Shoal__GlobalService gs = SHOAL__GLOBAL_SERVICE__INIT;
    Shoal__UpdateConfig uc = SHOAL__UPDATE_CONFIG__INIT;
    uc.parallelism = o->parallelism;
    uc.failure_action = o->failure_action;
    uc.order = o->order;
    uc.delay_ms = o->update_delay_ms;
    uc.monitor_ms = o->monitor_ms;
    uc.max_failure_ratio = o->max_failure_ratio;
    Shoal__UpdateConfig rc = SHOAL__UPDATE_CONFIG__INIT;
    rc.parallelism = o->rollback_parallelism;
    rc.failure_action = o->rollback_failure_action;
    rc.order = o->order;
    Shoal__ReplicatedJob rj = SHOAL__REPLICATED_JOB__INIT;
    rj.total_completions = o->total_completions;
    rj.max_concurrent = o->max_concurrent;
    Shoal__GlobalJob gj = SHOAL__GLOBAL_JOB__INIT;
    Shoal__ServiceSpec spec = SHOAL__SERVICE_SPEC__INIT;
    spec.annotations = &ann;
    spec.task = &ts;
    spec.task_history_limit = o->history_limit;
    if (o->rollback)
        spec.rollback = &rc;
    if (o->job == SHOAL__SERVICE_SPEC__MODE_REPLICATED_JOB) {
        spec.mode_case = SHOAL__SERVICE_SPEC__MODE_REPLICATED_JOB;
        spec.replicated_job = &rj;
    } else if (o->job == SHOAL__SERVICE_SPEC__MODE_GLOBAL_JOB) {
        spec.mode_case = SHOAL__SERVICE_SPEC__MODE_GLOBAL_JOB;
        spec.global_job = &gj;
    } else if (o->global) {
        spec.mode_case = SHOAL__SERVICE_SPEC__MODE_GLOBAL;
        spec.global = &gs;
    } else {
        spec.mode_case = SHOAL__SERVICE_SPEC__MODE_REPLICATED;
        spec.replicated = &rs;
    }
    if (o->update)
        spec.update = &uc;
    Shoal__Service s = SHOAL__SERVICE__INIT;
    s.meta = &meta;
    s.spec = &spec;
    s.spec_version = 1;
    meta.created_at_ms = T0;
    return (Shoal__Service *)recon_copy_message(&s.base);
}

static Shoal__Node *make_node(const char *id, int state, int availability, const char *zone) {
    Shoal__Meta meta = SHOAL__META__INIT;
    meta.id = (char *)id;
    Shoal__Label label = SHOAL__LABEL__INIT;
    label.key = "zone";
    label.value = (char *)zone;
    Shoal__Label *labels[1] = {&label};
    Shoal__Annotations ann = SHOAL__ANNOTATIONS__INIT;
    ann.name = (char *)id;
    ann.labels = labels;
    ann.n_labels = zone ? 1 : 0;
    Shoal__NodeSpec spec = SHOAL__NODE_SPEC__INIT;
    spec.annotations = &ann;
    spec.availability = availability;
    Shoal__NodeStatus st = SHOAL__NODE_STATUS__INIT;
    st.state = state;
    Shoal__NodeDescription desc = SHOAL__NODE_DESCRIPTION__INIT;
    desc.hostname = (char *)id;
    Shoal__Node n = SHOAL__NODE__INIT;
    n.meta = &meta;
    n.spec = &spec;
    n.status = &st;
    n.description = &desc;
    return (Shoal__Node *)recon_copy_message(&n.base);
}

static void add_node(world_t *w, const char *id, int state, int availability, const char *zone);

/* Replicated worlds start with one ready node, n1, where converge() runs everything. */
static world_t *world_new(const svc_opts_t *o) {
    world_t *w = calloc(1, sizeof *w);
    w->svc = make_service(o);
    w->now = T0;
    if (!o->global)
        add_node(w, "n1", SHOAL__NODE_STATUS__STATE__READY, 0, NULL);
    return w;
}

static void world_free(world_t *w) {
    for (size_t i = 0; i < w->n; i++)
        protobuf_c_message_free_unpacked(&w->tasks[i]->base, NULL);
    for (size_t i = 0; i < w->nn; i++)
        protobuf_c_message_free_unpacked(&w->nodes[i]->base, NULL);
    if (w->svc)
        protobuf_c_message_free_unpacked(&w->svc->base, NULL);
    free(w);
}

static void add_node(world_t *w, const char *id, int state, int availability, const char *zone) {
    w->nodes[w->nn++] = make_node(id, state, availability, zone);
}

static Shoal__Node *node(world_t *w, const char *id) {
    for (size_t i = 0; i < w->nn; i++)
        if (!strcmp(w->nodes[i]->meta->id, id))
            return w->nodes[i];
    fail_msg("no node %s", id);
    return NULL;
}

static ssize_t task_index(world_t *w, const char *id) {
    for (size_t i = 0; i < w->n; i++)
        if (!strcmp(w->tasks[i]->meta->id, id))
            return (ssize_t)i;
    return -1;
}

/* One orchestrator pass: reconcile, then apply the actions like the daemon's store batch. */
static void step(world_t *w) {
    recon_task_t rt[MAX_TASKS];
    for (size_t i = 0; i < w->n; i++) {
        int64_t *since = since_slot(w, w->tasks[i]->meta->id);
        if (!*since && w->tasks[i]->status->state == SHOAL__TASK_STATE__RUNNING)
            *since = w->tasks[i]->status->timestamp_ms;
        rt[i] = (recon_task_t){
            .task = w->tasks[i], .mod_revision = w->mods[i], .running_since_ms = *since};
    }
    recon_input_t in = {.service = w->svc,
                        .service_mod_revision = 1,
                        .tasks = rt,
                        .n_tasks = w->n,
                        .nodes = w->nodes,
                        .n_nodes = w->nn,
                        .now_ms = w->now,
                        .default_history_limit = w->default_history,
                        .new_id = next_id,
                        .new_id_ctx = w};
    recon_result_t res = {0};
    assert_int_equal(reconcile_service(&in, &res), 0);
    w->created = w->updated = w->deleted = w->service_updates = 0;
    w->wake_at = res.wake_at_ms;
    w->restarts = res.restarts;
    /* apply updates first (they point at current tasks), then deletes, then creates */
    Shoal__Task *replaced[MAX_TASKS];
    size_t nrep = 0;
    for (size_t i = 0; i < res.n_actions; i++) {
        recon_action_t *a = &res.actions[i];
        if (a->op == RECON_UPDATE_TASK) {
            ssize_t k = task_index(w, a->task->meta->id);
            assert_true(k >= 0);
            assert_int_equal(a->mod_revision, w->mods[k]);
            Shoal__Task *t = recon_task_apply(a, w->now);
            assert_non_null(t);
            replaced[nrep++] = w->tasks[k];
            w->tasks[k] = t;
            w->mods[k] = ++w->rev;
            w->updated++;
        }
    }
    for (size_t i = 0; i < res.n_actions; i++) {
        recon_action_t *a = &res.actions[i];
        if (a->op == RECON_DELETE_TASK) {
            ssize_t k = task_index(w, a->task->meta->id);
            assert_true(k >= 0);
            replaced[nrep++] = w->tasks[k];
            w->tasks[k] = w->tasks[w->n - 1];
            w->mods[k] = w->mods[w->n - 1];
            w->n--;
            w->deleted++;
        } else if (a->op == RECON_CREATE_TASK) {
            assert_true(w->n < MAX_TASKS);
            w->tasks[w->n] = a->new_task;
            w->mods[w->n++] = ++w->rev;
            a->new_task = NULL;
            w->created++;
        } else if (a->op == RECON_UPDATE_SERVICE) {
            replaced[nrep++] = NULL;
            protobuf_c_message_free_unpacked(&w->svc->base, NULL);
            w->svc = a->new_service;
            a->new_service = NULL;
            w->service_updates++;
        }
    }
    for (size_t i = 0; i < nrep; i++)
        if (replaced[i])
            protobuf_c_message_free_unpacked(&replaced[i]->base, NULL);
    recon_result_clear(&res);
}

/* ---- playing the scheduler and the agents ------------------------------------------------- */

static void set_state(Shoal__Task *t, int state, int exit_code, int64_t now) {
    if (!t->status->container) {
        t->status->container = malloc(sizeof *t->status->container);
        shoal__container_status__init(t->status->container);
    }
    t->status->state = state;
    t->status->timestamp_ms = now;
    t->status->container->exit_code = exit_code;
}

static void set_node(Shoal__Task *t, const char *node_id) {
    if (t->node_id && t->node_id != protobuf_c_empty_string)
        free(t->node_id);
    t->node_id = strdup(node_id);
}

/* The scheduler assigns every PENDING task (round robin over `nodes`) and agents run every task
 * that should run; tasks told to stop are stopped. */
static void converge_on(world_t *w, const char *const *nodes, size_t nnodes) {
    size_t rr = 0;
    for (size_t i = 0; i < w->n; i++) {
        Shoal__Task *t = w->tasks[i];
        if (t->desired_state <= SHOAL__TASK_STATE__RUNNING) {
            if (t->status->state == SHOAL__TASK_STATE__PENDING && !t->node_id[0])
                set_node(t, nodes[rr++ % nnodes]);
            if (t->status->state < SHOAL__TASK_STATE__RUNNING)
                set_state(t, SHOAL__TASK_STATE__RUNNING, 0, w->now);
        } else if (t->status->state <= SHOAL__TASK_STATE__RUNNING &&
                   t->status->state >= SHOAL__TASK_STATE__ASSIGNED) {
            set_state(t, SHOAL__TASK_STATE__SHUTDOWN, 0, w->now);
        }
    }
}

static void converge(world_t *w) {
    const char *nodes[] = {"n1"};
    converge_on(w, nodes, 1);
}

static size_t count_live(world_t *w) {
    size_t n = 0;
    for (size_t i = 0; i < w->n; i++)
        if (w->tasks[i]->desired_state <= SHOAL__TASK_STATE__RUNNING)
            n++;
    return n;
}

static size_t count_desired(world_t *w, int desired) {
    size_t n = 0;
    for (size_t i = 0; i < w->n; i++)
        if ((int)w->tasks[i]->desired_state == desired)
            n++;
    return n;
}

static Shoal__Task *live_in_slot(world_t *w, uint64_t slot) {
    Shoal__Task *found = NULL;
    for (size_t i = 0; i < w->n; i++) {
        Shoal__Task *t = w->tasks[i];
        if (t->slot == slot && t->desired_state <= SHOAL__TASK_STATE__RUNNING) {
            assert_null(found); /* never two live tasks in one slot */
            found = t;
        }
    }
    return found;
}

static Shoal__Task *live_on_node(world_t *w, const char *node_id) {
    Shoal__Task *found = NULL;
    for (size_t i = 0; i < w->n; i++) {
        Shoal__Task *t = w->tasks[i];
        if (!strcmp(t->node_id, node_id) && t->desired_state <= SHOAL__TASK_STATE__RUNNING) {
            assert_null(found);
            found = t;
        }
    }
    return found;
}

/* Slots may hold two live tasks (start-first, node failure): the newest one, and the count. */
static Shoal__Task *newest_live_in_slot(world_t *w, uint64_t slot) {
    Shoal__Task *found = NULL;
    for (size_t i = 0; i < w->n; i++) {
        Shoal__Task *t = w->tasks[i];
        if (t->slot == slot && t->desired_state <= SHOAL__TASK_STATE__RUNNING &&
            (!found || t->meta->created_at_ms > found->meta->created_at_ms ||
             (t->meta->created_at_ms == found->meta->created_at_ms &&
              strcmp(t->meta->id, found->meta->id) > 0)))
            found = t;
    }
    return found;
}

static size_t count_live_in_slot(world_t *w, uint64_t slot) {
    size_t n = 0;
    for (size_t i = 0; i < w->n; i++)
        if (w->tasks[i]->slot == slot && w->tasks[i]->desired_state <= SHOAL__TASK_STATE__RUNNING)
            n++;
    return n;
}

static Shoal__Task *task_by_id(world_t *w, const char *id) {
    ssize_t k = task_index(w, id);
    return k >= 0 ? w->tasks[k] : NULL;
}

/* Tasks actually running (what `docker ps` would show): RUNNING on a node that is not DOWN. */
static size_t count_running(world_t *w) {
    size_t n = 0;
    for (size_t i = 0; i < w->n; i++) {
        Shoal__Task *t = w->tasks[i];
        if (t->status->state != SHOAL__TASK_STATE__RUNNING)
            continue;
        bool down = false;
        for (size_t j = 0; j < w->nn; j++)
            if (!strcmp(w->nodes[j]->meta->id, t->node_id))
                down = w->nodes[j]->status->state == SHOAL__NODE_STATUS__STATE__DOWN;
        n += !down;
    }
    return n;
}

static const char *label(const Shoal__Task *t, const char *key) {
    for (size_t i = 0; t->annotations && i < t->annotations->n_labels; i++)
        if (!strcmp(t->annotations->labels[i]->key, key))
            return t->annotations->labels[i]->value;
    return NULL;
}

static void set_replicas(world_t *w, uint64_t n) {
    w->svc->spec->replicated->replicas = n;
}

/* A TaskSpec change as ServiceUpdate writes it: new image, spec_version + 1, UPDATING. */
static void change_image(world_t *w, const char *image) {
    Shoal__ContainerSpec *c = w->svc->spec->task->container;
    free(c->image);
    c->image = strdup(image);
    w->svc->spec_version++;
    if (!w->svc->update_status) {
        w->svc->update_status = malloc(sizeof *w->svc->update_status);
        shoal__update_status__init(w->svc->update_status);
    }
    w->svc->update_status->state = SHOAL__UPDATE_STATUS__STATE__UPDATING;
    w->svc->update_status->started_at_ms = w->now;
}

/* ---- replicated: create and scale --------------------------------------------------------- */

static void test_replicated_service_gets_one_pending_task_per_slot(void **state) {
    svc_opts_t o = {.replicas = 3};
    world_t *w = world_new(&o);
    step(w);
    assert_int_equal(w->created, 3);
    for (uint64_t slot = 1; slot <= 3; slot++) {
        Shoal__Task *t = live_in_slot(w, slot);
        assert_non_null(t);
        assert_int_equal(t->status->state, SHOAL__TASK_STATE__PENDING);
        assert_int_equal(t->desired_state, SHOAL__TASK_STATE__RUNNING);
        assert_string_equal(t->service_id, "svc1");
        assert_string_equal(t->service_name, "web");
        assert_int_equal(t->spec_version, 1);
        assert_string_equal(t->spec->container->image, "shoal-test:1");
        assert_string_equal(t->node_id, "");
        assert_int_equal(t->meta->version, 1);
        assert_int_equal(t->meta->created_at_ms, T0);
    }
    /* a second pass over the same state changes nothing */
    step(w);
    assert_int_equal(w->created + w->updated + w->deleted, 0);
    world_free(w);
}

static void test_scale_up_then_down_keeps_slot_1(void **state) {
    svc_opts_t o = {.replicas = 3};
    world_t *w = world_new(&o);
    step(w);
    converge(w);
    set_replicas(w, 6);
    step(w);
    assert_int_equal(w->created, 3);
    for (uint64_t slot = 4; slot <= 6; slot++)
        assert_non_null(live_in_slot(w, slot));
    converge(w);
    step(w);
    assert_int_equal(w->created + w->updated, 0);

    set_replicas(w, 1);
    step(w);
    assert_int_equal(w->updated, 5);
    assert_int_equal(w->created, 0);
    assert_int_equal(count_desired(w, SHOAL__TASK_STATE__REMOVE), 5);
    assert_int_equal(count_live(w), 1);
    assert_non_null(live_in_slot(w, 1));
    /* the removed tasks stay until their agents have shut them down, then they are deleted */
    step(w);
    assert_int_equal(w->deleted, 0);
    converge(w);
    step(w);
    assert_int_equal(w->deleted, 5);
    assert_int_equal(w->n, 1);
    world_free(w);
}

static void test_scale_down_removes_non_running_slots_first(void **state) {
    svc_opts_t o = {.replicas = 3};
    world_t *w = world_new(&o);
    step(w);
    converge(w);
    Shoal__Task *t1 = live_in_slot(w, 1);
    set_state(t1, SHOAL__TASK_STATE__STARTING, 0, w->now); /* not running yet */
    set_replicas(w, 2);
    step(w);
    assert_int_equal(w->updated, 1);
    assert_null(live_in_slot(w, 1));
    assert_non_null(live_in_slot(w, 2));
    assert_non_null(live_in_slot(w, 3));
    world_free(w);
}

static void test_scale_up_reuses_free_slot_numbers(void **state) {
    svc_opts_t o = {.replicas = 3};
    world_t *w = world_new(&o);
    step(w);
    converge(w);
    set_state(live_in_slot(w, 1), SHOAL__TASK_STATE__STARTING, 0, w->now);
    set_replicas(w, 2);
    step(w); /* slot 1 goes */
    converge(w);
    step(w); /* and is reaped */
    set_replicas(w, 3);
    step(w);
    assert_int_equal(w->created, 1);
    assert_non_null(live_in_slot(w, 1));
    world_free(w);
}

/* ---- restart policy ----------------------------------------------------------------------- */

static void fail_slot(world_t *w, uint64_t slot, int state, int exit_code) {
    Shoal__Task *t = live_in_slot(w, slot);
    assert_non_null(t);
    set_state(t, state, exit_code, w->now);
}

static void test_failed_task_is_replaced_under_condition_any(void **state) {
    svc_opts_t o = {.replicas = 2, .condition = SHOAL__RESTART_POLICY__CONDITION__ANY};
    world_t *w = world_new(&o);
    step(w);
    converge(w);
    Shoal__Task *old = live_in_slot(w, 2);
    char old_id[32];
    snprintf(old_id, sizeof old_id, "%s", old->meta->id);
    fail_slot(w, 2, SHOAL__TASK_STATE__FAILED, 1);
    step(w);
    assert_int_equal(w->created, 1);
    assert_int_equal(w->updated, 1);
    assert_int_equal(w->restarts, 1);
    Shoal__Task *old_now = w->tasks[task_index(w, old_id)];
    assert_int_equal(old_now->desired_state, SHOAL__TASK_STATE__SHUTDOWN);
    assert_int_equal(old_now->restart_at_ms, 0);
    Shoal__Task *repl = live_in_slot(w, 2);
    assert_non_null(repl);
    assert_string_not_equal(repl->meta->id, old_id);
    assert_int_equal(repl->status->state, SHOAL__TASK_STATE__PENDING);
    assert_string_equal(repl->node_id, "");
    /* a task that completed (exit 0) is replaced too */
    converge(w);
    fail_slot(w, 1, SHOAL__TASK_STATE__COMPLETE, 0);
    step(w);
    assert_int_equal(w->created, 1);
    assert_non_null(live_in_slot(w, 1));
    world_free(w);
}

static void test_on_failure_replaces_failures_but_not_clean_exits(void **state) {
    svc_opts_t o = {.replicas = 3, .condition = SHOAL__RESTART_POLICY__CONDITION__ON_FAILURE};
    world_t *w = world_new(&o);
    step(w);
    converge(w);
    fail_slot(w, 1, SHOAL__TASK_STATE__FAILED, 2);
    fail_slot(w, 2, SHOAL__TASK_STATE__COMPLETE, 0);
    fail_slot(w, 3, SHOAL__TASK_STATE__REJECTED, 0);
    step(w);
    assert_int_equal(w->created, 2);
    assert_non_null(live_in_slot(w, 1));
    assert_null(live_in_slot(w, 2));
    assert_non_null(live_in_slot(w, 3));
    /* the completed slot stays empty: it is held by its finished task, not refilled */
    step(w);
    assert_int_equal(w->created, 0);
    assert_null(live_in_slot(w, 2));
    world_free(w);
}

static void test_condition_none_never_replaces(void **state) {
    svc_opts_t o = {.replicas = 1, .condition = SHOAL__RESTART_POLICY__CONDITION__NONE};
    world_t *w = world_new(&o);
    step(w);
    converge(w);
    fail_slot(w, 1, SHOAL__TASK_STATE__FAILED, 137);
    step(w);
    assert_int_equal(w->created, 0);
    assert_int_equal(w->updated, 1);
    assert_int_equal(w->tasks[0]->desired_state, SHOAL__TASK_STATE__SHUTDOWN);
    assert_int_equal(w->tasks[0]->restart_at_ms, RECON_RESTART_DECLINED);
    for (int i = 0; i < 3; i++) {
        w->now += 60000;
        step(w);
        assert_int_equal(w->created + w->updated + w->deleted, 0);
    }
    assert_int_equal(w->n, 1);
    world_free(w);
}

static void test_restart_delay_sets_restart_at_and_creates_later(void **state) {
    svc_opts_t o = {.replicas = 1, .delay_ms = 5000};
    world_t *w = world_new(&o);
    step(w);
    converge(w);
    fail_slot(w, 1, SHOAL__TASK_STATE__FAILED, 1);
    step(w);
    assert_int_equal(w->created, 0);
    assert_int_equal(w->updated, 1);
    assert_int_equal(w->tasks[0]->desired_state, SHOAL__TASK_STATE__SHUTDOWN);
    assert_int_equal(w->tasks[0]->restart_at_ms, T0 + 5000);
    assert_int_equal(w->wake_at, T0 + 5000);
    w->now = T0 + 4999;
    step(w);
    assert_int_equal(w->created + w->updated, 0);
    assert_int_equal(w->wake_at, T0 + 5000);
    w->now = T0 + 5000;
    step(w);
    assert_int_equal(w->created, 1);
    assert_int_equal(w->updated, 1); /* the old task's restart_at is cleared */
    Shoal__Task *repl = live_in_slot(w, 1);
    assert_non_null(repl);
    assert_int_equal(repl->meta->created_at_ms, T0 + 5000);
    for (size_t i = 0; i < w->n; i++)
        assert_true(w->tasks[i] == repl || w->tasks[i]->restart_at_ms == 0);
    world_free(w);
}

static void test_max_attempts_stops_restarts(void **state) {
    svc_opts_t o = {.replicas = 1, .max_attempts = 2};
    world_t *w = world_new(&o);
    step(w);
    for (int attempt = 1; attempt <= 2; attempt++) {
        converge(w);
        w->now += RECON_BACKOFF_RESET_MS; /* ran long enough: no crash-loop back-off */
        fail_slot(w, 1, SHOAL__TASK_STATE__FAILED, 1);
        step(w);
        assert_int_equal(w->created, 1);
    }
    converge(w);
    w->now += RECON_BACKOFF_RESET_MS;
    fail_slot(w, 1, SHOAL__TASK_STATE__FAILED, 1);
    step(w);
    assert_int_equal(w->created, 0);
    assert_int_equal(w->restarts, 0);
    assert_null(live_in_slot(w, 1));
    step(w);
    assert_int_equal(w->created, 0);
    /* a new spec version starts counting again */
    change_image(w, "shoal-test:2");
    step(w);
    assert_int_equal(w->created, 1);
    assert_int_equal(live_in_slot(w, 1)->spec_version, 2);
    world_free(w);
}

static void test_max_attempts_counts_only_restarts_inside_the_window(void **state) {
    svc_opts_t o = {.replicas = 1, .max_attempts = 1, .window_ms = 10000};
    world_t *w = world_new(&o);
    step(w);
    converge(w);
    fail_slot(w, 1, SHOAL__TASK_STATE__FAILED, 1);
    step(w);
    assert_int_equal(w->created, 1); /* first restart */
    converge(w);
    w->now += 2000;
    fail_slot(w, 1, SHOAL__TASK_STATE__FAILED, 1);
    step(w);
    assert_int_equal(w->created, 0); /* second one inside 10 s: declined */
    world_free(w);

    w = world_new(&o);
    step(w);
    converge(w);
    fail_slot(w, 1, SHOAL__TASK_STATE__FAILED, 1);
    step(w);
    assert_int_equal(w->created, 1);
    converge(w);
    w->now += 20000; /* the restart is older than the window now */
    fail_slot(w, 1, SHOAL__TASK_STATE__FAILED, 1);
    step(w);
    assert_int_equal(w->created, 1);
    world_free(w);
}

/* ---- nodes ------------------------------------------------------------------------------- */

static void
test_tasks_of_a_down_node_are_replaced_at_once_and_kept_until_replacements_run(void **state) {
    svc_opts_t o = {.replicas = 3, .condition = SHOAL__RESTART_POLICY__CONDITION__ON_FAILURE};
    world_t *w = world_new(&o);
    add_node(w, "n2", SHOAL__NODE_STATUS__STATE__READY, 0, NULL);
    step(w);
    const char *nodes[] = {"n1", "n2"};
    converge_on(w, nodes, 2); /* slots 1,3 on n1; slot 2 on n2 */
    char old1[32], old3[32];
    snprintf(old1, sizeof old1, "%s", live_in_slot(w, 1)->meta->id);
    snprintf(old3, sizeof old3, "%s", live_in_slot(w, 3)->meta->id);
    node(w, "n1")->status->state = SHOAL__NODE_STATUS__STATE__DOWN;
    step(w);
    assert_int_equal(w->created, 2); /* at once, for the scheduler to place elsewhere */
    assert_int_equal(w->updated, 0); /* the old tasks keep desired RUNNING */
    assert_int_equal(w->restarts, 2);
    assert_int_equal(count_live_in_slot(w, 1), 2);
    assert_int_equal(count_live_in_slot(w, 2), 1);
    assert_int_equal(count_live_in_slot(w, 3), 2);
    Shoal__Task *r1 = newest_live_in_slot(w, 1);
    assert_string_equal(r1->node_id, "");
    assert_string_equal(label(r1, RECON_LABEL_NODE_DOWN), old1);
    /* a second pass does not replace them twice */
    step(w);
    assert_int_equal(w->created + w->updated, 0);
    /* the scheduler places them on n2; once they run, the old ones are told to stop */
    const char *n2[] = {"n2"};
    converge_on(w, n2, 1);
    step(w);
    assert_int_equal(w->updated, 2);
    assert_int_equal(task_by_id(w, old1)->desired_state, SHOAL__TASK_STATE__SHUTDOWN);
    assert_int_equal(task_by_id(w, old3)->desired_state, SHOAL__TASK_STATE__SHUTDOWN);
    for (uint64_t slot = 1; slot <= 3; slot++)
        assert_string_equal(live_in_slot(w, slot)->node_id, "n2");
    /* n1 comes back: nothing more moves */
    node(w, "n1")->status->state = SHOAL__NODE_STATUS__STATE__READY;
    step(w);
    assert_int_equal(w->created + w->updated, 0);
    world_free(w);
}

static void test_node_back_before_the_replacement_starts_keeps_the_old_task(void **state) {
    /* the single-node cluster whose agent was killed and restarted slowly: the replacement can
     * go nowhere; when the node is READY again the old containers are kept */
    svc_opts_t o = {.replicas = 2};
    world_t *w = world_new(&o);
    step(w);
    converge(w);
    char old1[32], old2[32];
    snprintf(old1, sizeof old1, "%s", live_in_slot(w, 1)->meta->id);
    snprintf(old2, sizeof old2, "%s", live_in_slot(w, 2)->meta->id);
    node(w, "n1")->status->state = SHOAL__NODE_STATUS__STATE__DOWN;
    step(w);
    assert_int_equal(w->created, 2);
    /* no node fits: the replacements stay PENDING */
    w->now += 5000;
    step(w);
    assert_int_equal(w->created + w->updated + w->deleted, 0);
    node(w, "n1")->status->state = SHOAL__NODE_STATUS__STATE__READY;
    step(w);
    assert_int_equal(w->created, 0);
    assert_int_equal(w->updated, 2); /* the replacements are cancelled */
    assert_int_equal(count_desired(w, SHOAL__TASK_STATE__REMOVE), 2);
    assert_int_equal(task_by_id(w, old1)->desired_state, SHOAL__TASK_STATE__RUNNING);
    assert_int_equal(task_by_id(w, old2)->desired_state, SHOAL__TASK_STATE__RUNNING);
    step(w); /* never assigned: deleted at once */
    assert_int_equal(w->deleted, 2);
    assert_int_equal(w->n, 2);
    assert_string_equal(live_in_slot(w, 1)->meta->id, old1);
    assert_string_equal(live_in_slot(w, 2)->meta->id, old2);
    step(w);
    assert_int_equal(w->created + w->updated + w->deleted, 0);
    world_free(w);
}

static void test_node_back_after_the_replacement_started_lets_the_replacement_win(void **state) {
    svc_opts_t o = {.replicas = 1};
    world_t *w = world_new(&o);
    add_node(w, "n2", SHOAL__NODE_STATUS__STATE__READY, 0, NULL);
    step(w);
    converge(w);
    char old[32];
    snprintf(old, sizeof old, "%s", live_in_slot(w, 1)->meta->id);
    node(w, "n1")->status->state = SHOAL__NODE_STATUS__STATE__DOWN;
    step(w);
    Shoal__Task *repl = newest_live_in_slot(w, 1);
    set_node(repl, "n2");
    set_state(repl, SHOAL__TASK_STATE__STARTING, 0, w->now);
    node(w, "n1")->status->state = SHOAL__NODE_STATUS__STATE__READY;
    step(w);
    assert_int_equal(w->created + w->updated, 0); /* both run on for now */
    assert_int_equal(count_live_in_slot(w, 1), 2);
    set_state(newest_live_in_slot(w, 1), SHOAL__TASK_STATE__RUNNING, 0, w->now);
    step(w);
    assert_int_equal(w->updated, 1);
    assert_int_equal(task_by_id(w, old)->desired_state, SHOAL__TASK_STATE__SHUTDOWN);
    assert_string_equal(live_in_slot(w, 1)->node_id, "n2");
    world_free(w);
}

static void
test_replacement_that_fails_elsewhere_is_restarted_with_the_old_task_kept(void **state) {
    svc_opts_t o = {.replicas = 1};
    world_t *w = world_new(&o);
    add_node(w, "n2", SHOAL__NODE_STATUS__STATE__READY, 0, NULL);
    step(w);
    converge(w);
    char old[32];
    snprintf(old, sizeof old, "%s", live_in_slot(w, 1)->meta->id);
    node(w, "n1")->status->state = SHOAL__NODE_STATUS__STATE__DOWN;
    step(w);
    Shoal__Task *repl = newest_live_in_slot(w, 1);
    set_node(repl, "n2");
    set_state(repl, SHOAL__TASK_STATE__REJECTED, 0, w->now); /* e.g. no such image on n2 */
    step(w);
    assert_int_equal(w->created, 1); /* the restart policy replaces the replacement */
    assert_int_equal(task_by_id(w, old)->desired_state, SHOAL__TASK_STATE__RUNNING);
    assert_string_equal(label(newest_live_in_slot(w, 1), RECON_LABEL_ATTEMPT), "2");
    world_free(w);
}

static void test_tasks_of_a_removed_node_are_replaced_and_stopped(void **state) {
    svc_opts_t o = {.replicas = 1};
    world_t *w = world_new(&o);
    add_node(w, "n2", SHOAL__NODE_STATUS__STATE__READY, 0, NULL);
    step(w);
    converge(w);
    char old[32];
    snprintf(old, sizeof old, "%s", live_in_slot(w, 1)->meta->id);
    protobuf_c_message_free_unpacked(&w->nodes[0]->base, NULL); /* node rm n1 */
    w->nodes[0] = w->nodes[--w->nn];
    step(w);
    assert_int_equal(w->created, 1);
    Shoal__Task *o1 = task_by_id(w, old);
    assert_true(o1 == NULL || o1->desired_state == SHOAL__TASK_STATE__SHUTDOWN);
    assert_non_null(live_in_slot(w, 1));
    world_free(w);
}

static void test_condition_none_keeps_a_task_on_a_down_node(void **state) {
    svc_opts_t o = {.replicas = 1, .condition = SHOAL__RESTART_POLICY__CONDITION__NONE};
    world_t *w = world_new(&o);
    add_node(w, "n2", SHOAL__NODE_STATUS__STATE__READY, 0, NULL);
    step(w);
    converge(w);
    node(w, "n1")->status->state = SHOAL__NODE_STATUS__STATE__DOWN;
    step(w);
    assert_int_equal(w->created + w->updated, 0); /* never replaced, so never stopped either */
    assert_non_null(live_in_slot(w, 1));
    world_free(w);
}

static void test_drained_node_tasks_move_stop_first(void **state) {
    svc_opts_t o = {.replicas = 1, .condition = SHOAL__RESTART_POLICY__CONDITION__NONE};
    world_t *w = world_new(&o);
    step(w);
    converge(w);
    node(w, "n1")->spec->availability = SHOAL__NODE_SPEC__AVAILABILITY__DRAIN;
    step(w);
    assert_int_equal(w->updated, 1);
    assert_int_equal(w->created, 0); /* the old one still runs */
    assert_int_equal(w->tasks[0]->desired_state, SHOAL__TASK_STATE__SHUTDOWN);
    set_state(w->tasks[0], SHOAL__TASK_STATE__SHUTDOWN, 0, w->now);
    step(w);
    assert_int_equal(w->created, 1);
    assert_non_null(live_in_slot(w, 1));
    world_free(w);
}

/* ---- global ------------------------------------------------------------------------------- */

static world_t *global_world(void) {
    svc_opts_t o = {.global = true, .constraint = "node.labels.zone==a"};
    world_t *w = world_new(&o);
    add_node(w, "n1", SHOAL__NODE_STATUS__STATE__READY, SHOAL__NODE_SPEC__AVAILABILITY__ACTIVE,
             "a");
    add_node(w, "n2", SHOAL__NODE_STATUS__STATE__READY, SHOAL__NODE_SPEC__AVAILABILITY__ACTIVE,
             "a");
    add_node(w, "n3", SHOAL__NODE_STATUS__STATE__DOWN, SHOAL__NODE_SPEC__AVAILABILITY__ACTIVE, "a");
    add_node(w, "n4", SHOAL__NODE_STATUS__STATE__READY, SHOAL__NODE_SPEC__AVAILABILITY__DRAIN, "a");
    add_node(w, "n5", SHOAL__NODE_STATUS__STATE__READY, SHOAL__NODE_SPEC__AVAILABILITY__PAUSE, "a");
    add_node(w, "n6", SHOAL__NODE_STATUS__STATE__READY, SHOAL__NODE_SPEC__AVAILABILITY__ACTIVE,
             "b");
    return w;
}

static void run_global_tasks(world_t *w) {
    for (size_t i = 0; i < w->n; i++) {
        Shoal__Task *t = w->tasks[i];
        if (t->desired_state <= SHOAL__TASK_STATE__RUNNING)
            set_state(t, SHOAL__TASK_STATE__RUNNING, 0, w->now);
        else if (t->status->state <= SHOAL__TASK_STATE__RUNNING)
            set_state(t, SHOAL__TASK_STATE__SHUTDOWN, 0, w->now);
    }
}

static void test_global_runs_one_task_per_ready_active_matching_node(void **state) {
    world_t *w = global_world();
    step(w);
    assert_int_equal(w->created, 2);
    Shoal__Task *t1 = live_on_node(w, "n1"), *t2 = live_on_node(w, "n2");
    assert_non_null(t1);
    assert_non_null(t2);
    assert_int_equal(t1->slot, 0);
    assert_int_equal(t1->status->state, SHOAL__TASK_STATE__PENDING);
    assert_int_equal(t1->desired_state, SHOAL__TASK_STATE__RUNNING);
    assert_string_equal(t1->annotations->name, "web.n1");
    run_global_tasks(w);
    step(w);
    assert_int_equal(w->created + w->updated, 0);
    /* a new node that matches gets its task */
    add_node(w, "n7", SHOAL__NODE_STATUS__STATE__READY, 0, "a");
    step(w);
    assert_int_equal(w->created, 1);
    assert_non_null(live_on_node(w, "n7"));
    world_free(w);
}

static void test_global_drain_removes_and_pause_keeps(void **state) {
    world_t *w = global_world();
    step(w);
    run_global_tasks(w);
    node(w, "n1")->spec->availability = SHOAL__NODE_SPEC__AVAILABILITY__DRAIN;
    node(w, "n2")->spec->availability = SHOAL__NODE_SPEC__AVAILABILITY__PAUSE;
    step(w);
    assert_int_equal(w->updated, 1);
    assert_int_equal(w->created, 0);
    assert_null(live_on_node(w, "n1"));
    assert_non_null(live_on_node(w, "n2"));
    run_global_tasks(w);
    step(w);
    assert_int_equal(w->created + w->updated, 0);
    /* a task failing on a paused node is not replaced there */
    set_state(live_on_node(w, "n2"), SHOAL__TASK_STATE__FAILED, 1, w->now);
    step(w);
    assert_int_equal(w->created, 0);
    assert_null(live_on_node(w, "n2"));
    /* back to active: both nodes get a task again */
    node(w, "n1")->spec->availability = SHOAL__NODE_SPEC__AVAILABILITY__ACTIVE;
    node(w, "n2")->spec->availability = SHOAL__NODE_SPEC__AVAILABILITY__ACTIVE;
    step(w);
    assert_int_equal(w->created, 2);
    assert_non_null(live_on_node(w, "n1"));
    assert_non_null(live_on_node(w, "n2"));
    world_free(w);
}

static void test_global_failed_task_restarts_on_its_node(void **state) {
    world_t *w = global_world();
    step(w);
    run_global_tasks(w);
    set_state(live_on_node(w, "n1"), SHOAL__TASK_STATE__FAILED, 1, w->now);
    step(w);
    assert_int_equal(w->created, 1);
    assert_int_equal(w->restarts, 1);
    assert_non_null(live_on_node(w, "n1"));
    /* a node going down keeps its task (nothing can run it elsewhere) for when it comes back */
    node(w, "n2")->status->state = SHOAL__NODE_STATUS__STATE__DOWN;
    step(w);
    assert_int_equal(w->created + w->updated, 0);
    assert_non_null(live_on_node(w, "n2"));
    node(w, "n2")->status->state = SHOAL__NODE_STATUS__STATE__READY;
    step(w);
    assert_int_equal(w->created + w->updated, 0);
    /* a removed node's task is shut down and, no agent being there to report, deleted */
    for (size_t i = 0; i < w->nn; i++)
        if (!strcmp(w->nodes[i]->meta->id, "n2")) {
            protobuf_c_message_free_unpacked(&w->nodes[i]->base, NULL);
            w->nodes[i] = w->nodes[--w->nn];
        }
    step(w);
    assert_null(live_on_node(w, "n2"));
    assert_int_equal(w->created, 0);
    world_free(w);
}

/* ---- rolling update ----------------------------------------------------------------------- */

static size_t count_version(world_t *w, uint64_t version) {
    size_t n = 0;
    for (size_t i = 0; i < w->n; i++)
        if (w->tasks[i]->desired_state <= SHOAL__TASK_STATE__RUNNING &&
            w->tasks[i]->spec_version == version)
            n++;
    return n;
}

static void test_update_with_parallelism_1_replaces_one_slot_at_a_time(void **state) {
    svc_opts_t o = {.replicas = 3, .update = true, .parallelism = 1};
    world_t *w = world_new(&o);
    step(w);
    converge(w);
    change_image(w, "shoal-test:2");
    for (int round = 1; round <= 3; round++) {
        step(w); /* stop-first: the old task of one slot is told to stop, nothing created */
        assert_int_equal(w->updated, 1);
        assert_int_equal(w->created, 0);
        assert_null(live_in_slot(w, (uint64_t)round)); /* lowest outdated slot first */
        step(w);                                       /* still running: wait */
        assert_int_equal(w->created + w->updated, 0);
        converge(w); /* the agent stops it */
        step(w);
        assert_int_equal(w->created, 1);
        Shoal__Task *t = live_in_slot(w, (uint64_t)round);
        assert_non_null(t);
        assert_int_equal(t->spec_version, 2);
        assert_string_equal(t->spec->container->image, "shoal-test:2");
        step(w); /* in flight until it runs: no other slot starts */
        assert_int_equal(w->created + w->updated, 0);
        assert_int_equal(count_version(w, 2), (size_t)round);
        converge(w); /* the new task runs */
    }
    step(w);
    assert_int_equal(w->service_updates, 1);
    assert_int_equal(w->svc->update_status->state, SHOAL__UPDATE_STATUS__STATE__COMPLETED);
    assert_int_equal(w->svc->update_status->completed_at_ms, T0);
    step(w);
    assert_int_equal(w->created + w->updated + w->service_updates, 0);
    world_free(w);
}

static void test_update_with_parallelism_0_replaces_all_at_once(void **state) {
    svc_opts_t o = {.replicas = 4, .update = true, .parallelism = 0};
    world_t *w = world_new(&o);
    step(w);
    converge(w);
    change_image(w, "shoal-test:2");
    step(w);
    assert_int_equal(w->updated, 4);
    assert_int_equal(count_live(w), 0);
    converge(w);
    step(w);
    assert_int_equal(w->created, 4);
    assert_int_equal(count_version(w, 2), 4);
    converge(w);
    step(w);
    assert_int_equal(w->svc->update_status->state, SHOAL__UPDATE_STATUS__STATE__COMPLETED);
    world_free(w);
}

static void test_update_pauses_when_a_new_task_fails(void **state) {
    svc_opts_t o = {.replicas = 3, .update = true, .parallelism = 1};
    world_t *w = world_new(&o);
    step(w);
    converge(w);
    w->now += 1000;
    change_image(w, "shoal-test:broken");
    step(w);
    converge(w);
    step(w); /* slot 1's new task created */
    Shoal__Task *t = live_in_slot(w, 1);
    set_state(t, SHOAL__TASK_STATE__FAILED, 1, w->now);
    step(w);
    assert_int_equal(w->svc->update_status->state, SHOAL__UPDATE_STATUS__STATE__PAUSED);
    assert_non_null(strstr(w->svc->update_status->message, "update paused"));
    converge(w);
    step(w);
    step(w);
    assert_int_equal(count_version(w, 1), 2); /* slots 2 and 3 were left alone */
    world_free(w);
}

static void test_replica_count_change_alone_replaces_nothing(void **state) {
    svc_opts_t o = {.replicas = 2, .update = true, .parallelism = 1};
    world_t *w = world_new(&o);
    step(w);
    converge(w);
    set_replicas(w, 3); /* spec_version unchanged */
    step(w);
    assert_int_equal(w->created, 1);
    assert_int_equal(w->updated, 0);
    assert_int_equal(count_version(w, 1), 3);
    world_free(w);
}

static void test_update_is_not_held_back_by_a_scale_up_task(void **state) {
    svc_opts_t o = {.replicas = 1, .update = true, .parallelism = 1};
    world_t *w = world_new(&o);
    step(w);
    converge(w);
    change_image(w, "shoal-test:2");
    set_replicas(w, 2);
    step(w);
    assert_int_equal(w->created, 1); /* slot 2, new spec, not placed yet */
    assert_int_equal(w->updated, 1); /* slot 1's old task is told to stop all the same */
    assert_null(live_in_slot(w, 1));
    assert_int_equal(live_in_slot(w, 2)->spec_version, 2);
    world_free(w);
}

/* ---- reaper and removal ------------------------------------------------------------------- */

static void test_reaper_keeps_five_terminated_tasks_per_slot(void **state) {
    svc_opts_t o = {.replicas = 1};
    world_t *w = world_new(&o);
    step(w);
    for (int i = 0; i < 8; i++) {
        converge(w);
        w->now += 11000; /* each ran 11 s: restarted at once, no back-off */
        fail_slot(w, 1, SHOAL__TASK_STATE__FAILED, 1);
        step(w);
    }
    converge(w);
    step(w);
    size_t terminated = 0;
    int64_t oldest = INT64_MAX;
    for (size_t i = 0; i < w->n; i++) {
        if (w->tasks[i]->desired_state > SHOAL__TASK_STATE__RUNNING) {
            terminated++;
            if (w->tasks[i]->meta->created_at_ms < oldest)
                oldest = w->tasks[i]->meta->created_at_ms;
        }
    }
    assert_int_equal(terminated, 5);
    assert_non_null(live_in_slot(w, 1));
    /* the newest five were kept: the first three tasks (created at T0, +11 s, +22 s) are gone */
    assert_int_equal(oldest, T0 + 33000);
    world_free(w);
}

static void test_removed_service_tasks_get_remove_then_are_deleted(void **state) {
    svc_opts_t o = {.replicas = 3};
    world_t *w = world_new(&o);
    step(w);
    converge(w);
    set_state(w->tasks[2], SHOAL__TASK_STATE__FAILED, 1, w->now); /* already dead */
    protobuf_c_message_free_unpacked(&w->svc->base, NULL);
    w->svc = NULL;
    step(w);
    assert_int_equal(w->updated, 2);
    assert_int_equal(w->deleted, 1);
    assert_int_equal(count_desired(w, SHOAL__TASK_STATE__REMOVE), 2);
    converge(w);
    step(w);
    assert_int_equal(w->deleted, 2);
    assert_int_equal(w->n, 0);
    world_free(w);
}

static void test_tasks_on_a_down_node_are_deleted_with_their_service(void **state) {
    svc_opts_t o = {.replicas = 2};
    world_t *w = world_new(&o);
    step(w);
    converge(w);
    node(w, "n1")->status->state = SHOAL__NODE_STATUS__STATE__DOWN;
    protobuf_c_message_free_unpacked(&w->svc->base, NULL);
    w->svc = NULL;
    step(w); /* their agent cannot report SHUTDOWN: no waiting for it */
    assert_int_equal(w->deleted, 2);
    assert_int_equal(w->n, 0);
    world_free(w);
}

/* ---- crash-loop back-off and history ------------------------------------------------------ */

/* Fails slot 1's live task `ran_ms` after it started and steps until its replacement exists;
 * returns how long the replacement waited. */
static int64_t crash_and_wait(world_t *w, int64_t ran_ms) {
    converge(w);
    step(w); /* the orchestrator sees it RUNNING */
    w->now += ran_ms;
    fail_slot(w, 1, SHOAL__TASK_STATE__FAILED, 1);
    int64_t failed_at = w->now;
    step(w);
    while (!live_in_slot(w, 1)) {
        assert_true(w->wake_at > w->now);
        w->now = w->wake_at;
        step(w);
    }
    return live_in_slot(w, 1)->meta->created_at_ms - failed_at;
}

static void test_crash_loop_backs_off_exponentially_and_resets_after_ten_seconds(void **state) {
    svc_opts_t o = {.replicas = 1};
    world_t *w = world_new(&o);
    step(w);
    const int64_t want[] = {0, 100, 200, 400, 800, 1600, 3200, 6400, 10000, 10000};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        assert_int_equal(crash_and_wait(w, 50), want[i]);
    /* a task that ran 10 s resets the back-off */
    assert_int_equal(crash_and_wait(w, RECON_BACKOFF_RESET_MS), 0);
    assert_int_equal(crash_and_wait(w, 50), 0);
    assert_int_equal(crash_and_wait(w, 50), 100);
    world_free(w);
}

static void test_restart_delay_replaces_the_back_off(void **state) {
    svc_opts_t o = {.replicas = 1, .delay_ms = 700};
    world_t *w = world_new(&o);
    step(w);
    for (int i = 0; i < 4; i++)
        assert_int_equal(crash_and_wait(w, 50), 700);
    world_free(w);
}

static size_t count_terminated(world_t *w) {
    size_t n = 0;
    for (size_t i = 0; i < w->n; i++)
        n += w->tasks[i]->desired_state > SHOAL__TASK_STATE__RUNNING;
    return n;
}

static void test_history_limit_comes_from_the_spec_then_the_cluster(void **state) {
    svc_opts_t o = {.replicas = 1, .history_limit = 2};
    world_t *w = world_new(&o);
    w->default_history = 4;
    step(w);
    for (int i = 0; i < 6; i++)
        crash_and_wait(w, RECON_BACKOFF_RESET_MS);
    converge(w);
    step(w);
    assert_int_equal(count_terminated(w), 2);
    world_free(w);

    o.history_limit = 0; /* the cluster's default */
    w = world_new(&o);
    w->default_history = 4;
    step(w);
    for (int i = 0; i < 6; i++)
        crash_and_wait(w, RECON_BACKOFF_RESET_MS);
    converge(w);
    step(w);
    assert_int_equal(count_terminated(w), 4);
    world_free(w);
}

/* ---- rolling updates ---------------------------------------------------------------------- */

static void test_start_first_update_never_drops_below_the_replica_count(void **state) {
    svc_opts_t o = {.replicas = 4,
                    .update = true,
                    .parallelism = 2,
                    .order = SHOAL__UPDATE_CONFIG__ORDER__START_FIRST};
    world_t *w = world_new(&o);
    step(w);
    converge(w);
    step(w);
    change_image(w, "shoal-test:2");
    for (int round = 0; round < 20 && count_version(w, 2) < 4; round++) {
        step(w);
        assert_true(count_running(w) >= 4);
        assert_true(count_live(w) <= 6); /* at most parallelism extra tasks */
        /* agents: stop what is told to stop, but start new tasks only on the next round */
        for (size_t i = 0; i < w->n; i++) {
            Shoal__Task *t = w->tasks[i];
            if (t->desired_state > SHOAL__TASK_STATE__RUNNING &&
                t->status->state == SHOAL__TASK_STATE__RUNNING)
                set_state(t, SHOAL__TASK_STATE__SHUTDOWN, 0, w->now);
        }
        assert_true(count_running(w) >= 4);
        w->now += 100;
        converge(w);
    }
    step(w);
    step(w);
    assert_int_equal(count_version(w, 2), 4);
    assert_int_equal(count_live(w), 4);
    assert_int_equal(w->svc->update_status->state, SHOAL__UPDATE_STATUS__STATE__COMPLETED);
    for (uint64_t slot = 1; slot <= 4; slot++)
        assert_string_equal(live_in_slot(w, slot)->spec->container->image, "shoal-test:2");
    world_free(w);
}

static void test_start_first_waits_for_the_new_task_to_be_healthy(void **state) {
    svc_opts_t o = {.replicas = 1,
                    .update = true,
                    .parallelism = 1,
                    .healthcheck = true,
                    .order = SHOAL__UPDATE_CONFIG__ORDER__START_FIRST};
    world_t *w = world_new(&o);
    step(w);
    converge(w);
    live_in_slot(w, 1)->status->healthy = true;
    char old[32];
    snprintf(old, sizeof old, "%s", live_in_slot(w, 1)->meta->id);
    change_image(w, "shoal-test:2");
    step(w);
    assert_int_equal(w->created, 1);
    assert_int_equal(count_live_in_slot(w, 1), 2);
    converge(w); /* RUNNING, health not reported yet */
    step(w);
    step(w);
    assert_int_equal(task_by_id(w, old)->desired_state, SHOAL__TASK_STATE__RUNNING);
    assert_int_not_equal(w->svc->update_status->state, SHOAL__UPDATE_STATUS__STATE__COMPLETED);
    newest_live_in_slot(w, 1)->status->healthy = true;
    step(w);
    assert_int_equal(task_by_id(w, old)->desired_state, SHOAL__TASK_STATE__SHUTDOWN);
    converge(w);
    step(w);
    assert_int_equal(w->svc->update_status->state, SHOAL__UPDATE_STATUS__STATE__COMPLETED);
    world_free(w);
}

static void test_stop_first_update_waits_for_health_before_the_next_slot(void **state) {
    svc_opts_t o = {.replicas = 2, .update = true, .parallelism = 1, .healthcheck = true};
    world_t *w = world_new(&o);
    step(w);
    converge(w);
    change_image(w, "shoal-test:2");
    step(w);
    converge(w);
    step(w); /* slot 1's new task */
    converge(w);
    step(w);
    step(w);
    assert_int_equal(count_version(w, 1), 1); /* slot 2 waits: slot 1 is not healthy yet */
    live_in_slot(w, 1)->status->healthy = true;
    step(w);
    assert_int_equal(w->updated, 1);
    assert_null(live_in_slot(w, 2));
    world_free(w);
}

static void test_update_delay_spaces_the_slots(void **state) {
    svc_opts_t o = {.replicas = 2, .update = true, .parallelism = 1, .update_delay_ms = 3000};
    world_t *w = world_new(&o);
    step(w);
    converge(w);
    change_image(w, "shoal-test:2");
    step(w);
    converge(w);
    step(w);
    converge(w); /* slot 1 runs the new spec at T0 */
    step(w);
    assert_int_equal(w->updated + w->created, 0);
    assert_int_equal(w->wake_at, T0 + 3000);
    w->now = T0 + 2999;
    step(w);
    assert_int_equal(w->updated + w->created, 0);
    w->now = T0 + 3000;
    step(w);
    assert_int_equal(w->updated, 1); /* slot 2's turn */
    world_free(w);
}

static void test_failure_within_monitor_pauses_and_later_failures_do_not(void **state) {
    svc_opts_t o = {.replicas = 2, .update = true, .parallelism = 1, .monitor_ms = 2000};
    world_t *w = world_new(&o);
    step(w);
    converge(w);
    w->now += 1000;
    change_image(w, "shoal-test:2");
    step(w);
    converge(w);
    step(w);
    converge(w); /* slot 1's new task runs */
    step(w);
    /* slot 2 goes on; slot 1's task fails 2.5 s after starting: outside the monitor period */
    w->now += 2500;
    fail_slot(w, 1, SHOAL__TASK_STATE__FAILED, 1);
    step(w);
    assert_int_equal(w->svc->update_status->state, SHOAL__UPDATE_STATUS__STATE__UPDATING);
    converge(w);
    step(w);
    converge(w);
    step(w);
    /* every slot runs the new spec; completion waits for the last task's monitor period */
    assert_int_equal(count_version(w, 2), 2);
    assert_int_equal(w->svc->update_status->state, SHOAL__UPDATE_STATUS__STATE__UPDATING);
    assert_true(w->wake_at > w->now && w->wake_at <= w->now + 2000);
    /* a task failing 1 s after it started is within the period: the update pauses */
    w->now += 1000;
    fail_slot(w, 2, SHOAL__TASK_STATE__FAILED, 1);
    step(w);
    assert_int_equal(w->svc->update_status->state, SHOAL__UPDATE_STATUS__STATE__PAUSED);
    assert_non_null(strstr(w->svc->update_status->message, "update paused due to failure"));
    world_free(w);
}

static void test_update_completes_once_the_monitor_period_passed(void **state) {
    svc_opts_t o = {.replicas = 1, .update = true, .parallelism = 1, .monitor_ms = 2000};
    world_t *w = world_new(&o);
    step(w);
    converge(w);
    change_image(w, "shoal-test:2");
    step(w);
    converge(w);
    step(w);
    converge(w);
    step(w);
    assert_int_equal(w->svc->update_status->state, SHOAL__UPDATE_STATUS__STATE__UPDATING);
    assert_int_equal(w->wake_at, T0 + 2000);
    w->now = T0 + 2000;
    step(w);
    assert_int_equal(w->svc->update_status->state, SHOAL__UPDATE_STATUS__STATE__COMPLETED);
    assert_string_equal(w->svc->update_status->message, "update completed");
    world_free(w);
}

/* An update to a spec whose tasks fail at start: `fail` rounds of failing new tasks. */
static void fail_new_tasks(world_t *w, uint64_t version) {
    for (size_t i = 0; i < w->n; i++) {
        Shoal__Task *t = w->tasks[i];
        if (t->spec_version == version && t->desired_state <= SHOAL__TASK_STATE__RUNNING &&
            t->status->state < SHOAL__TASK_STATE__RUNNING) {
            if (!t->node_id[0])
                set_node(t, "n1");
            set_state(t, SHOAL__TASK_STATE__FAILED, 1, w->now);
        }
    }
}

static void test_failed_update_rolls_back_with_the_rollback_config(void **state) {
    svc_opts_t o = {.replicas = 4,
                    .update = true,
                    .parallelism = 1,
                    .monitor_ms = 2000,
                    .failure_action = SHOAL__UPDATE_CONFIG__FAILURE_ACTION__ROLLBACK,
                    .rollback = true,
                    .rollback_parallelism = 0};
    world_t *w = world_new(&o);
    step(w);
    converge(w);
    step(w);
    /* ServiceUpdate: previous_spec = the running spec */
    w->svc->previous_spec = (Shoal__ServiceSpec *)recon_copy_message(&w->svc->spec->base);
    w->now += 1000;
    change_image(w, "shoal-test:broken");
    step(w);
    converge(w); /* slot 1's old task stops */
    step(w);     /* its new task is created */
    fail_new_tasks(w, 2);
    step(w);
    assert_int_equal(w->svc->update_status->state, SHOAL__UPDATE_STATUS__STATE__ROLLBACK_STARTED);
    assert_non_null(strstr(w->svc->update_status->message, "update rolled back due to failure"));
    assert_string_equal(w->svc->spec->task->container->image, "shoal-test:1");
    assert_string_equal(w->svc->previous_spec->task->container->image, "shoal-test:broken");
    assert_int_equal(w->svc->spec_version, 3);
    for (int i = 0; i < 10; i++) {
        converge(w);
        step(w);
    }
    assert_int_equal(w->svc->update_status->state, SHOAL__UPDATE_STATUS__STATE__ROLLBACK_COMPLETED);
    for (uint64_t slot = 1; slot <= 4; slot++)
        assert_string_equal(live_in_slot(w, slot)->spec->container->image, "shoal-test:1");
    /* slots 2-4 never left the old spec: their tasks were kept, not replaced */
    assert_int_equal(count_version(w, 1), 3);
    world_free(w);
}

static void test_rollback_uses_its_own_parallelism(void **state) {
    svc_opts_t o = {.replicas = 4,
                    .update = true,
                    .parallelism = 0,
                    .failure_action = SHOAL__UPDATE_CONFIG__FAILURE_ACTION__CONTINUE,
                    .rollback = true,
                    .rollback_parallelism = 1};
    world_t *w = world_new(&o);
    step(w);
    converge(w);
    w->svc->previous_spec = (Shoal__ServiceSpec *)recon_copy_message(&w->svc->spec->base);
    change_image(w, "shoal-test:2");
    step(w);
    assert_int_equal(w->updated, 4); /* update: all at once */
    converge(w);
    step(w);
    converge(w);
    step(w);
    assert_int_equal(count_version(w, 2), 4);
    /* shoal service rollback: ServiceUpdate{rollback} swaps the previous spec in */
    Shoal__ServiceSpec *cur = w->svc->spec;
    w->svc->spec = w->svc->previous_spec;
    w->svc->previous_spec = cur;
    w->svc->spec_version++;
    w->svc->update_status->state = SHOAL__UPDATE_STATUS__STATE__ROLLBACK_STARTED;
    w->svc->update_status->started_at_ms = w->now;
    step(w);
    assert_int_equal(w->updated, 1); /* rollback: one slot at a time */
    world_free(w);
}

static void test_failure_action_continue_finishes_the_update(void **state) {
    svc_opts_t o = {.replicas = 2,
                    .update = true,
                    .parallelism = 1,
                    .failure_action = SHOAL__UPDATE_CONFIG__FAILURE_ACTION__CONTINUE};
    world_t *w = world_new(&o);
    step(w);
    converge(w);
    w->now += 1000;
    change_image(w, "shoal-test:2");
    for (int i = 0; i < 12; i++) {
        step(w);
        fail_new_tasks(w, 2);
        converge(w);
        w->now += RECON_BACKOFF_MAX_MS;
    }
    assert_int_equal(w->svc->update_status->state, SHOAL__UPDATE_STATUS__STATE__COMPLETED);
    world_free(w);
}

static void test_max_failure_ratio_tolerates_some_failures(void **state) {
    svc_opts_t o = {.replicas = 4, .update = true, .parallelism = 0, .max_failure_ratio = 0.5f};
    world_t *w = world_new(&o);
    step(w);
    converge(w);
    w->now += 1000;
    change_image(w, "shoal-test:2");
    step(w);
    converge(w);
    step(w); /* four new tasks */
    fail_slot(w, 1, SHOAL__TASK_STATE__FAILED, 1);
    fail_slot(w, 2, SHOAL__TASK_STATE__FAILED, 1);
    step(w); /* 2 of 4 = 0.5: not above the ratio */
    assert_int_equal(w->svc->update_status->state, SHOAL__UPDATE_STATUS__STATE__UPDATING);
    fail_slot(w, 3, SHOAL__TASK_STATE__FAILED, 1);
    step(w);
    assert_int_equal(w->svc->update_status->state, SHOAL__UPDATE_STATUS__STATE__PAUSED);
    world_free(w);
}

static void test_paused_update_resumes_with_another_update(void **state) {
    svc_opts_t o = {.replicas = 3, .update = true, .parallelism = 1};
    world_t *w = world_new(&o);
    step(w);
    converge(w);
    w->now += 1000;
    change_image(w, "shoal-test:2");
    step(w);
    converge(w);
    step(w);
    fail_new_tasks(w, 2);
    step(w);
    assert_int_equal(w->svc->update_status->state, SHOAL__UPDATE_STATUS__STATE__PAUSED);
    for (int i = 0; i < 3; i++) {
        converge(w);
        step(w);
    }
    assert_int_equal(count_version(w, 1), 2); /* paused: slots 2 and 3 untouched */
    /* ServiceUpdate on a paused service: UPDATING again, failures counted from now */
    w->now += 1000;
    w->svc->update_status->state = SHOAL__UPDATE_STATUS__STATE__UPDATING;
    w->svc->update_status->started_at_ms = w->now;
    for (int i = 0; i < 12; i++) {
        converge(w);
        step(w);
    }
    assert_int_equal(count_version(w, 2), 3);
    assert_int_equal(w->svc->update_status->state, SHOAL__UPDATE_STATUS__STATE__COMPLETED);
    world_free(w);
}

static void test_a_failing_rollback_pauses_instead_of_rolling_back_again(void **state) {
    svc_opts_t o = {.replicas = 2,
                    .update = true,
                    .parallelism = 1,
                    .failure_action = SHOAL__UPDATE_CONFIG__FAILURE_ACTION__ROLLBACK,
                    .rollback = true,
                    .rollback_parallelism = 1,
                    .rollback_failure_action = SHOAL__UPDATE_CONFIG__FAILURE_ACTION__ROLLBACK};
    world_t *w = world_new(&o);
    step(w);
    converge(w);
    w->svc->previous_spec = (Shoal__ServiceSpec *)recon_copy_message(&w->svc->spec->base);
    w->now += 1000;
    change_image(w, "shoal-test:2");
    w->svc->update_status->state = SHOAL__UPDATE_STATUS__STATE__ROLLBACK_STARTED;
    step(w);
    converge(w);
    step(w);
    fail_new_tasks(w, 2);
    step(w);
    assert_int_equal(w->svc->update_status->state, SHOAL__UPDATE_STATUS__STATE__ROLLBACK_PAUSED);
    assert_non_null(strstr(w->svc->update_status->message, "rollback paused"));
    world_free(w);
}

static void test_drain_with_start_first_starts_the_replacement_first(void **state) {
    svc_opts_t o = {
        .replicas = 1, .update = true, .order = SHOAL__UPDATE_CONFIG__ORDER__START_FIRST};
    world_t *w = world_new(&o);
    add_node(w, "n2", SHOAL__NODE_STATUS__STATE__READY, 0, NULL);
    step(w);
    converge(w);
    char old[32];
    snprintf(old, sizeof old, "%s", live_in_slot(w, 1)->meta->id);
    node(w, "n1")->spec->availability = SHOAL__NODE_SPEC__AVAILABILITY__DRAIN;
    step(w);
    assert_int_equal(w->created, 1);
    assert_int_equal(w->updated, 0);
    assert_int_equal(task_by_id(w, old)->desired_state, SHOAL__TASK_STATE__RUNNING);
    assert_null(label(newest_live_in_slot(w, 1), RECON_LABEL_NODE_DOWN));
    step(w);
    assert_int_equal(w->created + w->updated, 0);
    const char *n2[] = {"n2"};
    converge_on(w, n2, 1);
    step(w);
    assert_int_equal(task_by_id(w, old)->desired_state, SHOAL__TASK_STATE__SHUTDOWN);
    assert_string_equal(live_in_slot(w, 1)->node_id, "n2");
    world_free(w);
}

/* ---- jobs --------------------------------------------------------------------------------- */

static size_t count_state(world_t *w, int state, uint64_t version) {
    size_t n = 0;
    for (size_t i = 0; i < w->n; i++)
        n += (int)w->tasks[i]->status->state == state && w->tasks[i]->spec_version == version;
    return n;
}

/* Agents run each live job task; the `finish` first running ones exit with `exit_code`. */
static void run_job_tasks(world_t *w, size_t finish, int exit_code) {
    for (size_t i = 0; i < w->n; i++) {
        Shoal__Task *t = w->tasks[i];
        if (t->desired_state > SHOAL__TASK_STATE__RUNNING)
            continue;
        if (t->status->state == SHOAL__TASK_STATE__RUNNING && finish > 0) {
            set_state(t, exit_code ? SHOAL__TASK_STATE__FAILED : SHOAL__TASK_STATE__COMPLETE,
                      exit_code, w->now);
            finish--;
        } else if (t->status->state < SHOAL__TASK_STATE__RUNNING) {
            if (!t->node_id[0])
                set_node(t, "n1");
            set_state(t, SHOAL__TASK_STATE__RUNNING, 0, w->now);
        }
    }
}

static void test_replicated_job_runs_to_total_completions_with_max_concurrent(void **state) {
    svc_opts_t o = {.job = SHOAL__SERVICE_SPEC__MODE_REPLICATED_JOB,
                    .total_completions = 4,
                    .max_concurrent = 2};
    world_t *w = world_new(&o);
    step(w);
    assert_int_equal(w->created, 2);
    run_job_tasks(w, 0, 0);
    step(w);
    assert_int_equal(w->created, 0);
    run_job_tasks(w, 1, 0); /* one completes: a third starts */
    step(w);
    assert_int_equal(w->created, 1);
    assert_int_equal(count_live(w), 2);
    run_job_tasks(w, 0, 0);
    run_job_tasks(w, 1, 1); /* one fails: restarted in its slot (condition any) */
    step(w);
    assert_int_equal(w->created, 1);
    assert_int_equal(w->restarts, 1);
    assert_int_equal(count_live(w), 2);
    for (int i = 0; i < 10; i++) {
        run_job_tasks(w, 0, 0);
        run_job_tasks(w, 2, 0);
        w->now += 1000;
        step(w);
    }
    assert_int_equal(count_state(w, SHOAL__TASK_STATE__COMPLETE, 1), 4);
    assert_int_equal(count_live(w), 0);
    for (uint64_t slot = 1; slot <= 4; slot++) /* each slot completed once */
        assert_int_equal(count_live_in_slot(w, slot), 0);
    /* nothing more, ever: completed tasks are not restarted nor reaped */
    w->now += 3600 * 1000;
    step(w);
    assert_int_equal(w->created + w->deleted, 0);
    world_free(w);
}

static void test_replicated_job_with_restart_none_leaves_a_failed_slot(void **state) {
    svc_opts_t o = {.job = SHOAL__SERVICE_SPEC__MODE_REPLICATED_JOB,
                    .total_completions = 2,
                    .max_concurrent = 1,
                    .condition = SHOAL__RESTART_POLICY__CONDITION__NONE};
    world_t *w = world_new(&o);
    step(w);
    run_job_tasks(w, 0, 0);
    run_job_tasks(w, 1, 3);
    step(w);
    assert_int_equal(w->restarts, 0);
    assert_int_equal(w->created, 1); /* slot 2 goes on; slot 1 stays failed */
    assert_int_equal(newest_live_in_slot(w, 2)->slot, 2);
    world_free(w);
}

static void test_job_spec_change_starts_a_new_iteration(void **state) {
    svc_opts_t o = {.job = SHOAL__SERVICE_SPEC__MODE_REPLICATED_JOB, .total_completions = 2};
    world_t *w = world_new(&o);
    step(w);
    run_job_tasks(w, 0, 0);
    run_job_tasks(w, 1, 0); /* slot 1 done, slot 2 running */
    step(w);
    change_image(w, "shoal-test:2"); /* e.g. --force: run the job again */
    step(w);
    assert_int_equal(w->created, 2);
    assert_int_equal(count_version(w, 2), 2);
    assert_int_equal(count_version(w, 1), 0); /* the old iteration's running task stops */
    assert_int_equal(w->svc->update_status->state, SHOAL__UPDATE_STATUS__STATE__COMPLETED);
    world_free(w);
}

static void test_global_job_runs_once_on_each_node_present_at_its_start(void **state) {
    svc_opts_t o = {.job = SHOAL__SERVICE_SPEC__MODE_GLOBAL_JOB};
    world_t *w = world_new(&o);
    add_node(w, "n1", SHOAL__NODE_STATUS__STATE__READY, 0, NULL);
    add_node(w, "n2", SHOAL__NODE_STATUS__STATE__READY, 0, NULL);
    add_node(w, "n3", SHOAL__NODE_STATUS__STATE__READY, SHOAL__NODE_SPEC__AVAILABILITY__DRAIN,
             NULL);
    step(w);
    assert_int_equal(w->created, 2);
    run_global_tasks(w);
    step(w);
    set_state(live_on_node(w, "n1"), SHOAL__TASK_STATE__COMPLETE, 0, w->now);
    set_state(live_on_node(w, "n2"), SHOAL__TASK_STATE__FAILED, 1, w->now);
    step(w);
    assert_int_equal(w->created, 1); /* n2's failure restarts there; n1 is done */
    assert_non_null(live_on_node(w, "n2"));
    assert_null(live_on_node(w, "n1"));
    run_global_tasks(w);
    set_state(live_on_node(w, "n2"), SHOAL__TASK_STATE__COMPLETE, 0, w->now);
    step(w);
    assert_int_equal(w->created, 0);
    /* a node joining later gets nothing; nor does n1 again */
    w->now += 5000;
    add_node(w, "n4", SHOAL__NODE_STATUS__STATE__READY, 0, NULL);
    node(w, "n4")->meta->created_at_ms = w->now;
    step(w);
    assert_int_equal(w->created, 0);
    assert_int_equal(count_state(w, SHOAL__TASK_STATE__COMPLETE, 1), 2);
    world_free(w);
}

static void test_rollback_after_a_new_task_ran_briefly_keeps_unreached_slots(void **state) {
    svc_opts_t o = {.replicas = 3,
                    .update = true,
                    .parallelism = 1,
                    .monitor_ms = 2000,
                    .failure_action = SHOAL__UPDATE_CONFIG__FAILURE_ACTION__ROLLBACK,
                    .rollback = true,
                    .rollback_parallelism = 0};
    world_t *w = world_new(&o);
    step(w);
    converge(w);
    step(w);
    char keep2[32], keep3[32];
    snprintf(keep2, sizeof keep2, "%s", live_in_slot(w, 2)->meta->id);
    snprintf(keep3, sizeof keep3, "%s", live_in_slot(w, 3)->meta->id);
    w->svc->previous_spec = (Shoal__ServiceSpec *)recon_copy_message(&w->svc->spec->base);
    w->now += 1000;
    change_image(w, "shoal-test:broken");
    step(w);
    converge(w); /* slot 1's old task stops */
    w->now += 100;
    step(w);     /* its new task is created */
    converge(w); /* and runs */
    w->now += 100;
    step(w);
    w->now += 500;
    fail_slot(w, 1, SHOAL__TASK_STATE__FAILED, 1); /* 0.5 s after starting */
    step(w);
    assert_int_equal(w->svc->update_status->state, SHOAL__UPDATE_STATUS__STATE__ROLLBACK_STARTED);
    /* agents stop what they are told to and run slot 1's new task, not slot 2's yet: slot 2's
     * old task (the old spec, stopped by the update) is still to be replaced, so the rollback
     * is not complete */
    for (int i = 0; i < 5; i++) {
        w->now += 1000;
        step(w);
        for (size_t k = 0; k < w->n; k++) {
            Shoal__Task *t = w->tasks[k];
            if (t->desired_state > SHOAL__TASK_STATE__RUNNING &&
                t->status->state == SHOAL__TASK_STATE__RUNNING)
                set_state(t, SHOAL__TASK_STATE__SHUTDOWN, 0, w->now);
            else if (t->slot == 1 && t->desired_state <= SHOAL__TASK_STATE__RUNNING &&
                     t->status->state < SHOAL__TASK_STATE__RUNNING) {
                set_node(t, "n1");
                set_state(t, SHOAL__TASK_STATE__RUNNING, 0, w->now);
            }
        }
    }
    assert_int_equal(w->svc->update_status->state, SHOAL__UPDATE_STATUS__STATE__ROLLBACK_STARTED);
    for (int i = 0; i < 10; i++) {
        w->now += 100;
        step(w);
        converge(w);
    }
    assert_int_equal(w->svc->update_status->state, SHOAL__UPDATE_STATUS__STATE__ROLLBACK_COMPLETED);
    /* slot 2 had begun (its old task stopped once slot 1's new task ran): it is refilled with
     * the old spec; slot 3 was never reached and keeps its task */
    assert_string_not_equal(live_in_slot(w, 2)->meta->id, keep2);
    assert_string_equal(live_in_slot(w, 3)->meta->id, keep3);
    for (uint64_t slot = 1; slot <= 3; slot++)
        assert_string_equal(live_in_slot(w, slot)->spec->container->image, "shoal-test:1");
    world_free(w);
}

static void test_start_first_new_task_on_a_failed_node_is_replaced_without_churn(void **state) {
    svc_opts_t o = {.replicas = 1,
                    .update = true,
                    .parallelism = 1,
                    .order = SHOAL__UPDATE_CONFIG__ORDER__START_FIRST};
    world_t *w = world_new(&o);
    add_node(w, "n2", SHOAL__NODE_STATUS__STATE__READY, 0, NULL);
    step(w);
    converge(w);
    char old[32];
    snprintf(old, sizeof old, "%s", live_in_slot(w, 1)->meta->id);
    change_image(w, "shoal-test:2");
    step(w);
    Shoal__Task *n = newest_live_in_slot(w, 1); /* the new task, placed on n2, which dies */
    set_node(n, "n2");
    set_state(n, SHOAL__TASK_STATE__ASSIGNED, 0, w->now);
    node(w, "n2")->status->state = SHOAL__NODE_STATUS__STATE__DOWN;
    step(w);
    assert_int_equal(w->created, 1); /* its own replacement; the old task on n1 runs on */
    assert_int_equal(count_live_in_slot(w, 1), 3);
    for (int i = 0; i < 3; i++) { /* and nothing is created or cancelled over and over */
        w->now += 100;
        step(w);
        assert_int_equal(w->created + w->updated + w->deleted, 0);
    }
    assert_int_equal(task_by_id(w, old)->desired_state, SHOAL__TASK_STATE__RUNNING);
    const char *n1[] = {"n1"};
    converge_on(w, n1, 1);
    step(w);
    assert_int_equal(count_live_in_slot(w, 1), 1);
    assert_int_equal(live_in_slot(w, 1)->spec_version, 2);
    world_free(w);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_replicated_service_gets_one_pending_task_per_slot),
        cmocka_unit_test(test_scale_up_then_down_keeps_slot_1),
        cmocka_unit_test(test_scale_down_removes_non_running_slots_first),
        cmocka_unit_test(test_scale_up_reuses_free_slot_numbers),
        cmocka_unit_test(test_failed_task_is_replaced_under_condition_any),
        cmocka_unit_test(test_on_failure_replaces_failures_but_not_clean_exits),
        cmocka_unit_test(test_condition_none_never_replaces),
        cmocka_unit_test(test_restart_delay_sets_restart_at_and_creates_later),
        cmocka_unit_test(test_max_attempts_stops_restarts),
        cmocka_unit_test(test_max_attempts_counts_only_restarts_inside_the_window),
        cmocka_unit_test(
            test_tasks_of_a_down_node_are_replaced_at_once_and_kept_until_replacements_run),
        cmocka_unit_test(test_node_back_before_the_replacement_starts_keeps_the_old_task),
        cmocka_unit_test(test_node_back_after_the_replacement_started_lets_the_replacement_win),
        cmocka_unit_test(test_replacement_that_fails_elsewhere_is_restarted_with_the_old_task_kept),
        cmocka_unit_test(test_tasks_of_a_removed_node_are_replaced_and_stopped),
        cmocka_unit_test(test_condition_none_keeps_a_task_on_a_down_node),
        cmocka_unit_test(test_drained_node_tasks_move_stop_first),
        cmocka_unit_test(test_global_runs_one_task_per_ready_active_matching_node),
        cmocka_unit_test(test_global_drain_removes_and_pause_keeps),
        cmocka_unit_test(test_global_failed_task_restarts_on_its_node),
        cmocka_unit_test(test_update_with_parallelism_1_replaces_one_slot_at_a_time),
        cmocka_unit_test(test_update_with_parallelism_0_replaces_all_at_once),
        cmocka_unit_test(test_update_pauses_when_a_new_task_fails),
        cmocka_unit_test(test_replica_count_change_alone_replaces_nothing),
        cmocka_unit_test(test_update_is_not_held_back_by_a_scale_up_task),
        cmocka_unit_test(test_reaper_keeps_five_terminated_tasks_per_slot),
        cmocka_unit_test(test_removed_service_tasks_get_remove_then_are_deleted),
        cmocka_unit_test(test_tasks_on_a_down_node_are_deleted_with_their_service),
        cmocka_unit_test(test_crash_loop_backs_off_exponentially_and_resets_after_ten_seconds),
        cmocka_unit_test(test_restart_delay_replaces_the_back_off),
        cmocka_unit_test(test_history_limit_comes_from_the_spec_then_the_cluster),
        cmocka_unit_test(test_start_first_update_never_drops_below_the_replica_count),
        cmocka_unit_test(test_start_first_waits_for_the_new_task_to_be_healthy),
        cmocka_unit_test(test_stop_first_update_waits_for_health_before_the_next_slot),
        cmocka_unit_test(test_update_delay_spaces_the_slots),
        cmocka_unit_test(test_failure_within_monitor_pauses_and_later_failures_do_not),
        cmocka_unit_test(test_update_completes_once_the_monitor_period_passed),
        cmocka_unit_test(test_failed_update_rolls_back_with_the_rollback_config),
        cmocka_unit_test(test_rollback_uses_its_own_parallelism),
        cmocka_unit_test(test_failure_action_continue_finishes_the_update),
        cmocka_unit_test(test_max_failure_ratio_tolerates_some_failures),
        cmocka_unit_test(test_paused_update_resumes_with_another_update),
        cmocka_unit_test(test_a_failing_rollback_pauses_instead_of_rolling_back_again),
        cmocka_unit_test(test_drain_with_start_first_starts_the_replacement_first),
        cmocka_unit_test(test_replicated_job_runs_to_total_completions_with_max_concurrent),
        cmocka_unit_test(test_replicated_job_with_restart_none_leaves_a_failed_slot),
        cmocka_unit_test(test_job_spec_change_starts_a_new_iteration),
        cmocka_unit_test(test_global_job_runs_once_on_each_node_present_at_its_start),
        cmocka_unit_test(test_rollback_after_a_new_task_ran_briefly_keeps_unreached_slots),
        cmocka_unit_test(test_start_first_new_task_on_a_failed_node_is_replaced_without_churn),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
