/* sim — shoal's deterministic Raft simulator (tests/sim): whole clusters of services/store/raft
 * members in one process, driven from a seed. See sim_main.c for the overview. */
#pragma once
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "../../services/store/raft.h"
#include "arena.h"

#define SIM_MAX_NODES  8 /* ids 1..7 (slot 0 unused) */
#define SIM_TRACE_RING 400

/* ---- deterministic randomness (splitmix64) ---- */
typedef struct sim_rng {
    uint64_t s;
} sim_rng_t;

static inline uint64_t sim_rand(sim_rng_t *g) {
    uint64_t z = (g->s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}
/* Uniform in [0, n). */
static inline uint64_t sim_below(sim_rng_t *g, uint64_t n) {
    return n ? sim_rand(g) % n : 0;
}
/* Uniform in [lo, hi]. */
static inline uint64_t sim_between(sim_rng_t *g, uint64_t lo, uint64_t hi) {
    return lo + sim_below(g, hi - lo + 1);
}
/* True with probability ppm / 1,000,000. */
static inline bool sim_chance(sim_rng_t *g, uint32_t ppm) {
    return sim_below(g, 1000000) < ppm;
}

static inline uint64_t sim_mix(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return x;
}

/* ---- logs as the simulator mirrors them ---- */

/* An entry with its prefix hash: P(i) = H(P(i-1), index, term, type, data). Two logs with the
 * same P at an index are identical up to there, which turns Log Matching into one comparison. */
typedef struct sim_entry {
    uint64_t index, term, prefix;
    raft_entry_type_t type;
    size_t len;
    uint8_t *data;
} sim_entry_t;

typedef struct sim_log {
    sim_entry_t *e;
    size_t n, cap;
    uint64_t offset, offset_term, offset_prefix; /* anchor before e[0] */
} sim_log_t;

/* The replicated state machine: the prefix hash of everything applied. */
typedef struct sim_sm {
    uint64_t index, hash;
} sim_sm_t;

typedef struct sim_snapshot {
    bool has;
    raft_snapshot_meta_t meta;
    sim_sm_t state;
} sim_snapshot_t;

enum { SIM_WRITE_ENTRIES, SIM_WRITE_SNAPSHOT };

typedef struct sim_write {
    int kind;
    uint64_t first_index;
    sim_entry_t *entries;
    size_t n;
    sim_snapshot_t snap;
    struct sim_write *next;
} sim_write_t;

typedef struct sim_proposal {
    uint64_t index, term, op;
} sim_proposal_t;

typedef struct sim_read {
    uint64_t ctx;
    uint64_t required; /* highest acknowledged write index when the read started */
    uint64_t index;    /* read index from the core (0: not yet) */
} sim_read_t;

typedef struct sim_node {
    raft_id_t id;
    bool exists, up, founder, removing, removed;
    bool stop; /* removed by a committed configuration: shut down after this step */
    uint32_t incarnation;
    raft_t *r;
    sim_rng_t rng; /* the core's injected randomness */
    unsigned tick_ms;
    /* durable state */
    raft_hard_state_t hs;
    sim_snapshot_t snap;
    sim_log_t disk;
    sim_write_t *wq_head, *wq_tail; /* writes in flight, completed in order */
    uint64_t wq_last_done;
    /* volatile */
    sim_log_t view; /* the log as the core holds it */
    sim_sm_t sm;
    sim_snapshot_t snap_latest; /* the snapshot an InstallSnapshot of ours names */
    uint64_t commit_checked;
    raft_role_t role;
    raft_term_t term;
    sim_proposal_t *props;
    size_t n_props, cap_props;
    sim_read_t *reads;
    size_t n_reads, cap_reads;
} sim_node_t;

enum sim_event_type {
    SIM_EV_TICK = 1,
    SIM_EV_DELIVER,
    SIM_EV_DISK,
    SIM_EV_CLIENT,
    SIM_EV_FAULT,
    SIM_EV_RESTART,
    SIM_EV_HEAL,
    SIM_EV_CRASH,
};

typedef struct sim_event {
    uint64_t time, seq;
    int type;
    int node;
    uint32_t incarnation;
    uint8_t *payload; /* DELIVER: encoded message */
    size_t len;
    int from;
} sim_event_t;

typedef struct sim_params {
    int founders;              /* 3 or 5 */
    bool membership;           /* add / promote / remove during the run */
    bool churn;                /* short-lived leaders: crash new leaders soon after election */
    uint32_t leader_crash_ppm; /* churn: chance a new leader is crashed within a few ms */
    bool pre_vote, check_quorum;
    unsigned election_min, election_max, heartbeat;
    unsigned max_inflight, max_entries, max_bytes;
    uint64_t snapshot_threshold, snapshot_trailing;
    uint32_t loss_ppm, dup_ppm, spike_ppm; /* per message */
    unsigned delay_max_ms, spike_ms;
    unsigned disk_max_ms;
    unsigned client_gap_ms, fault_gap_ms;
} sim_params_t;

typedef struct sim_stats {
    uint64_t steps, messages, dropped, delivered, writes_acked, reads_served, reads_dropped,
        elections, snapshots_installed, crashes, transfers, conf_changes;
} sim_stats_t;

typedef struct sim {
    uint64_t seed;
    sim_rng_t rng;
    sim_params_t p;
    uint64_t now, step, max_steps;
    bool converging;
    uint64_t converge_deadline;
    sim_node_t nodes[SIM_MAX_NODES];
    int n_nodes; /* ids 1..n_nodes exist */
    sim_event_t *heap;
    size_t n_heap, cap_heap;
    uint64_t next_seq;
    bool blocked[SIM_MAX_NODES][SIM_MAX_NODES]; /* blocked[from][to] */
    arena_t *arena;
    uint64_t next_op, next_ctx;
    raft_conf_t conf_latest; /* highest-index configuration any member applied (committed) */
    uint64_t conf_latest_index;
    /* checker state */
    struct sim_terms {
        uint64_t term, prefix;
    } * *seen; /* seen[index]: (term, prefix) pairs of every entry ever in a log */
    uint32_t *n_seen;
    size_t cap_seen;
    uint64_t *committed_prefix, *commit_term, *ack_term;
    size_t cap_committed;
    uint64_t committed_upto, acked_max;
    raft_id_t *leader_of_term;
    size_t cap_terms;
    /* scripted runs (sim_script.c): no ticks, clients or faults; traces go to `capture` */
    bool scripted;
    FILE *capture;
    /* tracing */
    bool trace_print; /* print every line (--trace) */
    bool trace_ring;  /* keep the last lines (replay after a violation) */
    char *ring[SIM_TRACE_RING];
    size_t ring_next, ring_n;
    /* outcome */
    bool failed;
    char violation[512];
    uint64_t violation_step;
    sim_stats_t stats;
} sim_t;

/* sim_cluster.c */
void sim_init(sim_t *s, uint64_t seed, uint64_t max_steps);
void sim_free(sim_t *s);
/* A scripted world: the given parameters, founders started, nothing scheduled. */
void sim_init_scripted(sim_t *s, const sim_params_t *p);
/* Runs the seed to the end (or the first violation). */
void sim_run(sim_t *s);
/* Runs queued events (deliveries, disk writes) until none is left; returns how many. */
uint64_t sim_drain(sim_t *s);
/* Runs the next queued event; false when none is left. */
bool sim_step_one(sim_t *s);
/* Loses every message in flight; returns how many. */
uint64_t sim_drop_messages(sim_t *s);
void sim_push(sim_t *s, uint64_t at, int type, int node, uint32_t incarnation);
/* Runs one event on a node's core and carries out its update like a host would. */
int sim_node_step(sim_t *s, sim_node_t *n, const raft_event_t *ev);
void sim_node_create(sim_t *s, int id, bool founder);
void sim_node_crash(sim_t *s, sim_node_t *n);
void sim_node_restart(sim_t *s, sim_node_t *n);
uint64_t sim_log_prefix_at(const sim_log_t *l, uint64_t index, bool *ok);
uint64_t sim_log_last(const sim_log_t *l);

/* sim_workload.c */
void sim_client(sim_t *s);
void sim_fault(sim_t *s);
void sim_heal(sim_t *s);
/* Called for every committed configuration entry a node applies. */
void sim_conf_applied(sim_t *s, sim_node_t *n, const raft_conf_t *conf, uint64_t index);
bool sim_converged(sim_t *s);
/* Shuts down members whose removal committed (outside of any raft_step). */
void sim_reap(sim_t *s);
/* First op id of the PROPOSE being stepped: the host maps the proposed indexes to ops. */
extern uint64_t sim_proposing_op;

/* sim_check.c */
void sim_check_init(sim_t *s);
void sim_check_free(sim_t *s);
/* An entry enters node n's log (Log Matching). */
void sim_check_entry(sim_t *s, sim_node_t *n, const sim_entry_t *e);
/* Entries from `from` on are about to leave node n's log. */
void sim_check_truncate(sim_t *s, sim_node_t *n, uint64_t from);
/* After every step of node n: election safety, commitment, leader completeness. */
void sim_check_node(sim_t *s, sim_node_t *n);
/* n applies (or loads) state at index: state machine safety. */
void sim_check_apply(sim_t *s, sim_node_t *n, uint64_t index, uint64_t hash);
void sim_check_ack(sim_t *s, sim_node_t *n, uint64_t index, uint64_t term);
/* A read served by n at its current state. */
void sim_check_read(sim_t *s, sim_node_t *n, const sim_read_t *rd);

/* sim_script.c: runs every .txt file of dir; returns the number of failed files. */
int sim_script_run_dir(const char *dir, bool rewrite, int *ret_files);

/* sim_main.c */
void sim_trace(sim_t *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void sim_violation(sim_t *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
