/* validate — ServiceSpec and NodeSpec checks for the orchestrator API.
 *
 * One pass over the spec collects every problem into a `problems_t` (field path + reason), so a
 * user fixes a spec in one round trip instead of one error at a time. Field paths follow the
 * proto field names (task.container.env[2], endpoint.ports[0].published_port) so they can be
 * found in the JSON the CLI shows. Nothing here allocates or logs; inputs come straight from the
 * network (any enum value, any string, NULL sub-messages), so every pointer is checked.
 *
 * Called by api.c on ServiceCreate / ServiceUpdate / NodeUpdate, and by the fuzz target. */
#include "validate.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "constraint.h"

typedef struct problems {
    char *buf;
    size_t len;
    size_t used;
    int count;
} problems_t;

static void problem(problems_t *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void problem(problems_t *p, const char *fmt, ...) {
    p->count++;
    if (!p->buf || p->used + 1 >= p->len)
        return;
    if (p->count > 1) {
        int n = snprintf(p->buf + p->used, p->len - p->used, "; ");
        p->used += (size_t)n < p->len - p->used ? (size_t)n : p->len - p->used - 1;
    }
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(p->buf + p->used, p->len - p->used, fmt, ap);
    va_end(ap);
    if (n > 0)
        p->used += (size_t)n < p->len - p->used ? (size_t)n : p->len - p->used - 1;
}

/* Prints a user string for an error message: at most 64 characters, control characters as '?'. */
static const char *shown(const char *s, char *buf, size_t len) {
    size_t i = 0;
    for (; s && s[i] && i + 1 < len && i < 64; i++)
        buf[i] = (unsigned char)s[i] < 0x20 || s[i] == 0x7f ? '?' : s[i];
    buf[i] = '\0';
    if (s && s[i] && i == 64 && len > 68)
        strcpy(buf + i, "...");
    return buf;
}

static bool empty(const char *s) {
    return !s || !s[0];
}

int validate_name(const char *name) {
    if (empty(name) || !isalnum((unsigned char)name[0]))
        return -EINVAL;
    size_t n = strlen(name);
    if (n > VALIDATE_NAME_MAX)
        return -EINVAL;
    for (size_t i = 1; i < n; i++) {
        unsigned char c = (unsigned char)name[i];
        if (!isalnum(c) && c != '_' && c != '.' && c != '-')
            return -EINVAL;
    }
    return 0;
}

static void check_labels(problems_t *p, const char *path, Shoal__Label *const *labels, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!labels[i] || empty(labels[i]->key))
            problem(p, "%s[%zu].key: required", path, i);
}

static void check_resources(problems_t *p, const char *path, const Shoal__Resources *r) {
    if (!r)
        return;
    if (r->nano_cpus < 0)
        problem(p, "%s.nano_cpus: must be >= 0 (got %lld)", path, (long long)r->nano_cpus);
    if (r->memory_bytes < 0)
        problem(p, "%s.memory_bytes: must be >= 0 (got %lld)", path, (long long)r->memory_bytes);
}

static void check_requirements(problems_t *p, const Shoal__ResourceRequirements *rr) {
    if (!rr)
        return;
    check_resources(p, "task.resources.limits", rr->limits);
    check_resources(p, "task.resources.reservations", rr->reservations);
    const Shoal__Resources *l = rr->limits, *r = rr->reservations;
    if (!l || !r)
        return;
    if (l->nano_cpus > 0 && r->nano_cpus > l->nano_cpus)
        problem(p,
                "task.resources.reservations.nano_cpus: must be <= limits.nano_cpus (got %lld > "
                "%lld)",
                (long long)r->nano_cpus, (long long)l->nano_cpus);
    if (l->memory_bytes > 0 && r->memory_bytes > l->memory_bytes)
        problem(p,
                "task.resources.reservations.memory_bytes: must be <= limits.memory_bytes (got "
                "%lld > %lld)",
                (long long)r->memory_bytes, (long long)l->memory_bytes);
}

static void check_container(problems_t *p, const Shoal__ContainerSpec *c) {
    char b[80];
    if (!c || empty(c->image)) {
        problem(p, "task.container.image: required");
    } else {
        for (const char *s = c->image; *s; s++) {
            if (isspace((unsigned char)*s) || (unsigned char)*s < 0x20) {
                problem(p, "task.container.image: must not contain spaces (got \"%s\")",
                        shown(c->image, b, sizeof b));
                break;
            }
        }
    }
    if (!c)
        return;
    for (size_t i = 0; i < c->n_env; i++) {
        const char *e = c->env[i];
        const char *eq = e ? strchr(e, '=') : NULL;
        if (!eq || eq == e)
            problem(p, "task.container.env[%zu]: must be K=V with a non-empty K (got \"%s\")", i,
                    shown(e, b, sizeof b));
    }
    if (c->stop_grace_period_ms < 0)
        problem(p, "task.container.stop_grace_period_ms: must be >= 0 (got %lld)",
                (long long)c->stop_grace_period_ms);
    if (c->pull < SHOAL__CONTAINER_SPEC__PULL_POLICY__MISSING ||
        c->pull > SHOAL__CONTAINER_SPEC__PULL_POLICY__NEVER)
        problem(p, "task.container.pull: unknown pull policy %d", (int)c->pull);
    check_labels(p, "task.container.labels", c->labels, c->n_labels);
    for (size_t i = 0; i < c->n_mounts; i++) {
        const Shoal__Mount *m = c->mounts[i];
        if (!m || empty(m->target) || m->target[0] != '/')
            problem(p, "task.container.mounts[%zu].target: must be an absolute path", i);
        if (m && (m->type < SHOAL__MOUNT__TYPE__BIND || m->type > SHOAL__MOUNT__TYPE__TMPFS))
            problem(p, "task.container.mounts[%zu].type: unknown mount type %d", i, (int)m->type);
        if (m && m->type == SHOAL__MOUNT__TYPE__BIND && (empty(m->source) || m->source[0] != '/'))
            problem(p, "task.container.mounts[%zu].source: a bind mount needs an absolute path", i);
    }
    for (size_t i = 0; i < c->n_secrets; i++)
        if (!c->secrets[i] ||
            (empty(c->secrets[i]->secret_id) && empty(c->secrets[i]->secret_name)))
            problem(p, "task.container.secrets[%zu]: secret_id or secret_name required", i);
    for (size_t i = 0; i < c->n_configs; i++)
        if (!c->configs[i] ||
            (empty(c->configs[i]->config_id) && empty(c->configs[i]->config_name)))
            problem(p, "task.container.configs[%zu]: config_id or config_name required", i);
    const Shoal__HealthConfig *h = c->healthcheck;
    if (h) {
        if (h->interval_ms < 0)
            problem(p, "task.container.healthcheck.interval_ms: must be >= 0 (got %lld)",
                    (long long)h->interval_ms);
        if (h->timeout_ms < 0)
            problem(p, "task.container.healthcheck.timeout_ms: must be >= 0 (got %lld)",
                    (long long)h->timeout_ms);
        if (h->start_period_ms < 0)
            problem(p, "task.container.healthcheck.start_period_ms: must be >= 0 (got %lld)",
                    (long long)h->start_period_ms);
        if (h->retries < 0)
            problem(p, "task.container.healthcheck.retries: must be >= 0 (got %d)", h->retries);
        if (h->n_test > 0 && h->test[0] && strcmp(h->test[0], "NONE") &&
            strcmp(h->test[0], "CMD") && strcmp(h->test[0], "CMD-SHELL"))
            problem(p,
                    "task.container.healthcheck.test[0]: must be NONE, CMD or CMD-SHELL (got "
                    "\"%s\")",
                    shown(h->test[0], b, sizeof b));
    }
}

static void check_restart(problems_t *p, const Shoal__RestartPolicy *r) {
    if (!r)
        return;
    if (r->condition < SHOAL__RESTART_POLICY__CONDITION__ANY ||
        r->condition > SHOAL__RESTART_POLICY__CONDITION__ON_FAILURE)
        problem(p, "task.restart.condition: must be any, none or on-failure (got %d)",
                (int)r->condition);
    if (r->delay_ms < 0)
        problem(p, "task.restart.delay_ms: must be >= 0 (got %lld)", (long long)r->delay_ms);
    if (r->window_ms < 0)
        problem(p, "task.restart.window_ms: must be >= 0 (got %lld)", (long long)r->window_ms);
    if (r->max_attempts > 1000000)
        problem(p, "task.restart.max_attempts: must be <= 1000000 (got %llu)",
                (unsigned long long)r->max_attempts);
}

static void check_placement(problems_t *p, const Shoal__Placement *pl) {
    if (!pl)
        return;
    char b[80], why[CONSTRAINT_MAX_LEN + 160];
    for (size_t i = 0; i < pl->n_constraints; i++) {
        constraint_t c;
        if (constraint_parse(pl->constraints[i], &c, why, sizeof why) < 0)
            problem(p, "task.placement.constraints[%zu]: %s", i, why);
        else
            constraint_clear(&c);
    }
    for (size_t i = 0; i < pl->n_preferences; i++) {
        const char *d = pl->preferences[i] ? pl->preferences[i]->spread_descriptor : NULL;
        bool ok = d && ((!strncmp(d, "node.labels.", 12) && d[12]) ||
                        (!strncmp(d, "engine.labels.", 14) && d[14]));
        if (!ok)
            problem(p,
                    "task.placement.preferences[%zu].spread_descriptor: must be node.labels.<X> "
                    "or engine.labels.<X> (got \"%s\")",
                    i, shown(d, b, sizeof b));
    }
    if (!empty(pl->strategy) && strcmp(pl->strategy, "spread") && strcmp(pl->strategy, "binpack") &&
        strcmp(pl->strategy, "random"))
        problem(p, "task.placement.strategy: must be spread, binpack or random (got \"%s\")",
                shown(pl->strategy, b, sizeof b));
    for (size_t i = 0; i < pl->n_platforms; i++)
        if (!pl->platforms[i] ||
            (empty(pl->platforms[i]->os) && empty(pl->platforms[i]->architecture)))
            problem(p, "task.placement.platforms[%zu]: os or architecture required", i);
}

static void check_update_config(problems_t *p, const char *path, const Shoal__UpdateConfig *u) {
    if (!u)
        return;
    if (u->parallelism > VALIDATE_MAX_REPLICAS)
        problem(p, "%s.parallelism: must be <= %d (got %llu)", path, VALIDATE_MAX_REPLICAS,
                (unsigned long long)u->parallelism);
    if (u->delay_ms < 0)
        problem(p, "%s.delay_ms: must be >= 0 (got %lld)", path, (long long)u->delay_ms);
    if (u->monitor_ms < 0)
        problem(p, "%s.monitor_ms: must be >= 0 (got %lld)", path, (long long)u->monitor_ms);
    if (isnan(u->max_failure_ratio) || u->max_failure_ratio < 0 || u->max_failure_ratio > 1)
        problem(p, "%s.max_failure_ratio: must be between 0 and 1 (got %g)", path,
                (double)u->max_failure_ratio);
    if (u->failure_action < SHOAL__UPDATE_CONFIG__FAILURE_ACTION__PAUSE ||
        u->failure_action > SHOAL__UPDATE_CONFIG__FAILURE_ACTION__ROLLBACK)
        problem(p, "%s.failure_action: must be pause, continue or rollback (got %d)", path,
                (int)u->failure_action);
    if (u->order != SHOAL__UPDATE_CONFIG__ORDER__STOP_FIRST &&
        u->order != SHOAL__UPDATE_CONFIG__ORDER__START_FIRST)
        problem(p, "%s.order: must be stop-first or start-first (got %d)", path, (int)u->order);
}

static const char *protocol_name(int proto) {
    switch (proto) {
    case SHOAL__PORT_CONFIG__PROTOCOL__TCP:
        return "tcp";
    case SHOAL__PORT_CONFIG__PROTOCOL__UDP:
        return "udp";
    case SHOAL__PORT_CONFIG__PROTOCOL__SCTP:
        return "sctp";
    }
    return "?";
}

static void check_endpoint(problems_t *p, const Shoal__EndpointSpec *e) {
    if (!e)
        return;
    if (e->mode != SHOAL__ENDPOINT_SPEC__RESOLUTION_MODE__VIP &&
        e->mode != SHOAL__ENDPOINT_SPEC__RESOLUTION_MODE__DNSRR)
        problem(p, "endpoint.mode: must be vip or dnsrr (got %d)", (int)e->mode);
    for (size_t i = 0; i < e->n_ports; i++) {
        const Shoal__PortConfig *pc = e->ports[i];
        if (!pc) {
            problem(p, "endpoint.ports[%zu]: empty", i);
            continue;
        }
        if (pc->target_port < 1 || pc->target_port > 65535)
            problem(p, "endpoint.ports[%zu].target_port: must be 1..65535 (got %u)", i,
                    pc->target_port);
        if (pc->published_port > 65535)
            problem(p,
                    "endpoint.ports[%zu].published_port: must be 0 (pick one) or 1..65535 (got %u)",
                    i, pc->published_port);
        if (pc->protocol < SHOAL__PORT_CONFIG__PROTOCOL__TCP ||
            pc->protocol > SHOAL__PORT_CONFIG__PROTOCOL__SCTP)
            problem(p, "endpoint.ports[%zu].protocol: must be tcp, udp or sctp (got %d)", i,
                    (int)pc->protocol);
        if (pc->publish_mode != SHOAL__PORT_CONFIG__PUBLISH_MODE__INGRESS &&
            pc->publish_mode != SHOAL__PORT_CONFIG__PUBLISH_MODE__HOST)
            problem(p, "endpoint.ports[%zu].publish_mode: must be ingress or host (got %d)", i,
                    (int)pc->publish_mode);
        if (pc->published_port == 0)
            continue;
        for (size_t j = 0; j < i; j++) {
            const Shoal__PortConfig *o = e->ports[j];
            if (o && o->published_port == pc->published_port && o->protocol == pc->protocol) {
                problem(p,
                        "endpoint.ports[%zu].published_port: %u/%s is already published by "
                        "endpoint.ports[%zu]",
                        i, pc->published_port, protocol_name(pc->protocol), j);
                break;
            }
        }
    }
}

static void check_mode(problems_t *p, const Shoal__ServiceSpec *s) {
    switch (s->mode_case) {
    case SHOAL__SERVICE_SPEC__MODE_REPLICATED:
        if (!s->replicated)
            problem(p, "mode: required (replicated or global)");
        else if (s->replicated->replicas > VALIDATE_MAX_REPLICAS)
            problem(p, "mode.replicated.replicas: must be <= %d (got %llu)", VALIDATE_MAX_REPLICAS,
                    (unsigned long long)s->replicated->replicas);
        break;
    case SHOAL__SERVICE_SPEC__MODE_GLOBAL:
        break;
    case SHOAL__SERVICE_SPEC__MODE_REPLICATED_JOB:
        if (!s->replicated_job) {
            problem(p, "mode: required (replicated or global)");
            break;
        }
        if (s->replicated_job->total_completions > VALIDATE_MAX_REPLICAS)
            problem(p, "mode.replicated_job.total_completions: must be <= %d (got %llu)",
                    VALIDATE_MAX_REPLICAS,
                    (unsigned long long)s->replicated_job->total_completions);
        if (s->replicated_job->max_concurrent > VALIDATE_MAX_REPLICAS)
            problem(p, "mode.replicated_job.max_concurrent: must be <= %d (got %llu)",
                    VALIDATE_MAX_REPLICAS, (unsigned long long)s->replicated_job->max_concurrent);
        break;
    case SHOAL__SERVICE_SPEC__MODE_GLOBAL_JOB:
        break;
    default:
        problem(p, "mode: required (replicated or global)");
    }
}

static int finish(problems_t *p, const char *what, char *err, size_t errlen) {
    if (!p->count) {
        if (err && errlen)
            err[0] = '\0';
        return 0;
    }
    if (err && errlen)
        snprintf(err, errlen, "invalid %s: %s", what, p->buf);
    return -EINVAL;
}

int validate_service_spec(const Shoal__ServiceSpec *spec, char *err, size_t errlen) {
    char list[2048] = "";
    problems_t p = {.buf = list, .len = sizeof list};
    char b[80];
    if (!spec) {
        problem(&p, "spec: required");
        return finish(&p, "service spec", err, errlen);
    }
    const char *name = spec->annotations ? spec->annotations->name : NULL;
    if (empty(name))
        problem(&p, "annotations.name: required");
    else if (validate_name(name) < 0)
        problem(&p, "annotations.name: must match [a-zA-Z0-9][a-zA-Z0-9_.-]{0,62} (got \"%s\")",
                shown(name, b, sizeof b));
    if (spec->annotations)
        check_labels(&p, "annotations.labels", spec->annotations->labels,
                     spec->annotations->n_labels);

    const Shoal__TaskSpec *t = spec->task;
    check_container(&p, t ? t->container : NULL);
    if (t) {
        check_requirements(&p, t->resources);
        check_restart(&p, t->restart);
        check_placement(&p, t->placement);
        for (size_t i = 0; i < t->n_networks; i++)
            if (!t->networks[i] || empty(t->networks[i]->target))
                problem(&p, "task.networks[%zu].target: required", i);
        if (t->log_driver && t->log_driver->n_options && empty(t->log_driver->name))
            problem(&p, "task.log_driver.name: required when options are given");
    }
    check_mode(&p, spec);
    check_update_config(&p, "update", spec->update);
    check_update_config(&p, "rollback", spec->rollback);
    check_endpoint(&p, spec->endpoint);
    if (spec->task_history_limit > 1000)
        problem(&p, "task_history_limit: must be <= 1000 (got %llu)",
                (unsigned long long)spec->task_history_limit);
    return finish(&p, "service spec", err, errlen);
}

int validate_node_spec(const Shoal__NodeSpec *spec, char *err, size_t errlen) {
    char list[1024] = "";
    problems_t p = {.buf = list, .len = sizeof list};
    if (!spec) {
        problem(&p, "spec: required");
        return finish(&p, "node spec", err, errlen);
    }
    if (spec->desired_role != SHOAL__NODE_SPEC__ROLE__WORKER &&
        spec->desired_role != SHOAL__NODE_SPEC__ROLE__MANAGER)
        problem(&p, "desired_role: must be worker or manager (got %d)", (int)spec->desired_role);
    if (spec->availability < SHOAL__NODE_SPEC__AVAILABILITY__ACTIVE ||
        spec->availability > SHOAL__NODE_SPEC__AVAILABILITY__DRAIN)
        problem(&p, "availability: must be active, pause or drain (got %d)",
                (int)spec->availability);
    if (spec->annotations)
        check_labels(&p, "annotations.labels", spec->annotations->labels,
                     spec->annotations->n_labels);
    return finish(&p, "node spec", err, errlen);
}
