/* registry — daemons announce themselves under /bus/<kind>/<instance> (see registry.h).
 *
 * The entry lives under a store lease: a daemon that dies disappears within REGISTRY_TTL_MS.
 * Keep-alive failures (store restarted and lost the lease, or it expired while the store was
 * down) re-grant and re-put, so the registry heals by itself after any store restart. */
#include "registry.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "log.h"

struct registry {
    store_client_t *store;
    char key[256];
    uint8_t *value;
    size_t len;
    int64_t lease;
};

static int registry_put(registry_t *self) {
    int64_t lease = 0;
    int r = store_lease_grant(self->store, REGISTRY_TTL_MS, &lease);
    if (r < 0)
        return r;
    r = store_put(self->store, self->key, self->value, self->len, lease, NULL);
    if (r < 0)
        return r;
    self->lease = lease;
    return 0;
}

registry_t *registry_new(store_client_t *store, bus_server_t *server, const char *node) {
    registry_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->store = store;
    snprintf(self->key, sizeof self->key, "/bus/%s/%s", bus_server_kind(server),
             bus_server_instance(server));
    char host[256] = "";
    if (!node) {
        gethostname(host, sizeof host - 1);
        node = host;
    }
    Shoal__Bus__RegistryEntry e = SHOAL__BUS__REGISTRY_ENTRY__INIT;
    e.kind = (char *)bus_server_kind(server);
    e.instance = (char *)bus_server_instance(server);
    e.rpc_endpoint = (char *)bus_server_rpc_endpoint(server);
    e.pub_endpoint = (char *)bus_server_pub_endpoint(server);
    e.public_key = (char *)bus_server_public_key(server);
    e.node = (char *)node;
    e.pid = getpid();
    e.version = SHOAL_VERSION;
    e.started_ms = clock_wall_ms();
    self->len = shoal__bus__registry_entry__get_packed_size(&e);
    self->value = malloc(self->len ? self->len : 1);
    if (!self->value) {
        free(self);
        return NULL;
    }
    shoal__bus__registry_entry__pack(&e, self->value);
    int r = registry_put(self);
    if (r < 0) {
        log_debug("registry put failed key=%s err=%d", self->key, r);
        registry_destroy(&self);
        errno = -r;
        return NULL;
    }
    return self;
}

int registry_keepalive(registry_t *self) {
    int r = self->lease ? store_lease_keepalive(self->store, self->lease) : -ENOENT;
    if (r == -ENOENT || r == -EINVAL) {
        log_debug("registry lease lost, registering again key=%s", self->key);
        self->lease = 0;
        r = registry_put(self);
    }
    return r;
}

void registry_destroy(registry_t **self_p) {
    registry_t *self = *self_p;
    if (!self)
        return;
    if (self->lease) {
        store_client_set_timeout(self->store, 500);
        (void)store_lease_revoke(self->store, self->lease);
    }
    free(self->value);
    free(self);
    *self_p = NULL;
}

int registry_lookup(store_client_t *store, const char *kind, Shoal__Bus__RegistryEntry **ret) {
    char prefix[128];
    snprintf(prefix, sizeof prefix, "/bus/%s/", kind);
    Shoal__Store__RangeResponse *resp = NULL;
    int r = store_list(store, prefix, &resp);
    if (r < 0)
        return r;
    r = -ENOENT;
    for (size_t i = 0; i < resp->n_kvs && r < 0; i++) {
        Shoal__Bus__RegistryEntry *e = shoal__bus__registry_entry__unpack(
            NULL, resp->kvs[i]->value.len, resp->kvs[i]->value.data);
        if (e) {
            *ret = e;
            r = 0;
        }
    }
    shoal__store__range_response__free_unpacked(resp, NULL);
    return r;
}

bus_client_t *registry_connect(store_client_t *store, zcert_t *identity, const char *kind) {
    Shoal__Bus__RegistryEntry *e = NULL;
    int r = registry_lookup(store, kind, &e);
    if (r < 0) {
        errno = -r;
        return NULL;
    }
    bus_client_t *c = bus_client_new(identity, e->rpc_endpoint, e->public_key);
    shoal__bus__registry_entry__free_unpacked(e, NULL);
    return c;
}
