/* shoalctl — busctl for shoal: look at the daemons on the bus and talk to them directly.
 *
 *   shoalctl [options] list                      daemons in the registry
 *   shoalctl [options] status DAEMON             bus.Ping + bus.Health + bus.Stats
 *   shoalctl [options] introspect DAEMON         bus.Describe: methods and their types
 *   shoalctl [options] call DAEMON METHOD [JSON] any method, input and output as JSON
 *   shoalctl [options] monitor [DAEMON...]       events published by daemons, live
 *
 * This file parses flags and dispatches; the verbs live in commands.c and monitor.c, the
 * shared plumbing in ctl.c. Options may come before or after the verb (GNU getopt permutes);
 * "--" ends them. Exit codes: 0 ok, 1 failure (one line on stderr), 2 usage. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"
#include "log.h"

static void usage(FILE *out) {
    fprintf(out,
            "usage: shoalctl [options] COMMAND [ARGS]\n"
            "\n"
            "commands:\n"
            "  list                        daemons in the registry\n"
            "  status DAEMON               ping, health and counters of a daemon\n"
            "  introspect DAEMON           methods of a daemon with their message types\n"
            "  call DAEMON METHOD [JSON]   call a method; JSON input (default {}, - = stdin),\n"
            "                              prints the reply as JSON\n"
            "  monitor [DAEMON...]         print events as they happen (default: all daemons)\n"
            "\n"
            "DAEMON is a kind (\"store\") or kind/instance (\"store/host-1\").\n"
            "\n"
            "options:\n"
            "  --state-dir D     cluster state dir (default $SHOAL_STATE_DIR or %s)\n"
            "  --key NAME        call as identity NAME from <state>/keys/private (default admin)\n"
            "  --json            JSON output instead of tables\n"
            "  --all-fields      include default-valued fields in JSON output\n"
            "  --timeout T       calls: milliseconds to wait (default %d);\n"
            "                    monitor: stop after T seconds\n"
            "  --count N         monitor: stop after N events\n"
            "  -h, --help        this help\n",
            SHOAL_DEFAULT_STATE_DIR, CTL_DEFAULT_TIMEOUT_MS);
}

typedef struct verb {
    const char *name;
    int (*fn)(ctl_t *ctl, int argc, char **argv);
    int min_args, max_args; /* max -1 = any */
    const char *args;
} verb_t;

static const verb_t verbs[] = {
    {"list", cmd_list, 0, 0, ""},
    {"status", cmd_status, 1, 1, " DAEMON"},
    {"introspect", cmd_introspect, 1, 1, " DAEMON"},
    {"call", cmd_call, 2, 3, " DAEMON METHOD [JSON]"},
    {"monitor", cmd_monitor, 0, -1, " [DAEMON...]"},
};

enum { OPT_STATE_DIR = 256, OPT_KEY, OPT_JSON, OPT_TIMEOUT, OPT_COUNT, OPT_ALL_FIELDS };

static const struct option options[] = {
    {"state-dir", required_argument, NULL, OPT_STATE_DIR},
    {"key", required_argument, NULL, OPT_KEY},
    {"json", no_argument, NULL, OPT_JSON},
    {"all-fields", no_argument, NULL, OPT_ALL_FIELDS},
    {"timeout", required_argument, NULL, OPT_TIMEOUT},
    {"count", required_argument, NULL, OPT_COUNT},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

static int parse_long(const char *s, long min, long *ret) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (!*s || *end || errno || v < min)
        return -EINVAL;
    *ret = v;
    return 0;
}

int main(int argc, char **argv) {
    ctl_t ctl = {.key_name = "admin", .timeout_ms = CTL_DEFAULT_TIMEOUT_MS};
    const char *state_dir = NULL;
    long v;
    int opt;
    while ((opt = getopt_long(argc, argv, "h", options, NULL)) != -1) {
        switch (opt) {
        case OPT_STATE_DIR:
            state_dir = optarg;
            break;
        case OPT_KEY:
            ctl.key_name = optarg;
            break;
        case OPT_JSON:
            ctl.json = true;
            break;
        case OPT_ALL_FIELDS:
            ctl.emit_defaults = true;
            break;
        case OPT_TIMEOUT:
            ctl.timeout_arg = optarg;
            break;
        case OPT_COUNT:
            if (parse_long(optarg, 1, &ctl.count) < 0) {
                fprintf(stderr, "shoalctl: --count takes a number >= 1 (got \"%s\")\n", optarg);
                return 2;
            }
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind >= argc) {
        usage(stderr);
        return 2;
    }
    const char *name = argv[optind];
    const verb_t *verb = NULL;
    for (size_t i = 0; i < sizeof verbs / sizeof verbs[0]; i++)
        if (!strcmp(verbs[i].name, name))
            verb = &verbs[i];
    if (!verb) {
        fprintf(stderr, "shoalctl: unknown command \"%s\" (see shoalctl --help)\n", name);
        return 2;
    }
    int nargs = argc - optind - 1;
    if (nargs < verb->min_args || (verb->max_args >= 0 && nargs > verb->max_args)) {
        fprintf(stderr, "usage: shoalctl [options] %s%s\n", verb->name, verb->args);
        return 2;
    }
    if (ctl.timeout_arg && strcmp(verb->name, "monitor") != 0) {
        if (parse_long(ctl.timeout_arg, 1, &v) < 0 || v > 24L * 3600 * 1000) {
            fprintf(stderr, "shoalctl: --timeout takes milliseconds > 0 (got \"%s\")\n",
                    ctl.timeout_arg);
            return 2;
        }
        ctl.timeout_ms = (int)v;
    }

    /* lib/ logs at debug level only; keep a tool's stderr for its own error lines. */
    log_init("shoalctl", LOG_LEVEL_WARN);
    zsys_init();
    zsys_set_logstream(NULL);
    ctl.state_dir = config_state_dir(state_dir);
    int rc = ctl_open(&ctl);
    if (rc == 0)
        rc = verb->fn(&ctl, nargs, argv + optind + 1);
    ctl_close(&ctl);
    return rc;
}
