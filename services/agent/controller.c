/* controller — drives one task's container toward its desired state, one step per call
 * (SwarmKit's agent/exec Do(), reading design/task_model.md).
 *
 *   ASSIGNED → ACCEPTED → PREPARING ─prepare+create→ READY → STARTING ─start→ RUNNING
 *   RUNNING ─die→ COMPLETE (exit 0) | FAILED (exit N: "task: non-zero exit (N)")
 *   RUNNING ─unhealthy→ FAILED ("task: container unhealthy"), then stop the container (reap)
 *   PREPARING ─error→ REJECTED (the runtime's message);  STARTING ─error→ FAILED
 *   desired > RUNNING: stop the container if there is one → SHUTDOWN
 *
 * Invariants:
 * - The state only moves forward (ctl_set_state refuses the rest); a terminal state is final.
 * - At most one executor call per task is in flight (`busy`); events that arrive meanwhile are
 *   recorded (`exited`, `need_inspect`) and acted on by the next step.
 * - Transient runtime errors (daemon down, timeouts) are retried with back-off and never turn
 *   into REJECTED/FAILED; a final error does, with the runtime's text as message and err.
 * - Desired SHUTDOWN wins over everything not terminal, including an exit seen meanwhile.
 * - Health (SwarmKit's health_status handling, without its polling): the runtime's verdicts come
 *   as events; an inspect (after start, at adoption) fills in what events may have missed but
 *   never overrides an event. A task with a health check reports healthy=false until the first
 *   "healthy"; "unhealthy" fails it at once, so that the orchestrator replaces it without waiting
 *   for a stop grace period, and only then is the container stopped. A terminal task's only
 *   executor call is that stop (`reap`); its state never changes again.
 * The worker (worker.c) calls these from the main loop; ctl_run() runs on a pool thread. */
#include "controller.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "log.h"

#define RETRY_MIN_MS 250
#define RETRY_MAX_MS 10000

static Shoal__Task *task_copy(const Shoal__Task *task) {
    size_t len = protobuf_c_message_get_packed_size(&task->base);
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf)
        return NULL;
    protobuf_c_message_pack(&task->base, buf);
    Shoal__Task *copy = shoal__task__unpack(NULL, len, buf);
    free(buf);
    return copy;
}

const char *task_state_name(int state) {
    const ProtobufCEnumValue *v =
        protobuf_c_enum_descriptor_get_value(&shoal__task_state__descriptor, state);
    return v ? v->name : "UNKNOWN";
}

const char *agent_op_name(agent_op_t op) {
    switch (op) {
    case AGENT_OP_NONE:
        return "none";
    case AGENT_OP_PREPARE:
        return "prepare";
    case AGENT_OP_START:
        return "start";
    case AGENT_OP_STOP:
        return "stop";
    case AGENT_OP_INSPECT:
        return "inspect";
    case AGENT_OP_REMOVE:
        return "remove";
    case AGENT_OP_DESCRIBE:
        return "describe";
    case AGENT_OP_LIST:
        return "list";
    }
    return "unknown";
}

bool ctl_error_is_transient(int rc) {
    return rc == -ECONNREFUSED || rc == -ETIMEDOUT || rc == -EAGAIN || rc == -ECANCELED ||
           rc == -ENOMEM || rc == -EPROTO || rc == -EINTR;
}

static void copy_str(char *dst, size_t cap, const char *src) {
    snprintf(dst, cap, "%s", src ? src : "");
}

static bool is_terminal(Shoal__TaskState s) {
    return s >= SHOAL__TASK_STATE__COMPLETE;
}

bool ctl_spec_has_healthcheck(const Shoal__Task *task) {
    const Shoal__HealthConfig *h =
        task && task->spec && task->spec->container ? task->spec->container->healthcheck : NULL;
    if (!h || !h->n_test || !h->test[0])
        return false;
    return strcmp(h->test[0], "NONE") != 0;
}

bool ctl_task_healthy(const agent_task_t *t) {
    if (t->state != SHOAL__TASK_STATE__RUNNING)
        return false;
    return !t->has_healthcheck || t->health == CTL_HEALTH_HEALTHY;
}

/* A verdict from the runtime (event or inspect); a change a RUNNING task reports. */
static void set_health(agent_task_t *t, int health) {
    bool was = ctl_task_healthy(t);
    t->health = health;
    if (ctl_task_healthy(t) != was)
        t->status_seq++;
}

static int health_from_text(const char *s) {
    if (!strcmp(s, "healthy"))
        return CTL_HEALTH_HEALTHY;
    if (!strcmp(s, "unhealthy"))
        return CTL_HEALTH_UNHEALTHY;
    return CTL_HEALTH_UNKNOWN;
}

agent_task_t *agent_task_new(const Shoal__Task *task) {
    if (!task || !task->meta || !task->meta->id || !*task->meta->id ||
        strlen(task->meta->id) >= EXECUTOR_TASK_ID_MAX)
        return NULL;
    agent_task_t *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    t->task = task_copy(task);
    if (!t->task) {
        free(t);
        return NULL;
    }
    copy_str(t->id, sizeof t->id, task->meta->id);
    t->exit_code = -1;
    t->exited_code = -1;
    t->state = SHOAL__TASK_STATE__ASSIGNED;
    t->desired = task->desired_state;
    t->has_healthcheck = ctl_spec_has_healthcheck(task);
    const Shoal__TaskStatus *st = task->status;
    if (st && st->state > t->state) {
        t->state = st->state;
        if (st->healthy && st->state == SHOAL__TASK_STATE__RUNNING)
            t->health = CTL_HEALTH_HEALTHY; /* until an inspect or event says otherwise */
        copy_str(t->message, sizeof t->message, st->message);
        copy_str(t->err, sizeof t->err, st->err);
        t->timestamp_ms = st->timestamp_ms;
        if (st->container) {
            copy_str(t->container_id, sizeof t->container_id, st->container->container_id);
            t->pid = st->container->pid;
            t->exit_code = st->container->exit_code;
        }
    }
    for (size_t i = 0; i < task->n_networks; i++) {
        const Shoal__NetworkAttachment *n = task->networks[i];
        if (n->network && strcmp(n->network, EXECUTOR_NETWORK) == 0 && n->n_addresses)
            copy_str(t->ip, sizeof t->ip, n->addresses[0]);
    }
    return t;
}

void agent_task_destroy(agent_task_t **self_p) {
    if (!self_p || !*self_p)
        return;
    agent_task_t *t = *self_p;
    if (t->task)
        shoal__task__free_unpacked(t->task, NULL);
    free(t);
    *self_p = NULL;
}

int agent_task_update(agent_task_t *t, const Shoal__Task *task) {
    Shoal__Task *copy = task_copy(task);
    if (!copy)
        return -ENOMEM;
    shoal__task__free_unpacked(t->task, NULL);
    t->task = copy;
    if (task->desired_state > t->desired)
        t->desired = task->desired_state;
    if (ctl_spec_has_healthcheck(task))
        t->has_healthcheck = true;
    const Shoal__TaskStatus *st = task->status;
    if (st && st->state > t->state && !t->busy) {
        /* The dispatcher knows more than we do (we restarted): take its word, silently. */
        t->state = st->state;
        if (st->healthy && st->state == SHOAL__TASK_STATE__RUNNING &&
            t->health == CTL_HEALTH_UNKNOWN)
            t->health = CTL_HEALTH_HEALTHY;
        copy_str(t->message, sizeof t->message, st->message);
        copy_str(t->err, sizeof t->err, st->err);
        t->timestamp_ms = st->timestamp_ms;
        if (st->container && st->container->container_id && *st->container->container_id &&
            !t->container_id[0])
            copy_str(t->container_id, sizeof t->container_id, st->container->container_id);
        if (st->container)
            t->exit_code = st->container->exit_code;
    }
    return 0;
}

bool agent_task_dirty(const agent_task_t *t) {
    return t->status_seq > t->acked_seq;
}

bool agent_task_terminal(const agent_task_t *t) {
    return is_terminal(t->state);
}

int ctl_set_state(agent_task_t *t, Shoal__TaskState state, const char *message, const char *err) {
    if (state <= t->state) {
        log_debug("refusing backwards task state move task=%s from=%s to=%s", t->id,
                  task_state_name(t->state), task_state_name(state));
        return -EINVAL;
    }
    log_info("task state task=%s from=%s to=%s%s%s", t->id, task_state_name(t->state),
             task_state_name(state), err && *err ? " err=" : "", err && *err ? err : "");
    t->state = state;
    copy_str(t->message, sizeof t->message, message);
    copy_str(t->err, sizeof t->err, err);
    t->timestamp_ms = clock_wall_ms();
    t->status_seq++;
    return 0;
}

static void retry_later(agent_task_t *t, int64_t now_ms, int rc, const char *err, agent_op_t op) {
    int64_t delay = (int64_t)RETRY_MIN_MS << (t->retries < 6 ? t->retries : 6);
    if (delay > RETRY_MAX_MS)
        delay = RETRY_MAX_MS;
    t->retries++;
    t->retry_at_ms = now_ms + delay;
    log_warn("task step failed, retrying task=%s op=%s rc=%d err=\"%s\" retry_ms=%lld", t->id,
             agent_op_name(op), rc, err ? err : "", (long long)delay);
}

/* The container ended with `code` while the task wanted to run. */
static void finish_exit(agent_task_t *t, int code) {
    t->exit_code = code;
    if (code == 0) {
        ctl_set_state(t, SHOAL__TASK_STATE__COMPLETE, "finished", NULL);
        return;
    }
    char msg[96], err[160];
    snprintf(msg, sizeof msg, "task: non-zero exit (%d)", code);
    if (t->oom)
        snprintf(err, sizeof err, "%s: the container ran out of memory (OOM-killed)", msg);
    else
        snprintf(err, sizeof err, "%s", msg);
    ctl_set_state(t, SHOAL__TASK_STATE__FAILED, msg, err);
}

ctl_step_t ctl_step(agent_task_t *t, int64_t now_ms, agent_op_t *ret_op) {
    *ret_op = AGENT_OP_NONE;
    if (t->busy)
        return CTL_IDLE;
    if (t->retry_at_ms && now_ms < t->retry_at_ms)
        return CTL_IDLE;
    if (is_terminal(t->state)) {
        if (t->reap && t->container_id[0]) {
            *ret_op = AGENT_OP_STOP;
            return CTL_RUN;
        }
        t->reap = false;
        return CTL_IDLE;
    }
    if (t->need_inspect && t->container_id[0]) {
        *ret_op = AGENT_OP_INSPECT;
        return CTL_RUN;
    }
    t->need_inspect = false;
    if (t->desired > SHOAL__TASK_STATE__RUNNING) {
        if (t->container_id[0]) {
            *ret_op = AGENT_OP_STOP;
            return CTL_RUN;
        }
        ctl_set_state(t, SHOAL__TASK_STATE__SHUTDOWN, "shutdown", NULL);
        return CTL_CHANGED;
    }
    switch (t->state) {
    case SHOAL__TASK_STATE__ACCEPTED:
        ctl_set_state(t, SHOAL__TASK_STATE__PREPARING, "preparing", NULL);
        return CTL_CHANGED;
    case SHOAL__TASK_STATE__PREPARING:
        *ret_op = AGENT_OP_PREPARE;
        return CTL_RUN;
    case SHOAL__TASK_STATE__READY:
        if (t->desired < SHOAL__TASK_STATE__RUNNING)
            return CTL_IDLE; /* held at READY (start-first updates) */
        ctl_set_state(t, SHOAL__TASK_STATE__STARTING, "starting", NULL);
        return CTL_CHANGED;
    case SHOAL__TASK_STATE__STARTING:
        *ret_op = AGENT_OP_START;
        return CTL_RUN;
    case SHOAL__TASK_STATE__RUNNING:
        if (t->exited) {
            finish_exit(t, t->exited_code);
            return CTL_CHANGED;
        }
        if (t->health == CTL_HEALTH_UNHEALTHY) {
            ctl_set_state(t, SHOAL__TASK_STATE__FAILED, CTL_UNHEALTHY_MESSAGE,
                          CTL_UNHEALTHY_MESSAGE);
            t->reap = true; /* it still runs: stop it next */
            return CTL_CHANGED;
        }
        return CTL_IDLE;
    default:
        if (t->state < SHOAL__TASK_STATE__ACCEPTED) {
            ctl_set_state(t, SHOAL__TASK_STATE__ACCEPTED, "accepted", NULL);
            return CTL_CHANGED;
        }
        return CTL_IDLE;
    }
}

void ctl_run(executor_t *ex, agent_op_t op, const Shoal__Task *task, const char *container_id,
             int grace_s, ctl_result_t *res) {
    memset(res, 0, sizeof *res);
    res->info.exit_code = -1;
    char *err = res->err;
    size_t errlen = sizeof res->err;
    switch (op) {
    case AGENT_OP_PREPARE:
        res->rc = ex->ops->prepare(ex, task, err, errlen);
        if (res->rc == 0)
            res->rc =
                ex->ops->create(ex, task, res->container_id, sizeof res->container_id, err, errlen);
        break;
    case AGENT_OP_START:
    case AGENT_OP_STOP:
        res->rc = op == AGENT_OP_START ? ex->ops->start(ex, container_id, err, errlen)
                                       : ex->ops->stop(ex, container_id, grace_s, err, errlen);
        if (res->rc == 0) {
            char ierr[128];
            res->have_info = ex->ops->inspect(ex, container_id, &res->info, ierr, sizeof ierr) == 0;
        }
        break;
    case AGENT_OP_INSPECT:
        res->rc = ex->ops->inspect(ex, container_id, &res->info, err, errlen);
        res->have_info = res->rc == 0;
        break;
    case AGENT_OP_REMOVE:
        res->rc = ex->ops->remove(ex, container_id, err, errlen);
        break;
    default:
        res->rc = -EINVAL;
        snprintf(err, errlen, "operation %s is not a task step", agent_op_name(op));
    }
}

static void take_info(agent_task_t *t, const executor_container_t *info) {
    if (info->pid > 0)
        t->pid = info->pid;
    if (info->ip[0] && strcmp(info->ip, t->ip) != 0) {
        copy_str(t->ip, sizeof t->ip, info->ip);
        if (t->state == SHOAL__TASK_STATE__RUNNING)
            t->status_seq++; /* report the address */
    }
    if (info->oom_killed)
        t->oom = true;
    if (info->health[0]) {
        t->has_healthcheck = true; /* the image's own HEALTHCHECK counts too */
        int h = health_from_text(info->health);
        if (!t->health_from_event && h != CTL_HEALTH_UNKNOWN)
            set_health(t, h);
    }
}

/* The container is exited or dead: what that means for the task. */
static void apply_exited(agent_task_t *t, int code) {
    if (t->desired > SHOAL__TASK_STATE__RUNNING) {
        t->exit_code = code;
        ctl_set_state(t, SHOAL__TASK_STATE__SHUTDOWN, "shutdown", NULL);
    } else {
        finish_exit(t, code);
    }
}

static void apply_inspect(agent_task_t *t, const ctl_result_t *res, int64_t now_ms) {
    if (res->rc == -ENOENT) {
        char msg[160];
        snprintf(msg, sizeof msg, "task: container %.12s no longer exists", t->container_id);
        t->container_id[0] = '\0';
        if (t->state >= SHOAL__TASK_STATE__READY) {
            if (t->desired > SHOAL__TASK_STATE__RUNNING)
                ctl_set_state(t, SHOAL__TASK_STATE__SHUTDOWN, "shutdown", NULL);
            else
                ctl_set_state(t, SHOAL__TASK_STATE__FAILED, msg, msg);
        }
        return;
    }
    if (res->rc < 0) {
        t->need_inspect = true;
        retry_later(t, now_ms, res->rc, res->err, AGENT_OP_INSPECT);
        return;
    }
    const executor_container_t *c = &res->info;
    take_info(t, c);
    if (strcmp(c->status, "created") == 0) {
        if (t->state < SHOAL__TASK_STATE__READY)
            ctl_set_state(t, SHOAL__TASK_STATE__READY, "prepared", NULL);
    } else if (c->running) {
        if (t->state < SHOAL__TASK_STATE__RUNNING)
            ctl_set_state(t, SHOAL__TASK_STATE__RUNNING, "started", NULL);
    } else if (strcmp(c->status, "removing") == 0) {
        t->need_inspect = true;
        retry_later(t, now_ms, -EAGAIN, "container is being removed", AGENT_OP_INSPECT);
    } else { /* exited, dead */
        if (t->state < SHOAL__TASK_STATE__RUNNING && t->desired <= SHOAL__TASK_STATE__RUNNING)
            ctl_set_state(t, SHOAL__TASK_STATE__RUNNING, "started", NULL);
        apply_exited(t, c->exit_code);
    }
}

void ctl_apply(agent_task_t *t, agent_op_t op, const ctl_result_t *res, int64_t now_ms) {
    t->busy = false;
    t->busy_op = AGENT_OP_NONE;
    if (res->rc == 0 || !ctl_error_is_transient(res->rc)) {
        t->retries = 0;
        t->retry_at_ms = 0;
    }
    if (is_terminal(t->state)) {
        if (op == AGENT_OP_STOP && t->reap) {
            if (res->rc == 0 || res->rc == -ENOENT)
                t->reap = false;
            else
                retry_later(t, now_ms, res->rc, res->err, op);
        }
        return;
    }
    switch (op) {
    case AGENT_OP_PREPARE:
        if (res->rc == 0) {
            copy_str(t->container_id, sizeof t->container_id, res->container_id);
            ctl_set_state(t, SHOAL__TASK_STATE__READY, "prepared", NULL);
        } else if (ctl_error_is_transient(res->rc)) {
            retry_later(t, now_ms, res->rc, res->err, op);
        } else {
            ctl_set_state(t, SHOAL__TASK_STATE__REJECTED, res->err, res->err);
        }
        break;
    case AGENT_OP_START:
        if (res->rc == 0) {
            if (res->have_info)
                take_info(t, &res->info);
            else
                t->need_inspect = true; /* pid and address later */
            ctl_set_state(t, SHOAL__TASK_STATE__RUNNING, "started", NULL);
            if (res->have_info && !res->info.running && strcmp(res->info.status, "exited") == 0 &&
                !t->exited) {
                /* it exited before we looked (and perhaps before its event) */
                t->exited = true;
                t->exited_code = res->info.exit_code;
            }
        } else if (ctl_error_is_transient(res->rc)) {
            retry_later(t, now_ms, res->rc, res->err, op);
        } else {
            char msg[EXECUTOR_ERR_MAX];
            snprintf(msg, sizeof msg, "starting container failed: %s", res->err);
            ctl_set_state(t, SHOAL__TASK_STATE__FAILED, msg, msg);
        }
        break;
    case AGENT_OP_STOP:
        if (res->rc == 0 || res->rc == -ENOENT) {
            if (res->have_info && !res->info.running && res->info.exit_code >= 0)
                t->exit_code = res->info.exit_code;
            ctl_set_state(t, SHOAL__TASK_STATE__SHUTDOWN, "shutdown", NULL);
        } else {
            retry_later(t, now_ms, res->rc, res->err, op);
        }
        break;
    case AGENT_OP_INSPECT:
        t->need_inspect = false;
        apply_inspect(t, res, now_ms);
        break;
    default:
        break;
    }
}

/* An event is about this task's container only when the ids match: a container can only die
 * after it started, and by then its id is known (READY). */
static bool same_container(const agent_task_t *t, const char *container_id) {
    return container_id && t->container_id[0] && strcmp(container_id, t->container_id) == 0;
}

void ctl_on_exit(agent_task_t *t, const char *container_id, int exit_code) {
    if (is_terminal(t->state) || !same_container(t, container_id))
        return;
    t->exited = true;
    t->exited_code = exit_code;
}

void ctl_on_oom(agent_task_t *t, const char *container_id) {
    if (!is_terminal(t->state) && same_container(t, container_id))
        t->oom = true;
}

void ctl_on_health(agent_task_t *t, const char *container_id, bool healthy) {
    if (is_terminal(t->state) || !same_container(t, container_id))
        return;
    t->has_healthcheck = true;
    t->health_from_event = true;
    set_health(t, healthy ? CTL_HEALTH_HEALTHY : CTL_HEALTH_UNHEALTHY);
}
