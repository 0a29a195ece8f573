/* placement — the strategies of shoal-scheduler (SwarmKit's nodeset.go tree(), decision_tree.go,
 * nodeheap.go and scheduleNTasksOnSubtree/OnNodes in scheduler.go, plus binpack and random).
 *
 * Input: the candidate nodes (every nodeinfo with a Node), one task group (tasks of the same
 * service and spec, so the filters answer the same for each of them until a node's load changes)
 * with its pipeline, and an assign() callback that puts the next task on a node and counts it.
 *
 * Build, one pass over the nodes per group:
 *  - spread with preferences: a tree. Each preference level (spread=node.labels.X, or any key the
 *    constraint grammar knows) splits nodes by their value for that key, a missing label being
 *    the value "" (so which nodes carry the label does not change the shape). Every tree node
 *    counts the tasks of this service already on the nodes below it, whether or not those nodes
 *    pass the filters (as SwarmKit does). Nodes that pass the filters sit in their leaf's heap.
 *  - otherwise the root is the only leaf.
 *  Leaves' heaps live in one array (each leaf owns a slice); tree nodes in another; branch lookup
 *  while building goes through one hash keyed by (parent, value). All buffers are kept between
 *  groups and ticks, so a tick allocates only when the cluster grew.
 *
 * Place n tasks under a tree node (SwarmKit's scheduleNTasksOnSubtree, with exact counts): split
 * the tasks so that the branches that still have room end up as even as possible, counting the
 * tasks already there: desired = (tasks in open branches + n left) / open branches, the remainder
 * going one each to the first branches (in value order) that reach the desired count. A branch
 * that takes fewer than asked is full and leaves the split; the rest share what it could not take.
 * E.g. 2 zones x 2 racks and 8 new tasks: 4 per zone, 2 per rack.
 *
 * Leaves:
 *  - spread: a binary min-heap ordered by fewer tasks of this service, then more free memory,
 *    more free CPU, fewer tasks in total, node id. The top takes a task, its key only gets worse,
 *    so it sifts down: equal nodes take tasks round-robin, as SwarmKit's scheduleNTasksOnNodes.
 *  - binpack: a min-heap ordered by less free memory, less free CPU, more tasks in total, node
 *    id. The top takes a task and only gets better, so it keeps taking tasks until it no longer
 *    fits: node A fills before node B is touched, and whole nodes stay free for big tasks.
 *  - random: an unordered array; each task goes to a uniformly drawn slot (splitmix64, seeded).
 *  After each placement the node is checked again (its resources, host ports and replica count
 *  changed); a node that fails leaves the leaf (swap with the last) and the failure is counted
 *  for the "no suitable node (...)" explanation.
 *
 * Invariant: an item's cached key equals its node's current sums whenever the item is compared;
 * only the item just assigned changes, and it is refreshed at once. */
#include "placement.h"

#include <czmq.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "constraint.h"

#define NO_LEAF          SIZE_MAX
#define MAX_PREFERENCES  16
#define BRANCH_KEY_BYTES 1200

typedef struct item {
    nodeinfo_t *ni;
    int64_t service_tasks, total_tasks, free_memory, free_cpus;
} item_t;

typedef struct tnode {
    const char *value; /* branch value (points into a Node object) */
    int64_t tasks;     /* tasks of the service on the nodes below */
    size_t parent;
    size_t first_child, n_children; /* slice of placement.children */
    size_t first_item, n_items;     /* leaves: slice of placement.items */
    bool full;
} tnode_t;

typedef struct pref {
    enum constraint_key key;
    const char *label;
} pref_t;

struct placement {
    item_t *items;
    size_t cap_items;
    size_t *leaf_of; /* per candidate: its leaf, or NO_LEAF when it fails the filters */
    size_t cap_leaf_of;
    tnode_t *tn;
    size_t n_tn, cap_tn;
    size_t *children;
    size_t cap_children;
    size_t *fill; /* scratch: per tree node, next free slot while distributing */
    size_t cap_fill;
    zhashx_t *branches; /* "<parent>:<value>" -> tree node index + 1 */
    uint64_t rng;

    /* the group being placed */
    const placement_group_t *g;
    bool (*less)(const item_t *a, const item_t *b);
    bool stopped;
};

/* ---- strategies by name ---------------------------------------------------------------- */

int placement_strategy_parse(const char *text, placement_strategy_t *ret) {
    if (!text || !*text)
        return -ENOENT;
    if (strcasecmp(text, "spread") == 0)
        *ret = PLACEMENT_SPREAD;
    else if (strcasecmp(text, "binpack") == 0)
        *ret = PLACEMENT_BINPACK;
    else if (strcasecmp(text, "random") == 0)
        *ret = PLACEMENT_RANDOM;
    else
        return -EINVAL;
    return 0;
}

const char *placement_strategy_name(placement_strategy_t strategy) {
    switch (strategy) {
    case PLACEMENT_BINPACK:
        return "binpack";
    case PLACEMENT_RANDOM:
        return "random";
    case PLACEMENT_SPREAD:
        break;
    }
    return "spread";
}

/* ---- life cycle ------------------------------------------------------------------------ */

placement_t *placement_new(void) {
    placement_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->branches = zhashx_new();
    if (!self->branches) {
        free(self);
        return NULL;
    }
    self->rng = 0x5eed5eed5eedULL;
    return self;
}

void placement_destroy(placement_t **self_p) {
    if (!self_p || !*self_p)
        return;
    placement_t *self = *self_p;
    zhashx_destroy(&self->branches);
    free(self->items);
    free(self->leaf_of);
    free(self->tn);
    free(self->children);
    free(self->fill);
    free(self);
    *self_p = NULL;
}

void placement_seed(placement_t *self, uint64_t seed) {
    self->rng = seed;
}

static uint64_t rng_next(placement_t *self) {
    uint64_t z = (self->rng += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* Uniform in [0, n) without modulo bias worth speaking of (Lemire's multiply-shift). */
static size_t rng_below(placement_t *self, size_t n) {
    return (size_t)(((unsigned __int128)rng_next(self) * n) >> 64);
}

static int grow(void **buf, size_t *cap, size_t want, size_t size) {
    if (want <= *cap)
        return 0;
    size_t c = *cap ? *cap : 64;
    while (c < want)
        c *= 2;
    void *p = realloc(*buf, c * size);
    if (!p)
        return -ENOMEM;
    *buf = p;
    *cap = c;
    return 0;
}

/* ---- orderings ------------------------------------------------------------------------- */

static void item_refresh(item_t *it, const char *service_id) {
    it->service_tasks = nodeinfo_service_tasks(it->ni, service_id);
    it->total_tasks = it->ni->active_tasks;
    it->free_memory = nodeinfo_available_memory(it->ni);
    it->free_cpus = nodeinfo_available_cpus(it->ni);
}

static bool spread_less(const item_t *a, const item_t *b) {
    if (a->service_tasks != b->service_tasks)
        return a->service_tasks < b->service_tasks;
    if (a->free_memory != b->free_memory)
        return a->free_memory > b->free_memory;
    if (a->free_cpus != b->free_cpus)
        return a->free_cpus > b->free_cpus;
    if (a->total_tasks != b->total_tasks)
        return a->total_tasks < b->total_tasks;
    return strcmp(a->ni->id, b->ni->id) < 0;
}

static bool binpack_less(const item_t *a, const item_t *b) {
    if (a->free_memory != b->free_memory)
        return a->free_memory < b->free_memory;
    if (a->free_cpus != b->free_cpus)
        return a->free_cpus < b->free_cpus;
    if (a->total_tasks != b->total_tasks)
        return a->total_tasks > b->total_tasks;
    return strcmp(a->ni->id, b->ni->id) < 0;
}

static void sift_down(placement_t *self, item_t *h, size_t n, size_t i) {
    item_t x = h[i];
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, best = i;
        const item_t *bv = &x;
        if (l < n && self->less(&h[l], bv))
            best = l, bv = &h[l];
        if (r < n && self->less(&h[r], bv))
            best = r;
        if (best == i)
            break;
        h[i] = h[best];
        i = best;
    }
    h[i] = x;
}

/* ---- build ----------------------------------------------------------------------------- */

static size_t parse_preferences(const placement_group_t *g, pref_t *out) {
    if (g->strategy != PLACEMENT_SPREAD)
        return 0;
    size_t n = 0;
    for (size_t i = 0; i < g->n_preferences && n < MAX_PREFERENCES; i++) {
        const Shoal__PlacementPreference *p = g->preferences[i];
        const char *d = p ? p->spread_descriptor : NULL;
        if (!d)
            continue;
        if (strncasecmp(d, "spread=", 7) == 0)
            d += 7;
        /* Like SwarmKit, a preference it cannot read is skipped rather than refusing the task. */
        if (constraint_key_parse(d, &out[n].key, &out[n].label) == 0)
            n++;
    }
    return n;
}

static size_t tnode_add(placement_t *self, size_t parent, const char *value) {
    if (grow((void **)&self->tn, &self->cap_tn, self->n_tn + 1, sizeof *self->tn) < 0)
        return NO_LEAF;
    self->tn[self->n_tn] = (tnode_t){.value = value, .parent = parent};
    return self->n_tn++;
}

/* The leaf of node `ni`, creating branches on the way; adds the node's tasks of the service to
 * every level it passes. */
static size_t tree_walk(placement_t *self, const nodeinfo_t *ni, const pref_t *prefs,
                        size_t n_prefs, int64_t service_tasks) {
    size_t cur = 0;
    char key[BRANCH_KEY_BYTES];
    for (size_t l = 0; l < n_prefs; l++) {
        self->tn[cur].tasks += service_tasks;
        const char *v = constraint_node_value(ni->node, prefs[l].key, prefs[l].label);
        /* A value longer than the key buffer shares a branch with others of the same prefix. */
        snprintf(key, sizeof key, "%zx:%s", cur, v);
        size_t next = (size_t)(uintptr_t)zhashx_lookup(self->branches, key);
        if (next == 0) {
            size_t idx = tnode_add(self, cur, v);
            if (idx == NO_LEAF)
                return NO_LEAF;
            zhashx_insert(self->branches, key, (void *)(uintptr_t)(idx + 1));
            next = idx + 1;
        }
        cur = next - 1;
    }
    self->tn[cur].tasks += service_tasks;
    return cur;
}

static int cmp_branch_value(const void *a, const void *b, void *arg) {
    const tnode_t *tn = arg;
    return strcmp(tn[*(const size_t *)a].value, tn[*(const size_t *)b].value);
}

/* Fills tn[].first_child/n_children from the parents, each branch's children in value order. */
static int link_children(placement_t *self) {
    size_t n = self->n_tn;
    if (grow((void **)&self->children, &self->cap_children, n, sizeof *self->children) < 0 ||
        grow((void **)&self->fill, &self->cap_fill, n, sizeof *self->fill) < 0)
        return -ENOMEM;
    for (size_t i = 1; i < n; i++)
        self->tn[self->tn[i].parent].n_children++;
    size_t off = 0;
    for (size_t i = 0; i < n; i++) {
        self->tn[i].first_child = off;
        self->fill[i] = off;
        off += self->tn[i].n_children;
    }
    for (size_t i = 1; i < n; i++)
        self->children[self->fill[self->tn[i].parent]++] = i;
    for (size_t i = 0; i < n; i++)
        if (self->tn[i].n_children > 1)
            qsort_r(self->children + self->tn[i].first_child, self->tn[i].n_children,
                    sizeof(size_t), cmp_branch_value, self->tn);
    return 0;
}

/* One pass: tree, filters, then the leaves' item slices (heapified for the ordered strategies). */
static int build(placement_t *self, nodeinfo_t *const *nodes, size_t n_nodes) {
    const placement_group_t *g = self->g;
    pref_t prefs[MAX_PREFERENCES];
    size_t n_prefs = parse_preferences(g, prefs);
    if (grow((void **)&self->leaf_of, &self->cap_leaf_of, n_nodes + 1, sizeof(size_t)) < 0 ||
        grow((void **)&self->items, &self->cap_items, n_nodes + 1, sizeof(item_t)) < 0)
        return -ENOMEM;
    self->n_tn = 0;
    if (tnode_add(self, NO_LEAF, "") == NO_LEAF)
        return -ENOMEM;
    if (n_prefs)
        zhashx_purge(self->branches);

    for (size_t i = 0; i < n_nodes; i++) {
        const nodeinfo_t *ni = nodes[i];
        size_t leaf = 0;
        if (n_prefs) {
            leaf = tree_walk(self, ni, prefs, n_prefs, nodeinfo_service_tasks(ni, g->service_id));
            if (leaf == NO_LEAF)
                return -ENOMEM;
        }
        self->leaf_of[i] = filter_pipeline_check(g->pipeline, ni, true) < 0 ? leaf : NO_LEAF;
        if (self->leaf_of[i] != NO_LEAF)
            self->tn[leaf].n_items++;
    }
    if (n_prefs) {
        zhashx_purge(self->branches);
        if (link_children(self) < 0)
            return -ENOMEM;
    }

    /* Slices of items per leaf, in tree order. */
    size_t off = 0;
    for (size_t i = 0; i < self->n_tn; i++) {
        self->tn[i].first_item = off;
        off += self->tn[i].n_items;
        self->tn[i].n_items = 0;
    }
    for (size_t i = 0; i < n_nodes; i++) {
        size_t leaf = self->leaf_of[i];
        if (leaf == NO_LEAF)
            continue;
        tnode_t *t = &self->tn[leaf];
        item_t *it = &self->items[t->first_item + t->n_items++];
        it->ni = nodes[i];
        item_refresh(it, g->service_id);
    }
    if (self->less) {
        for (size_t i = 0; i < self->n_tn; i++) {
            tnode_t *t = &self->tn[i];
            for (size_t k = t->n_items / 2; k-- > 0;)
                sift_down(self, self->items + t->first_item, t->n_items, k);
        }
    }
    return 0;
}

/* ---- place ----------------------------------------------------------------------------- */

/* After `ni` took a task: keeps it at slot k (key refreshed) or drops it when it no longer fits.
 * Returns false when it was dropped. */
static bool recheck(placement_t *self, tnode_t *leaf, size_t k) {
    item_t *h = self->items + leaf->first_item;
    int failed = filter_pipeline_check(self->g->pipeline, h[k].ni, false);
    if (failed >= 0) {
        filter_pipeline_count_failure(self->g->pipeline, failed);
        h[k] = h[--leaf->n_items];
        return false;
    }
    item_refresh(&h[k], self->g->service_id);
    return true;
}

static size_t place_leaf(placement_t *self, size_t idx, size_t n) {
    tnode_t *leaf = &self->tn[idx];
    item_t *h = self->items + leaf->first_item;
    size_t got = 0;
    while (got < n && leaf->n_items > 0 && !self->stopped) {
        size_t k = self->less ? 0 : rng_below(self, leaf->n_items);
        if (self->g->assign(self->g->arg, h[k].ni) < 0) {
            self->stopped = true;
            break;
        }
        got++;
        recheck(self, leaf, k);
        if (self->less && leaf->n_items > 0)
            sift_down(self, h, leaf->n_items, 0);
    }
    return got;
}

static size_t place_subtree(placement_t *self, size_t idx, size_t n) {
    tnode_t *t = &self->tn[idx];
    if (t->n_children == 0) {
        size_t got = place_leaf(self, idx, n);
        self->tn[idx].tasks += (int64_t)got;
        return got;
    }
    size_t scheduled = 0, n_full = 0;
    int64_t open_tasks = t->tasks; /* tasks in the branches that still have room */
    while (scheduled < n && n_full < t->n_children && !self->stopped) {
        size_t open = t->n_children - n_full;
        int64_t total = open_tasks + (int64_t)(n - scheduled);
        int64_t desired = total / (int64_t)open;
        int64_t remainder = total % (int64_t)open;
        size_t before = scheduled, full_before = n_full;
        for (size_t c = 0; c < t->n_children && scheduled < n && !self->stopped; c++) {
            tnode_t *child = &self->tn[self->children[t->first_child + c]];
            if (child->full)
                continue;
            if (child->tasks > desired || (child->tasks == desired && remainder == 0))
                continue;
            size_t want = (size_t)(desired - child->tasks) + (remainder > 0 ? 1 : 0);
            if (want > n - scheduled)
                want = n - scheduled;
            size_t got = place_subtree(self, self->children[t->first_child + c], want);
            scheduled += got;
            open_tasks += (int64_t)got;
            if (got < want) {
                child->full = true;
                n_full++;
                open_tasks -= child->tasks;
            } else if (remainder > 0) {
                remainder--;
            }
        }
        if (scheduled == before && n_full == full_before)
            break; /* cannot happen (some branch is always below the even share); never spin */
    }
    t->tasks += (int64_t)scheduled;
    return scheduled;
}

size_t placement_run(placement_t *self, nodeinfo_t *const *nodes, size_t n_nodes,
                     const placement_group_t *g) {
    self->g = g;
    self->stopped = false;
    self->less = g->strategy == PLACEMENT_BINPACK  ? binpack_less
                 : g->strategy == PLACEMENT_RANDOM ? NULL
                                                   : spread_less;
    if (g->n_tasks == 0 || build(self, nodes, n_nodes) < 0)
        return 0;
    return place_subtree(self, 0, g->n_tasks);
}
