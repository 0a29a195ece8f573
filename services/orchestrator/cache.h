/* cache — the orchestrator leader's in-memory copy of /services, /tasks, /nodes and /cluster,
 * loaded from one store list and kept current by the store watch. Each object keeps the mod
 * revision it was read at, so writes computed from it can compare-and-swap. No I/O here:
 * manager.c feeds it store responses. */
#pragma once
#include <czmq.h>
#include <stdbool.h>
#include <stdint.h>

#include "objects.pb-c.h"
#include "store.pb-c.h"

typedef struct cache_obj {
    char id[128];
    int64_t mod_revision;
    ProtobufCMessage *msg;    /* Shoal__Service / Shoal__Task / Shoal__Node / Shoal__Cluster */
    int64_t running_since_ms; /* tasks: status timestamp of the first RUNNING seen; 0 = none.
                                 Kept across updates (the update monitor and the crash-loop
                                 back-off need it once the task has ended). */
} cache_obj_t;

typedef struct cache {
    zhashx_t *services; /* id -> cache_obj_t* */
    zhashx_t *tasks;
    zhashx_t *nodes;
    cache_obj_t *cluster;
    int64_t revision; /* the store revision the cache reflects */
    uint64_t decode_errors;
} cache_t;

/* What an applied event changed, for the reconciler's dirty set. */
typedef void(cache_dirty_fn)(void *ctx, const char *service_id); /* NULL id = every service */

cache_t *cache_new(void);
void cache_destroy(cache_t **self_p);
void cache_clear(cache_t *self);

/* Replaces the content with a list of "/" (keys outside the orchestrator's prefixes ignored). */
int cache_load(cache_t *self, const Shoal__Store__RangeResponse *list);

/* Applies a watch response in order; calls `dirty` for each service whose reconciliation may
 * change. Events at or below an object's known revision are ignored (already seen). */
void cache_apply(cache_t *self, const Shoal__Store__WatchResponse *resp, cache_dirty_fn *dirty,
                 void *ctx);

/* Lookups (NULL when absent). */
const Shoal__Service *cache_service(const cache_t *self, const char *id, int64_t *ret_mod);
uint64_t cache_history_limit(const cache_t *self);
