/* placement — where the tasks of one group (same service, same spec) go among the nodes that pass
 * the filters: the strategies spread (with SwarmKit's tree of placement preferences), binpack and
 * random, over structures built once per group. See placement.c. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "filter.h"
#include "nodeinfo.h"

typedef enum placement_strategy {
    PLACEMENT_SPREAD,  /* preferences, then fewest tasks of the service, then most free resources */
    PLACEMENT_BINPACK, /* least free resources that still fit, then most tasks */
    PLACEMENT_RANDOM,  /* uniform among the nodes that fit */
} placement_strategy_t;

/* "spread" | "binpack" | "random" (any case) -> 0; "" or NULL -> -ENOENT (not chosen: use the
 * default); anything else -> -EINVAL. */
int placement_strategy_parse(const char *text, placement_strategy_t *ret);
const char *placement_strategy_name(placement_strategy_t strategy);

typedef struct placement placement_t;

placement_t *placement_new(void);
void placement_destroy(placement_t **self_p);
/* Seeds the random strategy (splitmix64): the same seed and inputs give the same placements. */
void placement_seed(placement_t *self, uint64_t seed);

/* Puts the group's next task on `ni` and counts it there, so the node's sums (tasks, resources,
 * host ports) include it before the node is checked again. 0, or < 0 to stop the group. */
typedef int(placement_assign_fn)(void *arg, nodeinfo_t *ni);

typedef struct placement_group {
    filter_pipeline_t *pipeline; /* set up for the group's task; failures are counted into it */
    const char *service_id;
    placement_strategy_t strategy;
    /* spread=... preferences, outermost first; only the spread strategy uses them */
    Shoal__PlacementPreference *const *preferences;
    size_t n_preferences;
    size_t n_tasks;
    placement_assign_fn *assign;
    void *arg;
} placement_group_t;

/* Places up to g->n_tasks tasks over `nodes` (candidates: every nodeinfo with a Node) and returns
 * how many went somewhere; the rest fit nowhere (the pipeline's counts say why) or assign() asked
 * to stop. Cost: one pass over the nodes (filters, tree and heaps), then O(log n) per task for
 * spread and binpack, O(1) for random. */
size_t placement_run(placement_t *self, nodeinfo_t *const *nodes, size_t n_nodes,
                     const placement_group_t *g);
