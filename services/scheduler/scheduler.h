/* scheduler — the placement core of shoal-scheduler, with no I/O: it is fed nodes and tasks (from
 * the store's list + watch), and scheduler_tick() decides where PENDING tasks go. The daemon
 * writes the decisions and reports back which ones landed. See scheduler.c for the algorithm. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "objects.pb-c.h"
#include "placement.h"

typedef struct scheduler scheduler_t;

#define SCHEDULER_ASSIGNED_MESSAGE "scheduler assigned task to node"

/* One decision of a tick: write `task` at /tasks/<task_id> if that key's mod revision is still
 * `mod_revision`. */
typedef struct scheduler_decision {
    const char *task_id;
    int64_t mod_revision;    /* the revision of the task the decision was based on */
    const char *node_id;     /* the node it was assigned to; NULL when it fits nowhere */
    const char *err;         /* node_id == NULL: "no suitable node (...)" */
    const Shoal__Task *task; /* the task to write: state ASSIGNED + node_id, or the new err;
                                status.timestamp_ms and meta.version/updated_at_ms updated */
} scheduler_decision_t;

typedef struct scheduler_stats {
    uint64_t nodes;          /* nodes known (with a Node object) */
    uint64_t tasks;          /* tasks known */
    uint64_t pending;        /* PENDING tasks waiting for a node (not in flight) */
    uint64_t in_flight;      /* decisions not yet committed or aborted */
    uint64_t placed_total;   /* assignments committed */
    uint64_t unplaced_total; /* "no suitable node" errors committed */
    uint64_t ticks;
} scheduler_stats_t;

scheduler_t *scheduler_new(void);
void scheduler_destroy(scheduler_t **self_p);

/* A node was created or updated (takes ownership of `node`, which must have meta.id). */
int scheduler_put_node(scheduler_t *self, Shoal__Node *node);
void scheduler_delete_node(scheduler_t *self, const char *node_id);

/* A task was created or updated at the store revision `mod_revision` (takes ownership of
 * `task`, which must have meta.id). An older revision than the one held is ignored. */
int scheduler_put_task(scheduler_t *self, Shoal__Task *task, int64_t mod_revision);
void scheduler_delete_task(scheduler_t *self, const char *task_id);

/* Places every PENDING task it can, as of `now_ms` (wall clock, for timestamps): preassigned
 * tasks (node_id set) are checked for resources, the others are grouped by (service, spec
 * version) and spread over the nodes that pass the filters. Tasks that fit nowhere get a decision
 * only when their status.err changes. The scheduler counts each decision at once (so the next
 * tick sees the node's new load) and keeps it in flight until scheduler_commit() or
 * scheduler_abort(). *ret is owned by the scheduler and valid until the next call that changes
 * state (tick, put, delete, commit/abort of that decision). */
int scheduler_tick(scheduler_t *self, int64_t now_ms, const scheduler_decision_t **ret,
                   size_t *ret_n);

/* The decision for `task_id` was written at `new_mod_revision` (0 if unknown). */
void scheduler_commit(scheduler_t *self, const char *task_id, int64_t new_mod_revision);
/* The decision was not written. `stale`: its compare failed, so a newer version is on its way
 * (the task is skipped until it arrives); otherwise (store unavailable) the next tick retries. */
void scheduler_abort(scheduler_t *self, const char *task_id, bool stale);

/* The strategy of groups whose spec names none (spec.task.placement.strategy ""): the cluster's
 * default, spread until set. */
void scheduler_set_default_strategy(scheduler_t *self, placement_strategy_t strategy);
placement_strategy_t scheduler_default_strategy(const scheduler_t *self);
/* Seeds the random strategy (tests use a fixed seed; the daemon seeds from the clock). */
void scheduler_set_seed(scheduler_t *self, uint64_t seed);

void scheduler_get_stats(const scheduler_t *self, scheduler_stats_t *ret);
/* Calls fn for every pending task (effective view), in no particular order. */
void scheduler_each_pending(scheduler_t *self, void (*fn)(void *ctx, const Shoal__Task *task),
                            void *ctx);
/* The task as the scheduler holds it (its in-flight view, if any); NULL when unknown. */
const Shoal__Task *scheduler_find_task(scheduler_t *self, const char *task_id);
/* Number of tasks counted on a node (0 when unknown). */
int64_t scheduler_node_tasks(scheduler_t *self, const char *node_id);
