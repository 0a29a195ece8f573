/* raft_codec — proto/raft.proto (package shoal.raft) to and from the core's C structs, and the
 * validation of everything decoded.
 *
 * Messages come from the network and records from disk: neither is trusted. Decoders unpack
 * with protobuf-c into the caller's arena, convert, then validate the invariants the core relies
 * on (raft_message_validate()): non-zero distinct ids, terms that do not run ahead of the
 * message's term, contiguous entry indexes that do not overflow, well-formed configuration
 * entries, bounded sizes. Anything else is -EINVAL and the message is dropped — the core never
 * asserts on input (tests/fuzz/fuzz_store_raft.c).
 *
 * Encoders build the protobuf messages in the arena, pointing at the C structs' memory (no
 * copies), and pack into the arena. Called by the host (store daemon, tests/sim) and by the core
 * for configuration entries. */
#include <errno.h>
#include <string.h>

#include "raft.h"
#include "raft.pb-c.h"

static int conf_from_pb(const Shoal__Raft__Configuration *pc, raft_conf_t *c) {
    memset(c, 0, sizeof *c);
    if (!pc)
        return 0;
    if (pc->n_voters > RAFT_MAX_MEMBERS || pc->n_learners > RAFT_MAX_MEMBERS)
        return -EINVAL;
    c->n_voters = (uint32_t)pc->n_voters;
    c->n_learners = (uint32_t)pc->n_learners;
    for (size_t i = 0; i < pc->n_voters; i++)
        c->voters[i] = pc->voters[i];
    for (size_t i = 0; i < pc->n_learners; i++)
        c->learners[i] = pc->learners[i];
    return raft_conf_check(c);
}

static void conf_to_pb(const raft_conf_t *c, Shoal__Raft__Configuration *pc) {
    shoal__raft__configuration__init(pc);
    pc->n_voters = c->n_voters;
    pc->voters = (uint64_t *)c->voters;
    pc->n_learners = c->n_learners;
    pc->learners = (uint64_t *)c->learners;
}

static int meta_from_pb(const Shoal__Raft__SnapshotMeta *pm, raft_snapshot_meta_t *m) {
    memset(m, 0, sizeof *m);
    if (!pm)
        return -EINVAL;
    m->index = pm->index;
    m->term = pm->term;
    if ((m->index == 0) != (m->term == 0))
        return -EINVAL;
    return conf_from_pb(pm->conf, &m->conf);
}

static void meta_to_pb(const raft_snapshot_meta_t *m, Shoal__Raft__SnapshotMeta *pm,
                       Shoal__Raft__Configuration *pc) {
    shoal__raft__snapshot_meta__init(pm);
    pm->index = m->index;
    pm->term = m->term;
    conf_to_pb(&m->conf, pc);
    pm->conf = pc;
}

static void entry_to_pb(const raft_entry_t *e, Shoal__Raft__Entry *pe) {
    shoal__raft__entry__init(pe);
    pe->index = e->index;
    pe->term = e->term;
    pe->type = e->type == RAFT_ENTRY_CONF ? SHOAL__RAFT__ENTRY_TYPE__ENTRY_CONF
                                          : SHOAL__RAFT__ENTRY_TYPE__ENTRY_NORMAL;
    pe->data.len = e->len;
    pe->data.data = (uint8_t *)e->data;
}

static int entry_from_pb(const Shoal__Raft__Entry *pe, raft_entry_t *e) {
    if (!pe)
        return -EINVAL;
    if (pe->type != SHOAL__RAFT__ENTRY_TYPE__ENTRY_NORMAL &&
        pe->type != SHOAL__RAFT__ENTRY_TYPE__ENTRY_CONF)
        return -EINVAL;
    if (pe->data.len > RAFT_MAX_ENTRY_BYTES)
        return -EINVAL;
    e->index = pe->index;
    e->term = pe->term;
    e->type = pe->type == SHOAL__RAFT__ENTRY_TYPE__ENTRY_CONF ? RAFT_ENTRY_CONF : RAFT_ENTRY_NORMAL;
    e->data = pe->data.len ? pe->data.data : NULL;
    e->len = pe->data.len;
    return 0;
}

static bool too_big(uint64_t v) {
    return v > RAFT_MAX_INDEX;
}

static int entry_check(const raft_entry_t *e) {
    if (!e->index || !e->term || too_big(e->index) || too_big(e->term) ||
        e->type > RAFT_ENTRY_CONF || e->len > RAFT_MAX_ENTRY_BYTES || (e->len && !e->data))
        return -EINVAL;
    if (e->type == RAFT_ENTRY_CONF &&
        raft_conf_change_decode(e->data, e->len, NULL, NULL, NULL) < 0)
        return -EINVAL;
    return 0;
}

int raft_message_validate(const raft_message_t *m) {
    if (!m || !m->from || !m->to || m->from == m->to || too_big(m->term))
        return -EINVAL;
    switch (m->type) {
    case RAFT_MSG_REQUEST_VOTE: {
        const __typeof__(m->request_vote) *b = &m->request_vote;
        if (!m->term || b->last_term > m->term || (b->last_index == 0) != (b->last_term == 0) ||
            too_big(b->last_index))
            return -EINVAL;
        return 0;
    }
    case RAFT_MSG_REQUEST_VOTE_RESULT:
        return 0;
    case RAFT_MSG_APPEND_ENTRIES: {
        const __typeof__(m->append_entries) *b = &m->append_entries;
        if (!m->term || b->prev_term > m->term || (b->prev_index == 0) != (b->prev_term == 0))
            return -EINVAL;
        if (b->n_entries > RAFT_MAX_MSG_ENTRIES || (b->n_entries && !b->entries) ||
            too_big(b->prev_index) || too_big(b->commit))
            return -EINVAL;
        raft_term_t t = b->prev_term;
        for (uint32_t k = 0; k < b->n_entries; k++) {
            const raft_entry_t *e = &b->entries[k];
            if (e->index != b->prev_index + 1 + k || e->term < t || e->term > m->term ||
                entry_check(e) < 0)
                return -EINVAL;
            t = e->term;
        }
        return 0;
    }
    case RAFT_MSG_APPEND_ENTRIES_RESULT: {
        const __typeof__(m->append_entries_result) *b = &m->append_entries_result;
        if (too_big(b->index))
            return -EINVAL;
        if (b->rejected && (b->hint_index > b->index || b->hint_term > m->term ||
                            (b->hint_index == 0 && b->hint_term != 0)))
            return -EINVAL;
        if (!b->rejected && (b->hint_index || b->hint_term))
            return -EINVAL;
        return 0;
    }
    case RAFT_MSG_INSTALL_SNAPSHOT: {
        const raft_snapshot_meta_t *s = &m->install_snapshot.meta;
        if (!m->term || !s->index || !s->term || s->term > m->term || too_big(s->index) ||
            raft_conf_check(&s->conf) < 0 || !s->conf.n_voters ||
            (m->install_snapshot.len && !m->install_snapshot.data))
            return -EINVAL;
        return 0;
    }
    case RAFT_MSG_TIMEOUT_NOW:
        return m->term ? 0 : -EINVAL;
    case RAFT_MSG_HEARTBEAT:
        return m->term && !too_big(m->heartbeat.commit) ? 0 : -EINVAL;
    case RAFT_MSG_HEARTBEAT_RESULT:
        return too_big(m->heartbeat_result.commit) ? -EINVAL : 0;
    }
    return -EINVAL;
}

static int pack(const ProtobufCMessage *pm, arena_t *a, uint8_t **ret, size_t *ret_len) {
    size_t len = protobuf_c_message_get_packed_size(pm);
    uint8_t *buf = arena_alloc(a, len ? len : 1);
    protobuf_c_message_pack(pm, buf);
    *ret = buf;
    *ret_len = len;
    return 0;
}

int raft_message_encode(const raft_message_t *m, arena_t *a, uint8_t **ret, size_t *ret_len) {
    Shoal__Raft__Message pm = SHOAL__RAFT__MESSAGE__INIT;
    pm.from = m->from;
    pm.to = m->to;
    pm.term = m->term;
    switch (m->type) {
    case RAFT_MSG_REQUEST_VOTE: {
        Shoal__Raft__RequestVote *b = arena_alloc(a, sizeof *b);
        shoal__raft__request_vote__init(b);
        b->last_index = m->request_vote.last_index;
        b->last_term = m->request_vote.last_term;
        b->pre_vote = m->request_vote.pre_vote;
        b->transfer = m->request_vote.transfer;
        pm.body_case = SHOAL__RAFT__MESSAGE__BODY_REQUEST_VOTE;
        pm.request_vote = b;
        break;
    }
    case RAFT_MSG_REQUEST_VOTE_RESULT: {
        Shoal__Raft__RequestVoteResult *b = arena_alloc(a, sizeof *b);
        shoal__raft__request_vote_result__init(b);
        b->granted = m->request_vote_result.granted;
        b->pre_vote = m->request_vote_result.pre_vote;
        pm.body_case = SHOAL__RAFT__MESSAGE__BODY_REQUEST_VOTE_RESULT;
        pm.request_vote_result = b;
        break;
    }
    case RAFT_MSG_APPEND_ENTRIES: {
        Shoal__Raft__AppendEntries *b = arena_alloc(a, sizeof *b);
        shoal__raft__append_entries__init(b);
        b->prev_index = m->append_entries.prev_index;
        b->prev_term = m->append_entries.prev_term;
        b->commit = m->append_entries.commit;
        uint32_t n = m->append_entries.n_entries;
        if (n) {
            Shoal__Raft__Entry *pe = arena_alloc(a, n * sizeof *pe);
            b->entries = arena_alloc(a, n * sizeof *b->entries);
            for (uint32_t k = 0; k < n; k++) {
                entry_to_pb(&m->append_entries.entries[k], &pe[k]);
                b->entries[k] = &pe[k];
            }
            b->n_entries = n;
        }
        pm.body_case = SHOAL__RAFT__MESSAGE__BODY_APPEND_ENTRIES;
        pm.append_entries = b;
        break;
    }
    case RAFT_MSG_APPEND_ENTRIES_RESULT: {
        Shoal__Raft__AppendEntriesResult *b = arena_alloc(a, sizeof *b);
        shoal__raft__append_entries_result__init(b);
        b->rejected = m->append_entries_result.rejected;
        b->index = m->append_entries_result.index;
        b->hint_index = m->append_entries_result.hint_index;
        b->hint_term = m->append_entries_result.hint_term;
        pm.body_case = SHOAL__RAFT__MESSAGE__BODY_APPEND_ENTRIES_RESULT;
        pm.append_entries_result = b;
        break;
    }
    case RAFT_MSG_INSTALL_SNAPSHOT: {
        Shoal__Raft__InstallSnapshot *b = arena_alloc(a, sizeof *b);
        Shoal__Raft__SnapshotMeta *sm = arena_alloc(a, sizeof *sm);
        Shoal__Raft__Configuration *pc = arena_alloc(a, sizeof *pc);
        shoal__raft__install_snapshot__init(b);
        meta_to_pb(&m->install_snapshot.meta, sm, pc);
        b->meta = sm;
        b->data.len = m->install_snapshot.len;
        b->data.data = (uint8_t *)m->install_snapshot.data;
        pm.body_case = SHOAL__RAFT__MESSAGE__BODY_INSTALL_SNAPSHOT;
        pm.install_snapshot = b;
        break;
    }
    case RAFT_MSG_TIMEOUT_NOW: {
        Shoal__Raft__TimeoutNow *b = arena_alloc(a, sizeof *b);
        shoal__raft__timeout_now__init(b);
        pm.body_case = SHOAL__RAFT__MESSAGE__BODY_TIMEOUT_NOW;
        pm.timeout_now = b;
        break;
    }
    case RAFT_MSG_HEARTBEAT: {
        Shoal__Raft__Heartbeat *b = arena_alloc(a, sizeof *b);
        shoal__raft__heartbeat__init(b);
        b->commit = m->heartbeat.commit;
        b->ctx = m->heartbeat.ctx;
        pm.body_case = SHOAL__RAFT__MESSAGE__BODY_HEARTBEAT;
        pm.heartbeat = b;
        break;
    }
    case RAFT_MSG_HEARTBEAT_RESULT: {
        Shoal__Raft__HeartbeatResult *b = arena_alloc(a, sizeof *b);
        shoal__raft__heartbeat_result__init(b);
        b->ctx = m->heartbeat_result.ctx;
        b->commit = m->heartbeat_result.commit;
        pm.body_case = SHOAL__RAFT__MESSAGE__BODY_HEARTBEAT_RESULT;
        pm.heartbeat_result = b;
        break;
    }
    default:
        return -EINVAL;
    }
    return pack(&pm.base, a, ret, ret_len);
}

int raft_message_decode(const uint8_t *buf, size_t len, arena_t *a, raft_message_t *ret) {
    memset(ret, 0, sizeof *ret);
    if (!buf || len > RAFT_MAX_MESSAGE_SIZE)
        return -EINVAL;
    Shoal__Raft__Message *pm = (Shoal__Raft__Message *)protobuf_c_message_unpack(
        &shoal__raft__message__descriptor, arena_allocator(a), len, buf);
    if (!pm)
        return -EINVAL;
    ret->from = pm->from;
    ret->to = pm->to;
    ret->term = pm->term;
    switch (pm->body_case) {
    case SHOAL__RAFT__MESSAGE__BODY_REQUEST_VOTE: {
        const Shoal__Raft__RequestVote *b = pm->request_vote;
        if (!b)
            return -EINVAL;
        ret->type = RAFT_MSG_REQUEST_VOTE;
        ret->request_vote.last_index = b->last_index;
        ret->request_vote.last_term = b->last_term;
        ret->request_vote.pre_vote = b->pre_vote;
        ret->request_vote.transfer = b->transfer;
        break;
    }
    case SHOAL__RAFT__MESSAGE__BODY_REQUEST_VOTE_RESULT: {
        const Shoal__Raft__RequestVoteResult *b = pm->request_vote_result;
        if (!b)
            return -EINVAL;
        ret->type = RAFT_MSG_REQUEST_VOTE_RESULT;
        ret->request_vote_result.granted = b->granted;
        ret->request_vote_result.pre_vote = b->pre_vote;
        break;
    }
    case SHOAL__RAFT__MESSAGE__BODY_APPEND_ENTRIES: {
        const Shoal__Raft__AppendEntries *b = pm->append_entries;
        if (!b || b->n_entries > RAFT_MAX_MSG_ENTRIES)
            return -EINVAL;
        ret->type = RAFT_MSG_APPEND_ENTRIES;
        ret->append_entries.prev_index = b->prev_index;
        ret->append_entries.prev_term = b->prev_term;
        ret->append_entries.commit = b->commit;
        if (b->n_entries) {
            raft_entry_t *e = arena_alloc(a, b->n_entries * sizeof *e);
            for (size_t k = 0; k < b->n_entries; k++)
                if (entry_from_pb(b->entries[k], &e[k]) < 0)
                    return -EINVAL;
            ret->append_entries.entries = e;
            ret->append_entries.n_entries = (uint32_t)b->n_entries;
        }
        break;
    }
    case SHOAL__RAFT__MESSAGE__BODY_APPEND_ENTRIES_RESULT: {
        const Shoal__Raft__AppendEntriesResult *b = pm->append_entries_result;
        if (!b)
            return -EINVAL;
        ret->type = RAFT_MSG_APPEND_ENTRIES_RESULT;
        ret->append_entries_result.rejected = b->rejected;
        ret->append_entries_result.index = b->index;
        ret->append_entries_result.hint_index = b->hint_index;
        ret->append_entries_result.hint_term = b->hint_term;
        break;
    }
    case SHOAL__RAFT__MESSAGE__BODY_INSTALL_SNAPSHOT: {
        const Shoal__Raft__InstallSnapshot *b = pm->install_snapshot;
        if (!b || meta_from_pb(b->meta, &ret->install_snapshot.meta) < 0)
            return -EINVAL;
        ret->type = RAFT_MSG_INSTALL_SNAPSHOT;
        ret->install_snapshot.data = b->data.len ? b->data.data : NULL;
        ret->install_snapshot.len = b->data.len;
        break;
    }
    case SHOAL__RAFT__MESSAGE__BODY_TIMEOUT_NOW:
        ret->type = RAFT_MSG_TIMEOUT_NOW;
        break;
    case SHOAL__RAFT__MESSAGE__BODY_HEARTBEAT: {
        const Shoal__Raft__Heartbeat *b = pm->heartbeat;
        if (!b)
            return -EINVAL;
        ret->type = RAFT_MSG_HEARTBEAT;
        ret->heartbeat.commit = b->commit;
        ret->heartbeat.ctx = b->ctx;
        break;
    }
    case SHOAL__RAFT__MESSAGE__BODY_HEARTBEAT_RESULT: {
        const Shoal__Raft__HeartbeatResult *b = pm->heartbeat_result;
        if (!b)
            return -EINVAL;
        ret->type = RAFT_MSG_HEARTBEAT_RESULT;
        ret->heartbeat_result.ctx = b->ctx;
        ret->heartbeat_result.commit = b->commit;
        break;
    }
    default:
        return -EINVAL;
    }
    return raft_message_validate(ret);
}

/* ---- records ---- */

int raft_entry_encode(const raft_entry_t *e, arena_t *a, uint8_t **ret, size_t *ret_len) {
    if (entry_check(e) < 0)
        return -EINVAL;
    Shoal__Raft__Entry pe;
    entry_to_pb(e, &pe);
    return pack(&pe.base, a, ret, ret_len);
}

int raft_entry_decode(const uint8_t *buf, size_t len, arena_t *a, raft_entry_t *ret) {
    memset(ret, 0, sizeof *ret);
    if (!buf && len)
        return -EINVAL;
    Shoal__Raft__Entry *pe = (Shoal__Raft__Entry *)protobuf_c_message_unpack(
        &shoal__raft__entry__descriptor, arena_allocator(a), len, buf);
    if (!pe || entry_from_pb(pe, ret) < 0 || entry_check(ret) < 0)
        return -EINVAL;
    return 0;
}

int raft_hard_state_encode(const raft_hard_state_t *hs, arena_t *a, uint8_t **ret,
                           size_t *ret_len) {
    Shoal__Raft__HardState ph = SHOAL__RAFT__HARD_STATE__INIT;
    ph.term = hs->term;
    ph.vote = hs->vote;
    ph.commit = hs->commit;
    return pack(&ph.base, a, ret, ret_len);
}

int raft_hard_state_decode(const uint8_t *buf, size_t len, raft_hard_state_t *ret) {
    memset(ret, 0, sizeof *ret);
    if (!buf && len)
        return -EINVAL;
    Shoal__Raft__HardState *ph = (Shoal__Raft__HardState *)protobuf_c_message_unpack(
        &shoal__raft__hard_state__descriptor, NULL, len, buf);
    if (!ph)
        return -EINVAL;
    ret->term = ph->term;
    ret->vote = ph->vote;
    ret->commit = ph->commit;
    protobuf_c_message_free_unpacked(&ph->base, NULL);
    /* a commit implies a term in which something was committed */
    return ret->commit && !ret->term ? -EINVAL : 0;
}

int raft_snapshot_meta_encode(const raft_snapshot_meta_t *m, arena_t *a, uint8_t **ret,
                              size_t *ret_len) {
    if (raft_conf_check(&m->conf) < 0)
        return -EINVAL;
    Shoal__Raft__SnapshotMeta pm;
    Shoal__Raft__Configuration pc;
    meta_to_pb(m, &pm, &pc);
    return pack(&pm.base, a, ret, ret_len);
}

int raft_snapshot_meta_decode(const uint8_t *buf, size_t len, raft_snapshot_meta_t *ret) {
    memset(ret, 0, sizeof *ret);
    if (!buf && len)
        return -EINVAL;
    Shoal__Raft__SnapshotMeta *pm = (Shoal__Raft__SnapshotMeta *)protobuf_c_message_unpack(
        &shoal__raft__snapshot_meta__descriptor, NULL, len, buf);
    if (!pm)
        return -EINVAL;
    int rc = meta_from_pb(pm, ret);
    protobuf_c_message_free_unpacked(&pm->base, NULL);
    if (rc == 0 && ret->index && !ret->conf.n_voters)
        rc = -EINVAL;
    if (rc < 0)
        memset(ret, 0, sizeof *ret);
    return rc;
}

int raft_conf_change_encode(raft_change_type_t type, raft_id_t node, const raft_conf_t *conf,
                            arena_t *a, uint8_t **ret, size_t *ret_len) {
    if (type > RAFT_CHANGE_REMOVE || raft_conf_check(conf) < 0)
        return -EINVAL;
    Shoal__Raft__ConfChange pc = SHOAL__RAFT__CONF_CHANGE__INIT;
    Shoal__Raft__Configuration c;
    conf_to_pb(conf, &c);
    pc.type = (Shoal__Raft__ChangeType)type;
    pc.node_id = node;
    pc.conf = &c;
    return pack(&pc.base, a, ret, ret_len);
}

int raft_conf_change_decode(const uint8_t *buf, size_t len, raft_change_type_t *ret_type,
                            raft_id_t *ret_node, raft_conf_t *ret_conf) {
    if (!buf && len)
        return -EINVAL;
    Shoal__Raft__ConfChange *pc = (Shoal__Raft__ConfChange *)protobuf_c_message_unpack(
        &shoal__raft__conf_change__descriptor, NULL, len, buf);
    if (!pc)
        return -EINVAL;
    raft_conf_t c;
    int rc = -EINVAL;
    if ((int)pc->type >= RAFT_CHANGE_BOOTSTRAP && (int)pc->type <= RAFT_CHANGE_REMOVE && pc->conf &&
        conf_from_pb(pc->conf, &c) == 0 && c.n_voters) {
        raft_id_t node = pc->node_id;
        switch ((raft_change_type_t)pc->type) {
        case RAFT_CHANGE_BOOTSTRAP:
            rc = node ? -EINVAL : 0;
            break;
        case RAFT_CHANGE_ADD_LEARNER:
            rc = raft_conf_is_learner(&c, node) ? 0 : -EINVAL;
            break;
        case RAFT_CHANGE_PROMOTE:
            rc = raft_conf_is_voter(&c, node) ? 0 : -EINVAL;
            break;
        case RAFT_CHANGE_REMOVE:
            rc = node && !raft_conf_is_member(&c, node) ? 0 : -EINVAL;
            break;
        }
        if (rc == 0) {
            if (ret_type)
                *ret_type = (raft_change_type_t)pc->type;
            if (ret_node)
                *ret_node = node;
            if (ret_conf)
                *ret_conf = c;
        }
    }
    protobuf_c_message_free_unpacked(&pc->base, NULL);
    return rc;
}
