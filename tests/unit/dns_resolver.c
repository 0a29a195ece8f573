/* dns_resolver — shoal-dns's name table (services/dns/resolver.c) driven by store events, as
 * the watch delivers them: protobuf-encoded shoal.Service and shoal.Task values. */
#include <arpa/inet.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "../../services/dns/resolver.h"
#include "objects.pb-c.h"

static uint32_t ip(const char *s) {
    struct in_addr a;
    assert_int_equal(inet_pton(AF_INET, s, &a), 1);
    return a.s_addr;
}

static int apply_msg(resolver_t *r, const char *key, const ProtobufCMessage *msg) {
    size_t len = protobuf_c_message_get_packed_size(msg);
    uint8_t *buf = malloc(len ? len : 1);
    protobuf_c_message_pack(msg, buf);
    int rc = resolver_apply(r, key, false, buf, len);
    free(buf);
    return rc;
}

static void put_service_ex(resolver_t *r, const char *id, const char *name, bool pending_delete) {
    Shoal__Annotations ann = SHOAL__ANNOTATIONS__INIT;
    Shoal__ServiceSpec spec = SHOAL__SERVICE_SPEC__INIT;
    Shoal__Service svc = SHOAL__SERVICE__INIT;
    ann.name = (char *)name;
    spec.annotations = &ann;
    svc.spec = &spec;
    svc.pending_delete = pending_delete;
    char key[128];
    snprintf(key, sizeof key, "/services/%s", id);
    assert_int_equal(apply_msg(r, key, &svc.base), 0);
}

static void put_service(resolver_t *r, const char *id, const char *name) {
    put_service_ex(r, id, name, false);
}

/* A task of `service_id` in `state` (desired RUNNING) attached to `network` with `addr`. */
static void put_task_ex(resolver_t *r, const char *id, const char *service_id, int state,
                        int desired, const char *network, const char *addr) {
    Shoal__TaskStatus st = SHOAL__TASK_STATUS__INIT;
    Shoal__NetworkAttachment na = SHOAL__NETWORK_ATTACHMENT__INIT;
    Shoal__NetworkAttachment *nas[1] = {&na};
    char *addrs[1] = {(char *)addr};
    Shoal__Task t = SHOAL__TASK__INIT;
    st.state = state;
    t.status = &st;
    t.desired_state = desired;
    t.service_id = (char *)service_id;
    na.network = (char *)network;
    na.addresses = addrs;
    na.n_addresses = addr ? 1 : 0;
    t.networks = nas;
    t.n_networks = 1;
    char key[128];
    snprintf(key, sizeof key, "/tasks/%s", id);
    assert_int_equal(apply_msg(r, key, &t.base), 0);
}

static void put_task(resolver_t *r, const char *id, const char *service_id, int state,
                     const char *addr) {
    put_task_ex(r, id, service_id, state, SHOAL__TASK_STATE__RUNNING, "shoal", addr);
}

static void del(resolver_t *r, const char *key) {
    assert_int_equal(resolver_apply(r, key, true, NULL, 0), 0);
}

/* The addresses of `name`, sorted, as a "a,b,c" string; "ENOENT" when not a cluster name. */
static const char *lookup(resolver_t *r, const char *name) {
    static char out[1024];
    uint32_t addrs[64];
    size_t n = 0;
    if (resolver_lookup(r, name, addrs, 64, &n) < 0)
        return "ENOENT";
    assert_true(n <= 64);
    for (size_t i = 1; i < n; i++) /* insertion sort, host order */
        for (size_t j = i; j > 0 && ntohl(addrs[j - 1]) > ntohl(addrs[j]); j--) {
            uint32_t t = addrs[j];
            addrs[j] = addrs[j - 1];
            addrs[j - 1] = t;
        }
    out[0] = '\0';
    for (size_t i = 0; i < n; i++) {
        char buf[16];
        inet_ntop(AF_INET, &addrs[i], buf, sizeof buf);
        strcat(out, i ? "," : "");
        strcat(out, buf);
    }
    return out;
}

static int setup(void **state) {
    *state = resolver_new("shoal");
    return *state ? 0 : -1;
}

static int teardown(void **state) {
    resolver_t *r = *state;
    resolver_destroy(&r);
    assert_null(r);
    return 0;
}

static void test_running_task_ip_appears(void **state) {
    resolver_t *r = *state;
    put_service(r, "s1", "web");
    assert_string_equal(lookup(r, "web"), "");
    put_task(r, "t1", "s1", SHOAL__TASK_STATE__STARTING, "10.0.0.2");
    assert_string_equal(lookup(r, "web"), ""); /* not running yet */
    put_task(r, "t1", "s1", SHOAL__TASK_STATE__RUNNING, "10.0.0.2");
    assert_string_equal(lookup(r, "web"), "10.0.0.2");
    put_task(r, "t2", "s1", SHOAL__TASK_STATE__RUNNING, "10.0.0.3");
    assert_string_equal(lookup(r, "web"), "10.0.0.2,10.0.0.3");
    assert_int_equal(resolver_task_count(r), 2);
    assert_int_equal(resolver_service_count(r), 1);
    /* a status update that changes nothing else keeps one entry, not two */
    put_task(r, "t2", "s1", SHOAL__TASK_STATE__RUNNING, "10.0.0.3");
    assert_string_equal(lookup(r, "web"), "10.0.0.2,10.0.0.3");
    assert_int_equal(resolver_task_count(r), 2);
    /* an address change replaces the old address */
    put_task(r, "t2", "s1", SHOAL__TASK_STATE__RUNNING, "10.0.0.9");
    assert_string_equal(lookup(r, "web"), "10.0.0.2,10.0.0.9");
}

static void test_stopped_or_deleted_task_disappears(void **state) {
    resolver_t *r = *state;
    put_service(r, "s1", "web");
    put_task(r, "t1", "s1", SHOAL__TASK_STATE__RUNNING, "10.0.0.2");
    put_task(r, "t2", "s1", SHOAL__TASK_STATE__RUNNING, "10.0.0.3");
    put_task(r, "t3", "s1", SHOAL__TASK_STATE__RUNNING, "10.0.0.4");
    put_task(r, "t4", "s1", SHOAL__TASK_STATE__RUNNING, "10.0.0.5");
    put_task(r, "t1", "s1", SHOAL__TASK_STATE__SHUTDOWN, "10.0.0.2");
    assert_string_equal(lookup(r, "web"), "10.0.0.3,10.0.0.4,10.0.0.5");
    put_task(r, "t2", "s1", SHOAL__TASK_STATE__FAILED, "10.0.0.3");
    assert_string_equal(lookup(r, "web"), "10.0.0.4,10.0.0.5");
    /* still running, but the orchestrator is stopping it: leaves DNS first */
    put_task_ex(r, "t3", "s1", SHOAL__TASK_STATE__RUNNING, SHOAL__TASK_STATE__SHUTDOWN, "shoal",
                "10.0.0.4");
    assert_string_equal(lookup(r, "web"), "10.0.0.5");
    del(r, "/tasks/t4");
    assert_string_equal(lookup(r, "web"), "");
    assert_int_equal(resolver_task_count(r), 0);
    del(r, "/tasks/never-seen"); /* harmless */
    assert_string_equal(lookup(r, "web"), "");
}

static void test_service_removal_makes_the_name_unknown(void **state) {
    resolver_t *r = *state;
    put_service(r, "s1", "web");
    put_task(r, "t1", "s1", SHOAL__TASK_STATE__RUNNING, "10.0.0.2");
    del(r, "/services/s1");
    assert_string_equal(lookup(r, "web"), "ENOENT");
    assert_string_equal(lookup(r, "tasks.web"), "ENOENT");
    assert_int_equal(resolver_service_count(r), 0);
    /* tasks are kept by service id: the service coming back (re-list order) answers again */
    put_service(r, "s1", "web");
    assert_string_equal(lookup(r, "web"), "10.0.0.2");
    /* a service being deleted stops resolving at once */
    put_service_ex(r, "s1", "web", true);
    assert_string_equal(lookup(r, "web"), "ENOENT");
}

static void test_names_are_case_insensitive_with_optional_trailing_dot(void **state) {
    resolver_t *r = *state;
    put_service(r, "s1", "MyWeb");
    put_task(r, "t1", "s1", SHOAL__TASK_STATE__RUNNING, "10.0.0.2");
    assert_string_equal(lookup(r, "myweb"), "10.0.0.2");
    assert_string_equal(lookup(r, "MYWEB."), "10.0.0.2");
    assert_string_equal(lookup(r, "mYwEb"), "10.0.0.2");
    assert_string_equal(lookup(r, "myweb.."), "ENOENT");
    assert_string_equal(lookup(r, "myweb2"), "ENOENT");
    assert_string_equal(lookup(r, "."), "ENOENT");
    assert_string_equal(lookup(r, ""), "ENOENT");
}

static void test_tasks_prefix_lists_the_task_addresses(void **state) {
    resolver_t *r = *state;
    put_service(r, "s1", "db");
    put_task(r, "t1", "s1", SHOAL__TASK_STATE__RUNNING, "10.0.1.1");
    put_task(r, "t2", "s1", SHOAL__TASK_STATE__RUNNING, "10.0.1.2");
    assert_string_equal(lookup(r, "tasks.db"), "10.0.1.1,10.0.1.2");
    assert_string_equal(lookup(r, "TASKS.DB."), "10.0.1.1,10.0.1.2");
    assert_string_equal(lookup(r, "tasks."), "ENOENT");
    assert_string_equal(lookup(r, "tasks.other"), "ENOENT");
}

static void test_tasks_of_other_services_and_networks_are_kept_apart(void **state) {
    resolver_t *r = *state;
    put_service(r, "s1", "web");
    put_service(r, "s2", "api");
    put_task(r, "t1", "s1", SHOAL__TASK_STATE__RUNNING, "10.0.0.2/24"); /* CIDR form */
    put_task(r, "t2", "s2", SHOAL__TASK_STATE__RUNNING, "10.0.0.3");
    put_task_ex(r, "t3", "s1", SHOAL__TASK_STATE__RUNNING, SHOAL__TASK_STATE__RUNNING, "ingress",
                "10.255.0.9");
    put_task(r, "t4", "s1", SHOAL__TASK_STATE__RUNNING, "fd00::5"); /* no IPv4: no A record */
    put_task(r, "t5", "s1", SHOAL__TASK_STATE__RUNNING, NULL);
    assert_string_equal(lookup(r, "web"), "10.0.0.2");
    assert_string_equal(lookup(r, "api"), "10.0.0.3");
    assert_int_equal(resolver_task_count(r), 2);
    /* a task arriving before its service is answered once the service appears */
    put_task(r, "t6", "s3", SHOAL__TASK_STATE__RUNNING, "10.0.0.7");
    assert_string_equal(lookup(r, "late"), "ENOENT");
    put_service(r, "s3", "late");
    assert_string_equal(lookup(r, "late"), "10.0.0.7");
}

static void test_rename_and_duplicate_names(void **state) {
    resolver_t *r = *state;
    put_service(r, "s1", "web");
    put_task(r, "t1", "s1", SHOAL__TASK_STATE__RUNNING, "10.0.0.2");
    put_service(r, "s1", "www");
    assert_string_equal(lookup(r, "web"), "ENOENT");
    assert_string_equal(lookup(r, "www"), "10.0.0.2");
    /* a second service with a taken name waits for the first to go */
    put_service(r, "s2", "www");
    put_task(r, "t2", "s2", SHOAL__TASK_STATE__RUNNING, "10.0.0.3");
    assert_string_equal(lookup(r, "www"), "10.0.0.2");
    del(r, "/services/s1");
    assert_string_equal(lookup(r, "www"), "10.0.0.3");
    assert_int_equal(resolver_service_count(r), 1);
}

static void test_garbage_values_and_other_keys(void **state) {
    resolver_t *r = *state;
    put_service(r, "s1", "web");
    put_task(r, "t1", "s1", SHOAL__TASK_STATE__RUNNING, "10.0.0.2");
    static const uint8_t junk[] = {0xff, 0xff, 0xff, 0xff, 0x0f};
    assert_int_equal(resolver_apply(r, "/tasks/t1", false, junk, sizeof junk), -EINVAL);
    assert_string_equal(lookup(r, "web"), ""); /* undecodable task: dropped */
    assert_int_equal(resolver_apply(r, "/services/s1", false, junk, sizeof junk), -EINVAL);
    assert_string_equal(lookup(r, "web"), "ENOENT");
    /* keys outside /services/<id> and /tasks/<id> change nothing */
    put_service(r, "s1", "web");
    assert_int_equal(resolver_apply(r, "/nodes/n1", false, junk, sizeof junk), 0);
    assert_int_equal(resolver_apply(r, "/services/", false, junk, sizeof junk), 0);
    assert_int_equal(resolver_apply(r, "/services/a/b", false, junk, sizeof junk), 0);
    assert_int_equal(resolver_apply(r, "/tasksx/t", false, junk, sizeof junk), 0);
    assert_int_equal(resolver_apply(r, NULL, false, NULL, 0), 0);
    assert_string_equal(lookup(r, "web"), "");
    assert_int_equal(resolver_service_count(r), 1);
}

static void test_clear_forgets_everything(void **state) {
    resolver_t *r = *state;
    put_service(r, "s1", "web");
    put_task(r, "t1", "s1", SHOAL__TASK_STATE__RUNNING, "10.0.0.2");
    resolver_clear(r);
    assert_string_equal(lookup(r, "web"), "ENOENT");
    assert_int_equal(resolver_task_count(r), 0);
    put_service(r, "s1", "web");
    assert_string_equal(lookup(r, "web"), "");
}

static void test_lookup_reports_more_addresses_than_fit(void **state) {
    resolver_t *r = *state;
    put_service(r, "s1", "big");
    for (int i = 0; i < 100; i++) {
        char id[16], addr[32];
        snprintf(id, sizeof id, "t%d", i);
        snprintf(addr, sizeof addr, "10.1.0.%d", i + 1);
        put_task(r, id, "s1", SHOAL__TASK_STATE__RUNNING, addr);
    }
    uint32_t addrs[10];
    size_t n = 0;
    assert_int_equal(resolver_lookup(r, "big", addrs, 10, &n), 0);
    assert_int_equal(n, 100);
    for (int i = 0; i < 10; i++)
        assert_int_equal(ntohl(addrs[i]) >> 8, ntohl(ip("10.1.0.0")) >> 8);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_running_task_ip_appears, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stopped_or_deleted_task_disappears, setup, teardown),
        cmocka_unit_test_setup_teardown(test_service_removal_makes_the_name_unknown, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_names_are_case_insensitive_with_optional_trailing_dot,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_tasks_prefix_lists_the_task_addresses, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_tasks_of_other_services_and_networks_are_kept_apart,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_rename_and_duplicate_names, setup, teardown),
        cmocka_unit_test_setup_teardown(test_garbage_values_and_other_keys, setup, teardown),
        cmocka_unit_test_setup_teardown(test_clear_forgets_everything, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lookup_reports_more_addresses_than_fit, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
