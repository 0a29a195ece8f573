/* nodes — the dispatcher's heartbeat table (SwarmKit manager/dispatcher/nodes.go + period.go).
 *
 * One entry per node the dispatcher knows of, from the store (list and watch) or from an agent's
 * registration. An entry holds the agent's current session here (empty when the agent talks to
 * no one here), the node's liveness as seen here, and the deadline after which it goes DOWN.
 *
 * Invariants:
 * - A registration always starts a new session; a heartbeat, Assignments or UpdateTaskStatus
 *   carrying any other session id is refused, so an agent that lost its session re-registers.
 * - Each heartbeat picks a period jittered by ±10 % (so that thousands of agents do not beat in
 *   step) and moves the deadline to now + period × multiplier.
 * - A node known only from the store (no session here) gets a double grace once this dispatcher
 *   takes charge of marking nodes DOWN: its agent may still be talking to a dispatcher that just
 *   died and needs time to find this one (SwarmKit markNodesUnknown).
 * - A DOWN node has no session; its agent must register again to be READY.
 *
 * No clock, no randomness source and no store access here: the time is an argument, the jitter
 * comes from a seeded xorshift, ids from the injected nodes_id_fn, and every store write the
 * table asks for is done by the caller (services/dispatcher/main.c) through the visit callbacks. */
#include "nodes.h"

#include <czmq.h>
#include <errno.h>
#include <string.h>

typedef struct node_entry {
    char id[NODES_ID_MAX + 1];
    char session[NODES_SESSION_SIZE]; /* "" = no session here */
    int state;                        /* enum nodes_state */
    int64_t deadline_ms;              /* 0 = none (DOWN, or not on grace) */
    int64_t written_rev;              /* store revision of this dispatcher's last write */
    bool down_unwritten;              /* DOWN decided, not yet written by the caller */
} node_entry_t;

struct nodes {
    char cluster_key[128];
    nodes_id_fn *new_id;
    uint64_t rng;
    int64_t period_ms;
    unsigned multiplier;
    zhashx_t *entries; /* id -> node_entry_t (owned) */
};

static void free_item(void **item) {
    free(*item);
    *item = NULL;
}

static void *string_dup(const void *item) {
    return strdup(item);
}

static uint64_t rng_next(nodes_t *self) {
    /* xorshift64*: plenty for jitter. */
    uint64_t x = self->rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    self->rng = x;
    return x * 0x2545F4914F6CDD1DULL;
}

/* period ± 10 %, uniformly. */
static int64_t jittered_period(nodes_t *self) {
    int64_t spread = self->period_ms / 5;
    if (spread <= 0)
        return self->period_ms;
    return self->period_ms - spread / 2 + (int64_t)(rng_next(self) % (uint64_t)(spread + 1));
}

static bool id_is_valid(const char *id) {
    size_t n = strlen(id);
    return n > 0 && n <= NODES_ID_MAX;
}

nodes_t *nodes_new(const char *cluster_key, nodes_id_fn *new_id, uint64_t seed) {
    if (!cluster_key || !new_id || strlen(cluster_key) >= sizeof(((nodes_t *)0)->cluster_key))
        return NULL;
    nodes_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    snprintf(self->cluster_key, sizeof self->cluster_key, "%s", cluster_key);
    self->new_id = new_id;
    self->rng = seed ? seed : 0x9E3779B97F4A7C15ULL;
    self->period_ms = NODES_DEFAULT_PERIOD_MS;
    self->multiplier = NODES_DEFAULT_MULTIPLIER;
    self->entries = zhashx_new();
    if (!self->entries) {
        free(self);
        return NULL;
    }
    zhashx_set_destructor(self->entries, free_item);
    return self;
}

void nodes_destroy(nodes_t **self_p) {
    if (!self_p || !*self_p)
        return;
    nodes_t *self = *self_p;
    zhashx_destroy(&self->entries);
    explicit_bzero(self->cluster_key, sizeof self->cluster_key);
    free(self);
    *self_p = NULL;
}

void nodes_set_period(nodes_t *self, int64_t period_ms, unsigned multiplier) {
    if (period_ms > 0)
        self->period_ms = period_ms;
    if (multiplier > 0)
        self->multiplier = multiplier;
}

int64_t nodes_period(const nodes_t *self) {
    return self->period_ms;
}

unsigned nodes_multiplier(const nodes_t *self) {
    return self->multiplier;
}

bool nodes_key_equal(const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b);
    size_t n = la > lb ? la : lb;
    volatile unsigned char diff = (unsigned char)(la != lb);
    for (size_t i = 0; i < n; i++) {
        unsigned char ca = i < la ? (unsigned char)a[i] : 0;
        unsigned char cb = i < lb ? (unsigned char)b[i] : 0;
        diff |= (unsigned char)(ca ^ cb);
    }
    return diff == 0;
}

static node_entry_t *entry_add(nodes_t *self, const char *id) {
    node_entry_t *e = calloc(1, sizeof *e);
    if (!e)
        return NULL;
    snprintf(e->id, sizeof e->id, "%s", id);
    e->state = NODES_STATE_UNKNOWN;
    if (zhashx_insert(self->entries, e->id, e) != 0) {
        free(e);
        return NULL;
    }
    return e;
}

int nodes_register(nodes_t *self, const char *cluster_key, const char *node_id, int64_t now_ms,
                   nodes_registration_t *ret) {
    if (!cluster_key || !nodes_key_equal(cluster_key, self->cluster_key))
        return -EACCES;
    node_entry_t *e = NULL;
    if (node_id && *node_id && id_is_valid(node_id))
        e = zhashx_lookup(self->entries, node_id);
    bool is_new = e == NULL;
    if (is_new) {
        char id[NODES_ID_MAX + 1];
        do {
            self->new_id(id);
        } while (zhashx_lookup(self->entries, id));
        e = entry_add(self, id);
        if (!e)
            return -ENOMEM;
    }
    self->new_id(e->session);
    int64_t period = jittered_period(self);
    e->state = NODES_STATE_READY;
    e->deadline_ms = now_ms + period * self->multiplier;
    e->down_unwritten = false;

    memset(ret, 0, sizeof *ret);
    snprintf(ret->node_id, sizeof ret->node_id, "%s", e->id);
    snprintf(ret->session_id, sizeof ret->session_id, "%s", e->session);
    ret->period_ms = period;
    ret->is_new = is_new;
    return 0;
}

static node_entry_t *session_entry(const nodes_t *self, const char *node_id,
                                   const char *session_id) {
    if (!node_id || !session_id || !*session_id)
        return NULL;
    node_entry_t *e = zhashx_lookup(self->entries, node_id);
    if (!e || !e->session[0] || e->state == NODES_STATE_DOWN)
        return NULL;
    if (strcmp(e->session, session_id) != 0)
        return NULL;
    return e;
}

int nodes_heartbeat(nodes_t *self, const char *node_id, const char *session_id, int64_t now_ms,
                    int64_t *ret_period_ms) {
    node_entry_t *e = session_entry(self, node_id, session_id);
    if (!e)
        return -ESTALE;
    int64_t period = jittered_period(self);
    e->state = NODES_STATE_READY;
    e->deadline_ms = now_ms + period * self->multiplier;
    if (ret_period_ms)
        *ret_period_ms = period;
    return 0;
}

int nodes_check_session(const nodes_t *self, const char *node_id, const char *session_id) {
    return session_entry(self, node_id, session_id) ? 0 : -ESTALE;
}

static int64_t double_grace(const nodes_t *self) {
    return 2 * self->period_ms * (int64_t)self->multiplier;
}

void nodes_observe(nodes_t *self, const char *node_id, int store_state, int64_t revision,
                   int64_t now_ms) {
    if (!node_id || !id_is_valid(node_id))
        return;
    node_entry_t *e = zhashx_lookup(self->entries, node_id);
    if (!e) {
        e = entry_add(self, node_id);
        if (!e)
            return;
        if (store_state == NODES_STATE_DOWN) {
            e->state = NODES_STATE_DOWN;
        } else {
            /* Alive according to the store, yet nobody heartbeats here: on grace. */
            e->state = NODES_STATE_UNKNOWN;
            e->deadline_ms = now_ms + double_grace(self);
        }
        return;
    }
    if (revision > 0 && revision <= e->written_rev)
        return; /* our own write coming back, or older than it */
    if (store_state == NODES_STATE_DOWN) {
        /* Someone else decided it is down: the agent must register again. */
        e->state = NODES_STATE_DOWN;
        e->session[0] = '\0';
        e->deadline_ms = 0;
        e->down_unwritten = false;
    } else if (!e->session[0] && e->state == NODES_STATE_DOWN) {
        /* Registered at another dispatcher. */
        e->state = NODES_STATE_UNKNOWN;
        e->deadline_ms = now_ms + double_grace(self);
    }
}

void nodes_forget(nodes_t *self, const char *node_id) {
    if (node_id)
        zhashx_delete(self->entries, node_id);
}

void nodes_note_written(nodes_t *self, const char *node_id, int64_t revision) {
    node_entry_t *e = node_id ? zhashx_lookup(self->entries, node_id) : NULL;
    if (e && revision > e->written_rev)
        e->written_rev = revision;
}

size_t nodes_mark_unknown(nodes_t *self, int64_t now_ms, nodes_visit_fn *fn, void *ctx) {
    size_t n = 0;
    for (node_entry_t *e = zhashx_first(self->entries); e; e = zhashx_next(self->entries)) {
        if (e->session[0] || e->state == NODES_STATE_DOWN)
            continue;
        e->state = NODES_STATE_UNKNOWN;
        e->deadline_ms = now_ms + double_grace(self);
        n++;
        if (fn)
            (void)fn(ctx, e->id);
    }
    return n;
}

size_t nodes_expire(nodes_t *self, int64_t now_ms, nodes_visit_fn *fn, void *ctx) {
    /* Collect first: the callback may observe or forget nodes. */
    zlistx_t *due = zlistx_new();
    if (!due)
        return 0;
    zlistx_set_duplicator(due, string_dup);
    zlistx_set_destructor(due, free_item);
    for (node_entry_t *e = zhashx_first(self->entries); e; e = zhashx_next(self->entries)) {
        bool expired = e->state != NODES_STATE_DOWN && e->deadline_ms && now_ms > e->deadline_ms;
        if (expired) {
            e->state = NODES_STATE_DOWN;
            e->session[0] = '\0';
            e->deadline_ms = 0;
            e->down_unwritten = true;
        }
        if (e->down_unwritten)
            zlistx_add_end(due, e->id);
    }
    size_t n = 0;
    for (const char *id = zlistx_first(due); id; id = zlistx_next(due)) {
        n++;
        int r = fn ? fn(ctx, id) : 0;
        node_entry_t *e = zhashx_lookup(self->entries, id);
        if (r == 0 && e)
            e->down_unwritten = false;
    }
    zlistx_destroy(&due);
    return n;
}

int nodes_state(const nodes_t *self, const char *node_id) {
    node_entry_t *e = node_id ? zhashx_lookup(self->entries, node_id) : NULL;
    return e ? e->state : -ENOENT;
}

bool nodes_known(const nodes_t *self, const char *node_id) {
    return node_id && zhashx_lookup(self->entries, node_id) != NULL;
}

void nodes_counts(const nodes_t *self, nodes_counts_t *ret) {
    memset(ret, 0, sizeof *ret);
    /* zhashx_first/next mutate the cursor only; the table's content is unchanged. */
    zhashx_t *entries = self->entries;
    for (node_entry_t *e = zhashx_first(entries); e; e = zhashx_next(entries)) {
        if (e->state == NODES_STATE_READY)
            ret->ready++;
        else if (e->state == NODES_STATE_DOWN)
            ret->down++;
        else
            ret->unknown++;
        if (e->session[0])
            ret->sessions++;
    }
}
