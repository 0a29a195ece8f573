/* reconcile — what the orchestrator should write for one service (SwarmKit's replicated, global
 * and job orchestrators, restart supervisor, rolling updater and task reaper, folded into one
 * pure function per service).
 *
 * Tasks are grouped by slot (replicated and replicated-job: slot 1..N; global and global-job:
 * the node). A group may hold more than one task that should run (desired <= RUNNING) at once:
 * during a start-first update, a start-first drain, or while a node is DOWN. Its *primary* is
 * the live task running the current spec (by content: a rollback makes old tasks current again),
 * the newest one among equals; the others are *superseded*, and get desired SHUTDOWN as soon as
 * the primary counts as running (RUNNING, and healthy when its spec has a healthcheck).
 *
 * A pass works on a private copy of each task's (desired_state, restart_at_ms) so that later
 * phases see the decisions of earlier ones, then emits one action per changed task:
 *
 *   1. restart   a live task that terminated gets desired SHUTDOWN; when it is its group's
 *                primary, the restart policy (condition, max attempts in the window, delay, or
 *                when the delay is 0 the crash-loop back-off) decides whether a replacement is
 *                owed (restart_at_ms). A job task that completed with exit 0 is settled (-1).
 *                Node failure: the primary of a replicated slot on a DOWN node gets its
 *                replacement created at once, and keeps desired RUNNING until the replacement
 *                runs (so an agent that restarts slowly keeps its containers). A global task on
 *                a DOWN node is kept as it is (nothing can replace it elsewhere). A task whose
 *                node was removed is replaced stop-first (instantly: nothing runs there). Drain
 *                moves replicated tasks with the service's update order (start-first: the
 *                replacement starts first); global tasks on drained, removed or no longer
 *                matching nodes are shut down.
 *   2. recover   a node-down replacement that has not started (state < STARTING) is cancelled
 *                (desired REMOVE) when an older task of its slot is RUNNING on a READY node
 *                again: the node came back before the replacement ran.
 *   3. owed      a replacement owed by a task is created in the same slot (global: same node)
 *                once its time has come and the old task has stopped running (stop-first).
 *   4. scale     replicated: slots 1..N held (a live task, or a SHUTDOWN task with
 *                restart_at != 0); missing slots get a task in the lowest free numbers; extra
 *                slots get desired REMOVE, non-running slots first, then the highest numbers.
 *                Global: one task per READY, ACTIVE, matching node. Replicated job: slots
 *                1..total_completions, at most max_concurrent unsettled ones active at a time.
 *                Global job: one task per eligible node that existed when the iteration began.
 *   5. supersede superseded tasks of a group whose primary runs get desired SHUTDOWN.
 *   6. update    (replicated, global) slots holding a task of an older spec are replaced by the
 *                update config (the rollback config while rolling back): stop-first or
 *                start-first, at most `parallelism` slots in flight (0 = all); a slot is in
 *                flight until its new task runs or has ended (as SwarmKit's updater), plus the
 *                update delay; the monitor period only counts failures. A new task that fails
 *                before running or within monitor_ms of starting counts as a failure; above
 *                max_failure_ratio the failure action pauses, or rolls back (previous spec
 *                swapped in). COMPLETED once every slot is done and the monitor period of the
 *                last new task has passed. Jobs: a TaskSpec change starts a new iteration (the
 *                old one's live tasks are shut down).
 *   7. reap      per slot keep the task history limit of terminated tasks (oldest deleted);
 *                tasks with desired REMOVE are deleted once terminated or never assigned. A
 *                task on a DOWN or deleted node counts as terminated: no agent will report it.
 *
 * With no service (it was removed), every task gets desired REMOVE and is deleted when stopped.
 * New tasks start PENDING with desired RUNNING (global ones with node_id preassigned).
 *
 * Task start times come from manager.c's cache (first seen RUNNING); after a leader change a
 * task that already ended has none, and then counts as failed before running (SwarmKit's rule).
 *
 * Invariants: at most one action per task; a created task always has a slot (replicated) or a
 * node (global); restart_at_ms > 0 only on tasks with desired SHUTDOWN; the current settled
 * tasks of a job (restart_at -1) are never reaped (they are its progress).
 * Called by manager.c for each dirty service; tests/unit/orchestrator_reconcile.c drives it. */
#include "reconcile.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#include "config.h"
#include "constraint.h"

#define STARTING          SHOAL__TASK_STATE__STARTING
#define RUNNING           SHOAL__TASK_STATE__RUNNING
#define COMPLETE          SHOAL__TASK_STATE__COMPLETE
#define SHUTDOWN          SHOAL__TASK_STATE__SHUTDOWN
#define REMOVE            SHOAL__TASK_STATE__REMOVE
#define NO_TASK           ((size_t)-1)
#define MAX_BACKOFF_LEVEL 30

typedef struct wtask {
    Shoal__Task *t;         /* input task (borrowed) or created task (owned until emitted) */
    const recon_task_t *in; /* NULL for a task created in this pass */
    Shoal__TaskState desired;
    int64_t restart_at;
    bool deleted;
    bool clean; /* runs the service's current task spec (job: the current iteration) */
    const char *why;
    size_t group;
    size_t pos; /* index among its group's members (members are oldest first) */
} wtask_t;

typedef struct group {
    uint64_t slot;
    const char *node_id;
    size_t *members;
    size_t n, cap;
} group_t;

typedef struct spec_cmp {
    uint64_t version;
    bool equal;
} spec_cmp_t;

typedef struct update_cfg {
    uint64_t parallelism;
    int64_t delay_ms;
    int64_t monitor_ms;
    int failure_action;
    float max_failure_ratio;
    int order;
} update_cfg_t;

typedef struct recon {
    const recon_input_t *in;
    recon_result_t *out;
    const Shoal__Service *svc;
    bool global;
    bool job;
    uint64_t version;
    int64_t now;
    wtask_t *w;
    size_t nw, capw;
    group_t *g;
    size_t ng, capg, ng_sorted;
    Shoal__Node **nodes; /* sorted by id */
    size_t nn;
    spec_cmp_t specs[16]; /* spec_version -> same task spec as the service's (cache) */
    size_t nspecs;
    int err;
} recon_t;

/* ---- small helpers ------------------------------------------------------------------------ */

static const char *str(const char *s) {
    return s ? s : "";
}

bool recon_is_global(const Shoal__Service *s) {
    return s && s->spec &&
           (s->spec->mode_case == SHOAL__SERVICE_SPEC__MODE_GLOBAL ||
            s->spec->mode_case == SHOAL__SERVICE_SPEC__MODE_GLOBAL_JOB);
}

bool recon_is_replicated(const Shoal__Service *s) {
    return s && s->spec && s->spec->mode_case == SHOAL__SERVICE_SPEC__MODE_REPLICATED &&
           s->spec->replicated;
}

bool recon_is_job(const Shoal__Service *s) {
    return s && s->spec &&
           ((s->spec->mode_case == SHOAL__SERVICE_SPEC__MODE_REPLICATED_JOB &&
             s->spec->replicated_job) ||
            s->spec->mode_case == SHOAL__SERVICE_SPEC__MODE_GLOBAL_JOB);
}

void recon_job_limits(const Shoal__Service *s, uint64_t *ret_total, uint64_t *ret_max_concurrent) {
    const Shoal__ReplicatedJob *j = s && s->spec ? s->spec->replicated_job : NULL;
    uint64_t total = j ? j->total_completions : 0, maxc = j ? j->max_concurrent : 0;
    if (!total)
        total = maxc ? maxc : 1;
    if (!maxc)
        maxc = total;
    *ret_total = total;
    *ret_max_concurrent = maxc;
}

const char *recon_task_state_name(int state) {
    const ProtobufCEnumValue *v =
        protobuf_c_enum_descriptor_get_value(&shoal__task_state__descriptor, state);
    return v ? v->name : "UNKNOWN";
}

ProtobufCMessage *recon_copy_message(const ProtobufCMessage *msg) {
    if (!msg)
        return NULL;
    size_t len = protobuf_c_message_get_packed_size(msg);
    uint8_t stackbuf[4096];
    uint8_t *buf = len <= sizeof stackbuf ? stackbuf : malloc(len);
    if (!buf)
        return NULL;
    protobuf_c_message_pack(msg, buf);
    ProtobufCMessage *copy = protobuf_c_message_unpack(msg->descriptor, NULL, len, buf);
    if (buf != stackbuf)
        free(buf);
    return copy;
}

bool recon_message_equal(const ProtobufCMessage *a, const ProtobufCMessage *b) {
    if (!a || !b)
        return a == b;
    size_t la = protobuf_c_message_get_packed_size(a);
    size_t lb = protobuf_c_message_get_packed_size(b);
    if (la != lb)
        return false;
    if (la == 0)
        return true;
    uint8_t *ba = malloc(la), *bb = malloc(lb);
    bool same = false;
    if (ba && bb) {
        protobuf_c_message_pack(a, ba);
        protobuf_c_message_pack(b, bb);
        same = !memcmp(ba, bb, la);
    }
    free(ba);
    free(bb);
    return same;
}

static int64_t created_at(const Shoal__Task *t) {
    return t->meta ? t->meta->created_at_ms : 0;
}

static const char *task_id(const Shoal__Task *t) {
    return t->meta ? str(t->meta->id) : "";
}

static Shoal__TaskState task_state(const Shoal__Task *t) {
    return t->status ? t->status->state : SHOAL__TASK_STATE__NEW;
}

static int64_t status_time(const Shoal__Task *t) {
    return t->status ? t->status->timestamp_ms : 0;
}

static int exit_code(const Shoal__Task *t) {
    return t->status && t->status->container ? t->status->container->exit_code : 0;
}

static bool task_succeeded(const Shoal__Task *t) {
    return task_state(t) == COMPLETE && exit_code(t) == 0;
}

bool recon_task_has_healthcheck(const Shoal__Task *t) {
    const Shoal__HealthConfig *h =
        t && t->spec && t->spec->container ? t->spec->container->healthcheck : NULL;
    return h && h->n_test > 0 && h->test[0] && strcmp(h->test[0], "NONE") != 0;
}

bool recon_task_running(const Shoal__Task *t) {
    return task_state(t) == RUNNING && (!recon_task_has_healthcheck(t) || t->status->healthy);
}

static const char *label_value(const Shoal__Annotations *a, const char *key) {
    if (!a)
        return NULL;
    for (size_t i = 0; i < a->n_labels; i++)
        if (a->labels[i] && a->labels[i]->key && !strcmp(a->labels[i]->key, key))
            return str(a->labels[i]->value);
    return NULL;
}

static uint64_t label_u64(const Shoal__Task *t, const char *key) {
    const char *v = label_value(t->annotations, key);
    return v ? strtoull(v, NULL, 10) : 0;
}

static bool w_live(const wtask_t *x) {
    return !x->deleted && x->desired <= RUNNING;
}

/* Holds its slot: should run, or was stopped by us with a replacement owed / settled. */
static bool w_holds(const wtask_t *x) {
    return !x->deleted && (x->desired <= RUNNING ||
                           (x->desired > RUNNING && x->desired < REMOVE && x->restart_at != 0));
}

static bool w_owes(const wtask_t *x) {
    return !x->deleted && x->desired > RUNNING && x->desired < REMOVE && x->restart_at > 0;
}

static void w_set(wtask_t *x, Shoal__TaskState desired, int64_t restart_at, const char *why) {
    if (x->desired == desired && x->restart_at == restart_at)
        return;
    x->desired = desired;
    x->restart_at = restart_at;
    x->why = why;
}

/* When the task started running: first seen RUNNING, or its RUNNING timestamp; 0 = unknown. */
static int64_t started_at(const wtask_t *x) {
    if (x->in && x->in->running_since_ms > 0)
        return x->in->running_since_ms;
    return task_state(x->t) == RUNNING ? status_time(x->t) : 0;
}

static void wake_at(recon_t *r, int64_t when) {
    if (when > 0 && (r->out->wake_at_ms == 0 || when < r->out->wake_at_ms))
        r->out->wake_at_ms = when;
}

static bool grow(recon_t *r, void **arr, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap)
        return true;
    size_t ncap = *cap ? *cap * 2 : 16;
    while (ncap < need)
        ncap *= 2;
    void *p = realloc(*arr, ncap * elem);
    if (!p) {
        r->err = -ENOMEM;
        return false;
    }
    *arr = p;
    *cap = ncap;
    return true;
}

/* Whether task t runs the service's current spec: same spec_version, or (not for jobs, whose
 * iterations are versions) a task spec with the same content, so a rollback does not replace
 * tasks that never left the old spec. Compared once per spec_version. */
static bool spec_clean(recon_t *r, const Shoal__Task *t) {
    if (!r->svc || !r->svc->spec)
        return false;
    if (t->spec_version == r->version)
        return true;
    if (r->job)
        return false;
    for (size_t i = 0; i < r->nspecs; i++)
        if (r->specs[i].version == t->spec_version)
            return r->specs[i].equal;
    bool equal = recon_message_equal((const ProtobufCMessage *)t->spec,
                                     (const ProtobufCMessage *)r->svc->spec->task);
    if (r->nspecs < sizeof r->specs / sizeof r->specs[0])
        r->specs[r->nspecs++] = (spec_cmp_t){.version = t->spec_version, .equal = equal};
    return equal;
}

/* ---- service state ------------------------------------------------------------------------ */

static Shoal__UpdateStatus__State update_state(const Shoal__Service *s) {
    return s->update_status ? s->update_status->state : SHOAL__UPDATE_STATUS__STATE__UNKNOWN;
}

static bool rolling_back(const Shoal__Service *s) {
    return update_state(s) == SHOAL__UPDATE_STATUS__STATE__ROLLBACK_STARTED;
}

static update_cfg_t update_config(const Shoal__Service *s) {
    const Shoal__UpdateConfig *u = rolling_back(s) ? s->spec->rollback : s->spec->update;
    update_cfg_t c = {.parallelism = 1, .monitor_ms = RECON_DEFAULT_MONITOR_MS}; /* SwarmKit's */
    if (u) {
        c.parallelism = u->parallelism;
        c.delay_ms = u->delay_ms > 0 ? u->delay_ms : 0;
        c.monitor_ms = u->monitor_ms > 0 ? u->monitor_ms : 0;
        c.failure_action = u->failure_action;
        c.max_failure_ratio = u->max_failure_ratio;
        c.order = u->order;
    }
    return c;
}

static bool start_first(const recon_t *r) {
    return update_config(r->svc).order == SHOAL__UPDATE_CONFIG__ORDER__START_FIRST;
}

/* ---- nodes -------------------------------------------------------------------------------- */

static int node_cmp(const void *a, const void *b) {
    const Shoal__Node *x = *(Shoal__Node *const *)a, *y = *(Shoal__Node *const *)b;
    return strcmp(x->meta ? str(x->meta->id) : "", y->meta ? str(y->meta->id) : "");
}

static const Shoal__Node *node_find(const recon_t *r, const char *id) {
    if (!id || !id[0] || !r->nn)
        return NULL;
    size_t lo = 0, hi = r->nn;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        const Shoal__Node *n = r->nodes[mid];
        int c = strcmp(id, n->meta ? str(n->meta->id) : "");
        if (!c)
            return n;
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

/* Down, or gone: no agent there will report. */
static bool node_down(const Shoal__Node *n) {
    return !n || (n->status && n->status->state == SHOAL__NODE_STATUS__STATE__DOWN);
}

static int node_availability(const Shoal__Node *n) {
    return n && n->spec ? n->spec->availability : SHOAL__NODE_SPEC__AVAILABILITY__ACTIVE;
}

static bool node_ready(const Shoal__Node *n) {
    return n && n->status && n->status->state == SHOAL__NODE_STATUS__STATE__READY;
}

static bool service_constraints_match(const recon_t *r, const Shoal__Node *n) {
    const Shoal__TaskSpec *ts = r->svc->spec->task;
    if (!ts || !ts->placement)
        return true;
    return constraint_match_all(ts->placement->constraints, ts->placement->n_constraints, n);
}

/* Global: may this node get a new task of the service? */
static bool node_eligible(const recon_t *r, const Shoal__Node *n) {
    return node_ready(n) && node_availability(n) == SHOAL__NODE_SPEC__AVAILABILITY__ACTIVE &&
           service_constraints_match(r, n);
}

/* Global: may a task of the service stay there? (PAUSE keeps; DOWN and not-yet-READY keep.) */
static bool node_keeps(const recon_t *r, const Shoal__Node *n) {
    return n && node_availability(n) != SHOAL__NODE_SPEC__AVAILABILITY__DRAIN &&
           service_constraints_match(r, n);
}

/* The task no longer runs anywhere: terminated, never started, or its node is gone/down. */
static bool w_stopped(const recon_t *r, const wtask_t *x) {
    Shoal__TaskState s = task_state(x->t);
    if (s > RUNNING || s < SHOAL__TASK_STATE__ASSIGNED)
        return true;
    return node_down(node_find(r, x->t->node_id));
}

/* Counts as running for supersession and updates: RUNNING (healthy if checked) on a live node. */
static bool w_running(const recon_t *r, const wtask_t *x) {
    return recon_task_running(x->t) && !node_down(node_find(r, x->t->node_id));
}

/* ---- groups (slots) ----------------------------------------------------------------------- */

static int group_key_cmp(const recon_t *r, uint64_t slot_a, const char *node_a, uint64_t slot_b,
                         const char *node_b) {
    if (r->global)
        return strcmp(str(node_a), str(node_b));
    return slot_a < slot_b ? -1 : slot_a > slot_b;
}

static int windex_cmp(const void *a, const void *b, void *arg) {
    const recon_t *r = arg;
    const wtask_t *x = &r->w[*(const size_t *)a], *y = &r->w[*(const size_t *)b];
    int c = group_key_cmp(r, x->t->slot, x->t->node_id, y->t->slot, y->t->node_id);
    if (c)
        return c;
    int64_t ca = created_at(x->t), cb = created_at(y->t);
    if (ca != cb)
        return ca < cb ? -1 : 1;
    return strcmp(task_id(x->t), task_id(y->t));
}

static bool group_add_member(recon_t *r, size_t gi, size_t wi) {
    group_t *g = &r->g[gi];
    if (!grow(r, (void **)&g->members, &g->cap, g->n + 1, sizeof(size_t)))
        return false;
    r->w[wi].pos = g->n;
    g->members[g->n++] = wi;
    r->w[wi].group = gi;
    return true;
}

static ssize_t group_new(recon_t *r, uint64_t slot, const char *node_id) {
    if (!grow(r, (void **)&r->g, &r->capg, r->ng + 1, sizeof(group_t)))
        return -1;
    r->g[r->ng] = (group_t){.slot = slot, .node_id = node_id};
    return (ssize_t)r->ng++;
}

/* Finds the group of a key among the sorted ones, then the appended ones. -1 when absent. */
static ssize_t group_find(const recon_t *r, uint64_t slot, const char *node_id) {
    size_t lo = 0, hi = r->ng_sorted;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = group_key_cmp(r, slot, node_id, r->g[mid].slot, r->g[mid].node_id);
        if (!c)
            return (ssize_t)mid;
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    for (size_t i = r->ng_sorted; i < r->ng; i++)
        if (!group_key_cmp(r, slot, node_id, r->g[i].slot, r->g[i].node_id))
            return (ssize_t)i;
    return -1;
}

static bool build_groups(recon_t *r) {
    size_t *idx = malloc((r->nw ? r->nw : 1) * sizeof *idx);
    if (!idx) {
        r->err = -ENOMEM;
        return false;
    }
    for (size_t i = 0; i < r->nw; i++)
        idx[i] = i;
    qsort_r(idx, r->nw, sizeof *idx, windex_cmp, r);
    for (size_t k = 0; k < r->nw; k++) {
        const Shoal__Task *t = r->w[idx[k]].t;
        if (!r->ng ||
            group_key_cmp(r, t->slot, t->node_id, r->g[r->ng - 1].slot, r->g[r->ng - 1].node_id)) {
            if (group_new(r, t->slot, t->node_id) < 0)
                break;
        }
        if (!group_add_member(r, r->ng - 1, idx[k]))
            break;
    }
    free(idx);
    r->ng_sorted = r->ng;
    return !r->err;
}

/* Whether a is preferred over b as its group's primary: current spec first, then newest. */
static bool w_preferred(const wtask_t *a, const wtask_t *b) {
    if (a->clean != b->clean)
        return a->clean;
    return a->pos > b->pos;
}

/* The group's primary: its preferred live task, or NO_TASK. */
static size_t group_primary(const recon_t *r, const group_t *g) {
    size_t best = NO_TASK;
    for (size_t i = 0; i < g->n; i++) {
        size_t wi = g->members[i];
        if (w_live(&r->w[wi]) && (best == NO_TASK || w_preferred(&r->w[wi], &r->w[best])))
            best = wi;
    }
    return best;
}

/* A live task of the group preferred over x (x's replacement already exists). */
static bool group_has_live_over(const recon_t *r, const group_t *g, const wtask_t *x) {
    for (size_t i = 0; i < g->n; i++) {
        const wtask_t *y = &r->w[g->members[i]];
        if (y != x && w_live(y) && w_preferred(y, x))
            return true;
    }
    return false;
}

static bool group_held(const recon_t *r, const group_t *g) {
    for (size_t i = 0; i < g->n; i++)
        if (w_holds(&r->w[g->members[i]]))
            return true;
    return false;
}

/* ---- creating tasks ----------------------------------------------------------------------- */

static void default_new_id(void *ctx, char *buf) {
    (void)ctx;
    id_random(buf);
}

typedef struct new_task {
    uint64_t attempt;               /* restarts of the slot under this spec that led to it */
    uint64_t backoff;               /* crash-loop back-off level */
    const char *node_down_replaces; /* id of the task on a DOWN node it stands in for */
} new_task_t;

/* Adds a new task of the current spec in (slot, node_id); returns its index or -1. */
static ssize_t create_task(recon_t *r, uint64_t slot, const char *node_id, const new_task_t *nt,
                           const char *why) {
    const Shoal__Service *s = r->svc;
    char id[64] = "", name[192], attempt_text[24], backoff_text[24];
    (r->in->new_id ? r->in->new_id : default_new_id)(r->in->new_id_ctx, id);
    const char *svc_name = s->spec->annotations ? str(s->spec->annotations->name) : "";
    if (r->global)
        snprintf(name, sizeof name, "%s.%s", svc_name, str(node_id));
    else
        snprintf(name, sizeof name, "%s.%" PRIu64, svc_name, slot);

    Shoal__Meta meta = SHOAL__META__INIT;
    meta.id = id;
    meta.version = 1;
    meta.created_at_ms = r->now;
    meta.updated_at_ms = r->now;
    Shoal__Label label[3] = {SHOAL__LABEL__INIT, SHOAL__LABEL__INIT, SHOAL__LABEL__INIT};
    Shoal__Label *labels[3];
    Shoal__Annotations ann = SHOAL__ANNOTATIONS__INIT;
    ann.name = name;
    ann.labels = labels;
    if (nt && nt->attempt > 0) {
        snprintf(attempt_text, sizeof attempt_text, "%" PRIu64, nt->attempt);
        label[ann.n_labels].key = RECON_LABEL_ATTEMPT;
        label[ann.n_labels].value = attempt_text;
        labels[ann.n_labels] = &label[ann.n_labels];
        ann.n_labels++;
    }
    if (nt && nt->backoff > 0) {
        snprintf(backoff_text, sizeof backoff_text, "%" PRIu64, nt->backoff);
        label[ann.n_labels].key = RECON_LABEL_BACKOFF;
        label[ann.n_labels].value = backoff_text;
        labels[ann.n_labels] = &label[ann.n_labels];
        ann.n_labels++;
    }
    if (nt && nt->node_down_replaces) {
        label[ann.n_labels].key = RECON_LABEL_NODE_DOWN;
        label[ann.n_labels].value = (char *)nt->node_down_replaces;
        labels[ann.n_labels] = &label[ann.n_labels];
        ann.n_labels++;
    }
    Shoal__TaskStatus status = SHOAL__TASK_STATUS__INIT;
    status.timestamp_ms = r->now;
    status.state = SHOAL__TASK_STATE__PENDING;
    status.message = "created";
    Shoal__Task t = SHOAL__TASK__INIT;
    t.meta = &meta;
    t.service_id = s->meta ? s->meta->id : "";
    t.service_name = (char *)svc_name;
    t.slot = r->global ? 0 : slot;
    t.node_id = r->global ? (char *)str(node_id) : "";
    t.spec = s->spec->task;
    t.spec_version = r->version;
    t.annotations = &ann;
    t.desired_state = RUNNING;
    t.status = &status;
    t.endpoint = s->endpoint;

    Shoal__Task *copy = (Shoal__Task *)recon_copy_message(&t.base);
    if (!copy || !grow(r, (void **)&r->w, &r->capw, r->nw + 1, sizeof(wtask_t))) {
        if (copy)
            protobuf_c_message_free_unpacked(&copy->base, NULL);
        r->err = -ENOMEM;
        return -1;
    }
    size_t wi = r->nw++;
    r->w[wi] = (wtask_t){.t = copy, .desired = RUNNING, .clean = true, .why = why};
    ssize_t gi = group_find(r, copy->slot, copy->node_id);
    if (gi < 0)
        gi = group_new(r, copy->slot, copy->node_id);
    if (gi < 0 || !group_add_member(r, (size_t)gi, wi))
        return -1;
    r->out->tasks_created++;
    return (ssize_t)wi;
}

/* ---- phase 1: restart --------------------------------------------------------------------- */

static const Shoal__RestartPolicy *restart_policy(const Shoal__Task *t) {
    return t->spec ? t->spec->restart : NULL;
}

/* Restarts of this slot under the current spec inside the policy's window. */
static uint64_t restarts_in_window(const recon_t *r, const group_t *g, int64_t since) {
    uint64_t n = 0;
    for (size_t i = 0; i < g->n; i++) {
        const wtask_t *y = &r->w[g->members[i]];
        if (y->clean && label_u64(y->t, RECON_LABEL_ATTEMPT) > 0 && created_at(y->t) >= since)
            n++;
    }
    return n;
}

static bool restart_allowed(const recon_t *r, const wtask_t *x, bool node_failed) {
    const Shoal__Task *t = x->t;
    const Shoal__RestartPolicy *p = restart_policy(t);
    int cond = p ? p->condition : SHOAL__RESTART_POLICY__CONDITION__ANY;
    bool success = task_succeeded(t);
    if (cond == SHOAL__RESTART_POLICY__CONDITION__NONE)
        return false;
    if ((cond == SHOAL__RESTART_POLICY__CONDITION__ON_FAILURE || r->job) && success && !node_failed)
        return false;
    if (!p || p->max_attempts == 0)
        return true;
    if (p->window_ms > 0) {
        int64_t at = status_time(t) ? status_time(t) : r->now;
        return restarts_in_window(r, &r->g[x->group], at - p->window_ms) < p->max_attempts;
    }
    uint64_t before = x->clean ? label_u64(t, RECON_LABEL_ATTEMPT) : 0;
    return before < p->max_attempts;
}

/* The back-off level of x's replacement: one more than x's when x failed on its own before
 * running RECON_BACKOFF_RESET_MS (counted from its creation when its start was not seen). */
static uint64_t backoff_level_after(const wtask_t *x) {
    Shoal__TaskState s = task_state(x->t);
    if (!x->clean || s <= RUNNING || s == SHUTDOWN)
        return 0; /* not a crash: stopped by us, or its node failed */
    int64_t start = started_at(x);
    if (!start)
        start = created_at(x->t);
    if (status_time(x->t) - start >= RECON_BACKOFF_RESET_MS)
        return 0;
    uint64_t level = label_u64(x->t, RECON_LABEL_BACKOFF) + 1;
    return level > MAX_BACKOFF_LEVEL ? MAX_BACKOFF_LEVEL : level;
}

static int64_t backoff_delay(uint64_t level) {
    if (level <= 1)
        return 0;
    int64_t d = RECON_BACKOFF_STEP_MS;
    for (uint64_t i = 2; i < level && d < RECON_BACKOFF_MAX_MS; i++)
        d *= 2;
    return d < RECON_BACKOFF_MAX_MS ? d : RECON_BACKOFF_MAX_MS;
}

static void restart_task(recon_t *r, wtask_t *x, bool node_failed) {
    if (!restart_allowed(r, x, node_failed)) {
        w_set(x, SHUTDOWN, RECON_RESTART_DECLINED, "restart-declined");
        return;
    }
    const Shoal__RestartPolicy *p = restart_policy(x->t);
    int64_t delay = p && p->delay_ms > 0 ? p->delay_ms
                    : node_failed        ? 0
                                         : backoff_delay(backoff_level_after(x));
    w_set(x, SHUTDOWN, r->now + delay, "restart");
    r->out->restarts++;
}

/* A replicated primary on a DOWN node: its replacement starts now, elsewhere; x keeps desired
 * RUNNING until the replacement runs (phase supersede) or its node comes back (phase recover). */
static void replace_from_down_node(recon_t *r, size_t xi) {
    wtask_t *x = &r->w[xi];
    if (!restart_allowed(r, x, true))
        return; /* nothing replaces it: leave it be, its node may come back */
    char id[128];
    snprintf(id, sizeof id, "%s", task_id(x->t));
    new_task_t nt = {.attempt = (x->clean ? label_u64(x->t, RECON_LABEL_ATTEMPT) : 0) + 1,
                     .node_down_replaces = id};
    if (create_task(r, x->t->slot, NULL, &nt, "node-down") >= 0)
        r->out->restarts++;
}

/* A replicated primary on a drained node moves with the update order. */
static void move_from_drained_node(recon_t *r, size_t xi) {
    if (start_first(r))
        create_task(r, r->w[xi].t->slot, NULL, NULL, "drain");
    else /* an operator's move, not a failure: always, at once, uncounted */
        w_set(&r->w[xi], SHUTDOWN, r->now, "drain");
}

static void restart_one(recon_t *r, size_t xi, size_t primary) {
    wtask_t *x = &r->w[xi];
    bool is_primary = xi == primary;
    const Shoal__Node *n = node_find(r, x->t->node_id);
    bool assigned = x->t->node_id && x->t->node_id[0];
    bool missing = assigned && !n;
    bool down = assigned && node_down(n);

    if (r->job && !x->clean) { /* a task of the job's previous iteration */
        w_set(x, SHUTDOWN, 0, "job-iteration");
        return;
    }
    if (task_state(x->t) > RUNNING) {
        if (r->job && task_succeeded(x->t)) /* settled: it is the job's progress, kept */
            w_set(x, SHUTDOWN, RECON_RESTART_DECLINED, "job-completed");
        else if (!is_primary)
            w_set(x, SHUTDOWN, 0, "superseded");
        else if (r->global && (missing || !node_keeps(r, n)))
            w_set(x, SHUTDOWN, 0, "node-ineligible");
        else if (r->global && node_availability(n) == SHOAL__NODE_SPEC__AVAILABILITY__PAUSE)
            w_set(x, SHUTDOWN, 0, "node-paused");
        else
            restart_task(r, x, false);
        return;
    }
    if (r->global) {
        if (missing || (!down && !node_keeps(r, n)))
            w_set(x, SHUTDOWN, 0, "node-ineligible");
        return; /* DOWN: kept as it is */
    }
    if (missing) {
        if (is_primary)
            restart_task(r, x, true); /* stop-first, instantly: nothing runs there */
        else
            w_set(x, SHUTDOWN, 0, "node-removed");
    } else if (down) {
        if (is_primary)
            replace_from_down_node(r, xi);
    } else if (assigned && node_availability(n) == SHOAL__NODE_SPEC__AVAILABILITY__DRAIN) {
        if (is_primary)
            move_from_drained_node(r, xi);
    }
}

static void phase_restart(recon_t *r) {
    size_t n = r->nw; /* tasks created here are handled by later phases */
    size_t *primary = malloc((r->ng ? r->ng : 1) * sizeof *primary);
    if (!primary) {
        r->err = -ENOMEM;
        return;
    }
    for (size_t gi = 0; gi < r->ng; gi++)
        primary[gi] = group_primary(r, &r->g[gi]);
    for (size_t i = 0; i < n && !r->err; i++) {
        wtask_t *x = &r->w[i];
        if (!w_live(x) || !x->in)
            continue;
        if (!r->global && x->t->slot == 0) {
            w_set(x, REMOVE, 0, "no-slot");
            continue;
        }
        restart_one(r, i, primary[x->group]);
    }
    free(primary);
}

/* ---- phase 2: a DOWN node came back before its tasks' replacements started ------------------ */

static void phase_recover(recon_t *r) {
    for (size_t gi = 0; gi < r->ng; gi++) {
        group_t *g = &r->g[gi];
        for (;;) {
            size_t pi = group_primary(r, g);
            if (pi == NO_TASK)
                break;
            wtask_t *p = &r->w[pi];
            const char *replaced = label_value(p->t->annotations, RECON_LABEL_NODE_DOWN);
            if (!p->in || !replaced || task_state(p->t) >= STARTING)
                break;
            bool back = false; /* the task it replaces runs on a READY node again */
            for (size_t i = 0; i < g->n && !back; i++) {
                const wtask_t *o = &r->w[g->members[i]];
                const Shoal__Node *n = node_find(r, o->t->node_id);
                back = o != p && !strcmp(task_id(o->t), replaced) && w_live(o) &&
                       task_state(o->t) == RUNNING && node_ready(n) &&
                       node_availability(n) != SHOAL__NODE_SPEC__AVAILABILITY__DRAIN;
            }
            if (!back)
                break;
            w_set(p, REMOVE, 0, "node-recovered");
        }
    }
}

/* ---- phase 3: owed replacements ----------------------------------------------------------- */

/* Creates the replacement owed by x when its time has come and x has stopped. */
static void fulfil(recon_t *r, size_t xi) {
    wtask_t *x = &r->w[xi];
    group_t *g = &r->g[x->group];
    if (group_has_live_over(r, g, x)) { /* already replaced (start-first, or an earlier pass) */
        w_set(x, x->desired, 0, x->why ? x->why : "replaced");
        return;
    }
    if (!r->global && x->t->slot == 0) { /* damaged: a replicated task needs a slot */
        w_set(x, x->desired, 0, "no-slot");
        return;
    }
    if (r->now < x->restart_at) {
        wake_at(r, x->restart_at);
        return;
    }
    if (!w_stopped(r, x))
        return; /* stop-first: its next status event brings us back */
    if (r->global && !node_eligible(r, node_find(r, x->t->node_id))) {
        w_set(x, x->desired, 0, "node-ineligible");
        return;
    }
    new_task_t nt = {.attempt = x->clean ? label_u64(x->t, RECON_LABEL_ATTEMPT) + 1 : 0,
                     .backoff = backoff_level_after(x)};
    const char *why = x->clean ? "restart" : "update";
    if (create_task(r, x->t->slot, x->t->node_id, &nt, why) < 0)
        return;
    x = &r->w[xi]; /* create_task may move the array */
    w_set(x, x->desired, 0, x->why ? x->why : why);
}

static void phase_owed(recon_t *r) {
    size_t n = r->nw; /* tasks created here never owe anything */
    for (size_t i = 0; i < n && !r->err; i++)
        if (w_owes(&r->w[i]))
            fulfil(r, i);
}

/* ---- phase 4: scale ----------------------------------------------------------------------- */

static bool group_running(const recon_t *r, const group_t *g) {
    for (size_t i = 0; i < g->n; i++) {
        const wtask_t *x = &r->w[g->members[i]];
        if (w_live(x) && w_running(r, x))
            return true;
    }
    return false;
}

static void group_remove(recon_t *r, group_t *g, const char *why) {
    for (size_t i = 0; i < g->n; i++) {
        wtask_t *x = &r->w[g->members[i]];
        if (!x->deleted && x->desired < REMOVE)
            w_set(x, REMOVE, 0, why);
    }
}

/* Removal order for scale-down: non-running slots first, then the highest slot numbers. */
static int extra_cmp(const void *a, const void *b, void *arg) {
    const recon_t *r = arg;
    const group_t *x = &r->g[*(const size_t *)a], *y = &r->g[*(const size_t *)b];
    bool rx = group_running(r, x), ry = group_running(r, y);
    if (rx != ry)
        return rx ? 1 : -1;
    return x->slot > y->slot ? -1 : x->slot < y->slot;
}

static int u64_cmp(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static void phase_scale_replicated(recon_t *r) {
    uint64_t want = r->svc->spec->replicated->replicas;
    size_t *held = malloc((r->ng ? r->ng : 1) * sizeof *held);
    uint64_t *slots = malloc((r->ng ? r->ng : 1) * sizeof *slots);
    if (!held || !slots) {
        r->err = -ENOMEM;
        goto out;
    }
    size_t nheld = 0;
    for (size_t i = 0; i < r->ng; i++)
        if (r->g[i].slot > 0 && group_held(r, &r->g[i]))
            held[nheld++] = i;
    if (nheld > want) {
        qsort_r(held, nheld, sizeof *held, extra_cmp, r);
        for (size_t i = 0; i < nheld - want; i++)
            group_remove(r, &r->g[held[i]], "scale-down");
    } else if (nheld < want) {
        for (size_t i = 0; i < nheld; i++)
            slots[i] = r->g[held[i]].slot;
        qsort(slots, nheld, sizeof *slots, u64_cmp);
        uint64_t missing = want - nheld, slot = 0;
        size_t k = 0;
        while (missing > 0 && !r->err) {
            slot++;
            while (k < nheld && slots[k] < slot)
                k++;
            if (k < nheld && slots[k] == slot)
                continue;
            if (create_task(r, slot, NULL, NULL, "scale-up") < 0)
                break;
            missing--;
        }
    }
out:
    free(held);
    free(slots);
}

static void phase_scale_global(recon_t *r) {
    for (size_t i = 0; i < r->nn && !r->err; i++) {
        const Shoal__Node *n = r->nodes[i];
        if (!n->meta || !n->meta->id || !n->meta->id[0] || !node_eligible(r, n))
            continue;
        ssize_t gi = group_find(r, 0, n->meta->id);
        if (gi >= 0 && group_held(r, &r->g[gi]))
            continue;
        create_task(r, 0, n->meta->id, NULL, "node-added");
    }
}

/* A job slot: settled (completed, or its restarts declined), active, or free. */
enum job_slot { JOB_FREE, JOB_ACTIVE, JOB_SETTLED, JOB_DONE };

static enum job_slot job_slot_state(const recon_t *r, const group_t *g) {
    enum job_slot st = JOB_FREE;
    for (size_t i = 0; i < g->n; i++) {
        const wtask_t *x = &r->w[g->members[i]];
        if (x->deleted || !x->clean)
            continue;
        if (task_succeeded(x->t) && x->desired < REMOVE)
            return JOB_DONE;
        if (w_live(x) || w_owes(x))
            st = JOB_ACTIVE;
        else if (w_holds(x) && st == JOB_FREE)
            st = JOB_SETTLED;
    }
    return st;
}

/* Replicated job: every slot 1..total completes once, at most max_concurrent run at a time. */
static void phase_scale_replicated_job(recon_t *r) {
    uint64_t total, maxc, active = 0;
    recon_job_limits(r->svc, &total, &maxc);
    for (size_t gi = 0; gi < r->ng; gi++) {
        group_t *g = &r->g[gi];
        enum job_slot st = job_slot_state(r, g);
        if (g->slot > total || g->slot == 0) {
            if (st == JOB_ACTIVE)
                for (size_t i = 0; i < g->n; i++) {
                    wtask_t *x = &r->w[g->members[i]];
                    if (w_live(x) || w_owes(x))
                        w_set(x, REMOVE, 0, "scale-down");
                }
        } else if (st == JOB_ACTIVE) {
            active++;
        } else if (st == JOB_DONE) { /* another task of the slot completed: the rest stop */
            for (size_t i = 0; i < g->n; i++) {
                wtask_t *x = &r->w[g->members[i]];
                if (w_live(x))
                    w_set(x, SHUTDOWN, 0, "job-slot-done");
                else if (w_owes(x))
                    w_set(x, x->desired, 0, "job-slot-done");
            }
        }
    }
    for (uint64_t slot = 1; slot <= total && active < maxc && !r->err; slot++) {
        ssize_t gi = group_find(r, slot, NULL);
        if (gi >= 0 && job_slot_state(r, &r->g[gi]) != JOB_FREE)
            continue;
        if (create_task(r, slot, NULL, NULL, "job") < 0)
            break;
        active++;
    }
}

/* When the job's current iteration began: the update that started it, or the service's birth. */
static int64_t job_iteration_start(const Shoal__Service *s) {
    if (s->spec_version > 1 && s->update_status && s->update_status->started_at_ms > 0)
        return s->update_status->started_at_ms;
    return s->meta ? s->meta->created_at_ms : 0;
}

/* Global job: one run per eligible node that existed when the iteration began (SwarmKit). */
static void phase_scale_global_job(recon_t *r) {
    int64_t since = job_iteration_start(r->svc);
    for (size_t i = 0; i < r->nn && !r->err; i++) {
        const Shoal__Node *n = r->nodes[i];
        if (!n->meta || !n->meta->id || !n->meta->id[0] || !node_eligible(r, n))
            continue;
        if (since > 0 && n->meta->created_at_ms > since)
            continue;
        ssize_t gi = group_find(r, 0, n->meta->id);
        if (gi >= 0 && job_slot_state(r, &r->g[gi]) != JOB_FREE)
            continue;
        create_task(r, 0, n->meta->id, NULL, "job");
    }
}

/* ---- phase 5: supersede ------------------------------------------------------------------- */

static void phase_supersede(recon_t *r) {
    for (size_t gi = 0; gi < r->ng; gi++) {
        group_t *g = &r->g[gi];
        size_t pi = group_primary(r, g);
        if (pi == NO_TASK || !r->w[pi].in || !w_running(r, &r->w[pi]))
            continue;
        for (size_t i = 0; i < g->n; i++) {
            wtask_t *x = &r->w[g->members[i]];
            if (g->members[i] != pi && w_live(x))
                w_set(x, SHUTDOWN, 0, "superseded");
        }
    }
}

/* ---- phase 6: rolling update -------------------------------------------------------------- */

/* The service with a new update status (and, for a rollback, the previous spec swapped in). */
static void service_action(recon_t *r, Shoal__UpdateStatus__State state, const char *message,
                           bool rollback) {
    Shoal__Service *copy = (Shoal__Service *)recon_copy_message(&r->svc->base);
    Shoal__UpdateStatus *st = copy ? calloc(1, sizeof *st) : NULL;
    char *msg = st ? strdup(message) : NULL;
    if (!msg || !grow(r, (void **)&r->out->actions, &r->out->cap, r->out->n_actions + 1,
                      sizeof(recon_action_t))) {
        free(msg);
        free(st);
        if (copy)
            protobuf_c_message_free_unpacked(&copy->base, NULL);
        r->err = -ENOMEM;
        return;
    }
    shoal__update_status__init(st);
    int64_t started = r->svc->update_status ? r->svc->update_status->started_at_ms : 0;
    st->state = state;
    st->message = msg;
    if (state == SHOAL__UPDATE_STATUS__STATE__UPDATING ||
        state == SHOAL__UPDATE_STATUS__STATE__ROLLBACK_STARTED)
        st->started_at_ms = r->now;
    else
        st->started_at_ms = started;
    if (state == SHOAL__UPDATE_STATUS__STATE__COMPLETED ||
        state == SHOAL__UPDATE_STATUS__STATE__ROLLBACK_COMPLETED)
        st->completed_at_ms = r->now;
    if (copy->update_status)
        protobuf_c_message_free_unpacked(&copy->update_status->base, NULL);
    copy->update_status = st;
    if (rollback) {
        Shoal__ServiceSpec *cur = copy->spec;
        copy->spec = copy->previous_spec;
        copy->previous_spec = cur;
        copy->spec_version++;
    }
    if (copy->meta) {
        copy->meta->version++;
        copy->meta->updated_at_ms = r->now;
    }
    r->out->actions[r->out->n_actions++] = (recon_action_t){
        .op = RECON_UPDATE_SERVICE,
        .why = rollback ? "rollback" : "update-status",
        .mod_revision = r->in->service_mod_revision,
        .new_service = copy,
    };
}

/* What an update needs to know about one slot. */
typedef struct slot_view {
    bool part; /* part of the update: it ever ran an older spec, or it existed before the update
                  began and got a new task since (after a rollback, the task an update stopped
                  runs the current spec again); a slot added by a scale-up is not */
    size_t clean_live; /* tasks of the current spec that should run */
    size_t dirty_live;
    bool dirty_owed;   /* an old task told to stop, its replacement not created yet */
    bool clean_owed;   /* a new task failed, its restart pending */
    bool dirty_holder; /* an old task holds the slot (live, or settled with restart_at -1) */
    size_t primary;
} slot_view_t;

static slot_view_t slot_view(const recon_t *r, const group_t *g) {
    slot_view_t v = {.primary = group_primary(r, g)};
    int64_t since = r->svc->update_status ? r->svc->update_status->started_at_ms : 0;
    bool before = false, new_since = false;
    for (size_t i = 0; i < g->n; i++) {
        const wtask_t *x = &r->w[g->members[i]];
        if (!x->clean)
            v.part = true;
        if (x->in && created_at(x->t) < since)
            before = true;
        else if (x->clean)
            new_since = true;
        if (x->deleted)
            continue;
        if (w_live(x))
            x->clean ? v.clean_live++ : v.dirty_live++;
        if (w_owes(x))
            x->clean ? (v.clean_owed = true) : (v.dirty_owed = true);
        if (!x->clean && w_holds(x) && x->restart_at <= 0)
            v.dirty_holder = true;
    }
    if (before && new_since)
        v.part = true;
    return v;
}

/* A slot is in flight from the moment its old task is told to stop until its new task runs or
 * has ended (SwarmKit's updater moves on then; the restart policy and the failure count take it
 * from there), plus the update delay. */
static bool slot_in_flight(recon_t *r, const group_t *g, const slot_view_t *v,
                           const update_cfg_t *cfg) {
    if (!v->part)
        return false;
    if (v->dirty_owed)
        return true;
    if (!v->clean_live && !v->clean_owed)
        return false;
    int64_t since = r->svc->update_status ? r->svc->update_status->started_at_ms : 0;
    int64_t settled_at = -1;
    for (size_t i = 0; i < g->n; i++) {
        const wtask_t *x = &r->w[g->members[i]];
        int64_t at = -1;
        if (!x->clean || x->deleted)
            continue;
        if (w_live(x) && w_running(r, x))
            at = started_at(x);
        else if (x->in && created_at(x->t) >= since && task_state(x->t) > RUNNING)
            at = status_time(x->t);
        if (at > settled_at)
            settled_at = at;
    }
    if (settled_at < 0)
        return true;
    if (cfg->delay_ms > 0 && r->now < settled_at + cfg->delay_ms) {
        wake_at(r, settled_at + cfg->delay_ms);
        return true;
    }
    return false;
}

static bool slot_outdated(const slot_view_t *v) {
    return v->dirty_holder && !v->clean_live && !v->dirty_owed;
}

static bool group_updatable(const recon_t *r, const group_t *g) {
    if (!r->global)
        return g->slot > 0;
    return node_eligible(r, node_find(r, g->node_id));
}

static void begin_update(recon_t *r, size_t gi, const update_cfg_t *cfg) {
    if (cfg->order == SHOAL__UPDATE_CONFIG__ORDER__START_FIRST) {
        /* the new task first; the old one stops once it runs (phase supersede) */
        for (size_t i = 0; i < r->g[gi].n; i++) {
            wtask_t *x = &r->w[r->g[gi].members[i]];
            if (!x->clean && !w_live(x) && w_holds(x) && x->restart_at < 0)
                w_set(x, x->desired, 0, "update"); /* a settled old task: the slot moves on */
        }
        create_task(r, r->g[gi].slot, r->g[gi].node_id, NULL, "update");
        return;
    }
    for (size_t i = 0; i < r->g[gi].n && !r->err; i++) {
        size_t wi = r->g[gi].members[i];
        wtask_t *x = &r->w[wi];
        if (!w_holds(x) || x->restart_at > 0 || x->clean)
            continue;
        w_set(x, x->desired <= RUNNING ? SHUTDOWN : x->desired, r->now, "update");
        fulfil(r, wi);
    }
}

/* Whether a task of the current spec created since the update began failed: it terminated
 * before running, or within monitor_ms of starting. */
static bool update_failed_task(const recon_t *r, const wtask_t *x, const update_cfg_t *cfg,
                               int64_t since) {
    const Shoal__Task *t = x->t;
    if (!x->in || !x->clean || created_at(t) < since)
        return false;
    Shoal__TaskState s = task_state(t);
    bool ended = s == SHOAL__TASK_STATE__FAILED || s == SHOAL__TASK_STATE__REJECTED ||
                 s == COMPLETE || (s >= SHUTDOWN && t->desired_state <= RUNNING);
    if (!ended)
        return false;
    int64_t start = started_at(x);
    return !start || status_time(t) - start <= cfg->monitor_ms;
}

static size_t update_failures(const recon_t *r, const update_cfg_t *cfg,
                              const Shoal__Task **first) {
    int64_t since = r->svc->update_status ? r->svc->update_status->started_at_ms : 0;
    size_t n = 0;
    *first = NULL;
    for (size_t i = 0; i < r->nw; i++) {
        if (!update_failed_task(r, &r->w[i], cfg, since))
            continue;
        if (!*first)
            *first = r->w[i].t;
        n++;
    }
    return n;
}

/* The time the last new task started running, when its monitor period has not passed yet. */
static int64_t monitor_until(const recon_t *r, const update_cfg_t *cfg) {
    int64_t since = r->svc->update_status ? r->svc->update_status->started_at_ms : 0;
    int64_t until = 0;
    if (cfg->monitor_ms <= 0)
        return 0;
    for (size_t i = 0; i < r->nw; i++) {
        const wtask_t *x = &r->w[i];
        if (!x->in || !x->clean || !w_live(x) || created_at(x->t) < since)
            continue;
        int64_t start = started_at(x);
        if (start && start + cfg->monitor_ms > r->now && start + cfg->monitor_ms > until)
            until = start + cfg->monitor_ms;
    }
    return until;
}

/* Pauses or rolls back when too many new tasks failed; returns whether it did. */
static bool update_check_failures(recon_t *r, const update_cfg_t *cfg, size_t slots) {
    if (cfg->failure_action == SHOAL__UPDATE_CONFIG__FAILURE_ACTION__CONTINUE)
        return false;
    const Shoal__Task *failed;
    size_t failures = update_failures(r, cfg, &failed);
    size_t total = slots ? slots : 1;
    if (!failures || (double)failures / (double)total <= (double)cfg->max_failure_ratio)
        return false;
    char msg[192];
    bool back = rolling_back(r->svc);
    bool rollback = cfg->failure_action == SHOAL__UPDATE_CONFIG__FAILURE_ACTION__ROLLBACK &&
                    !back && r->svc->previous_spec;
    snprintf(msg, sizeof msg, "%s due to failure or early termination of task %s",
             rollback ? "update rolled back" : (back ? "rollback paused" : "update paused"),
             task_id(failed));
    service_action(r,
                   rollback ? SHOAL__UPDATE_STATUS__STATE__ROLLBACK_STARTED
                   : back   ? SHOAL__UPDATE_STATUS__STATE__ROLLBACK_PAUSED
                            : SHOAL__UPDATE_STATUS__STATE__PAUSED,
                   msg, rollback);
    return true;
}

static void phase_update(recon_t *r) {
    Shoal__UpdateStatus__State st = update_state(r->svc);
    if (st == SHOAL__UPDATE_STATUS__STATE__PAUSED ||
        st == SHOAL__UPDATE_STATUS__STATE__ROLLBACK_PAUSED)
        return;
    bool running_update = st == SHOAL__UPDATE_STATUS__STATE__UPDATING ||
                          st == SHOAL__UPDATE_STATUS__STATE__ROLLBACK_STARTED;
    update_cfg_t cfg = update_config(r->svc);
    size_t outdated = 0, in_flight = 0, slots = 0;
    size_t *todo = malloc((r->ng ? r->ng : 1) * sizeof *todo);
    if (!todo) {
        r->err = -ENOMEM;
        return;
    }
    for (size_t gi = 0; gi < r->ng; gi++) {
        group_t *g = &r->g[gi];
        if (!group_updatable(r, g) || !group_held(r, g))
            continue;
        slot_view_t v = slot_view(r, g);
        if (v.part)
            slots++;
        if (slot_in_flight(r, g, &v, &cfg))
            in_flight++;
        else if (slot_outdated(&v))
            todo[outdated++] = gi;
    }
    if (running_update && update_check_failures(r, &cfg, slots))
        goto out;
    if (!outdated && !in_flight) {
        if (!running_update)
            goto out;
        int64_t until = monitor_until(r, &cfg);
        if (until) {
            wake_at(r, until);
            goto out;
        }
        bool back = rolling_back(r->svc);
        service_action(r,
                       back ? SHOAL__UPDATE_STATUS__STATE__ROLLBACK_COMPLETED
                            : SHOAL__UPDATE_STATUS__STATE__COMPLETED,
                       back ? "rollback completed" : "update completed", false);
        goto out;
    }
    if (!outdated)
        goto out;
    if (!running_update)
        service_action(r, SHOAL__UPDATE_STATUS__STATE__UPDATING, "update in progress", false);
    size_t budget = cfg.parallelism == 0          ? outdated
                    : cfg.parallelism > in_flight ? (size_t)cfg.parallelism - in_flight
                                                  : 0;
    for (size_t i = 0; i < outdated && i < budget && !r->err; i++)
        begin_update(r, todo[i], &cfg);
out:
    free(todo);
}

/* Jobs have no rolling update: a TaskSpec change starts a new iteration at once. */
static void phase_job_status(recon_t *r) {
    Shoal__UpdateStatus__State st = update_state(r->svc);
    if (st == SHOAL__UPDATE_STATUS__STATE__UPDATING)
        service_action(r, SHOAL__UPDATE_STATUS__STATE__COMPLETED, "job iteration started", false);
    else if (st == SHOAL__UPDATE_STATUS__STATE__ROLLBACK_STARTED)
        service_action(r, SHOAL__UPDATE_STATUS__STATE__ROLLBACK_COMPLETED, "job iteration started",
                       false);
}

/* ---- phase 7: reaper ---------------------------------------------------------------------- */

/* A terminated task that must stay: it settles its slot (declined restarts keep the slot empty;
 * a job's completed tasks of the current iteration are its progress). */
static bool w_protected(const recon_t *r, const wtask_t *x) {
    if (x->restart_at == 0 && x->t->restart_at_ms == 0)
        return false;
    return !r->job || x->clean;
}

static void phase_reap(recon_t *r) {
    uint64_t limit =
        r->svc && r->svc->spec->task_history_limit
            ? r->svc->spec->task_history_limit
            : (r->in->default_history_limit ? r->in->default_history_limit : RECON_DEFAULT_HISTORY);
    for (size_t gi = 0; gi < r->ng; gi++) {
        group_t *g = &r->g[gi];
        size_t terminated = 0;
        for (size_t i = 0; i < g->n; i++) {
            wtask_t *x = &r->w[g->members[i]];
            if (x->deleted || !x->in)
                continue;
            if (x->desired >= REMOVE) {
                if (w_stopped(r, x) && x->desired == x->t->desired_state) {
                    x->deleted = true;
                    x->why = "reap-removed";
                }
                continue;
            }
            if (x->desired > RUNNING && w_stopped(r, x))
                terminated++;
        }
        /* members are oldest first (tasks created in this pass come last) */
        for (size_t i = 0; i < g->n && terminated > limit; i++) {
            wtask_t *x = &r->w[g->members[i]];
            if (x->deleted || !x->in || x->desired <= RUNNING || x->desired >= REMOVE ||
                !w_stopped(r, x) || w_protected(r, x) || x->restart_at > 0 ||
                x->desired != x->t->desired_state)
                continue;
            x->deleted = true;
            x->why = "reap-history";
            terminated--;
        }
    }
}

/* ---- orphans ------------------------------------------------------------------------------ */

static void phase_orphans(recon_t *r) {
    for (size_t i = 0; i < r->nw; i++) {
        wtask_t *x = &r->w[i];
        if (w_stopped(r, x)) {
            x->deleted = true;
            x->why = "service-removed";
        } else if (x->desired < REMOVE) {
            w_set(x, REMOVE, 0, "service-removed");
        }
    }
}

/* ---- emission ----------------------------------------------------------------------------- */

static void push(recon_t *r, recon_action_t a) {
    if (!grow(r, (void **)&r->out->actions, &r->out->cap, r->out->n_actions + 1, sizeof a)) {
        if (a.new_task)
            protobuf_c_message_free_unpacked(&a.new_task->base, NULL);
        return;
    }
    r->out->actions[r->out->n_actions++] = a;
}

static void emit(recon_t *r) {
    for (size_t i = 0; i < r->nw; i++) {
        wtask_t *x = &r->w[i];
        if (!x->in) {
            if (x->deleted || x->desired > RUNNING || r->err) {
                protobuf_c_message_free_unpacked(&x->t->base, NULL);
                r->out->tasks_created--;
            } else {
                x->t->desired_state = x->desired;
                x->t->restart_at_ms = x->restart_at;
                push(r, (recon_action_t){.op = RECON_CREATE_TASK, .why = x->why, .new_task = x->t});
            }
            x->t = NULL;
            continue;
        }
        if (r->err)
            continue;
        if (x->deleted)
            push(r, (recon_action_t){.op = RECON_DELETE_TASK,
                                     .why = x->why,
                                     .task = x->t,
                                     .mod_revision = x->in->mod_revision});
        else if (x->desired != x->t->desired_state || x->restart_at != x->t->restart_at_ms)
            push(r, (recon_action_t){.op = RECON_UPDATE_TASK,
                                     .why = x->why ? x->why : "update",
                                     .task = x->t,
                                     .mod_revision = x->in->mod_revision,
                                     .desired_state = x->desired,
                                     .restart_at_ms = x->restart_at});
    }
}

static void reconcile_live_service(recon_t *r) {
    if (!build_groups(r))
        return;
    phase_restart(r);
    if (!r->err)
        phase_recover(r);
    if (!r->err)
        phase_owed(r);
    if (!r->err) {
        switch (r->svc->spec->mode_case) {
        case SHOAL__SERVICE_SPEC__MODE_REPLICATED:
            phase_scale_replicated(r);
            break;
        case SHOAL__SERVICE_SPEC__MODE_GLOBAL:
            phase_scale_global(r);
            break;
        case SHOAL__SERVICE_SPEC__MODE_REPLICATED_JOB:
            phase_scale_replicated_job(r);
            break;
        default:
            phase_scale_global_job(r);
            break;
        }
    }
    if (!r->err)
        phase_supersede(r);
    if (!r->err)
        r->job ? phase_job_status(r) : phase_update(r);
    if (!r->err)
        phase_reap(r);
}

int reconcile_service(const recon_input_t *in, recon_result_t *out) {
    recon_t r = {.in = in, .out = out, .svc = in->service, .now = in->now_ms};
    if (r.svc && (!r.svc->spec ||
                  !(recon_is_replicated(r.svc) || recon_is_global(r.svc) || recon_is_job(r.svc))))
        return 0; /* a damaged record: not ours to touch */
    r.global = recon_is_global(r.svc);
    r.job = recon_is_job(r.svc);
    r.version = r.svc ? r.svc->spec_version : 0;
    if (in->n_nodes) {
        r.nodes = malloc(in->n_nodes * sizeof *r.nodes);
        if (!r.nodes)
            return out->err = -ENOMEM;
        for (size_t i = 0; i < in->n_nodes; i++)
            if (in->nodes[i])
                r.nodes[r.nn++] = in->nodes[i];
        qsort(r.nodes, r.nn, sizeof *r.nodes, node_cmp);
    }
    if (in->n_tasks && !grow(&r, (void **)&r.w, &r.capw, in->n_tasks, sizeof(wtask_t)))
        goto done;
    for (size_t i = 0; i < in->n_tasks; i++) {
        const recon_task_t *rt = &in->tasks[i];
        if (!rt->task)
            continue;
        r.w[r.nw] = (wtask_t){.t = rt->task,
                              .in = rt,
                              .desired = rt->task->desired_state,
                              .restart_at = rt->task->restart_at_ms};
        r.w[r.nw].clean = spec_clean(&r, rt->task);
        r.nw++;
    }
    if (!r.svc)
        phase_orphans(&r);
    else
        reconcile_live_service(&r);
done:
    emit(&r);
    for (size_t i = 0; i < r.ng; i++)
        free(r.g[i].members);
    free(r.g);
    free(r.w);
    free(r.nodes);
    if (r.err)
        out->err = r.err;
    return r.err;
}

void recon_result_clear(recon_result_t *r) {
    if (!r)
        return;
    for (size_t i = 0; i < r->n_actions; i++) {
        if (r->actions[i].new_task)
            protobuf_c_message_free_unpacked(&r->actions[i].new_task->base, NULL);
        if (r->actions[i].new_service)
            protobuf_c_message_free_unpacked(&r->actions[i].new_service->base, NULL);
    }
    free(r->actions);
    *r = (recon_result_t){0};
}

Shoal__Task *recon_task_apply(const recon_action_t *a, int64_t now_ms) {
    Shoal__Task *t = (Shoal__Task *)recon_copy_message(&a->task->base);
    if (!t)
        return NULL;
    if (!t->meta) {
        t->meta = calloc(1, sizeof *t->meta);
        if (!t->meta) {
            protobuf_c_message_free_unpacked(&t->base, NULL);
            return NULL;
        }
        shoal__meta__init(t->meta);
    }
    t->desired_state = a->desired_state;
    t->restart_at_ms = a->restart_at_ms;
    t->meta->version++;
    t->meta->updated_at_ms = now_ms;
    return t;
}
