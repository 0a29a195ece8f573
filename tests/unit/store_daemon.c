/* The real shoal-store daemon, driven through lib/storecli.h: CRUD, txn, leases, long-poll watch
 * latency, group commit under concurrent writers, the self-registration entry, and durability of
 * an acknowledged write across SIGKILL + restart. Skipped (with the reason) when bin/shoal-store
 * is not built. Each run uses its own state dir /tmp/shoal-store-daemon-XXXXXX. */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "bus.h"
#include "config.h"
#include "storecli.h"

typedef struct fixture {
    char dir[64];
    char bin[PATH_MAX];
    shoal_config_t cfg;
    zcert_t *admin;
    store_client_t *sc;
    pid_t pid;
} fixture_t;

static fixture_t *F;

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static pid_t start_store(fixture_t *f) {
    pid_t pid = fork();
    if (pid == 0) {
        char log[PATH_MAX];
        snprintf(log, sizeof log, "%s/logs/store.log", f->dir);
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        execl(f->bin, f->bin, "--state-dir", f->dir, "--instance", "test", NULL);
        _exit(127);
    }
    return pid;
}

/* Waits until the store answers Status. */
static int wait_ready(fixture_t *f) {
    int64_t deadline = clock_mono_ms() + 15000;
    store_client_set_timeout(f->sc, 500);
    while (clock_mono_ms() < deadline) {
        Shoal__Store__StatusResponse *st = NULL;
        if (store_status(f->sc, &st) == 0) {
            shoal__store__status_response__free_unpacked(st, NULL);
            store_client_set_timeout(f->sc, 10000);
            return 0;
        }
        int status;
        if (waitpid(f->pid, &status, WNOHANG) == f->pid) {
            fprintf(stderr, "shoal-store exited (status %d); see %s/logs/store.log\n", status,
                    f->dir);
            return -ECHILD;
        }
        usleep(50 * 1000);
    }
    return -ETIMEDOUT;
}

static int64_t stat_value(fixture_t *f, const char *name) {
    Shoal__Bus__Empty in = SHOAL__BUS__EMPTY__INIT;
    Shoal__Bus__StatsResponse *out = NULL;
    int rc =
        bus_client_call(store_client_bus(f->sc), "bus.Stats", &in.base,
                        &shoal__bus__stats_response__descriptor, 5000, (ProtobufCMessage **)&out);
    if (rc != BUS_OK)
        fail_msg("bus.Stats: %d", rc);
    int64_t v = -1;
    for (size_t i = 0; i < out->n_stats; i++)
        if (!strcmp(out->stats[i]->name, name))
            v = out->stats[i]->value;
    shoal__bus__stats_response__free_unpacked(out, NULL);
    return v;
}

static int group_setup(void **state) {
    static fixture_t f;
    memset(&f, 0, sizeof f);
    const char *bin_dir = getenv("BIN");
    snprintf(f.bin, sizeof f.bin, "%s/shoal-store", bin_dir && *bin_dir ? bin_dir : "bin");
    *state = &f;
    F = &f;
    if (access(f.bin, X_OK) < 0) {
        f.bin[0] = '\0';
        return 0;
    }
    snprintf(f.dir, sizeof f.dir, "/tmp/shoal-store-daemon-XXXXXX");
    if (!mkdtemp(f.dir))
        return -1;
    static const char *const names[] = {"store", "admin", NULL};
    if (config_init(f.dir, names) < 0 || config_load(f.dir, &f.cfg) < 0)
        return -1;
    f.admin = bus_identity_load(f.dir, "admin");
    if (!f.admin)
        return -1;
    f.sc = store_client_new(&f.cfg, f.admin);
    if (!f.sc)
        return -1;
    f.pid = start_store(&f);
    return wait_ready(&f) < 0 ? -1 : 0;
}

static int group_teardown(void **state) {
    fixture_t *f = *state;
    if (!f->bin[0])
        return 0;
    if (f->pid > 0) {
        kill(f->pid, SIGTERM);
        int status = 0;
        for (int i = 0; i < 100 && waitpid(f->pid, &status, WNOHANG) != f->pid; i++)
            usleep(50 * 1000);
        kill(f->pid, SIGKILL);
        waitpid(f->pid, &status, 0);
    }
    store_client_destroy(&f->sc);
    zcert_destroy(&f->admin);
    /* a sanitizer build of the daemon reports into its log: any report fails the suite */
    char log[PATH_MAX], line[1024];
    snprintf(log, sizeof log, "%s/logs/store.log", f->dir);
    FILE *lf = fopen(log, "r");
    int reports = 0;
    while (lf && fgets(line, sizeof line, lf))
        if (strstr(line, "Sanitizer") || strstr(line, "runtime error")) {
            fprintf(stderr, "store.log: %s", line);
            reports++;
        }
    if (lf)
        fclose(lf);
    nftw(f->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    return reports ? -1 : 0;
}

static fixture_t *need_daemon(void **state) {
    fixture_t *f = *state;
    if (!f->bin[0]) {
        printf("skipped: %s is not built (make bin/shoal-store)\n",
               f->bin[0] ? f->bin : "bin/shoal-store");
        skip();
    }
    return f;
}

/* ---- tests ------------------------------------------------------------------------------- */

static void test_daemon_put_get_txn_delete(void **state) {
    fixture_t *f = need_daemon(state);
    int64_t rev1 = 0, rev2 = 0;
    assert_int_equal(store_put(f->sc, "/t/a", "one", 3, 0, &rev1), 0);
    assert_int_equal(store_put(f->sc, "/t/a", "two", 3, 0, &rev2), 0);
    assert_int_equal(rev2, rev1 + 1);
    Shoal__Store__KeyValue *kv = NULL;
    assert_int_equal(store_get(f->sc, "/t/a", &kv), 0);
    assert_int_equal(kv->value.len, 3);
    assert_memory_equal(kv->value.data, "two", 3);
    assert_int_equal(kv->version, 2);
    assert_int_equal(kv->mod_revision, rev2);
    shoal__store__key_value__free_unpacked(kv, NULL);

    /* compare-and-swap on the mod revision: stale fails, fresh succeeds */
    store_txn_builder_t *b = store_txn_builder_new();
    store_txn_cmp_mod(b, "/t/a", rev1);
    store_txn_put_raw(b, "/t/a", "three", 5, 0);
    Shoal__Store__TxnResponse *tr = NULL;
    assert_int_equal(store_txn(f->sc, store_txn_builder_request(b), &tr), -ECANCELED);
    shoal__store__txn_response__free_unpacked(tr, NULL);
    store_txn_builder_destroy(&b);
    b = store_txn_builder_new();
    store_txn_cmp_mod(b, "/t/a", rev2);
    store_txn_put_raw(b, "/t/a", "three", 5, 0);
    store_txn_put_raw(b, "/t/b", "x", 1, 0);
    tr = NULL;
    assert_int_equal(store_txn(f->sc, store_txn_builder_request(b), &tr), 0);
    assert_int_equal(tr->header->revision, rev2 + 1);
    shoal__store__txn_response__free_unpacked(tr, NULL);
    store_txn_builder_destroy(&b);

    Shoal__Store__RangeResponse *rr = NULL;
    assert_int_equal(store_list(f->sc, "/t/", &rr), 0);
    assert_int_equal(rr->n_kvs, 2);
    assert_int_equal(rr->kvs[0]->mod_revision, rr->kvs[1]->mod_revision);
    shoal__store__range_response__free_unpacked(rr, NULL);

    int64_t deleted = 0;
    assert_int_equal(store_delete_prefix(f->sc, "/t/", &deleted), 0);
    assert_int_equal(deleted, 2);
    assert_int_equal(store_get(f->sc, "/t/a", &kv), -ENOENT);
}

static void test_daemon_rejects_bad_requests_with_clear_messages(void **state) {
    fixture_t *f = need_daemon(state);
    assert_int_equal(store_put(f->sc, "", "x", 1, 0, NULL), -EINVAL);
    assert_non_null(strstr(store_client_error(f->sc), "empty key"));
    assert_int_equal(store_put(f->sc, "/k", "x", 1, 424242, NULL), -ENOENT);
    assert_non_null(strstr(store_client_error(f->sc), "lease 424242 not found"));
    int64_t id;
    assert_int_equal(store_lease_grant(f->sc, 0, &id), -EINVAL);
    assert_non_null(strstr(store_client_error(f->sc), "ttl_ms"));
    assert_int_equal(store_lease_keepalive(f->sc, 99999), -ENOENT);
    Shoal__Store__RangeRequest req = SHOAL__STORE__RANGE_REQUEST__INIT;
    req.key = "/b";
    req.range_end = "/a";
    Shoal__Store__RangeResponse *rr = NULL;
    int rc =
        bus_client_call(store_client_bus(f->sc), "store.Range", &req.base,
                        &shoal__store__range_response__descriptor, 5000, (ProtobufCMessage **)&rr);
    assert_int_equal(rc, BUS_INVALID_ARGUMENT);
}

static void test_daemon_lease_keeps_and_revoke_deletes_keys(void **state) {
    fixture_t *f = need_daemon(state);
    int64_t id = 0;
    assert_int_equal(store_lease_grant(f->sc, 600, &id), 0);
    assert_true(id > 0);
    assert_int_equal(store_put(f->sc, "/leased/a", "1", 1, id, NULL), 0);
    for (int i = 0; i < 6; i++) { /* 1.2 s alive on 600 ms TTL thanks to keep-alives */
        usleep(200 * 1000);
        assert_int_equal(store_lease_keepalive(f->sc, id), 0);
    }
    Shoal__Store__KeyValue *kv = NULL;
    assert_int_equal(store_get(f->sc, "/leased/a", &kv), 0);
    assert_int_equal(kv->lease, id);
    shoal__store__key_value__free_unpacked(kv, NULL);
    assert_int_equal(store_lease_revoke(f->sc, id), 0);
    assert_int_equal(store_get(f->sc, "/leased/a", &kv), -ENOENT);
    /* and without keep-alive a lease expires on its own */
    assert_int_equal(store_lease_grant(f->sc, 300, &id), 0);
    assert_int_equal(store_put(f->sc, "/leased/b", "1", 1, id, NULL), 0);
    usleep(600 * 1000);
    assert_int_equal(store_get(f->sc, "/leased/b", &kv), -ENOENT);
}

static void test_daemon_registers_itself_under_bus_store(void **state) {
    fixture_t *f = need_daemon(state);
    Shoal__Store__KeyValue *kv = NULL;
    assert_int_equal(store_get(f->sc, "/bus/store/test", &kv), 0);
    assert_true(kv->lease > 0);
    Shoal__Bus__RegistryEntry *e =
        shoal__bus__registry_entry__unpack(NULL, kv->value.len, kv->value.data);
    assert_non_null(e);
    assert_string_equal(e->kind, "store");
    assert_string_equal(e->instance, "test");
    char key[41];
    assert_int_equal(bus_public_key(f->dir, "store", key), 0);
    assert_string_equal(e->public_key, key);
    assert_int_equal(e->pid, f->pid);
    assert_non_null(strstr(e->rpc_endpoint, "store.rpc"));
    shoal__bus__registry_entry__free_unpacked(e, NULL);
    shoal__store__key_value__free_unpacked(kv, NULL);
    /* the store keeps its own lease alive */
    Shoal__Store__KeyValue *later = NULL;
    sleep(4); /* > REGISTRY_TTL_MS */
    assert_int_equal(store_get(f->sc, "/bus/store/test", &later), 0);
    shoal__store__key_value__free_unpacked(later, NULL);
}

static void test_daemon_long_poll_watch_wakes_on_put(void **state) {
    fixture_t *f = need_daemon(state);
    Shoal__Store__StatusResponse *st = NULL;
    assert_int_equal(store_status(f->sc, &st), 0);
    int64_t rev = st->header->revision;
    shoal__store__status_response__free_unpacked(st, NULL);

    /* a quiet watch times out with no events and a next revision to continue from */
    Shoal__Store__WatchRequest wr = SHOAL__STORE__WATCH_REQUEST__INIT;
    wr.key = "/quiet/";
    wr.prefix = true;
    wr.start_revision = rev + 1;
    wr.timeout_ms = 300;
    Shoal__Store__WatchResponse *resp = NULL;
    int64_t t0 = clock_mono_ms();
    assert_int_equal(store_watch(f->sc, &wr, &resp), 0);
    int64_t took = clock_mono_ms() - t0;
    assert_true(took >= 250 && took < 1500);
    assert_int_equal(resp->n_events, 0);
    assert_false(resp->compacted);
    assert_true(resp->next_revision >= rev + 1);
    shoal__store__watch_response__free_unpacked(resp, NULL);

    zactor_t *w = store_watcher_new(&f->cfg, "admin", "/watch/", rev + 1);
    assert_non_null(w);
    usleep(300 * 1000); /* let the watcher park its long poll */
    zpoller_t *p = zpoller_new(zactor_sock(w), NULL);
    double worst = 0;
    for (int i = 0; i < 5; i++) {
        char key[32];
        snprintf(key, sizeof key, "/watch/%d", i);
        t0 = clock_mono_ms();
        assert_int_equal(store_put(f->sc, key, "v", 1, 0, NULL), 0);
        assert_non_null(zpoller_wait(p, 2000));
        took = clock_mono_ms() - t0;
        if (took > worst)
            worst = (double)took;
        Shoal__Store__WatchResponse *ev = NULL;
        assert_int_equal(store_watcher_recv(w, &ev), 0);
        assert_int_equal(ev->n_events, 1);
        assert_string_equal(ev->events[0]->kv->key, key);
        shoal__store__watch_response__free_unpacked(ev, NULL);
        usleep(100 * 1000);
    }
    printf("watch wake-up after put: worst %.0f ms over 5 puts\n", worst);
    assert_true(worst < 150);
    zpoller_destroy(&p);
    zactor_destroy(&w);
}

typedef struct writer {
    fixture_t *f;
    int id, n, failures;
} writer_t;

static void *writer_thread(void *arg) {
    writer_t *w = arg;
    zcert_t *id = bus_identity_load(w->f->dir, "admin");
    store_client_t *sc = store_client_new(&w->f->cfg, id);
    for (int i = 0; i < w->n; i++) {
        char key[64];
        snprintf(key, sizeof key, "/load/%d/%d", w->id, i);
        if (store_put(sc, key, "value", 5, 0, NULL) < 0)
            w->failures++;
    }
    store_client_destroy(&sc);
    zcert_destroy(&id);
    return NULL;
}

static void test_daemon_group_commits_concurrent_writes(void **state) {
    fixture_t *f = need_daemon(state);
    enum { SEQ = 200, THREADS = 8, PER = 100 };
    int64_t t0 = clock_mono_ms();
    for (int i = 0; i < SEQ; i++) {
        char key[64];
        snprintf(key, sizeof key, "/seq/%d", i);
        assert_int_equal(store_put(f->sc, key, "value", 5, 0, NULL), 0);
    }
    int64_t seq_ms = clock_mono_ms() - t0;
    int64_t fsyncs0 = stat_value(f, "store.fsyncs_total");
    int64_t writes0 = stat_value(f, "store.writes_total");
    pthread_t th[THREADS];
    writer_t w[THREADS];
    t0 = clock_mono_ms();
    for (int i = 0; i < THREADS; i++) {
        w[i] = (writer_t){f, i, PER, 0};
        pthread_create(&th[i], NULL, writer_thread, &w[i]);
    }
    for (int i = 0; i < THREADS; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(w[i].failures, 0);
    }
    int64_t conc_ms = clock_mono_ms() - t0;
    int64_t fsyncs = stat_value(f, "store.fsyncs_total") - fsyncs0;
    int64_t writes = stat_value(f, "store.writes_total") - writes0;
    int64_t batch_max = stat_value(f, "store.batch_ops_max");
    printf("sequential fsynced puts: %d in %lld ms (%.0f/s); %d concurrent clients: %d puts in "
           "%lld ms (%.0f/s), %lld fsyncs, largest group %lld\n",
           SEQ, (long long)seq_ms, SEQ * 1000.0 / (double)(seq_ms ? seq_ms : 1), THREADS,
           THREADS * PER, (long long)conc_ms,
           THREADS * PER * 1000.0 / (double)(conc_ms ? conc_ms : 1), (long long)fsyncs,
           (long long)batch_max);
    assert_true(writes >= THREADS * PER);
    assert_true(batch_max >= 2);
    assert_true(fsyncs < writes);
    Shoal__Store__RangeResponse *rr = NULL;
    assert_int_equal(store_list(f->sc, "/load/", &rr), 0);
    assert_int_equal(rr->n_kvs, THREADS * PER);
    shoal__store__range_response__free_unpacked(rr, NULL);
}

static void test_daemon_acknowledged_write_survives_sigkill(void **state) {
    fixture_t *f = need_daemon(state);
    int64_t lease = 0, rev = 0;
    assert_int_equal(store_lease_grant(f->sc, 2000, &lease), 0);
    assert_int_equal(store_put(f->sc, "/durable/leased", "L", 1, lease, NULL), 0);
    assert_int_equal(store_put(f->sc, "/durable/key", "acknowledged", 12, 0, &rev), 0);
    /* no grace: the write was acknowledged, so it must already be on disk */
    kill(f->pid, SIGKILL);
    int status;
    waitpid(f->pid, &status, 0);
    f->pid = start_store(f);
    assert_int_equal(wait_ready(f), 0);
    Shoal__Store__KeyValue *kv = NULL;
    assert_int_equal(store_get(f->sc, "/durable/key", &kv), 0);
    assert_int_equal(kv->value.len, 12);
    assert_memory_equal(kv->value.data, "acknowledged", 12);
    assert_int_equal(kv->mod_revision, rev);
    shoal__store__key_value__free_unpacked(kv, NULL);
    /* the lease came back with a full TTL: the key is still there, then goes with no keep-alive */
    assert_int_equal(store_get(f->sc, "/durable/leased", &kv), 0);
    shoal__store__key_value__free_unpacked(kv, NULL);
    int64_t deadline = clock_mono_ms() + 5000;
    int rc = 0;
    while (clock_mono_ms() < deadline && (rc = store_get(f->sc, "/durable/leased", &kv)) == 0) {
        shoal__store__key_value__free_unpacked(kv, NULL);
        usleep(100 * 1000);
    }
    assert_int_equal(rc, -ENOENT);
    /* revisions continue where they were */
    int64_t rev2 = 0;
    assert_int_equal(store_put(f->sc, "/durable/after", "x", 1, 0, &rev2), 0);
    assert_true(rev2 > rev);
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_daemon_put_get_txn_delete),
        cmocka_unit_test(test_daemon_rejects_bad_requests_with_clear_messages),
        cmocka_unit_test(test_daemon_lease_keeps_and_revoke_deletes_keys),
        cmocka_unit_test(test_daemon_registers_itself_under_bus_store),
        cmocka_unit_test(test_daemon_long_poll_watch_wakes_on_put),
        cmocka_unit_test(test_daemon_group_commits_concurrent_writes),
        cmocka_unit_test(test_daemon_acknowledged_write_survives_sigkill),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
