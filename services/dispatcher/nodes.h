/* nodes — the dispatcher's heartbeat table: which nodes exist, which agent session each one has
 * here, and when each one goes DOWN. No I/O and no clock: every call takes the time (monotonic
 * ms) and the caller writes whatever store change a call reports. See nodes.c. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define NODES_DEFAULT_PERIOD_MS  500
#define NODES_DEFAULT_MULTIPLIER 3
#define NODES_ID_MAX             64 /* longest node id accepted from an agent */
#define NODES_SESSION_SIZE       26 /* 25 characters + NUL, like id_random() */

/* Liveness as the table sees it; the values are shoal.NodeStatus.State's. */
enum nodes_state {
    NODES_STATE_UNKNOWN = 0, /* known from the store, no session here yet: on grace */
    NODES_STATE_DOWN = 1,
    NODES_STATE_READY = 2, /* has a session here and heartbeats in time */
};

typedef struct nodes nodes_t;

/* Writes a fresh node id (at least 26 bytes) into buf: id_random() in the daemon. */
typedef void(nodes_id_fn)(char *buf);
/* Visits one node id; returns 0 when the caller did what the visit asked (see each use). */
typedef int(nodes_visit_fn)(void *ctx, const char *node_id);

/* `cluster_key` is the secret every registration must present. `seed` drives the jitter and the
 * session ids, so tests are deterministic. */
nodes_t *nodes_new(const char *cluster_key, nodes_id_fn *new_id, uint64_t seed);
void nodes_destroy(nodes_t **self_p);

/* The base heartbeat period and the grace multiplier (0 keeps the current value). Existing
 * deadlines are not moved; each node picks the new values up at its next heartbeat. */
void nodes_set_period(nodes_t *self, int64_t period_ms, unsigned multiplier);
int64_t nodes_period(const nodes_t *self);
unsigned nodes_multiplier(const nodes_t *self);

typedef struct nodes_registration {
    char node_id[NODES_ID_MAX + 1];
    char session_id[NODES_SESSION_SIZE];
    int64_t period_ms; /* jittered, what the agent should use */
    bool is_new;       /* the node was unknown: a new id was made for it */
} nodes_registration_t;

/* An agent registers. A known `node_id` keeps its id; an empty or unknown one gets a new id.
 * Every registration starts a new session (the previous one stops working) and makes the node
 * READY. -EACCES when `cluster_key` is not the cluster's (compared in constant time). */
int nodes_register(nodes_t *self, const char *cluster_key, const char *node_id, int64_t now_ms,
                   nodes_registration_t *ret);

/* A heartbeat: pushes the node's deadline to now + period × multiplier with a newly jittered
 * period, returned in ret_period_ms. -ESTALE when the node is unknown here, DOWN, or
 * `session_id` is not its current session: the agent must register again. */
int nodes_heartbeat(nodes_t *self, const char *node_id, const char *session_id, int64_t now_ms,
                    int64_t *ret_period_ms);

/* 0 when `session_id` is `node_id`'s current session, else -ESTALE. */
int nodes_check_session(const nodes_t *self, const char *node_id, const char *session_id);

/* What the store says about a node (list or watch), written at `revision`. Adds unknown nodes;
 * a DOWN written by someone else ends the local session. Events older than this table's own
 * last write for the node (nodes_note_written) are ignored. */
void nodes_observe(nodes_t *self, const char *node_id, int store_state, int64_t revision,
                   int64_t now_ms);
/* The node's object was deleted from the store. */
void nodes_forget(nodes_t *self, const char *node_id);
/* The caller wrote the node's object at `revision`. */
void nodes_note_written(nodes_t *self, const char *node_id, int64_t revision);

/* SwarmKit's markNodesUnknown, done when this dispatcher starts being the one that marks nodes
 * DOWN: every node without a session here that is not DOWN becomes UNKNOWN with a double grace
 * (now + 2 × period × multiplier). `fn` (may be NULL) is called for each; returns how many. */
size_t nodes_mark_unknown(nodes_t *self, int64_t now_ms, nodes_visit_fn *fn, void *ctx);

/* Every node whose deadline passed becomes DOWN and loses its session; `fn` is called for it
 * and must return 0 once the DOWN is written. A node whose write failed is visited again at the
 * next call. Returns how many were visited. */
size_t nodes_expire(nodes_t *self, int64_t now_ms, nodes_visit_fn *fn, void *ctx);

/* The node's state here, or -ENOENT. */
int nodes_state(const nodes_t *self, const char *node_id);
bool nodes_known(const nodes_t *self, const char *node_id);

typedef struct nodes_counts {
    size_t ready, unknown, down, sessions;
} nodes_counts_t;
void nodes_counts(const nodes_t *self, nodes_counts_t *ret);

/* Compares two NUL-terminated secrets in time that depends only on their lengths. */
bool nodes_key_equal(const char *a, const char *b);
