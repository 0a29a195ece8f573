/* raft_log — the in-memory log of one Raft member (see raft_log.h).
 *
 * The core is I/O-free, so it cannot read entries back from disk: the log keeps every entry since
 * the last compaction in memory, and snapshots (dissertation chapter 5) bound its size. A suffix
 * of it is unstable — handed to the host to persist, not yet reported durable. Layout:
 *
 *     anchor (offset, offset_term)   e[head] ... e[head+n-1]
 *     index:  offset                 offset+1 ... offset+n = last
 *
 * The anchor is the entry just before the first one kept: only its term is known, which is all
 * an AppendEntries consistency check needs (prev_index/prev_term). Invariants:
 *  - indexes are contiguous, terms never decrease along the log;
 *  - offset <= snapshot.index once a snapshot exists except right after a restore, where
 *    offset == snapshot.index; entries between offset and snapshot.index are the "trailing"
 *    entries kept for slightly lagging followers (§5.1.3);
 *  - stable <= last; dirty_from, when set, is > offset.
 *
 * Compaction moves head forward and frees the entries' data; the array is slid back once half of
 * it is dead, so appends and compactions are amortised O(1). Called only by the raft_*.c
 * modules. */
#include "raft_log.h"

#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

void raft_log_init(raft_log_t *l) {
    memset(l, 0, sizeof *l);
}

static void entry_free(raft_entry_t *e) {
    free((void *)e->data);
    e->data = NULL;
}

void raft_log_free(raft_log_t *l) {
    for (size_t k = 0; k < l->n; k++)
        entry_free(&l->e[l->head + k]);
    free(l->e);
    memset(l, 0, sizeof *l);
}

raft_term_t raft_log_last_term(const raft_log_t *l) {
    return l->n ? l->e[l->head + l->n - 1].term : l->offset_term;
}

int raft_log_term(const raft_log_t *l, raft_index_t index, raft_term_t *ret) {
    if (index == l->offset) {
        *ret = l->offset_term;
        return 0;
    }
    if (index > l->offset && index <= raft_log_last(l)) {
        *ret = l->e[l->head + (index - l->offset - 1)].term;
        return 0;
    }
    if (index == l->snapshot.index && l->snapshot.index) {
        *ret = l->snapshot.term;
        return 0;
    }
    return index < l->offset ? -ENOENT : -ERANGE;
}

bool raft_log_match(const raft_log_t *l, raft_index_t index, raft_term_t term) {
    raft_term_t t;
    return raft_log_term(l, index, &t) == 0 && t == term;
}

const raft_entry_t *raft_log_get(const raft_log_t *l, raft_index_t index) {
    if (index <= l->offset || index > raft_log_last(l))
        return NULL;
    return &l->e[l->head + (index - l->offset - 1)];
}

void raft_log_append(raft_log_t *l, const raft_entry_t *e) {
    assert(e->index == raft_log_last(l) + 1);
    assert(e->term >= raft_log_last_term(l));
    if (l->head + l->n == l->cap) {
        if (l->head > l->cap / 2) {
            memmove(l->e, l->e + l->head, l->n * sizeof *l->e);
            l->head = 0;
        } else {
            l->cap = l->cap ? l->cap * 2 : 64;
            l->e = realloc(l->e, l->cap * sizeof *l->e);
            if (!l->e)
                abort(); /* like arena_alloc(): a store out of memory cannot go on safely */
        }
    }
    raft_entry_t *d = &l->e[l->head + l->n];
    *d = *e;
    d->data = NULL;
    if (e->len) {
        uint8_t *copy = malloc(e->len);
        if (!copy)
            abort();
        memcpy(copy, e->data, e->len);
        d->data = copy;
    }
    l->n++;
    if (!l->dirty_from || e->index < l->dirty_from)
        l->dirty_from = e->index;
}

void raft_log_truncate(raft_log_t *l, raft_index_t from) {
    assert(from > l->offset);
    if (from > raft_log_last(l))
        return;
    size_t keep = from - l->offset - 1;
    for (size_t k = keep; k < l->n; k++)
        entry_free(&l->e[l->head + k]);
    l->n = keep;
    if (l->stable >= from)
        l->stable = from - 1;
    if (!l->dirty_from || from < l->dirty_from)
        l->dirty_from = from;
}

void raft_log_compact(raft_log_t *l, raft_index_t upto) {
    assert(upto > l->offset && upto <= raft_log_last(l));
    size_t drop = upto - l->offset;
    l->offset_term = l->e[l->head + drop - 1].term;
    for (size_t k = 0; k < drop; k++)
        entry_free(&l->e[l->head + k]);
    l->head += drop;
    l->n -= drop;
    l->offset = upto;
    if (l->n == 0)
        l->head = 0;
    if (l->dirty_from && l->dirty_from <= upto)
        l->dirty_from = upto + 1 <= raft_log_last(l) ? upto + 1 : 0;
}

void raft_log_restore(raft_log_t *l, const raft_snapshot_meta_t *meta) {
    for (size_t k = 0; k < l->n; k++)
        entry_free(&l->e[l->head + k]);
    l->head = l->n = 0;
    l->offset = meta->index;
    l->offset_term = meta->term;
    l->snapshot = *meta;
    l->stable = meta->index;
    l->dirty_from = 0;
}

void raft_log_persisted(raft_log_t *l, raft_index_t index, raft_term_t term) {
    if (index > l->stable && index <= raft_log_last(l) && raft_log_match(l, index, term))
        l->stable = index;
}

raft_index_t raft_log_find_by_term(const raft_log_t *l, raft_index_t index, raft_term_t term) {
    if (index > raft_log_last(l))
        index = raft_log_last(l);
    while (index > l->offset) {
        if (l->e[l->head + (index - l->offset - 1)].term <= term)
            return index;
        index--;
    }
    return index < l->offset ? index : l->offset;
}

bool raft_log_is_up_to_date(const raft_log_t *l, raft_index_t index, raft_term_t term) {
    raft_term_t last_term = raft_log_last_term(l);
    return term > last_term || (term == last_term && index >= raft_log_last(l));
}

raft_index_t raft_log_take_dirty(raft_log_t *l) {
    raft_index_t d = l->dirty_from;
    l->dirty_from = 0;
    return d;
}
