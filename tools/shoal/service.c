/* service — `shoal service create|ls|ps|inspect|scale|update|rollback|rm`.
 *
 * Every change is a read-modify-write: the spec is read with ServiceInspect, edited with the
 * same spec_apply() that builds new specs, and written with ServiceUpdate carrying the
 * meta.version that was read, so a concurrent change is never overwritten: on
 * FAILED_PRECONDITION the command reads again and re-applies its flags (a few times).
 *
 * Commands that change what runs (create, scale, update, rollback) then wait, like
 * `docker service create`, until the new spec has converged — a job: until it completed —
 * (progress.c), unless --detach. `update` and `rollback` also wait for the orchestrator to
 * finish the update (COMPLETED / ROLLBACK_COMPLETED), and fail when it paused or rolled back.
 * Output for scripts: the service id (create) or name (others) on stdout, progress on stderr,
 * `--json` / `-q` on the listings, `--dry-run` (create, update) prints the spec instead.
 *
 * Listings follow docker's columns: `ls` REPLICAS "2/3", "2/3 (max 1 per node)", jobs
 * "1/2 (3/5 completed)" (counted from the tasks), PORTS "*:8080->80/tcp"; `ps` CURRENT STATE
 * "Running 5 seconds ago", with `docker ps`'s health words for tasks with a health check. */
#include <ctype.h>
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

static const char *spec_image(const Shoal__ServiceSpec *s) {
    return s && s->task && s->task->container && s->task->container->image
               ? s->task->container->image
               : "";
}

/* ---- create ----------------------------------------------------------------------------- */

int cmd_service_create(cli_t *cli, int argc, char **argv) {
    spec_flags_t o = {0};
    const char *name = NULL;
    int mode = SPEC_REPLICATED;
    bool detach = false, quiet = false, json = false, dry_run = false;
    int64_t timeout_ms = 120000;
    const cli_flag_t flags[] = {
        {"name", 0, FLAG_STRING, &name, NULL, NULL, "NAME", "Service name"},
        {"mode", 0, FLAG_CHOICE, &mode, NULL, CHOICES_MODE, "MODE",
         "replicated, global, replicated-job or global-job (default replicated)"},
        {"env", 'e', FLAG_LIST, &o.env_add, NULL, NULL, "K=V", "Set an environment variable"},
        {"label", 'l', FLAG_LIST, &o.label_add, NULL, NULL, "K=V", "Service label"},
        {"container-label", 0, FLAG_LIST, &o.container_label_add, NULL, NULL, "K=V",
         "Container label"},
        {"constraint", 0, FLAG_LIST, &o.constraint_add, NULL, NULL, "EXPR",
         "Placement constraint (node.labels.zone==a)"},
        {"placement-pref", 0, FLAG_LIST, &o.placement_pref_add, NULL, NULL, "spread=LABEL",
         "Placement preference (spread=node.labels.zone; nested in the order given)"},
        {"platform", 0, FLAG_LIST, &o.platform_add, NULL, NULL, "OS[/ARCH]",
         "Only run on nodes of this platform (linux/amd64)"},
        {"publish", 'p', FLAG_LIST, &o.publish_add, NULL, NULL, "[PUB:]TARGET[/PROTO]",
         "Publish a port (or published=N,target=N,protocol=udp,mode=host)"},
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
        .summary = "Create a new service. Prints its id, then waits until its tasks run (a job: "
                   "until it\ncompletes; progress on stderr) unless --detach.",
        .flags = flags,
        .min_args = 1,
        .max_args = -1,
        .flags_end_at_first_arg = true,
    };
    strv_t args;
    int r = cli_parse(cli, &spec, argc, argv, &args);
    if (r)
        return r < 0;
    bool global = mode == SPEC_GLOBAL || mode == SPEC_GLOBAL_JOB;
    static const char *const mode_words[] = {"replicated", "global", "replicated-job",
                                             "global-job"};
    if (global && o.replicas_given)
        return cli_fail_cmd(cli, "--replicas: not allowed with --mode %s", mode_words[mode]);
    if (global && o.max_replicas_given)
        return cli_fail_cmd(cli, "--replicas-max-per-node: not allowed with --mode %s",
                            mode_words[mode]);
    if (o.max_concurrent_given && mode != SPEC_REPLICATED_JOB)
        return cli_fail_cmd(cli, "--max-concurrent: only with --mode replicated-job (mode is %s)",
                            mode_words[mode]);
    /* docker's job defaults: --replicas N alone runs N completions N at a time; --max-concurrent
     * M alone runs M completions. */
    if (mode == SPEC_REPLICATED_JOB) {
        if (o.replicas_given && !o.max_concurrent_given && o.replicas > 0) {
            o.max_concurrent = o.replicas;
            o.max_concurrent_given = true;
        } else if (o.max_concurrent_given && !o.replicas_given && o.max_concurrent > 0) {
            o.replicas = o.max_concurrent;
            o.replicas_given = true;
        }
    }
    o.image = args.v[0];
    for (size_t i = 1; i < args.n; i++)
        strv_push(cli->arena, &o.args, args.v[i]);

    arena_t *a = cli->arena;
    Shoal__ServiceSpec *s = spec_new_default(a, (enum spec_mode)mode);
    if (name)
        s->annotations->name = (char *)name;
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

/* docker's REPLICAS column: "3/3", "3/3 (max 2 per node)", jobs "1/2 (3/5 completed)". */
static const char *service_replicas_column(arena_t *a,
                                           const Shoal__Orchestrator__ServiceSummary *sum,
                                           const Shoal__Orchestrator__TaskListResponse *tasks) {
    const Shoal__Service *s = sum->service;
    if (spec_is_job(s->spec)) {
        job_counts_t jc;
        job_count(s, tasks ? tasks->tasks : NULL, tasks ? tasks->n_tasks : 0, &jc);
        return arena_printf(a, "%llu/%llu (%llu/%llu completed)", (unsigned long long)jc.running,
                            (unsigned long long)jc.desired, (unsigned long long)jc.completed,
                            (unsigned long long)jc.total);
    }
    const Shoal__Placement *p = s->spec->task ? s->spec->task->placement : NULL;
    if (s->spec->mode_case == SHOAL__SERVICE_SPEC__MODE_REPLICATED && p && p->max_replicas)
        return arena_printf(a, "%llu/%llu (max %llu per node)", (unsigned long long)sum->running,
                            (unsigned long long)sum->desired, (unsigned long long)p->max_replicas);
    return arena_printf(a, "%llu/%llu", (unsigned long long)sum->running,
                        (unsigned long long)sum->desired);
}

static const char *protocol_name(int protocol) {
    return protocol == SHOAL__PORT_CONFIG__PROTOCOL__UDP    ? "udp"
           : protocol == SHOAL__PORT_CONFIG__PROTOCOL__SCTP ? "sctp"
                                                            : "tcp";
}

/* docker's PORTS column: "*:8080->80/tcp" per published port ("host" ports say so). The
 * endpoint the orchestrator resolved, else the spec's. */
static const char *service_ports_column(arena_t *a, const Shoal__Service *s) {
    Shoal__PortConfig **ports = NULL;
    size_t n = 0;
    if (s->endpoint && s->endpoint->n_ports) {
        ports = s->endpoint->ports;
        n = s->endpoint->n_ports;
    } else if (s->spec->endpoint) {
        ports = s->spec->endpoint->ports;
        n = s->spec->endpoint->n_ports;
    }
    const char *out = "";
    for (size_t i = 0; i < n; i++) {
        const Shoal__PortConfig *p = ports[i];
        if (!p->published_port)
            continue;
        out = arena_printf(a, "%s%s*:%u->%u/%s%s", out, *out ? ", " : "", p->published_port,
                           p->target_port, protocol_name(p->protocol),
                           p->publish_mode == SHOAL__PORT_CONFIG__PUBLISH_MODE__HOST ? " (host)"
                                                                                     : "");
    }
    return out;
}

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
    /* Jobs show their completions, which the summary does not carry: count them from the
     * tasks (one TaskList for every job). */
    Shoal__Orchestrator__TaskListResponse *tasks = NULL;
    for (size_t i = 0; i < n && !tasks; i++) {
        if (!spec_is_job(list[i]->service->spec))
            continue;
        Shoal__Orchestrator__TaskListRequest treq = SHOAL__ORCHESTRATOR__TASK_LIST_REQUEST__INIT;
        if (cli_call_or_fail(cli, cli->arena, "orchestrator.TaskList", &treq.base,
                             &shoal__orchestrator__task_list_response__descriptor, &tasks) < 0)
            return 1;
    }
    static const char *const headers[] = {"ID", "NAME", "MODE", "REPLICAS", "IMAGE", "PORTS"};
    table_t *t = table_new(headers, 6);
    for (size_t i = 0; i < n; i++) {
        const Shoal__Service *s = list[i]->service;
        const char *row[] = {
            id_short(cli->arena, s->meta->id, no_trunc),
            service_display_name(s),
            spec_mode_name(s->spec),
            service_replicas_column(cli->arena, list[i], tasks),
            spec_image(s->spec),
            service_ports_column(cli->arena, s),
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

bool task_has_healthcheck(const Shoal__Task *t) {
    const Shoal__HealthConfig *h =
        t->spec && t->spec->container ? t->spec->container->healthcheck : NULL;
    return h && h->n_test > 0 && h->test[0] && strcmp(h->test[0], "NONE") != 0;
}

bool task_counts_running(const Shoal__Task *t) {
    return t->status && t->status->state == SHOAL__TASK_STATE__RUNNING &&
           (!task_has_healthcheck(t) || t->status->healthy);
}

/* docker's CURRENT STATE, "Running 5 seconds ago", with the health of a task that has a check in
 * the words of `docker ps`: "Running 5 seconds ago (healthy)", "Starting 2 seconds ago (health:
 * starting)". A task counts as running only once healthy, so an unhealthy one ends FAILED and
 * its error says why. */
static const char *task_current_state(arena_t *a, const Shoal__Task *t, int state, int64_t age_ms) {
    char *ago = arena_strdup(a, human_duration(a, age_ms));
    ago[0] = (char)tolower((unsigned char)ago[0]);
    const char *health = "";
    if (task_has_healthcheck(t) &&
        (state == SHOAL__TASK_STATE__STARTING || state == SHOAL__TASK_STATE__RUNNING))
        health = t->status && t->status->healthy ? " (healthy)" : " (health: starting)";
    return arena_printf(a, "%s %s ago%s", task_state_name(state, false), ago, health);
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
            task_current_state(a, task, state, now - ts),
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
    printf("%-19s %s\n", key, value);
}

/* A duration as Go prints it (docker shows time.Duration): "500ms", "10s", "1m30s", "1h0m0s". */
static const char *go_duration(arena_t *a, int64_t ms) {
    if (ms <= 0)
        return "0s";
    if (ms < 1000)
        return arena_printf(a, "%lldms", (long long)ms);
    int64_t h = ms / 3600000, m = ms / 60000 % 60, sms = ms % 60000;
    const char *sec = sms % 1000 ? arena_printf(a, "%lld.%03lld", (long long)(sms / 1000),
                                                (long long)(sms % 1000))
                                 : arena_printf(a, "%lld", (long long)(sms / 1000));
    if (strchr(sec, '.')) { /* "1.500" -> "1.5" */
        char *end = (char *)sec + strlen(sec) - 1;
        while (*end == '0')
            *end-- = '\0';
    }
    if (h)
        return arena_printf(a, "%lldh%lldm%ss", (long long)h, (long long)m, sec);
    if (m)
        return arena_printf(a, "%lldm%ss", (long long)m, sec);
    return arena_printf(a, "%ss", sec);
}

/* docker's units.BytesSize: "64MiB", "1.5GiB", "512B". */
static const char *bytes_size(arena_t *a, int64_t bytes) {
    static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
    double v = (double)bytes;
    size_t u = 0;
    while (v >= 1024 && u + 1 < sizeof units / sizeof units[0]) {
        v /= 1024;
        u++;
    }
    return arena_printf(a, "%.4g%s", v, units[u]);
}

/* "UPDATING" -> "updating", "ROLLBACK_STARTED" -> "rollback_started" (docker's UpdateState). */
static const char *update_state_name(arena_t *a, int state) {
    const ProtobufCEnumValue *v =
        protobuf_c_enum_descriptor_get_value(&shoal__update_status__state__descriptor, state);
    char *name = arena_strdup(a, v ? v->name : "unknown");
    for (char *c = name; *c; c++)
        *c = (char)tolower((unsigned char)*c);
    return name;
}

static const char *failure_action_name(int action) {
    return action == SHOAL__UPDATE_CONFIG__FAILURE_ACTION__CONTINUE   ? "continue"
           : action == SHOAL__UPDATE_CONFIG__FAILURE_ACTION__ROLLBACK ? "rollback"
                                                                      : "pause";
}

static const char *joined(arena_t *a, char *const *v, size_t n, const char *sep) {
    const char *out = "";
    for (size_t i = 0; i < n; i++)
        out = arena_printf(a, "%s%s%s", out, i ? sep : "", v[i]);
    return out;
}

static void print_update_config(arena_t *a, const char *title, const char *order_key,
                                const Shoal__UpdateConfig *u) {
    printf("%s\n", title);
    pretty_kv(" Parallelism:", arena_printf(a, "%llu", (unsigned long long)u->parallelism));
    if (u->delay_ms > 0)
        pretty_kv(" Delay:", go_duration(a, u->delay_ms));
    pretty_kv(" On failure:", failure_action_name(u->failure_action));
    if (u->monitor_ms > 0)
        pretty_kv(" Monitoring Period:", go_duration(a, u->monitor_ms));
    pretty_kv(" Max failure ratio:", arena_printf(a, "%g", (double)u->max_failure_ratio));
    pretty_kv(order_key,
              u->order == SHOAL__UPDATE_CONFIG__ORDER__START_FIRST ? "start-first" : "stop-first");
}

/* docker's `service inspect --pretty` layout, plus what shoal adds (spec version, strategy,
 * platforms, restart policy, task history). */
static void print_service_pretty(arena_t *a, const Shoal__Service *svc) {
    const Shoal__ServiceSpec *s = svc->spec;
    int64_t now = clock_wall_ms();
    pretty_kv("ID:", svc->meta->id);
    pretty_kv("Name:", service_display_name(svc));
    if (s->annotations && s->annotations->n_labels) {
        printf("Labels:\n");
        for (size_t i = 0; i < s->annotations->n_labels; i++)
            printf(" %s=%s\n", s->annotations->labels[i]->key, s->annotations->labels[i]->value);
    }
    switch (s->mode_case) {
    case SHOAL__SERVICE_SPEC__MODE_REPLICATED:
        pretty_kv("Service Mode:", "Replicated");
        pretty_kv(" Replicas:",
                  arena_printf(a, "%llu", (unsigned long long)s->replicated->replicas));
        break;
    case SHOAL__SERVICE_SPEC__MODE_GLOBAL:
        pretty_kv("Service Mode:", "Global");
        break;
    case SHOAL__SERVICE_SPEC__MODE_REPLICATED_JOB:
        pretty_kv("Service Mode:", "Replicated Job");
        pretty_kv(" Max Concurrent:",
                  arena_printf(a, "%llu", (unsigned long long)s->replicated_job->max_concurrent));
        pretty_kv(
            " Total Completions:",
            arena_printf(a, "%llu", (unsigned long long)s->replicated_job->total_completions));
        break;
    case SHOAL__SERVICE_SPEC__MODE_GLOBAL_JOB:
        pretty_kv("Service Mode:", "Global Job");
        break;
    default:
        pretty_kv("Service Mode:", "");
    }
    pretty_kv("Spec Version:", arena_printf(a, "%llu", (unsigned long long)svc->spec_version));
    const Shoal__UpdateStatus *us = svc->update_status;
    if (us && us->state) {
        printf("UpdateStatus:\n");
        pretty_kv(" State:", update_state_name(a, us->state));
        if (us->started_at_ms)
            pretty_kv(" Started:",
                      arena_printf(a, "%s ago", human_duration(a, now - us->started_at_ms)));
        if (us->completed_at_ms && (us->state == SHOAL__UPDATE_STATUS__STATE__COMPLETED ||
                                    us->state == SHOAL__UPDATE_STATUS__STATE__ROLLBACK_COMPLETED))
            pretty_kv(" Completed:",
                      arena_printf(a, "%s ago", human_duration(a, now - us->completed_at_ms)));
        pretty_kv(" Message:", us->message ? us->message : "");
    }
    const Shoal__TaskSpec *t = s->task;
    const Shoal__Placement *pl = t ? t->placement : NULL;
    printf("Placement:\n");
    pretty_kv(" Strategy:", pl && pl->strategy && *pl->strategy ? pl->strategy : "spread");
    if (pl && pl->n_constraints)
        pretty_kv(" Constraints:",
                  arena_printf(a, "[%s]", joined(a, pl->constraints, pl->n_constraints, " ")));
    if (pl && pl->n_preferences) {
        const char *prefs = "";
        for (size_t i = 0; i < pl->n_preferences; i++)
            prefs = arena_printf(a, "%s%sspread=%s", prefs, i ? " " : "",
                                 pl->preferences[i]->spread_descriptor);
        pretty_kv(" Preferences:", arena_printf(a, "[%s]", prefs));
    }
    if (pl && pl->n_platforms) {
        const char *plats = "";
        for (size_t i = 0; i < pl->n_platforms; i++) {
            const Shoal__Platform *p = pl->platforms[i];
            plats = arena_printf(a, "%s%s%s%s%s", plats, i ? " " : "", p->os ? p->os : "",
                                 p->architecture && *p->architecture ? "/" : "",
                                 p->architecture ? p->architecture : "");
        }
        pretty_kv(" Platforms:", arena_printf(a, "[%s]", plats));
    }
    if (pl && pl->max_replicas)
        pretty_kv(" Max Replicas Per Node:",
                  arena_printf(a, "%llu", (unsigned long long)pl->max_replicas));
    if (s->update)
        print_update_config(a, "UpdateConfig:", " Update order:", s->update);
    if (s->rollback)
        print_update_config(a, "RollbackConfig:", " Rollback order:", s->rollback);
    if (t && t->restart) {
        printf("RestartPolicy:\n");
        pretty_kv(" Condition:",
                  t->restart->condition == SHOAL__RESTART_POLICY__CONDITION__NONE ? "none"
                  : t->restart->condition == SHOAL__RESTART_POLICY__CONDITION__ON_FAILURE
                      ? "on-failure"
                      : "any");
        pretty_kv(" Delay:", go_duration(a, t->restart->delay_ms));
        pretty_kv(" Max attempts:",
                  arena_printf(a, "%llu", (unsigned long long)t->restart->max_attempts));
        if (t->restart->window_ms > 0)
            pretty_kv(" Window:", go_duration(a, t->restart->window_ms));
    }
    if (s->task_history_limit)
        pretty_kv("Task History Limit:",
                  arena_printf(a, "%llu", (unsigned long long)s->task_history_limit));
    if (t && t->container) {
        const Shoal__ContainerSpec *c = t->container;
        printf("ContainerSpec:\n");
        pretty_kv(" Image:", c->image);
        if (c->n_command)
            pretty_kv(" Command:", joined(a, c->command, c->n_command, " "));
        if (c->n_args)
            pretty_kv(" Args:", joined(a, c->args, c->n_args, " "));
        if (c->n_env)
            pretty_kv(" Env:", joined(a, c->env, c->n_env, " "));
        if (c->dir && *c->dir)
            pretty_kv(" Dir:", c->dir);
        if (c->init)
            pretty_kv(" Init:", "true");
        if (c->user && *c->user)
            pretty_kv(" User:", c->user);
        if (c->stop_grace_period_ms)
            pretty_kv(" StopGracePeriod:", go_duration(a, c->stop_grace_period_ms));
    }
    if (t && t->container && t->container->n_mounts) {
        printf("Mounts:\n");
        for (size_t i = 0; i < t->container->n_mounts; i++) {
            const Shoal__Mount *m = t->container->mounts[i];
            static const char *const types[] = {"bind", "volume", "tmpfs"};
            pretty_kv(" Target:", m->target);
            pretty_kv("  Source:", m->source ? m->source : "");
            pretty_kv("  ReadOnly:", m->read_only ? "true" : "false");
            pretty_kv("  Type:", (unsigned)m->type < 3 ? types[m->type] : "?");
        }
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
                pretty_kv("  CPU:", arena_printf(a, "%g", (double)rs[i]->nano_cpus / 1e9));
            if (rs[i]->memory_bytes)
                pretty_kv("  Memory:", bytes_size(a, rs[i]->memory_bytes));
        }
    }
    pretty_kv("Endpoint Mode:", s->endpoint && s->endpoint->mode ? "dnsrr" : "vip");
    const Shoal__Endpoint *ep = svc->endpoint;
    Shoal__PortConfig *const *ports = ep && ep->n_ports ? ep->ports
                                      : s->endpoint     ? s->endpoint->ports
                                                        : NULL;
    size_t nports = ep && ep->n_ports ? ep->n_ports : s->endpoint ? s->endpoint->n_ports : 0;
    if (nports) {
        printf("Ports:\n");
        for (size_t i = 0; i < nports; i++) {
            const Shoal__PortConfig *p = ports[i];
            printf(" PublishedPort = %u\n", p->published_port);
            printf("  Protocol = %s\n", protocol_name(p->protocol));
            printf("  TargetPort = %u\n", p->target_port);
            printf("  PublishMode = %s\n",
                   p->publish_mode == SHOAL__PORT_CONFIG__PUBLISH_MODE__HOST ? "host" : "ingress");
        }
    }
    const Shoal__HealthConfig *h = t && t->container ? t->container->healthcheck : NULL;
    if (h) {
        printf(" Healthcheck:\n");
        printf("  Interval = %s\n", go_duration(a, h->interval_ms));
        printf("  Retries = %d\n", h->retries);
        printf("  StartPeriod = %s\n", go_duration(a, h->start_period_ms));
        printf("  Timeout = %s\n", go_duration(a, h->timeout_ms));
        if (h->n_test) {
            printf("  Tests:\n");
            for (size_t i = 0; i < h->n_test; i++)
                printf("\t Test = %s\n", h->test[i]);
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
    uint64_t n = *(uint64_t *)ctx;
    if (svc->spec->mode_case == SHOAL__SERVICE_SPEC__MODE_REPLICATED && svc->spec->replicated) {
        svc->spec->replicated->replicas = n;
        return 0;
    }
    /* docker: a replicated job scales its total completions. */
    if (svc->spec->mode_case == SHOAL__SERVICE_SPEC__MODE_REPLICATED_JOB &&
        svc->spec->replicated_job && n > 0) {
        svc->spec->replicated_job->total_completions = n;
        return 0;
    }
    if (svc->spec->mode_case == SHOAL__SERVICE_SPEC__MODE_REPLICATED_JOB)
        cli_fail(cli, "service \"%s\": a replicated job needs at least 1 completion",
                 service_display_name(svc));
    else
        cli_fail(cli,
                 "service \"%s\": scale works on replicated services and replicated jobs only "
                 "(mode is %s)",
                 service_display_name(svc), spec_mode_name(svc->spec));
    return -1;
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
                             .summary = "Scale one or more replicated services (a replicated "
                                        "job: its total completions).",
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
                      wait_opts_t *wo) {
    if (cli_connect(cli) < 0)
        return 1;
    Shoal__Service *svc;
    if (service_modify(cli, cli->arena, ref, rollback ? NULL : edit_update, u, rollback, &svc) < 0)
        return 1;
    printf("%s\n", ref);
    fflush(stdout);
    if (detach)
        return 0;
    wo->track_update = true;
    wo->manual_rollback = rollback;
    if (svc->update_status) {
        wo->status_state = svc->update_status->state;
        wo->status_started_ms = svc->update_status->started_at_ms;
    }
    return service_wait_converged(cli, svc->meta->id, service_display_name(svc), wo);
}

int cmd_service_update(cli_t *cli, int argc, char **argv) {
    spec_flags_t o = {0};
    bool force = false, rollback = false, detach = false, quiet = false, dry_run = false;
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
        {"platform-add", 0, FLAG_LIST, &o.platform_add, NULL, NULL, "OS[/ARCH]",
         "Add a platform the tasks may run on"},
        {"platform-rm", 0, FLAG_LIST, &o.platform_rm, NULL, NULL, "OS[/ARCH]", "Remove a platform"},
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
        {"dry-run", 0, FLAG_BOOL, &dry_run, NULL, NULL, NULL,
         "Print the spec that would be written (JSON) and exit"},
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
    if (dry_run) {
        /* The service as it is now, edited by these flags; nothing is written. */
        Shoal__Service *svc;
        if (cli_connect(cli) < 0 || service_lookup(cli, cli->arena, args.v[0], &svc) < 0)
            return 1;
        if (rollback) {
            if (!svc->previous_spec)
                return cli_fail(cli, "service \"%s\" has no previous spec to roll back to",
                                args.v[0]);
            return print_json_message(cli, &svc->previous_spec->base, stdout) < 0;
        }
        if (edit_update(cli, cli->arena, svc, &u) < 0)
            return 1;
        return print_json_message(cli, &svc->spec->base, stdout) < 0;
    }
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
