/* api — the orchestrator's control API.
 *
 * Every method reads the store directly (not the leader's cache), so any orchestrator instance,
 * leader or standby, answers with what the store holds now, and a client sees its own writes at
 * once. Writes are compare-and-swap Txns on the object's mod revision: a concurrent writer makes
 * us re-read and retry (up to API_RETRIES times), unless the client pinned a version, in which
 * case it gets FAILED_PRECONDITION. A bad spec is refused with INVALID_ARGUMENT naming every bad
 * field (validate.c) and nothing is written.
 *
 * Services: create allocates the id, spec_version 1 and ingress ports; update keeps the old spec
 * as previous_spec and bumps spec_version (starting a rolling update) only when the TaskSpec
 * changed, so a replica count change alone replaces nothing; an update of a paused service
 * resumes its rolling update; rollback swaps previous_spec in (ROLLBACK_STARTED: the reconciler
 * then uses the rollback config); list counts follow the reconciler's rules (a task counts as
 * running once healthy, a slot once; jobs show completions);
 * remove deletes the service at once and the leader's reconciler gives its tasks desired REMOVE
 * (SwarmKit's behaviour). Nodes: update changes availability, role and labels; remove refuses a
 * node that is not DOWN unless forced.
 *
 * Called by the bus server from the daemon's loop; ctx is the orch_t. */
#include "api.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "orchestrator.pb-c.h"
#include "reconcile.h"
#include "validate.h"

#define API_RETRIES 5

/* ---- store helpers ------------------------------------------------------------------------ */

typedef struct objlist {
    ProtobufCMessage **msgs;
    int64_t *mods;
    size_t n;
} objlist_t;

static void objlist_clear(objlist_t *l) {
    for (size_t i = 0; i < l->n; i++)
        protobuf_c_message_free_unpacked(l->msgs[i], NULL);
    free(l->msgs);
    free(l->mods);
    *l = (objlist_t){0};
}

/* Every decodable object under `prefix` (undecodable values are skipped). */
static int list_objects(orch_t *o, const char *prefix, const ProtobufCMessageDescriptor *desc,
                        objlist_t *ret) {
    *ret = (objlist_t){0};
    Shoal__Store__RangeResponse *resp = NULL;
    store_client_set_timeout(o->store, ORCH_STORE_TIMEOUT_MS);
    int r = store_list(o->store, prefix, &resp);
    orch_store_result(o, r);
    if (r < 0)
        return r;
    ret->msgs = calloc(resp->n_kvs ? resp->n_kvs : 1, sizeof *ret->msgs);
    ret->mods = calloc(resp->n_kvs ? resp->n_kvs : 1, sizeof *ret->mods);
    if (!ret->msgs || !ret->mods) {
        shoal__store__range_response__free_unpacked(resp, NULL);
        objlist_clear(ret);
        return -ENOMEM;
    }
    for (size_t i = 0; i < resp->n_kvs; i++) {
        const Shoal__Store__KeyValue *kv = resp->kvs[i];
        ProtobufCMessage *m = protobuf_c_message_unpack(desc, NULL, kv->value.len, kv->value.data);
        if (!m) {
            log_warn("skipping undecodable value key=%s", kv->key);
            continue;
        }
        ret->msgs[ret->n] = m;
        ret->mods[ret->n++] = kv->mod_revision;
    }
    shoal__store__range_response__free_unpacked(resp, NULL);
    return 0;
}

static void reply_store_error(orch_t *o, bus_call_t *call, int r, const char *what) {
    int code = r == -ENOMEM ? BUS_INTERNAL : bus_code_from_errno(r);
    if (code == BUS_OK || code == BUS_NOT_FOUND || code == BUS_INVALID_ARGUMENT)
        code = BUS_UNAVAILABLE;
    bus_reply_error(call, code, "%s: store: %s", what,
                    r == -ENOMEM ? "out of memory" : store_client_error(o->store));
}

/* A Txn: key's mod revision still `mod` -> put msg (or delete when msg is NULL). */
static int cas_write(orch_t *o, const char *key, int64_t mod, const ProtobufCMessage *msg) {
    store_txn_builder_t *b = store_txn_builder_new();
    if (!b)
        return -ENOMEM;
    store_txn_cmp_mod(b, key, mod);
    if (msg)
        store_txn_put(b, key, msg);
    else
        store_txn_delete(b, key);
    Shoal__Store__TxnResponse *resp = NULL;
    store_client_set_timeout(o->store, ORCH_STORE_TIMEOUT_MS);
    int r = store_txn(o->store, store_txn_builder_request(b), &resp);
    orch_store_result(o, r);
    if (resp)
        shoal__store__txn_response__free_unpacked(resp, NULL);
    store_txn_builder_destroy(&b);
    return r;
}

static const char *str(const char *s) {
    return s ? s : "";
}

static const char *service_name(const Shoal__Service *s) {
    return s->spec && s->spec->annotations ? str(s->spec->annotations->name) : "";
}

static const char *service_id(const Shoal__Service *s) {
    return s->meta ? str(s->meta->id) : "";
}

static const char *node_id(const Shoal__Node *n) {
    return n->meta ? str(n->meta->id) : "";
}

static const char *node_hostname(const Shoal__Node *n) {
    return n->description ? str(n->description->hostname) : "";
}

/* Finds by exact id, then exact name, then unique id prefix. Returns the index, -ENOENT, or
 * -ENOTUNIQ when a prefix or name matches several. */
static ssize_t find_ref(const objlist_t *l, const char *ref,
                        const char *(*id_of)(const ProtobufCMessage *),
                        const char *(*name_of)(const ProtobufCMessage *)) {
    if (!ref || !ref[0])
        return -ENOENT;
    for (size_t i = 0; i < l->n; i++)
        if (!strcmp(id_of(l->msgs[i]), ref))
            return (ssize_t)i;
    ssize_t found = -ENOENT;
    for (size_t i = 0; i < l->n; i++) {
        if (!strcmp(name_of(l->msgs[i]), ref)) {
            if (found >= 0)
                return -ENOTUNIQ;
            found = (ssize_t)i;
        }
    }
    if (found >= 0)
        return found;
    size_t n = strlen(ref);
    for (size_t i = 0; i < l->n; i++) {
        if (!strncmp(id_of(l->msgs[i]), ref, n)) {
            if (found >= 0)
                return -ENOTUNIQ;
            found = (ssize_t)i;
        }
    }
    return found;
}

static const char *svc_id_of(const ProtobufCMessage *m) {
    return service_id((const Shoal__Service *)m);
}
static const char *svc_name_of(const ProtobufCMessage *m) {
    return service_name((const Shoal__Service *)m);
}
static const char *node_id_of(const ProtobufCMessage *m) {
    return node_id((const Shoal__Node *)m);
}
static const char *node_name_of(const ProtobufCMessage *m) {
    return node_hostname((const Shoal__Node *)m);
}

/* Replies NOT_FOUND / INVALID_ARGUMENT for a failed lookup. */
static void reply_lookup_error(bus_call_t *call, const char *what, const char *ref, ssize_t r) {
    if (r == -ENOTUNIQ)
        bus_reply_error(call, BUS_INVALID_ARGUMENT,
                        "%s \"%s\" is ambiguous: it matches several; give more of the id", what,
                        str(ref));
    else
        bus_reply_error(call, BUS_NOT_FOUND, "%s \"%s\" not found", what, str(ref));
}

/* ---- endpoints and published ports -------------------------------------------------------- */

static const char *protocol_name(int p) {
    return p == SHOAL__PORT_CONFIG__PROTOCOL__UDP    ? "udp"
           : p == SHOAL__PORT_CONFIG__PROTOCOL__SCTP ? "sctp"
                                                     : "tcp";
}

/* The service (other than `self_id`) publishing port/protocol on the ingress, or NULL. */
static const Shoal__Service *port_owner(const objlist_t *services, const char *self_id,
                                        uint32_t port, int protocol) {
    for (size_t i = 0; i < services->n; i++) {
        const Shoal__Service *s = (const Shoal__Service *)services->msgs[i];
        if (!strcmp(service_id(s), self_id) || !s->endpoint)
            continue;
        for (size_t j = 0; j < s->endpoint->n_ports; j++) {
            const Shoal__PortConfig *p = s->endpoint->ports[j];
            if (p && p->publish_mode == SHOAL__PORT_CONFIG__PUBLISH_MODE__INGRESS &&
                p->published_port == port && (int)p->protocol == protocol)
                return s;
        }
    }
    return NULL;
}

/* Resolves the spec's ports: ingress ports given as 0 get the one they had before (same target
 * and protocol) or a free one of the range; explicit ingress ports must be free cluster-wide.
 * Returns a new Endpoint (NULL when the spec has none) or sets *ret_err and an error message. */
static Shoal__Endpoint *endpoint_resolve(const objlist_t *services, const char *self_id,
                                         const Shoal__EndpointSpec *spec,
                                         const Shoal__Endpoint *prev, int *ret_err, char *err,
                                         size_t errlen) {
    *ret_err = 0;
    if (!spec)
        return NULL;
    size_t n = spec->n_ports;
    Shoal__PortConfig *ports = calloc(n ? n : 1, sizeof *ports);
    Shoal__PortConfig **ptrs = calloc(n ? n : 1, sizeof *ptrs);
    Shoal__Endpoint *out = NULL;
    if (!ports || !ptrs) {
        *ret_err = -ENOMEM;
        goto done;
    }
    for (size_t i = 0; i < n; i++) {
        ports[i] = *spec->ports[i];
        ptrs[i] = &ports[i];
    }
    for (size_t i = 0; i < n; i++) {
        Shoal__PortConfig *p = &ports[i];
        if (p->publish_mode != SHOAL__PORT_CONFIG__PUBLISH_MODE__INGRESS)
            continue;
        if (p->published_port) {
            const Shoal__Service *owner =
                port_owner(services, self_id, p->published_port, p->protocol);
            if (owner) {
                snprintf(err, errlen,
                         "invalid service spec: endpoint.ports[%zu].published_port: %u/%s is "
                         "already published by service \"%s\"",
                         i, p->published_port, protocol_name(p->protocol), service_name(owner));
                *ret_err = -EINVAL;
                goto done;
            }
        }
    }
    for (size_t i = 0; i < n; i++) {
        Shoal__PortConfig *p = &ports[i];
        if (p->publish_mode != SHOAL__PORT_CONFIG__PUBLISH_MODE__INGRESS || p->published_port)
            continue;
        for (size_t j = 0; prev && j < prev->n_ports; j++) {
            const Shoal__PortConfig *q = prev->ports[j];
            if (q && q->target_port == p->target_port && q->protocol == p->protocol &&
                q->publish_mode == p->publish_mode && q->published_port &&
                !port_owner(services, self_id, q->published_port, q->protocol)) {
                p->published_port = q->published_port;
                break;
            }
        }
        for (uint32_t port = API_PORT_RANGE_MIN; !p->published_port && port <= API_PORT_RANGE_MAX;
             port++) {
            bool taken = port_owner(services, self_id, port, p->protocol) != NULL;
            for (size_t j = 0; j < n && !taken; j++)
                taken = j != i && ports[j].published_port == port &&
                        ports[j].protocol == p->protocol &&
                        ports[j].publish_mode == SHOAL__PORT_CONFIG__PUBLISH_MODE__INGRESS;
            if (!taken)
                p->published_port = port;
        }
        if (!p->published_port) {
            snprintf(err, errlen, "no free ingress port left in %d-%d for endpoint.ports[%zu]",
                     API_PORT_RANGE_MIN, API_PORT_RANGE_MAX, i);
            *ret_err = -ENOSPC;
            goto done;
        }
    }
    Shoal__Endpoint ep = SHOAL__ENDPOINT__INIT;
    ep.spec = (Shoal__EndpointSpec *)spec;
    ep.ports = ptrs;
    ep.n_ports = n;
    out = (Shoal__Endpoint *)recon_copy_message(&ep.base);
    if (!out)
        *ret_err = -ENOMEM;
done:
    free(ports);
    free(ptrs);
    return out;
}

/* ---- services ----------------------------------------------------------------------------- */

static void h_service_create(void *ctx, bus_call_t *call, const ProtobufCMessage *input) {
    orch_t *o = ctx;
    const Shoal__Orchestrator__ServiceCreateRequest *req =
        (const Shoal__Orchestrator__ServiceCreateRequest *)input;
    char err[2048];
    if (validate_service_spec(req->spec, err, sizeof err) < 0) {
        bus_reply_error(call, BUS_INVALID_ARGUMENT, "%s", err);
        return;
    }
    const char *name = req->spec->annotations->name;
    objlist_t services;
    int r = list_objects(o, "/services/", &shoal__service__descriptor, &services);
    if (r < 0) {
        reply_store_error(o, call, r, "service create");
        return;
    }
    for (size_t i = 0; i < services.n; i++) {
        const Shoal__Service *s = (const Shoal__Service *)services.msgs[i];
        if (!strcmp(service_name(s), name)) {
            bus_reply_error(call, BUS_ALREADY_EXISTS, "service \"%s\" already exists (id %s)", name,
                            service_id(s));
            objlist_clear(&services);
            return;
        }
    }
    char id[32], key[64];
    id_random(id);
    snprintf(key, sizeof key, "/services/%s", id);
    Shoal__Endpoint *ep =
        endpoint_resolve(&services, id, req->spec->endpoint, NULL, &r, err, sizeof err);
    objlist_clear(&services);
    if (r < 0) {
        bus_reply_error(call, r == -ENOMEM ? BUS_INTERNAL : BUS_INVALID_ARGUMENT, "%s",
                        r == -ENOMEM ? "out of memory" : err);
        return;
    }
    int64_t now = clock_wall_ms();
    Shoal__Meta meta = SHOAL__META__INIT;
    meta.id = id;
    meta.version = 1;
    meta.created_at_ms = meta.updated_at_ms = now;
    Shoal__Service svc = SHOAL__SERVICE__INIT;
    svc.meta = &meta;
    svc.spec = req->spec;
    svc.spec_version = 1;
    svc.endpoint = ep;
    r = cas_write(o, key, 0, &svc.base);
    if (r < 0) {
        reply_store_error(o, call, r, "service create");
    } else {
        log_info("service created service=%s name=%s", id, name);
        Shoal__Orchestrator__ServiceCreateResponse resp =
            SHOAL__ORCHESTRATOR__SERVICE_CREATE_RESPONSE__INIT;
        resp.service = &svc;
        bus_reply_ok(call, &resp.base);
    }
    if (ep)
        protobuf_c_message_free_unpacked(&ep->base, NULL);
}

static void h_service_inspect(void *ctx, bus_call_t *call, const ProtobufCMessage *input) {
    orch_t *o = ctx;
    const Shoal__Orchestrator__ServiceInspectRequest *req =
        (const Shoal__Orchestrator__ServiceInspectRequest *)input;
    objlist_t services;
    int r = list_objects(o, "/services/", &shoal__service__descriptor, &services);
    if (r < 0) {
        reply_store_error(o, call, r, "service inspect");
        return;
    }
    ssize_t i = find_ref(&services, req->service, svc_id_of, svc_name_of);
    if (i < 0) {
        reply_lookup_error(call, "service", req->service, i);
    } else {
        Shoal__Orchestrator__ServiceInspectResponse resp =
            SHOAL__ORCHESTRATOR__SERVICE_INSPECT_RESPONSE__INIT;
        resp.service = (Shoal__Service *)services.msgs[i];
        bus_reply_ok(call, &resp.base);
    }
    objlist_clear(&services);
}

static int summary_cmp(const void *a, const void *b) {
    const Shoal__Orchestrator__ServiceSummary *x = *(Shoal__Orchestrator__ServiceSummary *const *)a;
    const Shoal__Orchestrator__ServiceSummary *y = *(Shoal__Orchestrator__ServiceSummary *const *)b;
    return strcmp(service_name(x->service), service_name(y->service));
}

static bool node_is_down(const objlist_t *nodes, const char *id) {
    for (size_t i = 0; i < nodes->n; i++) {
        const Shoal__Node *n = (const Shoal__Node *)nodes->msgs[i];
        if (!strcmp(node_id(n), str(id)))
            return n->status && n->status->state == SHOAL__NODE_STATUS__STATE__DOWN;
    }
    return true; /* removed */
}

/* The counts `service ls` shows. running: slots (global: nodes) whose task counts as running
 * (recon_task_running, on a node that is not DOWN), so a slot briefly holding an old and a new
 * task during a start-first update counts once; jobs: tasks of the current iteration running,
 * and completed the ones that exited 0. */
static void summarize(Shoal__Orchestrator__ServiceSummary *sum, const Shoal__Service *s,
                      const objlist_t *tasks, const objlist_t *nodes) {
    bool job = recon_is_job(s), global = recon_is_global(s);
    zhashx_t *live = zhashx_new(), *running = zhashx_new();
    uint64_t completed = 0, job_running = 0;
    for (size_t j = 0; j < tasks->n && live && running; j++) {
        const Shoal__Task *t = (const Shoal__Task *)tasks->msgs[j];
        if (strcmp(str(t->service_id), service_id(s)))
            continue;
        if (job && t->spec_version != s->spec_version)
            continue;
        if (job && t->status && t->status->state == SHOAL__TASK_STATE__COMPLETE &&
            (!t->status->container || t->status->container->exit_code == 0))
            completed++;
        if (t->desired_state > SHOAL__TASK_STATE__RUNNING)
            continue;
        char key[160];
        if (global)
            snprintf(key, sizeof key, "%s", str(t->node_id));
        else
            snprintf(key, sizeof key, "%" PRIu64, t->slot);
        zhashx_update(live, key, (void *)1);
        if (recon_task_running(t) && !node_is_down(nodes, t->node_id)) {
            zhashx_update(running, key, (void *)1);
            job_running++;
        }
    }
    if (recon_is_replicated(s)) {
        sum->desired = s->spec->replicated->replicas;
    } else if (job && !global) {
        uint64_t maxc;
        recon_job_limits(s, &sum->desired, &maxc);
    } else {
        sum->desired = live ? zhashx_size(live) : 0;
        if (job)
            sum->desired += completed;
    }
    sum->running = job ? job_running : (running ? zhashx_size(running) : 0);
    sum->completed = completed;
    zhashx_destroy(&live);
    zhashx_destroy(&running);
}

static void h_service_list(void *ctx, bus_call_t *call, const ProtobufCMessage *input) {
    orch_t *o = ctx;
    const Shoal__Orchestrator__ServiceListRequest *req =
        (const Shoal__Orchestrator__ServiceListRequest *)input;
    objlist_t services, tasks = {0}, nodes = {0};
    int r = list_objects(o, "/services/", &shoal__service__descriptor, &services);
    if (r == 0)
        r = list_objects(o, "/tasks/", &shoal__task__descriptor, &tasks);
    if (r == 0)
        r = list_objects(o, "/nodes/", &shoal__node__descriptor, &nodes);
    if (r < 0) {
        reply_store_error(o, call, r, "service list");
        objlist_clear(&services);
        objlist_clear(&tasks);
        return;
    }
    size_t n = services.n;
    Shoal__Orchestrator__ServiceSummary *sums = calloc(n ? n : 1, sizeof *sums);
    Shoal__Orchestrator__ServiceSummary **ptrs = calloc(n ? n : 1, sizeof *ptrs);
    if (!sums || !ptrs) {
        bus_reply_error(call, BUS_INTERNAL, "service list: out of memory");
        goto out;
    }
    size_t k = 0;
    const char *prefix = str(req->name_prefix);
    for (size_t i = 0; i < n; i++) {
        Shoal__Service *s = (Shoal__Service *)services.msgs[i];
        if (strncmp(service_name(s), prefix, strlen(prefix)))
            continue;
        Shoal__Orchestrator__ServiceSummary *sum = &sums[k];
        shoal__orchestrator__service_summary__init(sum);
        sum->service = s;
        summarize(sum, s, &tasks, &nodes);
        ptrs[k++] = sum;
    }
    qsort(ptrs, k, sizeof *ptrs, summary_cmp);
    Shoal__Orchestrator__ServiceListResponse resp =
        SHOAL__ORCHESTRATOR__SERVICE_LIST_RESPONSE__INIT;
    resp.services = ptrs;
    resp.n_services = k;
    bus_reply_ok(call, &resp.base);
out:
    free(sums);
    free(ptrs);
    objlist_clear(&services);
    objlist_clear(&tasks);
    objlist_clear(&nodes);
}

static bool same_mode(const Shoal__ServiceSpec *a, const Shoal__ServiceSpec *b) {
    return a && b && a->mode_case == b->mode_case;
}

static bool update_paused(const Shoal__Service *s) {
    return s->update_status &&
           (s->update_status->state == SHOAL__UPDATE_STATUS__STATE__PAUSED ||
            s->update_status->state == SHOAL__UPDATE_STATUS__STATE__ROLLBACK_PAUSED);
}

/* The updated service: new spec, previous spec kept, spec_version bumped only when the TaskSpec
 * changed (then a rolling update starts). A paused update resumes (UPDATING again, failures
 * counted from now) with any update. An update that changes nothing keeps previous_spec, so a
 * resume does not lose the spec a rollback returns to. NULL on allocation failure. */
static Shoal__Service *service_with_spec(const Shoal__Service *cur, const Shoal__ServiceSpec *spec,
                                         Shoal__Endpoint *ep, bool rollback, int64_t now) {
    Shoal__Service *ns = (Shoal__Service *)recon_copy_message(&cur->base);
    Shoal__ServiceSpec *spec_copy = (Shoal__ServiceSpec *)recon_copy_message(&spec->base);
    Shoal__UpdateStatus *st = calloc(1, sizeof *st);
    if (!ns || !spec_copy || !st || !ns->meta) {
        if (ns)
            protobuf_c_message_free_unpacked(&ns->base, NULL);
        if (spec_copy)
            protobuf_c_message_free_unpacked(&spec_copy->base, NULL);
        free(st);
        return NULL;
    }
    bool task_changed = !recon_message_equal((const ProtobufCMessage *)cur->spec->task,
                                             (const ProtobufCMessage *)spec->task);
    bool spec_changed =
        !recon_message_equal((const ProtobufCMessage *)cur->spec, (const ProtobufCMessage *)spec);
    if (spec_changed || rollback) {
        if (ns->previous_spec)
            protobuf_c_message_free_unpacked(&ns->previous_spec->base, NULL);
        ns->previous_spec = ns->spec;
        ns->spec = spec_copy;
    } else {
        protobuf_c_message_free_unpacked(&spec_copy->base, NULL);
    }
    if (ns->endpoint)
        protobuf_c_message_free_unpacked(&ns->endpoint->base, NULL);
    ns->endpoint = ep;
    if (task_changed || update_paused(cur)) {
        if (task_changed)
            ns->spec_version++;
        shoal__update_status__init(st);
        st->state = rollback ? SHOAL__UPDATE_STATUS__STATE__ROLLBACK_STARTED
                             : SHOAL__UPDATE_STATUS__STATE__UPDATING;
        st->started_at_ms = now;
        st->message = strdup(rollback       ? "rollback started"
                             : task_changed ? "update in progress"
                                            : "update resumed");
        if (ns->update_status)
            protobuf_c_message_free_unpacked(&ns->update_status->base, NULL);
        ns->update_status = st;
    } else {
        free(st);
    }
    ns->meta->version++;
    ns->meta->updated_at_ms = now;
    return ns;
}

static void h_service_update(void *ctx, bus_call_t *call, const ProtobufCMessage *input) {
    orch_t *o = ctx;
    const Shoal__Orchestrator__ServiceUpdateRequest *req =
        (const Shoal__Orchestrator__ServiceUpdateRequest *)input;
    char err[2048];
    /* an explicit spec can be checked before reading anything */
    if (!req->rollback && validate_service_spec(req->spec, err, sizeof err) < 0) {
        bus_reply_error(call, BUS_INVALID_ARGUMENT, "%s", err);
        return;
    }
    for (int attempt = 0; attempt < API_RETRIES; attempt++) {
        objlist_t services;
        int r = list_objects(o, "/services/", &shoal__service__descriptor, &services);
        if (r < 0) {
            reply_store_error(o, call, r, "service update");
            return;
        }
        ssize_t i = find_ref(&services, req->service, svc_id_of, svc_name_of);
        if (i < 0) {
            reply_lookup_error(call, "service", req->service, i);
            objlist_clear(&services);
            return;
        }
        const Shoal__Service *cur = (const Shoal__Service *)services.msgs[i];
        int64_t mod = services.mods[i];
        uint64_t version = cur->meta ? cur->meta->version : 0;
        const char *name = service_name(cur);
        const Shoal__ServiceSpec *spec = req->rollback ? cur->previous_spec : req->spec;
        int code = BUS_OK;
        if (req->version && req->version != version) {
            code = BUS_FAILED_PRECONDITION;
            snprintf(err, sizeof err,
                     "service \"%s\" changed since version %" PRIu64 " (now %" PRIu64
                     "); inspect it and retry",
                     name, req->version, version);
        } else if (req->rollback && !spec) {
            code = BUS_FAILED_PRECONDITION;
            snprintf(err, sizeof err, "service \"%s\" has no previous spec to roll back to", name);
        } else if (!cur->spec) {
            code = BUS_INTERNAL;
            snprintf(err, sizeof err, "service \"%s\" has no spec in the store", name);
        } else if (validate_service_spec(spec, err, sizeof err) < 0) {
            code = BUS_INVALID_ARGUMENT;
        } else if (strcmp(spec->annotations->name, name)) {
            code = BUS_INVALID_ARGUMENT;
            snprintf(err, sizeof err,
                     "invalid service spec: annotations.name: renaming a service is not supported "
                     "(\"%s\" to \"%s\")",
                     name, spec->annotations->name);
        } else if (!same_mode(cur->spec, spec)) {
            code = BUS_INVALID_ARGUMENT;
            snprintf(err, sizeof err,
                     "invalid service spec: mode: a service cannot change its mode (replicated, "
                     "global, replicated-job, global-job); create a new service");
        }
        if (code != BUS_OK) {
            bus_reply_error(call, code, "%s", err);
            objlist_clear(&services);
            return;
        }
        Shoal__Endpoint *ep = endpoint_resolve(&services, service_id(cur), spec->endpoint,
                                               cur->endpoint, &r, err, sizeof err);
        if (r < 0) {
            bus_reply_error(call, r == -ENOMEM ? BUS_INTERNAL : BUS_INVALID_ARGUMENT, "%s",
                            r == -ENOMEM ? "out of memory" : err);
            objlist_clear(&services);
            return;
        }
        Shoal__Service *ns = service_with_spec(cur, spec, ep, req->rollback, clock_wall_ms());
        if (!ns) {
            if (ep)
                protobuf_c_message_free_unpacked(&ep->base, NULL);
            bus_reply_error(call, BUS_INTERNAL, "service update: out of memory");
            objlist_clear(&services);
            return;
        }
        char key[192];
        snprintf(key, sizeof key, "/services/%s", service_id(cur));
        r = cas_write(o, key, mod, &ns->base);
        if (r == 0) {
            log_info("service updated service=%s name=%s version=%" PRIu64 " spec_version=%" PRIu64
                     " rollback=%d",
                     service_id(ns), name, ns->meta->version, ns->spec_version, req->rollback);
            Shoal__Orchestrator__ServiceUpdateResponse resp =
                SHOAL__ORCHESTRATOR__SERVICE_UPDATE_RESPONSE__INIT;
            resp.service = ns;
            bus_reply_ok(call, &resp.base);
        } else if (r != -ECANCELED) {
            reply_store_error(o, call, r, "service update");
        }
        protobuf_c_message_free_unpacked(&ns->base, NULL);
        objlist_clear(&services);
        if (r != -ECANCELED)
            return;
        if (req->version) {
            bus_reply_error(call, BUS_FAILED_PRECONDITION,
                            "service \"%s\" changed while updating; inspect it and retry", name);
            return;
        }
    }
    bus_reply_error(call, BUS_UNAVAILABLE, "service update: too many concurrent changes; retry");
}

static void h_service_remove(void *ctx, bus_call_t *call, const ProtobufCMessage *input) {
    orch_t *o = ctx;
    const Shoal__Orchestrator__ServiceRemoveRequest *req =
        (const Shoal__Orchestrator__ServiceRemoveRequest *)input;
    for (int attempt = 0; attempt < API_RETRIES; attempt++) {
        objlist_t services;
        int r = list_objects(o, "/services/", &shoal__service__descriptor, &services);
        if (r < 0) {
            reply_store_error(o, call, r, "service remove");
            return;
        }
        ssize_t i = find_ref(&services, req->service, svc_id_of, svc_name_of);
        if (i < 0) {
            reply_lookup_error(call, "service", req->service, i);
            objlist_clear(&services);
            return;
        }
        const Shoal__Service *s = (const Shoal__Service *)services.msgs[i];
        char key[192];
        snprintf(key, sizeof key, "/services/%s", service_id(s));
        r = cas_write(o, key, services.mods[i], NULL);
        if (r == 0) {
            log_info("service removed service=%s name=%s", service_id(s), service_name(s));
            Shoal__Orchestrator__ServiceRemoveResponse resp =
                SHOAL__ORCHESTRATOR__SERVICE_REMOVE_RESPONSE__INIT;
            bus_reply_ok(call, &resp.base);
        } else if (r != -ECANCELED) {
            reply_store_error(o, call, r, "service remove");
        }
        objlist_clear(&services);
        if (r != -ECANCELED)
            return;
    }
    bus_reply_error(call, BUS_UNAVAILABLE, "service remove: too many concurrent changes; retry");
}

/* ---- tasks -------------------------------------------------------------------------------- */

static int task_newest_first(const void *a, const void *b) {
    const Shoal__Task *x = *(Shoal__Task *const *)a, *y = *(Shoal__Task *const *)b;
    int64_t cx = x->meta ? x->meta->created_at_ms : 0, cy = y->meta ? y->meta->created_at_ms : 0;
    if (cx != cy)
        return cx > cy ? -1 : 1;
    if (x->slot != y->slot)
        return x->slot < y->slot ? -1 : 1;
    return strcmp(x->meta ? str(x->meta->id) : "", y->meta ? str(y->meta->id) : "");
}

static void h_task_list(void *ctx, bus_call_t *call, const ProtobufCMessage *input) {
    orch_t *o = ctx;
    const Shoal__Orchestrator__TaskListRequest *req =
        (const Shoal__Orchestrator__TaskListRequest *)input;
    objlist_t tasks = {0}, services = {0}, nodes = {0};
    const char *want_service = NULL, *want_node = NULL;
    Shoal__Task **out = NULL;
    int r = list_objects(o, "/tasks/", &shoal__task__descriptor, &tasks);
    if (r == 0 && req->service && req->service[0]) {
        r = list_objects(o, "/services/", &shoal__service__descriptor, &services);
        if (r == 0) {
            ssize_t i = find_ref(&services, req->service, svc_id_of, svc_name_of);
            if (i == -ENOTUNIQ) {
                reply_lookup_error(call, "service", req->service, i);
                goto out;
            }
            /* a removed service's tasks can still be listed by its id */
            want_service = i >= 0 ? service_id((Shoal__Service *)services.msgs[i]) : req->service;
        }
    }
    if (r == 0 && req->node && req->node[0]) {
        r = list_objects(o, "/nodes/", &shoal__node__descriptor, &nodes);
        if (r == 0) {
            ssize_t i = find_ref(&nodes, req->node, node_id_of, node_name_of);
            if (i < 0) {
                reply_lookup_error(call, "node", req->node, i);
                goto out;
            }
            want_node = node_id((Shoal__Node *)nodes.msgs[i]);
        }
    }
    if (r < 0) {
        reply_store_error(o, call, r, "task list");
        goto out;
    }
    out = calloc(tasks.n ? tasks.n : 1, sizeof *out);
    if (!out) {
        bus_reply_error(call, BUS_INTERNAL, "task list: out of memory");
        goto out;
    }
    size_t k = 0;
    for (size_t i = 0; i < tasks.n; i++) {
        Shoal__Task *t = (Shoal__Task *)tasks.msgs[i];
        if (want_service && strcmp(str(t->service_id), want_service))
            continue;
        if (want_node && strcmp(str(t->node_id), want_node))
            continue;
        if (req->running_only && (!t->status || t->status->state != SHOAL__TASK_STATE__RUNNING))
            continue;
        out[k++] = t;
    }
    if (want_service && k == 0 && find_ref(&services, req->service, svc_id_of, svc_name_of) < 0) {
        reply_lookup_error(call, "service", req->service, -ENOENT);
        goto out;
    }
    qsort(out, k, sizeof *out, task_newest_first);
    Shoal__Orchestrator__TaskListResponse resp = SHOAL__ORCHESTRATOR__TASK_LIST_RESPONSE__INIT;
    resp.tasks = out;
    resp.n_tasks = k;
    bus_reply_ok(call, &resp.base);
out:
    free(out);
    objlist_clear(&tasks);
    objlist_clear(&services);
    objlist_clear(&nodes);
}

/* ---- nodes -------------------------------------------------------------------------------- */

static int node_by_hostname(const void *a, const void *b) {
    const Shoal__Node *x = *(Shoal__Node *const *)a, *y = *(Shoal__Node *const *)b;
    int c = strcmp(node_hostname(x), node_hostname(y));
    return c ? c : strcmp(node_id(x), node_id(y));
}

static void h_node_list(void *ctx, bus_call_t *call, const ProtobufCMessage *input) {
    orch_t *o = ctx;
    objlist_t nodes;
    int r = list_objects(o, "/nodes/", &shoal__node__descriptor, &nodes);
    if (r < 0) {
        reply_store_error(o, call, r, "node list");
        return;
    }
    qsort(nodes.msgs, nodes.n, sizeof *nodes.msgs, node_by_hostname); /* mods unused below */
    Shoal__Orchestrator__NodeListResponse resp = SHOAL__ORCHESTRATOR__NODE_LIST_RESPONSE__INIT;
    resp.nodes = (Shoal__Node **)nodes.msgs;
    resp.n_nodes = nodes.n;
    bus_reply_ok(call, &resp.base);
    objlist_clear(&nodes);
}

static void h_node_inspect(void *ctx, bus_call_t *call, const ProtobufCMessage *input) {
    orch_t *o = ctx;
    const Shoal__Orchestrator__NodeInspectRequest *req =
        (const Shoal__Orchestrator__NodeInspectRequest *)input;
    objlist_t nodes;
    int r = list_objects(o, "/nodes/", &shoal__node__descriptor, &nodes);
    if (r < 0) {
        reply_store_error(o, call, r, "node inspect");
        return;
    }
    ssize_t i = find_ref(&nodes, req->node, node_id_of, node_name_of);
    if (i < 0) {
        reply_lookup_error(call, "node", req->node, i);
    } else {
        Shoal__Orchestrator__NodeInspectResponse resp =
            SHOAL__ORCHESTRATOR__NODE_INSPECT_RESPONSE__INIT;
        resp.node = (Shoal__Node *)nodes.msgs[i];
        bus_reply_ok(call, &resp.base);
    }
    objlist_clear(&nodes);
}

static void h_node_update(void *ctx, bus_call_t *call, const ProtobufCMessage *input) {
    orch_t *o = ctx;
    const Shoal__Orchestrator__NodeUpdateRequest *req =
        (const Shoal__Orchestrator__NodeUpdateRequest *)input;
    char err[1024];
    if (validate_node_spec(req->spec, err, sizeof err) < 0) {
        bus_reply_error(call, BUS_INVALID_ARGUMENT, "%s", err);
        return;
    }
    for (int attempt = 0; attempt < API_RETRIES; attempt++) {
        objlist_t nodes;
        int r = list_objects(o, "/nodes/", &shoal__node__descriptor, &nodes);
        if (r < 0) {
            reply_store_error(o, call, r, "node update");
            return;
        }
        ssize_t i = find_ref(&nodes, req->node, node_id_of, node_name_of);
        if (i < 0) {
            reply_lookup_error(call, "node", req->node, i);
            objlist_clear(&nodes);
            return;
        }
        Shoal__Node *n = (Shoal__Node *)nodes.msgs[i];
        uint64_t version = n->meta ? n->meta->version : 0;
        if (req->version && req->version != version) {
            bus_reply_error(call, BUS_FAILED_PRECONDITION,
                            "node \"%s\" changed since version %" PRIu64 " (now %" PRIu64
                            "); inspect it and retry",
                            node_hostname(n), req->version, version);
            objlist_clear(&nodes);
            return;
        }
        Shoal__NodeSpec *spec = (Shoal__NodeSpec *)recon_copy_message(&req->spec->base);
        if (!spec || !n->meta) {
            if (spec)
                protobuf_c_message_free_unpacked(&spec->base, NULL);
            bus_reply_error(call, BUS_INTERNAL, "node update: out of memory or damaged node");
            objlist_clear(&nodes);
            return;
        }
        /* keep the node's name when the request does not give one */
        const char *old_name = n->spec && n->spec->annotations ? n->spec->annotations->name : "";
        if (old_name && old_name[0] && (!spec->annotations || !spec->annotations->name[0])) {
            if (!spec->annotations) {
                spec->annotations = calloc(1, sizeof *spec->annotations);
                if (spec->annotations)
                    shoal__annotations__init(spec->annotations);
            }
            if (spec->annotations)
                spec->annotations->name = strdup(old_name);
        }
        if (n->spec)
            protobuf_c_message_free_unpacked(&n->spec->base, NULL);
        n->spec = spec;
        n->meta->version++;
        n->meta->updated_at_ms = clock_wall_ms();
        char key[192];
        snprintf(key, sizeof key, "/nodes/%s", node_id(n));
        r = cas_write(o, key, nodes.mods[i], &n->base);
        if (r == 0) {
            log_info("node updated node=%s hostname=%s availability=%d role=%d", node_id(n),
                     node_hostname(n), (int)spec->availability, (int)spec->desired_role);
            Shoal__Orchestrator__NodeUpdateResponse resp =
                SHOAL__ORCHESTRATOR__NODE_UPDATE_RESPONSE__INIT;
            resp.node = n;
            bus_reply_ok(call, &resp.base);
        } else if (r != -ECANCELED) {
            reply_store_error(o, call, r, "node update");
        }
        objlist_clear(&nodes);
        if (r != -ECANCELED)
            return;
    }
    bus_reply_error(call, BUS_UNAVAILABLE, "node update: too many concurrent changes; retry");
}

static const char *node_state_name(const Shoal__Node *n) {
    const ProtobufCEnumValue *v = protobuf_c_enum_descriptor_get_value(
        &shoal__node_status__state__descriptor, n->status ? (int)n->status->state : 0);
    return v ? v->name : "UNKNOWN";
}

static void h_node_remove(void *ctx, bus_call_t *call, const ProtobufCMessage *input) {
    orch_t *o = ctx;
    const Shoal__Orchestrator__NodeRemoveRequest *req =
        (const Shoal__Orchestrator__NodeRemoveRequest *)input;
    for (int attempt = 0; attempt < API_RETRIES; attempt++) {
        objlist_t nodes;
        int r = list_objects(o, "/nodes/", &shoal__node__descriptor, &nodes);
        if (r < 0) {
            reply_store_error(o, call, r, "node remove");
            return;
        }
        ssize_t i = find_ref(&nodes, req->node, node_id_of, node_name_of);
        if (i < 0) {
            reply_lookup_error(call, "node", req->node, i);
            objlist_clear(&nodes);
            return;
        }
        const Shoal__Node *n = (const Shoal__Node *)nodes.msgs[i];
        bool down = n->status && n->status->state == SHOAL__NODE_STATUS__STATE__DOWN;
        if (!down && !req->force) {
            bus_reply_error(call, BUS_FAILED_PRECONDITION,
                            "node \"%s\" is %s, not DOWN; stop it first or remove it with force",
                            node_hostname(n), node_state_name(n));
            objlist_clear(&nodes);
            return;
        }
        char key[192];
        snprintf(key, sizeof key, "/nodes/%s", node_id(n));
        r = cas_write(o, key, nodes.mods[i], NULL);
        if (r == 0) {
            log_info("node removed node=%s hostname=%s force=%d", node_id(n), node_hostname(n),
                     req->force);
            Shoal__Orchestrator__NodeRemoveResponse resp =
                SHOAL__ORCHESTRATOR__NODE_REMOVE_RESPONSE__INIT;
            bus_reply_ok(call, &resp.base);
        } else if (r != -ECANCELED) {
            reply_store_error(o, call, r, "node remove");
        }
        objlist_clear(&nodes);
        if (r != -ECANCELED)
            return;
    }
    bus_reply_error(call, BUS_UNAVAILABLE, "node remove: too many concurrent changes; retry");
}

/* ---- health and stats --------------------------------------------------------------------- */

static void health(void *ctx, Shoal__Bus__HealthResponse *h) {
    orch_t *o = ctx;
    char msg[320];
    bus_health_add_check(h, "store", o->store_ok, "%s", o->store_ok ? "reachable" : o->store_err);
    snprintf(msg, sizeof msg, "%s", o->leader ? "leader: reconciling" : "standby: serving the API");
    bus_health_add_check(h, "leader", true, "%s", msg);
    if (o->leader) {
        bool caught_up = o->cache->revision >= o->wait_rev;
        snprintf(msg, sizeof msg, "cache at revision %" PRId64 "%s", o->cache->revision,
                 caught_up ? "" : " (waiting for its own writes)");
        bus_health_add_check(h, "watch", o->watcher != NULL, "%s", msg);
    }
    bus_health_set_status(h, o->store_ok, "%s",
                          !o->store_ok ? "store unreachable"
                          : o->leader  ? "leader"
                                       : "standby");
}

static void stats(void *ctx, Shoal__Bus__StatsResponse *s) {
    orch_t *o = ctx;
    bus_stats_add(s, "leader", o->leader);
    bus_stats_add(s, "services", (int64_t)zhashx_size(o->cache->services));
    bus_stats_add(s, "tasks", (int64_t)zhashx_size(o->cache->tasks));
    bus_stats_add(s, "nodes", (int64_t)zhashx_size(o->cache->nodes));
    bus_stats_add(s, "cache_revision", o->cache->revision);
    bus_stats_add(s, "reconciles_total", (int64_t)o->reconciles_total);
    bus_stats_add(s, "tasks_created_total", (int64_t)o->tasks_created_total);
    bus_stats_add(s, "restarts_total", (int64_t)o->restarts_total);
    bus_stats_add(s, "writes_total", (int64_t)o->writes_total);
    bus_stats_add(s, "write_conflicts_total", (int64_t)o->conflicts_total);
    bus_stats_add(s, "leader_changes_total", (int64_t)o->leader_changes_total);
    bus_stats_add(s, "decode_errors_total", (int64_t)o->cache->decode_errors);
}

/* ---- registration ------------------------------------------------------------------------- */

#define METHOD(name, lower, handler)                                                               \
    {                                                                                              \
        "orchestrator." name, &shoal__orchestrator__##lower##_request__descriptor,                 \
            &shoal__orchestrator__##lower##_response__descriptor, handler, BUS_ROLES_MANAGER       \
    }

static const bus_method_t methods[] = {
    METHOD("ServiceCreate", service_create, h_service_create),
    METHOD("ServiceInspect", service_inspect, h_service_inspect),
    METHOD("ServiceList", service_list, h_service_list),
    METHOD("ServiceUpdate", service_update, h_service_update),
    METHOD("ServiceRemove", service_remove, h_service_remove),
    METHOD("TaskList", task_list, h_task_list),
    METHOD("NodeList", node_list, h_node_list),
    METHOD("NodeInspect", node_inspect, h_node_inspect),
    METHOD("NodeUpdate", node_update, h_node_update),
    METHOD("NodeRemove", node_remove, h_node_remove),
};

int api_register(orch_t *o) {
    bus_server_set_health(o->d->bus, health, o);
    bus_server_set_stats(o->d->bus, stats, o);
    return bus_server_add(o->d->bus, methods, sizeof methods / sizeof methods[0], o);
}
