/* shoal — the user CLI: Docker-like verbs over the cluster's bus.
 *
 *   shoal [--state-dir DIR] COMMAND [SUBCOMMAND] [OPTIONS] [ARGS]
 *
 * main() only resolves the global flags and finds the command in the verb table below; each
 * handler (cluster.c, service.c, node.c) parses its own flags with the shared table-driven parser
 * (args.c) and returns the exit code: 0 on success, 1 after one "shoal: ..." line on stderr.
 *
 * The CLI holds no state of its own: the cluster lives in the state dir (keys, endpoints, pid
 * files) and in the orchestrator, so any number of shoal processes may run at once. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "shoal.h"

typedef struct verb {
    const char *group; /* "service", or NULL for a top-level verb */
    const char *name;
    const char *alias; /* "list" for "ls", or NULL */
    cmd_fn *fn;
    const char *summary;
} verb_t;

static cmd_fn cmd_version;

static const verb_t verbs[] = {
    {NULL, "init", NULL, cmd_init, "Create a cluster's state dir and keys"},
    {NULL, "version", NULL, cmd_version, "Show the shoal version"},
    {"cluster", "up", NULL, cmd_cluster_up, "Start every daemon of this node"},
    {"cluster", "down", NULL, cmd_cluster_down, "Stop every daemon (containers keep running)"},
    {"cluster", "status", NULL, cmd_cluster_status, "Show each daemon's process and health"},
    {"service", "create", NULL, cmd_service_create, "Create a new service"},
    {"service", "inspect", NULL, cmd_service_inspect, "Display detailed information on services"},
    {"service", "ls", "list", cmd_service_ls, "List services"},
    {"service", "ps", NULL, cmd_service_ps, "List the tasks of services"},
    {"service", "rm", "remove", cmd_service_rm, "Remove services"},
    {"service", "rollback", NULL, cmd_service_rollback, "Revert a service to its previous spec"},
    {"service", "scale", NULL, cmd_service_scale, "Scale replicated services"},
    {"service", "update", NULL, cmd_service_update, "Update a service"},
    {"node", "inspect", NULL, cmd_node_inspect, "Display detailed information on nodes"},
    {"node", "ls", "list", cmd_node_ls, "List nodes"},
    {"node", "rm", "remove", cmd_node_rm, "Remove nodes from the cluster"},
    {"node", "update", NULL, cmd_node_update, "Update a node"},
};
#define NVERBS (sizeof verbs / sizeof verbs[0])

static const struct {
    const char *name;
    const char *summary;
} groups[] = {
    {"cluster", "Manage this node's daemons"},
    {"service", "Manage services"},
    {"node", "Manage nodes"},
};

static void usage(FILE *out) {
    fprintf(out,
            "Usage:  shoal [--state-dir DIR] COMMAND\n\n"
            "A container orchestrator modelled on Docker Swarm mode.\n\n"
            "Global options:\n"
            "      --state-dir DIR   State directory (default $SHOAL_STATE_DIR or %s)\n"
            "  -h, --help            Print this help\n"
            "  -v, --version         Print the version\n\n"
            "Commands:\n",
            SHOAL_DEFAULT_STATE_DIR);
    for (size_t i = 0; i < NVERBS; i++)
        if (!verbs[i].group)
            fprintf(out, "  %-10s %s\n", verbs[i].name, verbs[i].summary);
    fprintf(out, "\nManagement commands:\n");
    for (size_t i = 0; i < sizeof groups / sizeof groups[0]; i++)
        fprintf(out, "  %-10s %s\n", groups[i].name, groups[i].summary);
    fprintf(out, "\nRun 'shoal COMMAND --help' for more information on a command.\n");
}

static void usage_group(const char *group, FILE *out) {
    fprintf(out, "Usage:  shoal %s COMMAND\n\n", group);
    for (size_t i = 0; i < sizeof groups / sizeof groups[0]; i++)
        if (!strcmp(groups[i].name, group))
            fprintf(out, "%s\n\n", groups[i].summary);
    fprintf(out, "Commands:\n");
    for (size_t i = 0; i < NVERBS; i++)
        if (verbs[i].group && !strcmp(verbs[i].group, group))
            fprintf(out, "  %-10s %s\n", verbs[i].name, verbs[i].summary);
    fprintf(out, "\nRun 'shoal %s COMMAND --help' for more information on a command.\n", group);
}

static bool is_group(const char *word) {
    for (size_t i = 0; i < sizeof groups / sizeof groups[0]; i++)
        if (!strcmp(groups[i].name, word))
            return true;
    return false;
}

static const verb_t *verb_find(const char *group, const char *name) {
    for (size_t i = 0; i < NVERBS; i++) {
        const verb_t *v = &verbs[i];
        if ((group == NULL) != (v->group == NULL))
            continue;
        if (group && strcmp(group, v->group))
            continue;
        if (!strcmp(v->name, name) || (v->alias && !strcmp(v->alias, name)))
            return v;
    }
    return NULL;
}

static int cmd_version(cli_t *cli, int argc, char **argv) {
    static const cmd_spec_t spec = {
        .path = "version", .args = "", .summary = "Show the shoal version.", .max_args = 0};
    strv_t args;
    int r = cli_parse(cli, &spec, argc, argv, &args);
    if (r)
        return r < 0;
    printf("shoal version %s\n", SHOAL_VERSION);
    return 0;
}

static int run(cli_t *cli, int argc, char **argv) {
    int i = 1;
    /* Global flags come before the command. */
    for (; i < argc && argv[i][0] == '-'; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        }
        if (!strcmp(a, "-v") || !strcmp(a, "--version")) {
            printf("shoal version %s\n", SHOAL_VERSION);
            return 0;
        }
        if (!strcmp(a, "--state-dir") || !strncmp(a, "--state-dir=", 12)) {
            const char *value = a[11] == '=' ? a + 12 : (i + 1 < argc ? argv[++i] : NULL);
            if (!value || !*value)
                return cli_fail(cli, "--state-dir: needs a directory");
            cli->state_dir_flag = value;
            continue;
        }
        cli_fail(cli, "unknown flag: %s", a);
        usage(stderr);
        return 1;
    }
    if (i >= argc) {
        usage(stderr);
        return 1;
    }
    const char *word = argv[i++];
    const verb_t *v;
    if (is_group(word)) {
        if (i >= argc || !strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage_group(word, i >= argc ? stderr : stdout);
            return i >= argc;
        }
        v = verb_find(word, argv[i]);
        if (!v) {
            cli_fail(cli, "unknown command \"%s %s\"", word, argv[i]);
            usage_group(word, stderr);
            return 1;
        }
        i++;
    } else {
        v = verb_find(NULL, word);
        if (!v) {
            cli_fail(cli, "unknown command \"%s\"", word);
            usage(stderr);
            return 1;
        }
    }
    return v->fn(cli, argc - i, argv + i);
}

int main(int argc, char **argv) {
    /* CZMQ would otherwise swallow SIGINT; Ctrl-C must stop a waiting CLI. */
    zsys_handler_set(NULL);
    cli_t cli = {
        .arena = cli_arena_new(),
        .stdout_tty = isatty(STDOUT_FILENO),
        .stderr_tty = isatty(STDERR_FILENO),
    };
    int code = run(&cli, argc, argv);
    fflush(stdout);
    bus_client_destroy(&cli.orchestrator);
    zcert_destroy(&cli.identity);
    arena_destroy(&cli.arena);
    return code;
}
