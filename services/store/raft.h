/* raft — shoal-store's consensus core: Raft as an I/O-free state machine (DESIGN §3).
 *
 * One entry point, raft_step(r, event, update), in the shape of cowsql/raft's raft_step() and
 * etcd/raft's RawNode + Ready. The core never reads a clock, draws from a random source, touches
 * a disk or a socket: time arrives as TICK events, randomness through cfg.rand, durable state in
 * the START event, messages as RECEIVE events, and everything the host must do comes back in a
 * raft_update_t. tests/sim drives thousands of clusters in one process through this API; the
 * store daemon drives one member over ZMQ and RocksDB.
 *
 * The host's loop, per raft_step() call:
 *
 *   1. PERSIST. If upd.flags has RAFT_UPDATE_HARD_STATE, write upd.hard_state; term and vote
 *      must be durable (fsynced) BEFORE any message of this update is sent — a vote that is
 *      sent and then forgotten by a crash lets a member vote twice in one term. The commit
 *      index in it may be written lazily. If RAFT_UPDATE_SNAPSHOT, store upd.snapshot (metadata
 *      + data): the durable log becomes empty after meta.index, and the state machine is
 *      replaced by the snapshot now (before applying anything of this update). If
 *      RAFT_UPDATE_ENTRIES, delete every durable entry with index >= upd.entries.first_index,
 *      then append upd.entries. Snapshot and entry writes may complete asynchronously (e.g. a
 *      group-commit thread), but strictly in update order: report each completion with a
 *      PERSISTED_SNAPSHOT / PERSISTED_ENTRIES (index and term of the write's last entry; a
 *      truncation without new entries needs no report) event, never before the data is
 *      durable. Nothing
 *      the core sends depends on unfinished entry writes: followers acknowledge entries and the
 *      leader counts itself only once they are reported durable (dissertation §10.2.1: "the
 *      leader can write to its disk in parallel with replicating to the followers").
 *   2. SEND every message of upd.messages (encode with raft_message_encode(); for an
 *      INSTALL_SNAPSHOT message, attach the data of the snapshot whose metadata it names).
 *      Delivery is best-effort: messages may be lost, duplicated or reordered.
 *   3. APPLY upd.committed in order (ENTRY_CONF entries: nothing to apply, the core already
 *      uses them; empty NORMAL entries are a new leader's no-op). A proposal (upd.proposed of a
 *      PROPOSE / CONF_CHANGE) succeeded when the entry applied at its index has its term; a
 *      different term there means it was lost (retry). A read in upd.reads may be served once
 *      the state machine has applied read.index.
 *   4. If RAFT_UPDATE_SNAPSHOT_WANTED: after applying, take a snapshot of the state machine at
 *      upd.snapshot_wanted.index (it is exactly the last applied entry), store it with that
 *      metadata and report SNAPSHOT_TAKEN (taking it later is fine, but drop it if an
 *      installed snapshot, RAFT_UPDATE_SNAPSHOT, overtook it). If RAFT_UPDATE_COMPACT, durable
 *      entries with index < upd.compact_index may be deleted.
 *
 * After a crash the host makes a new raft_t and STARTs it from its durable state alone: hard
 * state, snapshot metadata, the durable log and how far its state machine is.
 *
 * Everything an update points to (entries, messages, reads, snapshot data) belongs to the core
 * or to the event's message and stays valid until the next raft_step() or raft_destroy() on the
 * same raft_t: the host must encode or copy it before stepping again, and must keep a RECEIVE
 * event's message alive until it has handled the update.
 *
 * Errors are -errno: -EINVAL (malformed event or message: dropped, nothing changed), -EREMOTE
 * (this member is not the leader: retry on upd.soft.leader / raft_status().leader), -EBUSY (a
 * leadership transfer or a membership change is in progress, or not yet possible), -EAGAIN (a
 * learner to promote has not caught up yet), -ENOENT / -EEXIST (membership targets), -ENOSPC
 * (too many members), -EALREADY (nothing to do). On error the update still describes any change
 * (the host handles it as usual).
 *
 * Not thread-safe: one raft_t is driven by one thread. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "arena.h"

typedef uint64_t raft_id_t;    /* member id; 0 means none */
typedef uint64_t raft_index_t; /* log index; the first entry is 1 */
typedef uint64_t raft_term_t;
typedef struct raft raft_t;

#define RAFT_MAX_MEMBERS      16 /* voters + learners of one configuration */
#define RAFT_MAX_ENTRY_BYTES  (64u << 20)
#define RAFT_MAX_MSG_ENTRIES  65536u       /* entries in one AppendEntries */
#define RAFT_MAX_MESSAGE_SIZE (256u << 20) /* raft_message_decode() input */
#define RAFT_MAX_INDEX        (1ULL << 62) /* terms and indexes beyond are malformed */

typedef enum raft_entry_type {
    RAFT_ENTRY_NORMAL = 0,
    RAFT_ENTRY_CONF = 1,
} raft_entry_type_t;

typedef struct raft_entry {
    raft_term_t term;
    raft_index_t index;
    raft_entry_type_t type;
    const uint8_t *data;
    size_t len;
} raft_entry_t;

typedef struct raft_conf {
    uint32_t n_voters, n_learners;
    raft_id_t voters[RAFT_MAX_MEMBERS];
    raft_id_t learners[RAFT_MAX_MEMBERS];
} raft_conf_t;

typedef struct raft_snapshot_meta {
    raft_index_t index; /* last entry the snapshot covers (0: no snapshot) */
    raft_term_t term;
    raft_conf_t conf; /* configuration as of index */
} raft_snapshot_meta_t;

typedef struct raft_hard_state {
    raft_term_t term;
    raft_id_t vote;
    raft_index_t commit;
} raft_hard_state_t;

typedef enum raft_role {
    RAFT_FOLLOWER = 0,
    RAFT_PRE_CANDIDATE,
    RAFT_CANDIDATE,
    RAFT_LEADER,
} raft_role_t;

typedef struct raft_soft_state {
    raft_role_t role;
    raft_id_t leader; /* 0 when unknown */
    raft_term_t term;
} raft_soft_state_t;

/* ---- messages (proto/raft.proto, package shoal.raft) ---- */

typedef enum raft_message_type {
    RAFT_MSG_REQUEST_VOTE = 1,
    RAFT_MSG_REQUEST_VOTE_RESULT,
    RAFT_MSG_APPEND_ENTRIES,
    RAFT_MSG_APPEND_ENTRIES_RESULT,
    RAFT_MSG_INSTALL_SNAPSHOT,
    RAFT_MSG_TIMEOUT_NOW,
    RAFT_MSG_HEARTBEAT,
    RAFT_MSG_HEARTBEAT_RESULT,
} raft_message_type_t;

typedef struct raft_message {
    raft_message_type_t type;
    raft_id_t from, to;
    raft_term_t term;
    union {
        struct {
            raft_index_t last_index;
            raft_term_t last_term;
            bool pre_vote, transfer;
        } request_vote;
        struct {
            bool granted, pre_vote;
        } request_vote_result;
        struct {
            raft_index_t prev_index;
            raft_term_t prev_term;
            raft_index_t commit;
            const raft_entry_t *entries;
            uint32_t n_entries;
        } append_entries;
        struct {
            bool rejected;
            raft_index_t index;
            raft_index_t hint_index;
            raft_term_t hint_term;
        } append_entries_result;
        struct {
            raft_snapshot_meta_t meta;
            const uint8_t *data; /* filled in by the host when sending */
            size_t len;
        } install_snapshot;
        struct {
            raft_index_t commit;
            uint64_t ctx;
        } heartbeat;
        struct {
            uint64_t ctx;
            raft_index_t commit;
        } heartbeat_result;
    };
} raft_message_t;

/* ---- configuration ---- */

typedef struct raft_config {
    raft_id_t id;                /* this member, != 0 */
    unsigned election_ticks_min; /* randomised election timeout in [min, max] ticks; */
    unsigned election_ticks_max; /* min > heartbeat_ticks (10x recommended) */
    unsigned heartbeat_ticks;    /* leader heartbeat period, >= 1 */
    bool pre_vote;               /* §9.6 */
    bool check_quorum;           /* §6.2 (also makes voters honour a leader's lease, §4.2.3) */
    unsigned max_inflight;       /* AppendEntries in flight per follower (0: 64) */
    unsigned max_entries_per_append; /* (0: 256) */
    size_t max_bytes_per_append;     /* entry data per AppendEntries (0: 1 MiB); >= 1 entry */
    raft_index_t snapshot_threshold; /* ask for a snapshot every N applied entries (0: never) */
    raft_index_t snapshot_trailing;  /* entries kept in the log behind a snapshot */
    uint64_t (*rand)(void *arg);     /* injected randomness (required) */
    void *rand_arg;
    /* Optional trace of protocol events (one line each, no newline); NULL: none. */
    void (*trace)(void *arg, const char *line);
    void *trace_arg;
} raft_config_t;

/* ---- events ---- */

typedef enum raft_event_type {
    RAFT_EVENT_START = 1,
    RAFT_EVENT_TICK,
    RAFT_EVENT_RECEIVE,
    RAFT_EVENT_PROPOSE,
    RAFT_EVENT_PERSISTED_ENTRIES,
    RAFT_EVENT_PERSISTED_SNAPSHOT,
    RAFT_EVENT_SNAPSHOT_TAKEN,
    RAFT_EVENT_TRANSFER,
    RAFT_EVENT_READ_INDEX,
    RAFT_EVENT_CONF_CHANGE,
} raft_event_type_t;

typedef enum raft_change_type {
    RAFT_CHANGE_BOOTSTRAP = 0, /* the initial configuration (START bootstrap), not an event */
    RAFT_CHANGE_ADD_LEARNER = 1,
    RAFT_CHANGE_PROMOTE = 2,
    RAFT_CHANGE_REMOVE = 3,
} raft_change_type_t;

typedef struct raft_event {
    raft_event_type_t type;
    uint64_t time; /* host clock (ms), for traces and status only */
    union {
        /* The durable state, once, first. entries: the durable log, contiguous, starting at or
         * before snapshot.index + 1 (the first entry only anchors the log: its term is kept,
         * its data is not). applied: how far the host's state machine already is (>= the
         * snapshot index). bootstrap: the initial configuration of a brand-new cluster, used
         * only when log and snapshot are both empty (every founding member passes the same);
         * a member that joins later starts empty and learns its configuration from the log. */
        struct {
            raft_hard_state_t hard_state;
            const raft_snapshot_meta_t *snapshot; /* NULL: none */
            const raft_entry_t *entries;
            uint32_t n_entries;
            raft_index_t applied;
            const raft_conf_t *bootstrap; /* NULL: none */
        } start;
        struct {
            const raft_message_t *message; /* decoded and validated by raft_step() */
        } receive;
        struct {
            const raft_entry_t *entries; /* type NORMAL; term and index are assigned */
            uint32_t n_entries;
        } propose;
        struct {
            raft_index_t index; /* the last entry of the completed write */
            raft_term_t term;
        } persisted_entries;
        struct {
            raft_index_t index;
            raft_term_t term;
        } persisted_snapshot;
        struct {
            raft_snapshot_meta_t meta; /* as given in upd.snapshot_wanted */
        } snapshot_taken;
        struct {
            raft_id_t target; /* 0: the most up-to-date voter */
        } transfer;
        struct {
            uint64_t ctx;
        } read_index;
        struct {
            raft_change_type_t type;
            raft_id_t node;
        } conf_change;
    };
} raft_event_t;

/* ---- update ---- */

enum {
    RAFT_UPDATE_HARD_STATE = 1 << 0,
    RAFT_UPDATE_ENTRIES = 1 << 1,
    RAFT_UPDATE_SNAPSHOT = 1 << 2,
    RAFT_UPDATE_MESSAGES = 1 << 3,
    RAFT_UPDATE_COMMITTED = 1 << 4,
    RAFT_UPDATE_READS = 1 << 5,
    RAFT_UPDATE_SOFT_STATE = 1 << 6,
    RAFT_UPDATE_COMPACT = 1 << 7,
    RAFT_UPDATE_SNAPSHOT_WANTED = 1 << 8,
    RAFT_UPDATE_PROPOSED = 1 << 9,
};

/* A ReadIndex result: serve the read once the state machine has applied `index`. index 0: the
 * read was dropped (leadership lost); retry elsewhere. */
typedef struct raft_read_state {
    uint64_t ctx;
    raft_index_t index;
} raft_read_state_t;

typedef struct raft_update {
    unsigned flags;
    raft_hard_state_t hard_state;
    raft_soft_state_t soft;
    struct {
        raft_index_t first_index; /* delete durable entries >= this, then append */
        const raft_entry_t *batch;
        uint32_t n;
    } entries;
    struct {
        raft_snapshot_meta_t meta;
        const uint8_t *data; /* points into the RECEIVE event's message */
        size_t len;
    } snapshot;
    struct {
        const raft_message_t *batch;
        uint32_t n;
    } messages;
    struct {
        const raft_entry_t *batch;
        uint32_t n;
    } committed;
    struct {
        const raft_read_state_t *batch;
        uint32_t n;
    } reads;
    raft_index_t compact_index;
    raft_snapshot_meta_t snapshot_wanted;
    struct {
        raft_index_t first_index, last_index; /* where PROPOSE / CONF_CHANGE entries went */
        raft_term_t term; /* acknowledged when the entry at that index with this term applies */
    } proposed;
} raft_update_t;

typedef struct raft_status {
    raft_id_t id, leader, vote;
    raft_role_t role;
    raft_term_t term;
    raft_index_t first_index, last_index, stable_index, commit, applied;
    raft_snapshot_meta_t snapshot;
    raft_conf_t conf; /* latest in the log (used at once, §4.1) */
    raft_index_t conf_index;
    raft_id_t transferee;
    struct {
        raft_id_t id;
        raft_index_t match, next;
        int state; /* 0 probe, 1 replicate, 2 snapshot */
        bool voter, recent_active;
    } progress[RAFT_MAX_MEMBERS]; /* leader only */
    uint32_t n_progress;
} raft_status_t;

/* ---- API ---- */

/* NULL on an invalid configuration (see raft_config_check()). */
raft_t *raft_new(const raft_config_t *cfg);
void raft_destroy(raft_t **self_p);
/* 0, or -EINVAL with a reason in err. */
int raft_config_check(const raft_config_t *cfg, char *err, size_t errlen);

/* Runs one event; upd is overwritten (it need not be initialised). */
int raft_step(raft_t *self, const raft_event_t *ev, raft_update_t *upd);

void raft_status(const raft_t *self, raft_status_t *ret);
const char *raft_role_name(raft_role_t role);
const char *raft_message_type_name(raft_message_type_t type);

/* ---- configurations ---- */
bool raft_conf_is_voter(const raft_conf_t *c, raft_id_t id);
bool raft_conf_is_learner(const raft_conf_t *c, raft_id_t id);
bool raft_conf_is_member(const raft_conf_t *c, raft_id_t id);
/* 0 when voters and learners are non-zero, distinct and within RAFT_MAX_MEMBERS; else -EINVAL. */
int raft_conf_check(const raft_conf_t *c);

/* ---- codec (raft_codec.c): proto/raft.proto <-> C structs ---- */

/* Checks the invariants a well-formed decoded message has (ids, index/term arithmetic,
 * contiguous entries, well-formed configuration entries). 0 or -EINVAL. */
int raft_message_validate(const raft_message_t *m);
/* Packs into arena memory. */
int raft_message_encode(const raft_message_t *m, arena_t *a, uint8_t **ret, size_t *ret_len);
/* Unpacks and validates; everything lives in the arena. -EINVAL on malformed input. */
int raft_message_decode(const uint8_t *buf, size_t len, arena_t *a, raft_message_t *ret);

/* Records: a log entry, hard state and snapshot metadata as the store persists them. */
int raft_entry_encode(const raft_entry_t *e, arena_t *a, uint8_t **ret, size_t *ret_len);
int raft_entry_decode(const uint8_t *buf, size_t len, arena_t *a, raft_entry_t *ret);
int raft_hard_state_encode(const raft_hard_state_t *hs, arena_t *a, uint8_t **ret, size_t *ret_len);
int raft_hard_state_decode(const uint8_t *buf, size_t len, raft_hard_state_t *ret);
int raft_snapshot_meta_encode(const raft_snapshot_meta_t *m, arena_t *a, uint8_t **ret,
                              size_t *ret_len);
int raft_snapshot_meta_decode(const uint8_t *buf, size_t len, raft_snapshot_meta_t *ret);
/* ENTRY_CONF data: the change and the configuration it results in. */
int raft_conf_change_encode(raft_change_type_t type, raft_id_t node, const raft_conf_t *conf,
                            arena_t *a, uint8_t **ret, size_t *ret_len);
/* ret_type / ret_node may be NULL. -EINVAL unless the configuration is valid. */
int raft_conf_change_decode(const uint8_t *buf, size_t len, raft_change_type_t *ret_type,
                            raft_id_t *ret_node, raft_conf_t *ret_conf);
