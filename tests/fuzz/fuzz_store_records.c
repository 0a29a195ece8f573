/* Fuzz target for shoal-store's decoders: the checksummed RocksDB records (KeyValue, Event,
 * StoredMeta, StoredLease, lease-key index) and every store request as it arrives from the bus,
 * which is then handed to a real kv state machine (temporary RocksDB directory) exactly as the
 * daemon would: nothing may crash, whatever the bytes.
 *
 * Input: [selector u8][key length u8][key][payload]. Selector & 0x7f picks the target; with
 * 0x80 set the record header is re-sealed with a correct CRC over the payload, so mutated
 * payloads get past the checksum into protobuf unpack and the decoders' field checks. Request
 * targets take [key][payload] after the selector as the packed request. */
#include <ftw.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "arena.h"
#include "../../services/store/kv.h"
#include "../../services/store/record.h"
#include "log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static arena_t *arena;
static kv_t *kv;
static char dir[64];
static int64_t now_ms = 1000;

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void cleanup(void) {
    if (getenv("FUZZ_STORE_VERBOSE"))
        fprintf(stderr, "fuzz_store: revision=%lld fsyncs=%llu keys=%lld\n",
                (long long)kv_revision(kv), (unsigned long long)kv_fsyncs_total(kv),
                (long long)kv_key_count(kv));
    kv_close(&kv);
    arena_destroy(&arena);
    if (dir[0])
        nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static void init(void) {
    if (arena)
        return;
    log_init("fuzz", LOG_LEVEL_ERR); /* expiry and repair logs are info/warn: keep quiet */
    arena = arena_new(0);
    snprintf(dir, sizeof dir, "/tmp/shoal-store-fuzz-XXXXXX");
    if (!mkdtemp(dir))
        abort();
    char err[512];
    kv_options_t o = {.history = 50};
    if (kv_open(dir, &o, now_ms, &kv, err, sizeof err) < 0) {
        fprintf(stderr, "fuzz: %s\n", err);
        abort();
    }
    atexit(cleanup);
}

/* Record targets: seal (optionally) and decode. */
static void fuzz_record(enum record_type type, bool reseal, const uint8_t *key, size_t klen,
                        const uint8_t *val, size_t vlen) {
    uint8_t *buf = arena_memdup(arena, val, vlen);
    if (reseal && vlen >= RECORD_HEADER_LEN) {
        uint8_t t = (uint8_t)type;
        uint32_t crc = crc32c(0, &t, 1);
        crc = crc32c(crc, key, klen);
        crc = crc32c(crc, buf + RECORD_HEADER_LEN, vlen - RECORD_HEADER_LEN);
        buf[0] = t;
        buf[1] = (uint8_t)crc;
        buf[2] = (uint8_t)(crc >> 8);
        buf[3] = (uint8_t)(crc >> 16);
        buf[4] = (uint8_t)(crc >> 24);
    }
    const uint8_t *payload;
    size_t plen;
    switch (type) {
    case RECORD_KV: {
        Shoal__Store__KeyValue *kvr;
        if (record_decode_kv(arena, key, klen, buf, vlen, &kvr) == 0 && strlen(kvr->key) != klen)
            abort();
        break;
    }
    case RECORD_EVENT: {
        Shoal__Store__Event *ev;
        if (record_decode_event(arena, key, klen, buf, vlen, &ev) == 0 && !ev->kv)
            abort();
        break;
    }
    case RECORD_META: {
        Shoal__Store__StoredMeta *m;
        if (record_decode_meta(arena, buf, vlen, &m) == 0 && m->compact_revision > m->revision)
            abort();
        break;
    }
    case RECORD_LEASE: {
        Shoal__Store__StoredLease *l;
        if (record_decode_lease(arena, key, klen, buf, vlen, &l) == 0 && l->ttl_ms <= 0)
            abort();
        break;
    }
    default:
        (void)record_check(type, key, klen, buf, vlen, &payload, &plen);
    }
}

static const ProtobufCMessageDescriptor *const requests[] = {
    &shoal__store__range_request__descriptor,
    &shoal__store__put_request__descriptor,
    &shoal__store__delete_range_request__descriptor,
    &shoal__store__txn_request__descriptor,
    &shoal__store__batch_request__descriptor,
    &shoal__store__watch_request__descriptor,
    &shoal__store__lease_grant_request__descriptor,
    &shoal__store__lease_keep_alive_request__descriptor,
    &shoal__store__lease_revoke_request__descriptor,
    &shoal__store__compact_request__descriptor,
    &shoal__store__status_request__descriptor,
};
#define N_REQUESTS (sizeof requests / sizeof requests[0])

/* Request targets: unpack as the bus does (protobuf-c's own allocator), then serve. */
static void fuzz_request(size_t which, const uint8_t *data, size_t size) {
    ProtobufCMessage *m = protobuf_c_message_unpack(requests[which], NULL, size, data);
    if (!m)
        return;
    kv_op_type_t op = 0;
    switch (which) {
    case 0: {
        Shoal__Store__RangeResponse *r;
        (void)kv_range(kv, (const void *)m, arena, &r);
        break;
    }
    case 1:
        op = KV_OP_PUT;
        break;
    case 2:
        op = KV_OP_DELETE_RANGE;
        break;
    case 3:
        op = KV_OP_TXN;
        break;
    case 4:
        op = KV_OP_BATCH;
        break;
    case 5: {
        const Shoal__Store__WatchRequest *w = (const void *)m;
        Shoal__Store__WatchResponse *r;
        (void)kv_watch_read(kv, w, w->start_revision, arena, &r);
        break;
    }
    case 6:
        op = KV_OP_LEASE_GRANT;
        break;
    case 7:
        (void)kv_lease_keepalive(kv, ((Shoal__Store__LeaseKeepAliveRequest *)m)->id, now_ms, NULL);
        break;
    case 8:
        op = KV_OP_LEASE_REVOKE;
        break;
    case 9:
        op = KV_OP_COMPACT;
        break;
    default:
        break;
    }
    if (op) {
        kv_op_t o = {op, m};
        kv_result_t r;
        if (kv_apply(kv, &o, 1, now_ms, arena, &r) == 0 && r.err == 0 && !r.response)
            abort();
    }
    protobuf_c_message_free_unpacked(m, NULL);
    /* time moves so leases granted by inputs expire now and then */
    now_ms += 50;
    (void)kv_expire_leases(kv, now_ms);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    init();
    arena_reset(arena);
    if (size < 1)
        return 0;
    uint8_t sel = data[0] & 0x7f;
    bool reseal = data[0] & 0x80;
    data++;
    size--;
    size_t nrec = 5;
    if (sel % (nrec + N_REQUESTS) >= nrec) {
        fuzz_request(sel % (nrec + N_REQUESTS) - nrec, data, size);
        return 0;
    }
    if (size < 1)
        return 0;
    size_t klen = data[0] < size - 1 ? data[0] : size - 1;
    const uint8_t *key = data + 1;
    fuzz_record((enum record_type)(sel % nrec + 1), reseal, key, klen, key + klen, size - 1 - klen);
    return 0;
}
