/* pool — runs blocking executor calls on a fixed set of actor threads (see pool.h).
 *
 * Protocol on each thread's pipe (PAIR, inproc): main → thread "JOB" <pointer>; thread → main
 * "DONE" <pointer>. A job pointer is owned by exactly one side at a time. The queue of waiting
 * jobs lives in the main thread; a thread is fed as soon as it hands a job back. At shutdown
 * every thread's executor is interrupted first (a pull may otherwise take minutes), then the
 * actors are destroyed, and jobs still inside them are freed here.
 *
 * Latency (inline pools): a job runs inside pool_submit() as usual; when the latency function
 * gives it a delay, it waits in `delayed`, sorted by due time, and a loop timer hands it back.
 * Delays are mostly one constant, so the sorted insert almost always appends. */
#include "pool.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "log.h"

typedef struct pool_thread {
    pool_t *pool;
    zactor_t *actor;
    executor_t *ex;   /* set by the thread before it signals ready; used here only to interrupt */
    agent_job_t *job; /* the job it holds, NULL when idle */
    int index;
} pool_thread_t;

struct pool {
    executor_factory_t factory;
    pool_thread_t *threads;
    size_t nthreads;
    zlistx_t *queue; /* agent_job_t*, waiting for a thread */
    executor_t *inline_ex;
    pool_latency_fn *latency_fn;
    void *latency_ctx;
    zlistx_t *delayed; /* agent_job_t*, ran, completion due at job->due_ms (ascending) */
    size_t running;
    uint64_t jobs_total;
    uint64_t jobs_failed;
};

agent_job_t *agent_job_new(agent_op_t op, const char *task_id, const Shoal__Task *task,
                           const char *container_id, agent_job_done_fn *done, void *ctx) {
    agent_job_t *job = calloc(1, sizeof *job);
    if (!job)
        return NULL;
    job->op = op;
    snprintf(job->task_id, sizeof job->task_id, "%s", task_id ? task_id : "");
    snprintf(job->container_id, sizeof job->container_id, "%s", container_id ? container_id : "");
    if (task) {
        size_t len = protobuf_c_message_get_packed_size(&task->base);
        uint8_t *buf = malloc(len ? len : 1);
        if (buf) {
            protobuf_c_message_pack(&task->base, buf);
            job->task = shoal__task__unpack(NULL, len, buf);
            free(buf);
        }
        if (!job->task) {
            free(job);
            return NULL;
        }
    }
    job->done = done;
    job->ctx = ctx;
    job->res.info.exit_code = -1;
    return job;
}

void agent_job_destroy(agent_job_t **self_p) {
    if (!self_p || !*self_p)
        return;
    agent_job_t *job = *self_p;
    if (job->task)
        shoal__task__free_unpacked(job->task, NULL);
    if (job->desc)
        protobuf_c_message_free_unpacked(&job->desc->base, NULL);
    free(job->list);
    free(job);
    *self_p = NULL;
}

void agent_job_run(agent_job_t *job, executor_t *ex) {
    job->started_ms = clock_mono_ms();
    switch (job->op) {
    case AGENT_OP_DESCRIBE:
        memset(&job->res, 0, sizeof job->res);
        job->res.rc = ex->ops->describe(ex, &job->desc, job->res.err, sizeof job->res.err);
        break;
    case AGENT_OP_LIST:
        memset(&job->res, 0, sizeof job->res);
        job->res.rc = ex->ops->list(ex, job->node_id, &job->list, &job->nlist, job->res.err,
                                    sizeof job->res.err);
        break;
    default:
        ctl_run(ex, job->op, job->task, job->container_id, job->grace_s, &job->res);
    }
    job->ended_ms = clock_mono_ms();
}

static void pool_thread_actor(zsock_t *pipe, void *args) {
    pool_thread_t *th = args;
    executor_t *ex = th->pool->factory.open(&th->pool->factory);
    th->ex = ex;
    zsock_signal(pipe, 0);
    while (true) {
        char *cmd = NULL;
        void *ptr = NULL;
        if (zsock_recv(pipe, "sp", &cmd, &ptr) < 0) {
            if (errno == EINTR)
                continue; /* a signal landed on this thread: only $TERM ends us */
            break;
        }
        bool term = cmd && strcmp(cmd, "$TERM") == 0;
        if (!term && cmd && strcmp(cmd, "JOB") == 0 && ptr) {
            agent_job_t *job = ptr;
            if (ex) {
                agent_job_run(job, ex);
            } else {
                job->res.rc = -ENOMEM;
                snprintf(job->res.err, sizeof job->res.err, "cannot open the %s executor",
                         th->pool->factory.name);
            }
            zsock_send(pipe, "sp", "DONE", job);
        }
        zstr_free(&cmd);
        if (term)
            break;
    }
    th->ex = NULL;
    executor_close(&ex);
}

static int cmp_due(const void *a, const void *b) {
    int64_t x = ((const agent_job_t *)a)->due_ms, y = ((const agent_job_t *)b)->due_ms;
    return x < y ? -1 : x > y ? 1 : 0;
}

static void complete(pool_t *self, agent_job_t *job) {
    if (job->done)
        job->done(job->ctx, job);
    else
        agent_job_destroy(&job);
}

size_t pool_deliver_due(pool_t *self, int64_t now_ms) {
    size_t n = 0;
    agent_job_t *job;
    while ((job = zlistx_first(self->delayed)) && job->due_ms <= now_ms) {
        zlistx_detach_cur(self->delayed);
        complete(self, job);
        n++;
    }
    return n;
}

static int on_latency_timer(zloop_t *loop, int timer_id, void *arg) {
    pool_deliver_due(arg, clock_mono_ms());
    return 0;
}

void pool_set_latency(pool_t *self, pool_latency_fn *fn, void *ctx) {
    self->latency_fn = fn;
    self->latency_ctx = ctx;
}

static void feed(pool_t *self, pool_thread_t *th) {
    agent_job_t *job = zlistx_detach(self->queue, NULL);
    if (!job)
        return;
    th->job = job;
    self->running++;
    zsock_send(th->actor, "sp", "JOB", job);
}

static int on_thread_done(zloop_t *loop, zsock_t *reader, void *arg) {
    pool_thread_t *th = arg;
    pool_t *self = th->pool;
    char *cmd = NULL;
    void *ptr = NULL;
    if (zsock_recv(reader, "sp", &cmd, &ptr) < 0)
        return 0;
    bool done = cmd && strcmp(cmd, "DONE") == 0 && ptr && ptr == th->job;
    zstr_free(&cmd);
    if (!done)
        return 0;
    agent_job_t *job = th->job;
    th->job = NULL;
    self->running--;
    self->jobs_total++;
    if (job->res.rc < 0)
        self->jobs_failed++;
    feed(self, th);
    if (job->done)
        job->done(job->ctx, job);
    else
        agent_job_destroy(&job);
    return 0;
}

pool_t *pool_new(const executor_factory_t *factory, int threads) {
    pool_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->factory = *factory;
    self->queue = zlistx_new();
    self->delayed = zlistx_new();
    if (!self->queue || !self->delayed) {
        zlistx_destroy(&self->queue);
        zlistx_destroy(&self->delayed);
        free(self);
        return NULL;
    }
    zlistx_set_comparator(self->delayed, cmp_due);
    if (threads < 0)
        threads = 0;
    if (threads) {
        self->threads = calloc((size_t)threads, sizeof *self->threads);
        if (!self->threads) {
            pool_destroy(&self);
            return NULL;
        }
        for (int i = 0; i < threads; i++) {
            pool_thread_t *th = &self->threads[i];
            th->pool = self;
            th->index = i;
            th->actor = zactor_new(pool_thread_actor, th);
            if (!th->actor) {
                pool_destroy(&self);
                return NULL;
            }
            self->nthreads++;
        }
    }
    return self;
}

void pool_destroy(pool_t **self_p) {
    if (!self_p || !*self_p)
        return;
    pool_t *self = *self_p;
    for (size_t i = 0; i < self->nthreads; i++)
        if (self->threads[i].ex && self->threads[i].ex->ops->interrupt)
            self->threads[i].ex->ops->interrupt(self->threads[i].ex);
    for (size_t i = 0; i < self->nthreads; i++) {
        zactor_destroy(&self->threads[i].actor);
        agent_job_destroy(&self->threads[i].job);
    }
    free(self->threads);
    agent_job_t *job;
    while ((job = zlistx_detach(self->queue, NULL)))
        agent_job_destroy(&job);
    while ((job = zlistx_detach(self->delayed, NULL)))
        agent_job_destroy(&job);
    zlistx_destroy(&self->queue);
    zlistx_destroy(&self->delayed); /* the latency timer goes with the loop */
    executor_close(&self->inline_ex);
    free(self);
    *self_p = NULL;
}

#define LATENCY_TICK_MS 5

int pool_attach(pool_t *self, zloop_t *loop) {
    for (size_t i = 0; i < self->nthreads; i++)
        if (zloop_reader(loop, zactor_sock(self->threads[i].actor), on_thread_done,
                         &self->threads[i]) < 0)
            return -ENOMEM;
    if (!self->nthreads && self->latency_fn &&
        zloop_timer(loop, LATENCY_TICK_MS, 0, on_latency_timer, self) < 0)
        return -ENOMEM;
    return 0;
}

void pool_submit(pool_t *self, agent_job_t *job) {
    if (!self->nthreads) {
        if (!self->inline_ex)
            self->inline_ex = self->factory.open(&self->factory);
        if (self->inline_ex) {
            agent_job_run(job, self->inline_ex);
        } else {
            job->res.rc = -ENOMEM;
            snprintf(job->res.err, sizeof job->res.err, "cannot open the %s executor",
                     self->factory.name);
        }
        self->jobs_total++;
        if (job->res.rc < 0)
            self->jobs_failed++;
        int64_t delay = self->latency_fn ? self->latency_fn(self->latency_ctx, job) : 0;
        if (delay > 0) {
            job->due_ms = clock_mono_ms() + delay;
            zlistx_insert(self->delayed, job, false); /* sorted, searched from the end */
            return;
        }
        complete(self, job);
        return;
    }
    zlistx_add_end(self->queue, job);
    for (size_t i = 0; i < self->nthreads; i++) {
        if (!self->threads[i].job) {
            feed(self, &self->threads[i]);
            break;
        }
    }
}

size_t pool_threads(const pool_t *self) {
    return self->nthreads;
}

size_t pool_queued(const pool_t *self) {
    return zlistx_size(self->queue);
}

size_t pool_delayed(const pool_t *self) {
    return zlistx_size(self->delayed);
}

size_t pool_running(const pool_t *self) {
    return self->running;
}

uint64_t pool_jobs_total(const pool_t *self) {
    return self->jobs_total;
}

uint64_t pool_jobs_failed(const pool_t *self) {
    return self->jobs_failed;
}
