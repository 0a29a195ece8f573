/* status — batched task status writes (SwarmKit dispatcher.go processUpdates).
 *
 * Agents report task states often (ACCEPTED … RUNNING within a second for every task), so the
 * dispatcher queues the reports and writes them together: every STATUS_FLUSH_INTERVAL_MS, or at
 * once when STATUS_FLUSH_UPDATES are queued, as ONE store.Batch with one Txn per task. Each Txn
 * compares the task's mod revision with the one the merge started from and puts the merged
 * task; a Txn that loses (the orchestrator changed desired_state meanwhile, say) is retried after
 * re-reading the task, up to STATUS_MAX_ROUNDS batches in all.
 *
 * Invariants:
 * - States only move forward: a report older than the task's state is ignored whole (a late
 *   STARTING after RUNNING changes nothing); an equal state may refresh message, err, container
 *   and networks.
 * - Several reports for one task in one flush are merged in arrival order into one write, so one
 *   flush writes each task once and its meta.version moves by exactly one.
 * - A request is answered (done()) only after the batch carrying all its updates returned: the
 *   agent's "applied" means durable in the store.
 * - A report for a task that was deleted or moved to another node meanwhile is dropped (not
 *   applied), never written.
 *
 * No clock, no sockets: the store and the reply go through status_ops_t (the daemon wires them to
 * lib/storecli and lib/bus; tests to an in-memory fake). Not thread-safe. */
#include "status.h"

#include <czmq.h>
#include <errno.h>
#include <string.h>

#define TASK_KEY_MAX 96

typedef struct request_rec {
    void *request;
    uint32_t applied;
    int err;
} request_rec_t;

typedef struct pending_update {
    Shoal__Dispatcher__TaskStatusUpdate *update;
    request_rec_t *req;
    const char *node_id;
} pending_update_t;

struct status_queue {
    status_ops_t ops;
    zlistx_t *requests; /* request_rec_t (owned), in arrival order */
    zlistx_t *updates;  /* pending_update_t (owned), in arrival order */
    int64_t first_queued_ms;
    status_stats_t stats;
};

/* ---- merge ------------------------------------------------------------------------------ */

/* Packs `t` without meta and with the status timestamp zeroed: what decides "changed". */
static uint8_t *pack_comparable(const Shoal__Task *t, size_t *ret_len) {
    Shoal__Task copy = *t;
    Shoal__TaskStatus status;
    copy.meta = NULL;
    if (copy.status) {
        status = *copy.status;
        status.timestamp_ms = 0;
        copy.status = &status;
    }
    size_t len = protobuf_c_message_get_packed_size(&copy.base);
    uint8_t *buf = malloc(len ? len : 1);
    if (buf)
        protobuf_c_message_pack(&copy.base, buf);
    *ret_len = len;
    return buf;
}

bool status_merge(const Shoal__Task *base, const Shoal__Dispatcher__TaskStatusUpdate *u,
                  int64_t now_ms, status_merged_t *out) {
    memset(out, 0, sizeof *out);
    out->task = *base;
    if (base->meta) {
        out->meta = *base->meta;
    } else {
        Shoal__Meta meta = SHOAL__META__INIT;
        out->meta = meta;
    }
    out->task.meta = &out->meta;
    if (!u || !u->status)
        return false;

    int current = base->status ? (int)base->status->state : SHOAL__TASK_STATE__NEW;
    if ((int)u->status->state < current)
        return false; /* late report: states never move backwards */

    out->status = *u->status;
    if (out->status.timestamp_ms <= 0)
        out->status.timestamp_ms = now_ms;
    /* A report without container details does not forget the container. */
    if (!out->status.container && base->status)
        out->status.container = base->status->container;
    out->task.status = &out->status;
    if (u->n_networks > 0) {
        out->task.n_networks = u->n_networks;
        out->task.networks = u->networks;
    }

    size_t la, lb;
    uint8_t *a = pack_comparable(base, &la);
    uint8_t *b = pack_comparable(&out->task, &lb);
    bool changed = !a || !b || la != lb || memcmp(a, b, la) != 0;
    free(a);
    free(b);
    if (!changed)
        return false;
    out->meta.version = (base->meta ? base->meta->version : 0) + 1;
    out->meta.updated_at_ms = now_ms;
    return true;
}

/* ---- queue ------------------------------------------------------------------------------ */

static void free_item(void **item) {
    free(*item);
    *item = NULL;
}

status_queue_t *status_queue_new(const status_ops_t *ops) {
    if (!ops || !ops->batch || !ops->get || !ops->done)
        return NULL;
    status_queue_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->ops = *ops;
    self->requests = zlistx_new();
    self->updates = zlistx_new();
    if (!self->requests || !self->updates) {
        zlistx_destroy(&self->requests);
        zlistx_destroy(&self->updates);
        free(self);
        return NULL;
    }
    zlistx_set_destructor(self->requests, free_item);
    zlistx_set_destructor(self->updates, free_item);
    return self;
}

void status_queue_destroy(status_queue_t **self_p) {
    if (!self_p || !*self_p)
        return;
    status_queue_t *self = *self_p;
    for (request_rec_t *r = zlistx_first(self->requests); r; r = zlistx_next(self->requests))
        self->ops.done(self->ops.ctx, r->request, -ECANCELED, 0);
    zlistx_destroy(&self->requests);
    zlistx_destroy(&self->updates);
    free(self);
    *self_p = NULL;
}

int status_enqueue(status_queue_t *self, void *request, const char *node_id,
                   Shoal__Dispatcher__TaskStatusUpdate *const *updates, size_t n, int64_t now_ms) {
    void **handles = calloc(n ? n : 1, sizeof *handles);
    request_rec_t *r = calloc(1, sizeof *r);
    void *request_handle = r ? zlistx_add_end(self->requests, r) : NULL;
    if (!handles || !request_handle) {
        free(handles);
        free(r);
        return -ENOMEM;
    }
    r->request = request;
    for (size_t i = 0; i < n; i++) {
        pending_update_t *p = calloc(1, sizeof *p);
        handles[i] = p ? zlistx_add_end(self->updates, p) : NULL;
        if (!handles[i]) {
            /* Unwind: the queue stays as it was. */
            free(p);
            while (i-- > 0)
                zlistx_delete(self->updates, handles[i]);
            zlistx_delete(self->requests, request_handle);
            free(handles);
            return -ENOMEM;
        }
        p->update = updates[i];
        p->req = r;
        p->node_id = node_id;
    }
    free(handles);
    if (zlistx_size(self->requests) == 1)
        self->first_queued_ms = now_ms;
    self->stats.updates_total += n;
    return 0;
}

size_t status_pending(const status_queue_t *self) {
    return zlistx_size(self->updates);
}

int64_t status_due(const status_queue_t *self) {
    if (zlistx_size(self->requests) == 0)
        return 0;
    return self->first_queued_ms + STATUS_FLUSH_INTERVAL_MS;
}

void status_queue_stats(const status_queue_t *self, status_stats_t *ret) {
    *ret = self->stats;
}

/* All queued reports for one task within a flush. */
typedef struct task_group {
    char task_id[TASK_KEY_MAX];
    char key[TASK_KEY_MAX + 8];
    const char *node_id;
    zlistx_t *updates; /* pending_update_t (borrowed) */
    bool done;
    int err;
    /* This round's write. */
    Shoal__Task *owned_base; /* re-read from the store */
    status_merged_t *merged; /* one per update */
    bool *changed;
    uint8_t *value;
    Shoal__Store__TxnRequest txn;
    Shoal__Store__Compare compare;
    Shoal__Store__Compare *compares[1];
    Shoal__Store__PutRequest put;
    Shoal__Store__RequestOp op;
    Shoal__Store__RequestOp *ops[1];
} task_group_t;

static void group_round_clear(task_group_t *g) {
    shoal__task__free_unpacked(g->owned_base, NULL);
    g->owned_base = NULL;
    free(g->merged);
    g->merged = NULL;
    free(g->changed);
    g->changed = NULL;
    free(g->value);
    g->value = NULL;
}

static void group_destroy(void **item) {
    task_group_t *g = *item;
    if (g) {
        group_round_clear(g);
        zlistx_destroy(&g->updates);
        free(g);
    }
    *item = NULL;
}

static void group_finish(task_group_t *g, int err) {
    g->done = true;
    g->err = err;
    for (pending_update_t *p = zlistx_first(g->updates); p; p = zlistx_next(g->updates))
        if (err && !p->req->err)
            p->req->err = err;
}

/* Reads the task this round merges into. 0, -ENOENT (gone) or another -errno. */
static int group_load_base(status_queue_t *self, task_group_t *g, int round,
                           const Shoal__Task **ret_base, int64_t *ret_mod) {
    if (round == 0 && self->ops.lookup) {
        const Shoal__Task *t = self->ops.lookup(self->ops.ctx, g->task_id, ret_mod);
        if (t) {
            *ret_base = t;
            return 0;
        }
    }
    Shoal__Store__KeyValue *kv = NULL;
    int r = self->ops.get(self->ops.ctx, g->key, &kv);
    if (r < 0)
        return r;
    g->owned_base = shoal__task__unpack(NULL, kv->value.len, kv->value.data);
    *ret_mod = kv->mod_revision;
    protobuf_c_message_free_unpacked(&kv->base, NULL);
    if (!g->owned_base)
        return -EPROTO;
    *ret_base = g->owned_base;
    return 0;
}

/* Builds the group's Txn for this round. 1 = a write is needed, 0 = nothing to write (group
 * finished), -errno = failed. */
static int group_prepare(status_queue_t *self, task_group_t *g, int round, int64_t now_ms) {
    group_round_clear(g);
    const Shoal__Task *base = NULL;
    int64_t mod = 0;
    int r = group_load_base(self, g, round, &base, &mod);
    if (r == -ENOENT)
        return 0; /* deleted meanwhile: nothing to apply */
    if (r < 0)
        return r;
    if (!base->node_id || strcmp(base->node_id, g->node_id) != 0)
        return 0; /* moved to another node meanwhile */

    size_t n = zlistx_size(g->updates);
    g->merged = calloc(n, sizeof *g->merged);
    g->changed = calloc(n, sizeof *g->changed);
    if (!g->merged || !g->changed)
        return -ENOMEM;
    const Shoal__Task *cur = base;
    size_t i = 0, changes = 0;
    for (pending_update_t *p = zlistx_first(g->updates); p; p = zlistx_next(g->updates), i++) {
        g->changed[i] = status_merge(cur, p->update, now_ms, &g->merged[i]);
        if (g->changed[i]) {
            cur = &g->merged[i].task;
            changes++;
        }
    }
    if (changes == 0)
        return 0;
    /* One write: the version moves by one whatever the number of merged reports. */
    Shoal__Meta *meta = (Shoal__Meta *)cur->meta;
    meta->version = (base->meta ? base->meta->version : 0) + 1;

    size_t len = protobuf_c_message_get_packed_size(&cur->base);
    g->value = malloc(len ? len : 1);
    if (!g->value)
        return -ENOMEM;
    protobuf_c_message_pack(&cur->base, g->value);

    Shoal__Store__Compare cmp = SHOAL__STORE__COMPARE__INIT;
    cmp.result = SHOAL__STORE__COMPARE__RESULT__EQUAL;
    cmp.target = SHOAL__STORE__COMPARE__TARGET__MOD;
    cmp.key = g->key;
    cmp.number = mod;
    g->compare = cmp;
    g->compares[0] = &g->compare;
    Shoal__Store__PutRequest put = SHOAL__STORE__PUT_REQUEST__INIT;
    put.key = g->key;
    put.value.data = g->value;
    put.value.len = len;
    g->put = put;
    Shoal__Store__RequestOp op = SHOAL__STORE__REQUEST_OP__INIT;
    op.request_case = SHOAL__STORE__REQUEST_OP__REQUEST_PUT;
    op.put = &g->put;
    g->op = op;
    g->ops[0] = &g->op;
    Shoal__Store__TxnRequest txn = SHOAL__STORE__TXN_REQUEST__INIT;
    txn.n_compare = 1;
    txn.compare = g->compares;
    txn.n_success = 1;
    txn.success = g->ops;
    g->txn = txn;
    return 1;
}

static void group_applied(status_queue_t *self, task_group_t *g) {
    size_t i = 0;
    for (pending_update_t *p = zlistx_first(g->updates); p; p = zlistx_next(g->updates), i++) {
        if (g->changed && g->changed[i]) {
            p->req->applied++;
            self->stats.applied_total++;
        }
    }
    group_finish(g, 0);
}

/* One batch over every unfinished group. Returns 0 or the batch call's -errno. */
static int flush_round(status_queue_t *self, zlistx_t *groups, int round, int64_t now_ms) {
    size_t n = zlistx_size(groups);
    task_group_t **writing = calloc(n ? n : 1, sizeof *writing);
    Shoal__Store__TxnRequest **txns = calloc(n ? n : 1, sizeof *txns);
    if (!writing || !txns) {
        free(writing);
        free(txns);
        return -ENOMEM;
    }
    size_t nw = 0;
    for (task_group_t *g = zlistx_first(groups); g; g = zlistx_next(groups)) {
        if (g->done)
            continue;
        int r = group_prepare(self, g, round, now_ms);
        if (r < 0) {
            group_finish(g, r);
        } else if (r == 0) {
            group_finish(g, 0);
        } else {
            writing[nw] = g;
            txns[nw++] = &g->txn;
        }
    }
    int rc = 0;
    if (nw > 0) {
        Shoal__Store__BatchRequest req = SHOAL__STORE__BATCH_REQUEST__INIT;
        req.n_txns = nw;
        req.txns = txns;
        Shoal__Store__BatchResponse *resp = NULL;
        self->stats.batches_total++;
        rc = self->ops.batch(self->ops.ctx, &req, &resp);
        if (rc == 0 && (!resp || resp->n_responses != nw))
            rc = -EPROTO;
        for (size_t i = 0; i < nw; i++) {
            if (rc < 0)
                group_finish(writing[i], rc);
            else if (resp->responses[i] && resp->responses[i]->succeeded)
                group_applied(self, writing[i]);
            else
                self->stats.conflicts_total++; /* re-read next round */
        }
        if (resp)
            protobuf_c_message_free_unpacked(&resp->base, NULL);
    }
    free(writing);
    free(txns);
    return rc;
}

int status_flush(status_queue_t *self, int64_t now_ms) {
    /* Take the queue: requests made by done() callbacks go to the next flush. */
    zlistx_t *requests = self->requests, *updates = self->updates;
    self->requests = zlistx_new();
    self->updates = zlistx_new();
    zlistx_t *groups = zlistx_new();
    zhashx_t *by_task = zhashx_new();
    if (!self->requests || !self->updates || !groups || !by_task) {
        zlistx_destroy(&self->requests);
        zlistx_destroy(&self->updates);
        self->requests = requests;
        self->updates = updates;
        zlistx_destroy(&groups);
        zhashx_destroy(&by_task);
        return -ENOMEM;
    }
    zlistx_set_destructor(self->requests, free_item);
    zlistx_set_destructor(self->updates, free_item);
    zlistx_set_destructor(groups, group_destroy);
    self->first_queued_ms = 0;

    int rc = 0;
    for (pending_update_t *p = zlistx_first(updates); p; p = zlistx_next(updates)) {
        const char *id = p->update->task_id ? p->update->task_id : "";
        task_group_t *g = zhashx_lookup(by_task, id);
        if (!g) {
            g = calloc(1, sizeof *g);
            if (g)
                g->updates = zlistx_new();
            if (!g || !g->updates || !zlistx_add_end(groups, g)) {
                if (g)
                    zlistx_destroy(&g->updates);
                free(g);
                p->req->err = -ENOMEM;
                rc = -ENOMEM;
                continue;
            }
            snprintf(g->task_id, sizeof g->task_id, "%s", id);
            snprintf(g->key, sizeof g->key, "/tasks/%s", id);
            g->node_id = p->node_id;
            zhashx_insert(by_task, g->task_id, g);
        }
        zlistx_add_end(g->updates, p);
    }

    for (int round = 0; round < STATUS_MAX_ROUNDS; round++) {
        bool todo = false;
        for (task_group_t *g = zlistx_first(groups); g && !todo; g = zlistx_next(groups))
            todo = !g->done;
        if (!todo)
            break;
        int r = flush_round(self, groups, round, now_ms);
        if (r < 0) {
            rc = r;
            break;
        }
    }
    /* Tasks still losing after every round: let the agent retry. */
    for (task_group_t *g = zlistx_first(groups); g; g = zlistx_next(groups))
        if (!g->done)
            group_finish(g, -EAGAIN);

    for (request_rec_t *r = zlistx_first(requests); r; r = zlistx_next(requests))
        self->ops.done(self->ops.ctx, r->request, r->err, r->applied);

    zhashx_destroy(&by_task);
    zlistx_destroy(&groups);
    zlistx_destroy(&updates);
    zlistx_destroy(&requests);
    return rc;
}
