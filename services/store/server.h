/* server — shoal-store's bus front end: the store.* methods of proto/store.proto over kv.c.
 *
 * Writes are group-committed: every write request handled in one wake-up of the ROUTER is
 * queued, then applied with one kv_apply() (one RocksDB write batch, one fsync) at the start of
 * the next loop iteration, and only then are all of them replied. Watch is a long poll: a call
 * with no event to return is parked until a commit produces one or its timeout passes. Leases
 * expire from a 100 ms timer. The store registers itself as /bus/store/<instance> directly in kv
 * (it cannot be its own client), under a lease it renews every second. */
#pragma once
#include <czmq.h>
#include <stdint.h>

#include "bus.h"

#define STORE_TICK_MS                  100
#define STORE_WATCH_DEFAULT_TIMEOUT_MS 5000
#define STORE_WATCH_MAX_TIMEOUT_MS     30000
#define STORE_MAX_PARKED_WATCHES       65536

typedef struct store_server store_server_t;

typedef struct store_server_options {
    const char *data_dir; /* RocksDB directory (created when absent) */
    int64_t history;      /* revisions of events kept for Watch (0 = default) */
    const char *node;     /* node name for the registry entry (NULL = hostname) */
} store_server_options_t;

/* Opens the database, adds the store.* methods to `bus`, health and stats, and registers the
 * tick timer on `loop`. Returns NULL after writing one line into err on failure. */
store_server_t *store_server_new(bus_server_t *bus, zloop_t *loop,
                                 const store_server_options_t *opts, char *err, size_t errlen);
/* Closes the database. Call after the loop ended; calls still queued or parked are dropped
 * unanswered (their clients retry against the next store). */
void store_server_destroy(store_server_t **self_p);

/* Applies every queued write now (normally done by the loop right after the wake-up). */
void store_server_flush(store_server_t *self);
