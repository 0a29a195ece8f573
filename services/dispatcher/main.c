/* shoal-dispatcher — the agents' side of the manager (DESIGN §5 steps 4-5).
 *
 * Serves dispatcher.Register, Heartbeat, Assignments (long-poll) and UpdateTaskStatus
 * (proto/dispatcher.proto) to agents, and bus.Health / bus.Stats. It is stateless: on start it
 * lists the whole store, then follows one watch from that revision; /cluster sets the heartbeat
 * period, /nodes feeds the heartbeat table (nodes.c) and its object cache, /tasks the per-node
 * assignment sets (assign.c). Writes: node objects on state changes only (nodeobj.c), task status
 * in batches (status.c).
 *
 * Several dispatchers may run; agents may talk to any. Only the holder of /leases/dispatcher
 * (a store lease of LEASE_TTL_MS kept alive every second, taken with a Txn that compares the
 * key's mod revision with 0) marks nodes UNKNOWN when it takes charge and DOWN when they miss
 * their grace, so two dispatchers never fight over a node's state. The holder judges liveness
 * by the heartbeats it receives itself, plus a double grace for nodes it has no session for.
 *
 * Everything runs on the daemon's one zloop thread; store calls are synchronous with a short
 * timeout (STORE_CALL_TIMEOUT_MS) so a dead store delays heartbeats by at most that. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "daemon.h"
#include "dispatcher.pb-c.h"
#include "objects.pb-c.h"

#include "assign.h"
#include "nodeobj.h"
#include "nodes.h"
#include "request.h"
#include "status.h"

#define LEASE_KEY             "/leases/dispatcher"
#define LEASE_TTL_MS          3000
#define LEASE_KEEPALIVE_MS    1000
#define TICK_MS               50 /* deadlines: DOWN marking, long-poll timeouts */
#define RELOAD_RETRY_MS       500
#define STORE_CALL_TIMEOUT_MS 2000
#define CAS_ATTEMPTS          5
#define DOWN_WRITES_PER_TICK  32 /* the rest wait for the next tick: heartbeats go first */
#define DOWN_MESSAGE          "heartbeat failure"
#define UNKNOWN_MESSAGE       "dispatcher took charge; waiting for the node's agent"

enum { OPT_HEARTBEAT_PERIOD = 256, OPT_NODE_ROLE };

typedef struct cached_node {
    Shoal__Node *node; /* unpacked */
    int64_t mod_revision;
} cached_node_t;

typedef struct dispatcher {
    daemon_t d;
    nodes_t *nodes;
    assign_t *assign;
    status_queue_t *status;
    zhashx_t *node_objs; /* node id -> cached_node_t: the store's /nodes, for CAS writes */
    zactor_t *watcher;
    bool loaded;
    int64_t last_load_try_ms;
    bool stopping;

    int64_t flag_period_ms;
    int role;
    bool flush_armed;

    store_client_t *lease_store; /* own client: outlives daemon_run to revoke the lease */
    int64_t lease_id;
    bool holder;
    int64_t lease_ok_ms;    /* last successful grant or keepalive */
    bool tick_store_failed; /* a DOWN write failed this tick: leave the rest for the next */
    int tick_down_writes;   /* DOWN writes this tick (a store round trip each) */

    uint64_t heartbeats_total, registrations_total, registrations_refused_total;
    uint64_t assignments_total, nodes_marked_down_total, watch_events_total;
} dispatcher_t;

typedef struct status_request {
    bus_call_t *call;
    Shoal__Dispatcher__TaskStatusUpdate **updates; /* into the call's input */
} status_request_t;

/* ---- node object cache ------------------------------------------------------------------- */

static void cached_node_free(void **item) {
    cached_node_t *c = *item;
    if (c) {
        shoal__node__free_unpacked(c->node, NULL);
        free(c);
    }
    *item = NULL;
}

/* Keeps `node` (ownership taken) as id's value at mod_revision, unless the cache has newer. */
static void node_cache_set(dispatcher_t *s, const char *id, Shoal__Node *node,
                           int64_t mod_revision) {
    cached_node_t *c = zhashx_lookup(s->node_objs, id);
    if (c && c->mod_revision > mod_revision) {
        shoal__node__free_unpacked(node, NULL);
        return;
    }
    if (!c) {
        c = calloc(1, sizeof *c);
        if (!c) {
            shoal__node__free_unpacked(node, NULL);
            return;
        }
        zhashx_insert(s->node_objs, id, c);
    } else {
        shoal__node__free_unpacked(c->node, NULL);
    }
    c->node = node;
    c->mod_revision = mod_revision;
}

static void node_cache_set_msg(dispatcher_t *s, const char *id, const ProtobufCMessage *msg,
                               int64_t mod_revision) {
    size_t len = protobuf_c_message_get_packed_size(msg);
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf)
        return;
    protobuf_c_message_pack(msg, buf);
    Shoal__Node *node = shoal__node__unpack(NULL, len, buf);
    free(buf);
    if (node)
        node_cache_set(s, id, node, mod_revision);
}

/* Re-reads /nodes/<id> after a lost compare. -ENOENT when the node is gone. */
static int node_cache_refresh(dispatcher_t *s, const char *id) {
    char key[128];
    snprintf(key, sizeof key, "/nodes/%s", id);
    Shoal__Store__KeyValue *kv = NULL;
    int r = store_get(s->d.store, key, &kv);
    if (r == -ENOENT) {
        zhashx_delete(s->node_objs, id);
        return r;
    }
    if (r < 0)
        return r;
    Shoal__Node *node = shoal__node__unpack(NULL, kv->value.len, kv->value.data);
    int64_t mod = kv->mod_revision;
    shoal__store__key_value__free_unpacked(kv, NULL);
    if (!node)
        return -EPROTO;
    zhashx_delete(s->node_objs, id); /* the store's value wins, whatever the cache held */
    node_cache_set(s, id, node, mod);
    return 0;
}

static void store_timeout(dispatcher_t *s) {
    /* The registry timer resets the client's timeout; ours is short on purpose. */
    store_client_set_timeout(s->d.store, STORE_CALL_TIMEOUT_MS);
}

/* ---- node writes ------------------------------------------------------------------------- */

static int write_node_ready(dispatcher_t *s, const char *id,
                            const Shoal__Dispatcher__RegisterRequest *req) {
    char key[128];
    snprintf(key, sizeof key, "/nodes/%s", id);
    store_timeout(s);
    int r = -EAGAIN;
    for (int attempt = 0; attempt < CAS_ATTEMPTS; attempt++) {
        cached_node_t *c = zhashx_lookup(s->node_objs, id);
        nodeobj_t obj;
        nodeobj_registered(&obj, c ? c->node : NULL, id, req, s->role, clock_wall_ms());
        int64_t rev = 0;
        r = store_cas_put(s->d.store, key, &obj.node.base, c ? c->mod_revision : 0, &rev);
        if (r == 0) {
            node_cache_set_msg(s, id, &obj.node.base, rev);
            nodes_note_written(s->nodes, id, rev);
            return 0;
        }
        if (r != -ECANCELED)
            break;
        r = node_cache_refresh(s, id);
        if (r < 0 && r != -ENOENT)
            break;
    }
    return r;
}

/* Writes status `state` on an existing node object; 0 when written or nothing to write. */
static int write_node_state(dispatcher_t *s, const char *id, int state, const char *message) {
    char key[128];
    snprintf(key, sizeof key, "/nodes/%s", id);
    store_timeout(s);
    for (int attempt = 0; attempt < CAS_ATTEMPTS; attempt++) {
        cached_node_t *c = zhashx_lookup(s->node_objs, id);
        if (!c) {
            int r = node_cache_refresh(s, id);
            if (r == -ENOENT)
                return 0; /* no object: nothing to mark */
            if (r < 0)
                return r;
            c = zhashx_lookup(s->node_objs, id);
            if (!c)
                return -ENOMEM;
        }
        int current = c->node->status ? (int)c->node->status->state : 0;
        if (current == state || current == SHOAL__NODE_STATUS__STATE__DOWN)
            return 0; /* already there; and UNKNOWN never resurrects a DOWN node */
        nodeobj_t obj;
        nodeobj_status(&obj, c->node, state, message, clock_wall_ms());
        int64_t rev = 0;
        int r = store_cas_put(s->d.store, key, &obj.node.base, c->mod_revision, &rev);
        if (r == 0) {
            node_cache_set_msg(s, id, &obj.node.base, rev);
            nodes_note_written(s->nodes, id, rev);
            return 0;
        }
        if (r != -ECANCELED)
            return r;
        r = node_cache_refresh(s, id);
        if (r == -ENOENT)
            return 0;
        if (r < 0)
            return r;
    }
    return -EAGAIN;
}

static int on_node_expired(void *ctx, const char *node_id) {
    dispatcher_t *s = ctx;
    if (s->tick_store_failed)
        return -EAGAIN; /* one slow failure per tick, not one per node */
    if (s->tick_down_writes >= DOWN_WRITES_PER_TICK)
        return -EAGAIN; /* thousands of nodes going DOWN at once must not stall the loop */
    s->tick_down_writes++;
    int r = write_node_state(s, node_id, SHOAL__NODE_STATUS__STATE__DOWN, DOWN_MESSAGE);
    if (r == 0) {
        s->nodes_marked_down_total++;
        log_warn("node down node=%s reason=\"%s\"", node_id, DOWN_MESSAGE);
    } else {
        s->tick_store_failed = true;
        log_warn("cannot mark node down node=%s err=\"%s\" (retrying)", node_id,
                 store_client_error(s->d.store));
    }
    return r;
}

static int collect_id(void *ctx, const char *node_id) {
    zlistx_add_end(ctx, (void *)node_id);
    return 0;
}

static void *dup_string(const void *item) {
    return strdup(item);
}

static void free_string(void **item) {
    free(*item);
    *item = NULL;
}

/* SwarmKit markNodesUnknown: this dispatcher now decides DOWN; give the others' agents time. */
static void take_charge(dispatcher_t *s) {
    zlistx_t *ids = zlistx_new();
    if (!ids)
        return;
    zlistx_set_duplicator(ids, dup_string);
    zlistx_set_destructor(ids, free_string);
    size_t n = nodes_mark_unknown(s->nodes, clock_mono_ms(), collect_id, ids);
    for (const char *id = zlistx_first(ids); id; id = zlistx_next(ids)) {
        cached_node_t *c = zhashx_lookup(s->node_objs, id);
        if (c && c->node->status && c->node->status->state == SHOAL__NODE_STATUS__STATE__READY)
            (void)write_node_state(s, id, SHOAL__NODE_STATUS__STATE__UNKNOWN, UNKNOWN_MESSAGE);
    }
    zlistx_destroy(&ids);
    log_info("holding the dispatcher lease nodes_on_grace=%zu grace_ms=%lld", n,
             (long long)(2 * nodes_period(s->nodes) * nodes_multiplier(s->nodes)));
}

/* ---- store state: list + watch ----------------------------------------------------------- */

static void apply_cluster(dispatcher_t *s, const Shoal__Cluster *cluster) {
    int64_t period = s->flag_period_ms;
    unsigned mult = NODES_DEFAULT_MULTIPLIER;
    if (cluster && cluster->spec && cluster->spec->heartbeat_period_ms > 0)
        period = cluster->spec->heartbeat_period_ms;
    if (cluster && cluster->spec && cluster->spec->node_down_multiplier > 0)
        mult = cluster->spec->node_down_multiplier;
    if (period != nodes_period(s->nodes) || mult != nodes_multiplier(s->nodes))
        log_info("heartbeat period_ms=%lld node_down_multiplier=%u", (long long)period, mult);
    nodes_set_period(s->nodes, period, mult);
}

static void apply_put(dispatcher_t *s, const Shoal__Store__KeyValue *kv, int64_t now) {
    const char *key = kv->key ? kv->key : "";
    if (!strncmp(key, "/tasks/", 7)) {
        Shoal__Task *task = shoal__task__unpack(NULL, kv->value.len, kv->value.data);
        if (!task) {
            log_warn("undecodable task key=%s", key);
            return;
        }
        (void)assign_task_put(s->assign, key + 7, task, kv->mod_revision);
    } else if (!strncmp(key, "/nodes/", 7)) {
        const char *id = key + 7;
        if (!request_id_valid(id))
            return;
        Shoal__Node *node = shoal__node__unpack(NULL, kv->value.len, kv->value.data);
        if (!node) {
            log_warn("undecodable node key=%s", key);
            return;
        }
        int state = node->status ? (int)node->status->state : NODES_STATE_UNKNOWN;
        node_cache_set(s, id, node, kv->mod_revision);
        nodes_observe(s->nodes, id, state, kv->mod_revision, now);
    } else if (!strcmp(key, "/cluster")) {
        Shoal__Cluster *cluster = shoal__cluster__unpack(NULL, kv->value.len, kv->value.data);
        if (cluster) {
            apply_cluster(s, cluster);
            shoal__cluster__free_unpacked(cluster, NULL);
        }
    }
}

static void apply_delete(dispatcher_t *s, const Shoal__Store__KeyValue *kv) {
    const char *key = kv->key ? kv->key : "";
    if (!strncmp(key, "/tasks/", 7)) {
        (void)assign_task_delete(s->assign, key + 7, kv->mod_revision);
    } else if (!strncmp(key, "/nodes/", 7)) {
        zhashx_delete(s->node_objs, key + 7);
        nodes_forget(s->nodes, key + 7);
    } else if (!strcmp(key, "/cluster")) {
        apply_cluster(s, NULL);
    }
}

static void wake_waiter(void *ctx, void *waiter, const char *node_id);
static int on_watch(zloop_t *loop, zsock_t *reader, void *arg);

static void watcher_stop(dispatcher_t *s) {
    if (!s->watcher)
        return;
    zloop_reader_end(s->d.loop, zactor_sock(s->watcher));
    zactor_destroy(&s->watcher);
}

/* Lists "/" and starts the watch from the listing's revision. */
static int load(dispatcher_t *s) {
    s->last_load_try_ms = clock_mono_ms();
    store_timeout(s);
    Shoal__Store__RangeResponse *resp = NULL;
    int r = store_list(s->d.store, "/", &resp);
    if (r < 0) {
        log_debug("cannot list the store err=\"%s\"", store_client_error(s->d.store));
        return r;
    }
    int64_t rev = resp->header ? resp->header->revision : 0;
    int64_t now = clock_mono_ms();
    assign_reset(s->assign, rev);
    zhashx_purge(s->node_objs);
    apply_cluster(s, NULL);
    for (size_t i = 0; i < resp->n_kvs; i++)
        apply_put(s, resp->kvs[i], now);
    shoal__store__range_response__free_unpacked(resp, NULL);

    watcher_stop(s);
    s->watcher = store_watcher_new(&s->d.cfg, "dispatcher", "/", rev + 1);
    if (!s->watcher)
        return -ENOMEM;
    zloop_reader(s->d.loop, zactor_sock(s->watcher), on_watch, s);
    s->loaded = true;
    nodes_counts_t c;
    nodes_counts(s->nodes, &c);
    log_info("loaded the cluster state revision=%lld nodes=%zu", (long long)rev,
             c.ready + c.unknown + c.down);
    assign_wake(s->assign, now, wake_waiter, s); /* versions moved to the new listing */
    return 0;
}

static int on_watch(zloop_t *loop, zsock_t *reader, void *arg) {
    dispatcher_t *s = arg;
    Shoal__Store__WatchResponse *resp = NULL;
    if (store_watcher_recv(s->watcher, &resp) < 0)
        return 0;
    if (resp->compacted) {
        log_warn("watch fell behind compaction compact_revision=%lld: re-listing",
                 (long long)resp->compact_revision);
        shoal__store__watch_response__free_unpacked(resp, NULL);
        watcher_stop(s);
        s->loaded = false;
        (void)load(s);
        return 0;
    }
    int64_t now = clock_mono_ms();
    for (size_t i = 0; i < resp->n_events; i++) {
        const Shoal__Store__Event *ev = resp->events[i];
        if (!ev->kv)
            continue;
        s->watch_events_total++;
        if (ev->type == SHOAL__STORE__EVENT__TYPE__DELETE)
            apply_delete(s, ev->kv);
        else
            apply_put(s, ev->kv, now);
    }
    shoal__store__watch_response__free_unpacked(resp, NULL);
    /* Whole revisions were applied: agents never see half a transaction. */
    assign_wake(s->assign, now, wake_waiter, s);
    return 0;
}

/* ---- the lease --------------------------------------------------------------------------- */

static void lease_lost(dispatcher_t *s, const char *why) {
    if (s->holder)
        log_warn("lost the dispatcher lease reason=\"%s\"", why);
    s->holder = false;
    s->lease_id = 0;
}

static int on_lease_timer(zloop_t *loop, int timer_id, void *arg) {
    dispatcher_t *s = arg;
    if (!s->loaded)
        return 0;
    store_client_set_timeout(s->lease_store, STORE_CALL_TIMEOUT_MS);
    int64_t now = clock_mono_ms();
    if (s->lease_id) {
        int r = store_lease_keepalive(s->lease_store, s->lease_id);
        if (r == 0)
            s->lease_ok_ms = now;
        else if (r == -ENOENT)
            lease_lost(s, "lease expired");
        else if (now - s->lease_ok_ms >= LEASE_TTL_MS)
            lease_lost(s, "store unreachable for the lease's TTL");
    }
    if (s->holder)
        return 0;
    if (!s->lease_id) {
        if (store_lease_grant(s->lease_store, LEASE_TTL_MS, &s->lease_id) < 0) {
            s->lease_id = 0;
            return 0;
        }
        s->lease_ok_ms = now;
    }
    store_txn_builder_t *b = store_txn_builder_new();
    if (!b)
        return 0;
    store_txn_cmp_mod(b, LEASE_KEY, 0);
    store_txn_put_raw(b, LEASE_KEY, s->d.instance, strlen(s->d.instance), s->lease_id);
    Shoal__Store__TxnResponse *resp = NULL;
    int r = store_txn(s->lease_store, store_txn_builder_request(b), &resp);
    if (resp)
        shoal__store__txn_response__free_unpacked(resp, NULL);
    store_txn_builder_destroy(&b);
    if (r == 0) {
        s->holder = true;
        take_charge(s);
    }
    return 0;
}

/* ---- status queue wiring ----------------------------------------------------------------- */

static const Shoal__Task *status_lookup(void *ctx, const char *task_id, int64_t *ret_mod) {
    dispatcher_t *s = ctx;
    return assign_task(s->assign, task_id, ret_mod);
}

static int status_batch(void *ctx, const Shoal__Store__BatchRequest *req,
                        Shoal__Store__BatchResponse **ret) {
    dispatcher_t *s = ctx;
    store_timeout(s);
    return store_batch(s->d.store, req, ret);
}

static int status_get(void *ctx, const char *key, Shoal__Store__KeyValue **ret) {
    dispatcher_t *s = ctx;
    store_timeout(s);
    return store_get(s->d.store, key, ret);
}

static void status_done(void *ctx, void *request, int err, uint32_t applied) {
    dispatcher_t *s = ctx;
    status_request_t *r = request;
    if (!s->stopping) {
        if (err < 0) {
            bus_reply_error(r->call, BUS_UNAVAILABLE, "task status not written: %s (retry)",
                            err == -EAGAIN ? "the store is busy or unreachable" : strerror(-err));
        } else {
            Shoal__Dispatcher__UpdateTaskStatusResponse out =
                SHOAL__DISPATCHER__UPDATE_TASK_STATUS_RESPONSE__INIT;
            out.applied = applied;
            bus_reply_ok(r->call, &out.base);
        }
    }
    free(r->updates);
    free(r);
}

static void flush_status(dispatcher_t *s) {
    if (status_pending(s->status) == 0 && status_due(s->status) == 0)
        return;
    int r = status_flush(s->status, clock_wall_ms());
    if (r < 0)
        log_warn("task status batch failed err=\"%s\"", store_client_error(s->d.store));
}

static int on_flush_timer(zloop_t *loop, int timer_id, void *arg) {
    dispatcher_t *s = arg;
    s->flush_armed = false;
    flush_status(s);
    return 0;
}

/* ---- handlers ---------------------------------------------------------------------------- */

static bool ready_or_reply(dispatcher_t *s, bus_call_t *call) {
    if (s->loaded)
        return true;
    bus_reply_error(call, BUS_UNAVAILABLE, "dispatcher is loading the cluster state; retry");
    return false;
}

static void on_register(void *ctx, bus_call_t *call, const ProtobufCMessage *input) {
    dispatcher_t *s = ctx;
    const Shoal__Dispatcher__RegisterRequest *req = (const void *)input;
    char err[256];
    if (!ready_or_reply(s, call))
        return;
    if (request_check_register(req, err, sizeof err) < 0) {
        bus_reply_error(call, BUS_INVALID_ARGUMENT, "dispatcher.Register: %s", err);
        return;
    }
    nodes_registration_t reg;
    int r = nodes_register(s->nodes, req->cluster_key, req->node_id, clock_mono_ms(), &reg);
    if (r == -EACCES) {
        s->registrations_refused_total++;
        log_warn("registration refused reason=\"invalid cluster key\" addr=%s identity=%s",
                 req->addr, bus_call_identity(call));
        bus_reply_error(call, BUS_PERMISSION_DENIED, "invalid cluster key");
        return;
    }
    if (r < 0) {
        bus_reply_error(call, BUS_INTERNAL, "registration failed: %s", strerror(-r));
        return;
    }
    r = write_node_ready(s, reg.node_id, req);
    if (r < 0) {
        log_warn("cannot write node node=%s err=\"%s\"", reg.node_id,
                 store_client_error(s->d.store));
        if (reg.is_new)
            nodes_forget(s->nodes, reg.node_id);
        bus_reply_error(call, BUS_UNAVAILABLE, "cannot record node %s in the store: %s (retry)",
                        reg.node_id, store_client_error(s->d.store));
        return;
    }
    s->registrations_total++;
    log_info("node registered node=%s new=%s addr=%s hostname=%s", reg.node_id,
             reg.is_new ? "yes" : "no", req->addr,
             req->description && req->description->hostname ? req->description->hostname : "");
    Shoal__Dispatcher__RegisterResponse out = SHOAL__DISPATCHER__REGISTER_RESPONSE__INIT;
    out.node_id = reg.node_id;
    out.session_id = reg.session_id;
    out.heartbeat_period_ms = reg.period_ms;
    bus_reply_ok(call, &out.base);
}

static void on_heartbeat(void *ctx, bus_call_t *call, const ProtobufCMessage *input) {
    dispatcher_t *s = ctx;
    const Shoal__Dispatcher__HeartbeatRequest *req = (const void *)input;
    char err[256];
    if (!ready_or_reply(s, call))
        return;
    if (request_check_heartbeat(req, err, sizeof err) < 0) {
        bus_reply_error(call, BUS_INVALID_ARGUMENT, "dispatcher.Heartbeat: %s", err);
        return;
    }
    int64_t period = 0;
    if (nodes_heartbeat(s->nodes, req->node_id, req->session_id, clock_mono_ms(), &period) < 0) {
        bus_reply_error(call, BUS_FAILED_PRECONDITION, "unknown session, register again");
        return;
    }
    s->heartbeats_total++;
    Shoal__Dispatcher__HeartbeatResponse out = SHOAL__DISPATCHER__HEARTBEAT_RESPONSE__INIT;
    out.period_ms = period;
    bus_reply_ok(call, &out.base);
}

static void reply_assignments(dispatcher_t *s, bus_call_t *call, const char *node_id) {
    Shoal__Dispatcher__AssignmentsResponse out = SHOAL__DISPATCHER__ASSIGNMENTS_RESPONSE__INIT;
    if (assign_response(s->assign, node_id, &out) < 0) {
        bus_reply_error(call, BUS_INTERNAL, "out of memory building the assignment set");
        return;
    }
    s->assignments_total++;
    bus_reply_ok(call, &out.base);
    assign_response_clear(&out);
}

static void wake_waiter(void *ctx, void *waiter, const char *node_id) {
    dispatcher_t *s = ctx;
    if (!s->stopping)
        reply_assignments(s, waiter, node_id);
}

static void on_assignments(void *ctx, bus_call_t *call, const ProtobufCMessage *input) {
    dispatcher_t *s = ctx;
    const Shoal__Dispatcher__AssignmentsRequest *req = (const void *)input;
    char err[256];
    if (!ready_or_reply(s, call))
        return;
    if (request_check_assignments(req, err, sizeof err) < 0) {
        bus_reply_error(call, BUS_INVALID_ARGUMENT, "dispatcher.Assignments: %s", err);
        return;
    }
    if (nodes_check_session(s->nodes, req->node_id, req->session_id) < 0) {
        bus_reply_error(call, BUS_FAILED_PRECONDITION, "unknown session, register again");
        return;
    }
    int64_t now = clock_mono_ms();
    uint32_t wait = req->timeout_ms < ASSIGN_MAX_WAIT_MS ? req->timeout_ms : ASSIGN_MAX_WAIT_MS;
    int64_t deadline = now + wait;
    int64_t client_deadline = bus_call_deadline(call);
    if (client_deadline > 0 && client_deadline - 100 < deadline)
        deadline = client_deadline - 100; /* answer while the client still listens */
    if (assign_version(s->assign, req->node_id) != req->known_version || deadline <= now ||
        assign_wait(s->assign, req->node_id, req->known_version, deadline, call) < 0) {
        reply_assignments(s, call, req->node_id);
        return;
    }
    /* Parked: the call (and its input) live until wake_waiter replies. */
}

static void on_update_task_status(void *ctx, bus_call_t *call, const ProtobufCMessage *input) {
    dispatcher_t *s = ctx;
    const Shoal__Dispatcher__UpdateTaskStatusRequest *req = (const void *)input;
    char err[256];
    if (!ready_or_reply(s, call))
        return;
    if (request_check_update_task_status(req, err, sizeof err) < 0) {
        bus_reply_error(call, BUS_INVALID_ARGUMENT, "dispatcher.UpdateTaskStatus: %s", err);
        return;
    }
    if (nodes_check_session(s->nodes, req->node_id, req->session_id) < 0) {
        bus_reply_error(call, BUS_FAILED_PRECONDITION, "unknown session, register again");
        return;
    }
    status_request_t *r = calloc(1, sizeof *r);
    if (r)
        r->updates = calloc(req->n_updates ? req->n_updates : 1, sizeof *r->updates);
    if (!r || !r->updates) {
        if (r)
            free(r);
        bus_reply_error(call, BUS_INTERNAL, "out of memory");
        return;
    }
    size_t n = 0;
    for (size_t i = 0; i < req->n_updates; i++) {
        Shoal__Dispatcher__TaskStatusUpdate *u = req->updates[i];
        const Shoal__Task *t = assign_task(s->assign, u->task_id, NULL);
        if (!t) {
            log_debug("status for a task not assigned anywhere task=%s node=%s", u->task_id,
                      req->node_id);
            continue; /* deleted meanwhile */
        }
        if (strcmp(t->node_id, req->node_id) != 0) {
            free(r->updates);
            free(r);
            bus_reply_error(call, BUS_PERMISSION_DENIED, "task %s is not assigned to node %s",
                            u->task_id, req->node_id);
            return;
        }
        r->updates[n++] = u;
    }
    r->call = call;
    if (status_enqueue(s->status, r, req->node_id, r->updates, n, clock_mono_ms()) < 0) {
        free(r->updates);
        free(r);
        bus_reply_error(call, BUS_INTERNAL, "out of memory");
        return;
    }
    if (status_pending(s->status) >= STATUS_FLUSH_UPDATES) {
        flush_status(s);
    } else if (!s->flush_armed) {
        s->flush_armed = true;
        zloop_timer(s->d.loop, STATUS_FLUSH_INTERVAL_MS, 1, on_flush_timer, s);
    }
}

static const bus_method_t methods[] = {
    {"dispatcher.Register", &shoal__dispatcher__register_request__descriptor,
     &shoal__dispatcher__register_response__descriptor, on_register, BUS_ROLES_ALL},
    {"dispatcher.Heartbeat", &shoal__dispatcher__heartbeat_request__descriptor,
     &shoal__dispatcher__heartbeat_response__descriptor, on_heartbeat, BUS_ROLES_ALL},
    {"dispatcher.Assignments", &shoal__dispatcher__assignments_request__descriptor,
     &shoal__dispatcher__assignments_response__descriptor, on_assignments, BUS_ROLES_ALL},
    {"dispatcher.UpdateTaskStatus", &shoal__dispatcher__update_task_status_request__descriptor,
     &shoal__dispatcher__update_task_status_response__descriptor, on_update_task_status,
     BUS_ROLES_ALL},
};

/* ---- health, stats, timers --------------------------------------------------------------- */

static void on_health(void *ctx, Shoal__Bus__HealthResponse *health) {
    dispatcher_t *s = ctx;
    bus_health_set_status(health, s->loaded, "%s",
                          !s->loaded  ? "loading the cluster state"
                          : s->holder ? "serving agents; marks nodes down"
                                      : "serving agents; standby for the lease");
}

static void on_stats(void *ctx, Shoal__Bus__StatsResponse *stats) {
    dispatcher_t *s = ctx;
    nodes_counts_t c;
    nodes_counts(s->nodes, &c);
    status_stats_t st;
    status_queue_stats(s->status, &st);
    bus_stats_add(stats, "nodes_ready", (int64_t)c.ready);
    bus_stats_add(stats, "nodes_unknown", (int64_t)c.unknown);
    bus_stats_add(stats, "nodes_down", (int64_t)c.down);
    bus_stats_add(stats, "sessions", (int64_t)c.sessions);
    bus_stats_add(stats, "heartbeats_total", (int64_t)s->heartbeats_total);
    bus_stats_add(stats, "registrations_total", (int64_t)s->registrations_total);
    bus_stats_add(stats, "registrations_refused_total", (int64_t)s->registrations_refused_total);
    bus_stats_add(stats, "status_updates_total", (int64_t)st.updates_total);
    bus_stats_add(stats, "status_applied_total", (int64_t)st.applied_total);
    bus_stats_add(stats, "batches_total", (int64_t)st.batches_total);
    bus_stats_add(stats, "status_conflicts_total", (int64_t)st.conflicts_total);
    bus_stats_add(stats, "assignment_waiters", (int64_t)assign_waiters(s->assign));
    bus_stats_add(stats, "assignments_total", (int64_t)s->assignments_total);
    bus_stats_add(stats, "nodes_marked_down_total", (int64_t)s->nodes_marked_down_total);
    bus_stats_add(stats, "watch_events_total", (int64_t)s->watch_events_total);
    bus_stats_add(stats, "lease_holder", s->holder ? 1 : 0);
    bus_stats_add(stats, "heartbeat_period_ms", nodes_period(s->nodes));
}

static int on_tick(zloop_t *loop, int timer_id, void *arg) {
    dispatcher_t *s = arg;
    int64_t now = clock_mono_ms();
    if (!s->loaded) {
        if (now - s->last_load_try_ms >= RELOAD_RETRY_MS)
            (void)load(s);
        return 0;
    }
    assign_wake(s->assign, now, wake_waiter, s);
    /* Only the lease holder marks nodes DOWN, and only while its lease is surely alive. */
    if (s->holder && now - s->lease_ok_ms < LEASE_TTL_MS) {
        s->tick_store_failed = false;
        s->tick_down_writes = 0;
        nodes_expire(s->nodes, now, on_node_expired, s);
    }
    return 0;
}

/* ---- main -------------------------------------------------------------------------------- */

static int on_option(void *ctx, int opt, const char *arg) {
    dispatcher_t *s = ctx;
    char *end = NULL;
    switch (opt) {
    case OPT_HEARTBEAT_PERIOD: {
        long long v = strtoll(arg, &end, 10);
        if (!end || *end || v < 10 || v > 3600000) {
            fprintf(stderr,
                    "shoal-dispatcher: --heartbeat-period: milliseconds in [10, 3600000] "
                    "(got \"%s\")\n",
                    arg);
            return -EINVAL;
        }
        s->flag_period_ms = v;
        return 0;
    }
    case OPT_NODE_ROLE:
        if (!strcmp(arg, "worker")) {
            s->role = SHOAL__NODE_SPEC__ROLE__WORKER;
        } else if (!strcmp(arg, "manager")) {
            s->role = SHOAL__NODE_SPEC__ROLE__MANAGER;
        } else {
            fprintf(stderr,
                    "shoal-dispatcher: --node-role: must be worker or manager (got \"%s\")\n", arg);
            return -EINVAL;
        }
        return 0;
    }
    return -EINVAL;
}

static void drop_waiter(void *ctx, void *waiter, const char *node_id) {
    /* Shutting down: the bus server is gone, the calls go with the process. */
}

int main(int argc, char **argv) {
    static const struct option extra[] = {
        {"heartbeat-period", required_argument, NULL, OPT_HEARTBEAT_PERIOD},
        {"node-role", required_argument, NULL, OPT_NODE_ROLE},
        {0},
    };
    static dispatcher_t s;
    s.flag_period_ms = NODES_DEFAULT_PERIOD_MS;
    s.role = SHOAL__NODE_SPEC__ROLE__WORKER;
    daemon_opts_t opts = {
        .extra = extra,
        .on_option = on_option,
        .ctx = &s,
        .usage = "  --heartbeat-period MS   agents' heartbeat period (default 500; /cluster "
                 "spec.heartbeat_period_ms wins)\n"
                 "  --node-role R           role of nodes registering here: worker (default) or "
                 "manager",
    };
    if (daemon_setup(&s.d, "dispatcher", argc, argv, &opts) < 0)
        return 1;

    s.nodes = nodes_new(s.d.cfg.cluster_key, id_random,
                        (uint64_t)clock_wall_ms() ^ ((uint64_t)getpid() << 32));
    s.assign = assign_new();
    s.node_objs = zhashx_new();
    status_ops_t ops = {.lookup = status_lookup,
                        .batch = status_batch,
                        .get = status_get,
                        .done = status_done,
                        .ctx = &s};
    s.status = status_queue_new(&ops);
    zcert_t *lease_identity = bus_identity_load(s.d.cfg.state_dir, "dispatcher");
    s.lease_store = lease_identity ? store_client_new(&s.d.cfg, lease_identity) : NULL;
    if (!s.nodes || !s.assign || !s.node_objs || !s.status || !s.lease_store) {
        fprintf(stderr, "shoal-dispatcher: out of memory\n");
        return 1;
    }
    zhashx_set_destructor(s.node_objs, cached_node_free);
    nodes_set_period(s.nodes, s.flag_period_ms, NODES_DEFAULT_MULTIPLIER);

    bus_server_add(s.d.bus, methods, sizeof methods / sizeof methods[0], &s);
    bus_server_set_health(s.d.bus, on_health, &s);
    bus_server_set_stats(s.d.bus, on_stats, &s);
    zloop_timer(s.d.loop, TICK_MS, 0, on_tick, &s);
    zloop_timer(s.d.loop, LEASE_KEEPALIVE_MS, 0, on_lease_timer, &s);
    if (load(&s) == 0)
        on_lease_timer(s.d.loop, 0, &s);

    int rc = daemon_run(&s.d);

    s.stopping = true;
    assign_drain(s.assign, drop_waiter, &s);
    status_queue_destroy(&s.status);
    zactor_destroy(&s.watcher); /* its reader went with the loop */
    if (s.lease_id) {
        /* Hand the lease over now rather than after its TTL. */
        store_client_set_timeout(s.lease_store, 300);
        (void)store_lease_revoke(s.lease_store, s.lease_id);
    }
    store_client_destroy(&s.lease_store);
    zcert_destroy(&lease_identity);
    assign_destroy(&s.assign);
    nodes_destroy(&s.nodes);
    zhashx_destroy(&s.node_objs);
    return rc;
}
