/* raft_transfer — leadership transfer (dissertation §3.10).
 *
 * "1. The prior leader stops accepting new client requests. 2. The prior leader fully updates
 * the target server's log to match its own ... 3. The prior leader sends a TimeoutNow request to
 * the target server. This request has the same effect as the target server's election timer
 * firing: the target server starts a new election (incrementing its term and becoming a
 * candidate)." The election skips pre-vote and its RequestVotes carry `transfer`, so voters
 * grant them even inside a leader lease (§4.2.3 makes that exception for exactly this case).
 *
 * "If the transfer does not complete within about an election timeout, the prior leader aborts
 * the transfer and resumes accepting client requests." Called by raft.c and
 * raft_replication.c. */
#include <errno.h>

#include "raft_internal.h"

static void send_timeout_now(raft_t *r, raft_id_t to) {
    raft_send(r, to, RAFT_MSG_TIMEOUT_NOW);
    raft_trace(r, "sent TimeoutNow to %llu", (unsigned long long)to);
}

int raft_transfer_start(raft_t *r, raft_id_t target) {
    if (r->role != RAFT_LEADER)
        return -EREMOTE;
    if (!target) {
        raft_index_t best = 0;
        for (uint32_t i = 0; i < r->n_progress; i++) {
            const raft_progress_t *p = &r->progress[i];
            if (p->voter && p->id != r->id && (!target || p->match > best)) {
                target = p->id;
                best = p->match;
            }
        }
        if (!target)
            return -EINVAL; /* no other voter */
    }
    if (target == r->id)
        return -EALREADY;
    if (!raft_conf_is_voter(&r->conf, target))
        return -EINVAL;
    if (r->transferee == target)
        return -EALREADY;
    r->transferee = target;
    r->transfer_elapsed = 0;
    raft_trace(r, "transferring leadership to %llu", (unsigned long long)target);
    raft_progress_t *p = raft_progress_find(r, target);
    if (p->match == raft_log_last(&r->log))
        send_timeout_now(r, target);
    else
        raft_replication_send_append(r, p, false);
    return 0;
}

void raft_transfer_tick(raft_t *r) {
    if (++r->transfer_elapsed >= r->cfg.election_ticks_min)
        raft_transfer_abort(r, "timed out");
}

void raft_transfer_progress(raft_t *r, raft_progress_t *p) {
    if (p->id == r->transferee && p->match == raft_log_last(&r->log))
        send_timeout_now(r, p->id);
}

void raft_transfer_recv_timeout_now(raft_t *r, const raft_message_t *m) {
    if (r->role == RAFT_LEADER || !raft_membership_is_voter(r))
        return;
    raft_trace(r, "TimeoutNow from %llu: campaigning", (unsigned long long)m->from);
    raft_election_start(r, true);
}

void raft_transfer_abort(raft_t *r, const char *why) {
    if (!r->transferee)
        return;
    raft_trace(r, "leadership transfer to %llu aborted: %s", (unsigned long long)r->transferee,
               why);
    r->transferee = 0;
}
