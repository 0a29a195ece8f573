/* nodeinfo — per-node bookkeeping for the scheduler (SwarmKit's NodeInfo).
 *
 * A nodeinfo holds the node and running sums over the tasks counted on it: how many, how many per
 * service, and the CPU/memory they reserve. "Available" is description.resources - reserved; it
 * may go negative when a node shrinks under running tasks, and the resource filter then refuses
 * any task that reserves something.
 *
 * Invariant: the sums equal the sums over the tasks added and not yet removed. The scheduler core
 * keeps it by removing a task with the exact object it added (task specs do not change, but the
 * core never relies on that). Nothing here allocates per task except a service's first entry in
 * by_service.
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

void nodeinfo_add_task(nodeinfo_t *self, const Shoal__Task *task) {
    self->active_tasks++;
    self->reserved_cpus += nodeinfo_task_cpus(task);
    self->reserved_memory += nodeinfo_task_memory(task);
    const char *svc = service_of(task);
    intptr_t n = (intptr_t)zhashx_lookup(self->by_service, svc);
    zhashx_update(self->by_service, svc, (void *)(n + 1));
}

void nodeinfo_remove_task(nodeinfo_t *self, const Shoal__Task *task) {
    self->active_tasks--;
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
