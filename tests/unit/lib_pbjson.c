/* Tests of lib/pbjson: generic protobuf-c <-> JSON over descriptors.
 *
 * The round-trip tests build fully populated shoal.Service and shoal.Task messages, go to JSON
 * text and back, and compare the packed bytes, so a field type the mapper gets wrong (oneof,
 * enum, float, int64 near the limits, bytes, nested repeated messages) shows up as a byte
 * difference. The error tests check that a bad document names the field path. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "objects.pb-c.h"
#include "pbjson.h"
#include "store.pb-c.h"

/* ---- helpers ------------------------------------------------------------------------------ */

static uint8_t *pack(const ProtobufCMessage *m, size_t *len) {
    *len = protobuf_c_message_get_packed_size(m);
    uint8_t *buf = malloc(*len ? *len : 1);
    assert_non_null(buf);
    assert_int_equal(protobuf_c_message_pack(m, buf), *len);
    return buf;
}

/* Message -> JSON text -> message; asserts both pack to the same bytes; returns the text. */
static char *assert_round_trip(const ProtobufCMessage *orig) {
    char *text = pbjson_dumps(orig, 0);
    assert_non_null(text);
    ProtobufCMessage *back = NULL;
    char err[256];
    int rc = pbjson_loads(orig->descriptor, text, &back, err, sizeof err);
    if (rc != 0)
        fail_msg("pbjson_loads: %s\n%s", err, text);
    size_t a_len, b_len;
    uint8_t *a = pack(orig, &a_len), *b = pack(back, &b_len);
    if (a_len != b_len || memcmp(a, b, a_len))
        fail_msg("round trip differs (%zu vs %zu bytes):\n%s", a_len, b_len, text);
    free(a);
    free(b);
    protobuf_c_message_free_unpacked(back, NULL);
    return text;
}

/* Loads `text` as `desc` expecting failure; returns the error line (static buffer). */
static const char *load_error(const ProtobufCMessageDescriptor *desc, const char *text) {
    static char err[512];
    ProtobufCMessage *m = (ProtobufCMessage *)0x1;
    int rc = pbjson_loads(desc, text, &m, err, sizeof err);
    assert_int_equal(rc, -EINVAL);
    assert_null(m);
    return err;
}

static ProtobufCMessage *load_ok(const ProtobufCMessageDescriptor *desc, const char *text) {
    ProtobufCMessage *m = NULL;
    char err[512];
    int rc = pbjson_loads(desc, text, &m, err, sizeof err);
    if (rc != 0)
        fail_msg("pbjson_loads(%s): %s", text, err);
    assert_non_null(m);
    return m;
}

#define assert_contains(hay, needle)                                                               \
    do {                                                                                           \
        if (!strstr((hay), (needle)))                                                              \
            fail_msg("expected \"%s\" in: %s", (needle), (hay));                                   \
    } while (0)

/* ---- a full service ----------------------------------------------------------------------- */

typedef struct service_fixture {
    Shoal__Service service;
    Shoal__Meta meta;
    Shoal__ServiceSpec spec, previous;
    Shoal__Annotations annotations, prev_annotations;
    Shoal__Label labels[2], *label_ptrs[2], env_label, *env_label_ptrs[1], log_opt,
        *log_opt_ptrs[1];
    Shoal__TaskSpec task;
    Shoal__ContainerSpec container;
    Shoal__Mount mounts[2], *mount_ptrs[2];
    Shoal__HealthConfig health;
    Shoal__ResourceRequirements resources;
    Shoal__Resources limits, reservations;
    Shoal__RestartPolicy restart;
    Shoal__Placement placement;
    Shoal__PlacementPreference pref, *pref_ptrs[1];
    Shoal__Platform platform, *platform_ptrs[1];
    Shoal__NetworkAttachmentConfig net, *net_ptrs[1];
    Shoal__LogDriver log_driver;
    Shoal__SecretReference secret, *secret_ptrs[1];
    Shoal__ReplicatedService replicated;
    Shoal__GlobalService global;
    Shoal__UpdateConfig update, rollback;
    Shoal__EndpointSpec endpoint_spec;
    Shoal__PortConfig port, *port_ptrs[1];
    Shoal__Endpoint endpoint;
    Shoal__VirtualIP vip, *vip_ptrs[1];
    Shoal__UpdateStatus update_status;
    char *command[2], *args[1], *env[2], *constraints[1], *aliases[2], *test[2];
} service_fixture_t;

static void service_fixture_init(service_fixture_t *f) {
    memset(f, 0, sizeof *f);
    shoal__service__init(&f->service);
    shoal__meta__init(&f->meta);
    f->meta.id = "k3v9q0a1b2c3d4e5f6g7h8i9j";
    f->meta.version = 7;
    f->meta.created_at_ms = 1700000000123;
    f->meta.updated_at_ms = -5; /* negative int64 survives */
    f->service.meta = &f->meta;

    shoal__annotations__init(&f->annotations);
    f->annotations.name = "web";
    for (int i = 0; i < 2; i++) {
        shoal__label__init(&f->labels[i]);
        f->label_ptrs[i] = &f->labels[i];
    }
    f->labels[0].key = "tier";
    f->labels[0].value = "front";
    f->labels[1].key = "owner";
    f->labels[1].value = "ops \"team\" \xc3\xa9\n"; /* quotes, UTF-8, newline */
    f->annotations.n_labels = 2;
    f->annotations.labels = f->label_ptrs;

    shoal__container_spec__init(&f->container);
    f->container.image = "shoal-test:latest";
    f->command[0] = "/bin/sh";
    f->command[1] = "-c";
    f->container.n_command = 2;
    f->container.command = f->command;
    f->args[0] = "sleep 1000";
    f->container.n_args = 1;
    f->container.args = f->args;
    f->env[0] = "A=1";
    f->env[1] = "B=";
    f->container.n_env = 2;
    f->container.env = f->env;
    f->container.dir = "/srv";
    f->container.user = "nobody";
    shoal__label__init(&f->env_label);
    f->env_label.key = "com.example";
    f->env_label_ptrs[0] = &f->env_label; /* an empty value is a default, still round trips */
    f->container.n_labels = 1;
    f->container.labels = f->env_label_ptrs;
    for (int i = 0; i < 2; i++) {
        shoal__mount__init(&f->mounts[i]);
        f->mount_ptrs[i] = &f->mounts[i];
    }
    f->mounts[0].type = SHOAL__MOUNT__TYPE__TMPFS;
    f->mounts[0].target = "/tmp";
    f->mounts[1].type = SHOAL__MOUNT__TYPE__BIND;
    f->mounts[1].source = "/data";
    f->mounts[1].target = "/data";
    f->mounts[1].read_only = 1;
    f->container.n_mounts = 2;
    f->container.mounts = f->mount_ptrs;
    shoal__health_config__init(&f->health);
    f->test[0] = "CMD-SHELL";
    f->test[1] = "nc -z localhost 80";
    f->health.n_test = 2;
    f->health.test = f->test;
    f->health.interval_ms = 500;
    f->health.retries = -1;
    f->container.healthcheck = &f->health;
    f->container.stop_grace_period_ms = 2000;
    f->container.init = 1;
    f->container.pull = SHOAL__CONTAINER_SPEC__PULL_POLICY__NEVER;
    shoal__secret_reference__init(&f->secret);
    f->secret.secret_id = "s1";
    f->secret.secret_name = "db-password";
    f->secret.target = "db";
    f->secret.mode = 0400;
    f->secret_ptrs[0] = &f->secret;
    f->container.n_secrets = 1;
    f->container.secrets = f->secret_ptrs;
    f->container.stop_signal = "SIGINT";

    shoal__task_spec__init(&f->task);
    f->task.container = &f->container;
    shoal__resource_requirements__init(&f->resources);
    shoal__resources__init(&f->limits);
    shoal__resources__init(&f->reservations);
    f->limits.nano_cpus = 1500000000;
    f->limits.memory_bytes = INT64_MAX; /* beyond a double's 53 bits */
    f->reservations.memory_bytes = 64 << 20;
    f->resources.limits = &f->limits;
    f->resources.reservations = &f->reservations;
    f->task.resources = &f->resources;
    shoal__restart_policy__init(&f->restart);
    f->restart.condition = SHOAL__RESTART_POLICY__CONDITION__ON_FAILURE;
    f->restart.delay_ms = 250;
    f->restart.max_attempts = 3;
    f->task.restart = &f->restart;
    shoal__placement__init(&f->placement);
    f->constraints[0] = "node.labels.zone==a";
    f->placement.n_constraints = 1;
    f->placement.constraints = f->constraints;
    shoal__placement_preference__init(&f->pref);
    f->pref.spread_descriptor = "node.labels.rack";
    f->pref_ptrs[0] = &f->pref;
    f->placement.n_preferences = 1;
    f->placement.preferences = f->pref_ptrs;
    f->placement.max_replicas = 2;
    shoal__platform__init(&f->platform);
    f->platform.architecture = "x86_64";
    f->platform.os = "linux";
    f->platform_ptrs[0] = &f->platform;
    f->placement.n_platforms = 1;
    f->placement.platforms = f->platform_ptrs;
    f->placement.strategy = "binpack";
    f->task.placement = &f->placement;
    shoal__network_attachment_config__init(&f->net);
    f->net.target = "backend";
    f->aliases[0] = "web";
    f->aliases[1] = "www";
    f->net.n_aliases = 2;
    f->net.aliases = f->aliases;
    f->net_ptrs[0] = &f->net;
    f->task.n_networks = 1;
    f->task.networks = f->net_ptrs;
    shoal__log_driver__init(&f->log_driver);
    f->log_driver.name = "json-file";
    shoal__label__init(&f->log_opt);
    f->log_opt.key = "max-size";
    f->log_opt.value = "10m";
    f->log_opt_ptrs[0] = &f->log_opt;
    f->log_driver.n_options = 1;
    f->log_driver.options = f->log_opt_ptrs;
    f->task.log_driver = &f->log_driver;
    f->task.force_update = UINT64_MAX; /* above INT64_MAX: written as a string */

    shoal__service_spec__init(&f->spec);
    f->spec.annotations = &f->annotations;
    f->spec.task = &f->task;
    shoal__replicated_service__init(&f->replicated);
    f->replicated.replicas = 3;
    f->spec.mode_case = SHOAL__SERVICE_SPEC__MODE_REPLICATED;
    f->spec.replicated = &f->replicated;
    shoal__update_config__init(&f->update);
    f->update.parallelism = 1;
    f->update.delay_ms = 10000;
    f->update.failure_action = SHOAL__UPDATE_CONFIG__FAILURE_ACTION__ROLLBACK;
    f->update.monitor_ms = 5000;
    f->update.max_failure_ratio = 0.1f;
    f->update.order = SHOAL__UPDATE_CONFIG__ORDER__START_FIRST;
    f->spec.update = &f->update;
    shoal__update_config__init(&f->rollback);
    f->rollback.max_failure_ratio = 1.0f / 3.0f; /* needs every float digit */
    f->spec.rollback = &f->rollback;
    shoal__endpoint_spec__init(&f->endpoint_spec);
    f->endpoint_spec.mode = SHOAL__ENDPOINT_SPEC__RESOLUTION_MODE__DNSRR;
    shoal__port_config__init(&f->port);
    f->port.name = "http";
    f->port.protocol = SHOAL__PORT_CONFIG__PROTOCOL__UDP;
    f->port.target_port = 80;
    f->port.published_port = 30080;
    f->port.publish_mode = SHOAL__PORT_CONFIG__PUBLISH_MODE__HOST;
    f->port_ptrs[0] = &f->port;
    f->endpoint_spec.n_ports = 1;
    f->endpoint_spec.ports = f->port_ptrs;
    f->spec.endpoint = &f->endpoint_spec;
    f->spec.task_history_limit = 5;
    f->service.spec = &f->spec;

    /* The previous spec uses the other oneof member, an empty message. */
    shoal__service_spec__init(&f->previous);
    shoal__annotations__init(&f->prev_annotations);
    f->prev_annotations.name = "web";
    f->previous.annotations = &f->prev_annotations;
    shoal__global_service__init(&f->global);
    f->previous.mode_case = SHOAL__SERVICE_SPEC__MODE_GLOBAL;
    f->previous.global = &f->global;
    f->service.previous_spec = &f->previous;

    f->service.spec_version = 12;
    shoal__endpoint__init(&f->endpoint);
    f->endpoint.spec = &f->endpoint_spec;
    f->endpoint.n_ports = 1;
    f->endpoint.ports = f->port_ptrs;
    shoal__virtual_ip__init(&f->vip);
    f->vip.network_id = "n1";
    f->vip.addr = "10.0.0.2/24";
    f->vip_ptrs[0] = &f->vip;
    f->endpoint.n_virtual_ips = 1;
    f->endpoint.virtual_ips = f->vip_ptrs;
    f->service.endpoint = &f->endpoint;
    shoal__update_status__init(&f->update_status);
    f->update_status.state = SHOAL__UPDATE_STATUS__STATE__ROLLBACK_PAUSED;
    f->update_status.started_at_ms = 1;
    f->update_status.message = "paused: 2 tasks failed";
    f->service.update_status = &f->update_status;
    f->service.pending_delete = 1;
}

static void test_pbjson_round_trips_a_full_service(void **state) {
    service_fixture_t *f = malloc(sizeof *f);
    service_fixture_init(f);
    char *text = assert_round_trip(&f->service.base);
    /* The mapping is the documented one, not just self-consistent. */
    assert_contains(text, "\"replicated\": {\n");
    assert_contains(text, "\"replicas\": 3");
    assert_contains(text, "\"global\": {}");
    assert_contains(text, "\"condition\": \"ON_FAILURE\"");
    assert_contains(text, "\"type\": \"TMPFS\"");
    assert_contains(text, "\"memory_bytes\": 9223372036854775807");
    assert_contains(text, "\"force_update\": \"18446744073709551615\"");
    assert_contains(text, "\"max_failure_ratio\": 0.1,");
    assert_contains(text, "\"created_at_ms\": 1700000000123");
    assert_contains(text, "\"updated_at_ms\": -5");
    assert_contains(text, "\"pending_delete\": true");
    /* Default-valued scalars are left out. */
    assert_null(strstr(text, "\"hostname\""));
    assert_null(strstr(text, "\"tty\""));
    free(text);
    free(f);
}

static void test_pbjson_round_trips_a_task(void **state) {
    Shoal__Task task = SHOAL__TASK__INIT;
    Shoal__Meta meta = SHOAL__META__INIT;
    meta.id = "t1";
    meta.version = 3;
    task.meta = &meta;
    task.service_id = "svc1";
    task.service_name = "web";
    task.slot = 2;
    task.node_id = "node-a";
    Shoal__TaskSpec spec = SHOAL__TASK_SPEC__INIT;
    Shoal__ContainerSpec container = SHOAL__CONTAINER_SPEC__INIT;
    container.image = "busybox";
    container.tty = 1;
    spec.container = &container;
    task.spec = &spec;
    task.spec_version = 4;
    task.desired_state = SHOAL__TASK_STATE__SHUTDOWN;
    Shoal__TaskStatus status = SHOAL__TASK_STATUS__INIT;
    status.timestamp_ms = 1700000000999;
    status.state = SHOAL__TASK_STATE__RUNNING;
    status.message = "started";
    status.err = "";
    Shoal__ContainerStatus cs = SHOAL__CONTAINER_STATUS__INIT;
    cs.container_id = "abcdef0123";
    cs.pid = 4242;
    cs.exit_code = -9;
    status.container = &cs;
    status.healthy = 1;
    task.status = &status;
    Shoal__NetworkAttachment na[2] = {SHOAL__NETWORK_ATTACHMENT__INIT,
                                      SHOAL__NETWORK_ATTACHMENT__INIT};
    Shoal__NetworkAttachment *na_ptrs[2] = {&na[0], &na[1]};
    char *addrs[2] = {"172.30.0.5", "fd00::5"};
    na[0].network = "shoal";
    na[0].n_addresses = 2;
    na[0].addresses = addrs;
    na[1].network = "other";
    task.n_networks = 2;
    task.networks = na_ptrs;
    task.restart_at_ms = (1LL << 53) + 1; /* not exact as a double */

    char *text = assert_round_trip(&task.base);
    assert_contains(text, "\"state\": \"RUNNING\"");
    assert_contains(text, "\"desired_state\": \"SHUTDOWN\"");
    assert_contains(text, "\"restart_at_ms\": 9007199254740993");
    assert_contains(text, "\"exit_code\": -9");
    free(text);
}

static void test_pbjson_reads_enum_by_name_and_number(void **state) {
    const char *docs[] = {"{\"desired_state\": \"RUNNING\"}", "{\"desired_state\": 512}",
                          "{\"desired_state\": \"running\"}", "{\"desiredState\": \"RUNNING\"}"};
    for (size_t i = 0; i < sizeof docs / sizeof docs[0]; i++) {
        Shoal__Task *t = (Shoal__Task *)load_ok(&shoal__task__descriptor, docs[i]);
        assert_int_equal(t->desired_state, SHOAL__TASK_STATE__RUNNING);
        protobuf_c_message_free_unpacked(&t->base, NULL);
    }
    const char *err = load_error(&shoal__task__descriptor, "{\"status\": {\"state\": \"RUNING\"}}");
    assert_contains(err, "field \"status.state\"");
    assert_contains(err, "RUNING");
    assert_contains(err, "RUNNING"); /* the valid names are listed */

    /* An enum number not in the .proto is kept (proto3 enums are open) and printed as a number. */
    Shoal__Task *t = (Shoal__Task *)load_ok(&shoal__task__descriptor, "{\"desired_state\": 5}");
    assert_int_equal(t->desired_state, 5);
    char *text = pbjson_dumps(&t->base, 0);
    assert_contains(text, "\"desired_state\": 5");
    free(text);
    protobuf_c_message_free_unpacked(&t->base, NULL);
}

static void test_pbjson_writes_bytes_as_base64(void **state) {
    Shoal__Node node = SHOAL__NODE__INIT;
    uint8_t cert[] = {0x00, 0x01, 0x02, 0xff, 0xfe};
    node.certificate.data = cert;
    node.certificate.len = sizeof cert;
    json_t *j = pbjson_encode(&node.base, 0);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "certificate")), "AAEC//4=");
    json_decref(j);
    free(assert_round_trip(&node.base));

    /* URL-safe alphabet and missing padding are accepted. */
    Shoal__Node *back =
        (Shoal__Node *)load_ok(&shoal__node__descriptor, "{\"certificate\": \"AAEC__4\"}");
    assert_int_equal(back->certificate.len, sizeof cert);
    assert_memory_equal(back->certificate.data, cert, sizeof cert);
    protobuf_c_message_free_unpacked(&back->base, NULL);

    assert_contains(load_error(&shoal__node__descriptor, "{\"certificate\": \"AA*C\"}"),
                    "field \"certificate\": invalid base64");
    assert_contains(load_error(&shoal__node__descriptor, "{\"certificate\": \"A\"}"),
                    "field \"certificate\": invalid base64");
    assert_contains(load_error(&shoal__node__descriptor, "{\"certificate\": 12}"),
                    "field \"certificate\": expected a base64 string");
}

static void test_pbjson_rejects_unknown_field_naming_it(void **state) {
    const char *err =
        load_error(&shoal__service_spec__descriptor,
                   "{\"task\": {\"container\": {\"image\": \"x\", \"imagee\": \"y\"}}}");
    assert_contains(err, "field \"task.container.imagee\"");
    assert_contains(err, "unknown field of shoal.ContainerSpec");

    err = load_error(&shoal__store__txn_request__descriptor,
                     "{\"success\": [{\"put\": {\"key\": \"a\"}}, {\"bogus\": {}}]}");
    assert_contains(err, "field \"success[1].bogus\"");
}

static void test_pbjson_rejects_wrong_type_naming_the_field(void **state) {
    struct {
        const char *doc, *want;
    } cases[] = {
        {"{\"task_history_limit\": \"many\"}", "field \"task_history_limit\": expected an integer"},
        {"{\"task_history_limit\": -1}", "field \"task_history_limit\": must not be negative"},
        {"{\"task_history_limit\": 1.5}", "field \"task_history_limit\": expected an integer"},
        {"{\"replicated\": {\"replicas\": true}}", "field \"replicated.replicas\": expected an"},
        {"{\"replicated\": 3}", "field \"replicated\": expected an object"},
        {"{\"task\": {\"container\": {\"mounts\": [{\"type\": \"BIND\"}, {\"read_only\": "
         "\"yes\"}]}}}",
         "field \"task.container.mounts[1].read_only\": expected true or false"},
        {"{\"task\": {\"container\": {\"env\": \"A=1\"}}}",
         "field \"task.container.env\": expected an array"},
        {"{\"task\": {\"container\": {\"env\": [\"A=1\", 2]}}}",
         "field \"task.container.env[1]\": expected a string"},
        {"{\"task\": {\"container\": {\"env\": [null]}}}", "field \"task.container.env[0]\""},
        {"{\"task\": {\"container\": {\"healthcheck\": {\"retries\": 3000000000}}}}",
         "field \"task.container.healthcheck.retries\": 3000000000 is out of range"},
        {"{\"update\": {\"max_failure_ratio\": \"lots\"}}",
         "field \"update.max_failure_ratio\": expected a number"},
        {"{\"update\": {\"max_failure_ratio\": 1e300}}",
         "field \"update.max_failure_ratio\": 1e+300 is out of range"},
        {"{\"replicated\": {}, \"global\": {}}", "field \"global\": only one of a oneof"},
        {"{\"task_history_limit\": 1, \"taskHistoryLimit\": 2}",
         "field \"taskHistoryLimit\": given twice"},
        {"[]", "expected a JSON object for shoal.ServiceSpec"},
        {"{\"annotations\": ", "invalid JSON at line 1"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        assert_contains(load_error(&shoal__service_spec__descriptor, cases[i].doc), cases[i].want);
}

static void test_pbjson_accepts_camel_case_names(void **state) {
    Shoal__ServiceSpec *s = (Shoal__ServiceSpec *)load_ok(
        &shoal__service_spec__descriptor,
        "{\"taskHistoryLimit\": 4, \"replicatedJob\": {\"maxConcurrent\": 2, "
        "\"totalCompletions\": \"10\"}, \"task\": {\"container\": {\"stopGracePeriodMs\": 1500, "
        "\"stopSignal\": \"SIGTERM\"}, \"logDriver\": {\"name\": \"none\"}}}");
    assert_int_equal(s->task_history_limit, 4);
    assert_int_equal(s->mode_case, SHOAL__SERVICE_SPEC__MODE_REPLICATED_JOB);
    assert_int_equal(s->replicated_job->max_concurrent, 2);
    assert_int_equal(s->replicated_job->total_completions, 10);
    assert_int_equal(s->task->container->stop_grace_period_ms, 1500);
    assert_string_equal(s->task->container->stop_signal, "SIGTERM");
    assert_string_equal(s->task->log_driver->name, "none");
    /* Unset strings keep protobuf-c's shared empty default (freeing must not touch it). */
    assert_string_equal(s->task->container->image, "");
    protobuf_c_message_free_unpacked(&s->base, NULL);
}

static void test_pbjson_null_means_unset(void **state) {
    Shoal__ServiceSpec *s = (Shoal__ServiceSpec *)load_ok(
        &shoal__service_spec__descriptor,
        "{\"task\": null, \"replicated\": null, \"task_history_limit\": null, \"global\": {}}");
    assert_null(s->task);
    assert_int_equal(s->mode_case, SHOAL__SERVICE_SPEC__MODE_GLOBAL);
    assert_int_equal(s->task_history_limit, 0);
    protobuf_c_message_free_unpacked(&s->base, NULL);
}

static void test_pbjson_emits_defaults_only_when_asked(void **state) {
    Shoal__Store__PutRequest put = SHOAL__STORE__PUT_REQUEST__INIT;
    char *text = pbjson_dumps(&put.base, 0);
    assert_string_equal(text, "{}");
    free(text);
    json_t *j = pbjson_encode(&put.base, PBJSON_EMIT_DEFAULTS);
    assert_string_equal(json_string_value(json_object_get(j, "key")), "");
    assert_string_equal(json_string_value(json_object_get(j, "value")), "");
    assert_int_equal(json_integer_value(json_object_get(j, "lease")), 0);
    assert_true(json_is_false(json_object_get(j, "prev_kv")));
    json_decref(j);

    Shoal__Store__RangeResponse rr = SHOAL__STORE__RANGE_RESPONSE__INIT;
    j = pbjson_encode(&rr.base, PBJSON_EMIT_DEFAULTS);
    assert_true(json_is_array(json_object_get(j, "kvs")));
    assert_null(json_object_get(j, "header")); /* unset messages stay out */
    json_decref(j);
}

static void test_pbjson_repairs_invalid_utf8_on_output(void **state) {
    Shoal__Label label = SHOAL__LABEL__INIT;
    label.key = "k\xff\xc3";
    label.value = "ok \xe2\x82\xac";
    json_t *j = pbjson_encode(&label.base, 0);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "key")), "k\xef\xbf\xbd\xef\xbf\xbd");
    assert_string_equal(json_string_value(json_object_get(j, "value")), "ok \xe2\x82\xac");
    json_decref(j);
}

static void test_pbjson_decodes_a_store_txn(void **state) {
    Shoal__Store__TxnRequest *t = (Shoal__Store__TxnRequest *)load_ok(
        &shoal__store__txn_request__descriptor,
        "{\"compare\": [{\"target\": \"MOD\", \"key\": \"/a\", \"number\": 0}],"
        " \"success\": [{\"put\": {\"key\": \"/a\", \"value\": \"aGk=\"}}],"
        " \"failure\": [{\"range\": {\"key\": \"/a\"}}, {\"deleteRange\": {\"key\": \"/b\", "
        "\"prefix\": true}}]}");
    assert_int_equal(t->n_compare, 1);
    assert_int_equal(t->compare[0]->target, SHOAL__STORE__COMPARE__TARGET__MOD);
    assert_int_equal(t->n_success, 1);
    assert_int_equal(t->success[0]->request_case, SHOAL__STORE__REQUEST_OP__REQUEST_PUT);
    assert_int_equal(t->success[0]->put->value.len, 2);
    assert_memory_equal(t->success[0]->put->value.data, "hi", 2);
    assert_int_equal(t->n_failure, 2);
    assert_int_equal(t->failure[1]->request_case, SHOAL__STORE__REQUEST_OP__REQUEST_DELETE_RANGE);
    assert_true(t->failure[1]->delete_range->prefix);
    protobuf_c_message_free_unpacked(&t->base, NULL);
}

/* ---- descriptor lookup -------------------------------------------------------------------- */

static void test_pbjson_finds_descriptors_by_full_name(void **state) {
    assert_ptr_equal(pbjson_find_descriptor("shoal.store.PutRequest"),
                     &shoal__store__put_request__descriptor);
    assert_ptr_equal(pbjson_find_descriptor("shoal.Service"), &shoal__service__descriptor);
    assert_ptr_equal(pbjson_find_descriptor(".shoal.bus.Empty"),
                     pbjson_find_descriptor("shoal.bus.Empty"));
    assert_non_null(pbjson_find_descriptor("shoal.orchestrator.ServiceCreateRequest"));
    assert_non_null(pbjson_find_descriptor("shoal.dns.LookupResponse"));
    assert_null(pbjson_find_descriptor("shoal.NoSuchMessage"));
    assert_null(pbjson_find_descriptor("Service"));
    assert_null(pbjson_find_descriptor(NULL));
}

/* Every `message` declared in the .proto files (nested ones as Outer.Inner) must be found, so a
 * message added to a .proto without a line in pbjson.c's table fails here. */
static void test_pbjson_finds_every_message_of_the_protos(void **state) {
    static const char *files[] = {"agent",   "bus",          "dispatcher", "dns",
                                  "objects", "orchestrator", "scheduler",  "store"};
    int checked = 0;
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        char path[256];
        snprintf(path, sizeof path, "proto/%s.proto", files[i]);
        FILE *fp = fopen(path, "r");
        if (!fp) {
            snprintf(path, sizeof path, "../../../proto/%s.proto", files[i]);
            fp = fopen(path, "r");
        }
        if (!fp)
            skip();
        char line[512], package[128] = "", scope[16][64];
        int scope_depth[16], depth = 0, nscope = 0;
        while (fgets(line, sizeof line, fp)) {
            char name[64];
            char *comment = strstr(line, "//");
            if (comment)
                *comment = '\0';
            if (sscanf(line, " package %127[^; ]", package) == 1)
                continue;
            if (sscanf(line, " message %63[A-Za-z0-9_]", name) == 1) {
                char full[512];
                int o = snprintf(full, sizeof full, "%s", package);
                for (int s = 0; s < nscope; s++)
                    o += snprintf(full + o, sizeof full - (size_t)o, ".%s", scope[s]);
                snprintf(full + o, sizeof full - (size_t)o, ".%s", name);
                const ProtobufCMessageDescriptor *d = pbjson_find_descriptor(full);
                if (!d)
                    fail_msg("%s: message %s not found by pbjson_find_descriptor", path, full);
                assert_string_equal(d->name, full);
                checked++;
                if (nscope < 16) {
                    snprintf(scope[nscope], sizeof scope[nscope], "%s", name);
                    scope_depth[nscope++] = depth;
                }
            }
            for (char *c = line; *c; c++) {
                if (*c == '{')
                    depth++;
                else if (*c == '}' && --depth >= 0 && nscope && scope_depth[nscope - 1] == depth)
                    nscope--;
            }
        }
        fclose(fp);
    }
    assert_true(checked > 100);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pbjson_round_trips_a_full_service),
        cmocka_unit_test(test_pbjson_round_trips_a_task),
        cmocka_unit_test(test_pbjson_reads_enum_by_name_and_number),
        cmocka_unit_test(test_pbjson_writes_bytes_as_base64),
        cmocka_unit_test(test_pbjson_rejects_unknown_field_naming_it),
        cmocka_unit_test(test_pbjson_rejects_wrong_type_naming_the_field),
        cmocka_unit_test(test_pbjson_accepts_camel_case_names),
        cmocka_unit_test(test_pbjson_null_means_unset),
        cmocka_unit_test(test_pbjson_emits_defaults_only_when_asked),
        cmocka_unit_test(test_pbjson_repairs_invalid_utf8_on_output),
        cmocka_unit_test(test_pbjson_decodes_a_store_txn),
        cmocka_unit_test(test_pbjson_finds_descriptors_by_full_name),
        cmocka_unit_test(test_pbjson_finds_every_message_of_the_protos),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
