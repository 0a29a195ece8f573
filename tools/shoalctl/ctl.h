/* shoalctl — busctl-style inspection of the shoal bus: what is shared by its verbs.
 *
 * ctl_t is one invocation: the state dir, the identity it calls with, the store client used to
 * read the registry, and the output options. Verbs return the process exit code: 0, 1 after one
 * error line on stderr (ctl_fail), 2 on a usage error. */
#pragma once
#include <czmq.h>
#include <jansson.h>
#include <limits.h>
#include <stdbool.h>

#include "bus.h"
#include "config.h"
#include "storecli.h"

#define CTL_DEFAULT_TIMEOUT_MS 5000

typedef struct ctl {
    shoal_config_t cfg;
    const char *state_dir;
    const char *key_name;    /* identity: <state>/keys/private/<key_name>.key_secret */
    bool json;               /* --json */
    bool emit_defaults;      /* --all-fields: print default-valued fields too */
    int timeout_ms;          /* calls: --timeout MS */
    const char *timeout_arg; /* as given; monitor reads it as seconds */
    long count;              /* monitor --count N, 0 = unlimited */
    zcert_t *identity;
    store_client_t *store;
    bool store_listening; /* something accepts connections at the store's ipc endpoint */
    char store_endpoint[PATH_MAX + 32];
} ctl_t;

/* A daemon to talk to: from its registry entry, or from the state dir's fixed endpoints when the
 * registry has none (then instance is empty). */
typedef struct ctl_daemon {
    char kind[64];
    char instance[128];
    char rpc[PATH_MAX + 32];
    char pub[PATH_MAX + 32];
    char key[41];
    bool registered;
} ctl_daemon_t;

/* Loads the config, the identity and a store client. 1 after printing why not. */
int ctl_open(ctl_t *ctl);
void ctl_close(ctl_t *ctl);

/* Prints "shoalctl: <message>" on stderr; returns 1 (the exit code). */
int ctl_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* store_list() of the registry's store, failing at once (-ECONNREFUSED) when it is not running;
 * ctl_store_error() says why the last one failed. */
int ctl_store_list(ctl_t *ctl, const char *prefix, Shoal__Store__RangeResponse **ret);
const char *ctl_store_error(ctl_t *ctl);

/* Resolves "kind" or "kind/instance". With `all`, every registered instance of a bare kind;
 * else the first. 0 with *ret (free()) and *n >= 1, or 1 after printing why not. */
int ctl_resolve(ctl_t *ctl, const char *spec, bool all, ctl_daemon_t **ret, size_t *n);
/* Every registered daemon plus the unregistered ones listening at this node's fixed endpoints
 * (the store, or all of them while the store is down), sorted by kind then instance. *ret may
 * be NULL when *n is 0. 0, or 1 after printing why not. */
int ctl_resolve_all(ctl_t *ctl, ctl_daemon_t **ret, size_t *n);

/* Resolves `spec` and connects. NULL after printing why not. */
bus_client_t *ctl_connect(ctl_t *ctl, const char *spec, ctl_daemon_t *ret_daemon);
/* Prints the error of a failed bus call: "shoalctl: store.Put: INVALID_ARGUMENT: ..."; 1. */
int ctl_call_failed(bus_client_t *client, const char *method, int rc);

/* Prints `j` (stolen) as indented JSON and a newline on stdout. 0, or 1 on failure. */
int ctl_print_json(json_t *j);
/* "850ms", "12s", "3m12s", "2h05m", "3d04h". */
void ctl_format_duration(int64_t ms, char *buf, size_t len);

int cmd_list(ctl_t *ctl, int argc, char **argv);
int cmd_status(ctl_t *ctl, int argc, char **argv);
int cmd_introspect(ctl_t *ctl, int argc, char **argv);
int cmd_call(ctl_t *ctl, int argc, char **argv);
int cmd_monitor(ctl_t *ctl, int argc, char **argv);
