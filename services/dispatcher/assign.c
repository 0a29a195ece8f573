/* assign — what each agent must run: per-node assignment sets, their versions, and the parked
 * dispatcher.Assignments long-polls (SwarmKit dispatcher.go Assignments, as a long-poll instead
 * of a gRPC stream).
 *
 * The daemon feeds every /tasks event of its store watch here. A task belongs to node N's set
 * while its node_id is N and its state is ASSIGNED or later; it leaves the set when it moves to
 * another node or is deleted (the agent then removes its container).
 *
 * Versions: a set's version is the store revision of the last change to it, and before any
 * change the revision the tasks were listed at. Revisions only grow, so versions only grow, and
 * they stay meaningful across dispatcher restarts and between several dispatchers: a set with
 * version V is the store's content for that node as of revision V, whoever computed it. An agent
 * holding version V therefore never misses a change, whichever dispatcher it polls next.
 *
 * Waiters: an Assignments call whose known_version equals the set's version is parked with a
 * deadline; assign_wake() hands back every waiter whose set moved or whose time ran out. The
 * daemon calls it after each watch response (whole revisions, so an agent never sees half of a
 * transaction) and from a timer.
 *
 * Not thread-safe; owned by the daemon's loop. */
#include "assign.h"

#include <czmq.h>
#include <errno.h>
#include <string.h>

#define ASSIGN_ID_MAX 64

typedef struct task_entry {
    char id[ASSIGN_ID_MAX + 1];
    char node[ASSIGN_ID_MAX + 1];
    Shoal__Task *task;
    int64_t mod_revision;
} task_entry_t;

typedef struct node_set {
    char id[ASSIGN_ID_MAX + 1];
    uint64_t version;
    zhashx_t *tasks; /* task id -> task_entry_t (borrowed from assign.tasks) */
} node_set_t;

typedef struct waiter {
    char node[ASSIGN_ID_MAX + 1];
    uint64_t known_version;
    int64_t deadline_ms;
    void *waiter;
} waiter_t;

struct assign {
    zhashx_t *tasks; /* task id -> task_entry_t (owned): only tasks that are in a set */
    zhashx_t *nodes; /* node id -> node_set_t (owned); kept when empty so versions never drop */
    zlistx_t *waiters;
    uint64_t base_version;
};

static void task_entry_destroy(void **item) {
    task_entry_t *e = *item;
    if (e) {
        shoal__task__free_unpacked(e->task, NULL);
        free(e);
    }
    *item = NULL;
}

static void node_set_destroy(void **item) {
    node_set_t *n = *item;
    if (n) {
        zhashx_destroy(&n->tasks);
        free(n);
    }
    *item = NULL;
}

static void free_item(void **item) {
    free(*item);
    *item = NULL;
}

assign_t *assign_new(void) {
    assign_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->tasks = zhashx_new();
    self->nodes = zhashx_new();
    self->waiters = zlistx_new();
    if (!self->tasks || !self->nodes || !self->waiters) {
        assign_destroy(&self);
        return NULL;
    }
    zhashx_set_destructor(self->tasks, task_entry_destroy);
    zhashx_set_destructor(self->nodes, node_set_destroy);
    zlistx_set_destructor(self->waiters, free_item);
    return self;
}

void assign_destroy(assign_t **self_p) {
    if (!self_p || !*self_p)
        return;
    assign_t *self = *self_p;
    zlistx_destroy(&self->waiters);
    zhashx_destroy(&self->nodes); /* before tasks: sets borrow the entries */
    zhashx_destroy(&self->tasks);
    free(self);
    *self_p = NULL;
}

void assign_reset(assign_t *self, int64_t base_version) {
    for (node_set_t *n = zhashx_first(self->nodes); n; n = zhashx_next(self->nodes)) {
        zhashx_purge(n->tasks);
        n->version = (uint64_t)base_version;
    }
    zhashx_purge(self->tasks);
    self->base_version = (uint64_t)base_version;
}

static node_set_t *node_set_get(assign_t *self, const char *node_id, bool create) {
    node_set_t *n = zhashx_lookup(self->nodes, node_id);
    if (n || !create)
        return n;
    n = calloc(1, sizeof *n);
    if (!n)
        return NULL;
    snprintf(n->id, sizeof n->id, "%s", node_id);
    n->version = self->base_version;
    n->tasks = zhashx_new();
    if (!n->tasks || zhashx_insert(self->nodes, n->id, n) != 0) {
        zhashx_destroy(&n->tasks);
        free(n);
        return NULL;
    }
    return n;
}

static void node_set_bump(node_set_t *n, int64_t revision) {
    /* Revisions grow; the +1 keeps the version moving even if a caller replays one. */
    uint64_t v = revision > 0 ? (uint64_t)revision : 0;
    n->version = v > n->version ? v : n->version + 1;
}

static bool task_in_a_set(const Shoal__Task *t) {
    return t->node_id && t->node_id[0] && strlen(t->node_id) <= ASSIGN_ID_MAX && t->status &&
           t->status->state >= SHOAL__TASK_STATE__ASSIGNED;
}

/* Packs `t` without the parts its agent writes (meta, status, networks). */
static uint8_t *pack_stable(const Shoal__Task *t, size_t *ret_len) {
    Shoal__Task copy = *t;
    copy.meta = NULL;
    copy.status = NULL;
    copy.n_networks = 0;
    copy.networks = NULL;
    size_t len = protobuf_c_message_get_packed_size(&copy.base);
    uint8_t *buf = malloc(len ? len : 1);
    if (buf)
        protobuf_c_message_pack(&copy.base, buf);
    *ret_len = len;
    return buf;
}

/* True when `new` differs from `old` only where its agent writes, past ASSIGNED. */
static bool change_is_agents_own(const Shoal__Task *old, const Shoal__Task *new) {
    if (!new->status || new->status->state <= SHOAL__TASK_STATE__ASSIGNED)
        return false;
    size_t la, lb;
    uint8_t *a = pack_stable(old, &la);
    uint8_t *b = pack_stable(new, &lb);
    bool same = a && b && la == lb && memcmp(a, b, la) == 0;
    free(a);
    free(b);
    return same;
}

int assign_task_put(assign_t *self, const char *task_id, Shoal__Task *task, int64_t mod_revision) {
    if (!task)
        return -EINVAL;
    if (!task_id || !*task_id || strlen(task_id) > ASSIGN_ID_MAX) {
        shoal__task__free_unpacked(task, NULL);
        return -EINVAL;
    }
    task_entry_t *old = zhashx_lookup(self->tasks, task_id);
    bool in_set = task_in_a_set(task);
    int moved = 0;

    if (old && in_set && strcmp(old->node, task->node_id) == 0) {
        /* Changed in place. */
        node_set_t *n = node_set_get(self, old->node, true);
        if (n && !change_is_agents_own(old->task, task)) {
            node_set_bump(n, mod_revision);
            moved++;
        }
        shoal__task__free_unpacked(old->task, NULL);
        old->task = task;
        old->mod_revision = mod_revision;
        return moved;
    }
    if (old) {
        /* Left its node: moved elsewhere or no longer qualifies. */
        node_set_t *n = node_set_get(self, old->node, true);
        if (n) {
            zhashx_delete(n->tasks, task_id);
            node_set_bump(n, mod_revision);
            moved++;
        }
        zhashx_delete(self->tasks, task_id);
    }
    if (!in_set) {
        shoal__task__free_unpacked(task, NULL);
        return moved;
    }
    task_entry_t *e = calloc(1, sizeof *e);
    node_set_t *n = node_set_get(self, task->node_id, true);
    if (!e || !n) {
        free(e);
        shoal__task__free_unpacked(task, NULL);
        return -ENOMEM;
    }
    snprintf(e->id, sizeof e->id, "%s", task_id);
    snprintf(e->node, sizeof e->node, "%s", task->node_id);
    e->task = task;
    e->mod_revision = mod_revision;
    if (zhashx_insert(self->tasks, e->id, e) != 0) {
        task_entry_destroy((void **)&e);
        return -ENOMEM;
    }
    zhashx_insert(n->tasks, e->id, e);
    node_set_bump(n, mod_revision);
    return moved + 1;
}

int assign_task_delete(assign_t *self, const char *task_id, int64_t revision) {
    task_entry_t *old = task_id ? zhashx_lookup(self->tasks, task_id) : NULL;
    if (!old)
        return 0;
    node_set_t *n = node_set_get(self, old->node, true);
    if (n) {
        zhashx_delete(n->tasks, task_id);
        node_set_bump(n, revision);
    }
    zhashx_delete(self->tasks, task_id);
    return 1;
}

uint64_t assign_version(const assign_t *self, const char *node_id) {
    node_set_t *n = node_id ? zhashx_lookup(self->nodes, node_id) : NULL;
    return n ? n->version : self->base_version;
}

size_t assign_count(const assign_t *self, const char *node_id) {
    node_set_t *n = node_id ? zhashx_lookup(self->nodes, node_id) : NULL;
    return n ? zhashx_size(n->tasks) : 0;
}

const Shoal__Task *assign_task(const assign_t *self, const char *task_id,
                               int64_t *ret_mod_revision) {
    task_entry_t *e = task_id ? zhashx_lookup(self->tasks, task_id) : NULL;
    if (!e)
        return NULL;
    if (ret_mod_revision)
        *ret_mod_revision = e->mod_revision;
    return e->task;
}

int assign_response(const assign_t *self, const char *node_id,
                    Shoal__Dispatcher__AssignmentsResponse *resp) {
    node_set_t *n = node_id ? zhashx_lookup(self->nodes, node_id) : NULL;
    resp->version = n ? n->version : self->base_version;
    resp->n_tasks = 0;
    resp->tasks = NULL;
    size_t count = n ? zhashx_size(n->tasks) : 0;
    if (count == 0)
        return 0;
    resp->tasks = calloc(count, sizeof *resp->tasks);
    if (!resp->tasks)
        return -ENOMEM;
    for (task_entry_t *e = zhashx_first(n->tasks); e && resp->n_tasks < count;
         e = zhashx_next(n->tasks))
        resp->tasks[resp->n_tasks++] = e->task;
    return 0;
}

void assign_response_clear(Shoal__Dispatcher__AssignmentsResponse *resp) {
    free(resp->tasks);
    resp->tasks = NULL;
    resp->n_tasks = 0;
}

int assign_wait(assign_t *self, const char *node_id, uint64_t known_version, int64_t deadline_ms,
                void *waiter) {
    if (!node_id || strlen(node_id) > ASSIGN_ID_MAX)
        return -EINVAL;
    waiter_t *w = calloc(1, sizeof *w);
    if (!w)
        return -ENOMEM;
    snprintf(w->node, sizeof w->node, "%s", node_id);
    w->known_version = known_version;
    w->deadline_ms = deadline_ms;
    w->waiter = waiter;
    if (!zlistx_add_end(self->waiters, w)) {
        free(w);
        return -ENOMEM;
    }
    return 0;
}

static size_t wake_where(assign_t *self, int64_t now_ms, bool all, assign_wake_fn *fn, void *ctx) {
    /* Detach first, then call: `fn` may park new waiters or change the sets. */
    zlistx_t *due = zlistx_new();
    if (!due)
        return 0;
    zlistx_set_destructor(due, free_item);
    for (waiter_t *w = zlistx_first(self->waiters); w; w = zlistx_next(self->waiters)) {
        bool wake =
            all || now_ms >= w->deadline_ms || assign_version(self, w->node) != w->known_version;
        if (wake) {
            zlistx_detach_cur(self->waiters);
            zlistx_add_end(due, w);
        }
    }
    size_t n = 0;
    for (waiter_t *w = zlistx_first(due); w; w = zlistx_next(due)) {
        n++;
        if (fn)
            fn(ctx, w->waiter, w->node);
    }
    zlistx_destroy(&due);
    return n;
}

size_t assign_wake(assign_t *self, int64_t now_ms, assign_wake_fn *fn, void *ctx) {
    return wake_where(self, now_ms, false, fn, ctx);
}

size_t assign_drain(assign_t *self, assign_wake_fn *fn, void *ctx) {
    return wake_where(self, 0, true, fn, ctx);
}

size_t assign_waiters(const assign_t *self) {
    return zlistx_size(self->waiters);
}
