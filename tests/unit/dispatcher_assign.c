/* Unit tests of services/dispatcher/assign.c: which tasks are in a node's assignment set, when
 * the set's version moves, and the parked long-polls. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "../../services/dispatcher/assign.h"

/* An unpacked-like task (allocated so that shoal__task__free_unpacked can free it). */
static Shoal__Task *make_task(const char *id, const char *node, int state, int desired,
                              const char *image) {
    Shoal__Task t = SHOAL__TASK__INIT;
    Shoal__Meta meta = SHOAL__META__INIT;
    Shoal__TaskStatus status = SHOAL__TASK_STATUS__INIT;
    Shoal__TaskSpec spec = SHOAL__TASK_SPEC__INIT;
    Shoal__ContainerSpec container = SHOAL__CONTAINER_SPEC__INIT;
    meta.id = (char *)id;
    status.state = state;
    container.image = (char *)image;
    spec.container = &container;
    t.meta = &meta;
    t.status = &status;
    t.spec = &spec;
    t.node_id = (char *)node;
    t.desired_state = desired;
    t.service_id = "svc";
    /* Round-trip through the wire format: the table owns what it is given. */
    size_t len = protobuf_c_message_get_packed_size(&t.base);
    uint8_t *buf = malloc(len);
    protobuf_c_message_pack(&t.base, buf);
    Shoal__Task *out = shoal__task__unpack(NULL, len, buf);
    free(buf);
    assert_non_null(out);
    return out;
}

static int setup(void **state) {
    assign_t *a = assign_new();
    assert_non_null(a);
    assign_reset(a, 100); /* listed at revision 100 */
    *state = a;
    return 0;
}

static int teardown(void **state) {
    assign_t *a = *state;
    assign_destroy(&a);
    assert_null(a);
    return 0;
}

#define RUN SHOAL__TASK_STATE__RUNNING

static void test_assign_set_holds_assigned_tasks_of_the_node_only(void **state) {
    assign_t *a = *state;
    assert_int_equal(assign_task_put(a, "t1",
                                     make_task("t1", "n1", SHOAL__TASK_STATE__ASSIGNED, RUN, "img"),
                                     101),
                     1);
    /* PENDING, or no node yet: not in any set. */
    assert_int_equal(assign_task_put(a, "t2",
                                     make_task("t2", "n1", SHOAL__TASK_STATE__PENDING, RUN, "img"),
                                     102),
                     0);
    assert_int_equal(
        assign_task_put(a, "t3", make_task("t3", "", SHOAL__TASK_STATE__ASSIGNED, RUN, "img"), 103),
        0);
    assert_int_equal(assign_task_put(a, "t4",
                                     make_task("t4", "n2", SHOAL__TASK_STATE__RUNNING, RUN, "img"),
                                     104),
                     1);
    assert_int_equal(assign_count(a, "n1"), 1);
    assert_int_equal(assign_count(a, "n2"), 1);
    Shoal__Dispatcher__AssignmentsResponse resp = SHOAL__DISPATCHER__ASSIGNMENTS_RESPONSE__INIT;
    assert_int_equal(assign_response(a, "n1", &resp), 0);
    assert_int_equal(resp.n_tasks, 1);
    assert_string_equal(resp.tasks[0]->meta->id, "t1");
    assert_int_equal(resp.version, 101);
    assign_response_clear(&resp);
    /* A PENDING task that gets assigned joins the set. */
    assert_int_equal(assign_task_put(a, "t2",
                                     make_task("t2", "n1", SHOAL__TASK_STATE__ASSIGNED, RUN, "img"),
                                     105),
                     1);
    assert_int_equal(assign_count(a, "n1"), 2);
    int64_t mod = 0;
    assert_non_null(assign_task(a, "t2", &mod));
    assert_int_equal(mod, 105);
    assert_null(assign_task(a, "t3", NULL));
    /* A node with no tasks has the listing revision as its version, and an empty set. */
    assert_int_equal(assign_version(a, "n9"), 100);
    assert_int_equal(assign_response(a, "n9", &resp), 0);
    assert_int_equal(resp.n_tasks, 0);
    assign_response_clear(&resp);
}

static void test_assign_version_changes_with_own_tasks_not_others(void **state) {
    assign_t *a = *state;
    assign_task_put(a, "t1", make_task("t1", "n1", SHOAL__TASK_STATE__ASSIGNED, RUN, "a"), 101);
    assign_task_put(a, "t2", make_task("t2", "n2", SHOAL__TASK_STATE__ASSIGNED, RUN, "a"), 102);
    uint64_t v1 = assign_version(a, "n1"), v2 = assign_version(a, "n2");

    /* n2's task changes (new desired state): n2 moves, n1 does not. */
    assign_task_put(
        a, "t2",
        make_task("t2", "n2", SHOAL__TASK_STATE__ASSIGNED, SHOAL__TASK_STATE__SHUTDOWN, "a"), 110);
    assert_int_equal(assign_version(a, "n1"), v1);
    assert_true(assign_version(a, "n2") > v2);
    v2 = assign_version(a, "n2");

    /* n1's task changes its spec: n1 moves. */
    assign_task_put(a, "t1", make_task("t1", "n1", SHOAL__TASK_STATE__ASSIGNED, RUN, "b"), 111);
    assert_true(assign_version(a, "n1") > v1);
    assert_int_equal(assign_version(a, "n2"), v2);
}

static void test_assign_removed_task_bumps_version(void **state) {
    assign_t *a = *state;
    assign_task_put(a, "t1", make_task("t1", "n1", SHOAL__TASK_STATE__RUNNING, RUN, "a"), 101);
    assign_task_put(a, "t2", make_task("t2", "n1", SHOAL__TASK_STATE__RUNNING, RUN, "a"), 102);
    uint64_t v = assign_version(a, "n1");
    assert_int_equal(assign_task_delete(a, "t1", 120), 1);
    assert_true(assign_version(a, "n1") > v);
    assert_int_equal(assign_count(a, "n1"), 1);
    /* Deleting a task no set holds changes nothing. */
    v = assign_version(a, "n1");
    assert_int_equal(assign_task_delete(a, "never-there", 121), 0);
    assert_int_equal(assign_version(a, "n1"), v);
    /* Emptying the set still moves the version forward, never back to the base. */
    assert_int_equal(assign_task_delete(a, "t2", 122), 1);
    assert_int_equal(assign_version(a, "n1"), 122);
    assert_int_equal(assign_count(a, "n1"), 0);
}

static void test_assign_task_moving_between_nodes_bumps_both(void **state) {
    assign_t *a = *state;
    assign_task_put(a, "t1", make_task("t1", "n1", SHOAL__TASK_STATE__ASSIGNED, RUN, "a"), 101);
    uint64_t v1 = assign_version(a, "n1"), v2 = assign_version(a, "n2");
    assert_int_equal(
        assign_task_put(a, "t1", make_task("t1", "n2", SHOAL__TASK_STATE__ASSIGNED, RUN, "a"), 130),
        2);
    assert_true(assign_version(a, "n1") > v1);
    assert_true(assign_version(a, "n2") > v2);
    assert_int_equal(assign_count(a, "n1"), 0);
    assert_int_equal(assign_count(a, "n2"), 1);
}

static void test_assign_agents_own_status_report_keeps_version(void **state) {
    assign_t *a = *state;
    assign_task_put(a, "t1", make_task("t1", "n1", SHOAL__TASK_STATE__ASSIGNED, RUN, "a"), 101);
    uint64_t v = assign_version(a, "n1");
    /* The agent's ACCEPTED, then RUNNING, written by the dispatcher: nothing new to tell. */
    assert_int_equal(
        assign_task_put(a, "t1", make_task("t1", "n1", SHOAL__TASK_STATE__ACCEPTED, RUN, "a"), 102),
        0);
    assert_int_equal(assign_task_put(a, "t1", make_task("t1", "n1", RUN, RUN, "a"), 103), 0);
    assert_int_equal(assign_version(a, "n1"), v);
    /* But the set serves the latest value. */
    int64_t mod = 0;
    const Shoal__Task *t = assign_task(a, "t1", &mod);
    assert_int_equal(t->status->state, RUN);
    assert_int_equal(mod, 103);
}

typedef struct woken {
    int count;
    void *waiters[8];
} woken_t;

static void record_wake(void *ctx, void *waiter, const char *node_id) {
    woken_t *w = ctx;
    (void)node_id;
    if (w->count < 8)
        w->waiters[w->count] = waiter;
    w->count++;
}

static void test_assign_waiter_wakes_on_change_or_deadline(void **state) {
    assign_t *a = *state;
    int call_n1, call_n2;
    uint64_t v1 = assign_version(a, "n1");
    assert_int_equal(assign_wait(a, "n1", v1, 1000, &call_n1), 0);
    assert_int_equal(assign_wait(a, "n2", assign_version(a, "n2"), 5000, &call_n2), 0);
    assert_int_equal(assign_waiters(a), 2);
    woken_t w = {0};
    assert_int_equal(assign_wake(a, 10, record_wake, &w), 0);

    /* A change to n2's set wakes n2's call only. */
    assign_task_put(a, "t2", make_task("t2", "n2", SHOAL__TASK_STATE__ASSIGNED, RUN, "a"), 101);
    assert_int_equal(assign_wake(a, 20, record_wake, &w), 1);
    assert_ptr_equal(w.waiters[0], &call_n2);
    assert_int_equal(assign_waiters(a), 1);

    /* n1's call times out at its deadline. */
    assert_int_equal(assign_wake(a, 999, record_wake, &w), 0);
    assert_int_equal(assign_wake(a, 1000, record_wake, &w), 1);
    assert_ptr_equal(w.waiters[1], &call_n1);
    assert_int_equal(assign_waiters(a), 0);

    /* A waiter whose known version is already stale wakes at the first chance. */
    assert_int_equal(assign_wait(a, "n2", 7, 9000, &call_n2), 0);
    assert_int_equal(assign_wake(a, 1001, record_wake, &w), 1);
    /* Drain hands back everything. */
    assert_int_equal(assign_wait(a, "n1", v1, 9000, &call_n1), 0);
    assert_int_equal(assign_drain(a, record_wake, &w), 1);
    assert_int_equal(assign_waiters(a), 0);
}

static void test_assign_reset_moves_every_version_to_the_new_listing(void **state) {
    assign_t *a = *state;
    assign_task_put(a, "t1", make_task("t1", "n1", SHOAL__TASK_STATE__ASSIGNED, RUN, "a"), 101);
    assign_reset(a, 500);
    assert_int_equal(assign_count(a, "n1"), 0);
    assert_int_equal(assign_version(a, "n1"), 500);
    assert_int_equal(assign_version(a, "other"), 500);
    assert_null(assign_task(a, "t1", NULL));
}

static void test_assign_rejects_bad_task_ids(void **state) {
    assign_t *a = *state;
    assert_int_equal(
        assign_task_put(a, "", make_task("x", "n1", SHOAL__TASK_STATE__ASSIGNED, RUN, "a"), 101),
        -EINVAL);
    assert_int_equal(assign_task_put(a, "t", NULL, 101), -EINVAL);
    assert_int_equal(assign_count(a, "n1"), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_assign_set_holds_assigned_tasks_of_the_node_only,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_assign_version_changes_with_own_tasks_not_others,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_assign_removed_task_bumps_version, setup, teardown),
        cmocka_unit_test_setup_teardown(test_assign_task_moving_between_nodes_bumps_both, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_assign_agents_own_status_report_keeps_version, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_assign_waiter_wakes_on_change_or_deadline, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_assign_reset_moves_every_version_to_the_new_listing,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_assign_rejects_bad_task_ids, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
