/* worker — the agent's task table: reconciles the dispatcher's assignment set with the
 * containers the executor runs, drives each task with its controller, and keeps the status
 * changes the dispatcher has not acknowledged yet.
 *
 * Single-threaded: every function runs in the agent's main loop; blocking executor calls go
 * through the pool (pool.h) and come back as job completions. With an inline pool (0 threads)
 * every call completes inside the function that caused it, which is how the unit tests drive
 * it with a fake executor.
 *
 * Re-attach: nothing is decided about existing containers before both the executor's container
 * list and the first assignment set are in. Then a container whose task is assigned is adopted
 * (inspected, never recreated) and one whose task is not assigned is removed. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "controller.h"
#include "dispatcher.pb-c.h"
#include "executor.h"
#include "pool.h"

typedef struct worker worker_t;

/* TaskState values are multiples of 32 below 1024 (REMOVE = 800 is not one of 64). */
#define WORKER_STATE_SLOTS        32
#define WORKER_STATE_INDEX(state) ((unsigned)(state) / 32u)

typedef struct worker_stats {
    uint64_t tasks_by_state[WORKER_STATE_SLOTS]; /* index: WORKER_STATE_INDEX(state) */
    uint64_t tasks;
    uint64_t events_seen;
    uint64_t resyncs;
    uint64_t containers_adopted;
    uint64_t containers_removed;
    uint64_t assignments;
    uint64_t engine_calls;
    uint64_t engine_errors;
} worker_stats_t;

/* A batch of status updates taken for one UpdateTaskStatus call. */
typedef struct worker_batch worker_batch_t;

worker_t *worker_new(pool_t *pool);
void worker_destroy(worker_t **self_p);

/* The node the tasks run on (for logs; the dispatcher sets it in each task too). */
void worker_set_node_id(worker_t *self, const char *node_id);

/* Lists the executor's containers (at start and after the event stream reconnects). */
void worker_resync(worker_t *self);
/* The full assignment set (tasks with this node's id, state >= ASSIGNED). */
void worker_set_assignments(worker_t *self, Shoal__Task *const *tasks, size_t n);
void worker_on_event(worker_t *self, const executor_event_t *ev);
/* Retries whose time has come (call every few hundred ms). */
void worker_tick(worker_t *self);
/* True once the executor's containers were listed (the runtime answered). */
bool worker_listed(const worker_t *self);

/* ---- reporting ---------------------------------------------------------------------------- */

size_t worker_dirty_count(const worker_t *self);
/* Up to `max` unacknowledged status changes (NULL when none). */
worker_batch_t *worker_batch_take(worker_t *self, size_t max);
size_t worker_batch_size(const worker_batch_t *batch);
Shoal__Dispatcher__TaskStatusUpdate **worker_batch_updates(worker_batch_t *batch);
/* The dispatcher applied the batch: tasks not changed since are clean. */
void worker_batch_ack(worker_t *self, const worker_batch_t *batch);
void worker_batch_destroy(worker_batch_t **self_p);
/* Report every task again (after a new session). */
void worker_mark_all_dirty(worker_t *self);
/* Called (from inside the worker) whenever the number of dirty tasks reaches `threshold`. */
void worker_set_flush_hint(worker_t *self, size_t threshold, void (*fn)(void *ctx), void *ctx);

/* ---- introspection ------------------------------------------------------------------------ */

/* The task with this id, NULL when not assigned. Valid until the next call into the worker. */
agent_task_t *worker_task(worker_t *self, const char *task_id);
/* Every task, sorted by id; free() the array (not the tasks). */
agent_task_t **worker_tasks(worker_t *self, size_t *ret_n);
void worker_get_stats(worker_t *self, worker_stats_t *ret);
