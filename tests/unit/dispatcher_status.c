/* Unit tests of services/dispatcher/status.c: the forward-only merge of agent reports and the
 * batched compare-and-swap writes, against an in-memory fake of store.Batch / store.Get. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "../../services/dispatcher/status.h"

/* ---- a fake store: one key space with revisions ------------------------------------------ */

#define MAX_KEYS 16

typedef struct fake_kv {
    char key[64];
    uint8_t *value;
    size_t len;
    int64_t mod_revision;
} fake_kv_t;

typedef struct fake {
    fake_kv_t kvs[MAX_KEYS];
    int n;
    int64_t revision;
    int batches;
    int fail_batch; /* -errno to fail the next batch with */
    /* What lookup() serves: the watch's view, possibly stale. */
    Shoal__Task *cached[MAX_KEYS];
    int64_t cached_mod[MAX_KEYS];
    /* Replies seen by done(). */
    int done_count;
    int done_err[8];
    uint32_t done_applied[8];
    void *done_request[8];
} fake_t;

static fake_kv_t *fake_find(fake_t *f, const char *key) {
    for (int i = 0; i < f->n; i++)
        if (f->kvs[i].len && strcmp(f->kvs[i].key, key) == 0)
            return &f->kvs[i];
    return NULL;
}

static int64_t fake_put(fake_t *f, const char *key, const ProtobufCMessage *msg) {
    fake_kv_t *kv = fake_find(f, key);
    if (!kv) {
        kv = &f->kvs[f->n++];
        snprintf(kv->key, sizeof kv->key, "%s", key);
    }
    free(kv->value);
    kv->len = protobuf_c_message_get_packed_size(msg);
    kv->value = malloc(kv->len);
    protobuf_c_message_pack(msg, kv->value);
    kv->mod_revision = ++f->revision;
    return kv->mod_revision;
}

static void fake_delete(fake_t *f, const char *key) {
    fake_kv_t *kv = fake_find(f, key);
    if (kv) {
        free(kv->value);
        kv->value = NULL;
        kv->len = 0;
        f->revision++;
    }
}

static Shoal__Task *fake_task(fake_t *f, const char *id, int64_t *ret_mod) {
    char key[64];
    snprintf(key, sizeof key, "/tasks/%s", id);
    fake_kv_t *kv = fake_find(f, key);
    if (!kv)
        return NULL;
    if (ret_mod)
        *ret_mod = kv->mod_revision;
    return shoal__task__unpack(NULL, kv->len, kv->value);
}

static const Shoal__Task *fake_lookup(void *ctx, const char *task_id, int64_t *ret_mod) {
    fake_t *f = ctx;
    for (int i = 0; i < MAX_KEYS; i++)
        if (f->cached[i] && strcmp(f->cached[i]->meta->id, task_id) == 0) {
            *ret_mod = f->cached_mod[i];
            return f->cached[i];
        }
    return NULL;
}

/* The watch catches up: lookup() serves what the store holds now. */
static void fake_sync_cache(fake_t *f) {
    for (int i = 0; i < MAX_KEYS; i++) {
        shoal__task__free_unpacked(f->cached[i], NULL);
        f->cached[i] = NULL;
    }
    int c = 0;
    for (int i = 0; i < f->n; i++) {
        if (!f->kvs[i].len)
            continue;
        f->cached[c] = shoal__task__unpack(NULL, f->kvs[i].len, f->kvs[i].value);
        f->cached_mod[c++] = f->kvs[i].mod_revision;
    }
}

static int fake_get(void *ctx, const char *key, Shoal__Store__KeyValue **ret) {
    fake_t *f = ctx;
    fake_kv_t *kv = fake_find(f, key);
    if (!kv)
        return -ENOENT;
    Shoal__Store__KeyValue out = SHOAL__STORE__KEY_VALUE__INIT;
    out.key = kv->key;
    out.value.data = kv->value;
    out.value.len = kv->len;
    out.mod_revision = kv->mod_revision;
    uint8_t buf[4096];
    size_t len = protobuf_c_message_pack(&out.base, buf);
    *ret = shoal__store__key_value__unpack(NULL, len, buf);
    return 0;
}

static int fake_batch(void *ctx, const Shoal__Store__BatchRequest *req,
                      Shoal__Store__BatchResponse **ret) {
    fake_t *f = ctx;
    f->batches++;
    if (f->fail_batch) {
        int r = f->fail_batch;
        f->fail_batch = 0;
        return r;
    }
    Shoal__Store__BatchResponse resp = SHOAL__STORE__BATCH_RESPONSE__INIT;
    Shoal__Store__TxnResponse txr[64];
    Shoal__Store__TxnResponse *txp[64];
    assert_true(req->n_txns <= 64);
    for (size_t i = 0; i < req->n_txns; i++) {
        const Shoal__Store__TxnRequest *t = req->txns[i];
        bool ok = true;
        for (size_t c = 0; c < t->n_compare; c++) {
            const Shoal__Store__Compare *cmp = t->compare[c];
            assert_int_equal(cmp->target, SHOAL__STORE__COMPARE__TARGET__MOD);
            fake_kv_t *kv = fake_find(f, cmp->key);
            int64_t mod = kv ? kv->mod_revision : 0;
            ok = ok && mod == cmp->number;
        }
        if (ok)
            for (size_t o = 0; o < t->n_success; o++) {
                const Shoal__Store__PutRequest *p = t->success[o]->put;
                assert_non_null(p);
                Shoal__Task *task = shoal__task__unpack(NULL, p->value.len, p->value.data);
                assert_non_null(task);
                fake_put(f, p->key, &task->base);
                shoal__task__free_unpacked(task, NULL);
            }
        Shoal__Store__TxnResponse r = SHOAL__STORE__TXN_RESPONSE__INIT;
        r.succeeded = ok;
        txr[i] = r;
        txp[i] = &txr[i];
    }
    resp.n_responses = req->n_txns;
    resp.responses = txp;
    uint8_t buf[4096];
    size_t len = protobuf_c_message_pack(&resp.base, buf);
    *ret = shoal__store__batch_response__unpack(NULL, len, buf);
    return 0;
}

static void fake_done(void *ctx, void *request, int err, uint32_t applied) {
    fake_t *f = ctx;
    if (f->done_count < 8) {
        f->done_request[f->done_count] = request;
        f->done_err[f->done_count] = err;
        f->done_applied[f->done_count] = applied;
    }
    f->done_count++;
}

/* ---- fixtures ---------------------------------------------------------------------------- */

typedef struct fixture {
    fake_t fake;
    status_queue_t *q;
} fixture_t;

static void seed_task(fake_t *f, const char *id, const char *node, int state, int desired) {
    Shoal__Task t = SHOAL__TASK__INIT;
    Shoal__Meta meta = SHOAL__META__INIT;
    Shoal__TaskStatus status = SHOAL__TASK_STATUS__INIT;
    Shoal__NetworkAttachment net = SHOAL__NETWORK_ATTACHMENT__INIT;
    Shoal__NetworkAttachment *nets[1] = {&net};
    char *addrs[1] = {"10.0.0.9"};
    meta.id = (char *)id;
    meta.version = 3;
    status.state = state;
    net.network = "old-net";
    net.n_addresses = 1;
    net.addresses = addrs;
    t.meta = &meta;
    t.status = &status;
    t.node_id = (char *)node;
    t.desired_state = desired;
    t.n_networks = 1;
    t.networks = nets;
    char key[64];
    snprintf(key, sizeof key, "/tasks/%s", id);
    fake_put(f, key, &t.base);
}

static int setup(void **state) {
    fixture_t *fx = calloc(1, sizeof *fx);
    status_ops_t ops = {.lookup = fake_lookup,
                        .batch = fake_batch,
                        .get = fake_get,
                        .done = fake_done,
                        .ctx = &fx->fake};
    fx->q = status_queue_new(&ops);
    assert_non_null(fx->q);
    seed_task(&fx->fake, "t1", "n1", SHOAL__TASK_STATE__ASSIGNED, SHOAL__TASK_STATE__RUNNING);
    seed_task(&fx->fake, "t2", "n1", SHOAL__TASK_STATE__ASSIGNED, SHOAL__TASK_STATE__RUNNING);
    fake_sync_cache(&fx->fake);
    *state = fx;
    return 0;
}

static int teardown(void **state) {
    fixture_t *fx = *state;
    status_queue_destroy(&fx->q);
    for (int i = 0; i < MAX_KEYS; i++) {
        free(fx->fake.kvs[i].value);
        shoal__task__free_unpacked(fx->fake.cached[i], NULL);
    }
    free(fx);
    return 0;
}

/* An update as the agent sends it (statically built; lives in the caller's frame). */
typedef struct update {
    Shoal__Dispatcher__TaskStatusUpdate u;
    Shoal__TaskStatus status;
    Shoal__ContainerStatus container;
} update_t;

static Shoal__Dispatcher__TaskStatusUpdate *make_update(update_t *up, const char *task, int state,
                                                        const char *message) {
    Shoal__Dispatcher__TaskStatusUpdate u = SHOAL__DISPATCHER__TASK_STATUS_UPDATE__INIT;
    Shoal__TaskStatus s = SHOAL__TASK_STATUS__INIT;
    up->u = u;
    up->status = s;
    up->u.task_id = (char *)task;
    up->status.state = state;
    up->status.message = (char *)message;
    up->u.status = &up->status;
    return &up->u;
}

/* ---- merge ------------------------------------------------------------------------------- */

static void test_status_late_starting_after_running_keeps_running(void **state) {
    fixture_t *fx = *state;
    Shoal__Task *t = fake_task(&fx->fake, "t1", NULL);
    update_t a, b;
    status_merged_t m1, m2;
    assert_true(
        status_merge(t, make_update(&a, "t1", SHOAL__TASK_STATE__RUNNING, "started"), 10, &m1));
    assert_int_equal(m1.task.status->state, SHOAL__TASK_STATE__RUNNING);
    assert_int_equal(m1.task.meta->version, 4);
    assert_int_equal(m1.task.meta->updated_at_ms, 10);
    assert_false(status_merge(&m1.task, make_update(&b, "t1", SHOAL__TASK_STATE__STARTING, "late"),
                              20, &m2));
    assert_int_equal(m2.task.status->state, SHOAL__TASK_STATE__RUNNING);
    assert_string_equal(m2.task.status->message, "started");

    /* Same through the queue: RUNNING written, the late STARTING applies nothing. */
    Shoal__Dispatcher__TaskStatusUpdate *first[1] = {&a.u}, *late[1] = {&b.u};
    int r1, r2;
    assert_int_equal(status_enqueue(fx->q, &r1, "n1", first, 1, 0), 0);
    assert_int_equal(status_flush(fx->q, 50), 0);
    fake_sync_cache(&fx->fake);
    assert_int_equal(status_enqueue(fx->q, &r2, "n1", late, 1, 60), 0);
    assert_int_equal(status_flush(fx->q, 110), 0);
    assert_int_equal(fx->fake.done_count, 2);
    assert_int_equal(fx->fake.done_applied[0], 1);
    assert_int_equal(fx->fake.done_applied[1], 0);
    assert_int_equal(fx->fake.done_err[1], 0);
    Shoal__Task *stored = fake_task(&fx->fake, "t1", NULL);
    assert_int_equal(stored->status->state, SHOAL__TASK_STATE__RUNNING);
    assert_int_equal(stored->meta->version, 4);
    shoal__task__free_unpacked(stored, NULL);
    shoal__task__free_unpacked(t, NULL);
}

static void test_status_failed_carries_exit_code(void **state) {
    fixture_t *fx = *state;
    Shoal__Task *t = fake_task(&fx->fake, "t1", NULL);
    update_t up;
    make_update(&up, "t1", SHOAL__TASK_STATE__FAILED, "exited");
    Shoal__ContainerStatus c = SHOAL__CONTAINER_STATUS__INIT;
    c.container_id = "c0ffee";
    c.exit_code = 137;
    up.status.container = &c;
    up.status.err = "task: non-zero exit (137)";
    status_merged_t m;
    assert_true(status_merge(t, &up.u, 5, &m));
    assert_int_equal(m.task.status->state, SHOAL__TASK_STATE__FAILED);
    assert_int_equal(m.task.status->container->exit_code, 137);
    assert_string_equal(m.task.status->err, "task: non-zero exit (137)");
    assert_int_equal(m.task.status->timestamp_ms, 5); /* stamped when the agent did not */

    /* Written to the store as such. */
    Shoal__Dispatcher__TaskStatusUpdate *ups[1] = {&up.u};
    int req;
    assert_int_equal(status_enqueue(fx->q, &req, "n1", ups, 1, 0), 0);
    assert_int_equal(status_flush(fx->q, 50), 0);
    Shoal__Task *stored = fake_task(&fx->fake, "t1", NULL);
    assert_int_equal(stored->status->state, SHOAL__TASK_STATE__FAILED);
    assert_int_equal(stored->status->container->exit_code, 137);
    assert_string_equal(stored->status->container->container_id, "c0ffee");
    shoal__task__free_unpacked(stored, NULL);
    shoal__task__free_unpacked(t, NULL);
}

static void test_status_networks_are_replaced(void **state) {
    fixture_t *fx = *state;
    Shoal__Task *t = fake_task(&fx->fake, "t1", NULL);
    assert_int_equal(t->n_networks, 1);
    update_t up;
    make_update(&up, "t1", SHOAL__TASK_STATE__RUNNING, "");
    Shoal__NetworkAttachment n1 = SHOAL__NETWORK_ATTACHMENT__INIT,
                             n2 = SHOAL__NETWORK_ATTACHMENT__INIT;
    char *a1[] = {"172.30.0.5"}, *a2[] = {"10.1.0.2", "10.1.0.3"};
    n1.network = "shoal";
    n1.n_addresses = 1;
    n1.addresses = a1;
    n2.network = "backend";
    n2.n_addresses = 2;
    n2.addresses = a2;
    Shoal__NetworkAttachment *nets[] = {&n1, &n2};
    up.u.n_networks = 2;
    up.u.networks = nets;
    status_merged_t m;
    assert_true(status_merge(t, &up.u, 1, &m));
    assert_int_equal(m.task.n_networks, 2);
    assert_string_equal(m.task.networks[0]->network, "shoal");
    assert_string_equal(m.task.networks[1]->addresses[1], "10.1.0.3");

    /* An equal state with only new networks is still a change. */
    status_merged_t again;
    update_t up2;
    make_update(&up2, "t1", SHOAL__TASK_STATE__RUNNING, "");
    up2.u.n_networks = 1;
    up2.u.networks = nets;
    assert_true(status_merge(&m.task, &up2.u, 2, &again));
    assert_int_equal(again.task.n_networks, 1);
    /* An identical report changes nothing. */
    status_merged_t same;
    assert_false(status_merge(&again.task, &up2.u, 3, &same));
    shoal__task__free_unpacked(t, NULL);
}

static void test_status_equal_state_updates_message(void **state) {
    fixture_t *fx = *state;
    Shoal__Task *t = fake_task(&fx->fake, "t1", NULL);
    update_t a, b;
    status_merged_t m1, m2;
    assert_true(
        status_merge(t, make_update(&a, "t1", SHOAL__TASK_STATE__PREPARING, "pulling"), 1, &m1));
    assert_true(status_merge(
        &m1.task, make_update(&b, "t1", SHOAL__TASK_STATE__PREPARING, "pulled 50%"), 2, &m2));
    assert_string_equal(m2.task.status->message, "pulled 50%");
    shoal__task__free_unpacked(t, NULL);
}

/* ---- queue ------------------------------------------------------------------------------- */

static void test_status_reports_of_one_flush_become_one_write_per_task(void **state) {
    fixture_t *fx = *state;
    update_t u[4];
    Shoal__Dispatcher__TaskStatusUpdate *req1[] = {
        make_update(&u[0], "t1", SHOAL__TASK_STATE__ACCEPTED, ""),
        make_update(&u[1], "t2", SHOAL__TASK_STATE__ACCEPTED, ""),
    };
    Shoal__Dispatcher__TaskStatusUpdate *req2[] = {
        make_update(&u[2], "t1", SHOAL__TASK_STATE__PREPARING, ""),
        make_update(&u[3], "t1", SHOAL__TASK_STATE__RUNNING, "up"),
    };
    int r1, r2;
    assert_int_equal(status_enqueue(fx->q, &r1, "n1", req1, 2, 1000), 0);
    assert_int_equal(status_enqueue(fx->q, &r2, "n1", req2, 2, 1010), 0);
    assert_int_equal(status_pending(fx->q), 4);
    assert_int_equal(status_due(fx->q), 1000 + STATUS_FLUSH_INTERVAL_MS);
    int64_t rev_before = fx->fake.revision;
    assert_int_equal(status_flush(fx->q, 1050), 0);
    assert_int_equal(status_pending(fx->q), 0);
    assert_int_equal(status_due(fx->q), 0);
    assert_int_equal(fx->fake.batches, 1);
    assert_int_equal(fx->fake.revision - rev_before, 2); /* t1 once, t2 once */
    assert_int_equal(fx->fake.done_count, 2);
    assert_ptr_equal(fx->fake.done_request[0], &r1);
    assert_int_equal(fx->fake.done_applied[0], 2);
    assert_int_equal(fx->fake.done_applied[1], 2);
    Shoal__Task *t1 = fake_task(&fx->fake, "t1", NULL);
    assert_int_equal(t1->status->state, SHOAL__TASK_STATE__RUNNING);
    assert_int_equal(t1->meta->version, 4);
    shoal__task__free_unpacked(t1, NULL);
    status_stats_t st;
    status_queue_stats(fx->q, &st);
    assert_int_equal(st.updates_total, 4);
    assert_int_equal(st.applied_total, 4);
    assert_int_equal(st.batches_total, 1);
}

static void test_status_cas_conflict_rereads_and_keeps_the_other_write(void **state) {
    fixture_t *fx = *state;
    /* The orchestrator sets desired SHUTDOWN; the watch has not caught up (stale cache). */
    Shoal__Task *t = fake_task(&fx->fake, "t1", NULL);
    t->desired_state = SHOAL__TASK_STATE__SHUTDOWN;
    t->meta->version = 4;
    fake_put(&fx->fake, "/tasks/t1", &t->base);
    shoal__task__free_unpacked(t, NULL);

    update_t u;
    Shoal__Dispatcher__TaskStatusUpdate *ups[] = {
        make_update(&u, "t1", SHOAL__TASK_STATE__RUNNING, ""),
    };
    int r;
    assert_int_equal(status_enqueue(fx->q, &r, "n1", ups, 1, 0), 0);
    assert_int_equal(status_flush(fx->q, 50), 0);
    assert_int_equal(fx->fake.batches, 2);
    assert_int_equal(fx->fake.done_applied[0], 1);
    Shoal__Task *stored = fake_task(&fx->fake, "t1", NULL);
    assert_int_equal(stored->status->state, SHOAL__TASK_STATE__RUNNING);
    assert_int_equal(stored->desired_state, SHOAL__TASK_STATE__SHUTDOWN);
    assert_int_equal(stored->meta->version, 5); /* the orchestrator's 4, then ours */
    shoal__task__free_unpacked(stored, NULL);
    status_stats_t st;
    status_queue_stats(fx->q, &st);
    assert_int_equal(st.conflicts_total, 1);
}

static void test_status_deleted_or_moved_task_is_not_written(void **state) {
    fixture_t *fx = *state;
    fake_delete(&fx->fake, "/tasks/t1");
    seed_task(&fx->fake, "t2", "n2", SHOAL__TASK_STATE__ASSIGNED, SHOAL__TASK_STATE__RUNNING);
    update_t u[2];
    Shoal__Dispatcher__TaskStatusUpdate *ups[] = {
        make_update(&u[0], "t1", SHOAL__TASK_STATE__RUNNING, ""),
        make_update(&u[1], "t2", SHOAL__TASK_STATE__RUNNING, ""),
    };
    int r;
    int64_t rev = fx->fake.revision;
    assert_int_equal(status_enqueue(fx->q, &r, "n1", ups, 2, 0), 0);
    assert_int_equal(status_flush(fx->q, 50), 0);
    assert_int_equal(fx->fake.done_count, 1);
    assert_int_equal(fx->fake.done_err[0], 0);
    assert_int_equal(fx->fake.done_applied[0], 0);
    assert_int_equal(fx->fake.revision, rev);
    assert_null(fake_task(&fx->fake, "t1", NULL));
}

static void test_status_failed_batch_fails_its_requests(void **state) {
    fixture_t *fx = *state;
    update_t u;
    Shoal__Dispatcher__TaskStatusUpdate *ups[] = {
        make_update(&u, "t1", SHOAL__TASK_STATE__RUNNING, ""),
    };
    int r, empty;
    fx->fake.fail_batch = -EAGAIN;
    assert_int_equal(status_enqueue(fx->q, &r, "n1", ups, 1, 0), 0);
    assert_int_equal(status_enqueue(fx->q, &empty, "n1", NULL, 0, 0), 0);
    assert_int_equal(status_flush(fx->q, 50), -EAGAIN);
    assert_int_equal(fx->fake.done_count, 2);
    assert_int_equal(fx->fake.done_err[0], -EAGAIN);
    assert_int_equal(fx->fake.done_applied[0], 0);
    assert_int_equal(fx->fake.done_err[1], 0); /* nothing of it was in the batch */
    Shoal__Task *stored = fake_task(&fx->fake, "t1", NULL);
    assert_int_equal(stored->status->state, SHOAL__TASK_STATE__ASSIGNED);
    shoal__task__free_unpacked(stored, NULL);
}

static void test_status_destroy_cancels_queued_requests(void **state) {
    fixture_t *fx = *state;
    update_t u;
    Shoal__Dispatcher__TaskStatusUpdate *ups[] = {
        make_update(&u, "t1", SHOAL__TASK_STATE__RUNNING, ""),
    };
    int r;
    assert_int_equal(status_enqueue(fx->q, &r, "n1", ups, 1, 0), 0);
    status_queue_destroy(&fx->q);
    assert_null(fx->q);
    assert_int_equal(fx->fake.done_count, 1);
    assert_int_equal(fx->fake.done_err[0], -ECANCELED);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_status_late_starting_after_running_keeps_running,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_status_failed_carries_exit_code, setup, teardown),
        cmocka_unit_test_setup_teardown(test_status_networks_are_replaced, setup, teardown),
        cmocka_unit_test_setup_teardown(test_status_equal_state_updates_message, setup, teardown),
        cmocka_unit_test_setup_teardown(test_status_reports_of_one_flush_become_one_write_per_task,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_status_cas_conflict_rereads_and_keeps_the_other_write,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_status_deleted_or_moved_task_is_not_written, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_status_failed_batch_fails_its_requests, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_status_destroy_cancels_queued_requests, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
