/* bus — servers, clients and the ZAP handler of the shoal message bus (see bus.h, DESIGN §2).
 *
 * Server: one ROUTER for requests and one PUB for events, both CurveZMQ servers. A request is
 * [routing id][Request]; the reply is [routing id][Reply]. The server decodes the envelope and the
 * method's input, checks the caller's role (from the ZAP User-Id of the frame), and calls the
 * handler, which replies now or later. Replies are cached by request id (bounded FIFO) so a
 * client that retries the same id — after a lost reply, a reconnect, a daemon restart of the
 * client — gets the first answer again and a write is never applied twice. A request whose id is
 * still being handled is dropped: its reply will be cached and the next retry picks it up.
 *
 * Client: a DEALER per thread. A call sends one Request and waits; when an attempt times out it
 * re-creates the socket (dropping whatever libzmq queued for a dead peer) and resends the same
 * bytes. A socket monitor turns a ZAP refusal into an immediate -EACCES instead of a timeout.
 *
 * ZAP: one actor per process bound to inproc://zeromq.zap.01 before any server socket binds, so
 * no Curve client is ever admitted unchecked. It admits keys found in <state>/keys/public/ and
 * names the client after the certificate's file name; unknown keys are refused and logged once. */
#include "bus.h"

#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "log.h"

#define BUS_REPLY_CACHE_MAX       4096
#define BUS_REPLY_CACHE_MAX_BYTES (64 * 1024)
#define BUS_DEFAULT_RETRY_MS      1000
#define BUS_DISPATCH_MAX          256

/* ---- codes and roles --------------------------------------------------------------------- */

const char *bus_code_name(int code) {
    const ProtobufCEnumValue *v =
        protobuf_c_enum_descriptor_get_value(&shoal__bus__code__descriptor, code);
    return v ? v->name : "UNKNOWN";
}

int bus_code_to_errno(int code) {
    switch (code) {
    case BUS_OK:
        return 0;
    case BUS_INVALID_ARGUMENT:
        return -EINVAL;
    case BUS_NOT_FOUND:
        return -ENOENT;
    case BUS_ALREADY_EXISTS:
        return -EEXIST;
    case BUS_FAILED_PRECONDITION:
        return -ECANCELED;
    case BUS_PERMISSION_DENIED:
        return -EACCES;
    case BUS_UNAVAILABLE:
        return -EAGAIN;
    case BUS_NOT_LEADER:
        return -EREMOTE;
    case BUS_DEADLINE_EXCEEDED:
        return -ETIMEDOUT;
    default:
        return code < 0 ? code : -EIO;
    }
}

int bus_code_from_errno(int neg_errno) {
    switch (neg_errno) {
    case 0:
        return BUS_OK;
    case -EINVAL:
        return BUS_INVALID_ARGUMENT;
    case -ENOENT:
        return BUS_NOT_FOUND;
    case -EEXIST:
        return BUS_ALREADY_EXISTS;
    case -ECANCELED:
        return BUS_FAILED_PRECONDITION;
    case -EACCES:
    case -EPERM:
        return BUS_PERMISSION_DENIED;
    case -EAGAIN:
        return BUS_UNAVAILABLE;
    case -EREMOTE:
        return BUS_NOT_LEADER;
    case -ETIMEDOUT:
        return BUS_DEADLINE_EXCEEDED;
    default:
        return BUS_INTERNAL;
    }
}

unsigned bus_role_of(const char *identity) {
    static const char *const daemons[] = {"store", "orchestrator", "scheduler", "dispatcher",
                                          "dns",   "gateway",      NULL};
    if (!identity || !*identity)
        return 0;
    if (!strcmp(identity, "admin"))
        return BUS_ROLE_ADMIN;
    if (!strncmp(identity, "agent", 5))
        return BUS_ROLE_AGENT;
    for (const char *const *d = daemons; *d; d++)
        if (!strcmp(identity, *d))
            return BUS_ROLE_DAEMON;
    return 0;
}

/* ---- identities -------------------------------------------------------------------------- */

zcert_t *bus_identity_load(const char *state_dir, const char *name) {
    char path[PATH_MAX + 64];
    snprintf(path, sizeof path, "%s/keys/private/%s.key", state_dir, name);
    /* zcert_load reads <path>_secret when it exists */
    char secret[PATH_MAX + 80];
    snprintf(secret, sizeof secret, "%s_secret", path);
    if (access(secret, R_OK) < 0)
        return NULL;
    zcert_t *cert = zcert_load(path);
    if (!cert)
        errno = EINVAL;
    return cert;
}

int bus_public_key(const char *state_dir, const char *name, char *buf) {
    char path[PATH_MAX + 64];
    snprintf(path, sizeof path, "%s/keys/public/%s.key", state_dir, name);
    if (access(path, R_OK) < 0)
        return -errno;
    zcert_t *cert = zcert_load(path);
    if (!cert)
        return -EINVAL;
    snprintf(buf, 41, "%s", zcert_public_txt(cert));
    zcert_destroy(&cert);
    return 0;
}

/* ---- ZAP handler ------------------------------------------------------------------------- */

static pthread_mutex_t auth_lock = PTHREAD_MUTEX_INITIALIZER;
static zactor_t *auth_actor;
static volatile uint64_t auth_rejected;

typedef struct auth_state {
    char keys_dir[PATH_MAX];
    zhashx_t *known;  /* z85 public key -> name */
    zhashx_t *logged; /* z85 keys refused and already logged */
    int64_t loaded_at_ms;
} auth_state_t;

static void auth_load_keys(auth_state_t *st) {
    zhashx_purge(st->known);
    DIR *d = opendir(st->keys_dir);
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t len = strlen(e->d_name);
        if (len < 5 || strcmp(e->d_name + len - 4, ".key"))
            continue;
        char path[PATH_MAX + 300];
        snprintf(path, sizeof path, "%s/%s", st->keys_dir, e->d_name);
        zcert_t *cert = zcert_load(path);
        if (!cert)
            continue;
        char name[256];
        snprintf(name, sizeof name, "%.*s", (int)(len - 4), e->d_name);
        zhashx_update(st->known, zcert_public_txt(cert), strdup(name));
        zcert_destroy(&cert);
    }
    closedir(d);
    st->loaded_at_ms = clock_mono_ms();
}

static const char *auth_lookup(auth_state_t *st, const char *key) {
    const char *name = zhashx_lookup(st->known, key);
    if (!name && clock_mono_ms() - st->loaded_at_ms > 1000) {
        auth_load_keys(st); /* a node or admin key added since: reload, at most once a second */
        name = zhashx_lookup(st->known, key);
    }
    return name;
}

static void auth_actor_fn(zsock_t *pipe, void *arg) {
    auth_state_t st = {0};
    snprintf(st.keys_dir, sizeof st.keys_dir, "%s/keys/public", (const char *)arg);
    free(arg);
    st.known = zhashx_new();
    zhashx_set_destructor(st.known, (zhashx_destructor_fn *)zstr_free);
    st.logged = zhashx_new();
    auth_load_keys(&st);
    zsock_t *handler = zsock_new_rep("inproc://zeromq.zap.01");
    zsock_signal(pipe, handler ? 0 : 1);
    if (!handler)
        goto out;
    zpoller_t *poller = zpoller_new(pipe, handler, NULL);
    while (true) {
        zsock_t *which = zpoller_wait(poller, -1);
        if (which == pipe || !which) {
            char *cmd = zstr_recv(pipe);
            bool term = !cmd || !strcmp(cmd, "$TERM");
            zstr_free(&cmd);
            if (term || !which)
                break;
            continue;
        }
        zmsg_t *req = zmsg_recv(handler);
        if (!req)
            break;
        char *version = zmsg_popstr(req), *sequence = zmsg_popstr(req);
        char *domain = zmsg_popstr(req), *address = zmsg_popstr(req);
        char *identity = zmsg_popstr(req), *mechanism = zmsg_popstr(req);
        zframe_t *key_frame = zmsg_pop(req);
        const char *status = "400", *text = "unknown client key", *user = "";
        char z85[41] = "";
        if (mechanism && !strcmp(mechanism, "CURVE") && key_frame && zframe_size(key_frame) == 32) {
            zmq_z85_encode(z85, zframe_data(key_frame), 32);
            const char *name = auth_lookup(&st, z85);
            if (name) {
                status = "200";
                text = "OK";
                user = name;
            }
        } else {
            text = "CURVE required";
        }
        if (strcmp(status, "200")) {
            auth_rejected++;
            if (!zhashx_lookup(st.logged, z85)) {
                zhashx_insert(st.logged, z85, (void *)1);
                log_warn("bus client rejected reason=\"%s\" key=%s address=%s", text, z85,
                         address ? address : "?");
            }
        }
        zmsg_t *rep = zmsg_new();
        zmsg_addstr(rep, "1.0");
        zmsg_addstr(rep, sequence ? sequence : "");
        zmsg_addstr(rep, status);
        zmsg_addstr(rep, text);
        zmsg_addstr(rep, user);
        zmsg_addmem(rep, NULL, 0);
        zmsg_send(&rep, handler);
        zstr_free(&version);
        zstr_free(&sequence);
        zstr_free(&domain);
        zstr_free(&address);
        zstr_free(&identity);
        zstr_free(&mechanism);
        zframe_destroy(&key_frame);
        zmsg_destroy(&req);
    }
    zpoller_destroy(&poller);
out:
    zsock_destroy(&handler);
    zhashx_destroy(&st.known);
    zhashx_destroy(&st.logged);
}

/* Runs before CZMQ's own atexit shutdown (registered earlier, so it runs later). */
static void bus_auth_stop(void) {
    pthread_mutex_lock(&auth_lock);
    zactor_destroy(&auth_actor);
    pthread_mutex_unlock(&auth_lock);
}

int bus_auth_start(const char *state_dir) {
    pthread_mutex_lock(&auth_lock);
    int rc = 0;
    if (!auth_actor) {
        zsys_init();
        auth_actor = zactor_new(auth_actor_fn, strdup(state_dir));
        if (!auth_actor)
            rc = -EADDRINUSE;
        else
            atexit(bus_auth_stop);
    }
    pthread_mutex_unlock(&auth_lock);
    return rc;
}

uint64_t bus_auth_rejected_total(void) {
    return auth_rejected;
}

/* ---- server ------------------------------------------------------------------------------ */

typedef struct method_entry {
    const bus_method_t *m;
    void *ctx;
} method_entry_t;

typedef struct cached_reply {
    char *id;
    uint8_t *data;
    size_t len;
} cached_reply_t;

struct bus_server {
    char kind[32];
    char instance[64];
    char rpc_ep[PATH_MAX + 32];
    char pub_ep[PATH_MAX + 32];
    char public_key[41];
    zsock_t *router;
    zsock_t *pub;
    zcert_t *cert;
    zhashx_t *methods; /* name -> method_entry_t */
    zlistx_t *method_order;
    zhashx_t *cache; /* id -> cached_reply_t (owned by cache_fifo) */
    zlistx_t *cache_fifo;
    zhashx_t *inflight; /* id -> (void *)1 */
    bus_health_fn *health_fn;
    void *health_ctx;
    bus_stats_fn *stats_fn;
    void *stats_ctx;
    int64_t started_ms;
    pthread_t owner;
    uint64_t requests_total, replies_total, errors_total, duplicates_total, denied_total;
};

struct bus_call {
    bus_server_t *server;
    zframe_t *routing;
    char *id;
    char method[96];
    char identity[64];
    int64_t deadline;
    const method_entry_t *entry;
    ProtobufCMessage *input;
};

static void std_ping(void *ctx, bus_call_t *call, const ProtobufCMessage *in);
static void std_describe(void *ctx, bus_call_t *call, const ProtobufCMessage *in);
static void std_health(void *ctx, bus_call_t *call, const ProtobufCMessage *in);
static void std_stats(void *ctx, bus_call_t *call, const ProtobufCMessage *in);

static const bus_method_t std_methods[] = {
    {"bus.Ping", &shoal__bus__empty__descriptor, &shoal__bus__ping_response__descriptor, std_ping,
     BUS_ROLES_ALL},
    {"bus.Describe", &shoal__bus__empty__descriptor, &shoal__bus__describe_response__descriptor,
     std_describe, BUS_ROLES_ALL},
    {"bus.Health", &shoal__bus__empty__descriptor, &shoal__bus__health_response__descriptor,
     std_health, BUS_ROLES_ALL},
    {"bus.Stats", &shoal__bus__empty__descriptor, &shoal__bus__stats_response__descriptor,
     std_stats, BUS_ROLES_ALL},
};

static void cached_reply_free(void **item) {
    cached_reply_t *c = *item;
    if (c) {
        free(c->id);
        free(c->data);
        free(c);
        *item = NULL;
    }
}

static zsock_t *bind_curve(int type, zcert_t *cert, const char *ep) {
    zsock_t *s = zsock_new(type);
    if (!s)
        return NULL;
    zsock_set_zap_domain(s, "shoal");
    zcert_apply(cert, s);
    zsock_set_curve_server(s, 1);
    zsock_set_linger(s, 0);
    if (type == ZMQ_ROUTER)
        zsock_set_router_mandatory(s, 0);
    zsock_set_sndhwm(s, 100000);
    zsock_set_rcvhwm(s, 100000);
    if (!strncmp(ep, "ipc://", 6))
        unlink(ep + 6); /* a stale socket file of a killed predecessor */
    if (zsock_bind(s, "%s", ep) < 0) {
        int e = errno;
        log_debug("bus bind failed endpoint=%s err=\"%s\"", ep, strerror(e));
        zsock_destroy(&s);
        errno = e;
        return NULL;
    }
    return s;
}

bus_server_t *bus_server_new(const shoal_config_t *cfg, const char *kind, const char *instance,
                             const char *rpc_ep, const char *pub_ep) {
    if (bus_auth_start(cfg->state_dir) < 0)
        return NULL;
    bus_server_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    snprintf(self->kind, sizeof self->kind, "%s", kind);
    snprintf(self->instance, sizeof self->instance, "%s", instance ? instance : kind);
    if (rpc_ep)
        snprintf(self->rpc_ep, sizeof self->rpc_ep, "%s", rpc_ep);
    else
        config_rpc_endpoint(cfg, kind, self->rpc_ep, sizeof self->rpc_ep);
    if (pub_ep)
        snprintf(self->pub_ep, sizeof self->pub_ep, "%s", pub_ep);
    else
        config_pub_endpoint(cfg, kind, self->pub_ep, sizeof self->pub_ep);
    self->cert = bus_identity_load(cfg->state_dir, kind);
    if (!self->cert) {
        log_debug("bus server has no key kind=%s state=%s", kind, cfg->state_dir);
        free(self);
        errno = ENOKEY;
        return NULL;
    }
    snprintf(self->public_key, sizeof self->public_key, "%s", zcert_public_txt(self->cert));
    self->router = bind_curve(ZMQ_ROUTER, self->cert, self->rpc_ep);
    self->pub = self->router ? bind_curve(ZMQ_PUB, self->cert, self->pub_ep) : NULL;
    self->methods = zhashx_new();
    zhashx_set_destructor(self->methods, (zhashx_destructor_fn *)zstr_free);
    self->method_order = zlistx_new();
    self->cache = zhashx_new();
    self->cache_fifo = zlistx_new();
    zlistx_set_destructor(self->cache_fifo, cached_reply_free);
    self->inflight = zhashx_new();
    self->started_ms = clock_mono_ms();
    self->owner = pthread_self();
    if (!self->router || !self->pub) {
        int e = errno;
        bus_server_destroy(&self);
        errno = e;
        return NULL;
    }
    bus_server_add(self, std_methods, sizeof std_methods / sizeof std_methods[0], self);
    return self;
}

void bus_server_destroy(bus_server_t **self_p) {
    bus_server_t *self = *self_p;
    if (!self)
        return;
    log_set_sink(NULL, NULL);
    zsock_destroy(&self->router);
    zsock_destroy(&self->pub);
    zcert_destroy(&self->cert);
    zhashx_destroy(&self->methods);
    zlistx_destroy(&self->method_order);
    zhashx_destroy(&self->cache);
    zlistx_destroy(&self->cache_fifo);
    zhashx_destroy(&self->inflight);
    free(self);
    *self_p = NULL;
}

int bus_server_add(bus_server_t *self, const bus_method_t *methods, size_t n, void *ctx) {
    for (size_t i = 0; i < n; i++) {
        method_entry_t *e = calloc(1, sizeof *e);
        if (!e)
            return -ENOMEM;
        e->m = &methods[i];
        e->ctx = ctx;
        if (zhashx_insert(self->methods, methods[i].name, e) < 0) {
            free(e);
            return -EEXIST;
        }
        zlistx_add_end(self->method_order, e);
    }
    return 0;
}

void bus_server_set_health(bus_server_t *self, bus_health_fn *fn, void *ctx) {
    self->health_fn = fn;
    self->health_ctx = ctx;
}

void bus_server_set_stats(bus_server_t *self, bus_stats_fn *fn, void *ctx) {
    self->stats_fn = fn;
    self->stats_ctx = ctx;
}

void bus_health_set_status(Shoal__Bus__HealthResponse *health, bool healthy, const char *fmt, ...) {
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    char *s = strdup(buf);
    if (!s)
        return;
    free(health->status);
    health->status = s;
    health->healthy = healthy;
}

void bus_health_add_check(Shoal__Bus__HealthResponse *health, const char *name, bool ok,
                          const char *fmt, ...) {
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    Shoal__Bus__HealthCheck **v =
        realloc(health->checks, (health->n_checks + 1) * sizeof *health->checks);
    if (!v)
        return;
    health->checks = v;
    Shoal__Bus__HealthCheck *c = malloc(sizeof *c);
    if (!c)
        return;
    shoal__bus__health_check__init(c);
    c->name = strdup(name);
    c->message = strdup(buf);
    c->ok = ok;
    v[health->n_checks++] = c;
}

void bus_stats_add(Shoal__Bus__StatsResponse *stats, const char *name, int64_t value) {
    Shoal__Bus__Stat **v = realloc(stats->stats, (stats->n_stats + 1) * sizeof *v);
    if (!v)
        return;
    stats->stats = v;
    Shoal__Bus__Stat *s = malloc(sizeof *s);
    if (!s)
        return;
    shoal__bus__stat__init(s);
    s->name = strdup(name);
    s->value = value;
    v[stats->n_stats++] = s;
}

zsock_t *bus_server_router(bus_server_t *self) {
    return self->router;
}
const char *bus_server_kind(const bus_server_t *self) {
    return self->kind;
}
const char *bus_server_instance(const bus_server_t *self) {
    return self->instance;
}
const char *bus_server_rpc_endpoint(const bus_server_t *self) {
    return self->rpc_ep;
}
const char *bus_server_pub_endpoint(const bus_server_t *self) {
    return self->pub_ep;
}
const char *bus_server_public_key(const bus_server_t *self) {
    return self->public_key;
}

const char *bus_call_method(const bus_call_t *call) {
    return call->method;
}
const char *bus_call_id(const bus_call_t *call) {
    return call->id;
}
const char *bus_call_identity(const bus_call_t *call) {
    return call->identity;
}
int64_t bus_call_deadline(const bus_call_t *call) {
    return call->deadline;
}
const ProtobufCMessage *bus_call_input(const bus_call_t *call) {
    return call->input;
}

static void call_free(bus_call_t *call) {
    zframe_destroy(&call->routing);
    if (call->input)
        protobuf_c_message_free_unpacked(call->input, NULL);
    free(call->id);
    free(call);
}

static void cache_put(bus_server_t *self, const char *id, const uint8_t *data, size_t len) {
    if (len > BUS_REPLY_CACHE_MAX_BYTES || zhashx_lookup(self->cache, id))
        return;
    cached_reply_t *c = calloc(1, sizeof *c);
    if (!c)
        return;
    c->id = strdup(id);
    c->data = malloc(len ? len : 1);
    if (!c->id || !c->data) {
        cached_reply_free((void **)&c);
        return;
    }
    memcpy(c->data, data, len);
    c->len = len;
    zlistx_add_end(self->cache_fifo, c);
    zhashx_insert(self->cache, c->id, c);
    while (zlistx_size(self->cache_fifo) > BUS_REPLY_CACHE_MAX) {
        cached_reply_t *old = zlistx_first(self->cache_fifo);
        zhashx_delete(self->cache, old->id);
        zlistx_delete(self->cache_fifo, zlistx_cursor(self->cache_fifo));
    }
}

static void send_reply(bus_call_t *call, Shoal__Bus__Reply *reply) {
    bus_server_t *self = call->server;
    size_t len = shoal__bus__reply__get_packed_size(reply);
    uint8_t *buf = malloc(len ? len : 1);
    if (buf) {
        shoal__bus__reply__pack(reply, buf);
        if (call->id && *call->id)
            cache_put(self, call->id, buf, len);
        zframe_t *routing = call->routing;
        call->routing = NULL;
        zframe_send(&routing, self->router, ZFRAME_MORE);
        zframe_t *body = zframe_new(buf, len);
        zframe_send(&body, self->router, 0);
        free(buf);
    }
    self->replies_total++;
    if (reply->code != SHOAL__BUS__CODE__OK)
        self->errors_total++;
    if (call->id)
        zhashx_delete(self->inflight, call->id);
    call_free(call);
}

void bus_reply_ok(bus_call_t *call, const ProtobufCMessage *output) {
    Shoal__Bus__Reply reply = SHOAL__BUS__REPLY__INIT;
    reply.id = call->id ? call->id : "";
    reply.code = SHOAL__BUS__CODE__OK;
    uint8_t *payload = NULL;
    if (output) {
        size_t len = protobuf_c_message_get_packed_size(output);
        payload = malloc(len ? len : 1);
        if (!payload) {
            bus_reply_error(call, BUS_INTERNAL, "out of memory packing reply");
            return;
        }
        protobuf_c_message_pack(output, payload);
        reply.payload.data = payload;
        reply.payload.len = len;
    }
    send_reply(call, &reply);
    free(payload);
}

static void reply_errorv(bus_call_t *call, int code, const char *fmt, va_list ap) {
    char msg[1024];
    vsnprintf(msg, sizeof msg, fmt, ap);
    Shoal__Bus__Reply reply = SHOAL__BUS__REPLY__INIT;
    reply.id = call->id ? call->id : "";
    reply.code = (Shoal__Bus__Code)code;
    reply.message = msg;
    send_reply(call, &reply);
}

void bus_reply_error(bus_call_t *call, int code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    reply_errorv(call, code, fmt, ap);
    va_end(ap);
}

void bus_reply_not_leader(bus_call_t *call, const char *leader_hint) {
    Shoal__Bus__Reply reply = SHOAL__BUS__REPLY__INIT;
    reply.id = call->id ? call->id : "";
    reply.code = SHOAL__BUS__CODE__NOT_LEADER;
    reply.message = "not the leader";
    reply.leader_hint = (char *)(leader_hint ? leader_hint : "");
    send_reply(call, &reply);
}

/* Sends a reply for a request we could not even turn into a call (bad envelope). */
static void reply_bare(bus_server_t *self, zframe_t *routing, const char *id, int code,
                       const char *msg) {
    bus_call_t *call = calloc(1, sizeof *call);
    if (!call) {
        zframe_destroy(&routing);
        return;
    }
    call->server = self;
    call->routing = routing;
    call->id = NULL; /* never cache: the id may be garbage */
    (void)id;
    Shoal__Bus__Reply reply = SHOAL__BUS__REPLY__INIT;
    reply.id = (char *)(id ? id : "");
    reply.code = (Shoal__Bus__Code)code;
    reply.message = (char *)msg;
    send_reply(call, &reply);
}

static void handle_one(bus_server_t *self) {
    zframe_t *routing = zframe_recv(self->router);
    if (!routing)
        return;
    if (!zframe_more(routing)) {
        zframe_destroy(&routing);
        return;
    }
    zframe_t *body = zframe_recv(self->router);
    if (!body) {
        zframe_destroy(&routing);
        return;
    }
    while (zframe_more(body)) { /* extra frames are not part of the protocol: drop them */
        zframe_t *extra = zframe_recv(self->router);
        bool more = extra && zframe_more(extra);
        zframe_destroy(&extra);
        if (!more)
            break;
    }
    self->requests_total++;
    const char *user = zframe_meta(body, "User-Id");
    Shoal__Bus__Request *req =
        shoal__bus__request__unpack(NULL, zframe_size(body), zframe_data(body));
    if (!req) {
        zframe_destroy(&body);
        reply_bare(self, routing, NULL, BUS_INVALID_ARGUMENT, "malformed request envelope");
        return;
    }
    cached_reply_t *cached = req->id && *req->id ? zhashx_lookup(self->cache, req->id) : NULL;
    if (cached) {
        self->duplicates_total++;
        zframe_send(&routing, self->router, ZFRAME_MORE);
        zframe_t *rep = zframe_new(cached->data, cached->len);
        zframe_send(&rep, self->router, 0);
        goto done;
    }
    if (req->id && *req->id && zhashx_lookup(self->inflight, req->id)) {
        self->duplicates_total++;
        zframe_destroy(&routing);
        goto done;
    }
    method_entry_t *entry = zhashx_lookup(self->methods, req->method ? req->method : "");
    if (!entry) {
        char msg[256];
        snprintf(msg, sizeof msg, "unknown method \"%.100s\" on %s", req->method, self->kind);
        reply_bare(self, routing, req->id, BUS_NOT_FOUND, msg);
        goto done;
    }
    unsigned roles = entry->m->roles ? entry->m->roles : BUS_ROLES_MANAGER;
    if (!(bus_role_of(user) & roles)) {
        char msg[256];
        snprintf(msg, sizeof msg, "%s: identity \"%.64s\" may not call this method", req->method,
                 user ? user : "");
        self->denied_total++;
        reply_bare(self, routing, req->id, BUS_PERMISSION_DENIED, msg);
        goto done;
    }
    ProtobufCMessage *input =
        protobuf_c_message_unpack(entry->m->input, NULL, req->payload.len,
                                  req->payload.data ? req->payload.data : (uint8_t *)"");
    if (!input) {
        char msg[256];
        snprintf(msg, sizeof msg, "%s: malformed %s", req->method, entry->m->input->name);
        reply_bare(self, routing, req->id, BUS_INVALID_ARGUMENT, msg);
        goto done;
    }
    bus_call_t *call = calloc(1, sizeof *call);
    if (!call) {
        protobuf_c_message_free_unpacked(input, NULL);
        zframe_destroy(&routing);
        goto done;
    }
    call->server = self;
    call->routing = routing;
    call->id = strdup(req->id ? req->id : "");
    snprintf(call->method, sizeof call->method, "%s", req->method);
    snprintf(call->identity, sizeof call->identity, "%s", user ? user : "");
    call->deadline = req->deadline_ms ? clock_mono_ms() + req->deadline_ms : 0;
    call->entry = entry;
    call->input = input;
    if (*call->id)
        zhashx_insert(self->inflight, call->id, (void *)1);
    entry->m->handler(entry->ctx, call, input);
done:
    shoal__bus__request__free_unpacked(req, NULL);
    zframe_destroy(&body);
}

int bus_server_dispatch(bus_server_t *self) {
    int n = 0;
    /* Bounded, so a flood of requests (10,000 agents registering) cannot starve the loop's
     * timers (leases, heartbeat checks); zmq_poll is level-triggered, so the rest is handled on
     * the next pass. */
    while (n < BUS_DISPATCH_MAX && (zsock_events(self->router) & ZMQ_POLLIN)) {
        handle_one(self);
        n++;
    }
    return n;
}

static int on_router(zloop_t *loop, zsock_t *reader, void *arg) {
    bus_server_dispatch(arg);
    return 0;
}

int bus_server_attach(bus_server_t *self, zloop_t *loop) {
    return zloop_reader(loop, self->router, on_router, self);
}

void bus_server_publish(bus_server_t *self, const char *topic, const char *fmt, ...) {
    if (!pthread_equal(self->owner, pthread_self()))
        return; /* sockets belong to the loop's thread */
    char text[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    Shoal__Bus__Event ev = SHOAL__BUS__EVENT__INIT;
    ev.kind = self->kind;
    ev.instance = self->instance;
    ev.topic = (char *)topic;
    ev.ts_ms = clock_wall_ms();
    ev.text = text;
    size_t len = shoal__bus__event__get_packed_size(&ev);
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf)
        return;
    shoal__bus__event__pack(&ev, buf);
    zsock_send(self->pub, "sb", topic, buf, len);
    free(buf);
}

static void log_to_pub(void *ctx, enum log_level level, const char *line) {
    bus_server_publish(ctx, "log", "%s", line);
}

void bus_server_publish_logs(bus_server_t *self) {
    log_set_sink(log_to_pub, self);
}

/* ---- standard methods -------------------------------------------------------------------- */

static void std_ping(void *ctx, bus_call_t *call, const ProtobufCMessage *in) {
    bus_server_t *self = ctx;
    Shoal__Bus__PingResponse out = SHOAL__BUS__PING_RESPONSE__INIT;
    out.kind = self->kind;
    out.instance = self->instance;
    out.uptime_ms = (uint64_t)(clock_mono_ms() - self->started_ms);
    out.pid = getpid();
    bus_reply_ok(call, &out.base);
}

static void role_names(unsigned roles, char **out, size_t *n) {
    if (roles & BUS_ROLE_ADMIN)
        out[(*n)++] = "admin";
    if (roles & BUS_ROLE_DAEMON)
        out[(*n)++] = "daemon";
    if (roles & BUS_ROLE_AGENT)
        out[(*n)++] = "agent";
}

static void std_describe(void *ctx, bus_call_t *call, const ProtobufCMessage *in) {
    bus_server_t *self = ctx;
    Shoal__Bus__DescribeResponse out = SHOAL__BUS__DESCRIBE_RESPONSE__INIT;
    out.kind = self->kind;
    out.instance = self->instance;
    out.version = SHOAL_VERSION;
    size_t n = zlistx_size(self->method_order);
    Shoal__Bus__MethodInfo *infos = calloc(n ? n : 1, sizeof *infos);
    Shoal__Bus__MethodInfo **ptrs = calloc(n ? n : 1, sizeof *ptrs);
    char *(*roles)[3] = calloc(n ? n : 1, sizeof *roles);
    if (!infos || !ptrs || !roles) {
        free(infos);
        free(ptrs);
        free(roles);
        bus_reply_error(call, BUS_INTERNAL, "out of memory");
        return;
    }
    size_t i = 0;
    for (method_entry_t *e = zlistx_first(self->method_order); e;
         e = zlistx_next(self->method_order), i++) {
        shoal__bus__method_info__init(&infos[i]);
        infos[i].name = (char *)e->m->name;
        infos[i].input_type = (char *)e->m->input->name;
        infos[i].output_type = (char *)e->m->output->name;
        role_names(e->m->roles ? e->m->roles : BUS_ROLES_MANAGER, roles[i], &infos[i].n_roles);
        infos[i].roles = roles[i];
        ptrs[i] = &infos[i];
    }
    out.methods = ptrs;
    out.n_methods = n;
    bus_reply_ok(call, &out.base);
    free(infos);
    free(ptrs);
    free(roles);
}

static void std_health(void *ctx, bus_call_t *call, const ProtobufCMessage *in) {
    bus_server_t *self = ctx;
    Shoal__Bus__HealthResponse out = SHOAL__BUS__HEALTH_RESPONSE__INIT;
    out.healthy = true;
    out.status = strdup("ok");
    if (self->health_fn)
        self->health_fn(self->health_ctx, &out);
    bus_reply_ok(call, &out.base);
    /* free what the health function allocated (strings, checks) */
    free(out.status);
    for (size_t i = 0; i < out.n_checks; i++) {
        free(out.checks[i]->name);
        free(out.checks[i]->message);
        free(out.checks[i]);
    }
    free(out.checks);
}

static void std_stats(void *ctx, bus_call_t *call, const ProtobufCMessage *in) {
    bus_server_t *self = ctx;
    Shoal__Bus__StatsResponse out = SHOAL__BUS__STATS_RESPONSE__INIT;
    bus_stats_add(&out, "bus.requests_total", (int64_t)self->requests_total);
    bus_stats_add(&out, "bus.replies_total", (int64_t)self->replies_total);
    bus_stats_add(&out, "bus.errors_total", (int64_t)self->errors_total);
    bus_stats_add(&out, "bus.duplicates_total", (int64_t)self->duplicates_total);
    bus_stats_add(&out, "bus.denied_total", (int64_t)self->denied_total);
    bus_stats_add(&out, "bus.auth_rejected_total", (int64_t)bus_auth_rejected_total());
    bus_stats_add(&out, "bus.inflight", (int64_t)zhashx_size(self->inflight));
    bus_stats_add(&out, "uptime_ms", clock_mono_ms() - self->started_ms);
    if (self->stats_fn)
        self->stats_fn(self->stats_ctx, &out);
    bus_reply_ok(call, &out.base);
    for (size_t i = 0; i < out.n_stats; i++) {
        free(out.stats[i]->name);
        free(out.stats[i]);
    }
    free(out.stats);
}

/* ---- client ------------------------------------------------------------------------------ */

struct bus_client {
    zcert_t *identity;
    char endpoint[PATH_MAX + 32];
    char server_key[41];
    zsock_t *dealer;
    zsock_t *monitor;
    char monitor_ep[64];
    int retry_ms;
    uint64_t seq;
    char prefix[16];
    char err[1024];
};

static void client_close(bus_client_t *self) {
    if (self->dealer)
        zmq_socket_monitor(zsock_resolve(self->dealer), NULL, 0);
    zsock_destroy(&self->monitor);
    zsock_destroy(&self->dealer);
}

static int client_open(bus_client_t *self) {
    static uint64_t monitor_seq;
    client_close(self);
    self->dealer = zsock_new(ZMQ_DEALER);
    if (!self->dealer)
        return -ENOMEM;
    zsock_set_linger(self->dealer, 0);
    zsock_set_sndhwm(self->dealer, 100000);
    zsock_set_rcvhwm(self->dealer, 100000);
    zcert_apply(self->identity, self->dealer);
    zsock_set_curve_serverkey(self->dealer, self->server_key);
    snprintf(self->monitor_ep, sizeof self->monitor_ep, "inproc://bus-mon-%d-%llu", getpid(),
             (unsigned long long)__atomic_add_fetch(&monitor_seq, 1, __ATOMIC_RELAXED));
    if (zmq_socket_monitor(zsock_resolve(self->dealer), self->monitor_ep,
                           ZMQ_EVENT_HANDSHAKE_FAILED_AUTH | ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL) ==
        0)
        self->monitor = zsock_new_pair(self->monitor_ep);
    if (zsock_connect(self->dealer, "%s", self->endpoint) < 0) {
        snprintf(self->err, sizeof self->err, "cannot connect to %s: %s", self->endpoint,
                 strerror(errno));
        return -EINVAL;
    }
    return 0;
}

bus_client_t *bus_client_new(zcert_t *identity, const char *endpoint, const char *server_key) {
    if (!identity || !endpoint || !server_key || strlen(server_key) != 40) {
        errno = EINVAL;
        return NULL;
    }
    bus_client_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->identity = identity;
    snprintf(self->endpoint, sizeof self->endpoint, "%s", endpoint);
    snprintf(self->server_key, sizeof self->server_key, "%s", server_key);
    self->retry_ms = BUS_DEFAULT_RETRY_MS;
    char rid[26];
    id_random(rid);
    snprintf(self->prefix, sizeof self->prefix, "%.10s", rid);
    if (client_open(self) < 0) {
        bus_client_destroy(&self);
        return NULL;
    }
    return self;
}

void bus_client_destroy(bus_client_t **self_p) {
    bus_client_t *self = *self_p;
    if (!self)
        return;
    client_close(self);
    free(self);
    *self_p = NULL;
}

void bus_client_set_retry(bus_client_t *self, int retry_ms) {
    self->retry_ms = retry_ms > 0 ? retry_ms : BUS_DEFAULT_RETRY_MS;
}
const char *bus_client_error(const bus_client_t *self) {
    return self->err;
}
const char *bus_client_endpoint(const bus_client_t *self) {
    return self->endpoint;
}

/* Reads one monitor event; true when it says the server refused our key. */
static bool monitor_refused(bus_client_t *self) {
    zmsg_t *ev = zmsg_recv(self->monitor);
    if (!ev)
        return false;
    zframe_t *f = zmsg_first(ev);
    bool refused = false;
    if (f && zframe_size(f) >= 6) {
        uint16_t event;
        uint32_t value;
        memcpy(&event, zframe_data(f), 2);
        memcpy(&value, zframe_data(f) + 2, 4);
        refused = event == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH ||
                  event == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL;
        if (refused)
            snprintf(self->err, sizeof self->err,
                     "%s refused this client's key (ZAP status %u): the key is not authorized "
                     "in this cluster",
                     self->endpoint, value);
    }
    zmsg_destroy(&ev);
    return refused;
}

int bus_client_call_raw(bus_client_t *self, const char *method, const uint8_t *in, size_t in_len,
                        int timeout_ms, uint8_t **ret_out, size_t *ret_out_len) {
    char id[48];
    snprintf(id, sizeof id, "%s-%llu", self->prefix, (unsigned long long)++self->seq);
    Shoal__Bus__Request req = SHOAL__BUS__REQUEST__INIT;
    req.id = id;
    req.method = (char *)method;
    req.deadline_ms = timeout_ms > 0 ? (uint32_t)timeout_ms : 0;
    req.payload.data = (uint8_t *)in;
    req.payload.len = in_len;
    size_t len = shoal__bus__request__get_packed_size(&req);
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf)
        return -ENOMEM;
    shoal__bus__request__pack(&req, buf);
    self->err[0] = '\0';

    int64_t deadline = clock_mono_ms() + (timeout_ms > 0 ? timeout_ms : 10000);
    int rc = -ETIMEDOUT;
    bool first = true;
    while (clock_mono_ms() < deadline) {
        if (!first && client_open(self) < 0) {
            rc = -EINVAL;
            break;
        }
        first = false;
        zframe_t *f = zframe_new(buf, len);
        if (zframe_send(&f, self->dealer, ZFRAME_DONTWAIT) < 0)
            zframe_destroy(&f);
        int64_t attempt_end = clock_mono_ms() + self->retry_ms;
        if (attempt_end > deadline)
            attempt_end = deadline;
        while (true) {
            int64_t left = attempt_end - clock_mono_ms();
            if (left <= 0)
                break;
            zmq_pollitem_t items[2] = {
                {zsock_resolve(self->dealer), 0, ZMQ_POLLIN, 0},
                {self->monitor ? zsock_resolve(self->monitor) : NULL, 0, ZMQ_POLLIN, 0}};
            int n = zmq_poll(items, self->monitor ? 2 : 1, (long)left);
            if (n < 0) {
                if (errno == EINTR && !zsys_interrupted)
                    continue;
                rc = -EINTR;
                snprintf(self->err, sizeof self->err, "interrupted");
                goto out;
            }
            if (self->monitor && (items[1].revents & ZMQ_POLLIN) && monitor_refused(self)) {
                rc = -EACCES;
                goto out;
            }
            if (!(items[0].revents & ZMQ_POLLIN))
                continue;
            zframe_t *rf = zframe_recv(self->dealer);
            if (!rf)
                continue;
            Shoal__Bus__Reply *rep =
                shoal__bus__reply__unpack(NULL, zframe_size(rf), zframe_data(rf));
            zframe_destroy(&rf);
            if (!rep)
                continue;
            if (!rep->id || strcmp(rep->id, id)) { /* a late reply to an earlier call */
                shoal__bus__reply__free_unpacked(rep, NULL);
                continue;
            }
            if (rep->code == SHOAL__BUS__CODE__OK) {
                *ret_out = malloc(rep->payload.len ? rep->payload.len : 1);
                if (!*ret_out) {
                    rc = -ENOMEM;
                } else {
                    if (rep->payload.len)
                        memcpy(*ret_out, rep->payload.data, rep->payload.len);
                    *ret_out_len = rep->payload.len;
                    rc = BUS_OK;
                }
            } else {
                rc = rep->code;
                if (rep->code == SHOAL__BUS__CODE__NOT_LEADER && rep->leader_hint &&
                    *rep->leader_hint)
                    snprintf(self->err, sizeof self->err, "%s (leader: %s)", rep->message,
                             rep->leader_hint);
                else
                    snprintf(self->err, sizeof self->err, "%s",
                             rep->message && *rep->message ? rep->message
                                                           : bus_code_name(rep->code));
            }
            shoal__bus__reply__free_unpacked(rep, NULL);
            goto out;
        }
    }
    snprintf(self->err, sizeof self->err, "no reply from %s to %s within %d ms", self->endpoint,
             method, timeout_ms);
out:
    free(buf);
    return rc;
}

int bus_client_call(bus_client_t *self, const char *method, const ProtobufCMessage *input,
                    const ProtobufCMessageDescriptor *output, int timeout_ms,
                    ProtobufCMessage **ret_output) {
    uint8_t *in = NULL;
    size_t in_len = 0;
    if (input) {
        in_len = protobuf_c_message_get_packed_size(input);
        in = malloc(in_len ? in_len : 1);
        if (!in)
            return -ENOMEM;
        protobuf_c_message_pack(input, in);
    }
    uint8_t *out = NULL;
    size_t out_len = 0;
    int rc = bus_client_call_raw(self, method, in, in_len, timeout_ms, &out, &out_len);
    free(in);
    if (rc != BUS_OK)
        return rc;
    if (ret_output) {
        *ret_output = protobuf_c_message_unpack(output, NULL, out_len, out);
        if (!*ret_output) {
            snprintf(self->err, sizeof self->err, "%s: malformed %s in reply", method,
                     output->name);
            rc = -EPROTO;
        }
    }
    free(out);
    return rc;
}

zsock_t *bus_subscriber_new(zcert_t *identity, const char *endpoint, const char *server_key,
                            const char *topic) {
    zsock_t *s = zsock_new(ZMQ_SUB);
    if (!s)
        return NULL;
    zsock_set_linger(s, 0);
    zcert_apply(identity, s);
    zsock_set_curve_serverkey(s, server_key);
    zsock_set_subscribe(s, topic ? topic : "");
    if (zsock_connect(s, "%s", endpoint) < 0) {
        zsock_destroy(&s);
        return NULL;
    }
    return s;
}
