/* filter — the node filters of the scheduler, in SwarmKit's order, and the pipeline that runs
 * them and explains failures ("no suitable node (insufficient resources on 2 nodes)"). */
#pragma once
#include <stdbool.h>
#include <stddef.h>

#include "constraint.h"
#include "nodeinfo.h"

#define FILTER_HOST_PORTS_MAX 64

/* One task as the filters see it: set up once per task (group), checked against many nodes. */
typedef struct filter_task {
    const Shoal__Task *task;
    int64_t cpus, memory;           /* reservations */
    constraint_list_t *constraints; /* parsed spec.placement.constraints, NULL when none */
    bool constraints_invalid;       /* the spec has a constraint that does not parse */
    uint32_t host_ports[FILTER_HOST_PORTS_MAX]; /* NODEINFO_HOST_PORT keys published in host mode */
    size_t n_host_ports;
} filter_task_t;

typedef struct filter {
    const char *name; /* "ready", "resources", "constraints", "platform", "host-ports",
                         "max-replicas" */
    bool (*applies)(const filter_task_t *ft);
    bool (*check)(const nodeinfo_t *ni, const filter_task_t *ft);
    /* "insufficient resources on 2 nodes" into buf */
    void (*explain)(char *buf, size_t len, int nodes);
} filter_t;

enum filter_id {
    FILTER_READY,
    FILTER_RESOURCES,
    FILTER_CONSTRAINTS,
    FILTER_PLATFORM,
    FILTER_HOST_PORTS,
    FILTER_MAX_REPLICAS,
    FILTER_COUNT,
};

/* The filters, in the order they run (index = enum filter_id). */
extern const filter_t filter_table[FILTER_COUNT];

/* A pipeline: the filters enabled for one task plus failure counts per filter. */
typedef struct filter_pipeline {
    filter_task_t ft;
    bool enabled[FILTER_COUNT];
    int failures[FILTER_COUNT];
} filter_pipeline_t;

/* A pipeline starts zeroed (`filter_pipeline_t p = {0};`) and ends with filter_pipeline_clear().
 * Sets the pipeline up for `task` (borrowed: must outlive the pipeline's use) and clears the
 * failure counts. Returns 0 or -ENOMEM. An unparsable constraint does not fail: the constraint
 * filter then refuses every node (the orchestrator validates specs, so this is a bad write). */
int filter_pipeline_set_task(filter_pipeline_t *p, const Shoal__Task *task);
/* Like set_task but with only the filters in `mask` (bits 1u << FILTER_x) enabled. */
int filter_pipeline_set_task_only(filter_pipeline_t *p, const Shoal__Task *task, unsigned mask);
void filter_pipeline_clear(filter_pipeline_t *p);

/* Runs the enabled filters in order against the node, stopping at the first that fails; counts
 * that failure when `count` (the explanation counts each node once). Returns the id of the
 * failing filter, or -1 when the node passes. */
int filter_pipeline_check(filter_pipeline_t *p, const nodeinfo_t *ni, bool count);
bool filter_pipeline_passes(filter_pipeline_t *p, const nodeinfo_t *ni);
/* Records a failure of filter `id` found by an earlier check. */
void filter_pipeline_count_failure(filter_pipeline_t *p, int id);

/* The failures counted so far, most failures first (ties in filter order), joined by "; ":
 *   "insufficient resources on 2 nodes; scheduling constraints not satisfied on 1 node".
 * Empty when nothing failed. Returns buf. */
char *filter_pipeline_explain(const filter_pipeline_t *p, char *buf, size_t len);
/* "no suitable node (<explain>)", or "no suitable node" when nothing was counted (no nodes). */
char *filter_pipeline_no_suitable_node(const filter_pipeline_t *p, char *buf, size_t len);
