/* manager — the orchestrator daemon's core: leader election on /leases/orchestrator, the store
 * cache fed by list + watch, and the reconcile loop that writes reconcile.c's actions in store
 * batches. api.c serves the bus methods with the same object as context. */
#pragma once
#include <czmq.h>
#include <stdbool.h>
#include <stdint.h>

#include "cache.h"
#include "daemon.h"
#include "storecli.h"

#define ORCH_LEASE_KEY        "/leases/orchestrator"
#define ORCH_LEASE_TTL_MS     3000
#define ORCH_KEEPALIVE_MS     1000
#define ORCH_TICK_MS          100
#define ORCH_BATCH_MAX        128 /* txns per store.Batch */
#define ORCH_STORE_TIMEOUT_MS 3000
#define ORCH_CATCH_UP_MS      2000 /* re-list when the watch has not shown our writes by then */

typedef struct orch {
    daemon_t *d;
    zcert_t *identity;     /* own copy: the store client must outlive daemon_run()'s cleanup */
    store_client_t *store; /* API calls, leadership and reconcile writes (one thread) */
    cache_t *cache;
    zactor_t *watcher;
    zhashx_t *dirty; /* service ids to reconcile */
    bool dirty_all;
    zhashx_t *wake; /* service id -> int64_t* wall ms at which to reconcile again */
    int ticker;

    bool leader;
    int64_t lease_id;
    int64_t lease_mod;   /* mod revision of the lease key we wrote: the fencing token */
    int64_t lease_ok_ms; /* monotonic time of the last successful keep-alive */
    int64_t next_lease_ms;
    int64_t wait_rev; /* reconcile only once the cache has seen our last write */
    int64_t wait_since_ms;
    int64_t retry_at_ms; /* monotonic: after a failed batch */
    bool store_ok;
    char store_err[256];

    uint64_t reconciles_total;
    uint64_t tasks_created_total;
    uint64_t restarts_total;
    uint64_t writes_total;
    uint64_t conflicts_total;
    uint64_t leader_changes_total;
} orch_t;

orch_t *orch_new(daemon_t *d);
/* Releases the lease (so a standby takes over at once) and everything else. Call after
 * daemon_run() has returned. */
void orch_destroy(orch_t **self_p);
/* Adds the ticker to the daemon's loop (leadership, wake-ups, reconcile). */
int orch_start(orch_t *self);

/* Marks a service for reconciliation (NULL = every service). */
void orch_mark_dirty(orch_t *self, const char *service_id);
/* Notes the outcome of a store call for bus.Health. */
void orch_store_result(orch_t *self, int rc);
