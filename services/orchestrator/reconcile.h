/* reconcile — the orchestrator's decisions for one service, as pure logic (no I/O, no clock):
 * given the service, its tasks, the nodes and the time, list the writes that move the cluster
 * towards the spec (create a task, change a task's desired state, delete a task, update the
 * service's update status). manager.c feeds it from its store cache and writes the actions.
 *
 * Task fields this module gives a meaning to, beyond proto/objects.proto:
 *   restart_at_ms on a task whose desired_state is SHUTDOWN:
 *     > 0  a replacement is owed in the task's slot, to be created at that time (restart delay
 *          or crash-loop back-off) once the task has stopped running (stop-first); cleared to 0
 *          when it is created;
 *     -1   the slot is settled and must not be refilled: the restart policy declined to replace
 *          the task, or (jobs) the task completed successfully. Kept until the spec changes or
 *          the service is scaled;
 *      0   nothing owed: the slot is free unless another task holds it.
 *   Labels on a task's annotations:
 *     "shoal.restart.attempt"     how many restarts of this slot under the same spec led to it
 *                                 (restart.max_attempts without a window);
 *     "shoal.restart.backoff"     crash-loop back-off level of the task (0 or absent: none);
 *     "shoal.replaces.node-down"  the task was started because the task with this id sat on a
 *                                 node that went DOWN; cancelled if that node comes back first. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "objects.pb-c.h"

#define RECON_DEFAULT_HISTORY  5
#define RECON_RESTART_DECLINED (-1)
#define RECON_LABEL_ATTEMPT    "shoal.restart.attempt"
#define RECON_LABEL_BACKOFF    "shoal.restart.backoff"
#define RECON_LABEL_NODE_DOWN  "shoal.replaces.node-down"

/* Crash-loop back-off, used when the restart policy's delay is 0 (DESIGN §5): the n-th quick
 * failure in a row waits 0, 100, 200, 400 ... ms, at most 10 s; a task that ran for 10 s resets
 * it. */
#define RECON_BACKOFF_STEP_MS  100
#define RECON_BACKOFF_MAX_MS   10000
#define RECON_BACKOFF_RESET_MS 10000
/* SwarmKit's monitor period when a service has no update (or rollback) config at all. */
#define RECON_DEFAULT_MONITOR_MS 5000

typedef struct recon_task {
    Shoal__Task *task;
    int64_t mod_revision;     /* the store revision the task was read at (for compare-and-swap) */
    int64_t running_since_ms; /* when the task was first seen RUNNING (agent's timestamp); 0 =
                                 not seen (then a RUNNING task's status timestamp is used) */
} recon_task_t;

typedef struct recon_input {
    const Shoal__Service *service; /* NULL: the service is gone and its tasks must go */
    int64_t service_mod_revision;
    const recon_task_t *tasks; /* every task whose service_id is the service's */
    size_t n_tasks;
    Shoal__Node *const *nodes; /* every node of the cluster */
    size_t n_nodes;
    int64_t now_ms;                 /* wall clock, as written in task timestamps */
    uint64_t default_history_limit; /* /cluster's task_history_limit; 0 = 5 */
    /* Writes a new task id (>= 26 bytes); NULL = id_random(). */
    void (*new_id)(void *ctx, char *buf);
    void *new_id_ctx;
} recon_input_t;

enum recon_op {
    RECON_CREATE_TASK,    /* new_task: put with compare "key absent" */
    RECON_UPDATE_TASK,    /* task gets desired_state and restart_at_ms; compare mod_revision */
    RECON_DELETE_TASK,    /* compare mod_revision */
    RECON_UPDATE_SERVICE, /* new_service replaces the service; compare mod_revision */
};

typedef struct recon_action {
    enum recon_op op;
    const char *why; /* static text for logs: "scale-up", "restart", "update", "reap", ... */
    const Shoal__Task *task; /* UPDATE/DELETE: the input task (borrowed) */
    int64_t mod_revision;
    Shoal__TaskState desired_state; /* UPDATE */
    int64_t restart_at_ms;          /* UPDATE */
    Shoal__Task *new_task;          /* CREATE: owned by the result */
    Shoal__Service *new_service;    /* UPDATE_SERVICE: owned by the result */
} recon_action_t;

typedef struct recon_result {
    recon_action_t *actions;
    size_t n_actions;
    size_t cap;
    int64_t wake_at_ms; /* 0, or when to reconcile this service again (delays, monitor) */
    uint64_t tasks_created;
    uint64_t restarts; /* replacements decided by the restart policy or a node failure */
    int err;           /* -ENOMEM when an allocation failed (the result is then partial) */
} recon_result_t;

/* Computes the actions for in->service (any mode) or, when it is NULL, for its orphaned tasks.
 * Appends to `out` (zero-initialised by the caller). Returns 0 or -ENOMEM. */
int reconcile_service(const recon_input_t *in, recon_result_t *out);

/* Frees the owned tasks/services and the array; leaves *r zeroed. */
void recon_result_clear(recon_result_t *r);

/* A copy of `task` with the UPDATE applied (desired_state, restart_at_ms, meta.version + 1,
 * meta.updated_at_ms = now). NULL on allocation failure. Free with
 * protobuf_c_message_free_unpacked(). */
Shoal__Task *recon_task_apply(const recon_action_t *a, int64_t now_ms);

/* Deep copy of any message (pack + unpack). NULL on allocation failure. */
ProtobufCMessage *recon_copy_message(const ProtobufCMessage *msg);

/* Whether two messages encode to the same bytes (both NULL counts as equal). */
bool recon_message_equal(const ProtobufCMessage *a, const ProtobufCMessage *b);

/* Helpers shared with api.c and tests. */
const char *recon_task_state_name(int state);
bool recon_is_global(const Shoal__Service *s); /* global service or global job */
bool recon_is_replicated(const Shoal__Service *s);
bool recon_is_job(const Shoal__Service *s);
/* The spec asks Docker for a healthcheck (a test other than NONE). */
bool recon_task_has_healthcheck(const Shoal__Task *t);
/* RUNNING and, when the spec has a healthcheck, reported healthy: the rule updates, convergence
 * and ServiceList counts use. */
bool recon_task_running(const Shoal__Task *t);
/* A replicated job's (total completions, max concurrent) with the defaults applied: total 0 =
 * max_concurrent (or 1), max_concurrent 0 = total. */
void recon_job_limits(const Shoal__Service *s, uint64_t *ret_total, uint64_t *ret_max_concurrent);
