/* shoal-dns — cluster DNS (DESIGN §7): "<service>" and "tasks.<service>" resolve to the addresses
 * of the service's running tasks on the "shoal" network; every other name is forwarded upstream.
 *
 * Wiring: daemon_setup() (bus, store client, loop), then the name table is loaded by listing "/"
 * and kept current by a store watcher from the next revision, one event at a time. Until the
 * first list succeeds every query gets SERVFAIL (a wrong NXDOMAIN would be cached by clients),
 * and the list is retried each second. If the watch reports the history compacted the table is
 * re-listed while the old one keeps answering. The DNS sockets live in server.c and the table in
 * resolver.c; this file parses flags and serves dns.Lookup, bus.Health and bus.Stats.
 *
 * Upstreams: every --upstream ADDR[:PORT]; by default the nameservers of /etc/resolv.conf minus
 * loopback ones (usually a local stub or ourselves) and our own listen addresses.
 * `--upstream none` turns forwarding off: we are then the only authority and unknown names get
 * NXDOMAIN. With forwarding on but no usable upstream, unknown names get SERVFAIL, as Docker's
 * embedded DNS answers, so a stub resolver tries its next nameserver. */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon.h"
#include "dns.pb-c.h"
#include "resolver.h"
#include "server.h"

enum { OPT_LISTEN = 256, OPT_UPSTREAM, OPT_NETWORK, OPT_TTL, OPT_RESOLV_CONF };

typedef struct dns_options {
    const char *listen[DNS_LISTENS_MAX];
    size_t n_listen;
    const char *upstreams[DNS_UPSTREAMS_MAX];
    size_t n_upstreams;
    bool no_forward;
    const char *network;
    const char *resolv_conf;
    uint32_t ttl;
} dns_options_t;

typedef struct dns_daemon {
    daemon_t d;
    dns_options_t opts;
    resolver_t *resolver;
    dns_server_t *server;
    zactor_t *watcher;
    int resync_timer;
    int64_t revision; /* of the last list or event applied */
    uint64_t watch_events, lists, decode_errors;
} dns_daemon_t;

static const struct option dns_extra_opts[] = {
    {"listen", required_argument, NULL, OPT_LISTEN},
    {"upstream", required_argument, NULL, OPT_UPSTREAM},
    {"network", required_argument, NULL, OPT_NETWORK},
    {"ttl", required_argument, NULL, OPT_TTL},
    {"resolv-conf", required_argument, NULL, OPT_RESOLV_CONF},
    {NULL, 0, NULL, 0},
};

static const char dns_usage[] =
    "  --listen ADDR:PORT      UDP and TCP address to answer on, repeatable "
    "(default " DNS_DEFAULT_LISTEN ")\n"
    "  --upstream ADDR[:PORT]  forward other names there, repeatable; \"none\": answer NXDOMAIN\n"
    "                          (default: the non-loopback nameservers of --resolv-conf)\n"
    "  --resolv-conf FILE      where default upstreams come from (default /etc/resolv.conf)\n"
    "  --network NAME          task network whose addresses are served (default shoal)\n"
    "  --ttl SECONDS           TTL of cluster answers (default 1)";

static int on_option(void *ctx, int opt, const char *arg) {
    dns_options_t *o = ctx;
    switch (opt) {
    case OPT_LISTEN:
        if (o->n_listen == DNS_LISTENS_MAX) {
            fprintf(stderr, "shoal-dns: --listen: at most %d addresses\n", DNS_LISTENS_MAX);
            return -EINVAL;
        }
        o->listen[o->n_listen++] = arg;
        return 0;
    case OPT_UPSTREAM:
        if (strcmp(arg, "none") == 0) {
            o->no_forward = true;
            return 0;
        }
        if (o->n_upstreams == DNS_UPSTREAMS_MAX) {
            fprintf(stderr, "shoal-dns: --upstream: at most %d addresses\n", DNS_UPSTREAMS_MAX);
            return -EINVAL;
        }
        o->upstreams[o->n_upstreams++] = arg;
        return 0;
    case OPT_NETWORK:
        o->network = arg;
        return 0;
    case OPT_RESOLV_CONF:
        o->resolv_conf = arg;
        return 0;
    case OPT_TTL: {
        char *end;
        long v = strtol(arg, &end, 10);
        if (!*arg || *end || v < 0 || v > 86400) {
            fprintf(stderr, "shoal-dns: --ttl: must be 0..86400 seconds (got \"%s\")\n", arg);
            return -EINVAL;
        }
        o->ttl = (uint32_t)v;
        return 0;
    }
    }
    return -EINVAL;
}

/* ---- the table: list, then watch -------------------------------------------------------- */

static int on_watch(zloop_t *loop, zsock_t *sock, void *arg);
static int on_resync_timer(zloop_t *loop, int timer_id, void *arg);

static void watcher_stop(dns_daemon_t *m) {
    if (!m->watcher)
        return;
    zloop_reader_end(m->d.loop, zactor_sock(m->watcher));
    zactor_destroy(&m->watcher);
}

static void schedule_resync(dns_daemon_t *m) {
    if (m->resync_timer < 0)
        m->resync_timer = zloop_timer(m->d.loop, 1000, 1, on_resync_timer, m);
}

/* Lists every key and (re)starts the watcher from the next revision. */
static int sync_from_store(dns_daemon_t *m) {
    Shoal__Store__RangeResponse *resp = NULL;
    store_client_set_timeout(m->d.store, 2000);
    int rc = store_list(m->d.store, "/", &resp);
    store_client_set_timeout(m->d.store, 0);
    if (rc < 0) {
        log_warn("store list failed, retrying in 1 s err=\"%s\"", store_client_error(m->d.store));
        return rc;
    }
    resolver_clear(m->resolver);
    for (size_t i = 0; i < resp->n_kvs; i++) {
        const Shoal__Store__KeyValue *kv = resp->kvs[i];
        if (resolver_apply(m->resolver, kv->key, false, kv->value.data, kv->value.len) < 0)
            m->decode_errors++;
    }
    if (resp->more)
        log_warn("store list was cut short: the table may miss objects keys=%zu", resp->n_kvs);
    m->revision = resp->header ? resp->header->revision : 0;
    shoal__store__range_response__free_unpacked(resp, NULL);

    watcher_stop(m);
    m->watcher = store_watcher_new(&m->d.cfg, "dns", "/", m->revision + 1);
    if (!m->watcher || zloop_reader(m->d.loop, zactor_sock(m->watcher), on_watch, m) < 0) {
        log_err("cannot start the store watcher");
        zactor_destroy(&m->watcher);
        return -ENOMEM;
    }
    m->lists++;
    dns_server_set_synced(m->server, true);
    log_info("name table loaded revision=%lld services=%zu running_tasks=%zu",
             (long long)m->revision, resolver_service_count(m->resolver),
             resolver_task_count(m->resolver));
    return 0;
}

static int on_resync_timer(zloop_t *loop, int timer_id, void *arg) {
    dns_daemon_t *m = arg;
    m->resync_timer = -1;
    if (sync_from_store(m) < 0)
        schedule_resync(m);
    return 0;
}

static int on_watch(zloop_t *loop, zsock_t *sock, void *arg) {
    dns_daemon_t *m = arg;
    Shoal__Store__WatchResponse *resp = NULL;
    if (store_watcher_recv(m->watcher, &resp) < 0)
        return 0;
    if (resp->compacted) {
        log_warn("store history compacted, re-listing from=%lld compact_revision=%lld",
                 (long long)m->revision, (long long)resp->compact_revision);
        shoal__store__watch_response__free_unpacked(resp, NULL);
        watcher_stop(m); /* the old table keeps answering until the new list */
        if (sync_from_store(m) < 0)
            schedule_resync(m);
        return 0;
    }
    for (size_t i = 0; i < resp->n_events; i++) {
        const Shoal__Store__Event *ev = resp->events[i];
        if (!ev->kv || !ev->kv->key)
            continue;
        bool deleted = ev->type == SHOAL__STORE__EVENT__TYPE__DELETE;
        if (resolver_apply(m->resolver, ev->kv->key, deleted, ev->kv->value.data,
                           ev->kv->value.len) < 0)
            m->decode_errors++;
        if (ev->kv->mod_revision > m->revision)
            m->revision = ev->kv->mod_revision;
        m->watch_events++;
    }
    shoal__store__watch_response__free_unpacked(resp, NULL);
    return 0;
}

/* ---- bus methods ------------------------------------------------------------------------ */

static void on_lookup(void *ctx, bus_call_t *call, const ProtobufCMessage *input) {
    dns_daemon_t *m = ctx;
    const Shoal__Dns__LookupRequest *req = (const Shoal__Dns__LookupRequest *)input;
    if (!req->name || !*req->name || strlen(req->name) > DNS_NAME_WIRE_MAX + 8) {
        bus_reply_error(call, BUS_INVALID_ARGUMENT, "dns.Lookup: name must be 1..263 characters");
        return;
    }
    if (!dns_server_synced(m->server)) {
        bus_reply_error(call, BUS_UNAVAILABLE, "dns: name table not loaded from the store yet");
        return;
    }
    enum { CAP = 4096 };
    uint32_t *addrs = calloc(CAP, sizeof *addrs);
    char(*text)[16] = calloc(CAP, sizeof *text);
    char **ptrs = calloc(CAP, sizeof *ptrs);
    size_t n = 0;
    if (!addrs || !text || !ptrs) {
        bus_reply_error(call, BUS_INTERNAL, "dns.Lookup: out of memory");
        goto out;
    }
    if (resolver_lookup(m->resolver, req->name, addrs, CAP, &n) < 0) {
        bus_reply_error(call, BUS_NOT_FOUND, "dns: \"%s\" is not a service name", req->name);
        goto out;
    }
    if (n > CAP)
        n = CAP;
    for (size_t i = 0; i < n; i++) {
        inet_ntop(AF_INET, &addrs[i], text[i], sizeof text[i]);
        ptrs[i] = text[i];
    }
    Shoal__Dns__LookupResponse resp = SHOAL__DNS__LOOKUP_RESPONSE__INIT;
    resp.addresses = ptrs;
    resp.n_addresses = n;
    bus_reply_ok(call, &resp.base);
out:
    free(addrs);
    free(text);
    free(ptrs);
}

static const bus_method_t dns_methods[] = {
    {"dns.Lookup", &shoal__dns__lookup_request__descriptor,
     &shoal__dns__lookup_response__descriptor, on_lookup, BUS_ROLES_MANAGER},
};

static void on_health(void *ctx, Shoal__Bus__HealthResponse *h) {
    dns_daemon_t *m = ctx;
    char msg[256];
    bool synced = dns_server_synced(m->server);
    snprintf(msg, sizeof msg,
             synced ? "revision %lld, %zu services, %zu running tasks" : "waiting for the store",
             (long long)m->revision, resolver_service_count(m->resolver),
             resolver_task_count(m->resolver));
    bus_health_add_check(h, "store_sync", synced, "%s", msg);
    size_t nl = dns_server_listen_count(m->server);
    snprintf(msg, sizeof msg, "%zu addresses, first %s", nl,
             nl ? dns_server_listen_address(m->server, 0) : "-");
    bus_health_add_check(h, "listeners", nl > 0, "%s", msg);
    size_t nu = dns_server_upstream_count(m->server);
    if (m->opts.no_forward)
        snprintf(msg, sizeof msg, "forwarding off: unknown names get NXDOMAIN");
    else if (nu == 0)
        snprintf(msg, sizeof msg, "no upstream: unknown names get SERVFAIL");
    else
        snprintf(msg, sizeof msg, "%zu, first %s", nu, dns_server_upstream(m->server, 0));
    bus_health_add_check(h, "upstreams", true, "%s", msg);
    if (!h->healthy) {
        free(h->status);
        h->status = strdup(synced ? "not listening" : "waiting for the store");
    }
}

static void on_stats(void *ctx, Shoal__Bus__StatsResponse *out) {
    dns_daemon_t *m = ctx;
    const dns_stats_t *s = dns_server_stats(m->server);
    bus_stats_add(out, "dns.queries", (int64_t)s->queries);
    bus_stats_add(out, "dns.answered", (int64_t)s->answered);
    bus_stats_add(out, "dns.nxdomain", (int64_t)s->nxdomain);
    bus_stats_add(out, "dns.forwarded", (int64_t)s->forwarded);
    bus_stats_add(out, "dns.truncated", (int64_t)s->truncated);
    bus_stats_add(out, "dns.errors", (int64_t)s->errors);
    bus_stats_add(out, "dns.servfail", (int64_t)s->servfail);
    bus_stats_add(out, "dns.refused", (int64_t)s->refused);
    bus_stats_add(out, "dns.notimp", (int64_t)s->notimp);
    bus_stats_add(out, "dns.upstream_timeouts", (int64_t)s->upstream_timeouts);
    bus_stats_add(out, "dns.pending", (int64_t)dns_server_pending(m->server));
    bus_stats_add(out, "dns.tcp_accepted", (int64_t)s->tcp_accepted);
    bus_stats_add(out, "dns.tcp_connections", (int64_t)dns_server_tcp_connections(m->server));
    bus_stats_add(out, "dns.services", (int64_t)resolver_service_count(m->resolver));
    bus_stats_add(out, "dns.running_tasks", (int64_t)resolver_task_count(m->resolver));
    bus_stats_add(out, "dns.watch_events", (int64_t)m->watch_events);
    bus_stats_add(out, "dns.lists", (int64_t)m->lists);
    bus_stats_add(out, "dns.decode_errors", (int64_t)m->decode_errors);
    bus_stats_add(out, "dns.revision", m->revision);
}

/* ---- main ------------------------------------------------------------------------------- */

int main(int argc, char **argv) {
    static dns_daemon_t m;
    m.resync_timer = -1;
    m.opts.ttl = DNS_DEFAULT_TTL;
    m.opts.network = "shoal";
    m.opts.resolv_conf = "/etc/resolv.conf";
    daemon_opts_t dopts = {
        .extra = dns_extra_opts, .on_option = on_option, .ctx = &m.opts, .usage = dns_usage};
    if (daemon_setup(&m.d, "dns", argc, argv, &dopts) < 0)
        return 1;
    if (m.opts.n_listen == 0)
        m.opts.listen[m.opts.n_listen++] = DNS_DEFAULT_LISTEN;
    if (m.opts.no_forward && m.opts.n_upstreams > 0) {
        fprintf(stderr, "shoal-dns: --upstream none cannot be combined with upstream addresses\n");
        return 1;
    }

    /* Default upstreams: resolv.conf minus loopback and our own addresses. */
    static char found[DNS_UPSTREAMS_MAX][64];
    if (!m.opts.no_forward && m.opts.n_upstreams == 0) {
        struct sockaddr_storage self_addrs[DNS_LISTENS_MAX];
        size_t n_self = 0;
        for (size_t i = 0; i < m.opts.n_listen; i++) {
            socklen_t len;
            if (dns_addr_parse(m.opts.listen[i], 0, &self_addrs[n_self], &len) == 0)
                n_self++;
        }
        int n = dns_upstreams_from_resolv_conf(m.opts.resolv_conf, self_addrs, n_self, found,
                                               DNS_UPSTREAMS_MAX);
        if (n < 0)
            log_warn("cannot read nameservers file=%s err=\"%s\"", m.opts.resolv_conf,
                     strerror(-n));
        for (int i = 0; i < n; i++)
            m.opts.upstreams[m.opts.n_upstreams++] = found[i];
        if (m.opts.n_upstreams == 0)
            log_warn("no usable upstream nameserver: names outside the cluster get SERVFAIL "
                     "file=%s",
                     m.opts.resolv_conf);
    }

    m.resolver = resolver_new(m.opts.network);
    dns_server_config_t scfg = {
        .listen = m.opts.listen,
        .n_listen = m.opts.n_listen,
        .upstreams = m.opts.upstreams,
        .n_upstreams = m.opts.n_upstreams,
        .forward = !m.opts.no_forward,
        .ttl = m.opts.ttl,
    };
    m.server = m.resolver ? dns_server_new(m.d.loop, m.resolver, &scfg) : NULL;
    if (!m.server) {
        fprintf(stderr, "shoal-dns: cannot open the DNS sockets (%s); see the log line above\n",
                strerror(errno));
        return 1;
    }
    for (size_t i = 0; i < dns_server_listen_count(m.server); i++)
        log_info("listening addr=%s udp=yes tcp=yes", dns_server_listen_address(m.server, i));
    for (size_t i = 0; i < dns_server_upstream_count(m.server); i++)
        log_info("upstream addr=%s", dns_server_upstream(m.server, i));

    bus_server_add(m.d.bus, dns_methods, sizeof dns_methods / sizeof dns_methods[0], &m);
    bus_server_set_health(m.d.bus, on_health, &m);
    bus_server_set_stats(m.d.bus, on_stats, &m);

    if (sync_from_store(&m) < 0)
        schedule_resync(&m);

    int rc = daemon_run(&m.d); /* destroys the loop, bus and store client on the way out */
    zactor_destroy(&m.watcher);
    dns_server_destroy(&m.server);
    resolver_destroy(&m.resolver);
    return rc;
}
