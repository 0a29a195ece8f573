/* ctl — shoalctl's shared plumbing: opening a state dir with an identity, finding daemons, and
 * printing errors and JSON the same way in every verb.
 *
 * Finding a daemon: the registry (/bus/<kind>/<instance> in the store, lib/registry.h) is the
 * truth for who runs where. Fall-backs keep the tool useful when it is not: the store itself is
 * always reached at the state dir's fixed endpoint with its pinned key (that is how every daemon
 * finds it, and `shoalctl status store` answers before the store has registered itself), and a
 * kind with no entry is tried at ipc://<state>/run/<kind>.rpc with keys/public/<kind>.key, so a
 * daemon that could not register (store down) can still be inspected. Whether anything listens
 * on a local ipc endpoint is checked with a plain connect() first: ZeroMQ would otherwise wait
 * out the whole timeout in silence, and "nothing listens at ..." is the better error line. */
#include "ctl.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "pbjson.h"

int ctl_fail(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("shoalctl: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return 1;
}

/* Whether a process accepts connections at an ipc:// endpoint. ZeroMQ would wait silently for
 * one to appear; a plain connect() tells at once, so a stopped store costs no timeout. Other
 * transports are assumed up. */
static bool ipc_listening(const char *endpoint) {
    if (strncmp(endpoint, "ipc://", 6) != 0)
        return true;
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(endpoint + 6) >= sizeof sa.sun_path)
        return true;
    strcpy(sa.sun_path, endpoint + 6);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return true;
    bool up = connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0;
    close(fd);
    return up;
}

int ctl_open(ctl_t *ctl) {
    int r = config_load(ctl->state_dir, &ctl->cfg);
    if (r == -ENOENT)
        return ctl_fail("no cluster in %s (run `shoal init`, or pass --state-dir / set "
                        "SHOAL_STATE_DIR)",
                        ctl->state_dir);
    if (r < 0)
        return ctl_fail("cannot read %s/cluster.conf: %s", ctl->state_dir, strerror(-r));
    ctl->identity = bus_identity_load(ctl->state_dir, ctl->key_name);
    if (!ctl->identity)
        return ctl_fail("no key \"%s\" in %s/keys/private (pick one with --key NAME)",
                        ctl->key_name, ctl->state_dir);
    ctl->store = store_client_new(&ctl->cfg, ctl->identity);
    if (!ctl->store)
        return ctl_fail("cannot reach the store of %s: %s", ctl->state_dir,
                        errno == ENOKEY ? "no store key in keys/public" : strerror(errno));
    store_client_set_timeout(ctl->store, ctl->timeout_ms);
    config_rpc_endpoint(&ctl->cfg, "store", ctl->store_endpoint, sizeof ctl->store_endpoint);
    ctl->store_listening = ipc_listening(ctl->store_endpoint);
    return 0;
}

void ctl_close(ctl_t *ctl) {
    store_client_destroy(&ctl->store);
    zcert_destroy(&ctl->identity);
}

static bool kind_is_valid(const char *s, size_t len) {
    if (len == 0 || len >= sizeof(((ctl_daemon_t *)0)->kind))
        return false;
    for (size_t i = 0; i < len; i++)
        if (!islower((unsigned char)s[i]) && !isdigit((unsigned char)s[i]) && s[i] != '-' &&
            s[i] != '_')
            return false;
    return true;
}

static void daemon_from_entry(ctl_daemon_t *d, const Shoal__Bus__RegistryEntry *e) {
    memset(d, 0, sizeof *d);
    snprintf(d->kind, sizeof d->kind, "%s", e->kind);
    snprintf(d->instance, sizeof d->instance, "%s", e->instance);
    snprintf(d->rpc, sizeof d->rpc, "%s", e->rpc_endpoint);
    snprintf(d->pub, sizeof d->pub, "%s", e->pub_endpoint);
    snprintf(d->key, sizeof d->key, "%s", e->public_key);
    d->registered = true;
}

/* The daemon of `kind` at the state dir's fixed endpoints; -ENOENT without a public key. */
static int daemon_from_config(ctl_t *ctl, const char *kind, ctl_daemon_t *d) {
    memset(d, 0, sizeof *d);
    snprintf(d->kind, sizeof d->kind, "%s", kind);
    config_rpc_endpoint(&ctl->cfg, kind, d->rpc, sizeof d->rpc);
    config_pub_endpoint(&ctl->cfg, kind, d->pub, sizeof d->pub);
    return bus_public_key(ctl->state_dir, kind, d->key);
}

/* Registry entries under `prefix`, decoded; entries that do not decode are skipped. */
static int registry_entries(ctl_t *ctl, const char *prefix, ctl_daemon_t **ret, size_t *n) {
    Shoal__Store__RangeResponse *resp = NULL;
    int r = ctl_store_list(ctl, prefix, &resp);
    if (r < 0)
        return r;
    ctl_daemon_t *out = calloc(resp->n_kvs ? resp->n_kvs : 1, sizeof *out);
    if (!out) {
        shoal__store__range_response__free_unpacked(resp, NULL);
        return -ENOMEM;
    }
    size_t k = 0;
    for (size_t i = 0; i < resp->n_kvs; i++) {
        Shoal__Bus__RegistryEntry *e = shoal__bus__registry_entry__unpack(
            NULL, resp->kvs[i]->value.len, resp->kvs[i]->value.data);
        if (!e)
            continue;
        daemon_from_entry(&out[k++], e);
        shoal__bus__registry_entry__free_unpacked(e, NULL);
    }
    shoal__store__range_response__free_unpacked(resp, NULL);
    *ret = out;
    *n = k;
    return 0;
}

int ctl_store_list(ctl_t *ctl, const char *prefix, Shoal__Store__RangeResponse **ret) {
    if (!ctl->store_listening)
        return -ECONNREFUSED;
    return store_list(ctl->store, prefix, ret);
}

const char *ctl_store_error(ctl_t *ctl) {
    static char buf[PATH_MAX + 128];
    if (!ctl->store_listening) {
        snprintf(buf, sizeof buf, "the store is not running (nothing listens on %s)",
                 ctl->store_endpoint);
        return buf;
    }
    return store_client_error(ctl->store);
}

static int daemon_cmp(const void *a, const void *b) {
    const ctl_daemon_t *x = a, *y = b;
    int d = strcmp(x->kind, y->kind);
    return d ? d : strcmp(x->instance, y->instance);
}

int ctl_resolve(ctl_t *ctl, const char *spec, bool all, ctl_daemon_t **ret, size_t *n) {
    const char *slash = strchr(spec, '/');
    size_t kind_len = slash ? (size_t)(slash - spec) : strlen(spec);
    const char *instance = slash ? slash + 1 : NULL;
    if (!kind_is_valid(spec, kind_len) || (instance && !*instance))
        return ctl_fail("\"%s\" is not a daemon: give a kind (\"store\") or kind/instance", spec);
    char kind[64];
    snprintf(kind, sizeof kind, "%.*s", (int)kind_len, spec);

    ctl_daemon_t *found = NULL;
    size_t nfound = 0;
    if (instance || strcmp(kind, "store") != 0) {
        char prefix[128];
        snprintf(prefix, sizeof prefix, "/bus/%s/", kind);
        int r = registry_entries(ctl, prefix, &found, &nfound);
        if (r < 0 && instance)
            return ctl_fail("cannot read the registry: %s", ctl_store_error(ctl));
        if (r < 0)
            nfound = 0;
    }
    if (found && nfound > 1)
        qsort(found, nfound, sizeof *found, daemon_cmp);
    if (instance) {
        size_t k = 0;
        for (size_t i = 0; i < nfound; i++)
            if (!strcmp(found[i].instance, instance))
                found[k++] = found[i];
        nfound = k;
        if (nfound == 0) {
            free(found);
            return ctl_fail("no daemon %s in the registry (see `shoalctl list`)", spec);
        }
    }
    if (nfound == 0) {
        free(found);
        found = calloc(1, sizeof *found);
        if (!found)
            return ctl_fail("out of memory");
        if (daemon_from_config(ctl, kind, found) < 0) {
            free(found);
            return ctl_fail("no daemon of kind \"%s\" is registered and %s/keys/public has no "
                            "key for it",
                            kind, ctl->state_dir);
        }
        if (!ipc_listening(found->rpc)) {
            ctl_fail("no %s daemon is registered or listening at %s", kind, found->rpc);
            free(found);
            return 1;
        }
        nfound = 1;
    }
    *ret = found;
    *n = all ? nfound : 1;
    return 0;
}

int ctl_resolve_all(ctl_t *ctl, ctl_daemon_t **ret, size_t *n) {
    ctl_daemon_t *found = NULL;
    size_t nfound = 0;
    if (ctl->store_listening && registry_entries(ctl, "/bus/", &found, &nfound) < 0)
        return ctl_fail("cannot read the registry: %s", ctl_store_error(ctl));
    /* Plus the daemons of this node that listen at their fixed endpoints but are not (yet)
     * registered, the store first among them: every kind with a key in keys/public. */
    char dir[PATH_MAX + 16];
    snprintf(dir, sizeof dir, "%s/keys/public", ctl->state_dir);
    DIR *dp = opendir(dir);
    struct dirent *de;
    while (dp && (de = readdir(dp))) {
        size_t len = strlen(de->d_name);
        if (len <= 4 || strcmp(de->d_name + len - 4, ".key") != 0 ||
            !kind_is_valid(de->d_name, len - 4))
            continue;
        char kind[64];
        snprintf(kind, sizeof kind, "%.*s", (int)(len - 4), de->d_name);
        ctl_daemon_t local;
        if (daemon_from_config(ctl, kind, &local) < 0 || !ipc_listening(local.pub))
            continue;
        bool known = false;
        for (size_t i = 0; i < nfound && !known; i++)
            known = !strcmp(found[i].pub, local.pub);
        if (known)
            continue;
        ctl_daemon_t *grown = realloc(found, (nfound + 1) * sizeof *grown);
        if (!grown)
            break;
        found = grown;
        found[nfound++] = local;
    }
    if (dp)
        closedir(dp);
    if (found && nfound > 1)
        qsort(found, nfound, sizeof *found, daemon_cmp);
    *ret = found;
    *n = nfound;
    return 0;
}

bus_client_t *ctl_connect(ctl_t *ctl, const char *spec, ctl_daemon_t *ret_daemon) {
    ctl_daemon_t *d = NULL;
    size_t n = 0;
    if (ctl_resolve(ctl, spec, false, &d, &n) != 0)
        return NULL;
    bus_client_t *c = bus_client_new(ctl->identity, d->rpc, d->key);
    if (!c)
        ctl_fail("cannot connect to %s at %s: %s", spec, d->rpc, strerror(errno));
    else if (ret_daemon)
        *ret_daemon = *d;
    free(d);
    return c;
}

int ctl_call_failed(bus_client_t *client, const char *method, int rc) {
    const char *msg = bus_client_error(client);
    if (rc > 0)
        return ctl_fail("%s: %s: %s", method, bus_code_name(rc), msg && *msg ? msg : "failed");
    return ctl_fail("%s: %s", method, msg && *msg ? msg : strerror(-rc));
}

int ctl_print_json(json_t *j) {
    if (!j)
        return ctl_fail("out of memory");
    char *text = json_dumps(j, JSON_INDENT(2) | JSON_REAL_PRECISION(15));
    json_decref(j);
    if (!text)
        return ctl_fail("out of memory");
    puts(text);
    free(text);
    return 0;
}

void ctl_format_duration(int64_t ms, char *buf, size_t len) {
    if (ms < 0)
        ms = 0;
    int64_t s = ms / 1000, m = s / 60, h = m / 60, d = h / 24;
    if (ms < 1000)
        snprintf(buf, len, "%lldms", (long long)ms);
    else if (s < 60)
        snprintf(buf, len, "%llds", (long long)s);
    else if (m < 60)
        snprintf(buf, len, "%lldm%02llds", (long long)m, (long long)(s % 60));
    else if (h < 24)
        snprintf(buf, len, "%lldh%02lldm", (long long)h, (long long)(m % 60));
    else
        snprintf(buf, len, "%lldd%02lldh", (long long)d, (long long)(h % 24));
}
