/* raft_internal — the state of one Raft member and the functions the raft_*.c modules call on
 * each other. Not for the host: it uses raft.h only. */
#pragma once
#include "raft.h"
#include "raft_log.h"
#include "raft_progress.h"

typedef struct raft_pending_read {
    uint64_t ctx;
    raft_index_t index; /* commit index when the read arrived (§6.4 step 1) */
    uint64_t seq;       /* heartbeat round that must be acknowledged by a quorum */
} raft_pending_read_t;

typedef struct raft_vote {
    raft_id_t id;
    int granted; /* 1 granted, 0 rejected, -1 not yet answered */
} raft_vote_t;

struct raft {
    raft_config_t cfg; /* defaults filled in */
    raft_id_t id;
    bool started;
    uint64_t now;

    /* Persistent state (Figure 3.1) and the log. */
    raft_term_t term;
    raft_id_t vote;
    raft_log_t log;
    raft_index_t commit;
    raft_index_t applied; /* handed to the host for applying */
    bool installing;      /* a received snapshot is being persisted */

    /* Configuration: the latest one in the log, used as soon as it is appended (§4.1). */
    raft_conf_t conf;
    raft_index_t conf_index; /* entry that carried it (or the snapshot's index) */

    /* Role. */
    raft_role_t role;
    raft_id_t leader;
    unsigned election_elapsed;  /* ticks since the last valid leader contact / election */
    unsigned election_timeout;  /* randomised, in [election_ticks_min, election_ticks_max] */
    unsigned heartbeat_elapsed; /* leader */

    /* Candidate. */
    raft_vote_t votes[RAFT_MAX_MEMBERS];
    uint32_t n_votes;
    bool campaign_transfer;

    /* Leader. */
    raft_progress_t progress[RAFT_MAX_MEMBERS];
    uint32_t n_progress;
    raft_index_t term_start; /* index of this leader's first entry (its no-op) */
    raft_id_t transferee;
    unsigned transfer_elapsed;
    uint64_t read_seq;
    raft_pending_read_t *reads; /* confirmed in seq order */
    size_t n_reads, cap_reads;
    uint64_t *waiting_reads; /* ctxs that arrived before this term committed an entry */
    size_t n_waiting, cap_waiting;

    /* Follower: acknowledgements wait for the entries to be durable. */
    raft_index_t verified; /* the log matches the leader's up to here (this term) */
    raft_index_t ack_sent; /* highest success index sent this term */
    bool ack_owed;         /* an accepted append is not acknowledged yet */

    /* Snapshots. */
    bool snapshot_asked; /* a SNAPSHOT_WANTED is outstanding */

    /* What the host last saw. */
    raft_hard_state_t hs_reported;
    raft_soft_state_t soft_reported;

    /* The update being built by the current raft_step(). */
    arena_t *arena; /* reset at each step: messages, reads, scratch */
    raft_update_t *upd;
    raft_message_t *msgs;
    uint32_t n_msgs, cap_msgs;
    raft_read_state_t *out_reads;
    uint32_t n_out_reads, cap_out_reads;
};

/* raft.c: roles, messages, trace. */
void raft_become_follower(raft_t *r, raft_term_t term, raft_id_t leader);
void raft_become_pre_candidate(raft_t *r);
void raft_become_candidate(raft_t *r);
void raft_become_leader(raft_t *r);
/* Queues a message (from, term filled in) and returns it for the body. */
raft_message_t *raft_send(raft_t *r, raft_id_t to, raft_message_type_t type);
void raft_trace(raft_t *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The durable end of the log as far as acknowledgements and commitment go. */
raft_index_t raft_stable_index(const raft_t *r);
raft_progress_t *raft_progress_find(raft_t *r, raft_id_t id);
/* Quorum of the current configuration's voters. */
uint32_t raft_quorum(const raft_t *r);

/* raft_election.c */
void raft_election_reset_timeout(raft_t *r);
bool raft_election_in_lease(const raft_t *r);
void raft_election_tick(raft_t *r);
void raft_election_start(raft_t *r, bool transfer);
void raft_election_recv_request_vote(raft_t *r, const raft_message_t *m);
void raft_election_recv_result(raft_t *r, const raft_message_t *m);
void raft_election_check_quorum(raft_t *r);

/* raft_replication.c */
bool raft_replication_send_append(raft_t *r, raft_progress_t *p, bool allow_empty);
void raft_replication_broadcast_append(raft_t *r);
void raft_replication_send_heartbeat(raft_t *r, raft_progress_t *p, uint64_t ctx);
void raft_replication_broadcast_heartbeat(raft_t *r, uint64_t ctx);
void raft_replication_leader_tick(raft_t *r);
/* Appends entries as leader (term and index assigned). */
void raft_replication_append(raft_t *r, const raft_entry_t *entries, uint32_t n);
int raft_replication_propose(raft_t *r, const raft_entry_t *entries, uint32_t n);
void raft_replication_recv_append(raft_t *r, const raft_message_t *m);
void raft_replication_recv_append_result(raft_t *r, const raft_message_t *m);
void raft_replication_recv_heartbeat(raft_t *r, const raft_message_t *m);
void raft_replication_recv_heartbeat_result(raft_t *r, const raft_message_t *m);
bool raft_replication_maybe_commit(raft_t *r);
void raft_replication_persisted_entries(raft_t *r, raft_index_t index, raft_term_t term);
/* Follower: acknowledges what is both verified and durable, if not done yet. */
void raft_replication_send_ack(raft_t *r);
/* Raises the commit index (followers: only over entries verified against the leader). */
void raft_replication_commit_to(raft_t *r, raft_index_t index);

/* raft_snapshot.c */
void raft_snapshot_send(raft_t *r, raft_progress_t *p);
void raft_snapshot_recv_install(raft_t *r, const raft_message_t *m);
int raft_snapshot_persisted(raft_t *r, raft_index_t index, raft_term_t term);
int raft_snapshot_taken(raft_t *r, const raft_snapshot_meta_t *meta);
/* Sets upd->snapshot_wanted when enough has been applied since the last snapshot. */
void raft_snapshot_maybe_want(raft_t *r);
/* Configuration as of index (between the snapshot and the last entry). */
void raft_snapshot_conf_at(raft_t *r, raft_index_t index, raft_conf_t *ret);

/* raft_membership.c */
int raft_membership_change(raft_t *r, raft_change_type_t type, raft_id_t node);
/* Re-derives the configuration from the snapshot and the log (after START, truncation,
 * restore). */
void raft_membership_reload(raft_t *r);
/* Called for each entry appended to the log. */
void raft_membership_appended(raft_t *r, const raft_entry_t *e);
/* Leader: progress entries for exactly the members of r->conf. */
void raft_membership_sync_progress(raft_t *r);
bool raft_membership_is_voter(const raft_t *r);

/* raft_read.c */
int raft_read_index(raft_t *r, uint64_t ctx);
void raft_read_recv_ack(raft_t *r, raft_progress_t *p, uint64_t ctx);
/* The leader committed its first entry of the term: start the reads that waited for it. */
void raft_read_term_committed(raft_t *r);
/* Leadership lost: every pending read is reported with index 0. */
void raft_read_abort_all(raft_t *r);
/* Single voter: reads need no confirmation round. */
void raft_read_release(raft_t *r);

/* raft_transfer.c */
int raft_transfer_start(raft_t *r, raft_id_t target);
void raft_transfer_tick(raft_t *r);
/* The target answered an append: send TimeoutNow once it is up to date. */
void raft_transfer_progress(raft_t *r, raft_progress_t *p);
void raft_transfer_recv_timeout_now(raft_t *r, const raft_message_t *m);
void raft_transfer_abort(raft_t *r, const char *why);
