/* raft_read — linearizable reads without going through the log: ReadIndex (dissertation §6.4),
 * lease-free (no reliance on bounded clock drift).
 *
 * §6.4: "1. If the leader has not yet marked an entry from its current term committed, it waits
 * until it has done so. 2. The leader saves its current commit index in a local variable
 * readIndex. 3. The leader needs to make sure it hasn't been superseded by a newer leader ... it
 * issues a new round of heartbeats and waits for their acknowledgments from a majority of the
 * cluster. 4. The leader waits for its state machine to advance at least as far as the
 * readIndex." Step 4 is the host's: a read state says "serve ctx once applied >= index".
 *
 * Rounds are numbered: every read gets the next sequence number and a heartbeat round carrying
 * it; followers echo the number back, each progress remembers the highest one echoed this term,
 * and a read is confirmed once a quorum of voters (the leader included) has echoed a number at
 * least as high as its own — an acknowledgement of a later round also proves leadership at the
 * time of an earlier one. Periodic heartbeats carry the latest number too, so reads under load
 * are confirmed by whichever round comes back first. Reads that arrive before the leader has
 * committed an entry of its term wait (step 1) and start together once it has.
 *
 * When leadership is lost, every pending read is reported with index 0 (retry elsewhere).
 * Called by raft.c, raft_replication.c (heartbeat results, commits), raft_membership.c. */
#include <errno.h>
#include <stdlib.h>

#include "raft_internal.h"

static void out_read(raft_t *r, uint64_t ctx, raft_index_t index) {
    if (r->n_out_reads == r->cap_out_reads) {
        uint32_t cap = r->cap_out_reads ? r->cap_out_reads * 2 : 8;
        raft_read_state_t *v = arena_alloc(r->arena, cap * sizeof *v);
        for (uint32_t i = 0; i < r->n_out_reads; i++)
            v[i] = r->out_reads[i];
        r->out_reads = v;
        r->cap_out_reads = cap;
    }
    r->out_reads[r->n_out_reads++] = (raft_read_state_t){ctx, index};
}

static void push_pending(raft_t *r, uint64_t ctx, uint64_t seq) {
    if (r->n_reads == r->cap_reads) {
        size_t cap = r->cap_reads ? r->cap_reads * 2 : 16;
        raft_pending_read_t *v = realloc(r->reads, cap * sizeof *v);
        if (!v)
            abort();
        r->reads = v;
        r->cap_reads = cap;
    }
    r->reads[r->n_reads++] = (raft_pending_read_t){ctx, r->commit, seq};
}

static int cmp_desc(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? 1 : x > y ? -1 : 0;
}

/* The highest sequence number a quorum of voters has acknowledged. */
static uint64_t quorum_acked(raft_t *r) {
    uint64_t acks[RAFT_MAX_MEMBERS];
    uint32_t n = 0;
    for (uint32_t i = 0; i < r->n_progress; i++) {
        const raft_progress_t *p = &r->progress[i];
        if (p->voter)
            acks[n++] = p->id == r->id ? r->read_seq : p->read_ack;
    }
    uint32_t q = raft_quorum(r);
    if (n < q)
        return 0;
    qsort(acks, n, sizeof acks[0], cmp_desc);
    return acks[q - 1];
}

void raft_read_release(raft_t *r) {
    if (r->role != RAFT_LEADER || !r->n_reads)
        return;
    uint64_t confirmed = quorum_acked(r);
    size_t k = 0;
    while (k < r->n_reads && r->reads[k].seq <= confirmed) {
        out_read(r, r->reads[k].ctx, r->reads[k].index);
        k++;
    }
    if (!k)
        return;
    for (size_t i = k; i < r->n_reads; i++)
        r->reads[i - k] = r->reads[i];
    r->n_reads -= k;
}

static void start_round(raft_t *r, const uint64_t *ctxs, size_t n) {
    uint64_t seq = ++r->read_seq;
    for (size_t i = 0; i < n; i++)
        push_pending(r, ctxs[i], seq);
    raft_replication_broadcast_heartbeat(r, seq);
    raft_read_release(r); /* a single voter confirms itself */
}

int raft_read_index(raft_t *r, uint64_t ctx) {
    if (r->role != RAFT_LEADER)
        return -EREMOTE;
    if (r->commit < r->term_start) {
        if (r->n_waiting == r->cap_waiting) {
            size_t cap = r->cap_waiting ? r->cap_waiting * 2 : 16;
            uint64_t *v = realloc(r->waiting_reads, cap * sizeof *v);
            if (!v)
                abort();
            r->waiting_reads = v;
            r->cap_waiting = cap;
        }
        r->waiting_reads[r->n_waiting++] = ctx;
        return 0;
    }
    start_round(r, &ctx, 1);
    return 0;
}

void raft_read_term_committed(raft_t *r) {
    if (!r->n_waiting)
        return;
    start_round(r, r->waiting_reads, r->n_waiting);
    r->n_waiting = 0;
}

void raft_read_recv_ack(raft_t *r, raft_progress_t *p, uint64_t ctx) {
    if (ctx <= p->read_ack || ctx > r->read_seq)
        return; /* old, or a round we never started */
    p->read_ack = ctx;
    raft_read_release(r);
}

void raft_read_abort_all(raft_t *r) {
    for (size_t i = 0; i < r->n_reads; i++)
        out_read(r, r->reads[i].ctx, 0);
    for (size_t i = 0; i < r->n_waiting; i++)
        out_read(r, r->waiting_reads[i], 0);
    r->n_reads = r->n_waiting = 0;
}
