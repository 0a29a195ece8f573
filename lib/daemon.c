/* daemon — the shared skeleton of every shoal daemon (see daemon.h).
 *
 * Order matters: the ZAP handler and the bus server exist before anything can connect; the
 * registry entry is written once the store answers (retried from a timer, so a daemon started
 * before the store simply registers late); READY=1 goes to systemd when the bus is bound, since
 * from then on requests are queued and served. SIGTERM/SIGINT end the loop (CZMQ's handler sets
 * zsys_interrupted); the registry lease is revoked on the way out so peers notice at once. */
#include "daemon.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

enum { OPT_STATE_DIR = 1, OPT_INSTANCE, OPT_LOG_LEVEL, OPT_HELP };

static const struct option common_opts[] = {
    {"state-dir", required_argument, NULL, OPT_STATE_DIR},
    {"instance", required_argument, NULL, OPT_INSTANCE},
    {"log-level", required_argument, NULL, OPT_LOG_LEVEL},
    {"help", no_argument, NULL, OPT_HELP},
};

static void usage(const char *kind, const daemon_opts_t *opts) {
    printf("usage: shoal-%s [--state-dir D] [--instance NAME] [--log-level err|warn|info|debug]\n",
           kind);
    if (opts && opts->usage)
        printf("%s\n", opts->usage);
}

static int parse_level(const char *s, enum log_level *ret) {
    static const char *const names[] = {"err", "warn", "info", "debug"};
    for (int i = 0; i < 4; i++)
        if (!strcmp(s, names[i])) {
            *ret = (enum log_level)i;
            return 0;
        }
    return -EINVAL;
}

int daemon_setup(daemon_t *d, const char *kind, int argc, char **argv, const daemon_opts_t *opts) {
    memset(d, 0, sizeof *d);
    d->kind = kind;
    const char *state_dir = NULL;
    enum log_level level = LOG_LEVEL_INFO;
    char host[64] = "";
    gethostname(host, sizeof host - 1);
    snprintf(d->instance, sizeof d->instance, "%s", host[0] ? host : kind);

    size_t n_extra = 0;
    while (opts && opts->extra && opts->extra[n_extra].name)
        n_extra++;
    size_t n_common = sizeof common_opts / sizeof common_opts[0];
    struct option *all = calloc(n_common + n_extra + 1, sizeof *all);
    if (!all)
        return -ENOMEM;
    memcpy(all, common_opts, sizeof common_opts);
    if (n_extra)
        memcpy(all + n_common, opts->extra, n_extra * sizeof *all);
    int c, r = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, "", all, NULL)) != -1) {
        switch (c) {
        case OPT_STATE_DIR:
            state_dir = optarg;
            break;
        case OPT_INSTANCE:
            snprintf(d->instance, sizeof d->instance, "%s", optarg);
            break;
        case OPT_LOG_LEVEL:
            if (parse_level(optarg, &level) < 0) {
                fprintf(stderr,
                        "shoal-%s: --log-level: must be err, warn, info or debug (got \"%s\")\n",
                        kind, optarg);
                r = -EINVAL;
            }
            break;
        case OPT_HELP:
            usage(kind, opts);
            exit(0);
        default:
            if (c >= 256 && opts && opts->on_option) {
                int rr = opts->on_option(opts->ctx, c, optarg);
                if (rr < 0)
                    r = rr;
            } else {
                usage(kind, opts);
                r = -EINVAL;
            }
        }
        if (r < 0)
            break;
    }
    free(all);
    if (r < 0)
        return r;

    log_init(kind, level);
    signal(SIGPIPE, SIG_IGN);
    zsys_init();
    zsys_set_logstream(NULL);
    state_dir = config_state_dir(state_dir);
    r = config_load(state_dir, &d->cfg);
    if (r < 0) {
        fprintf(stderr,
                "shoal-%s: cannot load %s/cluster.conf: %s (run: shoal init --state-dir %s)\n",
                kind, state_dir, strerror(-r), state_dir);
        return r;
    }
    d->identity = bus_identity_load(state_dir, kind);
    if (!d->identity) {
        fprintf(stderr, "shoal-%s: no key %s/keys/private/%s.key_secret (run: shoal init)\n", kind,
                state_dir, kind);
        return -ENOKEY;
    }
    d->bus = bus_server_new(&d->cfg, kind, d->instance, NULL, NULL);
    if (!d->bus) {
        char ep[PATH_MAX + 32];
        config_rpc_endpoint(&d->cfg, kind, ep, sizeof ep);
        fprintf(stderr, "shoal-%s: cannot bind the bus at %s: %s\n", kind, ep, strerror(errno));
        return -errno;
    }
    if (!opts || !opts->no_store) {
        d->store = store_client_new(&d->cfg, d->identity);
        if (!d->store) {
            fprintf(stderr, "shoal-%s: cannot create the store client: %s\n", kind,
                    strerror(errno));
            return -EINVAL;
        }
    }
    d->loop = zloop_new();
    bus_server_attach(d->bus, d->loop);
    bus_server_publish_logs(d->bus);
    d->started_ms = clock_mono_ms();
    return 0;
}

static int on_registry_timer(zloop_t *loop, int timer_id, void *arg) {
    daemon_t *d = arg;
    if (!d->store)
        return 0;
    if (!d->registry) {
        store_client_set_timeout(d->store, 500);
        d->registry = registry_new(d->store, d->bus, NULL);
        store_client_set_timeout(d->store, 0);
        if (d->registry)
            log_info("registered in the bus registry kind=%s instance=%s", d->kind, d->instance);
        return 0;
    }
    store_client_set_timeout(d->store, 500);
    int r = registry_keepalive(d->registry);
    store_client_set_timeout(d->store, 0);
    if (r < 0)
        log_debug("registry keepalive failed err=%d", r);
    return 0;
}

static int on_watchdog(zloop_t *loop, int timer_id, void *arg) {
    sd_notify(0, "WATCHDOG=1");
    return 0;
}

int daemon_run(daemon_t *d) {
    on_registry_timer(d->loop, 0, d);
    zloop_timer(d->loop, REGISTRY_KEEPALIVE_MS, 0, on_registry_timer, d);
    uint64_t wd_usec = 0;
    if (sd_watchdog_enabled(0, &wd_usec) > 0 && wd_usec > 0)
        zloop_timer(d->loop, (size_t)(wd_usec / 2000), 0, on_watchdog, d);
    sd_notify(0, "READY=1");
    log_info("started kind=%s instance=%s rpc=%s pid=%d", d->kind, d->instance,
             bus_server_rpc_endpoint(d->bus), getpid());
    zloop_start(d->loop);
    sd_notify(0, "STOPPING=1");
    log_info("stopping kind=%s instance=%s", d->kind, d->instance);
    if (d->store) {
        store_client_set_timeout(d->store, 300);
        registry_destroy(&d->registry);
    }
    zloop_destroy(&d->loop);
    bus_server_destroy(&d->bus);
    store_client_destroy(&d->store);
    zcert_destroy(&d->identity);
    return 0;
}

void daemon_stop(daemon_t *d) {
    zsys_interrupted = 1;
}
