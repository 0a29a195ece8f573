/* raft_election — leader election (dissertation §3.4) with the two refinements of chapters 6
 * and 9 that keep a healthy cluster stable:
 *
 *  - pre-vote (§9.6): a member that timed out first asks "would you vote for me at term+1?";
 *    only with a quorum of yes does it increment its term and run a real election. A member
 *    cut off by a partition therefore never inflates its term, and does not depose the leader
 *    when it comes back.
 *  - check-quorum (§6.2) and leases (§4.2.3): a leader that has not heard from a quorum within
 *    an election timeout steps down; a member that heard from a leader within the minimum
 *    election timeout ignores (pre-)vote requests of higher terms, unless they come from a
 *    leadership transfer (TimeoutNow).
 *
 * The election timeout is drawn from [election_ticks_min, election_ticks_max] with the injected
 * random source each time it is reset, so split votes resolve (§3.4 "randomized election
 * timeouts") and tests/sim runs are reproducible from a seed.
 *
 * Invariant: a member grants at most one real vote per term (vote is part of the hard state,
 * durable before the grant is sent), and only to a candidate whose log is at least as
 * up-to-date as its own (§3.6.1). Called by raft.c. */
#include "raft_internal.h"

void raft_election_reset_timeout(raft_t *r) {
    unsigned span = r->cfg.election_ticks_max - r->cfg.election_ticks_min + 1;
    r->election_timeout =
        r->cfg.election_ticks_min + (unsigned)(r->cfg.rand(r->cfg.rand_arg) % span);
}

/* §4.2.3: "if a server receives a RequestVote request within the minimum election timeout of
 * hearing from a current leader, it does not update its term or grant its vote." Only with
 * check-quorum, which in turn guarantees that a leader that lost its quorum steps down, so the
 * lease can never keep a dead leader's cluster from electing a new one. */
bool raft_election_in_lease(const raft_t *r) {
    return r->cfg.check_quorum && r->leader != 0 && r->election_elapsed < r->cfg.election_ticks_min;
}

/* §3.4: "If a follower receives no communication over a period of time called the election
 * timeout, then it assumes there is no viable leader and begins an election." */
void raft_election_tick(raft_t *r) {
    r->election_elapsed++;
    if (r->election_elapsed < r->election_timeout)
        return;
    r->election_elapsed = 0;
    if (!raft_membership_is_voter(r)) {
        raft_election_reset_timeout(r);
        return;
    }
    raft_trace(r, "election timeout as %s term=%llu", raft_role_name(r->role),
               (unsigned long long)r->term);
    raft_election_start(r, false);
}

static void request_votes(raft_t *r, bool pre_vote, bool transfer) {
    raft_term_t term = pre_vote ? r->term + 1 : r->term;
    for (uint32_t i = 0; i < r->conf.n_voters; i++) {
        raft_id_t id = r->conf.voters[i];
        if (id == r->id)
            continue;
        raft_message_t *m = raft_send(r, id, RAFT_MSG_REQUEST_VOTE);
        m->term = term;
        m->request_vote.last_index = raft_log_last(&r->log);
        m->request_vote.last_term = raft_log_last_term(&r->log);
        m->request_vote.pre_vote = pre_vote;
        m->request_vote.transfer = transfer;
    }
}

/* Counts the answers: 1 won, -1 lost, 0 undecided. */
static int tally(const raft_t *r) {
    uint32_t yes = 0, no = 0, q = raft_quorum(r);
    for (uint32_t i = 0; i < r->n_votes; i++) {
        if (r->votes[i].granted == 1)
            yes++;
        else if (r->votes[i].granted == 0)
            no++;
    }
    if (yes >= q)
        return 1;
    if (no >= q || r->n_votes - no < q)
        return -1;
    return 0;
}

static void run_real_election(raft_t *r, bool transfer) {
    raft_become_candidate(r);
    r->campaign_transfer = transfer;
    if (tally(r) == 1) {
        raft_become_leader(r);
        return;
    }
    request_votes(r, false, transfer);
}

/* §9.6: "In the Pre-Vote algorithm, a candidate only increments its term if it first learns
 * from a majority of the cluster that they would be willing to grant the candidate their votes
 * if it incremented its term." A transfer skips it: the leader asked for this election. */
void raft_election_start(raft_t *r, bool transfer) {
    if (!raft_membership_is_voter(r) || r->role == RAFT_LEADER)
        return;
    if (r->cfg.pre_vote && !transfer) {
        raft_become_pre_candidate(r);
        if (tally(r) == 1) {
            run_real_election(r, false);
            return;
        }
        request_votes(r, true, false);
        return;
    }
    run_real_election(r, transfer);
}

/* §3.4, §3.6.1: grant if we have not voted for someone else this term (or, for a pre-vote, the
 * candidate's term is ahead of ours and we know no leader) and the candidate's log is at least
 * as up-to-date as ours: "If the logs have last entries with different terms, then the log with
 * the later term is more up-to-date. If the logs end with the same term, then whichever log is
 * longer is more up-to-date." */
void raft_election_recv_request_vote(raft_t *r, const raft_message_t *m) {
    bool pre = m->request_vote.pre_vote;
    bool can_vote =
        r->vote == m->from || (r->vote == 0 && r->leader == 0) || (pre && m->term > r->term);
    bool grant = can_vote && raft_log_is_up_to_date(&r->log, m->request_vote.last_index,
                                                    m->request_vote.last_term);
    raft_message_t *out = raft_send(r, m->from, RAFT_MSG_REQUEST_VOTE_RESULT);
    out->request_vote_result.pre_vote = pre;
    out->request_vote_result.granted = grant;
    if (grant)
        out->term = m->term; /* a pre-vote grant names the term it would vote in */
    if (grant && !pre) {
        r->vote = m->from;
        r->election_elapsed = 0;
    }
    raft_trace(
        r, "%s %s to %llu term=%llu (log %llu/%llu vs ours %llu/%llu)",
        grant ? "granted" : "rejected", pre ? "pre-vote" : "vote", (unsigned long long)m->from,
        (unsigned long long)m->term, (unsigned long long)m->request_vote.last_index,
        (unsigned long long)m->request_vote.last_term, (unsigned long long)raft_log_last(&r->log),
        (unsigned long long)raft_log_last_term(&r->log));
}

void raft_election_recv_result(raft_t *r, const raft_message_t *m) {
    bool pre = m->request_vote_result.pre_vote;
    bool granted = m->request_vote_result.granted;
    if (r->role == RAFT_PRE_CANDIDATE) {
        if (!pre || (granted && m->term != r->term + 1) || (!granted && m->term != r->term))
            return;
    } else if (r->role == RAFT_CANDIDATE) {
        if (pre || m->term != r->term)
            return;
    } else {
        return;
    }
    for (uint32_t i = 0; i < r->n_votes; i++)
        if (r->votes[i].id == m->from && r->votes[i].granted < 0)
            r->votes[i].granted = granted ? 1 : 0;
    int t = tally(r);
    if (t == 1) {
        if (r->role == RAFT_PRE_CANDIDATE)
            run_real_election(r, false);
        else
            raft_become_leader(r);
    } else if (t == -1) {
        raft_trace(r, "lost %s term=%llu", pre ? "pre-vote" : "election",
                   (unsigned long long)(pre ? r->term + 1 : r->term));
        raft_become_follower(r, r->term, 0);
    }
}

/* §6.2: "a leader steps down if an election timeout elapses without a successful round of
 * heartbeats to a majority of its cluster". Called by the leader every election_ticks_min. */
void raft_election_check_quorum(raft_t *r) {
    uint32_t active = 0;
    for (uint32_t i = 0; i < r->n_progress; i++) {
        raft_progress_t *p = &r->progress[i];
        if (p->voter && (p->id == r->id || p->recent_active))
            active++;
        if (p->id != r->id)
            p->recent_active = false;
    }
    if (active < raft_quorum(r)) {
        raft_trace(r, "check-quorum failed: %u of %u voters active, stepping down", active,
                   r->conf.n_voters);
        raft_become_follower(r, r->term, 0);
    }
}
