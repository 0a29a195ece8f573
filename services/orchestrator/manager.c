/* manager — leader election, store cache and the reconcile loop of shoal-orchestrator.
 *
 * Any number of orchestrators may run; the API (api.c) works on every one of them because each
 * write is a store Txn. Only the leader reconciles. Leadership is the key /leases/orchestrator,
 * created by a Txn "mod revision == 0" under a store lease (TTL 3 s, kept alive every second);
 * the key's mod revision is a fencing token that every reconcile write compares, so a leader
 * that lost its lease (paused, partitioned) cannot write stale decisions.
 *
 * On winning, the leader lists "/" into the cache and watches "/" from the next revision. Watch
 * events mark services dirty; after each batch of events the dirty services are reconciled
 * (reconcile.c) and the actions written in store.Batch requests, each Txn comparing the mod
 * revision its decision was computed from (creates: "key absent"). A conflict just means the
 * cache was behind; the watch brings the newer value and the service is reconciled again.
 * Invariant: no reconcile runs until the cache has caught up with our own last write
 * (wait_rev), so a pass never works from state that predates what we already wrote, and a slot
 * is never filled twice.
 *
 * Timers: one 100 ms ticker does the lease keep-alive / campaign (every second), the wake-ups
 * reconcile.c asks for (restart delays, update delays) and retries after failed writes. */
#include "manager.h"

#include <errno.h>
#include <inttypes.h>
#include <string.h>

#include "log.h"
#include "reconcile.h"

/* ---- dirty set and wake-ups --------------------------------------------------------------- */

void orch_mark_dirty(orch_t *self, const char *service_id) {
    if (!service_id) {
        self->dirty_all = true;
        return;
    }
    if (service_id[0] && !zhashx_lookup(self->dirty, service_id))
        zhashx_insert(self->dirty, service_id, (void *)1);
}

static void cache_dirty(void *ctx, const char *service_id) {
    orch_mark_dirty(ctx, service_id);
}

static void free_i64(void **item) {
    free(*item);
    *item = NULL;
}

static void set_wake(orch_t *self, const char *service_id, int64_t when) {
    int64_t *cur = zhashx_lookup(self->wake, service_id);
    if (cur) {
        if (when < *cur)
            *cur = when;
        return;
    }
    int64_t *v = malloc(sizeof *v);
    if (!v)
        return;
    *v = when;
    zhashx_insert(self->wake, service_id, v);
}

static void fire_wakeups(orch_t *self) {
    int64_t now = clock_wall_ms();
    zlistx_t *due = zlistx_new();
    zlistx_set_duplicator(due, (zlistx_duplicator_fn *)strdup);
    zlistx_set_destructor(due, (zlistx_destructor_fn *)zstr_free);
    for (int64_t *when = zhashx_first(self->wake); when; when = zhashx_next(self->wake))
        if (*when <= now)
            zlistx_add_end(due, (void *)zhashx_cursor(self->wake));
    for (char *id = zlistx_first(due); id; id = zlistx_next(due)) {
        zhashx_delete(self->wake, id);
        orch_mark_dirty(self, id);
    }
    zlistx_destroy(&due);
}

void orch_store_result(orch_t *self, int rc) {
    bool ok = rc == 0 || rc == -ECANCELED || rc == -ENOENT;
    if (!ok)
        snprintf(self->store_err, sizeof self->store_err, "%s (%s)",
                 store_client_error(self->store), strerror(-rc));
    if (ok != self->store_ok)
        log_info("store %s err=\"%s\"", ok ? "reachable" : "unreachable",
                 ok ? "" : self->store_err);
    self->store_ok = ok;
}

/* ---- writing actions ---------------------------------------------------------------------- */

typedef struct writer {
    orch_t *o;
    store_txn_builder_t *b[ORCH_BATCH_MAX];
    char service[ORCH_BATCH_MAX][128]; /* the service each txn is for, to retry on failure */
    size_t n;
    int64_t last_revision;
    int err;
    zhashx_t *failed; /* services whose writes did not reach the store */
} writer_t;

static void writer_flush(writer_t *w) {
    if (!w->n)
        return;
    Shoal__Store__TxnRequest *txns[ORCH_BATCH_MAX];
    for (size_t i = 0; i < w->n; i++)
        txns[i] = (Shoal__Store__TxnRequest *)store_txn_builder_request(w->b[i]);
    Shoal__Store__BatchRequest req = SHOAL__STORE__BATCH_REQUEST__INIT;
    req.txns = txns;
    req.n_txns = w->n;
    Shoal__Store__BatchResponse *resp = NULL;
    store_client_set_timeout(w->o->store, ORCH_STORE_TIMEOUT_MS);
    int r = store_batch(w->o->store, &req, &resp);
    orch_store_result(w->o, r);
    if (r < 0) {
        log_warn("reconcile write failed txns=%zu err=\"%s\"", w->n,
                 store_client_error(w->o->store));
        w->err = r;
        for (size_t i = 0; i < w->n; i++)
            if (!zhashx_lookup(w->failed, w->service[i]))
                zhashx_insert(w->failed, w->service[i], (void *)1);
    } else {
        if (resp->header && resp->header->revision > w->last_revision)
            w->last_revision = resp->header->revision;
        for (size_t i = 0; i < resp->n_responses && i < w->n; i++) {
            const Shoal__Store__TxnResponse *tr = resp->responses[i];
            if (tr && tr->succeeded) {
                w->o->writes_total++;
            } else {
                w->o->conflicts_total++;
                log_debug("reconcile write conflicted service=%s", w->service[i]);
            }
            if (tr && tr->header && tr->header->revision > w->last_revision)
                w->last_revision = tr->header->revision;
        }
        shoal__store__batch_response__free_unpacked(resp, NULL);
    }
    for (size_t i = 0; i < w->n; i++)
        store_txn_builder_destroy(&w->b[i]);
    w->n = 0;
}

static store_txn_builder_t *writer_txn(writer_t *w, const char *service_id) {
    if (w->n == ORCH_BATCH_MAX)
        writer_flush(w);
    store_txn_builder_t *b = store_txn_builder_new();
    if (!b)
        return NULL;
    store_txn_cmp_mod(b, ORCH_LEASE_KEY, w->o->lease_mod); /* fencing */
    snprintf(w->service[w->n], sizeof w->service[w->n], "%s", service_id);
    w->b[w->n++] = b;
    return b;
}

static void write_action(writer_t *w, const char *service_id, const recon_action_t *a,
                         int64_t now) {
    char key[192];
    switch (a->op) {
    case RECON_CREATE_TASK: {
        snprintf(key, sizeof key, "/tasks/%s", a->new_task->meta->id);
        store_txn_builder_t *b = writer_txn(w, service_id);
        if (!b)
            return;
        store_txn_cmp_mod(b, key, 0);
        store_txn_put(b, key, &a->new_task->base);
        log_debug("task create service=%s task=%s slot=%" PRIu64 " node=%s why=%s", service_id,
                  a->new_task->meta->id, a->new_task->slot, a->new_task->node_id, a->why);
        break;
    }
    case RECON_UPDATE_TASK: {
        Shoal__Task *t = recon_task_apply(a, now);
        if (!t)
            return;
        snprintf(key, sizeof key, "/tasks/%s", t->meta->id);
        store_txn_builder_t *b = writer_txn(w, service_id);
        if (b) {
            store_txn_cmp_mod(b, key, a->mod_revision);
            store_txn_put(b, key, &t->base);
            log_debug("task update service=%s task=%s desired=%s restart_at=%" PRId64 " why=%s",
                      service_id, t->meta->id, recon_task_state_name(t->desired_state),
                      t->restart_at_ms, a->why);
        }
        protobuf_c_message_free_unpacked(&t->base, NULL);
        break;
    }
    case RECON_DELETE_TASK: {
        snprintf(key, sizeof key, "/tasks/%s", a->task->meta ? a->task->meta->id : "");
        store_txn_builder_t *b = writer_txn(w, service_id);
        if (!b)
            return;
        store_txn_cmp_mod(b, key, a->mod_revision);
        store_txn_delete(b, key);
        log_debug("task delete service=%s key=%s why=%s", service_id, key, a->why);
        break;
    }
    case RECON_UPDATE_SERVICE: {
        snprintf(key, sizeof key, "/services/%s", service_id);
        store_txn_builder_t *b = writer_txn(w, service_id);
        if (!b)
            return;
        store_txn_cmp_mod(b, key, a->mod_revision);
        store_txn_put(b, key, &a->new_service->base);
        const Shoal__UpdateStatus *st = a->new_service->update_status;
        log_info("service update status service=%s state=%d message=\"%s\"", service_id,
                 st ? (int)st->state : 0, st && st->message ? st->message : "");
        break;
    }
    }
}

/* ---- reconcile round ---------------------------------------------------------------------- */

typedef struct task_list {
    recon_task_t *items;
    size_t n, cap;
} task_list_t;

static void task_list_free(void **item) {
    task_list_t *l = *item;
    if (l) {
        free(l->items);
        free(l);
    }
    *item = NULL;
}

static void mark_every_service(orch_t *self) {
    for (cache_obj_t *o = zhashx_first(self->cache->services); o;
         o = zhashx_next(self->cache->services))
        orch_mark_dirty(self, o->id);
    for (cache_obj_t *o = zhashx_first(self->cache->tasks); o; o = zhashx_next(self->cache->tasks))
        orch_mark_dirty(self, ((const Shoal__Task *)o->msg)->service_id);
    self->dirty_all = false;
}

static void reconcile_round(orch_t *self) {
    if (!self->leader || !self->cache || self->cache->revision < self->wait_rev)
        return;
    if (clock_mono_ms() < self->retry_at_ms)
        return;
    if (self->dirty_all)
        mark_every_service(self);
    if (zhashx_size(self->dirty) == 0)
        return;

    zhashx_t *by_service = zhashx_new();
    zhashx_set_destructor(by_service, task_list_free);
    for (cache_obj_t *o = zhashx_first(self->cache->tasks); o;
         o = zhashx_next(self->cache->tasks)) {
        Shoal__Task *t = (Shoal__Task *)o->msg;
        if (!t->service_id || !zhashx_lookup(self->dirty, t->service_id))
            continue;
        task_list_t *l = zhashx_lookup(by_service, t->service_id);
        if (!l) {
            l = calloc(1, sizeof *l);
            if (!l)
                continue;
            zhashx_insert(by_service, t->service_id, l);
        }
        if (l->n == l->cap) {
            size_t cap = l->cap ? l->cap * 2 : 8;
            recon_task_t *items = realloc(l->items, cap * sizeof *items);
            if (!items)
                continue;
            l->items = items;
            l->cap = cap;
        }
        l->items[l->n++] = (recon_task_t){
            .task = t, .mod_revision = o->mod_revision, .running_since_ms = o->running_since_ms};
    }
    size_t nn = zhashx_size(self->cache->nodes), k = 0;
    Shoal__Node **nodes = calloc(nn ? nn : 1, sizeof *nodes);
    for (cache_obj_t *o = zhashx_first(self->cache->nodes); o && nodes;
         o = zhashx_next(self->cache->nodes))
        nodes[k++] = (Shoal__Node *)o->msg;

    writer_t w = {.o = self, .failed = zhashx_new()};
    int64_t now = clock_wall_ms();
    uint64_t history = cache_history_limit(self->cache);
    zlistx_t *ids = zhashx_keys(self->dirty);
    zhashx_purge(self->dirty);
    for (const char *id = zlistx_first(ids); id; id = zlistx_next(ids)) {
        int64_t mod = 0;
        const Shoal__Service *svc = cache_service(self->cache, id, &mod);
        task_list_t *l = zhashx_lookup(by_service, id);
        if (!svc && !l)
            continue;
        recon_input_t in = {.service = svc,
                            .service_mod_revision = mod,
                            .tasks = l ? l->items : NULL,
                            .n_tasks = l ? l->n : 0,
                            .nodes = nodes,
                            .n_nodes = nodes ? k : 0,
                            .now_ms = now,
                            .default_history_limit = history};
        recon_result_t res = {0};
        int r = reconcile_service(&in, &res);
        self->reconciles_total++;
        if (r < 0) {
            log_err("reconcile failed service=%s err=%d", id, r);
            orch_mark_dirty(self, id);
            recon_result_clear(&res);
            continue;
        }
        self->tasks_created_total += res.tasks_created;
        self->restarts_total += res.restarts;
        if (res.wake_at_ms)
            set_wake(self, id, res.wake_at_ms);
        size_t counts[4] = {0};
        for (size_t i = 0; i < res.n_actions; i++) {
            counts[res.actions[i].op]++;
            write_action(&w, id, &res.actions[i], now);
        }
        if (res.n_actions)
            log_info("reconciled service=%s name=%s created=%zu updated=%zu deleted=%zu "
                     "restarts=%" PRIu64,
                     id,
                     svc && svc->spec && svc->spec->annotations ? svc->spec->annotations->name
                                                                : "(removed)",
                     counts[RECON_CREATE_TASK], counts[RECON_UPDATE_TASK],
                     counts[RECON_DELETE_TASK], res.restarts);
        recon_result_clear(&res);
    }
    writer_flush(&w);
    zlistx_destroy(&ids);
    if (w.last_revision > self->wait_rev) {
        self->wait_rev = w.last_revision;
        self->wait_since_ms = clock_mono_ms();
    }
    if (w.err) {
        for (const void *v = zhashx_first(w.failed); v; v = zhashx_next(w.failed))
            orch_mark_dirty(self, zhashx_cursor(w.failed));
        self->retry_at_ms = clock_mono_ms() + 500;
    }
    zhashx_destroy(&w.failed);
    free(nodes);
    zhashx_destroy(&by_service);
}

/* ---- watch -------------------------------------------------------------------------------- */

static int on_watch(zloop_t *loop, zsock_t *reader, void *arg);

static void stop_watch(orch_t *self) {
    if (!self->watcher)
        return;
    if (self->d->loop)
        zloop_reader_end(self->d->loop, zactor_sock(self->watcher));
    zactor_destroy(&self->watcher);
}

/* Lists "/" into the cache and watches from the next revision. */
static int load_and_watch(orch_t *self) {
    stop_watch(self);
    Shoal__Store__RangeResponse *list = NULL;
    store_client_set_timeout(self->store, ORCH_STORE_TIMEOUT_MS * 3);
    int r = store_list(self->store, "/", &list);
    orch_store_result(self, r);
    if (r < 0) {
        log_warn("cannot list the store err=\"%s\"", store_client_error(self->store));
        return r;
    }
    cache_load(self->cache, list);
    shoal__store__range_response__free_unpacked(list, NULL);
    self->watcher = store_watcher_new(&self->d->cfg, self->d->kind, "/", self->cache->revision + 1);
    if (!self->watcher)
        return -ENOMEM;
    zloop_reader(self->d->loop, zactor_sock(self->watcher), on_watch, self);
    self->dirty_all = true;
    self->wait_rev = 0;
    log_info("cache loaded revision=%" PRId64 " services=%zu tasks=%zu nodes=%zu",
             self->cache->revision, zhashx_size(self->cache->services),
             zhashx_size(self->cache->tasks), zhashx_size(self->cache->nodes));
    return 0;
}

static int on_watch(zloop_t *loop, zsock_t *reader, void *arg) {
    orch_t *self = arg;
    bool reload = false;
    while (self->watcher && (zsock_events(reader) & ZMQ_POLLIN)) {
        Shoal__Store__WatchResponse *resp = NULL;
        if (store_watcher_recv(self->watcher, &resp) < 0)
            break;
        if (resp->compacted) {
            log_warn("watch history compacted compact_revision=%" PRId64 "; re-listing",
                     resp->compact_revision);
            reload = true;
        } else if (self->leader) {
            cache_apply(self->cache, resp, cache_dirty, self);
        }
        shoal__store__watch_response__free_unpacked(resp, NULL);
        if (reload)
            break;
    }
    if (reload && self->leader && load_and_watch(self) < 0)
        self->retry_at_ms = clock_mono_ms() + 500;
    reconcile_round(self);
    return 0;
}

/* ---- leadership --------------------------------------------------------------------------- */

static void ensure_cluster(orch_t *self) {
    Shoal__Meta meta = SHOAL__META__INIT;
    char id[32];
    id_random(id);
    meta.id = id;
    meta.version = 1;
    meta.created_at_ms = meta.updated_at_ms = clock_wall_ms();
    Shoal__Annotations ann = SHOAL__ANNOTATIONS__INIT;
    ann.name = "default";
    Shoal__ClusterSpec spec = SHOAL__CLUSTER_SPEC__INIT;
    spec.annotations = &ann;
    spec.heartbeat_period_ms = 500;
    spec.node_down_multiplier = 3;
    spec.task_history_limit = 5;
    spec.raft_tick_ms = 50;
    spec.scheduler_debounce_ms = 10;
    Shoal__Cluster c = SHOAL__CLUSTER__INIT;
    c.meta = &meta;
    c.spec = &spec;
    int r = store_cas_put(self->store, "/cluster", &c.base, 0, NULL);
    orch_store_result(self, r);
    if (r == 0)
        log_info("created /cluster with defaults heartbeat_ms=500 multiplier=3 history=5");
    else if (r != -ECANCELED)
        log_warn("cannot create /cluster err=\"%s\"", store_client_error(self->store));
}

static void step_down(orch_t *self, const char *why) {
    if (!self->leader)
        return;
    log_warn("leadership lost reason=\"%s\"", why);
    self->leader = false;
    stop_watch(self);
    cache_clear(self->cache);
    zhashx_purge(self->dirty);
    zhashx_purge(self->wake);
    self->dirty_all = false;
    self->wait_rev = 0;
}

static void campaign(orch_t *self) {
    if (!self->lease_id) {
        int r = store_lease_grant(self->store, ORCH_LEASE_TTL_MS, &self->lease_id);
        orch_store_result(self, r);
        if (r < 0) {
            self->lease_id = 0;
            return;
        }
        self->lease_ok_ms = clock_mono_ms();
    }
    store_txn_builder_t *b = store_txn_builder_new();
    if (!b)
        return;
    const char *name = self->d->instance;
    store_txn_cmp_mod(b, ORCH_LEASE_KEY, 0);
    store_txn_put_raw(b, ORCH_LEASE_KEY, name, strlen(name), self->lease_id);
    Shoal__Store__TxnResponse *resp = NULL;
    int r = store_txn(self->store, store_txn_builder_request(b), &resp);
    orch_store_result(self, r);
    if (resp)
        shoal__store__txn_response__free_unpacked(resp, NULL);
    store_txn_builder_destroy(&b);
    if (r < 0 && r != -ECANCELED)
        return;
    /* won now, or still holding it from before a step-down (our lease kept the key alive) */
    Shoal__Store__KeyValue *kv = NULL;
    r = store_get(self->store, ORCH_LEASE_KEY, &kv);
    if (r < 0 || kv->lease != self->lease_id) {
        if (kv)
            shoal__store__key_value__free_unpacked(kv, NULL);
        return;
    }
    self->lease_mod = kv->mod_revision;
    shoal__store__key_value__free_unpacked(kv, NULL);
    self->leader = true;
    self->leader_changes_total++;
    log_info("became leader instance=%s lease=%" PRId64 " fence=%" PRId64, name, self->lease_id,
             self->lease_mod);
    ensure_cluster(self);
    if (load_and_watch(self) < 0)
        step_down(self, "cannot load the store");
}

static void lease_tick(orch_t *self) {
    int64_t now = clock_mono_ms();
    if (now < self->next_lease_ms)
        return;
    self->next_lease_ms = now + ORCH_KEEPALIVE_MS;
    store_client_set_timeout(self->store, ORCH_KEEPALIVE_MS);
    if (self->lease_id) {
        int r = store_lease_keepalive(self->store, self->lease_id);
        orch_store_result(self, r);
        if (r == 0) {
            self->lease_ok_ms = now;
        } else if (r == -ENOENT) {
            self->lease_id = 0;
            step_down(self, "lease expired");
        } else if (now - self->lease_ok_ms >= ORCH_LEASE_TTL_MS) {
            self->lease_id = 0;
            step_down(self, "store unreachable for the lease TTL");
        }
    }
    if (!self->leader)
        campaign(self);
    store_client_set_timeout(self->store, ORCH_STORE_TIMEOUT_MS);
}

static int on_tick(zloop_t *loop, int timer_id, void *arg) {
    orch_t *self = arg;
    lease_tick(self);
    if (self->leader && self->cache->revision < self->wait_rev &&
        clock_mono_ms() - self->wait_since_ms > ORCH_CATCH_UP_MS) {
        /* the watch should have brought our own writes back by now; trust a fresh list */
        log_warn("watch behind our writes revision=%" PRId64 " waiting_for=%" PRId64 "; re-listing",
                 self->cache->revision, self->wait_rev);
        if (load_and_watch(self) < 0)
            self->retry_at_ms = clock_mono_ms() + 500;
    }
    if (self->leader) {
        fire_wakeups(self);
        reconcile_round(self);
    }
    return 0;
}

/* ---- life cycle --------------------------------------------------------------------------- */

orch_t *orch_new(daemon_t *d) {
    orch_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->d = d;
    self->identity = bus_identity_load(d->cfg.state_dir, d->kind);
    self->store = self->identity ? store_client_new(&d->cfg, self->identity) : NULL;
    self->cache = cache_new();
    self->dirty = zhashx_new();
    self->wake = zhashx_new();
    if (!self->store || !self->cache || !self->dirty || !self->wake) {
        orch_destroy(&self);
        return NULL;
    }
    zhashx_set_destructor(self->wake, free_i64);
    store_client_set_timeout(self->store, ORCH_STORE_TIMEOUT_MS);
    self->store_ok = true;
    return self;
}

int orch_start(orch_t *self) {
    self->ticker = zloop_timer(self->d->loop, ORCH_TICK_MS, 0, on_tick, self);
    return self->ticker < 0 ? -ENOMEM : 0;
}

void orch_destroy(orch_t **self_p) {
    orch_t *self = *self_p;
    if (!self)
        return;
    /* release the lease first, so a standby takes over without waiting for the TTL */
    if (self->store && self->lease_id) {
        store_client_set_timeout(self->store, 300);
        if (store_lease_revoke(self->store, self->lease_id) == 0)
            log_info("lease released lease=%" PRId64, self->lease_id);
    }
    if (self->watcher)
        zactor_destroy(&self->watcher); /* the loop is gone: no reader to end */
    store_client_destroy(&self->store);
    zcert_destroy(&self->identity);
    cache_destroy(&self->cache);
    zhashx_destroy(&self->dirty);
    zhashx_destroy(&self->wake);
    free(self);
    *self_p = NULL;
}
