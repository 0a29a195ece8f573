/* raft_log — the in-memory Raft log of one member: the entries since the last compaction, the
 * snapshot metadata, and where the durable (stable) part ends. Pure data structure; the policy
 * (what to append, when to compact) lives in the raft_*.c modules. */
#pragma once
#include "raft.h"

typedef struct raft_log {
    raft_entry_t *e; /* e[head .. head+n): entry offset+1+k at e[head+k]; data is owned */
    size_t head, n, cap;
    raft_index_t offset; /* index of the anchor before the first entry */
    raft_term_t offset_term;
    raft_snapshot_meta_t snapshot; /* the latest snapshot (index 0: none) */
    raft_index_t stable;           /* every entry <= stable is durable as it is here */
    raft_index_t dirty_from;       /* lowest index changed since raft_log_take_dirty() (0: none) */
} raft_log_t;

void raft_log_init(raft_log_t *l);
void raft_log_free(raft_log_t *l);

static inline raft_index_t raft_log_first(const raft_log_t *l) {
    return l->offset + 1;
}
static inline raft_index_t raft_log_last(const raft_log_t *l) {
    return l->offset + l->n;
}
raft_term_t raft_log_last_term(const raft_log_t *l);
/* 0 and the term; -ENOENT when compacted away, -ERANGE beyond the last entry. */
int raft_log_term(const raft_log_t *l, raft_index_t index, raft_term_t *ret);
/* True when the log has an entry (or anchor/snapshot) at index with this term. */
bool raft_log_match(const raft_log_t *l, raft_index_t index, raft_term_t term);
/* The entry at index, or NULL (anchor, compacted, beyond). */
const raft_entry_t *raft_log_get(const raft_log_t *l, raft_index_t index);
/* Copies e (and its data) as the entry at last + 1. */
void raft_log_append(raft_log_t *l, const raft_entry_t *e);
/* Removes every entry >= from (from > offset). */
void raft_log_truncate(raft_log_t *l, raft_index_t from);
/* Drops entries <= upto (offset < upto <= last), which become the anchor. */
void raft_log_compact(raft_log_t *l, raft_index_t upto);
/* Replaces everything by a snapshot: the log becomes empty after meta->index. */
void raft_log_restore(raft_log_t *l, const raft_snapshot_meta_t *meta);
/* Records a completed write: stable moves to index when the entry there still has term. */
void raft_log_persisted(raft_log_t *l, raft_index_t index, raft_term_t term);
/* The largest j <= index whose term is <= term (the anchor when none is known): the fast
 * backtracking of §5.3 / etcd's findConflictByTerm. */
raft_index_t raft_log_find_by_term(const raft_log_t *l, raft_index_t index, raft_term_t term);
/* §5.4.1 "up-to-date": a log ending at (index, term) is at least as up-to-date as this one. */
bool raft_log_is_up_to_date(const raft_log_t *l, raft_index_t index, raft_term_t term);
/* Returns and clears the lowest index changed since the last call (0: none). */
raft_index_t raft_log_take_dirty(raft_log_t *l);
