/* controller — one task's state machine on the agent (SwarmKit's exec.Do, split in two).
 *
 * ctl_step() looks at a task's state and desired state and either moves it one state forward
 * by itself (ASSIGNED→ACCEPTED→PREPARING, READY→STARTING, →SHUTDOWN without a container, a
 * recorded exit → COMPLETE/FAILED) or names the one blocking executor call that must come next
 * (prepare+create, start, stop, inspect). The caller runs that call wherever it likes (a pool
 * thread; inline in tests) with ctl_run() and hands the result to ctl_apply(). States only move
 * forward: ctl_set_state() refuses anything else. Everything here is pure but for ctl_run().
 *
 * Health: a task whose container has a health check (the spec's, or the image's as the runtime
 * reports it) is RUNNING but not healthy until the runtime says "healthy"; "unhealthy" fails it
 * ("task: container unhealthy") and its container is then stopped (`reap`). */
#pragma once
#include <stdbool.h>
#include <stdint.h>

#include "executor.h"
#include "objects.pb-c.h"

typedef enum agent_op {
    AGENT_OP_NONE = 0,
    AGENT_OP_PREPARE, /* executor prepare (image, network) then create */
    AGENT_OP_START,   /* start, then inspect (pid, IP, an exit that came at once) */
    AGENT_OP_STOP,    /* stop with the grace period, then inspect (exit code) */
    AGENT_OP_INSPECT, /* learn what the container is doing (adoption, resync) */
    AGENT_OP_REMOVE,  /* force-remove a container (task gone from the assignment set) */
    AGENT_OP_DESCRIBE,
    AGENT_OP_LIST,
} agent_op_t;

typedef struct agent_task {
    char id[EXECUTOR_TASK_ID_MAX];
    Shoal__Task *task;        /* the latest assignment, owned (an unpacked copy) */
    Shoal__TaskState desired; /* forward only, like the state */

    /* The task's status as this agent knows it; what it reports. */
    Shoal__TaskState state;
    char message[256];
    char err[EXECUTOR_ERR_MAX];
    int64_t timestamp_ms;
    char container_id[EXECUTOR_ID_MAX];
    int pid;
    int exit_code;
    char ip[48];

    /* Controller bookkeeping. */
    bool busy; /* an executor call is in flight for this task */
    agent_op_t busy_op;
    bool need_inspect; /* look at the container before anything else */
    bool exited;       /* a die event arrived; applied when the state allows */
    int exited_code;
    bool oom;            /* an oom event arrived */
    int64_t retry_at_ms; /* monotonic; 0 = now */
    int retries;

    /* Health. */
    bool has_healthcheck;   /* the spec has one (not NONE), or the runtime reports a health state */
    int health;             /* CTL_HEALTH_*: the runtime's last verdict */
    bool health_from_event; /* `health` came from an event: newer than any inspect in flight */
    bool reap; /* terminal, but its container may still run (unhealthy, adopted): stop it */

    /* Reporting: dirty while status_seq > acked_seq. */
    uint64_t status_seq;
    uint64_t acked_seq;
} agent_task_t;

enum {
    CTL_HEALTH_UNKNOWN = 0, /* no verdict yet (starting), or no health check */
    CTL_HEALTH_HEALTHY,
    CTL_HEALTH_UNHEALTHY,
};

#define CTL_UNHEALTHY_MESSAGE "task: container unhealthy"

typedef enum ctl_step {
    CTL_IDLE = 0, /* nothing to do until something happens */
    CTL_CHANGED,  /* the state moved; call again */
    CTL_RUN,      /* run *ret_op, then ctl_apply() */
} ctl_step_t;

typedef struct ctl_result {
    int rc;
    char err[EXECUTOR_ERR_MAX];
    char container_id[EXECUTOR_ID_MAX]; /* PREPARE: the created container */
    bool have_info;
    executor_container_t info; /* START/STOP/INSPECT: the container after the call */
} ctl_result_t;

/* A task as first assigned (copies `task`); its state starts from the dispatcher's status. */
agent_task_t *agent_task_new(const Shoal__Task *task);
void agent_task_destroy(agent_task_t **self_p);
/* A newer assignment of the same task: new spec copy, desired state (forward only), and the
 * dispatcher's status when it is ahead of ours (after our restart). -ENOMEM on failure. */
int agent_task_update(agent_task_t *self, const Shoal__Task *task);
bool agent_task_dirty(const agent_task_t *self);
bool agent_task_terminal(const agent_task_t *self);

/* Moves the state forward (and stamps the time); -EINVAL, and no change, for a backwards or
 * same-state move. message/err may be NULL (= ""). */
int ctl_set_state(agent_task_t *t, Shoal__TaskState state, const char *message, const char *err);
ctl_step_t ctl_step(agent_task_t *t, int64_t now_ms, agent_op_t *ret_op);
/* Runs `op` for the task (blocking). task is needed for PREPARE, container_id for the others. */
void ctl_run(executor_t *ex, agent_op_t op, const Shoal__Task *task, const char *container_id,
             int grace_s, ctl_result_t *ret);
void ctl_apply(agent_task_t *t, agent_op_t op, const ctl_result_t *res, int64_t now_ms);
/* Events from the runtime. An event for another container than the task's is ignored. */
void ctl_on_exit(agent_task_t *t, const char *container_id, int exit_code);
void ctl_on_oom(agent_task_t *t, const char *container_id);
/* A health_status event: healthy true/false. */
void ctl_on_health(agent_task_t *t, const char *container_id, bool healthy);
/* What the task reports as status.healthy: RUNNING, and either without a health check or with
 * the runtime's last verdict "healthy". */
bool ctl_task_healthy(const agent_task_t *t);
/* True when the spec carries a health check that runs (test not empty, not ["NONE"]). */
bool ctl_spec_has_healthcheck(const Shoal__Task *task);

const char *agent_op_name(agent_op_t op);
const char *task_state_name(int state);
/* True for errors worth retrying (runtime down, slow, interrupted), false for final ones. */
bool ctl_error_is_transient(int rc);
