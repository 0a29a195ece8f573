/* sim_check — the safety properties checked after every step of every member (Raft
 * dissertation Figure 3.2), plus acknowledged writes and linearizable reads:
 *
 *  - Election safety: at most one leader per term (a table term -> leader id).
 *  - Log matching: every entry that ever enters a log is recorded by (index, term) with its
 *    prefix hash (sim_entry_t); two logs holding the same (index, term) must agree on the whole
 *    prefix up to it.
 *  - Leader completeness: when a member becomes leader of term T it holds every entry known
 *    committed in a term < T, and every write acknowledged in a term < T (one prefix-hash
 *    comparison at the highest such index).
 *  - State machine safety: commitment is recorded per index (the prefix hash of the first
 *    member seen with commit >= index); any member committing, or applying, a different entry
 *    there is a violation. Committed entries are never truncated; commit never moves back.
 *  - Commit rule (Figure 3.1): a leader's commit index only moves onto an entry of its own
 *    term; older entries are committed indirectly (§3.6.2, the "Figure 8" scenario).
 *  - Linearizable reads: a ReadIndex read is served from a state at least as new as the
 *    highest write acknowledged to a client before the read was started.
 *
 * "Known committed in term T" is the term of the member that first reported the commit — at
 * least the term the entry was really committed in, so the check never fires wrongly; a
 * leader elected late in an older term (delayed votes) legitimately lacks newer entries. */
#include <stdlib.h>
#include <string.h>

#include "sim.h"

void sim_check_init(sim_t *s) {
    (void)s;
}

void sim_check_free(sim_t *s) {
    for (size_t i = 0; i < s->cap_seen; i++)
        free(s->seen[i]);
    free(s->seen);
    free(s->n_seen);
    free(s->committed_prefix);
    free(s->commit_term);
    free(s->ack_term);
    free(s->leader_of_term);
}

static size_t grown(size_t cap, uint64_t need) {
    size_t c = cap ? cap : 1024;
    while (c <= need)
        c *= 2;
    return c;
}

static void *grow(void *p, size_t old_cap, size_t new_cap, size_t elem) {
    p = realloc(p, new_cap * elem);
    memset((char *)p + old_cap * elem, 0, (new_cap - old_cap) * elem);
    return p;
}

static void ensure_committed(sim_t *s, uint64_t index) {
    if (index < s->cap_committed)
        return;
    size_t c = grown(s->cap_committed, index);
    s->committed_prefix = grow(s->committed_prefix, s->cap_committed, c, sizeof(uint64_t));
    s->commit_term = grow(s->commit_term, s->cap_committed, c, sizeof(uint64_t));
    s->ack_term = grow(s->ack_term, s->cap_committed, c, sizeof(uint64_t));
    s->cap_committed = c;
}

void sim_check_entry(sim_t *s, sim_node_t *n, const sim_entry_t *e) {
    if (e->index >= s->cap_seen) {
        size_t c = grown(s->cap_seen, e->index);
        s->seen = grow(s->seen, s->cap_seen, c, sizeof *s->seen);
        s->n_seen = grow(s->n_seen, s->cap_seen, c, sizeof *s->n_seen);
        s->cap_seen = c;
    }
    struct sim_terms *v = s->seen[e->index];
    uint32_t k = s->n_seen[e->index];
    for (uint32_t i = 0; i < k; i++) {
        if (v[i].term != e->term)
            continue;
        if (v[i].prefix != e->prefix)
            sim_violation(s,
                          "log matching: n%llu holds entry %llu/%llu with a different history "
                          "than another log holding %llu/%llu",
                          (unsigned long long)n->id, (unsigned long long)e->index,
                          (unsigned long long)e->term, (unsigned long long)e->index,
                          (unsigned long long)e->term);
        return;
    }
    if ((k & (k - 1)) == 0) /* powers of two: grow */
        s->seen[e->index] = v = realloc(v, (k ? 2 * k : 1) * sizeof *v);
    v[k] = (struct sim_terms){e->term, e->prefix};
    s->n_seen[e->index] = k + 1;
}

void sim_check_truncate(sim_t *s, sim_node_t *n, uint64_t from) {
    if (from <= n->commit_checked && from <= sim_log_last(&n->view))
        sim_violation(s, "n%llu truncates its log from %llu although %llu is committed",
                      (unsigned long long)n->id, (unsigned long long)from,
                      (unsigned long long)n->commit_checked);
}

/* n must hold the entry committed at index (or a snapshot covering it). */
static void check_has(sim_t *s, sim_node_t *n, uint64_t index, uint64_t term, const char *what) {
    const sim_log_t *l = &n->view;
    if (index < l->offset) {
        if (l->offset <= s->committed_upto && s->committed_prefix[l->offset] &&
            s->committed_prefix[l->offset] != l->offset_prefix)
            sim_violation(s,
                          "leader completeness: n%llu (leader of term %llu) is built on a "
                          "snapshot at %llu that differs from the committed log",
                          (unsigned long long)n->id, (unsigned long long)term,
                          (unsigned long long)l->offset);
        return;
    }
    bool ok;
    uint64_t p = sim_log_prefix_at(l, index, &ok);
    if (!ok || p != s->committed_prefix[index])
        sim_violation(s,
                      "leader completeness: n%llu became leader of term %llu without the %s "
                      "entry %llu (its log ends at %llu)",
                      (unsigned long long)n->id, (unsigned long long)term, what,
                      (unsigned long long)index, (unsigned long long)sim_log_last(l));
}

static void check_new_leader(sim_t *s, sim_node_t *n, uint64_t term) {
    uint64_t i = s->committed_upto;
    while (i > 0 && (!s->committed_prefix[i] || s->commit_term[i] >= term))
        i--;
    if (i)
        check_has(s, n, i, term, "committed");
    uint64_t j = s->acked_max;
    while (j > 0 && (!s->ack_term[j] || s->ack_term[j] >= term))
        j--;
    if (j && !s->failed)
        check_has(s, n, j, term, "acknowledged");
}

void sim_check_node(sim_t *s, sim_node_t *n) {
    if (!n->up || !n->r || s->failed)
        return;
    raft_status_t st;
    raft_status(n->r, &st);
    if (st.role == RAFT_LEADER) {
        if (st.term >= s->cap_terms) {
            size_t c = grown(s->cap_terms, st.term);
            s->leader_of_term = grow(s->leader_of_term, s->cap_terms, c, sizeof(raft_id_t));
            s->cap_terms = c;
        }
        raft_id_t other = s->leader_of_term[st.term];
        if (other && other != n->id) {
            sim_violation(s, "election safety: n%llu and n%llu are both leaders of term %llu",
                          (unsigned long long)other, (unsigned long long)n->id,
                          (unsigned long long)st.term);
            return;
        }
        if (!other) {
            s->leader_of_term[st.term] = n->id;
            check_new_leader(s, n, st.term);
            if (s->failed)
                return;
        }
    }
    if (st.role == RAFT_LEADER && st.commit > n->commit_checked && st.commit > n->view.offset) {
        /* Figure 3.1: a leader sets commitIndex = N only if log[N].term == currentTerm. */
        const sim_entry_t *e = &n->view.e[st.commit - n->view.offset - 1];
        if (st.commit <= sim_log_last(&n->view) && e->term != st.term) {
            sim_violation(s,
                          "commit rule: leader n%llu of term %llu moved its commit index to "
                          "%llu, an entry of term %llu",
                          (unsigned long long)n->id, (unsigned long long)st.term,
                          (unsigned long long)st.commit, (unsigned long long)e->term);
            return;
        }
    }
    if (st.commit < n->commit_checked) {
        sim_violation(s, "n%llu: commit went back from %llu to %llu", (unsigned long long)n->id,
                      (unsigned long long)n->commit_checked, (unsigned long long)st.commit);
        return;
    }
    uint64_t from = n->commit_checked + 1;
    if (from < n->view.offset)
        from = n->view.offset;
    if (from == 0)
        from = 1;
    ensure_committed(s, st.commit);
    for (uint64_t i = from; i <= st.commit; i++) {
        bool ok;
        uint64_t p = sim_log_prefix_at(&n->view, i, &ok);
        if (!ok) {
            sim_violation(s, "n%llu: commit %llu beyond its log (last %llu)",
                          (unsigned long long)n->id, (unsigned long long)st.commit,
                          (unsigned long long)sim_log_last(&n->view));
            return;
        }
        if (i <= s->committed_upto && s->committed_prefix[i]) {
            if (s->committed_prefix[i] != p) {
                sim_violation(s,
                              "state machine safety: n%llu commits a different entry at %llu "
                              "than was committed before",
                              (unsigned long long)n->id, (unsigned long long)i);
                return;
            }
        } else {
            s->committed_prefix[i] = p;
            s->commit_term[i] = st.term;
            if (i > s->committed_upto)
                s->committed_upto = i;
        }
    }
    n->commit_checked = st.commit;
}

void sim_check_apply(sim_t *s, sim_node_t *n, uint64_t index, uint64_t hash) {
    if (!index || s->failed)
        return;
    if (index > s->committed_upto || !s->committed_prefix[index]) {
        sim_violation(s, "n%llu applies %llu, which nobody reported committed",
                      (unsigned long long)n->id, (unsigned long long)index);
        return;
    }
    if (s->committed_prefix[index] != hash)
        sim_violation(s,
                      "state machine safety: n%llu applies a different entry at %llu than "
                      "was committed",
                      (unsigned long long)n->id, (unsigned long long)index);
}

void sim_check_ack(sim_t *s, sim_node_t *n, uint64_t index, uint64_t term) {
    (void)term;
    ensure_committed(s, index);
    if (!s->ack_term[index] || s->ack_term[index] > n->term)
        s->ack_term[index] = n->term;
    if (index > s->acked_max)
        s->acked_max = index;
}

void sim_check_read(sim_t *s, sim_node_t *n, const sim_read_t *rd) {
    if (n->sm.index < rd->required)
        sim_violation(s,
                      "linearizability: n%llu served read %llu at applied index %llu, but the "
                      "write at %llu was acknowledged before the read started",
                      (unsigned long long)n->id, (unsigned long long)rd->ctx,
                      (unsigned long long)n->sm.index, (unsigned long long)rd->required);
}
