/* server — shoal-dns's UDP/TCP front end and upstream forwarder (see server.c). */
#pragma once
#include <czmq.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dnsmsg.h"
#include "resolver.h"

#define DNS_DEFAULT_LISTEN      "127.0.0.1:8053"
#define DNS_DEFAULT_TTL         1
#define DNS_UPSTREAM_TIMEOUT_MS 2000
#define DNS_TCP_IDLE_MS         10000
#define DNS_UPSTREAMS_MAX       8
#define DNS_LISTENS_MAX         16

typedef struct dns_server_config {
    const char *const *listen; /* "ADDR:PORT" or "[V6]:PORT"; none = no sockets (tests) */
    size_t n_listen;
    const char *const *upstreams; /* "ADDR[:PORT]" (port 53 when absent) */
    size_t n_upstreams;
    bool forward; /* false: authoritative only, unknown names get NXDOMAIN */
    uint32_t ttl; /* of our A records */
    int upstream_timeout_ms;
    int tcp_idle_ms;
} dns_server_config_t;

typedef struct dns_stats {
    uint64_t queries;  /* every message received from a client */
    uint64_t answered; /* NOERROR answers from the cluster table */
    uint64_t nxdomain;
    uint64_t forwarded; /* sent upstream */
    uint64_t truncated; /* TC set by us */
    uint64_t errors;    /* dropped, malformed (FORMERR), unsendable */
    uint64_t servfail;  /* by us: not synced, no upstream, upstream timeout */
    uint64_t refused;
    uint64_t notimp;
    uint64_t upstream_timeouts;
    uint64_t tcp_accepted;
} dns_stats_t;

typedef enum dns_verdict {
    DNS_VERDICT_DROP,    /* no answer at all (not a query, shorter than a header) */
    DNS_VERDICT_REPLY,   /* out holds the answer */
    DNS_VERDICT_FORWARD, /* not a cluster name: send upstream */
} dns_verdict_t;

typedef struct dns_server dns_server_t;

/* Binds UDP and TCP on every listen address (non-blocking, registered in `loop`) and opens a UDP
 * socket per upstream. NULL with errno on failure, after logging which address failed. With
 * n_listen == 0 and loop NULL it only decides answers (dns_server_process), for tests. */
dns_server_t *dns_server_new(zloop_t *loop, resolver_t *resolver, const dns_server_config_t *cfg);
/* Closes every socket; never touches the loop (which daemon_run may have destroyed already). */
void dns_server_destroy(dns_server_t **self_p);

/* Until the table has been loaded from the store, every query gets SERVFAIL. */
void dns_server_set_synced(dns_server_t *self, bool synced);
bool dns_server_synced(const dns_server_t *self);

/* Decides the answer to one client message (counted in the stats). `tcp` lifts the UDP size
 * limit. On FORWARD, *ret_query holds the parsed query. */
dns_verdict_t dns_server_process(dns_server_t *self, const uint8_t *msg, size_t len, bool tcp,
                                 uint8_t *out, size_t cap, size_t *ret_len,
                                 dns_message_t *ret_query);

const dns_stats_t *dns_server_stats(const dns_server_t *self);
size_t dns_server_pending(const dns_server_t *self);
size_t dns_server_tcp_connections(const dns_server_t *self);
size_t dns_server_upstream_count(const dns_server_t *self);
const char *dns_server_upstream(const dns_server_t *self, size_t i);
size_t dns_server_listen_count(const dns_server_t *self);
const char *dns_server_listen_address(const dns_server_t *self, size_t i); /* as bound */

/* Parses "ADDR:PORT", "[V6]:PORT" or, when default_port > 0, a bare "ADDR". 0 or -EINVAL. */
int dns_addr_parse(const char *text, int default_port, struct sockaddr_storage *ret,
                   socklen_t *ret_len);
/* The nameservers of a resolv.conf, minus 127.0.0.0/8, ::1 and any address in `self_addrs`
 * (our own listen sockets). Writes up to cap "ADDR:53" strings into out[i][64]. Returns their
 * number, or -errno when the file cannot be read. */
int dns_upstreams_from_resolv_conf(const char *path, const struct sockaddr_storage *self_addrs,
                                   size_t n_self, char (*out)[64], size_t cap);
