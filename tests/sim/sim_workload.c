/* sim_workload — what happens to a simulated cluster: clients and faults.
 *
 * Clients (every 1..client_gap ms) send to the member they believe leads — any member whose
 * core says leader, stale ones included, or now and then any member at all: writes (PROPOSE of
 * 1-3 entries, acknowledged when the proposing member applies them at the proposed index and
 * term), ReadIndex reads (served when the member has applied the read index), leadership
 * transfers and, in membership seeds, add-learner / promote / remove.
 *
 * Faults (every fault_gap/2..fault_gap ms): crash a member (it restarts later from its durable
 * state), crash the leader, symmetric partitions, one-way link cuts, isolating the leader,
 * healing, leadership transfers. After max_steps the run converges: faults stop, the network
 * heals, every member restarts, and the cluster must end with one leader whose every member
 * has applied its whole log (sim_converged) — a liveness check on top of the safety ones. */
#include <stdlib.h>
#include <string.h>

#include "sim.h"

static sim_node_t *random_up(sim_t *s) {
    int ids[SIM_MAX_NODES], k = 0;
    for (int i = 1; i <= s->n_nodes; i++)
        if (s->nodes[i].up)
            ids[k++] = i;
    return k ? &s->nodes[ids[sim_below(&s->rng, (uint64_t)k)]] : NULL;
}

static sim_node_t *random_leader(sim_t *s) {
    int ids[SIM_MAX_NODES], k = 0;
    for (int i = 1; i <= s->n_nodes; i++)
        if (s->nodes[i].up && s->nodes[i].role == RAFT_LEADER)
            ids[k++] = i;
    return k ? &s->nodes[ids[sim_below(&s->rng, (uint64_t)k)]] : NULL;
}

/* The newest leader: highest term among members that think they lead. */
static sim_node_t *current_leader(sim_t *s) {
    sim_node_t *best = NULL;
    for (int i = 1; i <= s->n_nodes; i++) {
        sim_node_t *n = &s->nodes[i];
        if (n->up && n->role == RAFT_LEADER && (!best || n->term > best->term))
            best = n;
    }
    return best;
}

static sim_node_t *client_target(sim_t *s) {
    sim_node_t *n = sim_chance(&s->rng, 800000) ? random_leader(s) : NULL;
    return n ? n : random_up(s);
}

static void client_write(sim_t *s, sim_node_t *n) {
    raft_entry_t e[3];
    uint8_t buf[3][48];
    uint32_t k = (uint32_t)sim_between(&s->rng, 1, 3);
    for (uint32_t i = 0; i < k; i++) {
        uint64_t op = s->next_op + i;
        size_t len = 8 + sim_below(&s->rng, 41);
        memcpy(buf[i], &op, 8);
        for (size_t j = 8; j < len; j++)
            buf[i][j] = (uint8_t)sim_rand(&s->rng);
        e[i] = (raft_entry_t){.type = RAFT_ENTRY_NORMAL, .data = buf[i], .len = len};
    }
    sim_proposing_op = s->next_op;
    raft_event_t ev = {.type = RAFT_EVENT_PROPOSE, .time = s->now};
    ev.propose.entries = e;
    ev.propose.n_entries = k;
    int rc = sim_node_step(s, n, &ev);
    if (rc == 0) {
        sim_trace(s, "n%llu client write ops %llu..%llu", (unsigned long long)n->id,
                  (unsigned long long)s->next_op, (unsigned long long)(s->next_op + k - 1));
        s->next_op += k;
    }
}

static void client_read(sim_t *s, sim_node_t *n) {
    if (n->n_reads == n->cap_reads) {
        n->cap_reads = n->cap_reads ? n->cap_reads * 2 : 16;
        n->reads = realloc(n->reads, n->cap_reads * sizeof *n->reads);
    }
    uint64_t ctx = s->next_ctx++;
    n->reads[n->n_reads++] = (sim_read_t){ctx, s->acked_max, 0};
    raft_event_t ev = {.type = RAFT_EVENT_READ_INDEX, .time = s->now};
    ev.read_index.ctx = ctx;
    int rc = sim_node_step(s, n, &ev);
    if (rc < 0) {
        for (size_t i = 0; i < n->n_reads; i++)
            if (n->reads[i].ctx == ctx) {
                n->reads[i] = n->reads[--n->n_reads];
                break;
            }
    } else {
        sim_trace(s, "n%llu client read %llu (must see >= %llu)", (unsigned long long)n->id,
                  (unsigned long long)ctx, (unsigned long long)s->acked_max);
    }
}

static void transfer(sim_t *s) {
    sim_node_t *l = current_leader(s);
    if (!l)
        return;
    raft_status_t st;
    raft_status(l->r, &st);
    raft_id_t target = 0;
    if (st.conf.n_voters && sim_chance(&s->rng, 700000))
        target = st.conf.voters[sim_below(&s->rng, st.conf.n_voters)];
    raft_event_t ev = {.type = RAFT_EVENT_TRANSFER, .time = s->now};
    ev.transfer.target = target;
    if (sim_node_step(s, l, &ev) == 0) {
        s->stats.transfers++;
        sim_trace(s, "n%llu asked to transfer leadership to %llu", (unsigned long long)l->id,
                  (unsigned long long)target);
    }
}

static int conf_change(sim_t *s, sim_node_t *l, raft_change_type_t type, raft_id_t node) {
    raft_event_t ev = {.type = RAFT_EVENT_CONF_CHANGE, .time = s->now};
    ev.conf_change.type = type;
    ev.conf_change.node = node;
    int rc = sim_node_step(s, l, &ev);
    static const char *const names[] = {"bootstrap", "add learner", "promote", "remove"};
    sim_trace(s, "n%llu conf change: %s %llu -> %d", (unsigned long long)l->id, names[type],
              (unsigned long long)node, rc);
    if (rc == 0)
        s->stats.conf_changes++;
    return rc;
}

static void membership(sim_t *s) {
    sim_node_t *l = current_leader(s);
    if (!l)
        return;
    raft_status_t st;
    raft_status(l->r, &st);
    const raft_conf_t *c = &st.conf;
    uint64_t what = sim_below(&s->rng, 3);
    if (what == 0 && s->n_nodes + 1 < SIM_MAX_NODES && c->n_voters + c->n_learners < 6) {
        int id = s->n_nodes + 1;
        if (conf_change(s, l, RAFT_CHANGE_ADD_LEARNER, (raft_id_t)id) == 0)
            sim_node_create(s, id, false);
    } else if (what == 1 && c->n_learners) {
        conf_change(s, l, RAFT_CHANGE_PROMOTE, c->learners[sim_below(&s->rng, c->n_learners)]);
    } else if (what == 2) {
        raft_id_t cand[RAFT_MAX_MEMBERS];
        uint32_t k = 0;
        for (uint32_t i = 0; i < c->n_learners; i++)
            cand[k++] = c->learners[i];
        for (uint32_t i = 0; c->n_voters > 3 && i < c->n_voters; i++)
            if (c->voters[i] != l->id)
                cand[k++] = c->voters[i];
        if (!k)
            return;
        raft_id_t victim = cand[sim_below(&s->rng, k)];
        if (conf_change(s, l, RAFT_CHANGE_REMOVE, victim) == 0 && victim < SIM_MAX_NODES)
            s->nodes[victim].removing = true;
    }
}

void sim_client(sim_t *s) {
    sim_node_t *n = client_target(s);
    if (!n)
        return;
    uint64_t what = sim_below(&s->rng, 100);
    if (what < 60)
        client_write(s, n);
    else if (what < 88)
        client_read(s, n);
    else if (what < 90)
        transfer(s);
    else if (s->p.membership)
        membership(s);
}

void sim_heal(sim_t *s) {
    memset(s->blocked, 0, sizeof s->blocked);
    sim_trace(s, "network healed");
}

static void heal_later(sim_t *s) {
    sim_push(s, s->now + sim_between(&s->rng, 100, 1500), SIM_EV_HEAL, 0, 0);
}

static void crash(sim_t *s, sim_node_t *n) {
    if (!n || n->removed)
        return;
    sim_node_crash(s, n);
    sim_push(s, s->now + sim_between(&s->rng, 10, 500), SIM_EV_RESTART, (int)n->id, n->incarnation);
}

void sim_fault(sim_t *s) {
    uint64_t what = sim_below(&s->rng, 100);
    if (what < 22) {
        crash(s, random_up(s));
    } else if (what < 30) {
        crash(s, current_leader(s));
    } else if (what < 45) {
        int side[SIM_MAX_NODES];
        for (int i = 1; i <= s->n_nodes; i++)
            side[i] = (int)sim_below(&s->rng, 2);
        for (int a = 1; a <= s->n_nodes; a++)
            for (int b = 1; b <= s->n_nodes; b++)
                if (side[a] != side[b])
                    s->blocked[a][b] = true;
        sim_trace(s, "partition (symmetric)");
        heal_later(s);
    } else if (what < 55) {
        int a = (int)sim_between(&s->rng, 1, (uint64_t)s->n_nodes);
        int b = (int)sim_between(&s->rng, 1, (uint64_t)s->n_nodes);
        if (a != b) {
            s->blocked[a][b] = true;
            sim_trace(s, "link n%d -> n%d cut (one-way)", a, b);
            heal_later(s);
        }
    } else if (what < 65) {
        sim_node_t *l = current_leader(s);
        if (l) {
            for (int i = 1; i <= s->n_nodes; i++)
                s->blocked[l->id][i] = s->blocked[i][l->id] = true;
            sim_trace(s, "leader n%llu isolated", (unsigned long long)l->id);
            heal_later(s);
        }
    } else if (what < 75) {
        sim_heal(s);
    } else if (what < 85) {
        transfer(s);
    }
}

void sim_conf_applied(sim_t *s, sim_node_t *n, const raft_conf_t *conf, uint64_t index) {
    (void)n;
    if (index <= s->conf_latest_index)
        return;
    s->conf_latest_index = index;
    s->conf_latest = *conf;
    for (int i = 1; i <= s->n_nodes; i++) {
        sim_node_t *m = &s->nodes[i];
        if (m->exists && m->removing && !m->removed && !raft_conf_is_member(conf, m->id))
            m->stop = true;
    }
}

void sim_reap(sim_t *s) {
    for (int i = 1; i <= s->n_nodes; i++) {
        sim_node_t *n = &s->nodes[i];
        if (!n->stop)
            continue;
        n->stop = false;
        n->removed = true;
        sim_trace(s, "n%d removed from the cluster: shut down", i);
        sim_node_crash(s, n);
    }
}

bool sim_converged(sim_t *s) {
    sim_node_t *l = current_leader(s);
    if (!l)
        return false;
    raft_status_t st;
    raft_status(l->r, &st);
    if (st.commit != st.last_index || l->sm.index != st.commit)
        return false;
    for (uint32_t k = 0; k < st.conf.n_voters + st.conf.n_learners; k++) {
        raft_id_t id =
            k < st.conf.n_voters ? st.conf.voters[k] : st.conf.learners[k - st.conf.n_voters];
        if (id >= SIM_MAX_NODES)
            return false;
        sim_node_t *m = &s->nodes[id];
        if (!m->up || m->sm.index != st.commit)
            return false;
    }
    return true;
}
