/* Fuzz target: the reconciler meets arbitrary tasks. The input's first byte picks the service
 * (mode, update order, healthcheck, update status, failure action, previous spec); the rest is a
 * packed orchestrator.TaskListResponse: tasks with any states, slots, nodes, spec versions,
 * restart_at values and labels (attempt, back-off, node-down replacement), as a damaged or
 * hostile store could hold. Nodes: n1 READY, n2 DOWN, n3 DRAIN, n4 PAUSE.
 *
 * Checks the reconciler's invariants, aborting when one breaks: at most one action per task,
 * every UPDATE/DELETE names an input task at its revision, a created task has a slot
 * (replicated) or a node (global) and desired RUNNING, restart_at > 0 only with desired
 * SHUTDOWN. Then runs once more with the service removed. Seeds:
 * tests/fuzz/corpus/orchestrator_reconcile/ (first byte + protoc --encode of a task list). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../services/orchestrator/reconcile.h"
#include "orchestrator.pb-c.h"

#define MAX_TASKS 256

static void fixed_id(void *ctx, char *buf) {
    int *n = ctx;
    buf[0] = 'n';
    buf[1] = 'e';
    buf[2] = 'w';
    buf[3] = (char)('a' + (*n / 26) % 26);
    buf[4] = (char)('a' + (*n)++ % 26);
    buf[5] = '\0';
}

static void check(bool ok) {
    if (!ok)
        abort();
}

static void check_result(const recon_input_t *in, const recon_result_t *res, bool global) {
    for (size_t i = 0; i < res->n_actions; i++) {
        const recon_action_t *a = &res->actions[i];
        switch (a->op) {
        case RECON_CREATE_TASK:
            check(a->new_task && a->new_task->desired_state == SHOAL__TASK_STATE__RUNNING);
            check(global ? a->new_task->node_id && a->new_task->node_id[0] : a->new_task->slot > 0);
            break;
        case RECON_UPDATE_TASK:
            check(a->desired_state > SHOAL__TASK_STATE__RUNNING || a->restart_at_ms <= 0);
            check(a->restart_at_ms <= 0 || a->desired_state == SHOAL__TASK_STATE__SHUTDOWN);
            /* fall through */
        case RECON_DELETE_TASK: {
            bool found = false;
            for (size_t k = 0; k < in->n_tasks && !found; k++)
                found =
                    in->tasks[k].task == a->task && in->tasks[k].mod_revision == a->mod_revision;
            check(found);
            for (size_t j = 0; j < i; j++)
                check(res->actions[j].task != a->task);
            break;
        }
        case RECON_UPDATE_SERVICE:
            check(a->new_service != NULL);
            break;
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1)
        return 0;
    uint8_t opts = data[0];
    Shoal__Orchestrator__TaskListResponse *list =
        shoal__orchestrator__task_list_response__unpack(NULL, size - 1, data + 1);
    if (!list)
        return 0;
    if (list->n_tasks > MAX_TASKS) {
        shoal__orchestrator__task_list_response__free_unpacked(list, NULL);
        return 0;
    }

    char *test[2] = {"CMD-SHELL", "true"};
    Shoal__HealthConfig hc = SHOAL__HEALTH_CONFIG__INIT;
    hc.test = test;
    hc.n_test = 2;
    Shoal__ContainerSpec c = SHOAL__CONTAINER_SPEC__INIT;
    c.image = "img:2";
    if (opts & 0x08)
        c.healthcheck = &hc;
    Shoal__TaskSpec ts = SHOAL__TASK_SPEC__INIT;
    ts.container = &c;
    Shoal__UpdateConfig uc = SHOAL__UPDATE_CONFIG__INIT;
    uc.parallelism = (opts >> 6) & 1 ? 2 : 0;
    uc.order = (opts & 0x04) ? SHOAL__UPDATE_CONFIG__ORDER__START_FIRST
                             : SHOAL__UPDATE_CONFIG__ORDER__STOP_FIRST;
    uc.failure_action = (opts & 0x80) ? SHOAL__UPDATE_CONFIG__FAILURE_ACTION__ROLLBACK
                                      : SHOAL__UPDATE_CONFIG__FAILURE_ACTION__PAUSE;
    uc.monitor_ms = 2000;
    Shoal__ReplicatedService rs = SHOAL__REPLICATED_SERVICE__INIT;
    rs.replicas = 3;
    Shoal__GlobalService gs = SHOAL__GLOBAL_SERVICE__INIT;
    Shoal__ReplicatedJob rj = SHOAL__REPLICATED_JOB__INIT;
    rj.total_completions = 4;
    rj.max_concurrent = 2;
    Shoal__GlobalJob gj = SHOAL__GLOBAL_JOB__INIT;
    Shoal__Annotations ann = SHOAL__ANNOTATIONS__INIT;
    ann.name = "svc";
    Shoal__ServiceSpec spec = SHOAL__SERVICE_SPEC__INIT;
    spec.annotations = &ann;
    spec.task = &ts;
    spec.update = &uc;
    spec.rollback = &uc;
    switch (opts & 3) {
    case 0:
        spec.mode_case = SHOAL__SERVICE_SPEC__MODE_REPLICATED;
        spec.replicated = &rs;
        break;
    case 1:
        spec.mode_case = SHOAL__SERVICE_SPEC__MODE_GLOBAL;
        spec.global = &gs;
        break;
    case 2:
        spec.mode_case = SHOAL__SERVICE_SPEC__MODE_REPLICATED_JOB;
        spec.replicated_job = &rj;
        break;
    default:
        spec.mode_case = SHOAL__SERVICE_SPEC__MODE_GLOBAL_JOB;
        spec.global_job = &gj;
        break;
    }
    Shoal__ContainerSpec old_c = SHOAL__CONTAINER_SPEC__INIT;
    old_c.image = "img:1";
    Shoal__TaskSpec old_ts = SHOAL__TASK_SPEC__INIT;
    old_ts.container = &old_c;
    Shoal__ServiceSpec prev = spec;
    prev.task = &old_ts;
    Shoal__UpdateStatus us = SHOAL__UPDATE_STATUS__INIT;
    us.state = (opts & 0x10) ? SHOAL__UPDATE_STATUS__STATE__ROLLBACK_STARTED
                             : SHOAL__UPDATE_STATUS__STATE__UPDATING;
    us.started_at_ms = 500;
    Shoal__Meta meta = SHOAL__META__INIT;
    meta.id = "svc";
    Shoal__Service svc = SHOAL__SERVICE__INIT;
    svc.meta = &meta;
    svc.spec = &spec;
    svc.spec_version = 2;
    svc.update_status = &us;
    if (opts & 0x20)
        svc.previous_spec = &prev;

    Shoal__Meta nmeta[4] = {SHOAL__META__INIT, SHOAL__META__INIT, SHOAL__META__INIT,
                            SHOAL__META__INIT};
    Shoal__NodeStatus nst[4] = {SHOAL__NODE_STATUS__INIT, SHOAL__NODE_STATUS__INIT,
                                SHOAL__NODE_STATUS__INIT, SHOAL__NODE_STATUS__INIT};
    Shoal__NodeSpec nspec[4] = {SHOAL__NODE_SPEC__INIT, SHOAL__NODE_SPEC__INIT,
                                SHOAL__NODE_SPEC__INIT, SHOAL__NODE_SPEC__INIT};
    Shoal__Node nodes[4] = {SHOAL__NODE__INIT, SHOAL__NODE__INIT, SHOAL__NODE__INIT,
                            SHOAL__NODE__INIT};
    Shoal__Node *node_ptrs[4];
    const char *ids[4] = {"n1", "n2", "n3", "n4"};
    for (int i = 0; i < 4; i++) {
        nmeta[i].id = (char *)ids[i];
        nst[i].state = i == 1 ? SHOAL__NODE_STATUS__STATE__DOWN : SHOAL__NODE_STATUS__STATE__READY;
        nspec[i].availability = i == 2   ? SHOAL__NODE_SPEC__AVAILABILITY__DRAIN
                                : i == 3 ? SHOAL__NODE_SPEC__AVAILABILITY__PAUSE
                                         : SHOAL__NODE_SPEC__AVAILABILITY__ACTIVE;
        nodes[i].meta = &nmeta[i];
        nodes[i].status = &nst[i];
        nodes[i].spec = &nspec[i];
        node_ptrs[i] = &nodes[i];
    }

    recon_task_t tasks[MAX_TASKS];
    for (size_t i = 0; i < list->n_tasks; i++) {
        Shoal__Task *t = list->tasks[i];
        /* the store keys tasks by id and the reconciler gets only this service's tasks */
        if (t->service_id && t->service_id != protobuf_c_empty_string)
            free(t->service_id);
        t->service_id = strdup("svc");
        tasks[i] = (recon_task_t){
            .task = t, .mod_revision = (int64_t)i + 10, .running_since_ms = (int64_t)(i % 3) * 400};
    }
    int n = 0;
    recon_input_t in = {.service = &svc,
                        .service_mod_revision = 7,
                        .tasks = tasks,
                        .n_tasks = list->n_tasks,
                        .nodes = node_ptrs,
                        .n_nodes = 4,
                        .now_ms = 3000,
                        .new_id = fixed_id,
                        .new_id_ctx = &n};
    recon_result_t res = {0};
    if (reconcile_service(&in, &res) == 0)
        check_result(&in, &res, (opts & 3) == 1 || (opts & 3) == 3);
    recon_result_clear(&res);

    in.service = NULL;
    if (reconcile_service(&in, &res) == 0)
        check_result(&in, &res, false);
    recon_result_clear(&res);
    shoal__orchestrator__task_list_response__free_unpacked(list, NULL);
    return 0;
}
