/* worker — the agent's task table (see worker.h).
 *
 * Event sources, all in the main loop: the assignment set (worker_set_assignments), executor
 * events (die/oom/start/destroy/resync), job completions from the pool, and a tick for retries.
 * Each of them updates the table and then "kicks": every task that is not busy is stepped by
 * its controller until it is idle or has submitted one executor call.
 *
 * Invariants:
 * - At most one job per task in flight; a job that finishes for a task no longer assigned
 *   removes whatever container it produced.
 * - Containers are only adopted or removed once the executor's list and the first assignment
 *   set are both known, so an agent restart never kills a container the dispatcher still wants.
 * - Only containers labelled with this node's id are ever listed, adopted or removed: several
 *   agents (nodes, clusters, test runs) may share one Docker Engine.
 * - Dirty = status changed since the last acknowledged report; a batch remembers the sequence
 *   number it sent, so a change made while a report is in flight is reported again. */
#include "worker.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "log.h"

#define KICK_STEPS_MAX    32
#define LIST_RETRY_MIN_MS 250
#define LIST_RETRY_MAX_MS 5000

struct worker {
    pool_t *pool;
    zhashx_t *tasks; /* id -> agent_task_t* (owned) */
    char node_id[64];
    bool assigned; /* the first assignment set arrived */
    bool listed;   /* the executor's containers were listed once */
    bool list_busy;
    bool list_pending; /* a list waits for the node id (first registration) */
    bool list_again;
    int64_t list_retry_at_ms;
    int list_failures;
    executor_container_t *containers; /* last list not yet reconciled */
    size_t ncontainers;
    bool have_containers;
    bool reconciled; /* containers were matched with an assignment set once (adoption done) */
    bool kicking;
    bool kick_again;
    size_t flush_threshold;
    void (*flush_fn)(void *ctx);
    void *flush_ctx;
    worker_stats_t stats;
};

struct batch_item {
    Shoal__Dispatcher__TaskStatusUpdate update;
    Shoal__TaskStatus status;
    Shoal__ContainerStatus container;
    Shoal__NetworkAttachment net;
    Shoal__NetworkAttachment *netp;
    char *addrp;
    char task_id[EXECUTOR_TASK_ID_MAX];
    char message[256];
    char err[EXECUTOR_ERR_MAX];
    char container_id[EXECUTOR_ID_MAX];
    char ip[48];
    uint64_t seq;
};

struct worker_batch {
    size_t n;
    struct batch_item *items;
    Shoal__Dispatcher__TaskStatusUpdate **ptrs;
};

/* The table has no destructor: tasks move between tables on each assignment set. */
static void tasks_destroy(zhashx_t **tasks_p) {
    if (!*tasks_p)
        return;
    for (agent_task_t *t = zhashx_first(*tasks_p); t; t = zhashx_next(*tasks_p))
        agent_task_destroy(&t);
    zhashx_destroy(tasks_p);
}

worker_t *worker_new(pool_t *pool) {
    worker_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->pool = pool;
    self->tasks = zhashx_new();
    if (!self->tasks) {
        free(self);
        return NULL;
    }
    return self;
}

void worker_destroy(worker_t **self_p) {
    if (!self_p || !*self_p)
        return;
    worker_t *self = *self_p;
    tasks_destroy(&self->tasks);
    free(self->containers);
    free(self);
    *self_p = NULL;
}

void worker_set_node_id(worker_t *self, const char *node_id) {
    if (!node_id || strcmp(node_id, self->node_id) == 0)
        return;
    snprintf(self->node_id, sizeof self->node_id, "%s", node_id);
    if (self->list_pending && self->node_id[0]) {
        self->list_pending = false;
        worker_resync(self);
    }
}

bool worker_listed(const worker_t *self) {
    return self->listed;
}

void worker_set_flush_hint(worker_t *self, size_t threshold, void (*fn)(void *ctx), void *ctx) {
    self->flush_threshold = threshold;
    self->flush_fn = fn;
    self->flush_ctx = ctx;
}

agent_task_t *worker_task(worker_t *self, const char *task_id) {
    return task_id ? zhashx_lookup(self->tasks, task_id) : NULL;
}

static void kick(worker_t *self);

/* ---- jobs -------------------------------------------------------------------------------- */

static void on_remove_done(void *ctx, agent_job_t *job) {
    worker_t *self = ctx;
    self->stats.engine_calls++;
    if (job->res.rc == 0 || job->res.rc == -ENOENT) {
        self->stats.containers_removed++;
        log_info("container removed container=%.12s task=%s", job->container_id, job->task_id);
    } else {
        self->stats.engine_errors++;
        log_warn("container removal failed container=%.12s task=%s err=\"%s\"", job->container_id,
                 job->task_id, job->res.err);
        /* the next list finds it again and retries */
        if (!self->list_retry_at_ms)
            self->list_retry_at_ms = clock_mono_ms() + LIST_RETRY_MAX_MS;
    }
    agent_job_destroy(&job);
}

static void remove_container(worker_t *self, const char *container_id, const char *task_id) {
    if (!container_id || !*container_id)
        return;
    agent_job_t *job =
        agent_job_new(AGENT_OP_REMOVE, task_id, NULL, container_id, on_remove_done, self);
    if (!job) {
        log_err("out of memory removing container container=%.12s", container_id);
        return;
    }
    log_info("removing container of unassigned task container=%.12s task=%s", container_id,
             task_id ? task_id : "");
    pool_submit(self->pool, job);
}

static void on_task_job_done(void *ctx, agent_job_t *job) {
    worker_t *self = ctx;
    self->stats.engine_calls++;
    if (job->res.rc < 0)
        self->stats.engine_errors++;
    agent_task_t *t = zhashx_lookup(self->tasks, job->task_id);
    if (!t) {
        /* The task left the assignment set while we worked on it. */
        const char *cid = job->res.container_id[0] ? job->res.container_id : job->container_id;
        if (job->res.rc == 0 || job->op != AGENT_OP_PREPARE)
            remove_container(self, cid, job->task_id);
        agent_job_destroy(&job);
        return;
    }
    log_debug("task step done task=%s op=%s rc=%d ms=%lld", t->id, agent_op_name(job->op),
              job->res.rc, (long long)(job->ended_ms - job->started_ms));
    ctl_apply(t, job->op, &job->res, clock_mono_ms());
    agent_job_destroy(&job);
    kick(self);
}

static void submit_task_job(worker_t *self, agent_task_t *t, agent_op_t op) {
    agent_job_t *job = agent_job_new(op, t->id, op == AGENT_OP_PREPARE ? t->task : NULL,
                                     t->container_id, on_task_job_done, self);
    if (!job) {
        log_err("out of memory starting a task step task=%s op=%s", t->id, agent_op_name(op));
        t->retry_at_ms = clock_mono_ms() + 1000;
        return;
    }
    job->grace_s = executor_stop_grace_s(t->task);
    t->busy = true;
    t->busy_op = op;
    log_debug("task step task=%s op=%s state=%s", t->id, agent_op_name(op),
              task_state_name(t->state));
    pool_submit(self->pool, job);
}

/* ---- stepping ---------------------------------------------------------------------------- */

static void step_task(worker_t *self, agent_task_t *t, int64_t now) {
    for (int i = 0; i < KICK_STEPS_MAX; i++) {
        agent_op_t op;
        ctl_step_t s = ctl_step(t, now, &op);
        if (s == CTL_CHANGED)
            continue;
        if (s == CTL_RUN)
            submit_task_job(self, t, op);
        return;
    }
}

static int cmp_task_ptr(const void *a, const void *b) {
    return strcmp((*(agent_task_t *const *)a)->id, (*(agent_task_t *const *)b)->id);
}

agent_task_t **worker_tasks(worker_t *self, size_t *ret_n) {
    size_t n = zhashx_size(self->tasks), k = 0;
    agent_task_t **list = calloc(n ? n : 1, sizeof *list);
    if (!list) {
        *ret_n = 0;
        return NULL;
    }
    for (agent_task_t *t = zhashx_first(self->tasks); t && k < n; t = zhashx_next(self->tasks))
        list[k++] = t;
    qsort(list, k, sizeof *list, cmp_task_ptr);
    *ret_n = k;
    return list;
}

static void kick(worker_t *self) {
    if (!self->listed || !self->assigned)
        return;          /* nothing is decided before both are known */
    if (self->kicking) { /* an inline job completed inside a step */
        self->kick_again = true;
        return;
    }
    self->kicking = true;
    do {
        self->kick_again = false;
        size_t n = 0;
        agent_task_t **list = worker_tasks(self, &n); /* a snapshot: steps may re-enter */
        int64_t now = clock_mono_ms();
        for (size_t i = 0; list && i < n; i++) {
            /* an inline job may have finished the task meanwhile, never removed it */
            step_task(self, list[i], now);
        }
        free(list);
    } while (self->kick_again);
    self->kicking = false;
    if (self->flush_fn && self->flush_threshold &&
        worker_dirty_count(self) >= self->flush_threshold)
        self->flush_fn(self->flush_ctx);
}

/* ---- containers (list, adopt, remove) ---------------------------------------------------- */

static void reconcile_containers(worker_t *self) {
    if (!self->assigned || !self->have_containers)
        return;
    zhashx_t *seen = zhashx_new(); /* task ids that have a container */
    for (size_t i = 0; i < self->ncontainers; i++) {
        executor_container_t *c = &self->containers[i];
        if (strcmp(c->node_id, self->node_id) != 0)
            continue; /* another node's (or cluster's) agent owns it: never touch it */
        agent_task_t *t = c->task_id[0] ? zhashx_lookup(self->tasks, c->task_id) : NULL;
        if (!t) {
            remove_container(self, c->id, c->task_id);
            continue;
        }
        if (seen)
            zhashx_insert(seen, t->id, t);
        if (t->busy)
            continue; /* the job in flight settles it; the next resync looks again */
        if (t->container_id[0] && strcmp(t->container_id, c->id) != 0) {
            if (t->state >= SHOAL__TASK_STATE__READY) {
                remove_container(self, c->id, c->task_id); /* a duplicate of an older attempt */
                continue;
            }
            t->container_id[0] = '\0'; /* we never confirmed ours: take the real one */
        }
        bool adopting = !self->reconciled;
        if (!t->container_id[0]) {
            snprintf(t->container_id, sizeof t->container_id, "%s", c->id);
            adopting = true;
        }
        if (adopting) {
            self->stats.containers_adopted++;
            log_info("adopting container task=%s container=%.12s status=%s state=%s", t->id, c->id,
                     c->status, task_state_name(t->state));
        }
        /* Events may have been missed: look at what it is doing now (one inspect per task). */
        if (!agent_task_terminal(t))
            t->need_inspect = true;
        else if (c->running)
            t->reap = true; /* a finished task's container still runs (failed unhealthy) */
    }
    /* Tasks that believe in a container the runtime no longer has. */
    for (agent_task_t *t = zhashx_first(self->tasks); t; t = zhashx_next(self->tasks)) {
        if (t->busy || agent_task_terminal(t) || (seen && zhashx_lookup(seen, t->id)))
            continue;
        if (t->container_id[0]) {
            t->need_inspect = true; /* → -ENOENT → FAILED (or SHUTDOWN when asked to stop) */
        } else if (t->state >= SHOAL__TASK_STATE__READY) {
            if (t->desired > SHOAL__TASK_STATE__RUNNING)
                ctl_set_state(t, SHOAL__TASK_STATE__SHUTDOWN, "shutdown", NULL);
            else
                ctl_set_state(t, SHOAL__TASK_STATE__FAILED, "task: container missing",
                              "task: container missing");
        }
    }
    zhashx_destroy(&seen);
    self->reconciled = true;
    free(self->containers);
    self->containers = NULL;
    self->ncontainers = 0;
    self->have_containers = false;
}

static void on_list_done(void *ctx, agent_job_t *job) {
    worker_t *self = ctx;
    self->list_busy = false;
    self->stats.engine_calls++;
    if (job->res.rc < 0) {
        self->stats.engine_errors++;
        int64_t delay = (int64_t)LIST_RETRY_MIN_MS
                        << (self->list_failures < 5 ? self->list_failures : 5);
        if (delay > LIST_RETRY_MAX_MS)
            delay = LIST_RETRY_MAX_MS;
        self->list_failures++;
        self->list_retry_at_ms = clock_mono_ms() + delay;
        log_warn("listing containers failed err=\"%s\" retry_ms=%lld", job->res.err,
                 (long long)delay);
        agent_job_destroy(&job);
        return;
    }
    self->list_failures = 0;
    self->list_retry_at_ms = 0;
    free(self->containers);
    self->containers = job->list;
    self->ncontainers = job->nlist;
    self->have_containers = true;
    job->list = NULL;
    agent_job_destroy(&job);
    if (!self->listed)
        log_info("executor containers listed count=%zu", self->ncontainers);
    self->listed = true;
    reconcile_containers(self);
    if (self->list_again) {
        self->list_again = false;
        worker_resync(self);
        return;
    }
    kick(self);
}

void worker_resync(worker_t *self) {
    if (!self->node_id[0]) {
        /* Only this node's containers are ours, and we do not know who we are yet; a node that
         * never registered has run nothing. */
        self->list_pending = true;
        return;
    }
    if (self->list_busy) {
        self->list_again = true;
        return;
    }
    agent_job_t *job = agent_job_new(AGENT_OP_LIST, NULL, NULL, NULL, on_list_done, self);
    if (!job) {
        self->list_retry_at_ms = clock_mono_ms() + LIST_RETRY_MAX_MS;
        return;
    }
    snprintf(job->node_id, sizeof job->node_id, "%s", self->node_id);
    self->stats.resyncs++;
    self->list_busy = true;
    self->list_retry_at_ms = 0;
    pool_submit(self->pool, job);
}

void worker_tick(worker_t *self) {
    if (self->list_retry_at_ms && clock_mono_ms() >= self->list_retry_at_ms && !self->list_busy)
        worker_resync(self);
    kick(self);
}

/* ---- assignments ------------------------------------------------------------------------- */

void worker_set_assignments(worker_t *self, Shoal__Task *const *tasks, size_t n) {
    self->stats.assignments++;
    zhashx_t *next = zhashx_new();
    if (!next) {
        log_err("out of memory applying assignments");
        return;
    }
    for (size_t i = 0; i < n; i++) {
        const Shoal__Task *task = tasks[i];
        const char *id = task && task->meta ? task->meta->id : NULL;
        if (!id || !*id || strlen(id) >= EXECUTOR_TASK_ID_MAX || !task->spec ||
            !task->spec->container) {
            log_warn("ignoring malformed assignment index=%zu", i);
            continue;
        }
        if (zhashx_lookup(next, id))
            continue; /* duplicate in the set */
        agent_task_t *t = zhashx_lookup(self->tasks, id);
        Shoal__TaskState remote = task->status ? task->status->state : SHOAL__TASK_STATE__NEW;
        if (t) {
            zhashx_delete(self->tasks, id); /* moved to `next` */
            if (agent_task_update(t, task) < 0)
                log_err("out of memory updating task task=%s", id);
        } else {
            t = agent_task_new(task);
            if (!t) {
                log_err("out of memory adding task task=%s", id);
                continue;
            }
            log_info("task assigned task=%s service=%s state=%s desired=%s", id,
                     task->service_name ? task->service_name : "", task_state_name(t->state),
                     task_state_name(t->desired));
        }
        /* The dispatcher is behind us (a lost report, a restarted dispatcher): tell it again. */
        if (t->state > remote && !agent_task_dirty(t))
            t->status_seq++;
        zhashx_insert(next, t->id, t);
    }
    /* What is left in self->tasks is no longer assigned. */
    for (agent_task_t *t = zhashx_first(self->tasks); t; t = zhashx_next(self->tasks)) {
        log_info("task unassigned task=%s state=%s", t->id, task_state_name(t->state));
        if (!t->busy)
            remove_container(self, t->container_id, t->id);
        /* a busy task's job removes its container when it completes */
    }
    tasks_destroy(&self->tasks);
    self->tasks = next;
    bool first = !self->assigned;
    self->assigned = true;
    if (first) {
        log_info("first assignment set tasks=%zu listed=%s", zhashx_size(self->tasks),
                 self->listed ? "yes" : "no");
        reconcile_containers(self);
        if (!self->listed && !self->list_busy)
            worker_resync(self);
    }
    kick(self);
}

/* ---- events ------------------------------------------------------------------------------ */

void worker_on_event(worker_t *self, const executor_event_t *ev) {
    if (ev->kind == EXECUTOR_EVENT_RESYNC) {
        log_info("executor events (re)connected, resyncing");
        worker_resync(self);
        return;
    }
    self->stats.events_seen++;
    agent_task_t *t = zhashx_lookup(self->tasks, ev->task_id);
    log_debug("executor event kind=%s task=%s container=%.12s exit_code=%d",
              executor_event_kind_name(ev->kind), ev->task_id, ev->container_id, ev->exit_code);
    if (!t)
        return; /* not ours (any more): the next list removes it */
    switch (ev->kind) {
    case EXECUTOR_EVENT_DIE:
        ctl_on_exit(t, ev->container_id, ev->exit_code);
        break;
    case EXECUTOR_EVENT_OOM:
        ctl_on_oom(t, ev->container_id);
        break;
    case EXECUTOR_EVENT_HEALTHY:
    case EXECUTOR_EVENT_UNHEALTHY:
        ctl_on_health(t, ev->container_id, ev->kind == EXECUTOR_EVENT_HEALTHY);
        break;
    case EXECUTOR_EVENT_DESTROY:
    case EXECUTOR_EVENT_START:
        if (!t->busy && !agent_task_terminal(t) && t->container_id[0] &&
            strcmp(t->container_id, ev->container_id) == 0 &&
            (ev->kind == EXECUTOR_EVENT_DESTROY || t->state < SHOAL__TASK_STATE__RUNNING))
            t->need_inspect = true;
        break;
    default:
        break;
    }
    kick(self);
}

/* ---- reporting --------------------------------------------------------------------------- */

size_t worker_dirty_count(const worker_t *self) {
    size_t n = 0;
    for (agent_task_t *t = zhashx_first(self->tasks); t; t = zhashx_next(self->tasks))
        if (agent_task_dirty(t))
            n++;
    return n;
}

void worker_mark_all_dirty(worker_t *self) {
    for (agent_task_t *t = zhashx_first(self->tasks); t; t = zhashx_next(self->tasks))
        if (t->state >= SHOAL__TASK_STATE__ACCEPTED && !agent_task_dirty(t))
            t->status_seq++;
}

static void batch_fill(struct batch_item *it, const agent_task_t *t) {
    shoal__dispatcher__task_status_update__init(&it->update);
    shoal__task_status__init(&it->status);
    shoal__container_status__init(&it->container);
    snprintf(it->task_id, sizeof it->task_id, "%s", t->id);
    snprintf(it->message, sizeof it->message, "%s", t->message);
    snprintf(it->err, sizeof it->err, "%s", t->err);
    snprintf(it->container_id, sizeof it->container_id, "%s", t->container_id);
    snprintf(it->ip, sizeof it->ip, "%s", t->ip);
    it->seq = t->status_seq;
    it->update.task_id = it->task_id;
    it->update.status = &it->status;
    it->status.timestamp_ms = t->timestamp_ms;
    it->status.state = t->state;
    it->status.message = it->message;
    it->status.err = it->err;
    it->status.healthy = ctl_task_healthy(t);
    if (t->container_id[0]) {
        it->status.container = &it->container;
        it->container.container_id = it->container_id;
        it->container.pid = t->state == SHOAL__TASK_STATE__RUNNING ? t->pid : 0;
        it->container.exit_code = t->exit_code > 0 ? t->exit_code : 0;
    }
    if (t->ip[0] && t->state >= SHOAL__TASK_STATE__RUNNING) {
        shoal__network_attachment__init(&it->net);
        it->net.network = (char *)EXECUTOR_NETWORK;
        it->addrp = it->ip;
        it->net.n_addresses = 1;
        it->net.addresses = &it->addrp;
        it->netp = &it->net;
        it->update.n_networks = 1;
        it->update.networks = &it->netp;
    }
}

worker_batch_t *worker_batch_take(worker_t *self, size_t max) {
    if (!max || !worker_dirty_count(self))
        return NULL; /* the common case, every 50 ms: nothing to say */
    size_t n = 0, k = 0;
    agent_task_t **list = worker_tasks(self, &n);
    if (!list)
        return NULL;
    for (size_t i = 0; i < n; i++)
        if (agent_task_dirty(list[i]))
            k++;
    if (k > max)
        k = max;
    if (!k) {
        free(list);
        return NULL;
    }
    worker_batch_t *b = calloc(1, sizeof *b);
    if (b) {
        b->items = calloc(k, sizeof *b->items);
        b->ptrs = calloc(k, sizeof *b->ptrs);
    }
    if (!b || !b->items || !b->ptrs) {
        worker_batch_destroy(&b);
        free(list);
        return NULL;
    }
    for (size_t i = 0; i < n && b->n < k; i++) {
        if (!agent_task_dirty(list[i]))
            continue;
        struct batch_item *it = &b->items[b->n];
        batch_fill(it, list[i]);
        b->ptrs[b->n++] = &it->update;
    }
    free(list);
    return b;
}

size_t worker_batch_size(const worker_batch_t *b) {
    return b ? b->n : 0;
}

Shoal__Dispatcher__TaskStatusUpdate **worker_batch_updates(worker_batch_t *b) {
    return b ? b->ptrs : NULL;
}

void worker_batch_ack(worker_t *self, const worker_batch_t *b) {
    for (size_t i = 0; b && i < b->n; i++) {
        agent_task_t *t = zhashx_lookup(self->tasks, b->items[i].task_id);
        if (t && t->acked_seq < b->items[i].seq)
            t->acked_seq = b->items[i].seq;
    }
}

void worker_batch_destroy(worker_batch_t **self_p) {
    if (!self_p || !*self_p)
        return;
    free((*self_p)->items);
    free((*self_p)->ptrs);
    free(*self_p);
    *self_p = NULL;
}

void worker_get_stats(worker_t *self, worker_stats_t *ret) {
    *ret = self->stats;
    memset(ret->tasks_by_state, 0, sizeof ret->tasks_by_state);
    ret->tasks = zhashx_size(self->tasks);
    for (agent_task_t *t = zhashx_first(self->tasks); t; t = zhashx_next(self->tasks)) {
        unsigned idx = WORKER_STATE_INDEX(t->state);
        if (idx < WORKER_STATE_SLOTS)
            ret->tasks_by_state[idx]++;
    }
}
