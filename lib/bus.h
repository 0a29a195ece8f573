/* bus — the message bus between shoal processes (DESIGN §2).
 *
 * A server binds a ROUTER (requests) and a PUB (events) socket, both CurveZMQ servers. A ZAP
 * handler (one per process) admits only clients whose public key is a certificate in
 * <state>/keys/public/; the certificate's file name ("admin", "agent", "orchestrator", ...) is the
 * client's identity and decides its role. An unknown key is rejected and logged once.
 *
 * Wire: the client (DEALER) sends one frame, a shoal.bus.Request; the server answers with one
 * frame, a shoal.bus.Reply carrying the same id. Handlers may answer at once or later (long-poll,
 * group commit): they keep the bus_call_t and reply when ready. A reply is cached by request id
 * so that a client retrying the same id gets the same answer and a write never applies twice.
 *
 * Standard methods on every server: bus.Ping, bus.Describe, bus.Health, bus.Stats. */
#pragma once
#include <czmq.h>
#include <protobuf-c/protobuf-c.h>
#include <stdbool.h>
#include <stdint.h>

#include "bus.pb-c.h"
#include "config.h"

enum bus_code {
    BUS_OK = SHOAL__BUS__CODE__OK,
    BUS_INVALID_ARGUMENT = SHOAL__BUS__CODE__INVALID_ARGUMENT,
    BUS_NOT_FOUND = SHOAL__BUS__CODE__NOT_FOUND,
    BUS_ALREADY_EXISTS = SHOAL__BUS__CODE__ALREADY_EXISTS,
    BUS_FAILED_PRECONDITION = SHOAL__BUS__CODE__FAILED_PRECONDITION,
    BUS_PERMISSION_DENIED = SHOAL__BUS__CODE__PERMISSION_DENIED,
    BUS_UNAVAILABLE = SHOAL__BUS__CODE__UNAVAILABLE,
    BUS_NOT_LEADER = SHOAL__BUS__CODE__NOT_LEADER,
    BUS_DEADLINE_EXCEEDED = SHOAL__BUS__CODE__DEADLINE_EXCEEDED,
    BUS_INTERNAL = SHOAL__BUS__CODE__INTERNAL,
};

const char *bus_code_name(int code);
/* The one place where bus codes and -errno meet. */
int bus_code_to_errno(int code);
int bus_code_from_errno(int neg_errno);

/* Roles, from the identity of the client key. */
enum bus_role {
    BUS_ROLE_ADMIN = 1u << 0,  /* "admin": the CLI tools */
    BUS_ROLE_DAEMON = 1u << 1, /* a manager daemon: "store", "orchestrator", ... */
    BUS_ROLE_AGENT = 1u << 2,  /* "agent": workers; may call the dispatcher only */
};
#define BUS_ROLES_MANAGER (BUS_ROLE_ADMIN | BUS_ROLE_DAEMON)
#define BUS_ROLES_ALL     (BUS_ROLE_ADMIN | BUS_ROLE_DAEMON | BUS_ROLE_AGENT)
unsigned bus_role_of(const char *identity);

/* ---- identities -------------------------------------------------------------------------- */

/* Loads <state>/keys/private/<name>.key_secret. NULL (and errno) when absent. */
zcert_t *bus_identity_load(const char *state_dir, const char *name);
/* Z85 public key of <state>/keys/public/<name>.key into buf[41]. -ENOENT when absent. */
int bus_public_key(const char *state_dir, const char *name, char *buf);

/* ---- server ------------------------------------------------------------------------------ */

typedef struct bus_server bus_server_t;
typedef struct bus_call bus_call_t;

typedef void(bus_handler_fn)(void *ctx, bus_call_t *call, const ProtobufCMessage *input);

typedef struct bus_method {
    const char *name; /* "store.Put" */
    const ProtobufCMessageDescriptor *input;
    const ProtobufCMessageDescriptor *output;
    bus_handler_fn *handler;
    unsigned roles; /* 0 = BUS_ROLES_MANAGER */
} bus_method_t;

/* Fills `health` for bus.Health, with the two helpers below (the bus owns and frees what they
 * allocate). It starts as healthy=true, status "ok". */
typedef void(bus_health_fn)(void *ctx, Shoal__Bus__HealthResponse *health);
void bus_health_set_status(Shoal__Bus__HealthResponse *health, bool healthy, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void bus_health_add_check(Shoal__Bus__HealthResponse *health, const char *name, bool ok,
                          const char *fmt, ...) __attribute__((format(printf, 4, 5)));
/* Appends counters for bus.Stats with bus_stats_add(). */
typedef void(bus_stats_fn)(void *ctx, Shoal__Bus__StatsResponse *stats);

/* Binds ipc://<state>/run/<kind>.rpc and .pub (or rpc_ep/pub_ep when not NULL) as Curve servers
 * with <state>/keys/private/<kind>.key_secret. NULL on failure (errno set, reason logged at debug).
 */
bus_server_t *bus_server_new(const shoal_config_t *cfg, const char *kind, const char *instance,
                             const char *rpc_ep, const char *pub_ep);
void bus_server_destroy(bus_server_t **self_p);

/* Adds methods served with `ctx` as their first argument. The table must outlive the server. */
int bus_server_add(bus_server_t *self, const bus_method_t *methods, size_t n, void *ctx);
void bus_server_set_health(bus_server_t *self, bus_health_fn *fn, void *ctx);
void bus_server_set_stats(bus_server_t *self, bus_stats_fn *fn, void *ctx);
void bus_stats_add(Shoal__Bus__StatsResponse *stats, const char *name, int64_t value);

/* Registers the ROUTER socket as a zloop reader; each wake-up handles up to 256 queued requests
 * (the rest on the next pass, after due timers). */
int bus_server_attach(bus_server_t *self, zloop_t *loop);
/* Handles up to 256 requests queued now without blocking; returns how many. */
int bus_server_dispatch(bus_server_t *self);
zsock_t *bus_server_router(bus_server_t *self);

const char *bus_server_kind(const bus_server_t *self);
const char *bus_server_instance(const bus_server_t *self);
const char *bus_server_rpc_endpoint(const bus_server_t *self);
const char *bus_server_pub_endpoint(const bus_server_t *self);
const char *bus_server_public_key(const bus_server_t *self); /* Z85 */

/* Publishes [topic, shoal.bus.Event] on the PUB socket. */
void bus_server_publish(bus_server_t *self, const char *topic, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Every log line of this process is also published on topic "log". */
void bus_server_publish_logs(bus_server_t *self);

/* ---- calls (server side) ----------------------------------------------------------------- */

const char *bus_call_method(const bus_call_t *call);
const char *bus_call_id(const bus_call_t *call);
const char *bus_call_identity(const bus_call_t *call); /* the client's key name */
/* Monotonic ms at which the client stops waiting (0 = none). */
int64_t bus_call_deadline(const bus_call_t *call);
/* Sends the reply and frees the call together with its input message. A handler may keep the
 * call past its own return (long-poll, group commit) and reply later; the input stays valid until
 * then. Every call must be replied exactly once. */
void bus_reply_ok(bus_call_t *call, const ProtobufCMessage *output);
void bus_reply_error(bus_call_t *call, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void bus_reply_not_leader(bus_call_t *call, const char *leader_hint);
/* The decoded input of a call (owned by the call, valid until the reply). */
const ProtobufCMessage *bus_call_input(const bus_call_t *call);

/* ---- client ------------------------------------------------------------------------------ */

typedef struct bus_client bus_client_t;

/* A DEALER connected to `endpoint` as Curve client with `identity` (not owned; must outlive the
 * client) to a server whose public key is `server_key` (Z85). Not thread-safe: one per thread. */
bus_client_t *bus_client_new(zcert_t *identity, const char *endpoint, const char *server_key);
void bus_client_destroy(bus_client_t **self_p);

/* Calls `method` and waits up to timeout_ms for the reply, resending the same request id when an
 * attempt gets no answer (every 1 s, or every `retry_ms` set below). Returns BUS_OK with
 * *ret_output decoded (free with protobuf_c_message_free_unpacked), a positive bus code with the
 * server's message in bus_client_error(), or -ETIMEDOUT / -EPROTO / -ENOMEM. */
int bus_client_call(bus_client_t *self, const char *method, const ProtobufCMessage *input,
                    const ProtobufCMessageDescriptor *output, int timeout_ms,
                    ProtobufCMessage **ret_output);
/* Same, with the raw payload (output bytes owned by caller, free()). */
int bus_client_call_raw(bus_client_t *self, const char *method, const uint8_t *in, size_t in_len,
                        int timeout_ms, uint8_t **ret_out, size_t *ret_out_len);
void bus_client_set_retry(bus_client_t *self, int retry_ms);
const char *bus_client_error(const bus_client_t *self);
const char *bus_client_endpoint(const bus_client_t *self);

/* A subscriber to a server's PUB socket (topic prefix "" = all). */
zsock_t *bus_subscriber_new(zcert_t *identity, const char *endpoint, const char *server_key,
                            const char *topic);

/* ---- ZAP --------------------------------------------------------------------------------- */

/* Starts this process's ZAP handler over <state>/keys/public (done by bus_server_new; callable
 * again, it starts once). Counters for bus.Stats: */
int bus_auth_start(const char *state_dir);
uint64_t bus_auth_rejected_total(void);
