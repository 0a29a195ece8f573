/* Scheduler strategies and the filters that depend on a node's load: spread over nested placement
 * preferences, binpack keeping whole nodes empty, random covering every fitting node with a fixed
 * seed, the cluster default strategy, host-mode port conflicts and the platform filter. */
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
    const char *id, *zone, *rack, *arch;
    int64_t memory;
} node_opts_t;

static void put_node(scheduler_t *s, node_opts_t o) {
    Shoal__Node n = SHOAL__NODE__INIT;
    Shoal__Meta meta = SHOAL__META__INIT;
    Shoal__NodeSpec spec = SHOAL__NODE_SPEC__INIT;
    Shoal__Annotations ann = SHOAL__ANNOTATIONS__INIT;
    Shoal__Label zone = SHOAL__LABEL__INIT, rack = SHOAL__LABEL__INIT;
    Shoal__Label *labels[2];
    Shoal__NodeDescription desc = SHOAL__NODE_DESCRIPTION__INIT;
    Shoal__Platform plat = SHOAL__PLATFORM__INIT;
    Shoal__Resources res = SHOAL__RESOURCES__INIT;
    Shoal__NodeStatus st = SHOAL__NODE_STATUS__INIT;
    meta.id = (char *)o.id;
    n.meta = &meta;
    if (o.zone) {
        zone.key = "zone";
        zone.value = (char *)o.zone;
        labels[ann.n_labels++] = &zone;
    }
    if (o.rack) {
        rack.key = "rack";
        rack.value = (char *)o.rack;
        labels[ann.n_labels++] = &rack;
    }
    ann.labels = labels;
    spec.annotations = &ann;
    n.spec = &spec;
    plat.os = "linux";
    plat.architecture = (char *)(o.arch ? o.arch : "x86_64");
    res.nano_cpus = 4000000000;
    res.memory_bytes = o.memory ? o.memory : 8 * GiB;
    desc.resources = &res;
    desc.platform = &plat;
    desc.hostname = (char *)o.id;
    n.description = &desc;
    st.state = SHOAL__NODE_STATUS__STATE__READY;
    n.status = &st;
    assert_int_equal(scheduler_put_node(s, owned(&n.base)), 0);
}

typedef struct task_opts {
    const char *service, *node, *strategy, *constraint, *platform_arch;
    const char *prefs[3];
    int state; /* 0 = PENDING */
    int64_t memory;
    uint32_t host_port, ingress_port;
    int protocol;
    int64_t rev;
} task_opts_t;

static void put_task(scheduler_t *s, const char *id, task_opts_t o) {
    Shoal__Task t = SHOAL__TASK__INIT;
    Shoal__Meta meta = SHOAL__META__INIT;
    Shoal__TaskStatus st = SHOAL__TASK_STATUS__INIT;
    Shoal__TaskSpec spec = SHOAL__TASK_SPEC__INIT;
    Shoal__ResourceRequirements rr = SHOAL__RESOURCE_REQUIREMENTS__INIT;
    Shoal__Resources res = SHOAL__RESOURCES__INIT;
    Shoal__Placement pl = SHOAL__PLACEMENT__INIT;
    Shoal__PlacementPreference prefs[3], *pref_ptrs[3];
    Shoal__Platform plat = SHOAL__PLATFORM__INIT, *plats[1] = {&plat};
    Shoal__Endpoint ep = SHOAL__ENDPOINT__INIT;
    Shoal__PortConfig ports[2], *port_ptrs[2];
    char *constraints[1] = {(char *)o.constraint};
    meta.id = (char *)id;
    meta.version = 1;
    t.meta = &meta;
    t.service_id = (char *)(o.service ? o.service : "svc");
    t.service_name = t.service_id;
    t.node_id = (char *)(o.node ? o.node : "");
    t.spec_version = 1;
    st.state = o.state ? o.state : SHOAL__TASK_STATE__PENDING;
    t.status = &st;
    t.desired_state = SHOAL__TASK_STATE__RUNNING;
    res.memory_bytes = o.memory;
    rr.reservations = &res;
    spec.resources = &rr;
    if (o.constraint) {
        pl.constraints = constraints;
        pl.n_constraints = 1;
    }
    for (size_t i = 0; i < 3 && o.prefs[i]; i++) {
        prefs[i] = (Shoal__PlacementPreference)SHOAL__PLACEMENT_PREFERENCE__INIT;
        prefs[i].spread_descriptor = (char *)o.prefs[i];
        pref_ptrs[i] = &prefs[i];
        pl.n_preferences++;
    }
    pl.preferences = pref_ptrs;
    pl.strategy = (char *)(o.strategy ? o.strategy : "");
    if (o.platform_arch) {
        plat.os = "linux";
        plat.architecture = (char *)o.platform_arch;
        pl.platforms = plats;
        pl.n_platforms = 1;
    }
    spec.placement = &pl;
    t.spec = &spec;
    if (o.host_port || o.ingress_port) {
        ports[0] = (Shoal__PortConfig)SHOAL__PORT_CONFIG__INIT;
        ports[0].protocol = o.protocol;
        ports[0].target_port = 80;
        ports[0].published_port = o.host_port ? o.host_port : o.ingress_port;
        ports[0].publish_mode = o.host_port ? SHOAL__PORT_CONFIG__PUBLISH_MODE__HOST
                                            : SHOAL__PORT_CONFIG__PUBLISH_MODE__INGRESS;
        port_ptrs[0] = &ports[0];
        ep.ports = port_ptrs;
        ep.n_ports = 1;
        t.endpoint = &ep;
    }
    assert_int_equal(scheduler_put_task(s, owned(&t.base), o.rev ? o.rev : 10), 0);
}

static void put_pending(scheduler_t *s, int n, const char *prefix, task_opts_t o) {
    for (int i = 0; i < n; i++) {
        char id[64];
        snprintf(id, sizeof id, "%s%d", prefix, i);
        put_task(s, id, o);
    }
}

/* Ticks and commits every decision; returns how many tasks were assigned. */
static size_t tick_commit(scheduler_t *s) {
    const scheduler_decision_t *d;
    size_t n = 0, assigned = 0;
    assert_int_equal(scheduler_tick(s, NOW, &d, &n), 0);
    char(*ids)[64] = calloc(n ? n : 1, sizeof *ids);
    for (size_t i = 0; i < n; i++) {
        snprintf(ids[i], sizeof ids[i], "%s", d[i].task_id);
        assigned += d[i].node_id != NULL;
    }
    for (size_t i = 0; i < n; i++)
        scheduler_commit(s, ids[i], 0);
    free(ids);
    return assigned;
}

static const char *node_of(scheduler_t *s, const char *task_id) {
    const Shoal__Task *t = scheduler_find_task(s, task_id);
    assert_non_null(t);
    return t->node_id;
}

static const char *err_of(scheduler_t *s, const char *task_id) {
    const Shoal__Task *t = scheduler_find_task(s, task_id);
    assert_non_null(t);
    return t->status && t->status->err ? t->status->err : "";
}

static int64_t tasks_on(scheduler_t *s, const char *const *nodes) {
    int64_t n = 0;
    for (; *nodes; nodes++)
        n += scheduler_node_tasks(s, *nodes);
    return n;
}

/* 2 zones x 2 racks x 2 nodes. */
static void put_zoned_nodes(scheduler_t *s) {
    put_node(s, (node_opts_t){.id = "a1-n1", .zone = "a", .rack = "a1"});
    put_node(s, (node_opts_t){.id = "a1-n2", .zone = "a", .rack = "a1"});
    put_node(s, (node_opts_t){.id = "a2-n1", .zone = "a", .rack = "a2"});
    put_node(s, (node_opts_t){.id = "a2-n2", .zone = "a", .rack = "a2"});
    put_node(s, (node_opts_t){.id = "b1-n1", .zone = "b", .rack = "b1"});
    put_node(s, (node_opts_t){.id = "b1-n2", .zone = "b", .rack = "b1"});
    put_node(s, (node_opts_t){.id = "b2-n1", .zone = "b", .rack = "b2"});
    put_node(s, (node_opts_t){.id = "b2-n2", .zone = "b", .rack = "b2"});
}

static const char *rack_a1[] = {"a1-n1", "a1-n2", NULL}, *rack_a2[] = {"a2-n1", "a2-n2", NULL},
                  *rack_b1[] = {"b1-n1", "b1-n2", NULL}, *rack_b2[] = {"b2-n1", "b2-n2", NULL};

static void test_spread_divides_tasks_over_nested_preferences(void **state) {
    scheduler_t *s = scheduler_new();
    put_zoned_nodes(s);
    put_pending(s, 8, "t", (task_opts_t){.prefs = {"node.labels.zone", "spread=node.labels.rack"}});
    assert_int_equal(tick_commit(s), 8);
    assert_int_equal(tasks_on(s, rack_a1), 2);
    assert_int_equal(tasks_on(s, rack_a2), 2);
    assert_int_equal(tasks_on(s, rack_b1), 2);
    assert_int_equal(tasks_on(s, rack_b2), 2);
    /* ...and inside a rack, one per node (fewest tasks of the service). */
    assert_int_equal(scheduler_node_tasks(s, "a1-n1"), 1);
    assert_int_equal(scheduler_node_tasks(s, "b2-n2"), 1);
    scheduler_destroy(&s);
}

static void test_spread_preference_beats_node_count(void **state) {
    /* Zone a has 3 nodes, zone b one: the zones still get half each. */
    scheduler_t *s = scheduler_new();
    put_node(s, (node_opts_t){.id = "a1", .zone = "a"});
    put_node(s, (node_opts_t){.id = "a2", .zone = "a"});
    put_node(s, (node_opts_t){.id = "a3", .zone = "a"});
    put_node(s, (node_opts_t){.id = "b1", .zone = "b"});
    put_pending(s, 8, "t", (task_opts_t){.prefs = {"node.labels.zone"}});
    assert_int_equal(tick_commit(s), 8);
    assert_int_equal(scheduler_node_tasks(s, "b1"), 4);
    const char *zone_a[] = {"a1", "a2", "a3", NULL};
    assert_int_equal(tasks_on(s, zone_a), 4);
    scheduler_destroy(&s);
}

static void test_spread_preferences_count_tasks_already_there(void **state) {
    scheduler_t *s = scheduler_new();
    put_zoned_nodes(s);
    /* Rack a1 already runs 3 tasks of the service, another service's tasks do not count. */
    for (int i = 0; i < 3; i++) {
        char id[16];
        snprintf(id, sizeof id, "old%d", i);
        put_task(s, id, (task_opts_t){.node = "a1-n1", .state = SHOAL__TASK_STATE__RUNNING});
    }
    put_task(s, "other",
             (task_opts_t){.service = "db", .node = "b1-n1", .state = SHOAL__TASK_STATE__RUNNING});
    /* 5 new: with the 3 there, 8 over 2 zones = 4 each: zone a gets 1, zone b 4; inside zone b,
     * 2 per rack; inside zone a the new one goes to rack a2. */
    put_pending(s, 5, "t", (task_opts_t){.prefs = {"node.labels.zone", "node.labels.rack"}});
    assert_int_equal(tick_commit(s), 5);
    assert_int_equal(tasks_on(s, rack_a1), 3);
    assert_int_equal(tasks_on(s, rack_a2), 1);
    assert_int_equal(tasks_on(s, rack_b1), 3); /* 2 new + the db task */
    assert_int_equal(tasks_on(s, rack_b2), 2);
    scheduler_destroy(&s);
}

static void test_spread_full_branch_leaves_the_rest_to_others(void **state) {
    scheduler_t *s = scheduler_new();
    put_node(s, (node_opts_t){.id = "a1", .zone = "a", .memory = GiB});
    put_node(s, (node_opts_t){.id = "b1", .zone = "b", .memory = 8 * GiB});
    put_node(s, (node_opts_t){.id = "c1", .zone = "c", .memory = 8 * GiB});
    /* 9 tasks of 512 MiB: zone a takes 2 (full), b and c share the other 7. */
    put_pending(s, 9, "t", (task_opts_t){.memory = 512 * MiB, .prefs = {"node.labels.zone"}});
    assert_int_equal(tick_commit(s), 9);
    assert_int_equal(scheduler_node_tasks(s, "a1"), 2);
    int64_t b = scheduler_node_tasks(s, "b1"), c = scheduler_node_tasks(s, "c1");
    assert_int_equal(b + c, 7);
    assert_true(b >= 3 && c >= 3);
    scheduler_destroy(&s);
}

static void test_spread_nodes_without_the_label_are_one_branch(void **state) {
    scheduler_t *s = scheduler_new();
    put_node(s, (node_opts_t){.id = "a1", .zone = "a"});
    put_node(s, (node_opts_t){.id = "n1"});
    put_node(s, (node_opts_t){.id = "n2"});
    put_pending(s, 4, "t", (task_opts_t){.prefs = {"node.labels.zone"}});
    assert_int_equal(tick_commit(s), 4);
    assert_int_equal(scheduler_node_tasks(s, "a1"), 2);
    assert_int_equal(scheduler_node_tasks(s, "n1") + scheduler_node_tasks(s, "n2"), 2);
    scheduler_destroy(&s);
}

static void test_binpack_fills_node_a_before_touching_b(void **state) {
    scheduler_t *s = scheduler_new();
    put_node(s, (node_opts_t){.id = "A", .memory = GiB});
    put_node(s, (node_opts_t){.id = "B", .memory = GiB});
    put_node(s, (node_opts_t){.id = "C", .memory = GiB});
    task_opts_t o = {.memory = 300 * MiB, .strategy = "binpack"};
    put_pending(s, 3, "first", o);
    assert_int_equal(tick_commit(s), 3);
    assert_int_equal(scheduler_node_tasks(s, "A"), 3);
    assert_int_equal(scheduler_node_tasks(s, "B"), 0);
    /* A is full (3 x 300 MiB of 1 GiB): the next ones fill B; C stays empty. */
    put_pending(s, 2, "second", o);
    assert_int_equal(tick_commit(s), 2);
    assert_int_equal(scheduler_node_tasks(s, "A"), 3);
    assert_int_equal(scheduler_node_tasks(s, "B"), 2);
    assert_int_equal(scheduler_node_tasks(s, "C"), 0);
    scheduler_destroy(&s);
}

static void test_binpack_prefers_the_node_with_least_free_resources(void **state) {
    scheduler_t *s = scheduler_new();
    put_node(s, (node_opts_t){.id = "big", .memory = 16 * GiB});
    put_node(s, (node_opts_t){.id = "small", .memory = 2 * GiB});
    put_node(s, (node_opts_t){.id = "busy", .memory = 16 * GiB});
    put_task(s, "old",
             (task_opts_t){.service = "db",
                           .node = "busy",
                           .memory = 15 * GiB,
                           .state = SHOAL__TASK_STATE__RUNNING});
    /* busy has 1 GiB free: the 512 MiB task goes there, the next one to small, big stays empty. */
    put_task(s, "t1", (task_opts_t){.memory = 512 * MiB, .strategy = "binpack"});
    assert_int_equal(tick_commit(s), 1);
    assert_string_equal(node_of(s, "t1"), "busy");
    put_pending(s, 3, "more", (task_opts_t){.memory = 512 * MiB, .strategy = "binpack"});
    assert_int_equal(tick_commit(s), 3);
    assert_string_equal(node_of(s, "more0"), "busy");
    assert_string_equal(node_of(s, "more1"), "small");
    assert_string_equal(node_of(s, "more2"), "small");
    assert_int_equal(scheduler_node_tasks(s, "big"), 0);
    scheduler_destroy(&s);
}

static void test_random_covers_every_fitting_node_and_repeats_with_the_seed(void **state) {
    char first[500][16];
    for (int run = 0; run < 2; run++) {
        scheduler_t *s = scheduler_new();
        scheduler_set_seed(s, 42);
        for (int i = 0; i < 10; i++) {
            char id[16];
            snprintf(id, sizeof id, "n%d", i);
            put_node(s, (node_opts_t){.id = id, .zone = i == 9 ? "other" : "main"});
        }
        put_pending(s, 500, "t",
                    (task_opts_t){.strategy = "random", .constraint = "node.labels.zone==main"});
        assert_int_equal(tick_commit(s), 500);
        int64_t min = 500, max = 0;
        for (int i = 0; i < 9; i++) {
            char id[16];
            snprintf(id, sizeof id, "n%d", i);
            int64_t k = scheduler_node_tasks(s, id);
            min = k < min ? k : min;
            max = k > max ? k : max;
        }
        /* Every matching node drawn (about 55 each), never the one the constraint excludes. */
        assert_true(min >= 25);
        assert_true(max <= 90);
        assert_true(min < max); /* not round-robin */
        assert_int_equal(scheduler_node_tasks(s, "n9"), 0);
        for (int i = 0; i < 500; i++) {
            char id[16];
            snprintf(id, sizeof id, "t%d", i);
            if (run == 0)
                snprintf(first[i], sizeof first[i], "%s", node_of(s, id));
            else
                assert_string_equal(first[i], node_of(s, id));
        }
        scheduler_destroy(&s);
    }
}

static void test_cluster_default_strategy_applies_when_the_service_names_none(void **state) {
    scheduler_t *s = scheduler_new();
    assert_int_equal(scheduler_default_strategy(s), PLACEMENT_SPREAD);
    scheduler_set_default_strategy(s, PLACEMENT_BINPACK);
    put_node(s, (node_opts_t){.id = "A"});
    put_node(s, (node_opts_t){.id = "B"});
    put_pending(s, 4, "packed", (task_opts_t){.service = "p"});
    assert_int_equal(tick_commit(s), 4);
    assert_int_equal(scheduler_node_tasks(s, "A"), 4);
    /* A service that asks for spread gets spread (2 per node). */
    put_pending(s, 4, "spread", (task_opts_t){.service = "q", .strategy = "spread"});
    assert_int_equal(tick_commit(s), 4);
    assert_int_equal(scheduler_node_tasks(s, "B"), 2);
    assert_int_equal(scheduler_node_tasks(s, "A"), 6);
    scheduler_destroy(&s);
}

static void test_host_mode_port_is_used_once_per_node(void **state) {
    scheduler_t *s = scheduler_new();
    put_node(s, (node_opts_t){.id = "n1"});
    put_node(s, (node_opts_t){.id = "n2"});
    put_node(s, (node_opts_t){.id = "n3"});
    /* Another service already publishes 8080/tcp in host mode on n1. */
    put_task(s, "web-old",
             (task_opts_t){.service = "old",
                           .node = "n1",
                           .state = SHOAL__TASK_STATE__RUNNING,
                           .host_port = 8080});
    put_pending(s, 3, "web", (task_opts_t){.service = "web", .host_port = 8080});
    assert_int_equal(tick_commit(s), 2);
    assert_int_equal(scheduler_node_tasks(s, "n1"), 1); /* only the old one */
    assert_int_equal(scheduler_node_tasks(s, "n2"), 1);
    assert_int_equal(scheduler_node_tasks(s, "n3"), 1);
    int unplaced = 0;
    for (int i = 0; i < 3; i++) {
        char id[16];
        snprintf(id, sizeof id, "web%d", i);
        if (!node_of(s, id)[0]) {
            unplaced++;
            assert_string_equal(err_of(s, id),
                                "no suitable node (host-mode port already in use on 3 nodes)");
        }
    }
    assert_int_equal(unplaced, 1);

    /* The same port over UDP, or published through the ingress, does not conflict. */
    put_task(s, "dns", (task_opts_t){.service = "dns", .host_port = 8080, .protocol = 1});
    put_task(s, "lb", (task_opts_t){.service = "lb", .ingress_port = 8080});
    assert_int_equal(tick_commit(s), 2);

    /* The old task stops: its port is free again. */
    put_task(s, "web-old",
             (task_opts_t){.service = "old",
                           .node = "n1",
                           .state = SHOAL__TASK_STATE__COMPLETE,
                           .host_port = 8080,
                           .rev = 20});
    assert_int_equal(tick_commit(s), 1);
    scheduler_destroy(&s);
}

static void test_platform_filter_matches_normalised_architecture(void **state) {
    scheduler_t *s = scheduler_new();
    put_node(s, (node_opts_t){.id = "arm", .arch = "aarch64"});
    put_node(s, (node_opts_t){.id = "intel", .arch = "x86_64"});
    put_pending(s, 3, "amd", (task_opts_t){.service = "a", .platform_arch = "amd64"});
    assert_int_equal(tick_commit(s), 3);
    assert_int_equal(scheduler_node_tasks(s, "intel"), 3);
    put_task(s, "arm0", (task_opts_t){.service = "b", .platform_arch = "arm64"});
    assert_int_equal(tick_commit(s), 1);
    assert_string_equal(node_of(s, "arm0"), "arm");
    put_task(s, "ppc", (task_opts_t){.service = "c", .platform_arch = "ppc64le"});
    assert_int_equal(tick_commit(s), 0);
    assert_string_equal(err_of(s, "ppc"), "no suitable node (unsupported platform on 2 nodes)");
    /* The same through a constraint on node.platform.arch. */
    put_task(s, "cons", (task_opts_t){.service = "d", .constraint = "node.platform.arch==amd64"});
    assert_int_equal(tick_commit(s), 1);
    assert_string_equal(node_of(s, "cons"), "intel");
    scheduler_destroy(&s);
}

static void test_spread_places_100000_tasks_on_10000_nodes_with_preferences(void **state) {
    scheduler_t *s = scheduler_new();
    static const char *zones[] = {"a", "b", "c", "d"};
    for (int i = 0; i < 10000; i++) {
        char id[16], rack[8];
        snprintf(id, sizeof id, "node%05d", i);
        snprintf(rack, sizeof rack, "r%d", (i / 4) % 25);
        put_node(s, (node_opts_t){.id = id, .zone = zones[i % 4], .rack = rack});
    }
    put_pending(s, 100000, "t", (task_opts_t){.prefs = {"node.labels.zone", "node.labels.rack"}});
    const scheduler_decision_t *d;
    size_t n = 0;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    assert_int_equal(scheduler_tick(s, NOW, &d, &n), 0);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    print_message("tick of 100000 tasks over 10000 nodes, 2 preference levels: %.3f s\n", secs);
    assert_true(secs < 5.0);
    assert_int_equal(n, 100000);
    for (int i = 0; i < 10000; i++) {
        char id[16];
        snprintf(id, sizeof id, "node%05d", i);
        assert_int_equal(scheduler_node_tasks(s, id), 10);
    }
    scheduler_destroy(&s);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_spread_divides_tasks_over_nested_preferences),
        cmocka_unit_test(test_spread_preference_beats_node_count),
        cmocka_unit_test(test_spread_preferences_count_tasks_already_there),
        cmocka_unit_test(test_spread_full_branch_leaves_the_rest_to_others),
        cmocka_unit_test(test_spread_nodes_without_the_label_are_one_branch),
        cmocka_unit_test(test_binpack_fills_node_a_before_touching_b),
        cmocka_unit_test(test_binpack_prefers_the_node_with_least_free_resources),
        cmocka_unit_test(test_random_covers_every_fitting_node_and_repeats_with_the_seed),
        cmocka_unit_test(test_cluster_default_strategy_applies_when_the_service_names_none),
        cmocka_unit_test(test_host_mode_port_is_used_once_per_node),
        cmocka_unit_test(test_platform_filter_matches_normalised_architecture),
        cmocka_unit_test(test_spread_places_100000_tasks_on_10000_nodes_with_preferences),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
