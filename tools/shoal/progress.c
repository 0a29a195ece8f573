/* progress — waiting for a service to converge, with docker's progress display.
 *
 * Every 200 ms: ServiceList (the service's current spec_version, its update status, and how many
 * tasks it wants, which for a global service is the number of eligible nodes), TaskList of the
 * service and NodeList. Tasks are grouped by slot (replicated) or node (global); a task is
 * *current* when it carries the service's spec_version or, for a service (not a job), the same
 * task spec: the orchestrator's rule, under which a rollback keeps the tasks the update never
 * reached (they run the rolled-back spec, whose spec_version is new).
 *
 * A service has converged when
 *   - exactly `desired` current tasks with desired state RUNNING are RUNNING, and none is not,
 *   - no task of an older spec still has desired state RUNNING (the rolling update is over),
 *   - no task told to stop is still active on a node that is up (scale-down finished).
 * A job has converged when its current tasks have completed `total` times (a replicated job's
 * total completions; one per node for a global job); then "job complete".
 * It has failed when, for one slot, the two newest current tasks both ended FAILED/REJECTED (a
 * crash loop or a bad image: the restart policy would only repeat it), or the newest one ended
 * and the restart policy will not replace it. A PENDING task with a reason ("no suitable node
 * (...)") is shown while waiting but is not a failure: a node may yet come.
 *
 * `service update` and `service rollback` also follow the service's update status, as docker
 * does: while it is UPDATING or ROLLBACK_STARTED the orchestrator owns the outcome (task failures
 * are its to judge: it pauses or rolls back), so the wait goes on until COMPLETED or
 * ROLLBACK_COMPLETED even when the tasks look converged ("verify: ..."). PAUSED and
 * ROLLBACK_PAUSED end the wait with the orchestrator's reason. An automatic rollback shows
 * "rollback: <reason>" and "overall progress: rolling back update: ...", and once the old spec
 * runs again the command fails: the update did not happen. A status is this command's when it
 * differs from the one the write returned; an earlier update's PAUSED is believed only after a
 * few seconds (the orchestrator may be resuming it).
 *
 * Display (stderr): on a terminal, docker's redrawn block
 *   overall progress: 2 out of 3 tasks
 *   1/3: running   [==================================================>]
 *   2/3: starting  [============================================>      ]
 *   3/3: pending: no suitable node (insufficient memory on 1 node)
 * and plain lines otherwise, printed only when something changed. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include "service.h"

#define POLL_MS               200
#define DEFAULT_TIMEOUT_MS    120000
#define BAR_WIDTH             50
#define MAX_TTY_SLOT_LINES    20
#define GLOBAL_ZERO_SETTLE_MS 1500
#define STALE_PAUSE_MS        3000

static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static bool state_failed(int s) {
    return s == SHOAL__TASK_STATE__FAILED || s == SHOAL__TASK_STATE__REJECTED;
}

static bool state_ended(int s) {
    return s >= SHOAL__TASK_STATE__COMPLETE;
}

/* docker's numbered states: how far along the progress bar a task is (of 9; a job's of 10). */
static int state_step(int s) {
    switch (s) {
    case SHOAL__TASK_STATE__NEW:
        return 1;
    case SHOAL__TASK_STATE__PENDING:
        return 3;
    case SHOAL__TASK_STATE__ASSIGNED:
        return 4;
    case SHOAL__TASK_STATE__ACCEPTED:
        return 5;
    case SHOAL__TASK_STATE__PREPARING:
        return 6;
    case SHOAL__TASK_STATE__READY:
        return 7;
    case SHOAL__TASK_STATE__STARTING:
        return 8;
    case SHOAL__TASK_STATE__RUNNING:
        return 9;
    case SHOAL__TASK_STATE__COMPLETE:
        return 10;
    default:
        return 0;
    }
}

static int task_state(const Shoal__Task *t) {
    return t->status ? (int)t->status->state : SHOAL__TASK_STATE__NEW;
}

static int64_t task_created(const Shoal__Task *t) {
    return t->meta ? t->meta->created_at_ms : 0;
}

/* Why a task ended, in one phrase: its error, its message, or its exit code. */
static const char *task_reason(arena_t *a, const Shoal__Task *t) {
    const Shoal__TaskStatus *st = t->status;
    if (st && st->err && *st->err)
        return st->err;
    if (st && st->container && st->container->exit_code)
        return arena_printf(a, "exit code %d", st->container->exit_code);
    if (st && st->message && *st->message)
        return st->message;
    return task_state_name(task_state(t), true);
}

/* ---- jobs ------------------------------------------------------------------------------- */

/* A job's task is wanted until told to stop: the orchestrator may leave desired state RUNNING or
 * set COMPLETE (SwarmKit's choice); SHUTDOWN and later mean it was removed or replaced. */
static bool job_task_wanted(const Shoal__Task *t) {
    return t->desired_state <= SHOAL__TASK_STATE__COMPLETE;
}

void job_count(const Shoal__Service *svc, Shoal__Task *const *tasks, size_t ntasks,
               job_counts_t *ret) {
    memset(ret, 0, sizeof *ret);
    const Shoal__ServiceSpec *spec = svc ? svc->spec : NULL;
    if (!spec_is_job(spec) || !svc->meta)
        return;
    bool global = spec->mode_case == SHOAL__SERVICE_SPEC__MODE_GLOBAL_JOB;
    /* Global: the nodes seen, and whether each has completed. A job has few tasks per node. */
    const char **nodes = NULL;
    bool *node_done = NULL;
    size_t nnodes = 0;
    for (size_t i = 0; i < ntasks; i++) {
        const Shoal__Task *t = tasks[i];
        if (!t->meta || strcmp(t->service_id ? t->service_id : "", svc->meta->id) ||
            t->spec_version != svc->spec_version)
            continue;
        int state = task_state(t);
        if (state == SHOAL__TASK_STATE__COMPLETE)
            ret->completed++;
        else if (!job_task_wanted(t))
            continue;
        else if (task_counts_running(t))
            ret->running++;
        if (job_task_wanted(t) && !state_ended(state))
            ret->active++;
        if (!global)
            continue;
        const char *node = t->node_id ? t->node_id : "";
        size_t k = 0;
        while (k < nnodes && strcmp(nodes[k], node))
            k++;
        if (k == nnodes) {
            const char **grown = realloc(nodes, (nnodes + 1) * sizeof *grown);
            bool *grown_done = realloc(node_done, (nnodes + 1) * sizeof *grown_done);
            if (grown)
                nodes = grown;
            if (grown_done)
                node_done = grown_done;
            if (!grown || !grown_done)
                continue;
            nodes[nnodes] = node;
            node_done[nnodes++] = false;
        }
        if (state == SHOAL__TASK_STATE__COMPLETE)
            node_done[k] = true;
    }
    if (global) {
        /* docker: total = nodes still to complete + nodes completed */
        size_t done = 0;
        for (size_t k = 0; k < nnodes; k++)
            done += node_done[k];
        ret->completed = done;
        ret->total = nnodes;
        ret->desired = nnodes - done;
    } else if (spec->replicated_job) {
        /* The orchestrator's defaults: total 0 = max concurrent (or 1), max concurrent 0 = total.
         */
        uint64_t total = spec->replicated_job->total_completions;
        uint64_t conc = spec->replicated_job->max_concurrent;
        if (!total)
            total = conc ? conc : 1;
        uint64_t left = total > ret->completed ? total - ret->completed : 0;
        ret->total = total;
        ret->desired = conc && conc < left ? conc : left;
    }
    free(nodes);
    free(node_done);
}

/* ---- snapshots -------------------------------------------------------------------------- */

typedef struct slot_group {
    uint64_t slot;
    const char *node_id;
    const Shoal__Task **current; /* current tasks, newest first once built */
    size_t ncurrent;
    const Shoal__Task *newest_current;                /* current[0] */
    enum { OLD_NONE, OLD_STOPPING, OLD_WAITING } old; /* an older-spec task still active */
} slot_group_t;

typedef struct snapshot {
    const char *name;
    uint64_t desired;
    uint64_t running;     /* current, desired RUNNING, RUNNING */
    uint64_t not_running; /* current, desired RUNNING, not RUNNING */
    uint64_t old_active;  /* older spec, desired RUNNING, not ended */
    uint64_t stopping;    /* desired to stop, still active on an up node */
    slot_group_t *groups;
    size_t ngroups;
    bool global;
    bool job;
    job_counts_t jc;
    const char *failure; /* set when the service cannot converge */
    const char *pending; /* a reason a task waits for a node, for the timeout message */
    const Shoal__UpdateStatus *status;
    int64_t update_monitor_ms, rollback_monitor_ms;
    /* Which older spec_versions carry the same task spec as the current one (see task_current). */
    const uint8_t *spec_packed;
    size_t spec_len;
    struct {
        uint64_t version;
        bool equal;
    } versions[16];
    size_t nversions;
} snapshot_t;

static bool node_is_up(const Shoal__Orchestrator__NodeListResponse *nodes, const char *id) {
    if (!nodes || !id || !*id)
        return true;
    for (size_t i = 0; i < nodes->n_nodes; i++) {
        const Shoal__Node *n = nodes->nodes[i];
        if (n->meta && !strcmp(n->meta->id, id))
            return !n->status || n->status->state != SHOAL__NODE_STATUS__STATE__DOWN;
    }
    return false; /* removed node */
}

/* Whether the task runs the service's current spec, by the orchestrator's rule: the same
 * spec_version, or (not for jobs, whose iterations are versions) a task spec with the same
 * content — a rollback does not replace the tasks an update never reached, so they are current
 * again under the rolled-back spec's new version. */
static bool task_current(arena_t *a, snapshot_t *s, const Shoal__Service *svc,
                         const Shoal__Task *t) {
    if (t->spec_version == svc->spec_version)
        return true;
    if (s->job || !svc->spec || !svc->spec->task || !t->spec)
        return false;
    for (size_t i = 0; i < s->nversions; i++)
        if (s->versions[i].version == t->spec_version)
            return s->versions[i].equal;
    if (!s->spec_packed) {
        s->spec_len = protobuf_c_message_get_packed_size(&svc->spec->task->base);
        uint8_t *buf = arena_alloc(a, s->spec_len ? s->spec_len : 1);
        protobuf_c_message_pack(&svc->spec->task->base, buf);
        s->spec_packed = buf;
    }
    size_t len = protobuf_c_message_get_packed_size(&t->spec->base);
    bool equal = false;
    if (len == s->spec_len) {
        uint8_t *buf = arena_alloc(a, len ? len : 1);
        protobuf_c_message_pack(&t->spec->base, buf);
        equal = !memcmp(buf, s->spec_packed, len);
    }
    if (s->nversions < sizeof s->versions / sizeof s->versions[0])
        s->versions[s->nversions++] = (typeof(s->versions[0])){t->spec_version, equal};
    return equal;
}

static slot_group_t *group_of(arena_t *a, snapshot_t *s, const Shoal__Task *t) {
    for (size_t i = 0; i < s->ngroups; i++) {
        slot_group_t *g = &s->groups[i];
        if (s->global ? !strcmp(g->node_id, t->node_id ? t->node_id : "") : g->slot == t->slot)
            return g;
    }
    slot_group_t *grown = arena_alloc(a, (s->ngroups + 1) * sizeof *grown);
    if (s->ngroups)
        memcpy(grown, s->groups, s->ngroups * sizeof *grown);
    s->groups = grown;
    slot_group_t *g = &s->groups[s->ngroups++];
    g->slot = t->slot;
    g->node_id = t->node_id ? t->node_id : "";
    return g;
}

static int task_newest_first(const void *x, const void *y) {
    const Shoal__Task *a = *(const Shoal__Task *const *)x, *b = *(const Shoal__Task *const *)y;
    if (task_created(a) != task_created(b))
        return task_created(a) > task_created(b) ? -1 : 1;
    return 0;
}

static int group_cmp(const void *x, const void *y) {
    const slot_group_t *a = x, *b = y;
    if (a->slot != b->slot)
        return a->slot < b->slot ? -1 : 1;
    return strcmp(a->node_id, b->node_id);
}

static void snapshot_build(arena_t *a, snapshot_t *s,
                           const Shoal__Orchestrator__ServiceSummary *sum,
                           const Shoal__Orchestrator__TaskListResponse *tasks,
                           const Shoal__Orchestrator__NodeListResponse *nodes) {
    const Shoal__Service *svc = sum->service;
    const Shoal__ServiceSpec *spec = svc->spec;
    s->desired = sum->desired;
    s->status = svc->update_status;
    s->update_monitor_ms = spec && spec->update ? spec->update->monitor_ms : 0;
    s->rollback_monitor_ms = spec && spec->rollback ? spec->rollback->monitor_ms : 0;
    s->job = spec_is_job(spec);
    s->global = spec && (spec->mode_case == SHOAL__SERVICE_SPEC__MODE_GLOBAL ||
                         spec->mode_case == SHOAL__SERVICE_SPEC__MODE_GLOBAL_JOB);
    if (s->job)
        job_count(svc, tasks->tasks, tasks->n_tasks, &s->jc);
    if (s->global && !s->job && nodes &&
        !(spec->task && spec->task->placement && spec->task->placement->n_constraints)) {
        /* The orchestrator counts the global tasks it has created so far; before its first pass
         * that is 0. Without constraints every ready, active node is wanted. */
        uint64_t eligible = 0;
        for (size_t i = 0; i < nodes->n_nodes; i++) {
            const Shoal__Node *n = nodes->nodes[i];
            if (n->status && n->status->state == SHOAL__NODE_STATUS__STATE__READY &&
                (!n->spec || n->spec->availability == SHOAL__NODE_SPEC__AVAILABILITY__ACTIVE))
                eligible++;
        }
        if (eligible > s->desired)
            s->desired = eligible;
    }
    for (size_t i = 0; i < tasks->n_tasks; i++) {
        const Shoal__Task *t = tasks->tasks[i];
        if (!t->meta || strcmp(t->service_id, svc->meta->id) != 0)
            continue;
        int state = task_state(t);
        bool want_running =
            s->job ? job_task_wanted(t) : t->desired_state <= SHOAL__TASK_STATE__RUNNING;
        bool current = task_current(a, s, svc, t);
        if (!want_running) {
            if (state >= SHOAL__TASK_STATE__ASSIGNED && !state_ended(state) &&
                node_is_up(nodes, t->node_id))
                s->stopping++;
        } else if (!current) {
            if (!state_ended(state))
                s->old_active++;
        } else if (task_counts_running(t)) {
            s->running++;
        } else if (!state_ended(state)) {
            s->not_running++; /* includes RUNNING while the health check has not passed */
        }
        slot_group_t *g = group_of(a, s, t);
        if (!current) {
            if (!state_ended(state))
                g->old = want_running ? OLD_WAITING : (g->old ? g->old : OLD_STOPPING);
            continue;
        }
        ARENA_PUSH(a, &g->current, &g->ncurrent, t);
    }
    if (s->ngroups)
        qsort(s->groups, s->ngroups, sizeof *s->groups, group_cmp);

    int condition = spec && spec->task && spec->task->restart
                        ? (int)spec->task->restart->condition
                        : SHOAL__RESTART_POLICY__CONDITION__ANY;
    for (size_t i = 0; i < s->ngroups; i++) {
        slot_group_t *g = &s->groups[i];
        if (!g->ncurrent)
            continue;
        qsort(g->current, g->ncurrent, sizeof *g->current, task_newest_first);
        g->newest_current = g->current[0];
        const Shoal__Task *t = g->newest_current;
        int state = task_state(t);
        if (state == SHOAL__TASK_STATE__PENDING && t->status && t->status->err && *t->status->err &&
            !s->pending)
            s->pending =
                arena_printf(a, "task %s pending: %s", task_display_name(a, t), t->status->err);
        /* Slots a scale-down left behind, and nodes a global service left, ended on purpose. */
        if (s->failure || (!s->global && !s->job && g->slot > s->desired) ||
            (s->global && !s->job && t->desired_state > SHOAL__TASK_STATE__RUNNING))
            continue;
        if (state == SHOAL__TASK_STATE__RUNNING || (s->job && state == SHOAL__TASK_STATE__COMPLETE))
            continue;
        /* Twice in a row: the two newest ended tasks of the slot failed (a replacement may
         * already be on its way: the restart policy would only repeat the failure). */
        size_t k = state_ended(state) ? 0 : 1;
        if (k + 1 < g->ncurrent && state_failed(task_state(g->current[k])) &&
            state_failed(task_state(g->current[k + 1]))) {
            const Shoal__Task *f = g->current[k];
            s->failure = arena_printf(a, "task %s %s: %s", task_display_name(a, f),
                                      task_state_name(task_state(f), true), task_reason(a, f));
            continue;
        }
        /* Ended, and the restart policy will not replace it. */
        bool final = state_ended(state) && state != SHOAL__TASK_STATE__SHUTDOWN &&
                     (condition == SHOAL__RESTART_POLICY__CONDITION__NONE ||
                      (condition == SHOAL__RESTART_POLICY__CONDITION__ON_FAILURE &&
                       state == SHOAL__TASK_STATE__COMPLETE));
        if (final)
            s->failure = arena_printf(a, "task %s %s: %s", task_display_name(a, t),
                                      task_state_name(state, true), task_reason(a, t));
    }
}

static bool snapshot_converged(const snapshot_t *s) {
    if (s->job)
        return s->jc.completed >= s->jc.total && s->jc.active == 0;
    return s->running == s->desired && s->not_running == 0 && s->old_active == 0 &&
           s->stopping == 0;
}

/* ---- display ---------------------------------------------------------------------------- */

/* The text after "1/3: " for one group. */
static const char *group_line(arena_t *a, const slot_group_t *g, bool bar, bool job) {
    const Shoal__Task *t = g->newest_current;
    if (!t)
        return g->old == OLD_WAITING    ? "waiting for update"
               : g->old == OLD_STOPPING ? "updating: stopping the old task"
                                        : "new";
    int state = task_state(t);
    const char *name = task_state_name(state, true);
    if (state == SHOAL__TASK_STATE__PENDING && t->status && t->status->err && *t->status->err)
        return arena_printf(a, "pending: %s", t->status->err);
    bool done = job && state == SHOAL__TASK_STATE__COMPLETE;
    if (state_ended(state) && !done)
        return arena_printf(a, "%s: %s", name, task_reason(a, t));
    /* RUNNING but not healthy yet: not there, one step short of the end. */
    bool health_pending = state == SHOAL__TASK_STATE__RUNNING && !task_counts_running(t);
    if (!bar)
        return health_pending ? "running (health: starting)" : name;
    int steps = job ? 10 : 9;
    int fill = BAR_WIDTH * (state_step(state) - health_pending) / steps;
    char barbuf[BAR_WIDTH + 4];
    memset(barbuf, '=', (size_t)fill);
    barbuf[fill] = '>';
    memset(barbuf + fill + 1, ' ', (size_t)(BAR_WIDTH - fill));
    barbuf[BAR_WIDTH + 1] = '\0';
    return arena_printf(a, "%-9s [%s]%s", name, barbuf,
                        health_pending ? " (health: starting)" : "");
}

typedef struct display {
    bool tty;
    bool quiet;
    int drawn;   /* lines drawn by the last tty frame */
    char **last; /* plain mode: last text per line, to print changes only */
    size_t nlast;
    arena_t *arena;       /* for `last` and `rollback`, lives as long as the wait */
    const char *rollback; /* "rollback: <reason>", shown from the moment a rollback is seen */
    bool rolling_back;
    const char *verify; /* "verify: ..." while the orchestrator verifies an update */
} display_t;

static int terminal_width(void) {
    struct winsize ws;
    if (ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 10)
        return ws.ws_col;
    return 80;
}

/* Builds the lines of one frame: "overall progress: ..." (a job: "job progress", "active
 * tasks") then one per slot/node, then the rollback and verify lines. */
static size_t frame_lines(arena_t *a, const display_t *d, const snapshot_t *s, const char ***ret) {
    const char **lines = NULL;
    size_t n = 0;
    bool tty = d->tty;
    uint64_t shown = s->job ? s->jc.total : s->desired;
    if (s->job) {
        ARENA_PUSH(a, &lines, &n,
                   arena_printf(a, "job progress: %llu out of %llu complete",
                                (unsigned long long)s->jc.completed,
                                (unsigned long long)s->jc.total));
        ARENA_PUSH(a, &lines, &n,
                   arena_printf(a, "active tasks: %llu out of %llu tasks",
                                (unsigned long long)s->jc.active,
                                (unsigned long long)s->jc.desired));
    } else {
        ARENA_PUSH(a, &lines, &n,
                   arena_printf(a, "overall progress: %s%llu out of %llu tasks",
                                d->rolling_back ? "rolling back update: " : "",
                                (unsigned long long)s->running, (unsigned long long)s->desired));
    }
    if (!(tty && shown > MAX_TTY_SLOT_LINES)) {
        if (s->global) {
            for (size_t i = 0; i < s->ngroups; i++) {
                const slot_group_t *g = &s->groups[i];
                if (!g->newest_current && !g->old)
                    continue;
                if (!s->job && g->newest_current &&
                    g->newest_current->desired_state > SHOAL__TASK_STATE__RUNNING)
                    continue;
                ARENA_PUSH(a, &lines, &n,
                           arena_printf(a, "%.12s: %s", g->node_id, group_line(a, g, tty, s->job)));
            }
        } else if (s->job) {
            /* One line per slot the job has used, numbered like docker's "1/4". */
            size_t k = 0;
            for (size_t i = 0; i < s->ngroups; i++) {
                const slot_group_t *g = &s->groups[i];
                if (!g->newest_current)
                    continue;
                ARENA_PUSH(a, &lines, &n,
                           arena_printf(a, "%zu/%llu: %s", ++k, (unsigned long long)s->jc.total,
                                        group_line(a, g, tty, true)));
            }
        } else {
            for (uint64_t slot = 1; slot <= s->desired; slot++) {
                slot_group_t empty = {.slot = slot, .node_id = ""};
                const slot_group_t *g = &empty;
                for (size_t i = 0; i < s->ngroups; i++)
                    if (s->groups[i].slot == slot)
                        g = &s->groups[i];
                ARENA_PUSH(a, &lines, &n,
                           arena_printf(a, "%llu/%llu: %s", (unsigned long long)slot,
                                        (unsigned long long)s->desired,
                                        group_line(a, g, tty, false)));
            }
        }
    }
    if (d->rollback)
        ARENA_PUSH(a, &lines, &n, d->rollback);
    if (d->verify)
        ARENA_PUSH(a, &lines, &n, d->verify);
    *ret = lines;
    return n;
}

static void display_frame(display_t *d, arena_t *a, const snapshot_t *s) {
    if (d->quiet)
        return;
    const char **lines;
    size_t n = frame_lines(a, d, s, &lines);
    if (d->tty) {
        int width = terminal_width() - 1;
        if (d->drawn)
            fprintf(stderr, "\033[%dA", d->drawn);
        for (size_t i = 0; i < n; i++)
            fprintf(stderr, "\033[2K%.*s\n", width, lines[i]);
        /* Lines left from a taller previous frame are cleared. */
        for (int i = (int)n; i < d->drawn; i++)
            fprintf(stderr, "\033[2K\n");
        if ((int)n < d->drawn)
            fprintf(stderr, "\033[%dA", d->drawn - (int)n);
        d->drawn = (int)n;
    } else {
        /* Plain: print a line only when its text changed since it was last printed. */
        for (size_t i = 0; i < n; i++) {
            const char *key_end = strchr(lines[i], ':');
            size_t klen = key_end ? (size_t)(key_end - lines[i]) : strlen(lines[i]);
            bool found = false, same = false;
            for (size_t j = 0; j < d->nlast; j++) {
                if (strncmp(d->last[j], lines[i], klen) || d->last[j][klen] != ':')
                    continue;
                found = true;
                same = !strcmp(d->last[j], lines[i]);
                if (!same)
                    d->last[j] = arena_strdup(d->arena, lines[i]);
                break;
            }
            if (!found)
                ARENA_PUSH(d->arena, &d->last, &d->nlast, arena_strdup(d->arena, lines[i]));
            if (!same)
                fprintf(stderr, "%s\n", lines[i]);
        }
    }
    fflush(stderr);
}

/* One poll. 0 with *ret filled, 1 when the service is gone, -1 when the orchestrator did not
 * answer (transient: keep waiting), -2 after printing a final error. */
static int poll_once(cli_t *cli, arena_t *a, const char *service_id, const char *name,
                     snapshot_t *ret) {
    Shoal__Orchestrator__ServiceListRequest sreq = SHOAL__ORCHESTRATOR__SERVICE_LIST_REQUEST__INIT;
    Shoal__Orchestrator__ServiceListResponse *slist;
    const char *message = NULL;
    int r =
        cli_call(cli, a, "orchestrator.ServiceList", &sreq.base,
                 &shoal__orchestrator__service_list_response__descriptor, 3000, &slist, &message);
    if (r < 0 && r != -EPROTO)
        return -1;
    if (r != 0) {
        cli_fail(cli, "service \"%s\": %s", name, message);
        return -2;
    }
    const Shoal__Orchestrator__ServiceSummary *sum = NULL;
    for (size_t i = 0; i < slist->n_services; i++) {
        const Shoal__Service *s = slist->services[i]->service;
        if (s && s->meta && !strcmp(s->meta->id, service_id))
            sum = slist->services[i];
    }
    if (!sum)
        return 1;

    Shoal__Orchestrator__TaskListRequest treq = SHOAL__ORCHESTRATOR__TASK_LIST_REQUEST__INIT;
    treq.service = (char *)service_id;
    Shoal__Orchestrator__TaskListResponse *tasks;
    r = cli_call(cli, a, "orchestrator.TaskList", &treq.base,
                 &shoal__orchestrator__task_list_response__descriptor, 3000, &tasks, &message);
    if (r == BUS_NOT_FOUND)
        return 1;
    if (r < 0 && r != -EPROTO)
        return -1;
    if (r != 0) {
        cli_fail(cli, "service \"%s\": %s", name, message);
        return -2;
    }
    Shoal__Orchestrator__NodeListRequest nreq = SHOAL__ORCHESTRATOR__NODE_LIST_REQUEST__INIT;
    Shoal__Orchestrator__NodeListResponse *nodes = NULL;
    if (cli_call(cli, a, "orchestrator.NodeList", &nreq.base,
                 &shoal__orchestrator__node_list_response__descriptor, 3000, &nodes, NULL) != 0)
        nodes = NULL;
    memset(ret, 0, sizeof *ret);
    ret->name = name;
    snapshot_build(a, ret, sum, tasks, nodes);
    return 0;
}

/* ---- the wait --------------------------------------------------------------------------- */

typedef struct update_watch {
    bool in_progress;   /* UPDATING or ROLLBACK_STARTED: the orchestrator is not done */
    const char *paused; /* "update paused: <reason>" */
} update_watch_t;

/* Reads the update status of this poll into *w and the display's rollback line. */
static void update_watch(const wait_opts_t *o, display_t *d, const snapshot_t *snap,
                         int64_t waited_ms, update_watch_t *w) {
    memset(w, 0, sizeof *w);
    const Shoal__UpdateStatus *st = snap->status;
    if (!o || !o->track_update || !st)
        return;
    bool fresh = (int)st->state != o->status_state || st->started_at_ms != o->status_started_ms;
    const char *msg = st->message && *st->message ? st->message : "no reason given";
    switch (st->state) {
    case SHOAL__UPDATE_STATUS__STATE__UPDATING:
        w->in_progress = true;
        break;
    case SHOAL__UPDATE_STATUS__STATE__ROLLBACK_STARTED:
        w->in_progress = true;
        if (fresh || o->manual_rollback)
            d->rolling_back = true;
        break;
    case SHOAL__UPDATE_STATUS__STATE__ROLLBACK_COMPLETED:
        if (fresh)
            d->rolling_back = true;
        break;
    case SHOAL__UPDATE_STATUS__STATE__PAUSED:
    case SHOAL__UPDATE_STATUS__STATE__ROLLBACK_PAUSED:
        if (fresh || waited_ms >= STALE_PAUSE_MS)
            w->paused = arena_printf(
                d->arena, "%s paused: %s",
                st->state == SHOAL__UPDATE_STATUS__STATE__PAUSED ? "update" : "rollback", msg);
        break;
    default:
        break;
    }
    if (d->rolling_back && !d->rollback)
        d->rollback = arena_printf(d->arena, "rollback: %s", msg);
}

int service_wait_converged(cli_t *cli, const char *service_id, const char *name,
                           const wait_opts_t *opts) {
    int64_t timeout = opts && opts->timeout_ms > 0 ? opts->timeout_ms : DEFAULT_TIMEOUT_MS;
    int64_t start = clock_mono_ms(), deadline = start + timeout;
    display_t d = {.tty = cli->stderr_tty, .quiet = opts && opts->quiet, .arena = cli_arena_new()};
    arena_t *poll_arena = cli_arena_new();
    snapshot_t snap = {0};
    update_watch_t w = {0};
    bool have_snap = false, unreachable = false;
    int64_t zero_since = 0, converged_since = 0;
    int code = 1;
    for (;;) {
        arena_reset(poll_arena);
        int r = poll_once(cli, poll_arena, service_id, name, &snap);
        if (r == -2)
            break;
        if (r == 1) {
            cli_fail(cli, "service \"%s\" was removed while waiting for it", name);
            break;
        }
        unreachable = r == -1;
        if (r == 0) {
            have_snap = true;
            int64_t now = clock_mono_ms();
            update_watch(opts, &d, &snap, now - start, &w);
            /* A global service with constraints may want no task at all, or the orchestrator
             * may not have made its first pass yet: believe "nothing wanted" only once it has
             * held for a while. */
            uint64_t wanted = snap.job ? snap.jc.total : snap.desired;
            if (wanted == 0 && snap.global && !zero_since)
                zero_since = now;
            else if (wanted > 0)
                zero_since = 0;
            bool settled =
                !(snap.global && wanted == 0) || now - zero_since >= GLOBAL_ZERO_SETTLE_MS;
            bool converged = settled && snapshot_converged(&snap);
            if (converged && !converged_since)
                converged_since = now;
            else if (!converged)
                converged_since = 0;
            d.verify = NULL;
            if (converged && w.in_progress) {
                /* The tasks run; the orchestrator still watches them (monitor period). */
                int64_t monitor =
                    d.rolling_back ? snap.rollback_monitor_ms : snap.update_monitor_ms;
                int64_t left = monitor - (now - converged_since);
                d.verify = left > 0 ? arena_printf(poll_arena,
                                                   "verify: Waiting %lld seconds to verify that "
                                                   "tasks are stable...",
                                                   (long long)((left + 999) / 1000))
                                    : "verify: Waiting for the orchestrator to complete the update";
            }
            display_frame(&d, poll_arena, &snap);
            if (w.paused) {
                cli_fail(cli, "service \"%s\": %s", name, w.paused);
                break;
            }
            /* During an update the orchestrator judges task failures (pause, rollback). */
            if (snap.failure && !w.in_progress) {
                cli_fail(cli, "service \"%s\": %s", name, snap.failure);
                break;
            }
            if (converged && !w.in_progress) {
                if (!d.quiet) {
                    fprintf(stderr, "%s\n",
                            snap.job ? "job complete" : "verify: Service converged");
                    fflush(stderr);
                }
                if (d.rolling_back && !(opts && opts->manual_rollback)) {
                    /* The orchestrator's reason reads "update rolled back due to ..." */
                    const char *why = d.rollback ? d.rollback + strlen("rollback: ") : "";
                    cli_fail(cli, "service \"%s\": %s%s", name,
                             strncmp(why, "update rolled back", 18) ? "update rolled back: " : "",
                             why);
                    break;
                }
                code = 0;
                break;
            }
        }
        if (clock_mono_ms() >= deadline) {
            if (unreachable && !have_snap)
                cli_fail_unreachable(cli, "orchestrator", cli->orchestrator_endpoint);
            else if (unreachable)
                cli_fail(cli,
                         "service \"%s\": not converged after %lld s: the orchestrator "
                         "stopped answering at %s",
                         name, (long long)(timeout / 1000), cli->orchestrator_endpoint);
            else if (snap.job)
                cli_fail(cli,
                         "service \"%s\": not complete after %lld s: %llu out of %llu "
                         "completions%s%s%s",
                         name, (long long)(timeout / 1000), (unsigned long long)snap.jc.completed,
                         (unsigned long long)snap.jc.total, snap.pending ? " (" : "",
                         snap.pending ? snap.pending : "", snap.pending ? ")" : "");
            else if (converged_since && w.in_progress)
                cli_fail(cli,
                         "service \"%s\": tasks run but the orchestrator has not completed the "
                         "update after %lld s (%s)",
                         name, (long long)(timeout / 1000),
                         snap.status && snap.status->message ? snap.status->message : "updating");
            else
                cli_fail(cli,
                         "service \"%s\": not converged after %lld s: %llu out of %llu "
                         "tasks running%s%s%s",
                         name, (long long)(timeout / 1000), (unsigned long long)snap.running,
                         (unsigned long long)snap.desired, snap.pending ? " (" : "",
                         snap.pending ? snap.pending : "", snap.pending ? ")" : "");
            break;
        }
        sleep_ms(POLL_MS);
    }
    arena_destroy(&poll_arena);
    arena_destroy(&d.arena);
    return code;
}

int service_wait_removed(cli_t *cli, const char *service_id, const char *name, int64_t timeout_ms) {
    int64_t deadline = clock_mono_ms() + (timeout_ms > 0 ? timeout_ms : 60000);
    arena_t *a = cli_arena_new();
    size_t left = 0;
    int code = 1;
    for (;;) {
        arena_reset(a);
        /* All tasks, filtered here: the service object itself may already be gone. */
        Shoal__Orchestrator__TaskListRequest req = SHOAL__ORCHESTRATOR__TASK_LIST_REQUEST__INIT;
        Shoal__Orchestrator__TaskListResponse *resp;
        const char *message = NULL;
        int r =
            cli_call(cli, a, "orchestrator.TaskList", &req.base,
                     &shoal__orchestrator__task_list_response__descriptor, 3000, &resp, &message);
        if (r > 0) {
            cli_fail(cli, "service \"%s\": %s", name, message);
            break;
        }
        if (r == 0) {
            left = 0;
            for (size_t i = 0; i < resp->n_tasks; i++)
                if (!strcmp(resp->tasks[i]->service_id, service_id))
                    left++;
            if (left == 0) {
                code = 0;
                break;
            }
        }
        if (clock_mono_ms() >= deadline) {
            if (r < 0)
                cli_fail_unreachable(cli, "orchestrator", cli->orchestrator_endpoint);
            else
                cli_fail(cli, "service \"%s\": %zu task%s still present after %lld s", name, left,
                         left == 1 ? "" : "s",
                         (long long)((timeout_ms > 0 ? timeout_ms : 60000) / 1000));
            break;
        }
        sleep_ms(POLL_MS);
    }
    arena_destroy(&a);
    return code;
}
