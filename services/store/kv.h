/* kv — the revisioned key-value state machine of shoal-store on RocksDB (DESIGN §3).
 *
 * No bus, no clock, no sockets: the daemon (server.c) feeds it requests and the time. Reads go
 * straight to RocksDB. Writes follow "propose -> commit -> apply": a write is a kv_op_t (a
 * request message of proto/store.proto); kv_apply() applies a sequence of them in order into one
 * RocksDB write batch and makes it durable with ONE synced write before returning. Given the same
 * durable state and the same ops, kv_apply() produces the same durable state and results, so a
 * Raft log can later carry encoded ops and every member applies the committed ones.
 *
 * Model (etcd's): a global revision; each write op that changes something takes revision + 1 (all
 * changes of one Txn share it; a Batch gives each of its txns its own); each key has create/mod
 * revision and version; every change is an Event kept for Watch for the last `history` revisions;
 * leases have a TTL, keys may be attached to one and go when it is revoked or expires.
 *
 * Lease deadlines are soft state: they live in memory only, and after kv_open() every lease gets a
 * fresh full TTL (as etcd). Keep-alive is therefore not a durable write.
 *
 * Errors: functions return 0 or -errno: -EINVAL (bad request), -ENOENT (no such lease),
 * -EEXIST (lease id taken), -EIO (a corrupt record, or RocksDB failed), -ENOMEM. kv_error() holds
 * one human line about the last failure of a non-apply call (naming the key of a corrupt record).
 */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "arena.h"
#include "store.pb-c.h"

#define KV_DEFAULT_HISTORY      100000
#define KV_WATCH_DEFAULT_EVENTS 1000
#define KV_WATCH_MAX_EVENTS     10000

typedef struct kv kv_t;

typedef struct kv_options {
    int64_t history; /* revisions of events kept for Watch, at least (compaction runs in steps of
                        history/16); 0 = KV_DEFAULT_HISTORY */
} kv_options_t;

/* Opens (creating when absent) the store in directory `dir`. now_ms starts every lease's TTL.
 * On failure, err (errlen bytes) gets one line saying why. */
int kv_open(const char *dir, const kv_options_t *opts, int64_t now_ms, kv_t **ret, char *err,
            size_t errlen);
void kv_close(kv_t **self_p);
const char *kv_error(const kv_t *self);

int64_t kv_revision(const kv_t *self);
int64_t kv_compact_revision(const kv_t *self);
int64_t kv_key_count(const kv_t *self);
int64_t kv_lease_count(const kv_t *self);
/* Durable writes made (each one synced) and write ops applied, since open. */
uint64_t kv_fsyncs_total(const kv_t *self);
uint64_t kv_ops_total(const kv_t *self);
/* Approximate bytes on disk (SST files + memtables). */
int64_t kv_db_size(kv_t *self);

/* ---- reads ------------------------------------------------------------------------------- */

/* The keys of req (one key, prefix or [key, range_end)) at the current revision, with `more` and
 * `count`; the response lives in arena `a`. -EINVAL for a bad range, -EIO for a corrupt record. */
int kv_range(kv_t *self, const Shoal__Store__RangeRequest *req, arena_t *a,
             Shoal__Store__RangeResponse **ret);

/* The events of req's range with revision >= start_revision (0 = from now: revision + 1), whole
 * revisions, at most max_events (0 = KV_WATCH_DEFAULT_EVENTS) unless a single revision has more.
 * next_revision: the revision to ask next — last returned + 1 when the reply was cut by
 * max_events, else revision + 1 (every revision up to now was looked at). start_revision <=
 * compact_revision gives compacted = true and no events. Never waits: the daemon parks calls that
 * get no event. */
int kv_watch_read(kv_t *self, const Shoal__Store__WatchRequest *req, int64_t start_revision,
                  arena_t *a, Shoal__Store__WatchResponse **ret);

/* ---- writes ------------------------------------------------------------------------------ */

typedef enum kv_op_type {
    KV_OP_PUT = 1,      /* Shoal__Store__PutRequest -> PutResponse */
    KV_OP_DELETE_RANGE, /* DeleteRangeRequest -> DeleteRangeResponse */
    KV_OP_TXN,          /* TxnRequest -> TxnResponse (compare failure is not an error) */
    KV_OP_BATCH,        /* BatchRequest -> BatchResponse; a txn that is invalid (not one whose
                           compares fail) fails the whole batch, naming its index */
    KV_OP_LEASE_GRANT,  /* LeaseGrantRequest -> LeaseGrantResponse */
    KV_OP_LEASE_REVOKE, /* LeaseRevokeRequest -> LeaseRevokeResponse */
    KV_OP_COMPACT,      /* CompactRequest -> CompactResponse */
} kv_op_type_t;

typedef struct kv_op {
    kv_op_type_t type;
    const ProtobufCMessage *request;
} kv_op_t;

typedef struct kv_result {
    int err;                    /* 0, or -errno: this op changed nothing */
    const char *message;        /* one line when err != 0 */
    ProtobufCMessage *response; /* the matching response when err == 0 */
    int64_t revision;           /* store revision after this op */
} kv_result_t;

/* Applies ops[0..n) in order, each seeing the effects of the ones before, into one write batch
 * made durable by one synced write; results[i] (in arena `a`) says what ops[i] did. now_ms starts
 * the TTL of granted leases. Returns 0 when the write is durable (whatever each op's outcome), or
 * -EIO when it failed: then nothing of the batch is applied and every result has err = -EIO. */
int kv_apply(kv_t *self, const kv_op_t *ops, size_t n, int64_t now_ms, arena_t *a,
             kv_result_t *results);

/* Renews lease `id` to a full TTL from now. -ENOENT when it does not exist (revoked, expired). */
int kv_lease_keepalive(kv_t *self, int64_t id, int64_t now_ms, int64_t *ret_ttl_ms);
/* TTL of lease `id` and ms left; -ENOENT when absent. */
int kv_lease_ttl(const kv_t *self, int64_t id, int64_t now_ms, int64_t *ret_ttl_ms,
                 int64_t *ret_left_ms);

/* Revokes every lease whose deadline is <= now_ms (deleting its keys) with one durable write.
 * Returns how many were revoked, or -errno. */
int kv_expire_leases(kv_t *self, int64_t now_ms);
