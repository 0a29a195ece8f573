/* client — the CLI's context: state dir, cluster config, the admin identity and the bus client to
 * shoal-orchestrator, plus the one place where failures become the user's error line.
 *
 * Every error a command reports goes through cli_fail()/cli_fail_cmd(): one line on stderr,
 * prefixed "shoal: ", exit code 1. Transport failures (no socket, no answer) always read
 * "cannot reach shoal-orchestrator at <endpoint> (is the cluster up? try: shoal cluster up)" so
 * a user knows what to do whatever command they ran.
 *
 * The orchestrator is reached at its ipc endpoint under the state dir, pinned to the public key
 * `shoal init` wrote; requests are retried by id by lib/bus, so a slow orchestrator never applies a
 * write twice. Replies are unpacked into the caller's arena (see shoal.h). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "pbjson.h"
#include "shoal.h"

static int vfail(const char *prefix, const char *fmt, va_list ap) {
    fflush(stdout);
    fprintf(stderr, "shoal: %s%s", prefix ? prefix : "", prefix ? ": " : "");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    return 1;
}

int cli_fail(cli_t *cli, const char *fmt, ...) {
    (void)cli;
    va_list ap;
    va_start(ap, fmt);
    vfail(NULL, fmt, ap);
    va_end(ap);
    return 1;
}

int cli_fail_cmd(cli_t *cli, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vfail(cli->command, fmt, ap);
    va_end(ap);
    return 1;
}

arena_t *cli_arena_new(void) {
    arena_t *a = arena_new(0);
    if (!a) {
        fputs("shoal: out of memory\n", stderr);
        exit(1);
    }
    return a;
}

int cli_load_config(cli_t *cli) {
    if (cli->cfg_loaded)
        return 0;
    /* Absolute, so that endpoints and the daemons' command lines do not depend on the cwd. */
    cli->state_dir = config_state_dir(cli->state_dir_flag);
    char *abs = realpath(cli->state_dir, NULL);
    if (abs) {
        cli->state_dir = arena_strdup(cli->arena, abs);
        free(abs);
    }
    int r = config_load(cli->state_dir, &cli->cfg);
    if (r == -ENOENT) {
        cli_fail(cli, "no cluster in %s (create one: shoal cluster up%s%s)", cli->state_dir,
                 cli->state_dir_flag ? " --state-dir " : "",
                 cli->state_dir_flag ? cli->state_dir_flag : "");
        return -1;
    }
    if (r < 0) {
        cli_fail(cli, "cannot read %s/cluster.conf: %s", cli->state_dir, strerror(-r));
        return -1;
    }
    cli->cfg_loaded = true;
    return 0;
}

int cli_fail_unreachable(cli_t *cli, const char *daemon, const char *endpoint) {
    return cli_fail(cli, "cannot reach shoal-%s at %s (is the cluster up? try: shoal cluster up)",
                    daemon, endpoint);
}

/* An ipc endpoint whose socket file is missing has no server: say so at once instead of
 * waiting for a timeout. */
static bool endpoint_may_answer(const char *endpoint) {
    struct stat st;
    if (strncmp(endpoint, "ipc://", 6) != 0)
        return true;
    return stat(endpoint + 6, &st) == 0;
}

int cli_connect(cli_t *cli) {
    if (cli->orchestrator)
        return 0;
    if (cli_load_config(cli) < 0)
        return -1;
    config_rpc_endpoint(&cli->cfg, "orchestrator", cli->orchestrator_endpoint,
                        sizeof cli->orchestrator_endpoint);
    if (!cli->identity) {
        cli->identity = bus_identity_load(cli->state_dir, "admin");
        if (!cli->identity) {
            cli_fail(cli, "cannot read the admin key %s/keys/private/admin.key_secret: %s",
                     cli->state_dir, strerror(errno ? errno : ENOENT));
            return -1;
        }
    }
    char key[41];
    int r = bus_public_key(cli->state_dir, "orchestrator", key);
    if (r < 0) {
        cli_fail(cli, "cannot read the orchestrator key %s/keys/public/orchestrator.key: %s",
                 cli->state_dir, strerror(-r));
        return -1;
    }
    if (!endpoint_may_answer(cli->orchestrator_endpoint)) {
        cli_fail_unreachable(cli, "orchestrator", cli->orchestrator_endpoint);
        return -1;
    }
    cli->orchestrator = bus_client_new(cli->identity, cli->orchestrator_endpoint, key);
    if (!cli->orchestrator) {
        cli_fail_unreachable(cli, "orchestrator", cli->orchestrator_endpoint);
        return -1;
    }
    return 0;
}

int cli_call(cli_t *cli, arena_t *arena, const char *method, const ProtobufCMessage *input,
             const ProtobufCMessageDescriptor *output, int timeout_ms, void *ret_output,
             const char **ret_message) {
    size_t in_len = protobuf_c_message_get_packed_size(input);
    uint8_t *in = arena_alloc(arena, in_len ? in_len : 1);
    protobuf_c_message_pack(input, in);
    uint8_t *out = NULL;
    size_t out_len = 0;
    int r = bus_client_call_raw(cli->orchestrator, method, in, in_len, timeout_ms, &out, &out_len);
    if (r != BUS_OK) {
        if (ret_message) {
            const char *m = r > 0 ? bus_client_error(cli->orchestrator) : NULL;
            *ret_message =
                arena_strdup(arena, m && *m ? m : bus_code_name(r > 0 ? r : BUS_INTERNAL));
        }
        free(out);
        return r;
    }
    ProtobufCMessage *msg = protobuf_c_message_unpack(output, arena_allocator(arena), out_len, out);
    free(out);
    if (!msg) {
        if (ret_message)
            *ret_message = arena_printf(arena, "cannot decode the reply to %s", method);
        return -EPROTO;
    }
    *(ProtobufCMessage **)ret_output = msg;
    return 0;
}

int cli_call_or_fail(cli_t *cli, arena_t *arena, const char *method, const ProtobufCMessage *input,
                     const ProtobufCMessageDescriptor *output, void *ret_output) {
    const char *message = NULL;
    int r = cli_call(cli, arena, method, input, output, CLI_CALL_TIMEOUT_MS, ret_output, &message);
    if (r == 0)
        return 0;
    if (r < 0 && r != -EPROTO && r != -ENOMEM)
        cli_fail_unreachable(cli, "orchestrator", cli->orchestrator_endpoint);
    else if (r < 0)
        cli_fail_cmd(cli, "%s: %s", method, message ? message : strerror(-r));
    else
        cli_fail_cmd(cli, "%s", message);
    return -1;
}

/* ---- output helpers shared by the commands ---------------------------------------------- */

int print_json_message(cli_t *cli, const ProtobufCMessage *msg, FILE *out) {
    char *text = pbjson_dumps(msg, 0);
    if (!text) {
        cli_fail_cmd(cli, "cannot encode %s as JSON", msg->descriptor->name);
        return -1;
    }
    fprintf(out, "%s\n", text);
    free(text);
    return 0;
}

int print_json_array(cli_t *cli, const ProtobufCMessage *const *msgs, size_t n, FILE *out) {
    json_t *array = json_array();
    if (!array)
        return cli_fail_cmd(cli, "out of memory"), -1;
    for (size_t i = 0; i < n; i++) {
        json_t *item = pbjson_encode(msgs[i], 0);
        if (!item) {
            json_decref(array);
            cli_fail_cmd(cli, "cannot encode %s as JSON", msgs[i]->descriptor->name);
            return -1;
        }
        json_array_append_new(array, item);
    }
    char *text = json_dumps(array, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(array);
    if (!text)
        return cli_fail_cmd(cli, "out of memory"), -1;
    fprintf(out, "%s\n", text);
    free(text);
    return 0;
}
