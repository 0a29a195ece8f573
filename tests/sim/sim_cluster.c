/* sim_cluster — the simulated world of one seed: members, their disks, the network and the event
 * queue, and the host loop each member runs around its raft_t (the same contract the store
 * daemon follows, raft.h).
 *
 * Time is a counter in milliseconds; every happening is an event in a heap ordered by (time,
 * sequence number), so a seed replays exactly. Events: a member's tick (each member has its own
 * tick period: clock skew), a message delivery, a disk write completion, a client action, a
 * fault, a restart, a heal.
 *
 * Disk. Hard state is written synchronously (the contract: durable before any message of the
 * same update is sent). Entry and snapshot writes are queued and complete in order after a
 * random latency, each reported to the core with PERSISTED_ENTRIES / PERSISTED_SNAPSHOT. A
 * crash keeps a random prefix of the queued writes (those that reached the platter) and loses
 * the rest, then the member restarts from its durable state alone. Snapshots the core asks for
 * are taken synchronously from the state machine.
 *
 * Network. Messages are encoded with raft_message_encode() and decoded with
 * raft_message_decode() on delivery, so every message of every run goes through the protobuf
 * codec and its validation. Each message may be lost, duplicated, delayed (reordered) or blocked
 * by a partition (symmetric or one-way) at delivery time.
 *
 * The state machine is a running hash of the applied entries — equal to the log's prefix hash at
 * the applied index — which is all the checker needs (sim_check.c). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sim.h"

/* ---- event heap ---- */

static bool ev_less(const sim_event_t *a, const sim_event_t *b) {
    return a->time < b->time || (a->time == b->time && a->seq < b->seq);
}

static void heap_push(sim_t *s, sim_event_t ev) {
    if (s->n_heap == s->cap_heap) {
        s->cap_heap = s->cap_heap ? s->cap_heap * 2 : 256;
        s->heap = realloc(s->heap, s->cap_heap * sizeof *s->heap);
    }
    ev.seq = s->next_seq++;
    size_t i = s->n_heap++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!ev_less(&ev, &s->heap[parent]))
            break;
        s->heap[i] = s->heap[parent];
        i = parent;
    }
    s->heap[i] = ev;
}

static sim_event_t heap_pop(sim_t *s) {
    sim_event_t top = s->heap[0];
    sim_event_t last = s->heap[--s->n_heap];
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        const sim_event_t *best = &last;
        if (l < s->n_heap && ev_less(&s->heap[l], best)) {
            m = l;
            best = &s->heap[l];
        }
        if (r < s->n_heap && ev_less(&s->heap[r], best))
            m = r;
        if (m == i)
            break;
        s->heap[i] = s->heap[m];
        i = m;
    }
    if (s->n_heap)
        s->heap[i] = last;
    return top;
}

void sim_push(sim_t *s, uint64_t at, int type, int node, uint32_t incarnation) {
    heap_push(s, (sim_event_t){.time = at, .type = type, .node = node, .incarnation = incarnation});
}

/* ---- logs ---- */

uint64_t sim_log_last(const sim_log_t *l) {
    return l->offset + l->n;
}

uint64_t sim_log_prefix_at(const sim_log_t *l, uint64_t index, bool *ok) {
    *ok = true;
    if (index == l->offset)
        return l->offset_prefix;
    if (index > l->offset && index <= sim_log_last(l))
        return l->e[index - l->offset - 1].prefix;
    *ok = false;
    return 0;
}

static void log_free_entries(sim_entry_t *e, size_t n) {
    for (size_t i = 0; i < n; i++)
        free(e[i].data);
}

static void log_clear(sim_log_t *l) {
    log_free_entries(l->e, l->n);
    free(l->e);
    memset(l, 0, sizeof *l);
}

static void log_truncate(sim_log_t *l, uint64_t from) {
    if (from <= l->offset) {
        log_free_entries(l->e, l->n);
        l->n = 0;
        return;
    }
    if (from > sim_log_last(l))
        return;
    size_t keep = from - l->offset - 1;
    log_free_entries(l->e + keep, l->n - keep);
    l->n = keep;
}

static void entry_copy(sim_entry_t *d, const sim_entry_t *e) {
    *d = *e;
    d->data = NULL;
    if (e->len) {
        d->data = malloc(e->len);
        memcpy(d->data, e->data, e->len);
    }
}

static void log_append(sim_log_t *l, const sim_entry_t *e) {
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 64;
        l->e = realloc(l->e, l->cap * sizeof *l->e);
    }
    entry_copy(&l->e[l->n++], e);
}

/* Drops entries with index < first; the last dropped one becomes the anchor. */
static void log_drop_before(sim_log_t *l, uint64_t first) {
    size_t k = 0;
    while (k < l->n && l->e[k].index < first) {
        l->offset = l->e[k].index;
        l->offset_term = l->e[k].term;
        l->offset_prefix = l->e[k].prefix;
        free(l->e[k].data);
        k++;
    }
    memmove(l->e, l->e + k, (l->n - k) * sizeof *l->e);
    l->n -= k;
}

static void log_reset_to(sim_log_t *l, const raft_snapshot_meta_t *m, const sim_sm_t *st) {
    log_free_entries(l->e, l->n);
    l->n = 0;
    l->offset = m->index;
    l->offset_term = m->term;
    l->offset_prefix = st->hash;
}

static void log_copy(sim_log_t *d, const sim_log_t *src) {
    log_clear(d);
    d->offset = src->offset;
    d->offset_term = src->offset_term;
    d->offset_prefix = src->offset_prefix;
    for (size_t i = 0; i < src->n; i++)
        log_append(d, &src->e[i]);
}

static uint64_t entry_hash(uint64_t prev, uint64_t index, uint64_t term, raft_entry_type_t type,
                           const uint8_t *data, size_t len) {
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < len; i++)
        h = (h ^ data[i]) * 1099511628211ULL;
    return sim_mix(prev * 31 + sim_mix(h ^ index * 0x9e3779b97f4a7c15ULL ^ term << 32 ^ type));
}

/* ---- tracing helpers ---- */

static const char *msg_str(const raft_message_t *m, char *buf, size_t len) {
    int k = snprintf(buf, len, "%s t%llu", raft_message_type_name(m->type),
                     (unsigned long long)m->term);
    switch (m->type) {
    case RAFT_MSG_REQUEST_VOTE:
        snprintf(
            buf + k, len - k, " last=%llu/%llu%s%s", (unsigned long long)m->request_vote.last_index,
            (unsigned long long)m->request_vote.last_term, m->request_vote.pre_vote ? " pre" : "",
            m->request_vote.transfer ? " transfer" : "");
        break;
    case RAFT_MSG_REQUEST_VOTE_RESULT:
        snprintf(buf + k, len - k, " %s%s", m->request_vote_result.granted ? "granted" : "rejected",
                 m->request_vote_result.pre_vote ? " pre" : "");
        break;
    case RAFT_MSG_APPEND_ENTRIES:
        snprintf(buf + k, len - k, " prev=%llu/%llu n=%u commit=%llu",
                 (unsigned long long)m->append_entries.prev_index,
                 (unsigned long long)m->append_entries.prev_term, m->append_entries.n_entries,
                 (unsigned long long)m->append_entries.commit);
        break;
    case RAFT_MSG_APPEND_ENTRIES_RESULT:
        if (m->append_entries_result.rejected)
            snprintf(buf + k, len - k, " rejected %llu hint=%llu/%llu",
                     (unsigned long long)m->append_entries_result.index,
                     (unsigned long long)m->append_entries_result.hint_index,
                     (unsigned long long)m->append_entries_result.hint_term);
        else
            snprintf(buf + k, len - k, " ok %llu",
                     (unsigned long long)m->append_entries_result.index);
        break;
    case RAFT_MSG_INSTALL_SNAPSHOT:
        snprintf(buf + k, len - k, " %llu/%llu", (unsigned long long)m->install_snapshot.meta.index,
                 (unsigned long long)m->install_snapshot.meta.term);
        break;
    case RAFT_MSG_HEARTBEAT:
        snprintf(buf + k, len - k, " commit=%llu ctx=%llu", (unsigned long long)m->heartbeat.commit,
                 (unsigned long long)m->heartbeat.ctx);
        break;
    case RAFT_MSG_HEARTBEAT_RESULT:
        snprintf(buf + k, len - k, " ctx=%llu commit=%llu",
                 (unsigned long long)m->heartbeat_result.ctx,
                 (unsigned long long)m->heartbeat_result.commit);
        break;
    default:
        break;
    }
    return buf;
}

typedef struct trace_arg {
    sim_t *s;
    int id;
} trace_arg_t;
static trace_arg_t trace_args[SIM_MAX_NODES];

static void core_trace(void *arg, const char *line) {
    trace_arg_t *t = arg;
    sim_trace(t->s, "n%d %s", t->id, line);
}

static uint64_t core_rand(void *arg) {
    return sim_rand((sim_rng_t *)arg);
}

/* ---- disk ---- */

static void disk_enqueue(sim_t *s, sim_node_t *n, sim_write_t *w) {
    if (n->wq_tail)
        n->wq_tail->next = w;
    else
        n->wq_head = w;
    n->wq_tail = w;
    uint64_t done = s->now + sim_below(&s->rng, s->p.disk_max_ms + 1);
    if (done < n->wq_last_done)
        done = n->wq_last_done;
    n->wq_last_done = done;
    sim_push(s, done, SIM_EV_DISK, (int)n->id, n->incarnation);
}

static void write_free(sim_write_t *w) {
    log_free_entries(w->entries, w->n);
    free(w->entries);
    free(w);
}

static void disk_apply(sim_node_t *n, const sim_write_t *w) {
    if (w->kind == SIM_WRITE_SNAPSHOT) {
        n->snap = w->snap;
        log_reset_to(&n->disk, &w->snap.meta, &w->snap.state);
        return;
    }
    log_truncate(&n->disk, w->first_index);
    for (size_t i = 0; i < w->n; i++)
        log_append(&n->disk, &w->entries[i]);
}

static sim_write_t *disk_pop(sim_node_t *n) {
    sim_write_t *w = n->wq_head;
    if (w) {
        n->wq_head = w->next;
        if (!n->wq_head)
            n->wq_tail = NULL;
    }
    return w;
}

static void on_disk(sim_t *s, sim_node_t *n) {
    sim_write_t *w = disk_pop(n);
    if (!w)
        return;
    disk_apply(n, w);
    raft_event_t ev = {.time = s->now};
    if (w->kind == SIM_WRITE_SNAPSHOT) {
        ev.type = RAFT_EVENT_PERSISTED_SNAPSHOT;
        ev.persisted_snapshot.index = w->snap.meta.index;
        ev.persisted_snapshot.term = w->snap.meta.term;
        sim_node_step(s, n, &ev);
    } else if (w->n) {
        ev.type = RAFT_EVENT_PERSISTED_ENTRIES;
        ev.persisted_entries.index = w->entries[w->n - 1].index;
        ev.persisted_entries.term = w->entries[w->n - 1].term;
        sim_node_step(s, n, &ev);
    }
    write_free(w);
}

/* ---- network ---- */

static void net_send(sim_t *s, sim_node_t *from, const raft_message_t *m) {
    uint8_t *buf;
    size_t len;
    if (raft_message_encode(m, s->arena, &buf, &len) < 0) {
        sim_violation(s, "n%llu: cannot encode %s", (unsigned long long)from->id,
                      raft_message_type_name(m->type));
        return;
    }
    s->stats.messages++;
    int copies = 1 + (sim_chance(&s->rng, s->p.dup_ppm) ? 1 : 0);
    for (int c = 0; c < copies; c++) {
        if (sim_chance(&s->rng, s->p.loss_ppm)) {
            s->stats.dropped++;
            continue;
        }
        uint64_t delay = sim_between(&s->rng, 1, s->p.delay_max_ms);
        if (sim_chance(&s->rng, s->p.spike_ppm))
            delay += sim_below(&s->rng, s->p.spike_ms);
        sim_event_t ev = {.time = s->now + delay,
                          .type = SIM_EV_DELIVER,
                          .node = (int)m->to,
                          .from = (int)from->id,
                          .len = len};
        ev.payload = malloc(len ? len : 1);
        memcpy(ev.payload, buf, len);
        heap_push(s, ev);
    }
}

static void on_deliver(sim_t *s, sim_event_t *ev) {
    sim_node_t *n = ev->node > 0 && ev->node < SIM_MAX_NODES ? &s->nodes[ev->node] : NULL;
    if (!n || !n->up || s->blocked[ev->from][ev->node]) {
        s->stats.dropped++;
        return;
    }
    raft_message_t m;
    if (raft_message_decode(ev->payload, ev->len, s->arena, &m) < 0) {
        sim_violation(s, "n%d: message from n%d does not decode", ev->node, ev->from);
        return;
    }
    if (s->trace_print || s->trace_ring || s->capture) {
        char buf[160];
        sim_trace(s, "n%d <- n%d %s", ev->node, ev->from, msg_str(&m, buf, sizeof buf));
    }
    s->stats.delivered++;
    raft_event_t e = {.type = RAFT_EVENT_RECEIVE, .time = s->now, .receive.message = &m};
    /* Every message here comes from a correct member: a refusal means a protocol breach. */
    int rc = sim_node_step(s, n, &e);
    if (rc < 0)
        sim_violation(s, "n%d: RECEIVE from n%d returned %d", ev->node, ev->from, rc);
}

/* ---- the host loop ---- */

static void push_prop(sim_node_t *n, uint64_t index, uint64_t term, uint64_t op) {
    if (n->n_props == n->cap_props) {
        n->cap_props = n->cap_props ? n->cap_props * 2 : 16;
        n->props = realloc(n->props, n->cap_props * sizeof *n->props);
    }
    n->props[n->n_props++] = (sim_proposal_t){index, term, op};
}

static void on_applied_client(sim_t *s, sim_node_t *n, const raft_entry_t *e) {
    size_t k = 0;
    for (size_t i = 0; i < n->n_props; i++) {
        sim_proposal_t *p = &n->props[i];
        if (p->index == e->index) {
            if (p->term == e->term) {
                sim_check_ack(s, n, e->index, e->term);
                s->stats.writes_acked++;
            }
            continue; /* acknowledged, or lost to another leader's entry: done either way */
        }
        n->props[k++] = *p;
    }
    n->n_props = k;
}

static void serve_reads(sim_t *s, sim_node_t *n) {
    size_t k = 0;
    for (size_t i = 0; i < n->n_reads; i++) {
        sim_read_t *rd = &n->reads[i];
        if (rd->index && n->sm.index >= rd->index) {
            sim_check_read(s, n, rd);
            s->stats.reads_served++;
            continue;
        }
        n->reads[k++] = *rd;
    }
    n->n_reads = k;
}

static void apply_entry(sim_t *s, sim_node_t *n, const raft_entry_t *e) {
    if (e->index != n->sm.index + 1) {
        sim_violation(s, "n%llu: applied %llu after %llu", (unsigned long long)n->id,
                      (unsigned long long)e->index, (unsigned long long)n->sm.index);
        return;
    }
    n->sm.hash = entry_hash(n->sm.hash, e->index, e->term, e->type, e->data, e->len);
    n->sm.index = e->index;
    sim_check_apply(s, n, e->index, n->sm.hash);
    if (e->type == RAFT_ENTRY_CONF) {
        raft_conf_t c;
        if (raft_conf_change_decode(e->data, e->len, NULL, NULL, &c) == 0)
            sim_conf_applied(s, n, &c, e->index);
    } else if (e->len >= 8) {
        on_applied_client(s, n, e);
    }
}

uint64_t sim_proposing_op;

static void handle_update(sim_t *s, sim_node_t *n, const raft_update_t *u) {
    /* 1. persist: hard state now, entries and snapshots through the write queue */
    if (u->flags & RAFT_UPDATE_HARD_STATE)
        n->hs = u->hard_state;
    sim_sm_t snap_state = {0};
    if (u->flags & RAFT_UPDATE_SNAPSHOT) {
        if (u->snapshot.len != 16) {
            sim_violation(s, "n%llu: snapshot data of %zu bytes", (unsigned long long)n->id,
                          u->snapshot.len);
            return;
        }
        memcpy(&snap_state.index, u->snapshot.data, 8);
        memcpy(&snap_state.hash, u->snapshot.data + 8, 8);
        if (snap_state.index != u->snapshot.meta.index) {
            sim_violation(s, "n%llu: snapshot data is of index %llu, metadata says %llu",
                          (unsigned long long)n->id, (unsigned long long)snap_state.index,
                          (unsigned long long)u->snapshot.meta.index);
            return;
        }
        sim_write_t *w = calloc(1, sizeof *w);
        w->kind = SIM_WRITE_SNAPSHOT;
        w->snap = (sim_snapshot_t){true, u->snapshot.meta, snap_state};
        disk_enqueue(s, n, w);
        sim_check_truncate(s, n, u->snapshot.meta.index + 1);
        log_reset_to(&n->view, &u->snapshot.meta, &snap_state);
        n->snap_latest = w->snap;
        s->stats.snapshots_installed++;
    }
    if (u->flags & RAFT_UPDATE_ENTRIES) {
        sim_check_truncate(s, n, u->entries.first_index);
        log_truncate(&n->view, u->entries.first_index);
        if (sim_log_last(&n->view) + 1 != u->entries.first_index) {
            sim_violation(s, "n%llu: entries from %llu leave a gap after %llu",
                          (unsigned long long)n->id, (unsigned long long)u->entries.first_index,
                          (unsigned long long)sim_log_last(&n->view));
            return;
        }
        sim_write_t *w = calloc(1, sizeof *w);
        w->kind = SIM_WRITE_ENTRIES;
        w->first_index = u->entries.first_index;
        w->n = u->entries.n;
        w->entries = calloc(w->n ? w->n : 1, sizeof *w->entries);
        for (uint32_t i = 0; i < u->entries.n; i++) {
            const raft_entry_t *e = &u->entries.batch[i];
            bool ok;
            uint64_t prev = sim_log_prefix_at(&n->view, e->index - 1, &ok);
            sim_entry_t se = {.index = e->index,
                              .term = e->term,
                              .type = e->type,
                              .len = e->len,
                              .data = (uint8_t *)e->data};
            se.prefix = entry_hash(prev, e->index, e->term, e->type, e->data, e->len);
            if (!ok || e->index != sim_log_last(&n->view) + 1) {
                sim_violation(s, "n%llu: entry %llu does not follow its log",
                              (unsigned long long)n->id, (unsigned long long)e->index);
                write_free(w);
                return;
            }
            log_append(&n->view, &se);
            entry_copy(&w->entries[i], &se);
            sim_check_entry(s, n, &se);
        }
        disk_enqueue(s, n, w);
    }
    if (u->flags & RAFT_UPDATE_COMPACT) {
        log_drop_before(&n->disk, u->compact_index);
        log_drop_before(&n->view, u->compact_index + 1);
    }
    if (u->flags & RAFT_UPDATE_SOFT_STATE) {
        if (u->soft.role == RAFT_LEADER && n->role != RAFT_LEADER) {
            s->stats.elections++;
            /* Figure 8 needs leaders that die before their entries spread: make some. */
            if (!s->converging && sim_chance(&s->rng, s->p.leader_crash_ppm))
                sim_push(s, s->now + sim_below(&s->rng, 15), SIM_EV_CRASH, (int)n->id,
                         n->incarnation);
        }
        n->role = u->soft.role;
        n->term = u->soft.term;
    }
    sim_check_node(s, n);
    if (s->failed)
        return;

    /* 2. send */
    for (uint32_t i = 0; i < u->messages.n; i++) {
        raft_message_t m = u->messages.batch[i];
        if (m.type == RAFT_MSG_INSTALL_SNAPSHOT) {
            const sim_snapshot_t *ss = &n->snap_latest;
            if (!ss->has || ss->meta.index != m.install_snapshot.meta.index ||
                ss->meta.term != m.install_snapshot.meta.term) {
                sim_violation(s, "n%llu: InstallSnapshot names %llu/%llu, latest snapshot is %llu",
                              (unsigned long long)n->id,
                              (unsigned long long)m.install_snapshot.meta.index,
                              (unsigned long long)m.install_snapshot.meta.term,
                              (unsigned long long)ss->meta.index);
                return;
            }
            uint8_t *data = arena_alloc(s->arena, 16);
            memcpy(data, &ss->state.index, 8);
            memcpy(data + 8, &ss->state.hash, 8);
            m.install_snapshot.data = data;
            m.install_snapshot.len = 16;
        }
        net_send(s, n, &m);
    }

    /* 3. apply */
    if (u->flags & RAFT_UPDATE_SNAPSHOT) {
        n->sm = snap_state;
        sim_check_apply(s, n, snap_state.index, snap_state.hash);
        n->n_props = 0;
    }
    for (uint32_t i = 0; i < u->committed.n && !s->failed; i++)
        apply_entry(s, n, &u->committed.batch[i]);
    for (uint32_t i = 0; i < u->reads.n; i++) {
        const raft_read_state_t *rs = &u->reads.batch[i];
        for (size_t k = 0; k < n->n_reads; k++) {
            if (n->reads[k].ctx != rs->ctx)
                continue;
            sim_trace(s, "n%llu read %llu %s %llu", (unsigned long long)n->id,
                      (unsigned long long)rs->ctx, rs->index ? "confirmed at index" : "dropped",
                      (unsigned long long)rs->index);
            if (rs->index) {
                n->reads[k].index = rs->index;
            } else {
                n->reads[k] = n->reads[--n->n_reads];
                s->stats.reads_dropped++;
            }
            break;
        }
    }
    serve_reads(s, n);
    if (u->flags & RAFT_UPDATE_PROPOSED) {
        for (uint64_t i = u->proposed.first_index; i <= u->proposed.last_index; i++)
            push_prop(n, i, u->proposed.term, sim_proposing_op + (i - u->proposed.first_index));
    }

    /* 4. snapshot */
    if ((u->flags & RAFT_UPDATE_SNAPSHOT_WANTED) && !s->failed) {
        raft_snapshot_meta_t want = u->snapshot_wanted;
        if (n->sm.index != want.index) {
            sim_violation(s, "n%llu: snapshot wanted at %llu, applied %llu",
                          (unsigned long long)n->id, (unsigned long long)want.index,
                          (unsigned long long)n->sm.index);
            return;
        }
        n->snap = (sim_snapshot_t){true, want, n->sm};
        n->snap_latest = n->snap;
        raft_event_t ev = {.type = RAFT_EVENT_SNAPSHOT_TAKEN, .time = s->now};
        ev.snapshot_taken.meta = want;
        int rc = sim_node_step(s, n, &ev);
        if (rc < 0)
            sim_violation(s, "n%llu: SNAPSHOT_TAKEN at %llu returned %d", (unsigned long long)n->id,
                          (unsigned long long)want.index, rc);
    }
}

int sim_node_step(sim_t *s, sim_node_t *n, const raft_event_t *ev) {
    raft_update_t upd;
    int rc = raft_step(n->r, ev, &upd);
    handle_update(s, n, &upd);
    return rc;
}

/* ---- members ---- */

static raft_conf_t founders_conf(const sim_t *s) {
    raft_conf_t c = {0};
    for (int i = 1; i <= s->p.founders; i++)
        c.voters[c.n_voters++] = (raft_id_t)i;
    return c;
}

void sim_node_restart(sim_t *s, sim_node_t *n) {
    raft_config_t cfg = {
        .id = n->id,
        .election_ticks_min = s->p.election_min,
        .election_ticks_max = s->p.election_max,
        .heartbeat_ticks = s->p.heartbeat,
        .pre_vote = s->p.pre_vote,
        .check_quorum = s->p.check_quorum,
        .max_inflight = s->p.max_inflight,
        .max_entries_per_append = s->p.max_entries,
        .max_bytes_per_append = s->p.max_bytes,
        .snapshot_threshold = s->p.snapshot_threshold,
        .snapshot_trailing = s->p.snapshot_trailing,
        .rand = core_rand,
        .rand_arg = &n->rng,
        .trace = (s->trace_print || s->trace_ring || s->capture) ? core_trace : NULL,
        .trace_arg = &trace_args[n->id],
    };
    trace_args[n->id] = (trace_arg_t){s, (int)n->id};
    n->r = raft_new(&cfg);
    if (!n->r) {
        sim_violation(s, "n%llu: raft_new failed", (unsigned long long)n->id);
        return;
    }
    n->up = true;
    n->incarnation++;
    n->role = RAFT_FOLLOWER;
    n->term = n->hs.term;
    n->commit_checked = 0;
    n->sm = n->snap.has ? n->snap.state : (sim_sm_t){0};
    n->snap_latest = n->snap;
    log_copy(&n->view, &n->disk);

    raft_entry_t *entries = calloc(n->disk.n ? n->disk.n : 1, sizeof *entries);
    for (size_t i = 0; i < n->disk.n; i++) {
        const sim_entry_t *e = &n->disk.e[i];
        entries[i] = (raft_entry_t){e->term, e->index, e->type, e->data, e->len};
    }
    raft_conf_t boot = founders_conf(s);
    raft_event_t ev = {.type = RAFT_EVENT_START, .time = s->now};
    ev.start.hard_state = n->hs;
    ev.start.snapshot = n->snap.has ? &n->snap.meta : NULL;
    ev.start.entries = entries;
    ev.start.n_entries = (uint32_t)n->disk.n;
    ev.start.applied = n->sm.index;
    ev.start.bootstrap = n->founder ? &boot : NULL;
    sim_trace(s, "n%llu disk: term=%llu vote=%llu commit=%llu log=%llu..%llu snap=%llu",
              (unsigned long long)n->id, (unsigned long long)n->hs.term,
              (unsigned long long)n->hs.vote, (unsigned long long)n->hs.commit,
              (unsigned long long)n->disk.offset + 1, (unsigned long long)sim_log_last(&n->disk),
              (unsigned long long)(n->snap.has ? n->snap.meta.index : 0));
    int rc = sim_node_step(s, n, &ev);
    free(entries);
    if (rc < 0) {
        sim_violation(s, "n%llu: START from the durable state failed: %d",
                      (unsigned long long)n->id, rc);
        return;
    }
    if (!s->scripted)
        sim_push(s, s->now + n->tick_ms, SIM_EV_TICK, (int)n->id, n->incarnation);
}

void sim_node_create(sim_t *s, int id, bool founder) {
    sim_node_t *n = &s->nodes[id];
    memset(n, 0, sizeof *n);
    n->id = (raft_id_t)id;
    n->exists = true;
    n->founder = founder;
    n->rng.s = sim_mix(s->seed * 1000003 + (uint64_t)id);
    n->tick_ms = (unsigned)sim_between(&s->rng, 9, 11);
    if (id > s->n_nodes)
        s->n_nodes = id;
    sim_node_restart(s, n);
}

void sim_node_crash(sim_t *s, sim_node_t *n) {
    if (!n->up)
        return;
    /* Writes already on the platter survive, the rest is lost. */
    size_t queued = 0;
    for (sim_write_t *w = n->wq_head; w; w = w->next)
        queued++;
    size_t keep = sim_below(&s->rng, queued + 1);
    sim_write_t *w;
    for (size_t i = 0; (w = disk_pop(n)); i++) {
        if (i < keep)
            disk_apply(n, w);
        write_free(w);
    }
    n->wq_last_done = 0;
    sim_trace(s, "n%llu crashed (%zu of %zu queued writes survive)", (unsigned long long)n->id,
              keep, queued);
    raft_destroy(&n->r);
    n->up = false;
    n->incarnation++;
    n->n_props = n->n_reads = 0;
    log_clear(&n->view);
    n->role = RAFT_FOLLOWER;
    s->stats.crashes++;
}

static void node_free(sim_node_t *n) {
    raft_destroy(&n->r);
    sim_write_t *w;
    while ((w = disk_pop(n)))
        write_free(w);
    log_clear(&n->view);
    log_clear(&n->disk);
    free(n->props);
    free(n->reads);
}

/* ---- the run ---- */

static void pick_params(sim_t *s) {
    sim_rng_t *g = &s->rng;
    sim_params_t *p = &s->p;
    p->founders = sim_chance(g, 500000) ? 3 : 5;
    p->membership = sim_chance(g, 300000);
    p->pre_vote = sim_chance(g, 800000);
    p->check_quorum = sim_chance(g, 800000);
    p->election_min = (unsigned)sim_between(g, 10, 15);
    p->election_max = p->election_min + (unsigned)sim_between(g, 5, 15);
    p->heartbeat = (unsigned)sim_between(g, 1, 3);
    p->max_inflight = (unsigned)sim_between(g, 1, 16);
    p->max_entries = (unsigned)sim_between(g, 1, 8);
    p->max_bytes = sim_chance(g, 300000) ? (unsigned)sim_between(g, 16, 200) : 0;
    p->snapshot_threshold = sim_chance(g, 700000) ? sim_between(g, 5, 60) : 0;
    p->snapshot_trailing = sim_between(g, 0, 10);
    p->loss_ppm = (uint32_t)sim_between(g, 0, 100000);
    p->dup_ppm = (uint32_t)sim_between(g, 0, 50000);
    p->spike_ppm = (uint32_t)sim_between(g, 0, 30000);
    p->delay_max_ms = (unsigned)sim_between(g, 2, 20);
    p->spike_ms = (unsigned)sim_between(g, 50, 300);
    p->disk_max_ms = (unsigned)sim_between(g, 0, 5);
    p->client_gap_ms = (unsigned)sim_between(g, 1, 10);
    p->fault_gap_ms = (unsigned)sim_between(g, 40, 300);
    p->churn = sim_chance(g, 300000);
    if (p->churn) {
        p->client_gap_ms = (unsigned)sim_between(g, 1, 3);
        p->fault_gap_ms = (unsigned)sim_between(g, 20, 80);
        p->leader_crash_ppm = (uint32_t)sim_between(g, 100000, 500000);
        /* old entries and a new leader's no-op in separate appends, acknowledged apart */
        p->max_entries = (unsigned)sim_between(g, 1, 2);
        p->disk_max_ms = (unsigned)sim_between(g, 1, 5);
    }
}

static void init_common(sim_t *s, uint64_t seed) {
    bool print = s->trace_print, ring = s->trace_ring, scripted = s->scripted;
    FILE *capture = s->capture;
    memset(s, 0, sizeof *s);
    s->trace_print = print;
    s->trace_ring = ring;
    s->scripted = scripted;
    s->capture = capture;
    s->seed = seed;
    s->rng.s = sim_mix(seed);
    s->arena = arena_new(0);
    s->next_op = 1;
    s->next_ctx = 1;
    sim_check_init(s);
}

void sim_init_scripted(sim_t *s, const sim_params_t *p) {
    s->scripted = true;
    init_common(s, 1);
    s->p = *p;
    for (int i = 1; i <= p->founders; i++)
        sim_node_create(s, i, true);
    sim_drain(s);
}

void sim_init(sim_t *s, uint64_t seed, uint64_t max_steps) {
    init_common(s, seed);
    s->max_steps = max_steps;
    pick_params(s);
    const sim_params_t *p = &s->p;
    sim_trace(s,
              "seed %llu: %d founders%s%s pre_vote=%d check_quorum=%d election=%u..%u hb=%u "
              "inflight=%u batch=%u bytes=%u snapshot=%llu/%llu loss=%u dup=%u spike=%u "
              "delay<=%ums disk<=%ums",
              (unsigned long long)seed, p->founders, p->membership ? " +membership" : "",
              p->churn ? " +churn" : "", p->pre_vote, p->check_quorum, p->election_min,
              p->election_max, p->heartbeat, p->max_inflight, p->max_entries, p->max_bytes,
              (unsigned long long)p->snapshot_threshold, (unsigned long long)p->snapshot_trailing,
              p->loss_ppm, p->dup_ppm, p->spike_ppm, p->delay_max_ms, p->disk_max_ms);
    for (int i = 1; i <= p->founders; i++)
        sim_node_create(s, i, true);
    sim_push(s, s->now + p->client_gap_ms, SIM_EV_CLIENT, 0, 0);
    sim_push(s, s->now + p->fault_gap_ms, SIM_EV_FAULT, 0, 0);
}

void sim_free(sim_t *s) {
    for (int i = 1; i < SIM_MAX_NODES; i++)
        if (s->nodes[i].exists)
            node_free(&s->nodes[i]);
    for (size_t i = 0; i < s->n_heap; i++)
        free(s->heap[i].payload);
    free(s->heap);
    arena_destroy(&s->arena);
    sim_check_free(s);
    for (size_t i = 0; i < SIM_TRACE_RING; i++)
        free(s->ring[i]);
    memset(s->ring, 0, sizeof s->ring);
}

static void start_converging(sim_t *s) {
    s->converging = true;
    s->converge_deadline = s->now + 30000;
    s->p.loss_ppm = s->p.dup_ppm = s->p.spike_ppm = 0;
    sim_heal(s);
    for (int i = 1; i <= s->n_nodes; i++) {
        sim_node_t *n = &s->nodes[i];
        if (n->exists && !n->up && !n->removed)
            sim_node_restart(s, n);
    }
    sim_trace(s, "converging: faults off, network healed, every member up");
}

static void dispatch(sim_t *s, sim_event_t *ev) {
    s->now = ev->time;
    s->step++;
    s->stats.steps++;
    arena_reset(s->arena);
    sim_node_t *n = ev->node > 0 && ev->node < SIM_MAX_NODES ? &s->nodes[ev->node] : NULL;
    switch (ev->type) {
    case SIM_EV_TICK:
        if (n->up && n->incarnation == ev->incarnation) {
            raft_event_t e = {.type = RAFT_EVENT_TICK, .time = s->now};
            sim_node_step(s, n, &e);
            if (n->up && n->incarnation == ev->incarnation)
                sim_push(s, s->now + n->tick_ms, SIM_EV_TICK, ev->node, n->incarnation);
        }
        break;
    case SIM_EV_DELIVER:
        on_deliver(s, ev);
        break;
    case SIM_EV_DISK:
        if (n->up && n->incarnation == ev->incarnation)
            on_disk(s, n);
        break;
    case SIM_EV_CLIENT:
        if (!s->converging) {
            sim_client(s);
            sim_push(s, s->now + sim_between(&s->rng, 1, s->p.client_gap_ms), SIM_EV_CLIENT, 0, 0);
        }
        break;
    case SIM_EV_FAULT:
        if (!s->converging) {
            sim_fault(s);
            sim_push(s, s->now + sim_between(&s->rng, s->p.fault_gap_ms / 2, s->p.fault_gap_ms),
                     SIM_EV_FAULT, 0, 0);
        }
        break;
    case SIM_EV_RESTART:
        if (n->exists && !n->up && !n->removed && n->incarnation == ev->incarnation)
            sim_node_restart(s, n);
        break;
    case SIM_EV_HEAL:
        sim_heal(s);
        break;
    case SIM_EV_CRASH:
        if (n->up && n->incarnation == ev->incarnation && !s->converging) {
            sim_node_crash(s, n);
            sim_push(s, s->now + sim_between(&s->rng, 5, 150), SIM_EV_RESTART, ev->node,
                     n->incarnation);
        }
        break;
    }
    free(ev->payload);
    sim_reap(s);
}

bool sim_step_one(sim_t *s) {
    if (s->failed || !s->n_heap)
        return false;
    sim_event_t ev = heap_pop(s);
    dispatch(s, &ev);
    return true;
}

uint64_t sim_drop_messages(sim_t *s) {
    sim_event_t *keep = malloc((s->n_heap ? s->n_heap : 1) * sizeof *keep);
    size_t k = 0;
    uint64_t dropped = 0;
    while (s->n_heap) {
        sim_event_t ev = heap_pop(s);
        if (ev.type == SIM_EV_DELIVER) {
            free(ev.payload);
            dropped++;
        } else {
            keep[k++] = ev;
        }
    }
    for (size_t i = 0; i < k; i++)
        heap_push(s, keep[i]); /* renumbers; the order among the kept is preserved */
    free(keep);
    return dropped;
}

uint64_t sim_drain(sim_t *s) {
    uint64_t k = 0;
    while (!s->failed && s->n_heap) {
        sim_event_t ev = heap_pop(s);
        dispatch(s, &ev);
        k++;
    }
    return k;
}

void sim_run(sim_t *s) {
    while (!s->failed && s->n_heap) {
        if (!s->converging && s->step >= s->max_steps)
            start_converging(s);
        if (s->converging && s->step % 16 == 0) {
            if (sim_converged(s))
                break;
            if (s->now > s->converge_deadline) {
                sim_violation(s, "no convergence 30 s after the faults stopped");
                break;
            }
        }
        sim_event_t ev = heap_pop(s);
        dispatch(s, &ev);
    }
    if (!s->failed && s->converging)
        sim_trace(s, "converged at step %llu", (unsigned long long)s->step);
}
