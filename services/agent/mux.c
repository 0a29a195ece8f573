/* mux — pipelined bus calls on one DEALER (see mux.h).
 *
 * Pending calls live in a hash by request id (to match replies) and in a binary min-heap by
 * deadline (to expire them in O(log n) without scanning thousands of parked long-polls); each
 * call knows its heap slot, so a reply removes it from both at once.
 *
 * Reconnecting: libzmq reconnects a DEALER by itself, but requests it handed to a peer that died
 * are lost, and their calls simply expire. When calls expire and nothing at all has been heard
 * for RECONNECT_SILENCE_MS, the socket is re-created (at most that often) to drop whatever
 * libzmq still queues for the dead peer, as lib/bus's client does after a timeout. The silence
 * is long on purpose: a dispatcher that is merely slow still answers something every second,
 * and re-sending everything to it would only make it slower. */
#include "mux.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bus.h"
#include "config.h"
#include "log.h"

#define TICK_MS              20
#define RECONNECT_SILENCE_MS 10000
#define SOCKET_HWM           200000 /* requests queued per peer: far above 10,000 nodes' worth */

typedef struct pending {
    char id[48];
    int64_t deadline;
    size_t slot; /* index in the heap */
    const ProtobufCMessageDescriptor *output;
    mux_done_fn *done;
    void *ctx;
    uint64_t tag;
} pending_t;

struct mux {
    zcert_t *identity;
    char endpoint[PATH_MAX + 32];
    char server_key[41];
    zsock_t *dealer;
    zloop_t *loop;
    int timer;
    zhashx_t *by_id; /* id -> pending_t (owned) */
    pending_t **heap;
    size_t nheap, capheap;
    char prefix[16];
    uint64_t seq;
    int64_t last_heard_ms;
    int64_t last_reconnect_ms;
    mux_stats_t stats;
};

/* ---- deadline heap ----------------------------------------------------------------------- */

static void heap_set(mux_t *m, size_t i, pending_t *p) {
    m->heap[i] = p;
    p->slot = i;
}

static void heap_up(mux_t *m, size_t i) {
    pending_t *p = m->heap[i];
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (m->heap[parent]->deadline <= p->deadline)
            break;
        heap_set(m, i, m->heap[parent]);
        i = parent;
    }
    heap_set(m, i, p);
}

static void heap_down(mux_t *m, size_t i) {
    pending_t *p = m->heap[i];
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, least = i;
        int64_t best = p->deadline;
        if (l < m->nheap && m->heap[l]->deadline < best) {
            least = l;
            best = m->heap[l]->deadline;
        }
        if (r < m->nheap && m->heap[r]->deadline < best)
            least = r;
        if (least == i)
            break;
        heap_set(m, i, m->heap[least]);
        i = least;
    }
    heap_set(m, i, p);
}

static int heap_push(mux_t *m, pending_t *p) {
    if (m->nheap == m->capheap) {
        size_t cap = m->capheap ? m->capheap * 2 : 256;
        pending_t **grown = realloc(m->heap, cap * sizeof *grown);
        if (!grown)
            return -ENOMEM;
        m->heap = grown;
        m->capheap = cap;
    }
    heap_set(m, m->nheap++, p);
    heap_up(m, m->nheap - 1);
    return 0;
}

static void heap_remove(mux_t *m, pending_t *p) {
    size_t i = p->slot;
    if (i >= m->nheap || m->heap[i] != p)
        return;
    pending_t *last = m->heap[--m->nheap];
    if (i == m->nheap)
        return;
    heap_set(m, i, last);
    if (i > 0 && m->heap[(i - 1) / 2]->deadline > last->deadline)
        heap_up(m, i);
    else
        heap_down(m, i);
}

/* Takes the call out of both indexes; the caller owns (and frees) it. */
static pending_t *take(mux_t *m, pending_t *p) {
    heap_remove(m, p);
    zhashx_delete(m->by_id, p->id);
    return p;
}

/* ---- socket ------------------------------------------------------------------------------ */

static int on_readable(zloop_t *loop, zsock_t *reader, void *arg);

static int dealer_open(mux_t *m) {
    if (m->dealer) {
        if (m->loop)
            zloop_reader_end(m->loop, m->dealer);
        zsock_destroy(&m->dealer);
    }
    zsock_t *s = zsock_new(ZMQ_DEALER);
    if (!s)
        return -ENOMEM;
    zsock_set_linger(s, 0);
    zsock_set_sndhwm(s, SOCKET_HWM);
    zsock_set_rcvhwm(s, SOCKET_HWM);
    zcert_apply(m->identity, s);
    zsock_set_curve_serverkey(s, m->server_key);
    if (zsock_connect(s, "%s", m->endpoint) < 0) {
        zsock_destroy(&s);
        return -EINVAL;
    }
    m->dealer = s;
    if (m->loop && zloop_reader(m->loop, s, on_readable, m) < 0)
        return -ENOMEM;
    return 0;
}

mux_t *mux_new(zcert_t *identity, const char *endpoint, const char *server_key) {
    if (!identity || !endpoint || !server_key || strlen(server_key) != 40) {
        errno = EINVAL;
        return NULL;
    }
    mux_t *m = calloc(1, sizeof *m);
    if (!m)
        return NULL;
    m->timer = -1;
    snprintf(m->endpoint, sizeof m->endpoint, "%s", endpoint);
    snprintf(m->server_key, sizeof m->server_key, "%s", server_key);
    m->identity = zcert_dup(identity);
    m->by_id = zhashx_new();
    char rid[26];
    id_random(rid);
    snprintf(m->prefix, sizeof m->prefix, "%.10s", rid);
    if (!m->identity || !m->by_id || dealer_open(m) < 0) {
        mux_destroy(&m);
        return NULL;
    }
    m->last_heard_ms = clock_mono_ms();
    return m;
}

void mux_destroy(mux_t **self_p) {
    if (!self_p || !*self_p)
        return;
    mux_t *m = *self_p;
    for (size_t i = 0; i < m->nheap; i++)
        free(m->heap[i]);
    free(m->heap);
    zhashx_destroy(&m->by_id); /* holds the same pointers, without a destructor */
    zsock_destroy(&m->dealer);
    zcert_destroy(&m->identity);
    free(m);
    *self_p = NULL;
}

/* ---- calls ------------------------------------------------------------------------------- */

int mux_call(mux_t *m, const char *method, const ProtobufCMessage *input,
             const ProtobufCMessageDescriptor *output, int timeout_ms, mux_done_fn *done, void *ctx,
             uint64_t tag) {
    if (!m->dealer && dealer_open(m) < 0)
        return -ENOTCONN;
    pending_t *p = calloc(1, sizeof *p);
    if (!p)
        return -ENOMEM;
    snprintf(p->id, sizeof p->id, "%s-m%llu", m->prefix, (unsigned long long)++m->seq);
    p->deadline = clock_mono_ms() + (timeout_ms > 0 ? timeout_ms : 1000);
    p->output = output;
    p->done = done;
    p->ctx = ctx;
    p->tag = tag;

    size_t in_len = input ? protobuf_c_message_get_packed_size(input) : 0;
    uint8_t *in_buf = malloc(in_len ? in_len : 1);
    Shoal__Bus__Request req = SHOAL__BUS__REQUEST__INIT;
    req.id = p->id;
    req.method = (char *)method;
    req.deadline_ms = timeout_ms > 0 ? timeout_ms : 0;
    zframe_t *f = NULL;
    if (in_buf) {
        if (input)
            protobuf_c_message_pack(input, in_buf);
        req.payload.data = in_buf;
        req.payload.len = in_len;
        f = zframe_new(NULL, shoal__bus__request__get_packed_size(&req));
        if (f)
            shoal__bus__request__pack(&req, zframe_data(f));
    }
    free(in_buf);
    if (!f) {
        free(p);
        return -ENOMEM;
    }
    if (zframe_send(&f, m->dealer, ZFRAME_DONTWAIT) < 0) {
        int e = errno ? errno : EAGAIN;
        zframe_destroy(&f);
        free(p);
        return -e;
    }
    if (heap_push(m, p) < 0) {
        free(p); /* sent, but we cannot wait for it: its reply counts as late */
        return -ENOMEM;
    }
    zhashx_insert(m->by_id, p->id, p);
    m->stats.calls++;
    return 0;
}

static void finish(mux_t *m, pending_t *p, int code, const uint8_t *data, size_t len,
                   const char *message) {
    ProtobufCMessage *out = NULL;
    if (code == BUS_OK && p->output) {
        out = protobuf_c_message_unpack(p->output, NULL, len, data ? data : (const uint8_t *)"");
        if (!out) {
            code = -EPROTO;
            message = "unreadable reply";
        }
    }
    if (p->done)
        p->done(p->ctx, p->tag, code, out, message ? message : "");
    if (out)
        protobuf_c_message_free_unpacked(out, NULL);
    free(p);
}

static size_t read_replies(mux_t *m) {
    size_t n = 0;
    while (m->dealer && (zsock_events(m->dealer) & ZMQ_POLLIN)) {
        zframe_t *f = zframe_recv(m->dealer);
        if (!f)
            break;
        m->last_heard_ms = clock_mono_ms();
        Shoal__Bus__Reply *rep = shoal__bus__reply__unpack(NULL, zframe_size(f), zframe_data(f));
        zframe_destroy(&f);
        if (!rep)
            continue;
        pending_t *p = rep->id ? zhashx_lookup(m->by_id, rep->id) : NULL;
        if (!p) {
            m->stats.late++;
        } else {
            m->stats.replies++;
            take(m, p);
            finish(m, p, (int)rep->code, rep->payload.data, rep->payload.len, rep->message);
            n++;
        }
        shoal__bus__reply__free_unpacked(rep, NULL);
    }
    return n;
}

static size_t expire(mux_t *m, int64_t now_ms) {
    if (!m->nheap || m->heap[0]->deadline > now_ms)
        return 0;
    if (now_ms - m->last_heard_ms > RECONNECT_SILENCE_MS &&
        now_ms - m->last_reconnect_ms > RECONNECT_SILENCE_MS) {
        log_warn("no reply from the dispatcher for %lld ms, reconnecting endpoint=%s pending=%zu",
                 (long long)(now_ms - m->last_heard_ms), m->endpoint, m->nheap);
        m->last_reconnect_ms = now_ms;
        m->stats.reconnects++;
        if (dealer_open(m) < 0)
            log_err("cannot re-create the dispatcher connection endpoint=%s", m->endpoint);
    }
    size_t n = 0;
    while (m->nheap && m->heap[0]->deadline <= now_ms) {
        pending_t *p = take(m, m->heap[0]);
        m->stats.timeouts++;
        finish(m, p, -ETIMEDOUT, NULL, 0, "no reply in time");
        n++;
    }
    return n;
}

size_t mux_process(mux_t *m, int64_t now_ms) {
    size_t n = read_replies(m);
    return n + expire(m, now_ms);
}

static int on_readable(zloop_t *loop, zsock_t *reader, void *arg) {
    read_replies(arg);
    return 0;
}

static int on_tick(zloop_t *loop, int timer_id, void *arg) {
    expire(arg, clock_mono_ms());
    return 0;
}

int mux_attach(mux_t *m, zloop_t *loop) {
    m->loop = loop;
    if (m->dealer && zloop_reader(loop, m->dealer, on_readable, m) < 0)
        return -ENOMEM;
    m->timer = zloop_timer(loop, TICK_MS, 0, on_tick, m);
    return m->timer < 0 ? -ENOMEM : 0;
}

void mux_get_stats(const mux_t *m, mux_stats_t *ret) {
    *ret = m->stats;
    ret->pending = m->nheap;
}
