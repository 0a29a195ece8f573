/* shoal-scheduler — places PENDING tasks on nodes (DESIGN §5, the scheduler contract).
 *
 * Wiring: daemon_setup() gives the bus, the loop and the registry; this file adds
 *  - the store view: list "/" once, then a watcher from the next revision; /nodes/ and /tasks/
 *    feed the core (scheduler.c). A compacted watch re-lists into a fresh core.
 *  - leader election on /leases/scheduler: a store lease (TTL 3 s) and a Txn "create the key if
 *    its mod revision is 0" with our instance name attached to the lease; kept alive every 1 s.
 *    Standbys keep their view current, retry every second and at once when the watch shows the
 *    key deleted. A leader that cannot renew for TTL - 500 ms, sees the lease gone or sees the key
 *    owned by another lease stops writing. Every write is a CAS on the task's mod revision, so
 *    even two schedulers that both believe they lead never overwrite each other's work.
 *  - debounce: a task event (or a node event while tasks wait) arms a tick 10 ms later, pushed
 *    back by further events up to 200 ms after the first (the cluster's scheduler_debounce_ms
 *    overrides the 10 ms). SwarmKit waits 50 ms / 1 s; shoal trades a little batching for
 *    placement latency.
 *  - the write: a tick's decisions go in store.Batch requests of up to SCHED_BATCH_MAX Txns, one
 *    Txn per task: compare /tasks/<id> mod revision with the one decided on, put the new task.
 *    The batches are sent by the writer actor (writer.c) so the loop never waits on the store;
 *    at most WRITER_MAX_JOBS batches are outstanding, further ticks wait for one to come back.
 *    --no-batch writes one store.Txn request per task instead (the naive baseline of the bench).
 *  - the default strategy for services that name none: the cluster's (ClusterSpec has no field for
 *    it yet: the label shoal.scheduler.strategy on the cluster's annotations stands in), else
 *    --strategy, else spread. --seed fixes the random strategy's seed (default: the clock).
 *    A failed compare is dropped (the watch brings the newer version, which is reconsidered);
 *    a failed request (store down) leaves every decision to be retried 500 ms later.
 * Methods: scheduler.Status, plus bus.Health and bus.Stats. Nothing here blocks longer than one
 * store call (timeouts 1-5 s). */
#include <czmq.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "daemon.h"
#include "objects.pb-c.h"
#include "scheduler.h"
#include "scheduler.pb-c.h"
#include "writer.h"

#define LEADER_KEY          "/leases/scheduler"
#define LEASE_TTL_MS        3000
#define LEASE_KEEPALIVE_MS  1000
#define LEASE_MARGIN_MS     500
#define DEBOUNCE_MS         10
#define DEBOUNCE_MAX_MS     200
#define RETRY_MS            500
#define SCHED_BATCH_MAX     1000
#define STATUS_MAX_UNPLACED 1000
#define WRITER_MAX_JOBS     16

typedef struct sched_daemon {
    daemon_t d;
    store_client_t *store; /* our own client: outlives daemon_run() to revoke the lease */
    zcert_t *identity;
    scheduler_t *core;

    zactor_t *watcher;
    zactor_t *writer;
    size_t jobs_out;   /* batches handed to the writer and not back yet */
    bool tick_waiting; /* a tick was due while WRITER_MAX_JOBS batches were out */
    int64_t revision;
    bool synced;
    int resync_timer;

    bool leader;
    int64_t leader_revision; /* store revision at which we took the key */
    int64_t lease_id;
    int64_t lease_ok_ms; /* monotonic time of the last successful grant/keepalive */
    char leader_name[64];

    int tick_timer;
    int64_t first_event_ms;
    int64_t debounce_ms;

    uint64_t placements_total, unplaced_writes, batches, conflicts, batch_errors;
    uint64_t watch_events, decode_errors, lists, elections;

    /* flags */
    bool no_batch;
    placement_strategy_t flag_strategy;
    uint64_t seed;
    bool seeded;
    placement_strategy_t cluster_strategy;
    bool cluster_has_strategy;
} sched_daemon_t;

#define CLUSTER_STRATEGY_LABEL "shoal.scheduler.strategy"

static void request_tick(sched_daemon_t *m);
static int on_retry_timer(zloop_t *loop, int timer_id, void *arg);

/* ---- leadership ------------------------------------------------------------------------- */

static void step_down(sched_daemon_t *m, const char *why) {
    if (!m->leader)
        return;
    m->leader = false;
    if (m->tick_timer >= 0) {
        zloop_timer_end(m->d.loop, m->tick_timer);
        m->tick_timer = -1;
    }
    m->first_event_ms = 0;
    log_warn("lost scheduler leadership, writing stops instance=%s reason=\"%s\"", m->d.instance,
             why);
}

static void campaign(sched_daemon_t *m) {
    if (m->leader)
        return;
    store_client_set_timeout(m->store, 1000);
    if (m->lease_id && store_lease_keepalive(m->store, m->lease_id) < 0)
        m->lease_id = 0;
    if (!m->lease_id && store_lease_grant(m->store, LEASE_TTL_MS, &m->lease_id) < 0) {
        log_debug("lease grant failed err=\"%s\"", store_client_error(m->store));
        m->lease_id = 0;
        goto out;
    }
    int64_t granted_ms = clock_mono_ms();
    store_txn_builder_t *b = store_txn_builder_new();
    if (!b)
        goto out;
    store_txn_cmp_mod(b, LEADER_KEY, 0);
    store_txn_put_raw(b, LEADER_KEY, m->d.instance, strlen(m->d.instance), m->lease_id);
    Shoal__Store__TxnResponse *resp = NULL;
    int r = store_txn(m->store, store_txn_builder_request(b), &resp);
    int64_t revision = resp && resp->header ? resp->header->revision : 0;
    if (resp)
        shoal__store__txn_response__free_unpacked(resp, NULL);
    store_txn_builder_destroy(&b);
    if (r == -ECANCELED) {
        /* Someone holds the key; maybe us, if we stepped down on a stale event. */
        Shoal__Store__KeyValue *kv = NULL;
        if (store_get(m->store, LEADER_KEY, &kv) == 0) {
            snprintf(m->leader_name, sizeof m->leader_name, "%.*s", (int)kv->value.len,
                     kv->value.data ? (const char *)kv->value.data : "");
            if (kv->lease == m->lease_id) {
                r = 0;
                revision = kv->mod_revision;
            }
            shoal__store__key_value__free_unpacked(kv, NULL);
        }
    }
    if (r == 0) {
        m->leader = true;
        m->leader_revision = revision;
        m->lease_ok_ms = granted_ms;
        m->elections++;
        snprintf(m->leader_name, sizeof m->leader_name, "%s", m->d.instance);
        log_info("became scheduler leader instance=%s lease=%lld", m->d.instance,
                 (long long)m->lease_id);
        request_tick(m);
    } else if (r != -ECANCELED) {
        log_debug("leader election txn failed err=\"%s\"", store_client_error(m->store));
    }
out:
    store_client_set_timeout(m->store, 0);
}

static int on_lease_timer(zloop_t *loop, int timer_id, void *arg) {
    sched_daemon_t *m = arg;
    if (!m->leader) {
        campaign(m);
        return 0;
    }
    store_client_set_timeout(m->store, 1000);
    int r = store_lease_keepalive(m->store, m->lease_id);
    store_client_set_timeout(m->store, 0);
    if (r == 0) {
        m->lease_ok_ms = clock_mono_ms();
    } else if (r == -ENOENT) {
        m->lease_id = 0;
        step_down(m, "lease expired");
    } else if (clock_mono_ms() - m->lease_ok_ms > LEASE_TTL_MS - LEASE_MARGIN_MS) {
        step_down(m, "cannot renew the lease");
    }
    return 0;
}

/* A leader writes only while its lease is surely alive. */
static bool may_write(sched_daemon_t *m) {
    if (m->leader && clock_mono_ms() - m->lease_ok_ms > LEASE_TTL_MS - LEASE_MARGIN_MS)
        step_down(m, "lease not renewed in time");
    return m->leader && m->synced;
}

/* ---- the store view -------------------------------------------------------------------- */

static bool has_prefix(const char *s, const char *p) {
    return strncmp(s, p, strlen(p)) == 0;
}

static void set_default_strategy(sched_daemon_t *m) {
    placement_strategy_t s = m->cluster_has_strategy ? m->cluster_strategy : m->flag_strategy;
    if (m->core && scheduler_default_strategy(m->core) != s) {
        log_info("default placement strategy strategy=%s source=%s", placement_strategy_name(s),
                 m->cluster_has_strategy ? "cluster" : "flag");
    }
    if (m->core)
        scheduler_set_default_strategy(m->core, s);
}

static void apply_cluster_strategy(sched_daemon_t *m, const Shoal__Cluster *c) {
    const Shoal__Annotations *a = c->spec ? c->spec->annotations : NULL;
    const char *value = NULL;
    for (size_t i = 0; a && i < a->n_labels; i++)
        if (a->labels[i] && a->labels[i]->key && !strcmp(a->labels[i]->key, CLUSTER_STRATEGY_LABEL))
            value = a->labels[i]->value;
    placement_strategy_t s;
    int r = placement_strategy_parse(value, &s);
    if (r == -EINVAL)
        log_warn("ignoring unknown cluster placement strategy label=%s value=\"%.64s\"",
                 CLUSTER_STRATEGY_LABEL, value);
    m->cluster_has_strategy = r == 0;
    if (r == 0)
        m->cluster_strategy = s;
    set_default_strategy(m);
}

/* Applies one key of the list or the watch; true when it may change placements. */
static bool apply_kv(sched_daemon_t *m, const Shoal__Store__KeyValue *kv, bool deleted) {
    const char *key = kv->key;
    if (has_prefix(key, "/tasks/")) {
        const char *id = key + strlen("/tasks/");
        if (deleted) {
            scheduler_delete_task(m->core, id);
            return true;
        }
        Shoal__Task *t = shoal__task__unpack(NULL, kv->value.len, kv->value.data);
        if (!t || !t->meta || !t->meta->id || strcmp(t->meta->id, id) != 0) {
            /* Never write a task whose key and id disagree: forget it instead. */
            m->decode_errors++;
            log_warn("ignoring undecodable task key=%s", key);
            if (t)
                shoal__task__free_unpacked(t, NULL);
            scheduler_delete_task(m->core, id);
            return false;
        }
        scheduler_put_task(m->core, t, kv->mod_revision);
        return true;
    }
    if (has_prefix(key, "/nodes/")) {
        const char *id = key + strlen("/nodes/");
        if (deleted) {
            scheduler_delete_node(m->core, id);
            return true;
        }
        Shoal__Node *n = shoal__node__unpack(NULL, kv->value.len, kv->value.data);
        if (!n || !n->meta || !n->meta->id || strcmp(n->meta->id, id) != 0) {
            m->decode_errors++;
            log_warn("ignoring undecodable node key=%s", key);
            if (n)
                shoal__node__free_unpacked(n, NULL);
            scheduler_delete_node(m->core, id);
            return false;
        }
        scheduler_put_node(m->core, n);
        return true;
    }
    if (strcmp(key, LEADER_KEY) == 0) {
        if (m->leader && kv->mod_revision < m->leader_revision)
            return false; /* history from before our election */
        if (deleted) {
            m->leader_name[0] = '\0';
            if (m->leader)
                step_down(m, "leader key deleted");
            campaign(m);
        } else {
            snprintf(m->leader_name, sizeof m->leader_name, "%.*s", (int)kv->value.len,
                     kv->value.data ? (const char *)kv->value.data : "");
            if (m->leader && kv->lease != m->lease_id)
                step_down(m, "leader key taken by another instance");
        }
        return false;
    }
    if (strcmp(key, "/cluster") == 0 && !deleted) {
        Shoal__Cluster *c = shoal__cluster__unpack(NULL, kv->value.len, kv->value.data);
        if (c) {
            int64_t ms = c->spec ? c->spec->scheduler_debounce_ms : 0;
            m->debounce_ms = ms > 0 && ms <= DEBOUNCE_MAX_MS ? ms : DEBOUNCE_MS;
            apply_cluster_strategy(m, c);
            shoal__cluster__free_unpacked(c, NULL);
        }
    }
    return false;
}

static int on_watch(zloop_t *loop, zsock_t *sock, void *arg);
static int on_resync_timer(zloop_t *loop, int timer_id, void *arg);

static void watcher_end(zactor_t **watcher_p) {
    zactor_destroy(watcher_p);
}

static void watcher_stop(sched_daemon_t *m) {
    if (!m->watcher)
        return;
    if (m->d.loop)
        zloop_reader_end(m->d.loop, zactor_sock(m->watcher));
    watcher_end(&m->watcher);
}

static void schedule_resync(sched_daemon_t *m) {
    if (m->resync_timer < 0)
        m->resync_timer = zloop_timer(m->d.loop, 1000, 1, on_resync_timer, m);
}

/* Lists every key into a fresh core and (re)starts the watcher from the next revision. */
static int sync_from_store(sched_daemon_t *m) {
    Shoal__Store__RangeResponse *resp = NULL;
    store_client_set_timeout(m->store, 5000);
    int r = store_list(m->store, "/", &resp);
    store_client_set_timeout(m->store, 0);
    if (r < 0) {
        log_warn("store list failed, retrying in 1 s err=\"%s\"", store_client_error(m->store));
        return r;
    }
    scheduler_t *core = scheduler_new();
    if (!core) {
        shoal__store__range_response__free_unpacked(resp, NULL);
        return -ENOMEM;
    }
    scheduler_destroy(&m->core);
    m->core = core;
    scheduler_set_seed(core, m->seed);
    m->cluster_has_strategy = false;
    set_default_strategy(m);
    m->leader_name[0] = '\0';
    for (size_t i = 0; i < resp->n_kvs; i++)
        if (resp->kvs[i] && resp->kvs[i]->key)
            apply_kv(m, resp->kvs[i], false);
    if (resp->more)
        log_warn("store list was cut short: some tasks or nodes are missing keys=%zu", resp->n_kvs);
    m->revision = resp->header ? resp->header->revision : 0;
    shoal__store__range_response__free_unpacked(resp, NULL);

    watcher_stop(m);
    m->watcher = store_watcher_new(&m->d.cfg, "scheduler", "/", m->revision + 1);
    if (!m->watcher || zloop_reader(m->d.loop, zactor_sock(m->watcher), on_watch, m) < 0) {
        log_err("cannot start the store watcher");
        zactor_destroy(&m->watcher);
        m->synced = false;
        return -ENOMEM;
    }
    m->synced = true;
    m->lists++;
    scheduler_stats_t st;
    scheduler_get_stats(m->core, &st);
    log_info("store view loaded revision=%lld nodes=%llu tasks=%llu pending=%llu",
             (long long)m->revision, (unsigned long long)st.nodes, (unsigned long long)st.tasks,
             (unsigned long long)st.pending);
    request_tick(m);
    return 0;
}

static int on_resync_timer(zloop_t *loop, int timer_id, void *arg) {
    sched_daemon_t *m = arg;
    m->resync_timer = -1;
    if (sync_from_store(m) < 0)
        schedule_resync(m);
    else if (!m->leader && !m->leader_name[0])
        campaign(m);
    return 0;
}

static int on_watch(zloop_t *loop, zsock_t *sock, void *arg) {
    sched_daemon_t *m = arg;
    Shoal__Store__WatchResponse *resp = NULL;
    if (store_watcher_recv(m->watcher, &resp) < 0)
        return 0;
    if (resp->compacted) {
        log_warn("store history compacted, re-listing from=%lld compact_revision=%lld",
                 (long long)m->revision, (long long)resp->compact_revision);
        shoal__store__watch_response__free_unpacked(resp, NULL);
        watcher_stop(m);
        m->synced = false;
        if (sync_from_store(m) < 0)
            schedule_resync(m);
        return 0;
    }
    bool tasks_changed = false, nodes_changed = false;
    for (size_t i = 0; i < resp->n_events; i++) {
        const Shoal__Store__Event *ev = resp->events[i];
        if (!ev || !ev->kv || !ev->kv->key)
            continue;
        bool deleted = ev->type == SHOAL__STORE__EVENT__TYPE__DELETE;
        if (apply_kv(m, ev->kv, deleted)) {
            if (has_prefix(ev->kv->key, "/tasks/"))
                tasks_changed = true;
            else
                nodes_changed = true;
        }
        if (ev->kv->mod_revision > m->revision)
            m->revision = ev->kv->mod_revision;
        m->watch_events++;
    }
    shoal__store__watch_response__free_unpacked(resp, NULL);
    if (tasks_changed) {
        request_tick(m);
    } else if (nodes_changed) {
        /* Node heartbeats are frequent: wake only when some task waits for a node. */
        scheduler_stats_t st;
        scheduler_get_stats(m->core, &st);
        if (st.pending > 0)
            request_tick(m);
    }
    return 0;
}

/* ---- ticks and the batched write ------------------------------------------------------- */

/* Reports a written batch's outcome to the core (commit, or abort: stale on a failed compare). */
static void job_done(sched_daemon_t *m, writer_job_t *job) {
    size_t n = job->n;
    m->batches++;
    if (job->rc < 0 || !job->resp) {
        m->batch_errors++;
        log_warn("placement batch failed, retrying in %d ms decisions=%zu err=\"%s\"", RETRY_MS, n,
                 job->error[0] ? job->error : strerror(-job->rc));
        for (size_t i = 0; i < n; i++)
            scheduler_abort(m->core, job->task_ids[i], false);
        zloop_timer(m->d.loop, RETRY_MS, 1, on_retry_timer, m);
        return;
    }
    const Shoal__Store__BatchResponse *resp = job->resp;
    size_t placed = 0, conflicts = 0;
    for (size_t i = 0; i < n; i++) {
        const Shoal__Store__TxnResponse *tr = i < resp->n_responses ? resp->responses[i] : NULL;
        if (tr && tr->succeeded) {
            if (job->assigned[i])
                placed++;
            else
                m->unplaced_writes++;
            scheduler_commit(m->core, job->task_ids[i], tr->header ? tr->header->revision : 0);
        } else {
            conflicts++;
            scheduler_abort(m->core, job->task_ids[i], true);
        }
    }
    m->placements_total += placed;
    m->conflicts += conflicts;
    log_info("placement batch written decisions=%zu assigned=%zu conflicts=%zu ms=%lld", n, placed,
             conflicts, (long long)((job->done_us - job->sent_us) / 1000));
}

static int on_written(zloop_t *loop, zsock_t *sock, void *arg) {
    sched_daemon_t *m = arg;
    writer_job_t *job = writer_recv(m->writer);
    if (!job)
        return 0;
    if (m->jobs_out > 0)
        m->jobs_out--;
    job_done(m, job);
    writer_job_destroy(&job);
    if (m->tick_waiting && m->jobs_out < WRITER_MAX_JOBS) {
        m->tick_waiting = false;
        request_tick(m);
    }
    return 0;
}

/* Hands decisions [0, n) to the writer as one batch; on failure aborts them (retried later). */
static void write_batch(sched_daemon_t *m, const scheduler_decision_t *d, size_t n) {
    writer_job_t *job = writer_job_new(d, n, m->lease_id);
    if (job && writer_send(m->writer, job) == 0) {
        m->jobs_out++;
        return;
    }
    writer_job_destroy(&job);
    m->batch_errors++;
    log_warn("cannot hand a placement batch to the writer, retrying in %d ms decisions=%zu",
             RETRY_MS, n);
    for (size_t i = 0; i < n; i++)
        scheduler_abort(m->core, d[i].task_id, false);
    zloop_timer(m->d.loop, RETRY_MS, 1, on_retry_timer, m);
}

/* --no-batch: one store.Txn request (one round trip, one store commit) per decision. */
static void write_one_by_one(sched_daemon_t *m, const scheduler_decision_t *d, size_t n) {
    size_t placed = 0, conflicts = 0;
    store_client_set_timeout(m->store, 5000);
    for (size_t i = 0; i < n; i++) {
        char key[256];
        snprintf(key, sizeof key, "/tasks/%s", d[i].task_id);
        store_txn_builder_t *b = store_txn_builder_new();
        Shoal__Store__TxnResponse *resp = NULL;
        int r = -ENOMEM;
        if (b) {
            store_txn_cmp_mod(b, key, d[i].mod_revision);
            store_txn_put(b, key, &d[i].task->base);
            r = store_txn(m->store, store_txn_builder_request(b), &resp);
        }
        bool assigned = d[i].node_id != NULL;
        if (r == 0) {
            placed += assigned;
            m->unplaced_writes += !assigned;
            scheduler_commit(m->core, d[i].task_id,
                             resp && resp->header ? resp->header->revision : 0);
        } else if (r == -ECANCELED) {
            conflicts++;
            scheduler_abort(m->core, d[i].task_id, true);
        } else {
            m->batch_errors++;
            scheduler_abort(m->core, d[i].task_id, false);
        }
        if (resp)
            shoal__store__txn_response__free_unpacked(resp, NULL);
        store_txn_builder_destroy(&b);
    }
    store_client_set_timeout(m->store, 0);
    m->placements_total += placed;
    m->conflicts += conflicts;
    m->batches++;
    log_info("placements written one by one decisions=%zu assigned=%zu conflicts=%zu", n, placed,
             conflicts);
}

static int on_retry_timer(zloop_t *loop, int timer_id, void *arg) {
    request_tick(arg);
    return 0;
}

static void run_tick(sched_daemon_t *m) {
    if (!may_write(m))
        return;
    if (!m->no_batch && m->jobs_out >= WRITER_MAX_JOBS) {
        m->tick_waiting = true; /* on_written asks again */
        return;
    }
    const scheduler_decision_t *d = NULL;
    size_t n = 0;
    if (scheduler_tick(m->core, clock_wall_ms(), &d, &n) < 0) {
        log_err("scheduler tick failed: out of memory");
        zloop_timer(m->d.loop, RETRY_MS, 1, on_retry_timer, m);
        return;
    }
    if (m->no_batch && n > 0) {
        uint64_t errors_before = m->batch_errors;
        write_one_by_one(m, d, n);
        if (m->batch_errors != errors_before)
            zloop_timer(m->d.loop, RETRY_MS, 1, on_retry_timer, m);
        return;
    }
    for (size_t off = 0; off < n; off += SCHED_BATCH_MAX)
        write_batch(m, d + off, n - off < SCHED_BATCH_MAX ? n - off : SCHED_BATCH_MAX);
}

static int on_tick_timer(zloop_t *loop, int timer_id, void *arg) {
    sched_daemon_t *m = arg;
    m->tick_timer = -1;
    m->first_event_ms = 0;
    run_tick(m);
    return 0;
}

/* Debounce: tick debounce_ms after the last event, at most DEBOUNCE_MAX_MS after the first. */
static void request_tick(sched_daemon_t *m) {
    if (!m->leader || !m->synced)
        return;
    int64_t now = clock_mono_ms();
    if (m->first_event_ms == 0)
        m->first_event_ms = now;
    int64_t due = now + m->debounce_ms;
    if (due > m->first_event_ms + DEBOUNCE_MAX_MS)
        due = m->first_event_ms + DEBOUNCE_MAX_MS;
    if (m->tick_timer >= 0)
        zloop_timer_end(m->d.loop, m->tick_timer);
    m->tick_timer =
        zloop_timer(m->d.loop, (size_t)(due > now ? due - now : 1), 1, on_tick_timer, m);
}

/* ---- bus methods ----------------------------------------------------------------------- */

typedef struct status_ctx {
    Shoal__Scheduler__PendingTask *items;
    Shoal__Scheduler__PendingTask **ptrs;
    size_t n, cap;
} status_ctx_t;

static void add_pending(void *arg, const Shoal__Task *t) {
    status_ctx_t *c = arg;
    if (c->n >= c->cap)
        return;
    Shoal__Scheduler__PendingTask *p = &c->items[c->n];
    shoal__scheduler__pending_task__init(p);
    p->task_id = t->meta && t->meta->id ? t->meta->id : "";
    p->service_name = t->service_name ? t->service_name : "";
    p->reason = t->status && t->status->err ? t->status->err : "";
    c->ptrs[c->n++] = p;
}

static void on_status(void *ctx, bus_call_t *call, const ProtobufCMessage *input) {
    sched_daemon_t *m = ctx;
    scheduler_stats_t st;
    scheduler_get_stats(m->core, &st);
    status_ctx_t c = {.cap = st.pending < STATUS_MAX_UNPLACED ? st.pending : STATUS_MAX_UNPLACED};
    c.items = calloc(c.cap ? c.cap : 1, sizeof *c.items);
    c.ptrs = calloc(c.cap ? c.cap : 1, sizeof *c.ptrs);
    if (!c.items || !c.ptrs) {
        free(c.items);
        free(c.ptrs);
        bus_reply_error(call, BUS_INTERNAL, "scheduler.Status: out of memory");
        return;
    }
    scheduler_each_pending(m->core, add_pending, &c);
    Shoal__Scheduler__StatusResponse out = SHOAL__SCHEDULER__STATUS_RESPONSE__INIT;
    out.leader = m->leader;
    out.nodes = st.nodes;
    out.pending = st.pending;
    out.placed_total = m->placements_total;
    out.unplaced = c.ptrs;
    out.n_unplaced = c.n;
    out.default_strategy = (char *)placement_strategy_name(scheduler_default_strategy(m->core));
    out.writes_in_flight = m->jobs_out;
    bus_reply_ok(call, &out.base);
    free(c.items);
    free(c.ptrs);
}

static const bus_method_t sched_methods[] = {
    {"scheduler.Status", &shoal__scheduler__status_request__descriptor,
     &shoal__scheduler__status_response__descriptor, on_status, BUS_ROLES_MANAGER},
};

static void on_health(void *ctx, Shoal__Bus__HealthResponse *h) {
    sched_daemon_t *m = ctx;
    char msg[256];
    scheduler_stats_t st;
    scheduler_get_stats(m->core, &st);
    snprintf(msg, sizeof msg,
             m->synced ? "revision %lld, %llu nodes, %llu tasks" : "waiting for the store",
             (long long)m->revision, (unsigned long long)st.nodes, (unsigned long long)st.tasks);
    bus_health_add_check(h, "store_sync", m->synced, "%s", msg);
    if (m->leader)
        snprintf(msg, sizeof msg, "leader (lease %lld)", (long long)m->lease_id);
    else
        snprintf(msg, sizeof msg, "standby, leader is %s",
                 m->leader_name[0] ? m->leader_name : "none");
    bus_health_add_check(h, "leadership", true, "%s", msg);
    if (!h->healthy) {
        free(h->status);
        h->status = strdup("waiting for the store");
    }
}

static void on_stats(void *ctx, Shoal__Bus__StatsResponse *out) {
    sched_daemon_t *m = ctx;
    scheduler_stats_t st;
    scheduler_get_stats(m->core, &st);
    bus_stats_add(out, "scheduler.placements_total", (int64_t)m->placements_total);
    bus_stats_add(out, "scheduler.pending", (int64_t)st.pending);
    bus_stats_add(out, "scheduler.nodes", (int64_t)st.nodes);
    bus_stats_add(out, "scheduler.tasks", (int64_t)st.tasks);
    bus_stats_add(out, "scheduler.batches", (int64_t)m->batches);
    bus_stats_add(out, "scheduler.batches_in_flight", (int64_t)m->jobs_out);
    bus_stats_add(out, "scheduler.conflicts", (int64_t)m->conflicts);
    bus_stats_add(out, "scheduler.batch_errors", (int64_t)m->batch_errors);
    bus_stats_add(out, "scheduler.unplaced_writes", (int64_t)m->unplaced_writes);
    bus_stats_add(out, "scheduler.ticks", (int64_t)st.ticks);
    bus_stats_add(out, "scheduler.leader", m->leader);
    bus_stats_add(out, "scheduler.elections", (int64_t)m->elections);
    bus_stats_add(out, "scheduler.revision", m->revision);
    bus_stats_add(out, "scheduler.watch_events", (int64_t)m->watch_events);
    bus_stats_add(out, "scheduler.lists", (int64_t)m->lists);
    bus_stats_add(out, "scheduler.decode_errors", (int64_t)m->decode_errors);
}

/* ---- main ------------------------------------------------------------------------------ */

enum { OPT_STRATEGY = 256, OPT_SEED, OPT_NO_BATCH };

static const struct option sched_options[] = {
    {"strategy", required_argument, NULL, OPT_STRATEGY},
    {"seed", required_argument, NULL, OPT_SEED},
    {"no-batch", no_argument, NULL, OPT_NO_BATCH},
    {0},
};

static int on_option(void *ctx, int opt, const char *arg) {
    sched_daemon_t *m = ctx;
    char *end = NULL;
    switch (opt) {
    case OPT_STRATEGY:
        if (placement_strategy_parse(arg, &m->flag_strategy) < 0) {
            fprintf(stderr,
                    "shoal-scheduler: --strategy must be spread, binpack or random (got "
                    "\"%s\")\n",
                    arg);
            return -EINVAL;
        }
        return 0;
    case OPT_SEED:
        errno = 0;
        m->seed = strtoull(arg, &end, 0);
        if (errno || !end || *end || !*arg) {
            fprintf(stderr, "shoal-scheduler: --seed must be a number (got \"%s\")\n", arg);
            return -EINVAL;
        }
        m->seeded = true;
        return 0;
    case OPT_NO_BATCH:
        m->no_batch = true;
        return 0;
    }
    return -EINVAL;
}

int main(int argc, char **argv) {
    static sched_daemon_t m;
    m.resync_timer = -1;
    m.tick_timer = -1;
    m.debounce_ms = DEBOUNCE_MS;
    daemon_opts_t opts = {
        .extra = sched_options,
        .on_option = on_option,
        .ctx = &m,
        .usage =
            "  --strategy S     default placement strategy: spread (default), binpack, random\n"
            "  --seed N         seed of the random strategy (default: from the clock)\n"
            "  --no-batch       one store.Txn per placement instead of batches (baseline)\n",
    };
    if (daemon_setup(&m.d, "scheduler", argc, argv, &opts) < 0)
        return 1;
    if (!m.seeded)
        m.seed = (uint64_t)zclock_usecs() ^ ((uint64_t)getpid() << 32);
    m.identity = bus_identity_load(m.d.cfg.state_dir, "scheduler");
    m.store = m.identity ? store_client_new(&m.d.cfg, m.identity) : NULL;
    m.core = scheduler_new();
    if (m.core) {
        scheduler_set_seed(m.core, m.seed);
        set_default_strategy(&m);
    }
    if (!m.store || !m.core) {
        fprintf(stderr, "shoal-scheduler: cannot create the store client: %s\n",
                strerror(errno ? errno : ENOMEM));
        return 1;
    }
    m.writer = writer_new(&m.d.cfg, "scheduler");
    if (!m.writer || zloop_reader(m.d.loop, zactor_sock(m.writer), on_written, &m) < 0) {
        fprintf(stderr, "shoal-scheduler: cannot start the placement writer\n");
        return 1;
    }
    bus_server_add(m.d.bus, sched_methods, sizeof sched_methods / sizeof sched_methods[0], &m);
    bus_server_set_health(m.d.bus, on_health, &m);
    bus_server_set_stats(m.d.bus, on_stats, &m);

    if (sync_from_store(&m) < 0)
        schedule_resync(&m);
    else
        campaign(&m);
    zloop_timer(m.d.loop, LEASE_KEEPALIVE_MS, 0, on_lease_timer, &m);

    int rc = daemon_run(&m.d); /* destroys the loop, the bus and d.store */

    /* Hand leadership over at once instead of after the TTL. */
    watcher_end(&m.watcher);
    zactor_destroy(&m.writer);
    if (m.lease_id) {
        store_client_set_timeout(m.store, 300);
        store_lease_revoke(m.store, m.lease_id);
    }
    store_client_destroy(&m.store);
    zcert_destroy(&m.identity);
    scheduler_destroy(&m.core);
    return rc;
}
