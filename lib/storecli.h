/* storecli — typed calls to shoal-store (proto/store.proto) over the bus, and the watcher actor.
 *
 * Every function returns 0 or -errno: -ENOENT (no such key), -ECANCELED (a Txn's compares
 * failed; the response is still returned), -EINVAL, -EAGAIN (store unavailable / not leader after
 * retries), -ETIMEDOUT, -EPROTO. The message of the last failure is store_client_error().
 *
 * The watcher is a CZMQ actor: it long-polls store.Watch from a revision and delivers each
 * non-empty WatchResponse on its pipe as one frame (the encoded message). It never skips: if the
 * store reports the history compacted it delivers that response (compacted = true) and stops;
 * the owner must re-list and start a new watcher. */
#pragma once
#include <czmq.h>

#include "bus.h"
#include "store.pb-c.h"

typedef struct store_client store_client_t;

/* Connects to ipc://<state>/run/store.rpc with the store's pinned public key. */
store_client_t *store_client_new(const shoal_config_t *cfg, zcert_t *identity);
void store_client_destroy(store_client_t **self_p);
const char *store_client_error(const store_client_t *self);
bus_client_t *store_client_bus(store_client_t *self);
void store_client_set_timeout(store_client_t *self, int timeout_ms); /* default 10 s */

int store_get(store_client_t *self, const char *key, Shoal__Store__KeyValue **ret);
/* Every key with the prefix; ret_revision (may be NULL) gets the store revision of the read. */
int store_list(store_client_t *self, const char *prefix, Shoal__Store__RangeResponse **ret);
int store_put(store_client_t *self, const char *key, const void *value, size_t len, int64_t lease,
              int64_t *ret_revision);
int store_delete(store_client_t *self, const char *key, int64_t *ret_deleted);
int store_delete_prefix(store_client_t *self, const char *prefix, int64_t *ret_deleted);
/* -ECANCELED when the compares failed (and *ret is still set). */
int store_txn(store_client_t *self, const Shoal__Store__TxnRequest *req,
              Shoal__Store__TxnResponse **ret);
int store_batch(store_client_t *self, const Shoal__Store__BatchRequest *req,
                Shoal__Store__BatchResponse **ret);
int store_watch(store_client_t *self, const Shoal__Store__WatchRequest *req,
                Shoal__Store__WatchResponse **ret);
int store_lease_grant(store_client_t *self, int64_t ttl_ms, int64_t *ret_id);
int store_lease_keepalive(store_client_t *self, int64_t id); /* -ENOENT when expired */
int store_lease_revoke(store_client_t *self, int64_t id);
int store_status(store_client_t *self, Shoal__Store__StatusResponse **ret);

/* Put `key` = packed `msg` only if its mod revision is still `mod_revision` (0 = key must not
 * exist). -ECANCELED when it changed. ret_revision may be NULL. */
int store_cas_put(store_client_t *self, const char *key, const ProtobufCMessage *msg,
                  int64_t mod_revision, int64_t *ret_revision);

/* Builders for Txn requests (allocated in one arena the caller frees with store_txn_free). */
typedef struct store_txn_builder store_txn_builder_t;
store_txn_builder_t *store_txn_builder_new(void);
void store_txn_builder_destroy(store_txn_builder_t **self_p);
/* Adds a compare "mod_revision(key) == rev" (rev 0: key absent). */
void store_txn_cmp_mod(store_txn_builder_t *b, const char *key, int64_t rev);
/* Adds a compare "lease(key) == lease": fencing, the writer still holds the key under its lease. */
void store_txn_cmp_lease(store_txn_builder_t *b, const char *key, int64_t lease);
void store_txn_put(store_txn_builder_t *b, const char *key, const ProtobufCMessage *msg);
void store_txn_put_raw(store_txn_builder_t *b, const char *key, const void *val, size_t len,
                       int64_t lease);
void store_txn_delete(store_txn_builder_t *b, const char *key);
/* The request built so far (owned by the builder). */
const Shoal__Store__TxnRequest *store_txn_builder_request(store_txn_builder_t *b);
size_t store_txn_builder_ops(const store_txn_builder_t *b);

/* ---- watcher actor ------------------------------------------------------------------------- */

/* Watches every key under `prefix` from `start_revision` (> 0). */
zactor_t *store_watcher_new(const shoal_config_t *cfg, const char *identity_name,
                            const char *prefix, int64_t start_revision);
/* Receives one delivered response from the actor (call when its pipe is readable). */
int store_watcher_recv(zactor_t *watcher, Shoal__Store__WatchResponse **ret);
