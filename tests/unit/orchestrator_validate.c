/* Service spec validation: each bad field is named with its path and the value it had, several
 * bad fields are all named in one message, and a good spec (replicated or global) passes. */
#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "constraint.h"
#include "../../services/orchestrator/validate.h"

/* A complete, valid spec on the stack; tests break one field at a time. */
typedef struct {
    Shoal__ServiceSpec spec;
    Shoal__Annotations ann;
    Shoal__TaskSpec task;
    Shoal__ContainerSpec container;
    Shoal__ResourceRequirements resources;
    Shoal__Resources limits, reservations;
    Shoal__RestartPolicy restart;
    Shoal__Placement placement;
    Shoal__ReplicatedService replicated;
    Shoal__GlobalService global;
    Shoal__UpdateConfig update;
    Shoal__EndpointSpec endpoint;
    Shoal__PortConfig ports[3];
    Shoal__PortConfig *port_ptrs[3];
    char *env[3];
    char *constraints[3];
} spec_t;

static void spec_init(spec_t *s) {
    memset(s, 0, sizeof *s);
    s->spec = (Shoal__ServiceSpec)SHOAL__SERVICE_SPEC__INIT;
    s->ann = (Shoal__Annotations)SHOAL__ANNOTATIONS__INIT;
    s->task = (Shoal__TaskSpec)SHOAL__TASK_SPEC__INIT;
    s->container = (Shoal__ContainerSpec)SHOAL__CONTAINER_SPEC__INIT;
    s->resources = (Shoal__ResourceRequirements)SHOAL__RESOURCE_REQUIREMENTS__INIT;
    s->limits = (Shoal__Resources)SHOAL__RESOURCES__INIT;
    s->reservations = (Shoal__Resources)SHOAL__RESOURCES__INIT;
    s->restart = (Shoal__RestartPolicy)SHOAL__RESTART_POLICY__INIT;
    s->placement = (Shoal__Placement)SHOAL__PLACEMENT__INIT;
    s->replicated = (Shoal__ReplicatedService)SHOAL__REPLICATED_SERVICE__INIT;
    s->global = (Shoal__GlobalService)SHOAL__GLOBAL_SERVICE__INIT;
    s->update = (Shoal__UpdateConfig)SHOAL__UPDATE_CONFIG__INIT;
    s->endpoint = (Shoal__EndpointSpec)SHOAL__ENDPOINT_SPEC__INIT;

    s->ann.name = "web";
    s->spec.annotations = &s->ann;
    s->container.image = "shoal-test:latest";
    s->env[0] = "A=1";
    s->env[1] = "B=";
    s->container.env = s->env;
    s->container.n_env = 2;
    s->task.container = &s->container;
    s->limits.nano_cpus = 1000000000;
    s->limits.memory_bytes = 256 << 20;
    s->reservations.nano_cpus = 500000000;
    s->reservations.memory_bytes = 128 << 20;
    s->resources.limits = &s->limits;
    s->resources.reservations = &s->reservations;
    s->task.resources = &s->resources;
    s->restart.condition = SHOAL__RESTART_POLICY__CONDITION__ON_FAILURE;
    s->restart.delay_ms = 100;
    s->restart.max_attempts = 3;
    s->restart.window_ms = 60000;
    s->task.restart = &s->restart;
    s->constraints[0] = "node.role==worker";
    s->constraints[1] = "node.labels.zone != b";
    s->placement.constraints = s->constraints;
    s->placement.n_constraints = 2;
    s->task.placement = &s->placement;
    s->spec.task = &s->task;
    s->replicated.replicas = 3;
    s->spec.mode_case = SHOAL__SERVICE_SPEC__MODE_REPLICATED;
    s->spec.replicated = &s->replicated;
    s->update.parallelism = 1;
    s->update.delay_ms = 0;
    s->update.max_failure_ratio = 0.25f;
    s->spec.update = &s->update;
    for (int i = 0; i < 3; i++) {
        s->ports[i] = (Shoal__PortConfig)SHOAL__PORT_CONFIG__INIT;
        s->port_ptrs[i] = &s->ports[i];
    }
    s->ports[0].target_port = 80;
    s->ports[0].published_port = 8080;
    s->ports[1].target_port = 53;
    s->ports[1].published_port = 8080;
    s->ports[1].protocol = SHOAL__PORT_CONFIG__PROTOCOL__UDP;
    s->endpoint.ports = s->port_ptrs;
    s->endpoint.n_ports = 2;
    s->spec.endpoint = &s->endpoint;
}

static char err[2048];

static int check(spec_t *s) {
    err[0] = '\0';
    return validate_service_spec(&s->spec, err, sizeof err);
}

static void assert_names(const char *needle) {
    if (!strstr(err, needle))
        fail_msg("expected \"%s\" in: %s", needle, err);
}

static void test_validate_accepts_a_good_replicated_spec(void **state) {
    spec_t s;
    spec_init(&s);
    assert_int_equal(check(&s), 0);
    assert_string_equal(err, "");
}

static void test_validate_accepts_a_good_global_spec(void **state) {
    spec_t s;
    spec_init(&s);
    s.spec.mode_case = SHOAL__SERVICE_SPEC__MODE_GLOBAL;
    s.spec.global = &s.global;
    s.spec.update = NULL;
    s.spec.endpoint = NULL;
    assert_int_equal(check(&s), 0);
}

static void test_validate_names_bad_service_name(void **state) {
    spec_t s;
    spec_init(&s);
    s.ann.name = "-web";
    assert_int_equal(check(&s), -EINVAL);
    assert_names("invalid service spec: annotations.name: must match "
                 "[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62} (got \"-web\")");
    s.ann.name = "";
    assert_int_equal(check(&s), -EINVAL);
    assert_names("annotations.name: required");
    s.spec.annotations = NULL;
    assert_int_equal(check(&s), -EINVAL);
    assert_names("annotations.name: required");
    s.spec.annotations = &s.ann;
    char long_name[80];
    memset(long_name, 'a', 64);
    long_name[64] = '\0';
    s.ann.name = long_name;
    assert_int_equal(check(&s), -EINVAL);
    assert_names("annotations.name: must match");
    long_name[63] = '\0'; /* 63 characters is the limit */
    assert_int_equal(check(&s), 0);
    s.ann.name = "my web";
    assert_int_equal(check(&s), -EINVAL);
    assert_names("(got \"my web\")");
}

static void test_validate_names_missing_or_spaced_image(void **state) {
    spec_t s;
    spec_init(&s);
    s.container.image = "";
    assert_int_equal(check(&s), -EINVAL);
    assert_names("task.container.image: required");
    s.spec.task = NULL;
    assert_int_equal(check(&s), -EINVAL);
    assert_names("task.container.image: required");
    s.spec.task = &s.task;
    s.container.image = "busy box";
    assert_int_equal(check(&s), -EINVAL);
    assert_names("task.container.image: must not contain spaces (got \"busy box\")");
}

static void test_validate_names_bad_env_entry(void **state) {
    spec_t s;
    spec_init(&s);
    s.env[1] = "=x";
    assert_int_equal(check(&s), -EINVAL);
    assert_names("task.container.env[1]: must be K=V with a non-empty K (got \"=x\")");
    s.env[1] = "NOEQUALS";
    assert_int_equal(check(&s), -EINVAL);
    assert_names("task.container.env[1]");
}

static void test_validate_names_mode_problems(void **state) {
    spec_t s;
    spec_init(&s);
    s.replicated.replicas = 10001;
    assert_int_equal(check(&s), -EINVAL);
    assert_names("mode.replicated.replicas: must be <= 10000 (got 10001)");
    s.replicated.replicas = 10000;
    assert_int_equal(check(&s), 0);
    s.spec.mode_case = SHOAL__SERVICE_SPEC__MODE__NOT_SET;
    assert_int_equal(check(&s), -EINVAL);
    assert_names("mode: required (replicated or global)");
}

static void test_validate_names_restart_policy_fields(void **state) {
    spec_t s;
    spec_init(&s);
    s.restart.delay_ms = -5;
    s.restart.window_ms = -1;
    s.restart.condition = 7;
    assert_int_equal(check(&s), -EINVAL);
    assert_names("task.restart.delay_ms: must be >= 0 (got -5)");
    assert_names("task.restart.window_ms: must be >= 0 (got -1)");
    assert_names("task.restart.condition: must be any, none or on-failure (got 7)");
}

static void test_validate_names_resource_problems(void **state) {
    spec_t s;
    spec_init(&s);
    s.limits.nano_cpus = -1;
    assert_int_equal(check(&s), -EINVAL);
    assert_names("task.resources.limits.nano_cpus: must be >= 0 (got -1)");
    spec_init(&s);
    s.reservations.memory_bytes = 512 << 20;
    assert_int_equal(check(&s), -EINVAL);
    assert_names("task.resources.reservations.memory_bytes: must be <= limits.memory_bytes");
    /* no limit set: any reservation is fine */
    s.limits.memory_bytes = 0;
    assert_int_equal(check(&s), 0);
}

static void test_validate_names_negative_stop_grace(void **state) {
    spec_t s;
    spec_init(&s);
    s.container.stop_grace_period_ms = -10;
    assert_int_equal(check(&s), -EINVAL);
    assert_names("task.container.stop_grace_period_ms: must be >= 0 (got -10)");
}

static void test_validate_names_bad_constraints(void **state) {
    spec_t s;
    spec_init(&s);
    s.constraints[0] = "node.colour==red";
    s.constraints[1] = "node.labels.zone=a";
    s.constraints[2] = "node.hostname==";
    s.placement.n_constraints = 3;
    assert_int_equal(check(&s), -EINVAL);
    assert_names("task.placement.constraints[0]: constraint \"node.colour==red\": unknown key");
    assert_names("task.placement.constraints[1]: constraint \"node.labels.zone=a\": expected an "
                 "operator");
    assert_names("task.placement.constraints[2]: constraint \"node.hostname==\": missing value");
}

static void test_validate_names_update_config_fields(void **state) {
    spec_t s;
    spec_init(&s);
    s.update.delay_ms = -1;
    s.update.max_failure_ratio = 1.5f;
    assert_int_equal(check(&s), -EINVAL);
    assert_names("update.delay_ms: must be >= 0 (got -1)");
    assert_names("update.max_failure_ratio: must be between 0 and 1 (got 1.5)");
    s.update.max_failure_ratio = NAN;
    s.update.delay_ms = 0;
    assert_int_equal(check(&s), -EINVAL);
    assert_names("update.max_failure_ratio");
}

static void test_validate_names_bad_and_duplicate_ports(void **state) {
    spec_t s;
    spec_init(&s);
    s.ports[1].protocol = SHOAL__PORT_CONFIG__PROTOCOL__TCP; /* 8080/tcp twice */
    s.ports[2].target_port = 0;
    s.ports[2].published_port = 70000;
    s.endpoint.n_ports = 3;
    assert_int_equal(check(&s), -EINVAL);
    assert_names("endpoint.ports[1].published_port: 8080/tcp is already published by "
                 "endpoint.ports[0]");
    assert_names("endpoint.ports[2].target_port: must be 1..65535 (got 0)");
    assert_names("endpoint.ports[2].published_port: must be 0 (pick one) or 1..65535 (got 70000)");
}

static void test_validate_names_every_bad_field_at_once(void **state) {
    spec_t s;
    spec_init(&s);
    s.ann.name = "-web";
    s.container.image = "";
    s.restart.delay_ms = -5;
    s.env[0] = "=1";
    s.update.max_failure_ratio = -0.5f;
    assert_int_equal(check(&s), -EINVAL);
    assert_string_equal(
        err, "invalid service spec: annotations.name: must match [a-zA-Z0-9][a-zA-Z0-9_.-]{0,62} "
             "(got \"-web\"); task.container.image: required; task.container.env[0]: must be K=V "
             "with a non-empty K (got \"=1\"); task.restart.delay_ms: must be >= 0 (got -5); "
             "update.max_failure_ratio: must be between 0 and 1 (got -0.5)");
}

static void test_validate_survives_a_tiny_error_buffer(void **state) {
    spec_t s;
    spec_init(&s);
    s.ann.name = "-web";
    s.container.image = "";
    char small[16];
    assert_int_equal(validate_service_spec(&s.spec, small, sizeof small), -EINVAL);
    assert_true(strlen(small) < sizeof small);
    assert_int_equal(validate_service_spec(NULL, small, sizeof small), -EINVAL);
}

static void test_validate_node_spec(void **state) {
    Shoal__NodeSpec ns = SHOAL__NODE_SPEC__INIT;
    ns.availability = SHOAL__NODE_SPEC__AVAILABILITY__DRAIN;
    assert_int_equal(validate_node_spec(&ns, err, sizeof err), 0);
    ns.availability = 9;
    ns.desired_role = 4;
    assert_int_equal(validate_node_spec(&ns, err, sizeof err), -EINVAL);
    assert_names("desired_role: must be worker or manager (got 4)");
    assert_names("availability: must be active, pause or drain (got 9)");
}

static void test_constraint_matches_nodes(void **state) {
    Shoal__Node node = SHOAL__NODE__INIT;
    Shoal__Meta meta = SHOAL__META__INIT;
    Shoal__NodeSpec spec = SHOAL__NODE_SPEC__INIT;
    Shoal__Annotations ann = SHOAL__ANNOTATIONS__INIT;
    Shoal__Label zone = SHOAL__LABEL__INIT;
    Shoal__Label *labels[] = {&zone};
    Shoal__NodeDescription desc = SHOAL__NODE_DESCRIPTION__INIT;
    meta.id = "n1";
    zone.key = "zone";
    zone.value = "a";
    ann.labels = labels;
    ann.n_labels = 1;
    spec.annotations = &ann;
    desc.hostname = "Worker-1";
    node.meta = &meta;
    node.spec = &spec;
    node.description = &desc;
    char *yes[] = {"node.labels.zone==a", "node.hostname==worker-1", "node.role!=manager",
                   "engine.labels.x!=y"};
    char *no_label_case[] = {"node.labels.zone==A"};
    char *missing[] = {"node.labels.rack==1"};
    assert_true(constraint_match_all(yes, 4, &node));
    assert_false(constraint_match_all(no_label_case, 1, &node));
    assert_false(constraint_match_all(missing, 1, &node));
}

static void test_validate_accepts_start_first_and_names_a_bad_order(void **state) {
    spec_t s;
    spec_init(&s);
    s.update.order = SHOAL__UPDATE_CONFIG__ORDER__START_FIRST;
    assert_int_equal(check(&s), 0);
    s.update.order = 5;
    assert_int_equal(check(&s), -EINVAL);
    assert_names("update.order: must be stop-first or start-first (got 5)");
}

static void test_validate_accepts_jobs_and_names_their_limits(void **state) {
    spec_t s;
    spec_init(&s);
    Shoal__ReplicatedJob rj = SHOAL__REPLICATED_JOB__INIT;
    rj.total_completions = 4;
    rj.max_concurrent = 2;
    s.spec.mode_case = SHOAL__SERVICE_SPEC__MODE_REPLICATED_JOB;
    s.spec.replicated_job = &rj;
    assert_int_equal(check(&s), 0);
    rj.total_completions = 10001;
    rj.max_concurrent = 10001;
    assert_int_equal(check(&s), -EINVAL);
    assert_names("mode.replicated_job.total_completions: must be <= 10000 (got 10001)");
    assert_names("mode.replicated_job.max_concurrent: must be <= 10000 (got 10001)");
    Shoal__GlobalJob gj = SHOAL__GLOBAL_JOB__INIT;
    s.spec.mode_case = SHOAL__SERVICE_SPEC__MODE_GLOBAL_JOB;
    s.spec.global_job = &gj;
    assert_int_equal(check(&s), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_validate_accepts_a_good_replicated_spec),
        cmocka_unit_test(test_validate_accepts_a_good_global_spec),
        cmocka_unit_test(test_validate_names_bad_service_name),
        cmocka_unit_test(test_validate_names_missing_or_spaced_image),
        cmocka_unit_test(test_validate_names_bad_env_entry),
        cmocka_unit_test(test_validate_names_mode_problems),
        cmocka_unit_test(test_validate_names_restart_policy_fields),
        cmocka_unit_test(test_validate_names_resource_problems),
        cmocka_unit_test(test_validate_names_negative_stop_grace),
        cmocka_unit_test(test_validate_names_bad_constraints),
        cmocka_unit_test(test_validate_names_update_config_fields),
        cmocka_unit_test(test_validate_names_bad_and_duplicate_ports),
        cmocka_unit_test(test_validate_names_every_bad_field_at_once),
        cmocka_unit_test(test_validate_survives_a_tiny_error_buffer),
        cmocka_unit_test(test_validate_node_spec),
        cmocka_unit_test(test_constraint_matches_nodes),
        cmocka_unit_test(test_validate_accepts_start_first_and_names_a_bad_order),
        cmocka_unit_test(test_validate_accepts_jobs_and_names_their_limits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
