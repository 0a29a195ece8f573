/* record — how shoal-store lays out its data in RocksDB, and the checksummed record codec.
 *
 * Column families and keys:
 *   kv      <key bytes>                              -> KeyValue record (key field left empty:
 *                                                       the RocksDB key is the key)
 *   events  <revision u64 BE><seq u32 BE>            -> Event record
 *   meta    "meta"                                   -> StoredMeta record
 *           "lease/" <id u64 BE>                     -> StoredLease record
 *           "lk/" <id u64 BE> <key bytes>            -> lease-key index record (empty payload):
 *                                                       key is attached to lease id
 *   log     reserved for the Raft log
 *
 * Every value is [type u8][crc32c u32 LE][protobuf payload]. The CRC32C covers the type byte, the
 * RocksDB key and the payload, so a torn or corrupted value, and a value written under the wrong
 * key, are both detected. Decoders never trust their input: any mismatch is -EIO, never a crash
 * (tests/fuzz/fuzz_store_records.c). */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "arena.h"
#include "store.pb-c.h"

enum record_type {
    RECORD_KV = 1,
    RECORD_EVENT = 2,
    RECORD_META = 3,
    RECORD_LEASE = 4,
    RECORD_LEASE_KEY = 5,
};

#define RECORD_HEADER_LEN    5
#define RECORD_EVENT_KEY_LEN 12
#define RECORD_META_KEY      "meta"
#define RECORD_LEASE_PREFIX  "lease/"
#define RECORD_LEASE_KEY_LEN (sizeof RECORD_LEASE_PREFIX - 1 + 8)
#define RECORD_LK_PREFIX     "lk/"
#define RECORD_LK_PREFIX_LEN (sizeof RECORD_LK_PREFIX - 1 + 8)

/* CRC-32C (Castagnoli), software table; crc32c(0, buf, len) starts a new checksum. */
uint32_t crc32c(uint32_t crc, const void *buf, size_t len);

/* Encodes `msg` (may be NULL for an empty payload) as a record for RocksDB key `key` into arena
 * memory. */
void record_encode(arena_t *a, enum record_type type, const void *key, size_t klen,
                   const ProtobufCMessage *msg, uint8_t **ret, size_t *ret_len);
/* A KeyValue record: the key field is not stored (it is the RocksDB key). */
void record_encode_kv(arena_t *a, const Shoal__Store__KeyValue *kv, uint8_t **ret, size_t *ret_len);

/* Checks type and checksum and returns the payload. -EIO when they do not match. */
int record_check(enum record_type type, const void *key, size_t klen, const uint8_t *buf,
                 size_t len, const uint8_t **ret_payload, size_t *ret_payload_len);
/* Checks and unpacks into the arena. -EIO on any mismatch or malformed payload. */
int record_decode(arena_t *a, enum record_type type, const ProtobufCMessageDescriptor *desc,
                  const void *key, size_t klen, const uint8_t *buf, size_t len,
                  ProtobufCMessage **ret);
/* A KeyValue record of kv key `key`; sets ret->key from the RocksDB key. */
int record_decode_kv(arena_t *a, const void *key, size_t klen, const uint8_t *buf, size_t len,
                     Shoal__Store__KeyValue **ret);
/* An Event record; its kv must be present and non-empty. */
int record_decode_event(arena_t *a, const void *key, size_t klen, const uint8_t *buf, size_t len,
                        Shoal__Store__Event **ret);
int record_decode_meta(arena_t *a, const uint8_t *buf, size_t len, Shoal__Store__StoredMeta **ret);
/* A StoredLease record; its id must match the id in the key, its ttl must be > 0. */
int record_decode_lease(arena_t *a, const void *key, size_t klen, const uint8_t *buf, size_t len,
                        Shoal__Store__StoredLease **ret);

/* Keys. */
void record_event_key(uint8_t out[RECORD_EVENT_KEY_LEN], int64_t revision, uint32_t seq);
/* -EINVAL when the key is not an event key. */
int record_event_key_parse(const void *key, size_t klen, int64_t *ret_revision, uint32_t *ret_seq);
void record_lease_key(uint8_t out[RECORD_LEASE_KEY_LEN], int64_t id);
int record_lease_key_parse(const void *key, size_t klen, int64_t *ret_id);
/* "lk/<id>" + key into arena memory; the prefix alone when key is NULL. */
uint8_t *record_lk_key(arena_t *a, int64_t id, const char *key, size_t *ret_len);

void record_put_be64(uint8_t *out, uint64_t v);
uint64_t record_get_be64(const uint8_t *in);
