/* shoal — the user CLI: what its modules share.
 *
 * A command is a row of the verb table in main.c: a path ("service create"), a handler and a
 * cmd_spec_t that describes its flags and arguments. Handlers parse with cli_parse(), talk to the
 * orchestrator with cli_call(), print tables with table_t and return the exit code (0 or 1).
 *
 * Memory: everything a command allocates that lives until it returns (parsed flag lists, decoded
 * replies, messages it builds) comes from an arena_t and is released in one go; replies are
 * unpacked into an arena too, so a handler may freely mix server-decoded and self-built
 * sub-messages in the requests it sends back (read-modify-write of specs). */
#pragma once
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "arena.h"
#include "bus.h"
#include "config.h"
#include "objects.pb-c.h"
#include "orchestrator.pb-c.h"

/* ---- memory ------------------------------------------------------------------------------ */

/* Everything a command allocates comes from lib/arena.h (arena_alloc, ARENA_PUSH for protobuf
 * repeated fields, arena_allocator for unpacking replies). A new arena, or exit 1 after "shoal:
 * out of memory": a CLI has nothing better to do. */
arena_t *cli_arena_new(void);

/* A list of strings (pointers into argv or the arena). */
typedef struct strv {
    const char **v;
    size_t n;
} strv_t;
void strv_push(arena_t *arena, strv_t *list, const char *s);

/* ---- flags and arguments ----------------------------------------------------------------- */

enum flag_kind {
    FLAG_BOOL,     /* bool *                                        */
    FLAG_STRING,   /* const char *                                  */
    FLAG_LIST,     /* strv_t, repeatable                            */
    FLAG_UINT,     /* uint64_t, "3"                                 */
    FLAG_DURATION, /* int64_t milliseconds, "10s" "500ms" "1m30s" "5" */
    FLAG_BYTES,    /* int64_t bytes, "64M" "1G" "512k" "1024"       */
    FLAG_CPUS,     /* int64_t nano CPUs, "0.5" "2"                  */
    FLAG_CHOICE,   /* int index into `choices` ("a|b|c")            */
    FLAG_RATIO,    /* float between 0 and 1, "0.25"                 */
};

typedef struct cli_flag {
    const char *name; /* long name without dashes: "replicas" */
    char short_name;  /* 'd' or 0 */
    enum flag_kind kind;
    void *dest;          /* see enum flag_kind */
    bool *given;         /* optional: set when the flag appears */
    const char *choices; /* FLAG_CHOICE: "any|on-failure|none" */
    const char *metavar; /* shown in help: "K=V" */
    const char *help;
} cli_flag_t;

typedef struct cmd_spec {
    const char *path;            /* "service create" */
    const char *args;            /* "[OPTIONS] IMAGE [COMMAND] [ARG...]" */
    const char *summary;         /* one line */
    const cli_flag_t *flags;     /* terminated by a zero row; may be NULL */
    int min_args;                /* positional arguments */
    int max_args;                /* -1 = unlimited */
    bool flags_end_at_first_arg; /* "IMAGE CMD -x": everything after IMAGE is an argument */
} cmd_spec_t;

/* ---- the command context ----------------------------------------------------------------- */

typedef struct cli {
    const char *state_dir_flag; /* --state-dir, NULL when not given */
    const char *state_dir;      /* resolved by cli_load_config() */
    const char *command;        /* "service create", prefix of error lines */
    shoal_config_t cfg;
    bool cfg_loaded;
    zcert_t *identity;
    bus_client_t *orchestrator;
    char orchestrator_endpoint[PATH_MAX + 32];
    arena_t *arena; /* lives for the whole command */
    bool stdout_tty;
    bool stderr_tty;
} cli_t;

typedef int(cmd_fn)(cli_t *cli, int argc, char **argv);

/* Parses argv (the words after the command path) against spec. Returns 0 with the positional
 * arguments in *args, 1 when --help was printed (the handler returns 0), or -1 after printing an
 * error (the handler returns 1). --state-dir is accepted by every command. */
int cli_parse(cli_t *cli, const cmd_spec_t *spec, int argc, char **argv, strv_t *args);
void cli_print_help(const cmd_spec_t *spec, FILE *out);

/* Value parsers, 0 or -EINVAL. Exposed for the service spec builders. */
int parse_uint(const char *s, uint64_t *ret);
int parse_duration_ms(const char *s, int64_t *ret);
int parse_bytes(const char *s, int64_t *ret);
int parse_nano_cpus(const char *s, int64_t *ret);
/* A decimal between 0 and 1 ("0", "0.25", "1"). */
int parse_ratio(const char *s, float *ret);
/* Index of `word` in "a|b|c", or -1. */
int choice_index(const char *choices, const char *word);

/* ---- errors and the orchestrator --------------------------------------------------------- */

/* "shoal: <message>" on stderr. Returns 1 (the exit code) so handlers can `return cli_fail(..)`. */
int cli_fail(cli_t *cli, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* "shoal: <command>: <message>". */
int cli_fail_cmd(cli_t *cli, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Resolves the state dir and loads cluster.conf; prints the error itself. 0 or -1. */
int cli_load_config(cli_t *cli);
/* Connects (once) to shoal-orchestrator as "admin". 0 or -1 after printing why. */
int cli_connect(cli_t *cli);

/* Calls an orchestrator method; the reply is unpacked into `arena`. Returns 0, a positive bus
 * code (server message in *ret_message, arena-allocated) or a negative errno (no answer). Prints
 * nothing. */
int cli_call(cli_t *cli, arena_t *arena, const char *method, const ProtobufCMessage *input,
             const ProtobufCMessageDescriptor *output, int timeout_ms, void *ret_output,
             const char **ret_message);
/* The same, printing one line on failure: unreachable orchestrator, or "<command>: <message>".
 * Returns 0 or -1. */
int cli_call_or_fail(cli_t *cli, arena_t *arena, const char *method, const ProtobufCMessage *input,
                     const ProtobufCMessageDescriptor *output, void *ret_output);
/* The "cannot reach ..." line for a transport failure. Returns 1. */
int cli_fail_unreachable(cli_t *cli, const char *daemon, const char *endpoint);

#define CLI_CALL_TIMEOUT_MS 10000

/* ---- output helpers ---------------------------------------------------------------------- */

typedef struct table table_t;
/* Columns separated like docker's tabwriter (min width 10, padding 3). */
table_t *table_new(const char *const *headers, size_t ncols);
void table_destroy(table_t **self_p);
/* Appends a row of ncols strings (copied; NULL prints as ""). */
void table_add(table_t *self, const char *const *cells);
void table_print(const table_t *self, FILE *out);

/* The first 12 characters of an id unless no_trunc. */
const char *id_short(arena_t *arena, const char *id, bool no_trunc);
/* "Running", "Shutdown", ...: a task state as docker prints it. lower=true gives "running". */
const char *task_state_name(int state, bool lower);
/* "5 seconds", "About a minute", "Less than a second" (docker's units.HumanDuration). */
const char *human_duration(arena_t *arena, int64_t ms);
/* Prints a message as JSON (pbjson_dumps). 0 or -1. */
int print_json_message(cli_t *cli, const ProtobufCMessage *msg, FILE *out);
/* Prints messages as one JSON array. 0 or -1. */
int print_json_array(cli_t *cli, const ProtobufCMessage *const *msgs, size_t n, FILE *out);

/* ---- convergence wait (progress.c) ------------------------------------------------------- */

typedef struct wait_opts {
    int64_t timeout_ms; /* 0 = default 120 s */
    bool quiet;         /* no progress output, still waits */
    /* service update / rollback: follow the service's update status too. The status the write
     * returned (state, started_at_ms) tells a status left by an earlier update from this one's. */
    bool track_update;
    bool manual_rollback; /* `service rollback`: rolling back is the goal, not a failure */
    int status_state;
    int64_t status_started_ms;
} wait_opts_t;

/* Waits until the service with `service_id` (display name `name`) runs its current spec on every
 * wanted task — a job: until it has completed — showing progress on stderr. With track_update it
 * also waits for the update to be COMPLETED (or ROLLBACK_COMPLETED), and fails on PAUSED, on
 * ROLLBACK_PAUSED, and when an update was rolled back. 0 when converged, 1 after printing why
 * not. */
int service_wait_converged(cli_t *cli, const char *service_id, const char *name,
                           const wait_opts_t *opts);
/* Waits until no task of the service is left. 0, or 1 after printing why not. */
int service_wait_removed(cli_t *cli, const char *service_id, const char *name, int64_t timeout_ms);

/* ---- command handlers -------------------------------------------------------------------- */

cmd_fn cmd_init, cmd_cluster_up, cmd_cluster_down, cmd_cluster_status;
cmd_fn cmd_service_create, cmd_service_ls, cmd_service_ps, cmd_service_inspect;
cmd_fn cmd_service_scale, cmd_service_update, cmd_service_rm, cmd_service_rollback;
cmd_fn cmd_node_ls, cmd_node_inspect, cmd_node_update, cmd_node_rm;
