/* sim_executor — the executor interface (executor.h) over in-memory containers, for
 * `shoal-agent --sim-nodes N`: thousands of simulated nodes whose tasks go through the very same
 * controller (controller.c) and task table (worker.c) as Docker containers do.
 *
 * A container is a row in one table shared by every node of the process (as one Docker Engine
 * may be shared by several agents): create adds it ("created"), start makes it "running" (or
 * fails, with probability failure_rate, as a runtime that cannot start a process would: the task
 * ends FAILED), stop makes it "exited" with code 0, remove deletes it. Nothing ever exits on its
 * own, so there are no events. list() filters by the node id recorded at create (the task's
 * node_id), so each simulated node sees only its own containers.
 *
 * Every call is instant and takes the runtime's lock, so instances may live on any thread; the
 * agent runs them inline (pool.c with 0 threads) and models start latency by delaying the
 * completion, not here. Invariant: a task id has at most one container (create returns the
 * existing one, like the Docker executor does after a lost reply). */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "executor.h"

typedef struct sim_container {
    char id[EXECUTOR_ID_MAX];
    char task_id[EXECUTOR_TASK_ID_MAX];
    char node_id[EXECUTOR_TASK_ID_MAX];
    char status[16];
    bool running;
    int exit_code;
    int pid;
} sim_container_t;

struct sim_runtime {
    pthread_mutex_t lock;
    zhashx_t *by_id;   /* container id -> sim_container_t (owned) */
    zhashx_t *by_task; /* task id -> sim_container_t (borrowed from by_id) */
    double failure_rate;
    uint64_t rng;
    uint64_t seq;
    size_t running;
};

typedef struct sim_executor {
    executor_t base;
    sim_runtime_t *rt;
} sim_executor_t;

static void container_free(void **item) {
    free(*item);
    *item = NULL;
}

/* xorshift64*: enough to decide which starts fail, and reproducible from a seed. */
static double rng_next(sim_runtime_t *rt) {
    uint64_t x = rt->rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    rt->rng = x;
    return (double)((x * 0x2545F4914F6CDD1DULL) >> 11) / (double)(1ULL << 53);
}

sim_runtime_t *sim_runtime_new(double failure_rate, uint64_t seed) {
    sim_runtime_t *rt = calloc(1, sizeof *rt);
    if (!rt)
        return NULL;
    rt->by_id = zhashx_new();
    rt->by_task = zhashx_new();
    if (!rt->by_id || !rt->by_task) {
        zhashx_destroy(&rt->by_id);
        zhashx_destroy(&rt->by_task);
        free(rt);
        return NULL;
    }
    zhashx_set_destructor(rt->by_id, container_free);
    pthread_mutex_init(&rt->lock, NULL);
    rt->failure_rate = failure_rate < 0 ? 0 : failure_rate > 1 ? 1 : failure_rate;
    rt->rng = seed ? seed : (uint64_t)clock_wall_ms() * 2654435761ULL + (uint64_t)clock_mono_ms();
    if (!rt->rng)
        rt->rng = 1;
    return rt;
}

void sim_runtime_destroy(sim_runtime_t **self_p) {
    if (!self_p || !*self_p)
        return;
    sim_runtime_t *rt = *self_p;
    zhashx_destroy(&rt->by_task);
    zhashx_destroy(&rt->by_id);
    pthread_mutex_destroy(&rt->lock);
    free(rt);
    *self_p = NULL;
}

size_t sim_runtime_containers(sim_runtime_t *rt) {
    pthread_mutex_lock(&rt->lock);
    size_t n = zhashx_size(rt->by_id);
    pthread_mutex_unlock(&rt->lock);
    return n;
}

size_t sim_runtime_running(sim_runtime_t *rt) {
    pthread_mutex_lock(&rt->lock);
    size_t n = rt->running;
    pthread_mutex_unlock(&rt->lock);
    return n;
}

static sim_runtime_t *rt_of(executor_t *self) {
    return ((sim_executor_t *)self)->rt;
}

static void set_status(sim_runtime_t *rt, sim_container_t *c, const char *status, bool running) {
    if (c->running && !running)
        rt->running--;
    else if (!c->running && running)
        rt->running++;
    c->running = running;
    snprintf(c->status, sizeof c->status, "%s", status);
}

/* ---- ops (each under the lock) --------------------------------------------------------- */

static void sx_close(executor_t *self) {
    free(self);
}

static void sx_interrupt(executor_t *self) {
    /* nothing blocks */
}

static int sx_describe(executor_t *self, Shoal__NodeDescription **ret, char *err, size_t errlen) {
    snprintf(err, errlen, "sim nodes are described by the agent, not the executor");
    return -ENOTSUP;
}

static int sx_prepare(executor_t *self, const Shoal__Task *task, char *err, size_t errlen) {
    const Shoal__ContainerSpec *c = task && task->spec ? task->spec->container : NULL;
    if (!c || !c->image || !*c->image) {
        snprintf(err, errlen, "task has no container image");
        return -EINVAL;
    }
    return 0;
}

static int sx_create(executor_t *self, const Shoal__Task *task, char *ret_id, size_t idlen,
                     char *err, size_t errlen) {
    sim_runtime_t *rt = rt_of(self);
    if (!task || !task->meta || !task->meta->id || !*task->meta->id ||
        strlen(task->meta->id) >= EXECUTOR_TASK_ID_MAX) {
        snprintf(err, errlen, "task has no id");
        return -EINVAL;
    }
    pthread_mutex_lock(&rt->lock);
    int r = 0;
    sim_container_t *c = zhashx_lookup(rt->by_task, task->meta->id);
    if (!c) {
        c = calloc(1, sizeof *c);
        if (!c) {
            r = -ENOMEM;
            snprintf(err, errlen, "out of memory");
            goto out;
        }
        /* 64 hex characters like Docker's, unique (the multiplier is odd: a bijection), and
         * different in the first 12 that people see. */
        uint64_t seq = ++rt->seq;
        snprintf(c->id, sizeof c->id, "%016llx%048llx",
                 (unsigned long long)(seq * 0x9E3779B97F4A7C15ULL), (unsigned long long)seq);
        snprintf(c->task_id, sizeof c->task_id, "%s", task->meta->id);
        snprintf(c->node_id, sizeof c->node_id, "%s", task->node_id ? task->node_id : "");
        snprintf(c->status, sizeof c->status, "created");
        c->exit_code = -1;
        zhashx_insert(rt->by_id, c->id, c);
        zhashx_insert(rt->by_task, c->task_id, c);
    }
    snprintf(ret_id, idlen, "%s", c->id);
out:
    pthread_mutex_unlock(&rt->lock);
    return r;
}

static int sx_start(executor_t *self, const char *id, char *err, size_t errlen) {
    sim_runtime_t *rt = rt_of(self);
    pthread_mutex_lock(&rt->lock);
    int r = 0;
    sim_container_t *c = zhashx_lookup(rt->by_id, id);
    if (!c) {
        snprintf(err, errlen, "No such container: %s", id);
        r = -ENOENT;
    } else if (!c->running) {
        if (rt->failure_rate > 0 && rng_next(rt) < rt->failure_rate) {
            set_status(rt, c, "dead", false);
            c->exit_code = 128;
            snprintf(err, errlen, "sim: simulated start failure");
            r = -EIO;
        } else {
            set_status(rt, c, "running", true);
            c->pid = (int)(1000 + rt->seq % 4000000);
            c->exit_code = 0;
        }
    }
    pthread_mutex_unlock(&rt->lock);
    return r;
}

static int sx_stop(executor_t *self, const char *id, int grace_s, char *err, size_t errlen) {
    sim_runtime_t *rt = rt_of(self);
    pthread_mutex_lock(&rt->lock);
    int r = 0;
    sim_container_t *c = zhashx_lookup(rt->by_id, id);
    if (!c) {
        snprintf(err, errlen, "No such container: %s", id);
        r = -ENOENT;
    } else if (c->running) {
        set_status(rt, c, "exited", false);
        c->exit_code = 0;
        c->pid = 0;
    }
    pthread_mutex_unlock(&rt->lock);
    return r;
}

static int sx_remove(executor_t *self, const char *id, char *err, size_t errlen) {
    sim_runtime_t *rt = rt_of(self);
    pthread_mutex_lock(&rt->lock);
    int r = 0;
    sim_container_t *c = zhashx_lookup(rt->by_id, id);
    if (!c) {
        snprintf(err, errlen, "No such container: %s", id);
        r = -ENOENT;
    } else {
        set_status(rt, c, "removing", false);
        zhashx_delete(rt->by_task, c->task_id);
        zhashx_delete(rt->by_id, id); /* frees c */
    }
    pthread_mutex_unlock(&rt->lock);
    return r;
}

static void to_executor(executor_container_t *dst, const sim_container_t *c) {
    memset(dst, 0, sizeof *dst);
    snprintf(dst->id, sizeof dst->id, "%s", c->id);
    snprintf(dst->task_id, sizeof dst->task_id, "%s", c->task_id);
    snprintf(dst->node_id, sizeof dst->node_id, "%s", c->node_id);
    snprintf(dst->status, sizeof dst->status, "%s", c->status);
    dst->running = c->running;
    dst->exit_code = c->exit_code;
    dst->pid = c->pid;
}

static int sx_inspect(executor_t *self, const char *id, executor_container_t *ret, char *err,
                      size_t errlen) {
    sim_runtime_t *rt = rt_of(self);
    pthread_mutex_lock(&rt->lock);
    int r = 0;
    sim_container_t *c = zhashx_lookup(rt->by_id, id);
    if (!c) {
        snprintf(err, errlen, "No such container: %s", id);
        r = -ENOENT;
    } else {
        to_executor(ret, c);
    }
    pthread_mutex_unlock(&rt->lock);
    return r;
}

static int sx_list(executor_t *self, const char *node_id, executor_container_t **ret, size_t *ret_n,
                   char *err, size_t errlen) {
    sim_runtime_t *rt = rt_of(self);
    *ret = NULL;
    *ret_n = 0;
    if (!node_id || !*node_id) {
        snprintf(err, errlen, "listing containers needs this node's id");
        return -EINVAL;
    }
    pthread_mutex_lock(&rt->lock);
    /* A node lists once per start (and after failures): a scan of the table is fine. */
    size_t n = 0, cap = 0;
    executor_container_t *out = NULL;
    int r = 0;
    for (sim_container_t *c = zhashx_first(rt->by_id); c; c = zhashx_next(rt->by_id)) {
        if (strcmp(c->node_id, node_id) != 0)
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 8;
            executor_container_t *grown = realloc(out, cap * sizeof *grown);
            if (!grown) {
                r = -ENOMEM;
                break;
            }
            out = grown;
        }
        to_executor(&out[n], c);
        out[n++].exit_code = -1; /* as a Docker list: unknown until inspected */
    }
    pthread_mutex_unlock(&rt->lock);
    if (r < 0) {
        free(out);
        snprintf(err, errlen, "out of memory");
        return r;
    }
    *ret = out ? out : calloc(1, sizeof *out);
    *ret_n = n;
    return *ret ? 0 : -ENOMEM;
}

static const executor_ops_t sim_ops = {
    .name = "sim",
    .close = sx_close,
    .interrupt = sx_interrupt,
    .describe = sx_describe,
    .prepare = sx_prepare,
    .create = sx_create,
    .start = sx_start,
    .stop = sx_stop,
    .remove = sx_remove,
    .inspect = sx_inspect,
    .list = sx_list,
};

static executor_t *sim_open(const executor_factory_t *f) {
    sim_executor_t *x = calloc(1, sizeof *x);
    if (!x)
        return NULL;
    x->base.ops = &sim_ops;
    x->rt = f->arg;
    return &x->base;
}

void executor_sim_factory(executor_factory_t *ret, sim_runtime_t *runtime) {
    memset(ret, 0, sizeof *ret);
    ret->name = "sim";
    ret->open = sim_open;
    ret->arg = runtime;
    snprintf(ret->path, sizeof ret->path, "memory");
}
