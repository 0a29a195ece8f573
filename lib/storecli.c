/* storecli — typed calls to shoal-store and the watcher actor (see storecli.h).
 *
 * One bus client per store_client_t; calls map bus codes to -errno in one place
 * (bus_code_to_errno). UNAVAILABLE and NOT_LEADER are retried here until the call's timeout, so
 * daemons see a store restart as a slow call, not an error. The watcher actor owns its own client
 * (sockets are per thread) and long-polls from the revision after the last one it delivered, so
 * a restart of the store or of the watcher's connection never loses or repeats an event. */
#include "storecli.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "log.h"

#define STORE_DEFAULT_TIMEOUT_MS 10000
#define WATCH_POLL_MS            5000

struct store_client {
    bus_client_t *bus;
    int timeout_ms;
    char err[1024];
};

store_client_t *store_client_new(const shoal_config_t *cfg, zcert_t *identity) {
    char ep[PATH_MAX + 32], key[41];
    config_rpc_endpoint(cfg, "store", ep, sizeof ep);
    if (bus_public_key(cfg->state_dir, "store", key) < 0) {
        errno = ENOKEY;
        return NULL;
    }
    store_client_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->bus = bus_client_new(identity, ep, key);
    if (!self->bus) {
        free(self);
        return NULL;
    }
    self->timeout_ms = STORE_DEFAULT_TIMEOUT_MS;
    return self;
}

void store_client_destroy(store_client_t **self_p) {
    store_client_t *self = *self_p;
    if (!self)
        return;
    bus_client_destroy(&self->bus);
    free(self);
    *self_p = NULL;
}

const char *store_client_error(const store_client_t *self) {
    return self->err;
}
bus_client_t *store_client_bus(store_client_t *self) {
    return self->bus;
}
void store_client_set_timeout(store_client_t *self, int timeout_ms) {
    self->timeout_ms = timeout_ms > 0 ? timeout_ms : STORE_DEFAULT_TIMEOUT_MS;
}

/* Calls a store method; retries UNAVAILABLE / NOT_LEADER until the timeout. */
static int call(store_client_t *self, const char *method, const ProtobufCMessage *in,
                const ProtobufCMessageDescriptor *out_desc, int timeout_ms,
                ProtobufCMessage **ret) {
    int64_t deadline = clock_mono_ms() + timeout_ms;
    int rc;
    while (true) {
        int left = (int)(deadline - clock_mono_ms());
        if (left <= 0)
            left = 1;
        rc = bus_client_call(self->bus, method, in, out_desc, left, ret);
        if ((rc == BUS_UNAVAILABLE || rc == BUS_NOT_LEADER) && clock_mono_ms() + 100 < deadline) {
            usleep(100 * 1000);
            continue;
        }
        break;
    }
    if (rc != BUS_OK) {
        snprintf(self->err, sizeof self->err, "%s: %s", method, bus_client_error(self->bus));
        return rc > 0 ? bus_code_to_errno(rc) : rc;
    }
    self->err[0] = '\0';
    return 0;
}

int store_get(store_client_t *self, const char *key, Shoal__Store__KeyValue **ret) {
    Shoal__Store__RangeRequest req = SHOAL__STORE__RANGE_REQUEST__INIT;
    req.key = (char *)key;
    Shoal__Store__RangeResponse *resp = NULL;
    int r = call(self, "store.Range", &req.base, &shoal__store__range_response__descriptor,
                 self->timeout_ms, (ProtobufCMessage **)&resp);
    if (r < 0)
        return r;
    if (resp->n_kvs == 0) {
        shoal__store__range_response__free_unpacked(resp, NULL);
        snprintf(self->err, sizeof self->err, "key %s not found", key);
        return -ENOENT;
    }
    /* hand out the first kv, detached from the response */
    Shoal__Store__KeyValue *kv = resp->kvs[0];
    resp->kvs[0] = NULL;
    resp->n_kvs = 0;
    free(resp->kvs);
    resp->kvs = NULL;
    shoal__store__range_response__free_unpacked(resp, NULL);
    *ret = kv;
    return 0;
}

int store_list(store_client_t *self, const char *prefix, Shoal__Store__RangeResponse **ret) {
    Shoal__Store__RangeRequest req = SHOAL__STORE__RANGE_REQUEST__INIT;
    req.key = (char *)prefix;
    req.prefix = true;
    return call(self, "store.Range", &req.base, &shoal__store__range_response__descriptor,
                self->timeout_ms, (ProtobufCMessage **)ret);
}

int store_put(store_client_t *self, const char *key, const void *value, size_t len, int64_t lease,
              int64_t *ret_revision) {
    Shoal__Store__PutRequest req = SHOAL__STORE__PUT_REQUEST__INIT;
    req.key = (char *)key;
    req.value.data = (uint8_t *)value;
    req.value.len = len;
    req.lease = lease;
    Shoal__Store__PutResponse *resp = NULL;
    int r = call(self, "store.Put", &req.base, &shoal__store__put_response__descriptor,
                 self->timeout_ms, (ProtobufCMessage **)&resp);
    if (r < 0)
        return r;
    if (ret_revision)
        *ret_revision = resp->header ? resp->header->revision : 0;
    shoal__store__put_response__free_unpacked(resp, NULL);
    return 0;
}

static int delete_range(store_client_t *self, const char *key, bool prefix, int64_t *ret_deleted) {
    Shoal__Store__DeleteRangeRequest req = SHOAL__STORE__DELETE_RANGE_REQUEST__INIT;
    req.key = (char *)key;
    req.prefix = prefix;
    Shoal__Store__DeleteRangeResponse *resp = NULL;
    int r =
        call(self, "store.DeleteRange", &req.base, &shoal__store__delete_range_response__descriptor,
             self->timeout_ms, (ProtobufCMessage **)&resp);
    if (r < 0)
        return r;
    if (ret_deleted)
        *ret_deleted = resp->deleted;
    shoal__store__delete_range_response__free_unpacked(resp, NULL);
    return 0;
}

int store_delete(store_client_t *self, const char *key, int64_t *ret_deleted) {
    return delete_range(self, key, false, ret_deleted);
}

int store_delete_prefix(store_client_t *self, const char *prefix, int64_t *ret_deleted) {
    return delete_range(self, prefix, true, ret_deleted);
}

int store_txn(store_client_t *self, const Shoal__Store__TxnRequest *req,
              Shoal__Store__TxnResponse **ret) {
    int r = call(self, "store.Txn", &req->base, &shoal__store__txn_response__descriptor,
                 self->timeout_ms, (ProtobufCMessage **)ret);
    if (r < 0)
        return r;
    if (!(*ret)->succeeded) {
        snprintf(self->err, sizeof self->err, "store.Txn: compare failed");
        return -ECANCELED;
    }
    return 0;
}

int store_batch(store_client_t *self, const Shoal__Store__BatchRequest *req,
                Shoal__Store__BatchResponse **ret) {
    return call(self, "store.Batch", &req->base, &shoal__store__batch_response__descriptor,
                self->timeout_ms, (ProtobufCMessage **)ret);
}

int store_watch(store_client_t *self, const Shoal__Store__WatchRequest *req,
                Shoal__Store__WatchResponse **ret) {
    int timeout = (int)req->timeout_ms + 1500; /* the store answers by timeout_ms */
    bus_client_set_retry(self->bus, timeout);
    int r = call(self, "store.Watch", &req->base, &shoal__store__watch_response__descriptor,
                 timeout, (ProtobufCMessage **)ret);
    bus_client_set_retry(self->bus, 0);
    return r;
}

int store_lease_grant(store_client_t *self, int64_t ttl_ms, int64_t *ret_id) {
    Shoal__Store__LeaseGrantRequest req = SHOAL__STORE__LEASE_GRANT_REQUEST__INIT;
    req.ttl_ms = ttl_ms;
    Shoal__Store__LeaseGrantResponse *resp = NULL;
    int r =
        call(self, "store.LeaseGrant", &req.base, &shoal__store__lease_grant_response__descriptor,
             self->timeout_ms, (ProtobufCMessage **)&resp);
    if (r < 0)
        return r;
    *ret_id = resp->id;
    shoal__store__lease_grant_response__free_unpacked(resp, NULL);
    return 0;
}

int store_lease_keepalive(store_client_t *self, int64_t id) {
    Shoal__Store__LeaseKeepAliveRequest req = SHOAL__STORE__LEASE_KEEP_ALIVE_REQUEST__INIT;
    req.id = id;
    Shoal__Store__LeaseKeepAliveResponse *resp = NULL;
    int r = call(self, "store.LeaseKeepAlive", &req.base,
                 &shoal__store__lease_keep_alive_response__descriptor, self->timeout_ms,
                 (ProtobufCMessage **)&resp);
    if (r < 0)
        return r;
    bool alive = resp->ttl_ms > 0;
    shoal__store__lease_keep_alive_response__free_unpacked(resp, NULL);
    return alive ? 0 : -ENOENT;
}

int store_lease_revoke(store_client_t *self, int64_t id) {
    Shoal__Store__LeaseRevokeRequest req = SHOAL__STORE__LEASE_REVOKE_REQUEST__INIT;
    req.id = id;
    Shoal__Store__LeaseRevokeResponse *resp = NULL;
    int r =
        call(self, "store.LeaseRevoke", &req.base, &shoal__store__lease_revoke_response__descriptor,
             self->timeout_ms, (ProtobufCMessage **)&resp);
    if (r == 0)
        shoal__store__lease_revoke_response__free_unpacked(resp, NULL);
    return r;
}

int store_status(store_client_t *self, Shoal__Store__StatusResponse **ret) {
    Shoal__Store__StatusRequest req = SHOAL__STORE__STATUS_REQUEST__INIT;
    return call(self, "store.Status", &req.base, &shoal__store__status_response__descriptor,
                self->timeout_ms, (ProtobufCMessage **)ret);
}

int store_cas_put(store_client_t *self, const char *key, const ProtobufCMessage *msg,
                  int64_t mod_revision, int64_t *ret_revision) {
    store_txn_builder_t *b = store_txn_builder_new();
    if (!b)
        return -ENOMEM;
    store_txn_cmp_mod(b, key, mod_revision);
    store_txn_put(b, key, msg);
    Shoal__Store__TxnResponse *resp = NULL;
    int r = store_txn(self, store_txn_builder_request(b), &resp);
    if (resp) {
        if (ret_revision && resp->header)
            *ret_revision = resp->header->revision;
        shoal__store__txn_response__free_unpacked(resp, NULL);
    }
    store_txn_builder_destroy(&b);
    return r;
}

/* ---- txn builder ------------------------------------------------------------------------- */

struct store_txn_builder {
    Shoal__Store__TxnRequest req;
    zlistx_t *allocs; /* everything malloc'd for the request */
};

static void free_item(void **item) {
    free(*item);
    *item = NULL;
}

store_txn_builder_t *store_txn_builder_new(void) {
    store_txn_builder_t *b = calloc(1, sizeof *b);
    if (!b)
        return NULL;
    shoal__store__txn_request__init(&b->req);
    b->allocs = zlistx_new();
    zlistx_set_destructor(b->allocs, free_item);
    return b;
}

void store_txn_builder_destroy(store_txn_builder_t **self_p) {
    store_txn_builder_t *b = *self_p;
    if (!b)
        return;
    free(b->req.compare);
    free(b->req.success);
    free(b->req.failure);
    zlistx_destroy(&b->allocs);
    free(b);
    *self_p = NULL;
}

static void *b_alloc(store_txn_builder_t *b, size_t n) {
    void *p = calloc(1, n ? n : 1);
    if (!p)
        abort(); /* builders are small; an allocation failure here is not recoverable */
    zlistx_add_end(b->allocs, p);
    return p;
}

static char *b_strdup(store_txn_builder_t *b, const char *s) {
    size_t n = strlen(s) + 1;
    char *p = b_alloc(b, n);
    memcpy(p, s, n);
    return p;
}

static void cmp_equal(store_txn_builder_t *b, const char *key, Shoal__Store__Compare__Target target,
                      int64_t number) {
    Shoal__Store__Compare *c = b_alloc(b, sizeof *c);
    shoal__store__compare__init(c);
    c->key = b_strdup(b, key);
    c->target = target;
    c->result = SHOAL__STORE__COMPARE__RESULT__EQUAL;
    c->number = number;
    Shoal__Store__Compare **v =
        realloc(b->req.compare, (b->req.n_compare + 1) * sizeof *b->req.compare);
    if (!v)
        abort();
    b->req.compare = v;
    b->req.compare[b->req.n_compare++] = c;
}

void store_txn_cmp_mod(store_txn_builder_t *b, const char *key, int64_t rev) {
    cmp_equal(b, key, SHOAL__STORE__COMPARE__TARGET__MOD, rev);
}

void store_txn_cmp_lease(store_txn_builder_t *b, const char *key, int64_t lease) {
    cmp_equal(b, key, SHOAL__STORE__COMPARE__TARGET__LEASE, lease);
}

static void add_success(store_txn_builder_t *b, Shoal__Store__RequestOp *op) {
    b->req.success = realloc(b->req.success, (b->req.n_success + 1) * sizeof *b->req.success);
    b->req.success[b->req.n_success++] = op;
}

void store_txn_put_raw(store_txn_builder_t *b, const char *key, const void *val, size_t len,
                       int64_t lease) {
    Shoal__Store__PutRequest *put = b_alloc(b, sizeof *put);
    shoal__store__put_request__init(put);
    put->key = b_strdup(b, key);
    put->value.data = b_alloc(b, len);
    memcpy(put->value.data, val, len);
    put->value.len = len;
    put->lease = lease;
    Shoal__Store__RequestOp *op = b_alloc(b, sizeof *op);
    shoal__store__request_op__init(op);
    op->request_case = SHOAL__STORE__REQUEST_OP__REQUEST_PUT;
    op->put = put;
    add_success(b, op);
}

void store_txn_put(store_txn_builder_t *b, const char *key, const ProtobufCMessage *msg) {
    size_t len = protobuf_c_message_get_packed_size(msg);
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf)
        abort();
    protobuf_c_message_pack(msg, buf);
    store_txn_put_raw(b, key, buf, len, 0);
    free(buf);
}

void store_txn_delete(store_txn_builder_t *b, const char *key) {
    Shoal__Store__DeleteRangeRequest *del = b_alloc(b, sizeof *del);
    shoal__store__delete_range_request__init(del);
    del->key = b_strdup(b, key);
    Shoal__Store__RequestOp *op = b_alloc(b, sizeof *op);
    shoal__store__request_op__init(op);
    op->request_case = SHOAL__STORE__REQUEST_OP__REQUEST_DELETE_RANGE;
    op->delete_range = del;
    add_success(b, op);
}

const Shoal__Store__TxnRequest *store_txn_builder_request(store_txn_builder_t *b) {
    return &b->req;
}

size_t store_txn_builder_ops(const store_txn_builder_t *b) {
    return b->req.n_success;
}

/* ---- watcher actor ----------------------------------------------------------------------- */

typedef struct watcher_args {
    shoal_config_t cfg;
    char identity[64];
    char prefix[256];
    int64_t start;
} watcher_args_t;

static void watcher_actor(zsock_t *pipe, void *arg) {
    watcher_args_t *a = arg;
    zcert_t *id = bus_identity_load(a->cfg.state_dir, a->identity);
    store_client_t *sc = id ? store_client_new(&a->cfg, id) : NULL;
    zsock_signal(pipe, 0);
    if (!sc) {
        log_debug("watcher cannot start identity=%s", a->identity);
        goto out;
    }
    int64_t next = a->start;
    bool stop = false, termed = false;
    while (!stop) {
        /* a command on the pipe ($TERM) ends the actor */
        if (zsock_events(pipe) & ZMQ_POLLIN) {
            char *cmd = zstr_recv(pipe);
            termed = stop = !cmd || !strcmp(cmd, "$TERM");
            zstr_free(&cmd);
            continue;
        }
        Shoal__Store__WatchRequest req = SHOAL__STORE__WATCH_REQUEST__INIT;
        req.key = a->prefix;
        req.prefix = true;
        req.start_revision = next;
        req.timeout_ms = 1000; /* short polls: the pipe is checked between them */
        req.prev_kv = true;
        Shoal__Store__WatchResponse *resp = NULL;
        int r = store_watch(sc, &req, &resp);
        if (r < 0) {
            log_debug("watch failed prefix=%s from=%lld err=\"%s\"", a->prefix, (long long)next,
                      store_client_error(sc));
            zpoller_t *p = zpoller_new(pipe, NULL);
            zpoller_wait(p, 200);
            zpoller_destroy(&p);
            continue;
        }
        if (resp->compacted || resp->n_events > 0) {
            size_t len = shoal__store__watch_response__get_packed_size(resp);
            uint8_t *buf = malloc(len ? len : 1);
            if (buf) {
                shoal__store__watch_response__pack(resp, buf);
                zframe_t *f = zframe_new(buf, len);
                zframe_send(&f, pipe, 0);
                free(buf);
            }
            if (resp->compacted)
                stop = true; /* the owner re-lists and starts a new watcher */
        }
        if (resp->next_revision > next)
            next = resp->next_revision;
        shoal__store__watch_response__free_unpacked(resp, NULL);
    }
    /* stopped by compaction: wait for $TERM so zactor_destroy does not block */
    while (!termed) {
        char *cmd = zstr_recv(pipe);
        bool term = !cmd || !strcmp(cmd, "$TERM");
        zstr_free(&cmd);
        if (term)
            break;
    }
out:
    store_client_destroy(&sc);
    zcert_destroy(&id);
    free(a);
}

zactor_t *store_watcher_new(const shoal_config_t *cfg, const char *identity_name,
                            const char *prefix, int64_t start_revision) {
    watcher_args_t *a = calloc(1, sizeof *a);
    if (!a)
        return NULL;
    a->cfg = *cfg;
    snprintf(a->identity, sizeof a->identity, "%s", identity_name);
    snprintf(a->prefix, sizeof a->prefix, "%s", prefix);
    a->start = start_revision > 0 ? start_revision : 1;
    return zactor_new(watcher_actor, a);
}

int store_watcher_recv(zactor_t *watcher, Shoal__Store__WatchResponse **ret) {
    zframe_t *f = zframe_recv(zactor_sock(watcher));
    if (!f)
        return -EINTR;
    *ret = shoal__store__watch_response__unpack(NULL, zframe_size(f), zframe_data(f));
    zframe_destroy(&f);
    return *ret ? 0 : -EPROTO;
}
