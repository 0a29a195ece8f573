/* raft — the step function, roles and the update of shoal's I/O-free Raft core (see raft.h for
 * the host's contract).
 *
 * raft_step() runs one event to completion and then builds the update (finalize()): which part
 * of the log became dirty (entries to persist), whether term/vote/commit moved (hard state),
 * which committed entries may be applied, the queued messages, read states and role changes.
 * Each concern lives in its own module, named after the dissertation chapter it implements:
 *
 *   raft_election.c     §3.4, §9.6 pre-vote, §6.2 check-quorum, §4.2.3 leader leases on votes
 *   raft_replication.c  §3.5 log replication, §3.6 commitment, §10.2.1 parallel leader writes
 *   raft_progress.c     per-follower flow control (probe / pipelined replicate / snapshot)
 *   raft_log.c          the in-memory log, stable boundary, compaction (chapter 5)
 *   raft_snapshot.c     chapter 5: snapshots wanted, taken, sent and installed
 *   raft_membership.c   chapter 4: single-server changes through learners
 *   raft_read.c         §6.4 ReadIndex
 *   raft_transfer.c     §3.10 leadership transfer
 *   raft_codec.c        proto/raft.proto, validation of everything decoded
 *
 * Invariants kept across steps (checked by tests/sim after every step, not by asserts here):
 * at most one leader per term; commit only moves forward and never past the log; applied <=
 * commit and applied <= the durable end of the log; a follower acknowledges only entries both
 * verified against the current leader and durable; the configuration is the latest one in the
 * log. Input from the network is validated before anything changes: a malformed message is
 * dropped with -EINVAL, never an assert.
 *
 * Called by the store daemon (later) and tests/sim, tests/unit/store_raft.c,
 * tests/fuzz/fuzz_store_raft.c. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "raft_internal.h"

#define DEFAULT_MAX_INFLIGHT 64
#define DEFAULT_MAX_ENTRIES  256
#define DEFAULT_MAX_BYTES    (1u << 20)

int raft_config_check(const raft_config_t *cfg, char *err, size_t errlen) {
    const char *why = NULL;
    if (!cfg)
        why = "no configuration";
    else if (!cfg->id)
        why = "id must be non-zero";
    else if (cfg->heartbeat_ticks < 1)
        why = "heartbeat_ticks must be >= 1";
    else if (cfg->election_ticks_min <= cfg->heartbeat_ticks)
        why = "election_ticks_min must be > heartbeat_ticks";
    else if (cfg->election_ticks_max < cfg->election_ticks_min)
        why = "election_ticks_max must be >= election_ticks_min";
    else if (!cfg->rand)
        why = "rand is required";
    else if (cfg->max_inflight > 65536)
        why = "max_inflight must be <= 65536";
    else if (cfg->max_entries_per_append > RAFT_MAX_MSG_ENTRIES)
        why = "max_entries_per_append too large";
    if (!why)
        return 0;
    if (err && errlen)
        snprintf(err, errlen, "raft: %s", why);
    return -EINVAL;
}

raft_t *raft_new(const raft_config_t *cfg) {
    if (raft_config_check(cfg, NULL, 0) < 0)
        return NULL;
    raft_t *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->cfg = *cfg;
    if (!r->cfg.max_inflight)
        r->cfg.max_inflight = DEFAULT_MAX_INFLIGHT;
    if (!r->cfg.max_entries_per_append)
        r->cfg.max_entries_per_append = DEFAULT_MAX_ENTRIES;
    if (!r->cfg.max_bytes_per_append)
        r->cfg.max_bytes_per_append = DEFAULT_MAX_BYTES;
    r->id = cfg->id;
    r->arena = arena_new(0);
    if (!r->arena) {
        free(r);
        return NULL;
    }
    raft_log_init(&r->log);
    r->role = RAFT_FOLLOWER;
    return r;
}

static void progress_free_all(raft_t *r) {
    for (uint32_t i = 0; i < r->n_progress; i++)
        raft_progress_free(&r->progress[i]);
    r->n_progress = 0;
}

void raft_destroy(raft_t **self_p) {
    if (!self_p || !*self_p)
        return;
    raft_t *r = *self_p;
    progress_free_all(r);
    raft_log_free(&r->log);
    arena_destroy(&r->arena);
    free(r->reads);
    free(r->waiting_reads);
    free(r);
    *self_p = NULL;
}

void raft_trace(raft_t *r, const char *fmt, ...) {
    if (!r->cfg.trace)
        return;
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    r->cfg.trace(r->cfg.trace_arg, line);
}

const char *raft_role_name(raft_role_t role) {
    switch (role) {
    case RAFT_FOLLOWER:
        return "follower";
    case RAFT_PRE_CANDIDATE:
        return "pre-candidate";
    case RAFT_CANDIDATE:
        return "candidate";
    case RAFT_LEADER:
        return "leader";
    }
    return "?";
}

const char *raft_message_type_name(raft_message_type_t type) {
    switch (type) {
    case RAFT_MSG_REQUEST_VOTE:
        return "RequestVote";
    case RAFT_MSG_REQUEST_VOTE_RESULT:
        return "RequestVoteResult";
    case RAFT_MSG_APPEND_ENTRIES:
        return "AppendEntries";
    case RAFT_MSG_APPEND_ENTRIES_RESULT:
        return "AppendEntriesResult";
    case RAFT_MSG_INSTALL_SNAPSHOT:
        return "InstallSnapshot";
    case RAFT_MSG_TIMEOUT_NOW:
        return "TimeoutNow";
    case RAFT_MSG_HEARTBEAT:
        return "Heartbeat";
    case RAFT_MSG_HEARTBEAT_RESULT:
        return "HeartbeatResult";
    }
    return "?";
}

raft_index_t raft_stable_index(const raft_t *r) {
    return r->installing ? 0 : r->log.stable;
}

raft_progress_t *raft_progress_find(raft_t *r, raft_id_t id) {
    for (uint32_t i = 0; i < r->n_progress; i++)
        if (r->progress[i].id == id)
            return &r->progress[i];
    return NULL;
}

uint32_t raft_quorum(const raft_t *r) {
    return r->conf.n_voters / 2 + 1;
}

raft_message_t *raft_send(raft_t *r, raft_id_t to, raft_message_type_t type) {
    if (r->n_msgs == r->cap_msgs) {
        uint32_t cap = r->cap_msgs ? r->cap_msgs * 2 : 16;
        raft_message_t *m = arena_alloc(r->arena, cap * sizeof *m);
        if (r->n_msgs)
            memcpy(m, r->msgs, r->n_msgs * sizeof *m);
        r->msgs = m;
        r->cap_msgs = cap;
    }
    raft_message_t *m = &r->msgs[r->n_msgs++];
    memset(m, 0, sizeof *m);
    m->type = type;
    m->from = r->id;
    m->to = to;
    m->term = r->term;
    return m;
}

/* ---- roles ---- */

static void leave_leadership(raft_t *r) {
    if (r->role != RAFT_LEADER)
        return;
    raft_read_abort_all(r);
    r->transferee = 0;
    progress_free_all(r);
}

/* §3.3: "If a server receives a request with a stale term number ... [or] discovers that its
 * term is out of date, it immediately reverts to follower state." */
void raft_become_follower(raft_t *r, raft_term_t term, raft_id_t leader) {
    leave_leadership(r);
    if (term > r->term) {
        r->term = term;
        r->vote = 0;
        r->verified = 0;
        r->ack_sent = 0;
        r->ack_owed = false;
    }
    bool changed = r->role != RAFT_FOLLOWER || r->leader != leader;
    r->role = RAFT_FOLLOWER;
    r->leader = leader;
    r->election_elapsed = 0;
    r->heartbeat_elapsed = 0;
    raft_election_reset_timeout(r);
    if (changed)
        raft_trace(r, "became follower term=%llu leader=%llu", (unsigned long long)r->term,
                   (unsigned long long)leader);
}

static void votes_reset(raft_t *r) {
    r->n_votes = 0;
    for (uint32_t i = 0; i < r->conf.n_voters; i++)
        r->votes[r->n_votes++] =
            (raft_vote_t){r->conf.voters[i], r->conf.voters[i] == r->id ? 1 : -1};
}

/* §9.6: a pre-candidate asks for votes at term+1 without incrementing its own term. */
void raft_become_pre_candidate(raft_t *r) {
    leave_leadership(r);
    r->role = RAFT_PRE_CANDIDATE;
    r->leader = 0;
    r->election_elapsed = 0;
    raft_election_reset_timeout(r);
    votes_reset(r);
    raft_trace(r, "became pre-candidate term=%llu", (unsigned long long)r->term);
}

/* §3.4: "To begin an election, a follower increments its current term and transitions to
 * candidate state. It then votes for itself ..." */
void raft_become_candidate(raft_t *r) {
    leave_leadership(r);
    r->term++;
    r->vote = r->id;
    r->verified = 0;
    r->ack_sent = 0;
    r->ack_owed = false;
    r->role = RAFT_CANDIDATE;
    r->leader = 0;
    r->election_elapsed = 0;
    raft_election_reset_timeout(r);
    votes_reset(r);
    raft_trace(r, "became candidate term=%llu", (unsigned long long)r->term);
}

/* §3.4 + §6.4: the new leader appends a no-op entry of its own term; committing it tells the
 * leader which entries are committed, and it is the entry §3.6.2 lets it count replicas for. */
void raft_become_leader(raft_t *r) {
    r->role = RAFT_LEADER;
    r->leader = r->id;
    r->election_elapsed = 0;
    r->heartbeat_elapsed = 0;
    r->transferee = 0;
    r->n_reads = 0;
    r->n_waiting = 0;
    progress_free_all(r);
    raft_membership_sync_progress(r);
    raft_trace(r, "became leader term=%llu last=%llu commit=%llu", (unsigned long long)r->term,
               (unsigned long long)raft_log_last(&r->log), (unsigned long long)r->commit);
    raft_entry_t noop = {.type = RAFT_ENTRY_NORMAL};
    raft_replication_append(r, &noop, 1);
    r->term_start = raft_log_last(&r->log);
    raft_replication_broadcast_append(r);
}

/* ---- events ---- */

static int start(raft_t *r, const raft_event_t *ev) {
    if (r->started)
        return -EALREADY;
    const raft_hard_state_t *hs = &ev->start.hard_state;
    const raft_snapshot_meta_t *snap = ev->start.snapshot;
    raft_snapshot_meta_t none = {0};
    if (!snap)
        snap = &none;
    const raft_entry_t *e = ev->start.entries;
    uint32_t n = ev->start.n_entries;
    if (n && !e)
        return -EINVAL;
    if (snap->index && (!snap->term || snap->term > hs->term || raft_conf_check(&snap->conf) < 0))
        return -EINVAL;
    if ((!snap->index && snap->term) || hs->term > RAFT_MAX_INDEX || snap->index > RAFT_MAX_INDEX)
        return -EINVAL;
    for (uint32_t i = 0; i < n; i++) {
        if (!e[i].index || e[i].index > RAFT_MAX_INDEX || e[i].index != e[0].index + i ||
            e[i].term > hs->term || (i && e[i].term < e[i - 1].term) || (e[i].len && !e[i].data) ||
            e[i].type > RAFT_ENTRY_CONF)
            return -EINVAL;
        if (e[i].type == RAFT_ENTRY_CONF &&
            raft_conf_change_decode(e[i].data, e[i].len, NULL, NULL, NULL) < 0)
            return -EINVAL;
    }
    /* Entries wholly before the snapshot are stale trailing entries: the snapshot anchors. */
    if (n && e[n - 1].index < snap->index)
        n = 0;
    if (n && e[0].index > snap->index + 1)
        return -EINVAL; /* a gap between the snapshot and the log */
    if (n && snap->index >= e[0].index && e[snap->index - e[0].index].term != snap->term)
        return -EINVAL;
    if (ev->start.bootstrap && raft_conf_check(ev->start.bootstrap) < 0)
        return -EINVAL;
    raft_index_t durable_last = n ? e[n - 1].index : snap->index;
    if (ev->start.applied > durable_last)
        return -EINVAL; /* a state machine ahead of the log it was applied from */

    r->term = hs->term;
    r->vote = hs->vote;
    r->log.snapshot = snap->index ? *snap : none;
    uint32_t first = 0;
    if (n && e[0].index > 1) {
        if (e[0].index <= snap->index) {
            r->log.offset = e[0].index; /* the first entry anchors the log */
            r->log.offset_term = e[0].term;
            first = 1;
        } else {
            r->log.offset = snap->index;
            r->log.offset_term = snap->term;
        }
    } else if (!n) {
        r->log.offset = snap->index;
        r->log.offset_term = snap->term;
    }
    for (uint32_t i = first; i < n; i++)
        raft_log_append(&r->log, &e[i]);
    r->log.stable = raft_log_last(&r->log);
    (void)raft_log_take_dirty(&r->log);

    if (!n && !snap->index && ev->start.bootstrap) {
        /* A founding member: every founder writes this same entry 1, so the logs agree on it
         * and it is committed by construction (like cowsql's raft_bootstrap, etcd's peers). */
        uint8_t *data;
        size_t len;
        raft_conf_change_encode(RAFT_CHANGE_BOOTSTRAP, 0, ev->start.bootstrap, r->arena, &data,
                                &len);
        raft_entry_t boot = {
            .term = 1, .index = 1, .type = RAFT_ENTRY_CONF, .data = data, .len = len};
        if (r->term < 1)
            r->term = 1;
        raft_log_append(&r->log, &boot);
        r->commit = 1;
    }

    raft_index_t last = raft_log_last(&r->log);
    r->applied = ev->start.applied > snap->index ? ev->start.applied : snap->index;
    if (hs->commit > r->commit)
        r->commit = hs->commit;
    if (r->commit > last)
        r->commit = last; /* a lazily written commit may run ahead of a lost tail: clamp */
    if (r->commit < r->applied)
        r->commit = r->applied;
    if (r->commit < snap->index)
        r->commit = snap->index;
    r->hs_reported = *hs;
    raft_membership_reload(r);
    r->started = true;
    raft_become_follower(r, r->term, 0);
    r->soft_reported = (raft_soft_state_t){RAFT_FOLLOWER, 0, hs->term};
    raft_trace(r, "start term=%llu vote=%llu commit=%llu applied=%llu log=%llu..%llu snap=%llu",
               (unsigned long long)r->term, (unsigned long long)r->vote,
               (unsigned long long)r->commit, (unsigned long long)r->applied,
               (unsigned long long)raft_log_first(&r->log), (unsigned long long)last,
               (unsigned long long)snap->index);
    return 0;
}

static void tick(raft_t *r) {
    if (r->role == RAFT_LEADER)
        raft_replication_leader_tick(r);
    else
        raft_election_tick(r);
}

static bool sets_leader(raft_message_type_t t) {
    return t == RAFT_MSG_APPEND_ENTRIES || t == RAFT_MSG_HEARTBEAT ||
           t == RAFT_MSG_INSTALL_SNAPSHOT;
}

/* §3.3 term rules, with the exceptions pre-vote (§9.6) and leases (§4.2.3) carve out. */
static int receive(raft_t *r, const raft_message_t *m) {
    if (!m || raft_message_validate(m) < 0 || m->to != r->id)
        return -EINVAL;
    if (m->term > r->term) {
        if (m->type == RAFT_MSG_REQUEST_VOTE && !m->request_vote.transfer &&
            raft_election_in_lease(r)) {
            raft_trace(r, "ignored %s from %llu term=%llu: leader lease",
                       m->request_vote.pre_vote ? "pre-vote" : "vote", (unsigned long long)m->from,
                       (unsigned long long)m->term);
            return 0;
        }
        if (m->type == RAFT_MSG_REQUEST_VOTE && m->request_vote.pre_vote) {
            /* never change term for a pre-vote */
        } else if (m->type == RAFT_MSG_REQUEST_VOTE_RESULT && m->request_vote_result.pre_vote &&
                   m->request_vote_result.granted) {
            /* granted pre-votes carry the term we asked for */
        } else {
            raft_become_follower(r, m->term, sets_leader(m->type) ? m->from : 0);
        }
    } else if (m->term < r->term) {
        if ((r->cfg.check_quorum || r->cfg.pre_vote) &&
            (m->type == RAFT_MSG_APPEND_ENTRIES || m->type == RAFT_MSG_HEARTBEAT)) {
            /* A stale leader cut off by a pre-vote cluster would otherwise never learn of the
             * new term: tell it. */
            raft_message_t *out = raft_send(r, m->from, RAFT_MSG_APPEND_ENTRIES_RESULT);
            out->append_entries_result.index = 0;
        } else if (m->type == RAFT_MSG_REQUEST_VOTE && m->request_vote.pre_vote) {
            raft_message_t *out = raft_send(r, m->from, RAFT_MSG_REQUEST_VOTE_RESULT);
            out->request_vote_result.pre_vote = true;
        }
        return 0;
    }

    switch (m->type) {
    case RAFT_MSG_REQUEST_VOTE:
        raft_election_recv_request_vote(r, m);
        return 0;
    case RAFT_MSG_REQUEST_VOTE_RESULT:
        raft_election_recv_result(r, m);
        return 0;
    case RAFT_MSG_APPEND_ENTRIES:
    case RAFT_MSG_HEARTBEAT:
    case RAFT_MSG_INSTALL_SNAPSHOT:
        if (r->role == RAFT_LEADER) {
            raft_trace(r, "ignored %s from %llu: two leaders in term %llu?",
                       raft_message_type_name(m->type), (unsigned long long)m->from,
                       (unsigned long long)r->term);
            return -EINVAL;
        }
        if (r->role != RAFT_FOLLOWER || r->leader != m->from)
            raft_become_follower(r, r->term, m->from);
        if (m->type == RAFT_MSG_APPEND_ENTRIES)
            raft_replication_recv_append(r, m);
        else if (m->type == RAFT_MSG_HEARTBEAT)
            raft_replication_recv_heartbeat(r, m);
        else
            raft_snapshot_recv_install(r, m);
        return 0;
    case RAFT_MSG_APPEND_ENTRIES_RESULT:
        if (r->role == RAFT_LEADER)
            raft_replication_recv_append_result(r, m);
        return 0;
    case RAFT_MSG_HEARTBEAT_RESULT:
        if (r->role == RAFT_LEADER)
            raft_replication_recv_heartbeat_result(r, m);
        return 0;
    case RAFT_MSG_TIMEOUT_NOW:
        raft_transfer_recv_timeout_now(r, m);
        return 0;
    }
    return -EINVAL;
}

static void push_read_states(raft_t *r) {
    if (!r->n_out_reads)
        return;
    r->upd->reads.batch = r->out_reads;
    r->upd->reads.n = r->n_out_reads;
    r->upd->flags |= RAFT_UPDATE_READS;
}

/* Builds the update from what the event changed. */
static void finalize(raft_t *r) {
    raft_update_t *u = r->upd;
    raft_log_t *l = &r->log;

    /* Entries to persist: everything from the lowest changed index to the end. */
    raft_index_t dirty = raft_log_take_dirty(l);
    if (dirty) {
        u->flags |= RAFT_UPDATE_ENTRIES;
        u->entries.first_index = dirty;
        raft_index_t last = raft_log_last(l);
        if (last >= dirty) {
            u->entries.batch = raft_log_get(l, dirty);
            u->entries.n = (uint32_t)(last - dirty + 1);
        }
    }

    /* Committed entries the host may apply: only durable ones, so a crash never leaves the
     * state machine ahead of the log. */
    raft_index_t stable = raft_stable_index(r);
    raft_index_t hi = r->commit < stable ? r->commit : stable;
    if (hi > r->applied && r->applied >= l->offset) {
        u->flags |= RAFT_UPDATE_COMMITTED;
        u->committed.batch = raft_log_get(l, r->applied + 1);
        u->committed.n = (uint32_t)(hi - r->applied);
        r->applied = hi;
    }
    if (u->flags & RAFT_UPDATE_COMMITTED)
        raft_snapshot_maybe_want(r);

    /* Hard state: the commit written is never beyond the durable log. */
    raft_index_t hs_commit = hi > r->hs_reported.commit ? hi : r->hs_reported.commit;
    if (r->term != r->hs_reported.term || r->vote != r->hs_reported.vote ||
        hs_commit != r->hs_reported.commit) {
        r->hs_reported = (raft_hard_state_t){r->term, r->vote, hs_commit};
        u->flags |= RAFT_UPDATE_HARD_STATE;
    }
    u->hard_state = r->hs_reported;

    raft_soft_state_t soft = {r->role, r->leader, r->term};
    if (soft.role != r->soft_reported.role || soft.leader != r->soft_reported.leader ||
        soft.term != r->soft_reported.term) {
        r->soft_reported = soft;
        u->flags |= RAFT_UPDATE_SOFT_STATE;
    }
    u->soft = r->soft_reported;

    /* Messages: AppendEntries point into the log only now, once it has stopped moving. */
    for (uint32_t i = 0; i < r->n_msgs; i++) {
        raft_message_t *m = &r->msgs[i];
        if (m->type == RAFT_MSG_APPEND_ENTRIES && m->append_entries.n_entries) {
            m->append_entries.entries = raft_log_get(l, m->append_entries.prev_index + 1);
            if (!m->append_entries.entries ||
                raft_log_last(l) < m->append_entries.prev_index + m->append_entries.n_entries)
                m->append_entries.n_entries = 0; /* never: the log only grows in a step that
                                                    sends appends; an empty append is still
                                                    correct */
        }
    }
    if (r->n_msgs) {
        u->flags |= RAFT_UPDATE_MESSAGES;
        u->messages.batch = r->msgs;
        u->messages.n = r->n_msgs;
    }
    push_read_states(r);
}

int raft_step(raft_t *r, const raft_event_t *ev, raft_update_t *upd) {
    memset(upd, 0, sizeof *upd);
    if (!r || !ev)
        return -EINVAL;
    arena_reset(r->arena);
    r->upd = upd;
    r->msgs = NULL;
    r->n_msgs = r->cap_msgs = 0;
    r->out_reads = NULL;
    r->n_out_reads = r->cap_out_reads = 0;
    if (ev->time)
        r->now = ev->time;
    if (!r->started && ev->type != RAFT_EVENT_START)
        return -EINVAL;

    int rc = -EINVAL;
    switch (ev->type) {
    case RAFT_EVENT_START:
        rc = start(r, ev); /* validates everything before it changes anything */
        if (rc < 0)
            return rc;
        break;
    case RAFT_EVENT_TICK:
        tick(r);
        rc = 0;
        break;
    case RAFT_EVENT_RECEIVE:
        rc = receive(r, ev->receive.message);
        break;
    case RAFT_EVENT_PROPOSE:
        rc = raft_replication_propose(r, ev->propose.entries, ev->propose.n_entries);
        break;
    case RAFT_EVENT_PERSISTED_ENTRIES:
        raft_replication_persisted_entries(r, ev->persisted_entries.index,
                                           ev->persisted_entries.term);
        rc = 0;
        break;
    case RAFT_EVENT_PERSISTED_SNAPSHOT:
        rc = raft_snapshot_persisted(r, ev->persisted_snapshot.index, ev->persisted_snapshot.term);
        break;
    case RAFT_EVENT_SNAPSHOT_TAKEN:
        rc = raft_snapshot_taken(r, &ev->snapshot_taken.meta);
        break;
    case RAFT_EVENT_TRANSFER:
        rc = raft_transfer_start(r, ev->transfer.target);
        break;
    case RAFT_EVENT_READ_INDEX:
        rc = raft_read_index(r, ev->read_index.ctx);
        break;
    case RAFT_EVENT_CONF_CHANGE:
        rc = raft_membership_change(r, ev->conf_change.type, ev->conf_change.node);
        break;
    }
    finalize(r);
    r->upd = NULL;
    return rc;
}

void raft_status(const raft_t *r, raft_status_t *ret) {
    memset(ret, 0, sizeof *ret);
    if (!r)
        return;
    ret->id = r->id;
    ret->leader = r->leader;
    ret->vote = r->vote;
    ret->role = r->role;
    ret->term = r->term;
    ret->first_index = raft_log_first(&r->log);
    ret->last_index = raft_log_last(&r->log);
    ret->stable_index = raft_stable_index(r);
    ret->commit = r->commit;
    ret->applied = r->applied;
    ret->snapshot = r->log.snapshot;
    ret->conf = r->conf;
    ret->conf_index = r->conf_index;
    ret->transferee = r->transferee;
    for (uint32_t i = 0; r->role == RAFT_LEADER && i < r->n_progress; i++) {
        const raft_progress_t *p = &r->progress[i];
        ret->progress[i].id = p->id;
        ret->progress[i].match = p->id == r->id ? raft_stable_index(r) : p->match;
        ret->progress[i].next = p->next;
        ret->progress[i].state = (int)p->state;
        ret->progress[i].voter = p->voter;
        ret->progress[i].recent_active = p->recent_active;
        ret->n_progress = i + 1;
    }
}
