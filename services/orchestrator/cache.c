/* cache — /services, /tasks, /nodes and /cluster in memory for the reconciler.
 *
 * Loaded from one list of "/" (a consistent snapshot at its header revision), then advanced by
 * watch responses, which are ordered and lossless; so the cache is always the store as it was
 * at `revision`. An object whose value does not decode is dropped (and counted), never trusted.
 *
 * Dirty marking, for the reconciler: a service or task change marks that service; a node change
 * that matters for placement (spec, description, role, up/down state; not heartbeat timestamps)
 * and a cluster change mark every service. A task's delete marks the service it belonged to.
 * Called by manager.c only. */
#include "cache.h"

#include <errno.h>
#include <string.h>

#include "log.h"
#include "reconcile.h"

enum kind { KIND_NONE, KIND_SERVICE, KIND_TASK, KIND_NODE, KIND_CLUSTER };

static void obj_destroy(void **item) {
    cache_obj_t *o = *item;
    if (o) {
        if (o->msg)
            protobuf_c_message_free_unpacked(o->msg, NULL);
        free(o);
    }
    *item = NULL;
}

cache_t *cache_new(void) {
    cache_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->services = zhashx_new();
    self->tasks = zhashx_new();
    self->nodes = zhashx_new();
    if (!self->services || !self->tasks || !self->nodes) {
        cache_destroy(&self);
        return NULL;
    }
    zhashx_set_destructor(self->services, obj_destroy);
    zhashx_set_destructor(self->tasks, obj_destroy);
    zhashx_set_destructor(self->nodes, obj_destroy);
    return self;
}

void cache_clear(cache_t *self) {
    zhashx_purge(self->services);
    zhashx_purge(self->tasks);
    zhashx_purge(self->nodes);
    void *c = self->cluster;
    obj_destroy(&c);
    self->cluster = NULL;
    self->revision = 0;
}

void cache_destroy(cache_t **self_p) {
    cache_t *self = *self_p;
    if (!self)
        return;
    zhashx_destroy(&self->services);
    zhashx_destroy(&self->tasks);
    zhashx_destroy(&self->nodes);
    void *c = self->cluster;
    obj_destroy(&c);
    free(self);
    *self_p = NULL;
}

/* Which collection a key belongs to, and its id. */
static enum kind key_kind(const char *key, const char **ret_id) {
    static const struct {
        const char *prefix;
        enum kind kind;
    } prefixes[] = {
        {"/services/", KIND_SERVICE},
        {"/tasks/", KIND_TASK},
        {"/nodes/", KIND_NODE},
    };
    if (!key)
        return KIND_NONE;
    if (!strcmp(key, "/cluster")) {
        *ret_id = "";
        return KIND_CLUSTER;
    }
    for (size_t i = 0; i < sizeof prefixes / sizeof prefixes[0]; i++) {
        size_t n = strlen(prefixes[i].prefix);
        if (!strncmp(key, prefixes[i].prefix, n) && key[n] && !strchr(key + n, '/') &&
            strlen(key + n) < sizeof(((cache_obj_t *)0)->id)) {
            *ret_id = key + n;
            return prefixes[i].kind;
        }
    }
    return KIND_NONE;
}

static const ProtobufCMessageDescriptor *kind_descriptor(enum kind k) {
    switch (k) {
    case KIND_SERVICE:
        return &shoal__service__descriptor;
    case KIND_TASK:
        return &shoal__task__descriptor;
    case KIND_NODE:
        return &shoal__node__descriptor;
    case KIND_CLUSTER:
        return &shoal__cluster__descriptor;
    default:
        return NULL;
    }
}

static zhashx_t *kind_table(cache_t *self, enum kind k) {
    switch (k) {
    case KIND_SERVICE:
        return self->services;
    case KIND_TASK:
        return self->tasks;
    case KIND_NODE:
        return self->nodes;
    default:
        return NULL;
    }
}

static cache_obj_t *lookup(cache_t *self, enum kind k, const char *id) {
    if (k == KIND_CLUSTER)
        return self->cluster;
    zhashx_t *t = kind_table(self, k);
    return t ? zhashx_lookup(t, id) : NULL;
}

static void drop(cache_t *self, enum kind k, const char *id) {
    if (k == KIND_CLUSTER) {
        void *c = self->cluster;
        obj_destroy(&c);
        self->cluster = NULL;
        return;
    }
    zhashx_delete(kind_table(self, k), id);
}

/* Stores a decoded value; returns the object, or NULL when the value did not decode. */
static cache_obj_t *store_kv(cache_t *self, enum kind k, const char *id,
                             const Shoal__Store__KeyValue *kv) {
    ProtobufCMessage *msg =
        protobuf_c_message_unpack(kind_descriptor(k), NULL, kv->value.len, kv->value.data);
    if (!msg) {
        self->decode_errors++;
        log_warn("ignoring undecodable value key=%s", kv->key);
        drop(self, k, id);
        return NULL;
    }
    cache_obj_t *o = calloc(1, sizeof *o);
    if (!o) {
        protobuf_c_message_free_unpacked(msg, NULL);
        return NULL;
    }
    snprintf(o->id, sizeof o->id, "%s", id);
    o->mod_revision = kv->mod_revision;
    o->msg = msg;
    if (k == KIND_TASK) {
        const cache_obj_t *old = lookup(self, k, id);
        const Shoal__Task *t = (const Shoal__Task *)msg;
        if (old && old->running_since_ms)
            o->running_since_ms = old->running_since_ms;
        else if (t->status && t->status->state == SHOAL__TASK_STATE__RUNNING)
            o->running_since_ms = t->status->timestamp_ms > 0 ? t->status->timestamp_ms : 1;
    }
    if (k == KIND_CLUSTER) {
        drop(self, k, id);
        self->cluster = o;
    } else {
        zhashx_t *t = kind_table(self, k);
        zhashx_delete(t, id);
        zhashx_insert(t, o->id, o);
    }
    return o;
}

int cache_load(cache_t *self, const Shoal__Store__RangeResponse *list) {
    cache_clear(self);
    for (size_t i = 0; i < list->n_kvs; i++) {
        const Shoal__Store__KeyValue *kv = list->kvs[i];
        const char *id;
        enum kind k = kv ? key_kind(kv->key, &id) : KIND_NONE;
        if (k != KIND_NONE)
            store_kv(self, k, id, kv);
    }
    self->revision = list->header ? list->header->revision : 0;
    return 0;
}

/* Whether a node change can move tasks: not a heartbeat or a message. */
static bool node_changed(const Shoal__Node *a, const Shoal__Node *b) {
    if (!a || !b)
        return true;
    int sa = a->status ? (int)a->status->state : -1, sb = b->status ? (int)b->status->state : -1;
    return sa != sb || a->role != b->role ||
           !recon_message_equal((const ProtobufCMessage *)a->spec,
                                (const ProtobufCMessage *)b->spec) ||
           !recon_message_equal((const ProtobufCMessage *)a->description,
                                (const ProtobufCMessage *)b->description);
}

static const char *task_service(const cache_obj_t *o) {
    return o ? ((const Shoal__Task *)o->msg)->service_id : NULL;
}

static void apply_event(cache_t *self, const Shoal__Store__Event *ev, cache_dirty_fn *dirty,
                        void *ctx) {
    const Shoal__Store__KeyValue *kv = ev->kv;
    const char *id;
    enum kind k = kv ? key_kind(kv->key, &id) : KIND_NONE;
    if (k == KIND_NONE)
        return;
    cache_obj_t *old = lookup(self, k, id);
    if (old && kv->mod_revision && kv->mod_revision <= old->mod_revision)
        return; /* already seen (the list was newer than this event) */
    char old_service[128] = "";
    if (k == KIND_TASK && task_service(old))
        snprintf(old_service, sizeof old_service, "%s", task_service(old));
    bool node_moved = true;
    if (ev->type == SHOAL__STORE__EVENT__TYPE__DELETE) {
        drop(self, k, id);
    } else {
        Shoal__Node *old_node = NULL;
        if (k == KIND_NODE && old) { /* keep the old value to compare */
            old_node = (Shoal__Node *)old->msg;
            old->msg = NULL;
        }
        cache_obj_t *o = store_kv(self, k, id, kv);
        if (k == KIND_NODE) {
            node_moved = !o || node_changed(old_node, (const Shoal__Node *)o->msg);
            if (old_node)
                protobuf_c_message_free_unpacked(&old_node->base, NULL);
        }
        if (k == KIND_TASK && o) {
            const char *sid = task_service(o);
            if (sid && sid[0] && strcmp(sid, old_service))
                dirty(ctx, sid);
        }
    }
    switch (k) {
    case KIND_SERVICE:
        dirty(ctx, id);
        break;
    case KIND_TASK:
        if (old_service[0])
            dirty(ctx, old_service);
        break;
    case KIND_NODE:
        if (node_moved)
            dirty(ctx, NULL);
        break;
    case KIND_CLUSTER:
        dirty(ctx, NULL);
        break;
    default:
        break;
    }
}

void cache_apply(cache_t *self, const Shoal__Store__WatchResponse *resp, cache_dirty_fn *dirty,
                 void *ctx) {
    for (size_t i = 0; i < resp->n_events; i++) {
        const Shoal__Store__Event *ev = resp->events[i];
        if (!ev)
            continue;
        apply_event(self, ev, dirty, ctx);
        if (ev->kv && ev->kv->mod_revision > self->revision)
            self->revision = ev->kv->mod_revision;
    }
    if (resp->next_revision - 1 > self->revision)
        self->revision = resp->next_revision - 1;
}

const Shoal__Service *cache_service(const cache_t *self, const char *id, int64_t *ret_mod) {
    cache_obj_t *o = zhashx_lookup(self->services, id);
    if (!o)
        return NULL;
    if (ret_mod)
        *ret_mod = o->mod_revision;
    return (const Shoal__Service *)o->msg;
}

uint64_t cache_history_limit(const cache_t *self) {
    if (!self->cluster)
        return 0;
    const Shoal__Cluster *c = (const Shoal__Cluster *)self->cluster->msg;
    return c->spec ? c->spec->task_history_limit : 0;
}
