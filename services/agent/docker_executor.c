/* docker_executor — the executor interface (executor.h) over the Docker Engine API (docker.h).
 *
 * Maps a task to an Engine container the way Docker Swarm does: spec.command replaces the
 * image's entrypoint and spec.args its Cmd; the container carries the shoal.* labels that let
 * the agent find it again after its own restart, joins the `shoal` bridge network, never
 * restarts by itself (the orchestrator owns restarts) and gets StopTimeout = the stop grace.
 *
 * One instance per thread (it owns a docker_t). The factory keeps the socket path by value. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "docker.h"
#include "executor.h"
#include "log.h"

#define STOP_GRACE_DEFAULT_MS 10000

typedef struct docker_executor {
    executor_t base;
    docker_t *docker;
    bool network_ready; /* ensured once per instance; re-checked when a create says otherwise */
} docker_executor_t;

static docker_executor_t *dx(executor_t *self) {
    return (docker_executor_t *)self;
}

static const Shoal__ContainerSpec *container_spec(const Shoal__Task *task) {
    return task && task->spec ? task->spec->container : NULL;
}

int executor_stop_grace_s(const Shoal__Task *task) {
    const Shoal__ContainerSpec *c = container_spec(task);
    int64_t ms = c && c->stop_grace_period_ms > 0 ? c->stop_grace_period_ms : STOP_GRACE_DEFAULT_MS;
    if (ms > 24LL * 3600 * 1000)
        ms = 24LL * 3600 * 1000;
    return (int)((ms + 999) / 1000);
}

/* ---- container config ------------------------------------------------------------------ */

/* Docker names: [a-zA-Z0-9][a-zA-Z0-9_.-]*; anything else becomes '-'. */
static void name_part(char *dst, size_t cap, const char *src) {
    size_t j = 0;
    for (const char *p = src ? src : ""; *p && j + 1 < cap; p++) {
        char ch = *p;
        bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                  (ch >= '0' && ch <= '9') || ch == '_' || ch == '.' || ch == '-';
        dst[j++] = ok ? ch : '-';
    }
    dst[j] = '\0';
}

static json_t *string_array(char **items, size_t n) {
    json_t *a = json_array();
    for (size_t i = 0; a && i < n; i++)
        json_array_append_new(a, json_string(items[i] ? items[i] : ""));
    return a;
}

static int set_str(json_t *obj, const char *key, const char *value) {
    if (!value || !*value)
        return 0;
    return json_object_set_new(obj, key, json_string(value));
}

static json_t *healthcheck(const Shoal__HealthConfig *h) {
    if (!h || !h->n_test)
        return NULL;
    json_t *hc = json_object();
    json_object_set_new(hc, "Test", string_array(h->test, h->n_test));
    if (h->interval_ms > 0)
        json_object_set_new(hc, "Interval", json_integer(h->interval_ms * 1000000LL));
    if (h->timeout_ms > 0)
        json_object_set_new(hc, "Timeout", json_integer(h->timeout_ms * 1000000LL));
    if (h->start_period_ms > 0)
        json_object_set_new(hc, "StartPeriod", json_integer(h->start_period_ms * 1000000LL));
    if (h->retries > 0)
        json_object_set_new(hc, "Retries", json_integer(h->retries));
    return hc;
}

static json_t *mounts(const Shoal__ContainerSpec *c) {
    if (!c->n_mounts)
        return NULL;
    json_t *a = json_array();
    for (size_t i = 0; a && i < c->n_mounts; i++) {
        const Shoal__Mount *m = c->mounts[i];
        const char *type = m->type == SHOAL__MOUNT__TYPE__VOLUME  ? "volume"
                           : m->type == SHOAL__MOUNT__TYPE__TMPFS ? "tmpfs"
                                                                  : "bind";
        json_t *o = json_pack("{s:s, s:s, s:b}", "Type", type, "Target", m->target ? m->target : "",
                              "ReadOnly", m->read_only);
        if (o && m->type != SHOAL__MOUNT__TYPE__TMPFS)
            set_str(o, "Source", m->source);
        json_array_append_new(a, o);
    }
    return a;
}

json_t *executor_docker_config(const Shoal__Task *task, char *ret_name, size_t namelen) {
    const Shoal__ContainerSpec *c = container_spec(task);
    if (!c || !c->image || !*c->image || !task->meta || !task->meta->id || !*task->meta->id) {
        errno = EINVAL;
        return NULL;
    }
    const char *task_id = task->meta->id;
    char service[128], middle[128], tid[72];
    name_part(service, sizeof service,
              task->service_name && *task->service_name ? task->service_name : "task");
    if (task->slot > 0)
        snprintf(middle, sizeof middle, "%llu", (unsigned long long)task->slot);
    else
        name_part(middle, sizeof middle, task->node_id && *task->node_id ? task->node_id : "0");
    name_part(tid, sizeof tid, task_id);
    snprintf(ret_name, namelen, "%s.%s.%s", service, middle, tid);
    if (!((ret_name[0] >= 'a' && ret_name[0] <= 'z') ||
          (ret_name[0] >= 'A' && ret_name[0] <= 'Z') || (ret_name[0] >= '0' && ret_name[0] <= '9')))
        ret_name[0] = 'x';

    json_t *cfg = json_object();
    json_t *labels = json_object();
    json_t *host = json_object();
    if (!cfg || !labels || !host) {
        json_decref(cfg);
        json_decref(labels);
        json_decref(host);
        errno = ENOMEM;
        return NULL;
    }
    json_object_set_new(cfg, "Image", json_string(c->image));
    if (c->n_command)
        json_object_set_new(cfg, "Entrypoint", string_array(c->command, c->n_command));
    if (c->n_args)
        json_object_set_new(cfg, "Cmd", string_array(c->args, c->n_args));
    if (c->n_env)
        json_object_set_new(cfg, "Env", string_array(c->env, c->n_env));
    set_str(cfg, "WorkingDir", c->dir);
    set_str(cfg, "User", c->user);
    set_str(cfg, "Hostname", c->hostname);
    set_str(cfg, "StopSignal", c->stop_signal);
    json_object_set_new(cfg, "Tty", json_boolean(c->tty));
    json_object_set_new(cfg, "StopTimeout", json_integer(executor_stop_grace_s(task)));
    json_t *hc = healthcheck(c->healthcheck);
    if (hc)
        json_object_set_new(cfg, "Healthcheck", hc);

    for (size_t i = 0; i < c->n_labels; i++)
        if (c->labels[i]->key && *c->labels[i]->key)
            json_object_set_new(labels, c->labels[i]->key,
                                json_string(c->labels[i]->value ? c->labels[i]->value : ""));
    char slot[32];
    snprintf(slot, sizeof slot, "%llu", (unsigned long long)task->slot);
    json_object_set_new(labels, "shoal.service.name",
                        json_string(task->service_name ? task->service_name : ""));
    json_object_set_new(labels, "shoal.service.id",
                        json_string(task->service_id ? task->service_id : ""));
    json_object_set_new(labels, DOCKER_LABEL_TASK_ID, json_string(task_id));
    json_object_set_new(labels, "shoal.node.id", json_string(task->node_id ? task->node_id : ""));
    json_object_set_new(labels, "shoal.slot", json_string(slot));
    json_object_set_new(cfg, "Labels", labels);

    json_object_set_new(host, "Init", json_boolean(c->init));
    const Shoal__Resources *lim = task->spec->resources ? task->spec->resources->limits : NULL;
    if (lim && lim->memory_bytes > 0)
        json_object_set_new(host, "Memory", json_integer(lim->memory_bytes));
    if (lim && lim->nano_cpus > 0)
        json_object_set_new(host, "NanoCpus", json_integer(lim->nano_cpus));
    json_object_set_new(host, "RestartPolicy", json_pack("{s:s}", "Name", "no"));
    json_object_set_new(host, "NetworkMode", json_string(EXECUTOR_NETWORK));
    json_t *m = mounts(c);
    if (m)
        json_object_set_new(host, "Mounts", m);
    const Shoal__LogDriver *ld = task->spec->log_driver;
    if (ld && ld->name && *ld->name) {
        json_t *opts = json_object();
        for (size_t i = 0; opts && i < ld->n_options; i++)
            if (ld->options[i]->key && *ld->options[i]->key)
                json_object_set_new(
                    opts, ld->options[i]->key,
                    json_string(ld->options[i]->value ? ld->options[i]->value : ""));
        json_object_set_new(
            host, "LogConfig",
            json_pack("{s:s, s:o}", "Type", ld->name, "Config", opts ? opts : json_object()));
    }
    json_object_set_new(cfg, "HostConfig", host);
    return cfg;
}

/* ---- ops ------------------------------------------------------------------------------- */

static void dx_close(executor_t *self) {
    docker_executor_t *x = dx(self);
    docker_destroy(&x->docker);
    free(x);
}

static void dx_interrupt(executor_t *self) {
    docker_interrupt(dx(self)->docker);
}

static char *dup_str(const char *s) {
    return strdup(s ? s : "");
}

static int dx_describe(executor_t *self, Shoal__NodeDescription **ret, char *err, size_t errlen) {
    docker_info_t info;
    int r = docker_info(dx(self)->docker, &info, err, errlen);
    if (r < 0)
        return r;
    Shoal__NodeDescription *d = malloc(sizeof *d);
    Shoal__Platform *p = malloc(sizeof *p);
    Shoal__Resources *res = malloc(sizeof *res);
    Shoal__EngineDescription *e = malloc(sizeof *e);
    if (!d || !p || !res || !e) {
        free(d), free(p), free(res), free(e);
        docker_info_clear(&info);
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    shoal__node_description__init(d);
    shoal__platform__init(p);
    shoal__resources__init(res);
    shoal__engine_description__init(e);
    d->platform = p;
    d->resources = res;
    d->engine = e;
    char host[256] = "";
    if (info.name[0])
        snprintf(host, sizeof host, "%s", info.name);
    else
        gethostname(host, sizeof host - 1);
    d->hostname = dup_str(host);
    p->architecture = dup_str(info.architecture);
    p->os = dup_str(info.os_type);
    res->nano_cpus = (int64_t)info.ncpu * 1000000000LL;
    res->memory_bytes = info.mem_total;
    e->engine_version = dup_str(info.server_version);
    e->api_version = dup_str(info.api_version);
    r = 0;
    if (info.nlabels) {
        e->labels = calloc(info.nlabels, sizeof *e->labels);
        r = e->labels ? 0 : -ENOMEM;
        for (size_t i = 0; r == 0 && i < info.nlabels; i++) {
            Shoal__Label *l = malloc(sizeof *l);
            if (!l) {
                r = -ENOMEM;
                break;
            }
            shoal__label__init(l);
            char *eq = strchr(info.labels[i], '=');
            l->key = eq ? strndup(info.labels[i], (size_t)(eq - info.labels[i]))
                        : dup_str(info.labels[i]);
            l->value = dup_str(eq ? eq + 1 : "");
            e->labels[e->n_labels++] = l;
        }
    }
    docker_info_clear(&info);
    if (r < 0 || !d->hostname || !p->architecture || !p->os || !e->engine_version ||
        !e->api_version) {
        protobuf_c_message_free_unpacked(&d->base, NULL);
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    *ret = d;
    return 0;
}

static int ensure_network(docker_executor_t *x, char *err, size_t errlen) {
    if (x->network_ready)
        return 0;
    int r = docker_network_ensure(x->docker, EXECUTOR_NETWORK, err, errlen);
    if (r == 0)
        x->network_ready = true;
    return r;
}

static int dx_prepare(executor_t *self, const Shoal__Task *task, char *err, size_t errlen) {
    docker_executor_t *x = dx(self);
    const Shoal__ContainerSpec *c = container_spec(task);
    if (!c || !c->image || !*c->image) {
        snprintf(err, errlen, "task has no container image");
        return -EINVAL;
    }
    int r;
    if (c->pull == SHOAL__CONTAINER_SPEC__PULL_POLICY__ALWAYS) {
        r = docker_image_pull(x->docker, c->image, err, errlen);
        if (r < 0 && r != -ECANCELED) {
            char local[128];
            if (docker_image_inspect(x->docker, c->image, local, sizeof local) == 0) {
                log_warn("image pull failed, using the local copy image=%s err=\"%s\"", c->image,
                         err);
                r = 0;
            }
        }
    } else {
        r = docker_image_inspect(x->docker, c->image, err, errlen);
        if (r == -ENOENT && c->pull != SHOAL__CONTAINER_SPEC__PULL_POLICY__NEVER) {
            log_info("pulling image image=%s", c->image);
            r = docker_image_pull(x->docker, c->image, err, errlen);
        }
    }
    if (r < 0)
        return r;
    return ensure_network(x, err, errlen);
}

static int dx_create(executor_t *self, const Shoal__Task *task, char *ret_id, size_t idlen,
                     char *err, size_t errlen) {
    docker_executor_t *x = dx(self);
    char name[256];
    json_t *cfg = executor_docker_config(task, name, sizeof name);
    if (!cfg) {
        snprintf(err, errlen, errno == EINVAL ? "task has no container spec" : "out of memory");
        return -errno;
    }
    int r = ensure_network(x, err, errlen);
    if (r == 0) {
        r = docker_container_create(x->docker, name, cfg, ret_id, idlen, err, errlen);
        if (r == -ENOENT) { /* the network may have been removed under us: once more */
            x->network_ready = false;
            char nerr[256];
            if (ensure_network(x, nerr, sizeof nerr) == 0)
                r = docker_container_create(x->docker, name, cfg, ret_id, idlen, err, errlen);
        }
    }
    if (r == -EEXIST) { /* an earlier attempt for this task created it */
        docker_container_t existing;
        char ierr[256];
        if (docker_container_inspect(x->docker, name, NULL, &existing, ierr, sizeof ierr) == 0 &&
            strcmp(existing.task_id, task->meta->id) == 0 && strlen(existing.id) < idlen) {
            snprintf(ret_id, idlen, "%s", existing.id);
            r = 0;
        }
    }
    json_decref(cfg);
    return r;
}

static int dx_start(executor_t *self, const char *id, char *err, size_t errlen) {
    return docker_container_start(dx(self)->docker, id, err, errlen);
}

static int dx_stop(executor_t *self, const char *id, int grace_s, char *err, size_t errlen) {
    return docker_container_stop(dx(self)->docker, id, grace_s, err, errlen);
}

static int dx_remove(executor_t *self, const char *id, char *err, size_t errlen) {
    return docker_container_remove(dx(self)->docker, id, true, err, errlen);
}

static void from_docker(executor_container_t *dst, const docker_container_t *src) {
    memset(dst, 0, sizeof *dst);
    snprintf(dst->id, sizeof dst->id, "%s", src->id);
    snprintf(dst->task_id, sizeof dst->task_id, "%s", src->task_id);
    snprintf(dst->node_id, sizeof dst->node_id, "%s", src->node_id);
    snprintf(dst->status, sizeof dst->status, "%s", src->status);
    dst->running = src->running;
    dst->oom_killed = src->oom_killed;
    dst->exit_code = src->exit_code;
    dst->pid = src->pid;
    snprintf(dst->ip, sizeof dst->ip, "%s", src->ip);
    snprintf(dst->error, sizeof dst->error, "%s", src->error);
    snprintf(dst->health, sizeof dst->health, "%s", src->health);
}

static int dx_inspect(executor_t *self, const char *id, executor_container_t *ret, char *err,
                      size_t errlen) {
    docker_container_t c;
    int r = docker_container_inspect(dx(self)->docker, id, EXECUTOR_NETWORK, &c, err, errlen);
    if (r == 0)
        from_docker(ret, &c);
    return r;
}

static int dx_list(executor_t *self, const char *node_id, executor_container_t **ret, size_t *ret_n,
                   char *err, size_t errlen) {
    docker_container_t *list = NULL;
    size_t n = 0;
    *ret = NULL;
    *ret_n = 0;
    if (!node_id || !*node_id || strlen(node_id) >= EXECUTOR_TASK_ID_MAX) {
        snprintf(err, errlen, "listing containers needs this node's id");
        return -EINVAL;
    }
    char node_label[128];
    snprintf(node_label, sizeof node_label, "%s=%s", DOCKER_LABEL_NODE_ID, node_id);
    const char *labels[] = {DOCKER_LABEL_TASK_ID, node_label};
    int r = docker_container_list(dx(self)->docker, labels, 2, &list, &n, err, errlen);
    if (r < 0)
        return r;
    executor_container_t *out = calloc(n ? n : 1, sizeof *out);
    if (!out) {
        free(list);
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    for (size_t i = 0; i < n; i++)
        from_docker(&out[i], &list[i]);
    free(list);
    *ret = out;
    *ret_n = n;
    return 0;
}

static const executor_ops_t docker_ops = {
    .name = "docker",
    .close = dx_close,
    .interrupt = dx_interrupt,
    .describe = dx_describe,
    .prepare = dx_prepare,
    .create = dx_create,
    .start = dx_start,
    .stop = dx_stop,
    .remove = dx_remove,
    .inspect = dx_inspect,
    .list = dx_list,
};

static executor_t *docker_open(const executor_factory_t *f) {
    docker_executor_t *x = calloc(1, sizeof *x);
    if (!x)
        return NULL;
    x->base.ops = &docker_ops;
    x->docker = docker_new(f->path);
    if (!x->docker) {
        free(x);
        return NULL;
    }
    return &x->base;
}

static zactor_t *docker_events(const executor_factory_t *f) {
    return docker_events_new(f->path);
}

void executor_docker_factory(executor_factory_t *ret, const char *socket_path) {
    memset(ret, 0, sizeof *ret);
    ret->name = "docker";
    ret->open = docker_open;
    ret->events_new = docker_events;
    snprintf(ret->path, sizeof ret->path, "%s",
             socket_path && *socket_path ? socket_path : DOCKER_DEFAULT_SOCKET);
}
