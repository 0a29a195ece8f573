/* raft_snapshot — log compaction by snapshots (dissertation chapter 5).
 *
 * The state machine belongs to the host, so the core only decides *when* and keeps the
 * metadata: after snapshot_threshold entries applied since the last snapshot it asks for one
 * (RAFT_UPDATE_SNAPSHOT_WANTED at the last applied index, with the configuration as of that
 * index, §5.1 "the latest configuration as of the last included index"); once the host reports
 * SNAPSHOT_TAKEN, the log is compacted up to index - snapshot_trailing: a few entries stay so a
 * follower slightly behind still gets entries instead of a whole snapshot (§5.1.3).
 *
 * A follower whose next entry was compacted away gets an InstallSnapshot (§5.3): the core names
 * the snapshot (metadata), the host attaches its data. The receiver keeps its log if it already
 * has the snapshot's last entry ("If the follower already has the entry ... it retains the
 * entries following it"), else it discards the log, moves commit and applied to the snapshot
 * and hands the snapshot to the host to persist and load. It acknowledges only once the host
 * reports PERSISTED_SNAPSHOT; until then nothing after the snapshot is applied or acknowledged.
 *
 * Called by raft.c (events, finalize) and raft_replication.c (sending). */
#include <errno.h>
#include <string.h>

#include "raft_internal.h"

void raft_snapshot_conf_at(raft_t *r, raft_index_t index, raft_conf_t *ret) {
    const raft_log_t *l = &r->log;
    raft_index_t floor = l->snapshot.index > l->offset ? l->snapshot.index : l->offset;
    if (index > raft_log_last(l))
        index = raft_log_last(l);
    for (raft_index_t i = index; i > floor; i--) {
        const raft_entry_t *e = raft_log_get(l, i);
        if (e->type == RAFT_ENTRY_CONF &&
            raft_conf_change_decode(e->data, e->len, NULL, NULL, ret) == 0)
            return;
    }
    *ret = l->snapshot.conf;
}

void raft_snapshot_maybe_want(raft_t *r) {
    if (!r->cfg.snapshot_threshold || r->snapshot_asked || r->installing)
        return;
    if (r->applied < r->log.snapshot.index + r->cfg.snapshot_threshold)
        return;
    raft_snapshot_meta_t *w = &r->upd->snapshot_wanted;
    w->index = r->applied;
    if (raft_log_term(&r->log, w->index, &w->term) < 0)
        return;
    raft_snapshot_conf_at(r, w->index, &w->conf);
    r->upd->flags |= RAFT_UPDATE_SNAPSHOT_WANTED;
    r->snapshot_asked = true;
}

/* §5.1: "Once a server completes writing a snapshot, it may delete all log entries up through
 * the last included index, as well as any prior snapshot." — minus the trailing entries. */
int raft_snapshot_taken(raft_t *r, const raft_snapshot_meta_t *meta) {
    raft_log_t *l = &r->log;
    r->snapshot_asked = false;
    if (meta->index <= l->snapshot.index)
        return -EALREADY; /* stale (an installed snapshot overtook it) */
    if (meta->index > r->applied || !raft_log_match(l, meta->index, meta->term))
        return -EINVAL;
    raft_snapshot_meta_t s = {.index = meta->index, .term = meta->term};
    raft_snapshot_conf_at(r, meta->index, &s.conf);
    l->snapshot = s;
    raft_index_t upto =
        meta->index > r->cfg.snapshot_trailing ? meta->index - r->cfg.snapshot_trailing : 0;
    if (upto > l->stable)
        upto = l->stable;
    if (upto > l->offset) {
        raft_log_compact(l, upto);
        r->upd->flags |= RAFT_UPDATE_COMPACT;
        r->upd->compact_index = upto;
    }
    raft_trace(r, "snapshot taken index=%llu term=%llu, log now %llu..%llu",
               (unsigned long long)meta->index, (unsigned long long)meta->term,
               (unsigned long long)raft_log_first(l), (unsigned long long)raft_log_last(l));
    return 0;
}

/* §5.3: "the leader uses a new RPC called InstallSnapshot to send snapshots to followers that
 * are too far behind". */
void raft_snapshot_send(raft_t *r, raft_progress_t *p) {
    const raft_snapshot_meta_t *s = &r->log.snapshot;
    if (!s->index)
        return;
    raft_message_t *m = raft_send(r, p->id, RAFT_MSG_INSTALL_SNAPSHOT);
    m->install_snapshot.meta = *s;
    raft_progress_become_snapshot(p, s->index);
    raft_trace(r, "sending snapshot %llu/%llu to %llu", (unsigned long long)s->index,
               (unsigned long long)s->term, (unsigned long long)p->id);
}

void raft_snapshot_recv_install(raft_t *r, const raft_message_t *m) {
    const raft_snapshot_meta_t *meta = &m->install_snapshot.meta;
    raft_log_t *l = &r->log;
    r->election_elapsed = 0;
    if (meta->index <= r->commit) {
        raft_index_t stable = raft_stable_index(r);
        raft_index_t a = r->commit < stable ? r->commit : stable;
        if (a) {
            raft_message_t *out = raft_send(r, m->from, RAFT_MSG_APPEND_ENTRIES_RESULT);
            out->append_entries_result.index = a;
        }
        return;
    }
    if (raft_log_match(l, meta->index, meta->term)) {
        /* We have the snapshot's last entry: keep the log, only commit up to it. */
        if (meta->index > r->verified)
            r->verified = meta->index;
        raft_replication_commit_to(r, meta->index);
        r->ack_owed = true;
        raft_replication_send_ack(r);
        return;
    }
    raft_trace(r, "installing snapshot %llu/%llu from %llu (log was %llu..%llu)",
               (unsigned long long)meta->index, (unsigned long long)meta->term,
               (unsigned long long)m->from, (unsigned long long)raft_log_first(l),
               (unsigned long long)raft_log_last(l));
    raft_log_restore(l, meta);
    r->installing = true;
    r->snapshot_asked = false;
    r->commit = meta->index;
    r->applied = meta->index;
    r->verified = meta->index;
    r->ack_owed = true;
    raft_membership_reload(r);
    raft_update_t *u = r->upd;
    u->flags |= RAFT_UPDATE_SNAPSHOT;
    u->snapshot.meta = *meta;
    u->snapshot.data = m->install_snapshot.data;
    u->snapshot.len = m->install_snapshot.len;
}

int raft_snapshot_persisted(raft_t *r, raft_index_t index, raft_term_t term) {
    if (!r->installing || index != r->log.snapshot.index || term != r->log.snapshot.term)
        return -EALREADY; /* an older install, overtaken by a newer one */
    r->installing = false;
    if (r->log.stable < index)
        r->log.stable = index;
    raft_replication_send_ack(r);
    return 0;
}
