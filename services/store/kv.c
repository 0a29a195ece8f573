/* kv — the store's state machine on RocksDB (see kv.h for the model, record.h for the layout).
 *
 * Write path. kv_apply() creates one RocksDB WriteBatchWithIndex for the whole group and applies
 * the ops one after the other into it. Reads made while applying (a Put's previous value, Txn
 * compares, a Range inside a Txn, a DeleteRange's keys) go through the batch onto the database,
 * so each op sees the writes of the ops before it although nothing is durable yet. Each op starts
 * with a save point: an op that fails half-way (a corrupt record met after some writes) is rolled
 * back and changes nothing. At the end the batch, plus the StoredMeta record when revision,
 * compact revision or next lease id moved, is written once with sync = true; only then does the
 * in-memory state (revision, key count, lease table) move forward. If that write fails, nothing
 * moved and every op reports -EIO.
 *
 * Invariants:
 *  - meta.revision is the revision of the last write op that changed a key; every Event of
 *    revision r is stored at events[r, seq] and written in the same batch as its change.
 *  - events with revision <= compact_revision are gone or being deleted (the range delete runs
 *    after the durable write and again at open; it is idempotent) and are never read.
 *  - a key attached to lease L has an index record meta["lk/" L key]; revoking L deletes exactly
 *    the keys of those records whose KeyValue.lease is still L.
 *  - the lease table in memory holds exactly the leases in meta["lease/" id], with deadlines.
 *
 * Corruption. Records carry a CRC32C; a record that fails it is reported as -EIO naming the
 * column family and key (kv_error(), or the op's result message) and is never trusted. A
 * DeleteRange or lease revoke still removes a corrupt key, so an operator can repair by deleting.
 *
 * Called by server.c (the daemon) and tests/unit/store_kv.c. Single-threaded. */
#include "kv.h"

#include <czmq.h>
#include <errno.h>
#include <limits.h>
#include <rocksdb/c.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "log.h"
#include "record.h"

enum { CF_DEFAULT, CF_KV, CF_EVENTS, CF_META, CF_LOG, CF_COUNT };
static const char *const cf_names[CF_COUNT] = {"default", "kv", "events", "meta", "log"};

#define KV_MAX_TTL_MS        (1000LL * 3600 * 24 * 365 * 10)
#define KV_MAX_LEASE_ID      (1LL << 62) /* ids are picked upwards from here without overflow */
#define KV_WATCH_SCAN_BUDGET 100000      /* events looked at by one Watch read */

typedef struct lease_entry {
    int64_t id, ttl_ms, deadline_ms;
} lease_entry_t;

struct kv {
    rocksdb_t *db;
    rocksdb_options_t *options;
    rocksdb_column_family_handle_t *cf[CF_COUNT];
    rocksdb_readoptions_t *ropts;
    rocksdb_writeoptions_t *wsync, *wnosync;
    int64_t revision, compact_revision, next_lease_id;
    int64_t history;
    int64_t keys;
    lease_entry_t *leases; /* sorted by id */
    size_t n_leases, cap_leases;
    uint64_t fsyncs_total, ops_total;
    arena_t *scratch;
    char err[512];
};

/* Reads either the database alone or, while applying, the pending batch over the database. */
typedef struct reader {
    kv_t *kv;
    rocksdb_writebatch_wi_t *wb;
} reader_t;

/* A key range: one key, [start, end), or [start, inf). */
typedef struct krange {
    const char *start;
    size_t slen;
    const char *end;
    size_t elen;
    bool single, open;
} krange_t;

static int kv_fail(kv_t *self, int rc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int kv_fail(kv_t *self, int rc, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(self->err, sizeof self->err, fmt, ap);
    va_end(ap);
    return rc;
}

const char *kv_error(const kv_t *self) {
    return self->err;
}

/* ---- lease table ------------------------------------------------------------------------- */

static ssize_t lease_find(const kv_t *self, int64_t id) {
    size_t lo = 0, hi = self->n_leases;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (self->leases[mid].id < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < self->n_leases && self->leases[lo].id == id ? (ssize_t)lo : -1;
}

static int lease_insert(kv_t *self, int64_t id, int64_t ttl_ms, int64_t deadline_ms) {
    ssize_t at = lease_find(self, id);
    if (at >= 0) {
        self->leases[at].ttl_ms = ttl_ms;
        self->leases[at].deadline_ms = deadline_ms;
        return 0;
    }
    if (self->n_leases == self->cap_leases) {
        size_t cap = self->cap_leases ? self->cap_leases * 2 : 64;
        lease_entry_t *l = realloc(self->leases, cap * sizeof *l);
        if (!l)
            return -ENOMEM;
        self->leases = l;
        self->cap_leases = cap;
    }
    size_t pos = self->n_leases;
    while (pos > 0 && self->leases[pos - 1].id > id)
        pos--;
    memmove(&self->leases[pos + 1], &self->leases[pos],
            (self->n_leases - pos) * sizeof(lease_entry_t));
    self->leases[pos] = (lease_entry_t){id, ttl_ms, deadline_ms};
    self->n_leases++;
    return 0;
}

static void lease_remove(kv_t *self, int64_t id) {
    ssize_t at = lease_find(self, id);
    if (at < 0)
        return;
    memmove(&self->leases[at], &self->leases[at + 1],
            (self->n_leases - (size_t)at - 1) * sizeof(lease_entry_t));
    self->n_leases--;
}

/* ---- ranges ------------------------------------------------------------------------------ */

static int bytes_cmp(const char *a, size_t alen, const char *b, size_t blen) {
    int c = memcmp(a, b, alen < blen ? alen : blen);
    if (c)
        return c;
    return alen < blen ? -1 : alen > blen;
}

static int krange_parse(kv_t *self, arena_t *a, const char *what, const char *key,
                        const char *range_end, bool prefix, krange_t *out) {
    key = key ? key : "";
    range_end = range_end ? range_end : "";
    memset(out, 0, sizeof *out);
    out->start = key;
    out->slen = strlen(key);
    if (prefix && *range_end)
        return kv_fail(self, -EINVAL,
                       "%s: prefix and range_end cannot both be set (key \"%.200s\")", what, key);
    if (prefix) {
        /* the prefix's successor: drop trailing 0xff bytes, increment the last one */
        size_t n = out->slen;
        while (n > 0 && (unsigned char)key[n - 1] == 0xff)
            n--;
        if (n == 0) {
            out->open = true;
        } else {
            char *end = arena_strndup(a, key, n);
            end[n - 1] = (char)((unsigned char)end[n - 1] + 1);
            out->end = end;
            out->elen = n;
        }
        return 0;
    }
    if (!*key)
        return kv_fail(self, -EINVAL, "%s: empty key", what);
    if (*range_end) {
        if (strcmp(range_end, key) < 0)
            return kv_fail(self, -EINVAL, "%s: range_end \"%.200s\" sorts before key \"%.200s\"",
                           what, range_end, key);
        out->end = range_end;
        out->elen = strlen(range_end);
        return 0;
    }
    out->single = true;
    return 0;
}

/* -1: key before the range, 0: inside, 1: after it. */
static int krange_where(const krange_t *r, const char *key, size_t klen) {
    int c = bytes_cmp(key, klen, r->start, r->slen);
    if (c < 0)
        return -1;
    if (r->single)
        return c == 0 ? 0 : 1;
    if (r->open)
        return 0;
    return bytes_cmp(key, klen, r->end, r->elen) < 0 ? 0 : 1;
}

/* ---- reading records --------------------------------------------------------------------- */

/* 0 with the value copied into the arena, -ENOENT, or -EIO (RocksDB failed). */
static int reader_get(reader_t *r, int cf, const void *key, size_t klen, arena_t *a, uint8_t **ret,
                      size_t *ret_len) {
    kv_t *self = r->kv;
    char *err = NULL;
    size_t vlen = 0;
    char *val;
    if (r->wb)
        val = rocksdb_writebatch_wi_get_from_batch_and_db_cf(r->wb, self->db, self->ropts,
                                                             self->cf[cf], key, klen, &vlen, &err);
    else
        val = rocksdb_get_cf(self->db, self->ropts, self->cf[cf], key, klen, &vlen, &err);
    if (err) {
        kv_fail(self, -EIO, "rocksdb read failed cf=%s: %s", cf_names[cf], err);
        rocksdb_free(err);
        return -EIO;
    }
    if (!val)
        return -ENOENT;
    *ret = arena_memdup(a, val, vlen);
    *ret_len = vlen;
    rocksdb_free(val);
    return 0;
}

static rocksdb_iterator_t *reader_iter(reader_t *r, int cf) {
    rocksdb_iterator_t *it = rocksdb_create_iterator_cf(r->kv->db, r->kv->ropts, r->kv->cf[cf]);
    if (r->wb)
        it = rocksdb_writebatch_wi_create_iterator_with_base_cf(r->wb, it, r->kv->cf[cf]);
    return it;
}

static int iter_error(kv_t *self, rocksdb_iterator_t *it, int cf) {
    char *err = NULL;
    rocksdb_iter_get_error(it, &err);
    if (!err)
        return 0;
    kv_fail(self, -EIO, "rocksdb iteration failed cf=%s: %s", cf_names[cf], err);
    rocksdb_free(err);
    return -EIO;
}

static int corrupt_kv(kv_t *self, const char *key, size_t klen) {
    log_err("corrupt record cf=kv key=\"%.*s\"", (int)(klen > 200 ? 200 : klen), key);
    return kv_fail(self, -EIO,
                   "corrupt record in the store: cf=kv key \"%.*s\" fails its checksum or format "
                   "check; delete the key to repair",
                   (int)(klen > 200 ? 200 : klen), key);
}

/* 0 with *ret, -ENOENT, or -EIO. */
static int get_kv(reader_t *r, arena_t *a, const char *key, Shoal__Store__KeyValue **ret) {
    uint8_t *val;
    size_t vlen, klen = strlen(key);
    int rc = reader_get(r, CF_KV, key, klen, a, &val, &vlen);
    if (rc < 0)
        return rc;
    if (record_decode_kv(a, key, klen, val, vlen, ret) < 0)
        return corrupt_kv(r->kv, key, klen);
    return 0;
}

static Shoal__Store__ResponseHeader *header_new(arena_t *a, int64_t revision) {
    Shoal__Store__ResponseHeader *h = arena_alloc(a, sizeof *h);
    shoal__store__response_header__init(h);
    h->revision = revision;
    h->member_id = 1;
    return h;
}

/* Range over reader r; the response's header is left to the caller. */
static int do_range(reader_t *r, const Shoal__Store__RangeRequest *req, arena_t *a,
                    Shoal__Store__RangeResponse **ret) {
    kv_t *self = r->kv;
    krange_t kr;
    int rc = krange_parse(self, a, "range", req->key, req->range_end, req->prefix, &kr);
    if (rc < 0)
        return rc;
    if (req->limit < 0)
        return kv_fail(self, -EINVAL, "range: limit must be >= 0 (got %lld)",
                       (long long)req->limit);
    Shoal__Store__RangeResponse *resp = arena_alloc(a, sizeof *resp);
    shoal__store__range_response__init(resp);
    arena_vec_t kvs = {0};
    if (kr.single) {
        Shoal__Store__KeyValue *kv;
        rc = get_kv(r, a, kr.start, &kv);
        if (rc == -ENOENT)
            rc = 0;
        else if (rc < 0)
            return rc;
        else {
            resp->count = 1;
            if (!req->count_only)
                arena_vec_push(a, &kvs, kv);
        }
    } else {
        rocksdb_iterator_t *it = reader_iter(r, CF_KV);
        rocksdb_iter_seek(it, kr.start, kr.slen);
        for (; rocksdb_iter_valid(it); rocksdb_iter_next(it)) {
            size_t klen, vlen;
            const char *k = rocksdb_iter_key(it, &klen);
            int where = krange_where(&kr, k, klen);
            if (where > 0)
                break;
            if (where < 0)
                continue;
            resp->count++;
            if (req->count_only)
                continue;
            if (req->limit && (int64_t)kvs.n >= req->limit) {
                resp->more = true;
                continue;
            }
            const char *v = rocksdb_iter_value(it, &vlen);
            Shoal__Store__KeyValue *kv;
            if (record_decode_kv(a, k, klen, (const uint8_t *)v, vlen, &kv) < 0) {
                rc = corrupt_kv(self, k, klen);
                break;
            }
            arena_vec_push(a, &kvs, kv);
        }
        if (rc == 0)
            rc = iter_error(self, it, CF_KV);
        rocksdb_iter_destroy(it);
        if (rc < 0)
            return rc;
    }
    if (req->keys_only)
        for (size_t i = 0; i < kvs.n; i++) {
            Shoal__Store__KeyValue *kv = kvs.items[i];
            kv->value.data = NULL;
            kv->value.len = 0;
        }
    resp->kvs = (Shoal__Store__KeyValue **)kvs.items;
    resp->n_kvs = kvs.n;
    *ret = resp;
    return 0;
}

int kv_range(kv_t *self, const Shoal__Store__RangeRequest *req, arena_t *a,
             Shoal__Store__RangeResponse **ret) {
    reader_t r = {self, NULL};
    int64_t rev = self->revision;
    int rc = do_range(&r, req, a, ret);
    if (rc == 0)
        (*ret)->header = header_new(a, rev);
    return rc;
}

/* ---- watch ------------------------------------------------------------------------------- */

int kv_watch_read(kv_t *self, const Shoal__Store__WatchRequest *req, int64_t start_revision,
                  arena_t *a, Shoal__Store__WatchResponse **ret) {
    krange_t kr;
    int rc = krange_parse(self, a, "watch", req->key, req->range_end, req->prefix, &kr);
    if (rc < 0)
        return rc;
    if (start_revision < 0)
        return kv_fail(self, -EINVAL, "watch: start_revision must be >= 0 (got %lld)",
                       (long long)start_revision);
    int64_t now = self->revision;
    int64_t start = start_revision ? start_revision : now + 1;
    Shoal__Store__WatchResponse *resp = arena_alloc(a, sizeof *resp);
    shoal__store__watch_response__init(resp);
    resp->header = header_new(a, now);
    resp->compact_revision = self->compact_revision;
    if (start <= self->compact_revision) {
        resp->compacted = true;
        resp->next_revision = start;
        *ret = resp;
        return 0;
    }
    size_t max = req->max_events ? req->max_events : KV_WATCH_DEFAULT_EVENTS;
    if (max > KV_WATCH_MAX_EVENTS)
        max = KV_WATCH_MAX_EVENTS;
    resp->next_revision = start > now + 1 ? start : now + 1;
    arena_vec_t events = {0};
    if (start <= now) {
        uint8_t seek[RECORD_EVENT_KEY_LEN];
        record_event_key(seek, start, 0);
        rocksdb_iterator_t *it =
            rocksdb_create_iterator_cf(self->db, self->ropts, self->cf[CF_EVENTS]);
        rocksdb_iter_seek(it, (const char *)seek, sizeof seek);
        int64_t cur = 0;
        size_t scanned = 0;
        for (; rocksdb_iter_valid(it); rocksdb_iter_next(it)) {
            size_t klen, vlen;
            const char *k = rocksdb_iter_key(it, &klen);
            int64_t rev;
            uint32_t seq;
            if (record_event_key_parse(k, klen, &rev, &seq) < 0) {
                rc = kv_fail(self, -EIO,
                             "corrupt record in the store: cf=events bad key (%zu bytes)", klen);
                break;
            }
            if (rev > now)
                break;
            if (rev != cur) {
                /* a revision boundary: the only place where a reply may be cut */
                if (events.n >= max || scanned >= KV_WATCH_SCAN_BUDGET) {
                    resp->next_revision = rev;
                    break;
                }
                cur = rev;
            }
            scanned++;
            const char *v = rocksdb_iter_value(it, &vlen);
            Shoal__Store__Event *ev;
            if (record_decode_event(a, k, klen, (const uint8_t *)v, vlen, &ev) < 0) {
                log_err("corrupt record cf=events revision=%lld seq=%u", (long long)rev, seq);
                rc = kv_fail(self, -EIO,
                             "corrupt record in the store: cf=events revision %lld seq %u fails "
                             "its checksum or format check",
                             (long long)rev, seq);
                break;
            }
            if (krange_where(&kr, ev->kv->key, strlen(ev->kv->key)) != 0)
                continue;
            if (!req->prev_kv)
                ev->prev_kv = NULL;
            arena_vec_push(a, &events, ev);
        }
        if (rc == 0)
            rc = iter_error(self, it, CF_EVENTS);
        rocksdb_iter_destroy(it);
        if (rc < 0)
            return rc;
    }
    resp->events = (Shoal__Store__Event **)events.items;
    resp->n_events = events.n;
    *ret = resp;
    return 0;
}

/* ---- applying writes --------------------------------------------------------------------- */

typedef struct lease_change {
    int64_t id, ttl_ms; /* ttl 0: revoked */
} lease_change_t;

typedef struct apply {
    kv_t *kv;
    reader_t r;
    rocksdb_writebatch_wi_t *wb;
    arena_t *a;
    int64_t rev; /* revision after the ops applied so far */
    int64_t compact_rev;
    int64_t next_lease_id;
    int64_t keys_delta;
    bool meta_dirty;
    arena_vec_t lease_changes;
    /* the write transaction being applied */
    int64_t txn_rev;
    uint32_t seq;
    bool changed;
} apply_t;

static void txn_begin(apply_t *ap) {
    ap->txn_rev = ap->rev + 1;
    ap->seq = 0;
    ap->changed = false;
}

static void txn_end(apply_t *ap) {
    if (ap->changed)
        ap->rev = ap->txn_rev;
}

static void wb_put(apply_t *ap, int cf, const void *key, size_t klen, const uint8_t *val,
                   size_t vlen) {
    rocksdb_writebatch_wi_put_cf(ap->wb, ap->kv->cf[cf], key, klen, (const char *)val, vlen);
}

static void wb_del(apply_t *ap, int cf, const void *key, size_t klen) {
    rocksdb_writebatch_wi_delete_cf(ap->wb, ap->kv->cf[cf], key, klen);
}

static void put_event(apply_t *ap, Shoal__Store__Event__Type type, Shoal__Store__KeyValue *kv,
                      Shoal__Store__KeyValue *prev) {
    Shoal__Store__Event ev = SHOAL__STORE__EVENT__INIT;
    ev.type = type;
    ev.kv = kv;
    ev.prev_kv = prev;
    uint8_t key[RECORD_EVENT_KEY_LEN];
    record_event_key(key, ap->txn_rev, ap->seq++);
    uint8_t *val;
    size_t vlen;
    record_encode(ap->a, RECORD_EVENT, key, sizeof key, &ev.base, &val, &vlen);
    wb_put(ap, CF_EVENTS, key, sizeof key, val, vlen);
    ap->changed = true;
}

static void lk_put(apply_t *ap, int64_t id, const char *key) {
    size_t klen, vlen;
    uint8_t *k = record_lk_key(ap->a, id, key, &klen), *val;
    record_encode(ap->a, RECORD_LEASE_KEY, k, klen, NULL, &val, &vlen);
    wb_put(ap, CF_META, k, klen, val, vlen);
}

static void lk_del(apply_t *ap, int64_t id, const char *key) {
    size_t klen;
    uint8_t *k = record_lk_key(ap->a, id, key, &klen);
    wb_del(ap, CF_META, k, klen);
}

/* 1 when lease `id` exists (in the batch or the database), 0 when not, -EIO. */
static int lease_exists(apply_t *ap, int64_t id) {
    uint8_t key[RECORD_LEASE_KEY_LEN], *val;
    size_t vlen;
    record_lease_key(key, id);
    int rc = reader_get(&ap->r, CF_META, key, sizeof key, ap->a, &val, &vlen);
    if (rc == -ENOENT)
        return 0;
    return rc < 0 ? rc : 1;
}

static Shoal__Store__KeyValue *kv_copy_meta(arena_t *a, const char *key, int64_t mod_revision) {
    Shoal__Store__KeyValue *kv = arena_alloc(a, sizeof *kv);
    shoal__store__key_value__init(kv);
    kv->key = (char *)key;
    kv->mod_revision = mod_revision;
    return kv;
}

static int do_put(apply_t *ap, const Shoal__Store__PutRequest *req,
                  Shoal__Store__PutResponse **ret) {
    Shoal__Store__KeyValue *prev = NULL;
    int rc = get_kv(&ap->r, ap->a, req->key, &prev);
    if (rc == -ENOENT)
        prev = NULL;
    else if (rc < 0)
        return rc;
    Shoal__Store__KeyValue *kv = arena_alloc(ap->a, sizeof *kv);
    shoal__store__key_value__init(kv);
    kv->key = arena_strdup(ap->a, req->key);
    kv->value = req->value;
    kv->create_revision = prev ? prev->create_revision : ap->txn_rev;
    kv->mod_revision = ap->txn_rev;
    kv->version = prev ? prev->version + 1 : 1;
    kv->lease = req->lease;
    int64_t old_lease = prev ? prev->lease : 0;
    if (old_lease && old_lease != req->lease)
        lk_del(ap, old_lease, kv->key);
    if (req->lease && req->lease != old_lease)
        lk_put(ap, req->lease, kv->key);
    uint8_t *val;
    size_t vlen;
    record_encode_kv(ap->a, kv, &val, &vlen);
    wb_put(ap, CF_KV, kv->key, strlen(kv->key), val, vlen);
    put_event(ap, SHOAL__STORE__EVENT__TYPE__PUT, kv, prev);
    if (!prev)
        ap->keys_delta++;
    Shoal__Store__PutResponse *resp = arena_alloc(ap->a, sizeof *resp);
    shoal__store__put_response__init(resp);
    if (req->prev_kv)
        resp->prev_kv = prev;
    *ret = resp;
    return 0;
}

/* Deletes one key known to exist; prev is NULL when its record is corrupt. */
static void delete_key(apply_t *ap, const char *key, Shoal__Store__KeyValue *prev) {
    wb_del(ap, CF_KV, key, strlen(key));
    if (prev && prev->lease)
        lk_del(ap, prev->lease, key);
    put_event(ap, SHOAL__STORE__EVENT__TYPE__DELETE, kv_copy_meta(ap->a, key, ap->txn_rev), prev);
    ap->keys_delta--;
}

static int do_delete(apply_t *ap, const Shoal__Store__DeleteRangeRequest *req,
                     Shoal__Store__DeleteRangeResponse **ret) {
    kv_t *self = ap->kv;
    krange_t kr;
    int rc = krange_parse(self, ap->a, "delete", req->key, req->range_end, req->prefix, &kr);
    if (rc < 0)
        return rc;
    /* collect first: the batch must not change under its own iterator */
    arena_vec_t keys = {0}, prevs = {0};
    if (kr.single) {
        Shoal__Store__KeyValue *prev;
        rc = get_kv(&ap->r, ap->a, kr.start, &prev);
        if (rc == 0 || rc == -EIO) {
            arena_vec_push(ap->a, &keys, (void *)kr.start);
            arena_vec_push(ap->a, &prevs, rc == 0 ? prev : NULL);
        } else if (rc != -ENOENT) {
            return rc;
        }
        rc = 0;
    } else {
        rocksdb_iterator_t *it = reader_iter(&ap->r, CF_KV);
        rocksdb_iter_seek(it, kr.start, kr.slen);
        for (; rocksdb_iter_valid(it); rocksdb_iter_next(it)) {
            size_t klen, vlen;
            const char *k = rocksdb_iter_key(it, &klen);
            int where = krange_where(&kr, k, klen);
            if (where > 0)
                break;
            if (where < 0)
                continue;
            const char *v = rocksdb_iter_value(it, &vlen);
            Shoal__Store__KeyValue *prev = NULL;
            if (record_decode_kv(ap->a, k, klen, (const uint8_t *)v, vlen, &prev) < 0) {
                log_warn("deleting corrupt record cf=kv key=\"%.*s\"",
                         (int)(klen > 200 ? 200 : klen), k);
                prev = NULL;
            }
            arena_vec_push(ap->a, &keys, arena_strndup(ap->a, k, klen));
            arena_vec_push(ap->a, &prevs, prev);
        }
        rc = iter_error(self, it, CF_KV);
        rocksdb_iter_destroy(it);
        if (rc < 0)
            return rc;
    }
    Shoal__Store__DeleteRangeResponse *resp = arena_alloc(ap->a, sizeof *resp);
    shoal__store__delete_range_response__init(resp);
    arena_vec_t out = {0};
    for (size_t i = 0; i < keys.n; i++) {
        delete_key(ap, keys.items[i], prevs.items[i]);
        if (req->prev_kv && prevs.items[i])
            arena_vec_push(ap->a, &out, prevs.items[i]);
    }
    resp->deleted = (int64_t)keys.n;
    resp->prev_kvs = (Shoal__Store__KeyValue **)out.items;
    resp->n_prev_kvs = out.n;
    *ret = resp;
    return 0;
}

/* ---- txn --------------------------------------------------------------------------------- */

static int check_put(kv_t *self, const char *what, const Shoal__Store__PutRequest *p) {
    if (!p->key || !*p->key)
        return kv_fail(self, -EINVAL, "%s: empty key", what);
    if (p->lease < 0)
        return kv_fail(self, -EINVAL, "%s: lease must be >= 0 (got %lld)", what,
                       (long long)p->lease);
    return 0;
}

/* Syntax of one branch: every op is set and well formed. */
static int check_ops(kv_t *self, arena_t *a, const char *branch, Shoal__Store__RequestOp **ops,
                     size_t n) {
    for (size_t i = 0; i < n; i++) {
        char what[64];
        snprintf(what, sizeof what, "txn %s[%zu]", branch, i);
        const Shoal__Store__RequestOp *op = ops[i];
        krange_t kr;
        int rc = 0;
        switch (op->request_case) {
        case SHOAL__STORE__REQUEST_OP__REQUEST_RANGE:
            rc = krange_parse(self, a, what, op->range->key, op->range->range_end,
                              op->range->prefix, &kr);
            if (rc == 0 && op->range->limit < 0)
                rc = kv_fail(self, -EINVAL, "%s: limit must be >= 0", what);
            break;
        case SHOAL__STORE__REQUEST_OP__REQUEST_PUT:
            rc = check_put(self, what, op->put);
            break;
        case SHOAL__STORE__REQUEST_OP__REQUEST_DELETE_RANGE:
            rc = krange_parse(self, a, what, op->delete_range->key, op->delete_range->range_end,
                              op->delete_range->prefix, &kr);
            break;
        default:
            rc = kv_fail(self, -EINVAL, "%s: no operation set", what);
        }
        if (rc < 0)
            return rc;
    }
    return 0;
}

/* What etcd rejects as well: one branch writing a key twice (two puts, or a put inside a deleted
 * range), which would make the key's version and the event order ambiguous. Plus every lease a
 * put names must exist. */
static int check_branch(apply_t *ap, const char *branch, Shoal__Store__RequestOp **ops, size_t n) {
    kv_t *self = ap->kv;
    zhashx_t *puts = NULL;
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        if (ops[i]->request_case != SHOAL__STORE__REQUEST_OP__REQUEST_PUT)
            continue;
        const Shoal__Store__PutRequest *p = ops[i]->put;
        if (!puts)
            puts = zhashx_new();
        if (zhashx_insert(puts, p->key, p->key) < 0) {
            rc = kv_fail(self, -EINVAL, "txn %s: key \"%.200s\" is written twice", branch, p->key);
            break;
        }
        if (p->lease) {
            int ex = lease_exists(ap, p->lease);
            if (ex < 0)
                rc = ex;
            else if (!ex)
                rc =
                    kv_fail(self, -ENOENT, "txn %s[%zu]: lease %lld not found (expired or revoked)",
                            branch, i, (long long)p->lease);
        }
    }
    for (size_t i = 0; i < n && rc == 0 && puts; i++) {
        if (ops[i]->request_case != SHOAL__STORE__REQUEST_OP__REQUEST_DELETE_RANGE)
            continue;
        const Shoal__Store__DeleteRangeRequest *d = ops[i]->delete_range;
        krange_t kr;
        rc = krange_parse(self, ap->a, "txn", d->key, d->range_end, d->prefix, &kr);
        for (const char *k = zhashx_first(puts); k && rc == 0; k = zhashx_next(puts)) {
            if (krange_where(&kr, k, strlen(k)) == 0)
                rc = kv_fail(self, -EINVAL, "txn %s: key \"%.200s\" is both put and deleted",
                             branch, k);
        }
    }
    zhashx_destroy(&puts);
    return rc;
}

static int eval_compare(apply_t *ap, const Shoal__Store__Compare *c, size_t i, bool *ret) {
    kv_t *self = ap->kv;
    if (!c->key || !*c->key)
        return kv_fail(self, -EINVAL, "txn compare[%zu]: empty key", i);
    if ((int)c->target < 0 || c->target > SHOAL__STORE__COMPARE__TARGET__LEASE)
        return kv_fail(self, -EINVAL, "txn compare[%zu]: unknown target %d", i, (int)c->target);
    if ((int)c->result < 0 || c->result > SHOAL__STORE__COMPARE__RESULT__NOT_EQUAL)
        return kv_fail(self, -EINVAL, "txn compare[%zu]: unknown result %d", i, (int)c->result);
    Shoal__Store__KeyValue *kv = NULL, zero = SHOAL__STORE__KEY_VALUE__INIT;
    int rc = get_kv(&ap->r, ap->a, c->key, &kv);
    if (rc == -ENOENT) {
        if (c->target == SHOAL__STORE__COMPARE__TARGET__VALUE) {
            *ret = false; /* a missing key has no value to compare (etcd) */
            return 0;
        }
        kv = &zero;
    } else if (rc < 0) {
        return rc;
    }
    int cmp;
    int64_t have = 0;
    switch (c->target) {
    case SHOAL__STORE__COMPARE__TARGET__VERSION:
        have = kv->version;
        break;
    case SHOAL__STORE__COMPARE__TARGET__CREATE:
        have = kv->create_revision;
        break;
    case SHOAL__STORE__COMPARE__TARGET__MOD:
        have = kv->mod_revision;
        break;
    case SHOAL__STORE__COMPARE__TARGET__LEASE:
        have = kv->lease;
        break;
    default:
        break;
    }
    if (c->target == SHOAL__STORE__COMPARE__TARGET__VALUE) {
        size_t n = kv->value.len < c->value.len ? kv->value.len : c->value.len;
        cmp = n ? memcmp(kv->value.data, c->value.data, n) : 0;
        if (!cmp)
            cmp = kv->value.len < c->value.len ? -1 : kv->value.len > c->value.len;
    } else {
        cmp = have < c->number ? -1 : have > c->number;
    }
    switch (c->result) {
    case SHOAL__STORE__COMPARE__RESULT__EQUAL:
        *ret = cmp == 0;
        break;
    case SHOAL__STORE__COMPARE__RESULT__GREATER:
        *ret = cmp > 0;
        break;
    case SHOAL__STORE__COMPARE__RESULT__LESS:
        *ret = cmp < 0;
        break;
    default:
        *ret = cmp != 0;
        break;
    }
    return 0;
}

/* Header revisions of a txn's responses are set once the txn is over (they share one header). */
static int do_txn(apply_t *ap, const Shoal__Store__TxnRequest *req,
                  Shoal__Store__TxnResponse **ret) {
    kv_t *self = ap->kv;
    int rc = check_ops(self, ap->a, "success", req->success, req->n_success);
    if (rc == 0)
        rc = check_ops(self, ap->a, "failure", req->failure, req->n_failure);
    if (rc < 0)
        return rc;
    bool ok = true;
    for (size_t i = 0; i < req->n_compare && ok; i++) {
        rc = eval_compare(ap, req->compare[i], i, &ok);
        if (rc < 0)
            return rc;
    }
    Shoal__Store__RequestOp **ops = ok ? req->success : req->failure;
    size_t n = ok ? req->n_success : req->n_failure;
    rc = check_branch(ap, ok ? "success" : "failure", ops, n);
    if (rc < 0)
        return rc;

    Shoal__Store__TxnResponse *resp = arena_alloc(ap->a, sizeof *resp);
    shoal__store__txn_response__init(resp);
    Shoal__Store__ResponseHeader *h = header_new(ap->a, 0);
    resp->header = h;
    resp->succeeded = ok;
    resp->responses = arena_alloc(ap->a, (n ? n : 1) * sizeof *resp->responses);
    txn_begin(ap);
    for (size_t i = 0; i < n; i++) {
        Shoal__Store__ResponseOp *ro = arena_alloc(ap->a, sizeof *ro);
        shoal__store__response_op__init(ro);
        switch (ops[i]->request_case) {
        case SHOAL__STORE__REQUEST_OP__REQUEST_RANGE:
            rc = do_range(&ap->r, ops[i]->range, ap->a, &ro->range);
            if (rc == 0)
                ro->range->header = h;
            ro->response_case = SHOAL__STORE__RESPONSE_OP__RESPONSE_RANGE;
            break;
        case SHOAL__STORE__REQUEST_OP__REQUEST_PUT:
            rc = do_put(ap, ops[i]->put, &ro->put);
            if (rc == 0)
                ro->put->header = h;
            ro->response_case = SHOAL__STORE__RESPONSE_OP__RESPONSE_PUT;
            break;
        default:
            rc = do_delete(ap, ops[i]->delete_range, &ro->delete_range);
            if (rc == 0)
                ro->delete_range->header = h;
            ro->response_case = SHOAL__STORE__RESPONSE_OP__RESPONSE_DELETE_RANGE;
            break;
        }
        if (rc < 0)
            return rc;
        resp->responses[resp->n_responses++] = ro;
    }
    txn_end(ap);
    h->revision = ap->rev;
    *ret = resp;
    return 0;
}

/* ---- leases and compaction --------------------------------------------------------------- */

static int do_lease_grant(apply_t *ap, const Shoal__Store__LeaseGrantRequest *req,
                          Shoal__Store__LeaseGrantResponse **ret) {
    kv_t *self = ap->kv;
    if (req->ttl_ms <= 0 || req->ttl_ms > KV_MAX_TTL_MS)
        return kv_fail(self, -EINVAL, "lease grant: ttl_ms must be in 1..%lld (got %lld)",
                       (long long)KV_MAX_TTL_MS, (long long)req->ttl_ms);
    if (req->id < 0 || req->id > KV_MAX_LEASE_ID)
        return kv_fail(self, -EINVAL, "lease grant: id must be in 0..%lld (got %lld)",
                       (long long)KV_MAX_LEASE_ID, (long long)req->id);
    int64_t id = req->id;
    int ex;
    if (id == 0) {
        id = ap->next_lease_id;
        while ((ex = lease_exists(ap, id)) == 1)
            id++;
        if (ex < 0)
            return ex;
    } else {
        ex = lease_exists(ap, id);
        if (ex < 0)
            return ex;
        if (ex)
            return kv_fail(self, -EEXIST, "lease grant: lease %lld already exists", (long long)id);
    }
    Shoal__Store__StoredLease sl = SHOAL__STORE__STORED_LEASE__INIT;
    sl.id = id;
    sl.ttl_ms = req->ttl_ms;
    uint8_t key[RECORD_LEASE_KEY_LEN], *val;
    size_t vlen;
    record_lease_key(key, id);
    record_encode(ap->a, RECORD_LEASE, key, sizeof key, &sl.base, &val, &vlen);
    wb_put(ap, CF_META, key, sizeof key, val, vlen);
    if (id >= ap->next_lease_id) {
        ap->next_lease_id = id + 1;
        ap->meta_dirty = true;
    }
    lease_change_t *lc = arena_alloc(ap->a, sizeof *lc);
    *lc = (lease_change_t){id, req->ttl_ms};
    arena_vec_push(ap->a, &ap->lease_changes, lc);
    Shoal__Store__LeaseGrantResponse *resp = arena_alloc(ap->a, sizeof *resp);
    shoal__store__lease_grant_response__init(resp);
    resp->header = header_new(ap->a, ap->rev);
    resp->id = id;
    resp->ttl_ms = req->ttl_ms;
    *ret = resp;
    return 0;
}

static int do_lease_revoke(apply_t *ap, const Shoal__Store__LeaseRevokeRequest *req,
                           Shoal__Store__LeaseRevokeResponse **ret) {
    kv_t *self = ap->kv;
    int64_t id = req->id;
    int ex = id > 0 ? lease_exists(ap, id) : 0;
    if (ex < 0)
        return ex;
    if (!ex)
        return kv_fail(self, -ENOENT, "lease revoke: lease %lld not found (expired or revoked)",
                       (long long)id);
    size_t plen;
    uint8_t *prefix = record_lk_key(ap->a, id, NULL, &plen);
    arena_vec_t keys = {0};
    rocksdb_iterator_t *it = reader_iter(&ap->r, CF_META);
    rocksdb_iter_seek(it, (const char *)prefix, plen);
    for (; rocksdb_iter_valid(it); rocksdb_iter_next(it)) {
        size_t klen;
        const char *k = rocksdb_iter_key(it, &klen);
        if (klen <= plen || memcmp(k, prefix, plen))
            break;
        arena_vec_push(ap->a, &keys, arena_strndup(ap->a, k + plen, klen - plen));
    }
    int rc = iter_error(self, it, CF_META);
    rocksdb_iter_destroy(it);
    if (rc < 0)
        return rc;
    txn_begin(ap);
    for (size_t i = 0; i < keys.n; i++) {
        const char *key = keys.items[i];
        lk_del(ap, id, key);
        Shoal__Store__KeyValue *kv;
        rc = get_kv(&ap->r, ap->a, key, &kv);
        if (rc == 0 && kv->lease == id) {
            wb_del(ap, CF_KV, key, strlen(key));
            put_event(ap, SHOAL__STORE__EVENT__TYPE__DELETE, kv_copy_meta(ap->a, key, ap->txn_rev),
                      kv);
            ap->keys_delta--;
        } else if (rc == -EIO) {
            log_warn("deleting corrupt record of revoked lease cf=kv key=\"%.200s\" lease=%lld",
                     key, (long long)id);
            wb_del(ap, CF_KV, key, strlen(key));
            put_event(ap, SHOAL__STORE__EVENT__TYPE__DELETE, kv_copy_meta(ap->a, key, ap->txn_rev),
                      NULL);
            ap->keys_delta--;
        }
        /* -ENOENT or another lease by now: a stale index record, dropped above */
    }
    uint8_t lkey[RECORD_LEASE_KEY_LEN];
    record_lease_key(lkey, id);
    wb_del(ap, CF_META, lkey, sizeof lkey);
    txn_end(ap);
    lease_change_t *lc = arena_alloc(ap->a, sizeof *lc);
    *lc = (lease_change_t){id, 0};
    arena_vec_push(ap->a, &ap->lease_changes, lc);
    Shoal__Store__LeaseRevokeResponse *resp = arena_alloc(ap->a, sizeof *resp);
    shoal__store__lease_revoke_response__init(resp);
    resp->header = header_new(ap->a, ap->rev);
    *ret = resp;
    return 0;
}

static int do_compact(apply_t *ap, const Shoal__Store__CompactRequest *req,
                      Shoal__Store__CompactResponse **ret) {
    kv_t *self = ap->kv;
    if (req->revision <= 0)
        return kv_fail(self, -EINVAL, "compact: revision must be > 0 (got %lld)",
                       (long long)req->revision);
    if (req->revision > ap->rev)
        return kv_fail(self, -EINVAL, "compact: revision %lld is in the future (current %lld)",
                       (long long)req->revision, (long long)ap->rev);
    if (req->revision > ap->compact_rev) {
        ap->compact_rev = req->revision;
        ap->meta_dirty = true;
    }
    Shoal__Store__CompactResponse *resp = arena_alloc(ap->a, sizeof *resp);
    shoal__store__compact_response__init(resp);
    resp->header = header_new(ap->a, ap->rev);
    *ret = resp;
    return 0;
}

static int do_batch(apply_t *ap, const Shoal__Store__BatchRequest *req,
                    Shoal__Store__BatchResponse **ret) {
    Shoal__Store__BatchResponse *resp = arena_alloc(ap->a, sizeof *resp);
    shoal__store__batch_response__init(resp);
    resp->responses = arena_alloc(ap->a, (req->n_txns ? req->n_txns : 1) * sizeof *resp->responses);
    for (size_t i = 0; i < req->n_txns; i++) {
        int rc = do_txn(ap, req->txns[i], &resp->responses[i]);
        if (rc < 0) {
            /* the whole batch is rolled back by the caller; say which txn failed */
            char msg[sizeof ap->kv->err];
            snprintf(msg, sizeof msg, "batch txns[%zu]: %s", i, ap->kv->err);
            snprintf(ap->kv->err, sizeof ap->kv->err, "%s", msg);
            return rc;
        }
        resp->n_responses = i + 1;
    }
    resp->header = header_new(ap->a, ap->rev);
    *ret = resp;
    return 0;
}

static int apply_one(apply_t *ap, const kv_op_t *op, ProtobufCMessage **ret) {
    kv_t *self = ap->kv;
    if (!op->request)
        return kv_fail(self, -EINVAL, "missing request");
    switch (op->type) {
    case KV_OP_PUT: {
        const Shoal__Store__PutRequest *req = (const void *)op->request;
        int rc = check_put(self, "put", req);
        if (rc < 0)
            return rc;
        if (req->lease) {
            int ex = lease_exists(ap, req->lease);
            if (ex < 0)
                return ex;
            if (!ex)
                return kv_fail(self, -ENOENT,
                               "put \"%.200s\": lease %lld not found (expired or revoked)",
                               req->key, (long long)req->lease);
        }
        Shoal__Store__PutResponse *resp;
        txn_begin(ap);
        rc = do_put(ap, req, &resp);
        if (rc < 0)
            return rc;
        txn_end(ap);
        resp->header = header_new(ap->a, ap->rev);
        *ret = &resp->base;
        return 0;
    }
    case KV_OP_DELETE_RANGE: {
        Shoal__Store__DeleteRangeResponse *resp;
        txn_begin(ap);
        int rc = do_delete(ap, (const void *)op->request, &resp);
        if (rc < 0)
            return rc;
        txn_end(ap);
        resp->header = header_new(ap->a, ap->rev);
        *ret = &resp->base;
        return 0;
    }
    case KV_OP_TXN:
        return do_txn(ap, (const void *)op->request, (Shoal__Store__TxnResponse **)ret);
    case KV_OP_BATCH:
        return do_batch(ap, (const void *)op->request, (Shoal__Store__BatchResponse **)ret);
    case KV_OP_LEASE_GRANT:
        return do_lease_grant(ap, (const void *)op->request,
                              (Shoal__Store__LeaseGrantResponse **)ret);
    case KV_OP_LEASE_REVOKE:
        return do_lease_revoke(ap, (const void *)op->request,
                               (Shoal__Store__LeaseRevokeResponse **)ret);
    case KV_OP_COMPACT:
        return do_compact(ap, (const void *)op->request, (Shoal__Store__CompactResponse **)ret);
    }
    return kv_fail(self, -EINVAL, "unknown write operation %d", (int)op->type);
}

static void put_meta(apply_t *ap) {
    Shoal__Store__StoredMeta m = SHOAL__STORE__STORED_META__INIT;
    m.revision = ap->rev;
    m.compact_revision = ap->compact_rev;
    m.next_lease_id = ap->next_lease_id;
    uint8_t *val;
    size_t vlen;
    record_encode(ap->a, RECORD_META, RECORD_META_KEY, strlen(RECORD_META_KEY), &m.base, &val,
                  &vlen);
    wb_put(ap, CF_META, RECORD_META_KEY, strlen(RECORD_META_KEY), val, vlen);
}

static void drop_compacted_events(kv_t *self, int64_t upto) {
    uint8_t from[RECORD_EVENT_KEY_LEN], to[RECORD_EVENT_KEY_LEN];
    record_event_key(from, 0, 0);
    record_event_key(to, upto + 1, 0);
    char *err = NULL;
    rocksdb_delete_range_cf(self->db, self->wnosync, self->cf[CF_EVENTS], (const char *)from,
                            sizeof from, (const char *)to, sizeof to, &err);
    if (err) {
        log_warn("dropping compacted events failed upto=%lld err=\"%s\"", (long long)upto, err);
        rocksdb_free(err);
    }
}

int kv_apply(kv_t *self, const kv_op_t *ops, size_t n, int64_t now_ms, arena_t *a,
             kv_result_t *results) {
    apply_t ap = {0};
    ap.kv = self;
    ap.wb = rocksdb_writebatch_wi_create(0, 1);
    ap.r = (reader_t){self, ap.wb};
    ap.a = a;
    ap.rev = self->revision;
    ap.compact_rev = self->compact_revision;
    ap.next_lease_id = self->next_lease_id;
    for (size_t i = 0; i < n; i++) {
        apply_t saved = ap;
        rocksdb_writebatch_wi_set_save_point(ap.wb);
        self->err[0] = '\0';
        ProtobufCMessage *resp = NULL;
        int rc = apply_one(&ap, &ops[i], &resp);
        results[i] = (kv_result_t){0};
        if (rc < 0) {
            char *err = NULL;
            rocksdb_writebatch_wi_rollback_to_save_point(ap.wb, &err);
            if (err) { /* cannot happen: we set the save point above */
                log_err("rollback to save point failed err=\"%s\"", err);
                rocksdb_free(err);
                abort();
            }
            /* the vector's old storage still holds its first saved.n items */
            ap = saved;
            results[i].err = rc;
            results[i].message = arena_strdup(a, self->err[0] ? self->err : strerror(-rc));
        } else {
            results[i].response = resp;
            self->ops_total++;
        }
        results[i].revision = ap.rev;
    }
    /* keep the last `history` revisions of events, compacting in steps of history/16 so that
     * range deletions stay rare */
    int64_t slack = self->history / 16 > 0 ? self->history / 16 : 1;
    if (ap.rev - ap.compact_rev > self->history + slack) {
        ap.compact_rev = ap.rev - self->history;
        ap.meta_dirty = true;
    }
    if (ap.rev != self->revision || ap.meta_dirty)
        put_meta(&ap);
    int rc = 0;
    if (rocksdb_writebatch_wi_count(ap.wb) > 0) {
        char *err = NULL;
        rocksdb_write_writebatch_wi(self->db, self->wsync, ap.wb, &err);
        if (err) {
            log_err("durable write failed ops=%zu err=\"%s\"", n, err);
            kv_fail(self, -EIO, "durable write failed: %s", err);
            rocksdb_free(err);
            rc = -EIO;
        } else {
            self->fsyncs_total++;
        }
    }
    rocksdb_writebatch_wi_destroy(ap.wb);
    if (rc < 0) {
        const char *msg = arena_strdup(a, self->err);
        for (size_t i = 0; i < n; i++)
            results[i] = (kv_result_t){.err = -EIO, .message = msg, .revision = self->revision};
        return rc;
    }
    int64_t old_compact = self->compact_revision;
    self->revision = ap.rev;
    self->compact_revision = ap.compact_rev;
    self->next_lease_id = ap.next_lease_id;
    self->keys += ap.keys_delta;
    for (size_t i = 0; i < ap.lease_changes.n; i++) {
        lease_change_t *lc = ap.lease_changes.items[i];
        if (lc->ttl_ms > 0) {
            if (lease_insert(self, lc->id, lc->ttl_ms, now_ms + lc->ttl_ms) < 0) {
                log_err("out of memory adding lease id=%lld", (long long)lc->id);
                abort();
            }
        } else {
            lease_remove(self, lc->id);
        }
    }
    if (self->compact_revision > old_compact)
        drop_compacted_events(self, self->compact_revision);
    return 0;
}

/* ---- leases outside apply ---------------------------------------------------------------- */

int kv_lease_keepalive(kv_t *self, int64_t id, int64_t now_ms, int64_t *ret_ttl_ms) {
    ssize_t at = id > 0 ? lease_find(self, id) : -1;
    if (at < 0)
        return kv_fail(self, -ENOENT, "lease keepalive: lease %lld not found (expired or revoked)",
                       (long long)id);
    self->leases[at].deadline_ms = now_ms + self->leases[at].ttl_ms;
    if (ret_ttl_ms)
        *ret_ttl_ms = self->leases[at].ttl_ms;
    return 0;
}

int kv_lease_ttl(const kv_t *self, int64_t id, int64_t now_ms, int64_t *ret_ttl_ms,
                 int64_t *ret_left_ms) {
    ssize_t at = id > 0 ? lease_find(self, id) : -1;
    if (at < 0)
        return -ENOENT;
    if (ret_ttl_ms)
        *ret_ttl_ms = self->leases[at].ttl_ms;
    if (ret_left_ms)
        *ret_left_ms = self->leases[at].deadline_ms - now_ms;
    return 0;
}

int kv_expire_leases(kv_t *self, int64_t now_ms) {
    size_t n = 0;
    for (size_t i = 0; i < self->n_leases; i++)
        if (self->leases[i].deadline_ms <= now_ms)
            n++;
    if (n == 0)
        return 0;
    arena_t *a = self->scratch;
    arena_reset(a);
    kv_op_t *ops = arena_alloc(a, n * sizeof *ops);
    kv_result_t *results = arena_alloc(a, n * sizeof *results);
    size_t k = 0;
    for (size_t i = 0; i < self->n_leases && k < n; i++) {
        if (self->leases[i].deadline_ms > now_ms)
            continue;
        Shoal__Store__LeaseRevokeRequest *req = arena_alloc(a, sizeof *req);
        shoal__store__lease_revoke_request__init(req);
        req->id = self->leases[i].id;
        ops[k++] = (kv_op_t){KV_OP_LEASE_REVOKE, &req->base};
        log_info("lease expired id=%lld ttl_ms=%lld", (long long)req->id,
                 (long long)self->leases[i].ttl_ms);
    }
    int rc = kv_apply(self, ops, k, now_ms, a, results);
    int revoked = 0;
    for (size_t i = 0; rc == 0 && i < k; i++) {
        if (results[i].err == 0)
            revoked++;
        else
            log_warn("lease expiry failed err=\"%s\"", results[i].message);
    }
    arena_reset(a);
    return rc < 0 ? rc : revoked;
}

/* ---- open / close ------------------------------------------------------------------------ */

int64_t kv_revision(const kv_t *self) {
    return self->revision;
}
int64_t kv_compact_revision(const kv_t *self) {
    return self->compact_revision;
}
int64_t kv_key_count(const kv_t *self) {
    return self->keys;
}
int64_t kv_lease_count(const kv_t *self) {
    return (int64_t)self->n_leases;
}
uint64_t kv_fsyncs_total(const kv_t *self) {
    return self->fsyncs_total;
}
uint64_t kv_ops_total(const kv_t *self) {
    return self->ops_total;
}

int64_t kv_db_size(kv_t *self) {
    int64_t total = 0;
    for (int i = 0; i < CF_COUNT; i++) {
        uint64_t v = 0;
        if (rocksdb_property_int_cf(self->db, self->cf[i], "rocksdb.total-sst-files-size", &v) == 0)
            total += (int64_t)v;
        if (rocksdb_property_int_cf(self->db, self->cf[i], "rocksdb.cur-size-all-mem-tables", &v) ==
            0)
            total += (int64_t)v;
    }
    return total;
}

static int mkdir_p(const char *dir) {
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s", dir);
    for (char *p = path + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(path, 0700) < 0 && errno != EEXIST)
            return -errno;
        *p = '/';
    }
    if (mkdir(path, 0700) < 0 && errno != EEXIST)
        return -errno;
    return 0;
}

static int load_state(kv_t *self, int64_t now_ms) {
    arena_t *a = self->scratch;
    reader_t r = {self, NULL};
    uint8_t *val;
    size_t vlen;
    int rc = reader_get(&r, CF_META, RECORD_META_KEY, strlen(RECORD_META_KEY), a, &val, &vlen);
    if (rc == 0) {
        Shoal__Store__StoredMeta *m;
        if (record_decode_meta(a, val, vlen, &m) < 0)
            return kv_fail(self, -EIO,
                           "corrupt record in the store: cf=meta key \"meta\" fails its checksum "
                           "or format check");
        self->revision = m->revision;
        self->compact_revision = m->compact_revision;
        self->next_lease_id = m->next_lease_id > 0 ? m->next_lease_id : 1;
    } else if (rc == -ENOENT) {
        self->next_lease_id = 1;
    } else {
        return rc;
    }
    /* leases, each with a fresh full TTL */
    rocksdb_iterator_t *it = rocksdb_create_iterator_cf(self->db, self->ropts, self->cf[CF_META]);
    const size_t plen = sizeof RECORD_LEASE_PREFIX - 1;
    rc = 0;
    for (rocksdb_iter_seek(it, RECORD_LEASE_PREFIX, plen); rocksdb_iter_valid(it);
         rocksdb_iter_next(it)) {
        size_t klen;
        const char *k = rocksdb_iter_key(it, &klen);
        if (klen < plen || memcmp(k, RECORD_LEASE_PREFIX, plen))
            break;
        const char *v = rocksdb_iter_value(it, &vlen);
        Shoal__Store__StoredLease *l;
        if (record_decode_lease(a, k, klen, (const uint8_t *)v, vlen, &l) < 0) {
            rc = kv_fail(self, -EIO,
                         "corrupt record in the store: cf=meta lease record (%zu-byte key) fails "
                         "its checksum or format check",
                         klen);
            break;
        }
        if ((rc = lease_insert(self, l->id, l->ttl_ms, now_ms + l->ttl_ms)) < 0)
            break;
        arena_reset(a);
    }
    if (rc == 0)
        rc = iter_error(self, it, CF_META);
    rocksdb_iter_destroy(it);
    if (rc < 0)
        return rc;
    /* key count */
    it = rocksdb_create_iterator_cf(self->db, self->ropts, self->cf[CF_KV]);
    for (rocksdb_iter_seek_to_first(it); rocksdb_iter_valid(it); rocksdb_iter_next(it))
        self->keys++;
    rc = iter_error(self, it, CF_KV);
    rocksdb_iter_destroy(it);
    if (rc < 0)
        return rc;
    if (self->compact_revision > 0)
        drop_compacted_events(self, self->compact_revision);
    arena_reset(a);
    return 0;
}

int kv_open(const char *dir, const kv_options_t *opts, int64_t now_ms, kv_t **ret, char *err,
            size_t errlen) {
    *ret = NULL;
    int rc = mkdir_p(dir);
    if (rc < 0) {
        snprintf(err, errlen, "cannot create store directory %s: %s", dir, strerror(-rc));
        return rc;
    }
    kv_t *self = calloc(1, sizeof *self);
    if (!self) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    self->history = opts && opts->history > 0 ? opts->history : KV_DEFAULT_HISTORY;
    self->scratch = arena_new(0);
    self->options = rocksdb_options_create();
    rocksdb_options_set_create_if_missing(self->options, 1);
    rocksdb_options_set_create_missing_column_families(self->options, 1);
    rocksdb_options_set_keep_log_file_num(self->options, 3);
    rocksdb_options_set_max_log_file_size(self->options, 4 << 20);
    rocksdb_options_set_paranoid_checks(self->options, 1);
    const rocksdb_options_t *cf_opts[CF_COUNT];
    for (int i = 0; i < CF_COUNT; i++)
        cf_opts[i] = self->options;
    char *rerr = NULL;
    self->db = rocksdb_open_column_families(self->options, dir, CF_COUNT, cf_names, cf_opts,
                                            self->cf, &rerr);
    if (rerr) {
        snprintf(err, errlen, "cannot open store database %s: %s", dir, rerr);
        rocksdb_free(rerr);
        self->db = NULL;
        kv_close(&self);
        return -EIO;
    }
    self->ropts = rocksdb_readoptions_create();
    rocksdb_readoptions_set_verify_checksums(self->ropts, 1);
    self->wsync = rocksdb_writeoptions_create();
    rocksdb_writeoptions_set_sync(self->wsync, 1);
    self->wnosync = rocksdb_writeoptions_create();
    rc = load_state(self, now_ms);
    if (rc < 0) {
        snprintf(err, errlen, "cannot load store state from %s: %s", dir, self->err);
        kv_close(&self);
        return rc;
    }
    *ret = self;
    return 0;
}

void kv_close(kv_t **self_p) {
    kv_t *self = *self_p;
    if (!self)
        return;
    if (self->db) {
        for (int i = 0; i < CF_COUNT; i++)
            if (self->cf[i])
                rocksdb_column_family_handle_destroy(self->cf[i]);
        rocksdb_close(self->db);
    }
    if (self->options)
        rocksdb_options_destroy(self->options);
    if (self->ropts)
        rocksdb_readoptions_destroy(self->ropts);
    if (self->wsync)
        rocksdb_writeoptions_destroy(self->wsync);
    if (self->wnosync)
        rocksdb_writeoptions_destroy(self->wnosync);
    arena_destroy(&self->scratch);
    free(self->leases);
    free(self);
    *self_p = NULL;
}
