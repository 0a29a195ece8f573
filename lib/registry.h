/* registry — the daemon registry in the store (DESIGN §2).
 *
 * Each daemon writes /bus/<kind>/<instance> = shoal.bus.RegistryEntry under a lease with a TTL of
 * 3 s, kept alive every second; when the daemon dies the lease expires and the entry goes.
 * Clients find a daemon by kind with registry_lookup() and connect with the key it published. */
#pragma once
#include "bus.h"
#include "storecli.h"

#define REGISTRY_TTL_MS       3000
#define REGISTRY_KEEPALIVE_MS 1000

typedef struct registry registry_t;

/* Registers the server's endpoints and key (node name may be NULL). */
registry_t *registry_new(store_client_t *store, bus_server_t *server, const char *node);
/* Keeps the lease alive; re-registers when it was lost (store restarted, lease expired). */
int registry_keepalive(registry_t *self);
void registry_destroy(registry_t **self_p); /* revokes the lease */

/* The first live entry of `kind`. -ENOENT when none is registered. */
int registry_lookup(store_client_t *store, const char *kind, Shoal__Bus__RegistryEntry **ret);
/* A bus client to the first live daemon of `kind`. NULL with errno when none. */
bus_client_t *registry_connect(store_client_t *store, zcert_t *identity, const char *kind);
