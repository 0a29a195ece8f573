/* raft_membership — cluster membership changes, one server at a time (dissertation chapter 4).
 *
 * Rules (§4.1):
 *  - A configuration travels as a log entry (ENTRY_CONF, data = the whole new configuration)
 *    and "a server always uses the latest configuration in its log, regardless of whether the
 *    entry is committed". Truncating such an entry falls back to the previous one, so the
 *    configuration is re-derived from the snapshot and the log after every truncation/restore.
 *  - Single-server changes only: any two consecutive configurations have overlapping majorities,
 *    so no joint consensus is needed. A leader accepts a change only when the previous one is
 *    committed, and — the fix Ongaro posted to raft-dev in 2015 — only after it has committed an
 *    entry of its own term, so a change of a deposed leader can never overlap with ours.
 *  - New servers join as learners (§4.2.1 "non-voting members"): they receive the log but are
 *    not counted for elections or commitment. PROMOTE makes one a voter once it has caught up:
 *    here, once its match index is within one batch (max_entries_per_append) of the leader's last
 *    index and it is replicating — a one-round simplification of §4.2.1's rounds. Until then the
 *    change is refused with -EAGAIN and the host retries.
 *  - Removing the leader itself is refused (-EBUSY): transfer leadership first (§3.10), then
 *    remove the old leader from the new one. A removed server stops campaigning as soon as the
 *    entry that removes it reaches its log; one that never learns of it is held off by pre-vote
 *    and leases (§4.2.3).
 *
 * Called by raft.c (events), raft_replication.c (appends), raft_snapshot.c (restores). */
#include <errno.h>
#include <string.h>

#include "raft_internal.h"

static bool contains(const raft_id_t *ids, uint32_t n, raft_id_t id) {
    for (uint32_t i = 0; i < n; i++)
        if (ids[i] == id)
            return true;
    return false;
}

bool raft_conf_is_voter(const raft_conf_t *c, raft_id_t id) {
    return id && contains(c->voters, c->n_voters, id);
}

bool raft_conf_is_learner(const raft_conf_t *c, raft_id_t id) {
    return id && contains(c->learners, c->n_learners, id);
}

bool raft_conf_is_member(const raft_conf_t *c, raft_id_t id) {
    return raft_conf_is_voter(c, id) || raft_conf_is_learner(c, id);
}

int raft_conf_check(const raft_conf_t *c) {
    if (!c || c->n_voters > RAFT_MAX_MEMBERS || c->n_learners > RAFT_MAX_MEMBERS ||
        c->n_voters + c->n_learners > RAFT_MAX_MEMBERS)
        return -EINVAL;
    for (uint32_t i = 0; i < c->n_voters; i++)
        if (!c->voters[i] || contains(c->voters, i, c->voters[i]))
            return -EINVAL;
    for (uint32_t i = 0; i < c->n_learners; i++)
        if (!c->learners[i] || contains(c->learners, i, c->learners[i]) ||
            contains(c->voters, c->n_voters, c->learners[i]))
            return -EINVAL;
    return 0;
}

static void remove_id(raft_id_t *ids, uint32_t *n, raft_id_t id) {
    for (uint32_t i = 0; i < *n; i++)
        if (ids[i] == id) {
            memmove(&ids[i], &ids[i + 1], (*n - i - 1) * sizeof *ids);
            (*n)--;
            return;
        }
}

bool raft_membership_is_voter(const raft_t *r) {
    return raft_conf_is_voter(&r->conf, r->id);
}

void raft_membership_sync_progress(raft_t *r) {
    if (r->role != RAFT_LEADER)
        return;
    raft_progress_t keep[RAFT_MAX_MEMBERS];
    uint32_t n = 0;
    raft_index_t next = raft_log_last(&r->log) + 1;
    const raft_conf_t *c = &r->conf;
    for (uint32_t k = 0; k < c->n_voters + c->n_learners; k++) {
        bool voter = k < c->n_voters;
        raft_id_t id = voter ? c->voters[k] : c->learners[k - c->n_voters];
        raft_progress_t *old = raft_progress_find(r, id);
        if (old) {
            keep[n] = *old;
            old->inflight = NULL; /* moved */
            old->id = 0;
        } else {
            raft_progress_init(&keep[n], id, voter, next, r->cfg.max_inflight);
            keep[n].recent_active = true; /* give a new member one check-quorum round */
        }
        keep[n].voter = voter;
        n++;
    }
    for (uint32_t i = 0; i < r->n_progress; i++) {
        if (r->progress[i].id && r->progress[i].id == r->transferee)
            raft_transfer_abort(r, "target removed");
        raft_progress_free(&r->progress[i]);
    }
    memcpy(r->progress, keep, n * sizeof keep[0]);
    r->n_progress = n;
}

void raft_membership_appended(raft_t *r, const raft_entry_t *e) {
    if (e->type != RAFT_ENTRY_CONF)
        return;
    raft_conf_t c;
    if (raft_conf_change_decode(e->data, e->len, NULL, NULL, &c) < 0) {
        raft_trace(r, "ignored malformed configuration entry %llu", (unsigned long long)e->index);
        return;
    }
    r->conf = c;
    r->conf_index = e->index;
    raft_trace(r, "configuration at %llu: %u voters, %u learners%s", (unsigned long long)e->index,
               c.n_voters, c.n_learners, raft_conf_is_voter(&c, r->id) ? "" : " (not a voter)");
    raft_membership_sync_progress(r);
}

void raft_membership_reload(raft_t *r) {
    const raft_log_t *l = &r->log;
    raft_index_t floor = l->snapshot.index > l->offset ? l->snapshot.index : l->offset;
    for (raft_index_t i = raft_log_last(l); i > floor; i--) {
        const raft_entry_t *e = raft_log_get(l, i);
        if (e->type == RAFT_ENTRY_CONF &&
            raft_conf_change_decode(e->data, e->len, NULL, NULL, &r->conf) == 0) {
            r->conf_index = i;
            raft_membership_sync_progress(r);
            return;
        }
    }
    r->conf = l->snapshot.conf;
    r->conf_index = l->snapshot.index;
    raft_membership_sync_progress(r);
}

/* §4.2.1: a learner is caught up when it is replicating and within one append of the end. */
static bool caught_up(raft_t *r, raft_id_t id) {
    raft_progress_t *p = raft_progress_find(r, id);
    return p && p->state == RAFT_PROGRESS_REPLICATE &&
           p->match + r->cfg.max_entries_per_append >= raft_log_last(&r->log);
}

/* §4.1: "When the leader receives a request to add or remove a server from its current
 * configuration (C_old), it appends the new configuration (C_new) as an entry in its log and
 * replicates that entry using the normal Raft mechanism. The new configuration takes effect on
 * each server as soon as it is added to that server's log". */
int raft_membership_change(raft_t *r, raft_change_type_t type, raft_id_t node) {
    if (r->role != RAFT_LEADER)
        return -EREMOTE;
    if (r->transferee)
        return -EBUSY;
    if (r->conf_index > r->commit || r->commit < r->term_start)
        return -EBUSY; /* one change at a time; and only once this term has committed */
    if (!node)
        return -EINVAL;
    raft_conf_t c = r->conf;
    switch (type) {
    case RAFT_CHANGE_ADD_LEARNER:
        if (raft_conf_is_member(&c, node))
            return -EEXIST;
        if (c.n_voters + c.n_learners >= RAFT_MAX_MEMBERS)
            return -ENOSPC;
        c.learners[c.n_learners++] = node;
        break;
    case RAFT_CHANGE_PROMOTE:
        if (raft_conf_is_voter(&c, node))
            return -EALREADY;
        if (!raft_conf_is_learner(&c, node))
            return -ENOENT;
        if (!caught_up(r, node))
            return -EAGAIN;
        remove_id(c.learners, &c.n_learners, node);
        c.voters[c.n_voters++] = node;
        break;
    case RAFT_CHANGE_REMOVE:
        if (!raft_conf_is_member(&c, node))
            return -ENOENT;
        if (node == r->id)
            return -EBUSY;
        remove_id(c.voters, &c.n_voters, node);
        remove_id(c.learners, &c.n_learners, node);
        break;
    default:
        return -EINVAL;
    }
    uint8_t *data;
    size_t len;
    int rc = raft_conf_change_encode(type, node, &c, r->arena, &data, &len);
    if (rc < 0)
        return rc;
    raft_entry_t e = {.type = RAFT_ENTRY_CONF, .data = data, .len = len};
    raft_replication_append(r, &e, 1);
    raft_update_t *u = r->upd;
    u->flags |= RAFT_UPDATE_PROPOSED;
    u->proposed.first_index = u->proposed.last_index = raft_log_last(&r->log);
    u->proposed.term = r->term;
    if (raft_replication_maybe_commit(r)) /* a smaller quorum may commit more at once */
        raft_read_release(r);
    raft_replication_broadcast_append(r);
    return 0;
}
