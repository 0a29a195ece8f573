/* Fuzz target for shoal-store's Raft core and codec (services/store/raft*.c).
 *
 * Decoders: every Raft message and persisted record (Entry, HardState, SnapshotMeta,
 * ConfChange) is unpacked from arbitrary bytes; whatever decodes must validate and survive an
 * encode/decode round trip byte for byte.
 *
 * Core: one member (id 2 of a bootstrapped {1,2,3} cluster) lives across inputs and is fed
 * decoded messages, "valid-looking" messages built from the input bytes around its own state
 * (terms, indexes, entries near its log — the inputs that reach deep into the step functions),
 * and every other event (ticks, proposals, reads, transfers, membership changes, persisted and
 * snapshot notifications with made-up indexes). A host stub carries out each update. Nothing may
 * crash or trip an assert; a message that raft_message_validate() refuses must be refused by
 * raft_step() with -EINVAL; and after every step: commit <= last index, applied <= commit,
 * committed entries come contiguously, the term never goes back.
 *
 * Input: [op u8][payload]. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../services/store/raft.h"
#include "arena.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define SELF 2

static arena_t *arena;
static raft_t *node;
static uint64_t rng_state = 1;
static uint64_t applied, last_term_seen;
static raft_snapshot_meta_t snap; /* the host's latest snapshot */
static unsigned inputs;
static struct {
    unsigned long steps, refused, leader, installs, compactions, committed, max_last;
} seen; /* FUZZ_RAFT_VERBOSE=1 prints these: is the fuzzer reaching the deep paths? */

static uint64_t fuzz_rand(void *arg) {
    uint64_t *s = arg;
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    return z ^ (z >> 31);
}

static void fail(const char *what) {
    fprintf(stderr, "fuzz_store_raft: %s\n", what);
    abort();
}

static int step(const raft_event_t *ev);

static void handle(const raft_update_t *u) {
    raft_event_t follow[2];
    int n_follow = 0;
    if (u->flags & RAFT_UPDATE_SNAPSHOT) {
        if (u->snapshot.meta.index < applied)
            fail("snapshot behind the state machine");
        applied = u->snapshot.meta.index;
        snap = u->snapshot.meta;
        follow[n_follow].type = RAFT_EVENT_PERSISTED_SNAPSHOT;
        follow[n_follow].persisted_snapshot.index = u->snapshot.meta.index;
        follow[n_follow++].persisted_snapshot.term = u->snapshot.meta.term;
    }
    if ((u->flags & RAFT_UPDATE_ENTRIES) && u->entries.n) {
        const raft_entry_t *e = &u->entries.batch[u->entries.n - 1];
        if (u->entries.batch[0].index != u->entries.first_index)
            fail("entries do not start at first_index");
        follow[n_follow].type = RAFT_EVENT_PERSISTED_ENTRIES;
        follow[n_follow].persisted_entries.index = e->index;
        follow[n_follow++].persisted_entries.term = e->term;
    }
    for (uint32_t i = 0; i < u->messages.n; i++) {
        uint8_t *buf;
        size_t len;
        raft_message_t m = u->messages.batch[i];
        if (raft_message_validate(&m) < 0)
            fail("the core sent a message that does not validate");
        if (raft_message_encode(&m, arena, &buf, &len) < 0)
            fail("the core sent a message that does not encode");
    }
    for (uint32_t i = 0; i < u->committed.n; i++) {
        if (u->committed.batch[i].index != applied + 1)
            fail("committed entries are not contiguous");
        applied++;
    }
    bool want = u->flags & RAFT_UPDATE_SNAPSHOT_WANTED;
    raft_snapshot_meta_t w = u->snapshot_wanted;
    for (int i = 0; i < n_follow; i++)
        step(&follow[i]);
    if (want && w.index == applied) {
        snap = w;
        raft_event_t ev = {.type = RAFT_EVENT_SNAPSHOT_TAKEN};
        ev.snapshot_taken.meta = w;
        step(&ev);
    }
}

static int step(const raft_event_t *ev) {
    raft_update_t u;
    int rc = raft_step(node, ev, &u);
    raft_status_t st;
    raft_status(node, &st);
    seen.steps++;
    seen.refused += rc == -EINVAL;
    seen.leader += st.role == RAFT_LEADER;
    seen.installs += !!(u.flags & RAFT_UPDATE_SNAPSHOT);
    seen.compactions += !!(u.flags & RAFT_UPDATE_COMPACT);
    seen.committed += u.committed.n;
    if (st.last_index > seen.max_last)
        seen.max_last = st.last_index;
    if (st.commit > st.last_index)
        fail("commit beyond the log");
    if (st.term < last_term_seen)
        fail("term went back");
    last_term_seen = st.term;
    handle(&u);
    raft_status(node, &st);
    if (applied > st.commit || st.applied != applied)
        fail("applied beyond commit");
    return rc;
}

static void reset_node(void) {
    raft_destroy(&node);
    raft_config_t cfg = {.id = SELF,
                         .election_ticks_min = 5,
                         .election_ticks_max = 8,
                         .heartbeat_ticks = 1,
                         .pre_vote = inputs % 2,
                         .check_quorum = inputs % 3 != 0,
                         .max_inflight = 4,
                         .max_entries_per_append = 3,
                         .snapshot_threshold = 20,
                         .snapshot_trailing = 3,
                         .rand = fuzz_rand,
                         .rand_arg = &rng_state};
    node = raft_new(&cfg);
    if (!node)
        abort();
    applied = last_term_seen = 0;
    memset(&snap, 0, sizeof snap);
    raft_conf_t boot = {.n_voters = 3, .voters = {1, 2, 3}};
    raft_event_t ev = {.type = RAFT_EVENT_START};
    ev.start.bootstrap = &boot;
    if (step(&ev) < 0)
        abort();
}

static void report(void) {
    if (getenv("FUZZ_RAFT_VERBOSE"))
        fprintf(stderr,
                "fuzz_store_raft: %lu steps, %lu refused, %lu as leader, %lu snapshot installs, "
                "%lu compactions, %lu entries committed, longest log %lu\n",
                seen.steps, seen.refused, seen.leader, seen.installs, seen.compactions,
                seen.committed, seen.max_last);
    raft_destroy(&node);
    arena_destroy(&arena);
}

static void init(void) {
    if (arena)
        return;
    arena = arena_new(0);
    atexit(report);
}

/* Reads bytes from the input, zero once it runs out. */
typedef struct cursor {
    const uint8_t *p;
    size_t n;
} cursor_t;

static uint64_t take(cursor_t *c) {
    if (!c->n)
        return 0;
    c->n--;
    return *c->p++;
}

static uint64_t around(cursor_t *c, uint64_t base) {
    uint64_t d = take(c) % 9;
    return base + d >= 4 ? base + d - 4 : 0;
}

static const uint8_t conf_entry_seed[] = {0};

/* A message shaped like the real ones, near the member's own state. */
static void structured_message(cursor_t *c) {
    raft_status_t st;
    raft_status(node, &st);
    raft_message_t m = {.type = (raft_message_type_t)(1 + take(c) % 8), .to = SELF};
    m.from = 1 + take(c) % 4;
    if (m.from == SELF)
        m.from = 3;
    m.term = around(c, st.term);
    raft_entry_t e[4];
    uint8_t conf_buf[64];
    switch (m.type) {
    case RAFT_MSG_REQUEST_VOTE:
        m.request_vote.last_index = around(c, st.last_index);
        m.request_vote.last_term = m.request_vote.last_index ? around(c, st.term) : 0;
        m.request_vote.pre_vote = take(c) & 1;
        m.request_vote.transfer = take(c) & 1;
        break;
    case RAFT_MSG_REQUEST_VOTE_RESULT:
        m.request_vote_result.granted = take(c) & 1;
        m.request_vote_result.pre_vote = take(c) & 1;
        break;
    case RAFT_MSG_APPEND_ENTRIES: {
        uint64_t prev = around(c, st.last_index);
        m.append_entries.prev_index = prev;
        m.append_entries.prev_term = prev ? around(c, st.term) : 0;
        m.append_entries.commit = around(c, st.commit);
        uint32_t n = (uint32_t)(take(c) % 5);
        raft_term_t t = m.append_entries.prev_term;
        for (uint32_t i = 0; i < n; i++) {
            t += take(c) % 2;
            e[i] = (raft_entry_t){.term = t ? t : 1, .index = prev + 1 + i};
            if (take(c) % 8 == 0) {
                raft_conf_t cf = {.n_voters = 3, .voters = {1, 2, 3}};
                if (take(c) & 1)
                    cf.learners[cf.n_learners++] = 4;
                uint8_t *buf;
                size_t len;
                raft_conf_change_encode(cf.n_learners ? RAFT_CHANGE_ADD_LEARNER
                                                      : RAFT_CHANGE_BOOTSTRAP,
                                        cf.n_learners ? 4 : 0, &cf, arena, &buf, &len);
                memcpy(conf_buf, buf, len < sizeof conf_buf ? len : sizeof conf_buf);
                e[i].type = RAFT_ENTRY_CONF;
                e[i].data = conf_buf;
                e[i].len = len;
            } else {
                e[i].data = conf_entry_seed;
                e[i].len = take(c) % 2;
            }
        }
        m.append_entries.entries = e;
        m.append_entries.n_entries = n;
        break;
    }
    case RAFT_MSG_APPEND_ENTRIES_RESULT:
        m.append_entries_result.rejected = take(c) & 1;
        m.append_entries_result.index = around(c, st.last_index);
        if (m.append_entries_result.rejected) {
            m.append_entries_result.hint_index = take(c) % (m.append_entries_result.index + 1);
            m.append_entries_result.hint_term =
                m.append_entries_result.hint_index ? around(c, st.term) : 0;
        }
        break;
    case RAFT_MSG_INSTALL_SNAPSHOT:
        m.install_snapshot.meta.index = around(c, st.commit + 2);
        m.install_snapshot.meta.term = around(c, st.term);
        m.install_snapshot.meta.conf = (raft_conf_t){.n_voters = 3, .voters = {1, 2, 3}};
        break;
    case RAFT_MSG_HEARTBEAT:
        m.heartbeat.commit = around(c, st.commit);
        m.heartbeat.ctx = take(c);
        break;
    case RAFT_MSG_HEARTBEAT_RESULT:
        m.heartbeat_result.ctx = take(c);
        m.heartbeat_result.commit = around(c, st.commit);
        break;
    default:
        break;
    }
    bool valid = raft_message_validate(&m) == 0;
    raft_event_t ev = {.type = RAFT_EVENT_RECEIVE, .receive.message = &m};
    int rc = step(&ev);
    if (!valid && rc != -EINVAL)
        fail("an invalid message was not refused");
}

static void become_leader(void) {
    raft_status_t st;
    raft_status(node, &st);
    for (int t = 0; t < 20 && st.role != RAFT_CANDIDATE && st.role != RAFT_LEADER; t++) {
        raft_event_t tick = {.type = RAFT_EVENT_TICK};
        step(&tick);
        raft_status(node, &st);
        if (st.role == RAFT_PRE_CANDIDATE) {
            raft_message_t m = {
                .type = RAFT_MSG_REQUEST_VOTE_RESULT, .from = 1, .to = SELF, .term = st.term + 1};
            m.request_vote_result.granted = m.request_vote_result.pre_vote = true;
            raft_event_t ev = {.type = RAFT_EVENT_RECEIVE, .receive.message = &m};
            step(&ev);
            raft_status(node, &st);
        }
    }
    if (st.role == RAFT_CANDIDATE) {
        raft_message_t m = {
            .type = RAFT_MSG_REQUEST_VOTE_RESULT, .from = 3, .to = SELF, .term = st.term};
        m.request_vote_result.granted = true;
        raft_event_t ev = {.type = RAFT_EVENT_RECEIVE, .receive.message = &m};
        step(&ev);
    }
}

/* The cluster making progress around the member: as a follower it gets k entries from leader 1
 * (committing them), as a leader it gets acknowledgements of its whole log from 1 and 3. This
 * is what walks the member into snapshots, compaction and long logs. */
static void cooperate(cursor_t *c) {
    raft_status_t st;
    raft_status(node, &st);
    uint64_t k = take(c) % 8;
    raft_entry_t e[8];
    raft_message_t m = {.to = SELF, .term = st.term ? st.term : 1};
    if (st.role == RAFT_LEADER) {
        m.type = RAFT_MSG_APPEND_ENTRIES_RESULT;
        m.append_entries_result.index = st.last_index;
        for (raft_id_t from = 1; from <= 3; from += 2) {
            m.from = from;
            raft_event_t ev = {.type = RAFT_EVENT_RECEIVE, .receive.message = &m};
            step(&ev);
        }
        return;
    }
    raft_term_t last_term;
    m.type = RAFT_MSG_APPEND_ENTRIES;
    m.from = 1;
    m.append_entries.prev_index = st.last_index;
    /* the member's last term is not in its status: ask for a rejection hint if wrong */
    last_term = st.last_index ? (take(c) & 1 ? st.term : st.term - (st.term > 1)) : 0;
    m.append_entries.prev_term = last_term;
    for (uint64_t i = 0; i < k; i++)
        e[i] = (raft_entry_t){.term = m.term, .index = st.last_index + 1 + i};
    m.append_entries.entries = e;
    m.append_entries.n_entries = (uint32_t)k;
    m.append_entries.commit = st.last_index + k;
    raft_event_t ev = {.type = RAFT_EVENT_RECEIVE, .receive.message = &m};
    step(&ev);
}

static void roundtrip(const raft_message_t *m) {
    if (raft_message_validate(m) < 0)
        fail("decoded message does not validate");
    uint8_t *b1, *b2;
    size_t l1, l2;
    raft_message_t d;
    if (raft_message_encode(m, arena, &b1, &l1) < 0 || raft_message_decode(b1, l1, arena, &d) < 0 ||
        raft_message_encode(&d, arena, &b2, &l2) < 0 || l1 != l2 || memcmp(b1, b2, l1))
        fail("message does not round-trip");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    init();
    arena_reset(arena);
    if (!node || ++inputs % 3000 == 0)
        reset_node();
    if (size < 1)
        return 0;
    uint8_t op = data[0];
    cursor_t c = {data + 1, size - 1};
    raft_event_t ev = {0};
    switch (op % 16) {
    case 0: {
        raft_message_t m;
        if (raft_message_decode(c.p, c.n, arena, &m) == 0)
            roundtrip(&m);
        break;
    }
    case 1: {
        raft_entry_t e;
        uint8_t *buf;
        size_t len;
        if (raft_entry_decode(c.p, c.n, arena, &e) == 0 &&
            raft_entry_encode(&e, arena, &buf, &len) < 0)
            fail("decoded entry does not encode");
        break;
    }
    case 2: {
        raft_hard_state_t hs;
        (void)raft_hard_state_decode(c.p, c.n, &hs);
        break;
    }
    case 3: {
        raft_snapshot_meta_t m;
        if (raft_snapshot_meta_decode(c.p, c.n, &m) == 0 && raft_conf_check(&m.conf) < 0)
            fail("decoded snapshot metadata has a bad configuration");
        break;
    }
    case 4: {
        raft_conf_t cf;
        if (raft_conf_change_decode(c.p, c.n, NULL, NULL, &cf) == 0 &&
            (raft_conf_check(&cf) < 0 || !cf.n_voters))
            fail("decoded configuration is bad");
        break;
    }
    case 5: {
        raft_message_t m;
        if (raft_message_decode(c.p, c.n, arena, &m) == 0) {
            m.to = SELF;
            if (m.from == SELF)
                m.from = 1;
            ev.type = RAFT_EVENT_RECEIVE;
            ev.receive.message = &m;
            step(&ev);
        }
        break;
    }
    case 6:
    case 7:
        structured_message(&c);
        break;
    case 8:
        cooperate(&c);
        break;
    case 9: {
        uint64_t k = take(&c) % 24 + 1;
        ev.type = RAFT_EVENT_TICK;
        for (uint64_t i = 0; i < k; i++)
            step(&ev);
        break;
    }
    case 10: {
        raft_entry_t e = {.type = (raft_entry_type_t)(take(&c) % 3 == 0), .data = c.p, .len = c.n};
        ev.type = RAFT_EVENT_PROPOSE;
        ev.propose.entries = &e;
        ev.propose.n_entries = 1;
        int rc = step(&ev);
        if (e.type != RAFT_ENTRY_NORMAL && rc == 0)
            fail("a configuration entry was accepted as a proposal");
        break;
    }
    case 11:
        ev.type = RAFT_EVENT_READ_INDEX;
        ev.read_index.ctx = take(&c);
        step(&ev);
        break;
    case 12:
        ev.type = take(&c) & 1 ? RAFT_EVENT_TRANSFER : RAFT_EVENT_CONF_CHANGE;
        ev.transfer.target = take(&c) % 6;
        if (ev.type == RAFT_EVENT_CONF_CHANGE) {
            ev.conf_change.type = (raft_change_type_t)(take(&c) % 5);
            ev.conf_change.node = take(&c) % 6;
        }
        step(&ev);
        break;
    case 13: {
        raft_status_t st;
        raft_status(node, &st);
        if (take(&c) & 1) {
            ev.type = RAFT_EVENT_PERSISTED_ENTRIES;
            ev.persisted_entries.index = around(&c, st.last_index);
            ev.persisted_entries.term = around(&c, st.term);
        } else {
            ev.type = RAFT_EVENT_PERSISTED_SNAPSHOT;
            ev.persisted_snapshot.index = around(&c, st.snapshot.index);
            ev.persisted_snapshot.term = around(&c, st.term);
        }
        step(&ev);
        break;
    }
    case 14: {
        raft_status_t st;
        raft_status(node, &st);
        ev.type = RAFT_EVENT_SNAPSHOT_TAKEN;
        ev.snapshot_taken.meta.index = around(&c, st.applied);
        ev.snapshot_taken.meta.term = around(&c, st.term);
        step(&ev);
        break;
    }
    default:
        become_leader();
        break;
    }
    return 0;
}
