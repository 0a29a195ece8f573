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
} world_t;

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
    const char *constraint;
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
    Shoal__ServiceSpec spec = SHOAL__SERVICE_SPEC__INIT;
    spec.annotations = &ann;
    spec.task = &ts;
    if (o->global) {
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
    for (size_t i = 0; i < w->n; i++)
        rt[i] = (recon_task_t){.task = w->tasks[i], .mod_revision = w->mods[i]};
    recon_input_t in = {.service = w->svc,
                        .service_mod_revision = 1,
                        .tasks = rt,
                        .n_tasks = w->n,
                        .nodes = w->nodes,
                        .n_nodes = w->nn,
                        .now_ms = w->now,
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
        fail_slot(w, 1, SHOAL__TASK_STATE__FAILED, 1);
        w->now += 1000;
        step(w);
        assert_int_equal(w->created, 1);
    }
    converge(w);
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

static void test_tasks_of_a_down_node_are_replaced(void **state) {
    svc_opts_t o = {.replicas = 3, .condition = SHOAL__RESTART_POLICY__CONDITION__ON_FAILURE};
    world_t *w = world_new(&o);
    add_node(w, "n2", SHOAL__NODE_STATUS__STATE__READY, 0, NULL);
    step(w);
    const char *nodes[] = {"n1", "n2"};
    converge_on(w, nodes, 2); /* slots 1,3 on n1; slot 2 on n2 */
    node(w, "n1")->status->state = SHOAL__NODE_STATUS__STATE__DOWN;
    step(w);
    assert_int_equal(w->updated, 2);
    assert_int_equal(w->created, 2);
    assert_int_equal(w->restarts, 2);
    for (uint64_t slot = 1; slot <= 3; slot++)
        assert_non_null(live_in_slot(w, slot));
    assert_string_equal(live_in_slot(w, 1)->node_id, ""); /* for the scheduler to place */
    assert_string_equal(live_in_slot(w, 2)->node_id, "n2");
    assert_string_equal(live_in_slot(w, 3)->node_id, "");
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
    /* a node going down shuts its task down without a replacement elsewhere */
    node(w, "n2")->status->state = SHOAL__NODE_STATUS__STATE__DOWN;
    step(w);
    assert_int_equal(w->created, 0);
    assert_null(live_on_node(w, "n2"));
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
        w->now += 1000;
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
    /* the newest five were kept: the first three tasks (created at T0, +1 s, +2 s) are gone */
    assert_int_equal(oldest, T0 + 3000);
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
        cmocka_unit_test(test_tasks_of_a_down_node_are_replaced),
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
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
