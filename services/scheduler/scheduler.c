/* scheduler — where PENDING tasks go (SwarmKit's manager/scheduler/scheduler.go, without I/O).
 *
 * State: every node (nodeinfo, with running sums of the tasks counted on it) and every task the
 * store holds, plus the set of tasks waiting for a node. The daemon feeds puts and deletes from
 * its store list + watch; the core never reads a clock or a socket (now_ms is a parameter).
 *
 * A tick:
 *  1. Preassigned tasks (PENDING with node_id already set: global services) come first, as in
 *     SwarmKit, so a node's resources go to the tasks that can run nowhere else. They are only
 *     checked for resources on their node, then move to ASSIGNED.
 *  2. The other PENDING tasks are sorted into groups of equal (service_id, spec_version): tasks
 *     of one group have the same spec, so the filters run once per node per group, not per task.
 *     Tasks with spec_version 0 (unknown spec) are groups of one.
 *  3. Per group, placement.c puts the tasks by the group's strategy (spec.task.placement.strategy,
 *     else the cluster default, else spread): one pass over the nodes builds the filtered
 *     preference tree and heaps, then each task costs O(log N) (spread: fewest tasks of this
 *     service, then most free resources; binpack: least free resources; random: uniform). The
 *     node that took a task is re-checked (resources, host ports, max replicas) at once.
 *  4. Tasks left when no node fits get "no suitable node (<why>)", where <why> counts, for
 *     every node, the first filter it failed (filter_pipeline_explain).
 *
 * Decisions are counted at once (the task, ASSIGNED on its node, counts against the node), so the
 * next tick and the rest of this one see the new load. A decision changes the held task in place
 * (node_id, state, message, err, timestamp, meta version) and keeps the replaced fields in the
 * entry's undo record: no copy of the task per decision, which dominated a tick's cost. The daemon
 * writes decisions with one compare-and-swap per task and reports each back: commit (the undo
 * record is freed) or abort (the task gets its fields back; a failed compare marks the task stale
 * until the watch brings its newer version, so it is not retried against a revision known to be
 * old).
 *
 * Counting rule (nodeinfo_task_counts): node_id set, ASSIGNED..RUNNING, desired <= RUNNING. Each
 * task entry remembers the nodeinfo and the exact task object it was counted with, and is
 * uncounted with the same object before that object is freed: the sums never drift. A nodeinfo
 * without a Node (deleted, or not seen yet) lives while tasks count on it. */
#include "scheduler.h"

#include <czmq.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "filter.h"
#include "nodeinfo.h"
#include "placement.h"

typedef struct task_entry {
    char *id;
    Shoal__Task *task;    /* as last read from the store */
    int64_t mod_revision; /* of that read */
    bool inflight;        /* task holds a decision not yet confirmed; undo has what it replaced */
    struct {
        char *node_id, *message, *err;
        int state;
        int64_t timestamp_ms, updated_at_ms;
        uint64_t version;
    } undo;
    nodeinfo_t *counted_on; /* node the task counts on, or NULL */
    const Shoal__Task *counted_with;
    bool stale;   /* a CAS failed: wait for a newer revision */
    bool pending; /* member of scheduler.pending */
} task_entry_t;

struct scheduler {
    zhashx_t *nodes;   /* id -> nodeinfo_t (owned) */
    zhashx_t *tasks;   /* id -> task_entry_t (owned) */
    zhashx_t *pending; /* id -> task_entry_t (borrowed) */
    uint64_t node_count;

    nodeinfo_t **candidates; /* nodeinfos with a Node, rebuilt when the node set changes */
    size_t n_candidates, cap_candidates;
    bool candidates_dirty;

    placement_t *placement;
    placement_strategy_t default_strategy;

    scheduler_decision_t *decisions;
    size_t n_decisions, cap_decisions;
    uint64_t in_flight;

    uint64_t placed_total, unplaced_total, ticks;
};

/* ---- protobuf helpers ---------------------------------------------------------------------- */

/* Gives the task the parts every decision changes (status, meta), so a decision only swaps
 * fields. */
static int task_ensure_parts(Shoal__Task *t) {
    if (!t->status) {
        t->status = malloc(sizeof *t->status);
        if (!t->status)
            return -ENOMEM;
        shoal__task_status__init(t->status);
    }
    if (!t->meta) {
        t->meta = malloc(sizeof *t->meta);
        if (!t->meta)
            return -ENOMEM;
        shoal__meta__init(t->meta);
    }
    return 0;
}

static int task_state(const Shoal__Task *t) {
    return t->status ? (int)t->status->state : SHOAL__TASK_STATE__NEW;
}

static const char *task_err(const Shoal__Task *t) {
    return t->status && t->status->err ? t->status->err : "";
}

static bool has_node(const Shoal__Task *t) {
    return t->node_id && t->node_id[0];
}

static const char *str_or_empty(const char *s) {
    return s ? s : "";
}

/* ---- entries and counting ------------------------------------------------------------------ */

/* Strings of an unpacked message are the system allocator's; "" may be protobuf-c's static. */
static void free_string(char *str) {
    if (str && str != protobuf_c_empty_string)
        free(str);
}

static void task_entry_destroy(task_entry_t **self_p) {
    if (!self_p || !*self_p)
        return;
    task_entry_t *e = *self_p;
    if (e->task)
        protobuf_c_message_free_unpacked(&e->task->base, NULL);
    if (e->inflight) {
        free_string(e->undo.node_id);
        free_string(e->undo.message);
        free_string(e->undo.err);
    }
    free(e->id);
    free(e);
    *self_p = NULL;
}

static nodeinfo_t *nodeinfo_get(scheduler_t *self, const char *id, bool create) {
    nodeinfo_t *ni = zhashx_lookup(self->nodes, id);
    if (!ni && create) {
        ni = nodeinfo_new(id);
        if (ni)
            zhashx_insert(self->nodes, id, ni);
    }
    return ni;
}

/* A nodeinfo without a Node is kept only while tasks count on it. */
static void nodeinfo_maybe_drop(scheduler_t *self, nodeinfo_t *ni) {
    if (!ni->node && ni->active_tasks == 0)
        zhashx_delete(self->nodes, ni->id);
}

static void uncount(scheduler_t *self, task_entry_t *e) {
    if (!e->counted_on)
        return;
    nodeinfo_t *ni = e->counted_on;
    nodeinfo_remove_task(ni, e->counted_with);
    e->counted_on = NULL;
    e->counted_with = NULL;
    nodeinfo_maybe_drop(self, ni);
}

static void count(scheduler_t *self, task_entry_t *e) {
    const Shoal__Task *t = e->task;
    if (!nodeinfo_task_counts(t))
        return;
    nodeinfo_t *ni = nodeinfo_get(self, t->node_id, true);
    if (!ni)
        return; /* out of memory: the node looks emptier than it is until the next put */
    nodeinfo_add_task(ni, t);
    e->counted_on = ni;
    e->counted_with = t;
}

static void update_pending(scheduler_t *self, task_entry_t *e) {
    const Shoal__Task *t = e->task;
    bool want = !e->inflight && !e->stale && task_state(t) == SHOAL__TASK_STATE__PENDING &&
                t->desired_state <= SHOAL__TASK_STATE__RUNNING;
    if (want == e->pending)
        return;
    if (want)
        zhashx_insert(self->pending, e->id, e);
    else
        zhashx_delete(self->pending, e->id);
    e->pending = want;
}

/* Ends a decision: `keep` keeps the task as decided (the write landed) and frees what it replaced;
 * otherwise the task gets its replaced fields back. The caller (un)counts around it. */
static void end_inflight(scheduler_t *self, task_entry_t *e, bool keep) {
    if (!e->inflight)
        return;
    Shoal__Task *t = e->task;
    if (keep) {
        free_string(e->undo.node_id);
        free_string(e->undo.message);
        free_string(e->undo.err);
    } else {
        free_string(t->node_id);
        free_string(t->status->message);
        free_string(t->status->err);
        t->node_id = e->undo.node_id;
        t->status->message = e->undo.message;
        t->status->err = e->undo.err;
        t->status->state = e->undo.state;
        t->status->timestamp_ms = e->undo.timestamp_ms;
        t->meta->version = e->undo.version;
        t->meta->updated_at_ms = e->undo.updated_at_ms;
    }
    memset(&e->undo, 0, sizeof e->undo);
    e->inflight = false;
    self->in_flight--;
}

/* ---- object lifecycle ---------------------------------------------------------------------- */

scheduler_t *scheduler_new(void) {
    scheduler_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->nodes = zhashx_new();
    self->tasks = zhashx_new();
    self->pending = zhashx_new();
    self->placement = placement_new();
    if (!self->nodes || !self->tasks || !self->pending || !self->placement) {
        scheduler_destroy(&self);
        return NULL;
    }
    zhashx_set_destructor(self->nodes, (zhashx_destructor_fn *)nodeinfo_destroy);
    zhashx_set_destructor(self->tasks, (zhashx_destructor_fn *)task_entry_destroy);
    self->candidates_dirty = true;
    return self;
}

void scheduler_destroy(scheduler_t **self_p) {
    if (!self_p || !*self_p)
        return;
    scheduler_t *self = *self_p;
    zhashx_destroy(&self->pending);
    zhashx_destroy(&self->tasks); /* before nodes: entries point at nodeinfos */
    zhashx_destroy(&self->nodes);
    free(self->candidates);
    placement_destroy(&self->placement);
    free(self->decisions);
    free(self);
    *self_p = NULL;
}

/* ---- feeding ------------------------------------------------------------------------------- */

int scheduler_put_node(scheduler_t *self, Shoal__Node *node) {
    if (!node || !node->meta || !node->meta->id || !node->meta->id[0]) {
        if (node)
            protobuf_c_message_free_unpacked(&node->base, NULL);
        return -EINVAL;
    }
    nodeinfo_t *ni = nodeinfo_get(self, node->meta->id, true);
    if (!ni) {
        protobuf_c_message_free_unpacked(&node->base, NULL);
        return -ENOMEM;
    }
    if (!ni->node) {
        self->node_count++;
        self->candidates_dirty = true;
    }
    nodeinfo_set_node(ni, node);
    return 0;
}

void scheduler_delete_node(scheduler_t *self, const char *node_id) {
    nodeinfo_t *ni = zhashx_lookup(self->nodes, node_id);
    if (!ni || !ni->node)
        return;
    nodeinfo_set_node(ni, NULL);
    self->node_count--;
    self->candidates_dirty = true;
    nodeinfo_maybe_drop(self, ni);
}

int scheduler_put_task(scheduler_t *self, Shoal__Task *task, int64_t mod_revision) {
    if (!task || !task->meta || !task->meta->id || !task->meta->id[0]) {
        if (task)
            protobuf_c_message_free_unpacked(&task->base, NULL);
        return -EINVAL;
    }
    task_entry_t *e = zhashx_lookup(self->tasks, task->meta->id);
    if (e && mod_revision < e->mod_revision) {
        protobuf_c_message_free_unpacked(&task->base, NULL);
        return 0; /* an older read than the one held */
    }
    if (!e) {
        e = calloc(1, sizeof *e);
        if (!e || !(e->id = strdup(task->meta->id))) {
            free(e);
            protobuf_c_message_free_unpacked(&task->base, NULL);
            return -ENOMEM;
        }
        zhashx_insert(self->tasks, e->id, e);
    }
    if (task_ensure_parts(task) < 0) {
        protobuf_c_message_free_unpacked(&task->base, NULL);
        return -ENOMEM;
    }
    uncount(self, e);
    end_inflight(self, e, true); /* a newer version beat our write: the decision is moot */
    if (e->task)
        protobuf_c_message_free_unpacked(&e->task->base, NULL);
    if (mod_revision > e->mod_revision)
        e->stale = false;
    e->task = task;
    e->mod_revision = mod_revision;
    count(self, e);
    update_pending(self, e);
    return 0;
}

void scheduler_delete_task(scheduler_t *self, const char *task_id) {
    task_entry_t *e = zhashx_lookup(self->tasks, task_id);
    if (!e)
        return;
    uncount(self, e);
    end_inflight(self, e, true);
    if (e->pending)
        zhashx_delete(self->pending, e->id);
    zhashx_delete(self->tasks, task_id);
}

/* ---- decisions ----------------------------------------------------------------------------- */

static int push_decision(scheduler_t *self, task_entry_t *e) {
    if (self->n_decisions == self->cap_decisions) {
        size_t cap = self->cap_decisions ? self->cap_decisions * 2 : 64;
        scheduler_decision_t *d = realloc(self->decisions, cap * sizeof *d);
        if (!d)
            return -ENOMEM;
        self->decisions = d;
        self->cap_decisions = cap;
    }
    const Shoal__Task *t = e->task;
    self->decisions[self->n_decisions++] = (scheduler_decision_t){
        .task_id = e->id,
        .mod_revision = e->mod_revision,
        .node_id = task_state(t) == SHOAL__TASK_STATE__ASSIGNED ? t->node_id : NULL,
        .err = task_state(t) == SHOAL__TASK_STATE__ASSIGNED ? NULL : task_err(t),
        .task = t,
    };
    return 0;
}

/* Swaps in the decision's fields (node_id, state, message, err: NULL keeps the current one),
 * keeping what they replace for an abort, and records the decision. */
static int start_decision(scheduler_t *self, task_entry_t *e, const char *node_id, int state,
                          const char *message, const char *err, int64_t now_ms) {
    Shoal__Task *t = e->task;
    char *new_node = node_id ? strdup(node_id) : NULL;
    char *new_message = message ? strdup(message) : NULL;
    char *new_err = err ? strdup(err) : NULL;
    if ((node_id && !new_node) || (message && !new_message) || (err && !new_err)) {
        free(new_node);
        free(new_message);
        free(new_err);
        return -ENOMEM;
    }
    uncount(self, e);
    e->undo.node_id = t->node_id;
    e->undo.message = t->status->message;
    e->undo.err = t->status->err;
    e->undo.state = t->status->state;
    e->undo.timestamp_ms = t->status->timestamp_ms;
    e->undo.version = t->meta->version;
    e->undo.updated_at_ms = t->meta->updated_at_ms;
    /* A field not changed is duplicated so that undo and task never share a string. */
    t->node_id = new_node ? new_node : strdup(t->node_id ? t->node_id : "");
    t->status->message = new_message ? new_message : strdup(str_or_empty(t->status->message));
    t->status->err = new_err ? new_err : strdup(str_or_empty(t->status->err));
    t->status->state = state;
    t->status->timestamp_ms = now_ms;
    t->meta->version++;
    t->meta->updated_at_ms = now_ms;
    e->inflight = true;
    self->in_flight++;
    if (!t->node_id || !t->status->message || !t->status->err) {
        end_inflight(self, e, false);
        count(self, e);
        return -ENOMEM;
    }
    count(self, e);
    update_pending(self, e);
    int r = push_decision(self, e);
    if (r < 0) {
        uncount(self, e);
        end_inflight(self, e, false);
        count(self, e);
        update_pending(self, e);
    }
    return r;
}

static int decide_assign(scheduler_t *self, task_entry_t *e, nodeinfo_t *ni, int64_t now_ms) {
    return start_decision(self, e, ni->id, SHOAL__TASK_STATE__ASSIGNED, SCHEDULER_ASSIGNED_MESSAGE,
                          "", now_ms);
}

/* Records why the task stays PENDING, only when the reason changed. */
static int decide_unplaceable(scheduler_t *self, task_entry_t *e, const char *reason,
                              int64_t now_ms) {
    if (strcmp(task_err(e->task), reason) == 0)
        return 0;
    return start_decision(self, e, NULL, task_state(e->task), NULL, reason, now_ms);
}

void scheduler_commit(scheduler_t *self, const char *task_id, int64_t new_mod_revision) {
    task_entry_t *e = zhashx_lookup(self->tasks, task_id);
    if (!e || !e->inflight)
        return;
    if (task_state(e->task) == SHOAL__TASK_STATE__ASSIGNED)
        self->placed_total++;
    else
        self->unplaced_total++;
    end_inflight(self, e, true); /* counted as decided already */
    if (new_mod_revision > e->mod_revision)
        e->mod_revision = new_mod_revision;
    update_pending(self, e);
}

void scheduler_abort(scheduler_t *self, const char *task_id, bool stale) {
    task_entry_t *e = zhashx_lookup(self->tasks, task_id);
    if (!e || !e->inflight)
        return;
    uncount(self, e);
    end_inflight(self, e, false);
    count(self, e);
    e->stale = stale;
    update_pending(self, e);
}

/* ---- candidates --------------------------------------------------------------------------- */

static void rebuild_candidates(scheduler_t *self) {
    if (!self->candidates_dirty)
        return;
    size_t cap = zhashx_size(self->nodes) + 1;
    if (self->cap_candidates < cap) {
        nodeinfo_t **c = realloc(self->candidates, cap * sizeof *c);
        if (!c) {
            /* Out of memory: schedule nowhere this tick; dirty stays set, the next one retries. */
            self->n_candidates = 0;
            return;
        }
        self->candidates = c;
        self->cap_candidates = cap;
    }
    size_t n = 0;
    for (nodeinfo_t *ni = zhashx_first(self->nodes); ni; ni = zhashx_next(self->nodes))
        if (ni->node)
            self->candidates[n++] = ni;
    self->n_candidates = n;
    self->candidates_dirty = false;
}

/* ---- a tick -------------------------------------------------------------------------------- */

static int cmp_group(const void *a, const void *b) {
    const Shoal__Task *x = (*(task_entry_t *const *)a)->task;
    const Shoal__Task *y = (*(task_entry_t *const *)b)->task;
    int c = strcmp(str_or_empty(x->service_id), str_or_empty(y->service_id));
    if (c)
        return c;
    if (x->spec_version != y->spec_version)
        return x->spec_version < y->spec_version ? -1 : 1;
    if (x->slot != y->slot)
        return x->slot < y->slot ? -1 : 1;
    return strcmp(x->meta->id, y->meta->id);
}

static int cmp_id(const void *a, const void *b) {
    return strcmp((*(task_entry_t *const *)a)->id, (*(task_entry_t *const *)b)->id);
}

static bool same_group(const Shoal__Task *a, const Shoal__Task *b) {
    return a->spec_version != 0 && a->spec_version == b->spec_version &&
           strcmp(str_or_empty(a->service_id), str_or_empty(b->service_id)) == 0;
}

static void schedule_preassigned(scheduler_t *self, task_entry_t **list, size_t n, int64_t now_ms) {
    filter_pipeline_t p = {0};
    char reason[600];
    for (size_t i = 0; i < n; i++) {
        task_entry_t *e = list[i];
        nodeinfo_t *ni = zhashx_lookup(self->nodes, e->task->node_id);
        if (!ni || !ni->node)
            continue; /* its node is not known yet: wait for it */
        if (filter_pipeline_set_task_only(&p, e->task, 1u << FILTER_RESOURCES) < 0)
            break;
        if (filter_pipeline_check(&p, ni, true) < 0)
            decide_assign(self, e, ni, now_ms);
        else
            decide_unplaceable(self, e, filter_pipeline_no_suitable_node(&p, reason, sizeof reason),
                               now_ms);
    }
    filter_pipeline_clear(&p);
}

typedef struct group_ctx {
    scheduler_t *self;
    task_entry_t **tasks;
    size_t n, next;
    int64_t now_ms;
    bool failed;
} group_ctx_t;

static int group_assign(void *arg, nodeinfo_t *ni) {
    group_ctx_t *g = arg;
    if (g->next >= g->n)
        return -ERANGE;
    if (decide_assign(g->self, g->tasks[g->next], ni, g->now_ms) < 0) {
        g->failed = true; /* out of memory: the rest waits for the next tick */
        return -ENOMEM;
    }
    g->next++;
    return 0;
}

static placement_strategy_t group_strategy(scheduler_t *self, const Shoal__Task *rep) {
    const Shoal__Placement *pl = rep->spec ? rep->spec->placement : NULL;
    placement_strategy_t s;
    if (pl && placement_strategy_parse(pl->strategy, &s) == 0)
        return s;
    return self->default_strategy;
}

static void schedule_group(scheduler_t *self, task_entry_t **group, size_t n, int64_t now_ms) {
    filter_pipeline_t p = {0};
    const Shoal__Task *rep = group[0]->task;
    if (filter_pipeline_set_task(&p, rep) < 0)
        return;
    const Shoal__Placement *pl = rep->spec ? rep->spec->placement : NULL;
    group_ctx_t ctx = {.self = self, .tasks = group, .n = n, .now_ms = now_ms};
    placement_group_t g = {
        .pipeline = &p,
        .service_id = str_or_empty(rep->service_id),
        .strategy = group_strategy(self, rep),
        .preferences = pl ? pl->preferences : NULL,
        .n_preferences = pl ? pl->n_preferences : 0,
        .n_tasks = n,
        .assign = group_assign,
        .arg = &ctx,
    };
    placement_run(self->placement, self->candidates, self->n_candidates, &g);
    if (!ctx.failed && ctx.next < n) {
        char reason[600];
        filter_pipeline_no_suitable_node(&p, reason, sizeof reason);
        for (size_t k = ctx.next; k < n; k++)
            decide_unplaceable(self, group[k], reason, now_ms);
    }
    filter_pipeline_clear(&p);
}

int scheduler_tick(scheduler_t *self, int64_t now_ms, const scheduler_decision_t **ret,
                   size_t *ret_n) {
    self->n_decisions = 0;
    self->ticks++;
    size_t n = zhashx_size(self->pending);
    task_entry_t **list = n ? malloc(n * sizeof *list) : NULL;
    if (n && !list)
        return -ENOMEM;
    /* Preassigned tasks to the front, the others to the back. */
    size_t pre = 0, un = n;
    for (task_entry_t *e = zhashx_first(self->pending); e; e = zhashx_next(self->pending)) {
        if (has_node(e->task))
            list[pre++] = e;
        else
            list[--un] = e;
    }
    rebuild_candidates(self);

    if (pre > 1)
        qsort(list, pre, sizeof *list, cmp_id);
    schedule_preassigned(self, list, pre, now_ms);

    if (n - un > 1)
        qsort(list + un, n - un, sizeof *list, cmp_group);
    for (size_t i = un; i < n;) {
        size_t j = i + 1;
        while (j < n && same_group(list[i]->task, list[j]->task))
            j++;
        schedule_group(self, list + i, j - i, now_ms);
        i = j;
    }
    free(list);
    *ret = self->decisions;
    *ret_n = self->n_decisions;
    return 0;
}

/* ---- introspection ------------------------------------------------------------------------- */

void scheduler_set_default_strategy(scheduler_t *self, placement_strategy_t strategy) {
    self->default_strategy = strategy;
}

placement_strategy_t scheduler_default_strategy(const scheduler_t *self) {
    return self->default_strategy;
}

void scheduler_set_seed(scheduler_t *self, uint64_t seed) {
    placement_seed(self->placement, seed);
}

void scheduler_get_stats(const scheduler_t *self, scheduler_stats_t *ret) {
    *ret = (scheduler_stats_t){
        .nodes = self->node_count,
        .tasks = zhashx_size(self->tasks),
        .pending = zhashx_size(self->pending),
        .in_flight = self->in_flight,
        .placed_total = self->placed_total,
        .unplaced_total = self->unplaced_total,
        .ticks = self->ticks,
    };
}

void scheduler_each_pending(scheduler_t *self, void (*fn)(void *ctx, const Shoal__Task *task),
                            void *ctx) {
    for (task_entry_t *e = zhashx_first(self->pending); e; e = zhashx_next(self->pending))
        fn(ctx, e->task);
}

const Shoal__Task *scheduler_find_task(scheduler_t *self, const char *task_id) {
    task_entry_t *e = zhashx_lookup(self->tasks, task_id);
    return e ? e->task : NULL;
}

int64_t scheduler_node_tasks(scheduler_t *self, const char *node_id) {
    nodeinfo_t *ni = zhashx_lookup(self->nodes, node_id);
    return ni ? ni->active_tasks : 0;
}
