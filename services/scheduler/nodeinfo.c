/* nodeinfo — per-node bookkeeping for the scheduler (SwarmKit's NodeInfo).
 *
 * A nodeinfo holds the node and running sums over the tasks counted on it: how many, how many per
 * service, the CPU/memory they reserve and the ports they publish in host mode (a short array:
 * nodes publish few host ports, and a linear scan beats a hash at that size). "Available" is
 * description.resources - reserved; it may go negative when a node shrinks under running tasks, and
 * the resource filter then refuses any task that reserves something.
 *
 * Invariant: the sums equal the sums over the tasks added and not yet removed. The scheduler core
 * keeps it by removing a task with the exact object it added (task specs do not change, but the
 * core never relies on that). Nothing here allocates per task except a service's first entry in
 * by_service and the growth of host_ports.
 *
 * A nodeinfo may exist without a Node (tasks arrived before their node, or the node was deleted
 * while tasks still count on it); the core never offers such a nodeinfo as a candidate. */
#include "nodeinfo.h"

#include <stdlib.h>
#include <string.h>

nodeinfo_t *nodeinfo_new(const char *id) {
    nodeinfo_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->id = strdup(id);
    self->by_service = zhashx_new();
    if (!self->id || !self->by_service) {
        nodeinfo_destroy(&self);
        return NULL;
    }
    return self;
}

void nodeinfo_destroy(nodeinfo_t **self_p) {
    if (!self_p || !*self_p)
        return;
    nodeinfo_t *self = *self_p;
    if (self->node)
        protobuf_c_message_free_unpacked(&self->node->base, NULL);
    zhashx_destroy(&self->by_service);
    free(self->host_ports);
    free(self->id);
    free(self);
    *self_p = NULL;
}

void nodeinfo_set_node(nodeinfo_t *self, Shoal__Node *node) {
    if (self->node)
        protobuf_c_message_free_unpacked(&self->node->base, NULL);
    self->node = node;
}

bool nodeinfo_task_counts(const Shoal__Task *task) {
    if (!task || !task->node_id || !task->node_id[0])
        return false;
    int state = task->status ? (int)task->status->state : SHOAL__TASK_STATE__NEW;
    return state > SHOAL__TASK_STATE__PENDING && state <= SHOAL__TASK_STATE__RUNNING &&
           task->desired_state <= SHOAL__TASK_STATE__RUNNING;
}

static const Shoal__Resources *task_reservations(const Shoal__Task *task) {
    if (!task || !task->spec || !task->spec->resources)
        return NULL;
    return task->spec->resources->reservations;
}

int64_t nodeinfo_task_cpus(const Shoal__Task *task) {
    const Shoal__Resources *r = task_reservations(task);
    return r && r->nano_cpus > 0 ? r->nano_cpus : 0;
}

int64_t nodeinfo_task_memory(const Shoal__Task *task) {
    const Shoal__Resources *r = task_reservations(task);
    return r && r->memory_bytes > 0 ? r->memory_bytes : 0;
}

static const char *service_of(const Shoal__Task *task) {
    return task->service_id ? task->service_id : "";
}

size_t nodeinfo_task_host_ports(const Shoal__Task *task, uint32_t *out, size_t max) {
    const Shoal__Endpoint *ep = task ? task->endpoint : NULL;
    if (!ep)
        return 0;
    Shoal__PortConfig *const *ports = ep->ports;
    size_t n = ep->n_ports;
    if (n == 0 && ep->spec) {
        ports = ep->spec->ports;
        n = ep->spec->n_ports;
    }
    size_t found = 0;
    for (size_t i = 0; i < n; i++) {
        const Shoal__PortConfig *p = ports[i];
        if (!p || p->publish_mode != SHOAL__PORT_CONFIG__PUBLISH_MODE__HOST || !p->published_port ||
            p->published_port > 0xffff)
            continue;
        if (found < max)
            out[found] = NODEINFO_HOST_PORT(p->protocol, p->published_port);
        found++;
    }
    return found;
}

bool nodeinfo_host_port_used(const nodeinfo_t *self, uint32_t key) {
    for (size_t i = 0; i < self->n_host_ports; i++)
        if (self->host_ports[i] == key)
            return true;
    return false;
}

#define TASK_HOST_PORTS_MAX 64

static void host_ports_add(nodeinfo_t *self, const Shoal__Task *task) {
    uint32_t keys[TASK_HOST_PORTS_MAX];
    size_t n = nodeinfo_task_host_ports(task, keys, TASK_HOST_PORTS_MAX);
    if (n > TASK_HOST_PORTS_MAX)
        n = TASK_HOST_PORTS_MAX; /* the spec validator allows far fewer ports than this */
    if (n == 0)
        return;
    if (self->n_host_ports + n > self->cap_host_ports) {
        size_t cap = (self->n_host_ports + n) * 2;
        uint32_t *p = realloc(self->host_ports, cap * sizeof *p);
        if (!p)
            return; /* out of memory: the ports look free; the agent's bind would then fail */
        self->host_ports = p;
        self->cap_host_ports = cap;
    }
    memcpy(self->host_ports + self->n_host_ports, keys, n * sizeof *keys);
    self->n_host_ports += n;
}

static void host_ports_remove(nodeinfo_t *self, const Shoal__Task *task) {
    uint32_t keys[TASK_HOST_PORTS_MAX];
    size_t n = nodeinfo_task_host_ports(task, keys, TASK_HOST_PORTS_MAX);
    if (n > TASK_HOST_PORTS_MAX)
        n = TASK_HOST_PORTS_MAX;
    for (size_t k = 0; k < n; k++) {
        for (size_t i = 0; i < self->n_host_ports; i++) {
            if (self->host_ports[i] == keys[k]) {
                self->host_ports[i] = self->host_ports[--self->n_host_ports];
                break;
            }
        }
    }
}

void nodeinfo_add_task(nodeinfo_t *self, const Shoal__Task *task) {
    self->active_tasks++;
    host_ports_add(self, task);
    self->reserved_cpus += nodeinfo_task_cpus(task);
    self->reserved_memory += nodeinfo_task_memory(task);
    const char *svc = service_of(task);
    intptr_t n = (intptr_t)zhashx_lookup(self->by_service, svc);
    zhashx_update(self->by_service, svc, (void *)(n + 1));
}

void nodeinfo_remove_task(nodeinfo_t *self, const Shoal__Task *task) {
    self->active_tasks--;
    host_ports_remove(self, task);
    self->reserved_cpus -= nodeinfo_task_cpus(task);
    self->reserved_memory -= nodeinfo_task_memory(task);
    const char *svc = service_of(task);
    intptr_t n = (intptr_t)zhashx_lookup(self->by_service, svc);
    if (n <= 1)
        zhashx_delete(self->by_service, svc);
    else
        zhashx_update(self->by_service, svc, (void *)(n - 1));
}

int64_t nodeinfo_service_tasks(const nodeinfo_t *self, const char *service_id) {
    return (intptr_t)zhashx_lookup(self->by_service, service_id ? service_id : "");
}

static const Shoal__Resources *node_resources(const nodeinfo_t *self) {
    if (!self->node || !self->node->description)
        return NULL;
    return self->node->description->resources;
}

int64_t nodeinfo_available_cpus(const nodeinfo_t *self) {
    const Shoal__Resources *r = node_resources(self);
    return (r ? r->nano_cpus : 0) - self->reserved_cpus;
}

int64_t nodeinfo_available_memory(const nodeinfo_t *self) {
    const Shoal__Resources *r = node_resources(self);
    return (r ? r->memory_bytes : 0) - self->reserved_memory;
}

int64_t nodeinfo_total_cpus(const nodeinfo_t *self) {
    const Shoal__Resources *r = node_resources(self);
    return r ? r->nano_cpus : 0;
}

int64_t nodeinfo_total_memory(const nodeinfo_t *self) {
    const Shoal__Resources *r = node_resources(self);
    return r ? r->memory_bytes : 0;
}
