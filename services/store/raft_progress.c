/* raft_progress — a leader's view of one member's log (dissertation §3.5, Figure 3.1 "volatile
 * state on leaders": nextIndex and matchIndex), plus the flow control etcd/raft added on top:
 *
 *   PROBE      the leader does not know where the follower's log ends. It sends one append at
 *              nextIndex and waits for the answer (or a heartbeat answer) before the next one;
 *              a rejection moves nextIndex back, using the follower's hint to skip a term.
 *   REPLICATE  the follower's log is known to match up to matchIndex. Appends are pipelined
 *              (nextIndex moves optimistically when one is sent), at most in_cap outstanding:
 *              the ring holds the last index of each, freed as answers arrive.
 *   SNAPSHOT   the entries the follower needs were compacted away; an InstallSnapshot is
 *              outstanding. Left on success, or after a timeout back to PROBE.
 *
 * Invariants: match < next; in REPLICATE the ring's indexes increase and are >= match + 1.
 * Called by raft_replication.c, raft_membership.c and raft_read.c. */
#include "raft_progress.h"

#include <stdlib.h>
#include <string.h>

void raft_progress_init(raft_progress_t *p, raft_id_t id, bool voter, raft_index_t next,
                        unsigned max_inflight) {
    memset(p, 0, sizeof *p);
    p->id = id;
    p->voter = voter;
    p->next = next ? next : 1;
    p->in_cap = max_inflight ? max_inflight : 1;
    p->inflight = calloc(p->in_cap, sizeof *p->inflight);
    if (!p->inflight)
        abort();
}

void raft_progress_free(raft_progress_t *p) {
    free(p->inflight);
    p->inflight = NULL;
}

static void inflight_reset(raft_progress_t *p) {
    p->in_start = p->in_count = 0;
}

void raft_progress_become_probe(raft_progress_t *p) {
    /* Coming back from a snapshot, the follower has at least the snapshot's entries. */
    if (p->state == RAFT_PROGRESS_SNAPSHOT) {
        raft_index_t from = p->pending_snapshot > p->match ? p->pending_snapshot : p->match;
        p->next = from + 1;
    } else {
        p->next = p->match + 1;
    }
    p->state = RAFT_PROGRESS_PROBE;
    p->probe_sent = false;
    p->pending_snapshot = 0;
    inflight_reset(p);
}

void raft_progress_become_replicate(raft_progress_t *p) {
    p->state = RAFT_PROGRESS_REPLICATE;
    p->next = p->match + 1;
    p->probe_sent = false;
    p->pending_snapshot = 0;
    inflight_reset(p);
}

void raft_progress_become_snapshot(raft_progress_t *p, raft_index_t snapshot_index) {
    p->state = RAFT_PROGRESS_SNAPSHOT;
    p->pending_snapshot = snapshot_index;
    p->snapshot_elapsed = 0;
    p->probe_sent = false;
    inflight_reset(p);
}

static void inflight_free_upto(raft_progress_t *p, raft_index_t index) {
    while (p->in_count && p->inflight[p->in_start] <= index) {
        p->in_start = (p->in_start + 1) % p->in_cap;
        p->in_count--;
    }
}

bool raft_progress_update(raft_progress_t *p, raft_index_t index) {
    bool moved = false;
    if (index > p->match) {
        p->match = index;
        moved = true;
    }
    if (p->next < index + 1)
        p->next = index + 1;
    p->probe_sent = false;
    inflight_free_upto(p, index);
    return moved;
}

bool raft_progress_decrease(raft_progress_t *p, raft_index_t rejected, raft_index_t hint) {
    if (p->state == RAFT_PROGRESS_REPLICATE) {
        /* An answer to an append older than what is known to match: stale. */
        if (rejected <= p->match)
            return false;
        p->next = p->match + 1;
        return true;
    }
    /* Probe: only the answer to the outstanding probe (sent at next - 1) counts. */
    if (rejected != p->next - 1)
        return false;
    raft_index_t n = hint + 1 < rejected ? hint + 1 : rejected;
    if (n < p->match + 1)
        n = p->match + 1;
    /* Stuck at match + 1 the follower lost entries it acknowledged (a wiped disk): probe again
     * only on the next heartbeat answer instead of ping-ponging at network speed. */
    p->probe_sent = n == p->next;
    p->next = n;
    return true;
}

bool raft_progress_paused(const raft_progress_t *p) {
    switch (p->state) {
    case RAFT_PROGRESS_PROBE:
        return p->probe_sent;
    case RAFT_PROGRESS_REPLICATE:
        return raft_progress_inflight_full(p);
    default:
        return true;
    }
}

void raft_progress_sent(raft_progress_t *p, raft_index_t last) {
    if (p->state == RAFT_PROGRESS_REPLICATE) {
        p->next = last + 1;
        if (p->in_count < p->in_cap) {
            p->inflight[(p->in_start + p->in_count) % p->in_cap] = last;
            p->in_count++;
        }
    } else if (p->state == RAFT_PROGRESS_PROBE) {
        p->probe_sent = true;
    }
}

bool raft_progress_inflight_full(const raft_progress_t *p) {
    return p->in_count >= p->in_cap;
}

void raft_progress_inflight_free_first(raft_progress_t *p) {
    if (p->in_count) {
        p->in_start = (p->in_start + 1) % p->in_cap;
        p->in_count--;
    }
}

const char *raft_progress_state_name(raft_progress_state_t s) {
    switch (s) {
    case RAFT_PROGRESS_PROBE:
        return "probe";
    case RAFT_PROGRESS_REPLICATE:
        return "replicate";
    default:
        return "snapshot";
    }
}
