/* resolver — the name table of shoal-dns: which cluster names exist and which addresses they
 * resolve to, kept current one store event at a time (never a full rebuild per event).
 *
 * Sources (proto/objects.proto):
 *   /services/<id>  shoal.Service: spec.annotations.name is the DNS name (case-insensitive);
 *                   a service with pending_delete set no longer resolves.
 *   /tasks/<id>     shoal.Task: answers for its service_id while status.state == RUNNING and
 *                   desired_state <= RUNNING (a task the orchestrator is stopping leaves DNS
 *                   before its container stops, so new clients go elsewhere), with the IPv4
 *                   addresses of its attachment to our network ("shoal"; "/len" suffix dropped).
 *
 * Names: "<service>" and "tasks.<service>" both answer the task addresses for now; when services
 * get VIPs "<service>" will answer the VIP and "tasks.<service>" stays the task list.
 *
 * Tables (CZMQ zhashx, string keys):
 *   services  id -> service (owned)         names   lowercase name -> service (borrowed)
 *   tasks     id -> task (owned; only tasks that answer)
 *   groups    service id -> group (owned; a list of the answering tasks of that service)
 * A task is kept in `tasks` iff it is linked into a group, and a group exists iff it has tasks,
 * so memory follows the running tasks, not the history. Groups are keyed by service id, not name,
 * because tasks may arrive before their service (or outlive it briefly) and a rename must not
 * orphan them. Two services with the same name: the first one seen keeps the name until it goes.
 *
 * Called by main.c (initial list, then each watch event) and server.c (lookups); single thread. */
#include "resolver.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <czmq.h>
#include <errno.h>
#include <string.h>

#include "log.h"
#include "objects.pb-c.h"

#define RESOLVER_ID_MAX   128
#define RESOLVER_NAME_MAX 255

typedef struct rsv_group rsv_group_t;

typedef struct rsv_task {
    char id[RESOLVER_ID_MAX + 1];
    rsv_group_t *group;
    struct rsv_task *prev, *next;
    uint32_t addrs[RESOLVER_TASK_ADDRS_MAX];
    size_t n_addrs;
} rsv_task_t;

struct rsv_group {
    char service_id[RESOLVER_ID_MAX + 1];
    rsv_task_t *head;
    size_t n_tasks;
};

typedef struct rsv_service {
    char id[RESOLVER_ID_MAX + 1];
    char name[RESOLVER_NAME_MAX + 1]; /* lowercase */
} rsv_service_t;

struct resolver {
    char network[64];
    zhashx_t *services;
    zhashx_t *names;
    zhashx_t *tasks;
    zhashx_t *groups;
};

static void free_item(void **item) {
    free(*item);
    *item = NULL;
}

resolver_t *resolver_new(const char *network) {
    resolver_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    snprintf(self->network, sizeof self->network, "%s", network ? network : "shoal");
    self->services = zhashx_new();
    self->names = zhashx_new();
    self->tasks = zhashx_new();
    self->groups = zhashx_new();
    if (!self->services || !self->names || !self->tasks || !self->groups) {
        resolver_destroy(&self);
        return NULL;
    }
    zhashx_set_destructor(self->services, free_item);
    zhashx_set_destructor(self->tasks, free_item);
    zhashx_set_destructor(self->groups, free_item);
    return self;
}

void resolver_destroy(resolver_t **self_p) {
    if (!self_p || !*self_p)
        return;
    resolver_t *self = *self_p;
    zhashx_destroy(&self->names); /* borrowed values first */
    zhashx_destroy(&self->tasks);
    zhashx_destroy(&self->groups);
    zhashx_destroy(&self->services);
    free(self);
    *self_p = NULL;
}

void resolver_clear(resolver_t *self) {
    zhashx_purge(self->names);
    zhashx_purge(self->tasks);
    zhashx_purge(self->groups);
    zhashx_purge(self->services);
}

size_t resolver_service_count(const resolver_t *self) {
    return zhashx_size(self->services);
}

size_t resolver_task_count(const resolver_t *self) {
    return zhashx_size(self->tasks);
}

/* ---- tasks ------------------------------------------------------------------------------ */

static void task_remove(resolver_t *self, const char *id) {
    rsv_task_t *t = zhashx_lookup(self->tasks, id);
    if (!t)
        return;
    rsv_group_t *g = t->group;
    if (t->prev)
        t->prev->next = t->next;
    else
        g->head = t->next;
    if (t->next)
        t->next->prev = t->prev;
    if (--g->n_tasks == 0)
        zhashx_delete(self->groups, g->service_id);
    zhashx_delete(self->tasks, id);
}

/* The IPv4 addresses of the task's attachment to our network, "/len" suffixes dropped. */
static size_t task_addresses(const resolver_t *self, const Shoal__Task *task, uint32_t *addrs) {
    size_t n = 0;
    for (size_t i = 0; i < task->n_networks; i++) {
        const Shoal__NetworkAttachment *na = task->networks[i];
        if (!na || !na->network || strcmp(na->network, self->network) != 0)
            continue;
        for (size_t j = 0; j < na->n_addresses && n < RESOLVER_TASK_ADDRS_MAX; j++) {
            char buf[64];
            const char *a = na->addresses[j];
            if (!a || strlen(a) >= sizeof buf)
                continue;
            strcpy(buf, a);
            char *slash = strchr(buf, '/');
            if (slash)
                *slash = '\0';
            struct in_addr in;
            if (inet_pton(AF_INET, buf, &in) == 1)
                addrs[n++] = in.s_addr;
        }
    }
    return n;
}

static bool task_answers(const Shoal__Task *task) {
    return task->status && task->status->state == SHOAL__TASK_STATE__RUNNING &&
           task->desired_state <= SHOAL__TASK_STATE__RUNNING;
}

static int task_put(resolver_t *self, const char *id, const Shoal__Task *task) {
    uint32_t addrs[RESOLVER_TASK_ADDRS_MAX];
    size_t n = task_answers(task) ? task_addresses(self, task, addrs) : 0;
    const char *service_id = task->service_id ? task->service_id : "";
    if (n == 0 || !*service_id || strlen(service_id) > RESOLVER_ID_MAX) {
        task_remove(self, id);
        return 0;
    }
    rsv_task_t *t = zhashx_lookup(self->tasks, id);
    if (t && strcmp(t->group->service_id, service_id) != 0) {
        task_remove(self, id); /* service_id never changes in practice; stay correct anyway */
        t = NULL;
    }
    if (!t) {
        rsv_group_t *g = zhashx_lookup(self->groups, service_id);
        if (!g) {
            g = calloc(1, sizeof *g);
            if (!g)
                return -ENOMEM;
            strcpy(g->service_id, service_id);
            zhashx_insert(self->groups, service_id, g);
        }
        t = calloc(1, sizeof *t);
        if (!t) {
            if (g->n_tasks == 0)
                zhashx_delete(self->groups, service_id);
            return -ENOMEM;
        }
        strcpy(t->id, id);
        t->group = g;
        t->next = g->head;
        if (g->head)
            g->head->prev = t;
        g->head = t;
        g->n_tasks++;
        zhashx_insert(self->tasks, id, t);
    }
    memcpy(t->addrs, addrs, n * sizeof addrs[0]);
    t->n_addrs = n;
    return 0;
}

/* ---- services --------------------------------------------------------------------------- */

static void name_lower(char *dst, const char *src, size_t cap) {
    size_t i = 0;
    for (; src[i] && i + 1 < cap; i++)
        dst[i] = (char)tolower((unsigned char)src[i]);
    dst[i] = '\0';
}

/* Gives `name` to another service of that name, if any, after its holder went away. */
static void name_reassign(resolver_t *self, const char *name) {
    for (rsv_service_t *s = zhashx_first(self->services); s; s = zhashx_next(self->services))
        if (strcmp(s->name, name) == 0) {
            zhashx_insert(self->names, name, s);
            return;
        }
}

static void service_remove(resolver_t *self, const char *id) {
    rsv_service_t *s = zhashx_lookup(self->services, id);
    if (!s)
        return;
    char name[RESOLVER_NAME_MAX + 1];
    strcpy(name, s->name);
    bool held = zhashx_lookup(self->names, name) == s;
    if (held)
        zhashx_delete(self->names, name);
    zhashx_delete(self->services, id); /* frees s */
    if (held)
        name_reassign(self, name);
}

static int service_put(resolver_t *self, const char *id, const Shoal__Service *svc) {
    const char *raw = svc->spec && svc->spec->annotations ? svc->spec->annotations->name : NULL;
    if (!raw || !*raw || strlen(raw) > RESOLVER_NAME_MAX || svc->pending_delete) {
        service_remove(self, id);
        return 0;
    }
    char name[RESOLVER_NAME_MAX + 1];
    name_lower(name, raw, sizeof name);
    rsv_service_t *s = zhashx_lookup(self->services, id);
    if (s && strcmp(s->name, name) == 0)
        return 0; /* an update that did not rename it: nothing to do */
    if (s)
        service_remove(self, id);
    s = calloc(1, sizeof *s);
    if (!s)
        return -ENOMEM;
    strcpy(s->id, id);
    strcpy(s->name, name);
    zhashx_insert(self->services, id, s);
    rsv_service_t *holder = zhashx_lookup(self->names, name);
    if (!holder)
        zhashx_insert(self->names, name, s);
    else
        log_warn("service name taken name=%s service=%s holder=%s", name, id, holder->id);
    return 0;
}

/* ---- events and lookups ----------------------------------------------------------------- */

/* The id after `prefix` in key, or NULL when key is not "<prefix><id>" with a plain id. */
static const char *key_id(const char *key, const char *prefix) {
    size_t n = strlen(prefix);
    if (strncmp(key, prefix, n) != 0)
        return NULL;
    const char *id = key + n;
    size_t len = strlen(id);
    if (len == 0 || len > RESOLVER_ID_MAX || strchr(id, '/'))
        return NULL;
    return id;
}

int resolver_apply(resolver_t *self, const char *key, bool deleted, const uint8_t *value,
                   size_t len) {
    const char *id;
    if (!key)
        return 0;
    if ((id = key_id(key, "/tasks/"))) {
        if (deleted) {
            task_remove(self, id);
            return 0;
        }
        Shoal__Task *task = shoal__task__unpack(NULL, len, value);
        if (!task) {
            log_warn("task does not decode key=%s bytes=%zu", key, len);
            task_remove(self, id);
            return -EINVAL;
        }
        int rc = task_put(self, id, task);
        shoal__task__free_unpacked(task, NULL);
        return rc;
    }
    if ((id = key_id(key, "/services/"))) {
        if (deleted) {
            service_remove(self, id);
            return 0;
        }
        Shoal__Service *svc = shoal__service__unpack(NULL, len, value);
        if (!svc) {
            log_warn("service does not decode key=%s bytes=%zu", key, len);
            service_remove(self, id);
            return -EINVAL;
        }
        int rc = service_put(self, id, svc);
        shoal__service__free_unpacked(svc, NULL);
        return rc;
    }
    return 0;
}

int resolver_lookup(const resolver_t *self, const char *name, uint32_t *addrs, size_t cap,
                    size_t *ret_n) {
    size_t len = name ? strlen(name) : 0;
    if (len > 0 && name[len - 1] == '.')
        len--;
    if (len == 0 || len > 6 + RESOLVER_NAME_MAX) /* "tasks." + a service name */
        return -ENOENT;
    char lower[6 + RESOLVER_NAME_MAX + 1];
    for (size_t i = 0; i < len; i++)
        lower[i] = (char)tolower((unsigned char)name[i]);
    lower[len] = '\0';

    rsv_service_t *s = zhashx_lookup(self->names, lower);
    if (!s && strncmp(lower, "tasks.", 6) == 0 && lower[6])
        s = zhashx_lookup(self->names, lower + 6);
    if (!s)
        return -ENOENT;

    size_t n = 0;
    rsv_group_t *g = zhashx_lookup(self->groups, s->id);
    for (rsv_task_t *t = g ? g->head : NULL; t; t = t->next)
        for (size_t i = 0; i < t->n_addrs; i++, n++)
            if (n < cap)
                addrs[n] = t->addrs[i];
    *ret_n = n;
    return 0;
}
