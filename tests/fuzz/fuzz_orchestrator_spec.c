/* Fuzz target: a ServiceSpec from arbitrary bytes (what ServiceCreate/ServiceUpdate receive) is
 * unpacked and validated, and a spec that validates is reconciled once as a fresh service with a
 * few nodes and a task of an older version, so the validator and the reconciler both meet
 * hostile input. Must never crash, leak or read out of bounds (run under ASan in `make asan`).
 * Seeds: tests/fuzz/corpus/orchestrator_spec/ (packed specs: replicated, global with
 * constraints and ports, update and restart policies, a start-first replicated job). */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "../../services/orchestrator/reconcile.h"
#include "../../services/orchestrator/validate.h"

static void fixed_id(void *ctx, char *buf) {
    int *n = ctx;
    buf[0] = 't';
    buf[1] = (char)('a' + (*n)++ % 26);
    buf[2] = '\0';
}

static void reconcile_once(Shoal__ServiceSpec *spec) {
    if (spec->mode_case == SHOAL__SERVICE_SPEC__MODE_REPLICATED && spec->replicated &&
        spec->replicated->replicas > 64)
        return; /* valid, but slow to fuzz: 10000 tasks per input */
    if (spec->mode_case == SHOAL__SERVICE_SPEC__MODE_REPLICATED_JOB && spec->replicated_job &&
        (spec->replicated_job->total_completions > 64 || spec->replicated_job->max_concurrent > 64))
        return;
    Shoal__Meta meta = SHOAL__META__INIT;
    meta.id = "svc";
    Shoal__Service svc = SHOAL__SERVICE__INIT;
    svc.meta = &meta;
    svc.spec = spec;
    svc.spec_version = 2;

    Shoal__Meta nmeta[2] = {SHOAL__META__INIT, SHOAL__META__INIT};
    Shoal__NodeStatus nstatus = SHOAL__NODE_STATUS__INIT;
    nstatus.state = SHOAL__NODE_STATUS__STATE__READY;
    Shoal__Node nodes[2] = {SHOAL__NODE__INIT, SHOAL__NODE__INIT};
    Shoal__Node *node_ptrs[2] = {&nodes[0], &nodes[1]};
    nmeta[0].id = "n1";
    nmeta[1].id = "n2";
    for (int i = 0; i < 2; i++) {
        nodes[i].meta = &nmeta[i];
        nodes[i].status = &nstatus;
    }

    Shoal__Meta tmeta = SHOAL__META__INIT;
    tmeta.id = "old";
    Shoal__TaskStatus tstatus = SHOAL__TASK_STATUS__INIT;
    tstatus.state = SHOAL__TASK_STATE__FAILED;
    Shoal__Task old = SHOAL__TASK__INIT;
    old.meta = &tmeta;
    old.slot = 1;
    old.node_id = "n1";
    old.spec = spec->task;
    old.spec_version = 1;
    old.desired_state = SHOAL__TASK_STATE__RUNNING;
    old.status = &tstatus;
    recon_task_t tasks[1] = {{.task = &old, .mod_revision = 5}};

    int ids = 0;
    recon_input_t in = {.service = &svc,
                        .service_mod_revision = 7,
                        .tasks = tasks,
                        .n_tasks = 1,
                        .nodes = node_ptrs,
                        .n_nodes = 2,
                        .now_ms = 1000,
                        .new_id = fixed_id,
                        .new_id_ctx = &ids};
    recon_result_t res = {0};
    (void)reconcile_service(&in, &res);
    recon_result_clear(&res);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    Shoal__ServiceSpec *spec = shoal__service_spec__unpack(NULL, size, data);
    if (!spec)
        return 0;
    char err[1024];
    if (validate_service_spec(spec, err, sizeof err) == 0)
        reconcile_once(spec);
    err[sizeof err - 1] = '\0';
    (void)strlen(err);
    shoal__service_spec__free_unpacked(spec, NULL);
    return 0;
}
