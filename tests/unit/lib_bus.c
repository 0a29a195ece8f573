/* lib/bus: a real server and client over ipc with Curve and the ZAP handler, in one process
 * (the server runs its zloop in an actor thread). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "bus.h"
#include "log.h"

static char state_dir[256];
static shoal_config_t cfg;
static zactor_t *server_actor;
static int counter_calls;
static bus_call_t *parked;

static void echo_handler(void *ctx, bus_call_t *call, const ProtobufCMessage *in) {
    counter_calls++;
    Shoal__Bus__PingResponse out = SHOAL__BUS__PING_RESPONSE__INIT;
    out.kind = "echo";
    out.instance = (char *)bus_call_identity(call);
    out.uptime_ms = (uint64_t)counter_calls;
    bus_reply_ok(call, &out.base);
}

static void fail_handler(void *ctx, bus_call_t *call, const ProtobufCMessage *in) {
    bus_reply_error(call, BUS_INVALID_ARGUMENT, "field x: must be positive (got %d)", -3);
}

static void park_handler(void *ctx, bus_call_t *call, const ProtobufCMessage *in) {
    parked = call; /* answered later by the timer: a deferred reply */
}

static int on_timer(zloop_t *loop, int id, void *arg) {
    if (parked) {
        Shoal__Bus__PingResponse out = SHOAL__BUS__PING_RESPONSE__INIT;
        out.kind = "parked";
        bus_reply_ok(parked, &out.base);
        parked = NULL;
    }
    return 0;
}

static const bus_method_t test_methods[] = {
    {"test.Echo", &shoal__bus__empty__descriptor, &shoal__bus__ping_response__descriptor,
     echo_handler, BUS_ROLES_ALL},
    {"test.Fail", &shoal__bus__empty__descriptor, &shoal__bus__ping_response__descriptor,
     fail_handler, 0},
    {"test.Park", &shoal__bus__empty__descriptor, &shoal__bus__ping_response__descriptor,
     park_handler, 0},
    {"test.AdminOnly", &shoal__bus__empty__descriptor, &shoal__bus__ping_response__descriptor,
     echo_handler, BUS_ROLE_ADMIN},
};

static int on_pipe(zloop_t *loop, zsock_t *pipe, void *arg) {
    char *cmd = zstr_recv(pipe);
    zstr_free(&cmd);
    return -1;
}

static void server_fn(zsock_t *pipe, void *arg) {
    bus_server_t *srv = bus_server_new(&cfg, "store", "test", NULL, NULL);
    assert_non_null(srv);
    bus_server_add(srv, test_methods, 4, NULL);
    zloop_t *loop = zloop_new();
    bus_server_attach(srv, loop);
    zloop_timer(loop, 200, 0, on_timer, NULL);
    zloop_reader(loop, pipe, on_pipe, NULL); /* $TERM on the pipe stops the loop */
    zsock_signal(pipe, 0);
    zloop_start(loop);
    zloop_destroy(&loop);
    bus_server_destroy(&srv);
}

static int setup(void **state) {
    snprintf(state_dir, sizeof state_dir, "/tmp/shoal-test-bus-%d", getpid());
    static const char *const names[] = {"store", "admin", "agent", NULL};
    assert_int_equal(config_init(state_dir, names), 0);
    assert_int_equal(config_load(state_dir, &cfg), 0);
    /* a key that exists but is not authorized: generated outside keys/public */
    zcert_t *rogue = zcert_new();
    char path[512];
    snprintf(path, sizeof path, "%s/keys/private/rogue.key", state_dir);
    zcert_save(rogue, path);
    zcert_destroy(&rogue);
    server_actor = zactor_new(server_fn, NULL);
    return 0;
}

static int teardown(void **state) {
    zactor_destroy(&server_actor);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", state_dir);
    (void)!system(cmd);
    return 0;
}

static bus_client_t *client_as(const char *name, zcert_t **cert) {
    *cert = bus_identity_load(state_dir, name);
    assert_non_null(*cert);
    char ep[512], key[41];
    config_rpc_endpoint(&cfg, "store", ep, sizeof ep);
    assert_int_equal(bus_public_key(state_dir, "store", key), 0);
    bus_client_t *c = bus_client_new(*cert, ep, key);
    assert_non_null(c);
    return c;
}

static void test_bus_call_reaches_handler_with_identity(void **state) {
    zcert_t *cert;
    bus_client_t *c = client_as("admin", &cert);
    Shoal__Bus__Empty in = SHOAL__BUS__EMPTY__INIT;
    Shoal__Bus__PingResponse *out = NULL;
    int rc = bus_client_call(c, "test.Echo", &in.base, &shoal__bus__ping_response__descriptor, 3000,
                             (ProtobufCMessage **)&out);
    assert_int_equal(rc, BUS_OK);
    assert_string_equal(out->kind, "echo");
    assert_string_equal(out->instance, "admin");
    shoal__bus__ping_response__free_unpacked(out, NULL);
    bus_client_destroy(&c);
    zcert_destroy(&cert);
}

static void test_bus_error_code_and_message_reach_client(void **state) {
    zcert_t *cert;
    bus_client_t *c = client_as("admin", &cert);
    Shoal__Bus__Empty in = SHOAL__BUS__EMPTY__INIT;
    ProtobufCMessage *out = NULL;
    int rc = bus_client_call(c, "test.Fail", &in.base, &shoal__bus__ping_response__descriptor, 3000,
                             &out);
    assert_int_equal(rc, BUS_INVALID_ARGUMENT);
    assert_string_equal(bus_client_error(c), "field x: must be positive (got -3)");
    rc = bus_client_call(c, "test.Nope", &in.base, &shoal__bus__ping_response__descriptor, 3000,
                         &out);
    assert_int_equal(rc, BUS_NOT_FOUND);
    bus_client_destroy(&c);
    zcert_destroy(&cert);
}

static void test_bus_roles_restrict_methods(void **state) {
    zcert_t *cert;
    bus_client_t *c = client_as("agent", &cert);
    Shoal__Bus__Empty in = SHOAL__BUS__EMPTY__INIT;
    ProtobufCMessage *out = NULL;
    /* agents may call methods open to all ... */
    assert_int_equal(bus_client_call(c, "test.Echo", &in.base,
                                     &shoal__bus__ping_response__descriptor, 3000, &out),
                     BUS_OK);
    protobuf_c_message_free_unpacked(out, NULL);
    /* ... but not manager-only or admin-only ones */
    assert_int_equal(bus_client_call(c, "test.Fail", &in.base,
                                     &shoal__bus__ping_response__descriptor, 3000, &out),
                     BUS_PERMISSION_DENIED);
    assert_int_equal(bus_client_call(c, "test.AdminOnly", &in.base,
                                     &shoal__bus__ping_response__descriptor, 3000, &out),
                     BUS_PERMISSION_DENIED);
    bus_client_destroy(&c);
    zcert_destroy(&cert);
}

static void test_bus_unknown_key_is_rejected(void **state) {
    zcert_t *cert;
    bus_client_t *c = client_as("rogue", &cert);
    Shoal__Bus__Empty in = SHOAL__BUS__EMPTY__INIT;
    ProtobufCMessage *out = NULL;
    int before = counter_calls;
    int rc = bus_client_call(c, "test.Echo", &in.base, &shoal__bus__ping_response__descriptor, 3000,
                             &out);
    assert_int_equal(rc, -EACCES);
    assert_non_null(strstr(bus_client_error(c), "not authorized"));
    assert_int_equal(counter_calls, before);
    assert_true(bus_auth_rejected_total() >= 1);
    bus_client_destroy(&c);
    zcert_destroy(&cert);
}

static void test_bus_deferred_reply_arrives(void **state) {
    zcert_t *cert;
    bus_client_t *c = client_as("admin", &cert);
    Shoal__Bus__Empty in = SHOAL__BUS__EMPTY__INIT;
    Shoal__Bus__PingResponse *out = NULL;
    bus_client_set_retry(c, 5000);
    int rc = bus_client_call(c, "test.Park", &in.base, &shoal__bus__ping_response__descriptor, 3000,
                             (ProtobufCMessage **)&out);
    assert_int_equal(rc, BUS_OK);
    assert_string_equal(out->kind, "parked");
    shoal__bus__ping_response__free_unpacked(out, NULL);
    bus_client_destroy(&c);
    zcert_destroy(&cert);
}

static void test_bus_describe_lists_methods_with_types(void **state) {
    zcert_t *cert;
    bus_client_t *c = client_as("admin", &cert);
    Shoal__Bus__Empty in = SHOAL__BUS__EMPTY__INIT;
    Shoal__Bus__DescribeResponse *out = NULL;
    int rc =
        bus_client_call(c, "bus.Describe", &in.base, &shoal__bus__describe_response__descriptor,
                        3000, (ProtobufCMessage **)&out);
    assert_int_equal(rc, BUS_OK);
    bool found = false;
    for (size_t i = 0; i < out->n_methods; i++)
        if (!strcmp(out->methods[i]->name, "test.Echo")) {
            found = true;
            assert_string_equal(out->methods[i]->output_type, "shoal.bus.PingResponse");
        }
    assert_true(found);
    assert_true(out->n_methods >= 8);
    shoal__bus__describe_response__free_unpacked(out, NULL);
    bus_client_destroy(&c);
    zcert_destroy(&cert);
}

static void test_bus_malformed_payload_gets_invalid_argument(void **state) {
    zcert_t *cert;
    bus_client_t *c = client_as("admin", &cert);
    uint8_t junk[] = {0xff, 0xff, 0xff, 0xff, 0x0f};
    uint8_t *out = NULL;
    size_t len = 0;
    int rc = bus_client_call_raw(c, "test.Echo", junk, sizeof junk, 3000, &out, &len);
    assert_int_equal(rc, BUS_INVALID_ARGUMENT);
    bus_client_destroy(&c);
    zcert_destroy(&cert);
}

int main(void) {
    log_init("test", LOG_LEVEL_ERR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bus_call_reaches_handler_with_identity),
        cmocka_unit_test(test_bus_error_code_and_message_reach_client),
        cmocka_unit_test(test_bus_roles_restrict_methods),
        cmocka_unit_test(test_bus_unknown_key_is_rejected),
        cmocka_unit_test(test_bus_deferred_reply_arrives),
        cmocka_unit_test(test_bus_describe_lists_methods_with_types),
        cmocka_unit_test(test_bus_malformed_payload_gets_invalid_argument),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
