/* sim — `shoal-agent --sim-nodes N`: N simulated nodes in one process, for tests and benchmarks
 * of thousands of nodes on one machine (DESIGN §1, issue 5 item 6).
 *
 * Each node is a real dispatcher client — its own registration, node id (kept in
 * <state>/agent/sim/<name>), session, heartbeats, assignment long-poll and status reports — and
 * runs its tasks through the agent's own worker and controller over the sim executor
 * (sim_executor.c), so only the containers are fake. Node names are <prefix>-<i> (i from 1,
 * zero-padded to the width of N), which is also the hostname they report.
 *
 * Nodes can be stopped and started (agent.SimNodeStop / agent.SimNodeStart): a stopped node
 * says nothing at all (no heartbeats, polls or reports) while its tasks keep "running", which
 * is what a dispatcher sees of a dead or partitioned node. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SIM_NODES_MAX         100000
#define SIM_LABELS_MAX        16
#define SIM_SPREADS_MAX       8
#define SIM_SPREAD_VALUES_MAX 16
#define SIM_LABEL_KEY_MAX     64
#define SIM_LABEL_VALUE_MAX   64
#define SIM_NAME_MAX          48

typedef struct sim_label {
    char key[SIM_LABEL_KEY_MAX];
    char value[SIM_LABEL_VALUE_MAX];
} sim_label_t;

/* Label `key` takes values[i % nvalues] on the node of index i. */
typedef struct sim_spread {
    char key[SIM_LABEL_KEY_MAX];
    char values[SIM_SPREAD_VALUES_MAX][SIM_LABEL_VALUE_MAX];
    int nvalues;
} sim_spread_t;

typedef struct sim_opts {
    int nodes;       /* 0: not a sim agent */
    char prefix[24]; /* default "sim" */
    int start_latency_ms;
    double failure_rate;  /* 0..1 */
    int64_t nano_cpus;    /* reported resources of every node (default 4 CPUs) */
    int64_t memory_bytes; /* default 8 GiB */
    sim_label_t labels[SIM_LABELS_MAX];
    int nlabels;
    sim_spread_t spreads[SIM_SPREADS_MAX];
    int nspreads;
    uint64_t seed; /* failures; 0 = from the clock */
} sim_opts_t;

/* Defaults for everything but `nodes`. */
void sim_opts_init(sim_opts_t *o);

/* ---- flag parsers (pure; 0 or -EINVAL with one line in err) -------------------------------- */

/* "K=V,K2=V2" appended to o->labels (all of them, or none on error). */
int sim_parse_labels(sim_opts_t *o, const char *spec, char *err, size_t errlen);
/* "K=v1|v2|v3" appended to o->spreads. */
int sim_parse_spread(sim_opts_t *o, const char *spec, char *err, size_t errlen);
/* Bytes with an optional k|m|g|t suffix (powers of 1024): "8g", "512m", "1073741824". */
int sim_parse_size(const char *s, int64_t *ret);
/* CPUs as a decimal ("4", "0.5") into nano CPUs. */
int sim_parse_cpus(const char *s, int64_t *ret_nano);
/* A probability in [0, 1]. */
int sim_parse_rate(const char *s, double *ret);

/* The name of node `index` (0-based): <prefix>-<index+1>, zero-padded to the width of o->nodes. */
void sim_node_name(const sim_opts_t *o, int index, char *buf, size_t len);
/* The labels node `index` reports: o->labels, then one per spread, as pointers into `o` in
 * keys[i] / values[i]; returns how many (at most max). */
size_t sim_node_labels(const sim_opts_t *o, int index, const char **keys, const char **values,
                       size_t max);

/* ---- the simulated nodes ------------------------------------------------------------------ */

struct daemon;
typedef struct sim sim_t;

/* Wires N nodes onto d->loop and d->bus (agent.SimNodeStop, agent.SimNodeStart, agent.SimNodes,
 * bus.Health, bus.Stats). dispatcher_endpoint and addr as the agent's. NULL (with a line on
 * stderr) on failure. */
sim_t *sim_new(struct daemon *d, const sim_opts_t *opts, const char *dispatcher_endpoint,
               const char *addr);
/* After daemon_run(). */
void sim_destroy(sim_t **self_p);

/* Stops / starts node `name`: -ENOENT when there is none. */
int sim_node_stop(sim_t *self, const char *name);
int sim_node_start(sim_t *self, const char *name);
/* How many nodes hold a dispatcher session now. */
size_t sim_registered(const sim_t *self);
