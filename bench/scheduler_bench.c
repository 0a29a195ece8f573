/* scheduler_bench — shoal-scheduler end to end against a real shoal-store (issue 5, make bench).
 *
 * 1. Throughput: a fresh store and scheduler; the bench writes N READY nodes, then M PENDING tasks
 *    (S services, spec_version 1, small CPU/memory reservations) with store.Batch requests of 1000
 *    single-put Txns, and watches /tasks/ until every task was seen ASSIGNED. Clock: from the
 *    first task write to the last ASSIGNED event, so the rate includes the store writing the
 *    tasks, the scheduler's watch, placement and batched compare-and-swap writes, and the watch
 *    bringing the assignments back.
 * 2. Baseline, same run, same machine: the same scheduler with --no-batch (one store.Txn request
 *    per placement, as a naive scheduler writes), same workload, time-boxed; its rate is the
 *    placements seen by the deadline over the time taken.
 * 3. Node failure: a fresh store, scheduler and orchestrator; N nodes; a service of F replicas
 *    with the binpack strategy (so all F tasks land on one node); the bench marks that node DOWN
 *    in the store and measures until F replacement tasks are ASSIGNED on other nodes.
 * Peak RSS (VmHWM) of each daemon is read from /proc before it is stopped.
 *
 * Daemons run from --bin (default bin) in private state dirs /tmp/shoal-scheduler-bench.*, are
 * stopped by pid and their dirs removed. Built and run by bench/scheduler_bench.sh. */
#include <ctype.h>
#include <czmq.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bus.h"
#include "config.h"
#include "objects.pb-c.h"
#include "orchestrator.pb-c.h"
#include "storecli.h"

#define BATCH        1000
#define MiB          (1024LL * 1024)
#define GiB          (1024 * MiB)
#define SWARMKIT_LOW 3400
#define SWARMKIT_HI  5600

static struct {
    const char *bin;
    int nodes, tasks, services, fail_tasks, baseline_secs, timeout_secs;
    bool keep, skip_baseline, skip_failure, stats;
    const char *profile; /* "scheduler" or "store": run that daemon under perf record */
} opt = {
    .bin = "bin",
    .nodes = 10000,
    .tasks = 100000,
    .services = 10,
    .fail_tasks = 1000,
    .baseline_secs = 15,
    .timeout_secs = 120,
};

typedef struct cluster {
    char state[64];
    shoal_config_t cfg;
    zcert_t *admin;
    store_client_t *store;
    pid_t store_pid, sched_pid, orch_pid;
    int64_t hwm_kib[3]; /* store, scheduler, orchestrator */
} cluster_t;

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

static cluster_t *current;
static void cluster_stop(cluster_t *c);

static void die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "scheduler_bench: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    if (current)
        cluster_stop(current);
    exit(1);
}

static double now_s(void) {
    return (double)zclock_usecs() / 1e6;
}

/* ---- daemons --------------------------------------------------------------------------- */

static pid_t spawn(cluster_t *c, const char *kind, const char *const *extra) {
    char exe[PATH_MAX], log[PATH_MAX + 64];
    snprintf(exe, sizeof exe, "%s/shoal-%s", opt.bin, kind);
    snprintf(log, sizeof log, "%s/logs/%s.log", c->state, kind);
    const char *argv[24];
    size_t n = 0;
    bool perf = opt.profile && strcmp(opt.profile, kind) == 0;
    char perf_out[PATH_MAX + 64];
    if (perf) {
        snprintf(perf_out, sizeof perf_out, "/tmp/shoal-scheduler-bench-%s.perf.data", kind);
        argv[n++] = "perf";
        argv[n++] = "record";
        argv[n++] = "--call-graph=dwarf,16384";
        argv[n++] = "-F";
        argv[n++] = "300";
        argv[n++] = "-o";
        argv[n++] = perf_out;
        argv[n++] = "--";
    }
    /* BENCH_WRAP_<KIND>="strace -f -T -o /tmp/x": a tool in front of one daemon (diagnosis). */
    char wrap_var[64], *wrap_copy = NULL;
    snprintf(wrap_var, sizeof wrap_var, "BENCH_WRAP_%s", kind);
    for (char *p = wrap_var; *p; p++)
        *p = (char)toupper((unsigned char)*p);
    if (!perf && getenv(wrap_var) && (wrap_copy = strdup(getenv(wrap_var)))) {
        for (char *tok = strtok(wrap_copy, " "); tok && n < 10; tok = strtok(NULL, " "))
            argv[n++] = tok;
    }
    argv[n++] = exe;
    argv[n++] = "--state-dir";
    argv[n++] = c->state;
    argv[n++] = "--instance";
    argv[n++] = "bench";
    argv[n++] = "--log-level";
    argv[n++] = getenv("BENCH_LOG_LEVEL") ? getenv("BENCH_LOG_LEVEL") : "warn";
    for (; extra && *extra && n < 23; extra++)
        argv[n++] = *extra;
    argv[n] = NULL;
    pid_t pid = fork();
    if (pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0600);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        execvp(argv[0], (char *const *)argv);
        _exit(127);
    }
    if (pid < 0)
        die("cannot fork %s: %s", kind, strerror(errno));
    return pid;
}

/* Peak resident set of a process in KiB (VmHWM), 0 when unknown. With perf in front, the
 * daemon is perf's child: read that one. */
static int64_t vm_hwm_kib(pid_t pid) {
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/task/%d/children", pid, pid);
    FILE *f = fopen(path, "r");
    if (f) {
        int child = 0;
        if (fscanf(f, "%d", &child) == 1 && child > 0)
            pid = child;
        fclose(f);
    }
    snprintf(path, sizeof path, "/proc/%d/status", pid);
    f = fopen(path, "r");
    if (!f)
        return 0;
    int64_t kib = 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmHWM: %lld kB", (long long *)&kib) == 1)
            break;
    fclose(f);
    return kib;
}

/* CPU seconds (user + system) a process used so far. */
static double cpu_secs(pid_t pid) {
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/task/%d/children", pid, pid);
    FILE *f = fopen(path, "r");
    if (f) {
        int child = 0;
        if (fscanf(f, "%d", &child) == 1 && child > 0)
            pid = child;
        fclose(f);
    }
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    f = fopen(path, "r");
    if (!f)
        return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *p = strrchr(buf, ')');
    unsigned long long ut = 0, st = 0;
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
        return 0;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static void stop_pid(pid_t *pid, int64_t *hwm) {
    if (*pid <= 0)
        return;
    if (hwm)
        *hwm = vm_hwm_kib(*pid);
    kill(*pid, SIGTERM);
    for (int i = 0; i < 100; i++) {
        if (waitpid(*pid, NULL, WNOHANG) == *pid) {
            *pid = 0;
            return;
        }
        usleep(50 * 1000);
    }
    kill(*pid, SIGKILL);
    waitpid(*pid, NULL, 0);
    *pid = 0;
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    return remove(path);
}

static void cluster_stop(cluster_t *c) {
    if (opt.stats && c->state[0]) {
        char cmd[PATH_MAX + 256];
        fflush(stdout);
        snprintf(cmd, sizeof cmd,
                 "%s/shoalctl --state-dir %s status store 2>&1 | grep -E 'store\\.' ; "
                 "%s/shoalctl --state-dir %s status scheduler 2>&1 | grep -E 'scheduler\\.'",
                 opt.bin, c->state, opt.bin, c->state);
        if (system(cmd) != 0)
            fprintf(stderr, "scheduler_bench: shoalctl status failed\n");
    }
    stop_pid(&c->orch_pid, &c->hwm_kib[2]);
    stop_pid(&c->sched_pid, &c->hwm_kib[1]);
    store_client_destroy(&c->store);
    stop_pid(&c->store_pid, &c->hwm_kib[0]);
    zcert_destroy(&c->admin);
    if (c->state[0] && !opt.keep)
        nftw(c->state, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    else if (c->state[0])
        fprintf(stderr, "scheduler_bench: kept %s\n", c->state);
    c->state[0] = '\0';
    current = NULL;
}

static void cluster_start(cluster_t *c) {
    memset(c, 0, sizeof *c);
    current = c;
    snprintf(c->state, sizeof c->state, "/tmp/shoal-scheduler-bench.XXXXXX");
    if (!mkdtemp(c->state))
        die("mkdtemp: %s", strerror(errno));
    const char *names[] = {"store", "scheduler", "orchestrator", "admin", NULL};
    if (config_init(c->state, names) < 0 || config_load(c->state, &c->cfg) < 0)
        die("cannot initialise %s", c->state);
    char logs[PATH_MAX];
    snprintf(logs, sizeof logs, "%s/logs", c->state);
    mkdir(logs, 0700);
    c->admin = bus_identity_load(c->state, "admin");
    if (!c->admin)
        die("cannot load the admin identity");
    /* Enough history that no watcher falls behind compaction during a run. */
    char history[32];
    snprintf(history, sizeof history, "%d", 4 * (opt.tasks + opt.nodes) + 100000);
    const char *store_args[] = {"--history", history, NULL};
    c->store_pid = spawn(c, "store", store_args);
    c->store = store_client_new(&c->cfg, c->admin);
    if (!c->store)
        die("cannot create a store client");
    store_client_set_timeout(c->store, 30000);
    for (int i = 0;; i++) {
        Shoal__Store__StatusResponse *st = NULL;
        store_client_set_timeout(c->store, 500);
        if (store_status(c->store, &st) == 0) {
            shoal__store__status_response__free_unpacked(st, NULL);
            break;
        }
        if (i > 40)
            die("shoal-store did not answer (log: %s/logs/store.log)", c->state);
    }
    store_client_set_timeout(c->store, 60000);
}

/* Waits until the scheduler holds /leases/scheduler (it is then synced and writing). */
static void wait_scheduler_leader(cluster_t *c) {
    for (int i = 0; i < 200; i++) {
        Shoal__Store__KeyValue *kv = NULL;
        if (store_get(c->store, "/leases/scheduler", &kv) == 0) {
            shoal__store__key_value__free_unpacked(kv, NULL);
            return;
        }
        usleep(50 * 1000);
    }
    die("shoal-scheduler did not become leader (log: %s/logs/scheduler.log)", c->state);
}

/* ---- writing objects ------------------------------------------------------------------- */

typedef struct batch {
    store_txn_builder_t *b[BATCH];
    Shoal__Store__TxnRequest *txns[BATCH];
    size_t n;
} batch_t;

static void batch_put(batch_t *bt, const char *key, const ProtobufCMessage *msg) {
    store_txn_builder_t *b = store_txn_builder_new();
    if (!b)
        die("out of memory");
    store_txn_put(b, key, msg);
    bt->b[bt->n] = b;
    bt->txns[bt->n] = (Shoal__Store__TxnRequest *)store_txn_builder_request(b);
    bt->n++;
}

static void batch_flush(cluster_t *c, batch_t *bt) {
    if (!bt->n)
        return;
    Shoal__Store__BatchRequest req = SHOAL__STORE__BATCH_REQUEST__INIT;
    req.txns = bt->txns;
    req.n_txns = bt->n;
    Shoal__Store__BatchResponse *resp = NULL;
    if (store_batch(c->store, &req, &resp) < 0)
        die("store.Batch failed: %s", store_client_error(c->store));
    shoal__store__batch_response__free_unpacked(resp, NULL);
    for (size_t i = 0; i < bt->n; i++)
        store_txn_builder_destroy(&bt->b[i]);
    bt->n = 0;
}

static void node_id_of(int i, char *buf, size_t len) {
    snprintf(buf, len, "bnode%05d", i);
}

static void write_nodes(cluster_t *c, int n) {
    static batch_t bt;
    static const char *zones[] = {"a", "b", "c", "d"};
    for (int i = 0; i < n; i++) {
        char id[32], key[64], rack[16];
        node_id_of(i, id, sizeof id);
        snprintf(key, sizeof key, "/nodes/%s", id);
        snprintf(rack, sizeof rack, "r%02d", (i / 4) % 25);
        Shoal__Node node = SHOAL__NODE__INIT;
        Shoal__Meta meta = SHOAL__META__INIT;
        Shoal__NodeSpec spec = SHOAL__NODE_SPEC__INIT;
        Shoal__Annotations ann = SHOAL__ANNOTATIONS__INIT;
        Shoal__Label zone = SHOAL__LABEL__INIT, rk = SHOAL__LABEL__INIT;
        Shoal__Label *labels[2] = {&zone, &rk};
        Shoal__NodeDescription desc = SHOAL__NODE_DESCRIPTION__INIT;
        Shoal__Platform plat = SHOAL__PLATFORM__INIT;
        Shoal__Resources res = SHOAL__RESOURCES__INIT;
        Shoal__NodeStatus st = SHOAL__NODE_STATUS__INIT;
        meta.id = id;
        meta.version = 1;
        meta.created_at_ms = meta.updated_at_ms = clock_wall_ms();
        node.meta = &meta;
        zone.key = "zone";
        zone.value = (char *)zones[i % 4];
        rk.key = "rack";
        rk.value = rack;
        ann.name = id;
        ann.labels = labels;
        ann.n_labels = 2;
        spec.annotations = &ann;
        spec.availability = SHOAL__NODE_SPEC__AVAILABILITY__ACTIVE;
        node.spec = &spec;
        plat.os = "linux";
        plat.architecture = "x86_64";
        res.nano_cpus = 16000000000LL;
        res.memory_bytes = 64 * GiB;
        desc.hostname = id;
        desc.platform = &plat;
        desc.resources = &res;
        node.description = &desc;
        st.state = SHOAL__NODE_STATUS__STATE__READY;
        st.heartbeat_ms = clock_wall_ms();
        node.status = &st;
        node.role = SHOAL__NODE_SPEC__ROLE__WORKER;
        batch_put(&bt, key, &node.base);
        if (bt.n == BATCH)
            batch_flush(c, &bt);
    }
    batch_flush(c, &bt);
}

static void write_task(batch_t *bt, int i, const char *service_id, const char *service_name) {
    char id[32], key[64], image[64];
    id_random(id);
    snprintf(key, sizeof key, "/tasks/%s", id);
    snprintf(image, sizeof image, "bench/%s:latest", service_name);
    Shoal__Task t = SHOAL__TASK__INIT;
    Shoal__Meta meta = SHOAL__META__INIT;
    Shoal__TaskSpec spec = SHOAL__TASK_SPEC__INIT;
    Shoal__ContainerSpec cs = SHOAL__CONTAINER_SPEC__INIT;
    Shoal__ResourceRequirements rr = SHOAL__RESOURCE_REQUIREMENTS__INIT;
    Shoal__Resources res = SHOAL__RESOURCES__INIT;
    Shoal__TaskStatus st = SHOAL__TASK_STATUS__INIT;
    char *cmd[] = {"sleep", "infinity"};
    meta.id = id;
    meta.version = 1;
    meta.created_at_ms = meta.updated_at_ms = clock_wall_ms();
    t.meta = &meta;
    t.service_id = (char *)service_id;
    t.service_name = (char *)service_name;
    t.slot = (uint64_t)i + 1;
    cs.image = image;
    cs.command = cmd;
    cs.n_command = 2;
    spec.container = &cs;
    res.nano_cpus = 100000000; /* 0.1 CPU */
    res.memory_bytes = 64 * MiB;
    rr.reservations = &res;
    spec.resources = &rr;
    t.spec = &spec;
    t.spec_version = 1;
    t.desired_state = SHOAL__TASK_STATE__RUNNING;
    st.state = SHOAL__TASK_STATE__PENDING;
    st.timestamp_ms = clock_wall_ms();
    st.message = "created";
    t.status = &st;
    batch_put(bt, key, &t.base);
}

/* ---- watching tasks -------------------------------------------------------------------- */

/* Reads a varint; 0 when the buffer ends first. */
static size_t varint(const uint8_t *p, size_t len, uint64_t *v) {
    uint64_t x = 0;
    for (size_t i = 0; i < len && i < 10; i++) {
        x |= (uint64_t)(p[i] & 0x7f) << (7 * i);
        if (!(p[i] & 0x80)) {
            *v = x;
            return i + 1;
        }
    }
    return 0;
}

/* Finds the first length-delimited field `field` of a message; false when absent. */
static bool find_bytes(const uint8_t *p, size_t len, unsigned field, const uint8_t **ret,
                       size_t *ret_len) {
    size_t off = 0;
    while (off < len) {
        uint64_t tag, v;
        size_t k = varint(p + off, len - off, &tag);
        if (!k)
            return false;
        off += k;
        switch (tag & 7) {
        case 0:
            if (!(k = varint(p + off, len - off, &v)))
                return false;
            off += k;
            break;
        case 1:
            off += 8;
            break;
        case 5:
            off += 4;
            break;
        case 2:
            if (!(k = varint(p + off, len - off, &v)) || v > len - off - k)
                return false;
            off += k;
            if ((tag >> 3) == field) {
                *ret = p + off;
                *ret_len = (size_t)v;
                return true;
            }
            off += (size_t)v;
            break;
        default:
            return false;
        }
    }
    return false;
}

static uint64_t find_varint(const uint8_t *p, size_t len, unsigned field) {
    size_t off = 0;
    while (off < len) {
        uint64_t tag, v = 0;
        size_t k = varint(p + off, len - off, &tag);
        if (!k)
            return 0;
        off += k;
        switch (tag & 7) {
        case 0:
            if (!(k = varint(p + off, len - off, &v)))
                return 0;
            off += k;
            if ((tag >> 3) == field)
                return v;
            break;
        case 1:
            off += 8;
            break;
        case 5:
            off += 4;
            break;
        case 2:
            if (!(k = varint(p + off, len - off, &v)) || v > len - off - k)
                return 0;
            off += k + (size_t)v;
            break;
        default:
            return 0;
        }
    }
    return 0;
}

/* The parts of an encoded Task the bench needs, without decoding the whole task. */
static int task_state(const uint8_t *p, size_t len, char *node, size_t node_len) {
    const uint8_t *f;
    size_t flen;
    node[0] = '\0';
    if (find_bytes(p, len, 5, &f, &flen)) /* node_id */
        snprintf(node, node_len, "%.*s", (int)flen, (const char *)f);
    if (!find_bytes(p, len, 10, &f, &flen)) /* status */
        return 0;
    return (int)find_varint(f, flen, 2); /* status.state */
}

typedef struct watch {
    zactor_t *actor;
    zhashx_t *assigned; /* task id -> node id (strdup'ed) */
    zhashx_t *ignore;   /* task ids not to count (phase 3: the tasks of the failed node) */
    size_t events;
} watch_t;

static void watch_start(cluster_t *c, watch_t *w) {
    Shoal__Store__RangeResponse *r = NULL;
    if (store_list(c->store, "/leases/", &r) < 0)
        die("store list: %s", store_client_error(c->store));
    int64_t rev = r->header ? r->header->revision : 0;
    shoal__store__range_response__free_unpacked(r, NULL);
    memset(w, 0, sizeof *w);
    w->assigned = zhashx_new();
    zhashx_set_destructor(w->assigned, (zhashx_destructor_fn *)zstr_free);
    zhashx_set_duplicator(w->assigned, (zhashx_duplicator_fn *)strdup);
    w->ignore = zhashx_new();
    w->actor = store_watcher_new(&c->cfg, "admin", "/tasks/", rev + 1);
    if (!w->actor)
        die("cannot start a watcher");
}

static void watch_stop(watch_t *w) {
    zactor_destroy(&w->actor);
    zhashx_destroy(&w->assigned);
    zhashx_destroy(&w->ignore);
}

/* Takes every watch response waiting (up to wait_ms for the first); returns the assigned count. */
static size_t watch_drain(watch_t *w, int wait_ms) {
    zsock_t *s = zactor_sock(w->actor);
    zpoller_t *p = zpoller_new(s, NULL);
    int timeout = wait_ms;
    while (zpoller_wait(p, timeout)) {
        Shoal__Store__WatchResponse *resp = NULL;
        if (store_watcher_recv(w->actor, &resp) < 0)
            break;
        if (resp->compacted)
            die("the bench's watch fell behind compaction");
        for (size_t i = 0; i < resp->n_events; i++) {
            const Shoal__Store__Event *ev = resp->events[i];
            w->events++;
            if (!ev->kv || ev->type != SHOAL__STORE__EVENT__TYPE__PUT)
                continue;
            const char *id = ev->kv->key + strlen("/tasks/");
            char node[64];
            int st = task_state(ev->kv->value.data, ev->kv->value.len, node, sizeof node);
            if (st >= SHOAL__TASK_STATE__ASSIGNED && st <= SHOAL__TASK_STATE__RUNNING && node[0] &&
                !zhashx_lookup(w->ignore, id))
                zhashx_insert(w->assigned, id, node);
        }
        shoal__store__watch_response__free_unpacked(resp, NULL);
        timeout = 0;
    }
    zpoller_destroy(&p);
    return zhashx_size(w->assigned);
}

/* ---- phases ---------------------------------------------------------------------------- */

typedef struct throughput {
    size_t placed;
    double secs, write_secs;
    double cpu_store, cpu_sched; /* CPU seconds used during the measured window */
    bool complete;
} throughput_t;

static void run_throughput(cluster_t *c, bool naive, int limit_secs, throughput_t *ret) {
    const char *naive_args[] = {"--no-batch", NULL};
    c->sched_pid = spawn(c, "scheduler", naive ? naive_args : NULL);
    wait_scheduler_leader(c);
    double tn = now_s();
    write_nodes(c, opt.nodes);
    if (getenv("BENCH_VERBOSE"))
        fprintf(stderr, "scheduler_bench: %d nodes written in %.2f s\n", opt.nodes, now_s() - tn);
    watch_t w;
    watch_start(c, &w);
    usleep(200 * 1000); /* the scheduler's view has the nodes */

    static batch_t bt;
    char(*svc_ids)[32] = calloc((size_t)opt.services, sizeof *svc_ids);
    for (int s = 0; s < opt.services; s++)
        id_random(svc_ids[s]);
    double cpu_store0 = cpu_secs(c->store_pid), cpu_sched0 = cpu_secs(c->sched_pid);
    double t0 = now_s();
    for (int i = 0; i < opt.tasks; i++) {
        int s = i % opt.services;
        char name[32];
        snprintf(name, sizeof name, "bench%d", s);
        write_task(&bt, i / opt.services, svc_ids[s], name);
        if (bt.n == BATCH) {
            batch_flush(c, &bt);
            watch_drain(&w, 0);
        }
    }
    batch_flush(c, &bt);
    double t_written = now_s();
    size_t placed = watch_drain(&w, 0);
    double deadline = t0 + limit_secs;
    while (placed < (size_t)opt.tasks && now_s() < deadline)
        placed = watch_drain(&w, 50);
    double t1 = now_s();
    ret->cpu_store = cpu_secs(c->store_pid) - cpu_store0;
    ret->cpu_sched = cpu_secs(c->sched_pid) - cpu_sched0;
    ret->placed = placed;
    ret->secs = t1 - t0;
    ret->write_secs = t_written - t0;
    ret->complete = placed == (size_t)opt.tasks;
    free(svc_ids);
    watch_stop(&w);
}

/* Phase 3: ms until the F tasks of a failed node are ASSIGNED elsewhere; -1 on timeout. */
static int64_t run_failure(cluster_t *c) {
    c->sched_pid = spawn(c, "scheduler", NULL);
    c->orch_pid = spawn(c, "orchestrator", NULL);
    wait_scheduler_leader(c);
    write_nodes(c, opt.nodes);
    watch_t w;
    watch_start(c, &w);

    char key[41] = "";
    char endpoint[PATH_MAX + 32];
    config_rpc_endpoint(&c->cfg, "orchestrator", endpoint, sizeof endpoint);
    if (bus_public_key(c->state, "orchestrator", key) < 0)
        die("no orchestrator key");
    bus_client_t *orch = bus_client_new(c->admin, endpoint, key);
    if (!orch)
        die("cannot connect to the orchestrator");

    Shoal__ServiceSpec spec = SHOAL__SERVICE_SPEC__INIT;
    Shoal__Annotations ann = SHOAL__ANNOTATIONS__INIT;
    Shoal__TaskSpec ts = SHOAL__TASK_SPEC__INIT;
    Shoal__ContainerSpec cs = SHOAL__CONTAINER_SPEC__INIT;
    Shoal__Placement pl = SHOAL__PLACEMENT__INIT;
    Shoal__ReplicatedService rep = SHOAL__REPLICATED_SERVICE__INIT;
    ann.name = "benchfail";
    spec.annotations = &ann;
    cs.image = "bench/fail:latest";
    ts.container = &cs;
    pl.strategy = "binpack";
    ts.placement = &pl;
    spec.task = &ts;
    rep.replicas = (uint64_t)opt.fail_tasks;
    spec.mode_case = SHOAL__SERVICE_SPEC__MODE_REPLICATED;
    spec.replicated = &rep;
    Shoal__Orchestrator__ServiceCreateRequest req =
        SHOAL__ORCHESTRATOR__SERVICE_CREATE_REQUEST__INIT;
    req.spec = &spec;
    ProtobufCMessage *out = NULL;
    int r = BUS_UNAVAILABLE;
    for (int i = 0; i < 100 && r != BUS_OK; i++) {
        r = bus_client_call(orch, "orchestrator.ServiceCreate", &req.base,
                            &shoal__orchestrator__service_create_response__descriptor, 5000, &out);
        if (r != BUS_OK)
            usleep(100 * 1000);
    }
    if (r != BUS_OK)
        die("orchestrator.ServiceCreate: %s", bus_client_error(orch));
    protobuf_c_message_free_unpacked(out, NULL);

    double deadline = now_s() + opt.timeout_secs;
    while (watch_drain(&w, 50) < (size_t)opt.fail_tasks && now_s() < deadline)
        ;
    if (zhashx_size(w.assigned) < (size_t)opt.fail_tasks)
        die("the service's %d tasks were not all assigned (%zu)", opt.fail_tasks,
            zhashx_size(w.assigned));
    /* The node holding them (binpack puts them all on one). */
    char failed[64] = "";
    size_t on_failed = 0;
    for (const char *n = zhashx_first(w.assigned); n; n = zhashx_next(w.assigned)) {
        if (!failed[0])
            snprintf(failed, sizeof failed, "%s", n);
        on_failed += strcmp(n, failed) == 0;
    }
    for (const char *n = zhashx_first(w.assigned); n; n = zhashx_next(w.assigned))
        zhashx_insert(w.ignore, zhashx_cursor(w.assigned), (void *)1);
    zhashx_purge(w.assigned);
    if (on_failed != (size_t)opt.fail_tasks)
        fprintf(stderr, "scheduler_bench: note: %zu of %d tasks on %s (binpack should put all)\n",
                on_failed, opt.fail_tasks, failed);

    /* Mark the node DOWN, as the dispatcher does after missed heartbeats. */
    char nkey[96];
    snprintf(nkey, sizeof nkey, "/nodes/%s", failed);
    Shoal__Store__KeyValue *kv = NULL;
    if (store_get(c->store, nkey, &kv) < 0)
        die("get %s: %s", nkey, store_client_error(c->store));
    Shoal__Node *node = shoal__node__unpack(NULL, kv->value.len, kv->value.data);
    if (!node || !node->status)
        die("cannot decode %s", nkey);
    node->status->state = SHOAL__NODE_STATUS__STATE__DOWN;
    node->meta->version++;
    double t0 = now_s();
    if (store_cas_put(c->store, nkey, &node->base, kv->mod_revision, NULL) < 0)
        die("cannot mark %s DOWN: %s", nkey, store_client_error(c->store));
    shoal__node__free_unpacked(node, NULL);
    shoal__store__key_value__free_unpacked(kv, NULL);

    deadline = t0 + opt.timeout_secs;
    size_t moved = 0;
    while (now_s() < deadline) {
        watch_drain(&w, 20);
        moved = 0;
        for (const char *n = zhashx_first(w.assigned); n; n = zhashx_next(w.assigned))
            moved += strcmp(n, failed) != 0;
        if (moved >= (size_t)opt.fail_tasks)
            break;
    }
    double t1 = now_s();
    bus_client_destroy(&orch);
    watch_stop(&w);
    if (moved < (size_t)opt.fail_tasks) {
        fprintf(stderr, "scheduler_bench: only %zu of %d tasks rescheduled in %d s\n", moved,
                opt.fail_tasks, opt.timeout_secs);
        return -1;
    }
    return (int64_t)((t1 - t0) * 1000);
}

/* ---- main ------------------------------------------------------------------------------ */

static void usage(void) {
    printf("usage: scheduler_bench [--bin DIR] [--nodes N] [--tasks N] [--services N]\n"
           "                       [--fail-tasks N] [--baseline-secs S] [--timeout S]\n"
           "                       [--skip-baseline] [--skip-failure] [--keep] [--stats]\n"
           "                       [--profile scheduler|store]\n");
}

static int int_arg(const char *s, const char *name, int min) {
    char *end;
    long v = strtol(s, &end, 10);
    if (*end || v < min || v > 100000000) {
        fprintf(stderr, "scheduler_bench: %s must be a number >= %d (got \"%s\")\n", name, min, s);
        exit(2);
    }
    return (int)v;
}

static double mib(int64_t kib) {
    return (double)kib / 1024.0;
}

int main(int argc, char **argv) {
    static const struct option longopts[] = {
        {"bin", required_argument, NULL, 'b'},
        {"nodes", required_argument, NULL, 'n'},
        {"tasks", required_argument, NULL, 't'},
        {"services", required_argument, NULL, 's'},
        {"fail-tasks", required_argument, NULL, 'f'},
        {"baseline-secs", required_argument, NULL, 'B'},
        {"timeout", required_argument, NULL, 'T'},
        {"skip-baseline", no_argument, NULL, 'x'},
        {"skip-failure", no_argument, NULL, 'y'},
        {"keep", no_argument, NULL, 'k'},
        {"stats", no_argument, NULL, 'S'},
        {"profile", required_argument, NULL, 'p'},
        {"help", no_argument, NULL, 'h'},
        {0},
    };
    int o;
    while ((o = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (o) {
        case 'b':
            opt.bin = optarg;
            break;
        case 'n':
            opt.nodes = int_arg(optarg, "--nodes", 1);
            break;
        case 't':
            opt.tasks = int_arg(optarg, "--tasks", 1);
            break;
        case 's':
            opt.services = int_arg(optarg, "--services", 1);
            break;
        case 'f':
            opt.fail_tasks = int_arg(optarg, "--fail-tasks", 1);
            break;
        case 'B':
            opt.baseline_secs = int_arg(optarg, "--baseline-secs", 1);
            break;
        case 'T':
            opt.timeout_secs = int_arg(optarg, "--timeout", 1);
            break;
        case 'x':
            opt.skip_baseline = true;
            break;
        case 'y':
            opt.skip_failure = true;
            break;
        case 'k':
            opt.keep = true;
            break;
        case 'S':
            opt.stats = true;
            break;
        case 'p':
            opt.profile = optarg;
            break;
        case 'h':
            usage();
            return 0;
        default:
            usage();
            return 2;
        }
    }
    signal(SIGPIPE, SIG_IGN);
    zsys_init();
    zsys_set_logstream(NULL);

    cluster_t c;
    throughput_t fast = {0}, naive = {0};
    int64_t rss_fast[3] = {0}, rss_naive[3] = {0}, rss_fail[3] = {0};

    cluster_start(&c);
    run_throughput(&c, false, opt.timeout_secs, &fast);
    cluster_stop(&c);
    memcpy(rss_fast, c.hwm_kib, sizeof rss_fast);
    double rate = fast.placed / fast.secs;
    printf("scheduler throughput: %d nodes, %d tasks in %d services (PENDING -> ASSIGNED in "
           "the store)\n",
           opt.nodes, opt.tasks, opt.services);
    printf("  %-40s %9.0f /s  (%zu tasks in %.2f s; the bench's own writes took %.2f s)%s\n",
           "shoal-scheduler, batched", rate, fast.placed, fast.secs, fast.write_secs,
           fast.complete ? "" : "  INCOMPLETE");
    printf("  %-40s store %.2f s, scheduler %.2f s\n", "  CPU used in that window", fast.cpu_store,
           fast.cpu_sched);

    if (!opt.skip_baseline) {
        cluster_start(&c);
        run_throughput(&c, true, opt.baseline_secs, &naive);
        cluster_stop(&c);
        memcpy(rss_naive, c.hwm_kib, sizeof rss_naive);
        double nrate = naive.placed / naive.secs;
        printf("  %-40s %9.0f /s  (%zu placed in %.2f s, time-boxed at %d s)\n",
               "baseline: same, one store.Txn per task", nrate, naive.placed, naive.secs,
               opt.baseline_secs);
        printf("  %-40s %9.1f x\n", "ratio batched / baseline", nrate > 0 ? rate / nrate : 0);
    }
    printf("  %-40s %9s /s  (goal >= 50000)\n", "goal", "50000");
    printf("  %-40s %d-%d /s  (published figures, not measured here)\n", "SwarmKit, for context",
           SWARMKIT_LOW, SWARMKIT_HI);

    int64_t fail_ms = -2;
    if (!opt.skip_failure) {
        cluster_start(&c);
        fail_ms = run_failure(&c);
        cluster_stop(&c);
        memcpy(rss_fail, c.hwm_kib, sizeof rss_fail);
        printf("node failure: %d tasks on one node of %d, node marked DOWN in the store\n",
               opt.fail_tasks, opt.nodes);
        if (fail_ms >= 0)
            printf("  %-40s %9lld ms  (goal <= 3000)\n", "all replacements ASSIGNED elsewhere",
                   (long long)fail_ms);
        else
            printf("  %-40s %9s     (timed out after %d s)\n",
                   "all replacements ASSIGNED elsewhere", "FAILED", opt.timeout_secs);
    }
    printf("peak RSS (VmHWM)\n");
    printf("  %-40s store %.0f MiB, scheduler %.0f MiB\n", "throughput run", mib(rss_fast[0]),
           mib(rss_fast[1]));
    if (!opt.skip_baseline)
        printf("  %-40s store %.0f MiB, scheduler %.0f MiB\n", "baseline run", mib(rss_naive[0]),
               mib(rss_naive[1]));
    if (!opt.skip_failure)
        printf("  %-40s store %.0f MiB, scheduler %.0f MiB, orchestrator %.0f MiB\n",
               "node failure run", mib(rss_fail[0]), mib(rss_fail[1]), mib(rss_fail[2]));
    return fast.complete && (opt.skip_failure || fail_ms >= 0) ? 0 : 1;
}
