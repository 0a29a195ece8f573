/* reconcile — what the orchestrator should write for one service (SwarmKit's replicated and
 * global orchestrators, restart supervisor, rolling updater and task reaper, folded into one
 * pure function per service).
 *
 * A pass works on a private copy of each task's (desired_state, restart_at_ms) so that later
 * phases see the decisions of earlier ones, then emits one action per changed task:
 *
 *   1. restart   a task that should run (desired <= RUNNING) but has terminated, or whose node
 *                is down, missing or drained, gets desired SHUTDOWN. The restart policy (from
 *                the task's own spec, as SwarmKit) decides whether a replacement is owed:
 *                restart_at_ms = now + delay, or RECON_RESTART_DECLINED.
 *   2. owed      a replacement owed by a task is created in the same slot (global: same node)
 *                once its time has come and the old task has stopped running (stop-first); the
 *                old task's restart_at_ms goes back to 0. Until then the slot stays held.
 *   3. scale     replicated: slots are 1..N; a slot is held by a task with desired <= RUNNING
 *                or by a SHUTDOWN task with restart_at_ms != 0. Missing slots get a new task in
 *                the lowest free slot numbers; extra slots get desired REMOVE, non-running slots
 *                first, then the highest slot numbers. Global: one task per node that is READY,
 *                ACTIVE and matches the constraints; tasks on DOWN/drained/missing/mismatching
 *                nodes get desired SHUTDOWN; PAUSE keeps what runs but gets nothing new.
 *   4. update    slots whose task runs an older spec_version are replaced stop-first, at most
 *                `parallelism` slots in flight (0 = all). A slot is in flight from the moment
 *                its old task is told to stop until its new task is RUNNING (plus the update
 *                delay) or has failed. Update status: UPDATING -> COMPLETED (or PAUSED/rolled
 *                back when too many new tasks fail, per failure_action / max_failure_ratio).
 *   5. reap      per slot keep the task history limit of terminated tasks (oldest deleted);
 *                tasks with desired REMOVE are deleted once terminated or never assigned. A
 *                task on a DOWN or deleted node counts as terminated: no agent will report it.
 *
 * With no service (it was removed), every task gets desired REMOVE and is deleted when stopped.
 * New tasks start PENDING with desired RUNNING (global ones with node_id preassigned).
 *
 * Invariants: at most one action per task; a created task always has a slot (replicated) or a
 * node (global); restart_at_ms > 0 only on tasks with desired SHUTDOWN.
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

#define RUNNING  SHOAL__TASK_STATE__RUNNING
#define SHUTDOWN SHOAL__TASK_STATE__SHUTDOWN
#define REMOVE   SHOAL__TASK_STATE__REMOVE

typedef struct wtask {
    Shoal__Task *t;         /* input task (borrowed) or created task (owned until emitted) */
    const recon_task_t *in; /* NULL for a task created in this pass */
    Shoal__TaskState desired;
    int64_t restart_at;
    bool deleted;
    const char *why;
    size_t group;
} wtask_t;

typedef struct group {
    uint64_t slot;
    const char *node_id;
    size_t *members;
    size_t n, cap;
} group_t;

typedef struct recon {
    const recon_input_t *in;
    recon_result_t *out;
    const Shoal__Service *svc;
    bool global;
    uint64_t version;
    int64_t now;
    wtask_t *w;
    size_t nw, capw;
    group_t *g;
    size_t ng, capg, ng_sorted;
    Shoal__Node **nodes; /* sorted by id */
    size_t nn;
    int err;
} recon_t;

/* ---- small helpers ------------------------------------------------------------------------ */

static const char *str(const char *s) {
    return s ? s : "";
}

bool recon_is_global(const Shoal__Service *s) {
    return s && s->spec && s->spec->mode_case == SHOAL__SERVICE_SPEC__MODE_GLOBAL;
}

bool recon_is_replicated(const Shoal__Service *s) {
    return s && s->spec && s->spec->mode_case == SHOAL__SERVICE_SPEC__MODE_REPLICATED &&
           s->spec->replicated;
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

static int exit_code(const Shoal__Task *t) {
    return t->status && t->status->container ? t->status->container->exit_code : 0;
}

static const char *label_value(const Shoal__Annotations *a, const char *key) {
    if (!a)
        return NULL;
    for (size_t i = 0; i < a->n_labels; i++)
        if (a->labels[i] && a->labels[i]->key && !strcmp(a->labels[i]->key, key))
            return str(a->labels[i]->value);
    return NULL;
}

static uint64_t attempt_of(const Shoal__Task *t) {
    const char *v = label_value(t->annotations, RECON_LABEL_ATTEMPT);
    return v ? strtoull(v, NULL, 10) : 0;
}

static bool w_live(const wtask_t *x) {
    return !x->deleted && x->desired <= RUNNING;
}

/* Holds its slot: should run, or was stopped by us with a replacement owed / declined. */
static bool w_holds(const wtask_t *x) {
    return !x->deleted && (x->desired <= RUNNING ||
                           (x->desired > RUNNING && x->desired < REMOVE && x->restart_at != 0));
}

static void w_set(wtask_t *x, Shoal__TaskState desired, int64_t restart_at, const char *why) {
    if (x->desired == desired && x->restart_at == restart_at)
        return;
    x->desired = desired;
    x->restart_at = restart_at;
    x->why = why;
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

/* Global: may a task of the service keep running there? (PAUSE keeps; not-yet-READY keeps.) */
static bool node_keeps(const recon_t *r, const Shoal__Node *n) {
    return n && !node_down(n) && node_availability(n) != SHOAL__NODE_SPEC__AVAILABILITY__DRAIN &&
           service_constraints_match(r, n);
}

/* The task no longer runs anywhere: terminated, never started, or its node is gone/down. */
static bool w_stopped(const recon_t *r, const wtask_t *x) {
    Shoal__TaskState s = task_state(x->t);
    if (s > RUNNING || s < SHOAL__TASK_STATE__ASSIGNED)
        return true;
    return node_down(node_find(r, x->t->node_id));
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

static bool group_has_live(const recon_t *r, const group_t *g, const wtask_t *except) {
    for (size_t i = 0; i < g->n; i++) {
        const wtask_t *x = &r->w[g->members[i]];
        if (x != except && w_live(x))
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

/* Adds a new task of the current spec in (slot, node_id); returns its index or -1. */
static ssize_t create_task(recon_t *r, uint64_t slot, const char *node_id, uint64_t attempt,
                           const char *why) {
    const Shoal__Service *s = r->svc;
    char id[64] = "", name[192], attempt_text[24];
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
    Shoal__Label attempt_label = SHOAL__LABEL__INIT;
    Shoal__Label *labels[1] = {&attempt_label};
    Shoal__Annotations ann = SHOAL__ANNOTATIONS__INIT;
    ann.name = name;
    if (attempt > 0) {
        snprintf(attempt_text, sizeof attempt_text, "%" PRIu64, attempt);
        attempt_label.key = RECON_LABEL_ATTEMPT;
        attempt_label.value = attempt_text;
        ann.labels = labels;
        ann.n_labels = 1;
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
    r->w[wi] = (wtask_t){.t = copy, .desired = RUNNING, .why = why};
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

/* Restarts of this slot under the current spec version inside the policy's window. */
static uint64_t restarts_in_window(const recon_t *r, const group_t *g, int64_t since) {
    uint64_t n = 0;
    for (size_t i = 0; i < g->n; i++) {
        const Shoal__Task *t = r->w[g->members[i]].t;
        if (t->spec_version == r->version && attempt_of(t) > 0 && created_at(t) >= since)
            n++;
    }
    return n;
}

static bool restart_allowed(const recon_t *r, const wtask_t *x, bool node_failed) {
    const Shoal__Task *t = x->t;
    const Shoal__RestartPolicy *p = restart_policy(t);
    int cond = p ? p->condition : SHOAL__RESTART_POLICY__CONDITION__ANY;
    bool success = task_state(t) == SHOAL__TASK_STATE__COMPLETE && exit_code(t) == 0;
    if (cond == SHOAL__RESTART_POLICY__CONDITION__NONE)
        return false;
    if (cond == SHOAL__RESTART_POLICY__CONDITION__ON_FAILURE && success && !node_failed)
        return false;
    if (!p || p->max_attempts == 0)
        return true;
    if (p->window_ms > 0) {
        int64_t at = t->status && t->status->timestamp_ms ? t->status->timestamp_ms : r->now;
        return restarts_in_window(r, &r->g[x->group], at - p->window_ms) < p->max_attempts;
    }
    uint64_t before = t->spec_version == r->version ? attempt_of(t) : 0;
    return before < p->max_attempts;
}

static void restart_task(recon_t *r, wtask_t *x, bool node_failed) {
    if (!restart_allowed(r, x, node_failed)) {
        w_set(x, SHUTDOWN, RECON_RESTART_DECLINED, "restart-declined");
        return;
    }
    const Shoal__RestartPolicy *p = restart_policy(x->t);
    int64_t delay = p && p->delay_ms > 0 ? p->delay_ms : 0;
    w_set(x, SHUTDOWN, r->now + delay, "restart");
    r->out->restarts++;
}

static void phase_restart_replicated(recon_t *r) {
    for (size_t i = 0; i < r->nw; i++) {
        wtask_t *x = &r->w[i];
        if (!w_live(x) || !x->in)
            continue;
        if (x->t->slot == 0) {
            w_set(x, REMOVE, 0, "no-slot");
            continue;
        }
        const Shoal__Node *n = node_find(r, x->t->node_id);
        bool assigned = x->t->node_id && x->t->node_id[0];
        bool node_failed = assigned && node_down(n);
        bool drained = assigned && !node_failed &&
                       node_availability(n) == SHOAL__NODE_SPEC__AVAILABILITY__DRAIN;
        if (task_state(x->t) > RUNNING || node_failed)
            restart_task(r, x, node_failed);
        else if (drained) /* an operator's move, not a failure: always, at once, uncounted */
            w_set(x, SHUTDOWN, r->now, "drain");
    }
}

static void phase_restart_global(recon_t *r) {
    for (size_t i = 0; i < r->nw; i++) {
        wtask_t *x = &r->w[i];
        if (!w_live(x) || !x->in)
            continue;
        const Shoal__Node *n = node_find(r, x->t->node_id);
        if (!node_keeps(r, n)) {
            w_set(x, SHUTDOWN, 0, "node-ineligible");
            continue;
        }
        if (task_state(x->t) <= RUNNING)
            continue;
        if (node_availability(n) == SHOAL__NODE_SPEC__AVAILABILITY__PAUSE)
            w_set(x, SHUTDOWN, 0, "node-paused");
        else
            restart_task(r, x, false);
    }
}

/* ---- phase 2: owed replacements ----------------------------------------------------------- */

/* Creates the replacement owed by x when its time has come and x has stopped. */
static void fulfil(recon_t *r, wtask_t *x) {
    group_t *g = &r->g[x->group];
    if (group_has_live(r, g, x)) { /* already replaced (e.g. by an earlier pass that crashed) */
        w_set(x, x->desired, 0, x->why ? x->why : "replaced");
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
    uint64_t attempt = x->t->spec_version == r->version ? attempt_of(x->t) + 1 : 0;
    const char *why = x->t->spec_version == r->version ? "restart" : "update";
    size_t xi = (size_t)(x - r->w);
    uint64_t slot = x->t->slot;
    const char *node_id = x->t->node_id;
    if (create_task(r, slot, node_id, attempt, why) < 0)
        return;
    x = &r->w[xi]; /* create_task may move the array */
    w_set(x, x->desired, 0, x->why ? x->why : why);
}

static bool w_owes(const wtask_t *x) {
    return !x->deleted && x->desired > RUNNING && x->desired < REMOVE && x->restart_at > 0;
}

static void phase_owed(recon_t *r) {
    size_t n = r->nw; /* tasks created here never owe anything */
    for (size_t i = 0; i < n && !r->err; i++)
        if (w_owes(&r->w[i]))
            fulfil(r, &r->w[i]);
}

/* ---- phase 3: scale ----------------------------------------------------------------------- */

static bool group_running(const recon_t *r, const group_t *g) {
    for (size_t i = 0; i < g->n; i++) {
        const wtask_t *x = &r->w[g->members[i]];
        if (w_live(x) && task_state(x->t) == RUNNING)
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
            if (create_task(r, slot, NULL, 0, "scale-up") < 0)
                break;
            missing--;
        }
    }
out:
    free(held);
    free(slots);
}

static void phase_scale_global(recon_t *r) {
    /* Extra live tasks on one node (only after a race): keep the newest, stop the rest. */
    for (size_t gi = 0; gi < r->ng; gi++) {
        group_t *g = &r->g[gi];
        size_t live = 0;
        for (size_t i = g->n; i-- > 0;) {
            wtask_t *x = &r->w[g->members[i]];
            if (w_live(x) && ++live > 1)
                w_set(x, SHUTDOWN, 0, "duplicate");
        }
    }
    for (size_t i = 0; i < r->nn && !r->err; i++) {
        const Shoal__Node *n = r->nodes[i];
        if (!n->meta || !n->meta->id || !n->meta->id[0] || !node_eligible(r, n))
            continue;
        ssize_t gi = group_find(r, 0, n->meta->id);
        if (gi >= 0 && group_held(r, &r->g[gi]))
            continue;
        create_task(r, 0, n->meta->id, 0, "node-added");
    }
}

/* ---- phase 4: rolling update -------------------------------------------------------------- */

static Shoal__UpdateStatus__State update_state(const Shoal__Service *s) {
    return s->update_status ? s->update_status->state : SHOAL__UPDATE_STATUS__STATE__UNKNOWN;
}

static bool rolling_back(const Shoal__Service *s) {
    return update_state(s) == SHOAL__UPDATE_STATUS__STATE__ROLLBACK_STARTED;
}

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

typedef struct update_cfg {
    uint64_t parallelism;
    int64_t delay_ms;
    int failure_action;
    float max_failure_ratio;
} update_cfg_t;

static update_cfg_t update_config(const Shoal__Service *s) {
    const Shoal__UpdateConfig *u = rolling_back(s) ? s->spec->rollback : s->spec->update;
    update_cfg_t c = {.parallelism = 1}; /* SwarmKit's defaults */
    if (u) {
        c.parallelism = u->parallelism;
        c.delay_ms = u->delay_ms > 0 ? u->delay_ms : 0;
        c.failure_action = u->failure_action;
        c.max_failure_ratio = u->max_failure_ratio;
    }
    return c;
}

/* Whether the slot runs (or holds, declined) an older spec and is not being replaced already. */
static bool group_outdated(const recon_t *r, const group_t *g) {
    for (size_t i = 0; i < g->n; i++) {
        const wtask_t *x = &r->w[g->members[i]];
        if (w_holds(x) && x->restart_at <= 0 && x->t->spec_version != r->version)
            return true;
    }
    return false;
}

/* Whether the slot ever ran an older spec (a slot that only ever had the current one, e.g. from
 * a scale-up, is not part of the update). */
static bool group_had_older(const recon_t *r, const group_t *g) {
    for (size_t i = 0; i < g->n; i++)
        if (r->w[g->members[i]].t->spec_version != r->version)
            return true;
    return false;
}

static bool group_in_flight(recon_t *r, const group_t *g, const update_cfg_t *cfg) {
    if (!group_had_older(r, g))
        return false;
    for (size_t i = 0; i < g->n; i++) {
        const wtask_t *x = &r->w[g->members[i]];
        if (w_owes(x) && x->t->spec_version != r->version)
            return true; /* old task told to stop, replacement not created yet */
        if (!w_live(x) || x->t->spec_version != r->version)
            continue;
        Shoal__TaskState s = task_state(x->t);
        if (s < RUNNING)
            return true;
        if (s == RUNNING && cfg->delay_ms > 0) {
            int64_t since = x->t->status ? x->t->status->timestamp_ms : 0;
            if (r->now < since + cfg->delay_ms) {
                wake_at(r, since + cfg->delay_ms);
                return true;
            }
        }
    }
    return false;
}

static bool group_updatable(const recon_t *r, const group_t *g) {
    if (!r->global)
        return g->slot > 0;
    return node_eligible(r, node_find(r, g->node_id));
}

static void begin_update(recon_t *r, size_t gi) {
    for (size_t i = 0; i < r->g[gi].n && !r->err; i++) {
        wtask_t *x = &r->w[r->g[gi].members[i]];
        if (!w_holds(x) || x->restart_at > 0 || x->t->spec_version == r->version)
            continue;
        w_set(x, x->desired <= RUNNING ? SHUTDOWN : x->desired, r->now, "update");
        fulfil(r, x);
    }
}

/* Counts the new-spec tasks that failed since the update started; returns the first one. */
static size_t update_failures(const recon_t *r, const Shoal__Task **first) {
    int64_t since = r->svc->update_status ? r->svc->update_status->started_at_ms : 0;
    size_t n = 0;
    *first = NULL;
    for (size_t i = 0; i < r->nw; i++) {
        const Shoal__Task *t = r->w[i].t;
        Shoal__TaskState s = task_state(t);
        if (!r->w[i].in || t->spec_version != r->version || created_at(t) < since)
            continue;
        if (s == SHOAL__TASK_STATE__FAILED || s == SHOAL__TASK_STATE__REJECTED ||
            s == SHOAL__TASK_STATE__COMPLETE) {
            if (!*first)
                *first = t;
            n++;
        }
    }
    return n;
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
        slots++;
        if (group_in_flight(r, g, &cfg))
            in_flight++;
        else if (group_outdated(r, g))
            todo[outdated++] = gi;
    }
    if (!outdated && !in_flight) {
        if (running_update)
            service_action(r,
                           rolling_back(r->svc) ? SHOAL__UPDATE_STATUS__STATE__ROLLBACK_COMPLETED
                                                : SHOAL__UPDATE_STATUS__STATE__COMPLETED,
                           rolling_back(r->svc) ? "rollback completed" : "update completed", false);
        free(todo);
        return;
    }
    if (running_update && cfg.failure_action != SHOAL__UPDATE_CONFIG__FAILURE_ACTION__CONTINUE) {
        const Shoal__Task *failed;
        size_t failures = update_failures(r, &failed);
        size_t total = slots ? slots : 1;
        if (failures && (double)failures / (double)total > (double)cfg.max_failure_ratio) {
            char msg[160];
            bool rollback = cfg.failure_action == SHOAL__UPDATE_CONFIG__FAILURE_ACTION__ROLLBACK &&
                            !rolling_back(r->svc) && r->svc->previous_spec;
            snprintf(msg, sizeof msg, "%s due to failure or early termination of task %s",
                     rollback ? "update rolled back"
                              : (rolling_back(r->svc) ? "rollback paused" : "update paused"),
                     task_id(failed));
            service_action(r,
                           rollback               ? SHOAL__UPDATE_STATUS__STATE__ROLLBACK_STARTED
                           : rolling_back(r->svc) ? SHOAL__UPDATE_STATUS__STATE__ROLLBACK_PAUSED
                                                  : SHOAL__UPDATE_STATUS__STATE__PAUSED,
                           msg, rollback);
            free(todo);
            return;
        }
    }
    if (!outdated) {
        free(todo);
        return;
    }
    if (!running_update)
        service_action(r, SHOAL__UPDATE_STATUS__STATE__UPDATING, "update in progress", false);
    size_t budget = cfg.parallelism == 0          ? outdated
                    : cfg.parallelism > in_flight ? (size_t)cfg.parallelism - in_flight
                                                  : 0;
    for (size_t i = 0; i < outdated && i < budget && !r->err; i++)
        begin_update(r, todo[i]);
    free(todo);
}

/* ---- phase 5: reaper ---------------------------------------------------------------------- */

/* Terminated, never started, or on a node that is down or gone (whose agent cannot report). */
static bool w_reapable(const recon_t *r, const wtask_t *x) {
    return w_stopped(r, x);
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
                if (w_reapable(r, x) && x->desired == x->t->desired_state) {
                    x->deleted = true;
                    x->why = "reap-removed";
                }
                continue;
            }
            if (x->desired > RUNNING && w_reapable(r, x))
                terminated++;
        }
        /* members are oldest first (tasks created in this pass come last) */
        for (size_t i = 0; i < g->n && terminated > limit; i++) {
            wtask_t *x = &r->w[g->members[i]];
            if (x->deleted || !x->in || x->desired <= RUNNING || x->desired >= REMOVE ||
                !w_reapable(r, x) || x->restart_at != 0 || x->t->restart_at_ms != 0 ||
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
        if (w_reapable(r, x)) {
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
            if (x->deleted || x->desired >= REMOVE || r->err) {
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

int reconcile_service(const recon_input_t *in, recon_result_t *out) {
    recon_t r = {.in = in, .out = out, .svc = in->service, .now = in->now_ms};
    if (r.svc && (!r.svc->spec || !(recon_is_replicated(r.svc) || recon_is_global(r.svc))))
        return 0; /* jobs or a damaged record: not ours to touch */
    r.global = recon_is_global(r.svc);
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
        r.w[r.nw++] = (wtask_t){.t = rt->task,
                                .in = rt,
                                .desired = rt->task->desired_state,
                                .restart_at = rt->task->restart_at_ms};
    }
    if (!r.svc) {
        phase_orphans(&r);
    } else if (build_groups(&r)) {
        if (r.global)
            phase_restart_global(&r);
        else
            phase_restart_replicated(&r);
        phase_owed(&r);
        if (!r.err) {
            if (r.global)
                phase_scale_global(&r);
            else
                phase_scale_replicated(&r);
        }
        if (!r.err)
            phase_update(&r);
        if (!r.err)
            phase_reap(&r);
    }
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
