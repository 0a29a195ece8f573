/* node — `shoal node ls|inspect|update|rm`.
 *
 * Nodes are registered by their agents through the dispatcher; the CLI only reads them and edits
 * their spec (availability, role, labels) with the same read-modify-write as services:
 * NodeInspect, edit, NodeUpdate with the meta.version read, again on FAILED_PRECONDITION. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "shoal.h"

#define UPDATE_ATTEMPTS 8

static const char *node_hostname(const Shoal__Node *n) {
    return n->description && n->description->hostname ? n->description->hostname : "";
}

static const char *enum_text(const ProtobufCEnumDescriptor *desc, int value, arena_t *a,
                             bool capital) {
    const ProtobufCEnumValue *v = protobuf_c_enum_descriptor_get_value(desc, value);
    if (!v)
        return "Unknown";
    /* "READY" -> "Ready" (docker's style) or "ready". */
    char *s = arena_strdup(a, v->name);
    for (char *p = s; *p; p++)
        *p = (char)((p == s && capital) ? *p : (*p >= 'A' && *p <= 'Z' ? *p - 'A' + 'a' : *p));
    return s;
}

static int node_lookup(cli_t *cli, arena_t *a, const char *ref, Shoal__Node **ret) {
    Shoal__Orchestrator__NodeInspectRequest req = SHOAL__ORCHESTRATOR__NODE_INSPECT_REQUEST__INIT;
    req.node = (char *)ref;
    Shoal__Orchestrator__NodeInspectResponse *resp;
    const char *message = NULL;
    int r = cli_call(cli, a, "orchestrator.NodeInspect", &req.base,
                     &shoal__orchestrator__node_inspect_response__descriptor, CLI_CALL_TIMEOUT_MS,
                     &resp, &message);
    if (r == BUS_NOT_FOUND) {
        cli_fail(cli, "node \"%s\" not found", ref);
        return -1;
    }
    if (r < 0 && r != -EPROTO) {
        cli_fail_unreachable(cli, "orchestrator", cli->orchestrator_endpoint);
        return -1;
    }
    if (r != 0) {
        cli_fail(cli, "node \"%s\": %s", ref, message);
        return -1;
    }
    if (!resp->node || !resp->node->meta) {
        cli_fail(cli, "node \"%s\": the orchestrator sent an empty node", ref);
        return -1;
    }
    *ret = resp->node;
    return 0;
}

static int node_by_hostname(const void *x, const void *y) {
    const Shoal__Node *a = *(const Shoal__Node *const *)x, *b = *(const Shoal__Node *const *)y;
    int c = strcmp(node_hostname(a), node_hostname(b));
    return c ? c : strcmp(a->meta->id, b->meta->id);
}

int cmd_node_ls(cli_t *cli, int argc, char **argv) {
    bool json = false, quiet = false, no_trunc = false;
    const cli_flag_t flags[] = {
        {"json", 0, FLAG_BOOL, &json, NULL, NULL, NULL, "Print JSON"},
        {"quiet", 'q', FLAG_BOOL, &quiet, NULL, NULL, NULL, "Only print ids"},
        {"no-trunc", 0, FLAG_BOOL, &no_trunc, NULL, NULL, NULL, "Do not truncate ids"},
        {0},
    };
    const cmd_spec_t spec = {.path = "node ls",
                             .args = "[OPTIONS]",
                             .summary = "List the nodes of the cluster.",
                             .flags = flags,
                             .max_args = 0};
    strv_t args;
    int r = cli_parse(cli, &spec, argc, argv, &args);
    if (r)
        return r < 0;
    if (cli_connect(cli) < 0)
        return 1;
    arena_t *a = cli->arena;
    Shoal__Orchestrator__NodeListRequest req = SHOAL__ORCHESTRATOR__NODE_LIST_REQUEST__INIT;
    Shoal__Orchestrator__NodeListResponse *resp;
    if (cli_call_or_fail(cli, a, "orchestrator.NodeList", &req.base,
                         &shoal__orchestrator__node_list_response__descriptor, &resp) < 0)
        return 1;
    size_t n = 0;
    Shoal__Node **nodes = arena_alloc(a, (resp->n_nodes + 1) * sizeof *nodes);
    for (size_t i = 0; i < resp->n_nodes; i++)
        if (resp->nodes[i]->meta)
            nodes[n++] = resp->nodes[i];
    qsort(nodes, n, sizeof *nodes, node_by_hostname);
    if (json)
        return print_json_array(cli, (const ProtobufCMessage *const *)nodes, n, stdout) < 0;
    if (quiet) {
        for (size_t i = 0; i < n; i++)
            printf("%s\n", nodes[i]->meta->id);
        return 0;
    }
    static const char *const headers[] = {"ID",           "HOSTNAME", "STATUS",
                                          "AVAILABILITY", "ROLE",     "ENGINE VERSION"};
    table_t *t = table_new(headers, 6);
    for (size_t i = 0; i < n; i++) {
        const Shoal__Node *node = nodes[i];
        const char *row[] = {
            id_short(a, node->meta->id, no_trunc),
            node_hostname(node),
            enum_text(&shoal__node_status__state__descriptor,
                      node->status ? (int)node->status->state : 0, a, true),
            enum_text(&shoal__node_spec__availability__descriptor,
                      node->spec ? (int)node->spec->availability : 0, a, true),
            enum_text(&shoal__node_spec__role__descriptor, node->role, a, false),
            node->description && node->description->engine &&
                    node->description->engine->engine_version
                ? node->description->engine->engine_version
                : "",
        };
        table_add(t, row);
    }
    table_print(t, stdout);
    table_destroy(&t);
    return 0;
}

int cmd_node_inspect(cli_t *cli, int argc, char **argv) {
    const cmd_spec_t spec = {.path = "node inspect",
                             .args = "[OPTIONS] NODE [NODE...]",
                             .summary = "Display detailed information on nodes (a JSON array of "
                                        "shoal.Node).",
                             .min_args = 1,
                             .max_args = -1};
    strv_t args;
    int r = cli_parse(cli, &spec, argc, argv, &args);
    if (r)
        return r < 0;
    if (cli_connect(cli) < 0)
        return 1;
    Shoal__Node **found = NULL;
    size_t n = 0;
    int code = 0;
    for (size_t i = 0; i < args.n; i++) {
        Shoal__Node *node;
        if (node_lookup(cli, cli->arena, args.v[i], &node) < 0) {
            code = 1;
            continue;
        }
        ARENA_PUSH(cli->arena, &found, &n, node);
    }
    if (n == 0 && code)
        return code;
    if (print_json_array(cli, (const ProtobufCMessage *const *)found, n, stdout) < 0)
        return 1;
    return code;
}

static void node_labels_remove(Shoal__Annotations *ann, const char *key) {
    size_t klen = strcspn(key, "="), out = 0;
    for (size_t i = 0; i < ann->n_labels; i++)
        if (!(strlen(ann->labels[i]->key) == klen && !strncmp(ann->labels[i]->key, key, klen)))
            ann->labels[out++] = ann->labels[i];
    ann->n_labels = out;
}

int cmd_node_update(cli_t *cli, int argc, char **argv) {
    int availability = 0, role = 0;
    bool availability_given = false, role_given = false;
    strv_t label_add = {0}, label_rm = {0};
    const cli_flag_t flags[] = {
        {"availability", 0, FLAG_CHOICE, &availability, &availability_given, "active|pause|drain",
         NULL, "Availability of the node"},
        {"role", 0, FLAG_CHOICE, &role, &role_given, "worker|manager", NULL, "Role of the node"},
        {"label-add", 0, FLAG_LIST, &label_add, NULL, NULL, "K=V", "Add or set a node label"},
        {"label-rm", 0, FLAG_LIST, &label_rm, NULL, NULL, "K", "Remove a node label"},
        {0},
    };
    const cmd_spec_t spec = {.path = "node update",
                             .args = "[OPTIONS] NODE",
                             .summary = "Update a node's availability, role or labels.",
                             .flags = flags,
                             .min_args = 1,
                             .max_args = 1};
    strv_t args;
    int r = cli_parse(cli, &spec, argc, argv, &args);
    if (r)
        return r < 0;
    for (size_t i = 0; i < label_add.n; i++)
        if (label_add.v[i][0] == '=' || !label_add.v[i][0])
            return cli_fail_cmd(cli, "--label-add: must be KEY=VALUE (got \"%s\")", label_add.v[i]);
    if (cli_connect(cli) < 0)
        return 1;
    arena_t *a = cli->arena;
    for (int attempt = 0; attempt < UPDATE_ATTEMPTS; attempt++) {
        Shoal__Node *node;
        if (node_lookup(cli, a, args.v[0], &node) < 0)
            return 1;
        if (!node->spec) {
            node->spec = arena_alloc(a, sizeof *node->spec);
            shoal__node_spec__init(node->spec);
        }
        Shoal__NodeSpec *s = node->spec;
        if (!s->annotations) {
            s->annotations = arena_alloc(a, sizeof *s->annotations);
            shoal__annotations__init(s->annotations);
        }
        if (availability_given)
            s->availability = (Shoal__NodeSpec__Availability)availability;
        if (role_given)
            s->desired_role = (Shoal__NodeSpec__Role)role;
        for (size_t i = 0; i < label_rm.n; i++)
            node_labels_remove(s->annotations, label_rm.v[i]);
        for (size_t i = 0; i < label_add.n; i++) {
            node_labels_remove(s->annotations, label_add.v[i]);
            Shoal__Label *l = arena_alloc(a, sizeof *l);
            shoal__label__init(l);
            size_t klen = strcspn(label_add.v[i], "=");
            l->key = arena_printf(a, "%.*s", (int)klen, label_add.v[i]);
            l->value = arena_strdup(a, label_add.v[i][klen] ? label_add.v[i] + klen + 1 : "");
            ARENA_PUSH(a, &s->annotations->labels, &s->annotations->n_labels, l);
        }
        Shoal__Orchestrator__NodeUpdateRequest req = SHOAL__ORCHESTRATOR__NODE_UPDATE_REQUEST__INIT;
        req.node = node->meta->id;
        req.version = node->meta->version;
        req.spec = s;
        Shoal__Orchestrator__NodeUpdateResponse *resp;
        const char *message = NULL;
        r = cli_call(cli, a, "orchestrator.NodeUpdate", &req.base,
                     &shoal__orchestrator__node_update_response__descriptor, CLI_CALL_TIMEOUT_MS,
                     &resp, &message);
        if (r == BUS_FAILED_PRECONDITION)
            continue;
        if (r < 0 && r != -EPROTO)
            return cli_fail_unreachable(cli, "orchestrator", cli->orchestrator_endpoint);
        if (r != 0)
            return cli_fail(cli, "node \"%s\": %s", args.v[0], message);
        printf("%s\n", args.v[0]);
        return 0;
    }
    return cli_fail(cli, "node \"%s\": changed by someone else %d times in a row; try again",
                    args.v[0], UPDATE_ATTEMPTS);
}

int cmd_node_rm(cli_t *cli, int argc, char **argv) {
    bool force = false;
    const cli_flag_t flags[] = {
        {"force", 'f', FLAG_BOOL, &force, NULL, NULL, NULL,
         "Remove the node even if it is not down"},
        {0},
    };
    const cmd_spec_t spec = {.path = "node rm",
                             .args = "[OPTIONS] NODE [NODE...]",
                             .summary = "Remove one or more nodes from the cluster.",
                             .flags = flags,
                             .min_args = 1,
                             .max_args = -1};
    strv_t args;
    int r = cli_parse(cli, &spec, argc, argv, &args);
    if (r)
        return r < 0;
    if (cli_connect(cli) < 0)
        return 1;
    int code = 0;
    for (size_t i = 0; i < args.n; i++) {
        Shoal__Orchestrator__NodeRemoveRequest req = SHOAL__ORCHESTRATOR__NODE_REMOVE_REQUEST__INIT;
        req.node = (char *)args.v[i];
        req.force = force;
        Shoal__Orchestrator__NodeRemoveResponse *resp;
        const char *message = NULL;
        r = cli_call(cli, cli->arena, "orchestrator.NodeRemove", &req.base,
                     &shoal__orchestrator__node_remove_response__descriptor, CLI_CALL_TIMEOUT_MS,
                     &resp, &message);
        if (r == BUS_NOT_FOUND) {
            cli_fail(cli, "node \"%s\" not found", args.v[i]);
            code = 1;
        } else if (r < 0 && r != -EPROTO) {
            return cli_fail_unreachable(cli, "orchestrator", cli->orchestrator_endpoint);
        } else if (r != 0) {
            cli_fail(cli, "node \"%s\": %s", args.v[i], message);
            code = 1;
        } else {
            printf("%s\n", args.v[i]);
        }
    }
    return code;
}
