/* Unit tests of shoal-store's Raft core (services/store/raft*.c) on a small in-process cluster:
 * a fixture that carries out updates like the host does (persist, send through the protobuf
 * codec, apply), with a FIFO network whose links can be cut and whose messages a test can drop
 * one by one. Persistence is synchronous unless a test holds it back. Each test sets up one
 * scenario of the Raft dissertation and asserts the behaviour that would break with the feature:
 * elections, pre-vote, check-quorum, log repair, the current-term commit rule (Figure 8),
 * snapshots, membership changes, leadership transfer, ReadIndex, durability of acknowledgements
 * and the rejection of malformed input. tests/sim checks the same core under random faults. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "../../services/store/raft.h"

#define NMAX    6
#define LOGMAX  512
#define DATAMAX 128

typedef struct tentry {
    uint64_t index, term;
    raft_entry_type_t type;
    size_t len;
    uint8_t data[DATAMAX];
} tentry_t;

typedef struct tnode {
    raft_t *r;
    bool up;
    uint64_t rng;
    raft_hard_state_t hs;
    tentry_t log[LOGMAX]; /* durable log, by index; valid in [first, last] */
    uint64_t first, last;
    raft_snapshot_meta_t snap; /* latest snapshot (taken or installed) */
    uint64_t snap_hash;
    uint64_t applied, hash;
    int snapshots_installed, snapshots_taken;
    raft_read_state_t reads[64];
    int n_reads;
    uint64_t proposed_index, proposed_term;
    struct {
        bool snapshot;
        uint64_t index, term;
    } pending[256]; /* completed writes not yet reported (when held) */
    int n_pending;
} tnode_t;

typedef struct tmsg {
    int from, to;
    uint8_t *buf;
    size_t len;
} tmsg_t;

typedef struct fx {
    tnode_t n[NMAX + 1];
    int count;
    tmsg_t q[8192];
    size_t head, tail;
    bool cut[NMAX + 1][NMAX + 1];
    bool hold_disk[NMAX + 1];
    raft_config_t cfg;
    arena_t *a;
} fx_t;

static uint64_t fx_rand(void *arg) {
    uint64_t *s = arg;
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static uint64_t mix(uint64_t h, const raft_entry_t *e) {
    h = h * 1099511628211ULL ^ e->index ^ e->term << 20;
    for (size_t i = 0; i < e->len; i++)
        h = (h ^ e->data[i]) * 1099511628211ULL;
    return h;
}

static int fx_step(fx_t *f, int id, const raft_event_t *ev);

static void report_persisted(fx_t *f, int id) {
    tnode_t *n = &f->n[id];
    while (n->n_pending && n->up) {
        typeof(n->pending[0]) p = n->pending[0];
        memmove(n->pending, n->pending + 1, --n->n_pending * sizeof n->pending[0]);
        raft_event_t ev = {.type = p.snapshot ? RAFT_EVENT_PERSISTED_SNAPSHOT
                                              : RAFT_EVENT_PERSISTED_ENTRIES};
        if (p.snapshot) {
            ev.persisted_snapshot.index = p.index;
            ev.persisted_snapshot.term = p.term;
        } else {
            ev.persisted_entries.index = p.index;
            ev.persisted_entries.term = p.term;
        }
        fx_step(f, id, &ev);
    }
}

static void handle(fx_t *f, int id, const raft_update_t *u) {
    tnode_t *n = &f->n[id];
    if (u->flags & RAFT_UPDATE_HARD_STATE)
        n->hs = u->hard_state;
    if (u->flags & RAFT_UPDATE_SNAPSHOT) {
        assert_int_equal(u->snapshot.len, 16);
        n->snap = u->snapshot.meta;
        memcpy(&n->applied, u->snapshot.data, 8);
        memcpy(&n->hash, u->snapshot.data + 8, 8);
        n->snap_hash = n->hash;
        n->first = n->last = u->snapshot.meta.index;
        n->snapshots_installed++;
        n->pending[n->n_pending].snapshot = true;
        n->pending[n->n_pending].index = u->snapshot.meta.index;
        n->pending[n->n_pending++].term = u->snapshot.meta.term;
    }
    if (u->flags & RAFT_UPDATE_ENTRIES) {
        n->last = u->entries.first_index - 1;
        for (uint32_t i = 0; i < u->entries.n; i++) {
            const raft_entry_t *e = &u->entries.batch[i];
            assert_true(e->index < LOGMAX && e->len <= DATAMAX);
            tentry_t *t = &n->log[e->index];
            t->index = e->index;
            t->term = e->term;
            t->type = e->type;
            t->len = e->len;
            if (e->len)
                memcpy(t->data, e->data, e->len);
            n->last = e->index;
        }
        if (!n->first)
            n->first = 1;
        if (u->entries.n) {
            n->pending[n->n_pending].snapshot = false;
            n->pending[n->n_pending].index = n->last;
            n->pending[n->n_pending++].term = n->log[n->last].term;
        }
    }
    if (u->flags & RAFT_UPDATE_COMPACT)
        n->first = u->compact_index;
    for (uint32_t i = 0; i < u->messages.n; i++) {
        raft_message_t m = u->messages.batch[i];
        uint8_t snapdata[16];
        if (m.type == RAFT_MSG_INSTALL_SNAPSHOT) {
            assert_int_equal(m.install_snapshot.meta.index, n->snap.index);
            memcpy(snapdata, &n->snap.index, 8);
            memcpy(snapdata + 8, &n->snap_hash, 8);
            m.install_snapshot.data = snapdata;
            m.install_snapshot.len = 16;
        }
        uint8_t *buf;
        size_t len;
        assert_int_equal(raft_message_encode(&m, f->a, &buf, &len), 0);
        assert_true(f->tail < sizeof f->q / sizeof f->q[0]);
        tmsg_t *q = &f->q[f->tail++];
        q->from = id;
        q->to = (int)m.to;
        q->len = len;
        q->buf = malloc(len ? len : 1);
        memcpy(q->buf, buf, len);
    }
    for (uint32_t i = 0; i < u->committed.n; i++) {
        const raft_entry_t *e = &u->committed.batch[i];
        assert_int_equal(e->index, n->applied + 1);
        n->applied = e->index;
        n->hash = mix(n->hash, e);
    }
    for (uint32_t i = 0; i < u->reads.n && n->n_reads < 64; i++)
        n->reads[n->n_reads++] = u->reads.batch[i];
    if (u->flags & RAFT_UPDATE_PROPOSED) {
        n->proposed_index = u->proposed.last_index;
        n->proposed_term = u->proposed.term;
    }
    if (u->flags & RAFT_UPDATE_SNAPSHOT_WANTED) {
        raft_snapshot_meta_t want = u->snapshot_wanted;
        assert_int_equal(want.index, n->applied);
        n->snap = want;
        n->snap_hash = n->hash;
        n->snapshots_taken++;
        raft_event_t ev = {.type = RAFT_EVENT_SNAPSHOT_TAKEN};
        ev.snapshot_taken.meta = want;
        assert_int_equal(fx_step(f, id, &ev), 0);
    }
}

static int fx_step(fx_t *f, int id, const raft_event_t *ev) {
    raft_update_t u;
    int rc = raft_step(f->n[id].r, ev, &u);
    handle(f, id, &u);
    if (!f->hold_disk[id])
        report_persisted(f, id);
    return rc;
}

static void fx_start_node(fx_t *f, int id, const raft_conf_t *boot, const raft_entry_t *log,
                          uint32_t n_log, raft_hard_state_t hs) {
    tnode_t *n = &f->n[id];
    raft_config_t cfg = f->cfg;
    cfg.id = (raft_id_t)id;
    n->rng = (uint64_t)id * 7919;
    cfg.rand_arg = &n->rng;
    n->r = raft_new(&cfg);
    assert_non_null(n->r);
    n->up = true;
    n->hs = hs;
    for (uint32_t i = 0; i < n_log; i++) {
        tentry_t *t = &n->log[log[i].index];
        t->index = log[i].index;
        t->term = log[i].term;
        t->type = log[i].type;
        t->len = log[i].len;
        if (log[i].len)
            memcpy(t->data, log[i].data, log[i].len);
        n->last = log[i].index;
        n->first = 1;
    }
    raft_event_t ev = {.type = RAFT_EVENT_START};
    ev.start.hard_state = hs;
    ev.start.entries = log;
    ev.start.n_entries = n_log;
    ev.start.bootstrap = boot;
    assert_int_equal(fx_step(f, id, &ev), 0);
}

static raft_conf_t voters(int count) {
    raft_conf_t c = {0};
    for (int i = 1; i <= count; i++)
        c.voters[c.n_voters++] = (raft_id_t)i;
    return c;
}

static fx_t *fx_new(int count, bool pre_vote, bool check_quorum) {
    fx_t *f = calloc(1, sizeof *f);
    f->count = count;
    f->a = arena_new(0);
    f->cfg = (raft_config_t){.election_ticks_min = 10,
                             .election_ticks_max = 20,
                             .heartbeat_ticks = 2,
                             .pre_vote = pre_vote,
                             .check_quorum = check_quorum,
                             .max_inflight = 8,
                             .max_entries_per_append = 16,
                             .rand = fx_rand};
    return f;
}

static void fx_boot(fx_t *f) {
    raft_conf_t c = voters(f->count);
    for (int i = 1; i <= f->count; i++)
        fx_start_node(f, i, &c, NULL, 0, (raft_hard_state_t){0});
}

static void fx_free(fx_t *f) {
    for (int i = 1; i <= NMAX; i++)
        raft_destroy(&f->n[i].r);
    for (size_t i = f->head; i < f->tail; i++)
        free(f->q[i].buf);
    arena_destroy(&f->a);
    free(f);
}

typedef bool (*fx_filter_t)(fx_t *f, const tmsg_t *q, const raft_message_t *m, void *arg);

/* Delivers queued messages (and what they cause) until none are left; returns how many. */
static int fx_deliver(fx_t *f, fx_filter_t keep, void *arg) {
    int delivered = 0;
    while (f->head < f->tail) {
        tmsg_t q = f->q[f->head++];
        if (f->head == f->tail)
            f->head = f->tail = 0;
        raft_message_t m;
        arena_reset(f->a);
        assert_int_equal(raft_message_decode(q.buf, q.len, f->a, &m), 0);
        bool ok = q.to >= 1 && q.to <= NMAX && f->n[q.to].up && !f->cut[q.from][q.to] &&
                  (!keep || keep(f, &q, &m, arg));
        if (ok) {
            raft_event_t ev = {.type = RAFT_EVENT_RECEIVE, .receive.message = &m};
            assert_int_equal(fx_step(f, q.to, &ev), 0);
            delivered++;
        }
        free(q.buf);
    }
    return delivered;
}

static void fx_drop_all(fx_t *f) {
    for (size_t i = f->head; i < f->tail; i++)
        free(f->q[i].buf);
    f->head = f->tail = 0;
}

static void fx_tick(fx_t *f, int id) {
    raft_event_t ev = {.type = RAFT_EVENT_TICK};
    assert_int_equal(fx_step(f, id, &ev), 0);
}

static raft_status_t st(fx_t *f, int id) {
    raft_status_t s;
    raft_status(f->n[id].r, &s);
    return s;
}

static void isolate(fx_t *f, int id, bool on) {
    for (int i = 1; i <= NMAX; i++)
        f->cut[id][i] = f->cut[i][id] = on;
}

/* Ticks `id` (only it) and lets the cluster talk until it leads. */
static void fx_elect(fx_t *f, int id) {
    for (int t = 0; t < 300 && st(f, id).role != RAFT_LEADER; t++) {
        fx_tick(f, id);
        fx_deliver(f, NULL, NULL);
    }
    assert_int_equal(st(f, id).role, RAFT_LEADER);
}

/* Heartbeat rounds: the leader ticks, everyone talks. */
static void fx_heartbeats(fx_t *f, int leader, int rounds) {
    for (int i = 0; i < rounds; i++) {
        fx_tick(f, leader);
        fx_tick(f, leader);
        fx_deliver(f, NULL, NULL);
    }
}

static int fx_propose(fx_t *f, int id, const char *data) {
    raft_entry_t e = {
        .type = RAFT_ENTRY_NORMAL, .data = (const uint8_t *)data, .len = strlen(data)};
    raft_event_t ev = {.type = RAFT_EVENT_PROPOSE};
    ev.propose.entries = &e;
    ev.propose.n_entries = 1;
    return fx_step(f, id, &ev);
}

static int fx_conf(fx_t *f, int leader, raft_change_type_t type, int node) {
    raft_event_t ev = {.type = RAFT_EVENT_CONF_CHANGE};
    ev.conf_change.type = type;
    ev.conf_change.node = (raft_id_t)node;
    return fx_step(f, leader, &ev);
}

/* ---- tests ---- */

static void test_raft_elects_a_leader_in_three_member_cluster(void **state) {
    (void)state;
    fx_t *f = fx_new(3, true, true);
    fx_boot(f);
    fx_elect(f, 1);
    raft_status_t s1 = st(f, 1);
    assert_int_equal(s1.role, RAFT_LEADER);
    assert_int_equal(s1.term, 2);
    for (int i = 2; i <= 3; i++) {
        assert_int_equal(st(f, i).role, RAFT_FOLLOWER);
        assert_int_equal(st(f, i).leader, 1);
        assert_int_equal(st(f, i).term, 2);
        assert_int_equal(f->n[i].hs.vote, 1); /* the vote was persisted */
    }
    /* the leader's no-op commits and everyone applies it */
    fx_heartbeats(f, 1, 2);
    for (int i = 1; i <= 3; i++)
        assert_int_equal(f->n[i].applied, 2);
    fx_free(f);
}

static void test_raft_pre_vote_keeps_partitioned_member_from_raising_term(void **state) {
    (void)state;
    /* pre_vote, pre_vote + check_quorum, and plain Raft for contrast */
    for (int mode = 0; mode < 3; mode++) {
        bool pre_vote = mode < 2, check_quorum = mode == 1;
        fx_t *f = fx_new(3, pre_vote, check_quorum);
        fx_boot(f);
        fx_elect(f, 1);
        fx_heartbeats(f, 1, 2);
        uint64_t term = st(f, 1).term;
        isolate(f, 3, true);
        for (int t = 0; t < 100; t++) {
            fx_tick(f, 3);
            fx_deliver(f, NULL, NULL);
        }
        isolate(f, 3, false);
        if (!pre_vote) {
            /* plain Raft inflates the term and disrupts the cluster on return */
            assert_true(st(f, 3).term > term);
            for (int t = 0; t < 100 && st(f, 1).term == term; t++) {
                fx_tick(f, 3);
                fx_deliver(f, NULL, NULL);
            }
            assert_true(st(f, 1).term > term);
            fx_free(f);
            continue;
        }
        /* it never got a quorum of pre-votes, so its term never moved */
        assert_int_equal(st(f, 3).term, term);
        if (check_quorum) {
            /* back, it times out again before hearing from the leader: its pre-votes are
             * ignored by members inside the leader's lease */
            for (int t = 0; t < 30; t++) {
                fx_tick(f, 3);
                fx_deliver(f, NULL, NULL);
            }
            assert_int_equal(st(f, 1).role, RAFT_LEADER);
            assert_int_equal(st(f, 1).term, term);
        }
        fx_heartbeats(f, 1, 3);
        assert_int_equal(st(f, 1).role, RAFT_LEADER);
        assert_int_equal(st(f, 1).term, term);
        assert_int_equal(st(f, 3).leader, 1);
        assert_int_equal(st(f, 3).term, term);

        /* a member granting a pre-vote for term+1 keeps its own term and vote */
        raft_message_t pv = {.type = RAFT_MSG_REQUEST_VOTE, .from = 3, .to = 2, .term = term + 1};
        pv.request_vote.pre_vote = true;
        pv.request_vote.last_index = st(f, 3).last_index;
        pv.request_vote.last_term = term;
        raft_event_t ev = {.type = RAFT_EVENT_RECEIVE, .receive.message = &pv};
        raft_update_t u;
        assert_int_equal(raft_step(f->n[2].r, &ev, &u), 0);
        if (!check_quorum) {
            assert_int_equal(u.messages.n, 1);
            assert_true(u.messages.batch[0].request_vote_result.granted);
            assert_int_equal(u.messages.batch[0].term, term + 1);
        }
        assert_int_equal(st(f, 2).term, term);
        assert_int_equal(st(f, 2).vote, 1);
        assert_int_equal(st(f, 2).leader, 1);
        fx_free(f);
    }
}

static void test_raft_check_quorum_steps_down_isolated_leader(void **state) {
    (void)state;
    fx_t *f = fx_new(3, true, true);
    fx_boot(f);
    fx_elect(f, 1);
    fx_heartbeats(f, 1, 2);
    isolate(f, 1, true);
    for (int t = 0; t < 25 && st(f, 1).role == RAFT_LEADER; t++) {
        fx_tick(f, 1);
        fx_deliver(f, NULL, NULL);
    }
    assert_int_equal(st(f, 1).role, RAFT_FOLLOWER);
    assert_int_equal(st(f, 1).leader, 0);
    fx_free(f);

    /* without check-quorum the isolated leader keeps believing it leads */
    f = fx_new(3, true, false);
    fx_boot(f);
    fx_elect(f, 1);
    isolate(f, 1, true);
    for (int t = 0; t < 60; t++)
        fx_tick(f, 1);
    assert_int_equal(st(f, 1).role, RAFT_LEADER);
    fx_free(f);
}

static void test_raft_repairs_follower_with_conflicting_log(void **state) {
    (void)state;
    fx_t *f = fx_new(3, false, false);
    fx_boot(f);
    fx_elect(f, 1);
    fx_heartbeats(f, 1, 2);
    /* n1 appends entries nobody else gets */
    isolate(f, 1, true);
    assert_int_equal(fx_propose(f, 1, "lost-a"), 0);
    assert_int_equal(fx_propose(f, 1, "lost-b"), 0);
    assert_int_equal(fx_propose(f, 1, "lost-c"), 0);
    fx_drop_all(f);
    uint64_t lost_last = st(f, 1).last_index;
    /* n2 leads a new term and commits different entries at the same indexes */
    fx_elect(f, 2);
    assert_int_equal(fx_propose(f, 2, "kept-1"), 0);
    assert_int_equal(fx_propose(f, 2, "kept-2"), 0);
    fx_deliver(f, NULL, NULL);
    fx_heartbeats(f, 2, 2);
    /* n1 comes back: its conflicting suffix is replaced by the leader's */
    isolate(f, 1, false);
    fx_heartbeats(f, 2, 4);
    raft_status_t s1 = st(f, 1), s2 = st(f, 2);
    assert_int_equal(s1.role, RAFT_FOLLOWER);
    assert_int_equal(s1.last_index, s2.last_index);
    assert_int_equal(s1.commit, s2.commit);
    for (uint64_t i = 1; i <= s2.last_index; i++) {
        assert_int_equal(f->n[1].log[i].term, f->n[2].log[i].term);
        assert_memory_equal(f->n[1].log[i].data, f->n[2].log[i].data, f->n[2].log[i].len);
    }
    assert_true(lost_last >= 3);
    assert_int_equal(f->n[1].applied, f->n[2].applied);
    assert_int_equal(f->n[1].hash, f->n[2].hash);
    fx_free(f);
}

/* Drops every AppendEntries to n2 that carries entry 3 (the new leader's no-op). */
static bool hold_noop_from_n2(fx_t *f, const tmsg_t *q, const raft_message_t *m, void *arg) {
    (void)arg;
    if (q->to != 2 || m->type != RAFT_MSG_APPEND_ENTRIES || f->n[2].last < 2)
        return true; /* n2 must first reject and be probed back to get 2@t2 */
    for (uint32_t i = 0; i < m->append_entries.n_entries; i++)
        if (m->append_entries.entries[i].index >= 3)
            return false;
    return true;
}

static void test_raft_commits_only_current_term_entries_figure_8(void **state) {
    (void)state;
    /* Figure 3.7/3.8 with three servers: n1 holds 2@t2 (from its term-2 leadership), n3 holds
     * 2@t3 (from its term-3 leadership), n2 holds only entry 1. */
    fx_t *f = fx_new(3, false, false);
    f->cfg.max_entries_per_append = 1;
    raft_conf_t c = voters(3);
    uint8_t *cd;
    size_t clen;
    assert_int_equal(raft_conf_change_encode(RAFT_CHANGE_BOOTSTRAP, 0, &c, f->a, &cd, &clen), 0);
    uint8_t conf[DATAMAX];
    memcpy(conf, cd, clen);
    raft_entry_t e1 = {.term = 1, .index = 1, .type = RAFT_ENTRY_CONF, .data = conf, .len = clen};
    raft_entry_t n1log[] = {e1, {.term = 2, .index = 2, .data = (const uint8_t *)"t2", .len = 2}};
    raft_entry_t n3log[] = {e1, {.term = 3, .index = 2, .data = (const uint8_t *)"t3", .len = 2}};
    fx_start_node(f, 1, NULL, n1log, 2, (raft_hard_state_t){.term = 3, .commit = 1});
    fx_start_node(f, 2, NULL, &e1, 1, (raft_hard_state_t){.term = 3, .commit = 1});
    fx_start_node(f, 3, NULL, n3log, 2, (raft_hard_state_t){.term = 3, .commit = 1});
    /* n1 wins term 4 with n2's vote (n3's log is more up-to-date and refuses) */
    isolate(f, 3, true);
    for (int t = 0; t < 100 && st(f, 1).role == RAFT_FOLLOWER; t++)
        fx_tick(f, 1);
    fx_deliver(f, hold_noop_from_n2, NULL);
    assert_int_equal(st(f, 1).role, RAFT_LEADER);
    assert_int_equal(st(f, 1).term, 4);
    for (int i = 0; i < 4; i++) {
        fx_tick(f, 1);
        fx_deliver(f, hold_noop_from_n2, NULL);
    }
    /* entry 2@t2 is now on a majority (n1, n2) ... */
    assert_int_equal(f->n[2].last, 2);
    assert_int_equal(f->n[2].log[2].term, 2);
    /* ... but it is from an older term: counting replicas must not commit it */
    assert_int_equal(st(f, 1).commit, 1);
    assert_int_equal(f->n[1].applied, 1);

    /* Why: if n1 fails now, n3 (last term 3) can win with n2's vote and overwrite index 2. */
    f->n[1].up = false;
    isolate(f, 3, false);
    fx_drop_all(f);
    fx_elect(f, 3);
    fx_heartbeats(f, 3, 3);
    assert_int_equal(f->n[2].log[2].term, 3);
    assert_true(st(f, 3).commit >= 2);
    fx_free(f);
}

static void test_raft_commits_old_entries_with_current_term_entry(void **state) {
    (void)state;
    /* the same start, but the no-op reaches n2: then 2@t2 commits together with it */
    fx_t *f = fx_new(3, false, false);
    f->cfg.max_entries_per_append = 1;
    raft_conf_t c = voters(3);
    uint8_t *cd;
    size_t clen;
    assert_int_equal(raft_conf_change_encode(RAFT_CHANGE_BOOTSTRAP, 0, &c, f->a, &cd, &clen), 0);
    uint8_t conf[DATAMAX];
    memcpy(conf, cd, clen);
    raft_entry_t e1 = {.term = 1, .index = 1, .type = RAFT_ENTRY_CONF, .data = conf, .len = clen};
    raft_entry_t n1log[] = {e1, {.term = 2, .index = 2, .data = (const uint8_t *)"t2", .len = 2}};
    fx_start_node(f, 1, NULL, n1log, 2, (raft_hard_state_t){.term = 3, .commit = 1});
    fx_start_node(f, 2, NULL, &e1, 1, (raft_hard_state_t){.term = 3, .commit = 1});
    fx_start_node(f, 3, NULL, &e1, 1, (raft_hard_state_t){.term = 3, .commit = 1});
    fx_elect(f, 1);
    fx_heartbeats(f, 1, 2);
    assert_int_equal(st(f, 1).commit, 3);
    for (int i = 1; i <= 3; i++)
        assert_int_equal(f->n[i].applied, 3);
    fx_free(f);
}

static void test_raft_installs_snapshot_on_lagging_follower(void **state) {
    (void)state;
    fx_t *f = fx_new(3, true, true);
    f->cfg.snapshot_threshold = 5;
    f->cfg.snapshot_trailing = 0;
    fx_boot(f);
    fx_elect(f, 1);
    fx_heartbeats(f, 1, 2);
    isolate(f, 3, true);
    char buf[32];
    for (int i = 0; i < 20; i++) {
        snprintf(buf, sizeof buf, "write-%d", i);
        assert_int_equal(fx_propose(f, 1, buf), 0);
        fx_deliver(f, NULL, NULL);
    }
    fx_heartbeats(f, 1, 2);
    assert_true(f->n[1].snapshots_taken >= 1);
    raft_status_t s1 = st(f, 1);
    assert_true(s1.first_index > f->n[3].last + 1); /* n3's next entries are compacted away */
    isolate(f, 3, false);
    fx_heartbeats(f, 1, 4);
    assert_int_equal(f->n[3].snapshots_installed, 1);
    assert_int_equal(st(f, 3).commit, st(f, 1).commit);
    assert_int_equal(f->n[3].applied, f->n[1].applied);
    assert_int_equal(f->n[3].hash, f->n[1].hash);
    /* and it keeps replicating normally afterwards */
    assert_int_equal(fx_propose(f, 1, "after"), 0);
    fx_heartbeats(f, 1, 2);
    assert_int_equal(f->n[3].applied, f->n[1].applied);
    fx_free(f);
}

static void test_raft_adds_learner_then_promotes_it(void **state) {
    (void)state;
    fx_t *f = fx_new(3, true, true);
    fx_boot(f);
    fx_elect(f, 1);
    fx_heartbeats(f, 1, 2);
    for (int i = 0; i < 5; i++)
        assert_int_equal(fx_propose(f, 1, "data"), 0);
    fx_deliver(f, NULL, NULL);
    /* n4 starts empty: it learns everything, configuration included, from the leader */
    fx_start_node(f, 4, NULL, NULL, 0, (raft_hard_state_t){0});
    assert_int_equal(fx_conf(f, 1, RAFT_CHANGE_PROMOTE, 4), -ENOENT);
    assert_int_equal(fx_conf(f, 1, RAFT_CHANGE_ADD_LEARNER, 4), 0);
    assert_int_equal(fx_conf(f, 1, RAFT_CHANGE_ADD_LEARNER, 5), -EBUSY); /* one at a time */
    assert_int_equal(fx_conf(f, 2, RAFT_CHANGE_ADD_LEARNER, 5), -EREMOTE);
    fx_heartbeats(f, 1, 4);
    raft_status_t s4 = st(f, 4);
    assert_true(raft_conf_is_learner(&s4.conf, 4));
    assert_int_equal(f->n[4].applied, f->n[1].applied);
    /* a learner never campaigns */
    for (int t = 0; t < 60; t++)
        fx_tick(f, 4);
    assert_int_equal(st(f, 4).role, RAFT_FOLLOWER);
    fx_drop_all(f);
    assert_int_equal(fx_conf(f, 1, RAFT_CHANGE_PROMOTE, 4), 0);
    fx_heartbeats(f, 1, 3);
    for (int i = 1; i <= 4; i++) {
        raft_status_t s = st(f, i);
        assert_true(raft_conf_is_voter(&s.conf, 4));
        assert_int_equal(s.conf.n_voters, 4);
        assert_int_equal(s.conf.n_learners, 0);
    }
    /* a 4-voter cluster needs 3: with n2 and n3 cut off, nothing commits */
    isolate(f, 2, true);
    isolate(f, 3, true);
    uint64_t commit = st(f, 1).commit;
    assert_int_equal(fx_propose(f, 1, "needs-three"), 0);
    fx_heartbeats(f, 1, 2);
    assert_int_equal(st(f, 1).commit, commit);
    isolate(f, 2, false);
    fx_heartbeats(f, 1, 2);
    assert_true(st(f, 1).commit > commit);
    fx_free(f);
}

static void test_raft_removes_member_and_shrinks_quorum(void **state) {
    (void)state;
    fx_t *f = fx_new(3, true, true);
    fx_boot(f);
    fx_elect(f, 1);
    fx_heartbeats(f, 1, 2);
    assert_int_equal(fx_conf(f, 1, RAFT_CHANGE_REMOVE, 1), -EBUSY); /* transfer first */
    assert_int_equal(fx_conf(f, 1, RAFT_CHANGE_REMOVE, 9), -ENOENT);
    assert_int_equal(fx_conf(f, 1, RAFT_CHANGE_REMOVE, 3), 0);
    fx_heartbeats(f, 1, 2);
    raft_status_t s1 = st(f, 1);
    assert_int_equal(s1.conf.n_voters, 2);
    assert_false(raft_conf_is_member(&s1.conf, 3));
    raft_status_t s2 = st(f, 2);
    assert_false(raft_conf_is_member(&s2.conf, 3));
    /* n3 is gone: n1 and n2 commit alone; n3 gets nothing more */
    uint64_t n3_last = st(f, 3).last_index;
    isolate(f, 3, true);
    assert_int_equal(fx_propose(f, 1, "two-of-two"), 0);
    fx_heartbeats(f, 1, 2);
    assert_int_equal(st(f, 1).commit, st(f, 1).last_index);
    isolate(f, 3, false);
    fx_heartbeats(f, 1, 2);
    assert_int_equal(st(f, 3).last_index, n3_last);
    fx_free(f);
}

static void test_raft_transfers_leadership(void **state) {
    (void)state;
    fx_t *f = fx_new(3, true, true);
    fx_boot(f);
    fx_elect(f, 1);
    fx_heartbeats(f, 1, 2);
    uint64_t term = st(f, 1).term;
    raft_event_t ev = {.type = RAFT_EVENT_TRANSFER};
    ev.transfer.target = 2;
    assert_int_equal(fx_step(f, 1, &ev), 0);
    assert_int_equal(fx_propose(f, 1, "during"), -EBUSY); /* §3.10 step 1 */
    fx_deliver(f, NULL, NULL);
    assert_int_equal(st(f, 2).role, RAFT_LEADER);
    assert_int_equal(st(f, 2).term, term + 1);
    assert_int_equal(st(f, 1).role, RAFT_FOLLOWER);
    assert_int_equal(st(f, 1).leader, 2);
    /* to a non-member: refused; from a follower: not the leader */
    ev.transfer.target = 7;
    assert_int_equal(fx_step(f, 2, &ev), -EINVAL);
    assert_int_equal(fx_step(f, 1, &ev), -EREMOTE);
    fx_free(f);
}

static void test_raft_transfer_catches_up_target_first(void **state) {
    (void)state;
    fx_t *f = fx_new(3, true, true);
    fx_boot(f);
    fx_elect(f, 1);
    fx_heartbeats(f, 1, 2);
    isolate(f, 3, true);
    for (int i = 0; i < 5; i++)
        assert_int_equal(fx_propose(f, 1, "ahead"), 0);
    fx_heartbeats(f, 1, 1);
    isolate(f, 3, false);
    raft_event_t ev = {.type = RAFT_EVENT_TRANSFER};
    ev.transfer.target = 3;
    assert_int_equal(fx_step(f, 1, &ev), 0);
    fx_deliver(f, NULL, NULL);
    /* n3 is behind: the leader catches it up on heartbeat answers, then sends TimeoutNow */
    for (int i = 0; i < 4 && st(f, 3).role != RAFT_LEADER; i++)
        fx_heartbeats(f, 1, 1);
    assert_int_equal(st(f, 3).role, RAFT_LEADER);
    fx_heartbeats(f, 3, 2);
    assert_int_equal(f->n[3].applied, f->n[1].applied);
    fx_free(f);
}

static bool only_from_leader(fx_t *f, const tmsg_t *q, const raft_message_t *m, void *arg) {
    (void)f;
    (void)m;
    return q->from == *(int *)arg;
}

static void test_raft_read_index_waits_for_heartbeat_quorum(void **state) {
    (void)state;
    fx_t *f = fx_new(3, true, true);
    fx_boot(f);
    fx_elect(f, 1);
    fx_heartbeats(f, 1, 2);
    assert_int_equal(fx_propose(f, 1, "before-read"), 0);
    fx_deliver(f, NULL, NULL);
    uint64_t commit = st(f, 1).commit;
    raft_event_t ev = {.type = RAFT_EVENT_READ_INDEX};
    ev.read_index.ctx = 42;
    assert_int_equal(fx_step(f, 2, &ev), -EREMOTE);
    assert_int_equal(fx_step(f, 1, &ev), 0);
    assert_int_equal(f->n[1].n_reads, 0); /* not before a quorum confirms */
    /* heartbeats reach the followers, but their answers are lost */
    int leader = 1;
    fx_deliver(f, only_from_leader, &leader);
    assert_int_equal(f->n[1].n_reads, 0);
    /* the next heartbeat round comes back: the read is confirmed at the commit index */
    fx_heartbeats(f, 1, 1);
    assert_int_equal(f->n[1].n_reads, 1);
    assert_int_equal(f->n[1].reads[0].ctx, 42);
    assert_int_equal(f->n[1].reads[0].index, commit);

    /* a leader cut off from its quorum never confirms, and fails the read when it steps down */
    ev.read_index.ctx = 43;
    isolate(f, 1, true);
    assert_int_equal(fx_step(f, 1, &ev), 0);
    for (int t = 0; t < 30 && st(f, 1).role == RAFT_LEADER; t++) {
        fx_tick(f, 1);
        fx_deliver(f, NULL, NULL);
    }
    assert_int_equal(f->n[1].n_reads, 2);
    assert_int_equal(f->n[1].reads[1].ctx, 43);
    assert_int_equal(f->n[1].reads[1].index, 0);
    fx_free(f);
}

static bool heartbeats_only(fx_t *f, const tmsg_t *q, const raft_message_t *m, void *arg) {
    (void)f;
    (void)q;
    (void)arg;
    return m->type == RAFT_MSG_HEARTBEAT || m->type == RAFT_MSG_HEARTBEAT_RESULT;
}

static void test_raft_read_index_waits_for_commit_in_term(void **state) {
    (void)state;
    fx_t *f = fx_new(3, false, false);
    fx_boot(f);
    for (int t = 0; t < 100 && st(f, 1).role == RAFT_FOLLOWER; t++)
        fx_tick(f, 1);
    /* only the votes get through: the new leader's no-op is not replicated */
    while (f->head < f->tail && st(f, 1).role != RAFT_LEADER) {
        tmsg_t q = f->q[f->head++];
        raft_message_t m;
        arena_reset(f->a);
        assert_int_equal(raft_message_decode(q.buf, q.len, f->a, &m), 0);
        raft_event_t ev = {.type = RAFT_EVENT_RECEIVE, .receive.message = &m};
        assert_int_equal(fx_step(f, q.to, &ev), 0);
        free(q.buf);
    }
    assert_int_equal(st(f, 1).role, RAFT_LEADER);
    fx_drop_all(f);
    raft_event_t ev = {.type = RAFT_EVENT_READ_INDEX};
    ev.read_index.ctx = 5;
    assert_int_equal(fx_step(f, 1, &ev), 0);
    /* §6.4 step 1: a quorum of heartbeats is not enough before this term commits an entry */
    for (int i = 0; i < 3; i++) {
        fx_tick(f, 1);
        fx_tick(f, 1);
        fx_deliver(f, heartbeats_only, NULL);
    }
    assert_int_equal(f->n[1].n_reads, 0);
    fx_heartbeats(f, 1, 2);
    assert_int_equal(f->n[1].n_reads, 1);
    assert_int_equal(f->n[1].reads[0].ctx, 5);
    assert_int_equal(f->n[1].reads[0].index, 2); /* the no-op of this term */
    fx_free(f);
}

static bool count_acks(fx_t *f, const tmsg_t *q, const raft_message_t *m, void *arg) {
    (void)f;
    (void)q;
    if (m->type == RAFT_MSG_APPEND_ENTRIES_RESULT && !m->append_entries_result.rejected &&
        m->append_entries_result.index >= 3)
        (*(int *)arg)++;
    return true;
}

static void test_raft_follower_acknowledges_only_durable_entries(void **state) {
    (void)state;
    fx_t *f = fx_new(3, true, true);
    fx_boot(f);
    fx_elect(f, 1);
    fx_heartbeats(f, 1, 2);
    f->hold_disk[2] = f->hold_disk[3] = true;
    assert_int_equal(fx_propose(f, 1, "durable?"), 0);
    int acks = 0;
    fx_deliver(f, count_acks, &acks);
    assert_int_equal(acks, 0);
    assert_int_equal(st(f, 1).commit, 2); /* the leader alone cannot commit entry 3 */
    assert_true(f->n[2].n_pending > 0);
    /* n2's disk write completes: now it acknowledges and the entry commits */
    f->hold_disk[2] = false;
    report_persisted(f, 2);
    fx_deliver(f, count_acks, &acks);
    assert_true(acks >= 1);
    assert_int_equal(st(f, 1).commit, 3);
    fx_free(f);
}

static void test_raft_leader_counts_itself_only_once_durable(void **state) {
    (void)state;
    fx_t *f = fx_new(1, false, false);
    fx_boot(f);
    for (int t = 0; t < 100 && st(f, 1).role != RAFT_LEADER; t++)
        fx_tick(f, 1);
    assert_int_equal(st(f, 1).role, RAFT_LEADER);
    f->hold_disk[1] = true;
    assert_int_equal(fx_propose(f, 1, "solo"), 0);
    assert_true(st(f, 1).commit < st(f, 1).last_index);
    f->hold_disk[1] = false;
    report_persisted(f, 1);
    assert_int_equal(st(f, 1).commit, st(f, 1).last_index);
    assert_int_equal(f->n[1].applied, st(f, 1).last_index);
    fx_free(f);
}

static void test_raft_restart_recovers_durable_state(void **state) {
    (void)state;
    fx_t *f = fx_new(3, true, true);
    fx_boot(f);
    fx_elect(f, 1);
    for (int i = 0; i < 4; i++)
        assert_int_equal(fx_propose(f, 1, "persist"), 0);
    fx_heartbeats(f, 1, 2);
    uint64_t term = st(f, 2).term, last = st(f, 2).last_index;
    /* n2 restarts from what it persisted */
    raft_destroy(&f->n[2].r);
    static tentry_t copy[LOGMAX];
    memcpy(copy, f->n[2].log, sizeof copy);
    raft_entry_t log[LOGMAX];
    uint32_t n = 0;
    for (uint64_t i = 1; i <= f->n[2].last; i++) {
        const tentry_t *t = &copy[i];
        log[n++] = (raft_entry_t){t->term, t->index, t->type, t->data, t->len};
    }
    raft_hard_state_t hs = f->n[2].hs;
    f->n[2].applied = 0;
    f->n[2].hash = 0;
    fx_start_node(f, 2, NULL, log, n, hs);
    raft_status_t s2 = st(f, 2);
    assert_int_equal(s2.term, term);
    assert_int_equal(s2.vote, 1);
    assert_int_equal(s2.last_index, last);
    assert_int_equal(f->n[2].applied, hs.commit); /* replays what it knew committed */
    fx_heartbeats(f, 1, 2);
    assert_int_equal(f->n[2].applied, f->n[1].applied);
    assert_int_equal(f->n[2].hash, f->n[1].hash);
    fx_free(f);
}

static void test_raft_drops_malformed_messages(void **state) {
    (void)state;
    fx_t *f = fx_new(3, true, true);
    fx_boot(f);
    fx_elect(f, 1);
    fx_heartbeats(f, 1, 2);
    raft_status_t before = st(f, 2);
    raft_entry_t e[2] = {{.term = 2, .index = 5}, {.term = 2, .index = 7}};
    raft_message_t bad[] = {
        {.type = RAFT_MSG_APPEND_ENTRIES,
         .from = 1,
         .to = 2,
         .term = 2,
         .append_entries = {.prev_index = 4, .prev_term = 2, .entries = e, .n_entries = 2}},
        {.type = RAFT_MSG_APPEND_ENTRIES, .from = 2, .to = 2, .term = 2},
        {.type = RAFT_MSG_APPEND_ENTRIES, .from = 1, .to = 3, .term = 2},
        {.type = RAFT_MSG_REQUEST_VOTE,
         .from = 3,
         .to = 2,
         .term = 9,
         .request_vote = {.last_index = 5, .last_term = 10}},
        {.type = RAFT_MSG_INSTALL_SNAPSHOT, .from = 1, .to = 2, .term = 2},
        {.type = 99, .from = 1, .to = 2, .term = 2},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        raft_event_t ev = {.type = RAFT_EVENT_RECEIVE, .receive.message = &bad[i]};
        raft_update_t u;
        assert_int_equal(raft_step(f->n[2].r, &ev, &u), -EINVAL);
        assert_int_equal(u.messages.n, 0);
    }
    raft_status_t after = st(f, 2);
    assert_int_equal(after.term, before.term);
    assert_int_equal(after.last_index, before.last_index);
    /* events before START, and a START with a broken log, are refused too */
    raft_config_t cfg = f->cfg;
    cfg.id = 9;
    uint64_t seed = 1;
    cfg.rand_arg = &seed;
    raft_t *r = raft_new(&cfg);
    raft_event_t tick = {.type = RAFT_EVENT_TICK};
    raft_update_t u;
    assert_int_equal(raft_step(r, &tick, &u), -EINVAL);
    raft_event_t start = {.type = RAFT_EVENT_START};
    start.start.entries = e;
    start.start.n_entries = 2;
    start.start.hard_state.term = 2;
    assert_int_equal(raft_step(r, &start, &u), -EINVAL);
    raft_destroy(&r);
    cfg.election_ticks_min = cfg.heartbeat_ticks;
    assert_null(raft_new(&cfg));
    fx_free(f);
}

static void test_raft_codec_roundtrips_every_message(void **state) {
    (void)state;
    arena_t *a = arena_new(0);
    raft_conf_t c = voters(3);
    c.learners[c.n_learners++] = 4;
    uint8_t *cd;
    size_t clen;
    assert_int_equal(raft_conf_change_encode(RAFT_CHANGE_ADD_LEARNER, 4, &c, a, &cd, &clen), 0);
    raft_entry_t e[2] = {
        {.term = 3, .index = 11, .data = (const uint8_t *)"x", .len = 1},
        {.term = 4, .index = 12, .type = RAFT_ENTRY_CONF, .data = cd, .len = clen}};
    raft_message_t m[] = {
        {.type = RAFT_MSG_REQUEST_VOTE,
         .from = 1,
         .to = 2,
         .term = 5,
         .request_vote = {.last_index = 9, .last_term = 4, .pre_vote = true, .transfer = true}},
        {.type = RAFT_MSG_REQUEST_VOTE_RESULT,
         .from = 2,
         .to = 1,
         .term = 5,
         .request_vote_result = {.granted = true, .pre_vote = true}},
        {.type = RAFT_MSG_APPEND_ENTRIES,
         .from = 1,
         .to = 2,
         .term = 5,
         .append_entries =
             {.prev_index = 10, .prev_term = 3, .commit = 9, .entries = e, .n_entries = 2}},
        {.type = RAFT_MSG_APPEND_ENTRIES_RESULT,
         .from = 2,
         .to = 1,
         .term = 5,
         .append_entries_result = {.rejected = true, .index = 10, .hint_index = 7, .hint_term = 2}},
        {.type = RAFT_MSG_INSTALL_SNAPSHOT,
         .from = 1,
         .to = 2,
         .term = 5,
         .install_snapshot = {.meta = {.index = 8, .term = 3, .conf = c},
                              .data = (const uint8_t *)"snap",
                              .len = 4}},
        {.type = RAFT_MSG_TIMEOUT_NOW, .from = 1, .to = 2, .term = 5},
        {.type = RAFT_MSG_HEARTBEAT,
         .from = 1,
         .to = 2,
         .term = 5,
         .heartbeat = {.commit = 9, .ctx = 77}},
        {.type = RAFT_MSG_HEARTBEAT_RESULT,
         .from = 2,
         .to = 1,
         .term = 5,
         .heartbeat_result = {.ctx = 77, .commit = 8}},
    };
    for (size_t i = 0; i < sizeof m / sizeof m[0]; i++) {
        uint8_t *buf;
        size_t len;
        assert_int_equal(raft_message_encode(&m[i], a, &buf, &len), 0);
        raft_message_t d;
        assert_int_equal(raft_message_decode(buf, len, a, &d), 0);
        assert_int_equal(d.type, m[i].type);
        assert_int_equal(d.from, m[i].from);
        assert_int_equal(d.term, m[i].term);
        uint8_t *buf2;
        size_t len2;
        assert_int_equal(raft_message_encode(&d, a, &buf2, &len2), 0);
        assert_int_equal(len2, len);
        assert_memory_equal(buf2, buf, len);
        if (len > 2) /* truncations never decode into something that passes as valid junk */
            (void)raft_message_decode(buf, len - 1, a, &d);
    }
    raft_hard_state_t hs = {7, 2, 5}, hs2;
    uint8_t *buf;
    size_t len;
    assert_int_equal(raft_hard_state_encode(&hs, a, &buf, &len), 0);
    assert_int_equal(raft_hard_state_decode(buf, len, &hs2), 0);
    assert_memory_equal(&hs, &hs2, sizeof hs);
    raft_snapshot_meta_t sm = {.index = 8, .term = 3, .conf = c}, sm2;
    assert_int_equal(raft_snapshot_meta_encode(&sm, a, &buf, &len), 0);
    assert_int_equal(raft_snapshot_meta_decode(buf, len, &sm2), 0);
    assert_int_equal(sm2.conf.n_learners, 1);
    assert_int_equal(sm2.conf.learners[0], 4);
    raft_entry_t de;
    assert_int_equal(raft_entry_encode(&e[1], a, &buf, &len), 0);
    assert_int_equal(raft_entry_decode(buf, len, a, &de), 0);
    assert_int_equal(de.type, RAFT_ENTRY_CONF);
    assert_int_equal(de.len, clen);
    /* a configuration entry whose change does not match its configuration is rejected */
    assert_int_equal(raft_conf_change_encode(RAFT_CHANGE_REMOVE, 2, &c, a, &cd, &clen), 0);
    assert_int_equal(raft_conf_change_decode(cd, clen, NULL, NULL, NULL), -EINVAL);
    arena_destroy(&a);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_raft_elects_a_leader_in_three_member_cluster),
        cmocka_unit_test(test_raft_pre_vote_keeps_partitioned_member_from_raising_term),
        cmocka_unit_test(test_raft_check_quorum_steps_down_isolated_leader),
        cmocka_unit_test(test_raft_repairs_follower_with_conflicting_log),
        cmocka_unit_test(test_raft_commits_only_current_term_entries_figure_8),
        cmocka_unit_test(test_raft_commits_old_entries_with_current_term_entry),
        cmocka_unit_test(test_raft_installs_snapshot_on_lagging_follower),
        cmocka_unit_test(test_raft_adds_learner_then_promotes_it),
        cmocka_unit_test(test_raft_removes_member_and_shrinks_quorum),
        cmocka_unit_test(test_raft_transfers_leadership),
        cmocka_unit_test(test_raft_transfer_catches_up_target_first),
        cmocka_unit_test(test_raft_read_index_waits_for_heartbeat_quorum),
        cmocka_unit_test(test_raft_read_index_waits_for_commit_in_term),
        cmocka_unit_test(test_raft_follower_acknowledges_only_durable_entries),
        cmocka_unit_test(test_raft_leader_counts_itself_only_once_durable),
        cmocka_unit_test(test_raft_restart_recovers_durable_state),
        cmocka_unit_test(test_raft_drops_malformed_messages),
        cmocka_unit_test(test_raft_codec_roundtrips_every_message),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
