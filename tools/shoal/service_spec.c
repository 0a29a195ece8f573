/* service_spec — turns `service create` / `service update` flags into a shoal.ServiceSpec.
 *
 * One function, spec_apply(), edits a spec in place with every flag the user gave and leaves
 * everything else alone; create starts from spec_new_default(), update from the spec read with
 * ServiceInspect, so both commands mean the same thing by the same flag. Sub-messages are
 * created on demand in the command's arena (the decoded spec lives there too).
 *
 * Syntaxes follow the docker CLI: env and labels K=V (the last value of a key wins, -rm takes the
 * key), --publish [PUBLISHED:]TARGET[/PROTO] or published=,target=,protocol=,mode=, --mount
 * type=,source=,target=,readonly, --placement-pref spread=node.labels.X (repeatable: nested in
 * the order given), --platform OS[/ARCH], --entrypoint and --args split like a shell would
 * (quotes, backslashes; no expansion). Modes as docker's: --replicas of a replicated job is its
 * total completions; jobs have no update or rollback config (a changed job runs again), so
 * the update and rollback flags are refused for them; --max-concurrent is for replicated jobs. */
#include <ctype.h>
#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "service.h"

#define PB_NEW(arena, type, init_fn)                                                               \
    ({                                                                                             \
        type *m_ = arena_alloc((arena), sizeof(type));                                             \
        init_fn(m_);                                                                               \
        m_;                                                                                        \
    })

/* ---- sub-messages on demand ------------------------------------------------------------- */

static Shoal__TaskSpec *ensure_task(arena_t *a, Shoal__ServiceSpec *s) {
    if (!s->task)
        s->task = PB_NEW(a, Shoal__TaskSpec, shoal__task_spec__init);
    return s->task;
}

static Shoal__ContainerSpec *ensure_container(arena_t *a, Shoal__ServiceSpec *s) {
    Shoal__TaskSpec *t = ensure_task(a, s);
    if (!t->container)
        t->container = PB_NEW(a, Shoal__ContainerSpec, shoal__container_spec__init);
    return t->container;
}

static Shoal__Resources *ensure_resources(arena_t *a, Shoal__ServiceSpec *s, bool limits) {
    Shoal__TaskSpec *t = ensure_task(a, s);
    if (!t->resources)
        t->resources = PB_NEW(a, Shoal__ResourceRequirements, shoal__resource_requirements__init);
    Shoal__Resources **r = limits ? &t->resources->limits : &t->resources->reservations;
    if (!*r)
        *r = PB_NEW(a, Shoal__Resources, shoal__resources__init);
    return *r;
}

static Shoal__RestartPolicy *ensure_restart(arena_t *a, Shoal__ServiceSpec *s) {
    Shoal__TaskSpec *t = ensure_task(a, s);
    if (!t->restart)
        t->restart = PB_NEW(a, Shoal__RestartPolicy, shoal__restart_policy__init);
    return t->restart;
}

static Shoal__Placement *ensure_placement(arena_t *a, Shoal__ServiceSpec *s) {
    Shoal__TaskSpec *t = ensure_task(a, s);
    if (!t->placement)
        t->placement = PB_NEW(a, Shoal__Placement, shoal__placement__init);
    return t->placement;
}

/* docker's defaults for --update-* and --rollback-*: one task at a time, each watched for 5 s
 * (a task that fails within that window counts as a failed update), pause on failure,
 * stop-first. */
#define DEFAULT_UPDATE_PARALLELISM 1
#define DEFAULT_UPDATE_MONITOR_MS  5000

static Shoal__UpdateConfig *ensure_update(arena_t *a, Shoal__UpdateConfig **u) {
    if (!*u) {
        *u = PB_NEW(a, Shoal__UpdateConfig, shoal__update_config__init);
        (*u)->parallelism = DEFAULT_UPDATE_PARALLELISM;
        (*u)->monitor_ms = DEFAULT_UPDATE_MONITOR_MS;
    }
    return *u;
}

static Shoal__Annotations *ensure_annotations(arena_t *a, Shoal__ServiceSpec *s) {
    if (!s->annotations)
        s->annotations = PB_NEW(a, Shoal__Annotations, shoal__annotations__init);
    return s->annotations;
}

static Shoal__EndpointSpec *ensure_endpoint(arena_t *a, Shoal__ServiceSpec *s) {
    if (!s->endpoint)
        s->endpoint = PB_NEW(a, Shoal__EndpointSpec, shoal__endpoint_spec__init);
    return s->endpoint;
}

static Shoal__HealthConfig *ensure_health(arena_t *a, Shoal__ServiceSpec *s) {
    Shoal__ContainerSpec *c = ensure_container(a, s);
    if (!c->healthcheck)
        c->healthcheck = PB_NEW(a, Shoal__HealthConfig, shoal__health_config__init);
    return c->healthcheck;
}

Shoal__ServiceSpec *spec_new_default(arena_t *a, enum spec_mode mode) {
    Shoal__ServiceSpec *s = PB_NEW(a, Shoal__ServiceSpec, shoal__service_spec__init);
    ensure_annotations(a, s);
    ensure_container(a, s);
    bool job = mode == SPEC_REPLICATED_JOB || mode == SPEC_GLOBAL_JOB;
    ensure_restart(a, s)->condition =
        job ? SHOAL__RESTART_POLICY__CONDITION__ON_FAILURE : SHOAL__RESTART_POLICY__CONDITION__ANY;
    if (!job) {
        ensure_update(a, &s->update);
        ensure_update(a, &s->rollback);
    }
    switch (mode) {
    case SPEC_REPLICATED:
        s->mode_case = SHOAL__SERVICE_SPEC__MODE_REPLICATED;
        s->replicated = PB_NEW(a, Shoal__ReplicatedService, shoal__replicated_service__init);
        s->replicated->replicas = 1;
        break;
    case SPEC_GLOBAL:
        s->mode_case = SHOAL__SERVICE_SPEC__MODE_GLOBAL;
        s->global = PB_NEW(a, Shoal__GlobalService, shoal__global_service__init);
        break;
    case SPEC_REPLICATED_JOB:
        s->mode_case = SHOAL__SERVICE_SPEC__MODE_REPLICATED_JOB;
        s->replicated_job = PB_NEW(a, Shoal__ReplicatedJob, shoal__replicated_job__init);
        s->replicated_job->max_concurrent = 1;
        s->replicated_job->total_completions = 1;
        break;
    case SPEC_GLOBAL_JOB:
        s->mode_case = SHOAL__SERVICE_SPEC__MODE_GLOBAL_JOB;
        s->global_job = PB_NEW(a, Shoal__GlobalJob, shoal__global_job__init);
        break;
    }
    return s;
}

const char *spec_mode_name(const Shoal__ServiceSpec *s) {
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

bool spec_is_job(const Shoal__ServiceSpec *s) {
    return s && (s->mode_case == SHOAL__SERVICE_SPEC__MODE_REPLICATED_JOB ||
                 s->mode_case == SHOAL__SERVICE_SPEC__MODE_GLOBAL_JOB);
}

/* ---- repeated fields -------------------------------------------------------------------- */

static size_t key_len(const char *kv) {
    const char *eq = strchr(kv, '=');
    return eq ? (size_t)(eq - kv) : strlen(kv);
}

static bool key_matches(const char *kv, const char *key, size_t klen) {
    return key_len(kv) == klen && !strncmp(kv, key, klen);
}

/* "K=V" strings: drop every entry with the key of `key_or_kv`. */
static void kv_remove(char **v, size_t *n, const char *key_or_kv) {
    size_t klen = key_len(key_or_kv), out = 0;
    for (size_t i = 0; i < *n; i++)
        if (!key_matches(v[i], key_or_kv, klen))
            v[out++] = v[i];
    *n = out;
}

/* Sets K=V in place when K is there (keeping the order users see), else appends. */
static void kv_set(arena_t *a, char ***v, size_t *n, const char *kv) {
    size_t klen = key_len(kv);
    for (size_t i = 0; i < *n; i++)
        if (key_matches((*v)[i], kv, klen)) {
            (*v)[i] = arena_strdup(a, kv);
            return;
        }
    ARENA_PUSH(a, v, n, arena_strdup(a, kv));
}

static void str_remove(char **v, size_t *n, const char *s) {
    size_t out = 0;
    for (size_t i = 0; i < *n; i++)
        if (strcmp(v[i], s) != 0)
            v[out++] = v[i];
    *n = out;
}

static void str_add_unique(arena_t *a, char ***v, size_t *n, const char *s) {
    for (size_t i = 0; i < *n; i++)
        if (!strcmp((*v)[i], s))
            return;
    ARENA_PUSH(a, v, n, arena_strdup(a, s));
}

static void labels_remove(Shoal__Label **v, size_t *n, const char *key_or_kv) {
    size_t klen = key_len(key_or_kv), out = 0;
    for (size_t i = 0; i < *n; i++)
        if (!(strlen(v[i]->key) == klen && !strncmp(v[i]->key, key_or_kv, klen)))
            v[out++] = v[i];
    *n = out;
}

static void labels_set(arena_t *a, Shoal__Label ***v, size_t *n, const char *kv) {
    labels_remove(*v, n, kv);
    Shoal__Label *l = PB_NEW(a, Shoal__Label, shoal__label__init);
    size_t klen = key_len(kv);
    l->key = arena_printf(a, "%.*s", (int)klen, kv);
    l->value = arena_strdup(a, kv[klen] == '=' ? kv + klen + 1 : "");
    ARENA_PUSH(a, v, n, l);
}

/* Splits a command line like a POSIX shell would split words (no expansion). -EINVAL on an
 * unterminated quote. */
static int shell_split(arena_t *a, const char *line, char ***ret, size_t *ret_n) {
    *ret = NULL;
    *ret_n = 0;
    size_t len = strlen(line);
    const char *p = line;
    while (*p) {
        while (isspace((unsigned char)*p))
            p++;
        if (!*p)
            break;
        char *word = arena_alloc(a, len + 1);
        size_t w = 0;
        while (*p && !isspace((unsigned char)*p)) {
            if (*p == '\'') {
                const char *end = strchr(p + 1, '\'');
                if (!end)
                    return -EINVAL;
                memcpy(word + w, p + 1, (size_t)(end - p - 1));
                w += (size_t)(end - p - 1);
                p = end + 1;
            } else if (*p == '"') {
                p++;
                while (*p && *p != '"') {
                    if (*p == '\\' && p[1] && strchr("\"\\$`", p[1]))
                        p++;
                    word[w++] = *p++;
                }
                if (*p != '"')
                    return -EINVAL;
                p++;
            } else if (*p == '\\' && p[1]) {
                word[w++] = p[1];
                p += 2;
            } else {
                word[w++] = *p++;
            }
        }
        word[w] = '\0';
        ARENA_PUSH(a, ret, ret_n, word);
    }
    return 0;
}

/* ---- ports, mounts, preferences --------------------------------------------------------- */

static int parse_port_number(const char *s, size_t len, uint32_t *ret) {
    char buf[16];
    uint64_t v;
    if (len == 0 || len >= sizeof buf)
        return -EINVAL;
    memcpy(buf, s, len);
    buf[len] = '\0';
    if (parse_uint(buf, &v) < 0 || v == 0 || v > 65535)
        return -EINVAL;
    *ret = (uint32_t)v;
    return 0;
}

static int parse_protocol(const char *s, Shoal__PortConfig__Protocol *ret) {
    int i = choice_index("tcp|udp|sctp", s);
    if (i < 0)
        return -EINVAL;
    *ret = (Shoal__PortConfig__Protocol)i;
    return 0;
}

/* Calls fn(key, value) for each "k=v" (or bare "k") of a comma-separated option list. */
typedef int(option_fn)(void *ctx, const char *key, const char *value);
static int options_each(arena_t *a, const char *text, option_fn *fn, void *ctx) {
    char *copy = arena_strdup(a, text), *save = NULL;
    for (char *item = strtok_r(copy, ",", &save); item; item = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(item, '=');
        if (eq)
            *eq = '\0';
        int r = fn(ctx, item, eq ? eq + 1 : NULL);
        if (r < 0)
            return r;
    }
    return 0;
}

static int port_option(void *ctx, const char *key, const char *value) {
    Shoal__PortConfig *p = ctx;
    if (!value)
        return -EINVAL;
    if (!strcmp(key, "published"))
        return parse_port_number(value, strlen(value), &p->published_port);
    if (!strcmp(key, "target"))
        return parse_port_number(value, strlen(value), &p->target_port);
    if (!strcmp(key, "protocol"))
        return parse_protocol(value, &p->protocol);
    if (!strcmp(key, "mode")) {
        int i = choice_index("ingress|host", value);
        if (i < 0)
            return -EINVAL;
        p->publish_mode = (Shoal__PortConfig__PublishMode)i;
        return 0;
    }
    if (!strcmp(key, "name")) {
        p->name = (char *)value;
        return 0;
    }
    return -EINVAL;
}

static int parse_port(arena_t *a, const char *text, Shoal__PortConfig **ret) {
    Shoal__PortConfig *p = PB_NEW(a, Shoal__PortConfig, shoal__port_config__init);
    if (strchr(text, '=')) {
        if (options_each(a, text, port_option, p) < 0 || p->target_port == 0)
            return -EINVAL;
    } else {
        const char *slash = strchr(text, '/');
        size_t len = slash ? (size_t)(slash - text) : strlen(text);
        const char *colon = memchr(text, ':', len);
        if (slash && parse_protocol(slash + 1, &p->protocol) < 0)
            return -EINVAL;
        if (colon) {
            if (parse_port_number(text, (size_t)(colon - text), &p->published_port) < 0 ||
                parse_port_number(colon + 1, len - (size_t)(colon - text) - 1, &p->target_port) < 0)
                return -EINVAL;
        } else if (parse_port_number(text, len, &p->target_port) < 0) {
            return -EINVAL;
        }
    }
    *ret = p;
    return 0;
}

static int mount_option(void *ctx, const char *key, const char *value) {
    Shoal__Mount *m = ctx;
    if (!strcmp(key, "type")) {
        int i = value ? choice_index("bind|volume|tmpfs", value) : -1;
        if (i < 0)
            return -EINVAL;
        m->type = (Shoal__Mount__Type)i;
    } else if (!strcmp(key, "source") || !strcmp(key, "src")) {
        m->source = (char *)(value ? value : "");
    } else if (!strcmp(key, "target") || !strcmp(key, "dst") || !strcmp(key, "destination")) {
        if (!value || !*value)
            return -EINVAL;
        m->target = (char *)value;
    } else if (!strcmp(key, "readonly") || !strcmp(key, "ro")) {
        if (!value || !strcmp(value, "true") || !strcmp(value, "1"))
            m->read_only = true;
        else if (!strcmp(value, "false") || !strcmp(value, "0"))
            m->read_only = false;
        else
            return -EINVAL;
    } else {
        return -EINVAL;
    }
    return 0;
}

static int parse_mount(arena_t *a, const char *text, Shoal__Mount **ret) {
    Shoal__Mount *m = PB_NEW(a, Shoal__Mount, shoal__mount__init);
    m->type = SHOAL__MOUNT__TYPE__VOLUME;
    if (options_each(a, text, mount_option, m) < 0 || !m->target || !*m->target)
        return -EINVAL;
    *ret = m;
    return 0;
}

/* "linux", "linux/amd64": an OS and an optional architecture, as Go and docker name them. */
static bool platform_word_ok(const char *s, size_t len) {
    if (len == 0)
        return false;
    for (size_t i = 0; i < len; i++)
        if (!isalnum((unsigned char)s[i]) && s[i] != '_' && s[i] != '-' && s[i] != '.')
            return false;
    return true;
}

static int parse_platform(arena_t *a, const char *text, Shoal__Platform **ret) {
    const char *slash = strchr(text, '/');
    size_t oslen = slash ? (size_t)(slash - text) : strlen(text);
    if (!platform_word_ok(text, oslen) ||
        (slash && !platform_word_ok(slash + 1, strlen(slash + 1))))
        return -EINVAL;
    Shoal__Platform *p = PB_NEW(a, Shoal__Platform, shoal__platform__init);
    p->os = arena_strndup(a, text, oslen);
    p->architecture = arena_strdup(a, slash ? slash + 1 : "");
    *ret = p;
    return 0;
}

static bool platform_equal(const Shoal__Platform *x, const Shoal__Platform *y) {
    return !strcmp(x->os ? x->os : "", y->os ? y->os : "") &&
           !strcmp(x->architecture ? x->architecture : "", y->architecture ? y->architecture : "");
}

/* The first update or rollback flag given, for "not allowed for jobs"; NULL when none. */
static const char *update_flag_given(const spec_flags_t *f) {
    const struct {
        bool given;
        const char *name;
    } flags[] = {
        {f->update_parallelism_given, "update-parallelism"},
        {f->update_delay_given, "update-delay"},
        {f->update_monitor_given, "update-monitor"},
        {f->update_failure_action_given, "update-failure-action"},
        {f->update_max_failure_ratio_given, "update-max-failure-ratio"},
        {f->update_order_given, "update-order"},
        {f->rollback_parallelism_given, "rollback-parallelism"},
        {f->rollback_delay_given, "rollback-delay"},
        {f->rollback_monitor_given, "rollback-monitor"},
        {f->rollback_failure_action_given, "rollback-failure-action"},
        {f->rollback_max_failure_ratio_given, "rollback-max-failure-ratio"},
        {f->rollback_order_given, "rollback-order"},
    };
    for (size_t i = 0; i < sizeof flags / sizeof flags[0]; i++)
        if (flags[i].given)
            return flags[i].name;
    return NULL;
}

/* The first health flag given, for the --no-healthcheck conflict; NULL when none. */
static const char *health_flag_given(const spec_flags_t *f) {
    if (f->health_cmd_given)
        return "health-cmd";
    if (f->health_interval_given)
        return "health-interval";
    if (f->health_timeout_given)
        return "health-timeout";
    if (f->health_start_period_given)
        return "health-start-period";
    if (f->health_retries_given)
        return "health-retries";
    return NULL;
}

/* ---- apply ------------------------------------------------------------------------------ */

#define FAIL_FLAG(cli, flag, ...) (cli_fail_cmd((cli), "--" flag ": " __VA_ARGS__), -1)

int spec_apply(cli_t *cli, arena_t *a, Shoal__ServiceSpec *s, const spec_flags_t *f) {
    Shoal__ContainerSpec *c = ensure_container(a, s);
    Shoal__Annotations *ann = ensure_annotations(a, s);

    if (f->image)
        c->image = (char *)f->image;
    if (f->args.n) {
        c->args = (char **)f->args.v;
        c->n_args = f->args.n;
    }
    if (f->args_given && shell_split(a, f->args_line, &c->args, &c->n_args) < 0)
        return FAIL_FLAG(cli, "args", "unterminated quote in \"%s\"", f->args_line);
    if (f->entrypoint_given && shell_split(a, f->entrypoint, &c->command, &c->n_command) < 0)
        return FAIL_FLAG(cli, "entrypoint", "unterminated quote in \"%s\"", f->entrypoint);

    for (size_t i = 0; i < f->env_rm.n; i++)
        kv_remove(c->env, &c->n_env, f->env_rm.v[i]);
    for (size_t i = 0; i < f->env_add.n; i++) {
        if (f->env_add.v[i][0] == '=' || !f->env_add.v[i][0])
            return FAIL_FLAG(cli, "env", "must be KEY=VALUE (got \"%s\")", f->env_add.v[i]);
        kv_set(a, &c->env, &c->n_env, f->env_add.v[i]);
    }
    for (size_t i = 0; i < f->label_rm.n; i++)
        labels_remove(ann->labels, &ann->n_labels, f->label_rm.v[i]);
    for (size_t i = 0; i < f->label_add.n; i++) {
        if (f->label_add.v[i][0] == '=' || !f->label_add.v[i][0])
            return FAIL_FLAG(cli, "label", "must be KEY=VALUE (got \"%s\")", f->label_add.v[i]);
        labels_set(a, &ann->labels, &ann->n_labels, f->label_add.v[i]);
    }
    for (size_t i = 0; i < f->container_label_rm.n; i++)
        labels_remove(c->labels, &c->n_labels, f->container_label_rm.v[i]);
    for (size_t i = 0; i < f->container_label_add.n; i++) {
        if (f->container_label_add.v[i][0] == '=' || !f->container_label_add.v[i][0])
            return FAIL_FLAG(cli, "container-label", "must be KEY=VALUE (got \"%s\")",
                             f->container_label_add.v[i]);
        labels_set(a, &c->labels, &c->n_labels, f->container_label_add.v[i]);
    }

    if (f->max_replicas_given && (s->mode_case == SHOAL__SERVICE_SPEC__MODE_GLOBAL ||
                                  s->mode_case == SHOAL__SERVICE_SPEC__MODE_GLOBAL_JOB))
        return FAIL_FLAG(cli, "replicas-max-per-node",
                         "only for replicated services and replicated jobs (mode is %s)",
                         spec_mode_name(s));
    if (f->constraint_rm.n || f->constraint_add.n || f->placement_pref_rm.n ||
        f->placement_pref_add.n || f->max_replicas_given || f->platform_rm.n || f->platform_add.n ||
        f->placement_strategy_given) {
        Shoal__Placement *p = ensure_placement(a, s);
        for (size_t i = 0; i < f->constraint_rm.n; i++)
            str_remove(p->constraints, &p->n_constraints, f->constraint_rm.v[i]);
        for (size_t i = 0; i < f->constraint_add.n; i++) {
            const char *e = f->constraint_add.v[i];
            if (!strstr(e, "==") && !strstr(e, "!="))
                return FAIL_FLAG(cli, "constraint",
                                 "must be like node.labels.zone==a or node.role!=manager "
                                 "(got \"%s\")",
                                 e);
            str_add_unique(a, &p->constraints, &p->n_constraints, e);
        }
        for (size_t i = 0; i < f->placement_pref_rm.n; i++) {
            const char *r = f->placement_pref_rm.v[i];
            const char *desc = strncmp(r, "spread=", 7) ? r : r + 7;
            size_t out = 0;
            for (size_t j = 0; j < p->n_preferences; j++)
                if (strcmp(p->preferences[j]->spread_descriptor, desc) != 0)
                    p->preferences[out++] = p->preferences[j];
            p->n_preferences = out;
        }
        for (size_t i = 0; i < f->placement_pref_add.n; i++) {
            const char *r = f->placement_pref_add.v[i];
            if (strncmp(r, "spread=", 7) != 0 || !r[7])
                return FAIL_FLAG(cli, "placement-pref",
                                 "must be spread=node.labels.NAME (got \"%s\")", r);
            Shoal__PlacementPreference *pp =
                PB_NEW(a, Shoal__PlacementPreference, shoal__placement_preference__init);
            pp->spread_descriptor = arena_strdup(a, r + 7);
            ARENA_PUSH(a, &p->preferences, &p->n_preferences, pp);
        }
        if (f->max_replicas_given)
            p->max_replicas = f->max_replicas;
        if (f->placement_strategy_given) {
            static const char *const strategies[] = {"spread", "binpack", "random"};
            p->strategy = (char *)strategies[f->placement_strategy];
        }
        for (size_t i = 0; i < f->platform_rm.n; i++) {
            Shoal__Platform *rm;
            if (parse_platform(a, f->platform_rm.v[i], &rm) < 0)
                return FAIL_FLAG(cli, "platform-rm",
                                 "must be OS[/ARCH] like linux/amd64 (got \"%s\")",
                                 f->platform_rm.v[i]);
            size_t out = 0;
            for (size_t j = 0; j < p->n_platforms; j++)
                if (!platform_equal(p->platforms[j], rm))
                    p->platforms[out++] = p->platforms[j];
            p->n_platforms = out;
        }
        for (size_t i = 0; i < f->platform_add.n; i++) {
            Shoal__Platform *pl;
            if (parse_platform(a, f->platform_add.v[i], &pl) < 0)
                return FAIL_FLAG(cli, "platform", "must be OS[/ARCH] like linux/amd64 (got \"%s\")",
                                 f->platform_add.v[i]);
            bool dup = false;
            for (size_t j = 0; j < p->n_platforms; j++)
                dup = dup || platform_equal(p->platforms[j], pl);
            if (!dup)
                ARENA_PUSH(a, &p->platforms, &p->n_platforms, pl);
        }
    }

    if (f->publish_rm.n || f->publish_add.n || f->endpoint_mode_given) {
        Shoal__EndpointSpec *e = ensure_endpoint(a, s);
        for (size_t i = 0; i < f->publish_rm.n; i++) {
            Shoal__PortConfig *rm;
            if (parse_port(a, f->publish_rm.v[i], &rm) < 0)
                return FAIL_FLAG(cli, "publish-rm", "must be TARGET[/PROTOCOL] (got \"%s\")",
                                 f->publish_rm.v[i]);
            size_t out = 0;
            for (size_t j = 0; j < e->n_ports; j++)
                if (!(e->ports[j]->target_port == rm->target_port &&
                      e->ports[j]->protocol == rm->protocol))
                    e->ports[out++] = e->ports[j];
            e->n_ports = out;
        }
        for (size_t i = 0; i < f->publish_add.n; i++) {
            Shoal__PortConfig *p;
            if (parse_port(a, f->publish_add.v[i], &p) < 0)
                return FAIL_FLAG(cli, "publish",
                                 "must be [PUBLISHED:]TARGET[/PROTOCOL] or "
                                 "published=N,target=N[,protocol=udp][,mode=host] (got \"%s\")",
                                 f->publish_add.v[i]);
            ARENA_PUSH(a, &e->ports, &e->n_ports, p);
        }
        if (f->endpoint_mode_given)
            e->mode = (Shoal__EndpointSpec__ResolutionMode)f->endpoint_mode;
    }

    if (f->mount_rm.n || f->mount_add.n) {
        for (size_t i = 0; i < f->mount_rm.n; i++) {
            size_t out = 0;
            for (size_t j = 0; j < c->n_mounts; j++)
                if (strcmp(c->mounts[j]->target, f->mount_rm.v[i]) != 0)
                    c->mounts[out++] = c->mounts[j];
            c->n_mounts = out;
        }
        for (size_t i = 0; i < f->mount_add.n; i++) {
            Shoal__Mount *m;
            if (parse_mount(a, f->mount_add.v[i], &m) < 0)
                return FAIL_FLAG(cli, "mount",
                                 "must be type=bind|volume|tmpfs,source=SRC,target=DST"
                                 "[,readonly] (got \"%s\")",
                                 f->mount_add.v[i]);
            ARENA_PUSH(a, &c->mounts, &c->n_mounts, m);
        }
    }

    if (f->replicas_given) {
        if (s->mode_case == SHOAL__SERVICE_SPEC__MODE_REPLICATED && s->replicated)
            s->replicated->replicas = f->replicas;
        else if (s->mode_case == SHOAL__SERVICE_SPEC__MODE_REPLICATED_JOB && s->replicated_job) {
            if (f->replicas == 0)
                return FAIL_FLAG(cli, "replicas", "a replicated job needs at least 1 completion");
            s->replicated_job->total_completions = f->replicas;
        } else
            return FAIL_FLAG(cli, "replicas",
                             "only for replicated services and replicated jobs (mode is %s)",
                             spec_mode_name(s));
    }
    if (f->max_concurrent_given) {
        if (s->mode_case != SHOAL__SERVICE_SPEC__MODE_REPLICATED_JOB || !s->replicated_job)
            return FAIL_FLAG(cli, "max-concurrent", "only for replicated jobs (mode is %s)",
                             spec_mode_name(s));
        if (f->max_concurrent == 0)
            return FAIL_FLAG(cli, "max-concurrent", "must be at least 1");
        s->replicated_job->max_concurrent = f->max_concurrent;
    }

    if (f->restart_condition_given)
        ensure_restart(a, s)->condition = (Shoal__RestartPolicy__Condition)f->restart_condition;
    if (f->restart_delay_given)
        ensure_restart(a, s)->delay_ms = f->restart_delay;
    if (f->restart_max_attempts_given)
        ensure_restart(a, s)->max_attempts = f->restart_max_attempts;
    if (f->restart_window_given)
        ensure_restart(a, s)->window_ms = f->restart_window;

    if (f->reserve_memory_given)
        ensure_resources(a, s, false)->memory_bytes = f->reserve_memory;
    if (f->reserve_cpu_given)
        ensure_resources(a, s, false)->nano_cpus = f->reserve_cpu;
    if (f->limit_memory_given)
        ensure_resources(a, s, true)->memory_bytes = f->limit_memory;
    if (f->limit_cpu_given)
        ensure_resources(a, s, true)->nano_cpus = f->limit_cpu;

    if (f->init_given)
        c->init = f->init;
    if (f->tty_given)
        c->tty = f->tty;
    if (f->stop_grace_given)
        c->stop_grace_period_ms = f->stop_grace;
    if (f->stop_signal_given)
        c->stop_signal = (char *)f->stop_signal;
    if (f->pull_given)
        c->pull = (Shoal__ContainerSpec__PullPolicy)f->pull;
    if (f->workdir_given)
        c->dir = (char *)f->workdir;
    if (f->user_given)
        c->user = (char *)f->user;
    if (f->hostname_given)
        c->hostname = (char *)f->hostname;

    const char *upd = update_flag_given(f);
    if (upd && spec_is_job(s)) {
        cli_fail_cmd(cli, "--%s: not allowed for jobs (mode is %s): a changed job runs again", upd,
                     spec_mode_name(s));
        return -1;
    }
    if (f->update_parallelism_given)
        ensure_update(a, &s->update)->parallelism = f->update_parallelism;
    if (f->update_delay_given)
        ensure_update(a, &s->update)->delay_ms = f->update_delay;
    if (f->update_monitor_given)
        ensure_update(a, &s->update)->monitor_ms = f->update_monitor;
    if (f->update_failure_action_given)
        ensure_update(a, &s->update)->failure_action =
            (Shoal__UpdateConfig__FailureAction)f->update_failure_action;
    if (f->update_max_failure_ratio_given)
        ensure_update(a, &s->update)->max_failure_ratio = f->update_max_failure_ratio;
    if (f->update_order_given)
        ensure_update(a, &s->update)->order = (Shoal__UpdateConfig__Order)f->update_order;
    if (f->rollback_parallelism_given)
        ensure_update(a, &s->rollback)->parallelism = f->rollback_parallelism;
    if (f->rollback_delay_given)
        ensure_update(a, &s->rollback)->delay_ms = f->rollback_delay;
    if (f->rollback_monitor_given)
        ensure_update(a, &s->rollback)->monitor_ms = f->rollback_monitor;
    if (f->rollback_failure_action_given)
        ensure_update(a, &s->rollback)->failure_action =
            (Shoal__UpdateConfig__FailureAction)f->rollback_failure_action;
    if (f->rollback_max_failure_ratio_given)
        ensure_update(a, &s->rollback)->max_failure_ratio = f->rollback_max_failure_ratio;
    if (f->rollback_order_given)
        ensure_update(a, &s->rollback)->order = (Shoal__UpdateConfig__Order)f->rollback_order;
    if (f->history_limit_given)
        s->task_history_limit = f->history_limit;

    if (f->health_retries_given && f->health_retries > INT32_MAX)
        return FAIL_FLAG(cli, "health-retries", "must be at most %d (got %llu)", INT32_MAX,
                         (unsigned long long)f->health_retries);
    if (f->no_healthcheck && health_flag_given(f))
        return FAIL_FLAG(cli, "no-healthcheck", "conflicts with --%s", health_flag_given(f));
    if (f->no_healthcheck) {
        Shoal__HealthConfig *h = ensure_health(a, s);
        *h = (Shoal__HealthConfig)SHOAL__HEALTH_CONFIG__INIT;
        ARENA_PUSH(a, &h->test, &h->n_test, "NONE");
    }
    if (f->health_cmd_given) {
        Shoal__HealthConfig *h = ensure_health(a, s);
        h->test = NULL;
        h->n_test = 0;
        if (*f->health_cmd) {
            ARENA_PUSH(a, &h->test, &h->n_test, "CMD-SHELL");
            ARENA_PUSH(a, &h->test, &h->n_test, f->health_cmd);
        }
    }
    if (f->health_interval_given)
        ensure_health(a, s)->interval_ms = f->health_interval;
    if (f->health_timeout_given)
        ensure_health(a, s)->timeout_ms = f->health_timeout;
    if (f->health_start_period_given)
        ensure_health(a, s)->start_period_ms = f->health_start_period;
    if (f->health_retries_given)
        ensure_health(a, s)->retries = (int32_t)f->health_retries;
    return 0;
}
