/* service — `shoal service create|ls|ps|inspect|scale|update|rollback|rm`.
 *
 * Every change is a read-modify-write: the spec is read with ServiceInspect, edited with the
 * same spec_apply() that builds new specs, and written with ServiceUpdate carrying the
 * meta.version that was read, so a concurrent change is never overwritten: on
 * FAILED_PRECONDITION the command reads again and re-applies its flags (a few times).
 *
 * Commands that change what runs (create, scale, update, rollback) then wait, like
 * `docker service create`, until the new spec has converged (progress.c), unless --detach.
 * Output for scripts: the service id (create) or name (others) on stdout, progress on stderr,
 * `--json` / `-q` on the listings. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "service.h"

#define UPDATE_ATTEMPTS 8

const char *service_display_name(const Shoal__Service *s) {
    if (s->spec && s->spec->annotations && s->spec->annotations->name &&
        *s->spec->annotations->name)
        return s->spec->annotations->name;
    return s->meta && s->meta->id ? s->meta->id : "";
}

const char *task_display_name(arena_t *arena, const Shoal__Task *t) {
    const char *svc = t->service_name && *t->service_name ? t->service_name : t->service_id;
    if (t->slot > 0)
        return arena_printf(arena, "%s.%llu", svc, (unsigned long long)t->slot);
    return arena_printf(arena, "%s.%s", svc, t->node_id && *t->node_id ? t->node_id : "?");
}

int service_lookup(cli_t *cli, arena_t *arena, const char *ref, Shoal__Service **ret) {
    Shoal__Orchestrator__ServiceInspectRequest req =
        SHOAL__ORCHESTRATOR__SERVICE_INSPECT_REQUEST__INIT;
    req.service = (char *)ref;
    Shoal__Orchestrator__ServiceInspectResponse *resp = NULL;
    const char *message = NULL;
    int r = cli_call(cli, arena, "orchestrator.ServiceInspect", &req.base,
                     &shoal__orchestrator__service_inspect_response__descriptor,
                     CLI_CALL_TIMEOUT_MS, &resp, &message);
    if (r == BUS_NOT_FOUND) {
        cli_fail(cli, "service \"%s\" not found", ref);
        return -1;
    }
    if (r < 0 && r != -EPROTO) {
        cli_fail_unreachable(cli, "orchestrator", cli->orchestrator_endpoint);
        return -1;
    }
    if (r != 0) {
        cli_fail(cli, "service \"%s\": %s", ref, message);
        return -1;
    }
    if (!resp->service || !resp->service->spec || !resp->service->meta) {
        cli_fail(cli, "service \"%s\": the orchestrator sent an empty service", ref);
        return -1;
    }
    *ret = resp->service;
    return 0;
}

/* ServiceUpdate with the version read; -EAGAIN on a version conflict (caller re-reads). */
static int service_write(cli_t *cli, arena_t *arena, Shoal__Service *svc, bool rollback,
                         Shoal__Service **ret) {
    Shoal__Orchestrator__ServiceUpdateRequest req =
        SHOAL__ORCHESTRATOR__SERVICE_UPDATE_REQUEST__INIT;
    req.service = svc->meta->id;
    req.version = svc->meta->version;
    req.spec = svc->spec;
    req.rollback = rollback;
    Shoal__Orchestrator__ServiceUpdateResponse *resp = NULL;
    const char *message = NULL;
    int r = cli_call(cli, arena, "orchestrator.ServiceUpdate", &req.base,
                     &shoal__orchestrator__service_update_response__descriptor, CLI_CALL_TIMEOUT_MS,
                     &resp, &message);
    if (r == BUS_FAILED_PRECONDITION && !rollback)
        return -EAGAIN;
    if (r < 0 && r != -EPROTO) {
        cli_fail_unreachable(cli, "orchestrator", cli->orchestrator_endpoint);
        return -1;
    }
    if (r != 0) {
        cli_fail(cli, "service \"%s\": %s", service_display_name(svc), message);
        return -1;
    }
    *ret = resp->service ? resp->service : svc;
    return 0;
}

/* Reads, edits with `edit` and writes the service, retrying on version conflicts. The edit
 * returns 0, or -1 after printing an error. */
typedef int(service_edit_fn)(cli_t *cli, arena_t *arena, Shoal__Service *svc, void *ctx);
static int service_modify(cli_t *cli, arena_t *arena, const char *ref, service_edit_fn *edit,
                          void *ctx, bool rollback, Shoal__Service **ret) {
    for (int attempt = 0; attempt < UPDATE_ATTEMPTS; attempt++) {
        Shoal__Service *svc;
        if (service_lookup(cli, arena, ref, &svc) < 0)
            return -1;
        if (edit && edit(cli, arena, svc, ctx) < 0)
            return -1;
        int r = service_write(cli, arena, svc, rollback, ret);
        if (r != -EAGAIN)
            return r;
    }
    cli_fail(cli, "service \"%s\": changed by someone else %d times in a row; try again", ref,
             UPDATE_ATTEMPTS);
    return -1;
}

static const char *mode_name(const Shoal__ServiceSpec *s) {
    switch (s ? s->mode_case : SHOAL__SERVICE_SPEC__MODE__NOT_SET) {
    case SHOAL__SERVICE_SPEC__MODE_REPLICATED:
        return "replicated";
    case SHOAL__SERVICE_SPEC__MODE_GLOBAL:
        return "global";
    case SHOAL__SERVICE_SPEC__MODE_REPLICATED_JOB:
        return "replicated job";
    case SHOAL__SERVICE_SPEC__MODE_GLOBAL_JOB:
        return "global job";
    default:
        return "";
    }
}

static const char *spec_image(const Shoal__ServiceSpec *s) {
    return s && s->task && s->task->container && s->task->container->image
               ? s->task->container->image
               : "";
}

/* ---- create ----------------------------------------------------------------------------- */

int cmd_service_create(cli_t *cli, int argc, char **argv) {
    spec_flags_t o = {0};
    const char *name = NULL;
    int mode = 0;
    bool mode_given = false, detach = false, quiet = false, json = false, dry_run = false;
    int64_t timeout_ms = 120000;
    const cli_flag_t flags[] = {
        {"name", 0, FLAG_STRING, &name, NULL, NULL, "NAME", "Service name"},
        {"mode", 0, FLAG_CHOICE, &mode, &mode_given, "replicated|global", NULL,
         "Service mode (default replicated)"},
        {"env", 'e', FLAG_LIST, &o.env_add, NULL, NULL, "K=V", "Set an environment variable"},
        {"label", 'l', FLAG_LIST, &o.label_add, NULL, NULL, "K=V", "Service label"},
        {"container-label", 0, FLAG_LIST, &o.container_label_add, NULL, NULL, "K=V",
         "Container label"},
        {"constraint", 0, FLAG_LIST, &o.constraint_add, NULL, NULL, "EXPR",
         "Placement constraint (node.labels.zone==a)"},
        {"placement-pref", 0, FLAG_LIST, &o.placement_pref_add, NULL, NULL, "spread=LABEL",
         "Placement preference"},
        {"publish", 'p', FLAG_LIST, &o.publish_add, NULL, NULL, "[PUB:]TARGET[/PROTO]",
         "Publish a port"},
        {"mount", 0, FLAG_LIST, &o.mount_add, NULL, NULL,
         "type=,source=,target=", "Attach a filesystem mount"},
        SPEC_COMMON_FLAGS(o),
        {"detach", 'd', FLAG_BOOL, &detach, NULL, NULL, NULL,
         "Exit immediately instead of waiting for the service to converge"},
        {"quiet", 'q', FLAG_BOOL, &quiet, NULL, NULL, NULL, "Suppress progress output"},
        {"timeout", 0, FLAG_DURATION, &timeout_ms, NULL, NULL, "DURATION",
         "How long to wait for convergence (default 120s)"},
        {"json", 0, FLAG_BOOL, &json, NULL, NULL, NULL,
         "Print the created service as JSON instead of its id"},
        {"dry-run", 0, FLAG_BOOL, &dry_run, NULL, NULL, NULL,
         "Print the spec that would be sent (JSON) and exit"},
        {0},
    };
    const cmd_spec_t spec = {
        .path = "service create",
        .args = "[OPTIONS] IMAGE [COMMAND] [ARG...]",
        .summary = "Create a new service. Prints its id, then waits until its tasks run (progress "
                   "on stderr)\nunless --detach.",
        .flags = flags,
        .min_args = 1,
        .max_args = -1,
        .flags_end_at_first_arg = true,
    };
    strv_t args;
    int r = cli_parse(cli, &spec, argc, argv, &args);
    if (r)
        return r < 0;
    bool global = mode_given && mode == 1;
    if (global && o.replicas_given)
        return cli_fail_cmd(cli, "--replicas: not allowed with --mode global");
    if (global && o.max_replicas_given)
        return cli_fail_cmd(cli, "--replicas-max-per-node: not allowed with --mode global");
    o.image = args.v[0];
    for (size_t i = 1; i < args.n; i++)
        strv_push(cli->arena, &o.args, args.v[i]);

    arena_t *a = cli->arena;
    Shoal__ServiceSpec *s = spec_new_default(a);
    if (name)
        s->annotations->name = (char *)name;
    if (global) {
        s->mode_case = SHOAL__SERVICE_SPEC__MODE_GLOBAL;
        s->global = arena_alloc(a, sizeof *s->global);
        shoal__global_service__init(s->global);
    }
    if (spec_apply(cli, a, s, &o) < 0)
        return 1;
    if (dry_run)
        return print_json_message(cli, &s->base, stdout) < 0;

    if (cli_connect(cli) < 0)
        return 1;
    Shoal__Orchestrator__ServiceCreateRequest req =
        SHOAL__ORCHESTRATOR__SERVICE_CREATE_REQUEST__INIT;
    req.spec = s;
    Shoal__Orchestrator__ServiceCreateResponse *resp = NULL;
    if (cli_call_or_fail(cli, a, "orchestrator.ServiceCreate", &req.base,
                         &shoal__orchestrator__service_create_response__descriptor, &resp) < 0)
        return 1;
    Shoal__Service *svc = resp->service;
    if (!svc || !svc->meta)
        return cli_fail_cmd(cli, "the orchestrator sent no service back");
    if (json) {
        if (print_json_message(cli, &svc->base, stdout) < 0)
            return 1;
    } else {
        printf("%s\n", svc->meta->id);
    }
    fflush(stdout);
    if (detach)
        return 0;
    wait_opts_t wo = {.timeout_ms = timeout_ms, .quiet = quiet};
    return service_wait_converged(cli, svc->meta->id, service_display_name(svc), &wo);
}

/* ---- ls --------------------------------------------------------------------------------- */

static int summary_by_name(const void *x, const void *y) {
    const Shoal__Orchestrator__ServiceSummary *a = *(const void *const *)x;
    const Shoal__Orchestrator__ServiceSummary *b = *(const void *const *)y;
    return strcmp(service_display_name(a->service), service_display_name(b->service));
}

int cmd_service_ls(cli_t *cli, int argc, char **argv) {
    bool json = false, quiet = false, no_trunc = false;
    const cli_flag_t flags[] = {
        {"json", 0, FLAG_BOOL, &json, NULL, NULL, NULL, "Print JSON"},
        {"quiet", 'q', FLAG_BOOL, &quiet, NULL, NULL, NULL, "Only print ids"},
        {"no-trunc", 0, FLAG_BOOL, &no_trunc, NULL, NULL, NULL, "Do not truncate ids"},
        {0},
    };
    const cmd_spec_t spec = {.path = "service ls",
                             .args = "[OPTIONS]",
                             .summary = "List services.",
                             .flags = flags,
                             .max_args = 0};
    strv_t args;
    int r = cli_parse(cli, &spec, argc, argv, &args);
    if (r)
        return r < 0;
    if (cli_connect(cli) < 0)
        return 1;
    Shoal__Orchestrator__ServiceListRequest req = SHOAL__ORCHESTRATOR__SERVICE_LIST_REQUEST__INIT;
    Shoal__Orchestrator__ServiceListResponse *resp;
    if (cli_call_or_fail(cli, cli->arena, "orchestrator.ServiceList", &req.base,
                         &shoal__orchestrator__service_list_response__descriptor, &resp) < 0)
        return 1;
    size_t n = 0;
    Shoal__Orchestrator__ServiceSummary **list =
        arena_alloc(cli->arena, (resp->n_services + 1) * sizeof *list);
    for (size_t i = 0; i < resp->n_services; i++)
        if (resp->services[i]->service && resp->services[i]->service->meta)
            list[n++] = resp->services[i];
    qsort(list, n, sizeof *list, summary_by_name);
    if (json)
        return print_json_array(cli, (const ProtobufCMessage *const *)list, n, stdout) < 0;
    if (quiet) {
        for (size_t i = 0; i < n; i++)
            printf("%s\n", list[i]->service->meta->id);
        return 0;
    }
    static const char *const headers[] = {"ID", "NAME", "MODE", "REPLICAS", "IMAGE"};
    table_t *t = table_new(headers, 5);
    for (size_t i = 0; i < n; i++) {
        const Shoal__Service *s = list[i]->service;
        const char *row[] = {
            id_short(cli->arena, s->meta->id, no_trunc),
            service_display_name(s),
            mode_name(s->spec),
            arena_printf(cli->arena, "%llu/%llu", (unsigned long long)list[i]->running,
                         (unsigned long long)list[i]->desired),
            spec_image(s->spec),
        };
        table_add(t, row);
    }
    table_print(t, stdout);
    table_destroy(&t);
    return 0;
}

/* ---- ps --------------------------------------------------------------------------------- */

static int task_order(const void *x, const void *y) {
    const Shoal__Task *a = *(const Shoal__Task *const *)x, *b = *(const Shoal__Task *const *)y;
    int c = strcmp(a->service_name ? a->service_name : "", b->service_name ? b->service_name : "");
    if (c)
        return c;
    if (a->slot != b->slot)
        return a->slot < b->slot ? -1 : 1;
    if (a->slot == 0 && (c = strcmp(a->node_id ? a->node_id : "", b->node_id ? b->node_id : "")))
        return c;
    /* Newest first within a slot. */
    int64_t ta = a->meta ? a->meta->created_at_ms : 0, tb = b->meta ? b->meta->created_at_ms : 0;
    if (ta != tb)
        return ta > tb ? -1 : 1;
    return strcmp(a->meta ? a->meta->id : "", b->meta ? b->meta->id : "");
}

static bool same_group(const Shoal__Task *a, const Shoal__Task *b) {
    return !strcmp(a->service_id, b->service_id) && a->slot == b->slot &&
           (a->slot != 0 || !strcmp(a->node_id, b->node_id));
}

/* Node id -> hostname, best effort: without it the NODE column shows ids. */
static const char *node_hostname(Shoal__Orchestrator__NodeListResponse *nodes, const char *id) {
    if (!id || !*id)
        return "";
    for (size_t i = 0; nodes && i < nodes->n_nodes; i++) {
        Shoal__Node *n = nodes->nodes[i];
        if (n->meta && !strcmp(n->meta->id, id) && n->description && n->description->hostname &&
            *n->description->hostname)
            return n->description->hostname;
    }
    return id;
}

int cmd_service_ps(cli_t *cli, int argc, char **argv) {
    bool json = false, quiet = false, no_trunc = false, all = false;
    strv_t filters = {0};
    const cli_flag_t flags[] = {
        {"json", 0, FLAG_BOOL, &json, NULL, NULL, NULL, "Print JSON"},
        {"quiet", 'q', FLAG_BOOL, &quiet, NULL, NULL, NULL, "Only print task ids"},
        {"no-trunc", 0, FLAG_BOOL, &no_trunc, NULL, NULL, NULL, "Do not truncate output"},
        {"all", 'a', FLAG_BOOL, &all, NULL, NULL, NULL,
         "Show every task, history included (the default)"},
        {"filter", 'f', FLAG_LIST, &filters, NULL, NULL, "KEY=VALUE",
         "Filter: desired-state=running|shutdown|accepted, node=ID|HOSTNAME"},
        {0},
    };
    const cmd_spec_t spec = {.path = "service ps",
                             .args = "[OPTIONS] SERVICE [SERVICE...]",
                             .summary = "List the tasks of one or more services, newest first "
                                        "within each slot.",
                             .flags = flags,
                             .min_args = 1,
                             .max_args = -1};
    strv_t args;
    int r = cli_parse(cli, &spec, argc, argv, &args);
    if (r)
        return r < 0;
    const char *want_desired = NULL, *want_node = NULL;
    for (size_t i = 0; i < filters.n; i++) {
        const char *f = filters.v[i];
        if (!strncmp(f, "desired-state=", 14) &&
            choice_index("running|shutdown|accepted", f + 14) >= 0)
            want_desired = f + 14;
        else if (!strncmp(f, "node=", 5) && f[5])
            want_node = f + 5;
        else
            return cli_fail_cmd(cli,
                                "--filter: must be desired-state=running|shutdown|accepted or "
                                "node=NODE (got \"%s\")",
                                f);
    }
    if (cli_connect(cli) < 0)
        return 1;
    arena_t *a = cli->arena;

    Shoal__Orchestrator__NodeListRequest nreq = SHOAL__ORCHESTRATOR__NODE_LIST_REQUEST__INIT;
    Shoal__Orchestrator__NodeListResponse *nodes = NULL;
    if (cli_call(cli, a, "orchestrator.NodeList", &nreq.base,
                 &shoal__orchestrator__node_list_response__descriptor, CLI_CALL_TIMEOUT_MS, &nodes,
                 NULL) != 0)
        nodes = NULL;

    Shoal__Task **tasks = NULL;
    size_t ntasks = 0;
    int code = 0;
    for (size_t i = 0; i < args.n; i++) {
        Shoal__Service *svc;
        if (service_lookup(cli, a, args.v[i], &svc) < 0) {
            code = 1;
            continue;
        }
        Shoal__Orchestrator__TaskListRequest req = SHOAL__ORCHESTRATOR__TASK_LIST_REQUEST__INIT;
        req.service = svc->meta->id;
        if (want_node)
            req.node = (char *)want_node;
        Shoal__Orchestrator__TaskListResponse *resp;
        if (cli_call_or_fail(cli, a, "orchestrator.TaskList", &req.base,
                             &shoal__orchestrator__task_list_response__descriptor, &resp) < 0)
            return 1;
        for (size_t j = 0; j < resp->n_tasks; j++) {
            Shoal__Task *t = resp->tasks[j];
            if (!t->meta)
                continue;
            if (want_desired) {
                bool running = t->desired_state <= SHOAL__TASK_STATE__RUNNING;
                bool accepted = t->desired_state == SHOAL__TASK_STATE__ACCEPTED;
                if ((!strcmp(want_desired, "running") && !running) ||
                    (!strcmp(want_desired, "shutdown") && running) ||
                    (!strcmp(want_desired, "accepted") && !accepted))
                    continue;
            }
            ARENA_PUSH(a, &tasks, &ntasks, t);
        }
    }
    if (ntasks)
        qsort(tasks, ntasks, sizeof *tasks, task_order);
    if (json)
        return print_json_array(cli, (const ProtobufCMessage *const *)tasks, ntasks, stdout) < 0
                   ? 1
                   : code;
    if (quiet) {
        for (size_t i = 0; i < ntasks; i++)
            printf("%s\n", tasks[i]->meta->id);
        return code;
    }
    static const char *const headers[] = {
        "ID", "NAME", "IMAGE", "NODE", "DESIRED STATE", "CURRENT STATE", "ERROR"};
    table_t *t = table_new(headers, 7);
    int64_t now = clock_wall_ms();
    for (size_t i = 0; i < ntasks; i++) {
        const Shoal__Task *task = tasks[i];
        bool history = i > 0 && same_group(tasks[i - 1], task);
        const Shoal__TaskStatus *st = task->status;
        int state = st ? (int)st->state : SHOAL__TASK_STATE__NEW;
        int64_t ts = st && st->timestamp_ms ? st->timestamp_ms : task->meta->updated_at_ms;
        const char *row[] = {
            id_short(a, task->meta->id, no_trunc),
            arena_printf(a, "%s%s", history ? " \\_ " : "", task_display_name(a, task)),
            spec_image(&(Shoal__ServiceSpec){.task = task->spec}),
            node_hostname(nodes, task->node_id),
            task_state_name(task->desired_state, false),
            arena_printf(a, "%s %s ago", task_state_name(state, false),
                         human_duration(a, now - ts)),
            st && st->err ? st->err : "",
        };
        table_add(t, row);
    }
    table_print(t, stdout);
    table_destroy(&t);
    return code;
}

/* ---- inspect ---------------------------------------------------------------------------- */

static void pretty_kv(const char *key, const char *value) {
    printf("%-20s%s\n", key, value);
}

static void print_service_pretty(arena_t *a, const Shoal__Service *svc) {
    const Shoal__ServiceSpec *s = svc->spec;
    pretty_kv("ID:", svc->meta->id);
    pretty_kv("Name:", service_display_name(svc));
    if (s->annotations && s->annotations->n_labels) {
        printf("Labels:\n");
        for (size_t i = 0; i < s->annotations->n_labels; i++)
            printf(" %s=%s\n", s->annotations->labels[i]->key, s->annotations->labels[i]->value);
    }
    if (s->mode_case == SHOAL__SERVICE_SPEC__MODE_REPLICATED) {
        pretty_kv("Service Mode:", "Replicated");
        pretty_kv(" Replicas:",
                  arena_printf(a, "%llu", (unsigned long long)s->replicated->replicas));
    } else {
        pretty_kv("Service Mode:", mode_name(s));
    }
    pretty_kv("Spec Version:", arena_printf(a, "%llu", (unsigned long long)svc->spec_version));
    if (svc->update_status && svc->update_status->state) {
        const ProtobufCEnumValue *v = protobuf_c_enum_descriptor_get_value(
            &shoal__update_status__state__descriptor, svc->update_status->state);
        pretty_kv("UpdateStatus:", "");
        pretty_kv(" State:", v ? v->name : "?");
        if (svc->update_status->message && *svc->update_status->message)
            pretty_kv(" Message:", svc->update_status->message);
    }
    const Shoal__TaskSpec *t = s->task;
    if (t && t->placement &&
        (t->placement->n_constraints || t->placement->n_preferences ||
         t->placement->max_replicas)) {
        printf("Placement:\n");
        for (size_t i = 0; i < t->placement->n_constraints; i++)
            pretty_kv(i ? "" : " Constraints:", t->placement->constraints[i]);
        for (size_t i = 0; i < t->placement->n_preferences; i++)
            pretty_kv(
                i ? "" : " Preferences:",
                arena_printf(a, "spread=%s", t->placement->preferences[i]->spread_descriptor));
        if (t->placement->max_replicas)
            pretty_kv(" Max Replicas Per Node:",
                      arena_printf(a, "%llu", (unsigned long long)t->placement->max_replicas));
    }
    if (s->update) {
        printf("UpdateConfig:\n");
        pretty_kv(" Parallelism:",
                  arena_printf(a, "%llu", (unsigned long long)s->update->parallelism));
        if (s->update->delay_ms)
            pretty_kv(" Delay:", arena_printf(a, "%lldms", (long long)s->update->delay_ms));
        pretty_kv(" On failure:", s->update->failure_action == 1   ? "continue"
                                  : s->update->failure_action == 2 ? "rollback"
                                                                   : "pause");
        pretty_kv(" Update order:", s->update->order ? "start-first" : "stop-first");
    }
    if (t && t->container) {
        const Shoal__ContainerSpec *c = t->container;
        printf("ContainerSpec:\n");
        pretty_kv(" Image:", c->image);
        if (c->n_command) {
            char *line = "";
            for (size_t i = 0; i < c->n_command; i++)
                line = arena_printf(a, "%s%s%s", line, i ? " " : "", c->command[i]);
            pretty_kv(" Command:", line);
        }
        if (c->n_args) {
            char *line = "";
            for (size_t i = 0; i < c->n_args; i++)
                line = arena_printf(a, "%s%s%s", line, i ? " " : "", c->args[i]);
            pretty_kv(" Args:", line);
        }
        for (size_t i = 0; i < c->n_env; i++)
            pretty_kv(i ? "" : " Env:", c->env[i]);
        if (c->init)
            pretty_kv(" Init:", "true");
        if (c->stop_grace_period_ms)
            pretty_kv(" StopGracePeriod:",
                      arena_printf(a, "%lldms", (long long)c->stop_grace_period_ms));
    }
    if (t && t->resources) {
        printf("Resources:\n");
        const Shoal__Resources *rs[2] = {t->resources->reservations, t->resources->limits};
        const char *names[2] = {" Reservations:", " Limits:"};
        for (int i = 0; i < 2; i++) {
            if (!rs[i] || (!rs[i]->nano_cpus && !rs[i]->memory_bytes))
                continue;
            printf("%s\n", names[i]);
            if (rs[i]->nano_cpus)
                pretty_kv("  CPU:", arena_printf(a, "%g", rs[i]->nano_cpus / 1e9));
            if (rs[i]->memory_bytes)
                pretty_kv("  Memory:", arena_printf(a, "%lld B", (long long)rs[i]->memory_bytes));
        }
    }
    if (t && t->restart) {
        printf("RestartPolicy:\n");
        pretty_kv(" Condition:", t->restart->condition == 1   ? "none"
                                 : t->restart->condition == 2 ? "on-failure"
                                                              : "any");
        pretty_kv(" Delay:", arena_printf(a, "%lldms", (long long)t->restart->delay_ms));
        pretty_kv(" Max attempts:",
                  arena_printf(a, "%llu", (unsigned long long)t->restart->max_attempts));
    }
    if (s->endpoint) {
        pretty_kv("Endpoint Mode:", s->endpoint->mode ? "dnsrr" : "vip");
        for (size_t i = 0; i < s->endpoint->n_ports; i++) {
            const Shoal__PortConfig *p = s->endpoint->ports[i];
            pretty_kv(i ? "" : "Ports:",
                      arena_printf(a, "%u -> %u/%s (%s)", p->published_port, p->target_port,
                                   p->protocol == 1   ? "udp"
                                   : p->protocol == 2 ? "sctp"
                                                      : "tcp",
                                   p->publish_mode ? "host" : "ingress"));
        }
    }
}

int cmd_service_inspect(cli_t *cli, int argc, char **argv) {
    bool pretty = false;
    const cli_flag_t flags[] = {
        {"pretty", 0, FLAG_BOOL, &pretty, NULL, NULL, NULL, "Print a human-readable summary"},
        {0},
    };
    const cmd_spec_t spec = {.path = "service inspect",
                             .args = "[OPTIONS] SERVICE [SERVICE...]",
                             .summary = "Display detailed information on services (a JSON array "
                                        "of shoal.Service).",
                             .flags = flags,
                             .min_args = 1,
                             .max_args = -1};
    strv_t args;
    int r = cli_parse(cli, &spec, argc, argv, &args);
    if (r)
        return r < 0;
    if (cli_connect(cli) < 0)
        return 1;
    Shoal__Service **found = NULL;
    size_t n = 0;
    int code = 0;
    for (size_t i = 0; i < args.n; i++) {
        Shoal__Service *svc;
        if (service_lookup(cli, cli->arena, args.v[i], &svc) < 0) {
            code = 1;
            continue;
        }
        ARENA_PUSH(cli->arena, &found, &n, svc);
    }
    if (pretty) {
        for (size_t i = 0; i < n; i++) {
            if (i)
                printf("\n");
            print_service_pretty(cli->arena, found[i]);
        }
        return code;
    }
    if (n == 0 && code)
        return code;
    if (print_json_array(cli, (const ProtobufCMessage *const *)found, n, stdout) < 0)
        return 1;
    return code;
}

/* ---- scale ------------------------------------------------------------------------------ */

static int edit_replicas(cli_t *cli, arena_t *arena, Shoal__Service *svc, void *ctx) {
    (void)arena;
    if (svc->spec->mode_case != SHOAL__SERVICE_SPEC__MODE_REPLICATED) {
        cli_fail(cli, "service \"%s\": scale works on replicated services only (mode is %s)",
                 service_display_name(svc), mode_name(svc->spec));
        return -1;
    }
    svc->spec->replicated->replicas = *(uint64_t *)ctx;
    return 0;
}

int cmd_service_scale(cli_t *cli, int argc, char **argv) {
    bool detach = false, quiet = false;
    int64_t timeout_ms = 120000;
    const cli_flag_t flags[] = {
        {"detach", 'd', FLAG_BOOL, &detach, NULL, NULL, NULL,
         "Exit immediately instead of waiting for the service to converge"},
        {"quiet", 'q', FLAG_BOOL, &quiet, NULL, NULL, NULL, "Suppress progress output"},
        {"timeout", 0, FLAG_DURATION, &timeout_ms, NULL, NULL, "DURATION",
         "How long to wait for convergence (default 120s)"},
        {0},
    };
    const cmd_spec_t spec = {.path = "service scale",
                             .args = "[OPTIONS] SERVICE=REPLICAS [SERVICE=REPLICAS...]",
                             .summary = "Scale one or more replicated services.",
                             .flags = flags,
                             .min_args = 1,
                             .max_args = -1};
    strv_t args;
    int r = cli_parse(cli, &spec, argc, argv, &args);
    if (r)
        return r < 0;
    uint64_t *counts = arena_alloc(cli->arena, args.n * sizeof *counts);
    const char **names = arena_alloc(cli->arena, args.n * sizeof *names);
    for (size_t i = 0; i < args.n; i++) {
        const char *eq = strchr(args.v[i], '=');
        if (!eq || eq == args.v[i])
            return cli_fail_cmd(cli, "\"%s\" is not SERVICE=REPLICAS", args.v[i]);
        if (parse_uint(eq + 1, &counts[i]) < 0)
            return cli_fail_cmd(cli, "%.*s: replicas must be a number (got \"%s\")",
                                (int)(eq - args.v[i]), args.v[i], eq + 1);
        names[i] = arena_printf(cli->arena, "%.*s", (int)(eq - args.v[i]), args.v[i]);
    }
    if (cli_connect(cli) < 0)
        return 1;
    int code = 0;
    Shoal__Service **done = arena_alloc(cli->arena, args.n * sizeof *done);
    for (size_t i = 0; i < args.n; i++) {
        if (service_modify(cli, cli->arena, names[i], edit_replicas, &counts[i], false, &done[i]) <
            0) {
            code = 1;
            done[i] = NULL;
            continue;
        }
        printf("%s scaled to %llu\n", names[i], (unsigned long long)counts[i]);
        fflush(stdout);
    }
    if (detach)
        return code;
    wait_opts_t wo = {.timeout_ms = timeout_ms, .quiet = quiet};
    for (size_t i = 0; i < args.n; i++)
        if (done[i] &&
            service_wait_converged(cli, done[i]->meta->id, service_display_name(done[i]), &wo))
            code = 1;
    return code;
}

/* ---- update and rollback ---------------------------------------------------------------- */

typedef struct update_ctx {
    spec_flags_t *flags;
    bool force;
} update_ctx_t;

static int edit_update(cli_t *cli, arena_t *arena, Shoal__Service *svc, void *ctx) {
    update_ctx_t *u = ctx;
    if (spec_apply(cli, arena, svc->spec, u->flags) < 0)
        return -1;
    if (u->force) {
        if (!svc->spec->task) {
            svc->spec->task = arena_alloc(arena, sizeof *svc->spec->task);
            shoal__task_spec__init(svc->spec->task);
        }
        svc->spec->task->force_update++;
    }
    return 0;
}

static int update_run(cli_t *cli, const char *ref, update_ctx_t *u, bool rollback, bool detach,
                      const wait_opts_t *wo) {
    if (cli_connect(cli) < 0)
        return 1;
    Shoal__Service *svc;
    if (service_modify(cli, cli->arena, ref, rollback ? NULL : edit_update, u, rollback, &svc) < 0)
        return 1;
    printf("%s\n", ref);
    fflush(stdout);
    if (detach)
        return 0;
    return service_wait_converged(cli, svc->meta->id, service_display_name(svc), wo);
}

int cmd_service_update(cli_t *cli, int argc, char **argv) {
    spec_flags_t o = {0};
    bool force = false, rollback = false, detach = false, quiet = false;
    int64_t timeout_ms = 120000;
    const cli_flag_t flags[] = {
        {"image", 0, FLAG_STRING, &o.image, NULL, NULL, "IMAGE", "Service image"},
        {"args", 0, FLAG_STRING, &o.args_line, &o.args_given, NULL, "\"CMD ARG...\"",
         "Service command and arguments"},
        {"env-add", 0, FLAG_LIST, &o.env_add, NULL, NULL, "K=V",
         "Add or set an environment variable"},
        {"env-rm", 0, FLAG_LIST, &o.env_rm, NULL, NULL, "K", "Remove an environment variable"},
        {"label-add", 0, FLAG_LIST, &o.label_add, NULL, NULL, "K=V", "Add or set a service label"},
        {"label-rm", 0, FLAG_LIST, &o.label_rm, NULL, NULL, "K", "Remove a service label"},
        {"container-label-add", 0, FLAG_LIST, &o.container_label_add, NULL, NULL, "K=V",
         "Add or set a container label"},
        {"container-label-rm", 0, FLAG_LIST, &o.container_label_rm, NULL, NULL, "K",
         "Remove a container label"},
        {"constraint-add", 0, FLAG_LIST, &o.constraint_add, NULL, NULL, "EXPR",
         "Add a placement constraint"},
        {"constraint-rm", 0, FLAG_LIST, &o.constraint_rm, NULL, NULL, "EXPR",
         "Remove a placement constraint"},
        {"placement-pref-add", 0, FLAG_LIST, &o.placement_pref_add, NULL, NULL, "spread=LABEL",
         "Add a placement preference"},
        {"placement-pref-rm", 0, FLAG_LIST, &o.placement_pref_rm, NULL, NULL, "spread=LABEL",
         "Remove a placement preference"},
        {"publish-add", 0, FLAG_LIST, &o.publish_add, NULL, NULL, "[PUB:]TARGET[/PROTO]",
         "Add a published port"},
        {"publish-rm", 0, FLAG_LIST, &o.publish_rm, NULL, NULL, "TARGET[/PROTO]",
         "Remove a published port"},
        {"mount-add", 0, FLAG_LIST, &o.mount_add, NULL, NULL,
         "type=,source=,target=", "Add a mount"},
        {"mount-rm", 0, FLAG_LIST, &o.mount_rm, NULL, NULL, "TARGET", "Remove a mount by target"},
        SPEC_COMMON_FLAGS(o),
        {"force", 0, FLAG_BOOL, &force, NULL, NULL, NULL,
         "Replace every task even if nothing changed"},
        {"rollback", 0, FLAG_BOOL, &rollback, NULL, NULL, NULL, "Roll back to the previous spec"},
        {"detach", 'd', FLAG_BOOL, &detach, NULL, NULL, NULL,
         "Exit immediately instead of waiting for the service to converge"},
        {"quiet", 'q', FLAG_BOOL, &quiet, NULL, NULL, NULL, "Suppress progress output"},
        {"timeout", 0, FLAG_DURATION, &timeout_ms, NULL, NULL, "DURATION",
         "How long to wait for convergence (default 120s)"},
        {0},
    };
    const cmd_spec_t spec = {
        .path = "service update",
        .args = "[OPTIONS] SERVICE",
        .summary = "Update a service, then wait until its tasks run the new spec (unless "
                   "--detach).",
        .flags = flags,
        .min_args = 1,
        .max_args = 1,
    };
    strv_t args;
    int r = cli_parse(cli, &spec, argc, argv, &args);
    if (r)
        return r < 0;
    if (o.image && !*o.image)
        return cli_fail_cmd(cli, "--image: must not be empty");
    update_ctx_t u = {.flags = &o, .force = force};
    wait_opts_t wo = {.timeout_ms = timeout_ms, .quiet = quiet};
    return update_run(cli, args.v[0], &u, rollback, detach, &wo);
}

int cmd_service_rollback(cli_t *cli, int argc, char **argv) {
    bool detach = false, quiet = false;
    int64_t timeout_ms = 120000;
    const cli_flag_t flags[] = {
        {"detach", 'd', FLAG_BOOL, &detach, NULL, NULL, NULL,
         "Exit immediately instead of waiting for the service to converge"},
        {"quiet", 'q', FLAG_BOOL, &quiet, NULL, NULL, NULL, "Suppress progress output"},
        {"timeout", 0, FLAG_DURATION, &timeout_ms, NULL, NULL, "DURATION",
         "How long to wait for convergence (default 120s)"},
        {0},
    };
    const cmd_spec_t spec = {.path = "service rollback",
                             .args = "[OPTIONS] SERVICE",
                             .summary = "Revert a service to its previous spec.",
                             .flags = flags,
                             .min_args = 1,
                             .max_args = 1};
    strv_t args;
    int r = cli_parse(cli, &spec, argc, argv, &args);
    if (r)
        return r < 0;
    wait_opts_t wo = {.timeout_ms = timeout_ms, .quiet = quiet};
    return update_run(cli, args.v[0], NULL, true, detach, &wo);
}

/* ---- rm --------------------------------------------------------------------------------- */

int cmd_service_rm(cli_t *cli, int argc, char **argv) {
    bool wait = false;
    int64_t timeout_ms = 60000;
    const cli_flag_t flags[] = {
        {"wait", 0, FLAG_BOOL, &wait, NULL, NULL, NULL,
         "Wait until every task of the service is gone"},
        {"timeout", 0, FLAG_DURATION, &timeout_ms, NULL, NULL, "DURATION",
         "How long --wait waits (default 60s)"},
        {0},
    };
    const cmd_spec_t spec = {.path = "service rm",
                             .args = "[OPTIONS] SERVICE [SERVICE...]",
                             .summary = "Remove one or more services. Their tasks are stopped in "
                                        "the background unless --wait.",
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
    const char **ids = arena_alloc(cli->arena, args.n * sizeof *ids);
    const char **names = arena_alloc(cli->arena, args.n * sizeof *names);
    for (size_t i = 0; i < args.n; i++) {
        Shoal__Service *svc;
        if (service_lookup(cli, cli->arena, args.v[i], &svc) < 0) {
            code = 1;
            continue;
        }
        Shoal__Orchestrator__ServiceRemoveRequest req =
            SHOAL__ORCHESTRATOR__SERVICE_REMOVE_REQUEST__INIT;
        req.service = svc->meta->id;
        Shoal__Orchestrator__ServiceRemoveResponse *resp;
        const char *message = NULL;
        r = cli_call(cli, cli->arena, "orchestrator.ServiceRemove", &req.base,
                     &shoal__orchestrator__service_remove_response__descriptor, CLI_CALL_TIMEOUT_MS,
                     &resp, &message);
        if (r == BUS_NOT_FOUND) {
            cli_fail(cli, "service \"%s\" not found", args.v[i]);
            code = 1;
            continue;
        }
        if (r < 0 && r != -EPROTO)
            return cli_fail_unreachable(cli, "orchestrator", cli->orchestrator_endpoint);
        if (r != 0) {
            cli_fail(cli, "service \"%s\": %s", args.v[i], message);
            code = 1;
            continue;
        }
        printf("%s\n", args.v[i]);
        fflush(stdout);
        ids[i] = svc->meta->id;
        names[i] = service_display_name(svc);
    }
    if (!wait)
        return code;
    for (size_t i = 0; i < args.n; i++)
        if (ids[i] && service_wait_removed(cli, ids[i], names[i], timeout_ms))
            code = 1;
    return code;
}
