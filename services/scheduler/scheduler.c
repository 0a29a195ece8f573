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
 *  3. Per group, the nodes that pass the filters go into a binary min-heap ordered by *spread*:
 *     fewer tasks of this service, then fewer tasks in total, then more free memory, then node
 *     id (so equal inputs give equal outputs). Each task goes to the heap's top; the node's sums
 *     grow, the node is re-checked (resources, max replicas) and sifts down, or leaves the heap
 *     when it no longer passes. Equal nodes thus take tasks round-robin: 6 tasks on 3 idle nodes
 *     land 2 per node. Cost per group: O(N) filter + heapify, then O(log N) per task.
 *  4. Tasks left when the heap is empty get "no suitable node (<why>)", where <why> counts, for
 *     every node, the first filter it failed (filter_pipeline_explain).
 *
 * Decisions are counted at once (the task's in-flight copy, ASSIGNED on its node, counts against
 * the node), so the next tick and the rest of this one see the new load. The daemon writes them
 * with one compare-and-swap per task and reports each back: commit (the copy becomes the task) or
 * abort (the copy is dropped; a failed compare marks the task stale until the watch brings its
 * newer version, so it is not retried against a revision known to be old).
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

typedef struct task_entry {
    char *id;
    Shoal__Task *task;      /* as last read from the store */
    int64_t mod_revision;   /* of that read */
    Shoal__Task *inflight;  /* decision written but not yet confirmed, or NULL */
    nodeinfo_t *counted_on; /* node the task counts on, or NULL */
    const Shoal__Task *counted_with;
    bool stale;   /* a CAS failed: wait for a newer revision */
    bool pending; /* member of scheduler.pending */
} task_entry_t;

typedef struct heap_item {
    nodeinfo_t *ni;
    int64_t service_tasks;
    int64_t total_tasks;
    int64_t free_memory;
} heap_item_t;

struct scheduler {
    zhashx_t *nodes;   /* id -> nodeinfo_t (owned) */
    zhashx_t *tasks;   /* id -> task_entry_t (owned) */
    zhashx_t *pending; /* id -> task_entry_t (borrowed) */
    uint64_t node_count;

    nodeinfo_t **candidates; /* nodeinfos with a Node, rebuilt when the node set changes */
    size_t n_candidates;
    bool candidates_dirty;

    heap_item_t *heap;
    size_t heap_cap;

    scheduler_decision_t *decisions;
    size_t n_decisions, cap_decisions;
    uint64_t in_flight;

    uint64_t placed_total, unplaced_total, ticks;
};

/* ---- protobuf helpers ---------------------------------------------------------------------- */

static Shoal__Task *task_copy(const Shoal__Task *task) {
    size_t len = protobuf_c_message_get_packed_size(&task->base);
    uint8_t small[2048];
    uint8_t *buf = len <= sizeof small ? small : malloc(len);
    if (!buf)
        return NULL;
    protobuf_c_message_pack(&task->base, buf);
    Shoal__Task *copy = shoal__task__unpack(NULL, len, buf);
    if (buf != small)
        free(buf);
    return copy;
}

/* Replaces a string field of an unpacked message (the system allocator owns its strings). */
static int set_string(char **field, const char *value) {
    char *dup = strdup(value ? value : "");
    if (!dup)
        return -ENOMEM;
    if (*field && *field != protobuf_c_empty_string)
        free(*field);
    *field = dup;
    return 0;
}

/* Fills the parts every written decision changes: status timestamp and meta version/time. */
static int task_touch(Shoal__Task *t, int64_t now_ms) {
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
    t->status->timestamp_ms = now_ms;
    t->meta->version++;
    t->meta->updated_at_ms = now_ms;
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

static const Shoal__Task *effective(const task_entry_t *e) {
    return e->inflight ? e->inflight : e->task;
}

static void task_entry_destroy(task_entry_t **self_p) {
    if (!self_p || !*self_p)
        return;
    task_entry_t *e = *self_p;
    if (e->task)
        protobuf_c_message_free_unpacked(&e->task->base, NULL);
    if (e->inflight)
        protobuf_c_message_free_unpacked(&e->inflight->base, NULL);
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
    const Shoal__Task *t = effective(e);
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
    const Shoal__Task *t = effective(e);
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

static void drop_inflight(scheduler_t *self, task_entry_t *e) {
    if (!e->inflight)
        return;
    protobuf_c_message_free_unpacked(&e->inflight->base, NULL);
    e->inflight = NULL;
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
    if (!self->nodes || !self->tasks || !self->pending) {
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
    free(self->heap);
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
    uncount(self, e);
    drop_inflight(self, e); /* a newer version beat our write: the decision is moot */
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
    drop_inflight(self, e);
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
    const Shoal__Task *t = e->inflight;
    self->decisions[self->n_decisions++] = (scheduler_decision_t){
        .task_id = e->id,
        .mod_revision = e->mod_revision,
        .node_id = task_state(t) == SHOAL__TASK_STATE__ASSIGNED ? t->node_id : NULL,
        .err = task_state(t) == SHOAL__TASK_STATE__ASSIGNED ? NULL : task_err(t),
        .task = t,
    };
    return 0;
}

/* Makes `copy` the in-flight version of e and records the decision. */
static int start_decision(scheduler_t *self, task_entry_t *e, Shoal__Task *copy) {
    uncount(self, e);
    e->inflight = copy;
    self->in_flight++;
    count(self, e);
    update_pending(self, e);
    int r = push_decision(self, e);
    if (r < 0) {
        uncount(self, e);
        drop_inflight(self, e);
        count(self, e);
        update_pending(self, e);
    }
    return r;
}

static int decide_assign(scheduler_t *self, task_entry_t *e, nodeinfo_t *ni, int64_t now_ms) {
    Shoal__Task *copy = task_copy(e->task);
    if (!copy)
        return -ENOMEM;
    if (set_string(&copy->node_id, ni->id) < 0 || task_touch(copy, now_ms) < 0 ||
        set_string(&copy->status->message, SCHEDULER_ASSIGNED_MESSAGE) < 0 ||
        set_string(&copy->status->err, "") < 0) {
        protobuf_c_message_free_unpacked(&copy->base, NULL);
        return -ENOMEM;
    }
    copy->status->state = SHOAL__TASK_STATE__ASSIGNED;
    return start_decision(self, e, copy);
}

/* Records why the task stays PENDING, only when the reason changed. */
static int decide_unplaceable(scheduler_t *self, task_entry_t *e, const char *reason,
                              int64_t now_ms) {
    if (strcmp(task_err(e->task), reason) == 0)
        return 0;
    Shoal__Task *copy = task_copy(e->task);
    if (!copy)
        return -ENOMEM;
    if (task_touch(copy, now_ms) < 0 || set_string(&copy->status->err, reason) < 0) {
        protobuf_c_message_free_unpacked(&copy->base, NULL);
        return -ENOMEM;
    }
    return start_decision(self, e, copy);
}

void scheduler_commit(scheduler_t *self, const char *task_id, int64_t new_mod_revision) {
    task_entry_t *e = zhashx_lookup(self->tasks, task_id);
    if (!e || !e->inflight)
        return;
    if (task_state(e->inflight) == SHOAL__TASK_STATE__ASSIGNED)
        self->placed_total++;
    else
        self->unplaced_total++;
    /* The in-flight copy becomes the task; it is also the object the entry is counted with. */
    protobuf_c_message_free_unpacked(&e->task->base, NULL);
    e->task = e->inflight;
    e->inflight = NULL;
    self->in_flight--;
    if (new_mod_revision > e->mod_revision)
        e->mod_revision = new_mod_revision;
    update_pending(self, e);
}

void scheduler_abort(scheduler_t *self, const char *task_id, bool stale) {
    task_entry_t *e = zhashx_lookup(self->tasks, task_id);
    if (!e || !e->inflight)
        return;
    uncount(self, e);
    drop_inflight(self, e);
    count(self, e);
    e->stale = stale;
    update_pending(self, e);
}

/* ---- the spread heap ----------------------------------------------------------------------- */

static void heap_item_refresh(heap_item_t *it, const char *service_id) {
    it->service_tasks = nodeinfo_service_tasks(it->ni, service_id);
    it->total_tasks = it->ni->active_tasks;
    it->free_memory = nodeinfo_available_memory(it->ni);
}

static bool heap_less(const heap_item_t *a, const heap_item_t *b) {
    if (a->service_tasks != b->service_tasks)
        return a->service_tasks < b->service_tasks;
    if (a->total_tasks != b->total_tasks)
        return a->total_tasks < b->total_tasks;
    if (a->free_memory != b->free_memory)
        return a->free_memory > b->free_memory;
    return strcmp(a->ni->id, b->ni->id) < 0;
}

static void heap_sift_down(heap_item_t *h, size_t n, size_t i) {
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, best = i;
        if (l < n && heap_less(&h[l], &h[best]))
            best = l;
        if (r < n && heap_less(&h[r], &h[best]))
            best = r;
        if (best == i)
            return;
        heap_item_t tmp = h[i];
        h[i] = h[best];
        h[best] = tmp;
        i = best;
    }
}

static void rebuild_candidates(scheduler_t *self) {
    if (!self->candidates_dirty)
        return;
    size_t cap = zhashx_size(self->nodes) + 1;
    if (self->heap_cap < cap) {
        heap_item_t *h = realloc(self->heap, cap * sizeof *h);
        nodeinfo_t **c = h ? realloc(self->candidates, cap * sizeof *c) : NULL;
        if (h)
            self->heap = h;
        if (!c) {
            /* Out of memory: schedule nowhere this tick; dirty stays set, the next one retries. */
            self->n_candidates = 0;
            return;
        }
        self->candidates = c;
        self->heap_cap = cap;
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

static void schedule_group(scheduler_t *self, task_entry_t **group, size_t n, int64_t now_ms) {
    filter_pipeline_t p = {0};
    const Shoal__Task *rep = group[0]->task;
    const char *service_id = str_or_empty(rep->service_id);
    if (filter_pipeline_set_task(&p, rep) < 0)
        return;

    heap_item_t *h = self->heap;
    size_t hn = 0;
    for (size_t i = 0; i < self->n_candidates && h; i++) {
        nodeinfo_t *ni = self->candidates[i];
        if (filter_pipeline_check(&p, ni, true) >= 0)
            continue;
        h[hn].ni = ni;
        heap_item_refresh(&h[hn], service_id);
        hn++;
    }
    for (size_t i = hn / 2; i-- > 0;)
        heap_sift_down(h, hn, i);

    char reason[600];
    bool explained = false;
    for (size_t k = 0; k < n; k++) {
        task_entry_t *e = group[k];
        if (hn == 0) {
            if (!explained)
                filter_pipeline_no_suitable_node(&p, reason, sizeof reason);
            explained = true;
            decide_unplaceable(self, e, reason, now_ms);
            continue;
        }
        nodeinfo_t *ni = h[0].ni;
        if (decide_assign(self, e, ni, now_ms) < 0)
            continue;
        /* The node's load grew: re-check it (resources, max replicas) and re-order. Its key
         * only gets worse, so sifting down is enough. */
        int failed = filter_pipeline_check(&p, ni, false);
        if (failed >= 0) {
            filter_pipeline_count_failure(&p, failed);
            h[0] = h[--hn];
        } else {
            heap_item_refresh(&h[0], service_id);
        }
        heap_sift_down(h, hn, 0);
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
        fn(ctx, effective(e));
}

const Shoal__Task *scheduler_find_task(scheduler_t *self, const char *task_id) {
    task_entry_t *e = zhashx_lookup(self->tasks, task_id);
    return e ? effective(e) : NULL;
}

int64_t scheduler_node_tasks(scheduler_t *self, const char *node_id) {
    nodeinfo_t *ni = zhashx_lookup(self->nodes, node_id);
    return ni ? ni->active_tasks : 0;
}
