/* filter — which nodes can take a task, and why not (SwarmKit's filter.go + pipeline.go).
 *
 * Each filter is a row of `filter_table`: applies(task) says whether it has anything to check
 * for this task (a task without reservations skips the resource filter), check(node, task) says
 * yes or no, explain(count) words a failure for the task's status.err. The order is SwarmKit's,
 * cheap and common first: ready, resources, constraints, platform, host-mode published ports,
 * max replicas per node (SwarmKit's plugin and volume filters have no counterpart in shoal yet).
 *
 * The pipeline runs the enabled filters for one task at a time and stops at the first failure,
 * counting it per filter so that explain() reports, for a task placed nowhere, why each node
 * refused it, most common reason first. The scheduler sets up one pipeline per task group and
 * reuses it for every node, so parsing (constraints) happens once per group. */
#include "filter.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

/* ---- ready: the node is up and takes new tasks ------------------------------------------- */

static bool ready_applies(const filter_task_t *ft) {
    return true;
}

static bool ready_check(const nodeinfo_t *ni, const filter_task_t *ft) {
    const Shoal__Node *n = ni->node;
    if (!n || !n->status || n->status->state != SHOAL__NODE_STATUS__STATE__READY)
        return false;
    /* PAUSE keeps running tasks but takes no new ones; DRAIN moves them away. */
    return !n->spec || n->spec->availability == SHOAL__NODE_SPEC__AVAILABILITY__ACTIVE;
}

static void plural(char *buf, size_t len, int nodes, const char *what_before,
                   const char *what_after) {
    snprintf(buf, len, "%s%d node%s%s", what_before, nodes, nodes == 1 ? "" : "s", what_after);
}

static void ready_explain(char *buf, size_t len, int nodes) {
    plural(buf, len, nodes, "", " not available for new tasks");
}

/* ---- resources: CPU and memory reservations fit what is left ------------------------------ */

static bool resources_applies(const filter_task_t *ft) {
    return ft->cpus > 0 || ft->memory > 0;
}

static bool resources_check(const nodeinfo_t *ni, const filter_task_t *ft) {
    return ft->cpus <= nodeinfo_available_cpus(ni) && ft->memory <= nodeinfo_available_memory(ni);
}

static void resources_explain(char *buf, size_t len, int nodes) {
    plural(buf, len, nodes, "insufficient resources on ", "");
}

/* ---- constraints: spec.placement.constraints ---------------------------------------------- */

static bool constraints_applies(const filter_task_t *ft) {
    return ft->constraints_invalid || (ft->constraints && ft->constraints->count > 0);
}

static bool constraints_check(const nodeinfo_t *ni, const filter_task_t *ft) {
    if (ft->constraints_invalid)
        return false;
    return constraint_list_match(ft->constraints, ni->node);
}

static void constraints_explain(char *buf, size_t len, int nodes) {
    plural(buf, len, nodes, "scheduling constraints not satisfied on ", "");
}

/* ---- platform: spec.placement.platforms, when given --------------------------------------- */

static const Shoal__Placement *placement_of(const filter_task_t *ft) {
    return ft->task && ft->task->spec ? ft->task->spec->placement : NULL;
}

static bool platform_applies(const filter_task_t *ft) {
    const Shoal__Placement *p = placement_of(ft);
    return p && p->n_platforms > 0;
}

static bool platform_check(const nodeinfo_t *ni, const filter_task_t *ft) {
    const Shoal__Placement *p = placement_of(ft);
    const Shoal__NodeDescription *d = ni->node ? ni->node->description : NULL;
    if (!d || !d->platform)
        return false;
    const char *node_arch = constraint_normal_arch(d->platform->architecture);
    const char *node_os = d->platform->os ? d->platform->os : "";
    for (size_t i = 0; i < p->n_platforms; i++) {
        const Shoal__Platform *want = p->platforms[i];
        if (!want)
            continue;
        const char *arch = constraint_normal_arch(want->architecture);
        const char *os = want->os ? want->os : "";
        /* An empty field in the spec accepts any value. */
        if ((!arch[0] || strcmp(arch, node_arch) == 0) && (!os[0] || strcmp(os, node_os) == 0))
            return true;
    }
    return false;
}

static void platform_explain(char *buf, size_t len, int nodes) {
    plural(buf, len, nodes, "unsupported platform on ", "");
}

/* ---- host ports: a port published in host mode binds on the node, once ------------------- */

static bool host_ports_applies(const filter_task_t *ft) {
    return ft->n_host_ports > 0;
}

static bool host_ports_check(const nodeinfo_t *ni, const filter_task_t *ft) {
    if (ni->n_host_ports == 0)
        return true;
    for (size_t i = 0; i < ft->n_host_ports; i++)
        if (nodeinfo_host_port_used(ni, ft->host_ports[i]))
            return false;
    return true;
}

static void host_ports_explain(char *buf, size_t len, int nodes) {
    plural(buf, len, nodes, "host-mode port already in use on ", "");
}

/* ---- max replicas: spec.placement.max_replicas per node ------------------------------------ */

static bool max_replicas_applies(const filter_task_t *ft) {
    const Shoal__Placement *p = placement_of(ft);
    return p && p->max_replicas > 0;
}

static bool max_replicas_check(const nodeinfo_t *ni, const filter_task_t *ft) {
    int64_t have = nodeinfo_service_tasks(ni, ft->task->service_id);
    return (uint64_t)have < placement_of(ft)->max_replicas;
}

static void max_replicas_explain(char *buf, size_t len, int nodes) {
    /* SwarmKit's wording, which does not count nodes. */
    snprintf(buf, len, "max replicas per node limit exceed");
}

const filter_t filter_table[FILTER_COUNT] = {
    [FILTER_READY] = {"ready", ready_applies, ready_check, ready_explain},
    [FILTER_RESOURCES] = {"resources", resources_applies, resources_check, resources_explain},
    [FILTER_CONSTRAINTS] = {"constraints", constraints_applies, constraints_check,
                            constraints_explain},
    [FILTER_PLATFORM] = {"platform", platform_applies, platform_check, platform_explain},
    [FILTER_HOST_PORTS] = {"host-ports", host_ports_applies, host_ports_check, host_ports_explain},
    [FILTER_MAX_REPLICAS] = {"max-replicas", max_replicas_applies, max_replicas_check,
                             max_replicas_explain},
};

/* ---- pipeline ------------------------------------------------------------------------------ */

int filter_pipeline_set_task_only(filter_pipeline_t *p, const Shoal__Task *task, unsigned mask) {
    filter_pipeline_clear(p);
    p->ft.task = task;
    p->ft.cpus = nodeinfo_task_cpus(task);
    p->ft.memory = nodeinfo_task_memory(task);
    size_t nports = nodeinfo_task_host_ports(task, p->ft.host_ports, FILTER_HOST_PORTS_MAX);
    p->ft.n_host_ports = nports < FILTER_HOST_PORTS_MAX ? nports : FILTER_HOST_PORTS_MAX;
    const Shoal__Placement *pl = task && task->spec ? task->spec->placement : NULL;
    if (pl && pl->n_constraints > 0 && (mask & (1u << FILTER_CONSTRAINTS))) {
        int r =
            constraint_list_parse(pl->constraints, pl->n_constraints, &p->ft.constraints, NULL, 0);
        if (r == -ENOMEM)
            return r;
        p->ft.constraints_invalid = r < 0;
    }
    for (int i = 0; i < FILTER_COUNT; i++)
        p->enabled[i] = (mask & (1u << i)) && filter_table[i].applies(&p->ft);
    return 0;
}

int filter_pipeline_set_task(filter_pipeline_t *p, const Shoal__Task *task) {
    return filter_pipeline_set_task_only(p, task, (1u << FILTER_COUNT) - 1);
}

void filter_pipeline_clear(filter_pipeline_t *p) {
    constraint_list_destroy(&p->ft.constraints);
    memset(p, 0, sizeof *p);
}

int filter_pipeline_check(filter_pipeline_t *p, const nodeinfo_t *ni, bool count) {
    for (int i = 0; i < FILTER_COUNT; i++) {
        if (p->enabled[i] && !filter_table[i].check(ni, &p->ft)) {
            if (count)
                p->failures[i]++;
            return i;
        }
    }
    return -1;
}

bool filter_pipeline_passes(filter_pipeline_t *p, const nodeinfo_t *ni) {
    return filter_pipeline_check(p, ni, false) < 0;
}

void filter_pipeline_count_failure(filter_pipeline_t *p, int id) {
    if (id >= 0 && id < FILTER_COUNT)
        p->failures[id]++;
}

char *filter_pipeline_explain(const filter_pipeline_t *p, char *buf, size_t len) {
    int order[FILTER_COUNT];
    for (int i = 0; i < FILTER_COUNT; i++)
        order[i] = i;
    /* Insertion sort, stable: most failures first, filter order among equals. */
    for (int i = 1; i < FILTER_COUNT; i++) {
        int x = order[i], j = i;
        while (j > 0 && p->failures[order[j - 1]] < p->failures[x]) {
            order[j] = order[j - 1];
            j--;
        }
        order[j] = x;
    }
    size_t off = 0;
    if (len)
        buf[0] = '\0';
    for (int k = 0; k < FILTER_COUNT; k++) {
        int i = order[k];
        if (p->failures[i] == 0)
            break;
        char part[128];
        filter_table[i].explain(part, sizeof part, p->failures[i]);
        int n = snprintf(buf + off, off < len ? len - off : 0, "%s%s", off ? "; " : "", part);
        if (n < 0 || off + (size_t)n >= len)
            break;
        off += (size_t)n;
    }
    return buf;
}

char *filter_pipeline_no_suitable_node(const filter_pipeline_t *p, char *buf, size_t len) {
    char why[512];
    filter_pipeline_explain(p, why, sizeof why);
    if (why[0])
        snprintf(buf, len, "no suitable node (%s)", why);
    else
        snprintf(buf, len, "no suitable node");
    return buf;
}
