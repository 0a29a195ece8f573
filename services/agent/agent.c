/* agent — shoal-agent's manager: the dispatcher session and the wiring of the worker, the
 * executor pool and the executor's event follower onto the daemon's zloop (see agent.h).
 *
 * Threads: the main loop (this file, worker.c, controller.c) owns all state. Blocking Engine
 * calls run on the pool's threads; Engine events arrive from the follower actor; assignments
 * from the poller actor (session.c), which has its own connection, so the main connection
 * only carries short calls: Register, Heartbeat (every period, 500 ms by default) and
 * UpdateTaskStatus (batched: every 50 ms, or at once when 100 changes are waiting).
 *
 * Session: the agent finds the dispatcher at a fixed endpoint (agents do not talk to the
 * store). It registers once the executor has described the node, keeps the node id in
 * <state>/agent/node_id (node_id.<instance> for a second agent, see main.c), and re-registers when
 * a heartbeat, a report or the poller says the session is unknown (FAILED_PRECONDITION / NOT_FOUND)
 * or the dispatcher stops answering. Every new session re-reports every task, and the poller starts
 * from version 0. */
#include "agent.h"

#include <arpa/inet.h>
#include <errno.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent.pb-c.h"
#include "controller.h"
#include "dispatcher.pb-c.h"
#include "executor.h"
#include "pool.h"
#include "session.h"
#include "worker.h"

#define TICK_MS                 50
#define WORKER_TICK_MS          250
#define FLUSH_BATCH             100
#define FLUSH_BATCHES_PER_TICK  10
#define CALL_TIMEOUT_MS         1000
#define REGISTER_TIMEOUT_MS     2000
#define REGISTER_BACKOFF_MIN_MS 250
#define REGISTER_BACKOFF_MAX_MS 5000
#define DESCRIBE_EVERY_MS       10000
#define DEFAULT_PERIOD_MS       500

struct agent {
    daemon_t *d;
    agent_opts_t opts;
    zcert_t *identity; /* our own copy: daemon_run() frees d->identity before we are destroyed */
    char dispatcher_key[41];
    char node_id_path[PATH_MAX + 32];

    executor_factory_t factory;
    pool_t *pool;
    worker_t *worker;
    zactor_t *events;
    zactor_t *poller;
    bus_client_t *client;

    /* node description, from the executor */
    Shoal__NodeDescription *desc;
    bool describing;
    bool docker_ok;
    char docker_err[256];
    int describe_failures;
    int64_t describe_at_ms;

    /* session */
    char node_id[64];
    char session_id[64];
    bool registered;
    int64_t period_ms;
    int heartbeat_timer; /* -1 when none is armed */
    int register_failures;
    int64_t register_at_ms;
    bool flushing;
    int flush_failures;
    int64_t flush_at_ms; /* back-off after a failed report */
    int64_t last_worker_tick_ms;

    /* counters for bus.Stats */
    uint64_t registrations;
    uint64_t register_failures_total;
    uint64_t heartbeats;
    uint64_t heartbeat_failures;
    uint64_t status_updates_sent;
    uint64_t status_batches;
    uint64_t status_failures;
    uint64_t assignment_sets;
};

/* ---- node identity and address ----------------------------------------------------------- */

static void node_id_load(agent_t *a) {
    FILE *f = fopen(a->node_id_path, "r");
    if (!f)
        return;
    char buf[64] = "";
    if (fgets(buf, sizeof buf, f)) {
        buf[strcspn(buf, "\r\n \t")] = '\0';
        bool ok = buf[0] != '\0';
        for (const char *p = buf; *p; p++)
            if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-' || *p == '_'))
                ok = false;
        if (ok)
            snprintf(a->node_id, sizeof a->node_id, "%s", buf);
        else
            log_warn("ignoring malformed node id file path=%s", a->node_id_path);
    }
    fclose(f);
}

static void node_id_save(agent_t *a) {
    char dir[PATH_MAX + 32], tmp[PATH_MAX + 48];
    config_path(&a->d->cfg, dir, sizeof dir, "agent");
    mkdir(dir, 0755);
    snprintf(tmp, sizeof tmp, "%s.tmp", a->node_id_path);
    FILE *f = fopen(tmp, "w");
    if (!f || fprintf(f, "%s\n", a->node_id) < 0 || fflush(f) != 0 || fsync(fileno(f)) != 0) {
        log_err("cannot write the node id path=%s err=\"%s\"", tmp, strerror(errno));
        if (f)
            fclose(f);
        return;
    }
    fclose(f);
    if (rename(tmp, a->node_id_path) < 0)
        log_err("cannot write the node id path=%s err=\"%s\"", a->node_id_path, strerror(errno));
}

void agent_default_addr(char *buf, size_t len) {
    snprintf(buf, len, "127.0.0.1");
    struct ifaddrs *ifs = NULL;
    if (getifaddrs(&ifs) < 0)
        return;
    for (struct ifaddrs *i = ifs; i; i = i->ifa_next) {
        if (!i->ifa_addr || i->ifa_addr->sa_family != AF_INET || (i->ifa_flags & IFF_LOOPBACK) ||
            !(i->ifa_flags & IFF_UP))
            continue;
        if (!strncmp(i->ifa_name, "docker", 6) || !strncmp(i->ifa_name, "br-", 3) ||
            !strncmp(i->ifa_name, "veth", 4))
            continue;
        inet_ntop(AF_INET, &((struct sockaddr_in *)i->ifa_addr)->sin_addr, buf, (socklen_t)len);
        break;
    }
    freeifaddrs(ifs);
}

/* ---- dispatcher session ------------------------------------------------------------------ */

static int on_heartbeat(zloop_t *loop, int timer_id, void *arg);

/* One-shot: the dispatcher may jitter the period, so each heartbeat arms the next with the
 * period it was just given. */
static void arm_heartbeat(agent_t *a, int64_t period_ms) {
    if (period_ms <= 0)
        period_ms = DEFAULT_PERIOD_MS;
    if (a->heartbeat_timer >= 0)
        zloop_timer_end(a->d->loop, a->heartbeat_timer);
    a->period_ms = period_ms;
    a->heartbeat_timer = zloop_timer(a->d->loop, (size_t)period_ms, 1, on_heartbeat, a);
}

static void session_lost(agent_t *a, const char *why) {
    if (!a->registered)
        return;
    log_warn("dispatcher session lost, re-registering session=%s reason=\"%s\"", a->session_id,
             why);
    a->registered = false;
    a->session_id[0] = '\0';
    a->register_at_ms = 0; /* at once */
    assignments_poller_set_session(a->poller, a->node_id, "");
}

static bool session_unknown(int rc) {
    return rc == BUS_FAILED_PRECONDITION || rc == BUS_NOT_FOUND;
}

static void try_register(agent_t *a) {
    if (!a->desc)
        return; /* the executor has not described the node yet */
    Shoal__Dispatcher__RegisterRequest in = SHOAL__DISPATCHER__REGISTER_REQUEST__INIT;
    in.cluster_key = a->d->cfg.cluster_key;
    in.node_id = a->node_id;
    in.description = a->desc;
    in.addr = a->opts.addr;
    Shoal__Dispatcher__RegisterResponse *out = NULL;
    int rc = bus_client_call(a->client, "dispatcher.Register", &in.base,
                             &shoal__dispatcher__register_response__descriptor, REGISTER_TIMEOUT_MS,
                             (ProtobufCMessage **)&out);
    if (rc == BUS_OK && (!out->session_id || !*out->session_id || !out->node_id || !*out->node_id ||
                         strlen(out->node_id) >= sizeof a->node_id ||
                         strlen(out->session_id) >= sizeof a->session_id)) {
        log_err("dispatcher answered Register without a usable node or session id");
        rc = -EPROTO;
    }
    if (rc != BUS_OK) {
        a->register_failures_total++;
        int64_t delay = (int64_t)REGISTER_BACKOFF_MIN_MS
                        << (a->register_failures < 5 ? a->register_failures : 5);
        if (delay > REGISTER_BACKOFF_MAX_MS)
            delay = REGISTER_BACKOFF_MAX_MS;
        a->register_failures++;
        a->register_at_ms = clock_mono_ms() + delay;
        const char *msg = rc > 0 || rc == -EACCES ? bus_client_error(a->client) : strerror(-rc);
        if (a->register_failures == 1 || a->register_failures % 20 == 0) {
            log_warn("registration with the dispatcher failed endpoint=%s code=%s msg=\"%s\" "
                     "retry_ms=%lld",
                     a->opts.dispatcher_endpoint, rc > 0 ? bus_code_name(rc) : "-", msg,
                     (long long)delay);
        }
        if (out)
            protobuf_c_message_free_unpacked(&out->base, NULL);
        return;
    }
    bool new_id = strcmp(a->node_id, out->node_id) != 0;
    snprintf(a->node_id, sizeof a->node_id, "%s", out->node_id);
    snprintf(a->session_id, sizeof a->session_id, "%s", out->session_id);
    if (new_id)
        node_id_save(a);
    a->registered = true;
    a->register_failures = 0;
    a->registrations++;
    log_info("registered with the dispatcher node=%s session=%s heartbeat_ms=%lld", a->node_id,
             a->session_id, (long long)out->heartbeat_period_ms);
    arm_heartbeat(a, out->heartbeat_period_ms);
    protobuf_c_message_free_unpacked(&out->base, NULL);
    worker_set_node_id(a->worker, a->node_id);
    worker_mark_all_dirty(a->worker);
    assignments_poller_set_session(a->poller, a->node_id, a->session_id);
}

static int on_heartbeat(zloop_t *loop, int timer_id, void *arg) {
    agent_t *a = arg;
    a->heartbeat_timer = -1; /* one-shot: gone once fired */
    if (!a->registered)
        return 0;
    Shoal__Dispatcher__HeartbeatRequest in = SHOAL__DISPATCHER__HEARTBEAT_REQUEST__INIT;
    in.node_id = a->node_id;
    in.session_id = a->session_id;
    Shoal__Dispatcher__HeartbeatResponse *out = NULL;
    int rc = bus_client_call(a->client, "dispatcher.Heartbeat", &in.base,
                             &shoal__dispatcher__heartbeat_response__descriptor, CALL_TIMEOUT_MS,
                             (ProtobufCMessage **)&out);
    a->heartbeats++;
    if (rc == BUS_OK) {
        arm_heartbeat(a, out->period_ms > 0 ? out->period_ms : a->period_ms);
        protobuf_c_message_free_unpacked(&out->base, NULL);
        return 0;
    }
    a->heartbeat_failures++;
    const char *msg = rc > 0 ? bus_client_error(a->client) : strerror(-rc);
    if (session_unknown(rc) || rc == -ETIMEDOUT || rc == BUS_UNAVAILABLE) {
        session_lost(a, msg);
    } else {
        log_warn("heartbeat failed code=%s msg=\"%s\"", rc > 0 ? bus_code_name(rc) : "-", msg);
        arm_heartbeat(a, a->period_ms);
    }
    return 0;
}

/* Sends the waiting status changes, FLUSH_BATCH at a time, until none is left or a call fails
 * (the rest stay dirty and go with a later tick, after a back-off). An update the dispatcher
 * refuses outright (PERMISSION_DENIED, INVALID_ARGUMENT: e.g. a task no longer assigned here)
 * would block every other one forever, so a refused batch is retried one update at a time and
 * the refused update alone is dropped. */
static void flush_status(agent_t *a) {
    if (!a->registered || a->flushing || clock_mono_ms() < a->flush_at_ms)
        return;
    a->flushing = true;
    size_t max = FLUSH_BATCH;
    for (int i = 0; i < FLUSH_BATCHES_PER_TICK + FLUSH_BATCH && a->registered; i++) {
        worker_batch_t *b = worker_batch_take(a->worker, max);
        if (!b)
            break;
        Shoal__Dispatcher__UpdateTaskStatusRequest in =
            SHOAL__DISPATCHER__UPDATE_TASK_STATUS_REQUEST__INIT;
        in.node_id = a->node_id;
        in.session_id = a->session_id;
        in.n_updates = worker_batch_size(b);
        in.updates = worker_batch_updates(b);
        Shoal__Dispatcher__UpdateTaskStatusResponse *out = NULL;
        int rc = bus_client_call(a->client, "dispatcher.UpdateTaskStatus", &in.base,
                                 &shoal__dispatcher__update_task_status_response__descriptor,
                                 CALL_TIMEOUT_MS, (ProtobufCMessage **)&out);
        if (rc == BUS_OK) {
            worker_batch_ack(a->worker, b);
            a->status_batches++;
            a->status_updates_sent += in.n_updates;
            a->flush_failures = 0;
            log_debug("task status reported updates=%zu applied=%u", in.n_updates, out->applied);
            protobuf_c_message_free_unpacked(&out->base, NULL);
            worker_batch_destroy(&b);
            continue;
        }
        a->status_failures++;
        const char *msg = rc > 0 ? bus_client_error(a->client) : strerror(-rc);
        if (rc == BUS_PERMISSION_DENIED || rc == BUS_INVALID_ARGUMENT) {
            if (in.n_updates > 1) {
                max = 1; /* find the one it refuses */
            } else {
                log_err("dispatcher refused a task status update, dropping it task=%s state=%s "
                        "code=%s msg=\"%s\"",
                        in.updates[0]->task_id, task_state_name(in.updates[0]->status->state),
                        bus_code_name(rc), msg);
                worker_batch_ack(a->worker, b);
            }
            worker_batch_destroy(&b);
            continue;
        }
        worker_batch_destroy(&b);
        if (session_unknown(rc) || rc == -ETIMEDOUT) {
            session_lost(a, msg);
        } else {
            int64_t delay = 100LL << (a->flush_failures < 5 ? a->flush_failures : 5);
            a->flush_failures++;
            a->flush_at_ms = clock_mono_ms() + (delay > 2000 ? 2000 : delay);
            log_warn("task status report failed code=%s msg=\"%s\" retry_ms=%lld",
                     rc > 0 ? bus_code_name(rc) : "-", msg, (long long)delay);
        }
        break;
    }
    a->flushing = false;
}

static void on_flush_hint(void *ctx) {
    flush_status(ctx);
}

/* ---- executor: describe, events ---------------------------------------------------------- */

static void on_describe_done(void *ctx, agent_job_t *job) {
    agent_t *a = ctx;
    a->describing = false;
    if (job->res.rc == 0 && job->desc) {
        if (!a->docker_ok || !a->desc)
            log_info("executor ready executor=%s hostname=%s engine=%s cpus_nano=%lld "
                     "memory=%lld",
                     a->factory.name, job->desc->hostname,
                     job->desc->engine ? job->desc->engine->engine_version : "",
                     job->desc->resources ? (long long)job->desc->resources->nano_cpus : 0LL,
                     job->desc->resources ? (long long)job->desc->resources->memory_bytes : 0LL);
        if (a->desc)
            protobuf_c_message_free_unpacked(&a->desc->base, NULL);
        a->desc = job->desc;
        job->desc = NULL;
        a->docker_ok = true;
        a->docker_err[0] = '\0';
        a->describe_failures = 0;
        a->describe_at_ms = clock_mono_ms() + DESCRIBE_EVERY_MS;
    } else {
        if (a->docker_ok || a->describe_failures == 0)
            log_warn("executor not answering executor=%s err=\"%s\"", a->factory.name,
                     job->res.err);
        a->docker_ok = false;
        snprintf(a->docker_err, sizeof a->docker_err, "%s", job->res.err);
        int64_t delay = 250LL << (a->describe_failures < 4 ? a->describe_failures : 4);
        a->describe_failures++;
        a->describe_at_ms = clock_mono_ms() + delay;
    }
    agent_job_destroy(&job);
}

static void describe(agent_t *a) {
    if (a->describing)
        return;
    agent_job_t *job = agent_job_new(AGENT_OP_DESCRIBE, NULL, NULL, NULL, on_describe_done, a);
    if (!job)
        return;
    a->describing = true;
    a->describe_at_ms = INT64_MAX;
    pool_submit(a->pool, job);
}

static int on_event(zloop_t *loop, zsock_t *reader, void *arg) {
    agent_t *a = arg;
    executor_event_t ev;
    int r = executor_event_recv(reader, &ev);
    if (r == -EINTR)
        return 0;
    if (r < 0) {
        log_debug("unreadable executor event message");
        return 0;
    }
    if (ev.kind == EXECUTOR_EVENT_RESYNC && !a->describing)
        describe(a); /* the runtime may have restarted */
    worker_on_event(a->worker, &ev);
    return 0;
}

static int on_assignments(zloop_t *loop, zsock_t *reader, void *arg) {
    agent_t *a = arg;
    zmsg_t *msg = zmsg_recv(reader);
    if (!msg)
        return 0;
    char *cmd = zmsg_popstr(msg);
    if (cmd && strcmp(cmd, "ASSIGN") == 0) {
        zframe_t *f = zmsg_first(msg);
        Shoal__Dispatcher__AssignmentsResponse *set =
            f ? shoal__dispatcher__assignments_response__unpack(NULL, zframe_size(f),
                                                                zframe_data(f))
              : NULL;
        if (set) {
            a->assignment_sets++;
            log_debug("assignment set version=%llu tasks=%zu", (unsigned long long)set->version,
                      set->n_tasks);
            worker_set_assignments(a->worker, set->tasks, set->n_tasks);
            shoal__dispatcher__assignments_response__free_unpacked(set, NULL);
        }
    } else if (cmd && strcmp(cmd, "LOST") == 0) {
        char *session = zmsg_popstr(msg), *why = zmsg_popstr(msg);
        if (session && strcmp(session, a->session_id) == 0)
            session_lost(a, why ? why : "");
        zstr_free(&session);
        zstr_free(&why);
    }
    zstr_free(&cmd);
    zmsg_destroy(&msg);
    return 0;
}

static int on_tick(zloop_t *loop, int timer_id, void *arg) {
    agent_t *a = arg;
    int64_t now = clock_mono_ms();
    if (now >= a->describe_at_ms)
        describe(a);
    if (!a->registered && a->desc && now >= a->register_at_ms)
        try_register(a);
    if (now - a->last_worker_tick_ms >= WORKER_TICK_MS) {
        a->last_worker_tick_ms = now;
        worker_tick(a->worker);
    }
    flush_status(a);
    return 0;
}

/* ---- bus methods ------------------------------------------------------------------------- */

static void handle_tasks(void *ctx, bus_call_t *call, const ProtobufCMessage *input) {
    agent_t *a = ctx;
    size_t n = 0;
    agent_task_t **list = worker_tasks(a->worker, &n);
    Shoal__Agent__AgentTask *items = calloc(n ? n : 1, sizeof *items);
    Shoal__Agent__AgentTask **ptrs = calloc(n ? n : 1, sizeof *ptrs);
    Shoal__TaskStatus *st = calloc(n ? n : 1, sizeof *st);
    Shoal__ContainerStatus *cs = calloc(n ? n : 1, sizeof *cs);
    if (!list || !items || !ptrs || !st || !cs) {
        free(list), free(items), free(ptrs), free(st), free(cs);
        bus_reply_error(call, BUS_INTERNAL, "out of memory listing tasks");
        return;
    }
    for (size_t i = 0; i < n; i++) {
        agent_task_t *t = list[i];
        shoal__agent__agent_task__init(&items[i]);
        shoal__task_status__init(&st[i]);
        shoal__container_status__init(&cs[i]);
        items[i].task_id = t->id;
        items[i].service_name = t->task && t->task->service_name ? t->task->service_name : "";
        items[i].desired_state = t->desired;
        items[i].status = &st[i];
        st[i].timestamp_ms = t->timestamp_ms;
        st[i].state = t->state;
        st[i].message = t->message;
        st[i].err = t->err;
        st[i].healthy = ctl_task_healthy(t);
        if (t->container_id[0]) {
            st[i].container = &cs[i];
            cs[i].container_id = t->container_id;
            cs[i].pid = t->pid;
            cs[i].exit_code = t->exit_code > 0 ? t->exit_code : 0;
        }
        ptrs[i] = &items[i];
    }
    Shoal__Agent__TasksResponse out = SHOAL__AGENT__TASKS_RESPONSE__INIT;
    out.node_id = a->node_id;
    out.n_tasks = n;
    out.tasks = ptrs;
    bus_reply_ok(call, &out.base);
    free(list), free(items), free(ptrs), free(st), free(cs);
}

static const bus_method_t agent_methods[] = {
    {"agent.Tasks", &shoal__agent__tasks_request__descriptor,
     &shoal__agent__tasks_response__descriptor, handle_tasks, BUS_ROLES_MANAGER},
};

static void add_check(Shoal__Bus__HealthResponse *h, const char *name, bool ok,
                      const char *message) {
    Shoal__Bus__HealthCheck **v = realloc(h->checks, (h->n_checks + 1) * sizeof *v);
    if (!v)
        return;
    h->checks = v;
    Shoal__Bus__HealthCheck *c = malloc(sizeof *c);
    if (!c)
        return;
    shoal__bus__health_check__init(c);
    c->name = strdup(name);
    c->ok = ok;
    c->message = strdup(message ? message : "");
    h->checks[h->n_checks++] = c;
}

static void health(void *ctx, Shoal__Bus__HealthResponse *h) {
    agent_t *a = ctx;
    char msg[512];
    snprintf(msg, sizeof msg, "%s", a->docker_ok ? "answering" : a->docker_err);
    add_check(h, a->factory.name, a->docker_ok, a->docker_ok ? msg : (msg[0] ? msg : "unknown"));
    if (a->registered)
        snprintf(msg, sizeof msg, "node %s session %s", a->node_id, a->session_id);
    else
        snprintf(msg, sizeof msg, "not registered with %s", a->opts.dispatcher_endpoint);
    add_check(h, "dispatcher", a->registered, msg);
    h->healthy = a->docker_ok && a->registered;
    free(h->status);
    h->status = strdup(h->healthy      ? "ok"
                       : !a->docker_ok ? "executor not answering"
                                       : "not registered");
}

static void stats(void *ctx, Shoal__Bus__StatsResponse *s) {
    agent_t *a = ctx;
    worker_stats_t w;
    worker_get_stats(a->worker, &w);
    bus_stats_add(s, "agent.tasks", (int64_t)w.tasks);
    static const int states[] = {
        SHOAL__TASK_STATE__ASSIGNED, SHOAL__TASK_STATE__ACCEPTED, SHOAL__TASK_STATE__PREPARING,
        SHOAL__TASK_STATE__READY,    SHOAL__TASK_STATE__STARTING, SHOAL__TASK_STATE__RUNNING,
        SHOAL__TASK_STATE__COMPLETE, SHOAL__TASK_STATE__SHUTDOWN, SHOAL__TASK_STATE__FAILED,
        SHOAL__TASK_STATE__REJECTED, SHOAL__TASK_STATE__REMOVE,   SHOAL__TASK_STATE__ORPHANED};
    for (size_t i = 0; i < sizeof states / sizeof states[0]; i++) {
        char name[64], lower[32];
        const char *sn = task_state_name(states[i]);
        size_t j = 0;
        for (; sn[j] && j + 1 < sizeof lower; j++)
            lower[j] = (char)(sn[j] >= 'A' && sn[j] <= 'Z' ? sn[j] + 32 : sn[j]);
        lower[j] = '\0';
        snprintf(name, sizeof name, "agent.tasks_%s", lower);
        bus_stats_add(s, name, (int64_t)w.tasks_by_state[WORKER_STATE_INDEX(states[i])]);
    }
    bus_stats_add(s, "agent.engine_calls_total", (int64_t)pool_jobs_total(a->pool));
    bus_stats_add(s, "agent.engine_errors_total", (int64_t)pool_jobs_failed(a->pool));
    bus_stats_add(s, "agent.engine_calls_running", (int64_t)pool_running(a->pool));
    bus_stats_add(s, "agent.engine_calls_queued", (int64_t)pool_queued(a->pool));
    bus_stats_add(s, "agent.events_seen_total", (int64_t)w.events_seen);
    bus_stats_add(s, "agent.resyncs_total", (int64_t)w.resyncs);
    bus_stats_add(s, "agent.containers_adopted_total", (int64_t)w.containers_adopted);
    bus_stats_add(s, "agent.containers_removed_total", (int64_t)w.containers_removed);
    bus_stats_add(s, "agent.assignment_sets_total", (int64_t)a->assignment_sets);
    bus_stats_add(s, "agent.registered", a->registered);
    bus_stats_add(s, "agent.registrations_total", (int64_t)a->registrations);
    bus_stats_add(s, "agent.register_failures_total", (int64_t)a->register_failures_total);
    bus_stats_add(s, "agent.heartbeats_total", (int64_t)a->heartbeats);
    bus_stats_add(s, "agent.heartbeat_failures_total", (int64_t)a->heartbeat_failures);
    bus_stats_add(s, "agent.status_updates_sent_total", (int64_t)a->status_updates_sent);
    bus_stats_add(s, "agent.status_batches_total", (int64_t)a->status_batches);
    bus_stats_add(s, "agent.status_failures_total", (int64_t)a->status_failures);
    bus_stats_add(s, "agent.status_pending", (int64_t)worker_dirty_count(a->worker));
}

/* ---- lifecycle --------------------------------------------------------------------------- */

agent_t *agent_new(daemon_t *d, const agent_opts_t *opts) {
    agent_t *a = calloc(1, sizeof *a);
    if (!a) {
        fprintf(stderr, "shoal-agent: out of memory\n");
        return NULL;
    }
    a->d = d;
    a->opts = *opts;
    a->heartbeat_timer = -1;
    if (a->opts.concurrency <= 0)
        a->opts.concurrency = 8;
    if (!a->opts.dispatcher_endpoint[0])
        config_rpc_endpoint(&d->cfg, "dispatcher", a->opts.dispatcher_endpoint,
                            sizeof a->opts.dispatcher_endpoint);
    if (!a->opts.addr[0])
        agent_default_addr(a->opts.addr, sizeof a->opts.addr);
    config_path(&d->cfg, a->node_id_path, sizeof a->node_id_path, "%s",
                a->opts.node_id_file[0] ? a->opts.node_id_file : "agent/node_id");
    node_id_load(a);

    int r = bus_public_key(d->cfg.state_dir, "dispatcher", a->dispatcher_key);
    if (r < 0) {
        fprintf(stderr,
                "shoal-agent: no dispatcher key %s/keys/public/dispatcher.key: %s (run: shoal "
                "init)\n",
                d->cfg.state_dir, strerror(-r));
        goto fail;
    }
    a->identity = zcert_dup(d->identity);
    a->client = a->identity
                    ? bus_client_new(a->identity, a->opts.dispatcher_endpoint, a->dispatcher_key)
                    : NULL;
    if (!a->client) {
        fprintf(stderr, "shoal-agent: cannot create a client for the dispatcher at %s: %s\n",
                a->opts.dispatcher_endpoint, strerror(errno));
        goto fail;
    }
    bus_client_set_retry(a->client, 500);
    a->poller = assignments_poller_new(a->identity, a->opts.dispatcher_endpoint, a->dispatcher_key,
                                       SESSION_POLL_TIMEOUT_MS);

    executor_docker_factory(&a->factory, a->opts.docker_socket[0] ? a->opts.docker_socket : NULL);
    a->pool = pool_new(&a->factory, a->opts.concurrency);
    a->worker = a->pool ? worker_new(a->pool) : NULL;
    a->events = a->factory.events_new ? a->factory.events_new(&a->factory) : NULL;
    if (!a->poller || !a->pool || !a->worker || (a->factory.events_new && !a->events)) {
        fprintf(stderr, "shoal-agent: cannot start the agent's threads: %s\n", strerror(errno));
        goto fail;
    }
    worker_set_node_id(a->worker, a->node_id);
    worker_set_flush_hint(a->worker, FLUSH_BATCH, on_flush_hint, a);

    if (pool_attach(a->pool, d->loop) < 0 ||
        zloop_reader(d->loop, zactor_sock(a->poller), on_assignments, a) < 0 ||
        (a->events && zloop_reader(d->loop, zactor_sock(a->events), on_event, a) < 0) ||
        zloop_timer(d->loop, TICK_MS, 0, on_tick, a) < 0 ||
        bus_server_add(d->bus, agent_methods, sizeof agent_methods / sizeof agent_methods[0], a) <
            0) {
        fprintf(stderr, "shoal-agent: cannot wire the main loop\n");
        goto fail;
    }
    bus_server_set_health(d->bus, health, a);
    bus_server_set_stats(d->bus, stats, a);
    log_info("agent starting dispatcher=%s executor=%s socket=%s concurrency=%d node=%s addr=%s",
             a->opts.dispatcher_endpoint, a->factory.name, a->factory.path, a->opts.concurrency,
             a->node_id[0] ? a->node_id : "(new)", a->opts.addr);
    describe(a);
    worker_resync(a->worker);
    return a;
fail:
    agent_destroy(&a);
    return NULL;
}

void agent_destroy(agent_t **self_p) {
    if (!self_p || !*self_p)
        return;
    agent_t *a = *self_p;
    zactor_destroy(&a->poller);
    zactor_destroy(&a->events);
    pool_destroy(&a->pool); /* interrupts Engine calls in flight */
    worker_destroy(&a->worker);
    bus_client_destroy(&a->client);
    if (a->desc)
        protobuf_c_message_free_unpacked(&a->desc->base, NULL);
    zcert_destroy(&a->identity);
    free(a);
    *self_p = NULL;
}
