/* session — the assignments long-poller actor (see session.h).
 *
 * Why not lib/bus's bus_client_call(): it blocks on its socket alone, so a thread inside a
 * 5 s long-poll could not see $TERM and the agent's shutdown would wait for the poll. This actor
 * speaks the same envelope (shoal.bus.Request/Reply over a Curve DEALER) and waits on the
 * dealer and its pipe together. A request that gets no reply within poll timeout + grace is
 * abandoned and the socket recreated (the dispatcher may have restarted); replies to abandoned
 * requests are recognised by id and dropped. Errors back off from 100 ms to 2 s. */
#include "session.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bus.h"
#include "config.h"
#include "dispatcher.pb-c.h"
#include "log.h"

#define POLL_GRACE_MS  2000
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 2000

typedef struct poller_args {
    zcert_t *identity;
    char endpoint[PATH_MAX + 32];
    char server_key[41];
    unsigned timeout_ms;
} poller_args_t;

typedef struct poller {
    poller_args_t *args;
    zsock_t *pipe;
    zsock_t *dealer;
    char node_id[64];
    char session_id[64];
    uint64_t known_version;
    char prefix[16];
    uint64_t seq;
    char pending_id[48]; /* request in flight, "" when none */
    int64_t pending_deadline;
    int64_t next_at; /* monotonic time of the next request */
    int backoff;
    bool terminated;
} poller_t;

static int dealer_open(poller_t *p) {
    zsock_destroy(&p->dealer);
    p->dealer = zsock_new(ZMQ_DEALER);
    if (!p->dealer)
        return -ENOMEM;
    zsock_set_linger(p->dealer, 0);
    zcert_apply(p->args->identity, p->dealer);
    zsock_set_curve_serverkey(p->dealer, p->args->server_key);
    if (zsock_connect(p->dealer, "%s", p->args->endpoint) < 0) {
        zsock_destroy(&p->dealer);
        return -EINVAL;
    }
    return 0;
}

static void backoff(poller_t *p) {
    p->next_at = clock_mono_ms() + p->backoff;
    p->backoff = p->backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : p->backoff * 2;
}

static void send_request(poller_t *p) {
    if (!p->dealer && dealer_open(p) < 0) {
        backoff(p);
        return;
    }
    Shoal__Dispatcher__AssignmentsRequest in = SHOAL__DISPATCHER__ASSIGNMENTS_REQUEST__INIT;
    in.node_id = p->node_id;
    in.session_id = p->session_id;
    in.known_version = p->known_version;
    in.timeout_ms = p->args->timeout_ms;
    size_t in_len = protobuf_c_message_get_packed_size(&in.base);
    uint8_t *in_buf = malloc(in_len ? in_len : 1);
    snprintf(p->pending_id, sizeof p->pending_id, "%s-a%llu", p->prefix,
             (unsigned long long)++p->seq);
    Shoal__Bus__Request req = SHOAL__BUS__REQUEST__INIT;
    req.id = p->pending_id;
    req.method = (char *)"dispatcher.Assignments";
    req.deadline_ms = p->args->timeout_ms + POLL_GRACE_MS;
    size_t len = 0;
    uint8_t *buf = NULL;
    if (in_buf) {
        protobuf_c_message_pack(&in.base, in_buf);
        req.payload.data = in_buf;
        req.payload.len = in_len;
        len = shoal__bus__request__get_packed_size(&req);
        buf = malloc(len ? len : 1);
    }
    if (!buf) {
        free(in_buf);
        p->pending_id[0] = '\0';
        backoff(p);
        return;
    }
    shoal__bus__request__pack(&req, buf);
    zframe_t *f = zframe_new(buf, len);
    free(buf);
    free(in_buf);
    if (!f || zframe_send(&f, p->dealer, ZFRAME_DONTWAIT) < 0) {
        zframe_destroy(&f);
        p->pending_id[0] = '\0';
        backoff(p);
        return;
    }
    p->pending_deadline = clock_mono_ms() + p->args->timeout_ms + POLL_GRACE_MS;
}

static void on_reply(poller_t *p) {
    zframe_t *f = zframe_recv(p->dealer);
    if (!f)
        return;
    Shoal__Bus__Reply *rep = shoal__bus__reply__unpack(NULL, zframe_size(f), zframe_data(f));
    zframe_destroy(&f);
    if (!rep)
        return;
    if (!p->pending_id[0] || !rep->id || strcmp(rep->id, p->pending_id) != 0) {
        shoal__bus__reply__free_unpacked(rep, NULL);
        return; /* a reply to an abandoned request */
    }
    p->pending_id[0] = '\0';
    if (rep->code == SHOAL__BUS__CODE__OK) {
        Shoal__Dispatcher__AssignmentsResponse *out =
            shoal__dispatcher__assignments_response__unpack(NULL, rep->payload.len,
                                                            rep->payload.data);
        if (!out) {
            log_warn("unreadable assignments reply from the dispatcher len=%zu", rep->payload.len);
            backoff(p);
        } else {
            if (out->version != p->known_version) {
                log_debug("assignments version=%llu tasks=%zu", (unsigned long long)out->version,
                          out->n_tasks);
                p->known_version = out->version;
                zmsg_t *msg = zmsg_new();
                zmsg_addstr(msg, "ASSIGN");
                zmsg_addmem(msg, rep->payload.data, rep->payload.len);
                zmsg_send(&msg, p->pipe);
            }
            shoal__dispatcher__assignments_response__free_unpacked(out, NULL);
            p->backoff = BACKOFF_MIN_MS;
            p->next_at = 0; /* poll again at once */
        }
    } else if (rep->code == SHOAL__BUS__CODE__FAILED_PRECONDITION ||
               rep->code == SHOAL__BUS__CODE__NOT_FOUND) {
        log_info("dispatcher does not know our session session=%s msg=\"%s\"", p->session_id,
                 rep->message ? rep->message : "");
        zsock_send(p->pipe, "sss", "LOST", p->session_id, rep->message ? rep->message : "");
        p->session_id[0] = '\0'; /* pause until a new SESSION */
    } else {
        log_warn("assignments poll failed code=%s msg=\"%s\"", bus_code_name(rep->code),
                 rep->message ? rep->message : "");
        backoff(p);
    }
    shoal__bus__reply__free_unpacked(rep, NULL);
}

static void on_pipe(poller_t *p) {
    zmsg_t *msg = zmsg_recv(p->pipe);
    if (!msg) {
        p->terminated = true;
        return;
    }
    char *cmd = zmsg_popstr(msg);
    if (!cmd || strcmp(cmd, "$TERM") == 0) {
        p->terminated = true;
    } else if (strcmp(cmd, "SESSION") == 0) {
        char *node = zmsg_popstr(msg), *session = zmsg_popstr(msg);
        snprintf(p->node_id, sizeof p->node_id, "%s", node ? node : "");
        snprintf(p->session_id, sizeof p->session_id, "%s", session ? session : "");
        zstr_free(&node);
        zstr_free(&session);
        p->known_version = 0;
        p->pending_id[0] = '\0'; /* a reply for the old session is dropped */
        p->backoff = BACKOFF_MIN_MS;
        p->next_at = 0;
    }
    zstr_free(&cmd);
    zmsg_destroy(&msg);
}

static void poller_actor(zsock_t *pipe, void *arg) {
    poller_t p = {.args = arg, .pipe = pipe, .backoff = BACKOFF_MIN_MS};
    char rid[26];
    id_random(rid);
    snprintf(p.prefix, sizeof p.prefix, "%.10s", rid);
    zsock_signal(pipe, 0);
    while (!p.terminated) {
        int64_t now = clock_mono_ms();
        if (p.session_id[0] && !p.pending_id[0] && now >= p.next_at) {
            send_request(&p);
            continue;
        }
        if (p.pending_id[0] && now >= p.pending_deadline) {
            log_warn("no assignments reply from the dispatcher within %u ms, reconnecting",
                     p.args->timeout_ms + POLL_GRACE_MS);
            p.pending_id[0] = '\0';
            zsock_destroy(&p.dealer);
            backoff(&p);
            continue;
        }
        long wait = -1;
        if (p.pending_id[0])
            wait = (long)(p.pending_deadline - now);
        else if (p.session_id[0])
            wait = (long)(p.next_at - now);
        if (wait < 0 && (p.pending_id[0] || p.session_id[0]))
            wait = 0;
        zmq_pollitem_t items[2] = {{zsock_resolve(pipe), 0, ZMQ_POLLIN, 0},
                                   {p.dealer ? zsock_resolve(p.dealer) : NULL, 0, ZMQ_POLLIN, 0}};
        int n = zmq_poll(items, p.dealer ? 2 : 1, wait);
        if (n < 0) {
            if (errno == EINTR)
                continue; /* only $TERM ends us */
            break;
        }
        if (items[0].revents & ZMQ_POLLIN)
            on_pipe(&p);
        if (p.dealer && (items[1].revents & ZMQ_POLLIN))
            on_reply(&p);
    }
    zsock_destroy(&p.dealer);
    zcert_destroy(&p.args->identity);
    free(p.args);
}

zactor_t *assignments_poller_new(zcert_t *identity, const char *endpoint, const char *server_key,
                                 unsigned poll_timeout_ms) {
    if (!identity || !endpoint || !server_key || strlen(server_key) != 40) {
        errno = EINVAL;
        return NULL;
    }
    poller_args_t *a = calloc(1, sizeof *a);
    if (!a)
        return NULL;
    a->identity = zcert_dup(identity);
    snprintf(a->endpoint, sizeof a->endpoint, "%s", endpoint);
    snprintf(a->server_key, sizeof a->server_key, "%s", server_key);
    a->timeout_ms = poll_timeout_ms ? poll_timeout_ms : SESSION_POLL_TIMEOUT_MS;
    if (!a->identity) {
        free(a);
        return NULL;
    }
    zactor_t *actor = zactor_new(poller_actor, a);
    if (!actor) {
        zcert_destroy(&a->identity);
        free(a);
    }
    return actor;
}

int assignments_poller_set_session(zactor_t *poller, const char *node_id, const char *session_id) {
    return zsock_send(poller, "sss", "SESSION", node_id ? node_id : "",
                      session_id ? session_id : "");
}
