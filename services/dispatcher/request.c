/* request — what a dispatcher request must look like before the daemon acts on it.
 *
 * Everything here comes from agents over the network: ids end up inside store keys
 * ("/nodes/<id>", "/tasks/<id>"), strings end up in stored objects and logs, and counts decide
 * how much the daemon allocates. So ids are restricted to a key-safe alphabet, strings and
 * repeated fields are bounded, and task states must be ones an agent may report (after ASSIGNED:
 * the manager owns the states up to ASSIGNED). A request that fails gets INVALID_ARGUMENT with
 * the line written here; nothing of it is kept.
 *
 * Pure functions; the fuzz target tests/fuzz/fuzz_dispatcher_requests.c runs them on arbitrary
 * bytes decoded as each request type. */
#include "request.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "objects.pb-c.h"

#define ID_MAX    64
#define TEXT_MAX  4096 /* message, err */
#define SHORT_MAX 256  /* hostname, addr, label keys and values, container id */
#define KEY_MAX   128  /* cluster key (shoal_config_t.cluster_key) */
#define LIST_MAX  64   /* labels, networks, addresses, ports */

static int fail(char *errbuf, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int fail(char *errbuf, size_t errlen, const char *fmt, ...) {
    if (errbuf && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(errbuf, errlen, fmt, ap);
        va_end(ap);
    }
    return -EINVAL;
}

bool request_id_valid(const char *id) {
    if (!id)
        return false;
    size_t n = 0;
    for (const char *c = id; *c; c++, n++) {
        bool ok = (*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') ||
                  (*c >= '0' && *c <= '9') || *c == '_' || *c == '-' || *c == '.';
        if (!ok || n >= ID_MAX)
            return false;
    }
    return n > 0 && strcmp(id, ".") != 0 && strcmp(id, "..") != 0;
}

static bool short_ok(const char *s) {
    return !s || strnlen(s, SHORT_MAX + 1) <= SHORT_MAX;
}

static int check_session(const char *node_id, const char *session_id, char *errbuf, size_t errlen) {
    if (!request_id_valid(node_id))
        return fail(errbuf, errlen, "node_id must be 1-64 characters of [A-Za-z0-9_.-]");
    if (!request_id_valid(session_id))
        return fail(errbuf, errlen, "session_id must be 1-64 characters of [A-Za-z0-9_.-]");
    return 0;
}

static int check_labels(size_t n, Shoal__Label *const *labels, const char *what, char *errbuf,
                        size_t errlen) {
    if (n > LIST_MAX)
        return fail(errbuf, errlen, "%s: at most %d labels (got %zu)", what, LIST_MAX, n);
    for (size_t i = 0; i < n; i++)
        if (!labels[i] || !short_ok(labels[i]->key) || !short_ok(labels[i]->value))
            return fail(errbuf, errlen, "%s: label %zu longer than %d characters", what, i,
                        SHORT_MAX);
    return 0;
}

int request_check_register(const Shoal__Dispatcher__RegisterRequest *r, char *errbuf,
                           size_t errlen) {
    if (!r)
        return fail(errbuf, errlen, "empty request");
    if (!r->cluster_key || !r->cluster_key[0])
        return fail(errbuf, errlen, "cluster_key is required");
    if (strnlen(r->cluster_key, KEY_MAX) >= KEY_MAX)
        return fail(errbuf, errlen, "cluster_key is too long");
    if (r->node_id && r->node_id[0] && !request_id_valid(r->node_id))
        return fail(errbuf, errlen, "node_id must be empty or 1-64 characters of [A-Za-z0-9_.-]");
    if (!short_ok(r->addr))
        return fail(errbuf, errlen, "addr is longer than %d characters", SHORT_MAX);
    const Shoal__NodeDescription *d = r->description;
    if (d) {
        if (!short_ok(d->hostname))
            return fail(errbuf, errlen, "description.hostname is longer than %d characters",
                        SHORT_MAX);
        if (d->platform && (!short_ok(d->platform->os) || !short_ok(d->platform->architecture)))
            return fail(errbuf, errlen, "description.platform fields are too long");
        if (d->resources && (d->resources->nano_cpus < 0 || d->resources->memory_bytes < 0))
            return fail(errbuf, errlen, "description.resources must not be negative");
        if (d->engine) {
            if (!short_ok(d->engine->engine_version) || !short_ok(d->engine->api_version))
                return fail(errbuf, errlen, "description.engine versions are too long");
            int rc = check_labels(d->engine->n_labels, d->engine->labels,
                                  "description.engine.labels", errbuf, errlen);
            if (rc < 0)
                return rc;
        }
    }
    return 0;
}

int request_check_heartbeat(const Shoal__Dispatcher__HeartbeatRequest *r, char *errbuf,
                            size_t errlen) {
    if (!r)
        return fail(errbuf, errlen, "empty request");
    return check_session(r->node_id, r->session_id, errbuf, errlen);
}

int request_check_assignments(const Shoal__Dispatcher__AssignmentsRequest *r, char *errbuf,
                              size_t errlen) {
    if (!r)
        return fail(errbuf, errlen, "empty request");
    return check_session(r->node_id, r->session_id, errbuf, errlen);
}

static bool agent_state(int state) {
    if (state <= SHOAL__TASK_STATE__ASSIGNED || state > SHOAL__TASK_STATE__REJECTED)
        return false;
    return protobuf_c_enum_descriptor_get_value(&shoal__task_state__descriptor, state) != NULL;
}

static int check_update(const Shoal__Dispatcher__TaskStatusUpdate *u, size_t i, char *errbuf,
                        size_t errlen) {
    if (!u)
        return fail(errbuf, errlen, "updates[%zu]: empty", i);
    if (!request_id_valid(u->task_id))
        return fail(errbuf, errlen,
                    "updates[%zu]: task_id must be 1-64 characters of "
                    "[A-Za-z0-9_.-]",
                    i);
    const Shoal__TaskStatus *s = u->status;
    if (!s)
        return fail(errbuf, errlen, "updates[%zu]: status is required", i);
    if (!agent_state((int)s->state))
        return fail(errbuf, errlen,
                    "updates[%zu]: state %d is not one an agent reports "
                    "(ACCEPTED..REJECTED)",
                    i, (int)s->state);
    if ((s->message && strnlen(s->message, TEXT_MAX + 1) > TEXT_MAX) ||
        (s->err && strnlen(s->err, TEXT_MAX + 1) > TEXT_MAX))
        return fail(errbuf, errlen, "updates[%zu]: message and err are limited to %d characters", i,
                    TEXT_MAX);
    if (s->container && !short_ok(s->container->container_id))
        return fail(errbuf, errlen, "updates[%zu]: container_id is too long", i);
    if (s->port_status && s->port_status->n_ports > LIST_MAX)
        return fail(errbuf, errlen, "updates[%zu]: at most %d ports", i, LIST_MAX);
    if (u->n_networks > LIST_MAX)
        return fail(errbuf, errlen, "updates[%zu]: at most %d networks", i, LIST_MAX);
    for (size_t k = 0; k < u->n_networks; k++) {
        const Shoal__NetworkAttachment *n = u->networks[k];
        if (!n || !short_ok(n->network) || n->n_addresses > LIST_MAX)
            return fail(errbuf, errlen, "updates[%zu]: networks[%zu] is malformed", i, k);
        for (size_t a = 0; a < n->n_addresses; a++)
            if (!short_ok(n->addresses[a]))
                return fail(errbuf, errlen, "updates[%zu]: networks[%zu] address too long", i, k);
    }
    return 0;
}

int request_check_update_task_status(const Shoal__Dispatcher__UpdateTaskStatusRequest *r,
                                     char *errbuf, size_t errlen) {
    if (!r)
        return fail(errbuf, errlen, "empty request");
    int rc = check_session(r->node_id, r->session_id, errbuf, errlen);
    if (rc < 0)
        return rc;
    if (r->n_updates > REQUEST_MAX_UPDATES)
        return fail(errbuf, errlen, "at most %d updates per request (got %zu)", REQUEST_MAX_UPDATES,
                    r->n_updates);
    for (size_t i = 0; i < r->n_updates; i++) {
        rc = check_update(r->updates[i], i, errbuf, errlen);
        if (rc < 0)
            return rc;
    }
    return 0;
}
