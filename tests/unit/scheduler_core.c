/* Scheduler core: spreading, node availability, resources, constraints, preassigned tasks, the
 * commit/abort protocol with the daemon, and the cost of a large batch. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "../../services/scheduler/scheduler.h"

#define MiB (1024LL * 1024)
#define GiB (1024 * MiB)
#define NOW 1700000000000LL

static void *owned(const ProtobufCMessage *m) {
    size_t len = protobuf_c_message_get_packed_size(m);
    uint8_t *buf = malloc(len + 1);
    protobuf_c_message_pack(m, buf);
    void *copy = protobuf_c_message_unpack(m->descriptor, NULL, len, buf);
    free(buf);
    assert_non_null(copy);
    return copy;
}

typedef struct node_opts {
    const char *id;
    int state;        /* 0 = READY */
    int availability; /* ACTIVE by default */
    int64_t memory;
    const char *zone;
} node_opts_t;

static void put_node(scheduler_t *s, node_opts_t o) {
    Shoal__Node n = SHOAL__NODE__INIT;
    Shoal__Meta meta = SHOAL__META__INIT;
    Shoal__NodeSpec spec = SHOAL__NODE_SPEC__INIT;
    Shoal__Annotations ann = SHOAL__ANNOTATIONS__INIT;
    Shoal__Label zone = SHOAL__LABEL__INIT, *zones[1] = {&zone};
    Shoal__NodeDescription desc = SHOAL__NODE_DESCRIPTION__INIT;
    Shoal__Resources res = SHOAL__RESOURCES__INIT;
    Shoal__NodeStatus st = SHOAL__NODE_STATUS__INIT;
    meta.id = (char *)o.id;
    n.meta = &meta;
    spec.availability = o.availability;
    spec.annotations = &ann;
    if (o.zone) {
        zone.key = "zone";
        zone.value = (char *)o.zone;
        ann.labels = zones;
        ann.n_labels = 1;
    }
    n.spec = &spec;
    res.nano_cpus = 4000000000;
    res.memory_bytes = o.memory ? o.memory : 8 * GiB;
    desc.resources = &res;
    desc.hostname = (char *)o.id;
    n.description = &desc;
    st.state = o.state ? o.state : SHOAL__NODE_STATUS__STATE__READY;
    n.status = &st;
    assert_int_equal(scheduler_put_node(s, owned(&n.base)), 0);
}

typedef struct task_opts {
    const char *id, *service, *node;
    int state, desired; /* state 0 = PENDING, -1 = NEW */
    uint64_t spec_version, slot, max_replicas;
    int64_t memory;
    const char *constraint, *err;
    int64_t rev;
    bool no_spec_version; /* spec_version 0: scheduled one at a time */
} task_opts_t;

static void put_task(scheduler_t *s, task_opts_t o) {
    Shoal__Task t = SHOAL__TASK__INIT;
    Shoal__Meta meta = SHOAL__META__INIT;
    Shoal__TaskStatus st = SHOAL__TASK_STATUS__INIT;
    Shoal__TaskSpec spec = SHOAL__TASK_SPEC__INIT;
    Shoal__ResourceRequirements rr = SHOAL__RESOURCE_REQUIREMENTS__INIT;
    Shoal__Resources res = SHOAL__RESOURCES__INIT;
    Shoal__Placement pl = SHOAL__PLACEMENT__INIT;
    char *constraints[1] = {(char *)o.constraint};
    meta.id = (char *)o.id;
    meta.version = 1;
    t.meta = &meta;
    t.service_id = (char *)(o.service ? o.service : "svc");
    t.service_name = t.service_id;
    t.node_id = (char *)(o.node ? o.node : "");
    t.slot = o.slot;
    t.spec_version = o.no_spec_version ? 0 : o.spec_version ? o.spec_version : 1;
    st.state = o.state < 0 ? SHOAL__TASK_STATE__NEW
               : o.state   ? o.state
                           : SHOAL__TASK_STATE__PENDING;
    st.err = (char *)(o.err ? o.err : "");
    t.status = &st;
    t.desired_state = o.desired ? o.desired : SHOAL__TASK_STATE__RUNNING;
    res.memory_bytes = o.memory;
    rr.reservations = &res;
    spec.resources = &rr;
    if (o.constraint) {
        pl.constraints = constraints;
        pl.n_constraints = 1;
    }
    pl.max_replicas = o.max_replicas;
    spec.placement = &pl;
    t.spec = &spec;
    assert_int_equal(scheduler_put_task(s, owned(&t.base), o.rev ? o.rev : 10), 0);
}

static void put_pending(scheduler_t *s, int n, const char *prefix, task_opts_t o) {
    for (int i = 0; i < n; i++) {
        char id[64];
        snprintf(id, sizeof id, "%s%d", prefix, i);
        o.id = id;
        o.slot = (uint64_t)i + 1;
        put_task(s, o);
    }
}

static size_t tick(scheduler_t *s, const scheduler_decision_t **d) {
    size_t n = 0;
    assert_int_equal(scheduler_tick(s, NOW, d, &n), 0);
    return n;
}

/* Ticks and commits every decision, as the daemon does when all its CAS succeed. */
static size_t tick_commit(scheduler_t *s, size_t *ret_assigned) {
    const scheduler_decision_t *d;
    size_t n = tick(s, &d), assigned = 0;
    char ids[n ? n : 1][64];
    for (size_t i = 0; i < n; i++) {
        snprintf(ids[i], sizeof ids[i], "%s", d[i].task_id);
        assigned += d[i].node_id != NULL;
    }
    for (size_t i = 0; i < n; i++)
        scheduler_commit(s, ids[i], 0);
    if (ret_assigned)
        *ret_assigned = assigned;
    return n;
}

static const char *node_of(scheduler_t *s, const char *task_id) {
    const Shoal__Task *t = scheduler_find_task(s, task_id);
    assert_non_null(t);
    return t->node_id;
}

static int state_of(scheduler_t *s, const char *task_id) {
    const Shoal__Task *t = scheduler_find_task(s, task_id);
    assert_non_null(t);
    return t->status->state;
}

static void test_scheduler_spreads_replicas_over_nodes(void **state) {
    scheduler_t *s = scheduler_new();
    put_node(s, (node_opts_t){.id = "n1"});
    put_node(s, (node_opts_t){.id = "n2"});
    put_node(s, (node_opts_t){.id = "n3"});
    put_pending(s, 6, "t", (task_opts_t){.service = "web"});

    const scheduler_decision_t *d;
    size_t n = tick(s, &d);
    assert_int_equal(n, 6);
    for (size_t i = 0; i < n; i++) {
        assert_non_null(d[i].node_id);
        assert_null(d[i].err);
        assert_int_equal(d[i].mod_revision, 10);
        assert_int_equal(d[i].task->status->state, SHOAL__TASK_STATE__ASSIGNED);
        assert_string_equal(d[i].task->node_id, d[i].node_id);
        assert_string_equal(d[i].task->status->message, "scheduler assigned task to node");
        assert_int_equal(d[i].task->status->timestamp_ms, NOW);
        assert_int_equal(d[i].task->meta->version, 2);
        assert_int_equal(d[i].task->meta->updated_at_ms, NOW);
    }
    /* Counted at once, before the commit. */
    assert_int_equal(scheduler_node_tasks(s, "n1"), 2);
    assert_int_equal(scheduler_node_tasks(s, "n2"), 2);
    assert_int_equal(scheduler_node_tasks(s, "n3"), 2);
    scheduler_stats_t st;
    scheduler_get_stats(s, &st);
    assert_int_equal(st.in_flight, 6);
    assert_int_equal(st.pending, 0);

    char ids[6][64];
    for (size_t i = 0; i < n; i++)
        snprintf(ids[i], sizeof ids[i], "%s", d[i].task_id);
    for (size_t i = 0; i < n; i++)
        scheduler_commit(s, ids[i], 20);
    scheduler_get_stats(s, &st);
    assert_int_equal(st.placed_total, 6);
    assert_int_equal(st.in_flight, 0);
    assert_int_equal(state_of(s, "t0"), SHOAL__TASK_STATE__ASSIGNED);

    /* Nothing left to do: no decision. */
    assert_int_equal(tick(s, &d), 0);
    scheduler_destroy(&s);
    assert_null(s);
}

static void test_scheduler_spread_counts_tasks_already_running(void **state) {
    scheduler_t *s = scheduler_new();
    put_node(s, (node_opts_t){.id = "n1"});
    put_node(s, (node_opts_t){.id = "n2"});
    put_node(s, (node_opts_t){.id = "n3"});
    put_task(s,
             (task_opts_t){
                 .id = "r1", .service = "web", .node = "n1", .state = SHOAL__TASK_STATE__RUNNING});
    put_task(s,
             (task_opts_t){
                 .id = "r2", .service = "web", .node = "n1", .state = SHOAL__TASK_STATE__RUNNING});
    /* Another service's tasks make n2 busier in total than n3. */
    put_task(s,
             (task_opts_t){
                 .id = "o1", .service = "db", .node = "n2", .state = SHOAL__TASK_STATE__RUNNING});
    put_task(s, (task_opts_t){.id = "new1", .service = "web", .slot = 3});
    tick_commit(s, NULL);
    assert_string_equal(node_of(s, "new1"), "n3"); /* no web task, fewest in total */
    put_task(s, (task_opts_t){.id = "new2", .service = "web", .slot = 4});
    tick_commit(s, NULL);
    assert_string_equal(node_of(s, "new2"), "n2"); /* n2: 0 web; n3 now has 1 */
    scheduler_destroy(&s);
}

static void test_scheduler_gives_drained_and_paused_nodes_nothing(void **state) {
    scheduler_t *s = scheduler_new();
    put_node(s, (node_opts_t){.id = "active"});
    put_node(s,
             (node_opts_t){.id = "paused", .availability = SHOAL__NODE_SPEC__AVAILABILITY__PAUSE});
    put_node(s,
             (node_opts_t){.id = "drained", .availability = SHOAL__NODE_SPEC__AVAILABILITY__DRAIN});
    put_pending(s, 4, "t", (task_opts_t){0});
    size_t assigned;
    assert_int_equal(tick_commit(s, &assigned), 4);
    assert_int_equal(assigned, 4);
    assert_int_equal(scheduler_node_tasks(s, "active"), 4);
    assert_int_equal(scheduler_node_tasks(s, "paused"), 0);
    assert_int_equal(scheduler_node_tasks(s, "drained"), 0);
    scheduler_destroy(&s);
}

static void test_scheduler_gives_down_nodes_nothing(void **state) {
    scheduler_t *s = scheduler_new();
    put_node(s, (node_opts_t){.id = "up"});
    put_node(s, (node_opts_t){.id = "down", .state = SHOAL__NODE_STATUS__STATE__DOWN});
    put_node(s, (node_opts_t){.id = "gone", .state = SHOAL__NODE_STATUS__STATE__DISCONNECTED});
    put_pending(s, 3, "t", (task_opts_t){0});
    tick_commit(s, NULL);
    assert_int_equal(scheduler_node_tasks(s, "up"), 3);
    assert_int_equal(scheduler_node_tasks(s, "down"), 0);

    /* With only down nodes, tasks stay pending and say why. */
    scheduler_delete_node(s, "up");
    put_pending(s, 1, "late", (task_opts_t){0});
    const scheduler_decision_t *d;
    assert_int_equal(tick(s, &d), 1);
    assert_null(d[0].node_id);
    assert_string_equal(d[0].err, "no suitable node (2 nodes not available for new tasks)");
    assert_int_equal(d[0].task->status->state, SHOAL__TASK_STATE__PENDING);
    scheduler_destroy(&s);
}

static void test_scheduler_memory_reservations_limit_tasks_per_node(void **state) {
    scheduler_t *s = scheduler_new();
    for (int i = 0; i < 3; i++) {
        char id[8];
        snprintf(id, sizeof id, "n%d", i);
        put_node(s, (node_opts_t){.id = id, .memory = GiB});
    }
    put_pending(s, 12, "t", (task_opts_t){.memory = 300 * MiB});
    const scheduler_decision_t *d;
    size_t n = tick(s, &d), assigned = 0, refused = 0;
    assert_int_equal(n, 12);
    for (size_t i = 0; i < n; i++) {
        if (d[i].node_id) {
            assigned++;
        } else {
            refused++;
            assert_string_equal(d[i].err, "no suitable node (insufficient resources on 3 nodes)");
        }
    }
    assert_int_equal(assigned, 9);
    assert_int_equal(refused, 3);
    for (int i = 0; i < 3; i++) {
        char id[8];
        snprintf(id, sizeof id, "n%d", i);
        assert_int_equal(scheduler_node_tasks(s, id), 3);
    }
    scheduler_destroy(&s);
}

static void test_scheduler_frees_resources_when_tasks_finish(void **state) {
    scheduler_t *s = scheduler_new();
    put_node(s, (node_opts_t){.id = "n1", .memory = GiB});
    put_task(s, (task_opts_t){.id = "big",
                              .node = "n1",
                              .state = SHOAL__TASK_STATE__RUNNING,
                              .memory = 800 * MiB,
                              .rev = 5});
    put_task(s, (task_opts_t){.id = "next", .memory = 500 * MiB, .service = "other"});
    size_t assigned;
    assert_int_equal(tick_commit(s, &assigned), 1);
    assert_int_equal(assigned, 0);
    assert_int_equal(state_of(s, "next"), SHOAL__TASK_STATE__PENDING);

    /* The big task completes: its reservation is released and the next one fits. */
    put_task(s, (task_opts_t){.id = "big",
                              .node = "n1",
                              .state = SHOAL__TASK_STATE__COMPLETE,
                              .memory = 800 * MiB,
                              .rev = 30});
    assert_int_equal(scheduler_node_tasks(s, "n1"), 0);
    assert_int_equal(tick_commit(s, &assigned), 1);
    assert_int_equal(assigned, 1);
    assert_string_equal(node_of(s, "next"), "n1");
    assert_int_equal(scheduler_node_tasks(s, "n1"), 1);

    /* Desired SHUTDOWN stops counting at once, deleting the task too. */
    put_task(s, (task_opts_t){.id = "next",
                              .node = "n1",
                              .state = SHOAL__TASK_STATE__RUNNING,
                              .desired = SHOAL__TASK_STATE__SHUTDOWN,
                              .rev = 40});
    assert_int_equal(scheduler_node_tasks(s, "n1"), 0);
    put_task(s, (task_opts_t){
                    .id = "next", .node = "n1", .state = SHOAL__TASK_STATE__RUNNING, .rev = 50});
    assert_int_equal(scheduler_node_tasks(s, "n1"), 1);
    scheduler_delete_task(s, "next");
    assert_int_equal(scheduler_node_tasks(s, "n1"), 0);
    scheduler_destroy(&s);
}

static void test_scheduler_constraint_no_node_matches_stays_pending(void **state) {
    scheduler_t *s = scheduler_new();
    put_node(s, (node_opts_t){.id = "n1", .zone = "eu"});
    put_node(s, (node_opts_t){.id = "n2", .zone = "us"});
    put_node(s, (node_opts_t){.id = "n3"});
    put_task(s, (task_opts_t){.id = "t", .constraint = "node.labels.zone==mars"});
    const scheduler_decision_t *d;
    assert_int_equal(tick(s, &d), 1);
    assert_null(d[0].node_id);
    assert_string_equal(d[0].err,
                        "no suitable node (scheduling constraints not satisfied on 3 nodes)");
    assert_int_equal(d[0].task->status->state, SHOAL__TASK_STATE__PENDING);
    assert_string_equal(d[0].task->node_id, "");
    scheduler_commit(s, "t", 11);
    assert_int_equal(state_of(s, "t"), SHOAL__TASK_STATE__PENDING);
    assert_non_null(strstr(scheduler_find_task(s, "t")->status->err, "constraint"));

    /* Still pending, same reason: nothing to write. */
    assert_int_equal(tick(s, &d), 0);
    scheduler_stats_t st;
    scheduler_get_stats(s, &st);
    assert_int_equal(st.pending, 1);
    assert_int_equal(st.unplaced_total, 1);

    /* The watch brings our write back; then a node joins in the right zone. */
    put_task(s, (task_opts_t){.id = "t",
                              .constraint = "node.labels.zone==mars",
                              .err = "no suitable node (scheduling constraints not satisfied on 3 "
                                     "nodes)",
                              .rev = 11});
    assert_int_equal(tick(s, &d), 0);
    put_node(s, (node_opts_t){.id = "n4", .zone = "mars"});
    assert_int_equal(tick(s, &d), 1);
    assert_string_equal(d[0].node_id, "n4");
    assert_int_equal(d[0].mod_revision, 11);
    assert_string_equal(d[0].task->status->err, "");
    scheduler_destroy(&s);
}

static void test_scheduler_max_replicas_per_node(void **state) {
    scheduler_t *s = scheduler_new();
    put_node(s, (node_opts_t){.id = "n1"});
    put_node(s, (node_opts_t){.id = "n2"});
    put_node(s, (node_opts_t){.id = "n3"});
    put_pending(s, 5, "t", (task_opts_t){.max_replicas = 1});
    const scheduler_decision_t *d;
    size_t n = tick(s, &d), placed = 0;
    assert_int_equal(n, 5);
    for (size_t i = 0; i < n; i++) {
        if (d[i].node_id)
            placed++;
        else
            assert_string_equal(d[i].err, "no suitable node (max replicas per node limit exceed)");
    }
    assert_int_equal(placed, 3);
    scheduler_destroy(&s);
}

static void test_scheduler_preassigned_global_tasks_check_resources_only(void **state) {
    scheduler_t *s = scheduler_new();
    put_node(s, (node_opts_t){.id = "n1", .memory = GiB});
    put_node(s, (node_opts_t){.id = "n2", .memory = GiB});
    put_node(s, (node_opts_t){.id = "small", .memory = 100 * MiB});
    /* A replicated task that would spread to n1 cannot take the node from the global one. */
    put_task(s, (task_opts_t){.id = "g1", .service = "agent", .node = "n1", .memory = 600 * MiB});
    put_task(s, (task_opts_t){.id = "g2", .service = "agent", .node = "n2", .memory = 600 * MiB});
    put_task(s,
             (task_opts_t){.id = "g3", .service = "agent", .node = "small", .memory = 600 * MiB});
    put_task(s, (task_opts_t){.id = "gx", .service = "agent", .node = "nowhere"});
    /* Preassigned tasks do not count on their node until the scheduler accepts them. */
    assert_int_equal(scheduler_node_tasks(s, "n1"), 0);
    put_pending(s, 2, "r", (task_opts_t){.service = "web", .memory = 600 * MiB});

    const scheduler_decision_t *d;
    size_t n = tick(s, &d);
    assert_int_equal(n, 5); /* g1, g2, g3 (refused), r0 and r1 (refused) */
    assert_string_equal(node_of(s, "g1"), "n1");
    assert_int_equal(state_of(s, "g1"), SHOAL__TASK_STATE__ASSIGNED);
    assert_string_equal(node_of(s, "g2"), "n2");
    assert_int_equal(state_of(s, "g3"), SHOAL__TASK_STATE__PENDING);
    assert_string_equal(scheduler_find_task(s, "g3")->status->err,
                        "no suitable node (insufficient resources on 1 node)");
    assert_string_equal(node_of(s, "g3"), "small");
    /* The unknown node: no decision, the task waits for its node. */
    assert_int_equal(state_of(s, "gx"), SHOAL__TASK_STATE__PENDING);
    assert_string_equal(scheduler_find_task(s, "gx")->status->err, "");
    /* The replicated tasks found no room left on n1 / n2. */
    assert_int_equal(state_of(s, "r0"), SHOAL__TASK_STATE__PENDING);
    assert_string_equal(scheduler_find_task(s, "r0")->status->err,
                        "no suitable node (insufficient resources on 3 nodes)");
    scheduler_destroy(&s);
}

static void test_scheduler_abort_stale_waits_for_newer_revision(void **state) {
    scheduler_t *s = scheduler_new();
    put_node(s, (node_opts_t){.id = "n1"});
    put_task(s, (task_opts_t){.id = "t", .rev = 10});
    const scheduler_decision_t *d;
    assert_int_equal(tick(s, &d), 1);
    assert_int_equal(scheduler_node_tasks(s, "n1"), 1);
    scheduler_abort(s, "t", true); /* compare failed */
    assert_int_equal(scheduler_node_tasks(s, "n1"), 0);
    assert_int_equal(state_of(s, "t"), SHOAL__TASK_STATE__PENDING);
    assert_int_equal(tick(s, &d), 0); /* not retried against revision 10 */
    put_task(s, (task_opts_t){.id = "t", .rev = 12});
    assert_int_equal(tick(s, &d), 1);
    assert_int_equal(d[0].mod_revision, 12);

    /* A store outage (not stale): retried on the next tick. */
    scheduler_abort(s, "t", false);
    assert_int_equal(tick(s, &d), 1);
    /* An older read arriving late is ignored. */
    put_task(s, (task_opts_t){.id = "t", .rev = 11, .state = SHOAL__TASK_STATE__FAILED});
    scheduler_stats_t st;
    scheduler_get_stats(s, &st);
    assert_int_equal(st.in_flight, 1);
    /* A newer version replaces the in-flight decision. */
    put_task(s, (task_opts_t){.id = "t", .rev = 13, .desired = SHOAL__TASK_STATE__REMOVE});
    scheduler_get_stats(s, &st);
    assert_int_equal(st.in_flight, 0);
    assert_int_equal(st.pending, 0);
    assert_int_equal(scheduler_node_tasks(s, "n1"), 0);
    assert_int_equal(tick(s, &d), 0);
    scheduler_destroy(&s);
}

static void test_scheduler_tasks_before_their_node_still_count(void **state) {
    scheduler_t *s = scheduler_new();
    put_task(
        s, (task_opts_t){
               .id = "r", .node = "late", .state = SHOAL__TASK_STATE__RUNNING, .memory = 6 * GiB});
    assert_int_equal(scheduler_node_tasks(s, "late"), 1);
    put_node(s, (node_opts_t){.id = "late"});
    put_node(s, (node_opts_t){.id = "other"});
    put_task(s, (task_opts_t){.id = "t", .memory = 3 * GiB, .service = "x"});
    tick_commit(s, NULL);
    assert_string_equal(node_of(s, "t"), "other");
    scheduler_stats_t st;
    scheduler_get_stats(s, &st);
    assert_int_equal(st.nodes, 2);
    /* Deleting the node keeps the count until its task goes. */
    scheduler_delete_node(s, "late");
    scheduler_get_stats(s, &st);
    assert_int_equal(st.nodes, 1);
    assert_int_equal(scheduler_node_tasks(s, "late"), 1);
    scheduler_delete_task(s, "r");
    assert_int_equal(scheduler_node_tasks(s, "late"), 0);
    scheduler_destroy(&s);
}

static void test_scheduler_ignores_tasks_not_meant_to_run(void **state) {
    scheduler_t *s = scheduler_new();
    put_node(s, (node_opts_t){.id = "n1"});
    put_task(s, (task_opts_t){.id = "gone", .desired = SHOAL__TASK_STATE__REMOVE});
    put_task(s, (task_opts_t){.id = "new", .state = -1});
    const scheduler_decision_t *d;
    assert_int_equal(tick(s, &d), 0);
    scheduler_stats_t st;
    scheduler_get_stats(s, &st);
    assert_int_equal(st.pending, 0);
    assert_int_equal(st.tasks, 2);
    scheduler_destroy(&s);
}

static double elapsed_s(const struct timespec *a) {
    struct timespec b;
    clock_gettime(CLOCK_MONOTONIC, &b);
    return (double)(b.tv_sec - a->tv_sec) + (double)(b.tv_nsec - a->tv_nsec) / 1e9;
}

static void test_scheduler_places_10000_tasks_on_1000_nodes_fast(void **state) {
    scheduler_t *s = scheduler_new();
    for (int i = 0; i < 1000; i++) {
        char id[16];
        snprintf(id, sizeof id, "node%04d", i);
        put_node(s, (node_opts_t){.id = id});
    }
    /* 10 services of 1000 tasks (10 groups) */
    for (int svc = 0; svc < 10; svc++) {
        char service[16], prefix[16];
        snprintf(service, sizeof service, "svc%d", svc);
        snprintf(prefix, sizeof prefix, "s%d-", svc);
        put_pending(s, 1000, prefix, (task_opts_t){.service = service, .memory = 64 * MiB});
    }
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    const scheduler_decision_t *d;
    size_t n = tick(s, &d);
    double secs = elapsed_s(&t0);
    print_message("tick of 10000 tasks over 1000 nodes: %.3f s\n", secs);
    assert_int_equal(n, 10000);
    assert_true(secs < 2.0);
    for (size_t i = 0; i < n; i++)
        assert_non_null(d[i].node_id);
    /* Spread: every node got exactly one task of each service. */
    for (int i = 0; i < 1000; i++) {
        char id[16];
        snprintf(id, sizeof id, "node%04d", i);
        assert_int_equal(scheduler_node_tasks(s, id), 10);
    }
    scheduler_destroy(&s);

    /* Worst case for grouping: 2000 tasks without a spec version, each its own group. */
    s = scheduler_new();
    for (int i = 0; i < 1000; i++) {
        char id[16];
        snprintf(id, sizeof id, "node%04d", i);
        put_node(s, (node_opts_t){.id = id});
    }
    for (int i = 0; i < 2000; i++) {
        char id[16], service[16];
        snprintf(id, sizeof id, "u%d", i);
        snprintf(service, sizeof service, "svc%d", i % 7);
        put_task(s, (task_opts_t){.id = id, .service = service, .no_spec_version = true});
    }
    clock_gettime(CLOCK_MONOTONIC, &t0);
    n = tick(s, &d);
    secs = elapsed_s(&t0);
    print_message("tick of 2000 single-task groups over 1000 nodes: %.3f s\n", secs);
    assert_int_equal(n, 2000);
    assert_true(secs < 2.0);
    scheduler_destroy(&s);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_scheduler_spreads_replicas_over_nodes),
        cmocka_unit_test(test_scheduler_spread_counts_tasks_already_running),
        cmocka_unit_test(test_scheduler_gives_drained_and_paused_nodes_nothing),
        cmocka_unit_test(test_scheduler_gives_down_nodes_nothing),
        cmocka_unit_test(test_scheduler_memory_reservations_limit_tasks_per_node),
        cmocka_unit_test(test_scheduler_frees_resources_when_tasks_finish),
        cmocka_unit_test(test_scheduler_constraint_no_node_matches_stays_pending),
        cmocka_unit_test(test_scheduler_max_replicas_per_node),
        cmocka_unit_test(test_scheduler_preassigned_global_tasks_check_resources_only),
        cmocka_unit_test(test_scheduler_abort_stale_waits_for_newer_revision),
        cmocka_unit_test(test_scheduler_tasks_before_their_node_still_count),
        cmocka_unit_test(test_scheduler_ignores_tasks_not_meant_to_run),
        cmocka_unit_test(test_scheduler_places_10000_tasks_on_1000_nodes_fast),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
