/* Scheduler filters: each one accepts and refuses, the pipeline stops at the first failure, and
 * the explanation reads like SwarmKit's. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "../../services/scheduler/filter.h"

#define MiB (1024LL * 1024)
#define GiB (1024 * MiB)

/* Packs a message built on the stack and unpacks it: an owned copy, as the daemon gets them. */
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
    int64_t cpus, memory;
    const char *os, *arch;
    const char *zone;
} node_opts_t;

static nodeinfo_t *make_nodeinfo(node_opts_t o) {
    Shoal__Node n = SHOAL__NODE__INIT;
    Shoal__Meta meta = SHOAL__META__INIT;
    Shoal__NodeSpec spec = SHOAL__NODE_SPEC__INIT;
    Shoal__Annotations ann = SHOAL__ANNOTATIONS__INIT;
    Shoal__Label zone = SHOAL__LABEL__INIT, *zones[1] = {&zone};
    Shoal__NodeDescription desc = SHOAL__NODE_DESCRIPTION__INIT;
    Shoal__Resources res = SHOAL__RESOURCES__INIT;
    Shoal__Platform plat = SHOAL__PLATFORM__INIT;
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
    res.nano_cpus = o.cpus;
    res.memory_bytes = o.memory;
    desc.resources = &res;
    desc.hostname = (char *)o.id;
    plat.os = (char *)(o.os ? o.os : "linux");
    plat.architecture = (char *)(o.arch ? o.arch : "amd64");
    desc.platform = &plat;
    n.description = &desc;
    st.state = o.state ? o.state : SHOAL__NODE_STATUS__STATE__READY;
    n.status = &st;
    nodeinfo_t *ni = nodeinfo_new(o.id);
    assert_non_null(ni);
    nodeinfo_set_node(ni, owned(&n.base));
    return ni;
}

typedef struct task_opts {
    const char *id, *service, *node;
    int state;
    int64_t cpus, memory;
    const char *constraint;
    uint64_t max_replicas;
    const char *want_os, *want_arch;
} task_opts_t;

static Shoal__Task *make_task(task_opts_t o) {
    Shoal__Task t = SHOAL__TASK__INIT;
    Shoal__Meta meta = SHOAL__META__INIT;
    Shoal__TaskStatus st = SHOAL__TASK_STATUS__INIT;
    Shoal__TaskSpec spec = SHOAL__TASK_SPEC__INIT;
    Shoal__ResourceRequirements rr = SHOAL__RESOURCE_REQUIREMENTS__INIT;
    Shoal__Resources res = SHOAL__RESOURCES__INIT;
    Shoal__Placement pl = SHOAL__PLACEMENT__INIT;
    Shoal__Platform plat = SHOAL__PLATFORM__INIT, *plats[1] = {&plat};
    char *constraints[1] = {(char *)o.constraint};
    meta.id = (char *)(o.id ? o.id : "t1");
    t.meta = &meta;
    t.service_id = (char *)(o.service ? o.service : "svc");
    t.node_id = (char *)(o.node ? o.node : "");
    st.state = o.state ? o.state : SHOAL__TASK_STATE__PENDING;
    t.status = &st;
    t.desired_state = SHOAL__TASK_STATE__RUNNING;
    res.nano_cpus = o.cpus;
    res.memory_bytes = o.memory;
    rr.reservations = &res;
    spec.resources = &rr;
    if (o.constraint) {
        pl.constraints = constraints;
        pl.n_constraints = 1;
    }
    pl.max_replicas = o.max_replicas;
    if (o.want_os || o.want_arch) {
        plat.os = (char *)(o.want_os ? o.want_os : "");
        plat.architecture = (char *)(o.want_arch ? o.want_arch : "");
        pl.platforms = plats;
        pl.n_platforms = 1;
    }
    spec.placement = &pl;
    t.spec = &spec;
    return owned(&t.base);
}

static void free_task(Shoal__Task *t) {
    protobuf_c_message_free_unpacked(&t->base, NULL);
}

/* Runs one filter alone (enabled only if it applies) against a node. */
static bool passes_only(int filter, const nodeinfo_t *ni, const Shoal__Task *t) {
    filter_pipeline_t p = {0};
    assert_int_equal(filter_pipeline_set_task_only(&p, t, 1u << filter), 0);
    bool ok = filter_pipeline_passes(&p, ni);
    filter_pipeline_clear(&p);
    return ok;
}

static void test_filter_table_runs_in_swarmkit_order(void **state) {
    assert_string_equal(filter_table[0].name, "ready");
    assert_string_equal(filter_table[1].name, "resources");
    assert_string_equal(filter_table[2].name, "constraints");
    assert_string_equal(filter_table[3].name, "platform");
    assert_string_equal(filter_table[4].name, "host-ports");
    assert_string_equal(filter_table[5].name, "max-replicas");
}

static void test_filter_ready_takes_only_ready_active_nodes(void **state) {
    Shoal__Task *t = make_task((task_opts_t){0});
    struct {
        int st, av;
        bool ok;
    } cases[] = {
        {SHOAL__NODE_STATUS__STATE__READY, SHOAL__NODE_SPEC__AVAILABILITY__ACTIVE, true},
        {SHOAL__NODE_STATUS__STATE__READY, SHOAL__NODE_SPEC__AVAILABILITY__PAUSE, false},
        {SHOAL__NODE_STATUS__STATE__READY, SHOAL__NODE_SPEC__AVAILABILITY__DRAIN, false},
        {SHOAL__NODE_STATUS__STATE__DOWN, SHOAL__NODE_SPEC__AVAILABILITY__ACTIVE, false},
        {SHOAL__NODE_STATUS__STATE__DISCONNECTED, SHOAL__NODE_SPEC__AVAILABILITY__ACTIVE, false},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        nodeinfo_t *ni = make_nodeinfo(
            (node_opts_t){.id = "n", .state = cases[i].st, .availability = cases[i].av});
        assert_int_equal(passes_only(FILTER_READY, ni, t), cases[i].ok);
        nodeinfo_destroy(&ni);
    }
    /* A nodeinfo whose Node is unknown is never ready. */
    nodeinfo_t *ghost = nodeinfo_new("ghost");
    assert_false(passes_only(FILTER_READY, ghost, t));
    nodeinfo_destroy(&ghost);
    assert_null(ghost);
    free_task(t);
}

static void test_filter_resources_counts_reserved_memory_and_cpu(void **state) {
    nodeinfo_t *ni = make_nodeinfo((node_opts_t){.id = "n", .cpus = 2000000000, .memory = GiB});
    Shoal__Task *small = make_task((task_opts_t){.memory = 512 * MiB});
    Shoal__Task *big = make_task((task_opts_t){.memory = 1536 * MiB});
    Shoal__Task *cpu = make_task((task_opts_t){.cpus = 3000000000});
    Shoal__Task *none = make_task((task_opts_t){0});
    assert_true(passes_only(FILTER_RESOURCES, ni, small));
    assert_false(passes_only(FILTER_RESOURCES, ni, big));
    assert_false(passes_only(FILTER_RESOURCES, ni, cpu));

    Shoal__Task *running = make_task((task_opts_t){.id = "r",
                                                   .node = "n",
                                                   .state = SHOAL__TASK_STATE__RUNNING,
                                                   .memory = 600 * MiB,
                                                   .cpus = 1000000000});
    assert_true(nodeinfo_task_counts(running));
    nodeinfo_add_task(ni, running);
    assert_int_equal(nodeinfo_available_memory(ni), GiB - 600 * MiB);
    assert_int_equal(nodeinfo_available_cpus(ni), 1000000000);
    assert_false(passes_only(FILTER_RESOURCES, ni, small)); /* 512 MiB > 424 MiB left */
    nodeinfo_remove_task(ni, running);
    assert_true(passes_only(FILTER_RESOURCES, ni, small));

    /* A task without reservations skips the filter, even on a node reporting no resources. */
    nodeinfo_t *empty = make_nodeinfo((node_opts_t){.id = "e"});
    assert_true(passes_only(FILTER_RESOURCES, empty, none));
    assert_false(passes_only(FILTER_RESOURCES, empty, small));
    nodeinfo_destroy(&empty);
    nodeinfo_destroy(&ni);
    free_task(small), free_task(big), free_task(cpu), free_task(none), free_task(running);
}

static void test_filter_constraints_match_node_labels(void **state) {
    nodeinfo_t *a = make_nodeinfo((node_opts_t){.id = "a", .zone = "eu"});
    nodeinfo_t *b = make_nodeinfo((node_opts_t){.id = "b"});
    Shoal__Task *t = make_task((task_opts_t){.constraint = "node.labels.zone==eu"});
    Shoal__Task *ne = make_task((task_opts_t){.constraint = "node.labels.zone != eu"});
    Shoal__Task *bad = make_task((task_opts_t){.constraint = "zone=eu"});
    Shoal__Task *none = make_task((task_opts_t){0});
    assert_true(passes_only(FILTER_CONSTRAINTS, a, t));
    assert_false(passes_only(FILTER_CONSTRAINTS, b, t));
    assert_false(passes_only(FILTER_CONSTRAINTS, a, ne));
    assert_true(passes_only(FILTER_CONSTRAINTS, b, ne));
    /* An unparsable constraint refuses every node rather than being ignored. */
    assert_false(passes_only(FILTER_CONSTRAINTS, a, bad));
    assert_false(passes_only(FILTER_CONSTRAINTS, b, bad));
    /* No constraints: the filter does not apply. */
    filter_pipeline_t p = {0};
    filter_pipeline_set_task(&p, none);
    assert_false(p.enabled[FILTER_CONSTRAINTS]);
    filter_pipeline_set_task(&p, t);
    assert_true(p.enabled[FILTER_CONSTRAINTS]);
    filter_pipeline_clear(&p);
    nodeinfo_destroy(&a), nodeinfo_destroy(&b);
    free_task(t), free_task(ne), free_task(bad), free_task(none);
}

static void test_filter_platform_matches_os_and_arch_when_given(void **state) {
    nodeinfo_t *x86 = make_nodeinfo((node_opts_t){.id = "x", .arch = "x86_64"});
    nodeinfo_t *arm = make_nodeinfo((node_opts_t){.id = "r", .arch = "arm64"});
    nodeinfo_t *win = make_nodeinfo((node_opts_t){.id = "w", .os = "windows"});
    Shoal__Task *amd64 = make_task((task_opts_t){.want_os = "linux", .want_arch = "amd64"});
    Shoal__Task *any_linux = make_task((task_opts_t){.want_os = "linux"});
    Shoal__Task *none = make_task((task_opts_t){0});
    assert_true(passes_only(FILTER_PLATFORM, x86, amd64)); /* x86_64 is amd64 */
    assert_false(passes_only(FILTER_PLATFORM, arm, amd64));
    assert_false(passes_only(FILTER_PLATFORM, win, amd64));
    assert_true(passes_only(FILTER_PLATFORM, arm, any_linux));
    assert_false(passes_only(FILTER_PLATFORM, win, any_linux));
    assert_true(passes_only(FILTER_PLATFORM, win, none)); /* not given: not checked */
    nodeinfo_destroy(&x86), nodeinfo_destroy(&arm), nodeinfo_destroy(&win);
    free_task(amd64), free_task(any_linux), free_task(none);
}

static void test_filter_max_replicas_counts_only_this_service(void **state) {
    nodeinfo_t *ni = make_nodeinfo((node_opts_t){.id = "n"});
    Shoal__Task *t = make_task((task_opts_t){.service = "web", .max_replicas = 2});
    Shoal__Task *web1 = make_task((task_opts_t){
        .id = "w1", .service = "web", .node = "n", .state = SHOAL__TASK_STATE__RUNNING});
    Shoal__Task *web2 = make_task((task_opts_t){
        .id = "w2", .service = "web", .node = "n", .state = SHOAL__TASK_STATE__ASSIGNED});
    Shoal__Task *db = make_task((task_opts_t){
        .id = "d", .service = "db", .node = "n", .state = SHOAL__TASK_STATE__RUNNING});
    nodeinfo_add_task(ni, web1);
    nodeinfo_add_task(ni, db);
    assert_true(passes_only(FILTER_MAX_REPLICAS, ni, t));
    nodeinfo_add_task(ni, web2);
    assert_int_equal(nodeinfo_service_tasks(ni, "web"), 2);
    assert_int_equal(nodeinfo_service_tasks(ni, "db"), 1);
    assert_int_equal(ni->active_tasks, 3);
    assert_false(passes_only(FILTER_MAX_REPLICAS, ni, t));
    nodeinfo_remove_task(ni, web1);
    assert_true(passes_only(FILTER_MAX_REPLICAS, ni, t));
    nodeinfo_destroy(&ni);
    free_task(t), free_task(web1), free_task(web2), free_task(db);
}

static void test_filter_counting_rule_follows_task_states(void **state) {
    struct {
        int state, desired;
        const char *node;
        bool counts;
    } cases[] = {
        {SHOAL__TASK_STATE__RUNNING, SHOAL__TASK_STATE__RUNNING, "n", true},
        {SHOAL__TASK_STATE__ASSIGNED, SHOAL__TASK_STATE__RUNNING, "n", true},
        {SHOAL__TASK_STATE__PREPARING, SHOAL__TASK_STATE__READY, "n", true},
        {SHOAL__TASK_STATE__RUNNING, SHOAL__TASK_STATE__SHUTDOWN, "n", false},
        {SHOAL__TASK_STATE__COMPLETE, SHOAL__TASK_STATE__RUNNING, "n", false},
        {SHOAL__TASK_STATE__FAILED, SHOAL__TASK_STATE__RUNNING, "n", false},
        {SHOAL__TASK_STATE__PENDING, SHOAL__TASK_STATE__RUNNING, "n", false},
        {SHOAL__TASK_STATE__RUNNING, SHOAL__TASK_STATE__RUNNING, "", false},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        Shoal__Task *t = make_task((task_opts_t){.node = cases[i].node, .state = cases[i].state});
        t->desired_state = cases[i].desired;
        assert_int_equal(nodeinfo_task_counts(t), cases[i].counts);
        free_task(t);
    }
}

static void test_filter_explain_counts_first_failure_per_node(void **state) {
    /* Two nodes too small, one in the wrong zone, one down (and in the wrong zone: it only
     * counts as not available, the pipeline stops at the first failure). */
    nodeinfo_t *nodes[] = {
        make_nodeinfo((node_opts_t){.id = "small1", .memory = 256 * MiB, .zone = "eu"}),
        make_nodeinfo((node_opts_t){.id = "small2", .memory = 256 * MiB, .zone = "eu"}),
        make_nodeinfo((node_opts_t){.id = "us", .memory = 4 * GiB, .zone = "us"}),
    };
    Shoal__Task *t = make_task((task_opts_t){.memory = GiB, .constraint = "node.labels.zone==eu"});
    filter_pipeline_t p = {0};
    assert_int_equal(filter_pipeline_set_task(&p, t), 0);
    assert_int_equal(filter_pipeline_check(&p, nodes[0], true), FILTER_RESOURCES);
    assert_int_equal(filter_pipeline_check(&p, nodes[1], true), FILTER_RESOURCES);
    assert_int_equal(filter_pipeline_check(&p, nodes[2], true), FILTER_CONSTRAINTS);
    char buf[256];
    assert_string_equal(
        filter_pipeline_no_suitable_node(&p, buf, sizeof buf),
        "no suitable node (insufficient resources on 2 nodes; scheduling constraints not "
        "satisfied on 1 node)");

    nodeinfo_t *down = make_nodeinfo(
        (node_opts_t){.id = "down", .memory = 4 * GiB, .state = SHOAL__NODE_STATUS__STATE__DOWN});
    assert_int_equal(filter_pipeline_check(&p, down, true), FILTER_READY);
    assert_int_equal(filter_pipeline_check(&p, down, true), FILTER_READY);
    assert_int_equal(filter_pipeline_check(&p, down, true), FILTER_READY);
    /* Most failures first. */
    assert_string_equal(filter_pipeline_explain(&p, buf, sizeof buf),
                        "3 nodes not available for new tasks; insufficient resources on 2 nodes; "
                        "scheduling constraints not satisfied on 1 node");
    filter_pipeline_clear(&p);

    /* Nothing counted (no nodes at all). */
    assert_int_equal(filter_pipeline_set_task(&p, t), 0);
    assert_string_equal(filter_pipeline_no_suitable_node(&p, buf, sizeof buf), "no suitable node");
    assert_int_equal(filter_pipeline_check(&p, down, true), FILTER_READY);
    assert_string_equal(filter_pipeline_no_suitable_node(&p, buf, sizeof buf),
                        "no suitable node (1 node not available for new tasks)");
    filter_pipeline_clear(&p);

    char small[24];
    filter_pipeline_set_task(&p, t);
    filter_pipeline_check(&p, nodes[0], true);
    filter_pipeline_explain(&p, small, sizeof small); /* truncation stays a valid string */
    assert_true(strlen(small) < sizeof small);
    filter_pipeline_clear(&p);

    for (size_t i = 0; i < 3; i++)
        nodeinfo_destroy(&nodes[i]);
    nodeinfo_destroy(&down);
    free_task(t);
}

static void test_filter_explain_words_platform_and_max_replicas(void **state) {
    char buf[64];
    filter_table[FILTER_PLATFORM].explain(buf, sizeof buf, 2);
    assert_string_equal(buf, "unsupported platform on 2 nodes");
    filter_table[FILTER_MAX_REPLICAS].explain(buf, sizeof buf, 3);
    assert_string_equal(buf, "max replicas per node limit exceed");
    filter_table[FILTER_RESOURCES].explain(buf, sizeof buf, 1);
    assert_string_equal(buf, "insufficient resources on 1 node");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_filter_table_runs_in_swarmkit_order),
        cmocka_unit_test(test_filter_ready_takes_only_ready_active_nodes),
        cmocka_unit_test(test_filter_resources_counts_reserved_memory_and_cpu),
        cmocka_unit_test(test_filter_constraints_match_node_labels),
        cmocka_unit_test(test_filter_platform_matches_os_and_arch_when_given),
        cmocka_unit_test(test_filter_max_replicas_counts_only_this_service),
        cmocka_unit_test(test_filter_counting_rule_follows_task_states),
        cmocka_unit_test(test_filter_explain_counts_first_failure_per_node),
        cmocka_unit_test(test_filter_explain_words_platform_and_max_replicas),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
