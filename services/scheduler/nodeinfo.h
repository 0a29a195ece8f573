/* nodeinfo — what the scheduler knows about one node: the Node object, how many active tasks it
 * runs (in total and per service) and the resources those tasks reserve. Updated incrementally
 * by the scheduler core as tasks are assigned and finish; see nodeinfo.c. */
#pragma once
#include <czmq.h>
#include <stdbool.h>
#include <stdint.h>

#include "objects.pb-c.h"

typedef struct nodeinfo {
    char *id;
    Shoal__Node *node;       /* owned; NULL while tasks name a node the store has not shown us */
    int64_t active_tasks;    /* tasks counted on this node */
    zhashx_t *by_service;    /* service id -> count (as intptr_t), entries > 0 only */
    int64_t reserved_cpus;   /* nano CPUs reserved by counted tasks */
    int64_t reserved_memory; /* bytes */
    uint32_t *host_ports;    /* NODEINFO_HOST_PORT keys published in host mode by counted tasks,
                                one entry per use (a key may repeat) */
    size_t n_host_ports, cap_host_ports;
} nodeinfo_t;

/* A published host port as one number: protocol (PortConfig.Protocol) and port. */
#define NODEINFO_HOST_PORT(protocol, port) (((uint32_t)(protocol) << 16) | ((port)&0xffffu))

nodeinfo_t *nodeinfo_new(const char *id);
void nodeinfo_destroy(nodeinfo_t **self_p);

/* Replaces the Node object (takes ownership; NULL = the node was deleted). */
void nodeinfo_set_node(nodeinfo_t *self, Shoal__Node *node);

/* Does `task` count against its node? It does while its node_id is set, it was placed
 * (PENDING < state <= RUNNING) and it is meant to run (desired_state <= RUNNING). A PENDING task
 * with a preassigned node does not count until the scheduler accepts it (SwarmKit does the same),
 * otherwise its own reservation would be held against it. */
bool nodeinfo_task_counts(const Shoal__Task *task);

/* The reservations in a task's spec (0 when absent or negative). */
int64_t nodeinfo_task_cpus(const Shoal__Task *task);
int64_t nodeinfo_task_memory(const Shoal__Task *task);

/* The host-mode published ports of a task (endpoint.ports, or endpoint.spec.ports when the
 * endpoint was not resolved), as NODEINFO_HOST_PORT keys: up to `max` into out; returns how many
 * there are (which may be more than max). Ports published as 0 (dynamic) never conflict. */
size_t nodeinfo_task_host_ports(const Shoal__Task *task, uint32_t *out, size_t max);
/* Does a counted task on this node publish `key` in host mode? */
bool nodeinfo_host_port_used(const nodeinfo_t *self, uint32_t key);

/* Counts / uncounts a task (the caller decides whether it counts, and removes with the same
 * task object it added). */
void nodeinfo_add_task(nodeinfo_t *self, const Shoal__Task *task);
void nodeinfo_remove_task(nodeinfo_t *self, const Shoal__Task *task);

int64_t nodeinfo_service_tasks(const nodeinfo_t *self, const char *service_id);
/* description.resources - reserved (may be negative when overcommitted). */
int64_t nodeinfo_available_cpus(const nodeinfo_t *self);
int64_t nodeinfo_available_memory(const nodeinfo_t *self);
/* description.resources (0 when unknown). */
int64_t nodeinfo_total_cpus(const nodeinfo_t *self);
int64_t nodeinfo_total_memory(const nodeinfo_t *self);
