/* daemon — what every shoal daemon's main.c shares: flags common to all, the state dir and
 * identity, the bus server with the standard methods, the store client, the registry entry, the
 * zloop, signals, sd_notify (READY, STOPPING, WATCHDOG).
 *
 *   daemon_t d;
 *   if (daemon_setup(&d, "scheduler", argc, argv, NULL) < 0) return 1;
 *   ... bus_server_add(d.bus, methods, n, mgr); zloop_reader(d.loop, ...) ...
 *   return daemon_run(&d);   // registers, READY=1, loops until SIGTERM/SIGINT, cleans up
 *
 * Common flags: --state-dir D, --instance NAME, --log-level err|warn|info|debug, --help.
 * Daemon-specific flags are given as `extra` (getopt_long table); daemon_setup() calls
 * `on_option(ctx, opt, optarg)` for them. */
#pragma once
#include <czmq.h>
#include <getopt.h>

#include "bus.h"
#include "config.h"
#include "log.h"
#include "registry.h"
#include "storecli.h"

typedef struct daemon_opts {
    const struct option *extra; /* terminated by a zero entry; val must be >= 256 */
    int (*on_option)(void *ctx, int opt, const char *arg);
    void *ctx;
    const char *usage; /* lines describing the extra flags */
    bool no_store;     /* shoal-store itself */
} daemon_opts_t;

typedef struct daemon {
    const char *kind;
    char instance[64];
    shoal_config_t cfg;
    zcert_t *identity; /* <state>/keys/private/<kind>.key_secret */
    bus_server_t *bus;
    store_client_t *store; /* NULL for shoal-store */
    registry_t *registry;
    zloop_t *loop;
    int64_t started_ms;
} daemon_t;

/* Returns 0, or -errno after printing one clear line to stderr. */
int daemon_setup(daemon_t *d, const char *kind, int argc, char **argv, const daemon_opts_t *opts);
/* Registers in the registry (retrying until the store answers), notifies READY and runs the loop
 * until a signal. Returns the process exit code. */
int daemon_run(daemon_t *d);
/* Tells the loop to stop (from a handler). */
void daemon_stop(daemon_t *d);
