/* raft_replication — log replication and commitment (dissertation §3.5, §3.6) on the leader and
 * the follower side.
 *
 * Leader. Each follower has a progress (raft_progress.c). Proposals are appended to the local
 * log and sent at once; in REPLICATE state appends are pipelined — next moves when an append is
 * sent, not when it is acknowledged — up to max_inflight outstanding appends of at most
 * max_entries_per_append entries / max_bytes_per_append bytes each (batching). The leader's own
 * disk write runs in parallel (§10.2.1): it counts itself in a quorum only up to its stable
 * index. The commit index moves to the highest index a quorum of voters stores, and only over
 * an entry of the current term (§3.6.2, Figure 3.8 — the "Figure 8" scenario).
 *
 * Follower. An append whose prev entry matches is accepted: conflicting entries (same index,
 * different term) and everything after them are truncated, new ones appended (§3.5). The
 * acknowledgement names prev_index + n ("verified": known to match this term's leader) and is
 * sent only once those entries are durable; until then it is owed and goes out on
 * PERSISTED_ENTRIES. A mismatch is rejected with a hint (the follower's last index whose term is
 * <= the rejected prev term) so the leader skips a whole term per round trip. The follower's
 * commit index follows the leader's, bounded by what it has verified: a heartbeat never commits
 * entries this follower has not shown to match the leader's log.
 *
 * Called by raft.c, raft_election.c (new leaders), raft_membership.c, raft_read.c,
 * raft_transfer.c. */
#include <stdlib.h>
#include <string.h>

#include <errno.h>

#include "raft_internal.h"

/* Sends one AppendEntries to p if its flow control allows, or an InstallSnapshot when the
 * entries it needs are compacted away. True when something was sent. */
bool raft_replication_send_append(raft_t *r, raft_progress_t *p, bool allow_empty) {
    if (p->id == r->id || raft_progress_paused(p))
        return false;
    raft_log_t *l = &r->log;
    raft_index_t last = raft_log_last(l);
    if (p->next > last + 1)
        p->next = last + 1;
    raft_index_t prev = p->next - 1;
    raft_term_t prev_term;
    if (prev < l->offset || raft_log_term(l, prev, &prev_term) < 0) {
        raft_snapshot_send(r, p);
        return true;
    }
    uint32_t n = 0;
    size_t bytes = 0;
    for (raft_index_t i = prev + 1; i <= last && n < r->cfg.max_entries_per_append; i++) {
        size_t len = raft_log_get(l, i)->len;
        if (n && bytes + len > r->cfg.max_bytes_per_append)
            break;
        bytes += len;
        n++;
    }
    if (!n && !allow_empty)
        return false;
    raft_message_t *m = raft_send(r, p->id, RAFT_MSG_APPEND_ENTRIES);
    m->append_entries.prev_index = prev;
    m->append_entries.prev_term = prev_term;
    m->append_entries.commit = r->commit;
    m->append_entries.n_entries = n; /* entries point into the log at finalize() */
    if (n || p->state == RAFT_PROGRESS_PROBE)
        raft_progress_sent(p, prev + n);
    return true;
}

/* Sends what p may take now: one append, and in REPLICATE as many as the window allows. */
static void send_all(raft_t *r, raft_progress_t *p, bool allow_empty) {
    if (!raft_replication_send_append(r, p, allow_empty))
        return;
    while (p->state == RAFT_PROGRESS_REPLICATE && p->next <= raft_log_last(&r->log) &&
           raft_replication_send_append(r, p, false))
        ;
}

void raft_replication_broadcast_append(raft_t *r) {
    for (uint32_t i = 0; i < r->n_progress; i++)
        send_all(r, &r->progress[i], true);
}

void raft_replication_send_heartbeat(raft_t *r, raft_progress_t *p, uint64_t ctx) {
    if (p->id == r->id)
        return;
    raft_message_t *m = raft_send(r, p->id, RAFT_MSG_HEARTBEAT);
    m->heartbeat.commit = r->commit;
    m->heartbeat.ctx = ctx;
}

/* Figure 3.1: "Upon election: send initial empty AppendEntries RPCs (heartbeat) to each
 * server; repeat during idle periods to prevent election timeouts". */
void raft_replication_broadcast_heartbeat(raft_t *r, uint64_t ctx) {
    for (uint32_t i = 0; i < r->n_progress; i++)
        raft_replication_send_heartbeat(r, &r->progress[i], ctx);
}

void raft_replication_leader_tick(raft_t *r) {
    r->election_elapsed++;
    if (r->election_elapsed >= r->cfg.election_ticks_min) {
        r->election_elapsed = 0;
        if (r->cfg.check_quorum) {
            raft_election_check_quorum(r);
            if (r->role != RAFT_LEADER)
                return;
        }
    }
    if (r->transferee)
        raft_transfer_tick(r);
    for (uint32_t i = 0; i < r->n_progress; i++) {
        raft_progress_t *p = &r->progress[i];
        /* A lost InstallSnapshot would leave p waiting forever: retry by probing. */
        if (p->state == RAFT_PROGRESS_SNAPSHOT &&
            ++p->snapshot_elapsed >= 2 * r->cfg.election_ticks_max) {
            raft_trace(r, "snapshot to %llu timed out", (unsigned long long)p->id);
            raft_progress_become_probe(p);
        }
    }
    if (++r->heartbeat_elapsed >= r->cfg.heartbeat_ticks) {
        r->heartbeat_elapsed = 0;
        raft_replication_broadcast_heartbeat(r, r->read_seq);
    }
}

void raft_replication_append(raft_t *r, const raft_entry_t *entries, uint32_t n) {
    for (uint32_t i = 0; i < n; i++) {
        raft_entry_t e = entries[i];
        e.term = r->term;
        e.index = raft_log_last(&r->log) + 1;
        raft_log_append(&r->log, &e);
        raft_membership_appended(r, &e);
    }
    raft_progress_t *self = raft_progress_find(r, r->id);
    if (self)
        self->next = raft_log_last(&r->log) + 1;
}

/* §3.5: "The leader appends the command to its log as a new entry, then issues AppendEntries
 * RPCs in parallel to each of the other servers to replicate the entry." */
int raft_replication_propose(raft_t *r, const raft_entry_t *entries, uint32_t n) {
    if (r->role != RAFT_LEADER)
        return -EREMOTE;
    if (r->transferee)
        return -EBUSY; /* §3.10: "the prior leader stops accepting new client requests" */
    if (!n || !entries || n > RAFT_MAX_MSG_ENTRIES)
        return -EINVAL;
    for (uint32_t i = 0; i < n; i++)
        if (entries[i].type != RAFT_ENTRY_NORMAL || entries[i].len > RAFT_MAX_ENTRY_BYTES ||
            (entries[i].len && !entries[i].data))
            return -EINVAL;
    raft_index_t first = raft_log_last(&r->log) + 1;
    raft_replication_append(r, entries, n);
    r->upd->flags |= RAFT_UPDATE_PROPOSED;
    r->upd->proposed.first_index = first;
    r->upd->proposed.last_index = raft_log_last(&r->log);
    r->upd->proposed.term = r->term;
    raft_replication_broadcast_append(r);
    return 0;
}

static void send_result(raft_t *r, raft_index_t index) {
    raft_message_t *out = raft_send(r, r->leader, RAFT_MSG_APPEND_ENTRIES_RESULT);
    out->append_entries_result.index = index;
    if (index > r->ack_sent)
        r->ack_sent = index;
}

void raft_replication_send_ack(raft_t *r) {
    if (!r->ack_owed || !r->leader || r->role != RAFT_FOLLOWER)
        return;
    raft_index_t stable = raft_stable_index(r);
    raft_index_t a = r->verified < stable ? r->verified : stable;
    if (a > r->ack_sent)
        send_result(r, a);
    if (a >= r->verified)
        r->ack_owed = false;
}

void raft_replication_commit_to(raft_t *r, raft_index_t index) {
    if (index > raft_log_last(&r->log))
        index = raft_log_last(&r->log);
    if (index > r->commit) {
        r->commit = index;
        raft_trace(r, "commit=%llu", (unsigned long long)index);
    }
}

/* §3.5 AppendEntries receiver: "Reply false if log doesn't contain an entry at prevLogIndex
 * whose term matches prevLogTerm. If an existing entry conflicts with a new one (same index but
 * different terms), delete the existing entry and all that follow it. Append any new entries
 * not already in the log. If leaderCommit > commitIndex, set commitIndex = min(leaderCommit,
 * index of last new entry)." */
void raft_replication_recv_append(raft_t *r, const raft_message_t *m) {
    raft_log_t *l = &r->log;
    raft_index_t prev = m->append_entries.prev_index;
    r->election_elapsed = 0;
    if (prev < r->commit) {
        /* Already committed here: answer with what is committed and durable, so the leader
         * moves on. (Never more: a lost tail must not be claimed.) */
        raft_index_t stable = raft_stable_index(r);
        raft_index_t a = r->commit < stable ? r->commit : stable;
        if (a)
            send_result(r, a);
        return;
    }
    if (!raft_log_match(l, prev, m->append_entries.prev_term)) {
        raft_index_t hint = prev < raft_log_last(l) ? prev : raft_log_last(l);
        hint = raft_log_find_by_term(l, hint, m->append_entries.prev_term);
        raft_term_t hint_term = 0;
        (void)raft_log_term(l, hint, &hint_term);
        raft_message_t *out = raft_send(r, m->from, RAFT_MSG_APPEND_ENTRIES_RESULT);
        out->append_entries_result.rejected = true;
        out->append_entries_result.index = prev;
        out->append_entries_result.hint_index = hint;
        out->append_entries_result.hint_term = hint_term;
        raft_trace(r, "rejected append prev=%llu/%llu from %llu: hint %llu/%llu",
                   (unsigned long long)prev, (unsigned long long)m->append_entries.prev_term,
                   (unsigned long long)m->from, (unsigned long long)hint,
                   (unsigned long long)hint_term);
        return;
    }
    uint32_t n = m->append_entries.n_entries;
    const raft_entry_t *e = m->append_entries.entries;
    uint32_t k = 0;
    for (; k < n; k++) {
        raft_term_t t;
        if (raft_log_term(l, e[k].index, &t) < 0)
            break; /* beyond our last entry */
        if (t != e[k].term) {
            if (e[k].index <= r->commit) {
                /* A correct leader never contradicts a committed entry. */
                raft_trace(r, "dropped append from %llu: conflicts with committed %llu",
                           (unsigned long long)m->from, (unsigned long long)e[k].index);
                return;
            }
            raft_trace(r, "truncated log from %llu (term %llu, leader has %llu)",
                       (unsigned long long)e[k].index, (unsigned long long)t,
                       (unsigned long long)e[k].term);
            raft_log_truncate(l, e[k].index);
            raft_membership_reload(r);
            break;
        }
    }
    for (; k < n; k++) {
        raft_log_append(l, &e[k]);
        raft_membership_appended(r, &e[k]);
    }
    raft_index_t last_new = prev + n;
    if (last_new > r->verified)
        r->verified = last_new;
    raft_replication_commit_to(r, m->append_entries.commit < last_new ? m->append_entries.commit
                                                                      : last_new);
    if (last_new <= raft_stable_index(r)) {
        send_result(r, last_new); /* also answers duplicates: the leader's probe may wait */
    } else {
        r->ack_owed = true;
    }
}

/* The leader side of §3.5: "If successful: update nextIndex and matchIndex for follower. If
 * AppendEntries fails because of log inconsistency: decrement nextIndex and retry." */
void raft_replication_recv_append_result(raft_t *r, const raft_message_t *m) {
    raft_progress_t *p = raft_progress_find(r, m->from);
    if (!p || p->id == r->id)
        return;
    p->recent_active = true;
    const raft_log_t *l = &r->log;
    if (m->append_entries_result.rejected) {
        raft_index_t hint = m->append_entries_result.hint_index;
        if (m->append_entries_result.hint_term)
            hint = raft_log_find_by_term(l, hint, m->append_entries_result.hint_term);
        if (raft_progress_decrease(p, m->append_entries_result.index, hint)) {
            if (p->state == RAFT_PROGRESS_REPLICATE)
                raft_progress_become_probe(p);
            raft_trace(r, "%llu rejected %llu: probing from %llu", (unsigned long long)p->id,
                       (unsigned long long)m->append_entries_result.index,
                       (unsigned long long)p->next);
            send_all(r, p, true);
        }
        return;
    }
    raft_index_t index = m->append_entries_result.index;
    if (index > raft_log_last(l))
        return; /* acknowledges entries we never had: not from our log */
    bool was_paused = raft_progress_paused(p);
    bool moved = raft_progress_update(p, index);
    if (moved || (p->state == RAFT_PROGRESS_PROBE && p->match == index)) {
        if (p->state == RAFT_PROGRESS_PROBE) {
            raft_progress_become_replicate(p);
        } else if (p->state == RAFT_PROGRESS_SNAPSHOT &&
                   (p->match >= p->pending_snapshot || p->match + 1 >= raft_log_first(l))) {
            raft_progress_become_probe(p);
            raft_progress_become_replicate(p);
        }
    }
    if (moved && raft_replication_maybe_commit(r))
        raft_replication_broadcast_append(r);
    else
        send_all(r, p, was_paused); /* a paused follower may have missed a commit broadcast */
    if (r->transferee == p->id)
        raft_transfer_progress(r, p);
}

/* Followers: a heartbeat keeps the leader's authority (§3.4) and carries its commit index; it
 * commits only entries this follower has verified against the leader in this term. */
void raft_replication_recv_heartbeat(raft_t *r, const raft_message_t *m) {
    r->election_elapsed = 0;
    raft_index_t c = m->heartbeat.commit < r->verified ? m->heartbeat.commit : r->verified;
    raft_replication_commit_to(r, c);
    raft_message_t *out = raft_send(r, m->from, RAFT_MSG_HEARTBEAT_RESULT);
    out->heartbeat_result.ctx = m->heartbeat.ctx;
    out->heartbeat_result.commit = r->commit;
}

void raft_replication_recv_heartbeat_result(raft_t *r, const raft_message_t *m) {
    raft_progress_t *p = raft_progress_find(r, m->from);
    if (!p || p->id == r->id)
        return;
    p->recent_active = true;
    p->commit_seen = m->heartbeat_result.commit;
    if (p->state == RAFT_PROGRESS_PROBE)
        p->probe_sent = false;
    else if (p->state == RAFT_PROGRESS_REPLICATE && raft_progress_inflight_full(p))
        raft_progress_inflight_free_first(p);
    if (p->match < raft_log_last(&r->log) || p->commit_seen < r->commit)
        send_all(r, p, true);
    raft_read_recv_ack(r, p, m->heartbeat_result.ctx);
}

static int cmp_desc(const void *a, const void *b) {
    raft_index_t x = *(const raft_index_t *)a, y = *(const raft_index_t *)b;
    return x < y ? 1 : x > y ? -1 : 0;
}

/* §3.6.2: "Raft never commits log entries from previous terms by counting replicas. Only log
 * entries from the leader's current term are committed by counting replicas; once an entry
 * from the current term has been committed in this way, then all prior entries are committed
 * indirectly because of the Log Matching Property." */
bool raft_replication_maybe_commit(raft_t *r) {
    if (r->role != RAFT_LEADER)
        return false;
    raft_index_t match[RAFT_MAX_MEMBERS];
    uint32_t n = 0;
    for (uint32_t i = 0; i < r->n_progress; i++) {
        const raft_progress_t *p = &r->progress[i];
        if (p->voter)
            match[n++] = p->id == r->id ? raft_stable_index(r) : p->match;
    }
    uint32_t q = raft_quorum(r);
    if (n < q)
        return false;
    qsort(match, n, sizeof match[0], cmp_desc);
    raft_index_t idx = match[q - 1];
    raft_term_t t;
    if (idx <= r->commit || raft_log_term(&r->log, idx, &t) < 0 || t != r->term)
        return false;
    bool first_of_term = r->commit < r->term_start;
    r->commit = idx;
    raft_trace(r, "commit=%llu", (unsigned long long)idx);
    if (first_of_term && idx >= r->term_start)
        raft_read_term_committed(r);
    return true;
}

void raft_replication_persisted_entries(raft_t *r, raft_index_t index, raft_term_t term) {
    raft_log_persisted(&r->log, index, term);
    if (r->role == RAFT_LEADER) {
        if (raft_replication_maybe_commit(r))
            raft_replication_broadcast_append(r);
    } else {
        raft_replication_send_ack(r);
    }
}
