/* server — the store.* bus methods over the kv state machine (see server.h).
 *
 * Flow of a write: handler -> queue (the call is kept, its input stays valid until the reply) ->
 * a 0 ms one-shot zloop timer armed by the first queued write fires at the top of the next loop
 * iteration, after every request of this wake-up was dispatched -> flush(): one kv_apply() over
 * the whole queue (one synced RocksDB write) -> every call is replied in arrival order -> parked
 * watches are re-checked. Nothing is replied before its write is durable; a crash before the
 * fsync loses only unacknowledged writes, which clients retry by request id.
 *
 * Lease keep-alives touch memory only (deadlines are soft state), but when writes are queued
 * they wait in the queue too, so a keep-alive is never answered before a grant that arrived ahead
 * of it. Reads (Range, Status) and Watch are served at once from committed state.
 *
 * Parked watches keep a cursor: the next revision to look at. Each commit advances it past the
 * revisions read, so a quiet watch never rescans history and cannot fall behind compaction while
 * it waits. A parked watch is answered when a commit brings a matching event, or with no events
 * and next_revision = cursor when its timeout passes (checked every STORE_TICK_MS).
 *
 * Time: deadlines and lease TTLs use the monotonic clock; kv never reads a clock itself. */
#include "server.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "arena.h"
#include "kv.h"
#include "log.h"
#include "registry.h"
#include "store.pb-c.h"

typedef struct pending {
    bus_call_t *call;
    kv_op_t op;
    bool keepalive; /* a LeaseKeepAlive waiting behind queued writes */
} pending_t;

typedef struct parked {
    bus_call_t *call;
    const Shoal__Store__WatchRequest *req;
    int64_t cursor;
    int64_t expires_ms;
} parked_t;

struct store_server {
    kv_t *kv;
    bus_server_t *bus;
    zloop_t *loop;
    arena_t *arena;
    pending_t *pending;
    size_t n_pending, cap_pending;
    int flush_timer; /* -1 when not armed */
    int tick_timer;
    zlistx_t *parked; /* parked_t *, in arrival order */
    char member[64];
    /* our own registry entry */
    char reg_key[256];
    uint8_t *reg_value;
    size_t reg_len;
    int64_t reg_lease;
    int64_t reg_next_ms;
    /* counters for bus.Stats */
    uint64_t batches_total, batch_ops_last, batch_ops_max;
    int64_t apply_us_last, apply_us_max;
    uint64_t watch_replies_total, watch_timeouts_total, watch_parked_total;
    uint64_t leases_expired_total;
};

static void wake_watchers(store_server_t *self);

/* ---- replies ----------------------------------------------------------------------------- */

static void reply_error(bus_call_t *call, int rc, const char *message) {
    bus_reply_error(call, bus_code_from_errno(rc), "%s",
                    message && *message ? message : strerror(-rc));
}

static void reply_result(bus_call_t *call, const kv_result_t *r) {
    if (r->err)
        reply_error(call, r->err, r->message);
    else
        bus_reply_ok(call, r->response);
}

/* ---- group commit ------------------------------------------------------------------------ */

static int on_flush_timer(zloop_t *loop, int timer_id, void *arg) {
    store_server_t *self = arg;
    self->flush_timer = -1;
    store_server_flush(self);
    return 0;
}

static void enqueue(store_server_t *self, bus_call_t *call, kv_op_type_t type,
                    const ProtobufCMessage *req, bool keepalive) {
    if (self->n_pending == self->cap_pending) {
        size_t cap = self->cap_pending ? self->cap_pending * 2 : 64;
        pending_t *p = realloc(self->pending, cap * sizeof *p);
        if (!p) {
            if (call)
                bus_reply_error(call, BUS_UNAVAILABLE, "store out of memory, retry");
            return;
        }
        self->pending = p;
        self->cap_pending = cap;
    }
    self->pending[self->n_pending++] = (pending_t){call, {type, req}, keepalive};
    if (self->flush_timer < 0)
        self->flush_timer = zloop_timer(self->loop, 0, 1, on_flush_timer, self);
}

static void keepalive_reply(store_server_t *self, bus_call_t *call,
                            const Shoal__Store__LeaseKeepAliveRequest *req) {
    int64_t ttl = 0;
    int rc = kv_lease_keepalive(self->kv, req->id, clock_mono_ms(), &ttl);
    if (rc < 0) {
        reply_error(call, rc, kv_error(self->kv));
        return;
    }
    Shoal__Store__ResponseHeader h = SHOAL__STORE__RESPONSE_HEADER__INIT;
    h.revision = kv_revision(self->kv);
    h.member_id = 1;
    Shoal__Store__LeaseKeepAliveResponse out = SHOAL__STORE__LEASE_KEEP_ALIVE_RESPONSE__INIT;
    out.header = &h;
    out.id = req->id;
    out.ttl_ms = ttl;
    bus_reply_ok(call, &out.base);
}

void store_server_flush(store_server_t *self) {
    size_t n = self->n_pending;
    if (n == 0)
        return;
    arena_reset(self->arena);
    kv_op_t *ops = arena_alloc(self->arena, n * sizeof *ops);
    kv_result_t *results = arena_alloc(self->arena, n * sizeof *results);
    size_t nops = 0;
    for (size_t i = 0; i < n; i++)
        if (!self->pending[i].keepalive)
            ops[nops++] = self->pending[i].op;
    int64_t rev_before = kv_revision(self->kv);
    int64_t t0 = zclock_usecs();
    if (nops)
        (void)kv_apply(self->kv, ops, nops, clock_mono_ms(), self->arena, results);
    int64_t took = zclock_usecs() - t0;
    size_t j = 0;
    for (size_t i = 0; i < n; i++) {
        pending_t *p = &self->pending[i];
        if (p->keepalive)
            keepalive_reply(self, p->call, (const void *)p->op.request);
        else if (p->call)
            reply_result(p->call, &results[j++]);
        else
            j++;
    }
    self->n_pending = 0;
    if (nops) {
        self->batches_total++;
        self->batch_ops_last = nops;
        if (nops > self->batch_ops_max)
            self->batch_ops_max = nops;
        self->apply_us_last = took;
        if (took > self->apply_us_max)
            self->apply_us_max = took;
    }
    arena_reset(self->arena);
    if (kv_revision(self->kv) != rev_before)
        wake_watchers(self);
}

/* ---- handlers ---------------------------------------------------------------------------- */

static void on_range(void *ctx, bus_call_t *call, const ProtobufCMessage *in) {
    store_server_t *self = ctx;
    arena_reset(self->arena);
    Shoal__Store__RangeResponse *resp;
    int rc = kv_range(self->kv, (const void *)in, self->arena, &resp);
    if (rc < 0)
        reply_error(call, rc, kv_error(self->kv));
    else
        bus_reply_ok(call, &resp->base);
    arena_reset(self->arena);
}

static void on_put(void *ctx, bus_call_t *call, const ProtobufCMessage *in) {
    enqueue(ctx, call, KV_OP_PUT, in, false);
}

static void on_delete_range(void *ctx, bus_call_t *call, const ProtobufCMessage *in) {
    enqueue(ctx, call, KV_OP_DELETE_RANGE, in, false);
}

static void on_txn(void *ctx, bus_call_t *call, const ProtobufCMessage *in) {
    enqueue(ctx, call, KV_OP_TXN, in, false);
}

static void on_batch(void *ctx, bus_call_t *call, const ProtobufCMessage *in) {
    enqueue(ctx, call, KV_OP_BATCH, in, false);
}

static void on_lease_grant(void *ctx, bus_call_t *call, const ProtobufCMessage *in) {
    enqueue(ctx, call, KV_OP_LEASE_GRANT, in, false);
}

static void on_lease_revoke(void *ctx, bus_call_t *call, const ProtobufCMessage *in) {
    enqueue(ctx, call, KV_OP_LEASE_REVOKE, in, false);
}

static void on_compact(void *ctx, bus_call_t *call, const ProtobufCMessage *in) {
    enqueue(ctx, call, KV_OP_COMPACT, in, false);
}

static void on_lease_keepalive(void *ctx, bus_call_t *call, const ProtobufCMessage *in) {
    store_server_t *self = ctx;
    if (self->n_pending)
        enqueue(self, call, 0, in, true);
    else
        keepalive_reply(self, call, (const void *)in);
}

static void on_status(void *ctx, bus_call_t *call, const ProtobufCMessage *in) {
    store_server_t *self = ctx;
    Shoal__Store__ResponseHeader h = SHOAL__STORE__RESPONSE_HEADER__INIT;
    h.revision = kv_revision(self->kv);
    h.member_id = 1;
    Shoal__Store__StatusResponse out = SHOAL__STORE__STATUS_RESPONSE__INIT;
    out.header = &h;
    out.member = self->member;
    out.leader = self->member; /* one member, no Raft yet: always the leader */
    out.compact_revision = kv_compact_revision(self->kv);
    out.keys = kv_key_count(self->kv);
    out.leases = kv_lease_count(self->kv);
    out.db_size_bytes = kv_db_size(self->kv);
    /* no Raft log yet: the state applied is the revision */
    out.commit_index = kv_revision(self->kv);
    out.applied_index = kv_revision(self->kv);
    bus_reply_ok(call, &out.base);
}

/* ---- watch ------------------------------------------------------------------------------- */

static void parked_free(void **item) {
    free(*item);
    *item = NULL;
}

static void on_watch(void *ctx, bus_call_t *call, const ProtobufCMessage *in) {
    store_server_t *self = ctx;
    const Shoal__Store__WatchRequest *req = (const void *)in;
    int64_t now = clock_mono_ms();
    int64_t timeout = req->timeout_ms ? req->timeout_ms : STORE_WATCH_DEFAULT_TIMEOUT_MS;
    if (timeout > STORE_WATCH_MAX_TIMEOUT_MS)
        timeout = STORE_WATCH_MAX_TIMEOUT_MS;
    int64_t expires = now + timeout;
    int64_t client_deadline = bus_call_deadline(call);
    if (client_deadline && client_deadline - 250 < expires)
        expires = client_deadline - 250 > now ? client_deadline - 250 : now;
    arena_reset(self->arena);
    Shoal__Store__WatchResponse *resp;
    int rc = kv_watch_read(self->kv, req, req->start_revision, self->arena, &resp);
    if (rc < 0) {
        reply_error(call, rc, kv_error(self->kv));
    } else if (resp->n_events || resp->compacted || expires <= now) {
        self->watch_replies_total++;
        bus_reply_ok(call, &resp->base);
    } else if (zlistx_size(self->parked) >= STORE_MAX_PARKED_WATCHES) {
        bus_reply_error(call, BUS_UNAVAILABLE, "too many watches waiting (%d), retry later",
                        STORE_MAX_PARKED_WATCHES);
    } else {
        parked_t *p = calloc(1, sizeof *p);
        if (!p) {
            bus_reply_error(call, BUS_UNAVAILABLE, "store out of memory, retry");
        } else {
            *p = (parked_t){call, req, resp->next_revision, expires};
            zlistx_add_end(self->parked, p);
            self->watch_parked_total++;
        }
    }
    arena_reset(self->arena);
}

/* After a commit: answer every parked watch that now has events; advance the others' cursors. */
static void wake_watchers(store_server_t *self) {
    int64_t rev = kv_revision(self->kv);
    parked_t *p = zlistx_first(self->parked);
    while (p) {
        void *cursor = zlistx_cursor(self->parked);
        parked_t *next = zlistx_next(self->parked);
        if (p->cursor <= rev) {
            arena_reset(self->arena);
            Shoal__Store__WatchResponse *resp;
            int rc = kv_watch_read(self->kv, p->req, p->cursor, self->arena, &resp);
            bool done = true;
            if (rc < 0)
                reply_error(p->call, rc, kv_error(self->kv));
            else if (resp->n_events || resp->compacted) {
                self->watch_replies_total++;
                bus_reply_ok(p->call, &resp->base);
            } else {
                p->cursor = resp->next_revision;
                done = false;
            }
            if (done)
                zlistx_delete(self->parked, cursor);
        }
        p = next;
    }
    arena_reset(self->arena);
}

static void expire_watchers(store_server_t *self, int64_t now) {
    parked_t *p = zlistx_first(self->parked);
    while (p) {
        void *cursor = zlistx_cursor(self->parked);
        parked_t *next = zlistx_next(self->parked);
        if (p->expires_ms <= now) {
            Shoal__Store__ResponseHeader h = SHOAL__STORE__RESPONSE_HEADER__INIT;
            h.revision = kv_revision(self->kv);
            h.member_id = 1;
            Shoal__Store__WatchResponse out = SHOAL__STORE__WATCH_RESPONSE__INIT;
            out.header = &h;
            out.compact_revision = kv_compact_revision(self->kv);
            out.next_revision = p->cursor;
            self->watch_timeouts_total++;
            bus_reply_ok(p->call, &out.base);
            zlistx_delete(self->parked, cursor);
        }
        p = next;
    }
}

/* ---- registry ---------------------------------------------------------------------------- */

/* Grants a lease and puts our entry under it (two durable writes: the put needs the id). */
static int registry_write(store_server_t *self) {
    arena_reset(self->arena);
    Shoal__Store__LeaseGrantRequest g = SHOAL__STORE__LEASE_GRANT_REQUEST__INIT;
    g.ttl_ms = REGISTRY_TTL_MS;
    kv_op_t op = {KV_OP_LEASE_GRANT, &g.base};
    kv_result_t r;
    int rc = kv_apply(self->kv, &op, 1, clock_mono_ms(), self->arena, &r);
    if (rc == 0 && r.err)
        rc = r.err;
    if (rc < 0) {
        log_warn("registry lease grant failed err=\"%s\"", r.message ? r.message : "");
        return rc;
    }
    int64_t lease = ((Shoal__Store__LeaseGrantResponse *)r.response)->id;
    Shoal__Store__PutRequest p = SHOAL__STORE__PUT_REQUEST__INIT;
    p.key = self->reg_key;
    p.value.data = self->reg_value;
    p.value.len = self->reg_len;
    p.lease = lease;
    op = (kv_op_t){KV_OP_PUT, &p.base};
    rc = kv_apply(self->kv, &op, 1, clock_mono_ms(), self->arena, &r);
    if (rc == 0 && r.err)
        rc = r.err;
    if (rc < 0) {
        log_warn("registry put failed key=%s err=\"%s\"", self->reg_key,
                 r.message ? r.message : "");
        return rc;
    }
    self->reg_lease = lease;
    arena_reset(self->arena);
    wake_watchers(self);
    return 0;
}

static int registry_init(store_server_t *self, const char *node) {
    snprintf(self->reg_key, sizeof self->reg_key, "/bus/%s/%s", bus_server_kind(self->bus),
             bus_server_instance(self->bus));
    char host[256] = "";
    if (!node) {
        gethostname(host, sizeof host - 1);
        node = host;
    }
    Shoal__Bus__RegistryEntry e = SHOAL__BUS__REGISTRY_ENTRY__INIT;
    e.kind = (char *)bus_server_kind(self->bus);
    e.instance = (char *)bus_server_instance(self->bus);
    e.rpc_endpoint = (char *)bus_server_rpc_endpoint(self->bus);
    e.pub_endpoint = (char *)bus_server_pub_endpoint(self->bus);
    e.public_key = (char *)bus_server_public_key(self->bus);
    e.node = (char *)node;
    e.pid = getpid();
    e.version = SHOAL_VERSION;
    e.started_ms = clock_wall_ms();
    self->reg_len = shoal__bus__registry_entry__get_packed_size(&e);
    self->reg_value = malloc(self->reg_len ? self->reg_len : 1);
    if (!self->reg_value)
        return -ENOMEM;
    shoal__bus__registry_entry__pack(&e, self->reg_value);
    return registry_write(self);
}

static void registry_tick(store_server_t *self, int64_t now) {
    if (now < self->reg_next_ms)
        return;
    self->reg_next_ms = now + REGISTRY_KEEPALIVE_MS;
    if (self->reg_lease && kv_lease_keepalive(self->kv, self->reg_lease, now, NULL) == 0)
        return;
    log_info("registry lease lost, registering again key=%s", self->reg_key);
    self->reg_lease = 0;
    (void)registry_write(self);
}

/* ---- timer, health, stats ---------------------------------------------------------------- */

static int on_tick(zloop_t *loop, int timer_id, void *arg) {
    store_server_t *self = arg;
    int64_t now = clock_mono_ms();
    int64_t rev = kv_revision(self->kv);
    int n = kv_expire_leases(self->kv, now);
    if (n > 0)
        self->leases_expired_total += (uint64_t)n;
    else if (n < 0)
        log_warn("lease expiry failed err=\"%s\"", kv_error(self->kv));
    if (kv_revision(self->kv) != rev)
        wake_watchers(self);
    registry_tick(self, now);
    expire_watchers(self, now);
    return 0;
}

static void on_health(void *ctx, Shoal__Bus__HealthResponse *health) {
    store_server_t *self = ctx;
    bool open = self->kv != NULL;
    bus_health_set_status(health, open, "%s revision=%lld", open ? "ok" : "database closed",
                          (long long)(open ? kv_revision(self->kv) : 0));
    bus_health_add_check(health, "database", open, "%s", open ? "open" : "closed");
}

static void on_stats(void *ctx, Shoal__Bus__StatsResponse *stats) {
    store_server_t *self = ctx;
    bus_stats_add(stats, "store.revision", kv_revision(self->kv));
    bus_stats_add(stats, "store.compact_revision", kv_compact_revision(self->kv));
    bus_stats_add(stats, "store.keys", kv_key_count(self->kv));
    bus_stats_add(stats, "store.leases", kv_lease_count(self->kv));
    bus_stats_add(stats, "store.watchers", (int64_t)zlistx_size(self->parked));
    bus_stats_add(stats, "store.writes_total", (int64_t)kv_ops_total(self->kv));
    bus_stats_add(stats, "store.fsyncs_total", (int64_t)kv_fsyncs_total(self->kv));
    bus_stats_add(stats, "store.batches_total", (int64_t)self->batches_total);
    bus_stats_add(stats, "store.batch_ops_last", (int64_t)self->batch_ops_last);
    bus_stats_add(stats, "store.batch_ops_max", (int64_t)self->batch_ops_max);
    bus_stats_add(stats, "store.apply_us_last", self->apply_us_last);
    bus_stats_add(stats, "store.apply_us_max", self->apply_us_max);
    bus_stats_add(stats, "store.watch_replies_total", (int64_t)self->watch_replies_total);
    bus_stats_add(stats, "store.watch_parked_total", (int64_t)self->watch_parked_total);
    bus_stats_add(stats, "store.watch_timeouts_total", (int64_t)self->watch_timeouts_total);
    bus_stats_add(stats, "store.leases_expired_total", (int64_t)self->leases_expired_total);
    bus_stats_add(stats, "store.db_size_bytes", kv_db_size(self->kv));
}

/* ---- life cycle -------------------------------------------------------------------------- */

static const bus_method_t store_methods[] = {
    {"store.Range", &shoal__store__range_request__descriptor,
     &shoal__store__range_response__descriptor, on_range, BUS_ROLES_MANAGER},
    {"store.Put", &shoal__store__put_request__descriptor, &shoal__store__put_response__descriptor,
     on_put, BUS_ROLES_MANAGER},
    {"store.DeleteRange", &shoal__store__delete_range_request__descriptor,
     &shoal__store__delete_range_response__descriptor, on_delete_range, BUS_ROLES_MANAGER},
    {"store.Txn", &shoal__store__txn_request__descriptor, &shoal__store__txn_response__descriptor,
     on_txn, BUS_ROLES_MANAGER},
    {"store.Batch", &shoal__store__batch_request__descriptor,
     &shoal__store__batch_response__descriptor, on_batch, BUS_ROLES_MANAGER},
    {"store.Watch", &shoal__store__watch_request__descriptor,
     &shoal__store__watch_response__descriptor, on_watch, BUS_ROLES_MANAGER},
    {"store.LeaseGrant", &shoal__store__lease_grant_request__descriptor,
     &shoal__store__lease_grant_response__descriptor, on_lease_grant, BUS_ROLES_MANAGER},
    {"store.LeaseKeepAlive", &shoal__store__lease_keep_alive_request__descriptor,
     &shoal__store__lease_keep_alive_response__descriptor, on_lease_keepalive, BUS_ROLES_MANAGER},
    {"store.LeaseRevoke", &shoal__store__lease_revoke_request__descriptor,
     &shoal__store__lease_revoke_response__descriptor, on_lease_revoke, BUS_ROLES_MANAGER},
    {"store.Compact", &shoal__store__compact_request__descriptor,
     &shoal__store__compact_response__descriptor, on_compact, BUS_ROLES_MANAGER},
    {"store.Status", &shoal__store__status_request__descriptor,
     &shoal__store__status_response__descriptor, on_status, BUS_ROLES_MANAGER},
};

store_server_t *store_server_new(bus_server_t *bus, zloop_t *loop,
                                 const store_server_options_t *opts, char *err, size_t errlen) {
    store_server_t *self = calloc(1, sizeof *self);
    if (!self) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    self->bus = bus;
    self->loop = loop;
    self->flush_timer = -1;
    self->tick_timer = -1;
    snprintf(self->member, sizeof self->member, "%s", bus_server_instance(bus));
    self->arena = arena_new(0);
    self->parked = zlistx_new();
    if (!self->arena || !self->parked) {
        snprintf(err, errlen, "out of memory");
        store_server_destroy(&self);
        return NULL;
    }
    zlistx_set_destructor(self->parked, parked_free);
    kv_options_t ko = {.history = opts->history};
    int rc = kv_open(opts->data_dir, &ko, clock_mono_ms(), &self->kv, err, errlen);
    if (rc < 0) {
        store_server_destroy(&self);
        return NULL;
    }
    rc = registry_init(self, opts->node);
    if (rc < 0) {
        snprintf(err, errlen, "cannot write the registry entry /bus/store/%s: %s",
                 bus_server_instance(bus), kv_error(self->kv));
        store_server_destroy(&self);
        return NULL;
    }
    self->reg_next_ms = clock_mono_ms() + REGISTRY_KEEPALIVE_MS;
    rc = bus_server_add(bus, store_methods, sizeof store_methods / sizeof store_methods[0], self);
    if (rc < 0) {
        snprintf(err, errlen, "cannot add the store methods to the bus: %s", strerror(-rc));
        store_server_destroy(&self);
        return NULL;
    }
    bus_server_set_health(bus, on_health, self);
    bus_server_set_stats(bus, on_stats, self);
    self->tick_timer = zloop_timer(loop, STORE_TICK_MS, 0, on_tick, self);
    log_info("store open dir=%s revision=%lld compact_revision=%lld keys=%lld leases=%lld",
             opts->data_dir, (long long)kv_revision(self->kv),
             (long long)kv_compact_revision(self->kv), (long long)kv_key_count(self->kv),
             (long long)kv_lease_count(self->kv));
    return self;
}

void store_server_destroy(store_server_t **self_p) {
    store_server_t *self = *self_p;
    if (!self)
        return;
    if (self->n_pending || (self->parked && zlistx_size(self->parked)))
        log_info("store closing with calls unanswered queued=%zu parked=%zu", self->n_pending,
                 self->parked ? zlistx_size(self->parked) : 0);
    kv_close(&self->kv);
    zlistx_destroy(&self->parked);
    arena_destroy(&self->arena);
    free(self->pending);
    free(self->reg_value);
    free(self);
    *self_p = NULL;
}
