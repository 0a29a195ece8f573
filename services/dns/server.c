/* server — the DNS side of shoal-dns: UDP and TCP listeners, the answer policy, and an
 * asynchronous forwarder for names that are not ours. Everything runs in the daemon's zloop:
 * sockets are non-blocking and registered as zloop pollers (zmq_pollitem_t with an fd), so one
 * slow client or a dead upstream never stalls the loop, the bus or the store watch.
 *
 * Answer policy (dns_server_process):
 *   - not a query (QR set) or shorter than a header: dropped, never answered (no reflection);
 *   - malformed: FORMERR; opcode other than QUERY, AXFR/IXFR: NOTIMP; class other than IN:
 *     REFUSED; EDNS version > 0: BADVERS; table not loaded from the store yet: SERVFAIL;
 *   - a cluster name: authoritative NOERROR with its A records (shuffled per answer, TTL 1 s), or
 *     with no records for other types or a service with no running task (NODATA, not NXDOMAIN:
 *     the name exists);
 *   - any other name: forwarded upstream. Without forwarding (--upstream none) we are the only
 *     authority and answer NXDOMAIN. With forwarding but no usable upstream we answer SERVFAIL,
 *     as Docker's embedded DNS does, so stub resolvers move on to their next nameserver.
 * Over UDP an answer is capped at 512 bytes, or the client's EDNS0 size up to 1232; records that
 * do not fit are left out and TC is set, so the client retries over TCP.
 *
 * Forwarding: each upstream has its own connected UDP socket (replies from other addresses never
 * reach us). A forwarded query gets a fresh random id; the pending table maps it back to the
 * client (id, address and listener socket, or TCP connection by serial number, since the
 * connection may close before the answer comes). A reply is accepted only from an upstream the
 * query was sent to, with our id and the same question. SERVFAIL/REFUSED from one upstream, or
 * no reply within half the timeout, moves the query to the next untried upstream (Docker tries
 * its servers in turn too); after the timeout (2 s) the client gets SERVFAIL. Pending entries
 * are kept in start order, so the 100 ms sweep stops at the first young one.
 *
 * TCP (RFC 7766): 2-byte length framing, several queries per connection answered as they
 * complete (possibly out of order), at most 256 connections, queries up to 4096 bytes, 256 KiB of
 * unsent answers per connection, closed after 10 s idle with nothing pending.
 *
 * Limits and their reasons are constants below; nothing is sized from a count in a packet. */
#include "server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

#include "config.h"
#include "log.h"

#define DNS_TCP_QUERY_MAX    4096 /* queries are small; anything bigger closes the conn */
#define DNS_TCP_CONNS_MAX    256
#define DNS_TCP_OUT_MAX      (256 * 1024) /* unsent answers per connection */
#define DNS_PENDING_MAX      4096         /* forwarded queries in flight */
#define DNS_IO_BATCH         64           /* datagrams read per wake-up, for fairness */
#define DNS_SWEEP_MS         100
#define DNS_ANSWER_ADDRS_MAX ((DNS_TCP_MAX_SIZE - 300) / 16)

typedef struct listener {
    int udp_fd, tcp_fd;
    struct sockaddr_storage addr;
    socklen_t addr_len;
    char text[64];
    dns_server_t *server;
} listener_t;

typedef struct upstream {
    int fd;
    struct sockaddr_storage addr;
    socklen_t addr_len;
    char text[64];
    size_t index;
    dns_server_t *server;
} upstream_t;

typedef struct tcp_conn {
    dns_server_t *server;
    int fd;
    uint64_t serial;
    int64_t last_active_ms;
    short events; /* what the loop polls for now; 0 = not registered */
    bool eof, dead;
    bool closed;    /* in the graveyard: fd closed, memory freed at the next sweep */
    size_t pending; /* forwarded queries in flight */
    size_t in_len;
    uint8_t in[2 + DNS_TCP_QUERY_MAX];
    uint8_t *out;
    size_t out_len, out_cap;
    struct tcp_conn *prev, *next;
} tcp_conn_t;

typedef struct pending {
    dns_server_t *server;
    dns_message_t query; /* as the client sent it (client's id) */
    uint16_t id;         /* ours, on the upstream query */
    bool tcp;
    uint64_t conn_serial;
    int udp_fd;
    struct sockaddr_storage client;
    socklen_t client_len;
    uint8_t *wire; /* the client's message with our id */
    size_t wire_len;
    int64_t started_ms;
    unsigned tried; /* bit per upstream */
    size_t current;
    bool retried;
    bool done; /* answered; in the graveyard when it had a TCP exchange */
    /* TCP exchange with upstream `current` after it answered a TCP client truncated over UDP */
    int tcp_fd;       /* -1 when none */
    uint8_t *tcp_buf; /* the framed query, then the framed answer (2 + 65535 bytes) */
    size_t tcp_len, tcp_off;
    bool tcp_reading;
    struct pending *prev, *next;
} pending_t;

struct dns_server {
    zloop_t *loop;
    resolver_t *resolver;
    bool forward;
    uint32_t ttl;
    int upstream_timeout_ms, tcp_idle_ms;
    bool synced;
    listener_t listeners[DNS_LISTENS_MAX];
    size_t n_listeners;
    upstream_t upstreams[DNS_UPSTREAMS_MAX];
    size_t n_upstreams, preferred;
    tcp_conn_t *conns;
    size_t n_conns;
    tcp_conn_t *dead_conns;   /* closed, freed at the next sweep (see reap_graveyard) */
    pending_t *dead_pendings; /* answered after a TCP exchange, same */
    uint64_t next_serial;
    pending_t **by_id; /* 65536 slots, our query id -> pending */
    pending_t *pend_head, *pend_tail;
    size_t n_pending;
    int timer_id;
    int64_t last_conn_sweep_ms;
    dns_stats_t stats;
    uint8_t rand_pool[256];
    size_t rand_left;
    uint64_t shuffle_state;
    uint8_t in[65536];
    uint8_t out[2 + DNS_TCP_MAX_SIZE];
    uint32_t addrs[DNS_ANSWER_ADDRS_MAX];
};

/* ---- small helpers ---------------------------------------------------------------------- */

/* xorshift64*: answer order only needs to spread load, not to be secret. */
static uint64_t shuffle_next(dns_server_t *self) {
    uint64_t x = self->shuffle_state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    self->shuffle_state = x;
    return x * 0x2545F4914F6CDD1DULL;
}

static uint16_t random16(dns_server_t *self) {
    if (self->rand_left < 2) {
        /* getrandom never returns short for 256 bytes; without it, fall back to the PRNG */
        if (getrandom(self->rand_pool, sizeof self->rand_pool, 0) < (ssize_t)sizeof self->rand_pool)
            for (size_t i = 0; i < sizeof self->rand_pool; i += 8) {
                uint64_t x = shuffle_next(self);
                memcpy(self->rand_pool + i, &x, 8);
            }
        self->rand_left = sizeof self->rand_pool;
    }
    self->rand_left -= 2;
    return (uint16_t)(self->rand_pool[self->rand_left] << 8 | self->rand_pool[self->rand_left + 1]);
}

static void shuffle(dns_server_t *self, uint32_t *a, size_t n) {
    for (size_t i = n; i > 1; i--) {
        size_t j = (size_t)(shuffle_next(self) % i);
        uint32_t t = a[i - 1];
        a[i - 1] = a[j];
        a[j] = t;
    }
}

static void addr_format(const struct sockaddr_storage *ss, char *buf, size_t cap) {
    char host[INET6_ADDRSTRLEN] = "?";
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)ss;
        inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
        snprintf(buf, cap, "%s:%u", host, ntohs(in->sin_port));
    } else if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)ss;
        inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host);
        snprintf(buf, cap, "[%s]:%u", host, ntohs(in6->sin6_port));
    } else {
        snprintf(buf, cap, "?");
    }
}

static bool addr_same_ip(const struct sockaddr_storage *a, const struct sockaddr_storage *b) {
    if (a->ss_family != b->ss_family)
        return false;
    if (a->ss_family == AF_INET)
        return ((const struct sockaddr_in *)a)->sin_addr.s_addr ==
               ((const struct sockaddr_in *)b)->sin_addr.s_addr;
    if (a->ss_family == AF_INET6)
        return memcmp(&((const struct sockaddr_in6 *)a)->sin6_addr,
                      &((const struct sockaddr_in6 *)b)->sin6_addr, sizeof(struct in6_addr)) == 0;
    return false;
}

static uint16_t addr_port(const struct sockaddr_storage *ss) {
    if (ss->ss_family == AF_INET)
        return ntohs(((const struct sockaddr_in *)ss)->sin_port);
    if (ss->ss_family == AF_INET6)
        return ntohs(((const struct sockaddr_in6 *)ss)->sin6_port);
    return 0;
}

static bool addr_is_loopback(const struct sockaddr_storage *ss) {
    if (ss->ss_family == AF_INET)
        return (ntohl(((const struct sockaddr_in *)ss)->sin_addr.s_addr) >> 24) == 127;
    if (ss->ss_family == AF_INET6) {
        const struct in6_addr *a = &((const struct sockaddr_in6 *)ss)->sin6_addr;
        if (IN6_IS_ADDR_LOOPBACK(a))
            return true;
        return IN6_IS_ADDR_V4MAPPED(a) && a->s6_addr[12] == 127;
    }
    return false;
}

int dns_addr_parse(const char *text, int default_port, struct sockaddr_storage *ret,
                   socklen_t *ret_len) {
    char host[INET6_ADDRSTRLEN + 32];
    const char *port = NULL;
    if (!text || !*text)
        return -EINVAL;
    if (text[0] == '[') {
        const char *close = strchr(text, ']');
        if (!close || (size_t)(close - text - 1) >= sizeof host)
            return -EINVAL;
        memcpy(host, text + 1, (size_t)(close - text - 1));
        host[close - text - 1] = '\0';
        if (close[1] == ':')
            port = close + 2;
        else if (close[1] != '\0')
            return -EINVAL;
    } else {
        const char *colon = strrchr(text, ':');
        size_t hlen = strlen(text);
        if (colon && strchr(text, ':') == colon) { /* one colon: ADDR:PORT */
            hlen = (size_t)(colon - text);
            port = colon + 1;
        }
        if (hlen >= sizeof host)
            return -EINVAL;
        memcpy(host, text, hlen);
        host[hlen] = '\0';
    }
    long p = default_port;
    if (port) {
        char *end;
        errno = 0;
        p = strtol(port, &end, 10);
        if (!*port || *end || errno || p < 0 || p > 65535)
            return -EINVAL;
    } else if (default_port <= 0) {
        return -EINVAL;
    }
    struct addrinfo hints = {
        .ai_flags = AI_NUMERICHOST, .ai_family = AF_UNSPEC, .ai_socktype = SOCK_DGRAM};
    struct addrinfo *ai = NULL;
    if (!host[0] || getaddrinfo(host, NULL, &hints, &ai) != 0 || !ai)
        return -EINVAL;
    memset(ret, 0, sizeof *ret);
    memcpy(ret, ai->ai_addr, ai->ai_addrlen);
    *ret_len = ai->ai_addrlen;
    freeaddrinfo(ai);
    if (ret->ss_family == AF_INET)
        ((struct sockaddr_in *)ret)->sin_port = htons((uint16_t)p);
    else
        ((struct sockaddr_in6 *)ret)->sin6_port = htons((uint16_t)p);
    return 0;
}

int dns_upstreams_from_resolv_conf(const char *path, const struct sockaddr_storage *self_addrs,
                                   size_t n_self, char (*out)[64], size_t cap) {
    FILE *f = fopen(path, "re");
    if (!f)
        return -errno;
    char line[512];
    size_t n = 0;
    while (fgets(line, sizeof line, f) && n < cap) {
        char word[32], addr[256];
        if (sscanf(line, "%31s %255s", word, addr) != 2 || strcmp(word, "nameserver") != 0)
            continue;
        struct sockaddr_storage ss;
        socklen_t len;
        if (dns_addr_parse(addr, 53, &ss, &len) < 0 || addr_is_loopback(&ss))
            continue;
        bool ours = false;
        for (size_t i = 0; i < n_self; i++)
            if (addr_same_ip(&ss, &self_addrs[i]) && addr_port(&self_addrs[i]) == 53)
                ours = true;
        if (ours)
            continue;
        addr_format(&ss, out[n], sizeof out[n]);
        n++;
    }
    fclose(f);
    return (int)n;
}

/* ---- the answer policy ------------------------------------------------------------------ */

dns_verdict_t dns_server_process(dns_server_t *self, const uint8_t *msg, size_t len, bool tcp,
                                 uint8_t *out, size_t cap, size_t *ret_len,
                                 dns_message_t *ret_query) {
    dns_message_t *q = ret_query;
    self->stats.queries++;
    int rc = dns_message_parse(msg, len, q);
    if (rc == -EMSGSIZE || q->qr) {
        self->stats.errors++;
        return DNS_VERDICT_DROP;
    }
    bool can_forward = self->forward && self->n_upstreams > 0;
    dns_answer_t a = {
        .rcode = DNS_RCODE_NOERROR, .recursion_available = can_forward, .ttl = self->ttl};
    uint16_t type = q->question.type;
    if (rc < 0 || !q->has_question) {
        self->stats.errors++;
        a.rcode = DNS_RCODE_FORMERR;
    } else if (q->opcode != DNS_OPCODE_QUERY || type == DNS_TYPE_AXFR || type == 251 /* IXFR */) {
        self->stats.notimp++;
        a.rcode = DNS_RCODE_NOTIMP;
    } else if (q->has_edns && q->edns_version > 0) {
        self->stats.errors++;
        a.rcode = DNS_RCODE_BADVERS; /* RFC 6891 6.1.3 */
    } else if (q->question.qclass != DNS_CLASS_IN) {
        self->stats.refused++;
        a.rcode = DNS_RCODE_REFUSED;
    } else if (!self->synced) {
        self->stats.servfail++;
        a.rcode = DNS_RCODE_SERVFAIL;
    } else {
        char name[DNS_NAME_TEXT_MAX];
        size_t n = 0;
        if (dns_name_to_text(q->question.name, q->question.name_len, name, sizeof name) == 0 &&
            resolver_lookup(self->resolver, name, self->addrs, DNS_ANSWER_ADDRS_MAX, &n) == 0) {
            self->stats.answered++;
            a.authoritative = true;
            if (type == DNS_TYPE_A || type == DNS_TYPE_ANY) {
                if (n > DNS_ANSWER_ADDRS_MAX)
                    n = DNS_ANSWER_ADDRS_MAX;
                shuffle(self, self->addrs, n);
                a.addrs = self->addrs;
                a.n_addrs = n;
            }
        } else if (can_forward) {
            return DNS_VERDICT_FORWARD;
        } else if (self->forward) {
            self->stats.servfail++;
            a.rcode = DNS_RCODE_SERVFAIL;
        } else {
            self->stats.nxdomain++;
            a.authoritative = true;
            a.rcode = DNS_RCODE_NXDOMAIN;
        }
    }
    bool truncated = false;
    size_t limit = tcp ? DNS_TCP_MAX_SIZE : dns_udp_limit(q);
    if (dns_answer_build(q, &a, limit, out, cap, ret_len, &truncated) < 0) {
        self->stats.errors++;
        return DNS_VERDICT_DROP;
    }
    if (truncated)
        self->stats.truncated++;
    return DNS_VERDICT_REPLY;
}

/* ---- TCP connections -------------------------------------------------------------------- */

static int on_conn(zloop_t *loop, zmq_pollitem_t *item, void *arg);

static void conn_set_events(tcp_conn_t *c, short want) {
    dns_server_t *self = c->server;
    if (want == c->events || !self->loop)
        return;
    zmq_pollitem_t item = {.socket = NULL, .fd = c->fd, .events = want};
    if (c->events)
        zloop_poller_end(self->loop, &item);
    c->events = 0;
    if (want && zloop_poller(self->loop, &item, on_conn, c) == 0) {
        zloop_poller_set_tolerant(self->loop, &item);
        c->events = want;
    }
}

/* Closes the socket at once but frees the memory only at the next sweep: zloop runs timers
 * before the pollers of the same wake-up, from a poll set built earlier, so a connection closed
 * by the sweep may still see its handler called once in that wake-up (it then finds `closed`). */
static void conn_close(tcp_conn_t *c) {
    dns_server_t *self = c->server;
    conn_set_events(c, 0);
    close(c->fd);
    c->fd = -1;
    if (c->prev)
        c->prev->next = c->next;
    else
        self->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    self->n_conns--;
    free(c->out);
    c->out = NULL;
    c->closed = true;
    c->prev = NULL;
    c->next = self->dead_conns;
    self->dead_conns = c;
}

static void conn_flush(tcp_conn_t *c) {
    while (c->out_len > 0) {
        ssize_t w = send(c->fd, c->out, c->out_len, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
                c->dead = true;
            break;
        }
        memmove(c->out, c->out + w, c->out_len - (size_t)w);
        c->out_len -= (size_t)w;
        c->last_active_ms = clock_mono_ms();
    }
}

/* Queues one framed message; a client that does not read its answers is cut off. */
static void conn_send(tcp_conn_t *c, const uint8_t *msg, size_t len) {
    if (c->dead || len > DNS_TCP_MAX_SIZE)
        return;
    size_t need = c->out_len + 2 + len;
    if (need > DNS_TCP_OUT_MAX) {
        c->server->stats.errors++;
        c->dead = true;
        return;
    }
    if (need > c->out_cap) {
        size_t cap = c->out_cap ? c->out_cap : 1024;
        while (cap < need)
            cap *= 2;
        uint8_t *p = realloc(c->out, cap);
        if (!p) {
            c->dead = true;
            return;
        }
        c->out = p;
        c->out_cap = cap;
    }
    c->out[c->out_len] = (uint8_t)(len >> 8);
    c->out[c->out_len + 1] = (uint8_t)len;
    memcpy(c->out + c->out_len + 2, msg, len);
    c->out_len = need;
    conn_flush(c);
}

/* After any activity: close, or poll for what the connection waits for. */
static void conn_settle(tcp_conn_t *c) {
    if (c->dead || (c->eof && c->pending == 0 && c->out_len == 0)) {
        conn_close(c);
        return;
    }
    conn_set_events(c, (short)((c->eof ? 0 : ZMQ_POLLIN) | (c->out_len ? ZMQ_POLLOUT : 0)));
}

static tcp_conn_t *conn_find(dns_server_t *self, uint64_t serial) {
    for (tcp_conn_t *c = self->conns; c; c = c->next)
        if (c->serial == serial)
            return c;
    return NULL;
}

/* ---- replies and forwarding ------------------------------------------------------------- */

static void reply_udp(dns_server_t *self, int fd, const struct sockaddr_storage *to,
                      socklen_t to_len, const uint8_t *msg, size_t len) {
    if (sendto(fd, msg, len, 0, (const struct sockaddr *)to, to_len) < 0) {
        self->stats.errors++;
        log_debug("dns reply not sent err=\"%s\"", strerror(errno));
    }
}

static void pending_unlink(dns_server_t *self, pending_t *p) {
    if (p->prev)
        p->prev->next = p->next;
    else
        self->pend_head = p->next;
    if (p->next)
        p->next->prev = p->prev;
    else
        self->pend_tail = p->prev;
    self->by_id[p->id] = NULL;
    self->n_pending--;
}

static void pending_tcp_close(dns_server_t *self, pending_t *p) {
    if (p->tcp_fd < 0)
        return;
    if (self->loop) {
        zmq_pollitem_t item = {.fd = p->tcp_fd};
        zloop_poller_end(self->loop, &item);
    }
    close(p->tcp_fd);
    p->tcp_fd = -1;
}

static void pending_free(pending_t *p) {
    free(p->wire);
    free(p->tcp_buf);
    free(p);
}

/* Answers the client of `p` with msg (or SERVFAIL when msg is NULL) and frees p (at the next
 * sweep when it had a poller of its own, for the reason given at conn_close). */
static void pending_finish(dns_server_t *self, pending_t *p, const uint8_t *msg, size_t len) {
    pending_unlink(self, p);
    pending_tcp_close(self, p);
    p->done = true;
    if (!msg) {
        dns_answer_t a = {.rcode = DNS_RCODE_SERVFAIL, .recursion_available = true};
        size_t limit = p->tcp ? DNS_TCP_MAX_SIZE : dns_udp_limit(&p->query);
        if (dns_answer_build(&p->query, &a, limit, self->out, sizeof self->out, &len, NULL) == 0)
            msg = self->out;
    }
    if (msg && p->tcp) {
        tcp_conn_t *c = conn_find(self, p->conn_serial);
        if (c) {
            c->pending--;
            conn_send(c, msg, len);
            conn_settle(c);
        }
    } else if (msg) {
        reply_udp(self, p->udp_fd, &p->client, p->client_len, msg, len);
    } else if (p->tcp) {
        tcp_conn_t *c = conn_find(self, p->conn_serial);
        if (c) {
            c->pending--;
            conn_settle(c);
        }
    }
    if (p->tcp_buf) {
        p->next = self->dead_pendings;
        self->dead_pendings = p;
    } else {
        pending_free(p);
    }
}

static void forward_send(dns_server_t *self, pending_t *p, size_t u) {
    p->tried |= 1u << u;
    p->current = u;
    if (send(self->upstreams[u].fd, p->wire, p->wire_len, 0) < 0)
        log_debug("forward not sent upstream=%s err=\"%s\"", self->upstreams[u].text,
                  strerror(errno));
}

/* The next upstream this query has not been sent to, or -1. */
static int next_untried(const dns_server_t *self, const pending_t *p) {
    for (size_t k = 1; k <= self->n_upstreams; k++) {
        size_t u = (p->current + k) % self->n_upstreams;
        if (!(p->tried & (1u << u)))
            return (int)u;
    }
    return -1;
}

static void forward_start(dns_server_t *self, const uint8_t *msg, size_t len,
                          const dns_message_t *q, tcp_conn_t *conn, int udp_fd,
                          const struct sockaddr_storage *client, socklen_t client_len) {
    pending_t *p = NULL;
    if (self->n_pending >= DNS_PENDING_MAX || !(p = calloc(1, sizeof *p)) ||
        !(p->wire = malloc(len))) {
        /* Docker answers REFUSED when too many queries are in flight; so do we. */
        free(p);
        self->stats.refused++;
        dns_answer_t a = {.rcode = DNS_RCODE_REFUSED, .recursion_available = true};
        size_t out_len;
        size_t limit = conn ? DNS_TCP_MAX_SIZE : dns_udp_limit(q);
        if (dns_answer_build(q, &a, limit, self->out, sizeof self->out, &out_len, NULL) == 0) {
            if (conn)
                conn_send(conn, self->out, out_len);
            else
                reply_udp(self, udp_fd, client, client_len, self->out, out_len);
        }
        return;
    }
    uint16_t id;
    do /* at most DNS_PENDING_MAX of 65536 ids are taken: a few tries at worst */
        id = random16(self);
    while (self->by_id[id]);
    p->server = self;
    p->tcp_fd = -1;
    p->query = *q;
    p->id = id;
    memcpy(p->wire, msg, len);
    p->wire_len = len;
    dns_set_id(p->wire, id);
    p->started_ms = clock_mono_ms();
    if (conn) {
        p->tcp = true;
        p->conn_serial = conn->serial;
        conn->pending++;
    } else {
        p->udp_fd = udp_fd;
        memcpy(&p->client, client, client_len);
        p->client_len = client_len;
    }
    p->prev = self->pend_tail;
    if (self->pend_tail)
        self->pend_tail->next = p;
    else
        self->pend_head = p;
    self->pend_tail = p;
    self->by_id[id] = p;
    self->n_pending++;
    self->stats.forwarded++;
    forward_send(self, p, self->preferred);
}

/* An upstream reply belongs to `p` when it answers p's question under our id. */
static bool reply_matches(const pending_t *p, const dns_message_t *r) {
    return r->qr && r->id == p->id && r->has_question &&
           r->question.type == p->query.question.type &&
           r->question.qclass == p->query.question.qclass &&
           dns_name_equal(r->question.name, r->question.name_len, p->query.question.name,
                          p->query.question.name_len);
}

static int on_upstream_tcp(zloop_t *loop, zmq_pollitem_t *item, void *arg);

static int pending_tcp_events(dns_server_t *self, pending_t *p, short events) {
    zmq_pollitem_t item = {.fd = p->tcp_fd, .events = events};
    zloop_poller_end(self->loop, &item);
    if (zloop_poller(self->loop, &item, on_upstream_tcp, p) < 0)
        return -ENOMEM;
    zloop_poller_set_tolerant(self->loop, &item);
    return 0;
}

/* Asks upstream u again over TCP, for a TCP client whose answer came back truncated. */
static int pending_tcp_start(dns_server_t *self, pending_t *p, size_t u) {
    const upstream_t *up = &self->upstreams[u];
    if (p->tcp_buf) /* tried once already */
        return -EALREADY;
    if (!self->loop || !(p->tcp_buf = malloc(2 + DNS_TCP_MAX_SIZE)))
        return -ENOMEM;
    int fd = socket(up->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    if (connect(fd, (const struct sockaddr *)&up->addr, up->addr_len) < 0 && errno != EINPROGRESS) {
        int e = errno;
        close(fd);
        return -e;
    }
    p->tcp_fd = fd;
    p->tcp_buf[0] = (uint8_t)(p->wire_len >> 8);
    p->tcp_buf[1] = (uint8_t)p->wire_len;
    memcpy(p->tcp_buf + 2, p->wire, p->wire_len);
    p->tcp_len = 2 + p->wire_len;
    p->tcp_off = 0;
    p->tcp_reading = false;
    p->retried = true;
    return pending_tcp_events(self, p, ZMQ_POLLOUT);
}

static int on_upstream_tcp(zloop_t *loop, zmq_pollitem_t *item, void *arg) {
    pending_t *p = arg;
    dns_server_t *self = p->server;
    if (p->done)
        return 0;
    if (item->revents & ZMQ_POLLERR)
        goto fail;
    if (!p->tcp_reading) {
        ssize_t w = send(p->tcp_fd, p->tcp_buf + p->tcp_off, p->tcp_len - p->tcp_off, MSG_NOSIGNAL);
        if (w < 0 && (errno == EAGAIN || errno == EINTR))
            return 0;
        if (w < 0)
            goto fail;
        p->tcp_off += (size_t)w;
        if (p->tcp_off == p->tcp_len) {
            p->tcp_reading = true;
            p->tcp_len = 0;
            if (pending_tcp_events(self, p, ZMQ_POLLIN) < 0)
                goto fail;
        }
        return 0;
    }
    ssize_t n = recv(p->tcp_fd, p->tcp_buf + p->tcp_len, 2 + DNS_TCP_MAX_SIZE - p->tcp_len, 0);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return 0;
    if (n <= 0)
        goto fail;
    p->tcp_len += (size_t)n;
    if (p->tcp_len < 2)
        return 0;
    size_t flen = (size_t)p->tcp_buf[0] << 8 | p->tcp_buf[1];
    if (p->tcp_len < 2 + flen)
        return 0;
    dns_message_t r;
    if (dns_message_parse(p->tcp_buf + 2, flen, &r) < 0 || !reply_matches(p, &r))
        goto fail;
    dns_set_id(p->tcp_buf + 2, p->query.id);
    pending_finish(self, p, p->tcp_buf + 2, flen);
    return 0;
fail:
    log_debug("tcp exchange with upstream failed upstream=%s", self->upstreams[p->current].text);
    pending_finish(self, p, NULL, 0);
    return 0;
}

static int on_upstream(zloop_t *loop, zmq_pollitem_t *item, void *arg) {
    upstream_t *up = arg;
    dns_server_t *self = up->server;
    for (int i = 0; i < DNS_IO_BATCH; i++) {
        ssize_t n = recv(up->fd, self->in, sizeof self->in, 0);
        if (n < 0) {
            if (errno == ECONNREFUSED) /* ICMP unreachable from an earlier send */
                continue;
            break;
        }
        dns_message_t r;
        if (dns_message_parse(self->in, (size_t)n, &r) < 0)
            continue;
        pending_t *p = self->by_id[r.id];
        if (!p || !(p->tried & (1u << up->index)) || !reply_matches(p, &r) || p->tcp_fd >= 0) {
            log_debug("unexpected upstream reply upstream=%s id=%u", up->text, r.id);
            continue;
        }
        if (r.tc && p->tcp) { /* the client can take it all: ask again over TCP */
            p->current = up->index;
            if (pending_tcp_start(self, p, up->index) == 0)
                continue;
            pending_tcp_close(self, p); /* could not: pass the truncated answer on */
        }
        int next;
        if ((r.rcode == DNS_RCODE_SERVFAIL || r.rcode == DNS_RCODE_REFUSED) &&
            (next = next_untried(self, p)) >= 0) {
            forward_send(self, p, (size_t)next);
            continue;
        }
        self->preferred = up->index; /* it answered: start with it next time */
        dns_set_id(self->in, p->query.id);
        pending_finish(self, p, self->in, (size_t)n);
    }
    return 0;
}

/* ---- client sockets --------------------------------------------------------------------- */

static void handle_query(dns_server_t *self, const uint8_t *msg, size_t len, tcp_conn_t *conn,
                         int udp_fd, const struct sockaddr_storage *client, socklen_t client_len) {
    dns_message_t q;
    size_t out_len = 0;
    switch (dns_server_process(self, msg, len, conn != NULL, self->out, sizeof self->out, &out_len,
                               &q)) {
    case DNS_VERDICT_DROP:
        return;
    case DNS_VERDICT_REPLY:
        if (conn)
            conn_send(conn, self->out, out_len);
        else
            reply_udp(self, udp_fd, client, client_len, self->out, out_len);
        return;
    case DNS_VERDICT_FORWARD:
        forward_start(self, msg, len, &q, conn, udp_fd, client, client_len);
        return;
    }
}

static int on_udp(zloop_t *loop, zmq_pollitem_t *item, void *arg) {
    listener_t *l = arg;
    dns_server_t *self = l->server;
    for (int i = 0; i < DNS_IO_BATCH; i++) {
        struct sockaddr_storage from;
        socklen_t from_len = sizeof from;
        ssize_t n =
            recvfrom(l->udp_fd, self->in, sizeof self->in, 0, (struct sockaddr *)&from, &from_len);
        if (n < 0)
            break;
        handle_query(self, self->in, (size_t)n, NULL, l->udp_fd, &from, from_len);
    }
    return 0;
}

static int on_conn(zloop_t *loop, zmq_pollitem_t *item, void *arg) {
    tcp_conn_t *c = arg;
    dns_server_t *self = c->server;
    if (c->closed)
        return 0;
    if (item->revents & ZMQ_POLLERR)
        c->dead = true;
    if (!c->dead && (item->revents & ZMQ_POLLOUT))
        conn_flush(c);
    if (!c->dead && (item->revents & ZMQ_POLLIN)) {
        ssize_t n = recv(c->fd, c->in + c->in_len, sizeof c->in - c->in_len, 0);
        if (n == 0)
            c->eof = true;
        else if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
            c->dead = true;
        else if (n > 0) {
            c->in_len += (size_t)n;
            c->last_active_ms = clock_mono_ms();
        }
        while (!c->dead && c->in_len >= 2) {
            size_t flen = (size_t)c->in[0] << 8 | c->in[1];
            if (flen < DNS_HEADER_SIZE || flen > DNS_TCP_QUERY_MAX) {
                self->stats.errors++;
                c->dead = true;
                break;
            }
            if (c->in_len < 2 + flen)
                break;
            handle_query(self, c->in + 2, flen, c, -1, NULL, 0);
            memmove(c->in, c->in + 2 + flen, c->in_len - 2 - flen);
            c->in_len -= 2 + flen;
        }
    }
    conn_settle(c);
    return 0;
}

static int on_accept(zloop_t *loop, zmq_pollitem_t *item, void *arg) {
    listener_t *l = arg;
    dns_server_t *self = l->server;
    for (int i = 0; i < DNS_IO_BATCH; i++) {
        int fd = accept4(l->tcp_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0)
            break;
        tcp_conn_t *c = self->n_conns < DNS_TCP_CONNS_MAX ? calloc(1, sizeof *c) : NULL;
        if (!c) {
            self->stats.errors++;
            close(fd);
            continue;
        }
        c->server = self;
        c->fd = fd;
        c->serial = ++self->next_serial;
        c->last_active_ms = clock_mono_ms();
        c->next = self->conns;
        if (self->conns)
            self->conns->prev = c;
        self->conns = c;
        self->n_conns++;
        self->stats.tcp_accepted++;
        conn_set_events(c, ZMQ_POLLIN);
    }
    return 0;
}

static void reap_graveyard(dns_server_t *self) {
    while (self->dead_conns) {
        tcp_conn_t *c = self->dead_conns;
        self->dead_conns = c->next;
        free(c);
    }
    while (self->dead_pendings) {
        pending_t *p = self->dead_pendings;
        self->dead_pendings = p->next;
        pending_free(p);
    }
}

static int on_sweep(zloop_t *loop, int timer_id, void *arg) {
    dns_server_t *self = arg;
    int64_t now = clock_mono_ms();
    reap_graveyard(self); /* killed at least one wake-up ago: no poll set refers to them now */
    int64_t half = self->upstream_timeout_ms / 2;
    bool moved = false;
    for (pending_t *p = self->pend_head, *next; p; p = next) {
        next = p->next;
        int64_t age = now - p->started_ms;
        if (age < half)
            break; /* the rest are younger */
        if (age >= self->upstream_timeout_ms) {
            self->stats.upstream_timeouts++;
            self->stats.servfail++;
            if (!moved && self->n_upstreams > 1 && (p->tried & (1u << self->preferred))) {
                self->preferred = (self->preferred + 1) % self->n_upstreams;
                moved = true;
            }
            pending_finish(self, p, NULL, 0);
        } else if (!p->retried && p->tcp_fd < 0) {
            p->retried = true;
            int u = next_untried(self, p);
            if (u >= 0)
                forward_send(self, p, (size_t)u);
        }
    }
    if (now - self->last_conn_sweep_ms >= 1000) {
        self->last_conn_sweep_ms = now;
        for (tcp_conn_t *c = self->conns, *next; c; c = next) {
            next = c->next;
            if (c->pending == 0 && now - c->last_active_ms >= self->tcp_idle_ms)
                conn_close(c);
        }
    }
    return 0;
}

/* ---- construction ----------------------------------------------------------------------- */

static int open_socket(const struct sockaddr_storage *ss, int type) {
    int fd = socket(ss->ss_family, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (ss->ss_family == AF_INET6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    return fd;
}

static int listener_open(dns_server_t *self, listener_t *l, const char *text) {
    socklen_t len;
    if (dns_addr_parse(text, 0, &l->addr, &len) < 0) {
        log_err("bad listen address addr=%s (want ADDR:PORT or [V6]:PORT)", text);
        return -EINVAL;
    }
    l->addr_len = len;
    l->server = self;
    l->udp_fd = open_socket(&l->addr, SOCK_DGRAM);
    if (l->udp_fd < 0 || bind(l->udp_fd, (struct sockaddr *)&l->addr, len) < 0) {
        int e = l->udp_fd < 0 ? -l->udp_fd : errno;
        log_err("cannot listen on udp addr=%s err=\"%s\"", text, strerror(e));
        return -e;
    }
    /* port 0: TCP takes the port the kernel gave UDP */
    getsockname(l->udp_fd, (struct sockaddr *)&l->addr, &len);
    l->tcp_fd = open_socket(&l->addr, SOCK_STREAM);
    if (l->tcp_fd < 0 || bind(l->tcp_fd, (struct sockaddr *)&l->addr, len) < 0 ||
        listen(l->tcp_fd, 128) < 0) {
        int e = l->tcp_fd < 0 ? -l->tcp_fd : errno;
        log_err("cannot listen on tcp addr=%s err=\"%s\"", text, strerror(e));
        return -e;
    }
    addr_format(&l->addr, l->text, sizeof l->text);
    if (self->loop) {
        zmq_pollitem_t u = {.fd = l->udp_fd, .events = ZMQ_POLLIN};
        zmq_pollitem_t t = {.fd = l->tcp_fd, .events = ZMQ_POLLIN};
        if (zloop_poller(self->loop, &u, on_udp, l) < 0 ||
            zloop_poller(self->loop, &t, on_accept, l) < 0)
            return -ENOMEM;
        zloop_poller_set_tolerant(self->loop, &u);
        zloop_poller_set_tolerant(self->loop, &t);
    }
    return 0;
}

static int upstream_open(dns_server_t *self, upstream_t *up, const char *text) {
    socklen_t len;
    if (dns_addr_parse(text, 53, &up->addr, &len) < 0 || addr_port(&up->addr) == 0) {
        log_err("bad upstream address addr=%s (want ADDR[:PORT])", text);
        return -EINVAL;
    }
    for (size_t i = 0; i < self->n_listeners; i++) {
        const listener_t *l = &self->listeners[i];
        if (addr_same_ip(&up->addr, &l->addr) && addr_port(&up->addr) == addr_port(&l->addr)) {
            log_err("upstream is our own listen address addr=%s", text);
            return -ELOOP;
        }
    }
    up->addr_len = len;
    up->server = self;
    addr_format(&up->addr, up->text, sizeof up->text);
    up->fd = socket(up->addr.ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (up->fd < 0 || connect(up->fd, (struct sockaddr *)&up->addr, len) < 0) {
        int e = errno;
        log_err("cannot open upstream socket addr=%s err=\"%s\"", text, strerror(e));
        return -e;
    }
    if (self->loop) {
        zmq_pollitem_t item = {.fd = up->fd, .events = ZMQ_POLLIN};
        if (zloop_poller(self->loop, &item, on_upstream, up) < 0)
            return -ENOMEM;
        zloop_poller_set_tolerant(self->loop, &item);
    }
    return 0;
}

dns_server_t *dns_server_new(zloop_t *loop, resolver_t *resolver, const dns_server_config_t *cfg) {
    if (cfg->n_listen > DNS_LISTENS_MAX || cfg->n_upstreams > DNS_UPSTREAMS_MAX) {
        log_err("too many addresses listen=%zu upstreams=%zu (max %d and %d)", cfg->n_listen,
                cfg->n_upstreams, DNS_LISTENS_MAX, DNS_UPSTREAMS_MAX);
        errno = EINVAL;
        return NULL;
    }
    dns_server_t *self = calloc(1, sizeof *self);
    if (!self || !(self->by_id = calloc(65536, sizeof *self->by_id))) {
        free(self);
        errno = ENOMEM;
        return NULL;
    }
    self->loop = loop;
    self->resolver = resolver;
    self->forward = cfg->forward;
    self->ttl = cfg->ttl;
    self->upstream_timeout_ms =
        cfg->upstream_timeout_ms > 0 ? cfg->upstream_timeout_ms : DNS_UPSTREAM_TIMEOUT_MS;
    self->tcp_idle_ms = cfg->tcp_idle_ms > 0 ? cfg->tcp_idle_ms : DNS_TCP_IDLE_MS;
    self->timer_id = -1;
    uint64_t seed = 0;
    if (getrandom(&seed, sizeof seed, 0) != sizeof seed || seed == 0)
        seed = (uint64_t)clock_mono_ms() * 0x9E3779B97F4A7C15ULL | 1;
    self->shuffle_state = seed;
    for (size_t i = 0; i < DNS_LISTENS_MAX; i++)
        self->listeners[i].udp_fd = self->listeners[i].tcp_fd = -1;
    for (size_t i = 0; i < DNS_UPSTREAMS_MAX; i++)
        self->upstreams[i].fd = -1;

    int rc = 0;
    for (size_t i = 0; i < cfg->n_listen && rc == 0; i++) {
        rc = listener_open(self, &self->listeners[i], cfg->listen[i]);
        self->n_listeners = i + 1;
    }
    for (size_t i = 0; i < cfg->n_upstreams && rc == 0 && cfg->forward; i++) {
        self->upstreams[i].index = i;
        rc = upstream_open(self, &self->upstreams[i], cfg->upstreams[i]);
        self->n_upstreams = i + 1;
    }
    if (rc == 0 && loop) {
        self->timer_id = zloop_timer(loop, DNS_SWEEP_MS, 0, on_sweep, self);
        if (self->timer_id < 0)
            rc = -ENOMEM;
    }
    if (rc < 0) {
        /* undo the pollers we added: the loop outlives this failed server */
        for (size_t i = 0; loop && i < self->n_listeners; i++) {
            zmq_pollitem_t u = {.fd = self->listeners[i].udp_fd};
            zmq_pollitem_t t = {.fd = self->listeners[i].tcp_fd};
            if (u.fd >= 0)
                zloop_poller_end(loop, &u);
            if (t.fd >= 0)
                zloop_poller_end(loop, &t);
        }
        for (size_t i = 0; loop && i < self->n_upstreams; i++) {
            zmq_pollitem_t item = {.fd = self->upstreams[i].fd};
            if (item.fd >= 0)
                zloop_poller_end(loop, &item);
        }
        if (loop && self->timer_id >= 0)
            zloop_timer_end(loop, self->timer_id);
        self->loop = NULL;
        dns_server_destroy(&self);
        errno = -rc;
        return NULL;
    }
    return self;
}

void dns_server_destroy(dns_server_t **self_p) {
    if (!self_p || !*self_p)
        return;
    dns_server_t *self = *self_p;
    self->loop = NULL; /* never touch the loop from here on: it may be gone */
    while (self->pend_head) {
        pending_t *p = self->pend_head;
        pending_unlink(self, p);
        pending_tcp_close(self, p);
        pending_free(p);
    }
    while (self->conns)
        conn_close(self->conns);
    reap_graveyard(self);
    for (size_t i = 0; i < DNS_LISTENS_MAX; i++) {
        if (self->listeners[i].udp_fd >= 0)
            close(self->listeners[i].udp_fd);
        if (self->listeners[i].tcp_fd >= 0)
            close(self->listeners[i].tcp_fd);
    }
    for (size_t i = 0; i < DNS_UPSTREAMS_MAX; i++)
        if (self->upstreams[i].fd >= 0)
            close(self->upstreams[i].fd);
    free(self->by_id);
    free(self);
    *self_p = NULL;
}

/* ---- accessors -------------------------------------------------------------------------- */

void dns_server_set_synced(dns_server_t *self, bool synced) {
    self->synced = synced;
}

bool dns_server_synced(const dns_server_t *self) {
    return self->synced;
}

const dns_stats_t *dns_server_stats(const dns_server_t *self) {
    return &self->stats;
}

size_t dns_server_pending(const dns_server_t *self) {
    return self->n_pending;
}

size_t dns_server_tcp_connections(const dns_server_t *self) {
    return self->n_conns;
}

size_t dns_server_upstream_count(const dns_server_t *self) {
    return self->n_upstreams;
}

const char *dns_server_upstream(const dns_server_t *self, size_t i) {
    return i < self->n_upstreams ? self->upstreams[i].text : NULL;
}

size_t dns_server_listen_count(const dns_server_t *self) {
    return self->n_listeners;
}

const char *dns_server_listen_address(const dns_server_t *self, size_t i) {
    return i < self->n_listeners ? self->listeners[i].text : NULL;
}
