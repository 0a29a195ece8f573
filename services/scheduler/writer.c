/* writer — the placement writes of shoal-scheduler on a thread of their own.
 *
 * Why: a store.Batch of 1000 CAS Txns takes the store tens to hundreds of milliseconds to apply and
 * make durable. Written from the event loop, the loop stood still for every batch: a big tick
 * (100,000 placements) blocked it for tens of seconds, long enough to lose the leader lease, and
 * the scheduler's CPU work never overlapped the store's. The actor owns a store client (a client
 * is one DEALER, not thread-safe), takes jobs from its pipe in order, makes one store.Batch call
 * per job and sends the job back with its outcome. Jobs travel as pointers: one process, and a
 * job is touched by one thread at a time (the loop builds it, the actor fills the outcome, the
 * loop reads it and frees it).
 *
 * Invariants: every job sent comes back exactly once while the actor runs; jobs still queued when
 * the actor is destroyed are freed by it (their decisions stay in flight in a core that is being
 * torn down with the daemon). Who calls: main.c. */
#include "writer.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bus.h"
#include "log.h"

#define WRITER_TIMEOUT_MS 10000

writer_job_t *writer_job_new(const scheduler_decision_t *d, size_t n, int64_t fence_lease) {
    writer_job_t *job = calloc(1, sizeof *job);
    if (!job)
        return NULL;
    job->task_ids = calloc(n ? n : 1, sizeof *job->task_ids);
    job->assigned = calloc(n ? n : 1, sizeof *job->assigned);
    job->builders = calloc(n ? n : 1, sizeof *job->builders);
    job->txns = calloc(n ? n : 1, sizeof *job->txns);
    if (!job->task_ids || !job->assigned || !job->builders || !job->txns) {
        writer_job_destroy(&job);
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        char key[256];
        snprintf(key, sizeof key, "/tasks/%s", d[i].task_id);
        job->task_ids[i] = strdup(d[i].task_id);
        job->builders[i] = store_txn_builder_new();
        job->n = i + 1;
        if (!job->task_ids[i] || !job->builders[i]) {
            writer_job_destroy(&job);
            return NULL;
        }
        job->assigned[i] = d[i].node_id != NULL;
        store_txn_cmp_mod(job->builders[i], key, d[i].mod_revision);
        if (fence_lease)
            store_txn_cmp_lease(job->builders[i], "/leases/scheduler", fence_lease);
        store_txn_put(job->builders[i], key, &d[i].task->base);
        job->txns[i] = (Shoal__Store__TxnRequest *)store_txn_builder_request(job->builders[i]);
    }
    return job;
}

void writer_job_destroy(writer_job_t **self_p) {
    if (!self_p || !*self_p)
        return;
    writer_job_t *job = *self_p;
    for (size_t i = 0; i < job->n; i++) {
        if (job->task_ids)
            free(job->task_ids[i]);
        if (job->builders)
            store_txn_builder_destroy(&job->builders[i]);
    }
    free(job->task_ids);
    free(job->assigned);
    free(job->builders);
    free(job->txns);
    if (job->resp)
        shoal__store__batch_response__free_unpacked(job->resp, NULL);
    free(job);
    *self_p = NULL;
}

typedef struct writer_args {
    shoal_config_t cfg;
    char identity[64];
} writer_args_t;

static void writer_run(store_client_t *sc, writer_job_t *job) {
    job->sent_us = zclock_usecs();
    if (!sc) {
        job->rc = -ENOTCONN;
        snprintf(job->error, sizeof job->error, "no store client");
    } else {
        Shoal__Store__BatchRequest req = SHOAL__STORE__BATCH_REQUEST__INIT;
        req.txns = job->txns;
        req.n_txns = job->n;
        job->rc = store_batch(sc, &req, &job->resp);
        if (job->rc < 0)
            snprintf(job->error, sizeof job->error, "%s", store_client_error(sc));
        else if (!job->resp)
            job->rc = -EPROTO;
    }
    job->done_us = zclock_usecs();
}

static void writer_actor(zsock_t *pipe, void *arg) {
    writer_args_t *a = arg;
    zcert_t *id = bus_identity_load(a->cfg.state_dir, a->identity);
    store_client_t *sc = id ? store_client_new(&a->cfg, id) : NULL;
    if (sc)
        store_client_set_timeout(sc, WRITER_TIMEOUT_MS);
    else
        log_warn("placement writer has no store client identity=%s", a->identity);
    zsock_signal(pipe, 0);
    for (;;) {
        char *cmd = NULL;
        void *ptr = NULL;
        if (zsock_recv(pipe, "sp", &cmd, &ptr) < 0)
            break;
        bool term = !cmd || strcmp(cmd, "$TERM") == 0;
        zstr_free(&cmd);
        if (term)
            break;
        writer_job_t *job = ptr;
        if (!job)
            continue;
        writer_run(sc, job);
        if (zsock_send(pipe, "sp", "DONE", job) < 0) {
            writer_job_destroy(&job);
            break;
        }
    }
    store_client_destroy(&sc);
    zcert_destroy(&id);
    free(a);
}

zactor_t *writer_new(const shoal_config_t *cfg, const char *identity_name) {
    writer_args_t *a = calloc(1, sizeof *a);
    if (!a)
        return NULL;
    a->cfg = *cfg;
    snprintf(a->identity, sizeof a->identity, "%s", identity_name);
    zactor_t *w = zactor_new(writer_actor, a);
    if (!w)
        free(a);
    return w;
}

int writer_send(zactor_t *writer, writer_job_t *job) {
    return zsock_send(zactor_sock(writer), "sp", "JOB", job) < 0 ? -EIO : 0;
}

writer_job_t *writer_recv(zactor_t *writer) {
    char *cmd = NULL;
    void *ptr = NULL;
    if (zsock_recv(zactor_sock(writer), "sp", &cmd, &ptr) < 0)
        return NULL;
    bool ok = cmd && strcmp(cmd, "DONE") == 0;
    zstr_free(&cmd);
    return ok ? ptr : NULL;
}
