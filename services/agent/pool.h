/* pool — a few threads (CZMQ actors) that run blocking executor calls for the agent's main loop,
 * so a slow pull or stop never delays heartbeats or status reports.
 *
 * The main loop submits jobs; each thread owns its own executor_t (opened from the factory)
 * and runs one job at a time; finished jobs come back through the thread's pipe and the job's
 * `done` callback runs in the main loop, which then owns the job. With 0 threads the pool runs
 * each job inline inside pool_submit() (unit tests, and the sim executor, whose calls never
 * block). An inline pool may also model a runtime's latency (pool_set_latency): the job still runs
 * at once, but its completion is handed back later, from a timer of the loop. */
#pragma once
#include <czmq.h>

#include "controller.h"
#include "executor.h"

typedef struct agent_job agent_job_t;
typedef void(agent_job_done_fn)(void *ctx, agent_job_t *job);

struct agent_job {
    agent_op_t op;
    char task_id[EXECUTOR_TASK_ID_MAX];
    char node_id[EXECUTOR_TASK_ID_MAX]; /* LIST: whose containers */
    char container_id[EXECUTOR_ID_MAX];
    Shoal__Task *task; /* PREPARE: an owned copy */
    int grace_s;
    ctl_result_t res;
    /* DESCRIBE / LIST results, owned by the job until taken */
    Shoal__NodeDescription *desc;
    executor_container_t *list;
    size_t nlist;
    int64_t started_ms, ended_ms; /* monotonic */
    int64_t due_ms;               /* latency: when the completion is handed back */
    agent_job_done_fn *done;
    void *ctx;
};

/* A job for `op`; task (copied) may be NULL. NULL on allocation failure. */
agent_job_t *agent_job_new(agent_op_t op, const char *task_id, const Shoal__Task *task,
                           const char *container_id, agent_job_done_fn *done, void *ctx);
void agent_job_destroy(agent_job_t **self_p);
/* Runs the job against `ex` (blocking). */
void agent_job_run(agent_job_t *job, executor_t *ex);

typedef struct pool pool_t;

/* `factory` is copied. threads 0 = inline. */
pool_t *pool_new(const executor_factory_t *factory, int threads);
/* Inline pools: how many ms after a job ran its completion is handed back (0 = at once, inside
 * pool_submit). Set before pool_attach(), whose loop timer hands the delayed ones back. */
typedef int64_t(pool_latency_fn)(void *ctx, const agent_job_t *job);
void pool_set_latency(pool_t *self, pool_latency_fn *fn, void *ctx);
/* Hands back every delayed completion due at `now_ms` (the timer calls it; tests may too). */
size_t pool_deliver_due(pool_t *self, int64_t now_ms);
/* Interrupts calls in progress, stops the threads, frees jobs never handed back (without their
 * callbacks). Leaves the loop alone: call it after the loop is destroyed. */
void pool_destroy(pool_t **self_p);
int pool_attach(pool_t *self, zloop_t *loop);
/* Takes the job; its `done` runs later in the loop (or now, inline). */
void pool_submit(pool_t *self, agent_job_t *job);
size_t pool_threads(const pool_t *self);
size_t pool_queued(const pool_t *self);
size_t pool_delayed(const pool_t *self);
size_t pool_running(const pool_t *self);
uint64_t pool_jobs_total(const pool_t *self);
uint64_t pool_jobs_failed(const pool_t *self);
