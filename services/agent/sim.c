/* sim — many simulated nodes in one shoal-agent (see sim.h).
 *
 * Scale is the point: 10,000 nodes must fit in one process and one thread. So there is no
 * thread and no socket per node. Every dispatcher call of every node goes through one mux
 * (mux.c: one Curve DEALER, calls matched to replies by request id, deadlines in a heap), and
 * one 50 ms timer walks the node table and sends whatever is due: registrations, heartbeats,
 * assignment long-polls and status reports, each node's in one request per kind, all of a tick
 * back to back. A node costs its table row, a worker (task table) and, while polling, one parked
 * call.
 *
 * Registrations are throttled: each one costs the dispatcher a store write on its loop, and
 * heartbeats of registered nodes wait behind them; a crowd of new nodes must not make the
 * registered ones miss their grace (which would make them register again: a collapse). So at
 * most `reg_window` registrations are in flight, a window that grows by one with every
 * registration answered quickly and halves whenever a heartbeat comes back slowly (after a whole
 * period, a third of the grace) or a call times out (AIMD, as TCP does): the dispatcher is
 * falling behind, and the next step would be nodes missing their grace.
 *
 * Tasks: each node has its own worker (worker.c) and so the Docker agent's controller; all
 * workers share one inline pool over the sim executor, whose calls are instant. The start
 * latency is the pool's (pool_set_latency): a start "completes" start_latency_ms later.
 *
 * Sessions and staleness: a node's `gen` changes whenever its session ends or the node is stopped;
 * every call carries (node index, gen) as its tag, and a reply whose gen is not the node's is
 * ignored: its in-flight flag was already cleared when gen changed. A session ends when the
 * dispatcher says it does not know it (FAILED_PRECONDITION / NOT_FOUND); a timeout or an
 * UNAVAILABLE only delays the next attempt, so a slow dispatcher does not cause a stampede of
 * re-registrations. Every new session re-reports every task and polls from version 0.
 *
 * Called by main.c instead of agent_new() when --sim-nodes is given; everything runs on the
 * daemon's loop. */
#include "sim.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "agent.pb-c.h"
#include "controller.h"
#include "daemon.h"
#include "dispatcher.pb-c.h"
#include "executor.h"
#include "mux.h"
#include "pool.h"
#include "worker.h"

#define TICK_MS              50
#define WORKER_TICK_MS       1000
#define REG_WINDOW_MIN       1
#define REG_WINDOW_START     8
#define REG_WINDOW_MAX       32  /* the dispatcher writes each one to the store, in turn */
#define REG_FAST_MS          500 /* a registration answered within this grows the window */
#define REG_SHRINK_EVERY_MS  500
#define REGISTER_TIMEOUT_MS  5000
#define REGISTER_BACKOFF_MIN 250
#define REGISTER_BACKOFF_MAX 5000
#define HEARTBEAT_TIMEOUT_MS 1500
#define DEFAULT_PERIOD_MS    500
#define POLL_TIMEOUT_MS      20000 /* parked at the dispatcher; it caps at 30 s */
#define POLL_GRACE_MS        5000  /* queueing at a busy dispatcher */
#define CALL_TIMEOUT_MS      5000
#define RETRY_MIN_MS         100
#define RETRY_MAX_MS         2000
#define FLUSH_BATCH          100
#define PROGRESS_LOG_MS      2000

typedef struct sim_node {
    int index;
    char name[SIM_NAME_MAX];
    char node_id[64];
    char session_id[64];
    uint32_t gen;
    bool registered, registering, stopped;
    int register_failures;
    int64_t register_at;
    int64_t register_sent_ms;
    int64_t period_ms;
    bool hb_inflight;
    int64_t hb_due;
    int64_t hb_sent_ms;
    bool poll_inflight;
    int poll_failures;
    int64_t poll_at;
    uint64_t known_version;
    bool flush_queued, flush_inflight;
    int flush_failures;
    int64_t flush_at;
    size_t flush_max;
    worker_batch_t *batch; /* the report in flight */
    worker_t *worker;
    int64_t worker_tick_at;
} sim_node_t;

struct sim {
    daemon_t *d;
    sim_opts_t opts;
    char dispatcher_endpoint[PATH_MAX + 32];
    char addr[64];
    char dispatcher_key[41];
    char id_dir[PATH_MAX + 32];
    char arch[64];
    zcert_t *identity;
    mux_t *mux;
    sim_runtime_t *runtime;
    executor_factory_t factory;
    pool_t *pool;
    sim_node_t *nodes;
    int n;
    zhashx_t *by_name; /* name -> sim_node_t* */
    int registering;
    int reg_window;
    int64_t reg_shrunk_ms;
    uint64_t rng;
    size_t registered_count, stopped_count;
    size_t logged_registered;
    int64_t logged_at_ms;

    uint64_t registrations, register_failures, sessions_lost;
    uint64_t heartbeats, heartbeat_failures;
    uint64_t polls, assignment_sets, poll_failures;
    uint64_t status_updates_sent, status_batches, status_failures;
};

/* ---- options and flag parsers ------------------------------------------------------------ */

void sim_opts_init(sim_opts_t *o) {
    memset(o, 0, sizeof *o);
    snprintf(o->prefix, sizeof o->prefix, "sim");
    o->nano_cpus = 4LL * 1000000000LL;
    o->memory_bytes = 8LL << 30;
}

static int fail(char *err, size_t errlen, const char *fmt, const char *arg) {
    if (err && errlen)
        snprintf(err, errlen, fmt, arg);
    return -EINVAL;
}

/* Label keys and values: what a shell and a constraint can carry without quoting. */
static bool label_text_ok(const char *s, size_t len, bool key) {
    if (!len)
        return !key;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '.' || c == '_' || c == '-' || c == '/' || (!key && c == ':');
        if (!ok)
            return false;
    }
    return true;
}

int sim_parse_labels(sim_opts_t *o, const char *spec, char *err, size_t errlen) {
    if (!spec || !*spec)
        return fail(err, errlen, "expected K=V[,K=V...] (got \"%s\")", spec ? spec : "");
    int first = o->nlabels;
    int r = 0;
    const char *p = spec;
    while (*p) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        const char *eq = memchr(p, '=', len);
        if (!eq) {
            r = fail(err, errlen, "label \"%s\": expected K=V", p);
            break;
        }
        size_t klen = (size_t)(eq - p), vlen = len - klen - 1;
        if (!label_text_ok(p, klen, true) || !label_text_ok(eq + 1, vlen, false) ||
            klen >= SIM_LABEL_KEY_MAX || vlen >= SIM_LABEL_VALUE_MAX) {
            r = fail(err, errlen,
                     "label \"%s\": key and value must be up to 63 characters of "
                     "[A-Za-z0-9._/-]",
                     p);
            break;
        }
        if (o->nlabels >= SIM_LABELS_MAX) {
            r = fail(err, errlen, "at most 16 labels (at \"%s\")", p);
            break;
        }
        sim_label_t *l = &o->labels[o->nlabels++];
        snprintf(l->key, sizeof l->key, "%.*s", (int)klen, p);
        snprintf(l->value, sizeof l->value, "%.*s", (int)vlen, eq + 1);
        if (!end)
            break;
        p = end + 1;
        if (!*p) {
            r = fail(err, errlen, "label list \"%s\" ends with a comma", spec);
            break;
        }
    }
    if (r < 0)
        o->nlabels = first; /* all or nothing */
    return r;
}

int sim_parse_spread(sim_opts_t *o, const char *spec, char *err, size_t errlen) {
    const char *eq = spec ? strchr(spec, '=') : NULL;
    if (!eq || eq == spec || !eq[1])
        return fail(err, errlen, "expected K=v1|v2|... (got \"%s\")", spec ? spec : "");
    size_t klen = (size_t)(eq - spec);
    if (!label_text_ok(spec, klen, true) || klen >= SIM_LABEL_KEY_MAX)
        return fail(err, errlen, "spread \"%s\": bad label key", spec);
    if (o->nspreads >= SIM_SPREADS_MAX)
        return fail(err, errlen, "at most 8 label spreads (at \"%s\")", spec);
    sim_spread_t sp;
    memset(&sp, 0, sizeof sp);
    snprintf(sp.key, sizeof sp.key, "%.*s", (int)klen, spec);
    const char *p = eq + 1;
    for (;;) {
        const char *end = strchr(p, '|');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (!len || !label_text_ok(p, len, false) || len >= SIM_LABEL_VALUE_MAX)
            return fail(err, errlen,
                        "spread \"%s\": values must be 1-63 characters of "
                        "[A-Za-z0-9._/:-]",
                        spec);
        if (sp.nvalues >= SIM_SPREAD_VALUES_MAX)
            return fail(err, errlen, "spread \"%s\": at most 16 values", spec);
        snprintf(sp.values[sp.nvalues++], SIM_LABEL_VALUE_MAX, "%.*s", (int)len, p);
        if (!end)
            break;
        p = end + 1;
    }
    o->spreads[o->nspreads++] = sp;
    return 0;
}

int sim_parse_size(const char *s, int64_t *ret) {
    if (!s || !*s)
        return -EINVAL;
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || s[0] == '-')
        return -EINVAL;
    int shift = 0;
    switch (*end) {
    case 'k':
    case 'K':
        shift = 10;
        break;
    case 'm':
    case 'M':
        shift = 20;
        break;
    case 'g':
    case 'G':
        shift = 30;
        break;
    case 't':
    case 'T':
        shift = 40;
        break;
    case '\0':
        break;
    default:
        return -EINVAL;
    }
    if (shift) {
        end++;
        if (*end == 'i')
            end++;
        if (*end == 'b' || *end == 'B')
            end++;
    } else if (*end == 'b' || *end == 'B') {
        end++;
    }
    if (*end || v == 0 || v > (unsigned long long)(INT64_MAX >> shift))
        return -EINVAL;
    *ret = (int64_t)(v << shift);
    return 0;
}

int sim_parse_cpus(const char *s, int64_t *ret_nano) {
    if (!s || !*s)
        return -EINVAL;
    char *end = NULL;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v > 0) || v > 1e6)
        return -EINVAL;
    int64_t nano = (int64_t)llround(v * 1e9);
    if (nano <= 0)
        return -EINVAL;
    *ret_nano = nano;
    return 0;
}

int sim_parse_rate(const char *s, double *ret) {
    if (!s || !*s)
        return -EINVAL;
    char *end = NULL;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= 0) || v > 1)
        return -EINVAL;
    *ret = v;
    return 0;
}

void sim_node_name(const sim_opts_t *o, int index, char *buf, size_t len) {
    int width = 1;
    for (int n = o->nodes; n >= 10; n /= 10)
        width++;
    snprintf(buf, len, "%s-%0*d", o->prefix, width, index + 1);
}

size_t sim_node_labels(const sim_opts_t *o, int index, const char **keys, const char **values,
                       size_t max) {
    size_t k = 0;
    for (int i = 0; i < o->nlabels && k < max; i++, k++) {
        keys[k] = o->labels[i].key;
        values[k] = o->labels[i].value;
    }
    for (int i = 0; i < o->nspreads && k < max; i++, k++) {
        const sim_spread_t *sp = &o->spreads[i];
        keys[k] = sp->key;
        values[k] = sp->values[(unsigned)index % (unsigned)sp->nvalues];
    }
    return k;
}

/* ---- small helpers ----------------------------------------------------------------------- */

static uint64_t tag_of(const sim_node_t *n) {
    return ((uint64_t)(uint32_t)n->index << 32) | n->gen;
}

/* The node a reply is for, NULL when the reply belongs to an older session (or stop). */
static sim_node_t *node_of(sim_t *s, uint64_t tag) {
    uint32_t index = (uint32_t)(tag >> 32);
    if (index >= (uint32_t)s->n)
        return NULL;
    sim_node_t *n = &s->nodes[index];
    return n->gen == (uint32_t)tag ? n : NULL;
}

static int64_t jitter(sim_t *s, int64_t max_ms) {
    s->rng = s->rng * 6364136223846793005ULL + 1442695040888963407ULL;
    return max_ms > 0 ? (int64_t)((s->rng >> 33) % (uint64_t)max_ms) : 0;
}

static int64_t backoff_ms(int failures, int64_t min, int64_t max) {
    int64_t d = min << (failures < 6 ? failures : 6);
    return d > max ? max : d;
}

/* The dispatcher is behind: let fewer new nodes in until it catches up. */
static void reg_window_shrink(sim_t *s) {
    int64_t now = clock_mono_ms();
    if (now - s->reg_shrunk_ms < REG_SHRINK_EVERY_MS)
        return;
    s->reg_shrunk_ms = now;
    s->reg_window = s->reg_window / 2 > REG_WINDOW_MIN ? s->reg_window / 2 : REG_WINDOW_MIN;
}

static bool session_unknown(int code) {
    return code == BUS_FAILED_PRECONDITION || code == BUS_NOT_FOUND;
}

static const char *code_text(int code) {
    return code > 0 ? bus_code_name(code) : code == -ETIMEDOUT ? "TIMEOUT" : "ERROR";
}

static bool id_ok(const char *id) {
    if (!*id)
        return false;
    for (const char *p = id; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '-' || *p == '_' || *p == '.'))
            return false;
    return true;
}

static void node_id_load(sim_t *s, sim_node_t *n) {
    char path[PATH_MAX + 96];
    snprintf(path, sizeof path, "%s/%s", s->id_dir, n->name);
    FILE *f = fopen(path, "r");
    if (!f)
        return;
    char buf[64] = "";
    if (fgets(buf, sizeof buf, f)) {
        buf[strcspn(buf, "\r\n \t")] = '\0';
        if (id_ok(buf))
            snprintf(n->node_id, sizeof n->node_id, "%s", buf);
        else
            log_warn("ignoring malformed node id file path=%s", path);
    }
    fclose(f);
}

/* Without fsync: losing a simulated node's id costs a new node, nothing else. */
static void node_id_save(sim_t *s, sim_node_t *n) {
    char path[PATH_MAX + 96], tmp[PATH_MAX + 112];
    snprintf(path, sizeof path, "%s/%s", s->id_dir, n->name);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    int r = f ? 0 : -errno;
    if (f) {
        if (fprintf(f, "%s\n", n->node_id) < 0)
            r = -EIO;
        if (fclose(f) != 0 && r == 0)
            r = -errno;
    }
    if (r == 0 && rename(tmp, path) < 0)
        r = -errno;
    if (r < 0)
        log_err("cannot write the node id path=%s err=\"%s\"", path, strerror(-r));
}

/* Forgets every call in flight: their replies will be stale. */
static void node_reset_calls(sim_node_t *n) {
    n->gen++;
    n->hb_inflight = false;
    n->poll_inflight = false;
    n->flush_inflight = false;
    worker_batch_destroy(&n->batch);
}

static void session_lost(sim_t *s, sim_node_t *n, const char *why) {
    if (!n->registered)
        return;
    s->sessions_lost++;
    if (s->sessions_lost <= 100 ||
        s->sessions_lost % 1000 == 0) /* a dispatcher restart loses all */
        log_warn("sim node lost its dispatcher session, re-registering node=%s id=%s "
                 "reason=\"%s\" sessions_lost_total=%llu",
                 n->name, n->node_id, why, (unsigned long long)s->sessions_lost);
    n->registered = false;
    n->session_id[0] = '\0';
    s->registered_count--;
    node_reset_calls(n);
    n->register_at = clock_mono_ms() + jitter(s, 500);
}

/* ---- registration ------------------------------------------------------------------------ */

static void send_poll(sim_t *s, sim_node_t *n);

static void on_register_reply(void *ctx, uint64_t tag, int code, ProtobufCMessage *out,
                              const char *message) {
    sim_t *s = ctx;
    uint32_t index = (uint32_t)(tag >> 32);
    if (index < (uint32_t)s->n && s->nodes[index].registering) {
        s->nodes[index].registering = false;
        s->registering--;
    }
    sim_node_t *n = node_of(s, tag);
    if (!n || n->stopped || n->registered)
        return; /* stopped meanwhile: the dispatcher will find it silent */
    const Shoal__Dispatcher__RegisterResponse *r = (const void *)out;
    if (code == BUS_OK &&
        (!r->node_id || !id_ok(r->node_id) || strlen(r->node_id) >= sizeof n->node_id ||
         !r->session_id || !*r->session_id || strlen(r->session_id) >= sizeof n->session_id)) {
        code = -EPROTO;
        message = "Register reply without a usable node or session id";
    }
    int64_t now = clock_mono_ms();
    if (code == -ETIMEDOUT)
        reg_window_shrink(s);
    if (code != BUS_OK) {
        s->register_failures++;
        int64_t delay =
            backoff_ms(n->register_failures++, REGISTER_BACKOFF_MIN, REGISTER_BACKOFF_MAX) +
            jitter(s, REGISTER_BACKOFF_MIN);
        n->register_at = now + delay;
        if (n->register_failures == 1 || n->register_failures % 20 == 0)
            log_warn("sim node registration failed node=%s code=%s msg=\"%s\" retry_ms=%lld",
                     n->name, code_text(code), message, (long long)delay);
        return;
    }
    bool new_id = strcmp(n->node_id, r->node_id) != 0;
    snprintf(n->node_id, sizeof n->node_id, "%s", r->node_id);
    snprintf(n->session_id, sizeof n->session_id, "%s", r->session_id);
    if (new_id)
        node_id_save(s, n);
    node_reset_calls(n); /* a new session: nothing of the old one counts */
    n->registered = true;
    n->register_failures = 0;
    n->period_ms = r->heartbeat_period_ms > 0 ? r->heartbeat_period_ms : DEFAULT_PERIOD_MS;
    n->hb_due = now + n->period_ms;
    n->known_version = 0;
    n->poll_at = 0;
    n->poll_failures = 0;
    n->flush_failures = 0;
    n->flush_at = 0;
    n->flush_max = FLUSH_BATCH;
    s->registered_count++;
    s->registrations++;
    if (now - n->register_sent_ms < REG_FAST_MS && s->reg_window < REG_WINDOW_MAX)
        s->reg_window++;
    log_debug("sim node registered node=%s id=%s session=%s heartbeat_ms=%lld", n->name, n->node_id,
              n->session_id, (long long)n->period_ms);
    worker_set_node_id(n->worker, n->node_id);
    worker_mark_all_dirty(n->worker);
    n->flush_queued = true;
    send_poll(s, n);
}

static void send_register(sim_t *s, sim_node_t *n) {
    Shoal__Platform platform = SHOAL__PLATFORM__INIT;
    platform.architecture = s->arch;
    platform.os = (char *)"linux";
    Shoal__Resources res = SHOAL__RESOURCES__INIT;
    res.nano_cpus = s->opts.nano_cpus;
    res.memory_bytes = s->opts.memory_bytes;
    Shoal__Label labels[SIM_LABELS_MAX + SIM_SPREADS_MAX], *lp[SIM_LABELS_MAX + SIM_SPREADS_MAX];
    const char *keys[SIM_LABELS_MAX + SIM_SPREADS_MAX], *values[SIM_LABELS_MAX + SIM_SPREADS_MAX];
    size_t nl = sim_node_labels(&s->opts, n->index, keys, values, SIM_LABELS_MAX + SIM_SPREADS_MAX);
    for (size_t i = 0; i < nl; i++) {
        shoal__label__init(&labels[i]);
        labels[i].key = (char *)keys[i];
        labels[i].value = (char *)values[i];
        lp[i] = &labels[i];
    }
    Shoal__EngineDescription engine = SHOAL__ENGINE_DESCRIPTION__INIT;
    engine.engine_version = (char *)"sim";
    engine.api_version = (char *)"";
    engine.labels = lp;
    engine.n_labels = nl;
    Shoal__NodeDescription desc = SHOAL__NODE_DESCRIPTION__INIT;
    desc.hostname = n->name;
    desc.platform = &platform;
    desc.resources = &res;
    desc.engine = &engine;
    Shoal__Dispatcher__RegisterRequest in = SHOAL__DISPATCHER__REGISTER_REQUEST__INIT;
    in.cluster_key = s->d->cfg.cluster_key;
    in.node_id = n->node_id;
    in.description = &desc;
    in.addr = s->addr;
    int r = mux_call(s->mux, "dispatcher.Register", &in.base,
                     &shoal__dispatcher__register_response__descriptor, REGISTER_TIMEOUT_MS,
                     on_register_reply, s, tag_of(n));
    if (r < 0) {
        n->register_at = clock_mono_ms() + RETRY_MIN_MS;
        return;
    }
    n->registering = true;
    n->register_sent_ms = clock_mono_ms();
    s->registering++;
}

/* ---- heartbeats -------------------------------------------------------------------------- */

static void on_heartbeat_reply(void *ctx, uint64_t tag, int code, ProtobufCMessage *out,
                               const char *message) {
    sim_t *s = ctx;
    sim_node_t *n = node_of(s, tag);
    if (!n)
        return;
    n->hb_inflight = false;
    int64_t now = clock_mono_ms();
    if (code == BUS_OK) {
        const Shoal__Dispatcher__HeartbeatResponse *r = (const void *)out;
        if (r->period_ms > 0)
            n->period_ms = r->period_ms;
        n->hb_due = now + n->period_ms;
        if (now - n->hb_sent_ms > n->period_ms)
            reg_window_shrink(s); /* a third of the grace gone in the dispatcher's queue */
        return;
    }
    s->heartbeat_failures++;
    if (session_unknown(code)) {
        session_lost(s, n, message);
        return;
    }
    if (code == -ETIMEDOUT)
        reg_window_shrink(s);
    if (s->heartbeat_failures == 1 || s->heartbeat_failures % 1000 == 0)
        log_warn("sim heartbeat failed node=%s code=%s msg=\"%s\" failures_total=%llu", n->name,
                 code_text(code), message, (unsigned long long)s->heartbeat_failures);
    n->hb_due = now + n->period_ms / 2; /* keep the session; try again soon */
}

static void send_heartbeat(sim_t *s, sim_node_t *n) {
    Shoal__Dispatcher__HeartbeatRequest in = SHOAL__DISPATCHER__HEARTBEAT_REQUEST__INIT;
    in.node_id = n->node_id;
    in.session_id = n->session_id;
    if (mux_call(s->mux, "dispatcher.Heartbeat", &in.base,
                 &shoal__dispatcher__heartbeat_response__descriptor, HEARTBEAT_TIMEOUT_MS,
                 on_heartbeat_reply, s, tag_of(n)) < 0) {
        n->hb_due = clock_mono_ms() + RETRY_MIN_MS;
        return;
    }
    n->hb_inflight = true;
    n->hb_sent_ms = clock_mono_ms();
    s->heartbeats++;
}

/* ---- assignments ------------------------------------------------------------------------- */

static void on_poll_reply(void *ctx, uint64_t tag, int code, ProtobufCMessage *out,
                          const char *message) {
    sim_t *s = ctx;
    sim_node_t *n = node_of(s, tag);
    if (!n)
        return;
    n->poll_inflight = false;
    if (code == BUS_OK) {
        const Shoal__Dispatcher__AssignmentsResponse *set = (const void *)out;
        if (set->version != n->known_version) {
            s->assignment_sets++;
            log_debug("sim assignment set node=%s version=%llu tasks=%zu", n->name,
                      (unsigned long long)set->version, set->n_tasks);
            n->known_version = set->version;
            worker_set_assignments(n->worker, set->tasks, set->n_tasks);
        }
        n->poll_failures = 0;
        n->poll_at = 0;
        send_poll(s, n); /* at once: the next change must find a parked poll */
        return;
    }
    s->poll_failures++;
    if (session_unknown(code)) {
        session_lost(s, n, message);
        return;
    }
    int64_t delay = backoff_ms(n->poll_failures++, RETRY_MIN_MS, RETRY_MAX_MS);
    n->poll_at = clock_mono_ms() + delay;
    if (s->poll_failures == 1 || s->poll_failures % 1000 == 0)
        log_warn("sim assignments poll failed node=%s code=%s msg=\"%s\" retry_ms=%lld "
                 "failures_total=%llu",
                 n->name, code_text(code), message, (long long)delay,
                 (unsigned long long)s->poll_failures);
}

static void send_poll(sim_t *s, sim_node_t *n) {
    if (!n->registered || n->stopped || n->poll_inflight)
        return;
    Shoal__Dispatcher__AssignmentsRequest in = SHOAL__DISPATCHER__ASSIGNMENTS_REQUEST__INIT;
    in.node_id = n->node_id;
    in.session_id = n->session_id;
    in.known_version = n->known_version;
    in.timeout_ms = POLL_TIMEOUT_MS;
    if (mux_call(s->mux, "dispatcher.Assignments", &in.base,
                 &shoal__dispatcher__assignments_response__descriptor,
                 POLL_TIMEOUT_MS + POLL_GRACE_MS, on_poll_reply, s, tag_of(n)) < 0) {
        n->poll_at = clock_mono_ms() + RETRY_MIN_MS;
        return;
    }
    n->poll_inflight = true;
    s->polls++;
}

/* ---- status reports ---------------------------------------------------------------------- */

static void send_flush(sim_t *s, sim_node_t *n);

static void on_flush_reply(void *ctx, uint64_t tag, int code, ProtobufCMessage *out,
                           const char *message) {
    sim_t *s = ctx;
    sim_node_t *n = node_of(s, tag);
    if (!n)
        return; /* its batch went with the old session */
    n->flush_inflight = false;
    worker_batch_t *b = n->batch;
    n->batch = NULL;
    size_t size = worker_batch_size(b);
    if (code == BUS_OK) {
        worker_batch_ack(n->worker, b);
        s->status_updates_sent += size;
        s->status_batches++;
        n->flush_failures = 0;
        n->flush_max = FLUSH_BATCH;
        worker_batch_destroy(&b);
        send_flush(s, n); /* more may have changed meanwhile */
        return;
    }
    s->status_failures++;
    if (code == BUS_PERMISSION_DENIED || code == BUS_INVALID_ARGUMENT) {
        /* One refused update (a task no longer assigned here) must not block the others. */
        if (size > 1) {
            n->flush_max = 1;
        } else if (size == 1) {
            Shoal__Dispatcher__TaskStatusUpdate *u = worker_batch_updates(b)[0];
            log_err("dispatcher refused a task status update, dropping it node=%s task=%s "
                    "code=%s msg=\"%s\"",
                    n->name, u->task_id, code_text(code), message);
            worker_batch_ack(n->worker, b);
        }
        worker_batch_destroy(&b);
        send_flush(s, n);
        return;
    }
    worker_batch_destroy(&b);
    if (session_unknown(code)) {
        session_lost(s, n, message);
        return;
    }
    int64_t delay = backoff_ms(n->flush_failures++, RETRY_MIN_MS, RETRY_MAX_MS);
    n->flush_at = clock_mono_ms() + delay;
    if (n->flush_failures == 1)
        log_warn("sim task status report failed node=%s code=%s msg=\"%s\" retry_ms=%lld", n->name,
                 code_text(code), message, (long long)delay);
}

static void send_flush(sim_t *s, sim_node_t *n) {
    if (!n->flush_queued || n->flush_inflight || !n->registered || n->stopped ||
        clock_mono_ms() < n->flush_at)
        return;
    worker_batch_t *b = worker_batch_take(n->worker, n->flush_max ? n->flush_max : FLUSH_BATCH);
    if (!b) {
        n->flush_queued = false;
        return;
    }
    Shoal__Dispatcher__UpdateTaskStatusRequest in =
        SHOAL__DISPATCHER__UPDATE_TASK_STATUS_REQUEST__INIT;
    in.node_id = n->node_id;
    in.session_id = n->session_id;
    in.n_updates = worker_batch_size(b);
    in.updates = worker_batch_updates(b);
    if (mux_call(s->mux, "dispatcher.UpdateTaskStatus", &in.base,
                 &shoal__dispatcher__update_task_status_response__descriptor, CALL_TIMEOUT_MS,
                 on_flush_reply, s, tag_of(n)) < 0) {
        worker_batch_destroy(&b);
        n->flush_at = clock_mono_ms() + RETRY_MIN_MS;
        return;
    }
    n->batch = b;
    n->flush_inflight = true;
}

static void on_dirty(void *ctx) {
    sim_node_t *n = ctx;
    n->flush_queued = true; /* sent with the next tick, with whatever else changed by then */
}

/* ---- the tick ---------------------------------------------------------------------------- */

static void log_progress(sim_t *s, int64_t now) {
    if (s->registered_count == s->logged_registered || now - s->logged_at_ms < PROGRESS_LOG_MS)
        return;
    s->logged_registered = s->registered_count;
    s->logged_at_ms = now;
    log_info("sim nodes registered=%zu of=%d stopped=%zu sessions_lost_total=%llu",
             s->registered_count, s->n, s->stopped_count, (unsigned long long)s->sessions_lost);
}

static int on_tick(zloop_t *loop, int timer_id, void *arg) {
    sim_t *s = arg;
    int64_t now = clock_mono_ms();
    for (int i = 0; i < s->n; i++) {
        sim_node_t *n = &s->nodes[i];
        if (n->stopped)
            continue;
        if (!n->registered) {
            if (!n->registering && now >= n->register_at && s->registering < s->reg_window)
                send_register(s, n);
            continue;
        }
        if (!n->hb_inflight && now >= n->hb_due)
            send_heartbeat(s, n);
        if (!n->poll_inflight && now >= n->poll_at)
            send_poll(s, n);
        if (n->flush_queued)
            send_flush(s, n);
        if (now >= n->worker_tick_at) {
            n->worker_tick_at = now + WORKER_TICK_MS;
            worker_tick(n->worker); /* retries, if the executor ever failed */
        }
    }
    log_progress(s, now);
    return 0;
}

/* ---- stop / start ------------------------------------------------------------------------ */

static sim_node_t *find(sim_t *s, const char *name) {
    return name ? zhashx_lookup(s->by_name, name) : NULL;
}

int sim_node_stop(sim_t *s, const char *name) {
    sim_node_t *n = find(s, name);
    if (!n)
        return -ENOENT;
    if (n->stopped)
        return 0;
    n->stopped = true;
    s->stopped_count++;
    node_reset_calls(n);
    log_info("sim node stopped: no heartbeats, polls or reports node=%s id=%s", n->name,
             n->node_id);
    return 0;
}

int sim_node_start(sim_t *s, const char *name) {
    sim_node_t *n = find(s, name);
    if (!n)
        return -ENOENT;
    if (!n->stopped)
        return 0;
    n->stopped = false;
    s->stopped_count--;
    int64_t now = clock_mono_ms();
    n->hb_due = now; /* the dispatcher tells it at once whether its session survived */
    n->poll_at = now;
    n->register_at = now;
    n->flush_queued = true;
    log_info("sim node started node=%s id=%s", n->name, n->node_id);
    return 0;
}

size_t sim_registered(const sim_t *s) {
    return s->registered_count;
}

/* ---- bus methods ------------------------------------------------------------------------- */

static void fill_node(const sim_node_t *n, Shoal__Agent__SimNode *out) {
    shoal__agent__sim_node__init(out);
    out->name = (char *)n->name;
    out->node_id = (char *)n->node_id;
    out->registered = n->registered;
    out->stopped = n->stopped;
    worker_stats_t st;
    worker_get_stats(n->worker, &st);
    out->tasks = (uint32_t)st.tasks;
    out->running = (uint32_t)st.tasks_by_state[WORKER_STATE_INDEX(SHOAL__TASK_STATE__RUNNING)];
}

static void reply_node(sim_t *s, bus_call_t *call, const char *name, int r) {
    if (r == -ENOENT) {
        char first[SIM_NAME_MAX], last[SIM_NAME_MAX];
        sim_node_name(&s->opts, 0, first, sizeof first);
        sim_node_name(&s->opts, s->n - 1, last, sizeof last);
        bus_reply_error(call, BUS_NOT_FOUND, "no simulated node named \"%.64s\" (%s .. %s)",
                        name ? name : "", first, last);
        return;
    }
    Shoal__Agent__SimNode node;
    fill_node(find(s, name), &node);
    Shoal__Agent__SimNodeResponse out = SHOAL__AGENT__SIM_NODE_RESPONSE__INIT;
    out.node = &node;
    bus_reply_ok(call, &out.base);
}

static void handle_stop(void *ctx, bus_call_t *call, const ProtobufCMessage *input) {
    const Shoal__Agent__SimNodeRequest *req = (const void *)input;
    reply_node(ctx, call, req->name, sim_node_stop(ctx, req->name));
}

static void handle_start(void *ctx, bus_call_t *call, const ProtobufCMessage *input) {
    const Shoal__Agent__SimNodeRequest *req = (const void *)input;
    reply_node(ctx, call, req->name, sim_node_start(ctx, req->name));
}

static void handle_list(void *ctx, bus_call_t *call, const ProtobufCMessage *input) {
    sim_t *s = ctx;
    Shoal__Agent__SimNode *items = calloc((size_t)s->n, sizeof *items);
    Shoal__Agent__SimNode **ptrs = calloc((size_t)s->n, sizeof *ptrs);
    if (!items || !ptrs) {
        free(items);
        free(ptrs);
        bus_reply_error(call, BUS_INTERNAL, "out of memory listing simulated nodes");
        return;
    }
    for (int i = 0; i < s->n; i++) {
        fill_node(&s->nodes[i], &items[i]);
        ptrs[i] = &items[i];
    }
    Shoal__Agent__SimNodesResponse out = SHOAL__AGENT__SIM_NODES_RESPONSE__INIT;
    out.nodes = ptrs;
    out.n_nodes = (size_t)s->n;
    bus_reply_ok(call, &out.base);
    free(items);
    free(ptrs);
}

static const bus_method_t sim_methods[] = {
    {"agent.SimNodeStop", &shoal__agent__sim_node_request__descriptor,
     &shoal__agent__sim_node_response__descriptor, handle_stop, BUS_ROLES_MANAGER},
    {"agent.SimNodeStart", &shoal__agent__sim_node_request__descriptor,
     &shoal__agent__sim_node_response__descriptor, handle_start, BUS_ROLES_MANAGER},
    {"agent.SimNodes", &shoal__agent__sim_nodes_request__descriptor,
     &shoal__agent__sim_nodes_response__descriptor, handle_list, BUS_ROLES_MANAGER},
};

static void health(void *ctx, Shoal__Bus__HealthResponse *h) {
    sim_t *s = ctx;
    size_t want = (size_t)s->n - s->stopped_count;
    bus_health_add_check(h, "dispatcher", s->registered_count >= want,
                         "%zu of %zu running sim nodes registered with %s", s->registered_count,
                         want, s->dispatcher_endpoint);
    bus_health_set_status(h, s->registered_count >= want, "%s",
                          s->registered_count >= want ? "ok" : "registering sim nodes");
}

static void stats(void *ctx, Shoal__Bus__StatsResponse *out) {
    sim_t *s = ctx;
    uint64_t tasks = 0, running = 0, dirty = 0;
    for (int i = 0; i < s->n; i++) {
        worker_stats_t st;
        worker_get_stats(s->nodes[i].worker, &st);
        tasks += st.tasks;
        running += st.tasks_by_state[WORKER_STATE_INDEX(SHOAL__TASK_STATE__RUNNING)];
        if (s->nodes[i].flush_queued)
            dirty++;
    }
    mux_stats_t m;
    mux_get_stats(s->mux, &m);
    bus_stats_add(out, "sim.nodes", s->n);
    bus_stats_add(out, "sim.nodes_registered", (int64_t)s->registered_count);
    bus_stats_add(out, "sim.nodes_stopped", (int64_t)s->stopped_count);
    bus_stats_add(out, "sim.nodes_reporting", (int64_t)dirty);
    bus_stats_add(out, "sim.tasks", (int64_t)tasks);
    bus_stats_add(out, "sim.tasks_running", (int64_t)running);
    bus_stats_add(out, "sim.containers", (int64_t)sim_runtime_containers(s->runtime));
    bus_stats_add(out, "sim.containers_running", (int64_t)sim_runtime_running(s->runtime));
    bus_stats_add(out, "sim.starts_delayed", (int64_t)pool_delayed(s->pool));
    bus_stats_add(out, "sim.register_window", s->reg_window);
    bus_stats_add(out, "sim.registrations_total", (int64_t)s->registrations);
    bus_stats_add(out, "sim.register_failures_total", (int64_t)s->register_failures);
    bus_stats_add(out, "sim.sessions_lost_total", (int64_t)s->sessions_lost);
    bus_stats_add(out, "sim.heartbeats_total", (int64_t)s->heartbeats);
    bus_stats_add(out, "sim.heartbeat_failures_total", (int64_t)s->heartbeat_failures);
    bus_stats_add(out, "sim.polls_total", (int64_t)s->polls);
    bus_stats_add(out, "sim.poll_failures_total", (int64_t)s->poll_failures);
    bus_stats_add(out, "sim.assignment_sets_total", (int64_t)s->assignment_sets);
    bus_stats_add(out, "sim.status_updates_sent_total", (int64_t)s->status_updates_sent);
    bus_stats_add(out, "sim.status_batches_total", (int64_t)s->status_batches);
    bus_stats_add(out, "sim.status_failures_total", (int64_t)s->status_failures);
    bus_stats_add(out, "sim.calls_total", (int64_t)m.calls);
    bus_stats_add(out, "sim.calls_pending", (int64_t)m.pending);
    bus_stats_add(out, "sim.call_timeouts_total", (int64_t)m.timeouts);
    bus_stats_add(out, "sim.late_replies_total", (int64_t)m.late);
    bus_stats_add(out, "sim.reconnects_total", (int64_t)m.reconnects);
}

/* ---- lifecycle --------------------------------------------------------------------------- */

static int64_t start_latency(void *ctx, const agent_job_t *job) {
    const sim_t *s = ctx;
    return job->op == AGENT_OP_START ? s->opts.start_latency_ms : 0;
}

sim_t *sim_new(daemon_t *d, const sim_opts_t *opts, const char *dispatcher_endpoint,
               const char *addr) {
    if (opts->nodes < 1 || opts->nodes > SIM_NODES_MAX) {
        fprintf(stderr, "shoal-agent: --sim-nodes: must be 1..%d (got %d)\n", SIM_NODES_MAX,
                opts->nodes);
        return NULL;
    }
    sim_t *s = calloc(1, sizeof *s);
    if (!s) {
        fprintf(stderr, "shoal-agent: out of memory\n");
        return NULL;
    }
    s->d = d;
    s->opts = *opts;
    s->n = opts->nodes;
    s->reg_window = REG_WINDOW_START;
    s->rng = (uint64_t)clock_wall_ms() ^ ((uint64_t)getpid() << 20);
    snprintf(s->dispatcher_endpoint, sizeof s->dispatcher_endpoint, "%s", dispatcher_endpoint);
    snprintf(s->addr, sizeof s->addr, "%s", addr);
    struct utsname u;
    snprintf(s->arch, sizeof s->arch, "%s", uname(&u) == 0 ? u.machine : "x86_64");

    char dir[PATH_MAX + 32];
    config_path(&d->cfg, dir, sizeof dir, "agent");
    mkdir(dir, 0755);
    config_path(&d->cfg, s->id_dir, sizeof s->id_dir, "agent/sim");
    if (mkdir(s->id_dir, 0755) < 0 && errno != EEXIST) {
        fprintf(stderr, "shoal-agent: cannot create %s: %s\n", s->id_dir, strerror(errno));
        goto fail;
    }
    int r = bus_public_key(d->cfg.state_dir, "dispatcher", s->dispatcher_key);
    if (r < 0) {
        fprintf(stderr,
                "shoal-agent: no dispatcher key %s/keys/public/dispatcher.key: %s (run: shoal "
                "init)\n",
                d->cfg.state_dir, strerror(-r));
        goto fail;
    }
    s->identity = zcert_dup(d->identity);
    s->mux = s->identity ? mux_new(s->identity, dispatcher_endpoint, s->dispatcher_key) : NULL;
    s->runtime = sim_runtime_new(opts->failure_rate, opts->seed);
    if (s->runtime)
        executor_sim_factory(&s->factory, s->runtime);
    s->pool = s->runtime ? pool_new(&s->factory, 0) : NULL;
    s->nodes = calloc((size_t)s->n, sizeof *s->nodes);
    s->by_name = zhashx_new();
    if (!s->mux || !s->pool || !s->nodes || !s->by_name) {
        fprintf(stderr, "shoal-agent: cannot set up %d simulated nodes: %s\n", s->n,
                strerror(errno ? errno : ENOMEM));
        goto fail;
    }
    pool_set_latency(s->pool, start_latency, s);
    int64_t now = clock_mono_ms();
    size_t known = 0;
    for (int i = 0; i < s->n; i++) {
        sim_node_t *n = &s->nodes[i];
        n->index = i;
        sim_node_name(&s->opts, i, n->name, sizeof n->name);
        n->period_ms = DEFAULT_PERIOD_MS;
        n->flush_max = FLUSH_BATCH;
        n->worker_tick_at = now + WORKER_TICK_MS + jitter(s, WORKER_TICK_MS);
        n->worker = worker_new(s->pool);
        if (!n->worker) {
            fprintf(stderr, "shoal-agent: out of memory creating sim node %d\n", i + 1);
            goto fail;
        }
        worker_set_flush_hint(n->worker, 1, on_dirty, n);
        node_id_load(s, n);
        if (n->node_id[0]) {
            known++;
            worker_set_node_id(n->worker, n->node_id); /* lists the (empty) runtime */
        }
        zhashx_insert(s->by_name, n->name, n);
    }
    if (mux_attach(s->mux, d->loop) < 0 || pool_attach(s->pool, d->loop) < 0 ||
        zloop_timer(d->loop, TICK_MS, 0, on_tick, s) < 0 ||
        bus_server_add(d->bus, sim_methods, sizeof sim_methods / sizeof sim_methods[0], s) < 0) {
        fprintf(stderr, "shoal-agent: cannot wire the main loop\n");
        goto fail;
    }
    bus_server_set_health(d->bus, health, s);
    bus_server_set_stats(d->bus, stats, s);
    char first[SIM_NAME_MAX], last[SIM_NAME_MAX];
    sim_node_name(&s->opts, 0, first, sizeof first);
    sim_node_name(&s->opts, s->n - 1, last, sizeof last);
    log_info("sim agent starting dispatcher=%s nodes=%d names=%s..%s known_ids=%zu "
             "start_latency_ms=%d failure_rate=%g cpus_nano=%lld memory=%lld labels=%d "
             "spreads=%d",
             dispatcher_endpoint, s->n, first, last, known, opts->start_latency_ms,
             opts->failure_rate, (long long)opts->nano_cpus, (long long)opts->memory_bytes,
             opts->nlabels, opts->nspreads);
    return s;
fail:
    sim_destroy(&s);
    return NULL;
}

void sim_destroy(sim_t **self_p) {
    if (!self_p || !*self_p)
        return;
    sim_t *s = *self_p;
    mux_destroy(&s->mux);
    pool_destroy(&s->pool); /* delayed completions go without their callbacks */
    for (int i = 0; s->nodes && i < s->n; i++) {
        worker_batch_destroy(&s->nodes[i].batch);
        worker_destroy(&s->nodes[i].worker);
    }
    free(s->nodes);
    zhashx_destroy(&s->by_name);
    sim_runtime_destroy(&s->runtime);
    zcert_destroy(&s->identity);
    free(s);
    *self_p = NULL;
}
