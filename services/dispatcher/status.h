/* status — batched task status writes for dispatcher.UpdateTaskStatus: the forward-only merge
 * of an agent's report into a task, and the queue flushed as one store.Batch. See status.c. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dispatcher.pb-c.h"
#include "objects.pb-c.h"
#include "store.pb-c.h"

#define STATUS_FLUSH_INTERVAL_MS 50   /* the oldest queued update waits at most this long */
#define STATUS_FLUSH_UPDATES     1000 /* ... or until this many are queued */
#define STATUS_MAX_ROUNDS        5    /* batch + retries of the tasks whose CAS lost */

/* A merged task: shallow, pointing into the base task and the update (keep both alive while
 * this is used). */
typedef struct status_merged {
    Shoal__Task task;
    Shoal__Meta meta;
    Shoal__TaskStatus status;
} status_merged_t;

/* Applies an agent's report `u` to `base` into `out` (base is not modified). The status is
 * replaced only when the reported state is >= the current one (states never move backwards); an
 * equal state may change message, err, container and networks. Networks, when the report has
 * any, replace the task's. meta.version is bumped and updated_at set to now_ms. Returns true when
 * the task changed (out is then what to write), false when the report changes nothing. */
bool status_merge(const Shoal__Task *base, const Shoal__Dispatcher__TaskStatusUpdate *u,
                  int64_t now_ms, status_merged_t *out);

/* What the queue needs from the daemon. */
typedef struct status_ops {
    /* The task as last seen by the watch, and its mod revision; NULL when unknown. */
    const Shoal__Task *(*lookup)(void *ctx, const char *task_id, int64_t *ret_mod_revision);
    /* store.Batch and store.Get (lib/storecli.h signatures). */
    int (*batch)(void *ctx, const Shoal__Store__BatchRequest *req,
                 Shoal__Store__BatchResponse **ret);
    int (*get)(void *ctx, const char *key, Shoal__Store__KeyValue **ret);
    /* Every queued request comes back here once, after the batch carrying its updates is
     * durable (err 0) or failed (err < 0); `applied` counts its updates that were written. */
    void (*done)(void *ctx, void *request, int err, uint32_t applied);
    void *ctx;
} status_ops_t;

typedef struct status_stats {
    uint64_t updates_total;   /* updates queued */
    uint64_t applied_total;   /* updates written */
    uint64_t batches_total;   /* store.Batch calls */
    uint64_t conflicts_total; /* Txns whose compare failed (re-read and retried) */
} status_stats_t;

typedef struct status_queue status_queue_t;

status_queue_t *status_queue_new(const status_ops_t *ops);
/* Requests still queued are handed to done() with -ECANCELED. */
void status_queue_destroy(status_queue_t **self_p);

/* Queues the updates of one request (now_ms: monotonic, for the flush deadline) from node `node_id`
 * (validated by the caller: each task was in that node's set). `updates` (and node_id) must stay
 * valid until done() is called for `request`. Returns 0 or -ENOMEM. With n == 0 the request is done
 * at the next flush. */
int status_enqueue(status_queue_t *self, void *request, const char *node_id,
                   Shoal__Dispatcher__TaskStatusUpdate *const *updates, size_t n, int64_t now_ms);
/* Updates queued and not yet flushed. */
size_t status_pending(const status_queue_t *self);
/* Monotonic ms at which the queue must be flushed (0 = empty). */
int64_t status_due(const status_queue_t *self);
/* Writes every queued update (now_ms: wall clock, for timestamps): one store.Batch of one Txn per
 * task (compare its mod revision, put the merged task), then retries the tasks that lost the
 * compare after re-reading them. Calls done() for every request. Returns 0 or the batch's -errno.
 */
int status_flush(status_queue_t *self, int64_t now_ms);
void status_queue_stats(const status_queue_t *self, status_stats_t *ret);
