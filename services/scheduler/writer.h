/* writer — shoal-scheduler's placement writes off the event loop: an actor thread with its own
 * store client sends each batch (store.Batch of compare-and-swap Txns) and hands the outcome
 * back, so the loop keeps reading the watch, renewing its lease and computing the next tick while
 * the store applies the previous batch. See writer.c. */
#pragma once
#include <czmq.h>
#include <stdbool.h>
#include <stdint.h>

#include "config.h"
#include "scheduler.h"
#include "store.pb-c.h"
#include "storecli.h"

/* One batch: built on the loop's thread (values packed there, so the decisions' tasks may
 * change afterwards), written by the actor, read back on the loop's thread. */
typedef struct writer_job {
    size_t n;
    char **task_ids; /* owned */
    bool *assigned;  /* decision i placed the task (else: it records why not) */
    store_txn_builder_t **builders;
    Shoal__Store__TxnRequest **txns;
    /* outcome, set by the actor */
    int rc; /* 0, or -errno of the call */
    char error[256];
    Shoal__Store__BatchResponse *resp;
    int64_t sent_us, done_us;
} writer_job_t;

/* A job for decisions [0, n): one Txn per decision, "mod revision unchanged -> put task". */
/* Each decision becomes a Txn comparing the task's mod revision and, when fence_lease != 0, that
 * /leases/scheduler is still held under fence_lease (a deposed leader's writes all fail). */
writer_job_t *writer_job_new(const scheduler_decision_t *d, size_t n, int64_t fence_lease);
void writer_job_destroy(writer_job_t **self_p);

/* Starts the actor: it connects to the store as `identity_name` (its own client). */
zactor_t *writer_new(const shoal_config_t *cfg, const char *identity_name);
/* Hands the job to the actor (ownership moves with it until writer_recv gives it back). */
int writer_send(zactor_t *writer, writer_job_t *job);
/* Takes back one finished job (call when the actor's socket is readable). NULL on error. */
writer_job_t *writer_recv(zactor_t *writer);
