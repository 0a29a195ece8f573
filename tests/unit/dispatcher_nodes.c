/* Unit tests of services/dispatcher/nodes.c: registration, sessions, heartbeat deadlines and the
 * double grace after a dispatcher start, all with injected time. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "../../services/dispatcher/nodes.h"

#define KEY "s3cret-cluster-key"

static int id_counter;

static void test_id(char *buf) {
    snprintf(buf, 26, "id%023d", ++id_counter);
}

static int setup(void **state) {
    id_counter = 0;
    nodes_t *n = nodes_new(KEY, test_id, 42);
    assert_non_null(n);
    *state = n;
    return 0;
}

static int teardown(void **state) {
    nodes_t *n = *state;
    nodes_destroy(&n);
    assert_null(n);
    return 0;
}

typedef struct visits {
    int count;
    char ids[8][NODES_ID_MAX + 1];
    int result; /* what the visit returns */
} visits_t;

static int record_visit(void *ctx, const char *node_id) {
    visits_t *v = ctx;
    if (v->count < 8)
        snprintf(v->ids[v->count], sizeof v->ids[0], "%s", node_id);
    v->count++;
    return v->result;
}

static void test_nodes_register_with_wrong_key_is_rejected(void **state) {
    nodes_t *n = *state;
    nodes_registration_t reg;
    assert_int_equal(nodes_register(n, "wrong", "", 0, &reg), -EACCES);
    assert_int_equal(nodes_register(n, KEY "x", "", 0, &reg), -EACCES);
    assert_int_equal(nodes_register(n, "", "", 0, &reg), -EACCES);
    nodes_counts_t c;
    nodes_counts(n, &c);
    assert_int_equal(c.ready + c.unknown + c.down, 0);
    assert_int_equal(nodes_register(n, KEY, "", 0, &reg), 0);
    assert_true(reg.is_new);
}

static void test_nodes_key_compare_is_exact(void **state) {
    (void)state;
    assert_true(nodes_key_equal("abc", "abc"));
    assert_false(nodes_key_equal("abc", "abd"));
    assert_false(nodes_key_equal("abc", "ab"));
    assert_false(nodes_key_equal("", "a"));
    assert_true(nodes_key_equal("", ""));
}

static void test_nodes_reregister_keeps_id_and_starts_new_session(void **state) {
    nodes_t *n = *state;
    nodes_registration_t first, again;
    assert_int_equal(nodes_register(n, KEY, "", 1000, &first), 0);
    assert_true(first.is_new);
    assert_true(strlen(first.node_id) > 0);
    assert_int_equal(nodes_register(n, KEY, first.node_id, 2000, &again), 0);
    assert_false(again.is_new);
    assert_string_equal(again.node_id, first.node_id);
    assert_string_not_equal(again.session_id, first.session_id);
    /* An id nobody knows is not taken as given: the agent gets a new one. */
    nodes_registration_t stranger;
    assert_int_equal(nodes_register(n, KEY, "made-up-id", 2000, &stranger), 0);
    assert_true(stranger.is_new);
    assert_string_not_equal(stranger.node_id, "made-up-id");
}

static void test_nodes_heartbeat_with_stale_session_is_rejected(void **state) {
    nodes_t *n = *state;
    nodes_registration_t first, again;
    assert_int_equal(nodes_register(n, KEY, "", 0, &first), 0);
    int64_t period = 0;
    assert_int_equal(nodes_heartbeat(n, first.node_id, first.session_id, 100, &period), 0);
    assert_int_equal(nodes_register(n, KEY, first.node_id, 200, &again), 0);
    assert_int_equal(nodes_heartbeat(n, first.node_id, first.session_id, 300, &period), -ESTALE);
    assert_int_equal(nodes_check_session(n, first.node_id, first.session_id), -ESTALE);
    assert_int_equal(nodes_heartbeat(n, again.node_id, again.session_id, 300, &period), 0);
    assert_int_equal(nodes_check_session(n, again.node_id, again.session_id), 0);
    assert_int_equal(nodes_heartbeat(n, "nobody", again.session_id, 300, &period), -ESTALE);
    assert_int_equal(nodes_heartbeat(n, again.node_id, "", 300, &period), -ESTALE);
}

static void test_nodes_period_has_ten_percent_jitter(void **state) {
    nodes_t *n = *state;
    nodes_registration_t reg;
    assert_int_equal(nodes_register(n, KEY, "", 0, &reg), 0);
    int64_t lo = 1000000, hi = 0;
    for (int i = 0; i < 2000; i++) {
        int64_t p = 0;
        assert_int_equal(nodes_heartbeat(n, reg.node_id, reg.session_id, i, &p), 0);
        lo = p < lo ? p : lo;
        hi = p > hi ? p : hi;
    }
    assert_true(lo >= 450 && hi <= 550);
    assert_true(hi - lo >= 80); /* it does vary, over most of the range */
}

static void test_nodes_go_down_after_three_missed_periods(void **state) {
    nodes_t *n = *state;
    nodes_registration_t reg;
    assert_int_equal(nodes_register(n, KEY, "", 0, &reg), 0);
    int64_t period = 0, t = 0;
    for (int i = 0; i < 10; i++) {
        t += 500;
        assert_int_equal(nodes_heartbeat(n, reg.node_id, reg.session_id, t, &period), 0);
        visits_t v = {0};
        assert_int_equal(nodes_expire(n, t, record_visit, &v), 0);
    }
    /* Last beat at t with a period in [450, 550]: alive up to 3 × 450, down after 3 × 550. */
    visits_t v = {0};
    assert_int_equal(nodes_expire(n, t + 3 * 450, record_visit, &v), 0);
    assert_int_equal(nodes_state(n, reg.node_id), NODES_STATE_READY);
    assert_int_equal(nodes_expire(n, t + 3 * 550 + 1, record_visit, &v), 1);
    assert_string_equal(v.ids[0], reg.node_id);
    assert_int_equal(nodes_state(n, reg.node_id), NODES_STATE_DOWN);
    /* DOWN ends the session: the agent has to register again. */
    assert_int_equal(nodes_heartbeat(n, reg.node_id, reg.session_id, t + 2000, &period), -ESTALE);
    nodes_registration_t back;
    assert_int_equal(nodes_register(n, KEY, reg.node_id, t + 2000, &back), 0);
    assert_false(back.is_new);
    assert_int_equal(nodes_state(n, reg.node_id), NODES_STATE_READY);
}

static void test_nodes_down_write_failure_is_retried(void **state) {
    nodes_t *n = *state;
    nodes_registration_t reg;
    assert_int_equal(nodes_register(n, KEY, "", 0, &reg), 0);
    visits_t v = {.result = -EAGAIN};
    assert_int_equal(nodes_expire(n, 10000, record_visit, &v), 1);
    v.result = 0;
    assert_int_equal(nodes_expire(n, 10100, record_visit, &v), 1); /* visited again */
    assert_int_equal(nodes_expire(n, 10200, record_visit, &v), 0); /* written: done */
    assert_int_equal(v.count, 2);
}

static void test_nodes_period_follows_cluster_spec(void **state) {
    nodes_t *n = *state;
    nodes_set_period(n, 1000, 5);
    assert_int_equal(nodes_period(n), 1000);
    assert_int_equal(nodes_multiplier(n), 5);
    nodes_set_period(n, 0, 0); /* unset fields keep the current values */
    assert_int_equal(nodes_period(n), 1000);
    nodes_registration_t reg;
    assert_int_equal(nodes_register(n, KEY, "", 0, &reg), 0);
    assert_true(reg.period_ms >= 900 && reg.period_ms <= 1100);
    visits_t v = {0};
    assert_int_equal(nodes_expire(n, 5 * 900, record_visit, &v), 0);
    assert_int_equal(nodes_expire(n, 5 * 1100 + 1, record_visit, &v), 1);
}

static void test_nodes_unknown_after_restart_gets_double_grace(void **state) {
    nodes_t *n = *state;
    /* A fresh dispatcher lists the store: two READY nodes, one DOWN. */
    nodes_observe(n, "alive", NODES_STATE_READY, 10, 0);
    nodes_observe(n, "silent", NODES_STATE_READY, 11, 0);
    nodes_observe(n, "dead", NODES_STATE_DOWN, 12, 0);
    visits_t marked = {0};
    assert_int_equal(nodes_mark_unknown(n, 1000, record_visit, &marked), 2);
    assert_int_equal(nodes_state(n, "alive"), NODES_STATE_UNKNOWN);
    assert_int_equal(nodes_state(n, "dead"), NODES_STATE_DOWN);

    /* "alive"'s agent comes back within the grace; "silent"'s never does. */
    nodes_registration_t reg;
    assert_int_equal(nodes_register(n, KEY, "alive", 2000, &reg), 0);
    assert_false(reg.is_new);
    assert_string_equal(reg.node_id, "alive");
    int64_t t = 2000, period;
    visits_t v = {0};
    /* A normal grace (3 × 500) after the start is not enough to judge "silent". */
    assert_int_equal(nodes_expire(n, 1000 + 3 * 500 + 100, record_visit, &v), 0);
    while (t < 1000 + 6 * 500) {
        t += 400;
        assert_int_equal(nodes_heartbeat(n, "alive", reg.session_id, t, &period), 0);
        assert_int_equal(nodes_expire(n, t, record_visit, &v), 0);
    }
    /* Double grace (2 × 3 × 500) after the start: "silent" goes DOWN, "alive" stays. */
    assert_int_equal(nodes_expire(n, 1000 + 6 * 500 + 1, record_visit, &v), 1);
    assert_string_equal(v.ids[0], "silent");
    assert_int_equal(nodes_state(n, "silent"), NODES_STATE_DOWN);
    assert_int_equal(nodes_state(n, "alive"), NODES_STATE_READY);
    nodes_counts_t c;
    nodes_counts(n, &c);
    assert_int_equal(c.ready, 1);
    assert_int_equal(c.down, 2);
    assert_int_equal(c.sessions, 1);
}

static void test_nodes_down_written_elsewhere_ends_session(void **state) {
    nodes_t *n = *state;
    nodes_registration_t reg;
    assert_int_equal(nodes_register(n, KEY, "", 0, &reg), 0);
    nodes_note_written(n, reg.node_id, 50);
    /* The echo of our own READY write, and anything older, change nothing. */
    nodes_observe(n, reg.node_id, NODES_STATE_DOWN, 40, 10);
    nodes_observe(n, reg.node_id, NODES_STATE_READY, 50, 10);
    assert_int_equal(nodes_check_session(n, reg.node_id, reg.session_id), 0);
    /* A later DOWN from someone else does. */
    nodes_observe(n, reg.node_id, NODES_STATE_DOWN, 60, 10);
    assert_int_equal(nodes_check_session(n, reg.node_id, reg.session_id), -ESTALE);
    nodes_forget(n, reg.node_id);
    assert_false(nodes_known(n, reg.node_id));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_nodes_register_with_wrong_key_is_rejected, setup,
                                        teardown),
        cmocka_unit_test(test_nodes_key_compare_is_exact),
        cmocka_unit_test_setup_teardown(test_nodes_reregister_keeps_id_and_starts_new_session,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_nodes_heartbeat_with_stale_session_is_rejected, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_nodes_period_has_ten_percent_jitter, setup, teardown),
        cmocka_unit_test_setup_teardown(test_nodes_go_down_after_three_missed_periods, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_nodes_down_write_failure_is_retried, setup, teardown),
        cmocka_unit_test_setup_teardown(test_nodes_period_follows_cluster_spec, setup, teardown),
        cmocka_unit_test_setup_teardown(test_nodes_unknown_after_restart_gets_double_grace, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_nodes_down_written_elsewhere_ends_session, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
