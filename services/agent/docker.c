/* docker — Docker Engine API client over the Engine's unix socket (see docker.h).
 *
 * Design:
 * - One curl easy handle per docker_t, reset before each request but kept alive, so a thread
 *   reuses its connection to dockerd. Requests are synchronous; callers that must not block
 *   (the agent's main loop) run them on worker threads.
 * - The API version comes from /_ping (Api-Version header) on first use; paths get "/v<ver>".
 * - Replies are read into a bounded buffer (DOCKER_REPLY_MAX); an image pull streams progress
 *   lines instead and keeps only the last error it saw, since the Engine reports a failed pull
 *   as a 200 whose stream ends with {"error": ...}.
 * - HTTP errors become -errno with the Engine's `message` text, mapped in one place
 *   (docker_status_errno).
 * - The events follower is an actor with its own handle on a curl multi: it waits on the socket
 *   and on its pipe at once, so $TERM is seen at once and the stream needs no polling.
 * - The parsers take arbitrary bytes (fuzzed) and copy bounded strings; they never trust types. */
#include "docker.h"

#include <ctype.h>
#include <curl/curl.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

#define DOCKER_REPLY_MAX             (16u << 20)
#define DOCKER_TIMEOUT_MS            30000L
#define DOCKER_PULL_TIMEOUT_MS       (30L * 60 * 1000)
#define DOCKER_EVENTS_BACKOFF_MIN_MS 100
#define DOCKER_EVENTS_BACKOFF_MAX_MS 5000

struct docker {
    CURL *curl;
    char socket_path[108];
    char api_version[16];
    char prefix[24]; /* "/v1.41" */
    atomic_bool interrupted;
    uint64_t requests;
    uint64_t errors;
};

typedef struct reply_buf {
    char *data;
    size_t len;
    size_t cap;
    bool overflow;
    /* streaming mode (pull): complete lines go to on_line instead of being kept */
    void (*on_line)(void *ctx, const char *line, size_t len);
    void *line_ctx;
} reply_buf_t;

static void set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void set_err(char *err, size_t errlen, const char *fmt, ...) {
    if (!err || !errlen)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static void copy_str(char *dst, size_t cap, const char *src) {
    if (!src)
        src = "";
    snprintf(dst, cap, "%s", src);
}

static int curl_global_once(void) {
    static atomic_int state; /* 0 = not yet, 1 = done, -1 = failed */
    static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    if (atomic_load(&state) != 0)
        return atomic_load(&state) > 0 ? 0 : -ENOMEM;
    pthread_mutex_lock(&mu);
    if (atomic_load(&state) == 0)
        atomic_store(&state, curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK ? 1 : -1);
    pthread_mutex_unlock(&mu);
    return atomic_load(&state) > 0 ? 0 : -ENOMEM;
}

docker_t *docker_new(const char *socket_path) {
    if (curl_global_once() < 0)
        return NULL;
    docker_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->curl = curl_easy_init();
    if (!self->curl) {
        free(self);
        return NULL;
    }
    copy_str(self->socket_path, sizeof self->socket_path,
             socket_path && *socket_path ? socket_path : DOCKER_DEFAULT_SOCKET);
    return self;
}

void docker_destroy(docker_t **self_p) {
    if (!self_p || !*self_p)
        return;
    docker_t *self = *self_p;
    curl_easy_cleanup(self->curl);
    free(self);
    *self_p = NULL;
}

void docker_interrupt(docker_t *self) {
    if (self)
        atomic_store(&self->interrupted, true);
}

const char *docker_socket_path(const docker_t *self) {
    return self->socket_path;
}

const char *docker_api_version(const docker_t *self) {
    return self->api_version;
}

uint64_t docker_requests_total(const docker_t *self) {
    return self->requests;
}

uint64_t docker_errors_total(const docker_t *self) {
    return self->errors;
}

const char *docker_event_kind_name(enum docker_event_kind kind) {
    switch (kind) {
    case DOCKER_EVENT_START:
        return "start";
    case DOCKER_EVENT_DIE:
        return "die";
    case DOCKER_EVENT_OOM:
        return "oom";
    case DOCKER_EVENT_DESTROY:
        return "destroy";
    case DOCKER_EVENT_HEALTHY:
        return "healthy";
    case DOCKER_EVENT_UNHEALTHY:
        return "unhealthy";
    }
    return "unknown";
}

/* ---- transport ------------------------------------------------------------------------- */

static void reply_buf_free(reply_buf_t *b) {
    free(b->data);
    memset(b, 0, sizeof *b);
}

static int reply_buf_append(reply_buf_t *b, const char *data, size_t len) {
    if (b->len + len + 1 > b->cap) {
        if (b->len + len + 1 > DOCKER_REPLY_MAX) {
            b->overflow = true;
            return -ENOSPC;
        }
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + len + 1)
            cap *= 2;
        char *p = realloc(b->data, cap);
        if (!p)
            return -ENOMEM;
        b->data = p;
        b->cap = cap;
    }
    memcpy(b->data + b->len, data, len);
    b->len += len;
    b->data[b->len] = '\0';
    return 0;
}

/* Hands every complete line to on_line and keeps the partial tail. */
static void reply_buf_drain_lines(reply_buf_t *b) {
    size_t start = 0;
    for (size_t i = 0; i < b->len; i++) {
        if (b->data[i] != '\n')
            continue;
        if (i > start)
            b->on_line(b->line_ctx, b->data + start, i - start);
        start = i + 1;
    }
    if (start > 0) {
        memmove(b->data, b->data + start, b->len - start);
        b->len -= start;
        if (b->data)
            b->data[b->len] = '\0';
    }
}

static size_t on_write(char *ptr, size_t size, size_t nmemb, void *userdata) {
    reply_buf_t *b = userdata;
    size_t n = size * nmemb;
    if (reply_buf_append(b, ptr, n) < 0)
        return 0; /* aborts the transfer: CURLE_WRITE_ERROR */
    if (b->on_line)
        reply_buf_drain_lines(b);
    return n;
}

static int on_progress(void *clientp, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                       curl_off_t ulnow) {
    docker_t *self = clientp;
    return atomic_load(&self->interrupted) ? 1 : 0;
}

typedef struct header_ctx {
    char api_version[16];
} header_ctx_t;

static size_t on_header(char *buf, size_t size, size_t nitems, void *userdata) {
    header_ctx_t *h = userdata;
    size_t n = size * nitems;
    static const char name[] = "api-version:";
    if (n > sizeof name - 1 && strncasecmp(buf, name, sizeof name - 1) == 0) {
        size_t i = sizeof name - 1, j = 0;
        while (i < n && (buf[i] == ' ' || buf[i] == '\t'))
            i++;
        while (i < n && j + 1 < sizeof h->api_version &&
               (isdigit((unsigned char)buf[i]) || buf[i] == '.'))
            h->api_version[j++] = buf[i++];
        h->api_version[j] = '\0';
    }
    return n;
}

/* The Engine's `message` from an error body, else the body itself, else the status. */
static void error_from_body(const char *body, size_t len, long status, char *err, size_t errlen) {
    if (body && len) {
        json_t *j = json_loadb(body, len, 0, NULL);
        const char *msg = j ? json_string_value(json_object_get(j, "message")) : NULL;
        if (msg && *msg) {
            set_err(err, errlen, "%s", msg);
            json_decref(j);
            return;
        }
        json_decref(j);
        size_t n = len;
        while (n && isspace((unsigned char)body[n - 1]))
            n--;
        if (n) {
            set_err(err, errlen, "%.*s", (int)(n > 400 ? 400 : n), body);
            return;
        }
    }
    set_err(err, errlen, "Docker Engine answered HTTP %ld", status);
}

static int docker_status_errno(long status) {
    if (status >= 200 && status < 400)
        return 0;
    switch (status) {
    case 400:
        return -EINVAL;
    case 401:
    case 403:
        return -EACCES;
    case 404:
        return -ENOENT;
    case 409:
        return -EEXIST;
    case 503:
        return -EAGAIN;
    default:
        return -EIO;
    }
}

/* One HTTP exchange. `path` is used as given (callers add the version prefix). */
static int docker_http(docker_t *self, const char *method, const char *path, const char *body,
                       long timeout_ms, reply_buf_t *reply, header_ctx_t *headers, long *ret_status,
                       char *err, size_t errlen) {
    if (atomic_load(&self->interrupted)) {
        set_err(err, errlen, "interrupted");
        return -ECANCELED;
    }
    CURL *c = self->curl;
    char url[4096];
    if (snprintf(url, sizeof url, "http://docker%s", path) >= (int)sizeof url) {
        set_err(err, errlen, "request path too long");
        return -EINVAL;
    }
    curl_easy_reset(c);
    struct curl_slist *hdrs = NULL;
    curl_easy_setopt(c, CURLOPT_UNIX_SOCKET_PATH, self->socket_path);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, timeout_ms);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, 5000L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_write);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, reply);
    curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(c, CURLOPT_XFERINFODATA, self);
    if (headers) {
        curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
        curl_easy_setopt(c, CURLOPT_HEADERDATA, headers);
    }
    if (body) {
        hdrs = curl_slist_append(hdrs, "Content-Type: application/json");
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
    } else if (strcmp(method, "POST") == 0) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, "");
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, 0L);
    }
    if (hdrs)
        curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
    self->requests++;
    CURLcode rc = curl_easy_perform(c);
    curl_slist_free_all(hdrs);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, NULL);
    if (rc != CURLE_OK) {
        self->errors++;
        switch (rc) {
        case CURLE_COULDNT_CONNECT:
            set_err(err, errlen,
                    "cannot connect to the Docker daemon at unix://%s (is dockerd "
                    "running?)",
                    self->socket_path);
            return -ECONNREFUSED;
        case CURLE_OPERATION_TIMEDOUT:
            set_err(err, errlen, "Docker Engine did not answer %s %s within %ld ms", method, path,
                    timeout_ms);
            return -ETIMEDOUT;
        case CURLE_ABORTED_BY_CALLBACK:
            set_err(err, errlen, "interrupted");
            return -ECANCELED;
        case CURLE_WRITE_ERROR:
            if (reply->overflow) {
                set_err(err, errlen, "Docker Engine reply to %s %s exceeds %u bytes", method, path,
                        DOCKER_REPLY_MAX);
                return -EPROTO;
            }
            set_err(err, errlen, "out of memory reading the Docker Engine reply");
            return -ENOMEM;
        default:
            set_err(err, errlen, "Docker Engine request %s %s failed: %s", method, path,
                    curl_easy_strerror(rc));
            return -EIO;
        }
    }
    long status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    *ret_status = status;
    int r = docker_status_errno(status);
    if (r < 0) {
        self->errors++;
        error_from_body(reply->data, reply->len, status, err, errlen);
    }
    return r;
}

int docker_ping(docker_t *self, char *err, size_t errlen) {
    reply_buf_t reply = {0};
    header_ctx_t h = {{0}};
    long status = 0;
    int r = docker_http(self, "GET", "/_ping", NULL, 5000L, &reply, &h, &status, err, errlen);
    reply_buf_free(&reply);
    if (r < 0)
        return r;
    if (h.api_version[0]) {
        copy_str(self->api_version, sizeof self->api_version, h.api_version);
        snprintf(self->prefix, sizeof self->prefix, "/v%s", h.api_version);
    } else {
        self->api_version[0] = '\0';
        self->prefix[0] = '\0'; /* very old Engine: unversioned paths */
    }
    return 0;
}

/* A versioned request; pings first when the version is not known yet. */
static int docker_call(docker_t *self, const char *method, const char *path, const char *body,
                       long timeout_ms, reply_buf_t *reply, long *ret_status, char *err,
                       size_t errlen) {
    if (!self->api_version[0] && !self->prefix[0]) {
        int r = docker_ping(self, err, errlen);
        if (r < 0)
            return r;
    }
    char full[4096];
    if (snprintf(full, sizeof full, "%s%s", self->prefix, path) >= (int)sizeof full) {
        set_err(err, errlen, "request path too long");
        return -EINVAL;
    }
    long status = 0;
    int r = docker_http(self, method, full, body, timeout_ms, reply, NULL, &status, err, errlen);
    if (ret_status)
        *ret_status = status;
    return r;
}

/* Escapes a query value. Returns a malloc'd string or NULL. */
static char *escape(docker_t *self, const char *s) {
    char *e = curl_easy_escape(self->curl, s, 0);
    if (!e)
        return NULL;
    char *copy = strdup(e);
    curl_free(e);
    return copy;
}

/* Container ids and names go into paths: refuse anything that could change the path. */
static int check_ref(const char *ref, char *err, size_t errlen) {
    if (!ref || !*ref || strlen(ref) > 255) {
        set_err(err, errlen, "invalid container reference");
        return -EINVAL;
    }
    for (const char *p = ref; *p; p++) {
        if (!isalnum((unsigned char)*p) && *p != '_' && *p != '.' && *p != '-') {
            set_err(err, errlen, "invalid container reference \"%s\"", ref);
            return -EINVAL;
        }
    }
    return 0;
}

/* Image references: printable, no spaces, '?', '#' or "..". */
static int check_image(const char *image, char *err, size_t errlen) {
    if (!image || !*image || strlen(image) > 512) {
        set_err(err, errlen, "invalid image reference");
        return -EINVAL;
    }
    for (const char *p = image; *p; p++) {
        if (!isgraph((unsigned char)*p) || *p == '?' || *p == '#' || *p == '%' || *p == '\\') {
            set_err(err, errlen, "invalid image reference \"%s\"", image);
            return -EINVAL;
        }
    }
    if (strstr(image, "..")) {
        set_err(err, errlen, "invalid image reference \"%s\"", image);
        return -EINVAL;
    }
    return 0;
}

/* ---- parsers --------------------------------------------------------------------------- */

static const char *jstr(const json_t *obj, const char *key) {
    return json_string_value(json_object_get(obj, key));
}

static int64_t jint(const json_t *obj, const char *key, int64_t dflt) {
    json_t *v = json_object_get(obj, key);
    return json_is_integer(v) ? (int64_t)json_integer_value(v) : dflt;
}

/* Copies a string that must fit; -EINVAL when it does not. */
static int copy_fit(char *dst, size_t cap, const char *src) {
    if (!src)
        src = "";
    size_t n = strlen(src);
    if (n >= cap)
        return -EINVAL;
    memcpy(dst, src, n + 1);
    return 0;
}

int docker_parse_event(const char *line, size_t len, docker_event_t *ret) {
    memset(ret, 0, sizeof *ret);
    ret->exit_code = -1;
    json_t *j = json_loadb(line, len, JSON_REJECT_DUPLICATES, NULL);
    if (!json_is_object(j)) {
        json_decref(j);
        return -EINVAL;
    }
    int r = -ENOENT;
    const char *type = jstr(j, "Type");
    const char *action = jstr(j, "Action");
    if (!action)
        action = jstr(j, "status");
    json_t *actor = json_object_get(j, "Actor");
    json_t *attrs = json_object_get(actor, "Attributes");
    const char *id = jstr(actor, "ID");
    if (!id)
        id = jstr(j, "id");
    const char *task_id = jstr(attrs, DOCKER_LABEL_TASK_ID);
    if (type && strcmp(type, "container") != 0)
        goto out;
    if (!action || !id || !task_id || !*task_id || !*id)
        goto out;
    if (strcmp(action, "start") == 0)
        ret->kind = DOCKER_EVENT_START;
    else if (strcmp(action, "die") == 0)
        ret->kind = DOCKER_EVENT_DIE;
    else if (strcmp(action, "oom") == 0)
        ret->kind = DOCKER_EVENT_OOM;
    else if (strcmp(action, "destroy") == 0)
        ret->kind = DOCKER_EVENT_DESTROY;
    else if (strcmp(action, "health_status: healthy") == 0)
        ret->kind = DOCKER_EVENT_HEALTHY;
    else if (strcmp(action, "health_status: unhealthy") == 0)
        ret->kind = DOCKER_EVENT_UNHEALTHY;
    else
        goto out;
    if (copy_fit(ret->container_id, sizeof ret->container_id, id) < 0 ||
        copy_fit(ret->task_id, sizeof ret->task_id, task_id) < 0) {
        r = -EINVAL;
        goto out;
    }
    if (ret->kind == DOCKER_EVENT_DIE) {
        const char *code = jstr(attrs, "exitCode");
        if (!code) {
            r = -EINVAL;
            goto out;
        }
        char *end = NULL;
        errno = 0;
        long v = strtol(code, &end, 10);
        if (errno || end == code || *end || v < -1 || v > 255) {
            r = -EINVAL;
            goto out;
        }
        ret->exit_code = (int)v;
    }
    r = 0;
out:
    if (r < 0) {
        memset(ret, 0, sizeof *ret);
        ret->exit_code = -1;
    }
    json_decref(j);
    return r;
}

static void container_from_labels(docker_container_t *c, const json_t *labels) {
    const char *tid = jstr(labels, DOCKER_LABEL_TASK_ID);
    if (tid && strlen(tid) < sizeof c->task_id)
        copy_str(c->task_id, sizeof c->task_id, tid);
    const char *nid = jstr(labels, DOCKER_LABEL_NODE_ID);
    if (nid && strlen(nid) < sizeof c->node_id)
        copy_str(c->node_id, sizeof c->node_id, nid);
}

int docker_parse_inspect(const char *body, size_t len, const char *network,
                         docker_container_t *ret) {
    memset(ret, 0, sizeof *ret);
    ret->exit_code = -1;
    json_t *j = json_loadb(body, len, 0, NULL);
    const char *id = json_is_object(j) ? jstr(j, "Id") : NULL;
    if (!id || !*id || copy_fit(ret->id, sizeof ret->id, id) < 0) {
        json_decref(j);
        memset(ret, 0, sizeof *ret);
        ret->exit_code = -1;
        return -EINVAL;
    }
    const char *name = jstr(j, "Name");
    if (name)
        copy_str(ret->name, sizeof ret->name, name[0] == '/' ? name + 1 : name);
    json_t *state = json_object_get(j, "State");
    if (json_is_object(state)) {
        copy_str(ret->status, sizeof ret->status, jstr(state, "Status"));
        ret->running = json_is_true(json_object_get(state, "Running"));
        ret->oom_killed = json_is_true(json_object_get(state, "OOMKilled"));
        int64_t code = jint(state, "ExitCode", -1);
        ret->exit_code = code >= INT32_MIN && code <= INT32_MAX ? (int)code : -1;
        int64_t pid = jint(state, "Pid", 0);
        ret->pid = pid > 0 && pid <= INT32_MAX ? (int)pid : 0;
        copy_str(ret->error, sizeof ret->error, jstr(state, "Error"));
        const char *health = jstr(json_object_get(state, "Health"), "Status");
        if (health && strlen(health) < sizeof ret->health)
            copy_str(ret->health, sizeof ret->health, health);
    }
    container_from_labels(ret, json_object_get(json_object_get(j, "Config"), "Labels"));
    if (network) {
        json_t *nets = json_object_get(json_object_get(j, "NetworkSettings"), "Networks");
        const char *ip = jstr(json_object_get(nets, network), "IPAddress");
        if (ip && strlen(ip) < sizeof ret->ip)
            copy_str(ret->ip, sizeof ret->ip, ip);
    }
    json_decref(j);
    return 0;
}

int docker_parse_list(const char *body, size_t len, docker_container_t **ret, size_t *ret_n) {
    *ret = NULL;
    *ret_n = 0;
    json_t *j = json_loadb(body, len, 0, NULL);
    if (!json_is_array(j)) {
        json_decref(j);
        return -EINVAL;
    }
    size_t n = json_array_size(j), k = 0;
    docker_container_t *list = calloc(n ? n : 1, sizeof *list);
    if (!list) {
        json_decref(j);
        return -ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        json_t *e = json_array_get(j, i);
        const char *id = jstr(e, "Id");
        if (!json_is_object(e) || !id || !*id)
            continue;
        docker_container_t *c = &list[k];
        memset(c, 0, sizeof *c);
        c->exit_code = -1;
        if (copy_fit(c->id, sizeof c->id, id) < 0)
            continue;
        const char *name = json_string_value(json_array_get(json_object_get(e, "Names"), 0));
        if (name)
            copy_str(c->name, sizeof c->name, name[0] == '/' ? name + 1 : name);
        copy_str(c->status, sizeof c->status, jstr(e, "State"));
        c->running = strcmp(c->status, "running") == 0;
        container_from_labels(c, json_object_get(e, "Labels"));
        k++;
    }
    json_decref(j);
    *ret = list;
    *ret_n = k;
    return 0;
}

void docker_info_clear(docker_info_t *info) {
    if (!info)
        return;
    for (size_t i = 0; i < info->nlabels; i++)
        free(info->labels[i]);
    free(info->labels);
    memset(info, 0, sizeof *info);
}

int docker_parse_info(const char *body, size_t len, docker_info_t *ret) {
    memset(ret, 0, sizeof *ret);
    json_t *j = json_loadb(body, len, 0, NULL);
    if (!json_is_object(j)) {
        json_decref(j);
        return -EINVAL;
    }
    int64_t ncpu = jint(j, "NCPU", 0);
    ret->ncpu = ncpu > 0 && ncpu < 1 << 20 ? (int)ncpu : 0;
    int64_t mem = jint(j, "MemTotal", 0);
    ret->mem_total = mem > 0 ? mem : 0;
    copy_str(ret->name, sizeof ret->name, jstr(j, "Name"));
    copy_str(ret->server_version, sizeof ret->server_version, jstr(j, "ServerVersion"));
    copy_str(ret->os_type, sizeof ret->os_type, jstr(j, "OSType"));
    copy_str(ret->architecture, sizeof ret->architecture, jstr(j, "Architecture"));
    json_t *labels = json_object_get(j, "Labels");
    size_t n = json_array_size(labels);
    if (n > 256)
        n = 256;
    if (n) {
        ret->labels = calloc(n, sizeof *ret->labels);
        if (!ret->labels) {
            json_decref(j);
            return -ENOMEM;
        }
        for (size_t i = 0; i < n; i++) {
            const char *l = json_string_value(json_array_get(labels, i));
            if (!l || strlen(l) > 1024)
                continue;
            ret->labels[ret->nlabels] = strdup(l);
            if (!ret->labels[ret->nlabels]) {
                json_decref(j);
                docker_info_clear(ret);
                return -ENOMEM;
            }
            ret->nlabels++;
        }
    }
    json_decref(j);
    return 0;
}

/* ---- calls ----------------------------------------------------------------------------- */

int docker_info(docker_t *self, docker_info_t *ret, char *err, size_t errlen) {
    reply_buf_t reply = {0};
    int r = docker_call(self, "GET", "/info", NULL, DOCKER_TIMEOUT_MS, &reply, NULL, err, errlen);
    if (r == 0) {
        r = docker_parse_info(reply.data ? reply.data : "", reply.len, ret);
        if (r == -EINVAL) {
            set_err(err, errlen, "Docker Engine sent an unreadable /info reply");
            r = -EPROTO;
        }
        if (r == 0)
            copy_str(ret->api_version, sizeof ret->api_version, self->api_version);
    }
    reply_buf_free(&reply);
    return r;
}

int docker_image_inspect(docker_t *self, const char *image, char *err, size_t errlen) {
    int r = check_image(image, err, errlen);
    if (r < 0)
        return r;
    char path[1024];
    snprintf(path, sizeof path, "/images/%s/json", image);
    reply_buf_t reply = {0};
    r = docker_call(self, "GET", path, NULL, DOCKER_TIMEOUT_MS, &reply, NULL, err, errlen);
    reply_buf_free(&reply);
    return r;
}

typedef struct pull_ctx {
    char error[512];
} pull_ctx_t;

static void pull_on_line(void *ctx, const char *line, size_t len) {
    pull_ctx_t *p = ctx;
    json_t *j = json_loadb(line, len, 0, NULL);
    if (!json_is_object(j)) {
        json_decref(j);
        return;
    }
    const char *msg = jstr(json_object_get(j, "errorDetail"), "message");
    if (!msg)
        msg = jstr(j, "error");
    if (!msg) /* an HTTP error body, streamed here like progress lines */
        msg = jstr(j, "message");
    if (msg && *msg)
        copy_str(p->error, sizeof p->error, msg);
    json_decref(j);
}

/* Splits "repo[:tag]" / "repo@digest" into fromImage and tag, as the docker CLI does. */
static void image_split(const char *image, char *repo, size_t repolen, char *tag, size_t taglen) {
    const char *at = strchr(image, '@');
    if (at) {
        snprintf(repo, repolen, "%.*s", (int)(at - image), image);
        copy_str(tag, taglen, at + 1);
        return;
    }
    const char *slash = strrchr(image, '/');
    const char *colon = strrchr(slash ? slash : image, ':');
    if (colon) {
        snprintf(repo, repolen, "%.*s", (int)(colon - image), image);
        copy_str(tag, taglen, colon + 1);
    } else {
        copy_str(repo, repolen, image);
        copy_str(tag, taglen, "latest");
    }
}

int docker_image_pull(docker_t *self, const char *image, char *err, size_t errlen) {
    int r = check_image(image, err, errlen);
    if (r < 0)
        return r;
    char repo[600], tag[300];
    image_split(image, repo, sizeof repo, tag, sizeof tag);
    char *erepo = escape(self, repo), *etag = escape(self, tag);
    if (!erepo || !etag) {
        free(erepo);
        free(etag);
        set_err(err, errlen, "out of memory");
        return -ENOMEM;
    }
    char path[2048];
    snprintf(path, sizeof path, "/images/create?fromImage=%s&tag=%s", erepo, etag);
    free(erepo);
    free(etag);
    pull_ctx_t pull = {{0}};
    reply_buf_t reply = {.on_line = pull_on_line, .line_ctx = &pull};
    long status = 0;
    r = docker_call(self, "POST", path, NULL, DOCKER_PULL_TIMEOUT_MS, &reply, &status, err, errlen);
    if (reply.len) /* a last line without its newline */
        pull_on_line(&pull, reply.data, reply.len);
    reply_buf_free(&reply);
    if (pull.error[0] && (r == 0 || status >= 400)) {
        if (r == 0) {
            self->errors++;
            r = -EIO;
        }
        set_err(err, errlen, "%s", pull.error);
    }
    return r;
}

int docker_network_ensure(docker_t *self, const char *name, char *err, size_t errlen) {
    int r = check_ref(name, err, errlen);
    if (r < 0)
        return r;
    char path[512];
    snprintf(path, sizeof path, "/networks/%s", name);
    reply_buf_t reply = {0};
    r = docker_call(self, "GET", path, NULL, DOCKER_TIMEOUT_MS, &reply, NULL, err, errlen);
    reply_buf_free(&reply);
    if (r != -ENOENT)
        return r;
    json_t *body = json_pack("{s:s, s:s, s:b, s:{s:s}}", "Name", name, "Driver", "bridge",
                             "CheckDuplicate", 1, "Labels", "shoal.network", "true");
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    if (!text) {
        set_err(err, errlen, "out of memory");
        return -ENOMEM;
    }
    r = docker_call(self, "POST", "/networks/create", text, DOCKER_TIMEOUT_MS, &reply, NULL, err,
                    errlen);
    free(text);
    reply_buf_free(&reply);
    if (r == -EEXIST) /* created meanwhile by someone else */
        r = 0;
    return r;
}

int docker_container_create(docker_t *self, const char *name, const json_t *config, char *ret_id,
                            size_t idlen, char *err, size_t errlen) {
    int r = check_ref(name, err, errlen);
    if (r < 0)
        return r;
    char *text = json_dumps(config, JSON_COMPACT);
    if (!text) {
        set_err(err, errlen, "out of memory");
        return -ENOMEM;
    }
    char path[512];
    snprintf(path, sizeof path, "/containers/create?name=%s", name);
    reply_buf_t reply = {0};
    r = docker_call(self, "POST", path, text, DOCKER_TIMEOUT_MS, &reply, NULL, err, errlen);
    free(text);
    if (r == 0) {
        json_t *j = json_loadb(reply.data ? reply.data : "", reply.len, 0, NULL);
        const char *id = jstr(j, "Id");
        if (!id || copy_fit(ret_id, idlen, id) < 0) {
            set_err(err, errlen, "Docker Engine sent no container id for %s", name);
            r = -EPROTO;
        }
        json_decref(j);
    }
    reply_buf_free(&reply);
    return r;
}

static int container_post(docker_t *self, const char *id, const char *verb, const char *query,
                          long timeout_ms, long *ret_status, char *err, size_t errlen) {
    int r = check_ref(id, err, errlen);
    if (r < 0)
        return r;
    char path[512];
    snprintf(path, sizeof path, "/containers/%s/%s%s", id, verb, query ? query : "");
    reply_buf_t reply = {0};
    r = docker_call(self, "POST", path, NULL, timeout_ms, &reply, ret_status, err, errlen);
    reply_buf_free(&reply);
    return r;
}

int docker_container_start(docker_t *self, const char *id, char *err, size_t errlen) {
    long status = 0;
    return container_post(self, id, "start", NULL, DOCKER_TIMEOUT_MS, &status, err, errlen);
}

int docker_container_stop(docker_t *self, const char *id, int timeout_s, char *err, size_t errlen) {
    if (timeout_s < 0)
        timeout_s = 0;
    char query[32];
    snprintf(query, sizeof query, "?t=%d", timeout_s);
    long status = 0;
    return container_post(self, id, "stop", query, DOCKER_TIMEOUT_MS + timeout_s * 1000L, &status,
                          err, errlen);
}

int docker_container_kill(docker_t *self, const char *id, const char *signal, char *err,
                          size_t errlen) {
    char query[64];
    query[0] = '\0';
    if (signal && *signal) {
        for (const char *p = signal; *p; p++)
            if (!isalnum((unsigned char)*p)) {
                set_err(err, errlen, "invalid signal \"%s\"", signal);
                return -EINVAL;
            }
        snprintf(query, sizeof query, "?signal=%.40s", signal);
    }
    long status = 0;
    return container_post(self, id, "kill", query, DOCKER_TIMEOUT_MS, &status, err, errlen);
}

int docker_container_remove(docker_t *self, const char *id, bool force, char *err, size_t errlen) {
    int r = check_ref(id, err, errlen);
    if (r < 0)
        return r;
    char path[512];
    snprintf(path, sizeof path, "/containers/%s?v=1%s", id, force ? "&force=1" : "");
    reply_buf_t reply = {0};
    r = docker_call(self, "DELETE", path, NULL, DOCKER_TIMEOUT_MS, &reply, NULL, err, errlen);
    reply_buf_free(&reply);
    return r;
}

int docker_container_inspect(docker_t *self, const char *id, const char *network,
                             docker_container_t *ret, char *err, size_t errlen) {
    int r = check_ref(id, err, errlen);
    if (r < 0)
        return r;
    char path[512];
    snprintf(path, sizeof path, "/containers/%s/json", id);
    reply_buf_t reply = {0};
    r = docker_call(self, "GET", path, NULL, DOCKER_TIMEOUT_MS, &reply, NULL, err, errlen);
    if (r == 0 && docker_parse_inspect(reply.data ? reply.data : "", reply.len, network, ret) < 0) {
        set_err(err, errlen, "Docker Engine sent an unreadable inspect reply for %s", id);
        r = -EPROTO;
    }
    reply_buf_free(&reply);
    return r;
}

/* The /containers/json and /events filter: every label (AND). Malloc'd, URL-escaped. */
static char *label_filter(docker_t *self, const char *type, const char *const *labels,
                          size_t nlabels) {
    json_t *f = json_pack("{s:[]}", "label");
    for (size_t i = 0; f && i < nlabels; i++)
        json_array_append_new(json_object_get(f, "label"), json_string(labels[i]));
    if (f && type)
        json_object_set_new(f, "type", json_pack("[s]", type));
    char *text = f ? json_dumps(f, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    json_decref(f);
    char *e = text ? escape(self, text) : NULL;
    free(text);
    return e;
}

/* The /events filter: container events of `labels` that the agent acts on. */
static char *events_filter(docker_t *self, const char *const *labels, size_t nlabels) {
    json_t *f = json_pack("{s:[], s:[s], s:[s,s,s,s,s]}", "label", "type", "container", "event",
                          "start", "die", "oom", "destroy", "health_status");
    for (size_t i = 0; f && i < nlabels; i++)
        json_array_append_new(json_object_get(f, "label"), json_string(labels[i]));
    char *text = f ? json_dumps(f, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    json_decref(f);
    char *e = text ? escape(self, text) : NULL;
    free(text);
    return e;
}

int docker_container_list(docker_t *self, const char *const *labels, size_t nlabels,
                          docker_container_t **ret, size_t *ret_n, char *err, size_t errlen) {
    *ret = NULL;
    *ret_n = 0;
    if (nlabels > 8) {
        set_err(err, errlen, "too many label filters");
        return -EINVAL;
    }
    char *filter = label_filter(self, NULL, labels, nlabels);
    if (!filter) {
        set_err(err, errlen, "out of memory");
        return -ENOMEM;
    }
    char path[3072];
    if (snprintf(path, sizeof path, "/containers/json?all=1&filters=%s", filter) >=
        (int)sizeof path) {
        free(filter);
        set_err(err, errlen, "label filter too long");
        return -EINVAL;
    }
    free(filter);
    reply_buf_t reply = {0};
    int r = docker_call(self, "GET", path, NULL, DOCKER_TIMEOUT_MS, &reply, NULL, err, errlen);
    if (r == 0) {
        r = docker_parse_list(reply.data ? reply.data : "", reply.len, ret, ret_n);
        if (r == -EINVAL) {
            set_err(err, errlen, "Docker Engine sent an unreadable container list");
            r = -EPROTO;
        }
    }
    reply_buf_free(&reply);
    return r;
}

/* ---- events follower ------------------------------------------------------------------- */

typedef struct events_follower {
    zsock_t *pipe;
    docker_t *docker; /* ping (version) and escaping */
    char socket_path[108];
    bool connected; /* the current stream answered 200 */
    bool terminated;
    uint64_t seen;
} events_follower_t;

static void events_on_line(void *ctx, const char *line, size_t len) {
    events_follower_t *f = ctx;
    docker_event_t ev;
    int r = docker_parse_event(line, len, &ev);
    if (r == -EINVAL) {
        log_debug("docker event unreadable len=%zu", len);
        return;
    }
    if (r < 0)
        return;
    f->seen++;
    zsock_send(f->pipe, "ssssi", "EVENT", docker_event_kind_name(ev.kind), ev.task_id,
               ev.container_id, ev.exit_code);
}

/* Reads pipe commands without blocking; true when told to end. */
static bool events_check_pipe(events_follower_t *f) {
    while (zsock_events(f->pipe) & ZMQ_POLLIN) {
        char *cmd = NULL;
        if (zsock_recv(f->pipe, "s", &cmd) < 0) {
            f->terminated = true;
            return true;
        }
        if (cmd && strcmp(cmd, "$TERM") == 0)
            f->terminated = true;
        zstr_free(&cmd);
    }
    return f->terminated;
}

/* One stream: returns when it breaks or when the actor must end. */
static void events_stream_once(events_follower_t *f, const char *url) {
    CURLM *multi = curl_multi_init();
    CURL *c = curl_easy_init();
    if (!multi || !c) {
        curl_easy_cleanup(c);
        curl_multi_cleanup(multi);
        return;
    }
    reply_buf_t buf = {.on_line = events_on_line, .line_ctx = f};
    curl_easy_setopt(c, CURLOPT_UNIX_SOCKET_PATH, f->socket_path);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, 5000L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_write);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &buf);
    curl_multi_add_handle(multi, c);
    struct curl_waitfd extra = {.fd = zsock_fd(f->pipe), .events = CURL_WAIT_POLLIN};
    int running = 1;
    while (!events_check_pipe(f)) {
        if (curl_multi_perform(multi, &running) != CURLM_OK)
            break;
        if (!f->connected) {
            long status = 0;
            curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
            if (status == 200) {
                f->connected = true;
                log_debug("docker events stream connected");
                zsock_send(f->pipe, "s", "RESYNC");
            } else if (status != 0) {
                log_warn("docker events stream refused status=%ld", status);
                break;
            }
        }
        if (!running)
            break;
        /* The pipe's ZMQ_FD only signals that its state changed, so zsock_events() above is
         * checked after every wake-up; the timeout bounds a missed edge. */
        int numfds = 0;
        curl_multi_poll(multi, &extra, 1, 1000, &numfds);
    }
    curl_multi_remove_handle(multi, c);
    curl_easy_cleanup(c);
    curl_multi_cleanup(multi);
    reply_buf_free(&buf);
}

static void events_actor(zsock_t *pipe, void *args) {
    events_follower_t f = {.pipe = pipe};
    copy_str(f.socket_path, sizeof f.socket_path, args);
    free(args);
    f.docker = docker_new(f.socket_path);
    zsock_signal(pipe, 0);
    int backoff = DOCKER_EVENTS_BACKOFF_MIN_MS;
    zpoller_t *poller = zpoller_new(pipe, NULL);
    if (poller) /* only $TERM ends us, not a signal seen by CZMQ's default handler */
        zpoller_set_nonstop(poller, true);
    while (f.docker && !f.terminated) {
        char err[256] = "";
        int r = docker_ping(f.docker, err, sizeof err);
        if (r == 0) {
            const char *label = DOCKER_LABEL_TASK_ID;
            char *filter = events_filter(f.docker, &label, 1);
            if (filter) {
                char url[1024];
                snprintf(url, sizeof url, "http://docker%s%s/events?filters=%s",
                         docker_api_version(f.docker)[0] ? "/v" : "", docker_api_version(f.docker),
                         filter);
                free(filter);
                f.connected = false;
                events_stream_once(&f, url);
                if (f.connected)
                    backoff = DOCKER_EVENTS_BACKOFF_MIN_MS;
                if (!f.terminated)
                    log_warn("docker events stream ended, reconnecting backoff_ms=%d", backoff);
            }
        } else {
            log_debug("docker events ping failed err=\"%s\" backoff_ms=%d", err, backoff);
        }
        if (f.terminated)
            break;
        /* back-off: wait for $TERM at most `backoff` ms */
        if (zpoller_wait(poller, backoff) && events_check_pipe(&f))
            break;
        backoff =
            backoff * 2 > DOCKER_EVENTS_BACKOFF_MAX_MS ? DOCKER_EVENTS_BACKOFF_MAX_MS : backoff * 2;
    }
    if (!f.docker) { /* allocation failed: wait for $TERM so the owner can destroy us */
        while (!f.terminated && zpoller_wait(poller, -1))
            events_check_pipe(&f);
    }
    zpoller_destroy(&poller);
    docker_destroy(&f.docker);
}

zactor_t *docker_events_new(const char *socket_path) {
    char *path = strdup(socket_path && *socket_path ? socket_path : DOCKER_DEFAULT_SOCKET);
    if (!path)
        return NULL;
    zactor_t *a = zactor_new(events_actor, path);
    if (!a)
        free(path);
    return a;
}
