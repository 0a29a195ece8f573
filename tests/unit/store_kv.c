/* Unit tests of the store's state machine (services/store/kv.c) on a temporary RocksDB directory:
 * revisions, key bookkeeping, txns, batches, watch history, compaction, leases with injected time,
 * durability across close/reopen and detection of corrupt records. */
#include <errno.h>
#include <ftw.h>
#include <rocksdb/c.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "arena.h"
#include "../../services/store/kv.h"
#include "../../services/store/record.h"

typedef struct fixture {
    char dir[64];
    kv_t *kv;
    arena_t *a;
    int64_t now;
} fixture_t;

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void reopen(fixture_t *f, int64_t history) {
    kv_close(&f->kv);
    kv_options_t o = {.history = history};
    char err[512];
    int rc = kv_open(f->dir, &o, f->now, &f->kv, err, sizeof err);
    if (rc < 0)
        fail_msg("kv_open: %s", err);
}

static int setup(void **state) {
    fixture_t *f = calloc(1, sizeof *f);
    snprintf(f->dir, sizeof f->dir, "/tmp/shoal-store-kv-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    f->a = arena_new(0);
    f->now = 1000000;
    reopen(f, 0);
    *state = f;
    return 0;
}

static int teardown(void **state) {
    fixture_t *f = *state;
    kv_close(&f->kv);
    arena_destroy(&f->a);
    nftw(f->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(f);
    return 0;
}

/* ---- helpers ----------------------------------------------------------------------------- */

static kv_result_t apply1(fixture_t *f, kv_op_type_t type, const ProtobufCMessage *req) {
    kv_op_t op = {type, req};
    kv_result_t r;
    assert_int_equal(kv_apply(f->kv, &op, 1, f->now, f->a, &r), 0);
    return r;
}

static int64_t put(fixture_t *f, const char *key, const char *val, int64_t lease) {
    Shoal__Store__PutRequest req = SHOAL__STORE__PUT_REQUEST__INIT;
    req.key = (char *)key;
    req.value.data = (uint8_t *)val;
    req.value.len = strlen(val);
    req.lease = lease;
    kv_result_t r = apply1(f, KV_OP_PUT, &req.base);
    if (r.err)
        fail_msg("put %s: %s", key, r.message);
    return ((Shoal__Store__PutResponse *)r.response)->header->revision;
}

static Shoal__Store__KeyValue *get(fixture_t *f, const char *key) {
    Shoal__Store__RangeRequest req = SHOAL__STORE__RANGE_REQUEST__INIT;
    req.key = (char *)key;
    Shoal__Store__RangeResponse *resp;
    int rc = kv_range(f->kv, &req, f->a, &resp);
    if (rc < 0)
        fail_msg("get %s: %s", key, kv_error(f->kv));
    return resp->n_kvs ? resp->kvs[0] : NULL;
}

static void assert_value(const Shoal__Store__KeyValue *kv, const char *val) {
    assert_non_null(kv);
    assert_int_equal(kv->value.len, strlen(val));
    assert_memory_equal(kv->value.data, val, strlen(val));
}

static Shoal__Store__WatchResponse *watch(fixture_t *f, const char *prefix, int64_t start,
                                          uint32_t max) {
    Shoal__Store__WatchRequest req = SHOAL__STORE__WATCH_REQUEST__INIT;
    req.key = (char *)prefix;
    req.prefix = true;
    req.max_events = max;
    req.prev_kv = true;
    Shoal__Store__WatchResponse *resp;
    int rc = kv_watch_read(f->kv, &req, start, f->a, &resp);
    if (rc < 0)
        fail_msg("watch: %s", kv_error(f->kv));
    return resp;
}

static int64_t lease_grant(fixture_t *f, int64_t ttl) {
    Shoal__Store__LeaseGrantRequest req = SHOAL__STORE__LEASE_GRANT_REQUEST__INIT;
    req.ttl_ms = ttl;
    kv_result_t r = apply1(f, KV_OP_LEASE_GRANT, &req.base);
    if (r.err)
        fail_msg("lease grant: %s", r.message);
    return ((Shoal__Store__LeaseGrantResponse *)r.response)->id;
}

static Shoal__Store__RequestOp *op_put(const char *key, const char *val) {
    static Shoal__Store__RequestOp ops[16];
    static Shoal__Store__PutRequest puts[16];
    static int next;
    int i = next++ % 16;
    shoal__store__request_op__init(&ops[i]);
    shoal__store__put_request__init(&puts[i]);
    puts[i].key = (char *)key;
    puts[i].value.data = (uint8_t *)val;
    puts[i].value.len = strlen(val);
    ops[i].request_case = SHOAL__STORE__REQUEST_OP__REQUEST_PUT;
    ops[i].put = &puts[i];
    return &ops[i];
}

static Shoal__Store__Compare cmp_num(const char *key, Shoal__Store__Compare__Target target,
                                     Shoal__Store__Compare__Result result, int64_t number) {
    Shoal__Store__Compare c = SHOAL__STORE__COMPARE__INIT;
    c.key = (char *)key;
    c.target = target;
    c.result = result;
    c.number = number;
    return c;
}

/* A txn with one compare, a put of succ_key=v1 on success and fail_key=v2 on failure. */
static Shoal__Store__TxnResponse *txn1(fixture_t *f, Shoal__Store__Compare *c, const char *succ_key,
                                       const char *fail_key) {
    Shoal__Store__TxnRequest req = SHOAL__STORE__TXN_REQUEST__INIT;
    Shoal__Store__Compare *cs[1] = {c};
    Shoal__Store__RequestOp *succ[1] = {op_put(succ_key, "v1")};
    Shoal__Store__RequestOp *failure[1] = {op_put(fail_key, "v2")};
    req.compare = cs;
    req.n_compare = 1;
    req.success = succ;
    req.n_success = 1;
    req.failure = failure;
    req.n_failure = 1;
    kv_result_t r = apply1(f, KV_OP_TXN, &req.base);
    if (r.err)
        fail_msg("txn: %s", r.message);
    return (Shoal__Store__TxnResponse *)r.response;
}

/* ---- tests ------------------------------------------------------------------------------- */

static void test_kv_revision_increases_once_per_write_txn(void **state) {
    fixture_t *f = *state;
    assert_int_equal(kv_revision(f->kv), 0);
    assert_int_equal(put(f, "/a", "1", 0), 1);
    assert_int_equal(put(f, "/b", "1", 0), 2);
    /* a txn writing three keys takes one revision; all three events share it */
    Shoal__Store__TxnRequest req = SHOAL__STORE__TXN_REQUEST__INIT;
    Shoal__Store__RequestOp *ops[3] = {op_put("/c", "1"), op_put("/d", "1"), op_put("/e", "1")};
    req.success = ops;
    req.n_success = 3;
    kv_result_t r = apply1(f, KV_OP_TXN, &req.base);
    assert_int_equal(r.err, 0);
    assert_int_equal(r.revision, 3);
    assert_int_equal(((Shoal__Store__TxnResponse *)r.response)->header->revision, 3);
    Shoal__Store__WatchResponse *w = watch(f, "/", 3, 0);
    assert_int_equal(w->n_events, 3);
    for (size_t i = 0; i < 3; i++)
        assert_int_equal(w->events[i]->kv->mod_revision, 3);
    /* a txn that only reads, and a delete of nothing, do not take a revision */
    Shoal__Store__DeleteRangeRequest del = SHOAL__STORE__DELETE_RANGE_REQUEST__INIT;
    del.key = "/nothing";
    r = apply1(f, KV_OP_DELETE_RANGE, &del.base);
    assert_int_equal(r.err, 0);
    assert_int_equal(((Shoal__Store__DeleteRangeResponse *)r.response)->deleted, 0);
    assert_int_equal(kv_revision(f->kv), 3);
    assert_int_equal(kv_key_count(f->kv), 5);
}

static void test_kv_put_tracks_create_mod_revision_and_version(void **state) {
    fixture_t *f = *state;
    put(f, "/k", "one", 0);
    put(f, "/other", "x", 0);
    put(f, "/k", "two", 0);
    Shoal__Store__KeyValue *kv = get(f, "/k");
    assert_value(kv, "two");
    assert_string_equal(kv->key, "/k");
    assert_int_equal(kv->create_revision, 1);
    assert_int_equal(kv->mod_revision, 3);
    assert_int_equal(kv->version, 2);
    /* deleting and re-creating starts a new life: version 1, new create revision */
    Shoal__Store__DeleteRangeRequest del = SHOAL__STORE__DELETE_RANGE_REQUEST__INIT;
    del.key = "/k";
    assert_int_equal(apply1(f, KV_OP_DELETE_RANGE, &del.base).err, 0);
    assert_null(get(f, "/k"));
    put(f, "/k", "three", 0);
    kv = get(f, "/k");
    assert_int_equal(kv->create_revision, 5);
    assert_int_equal(kv->mod_revision, 5);
    assert_int_equal(kv->version, 1);
    /* prev_kv on put */
    Shoal__Store__PutRequest req = SHOAL__STORE__PUT_REQUEST__INIT;
    req.key = "/k";
    req.prev_kv = true;
    kv_result_t r = apply1(f, KV_OP_PUT, &req.base);
    Shoal__Store__PutResponse *pr = (Shoal__Store__PutResponse *)r.response;
    assert_non_null(pr->prev_kv);
    assert_value(pr->prev_kv, "three");
}

static void test_kv_txn_compare_picks_success_or_failure_branch(void **state) {
    fixture_t *f = *state;
    put(f, "/x", "hello", 0); /* rev 1 */
    put(f, "/x", "hello", 0); /* rev 2, version 2 */
    struct {
        Shoal__Store__Compare c;
        bool want;
    } cases[] = {
        {cmp_num("/x", SHOAL__STORE__COMPARE__TARGET__VERSION, SHOAL__STORE__COMPARE__RESULT__EQUAL,
                 2),
         true},
        {cmp_num("/x", SHOAL__STORE__COMPARE__TARGET__VERSION,
                 SHOAL__STORE__COMPARE__RESULT__GREATER, 2),
         false},
        {cmp_num("/x", SHOAL__STORE__COMPARE__TARGET__CREATE, SHOAL__STORE__COMPARE__RESULT__EQUAL,
                 1),
         true},
        {cmp_num("/x", SHOAL__STORE__COMPARE__TARGET__MOD, SHOAL__STORE__COMPARE__RESULT__LESS, 3),
         true},
        {cmp_num("/x", SHOAL__STORE__COMPARE__TARGET__MOD, SHOAL__STORE__COMPARE__RESULT__NOT_EQUAL,
                 2),
         false},
        {cmp_num("/x", SHOAL__STORE__COMPARE__TARGET__LEASE, SHOAL__STORE__COMPARE__RESULT__EQUAL,
                 0),
         true},
        /* a missing key has 0 for every number ... */
        {cmp_num("/missing", SHOAL__STORE__COMPARE__TARGET__MOD,
                 SHOAL__STORE__COMPARE__RESULT__EQUAL, 0),
         true},
        {cmp_num("/missing", SHOAL__STORE__COMPARE__TARGET__VERSION,
                 SHOAL__STORE__COMPARE__RESULT__GREATER, 0),
         false},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int64_t before = kv_revision(f->kv);
        Shoal__Store__TxnResponse *t = txn1(f, &cases[i].c, "/succ", "/fail");
        if (t->succeeded != cases[i].want)
            fail_msg("case %zu: succeeded=%d want %d", i, t->succeeded, cases[i].want);
        assert_int_equal(t->n_responses, 1);
        assert_int_equal(t->header->revision, before + 1);
    }
    /* ... and VALUE compares on it always fail (etcd) */
    Shoal__Store__Compare cv = SHOAL__STORE__COMPARE__INIT;
    cv.key = "/missing";
    cv.target = SHOAL__STORE__COMPARE__TARGET__VALUE;
    cv.result = SHOAL__STORE__COMPARE__RESULT__NOT_EQUAL;
    assert_false(txn1(f, &cv, "/succ", "/fail")->succeeded);
    cv.key = "/x";
    cv.result = SHOAL__STORE__COMPARE__RESULT__EQUAL;
    cv.value.data = (uint8_t *)"hello";
    cv.value.len = 5;
    assert_true(txn1(f, &cv, "/succ", "/fail")->succeeded);
    cv.value.len = 4; /* "hell" < "hello" */
    cv.result = SHOAL__STORE__COMPARE__RESULT__GREATER;
    assert_true(txn1(f, &cv, "/succ", "/fail")->succeeded);
    /* which branch ran is visible in the data */
    assert_value(get(f, "/succ"), "v1");
    assert_value(get(f, "/fail"), "v2");
    assert_int_equal(get(f, "/fail")->version, 4); /* four compares above failed */
}

static void test_kv_txn_range_sees_its_own_writes_and_rejects_double_writes(void **state) {
    fixture_t *f = *state;
    Shoal__Store__TxnRequest req = SHOAL__STORE__TXN_REQUEST__INIT;
    Shoal__Store__RangeRequest rr = SHOAL__STORE__RANGE_REQUEST__INIT;
    rr.key = "/t/";
    rr.prefix = true;
    Shoal__Store__RequestOp rop = SHOAL__STORE__REQUEST_OP__INIT;
    rop.request_case = SHOAL__STORE__REQUEST_OP__REQUEST_RANGE;
    rop.range = &rr;
    Shoal__Store__RequestOp *ops[3] = {op_put("/t/1", "a"), op_put("/t/2", "b"), &rop};
    req.success = ops;
    req.n_success = 3;
    kv_result_t r = apply1(f, KV_OP_TXN, &req.base);
    assert_int_equal(r.err, 0);
    Shoal__Store__TxnResponse *t = (Shoal__Store__TxnResponse *)r.response;
    assert_int_equal(t->n_responses, 3);
    assert_int_equal(t->responses[2]->response_case, SHOAL__STORE__RESPONSE_OP__RESPONSE_RANGE);
    assert_int_equal(t->responses[2]->range->count, 2);
    assert_int_equal(t->responses[2]->range->kvs[1]->mod_revision, 1);

    Shoal__Store__RequestOp *dup[2] = {op_put("/t/1", "a"), op_put("/t/1", "b")};
    req.success = dup;
    req.n_success = 2;
    r = apply1(f, KV_OP_TXN, &req.base);
    assert_int_equal(r.err, -EINVAL);
    assert_non_null(strstr(r.message, "written twice"));
    assert_int_equal(kv_revision(f->kv), 1);
}

static void test_kv_batch_gives_each_txn_its_revision_in_one_durable_write(void **state) {
    fixture_t *f = *state;
    put(f, "/n/1", "x", 0); /* rev 1 */
    uint64_t fsyncs = kv_fsyncs_total(f->kv);
    Shoal__Store__TxnRequest txns[3];
    Shoal__Store__TxnRequest *tp[3];
    Shoal__Store__Compare cmp[3], *cp[3];
    Shoal__Store__RequestOp *ops[3][1];
    const char *keys[3] = {"/n/1", "/n/2", "/n/3"};
    for (int i = 0; i < 3; i++) {
        shoal__store__txn_request__init(&txns[i]);
        /* CAS on mod revision: /n/1 at 1 holds, /n/2 absent (0) holds, /n/3 at 7 fails */
        cmp[i] = cmp_num(keys[i], SHOAL__STORE__COMPARE__TARGET__MOD,
                         SHOAL__STORE__COMPARE__RESULT__EQUAL,
                         i == 0   ? 1
                         : i == 1 ? 0
                                  : 7);
        cp[i] = &cmp[i];
        ops[i][0] = op_put(keys[i], "y");
        txns[i].compare = &cp[i];
        txns[i].n_compare = 1;
        txns[i].success = ops[i];
        txns[i].n_success = 1;
        tp[i] = &txns[i];
    }
    Shoal__Store__BatchRequest b = SHOAL__STORE__BATCH_REQUEST__INIT;
    b.txns = tp;
    b.n_txns = 3;
    kv_result_t r = apply1(f, KV_OP_BATCH, &b.base);
    assert_int_equal(r.err, 0);
    Shoal__Store__BatchResponse *br = (Shoal__Store__BatchResponse *)r.response;
    assert_int_equal(br->n_responses, 3);
    assert_true(br->responses[0]->succeeded);
    assert_int_equal(br->responses[0]->header->revision, 2);
    assert_true(br->responses[1]->succeeded);
    assert_int_equal(br->responses[1]->header->revision, 3);
    assert_false(br->responses[2]->succeeded);
    assert_int_equal(br->responses[2]->header->revision, 3);
    assert_int_equal(br->header->revision, 3);
    assert_int_equal(kv_fsyncs_total(f->kv), fsyncs + 1);

    /* a group of independent ops is one durable write too; a failing op changes nothing */
    Shoal__Store__PutRequest p1 = SHOAL__STORE__PUT_REQUEST__INIT, p2 = p1, p3 = p1;
    p1.key = "/g/1";
    p2.key = "/g/2";
    p2.lease = 999; /* no such lease */
    p3.key = "/g/3";
    kv_op_t group[3] = {{KV_OP_PUT, &p1.base}, {KV_OP_PUT, &p2.base}, {KV_OP_PUT, &p3.base}};
    kv_result_t res[3];
    assert_int_equal(kv_apply(f->kv, group, 3, f->now, f->a, res), 0);
    assert_int_equal(res[0].err, 0);
    assert_int_equal(res[0].revision, 4);
    assert_int_equal(res[1].err, -ENOENT);
    assert_non_null(strstr(res[1].message, "lease 999 not found"));
    assert_int_equal(res[2].err, 0);
    assert_int_equal(res[2].revision, 5);
    assert_null(get(f, "/g/2"));
    assert_int_equal(kv_fsyncs_total(f->kv), fsyncs + 2);
}

static void test_kv_delete_emits_events_with_prev_kv(void **state) {
    fixture_t *f = *state;
    put(f, "/d/a", "A", 0);
    put(f, "/d/b", "B", 0);
    put(f, "/e", "E", 0);
    Shoal__Store__DeleteRangeRequest del = SHOAL__STORE__DELETE_RANGE_REQUEST__INIT;
    del.key = "/d/";
    del.prefix = true;
    del.prev_kv = true;
    kv_result_t r = apply1(f, KV_OP_DELETE_RANGE, &del.base);
    assert_int_equal(r.err, 0);
    Shoal__Store__DeleteRangeResponse *dr = (Shoal__Store__DeleteRangeResponse *)r.response;
    assert_int_equal(dr->deleted, 2);
    assert_int_equal(dr->n_prev_kvs, 2);
    assert_value(dr->prev_kvs[0], "A");
    assert_int_equal(dr->header->revision, 4);
    Shoal__Store__WatchResponse *w = watch(f, "/d/", 4, 0);
    assert_int_equal(w->n_events, 2);
    for (size_t i = 0; i < 2; i++) {
        assert_int_equal(w->events[i]->type, SHOAL__STORE__EVENT__TYPE__DELETE);
        assert_int_equal(w->events[i]->kv->mod_revision, 4);
        assert_non_null(w->events[i]->prev_kv);
    }
    assert_string_equal(w->events[1]->kv->key, "/d/b");
    assert_value(w->events[1]->prev_kv, "B");
    assert_int_equal(kv_key_count(f->kv), 1);
    assert_value(get(f, "/e"), "E");
}

static void test_kv_watch_history_is_ordered_and_lossless_from_any_revision(void **state) {
    fixture_t *f = *state;
    char key[32], val[32];
    for (int i = 1; i <= 50; i++) {
        snprintf(key, sizeof key, "/w/%02d", i % 7);
        snprintf(val, sizeof val, "%d", i);
        put(f, i % 5 == 0 ? "/other" : key, val, 0);
    }
    /* from every start revision, paging with small max_events, we see exactly the /w/ events in
     * revision order */
    for (int64_t start = 1; start <= 51; start++) {
        int64_t next = start, last = start - 1;
        int seen = 0;
        for (int pages = 0; pages < 100; pages++) {
            Shoal__Store__WatchResponse *w = watch(f, "/w/", next, 3);
            assert_false(w->compacted);
            for (size_t i = 0; i < w->n_events; i++) {
                int64_t rev = w->events[i]->kv->mod_revision;
                assert_true(rev > last);
                assert_true(rev % 5 != 0);
                assert_int_equal(strncmp(w->events[i]->kv->key, "/w/", 3), 0);
                last = rev;
                seen++;
            }
            assert_true(w->next_revision > next || w->n_events == 0);
            next = w->next_revision;
            if (w->n_events == 0)
                break;
        }
        int want = 0;
        for (int64_t r = start; r <= 50; r++)
            want += r % 5 != 0;
        assert_int_equal(seen, want);
        assert_int_equal(next, 51);
    }
    /* start 0 = from now; a future start is echoed back */
    Shoal__Store__WatchResponse *w = watch(f, "/w/", 0, 0);
    assert_int_equal(w->n_events, 0);
    assert_int_equal(w->next_revision, 51);
    w = watch(f, "/w/", 60, 0);
    assert_int_equal(w->next_revision, 60);
    /* the cut happens only at revision boundaries: a 3-event revision is returned whole */
    Shoal__Store__TxnRequest req = SHOAL__STORE__TXN_REQUEST__INIT;
    Shoal__Store__RequestOp *ops[3] = {op_put("/w/x", "1"), op_put("/w/y", "1"),
                                       op_put("/w/z", "1")};
    req.success = ops;
    req.n_success = 3;
    apply1(f, KV_OP_TXN, &req.base);
    put(f, "/w/after", "1", 0);
    w = watch(f, "/w/", 51, 1);
    assert_int_equal(w->n_events, 3);
    assert_int_equal(w->next_revision, 52);
}

static void test_kv_compaction_makes_old_watches_report_compacted(void **state) {
    fixture_t *f = *state;
    for (int i = 0; i < 10; i++)
        put(f, "/c", "v", 0);
    Shoal__Store__CompactRequest c = SHOAL__STORE__COMPACT_REQUEST__INIT;
    c.revision = 11;
    assert_int_equal(apply1(f, KV_OP_COMPACT, &c.base).err, -EINVAL); /* future */
    c.revision = 6;
    assert_int_equal(apply1(f, KV_OP_COMPACT, &c.base).err, 0);
    assert_int_equal(kv_compact_revision(f->kv), 6);
    Shoal__Store__WatchResponse *w = watch(f, "/", 6, 0);
    assert_true(w->compacted);
    assert_int_equal(w->compact_revision, 6);
    assert_int_equal(w->n_events, 0);
    w = watch(f, "/", 7, 0);
    assert_false(w->compacted);
    assert_int_equal(w->n_events, 4);
    /* the data itself is untouched */
    assert_int_equal(get(f, "/c")->version, 10);

    /* automatic: keep the last `history` revisions */
    reopen(f, 16);
    assert_int_equal(kv_compact_revision(f->kv), 6);
    for (int i = 0; i < 30; i++)
        put(f, "/c", "v", 0);
    int64_t rev = kv_revision(f->kv), crev = kv_compact_revision(f->kv);
    assert_int_equal(rev, 40);
    assert_true(rev - crev >= 16);
    assert_true(rev - crev <= 17);
    assert_true(watch(f, "/", crev, 0)->compacted);
    w = watch(f, "/", crev + 1, 1000);
    assert_false(w->compacted);
    assert_int_equal(w->n_events, rev - crev);
}

static void test_kv_leases_expire_with_injected_time_and_delete_their_keys(void **state) {
    fixture_t *f = *state;
    int64_t l1 = lease_grant(f, 3000), l2 = lease_grant(f, 10000);
    assert_true(l1 > 0 && l2 > 0 && l1 != l2);
    assert_int_equal(kv_lease_count(f->kv), 2);
    put(f, "/bus/a", "1", l1);
    put(f, "/bus/b", "1", l1);
    put(f, "/bus/c", "1", l2);
    put(f, "/plain", "1", 0);
    int64_t rev = kv_revision(f->kv);
    f->now += 2999;
    assert_int_equal(kv_expire_leases(f->kv, f->now), 0);
    assert_int_equal(kv_lease_keepalive(f->kv, l2, f->now, NULL), 0); /* l2 now ends at +12999 */
    f->now += 1;
    assert_int_equal(kv_expire_leases(f->kv, f->now), 1);
    assert_null(get(f, "/bus/a"));
    assert_null(get(f, "/bus/b"));
    assert_non_null(get(f, "/bus/c"));
    /* both keys went in one revision, with DELETE events */
    assert_int_equal(kv_revision(f->kv), rev + 1);
    Shoal__Store__WatchResponse *w = watch(f, "/bus/", rev + 1, 0);
    assert_int_equal(w->n_events, 2);
    assert_int_equal(w->events[0]->type, SHOAL__STORE__EVENT__TYPE__DELETE);
    assert_int_equal(w->events[0]->prev_kv->lease, l1);
    assert_int_equal(kv_lease_keepalive(f->kv, l1, f->now, NULL), -ENOENT);
    f->now += 9998; /* l2 was renewed at +2999 with 10000 ms */
    assert_int_equal(kv_expire_leases(f->kv, f->now), 0);
    f->now += 1;
    assert_int_equal(kv_expire_leases(f->kv, f->now), 1);
    assert_null(get(f, "/bus/c"));
    assert_non_null(get(f, "/plain"));
    assert_int_equal(kv_lease_count(f->kv), 0);
    /* putting a key under a dead lease is refused */
    Shoal__Store__PutRequest req = SHOAL__STORE__PUT_REQUEST__INIT;
    req.key = "/bus/a";
    req.lease = l1;
    kv_result_t r = apply1(f, KV_OP_PUT, &req.base);
    assert_int_equal(r.err, -ENOENT);
}

static void test_kv_lease_revoke_deletes_keys_and_detached_keys_survive(void **state) {
    fixture_t *f = *state;
    int64_t l = lease_grant(f, 5000);
    put(f, "/l/1", "1", l);
    put(f, "/l/2", "1", l);
    put(f, "/l/2", "2", 0); /* re-put without the lease: detached */
    Shoal__Store__LeaseRevokeRequest rv = SHOAL__STORE__LEASE_REVOKE_REQUEST__INIT;
    rv.id = l;
    kv_result_t r = apply1(f, KV_OP_LEASE_REVOKE, &rv.base);
    assert_int_equal(r.err, 0);
    assert_null(get(f, "/l/1"));
    assert_value(get(f, "/l/2"), "2");
    assert_int_equal(kv_revision(f->kv), 4);
    r = apply1(f, KV_OP_LEASE_REVOKE, &rv.base);
    assert_int_equal(r.err, -ENOENT);
    /* explicit ids, duplicates and bad TTLs */
    Shoal__Store__LeaseGrantRequest g = SHOAL__STORE__LEASE_GRANT_REQUEST__INIT;
    g.id = 77;
    g.ttl_ms = 100;
    assert_int_equal(apply1(f, KV_OP_LEASE_GRANT, &g.base).err, 0);
    assert_int_equal(apply1(f, KV_OP_LEASE_GRANT, &g.base).err, -EEXIST);
    g.id = 0;
    assert_int_equal(lease_grant(f, 100), 78);
    g.ttl_ms = 0;
    r = apply1(f, KV_OP_LEASE_GRANT, &g.base);
    assert_int_equal(r.err, -EINVAL);
    assert_non_null(strstr(r.message, "ttl_ms"));
}

static void test_kv_leases_come_back_with_full_ttl_after_reopen(void **state) {
    fixture_t *f = *state;
    int64_t l = lease_grant(f, 4000);
    put(f, "/lease/key", "v", l);
    f->now += 3500; /* 500 ms left */
    reopen(f, 0);
    assert_int_equal(kv_lease_count(f->kv), 1);
    int64_t ttl, left;
    assert_int_equal(kv_lease_ttl(f->kv, l, f->now, &ttl, &left), 0);
    assert_int_equal(ttl, 4000);
    assert_int_equal(left, 4000);
    f->now += 3999;
    assert_int_equal(kv_expire_leases(f->kv, f->now), 0);
    assert_non_null(get(f, "/lease/key"));
    f->now += 1;
    assert_int_equal(kv_expire_leases(f->kv, f->now), 1);
    assert_null(get(f, "/lease/key"));
    /* the lease id counter survives too: no id is ever reused */
    assert_true(lease_grant(f, 1000) > l);
}

static void test_kv_data_survives_close_and_reopen(void **state) {
    fixture_t *f = *state;
    put(f, "/p/1", "one", 0);
    put(f, "/p/2", "two", 0);
    put(f, "/p/1", "uno", 0);
    Shoal__Store__DeleteRangeRequest del = SHOAL__STORE__DELETE_RANGE_REQUEST__INIT;
    del.key = "/p/2";
    apply1(f, KV_OP_DELETE_RANGE, &del.base);
    reopen(f, 0);
    assert_int_equal(kv_revision(f->kv), 4);
    assert_int_equal(kv_key_count(f->kv), 1);
    Shoal__Store__KeyValue *kv = get(f, "/p/1");
    assert_value(kv, "uno");
    assert_int_equal(kv->version, 2);
    assert_int_equal(kv->create_revision, 1);
    assert_null(get(f, "/p/2"));
    Shoal__Store__WatchResponse *w = watch(f, "/p/", 1, 0);
    assert_int_equal(w->n_events, 4);
    assert_int_equal(w->events[3]->type, SHOAL__STORE__EVENT__TYPE__DELETE);
    assert_int_equal(put(f, "/p/3", "x", 0), 5);
}

static void test_kv_range_limit_prefix_and_options(void **state) {
    fixture_t *f = *state;
    put(f, "/r/a", "1", 0);
    put(f, "/r/b", "22", 0);
    put(f, "/r/c", "333", 0);
    put(f, "/rz", "x", 0);
    put(f, "/r", "x", 0);
    Shoal__Store__RangeRequest req = SHOAL__STORE__RANGE_REQUEST__INIT;
    Shoal__Store__RangeResponse *resp;
    req.key = "/r/";
    req.prefix = true;
    req.limit = 2;
    assert_int_equal(kv_range(f->kv, &req, f->a, &resp), 0);
    assert_int_equal(resp->n_kvs, 2);
    assert_true(resp->more);
    assert_int_equal(resp->count, 3);
    assert_int_equal(resp->header->revision, 5);
    req.limit = 0;
    req.keys_only = true;
    assert_int_equal(kv_range(f->kv, &req, f->a, &resp), 0);
    assert_int_equal(resp->n_kvs, 3);
    assert_false(resp->more);
    assert_int_equal(resp->kvs[2]->value.len, 0);
    assert_int_equal(resp->kvs[2]->version, 1);
    req.keys_only = false;
    req.count_only = true;
    assert_int_equal(kv_range(f->kv, &req, f->a, &resp), 0);
    assert_int_equal(resp->n_kvs, 0);
    assert_int_equal(resp->count, 3);
    /* [key, range_end) */
    Shoal__Store__RangeRequest r2 = SHOAL__STORE__RANGE_REQUEST__INIT;
    r2.key = "/r/b";
    r2.range_end = "/rz";
    assert_int_equal(kv_range(f->kv, &r2, f->a, &resp), 0);
    assert_int_equal(resp->n_kvs, 2);
    assert_string_equal(resp->kvs[0]->key, "/r/b");
    assert_string_equal(resp->kvs[1]->key, "/r/c");
    /* everything: prefix "" */
    Shoal__Store__RangeRequest r3 = SHOAL__STORE__RANGE_REQUEST__INIT;
    r3.key = "";
    r3.prefix = true;
    assert_int_equal(kv_range(f->kv, &r3, f->a, &resp), 0);
    assert_int_equal(resp->n_kvs, 5);
}

static void test_kv_rejects_bad_requests_with_clear_messages(void **state) {
    fixture_t *f = *state;
    Shoal__Store__RangeRequest rr = SHOAL__STORE__RANGE_REQUEST__INIT;
    Shoal__Store__RangeResponse *resp;
    rr.key = "";
    assert_int_equal(kv_range(f->kv, &rr, f->a, &resp), -EINVAL);
    assert_non_null(strstr(kv_error(f->kv), "empty key"));
    rr.key = "/b";
    rr.range_end = "/a";
    assert_int_equal(kv_range(f->kv, &rr, f->a, &resp), -EINVAL);
    assert_non_null(strstr(kv_error(f->kv), "sorts before"));
    Shoal__Store__PutRequest p = SHOAL__STORE__PUT_REQUEST__INIT;
    p.key = "";
    kv_result_t r = apply1(f, KV_OP_PUT, &p.base);
    assert_int_equal(r.err, -EINVAL);
    assert_non_null(strstr(r.message, "empty key"));
    Shoal__Store__LeaseKeepAliveRequest ka = SHOAL__STORE__LEASE_KEEP_ALIVE_REQUEST__INIT;
    (void)ka;
    assert_int_equal(kv_lease_keepalive(f->kv, 12345, f->now, NULL), -ENOENT);
    assert_non_null(strstr(kv_error(f->kv), "12345"));
    Shoal__Store__TxnRequest t = SHOAL__STORE__TXN_REQUEST__INIT;
    Shoal__Store__RequestOp empty = SHOAL__STORE__REQUEST_OP__INIT;
    Shoal__Store__RequestOp *ops[1] = {&empty};
    t.failure = ops;
    t.n_failure = 1;
    r = apply1(f, KV_OP_TXN, &t.base);
    assert_int_equal(r.err, -EINVAL);
    assert_non_null(strstr(r.message, "failure[0]"));
    assert_int_equal(kv_revision(f->kv), 0);
}

/* Writes garbage with the raw RocksDB API into the kv column family, as a torn or rotten disk
 * would, and checks that reads report -EIO naming the key instead of crashing. */
static void test_kv_corrupt_record_is_reported_as_eio(void **state) {
    fixture_t *f = *state;
    put(f, "/good", "fine", 0);
    put(f, "/bad", "soon broken", 0);
    kv_close(&f->kv);

    const char *names[5] = {"default", "kv", "events", "meta", "log"};
    rocksdb_options_t *o = rocksdb_options_create();
    const rocksdb_options_t *cfo[5] = {o, o, o, o, o};
    rocksdb_column_family_handle_t *cf[5];
    char *err = NULL;
    rocksdb_t *db = rocksdb_open_column_families(o, f->dir, 5, names, cfo, cf, &err);
    assert_null(err);
    rocksdb_writeoptions_t *wo = rocksdb_writeoptions_create();
    /* a record whose payload was flipped: the checksum no longer matches */
    size_t vlen;
    rocksdb_readoptions_t *ro = rocksdb_readoptions_create();
    char *val = rocksdb_get_cf(db, ro, cf[1], "/bad", 4, &vlen, &err);
    assert_non_null(val);
    val[vlen - 1] ^= 0x40;
    rocksdb_put_cf(db, wo, cf[1], "/bad", 4, val, vlen, &err);
    assert_null(err);
    rocksdb_free(val);
    rocksdb_put_cf(db, wo, cf[1], "/junk", 5, "\x01garbage", 8, &err);
    rocksdb_put_cf(db, wo, cf[1], "/short", 6, "", 0, &err);
    assert_null(err);
    for (int i = 0; i < 5; i++)
        rocksdb_column_family_handle_destroy(cf[i]);
    rocksdb_close(db);
    rocksdb_options_destroy(o);
    rocksdb_writeoptions_destroy(wo);
    rocksdb_readoptions_destroy(ro);

    reopen(f, 0);
    assert_value(get(f, "/good"), "fine");
    const char *bad[3] = {"/bad", "/junk", "/short"};
    for (int i = 0; i < 3; i++) {
        Shoal__Store__RangeRequest req = SHOAL__STORE__RANGE_REQUEST__INIT;
        Shoal__Store__RangeResponse *resp;
        req.key = (char *)bad[i];
        assert_int_equal(kv_range(f->kv, &req, f->a, &resp), -EIO);
        assert_non_null(strstr(kv_error(f->kv), bad[i]));
    }
    Shoal__Store__RangeRequest all = SHOAL__STORE__RANGE_REQUEST__INIT;
    Shoal__Store__RangeResponse *resp;
    all.key = "/";
    all.prefix = true;
    assert_int_equal(kv_range(f->kv, &all, f->a, &resp), -EIO);
    /* writing over a corrupt key fails cleanly, changing nothing */
    Shoal__Store__PutRequest p = SHOAL__STORE__PUT_REQUEST__INIT;
    p.key = "/bad";
    int64_t rev = kv_revision(f->kv);
    kv_result_t r = apply1(f, KV_OP_PUT, &p.base);
    assert_int_equal(r.err, -EIO);
    assert_non_null(strstr(r.message, "/bad"));
    assert_int_equal(kv_revision(f->kv), rev);
    /* deleting repairs */
    Shoal__Store__DeleteRangeRequest del = SHOAL__STORE__DELETE_RANGE_REQUEST__INIT;
    del.key = "/";
    del.prefix = true;
    r = apply1(f, KV_OP_DELETE_RANGE, &del.base);
    assert_int_equal(r.err, 0);
    assert_int_equal(((Shoal__Store__DeleteRangeResponse *)r.response)->deleted, 4);
    assert_int_equal(kv_range(f->kv, &all, f->a, &resp), 0);
    assert_int_equal(resp->count, 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_kv_revision_increases_once_per_write_txn, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_kv_put_tracks_create_mod_revision_and_version, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_kv_txn_compare_picks_success_or_failure_branch, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(
            test_kv_txn_range_sees_its_own_writes_and_rejects_double_writes, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_kv_batch_gives_each_txn_its_revision_in_one_durable_write, setup, teardown),
        cmocka_unit_test_setup_teardown(test_kv_delete_emits_events_with_prev_kv, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_kv_watch_history_is_ordered_and_lossless_from_any_revision, setup, teardown),
        cmocka_unit_test_setup_teardown(test_kv_compaction_makes_old_watches_report_compacted,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_kv_leases_expire_with_injected_time_and_delete_their_keys, setup, teardown),
        cmocka_unit_test_setup_teardown(test_kv_lease_revoke_deletes_keys_and_detached_keys_survive,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_kv_leases_come_back_with_full_ttl_after_reopen, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_kv_data_survives_close_and_reopen, setup, teardown),
        cmocka_unit_test_setup_teardown(test_kv_range_limit_prefix_and_options, setup, teardown),
        cmocka_unit_test_setup_teardown(test_kv_rejects_bad_requests_with_clear_messages, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_kv_corrupt_record_is_reported_as_eio, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
