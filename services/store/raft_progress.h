/* raft_progress — what a leader knows of one member's log: match and next index, and the flow
 * control state (probe, replicate with a window of in-flight appends, snapshot). */
#pragma once
#include "raft.h"

typedef enum raft_progress_state {
    RAFT_PROGRESS_PROBE = 0,     /* one append at a time until the follower's log is found */
    RAFT_PROGRESS_REPLICATE = 1, /* appends pipelined, at most max_inflight outstanding */
    RAFT_PROGRESS_SNAPSHOT = 2,  /* an InstallSnapshot is outstanding */
} raft_progress_state_t;

typedef struct raft_progress {
    raft_id_t id;
    bool voter;
    raft_progress_state_t state;
    raft_index_t match, next;
    bool probe_sent;    /* probe: an append is outstanding, wait for its answer */
    bool recent_active; /* heard from since the last check-quorum round */
    raft_index_t pending_snapshot;
    unsigned snapshot_elapsed; /* ticks since the snapshot was sent */
    uint64_t read_ack;         /* highest read sequence number acknowledged this term */
    raft_index_t commit_seen;  /* the follower's commit index, from heartbeat results */
    raft_index_t *inflight;    /* ring of the last index of each outstanding append */
    unsigned in_start, in_count, in_cap;
} raft_progress_t;

void raft_progress_init(raft_progress_t *p, raft_id_t id, bool voter, raft_index_t next,
                        unsigned max_inflight);
void raft_progress_free(raft_progress_t *p);
void raft_progress_become_probe(raft_progress_t *p);
void raft_progress_become_replicate(raft_progress_t *p);
void raft_progress_become_snapshot(raft_progress_t *p, raft_index_t snapshot_index);
/* A successful append answer up to index: true when match moved. */
bool raft_progress_update(raft_progress_t *p, raft_index_t index);
/* A rejected append at prev index `rejected`; hint = the leader's guess of the last matching
 * index. False when the rejection is stale (answers an older append). */
bool raft_progress_decrease(raft_progress_t *p, raft_index_t rejected, raft_index_t hint);
/* True when no append may be sent now (probe outstanding, window full, snapshot). */
bool raft_progress_paused(const raft_progress_t *p);
/* Records an append of entries up to `last` in replicate state. */
void raft_progress_sent(raft_progress_t *p, raft_index_t last);
bool raft_progress_inflight_full(const raft_progress_t *p);
/* Frees one slot (a heartbeat answer shows the follower alive while the window is full). */
void raft_progress_inflight_free_first(raft_progress_t *p);
const char *raft_progress_state_name(raft_progress_state_t s);
