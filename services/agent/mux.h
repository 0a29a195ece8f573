/* mux — many bus calls in flight on one connection, answered through callbacks in the loop.
 *
 * lib/bus's client blocks in bus_client_call() until its one reply comes. The sim agent speaks
 * for thousands of nodes at once (a heartbeat each every 500 ms, a parked long-poll each), which
 * a thread per call cannot do; mux sends every request on one Curve DEALER without waiting,
 * keeps it by request id, and calls its callback from the loop when the reply with that id
 * arrives or its deadline passes. Same envelope as lib/bus (shoal.bus.Request / Reply); ids are
 * unique per process, so the server's reply cache and duplicate check never confuse two calls.
 *
 * Single-threaded: every function and every callback runs on the loop's thread. A callback is
 * never called from inside mux_call(). */
#pragma once
#include <czmq.h>
#include <protobuf-c/protobuf-c.h>
#include <stdint.h>

typedef struct mux mux_t;

/* code: BUS_OK with `out` decoded (freed by mux after the callback returns), a positive bus code
 * with the server's `message`, or -ETIMEDOUT (no reply by the deadline) / -EPROTO (a reply that
 * does not decode). `tag` is the caller's, given to mux_call. */
typedef void(mux_done_fn)(void *ctx, uint64_t tag, int code, ProtobufCMessage *out,
                          const char *message);

/* A DEALER to `endpoint` as Curve client `identity` (duplicated) of the server `server_key`. */
mux_t *mux_new(zcert_t *identity, const char *endpoint, const char *server_key);
/* Pending calls are dropped without their callbacks. Leaves the loop alone: call it once the
 * loop is destroyed (daemon_run() returned), or before it was attached. */
void mux_destroy(mux_t **self_p);
/* Reads replies and expires deadlines on `loop`. */
int mux_attach(mux_t *self, zloop_t *loop);

/* Sends `method` with `input` now; `done` runs later with the reply decoded as `output`, or
 * with -ETIMEDOUT after timeout_ms. 0, or -errno (then `done` is never called). */
int mux_call(mux_t *self, const char *method, const ProtobufCMessage *input,
             const ProtobufCMessageDescriptor *output, int timeout_ms, mux_done_fn *done, void *ctx,
             uint64_t tag);
/* Reads every reply waiting on the socket and expires the calls whose deadline is `now_ms` or
 * earlier (the loop does both; tests may call it). Returns how many callbacks ran. */
size_t mux_process(mux_t *self, int64_t now_ms);

typedef struct mux_stats {
    uint64_t calls;    /* requests sent */
    uint64_t replies;  /* matched replies */
    uint64_t timeouts; /* calls that expired */
    uint64_t late;     /* replies to no pending call (expired, or not ours) */
    uint64_t reconnects;
    size_t pending;
} mux_stats_t;
void mux_get_stats(const mux_t *self, mux_stats_t *ret);
