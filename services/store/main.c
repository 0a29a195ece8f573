/* shoal-store — the cluster's revisioned key-value store (DESIGN §3), single member for now.
 *
 * Flags (besides the common ones of lib/daemon.h):
 *   --data-dir D   RocksDB directory (default <state>/store)
 *   --history N    revisions of events kept for Watch (default 100000)
 * main only parses flags and wires server.c into the daemon skeleton. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include "daemon.h"
#include "kv.h"
#include "server.h"

enum { OPT_DATA_DIR = 256, OPT_HISTORY };

typedef struct flags {
    const char *data_dir;
    int64_t history;
} flags_t;

static int on_option(void *ctx, int opt, const char *arg) {
    flags_t *f = ctx;
    switch (opt) {
    case OPT_DATA_DIR:
        f->data_dir = arg;
        return 0;
    case OPT_HISTORY: {
        char *end;
        errno = 0;
        long long v = strtoll(arg, &end, 10);
        if (errno || *end || v <= 0) {
            fprintf(stderr,
                    "shoal-store: --history: must be a number of revisions > 0 (got \"%s\")\n",
                    arg);
            return -EINVAL;
        }
        f->history = v;
        return 0;
    }
    }
    return -EINVAL;
}

int main(int argc, char **argv) {
    static const struct option extra[] = {
        {"data-dir", required_argument, NULL, OPT_DATA_DIR},
        {"history", required_argument, NULL, OPT_HISTORY},
        {0},
    };
    flags_t flags = {.history = KV_DEFAULT_HISTORY};
    daemon_opts_t opts = {
        .extra = extra,
        .on_option = on_option,
        .ctx = &flags,
        .usage = "  --data-dir D   RocksDB directory (default <state>/store)\n"
                 "  --history N    revisions of events kept for Watch (default 100000)",
        .no_store = true,
    };
    daemon_t d;
    if (daemon_setup(&d, "store", argc, argv, &opts) < 0)
        return 1;
    char data_dir[PATH_MAX + 16];
    if (flags.data_dir)
        snprintf(data_dir, sizeof data_dir, "%s", flags.data_dir);
    else
        config_path(&d.cfg, data_dir, sizeof data_dir, "store");
    store_server_options_t so = {.data_dir = data_dir, .history = flags.history};
    char err[1024];
    store_server_t *server = store_server_new(d.bus, d.loop, &so, err, sizeof err);
    if (!server) {
        fprintf(stderr, "shoal-store: %s\n", err);
        return 1;
    }
    int rc = daemon_run(&d);
    store_server_destroy(&server);
    return rc;
}
