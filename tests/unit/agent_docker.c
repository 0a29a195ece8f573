/* Unit tests of the agent's Docker Engine client (docker.c) and Docker executor
 * (docker_executor.c) against the real dockerd at /var/run/docker.sock, with the test image
 * from tests/lib/mkimage.sh. Skipped, with the reason printed, when there is no Docker.
 * Every container made here carries shoal.test.suite=agent_docker and is removed by label in
 * teardown (and in group setup, for leftovers of a crashed run). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "../../services/agent/docker.h"
#include "../../services/agent/executor.h"
#include "config.h"
#include "log.h"

#define SOCK        DOCKER_DEFAULT_SOCKET
#define IMAGE       "shoal-test:latest"
#define SUITE_LABEL "shoal.test.suite"
#define SUITE_VALUE "agent_docker"

static bool docker_available;
static char skip_reason[256];

static void remove_suite_containers(void) {
    docker_t *d = docker_new(SOCK);
    if (!d)
        return;
    docker_container_t *list = NULL;
    size_t n = 0;
    char err[256];
    const char *label = SUITE_LABEL "=" SUITE_VALUE;
    if (docker_container_list(d, &label, 1, &list, &n, err, sizeof err) == 0)
        for (size_t i = 0; i < n; i++)
            docker_container_remove(d, list[i].id, true, err, sizeof err);
    free(list);
    docker_destroy(&d);
}

static int group_setup(void **state) {
    if (access(SOCK, F_OK) < 0) {
        snprintf(skip_reason, sizeof skip_reason, "%s is absent", SOCK);
        return 0;
    }
    if (system("bash tests/lib/mkimage.sh >/dev/null") != 0) {
        snprintf(skip_reason, sizeof skip_reason, "tests/lib/mkimage.sh could not build %s", IMAGE);
        return 0;
    }
    docker_t *d = docker_new(SOCK);
    char err[256] = "";
    if (!d || docker_ping(d, err, sizeof err) < 0) {
        snprintf(skip_reason, sizeof skip_reason, "dockerd does not answer: %s", err);
        docker_destroy(&d);
        return 0;
    }
    docker_destroy(&d);
    docker_available = true;
    remove_suite_containers();
    return 0;
}

static int teardown(void **state) {
    if (docker_available)
        remove_suite_containers();
    return 0;
}

#define REQUIRE_DOCKER()                                                                           \
    do {                                                                                           \
        if (!docker_available) {                                                                   \
            printf("skipped: %s\n", skip_reason);                                                  \
            skip();                                                                                \
        }                                                                                          \
    } while (0)

/* ---- a task ------------------------------------------------------------------------------ */

typedef struct test_task {
    Shoal__Task task;
    Shoal__Meta meta;
    Shoal__TaskSpec spec;
    Shoal__ContainerSpec c;
    Shoal__ResourceRequirements res;
    Shoal__Resources limits;
    Shoal__Label label;
    Shoal__Label *labels[1];
    char id[32];
    char *command[4];
    char *args[4];
    char *env[2];
} test_task_t;

static void task_init(test_task_t *t, const char *const *command, const char *const *args) {
    memset(t, 0, sizeof *t);
    shoal__task__init(&t->task);
    shoal__meta__init(&t->meta);
    shoal__task_spec__init(&t->spec);
    shoal__container_spec__init(&t->c);
    shoal__resource_requirements__init(&t->res);
    shoal__resources__init(&t->limits);
    shoal__label__init(&t->label);
    char rid[26];
    id_random(rid);
    snprintf(t->id, sizeof t->id, "%s", rid);
    t->meta.id = t->id;
    t->task.meta = &t->meta;
    t->task.spec = &t->spec;
    t->task.service_name = (char *)"agenttest";
    t->task.service_id = (char *)"svc1";
    t->task.node_id = (char *)"node1";
    t->task.slot = 1;
    t->task.desired_state = SHOAL__TASK_STATE__RUNNING;
    t->spec.container = &t->c;
    t->spec.resources = &t->res;
    t->res.limits = &t->limits;
    t->limits.memory_bytes = 64 << 20;
    t->c.image = (char *)IMAGE;
    t->c.init = true;
    t->c.stop_grace_period_ms = 1000;
    t->label.key = (char *)SUITE_LABEL;
    t->label.value = (char *)SUITE_VALUE;
    t->labels[0] = &t->label;
    t->c.labels = t->labels;
    t->c.n_labels = 1;
    t->env[0] = (char *)"GREETING=hello";
    t->c.env = t->env;
    t->c.n_env = 1;
    for (size_t i = 0; command && command[i] && i < 3; i++)
        t->command[t->c.n_command++] = (char *)command[i];
    t->c.command = t->command;
    for (size_t i = 0; args && args[i] && i < 3; i++)
        t->args[t->c.n_args++] = (char *)args[i];
    t->c.args = t->args;
}

static executor_t *open_executor(void) {
    executor_factory_t f;
    executor_docker_factory(&f, NULL);
    executor_t *ex = f.open(&f);
    assert_non_null(ex);
    return ex;
}

/* ---- tests ------------------------------------------------------------------------------- */

static void test_docker_config_maps_command_to_entrypoint_and_args_to_cmd(void **state) {
    const char *cmd[] = {"sh", "-c", NULL};
    const char *args[] = {"echo hi", NULL};
    test_task_t t;
    task_init(&t, cmd, args);
    t.limits.nano_cpus = 500000000;
    char name[256];
    json_t *cfg = executor_docker_config(&t.task, name, sizeof name);
    assert_non_null(cfg);
    char want_name[128];
    snprintf(want_name, sizeof want_name, "agenttest.1.%s", t.id);
    assert_string_equal(name, want_name);
    json_t *ep = json_object_get(cfg, "Entrypoint");
    assert_int_equal(json_array_size(ep), 2);
    assert_string_equal(json_string_value(json_array_get(ep, 0)), "sh");
    assert_string_equal(json_string_value(json_array_get(json_object_get(cfg, "Cmd"), 0)),
                        "echo hi");
    json_t *labels = json_object_get(cfg, "Labels");
    assert_string_equal(json_string_value(json_object_get(labels, "shoal.task.id")), t.id);
    assert_string_equal(json_string_value(json_object_get(labels, "shoal.service.name")),
                        "agenttest");
    assert_string_equal(json_string_value(json_object_get(labels, "shoal.service.id")), "svc1");
    assert_string_equal(json_string_value(json_object_get(labels, "shoal.node.id")), "node1");
    assert_string_equal(json_string_value(json_object_get(labels, "shoal.slot")), "1");
    assert_int_equal(json_integer_value(json_object_get(cfg, "StopTimeout")), 1);
    json_t *host = json_object_get(cfg, "HostConfig");
    assert_true(json_is_true(json_object_get(host, "Init")));
    assert_int_equal(json_integer_value(json_object_get(host, "Memory")), 64 << 20);
    assert_int_equal(json_integer_value(json_object_get(host, "NanoCpus")), 500000000);
    assert_string_equal(json_string_value(json_object_get(host, "NetworkMode")), "shoal");
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(host, "RestartPolicy"), "Name")), "no");
    json_decref(cfg);

    /* no command: the image's entrypoint stays (no Entrypoint key); global tasks use the node */
    task_init(&t, NULL, args);
    t.task.slot = 0;
    cfg = executor_docker_config(&t.task, name, sizeof name);
    assert_null(json_object_get(cfg, "Entrypoint"));
    assert_non_null(json_object_get(cfg, "Cmd"));
    snprintf(want_name, sizeof want_name, "agenttest.node1.%s", t.id);
    assert_string_equal(name, want_name);
    json_decref(cfg);
}

static void test_docker_config_passes_the_spec_healthcheck_in_nanoseconds(void **state) {
    test_task_t t;
    task_init(&t, NULL, NULL);
    Shoal__HealthConfig hc = SHOAL__HEALTH_CONFIG__INIT;
    char *test[] = {(char *)"CMD-SHELL", (char *)"test -f /tmp/ok"};
    hc.test = test;
    hc.n_test = 2;
    hc.interval_ms = 1000;
    hc.timeout_ms = 500;
    hc.start_period_ms = 2000;
    hc.retries = 2;
    t.c.healthcheck = &hc;
    char name[256];
    json_t *cfg = executor_docker_config(&t.task, name, sizeof name);
    json_t *h = json_object_get(cfg, "Healthcheck");
    assert_non_null(h);
    assert_string_equal(json_string_value(json_array_get(json_object_get(h, "Test"), 1)),
                        "test -f /tmp/ok");
    assert_int_equal(json_integer_value(json_object_get(h, "Interval")), 1000000000LL);
    assert_int_equal(json_integer_value(json_object_get(h, "Timeout")), 500000000LL);
    assert_int_equal(json_integer_value(json_object_get(h, "StartPeriod")), 2000000000LL);
    assert_int_equal(json_integer_value(json_object_get(h, "Retries")), 2);
    json_decref(cfg);
}

static void test_docker_parses_health_status_events_and_inspect_health(void **state) {
    const char *healthy =
        "{\"status\":\"health_status: healthy\",\"id\":\"abc\",\"Type\":\"container\","
        "\"Action\":\"health_status: healthy\",\"Actor\":{\"ID\":\"abc\",\"Attributes\":"
        "{\"shoal.task.id\":\"t1\"}}}";
    docker_event_t ev;
    assert_int_equal(docker_parse_event(healthy, strlen(healthy), &ev), 0);
    assert_int_equal(ev.kind, DOCKER_EVENT_HEALTHY);
    assert_string_equal(ev.task_id, "t1");
    assert_string_equal(docker_event_kind_name(ev.kind), "healthy");
    const char *unhealthy =
        "{\"Type\":\"container\",\"Action\":\"health_status: unhealthy\",\"Actor\":{\"ID\":"
        "\"abc\",\"Attributes\":{\"shoal.task.id\":\"t1\"}}}";
    assert_int_equal(docker_parse_event(unhealthy, strlen(unhealthy), &ev), 0);
    assert_int_equal(ev.kind, DOCKER_EVENT_UNHEALTHY);
    assert_string_equal(docker_event_kind_name(ev.kind), "unhealthy");
    /* a health check's exec is not an event the agent acts on */
    const char *exec = "{\"Type\":\"container\",\"Action\":\"exec_start: /bin/sh -c true\","
                       "\"Actor\":{\"ID\":\"abc\",\"Attributes\":{\"shoal.task.id\":\"t1\"}}}";
    assert_int_equal(docker_parse_event(exec, strlen(exec), &ev), -ENOENT);
    const char *inspect = "{\"Id\":\"abc\",\"State\":{\"Status\":\"running\",\"Running\":true,"
                          "\"Health\":{\"Status\":\"unhealthy\",\"FailingStreak\":2}}}";
    docker_container_t c;
    assert_int_equal(docker_parse_inspect(inspect, strlen(inspect), "shoal", &c), 0);
    assert_string_equal(c.health, "unhealthy");
    const char *plain = "{\"Id\":\"abc\",\"State\":{\"Status\":\"running\"}}";
    assert_int_equal(docker_parse_inspect(plain, strlen(plain), "shoal", &c), 0);
    assert_string_equal(c.health, "");
}

static void test_docker_ping_discovers_api_version(void **state) {
    REQUIRE_DOCKER();
    docker_t *d = docker_new(SOCK);
    char err[256];
    assert_int_equal(docker_ping(d, err, sizeof err), 0);
    assert_true(strncmp(docker_api_version(d), "1.", 2) == 0);
    docker_info_t info;
    assert_int_equal(docker_info(d, &info, err, sizeof err), 0);
    assert_true(info.ncpu > 0);
    assert_true(info.mem_total > 0);
    assert_true(info.server_version[0] != '\0');
    assert_string_equal(info.os_type, "linux");
    docker_info_clear(&info);
    docker_destroy(&d);
}

static void test_docker_executor_describes_node_from_engine_info(void **state) {
    REQUIRE_DOCKER();
    executor_t *ex = open_executor();
    Shoal__NodeDescription *desc = NULL;
    char err[256];
    assert_int_equal(ex->ops->describe(ex, &desc, err, sizeof err), 0);
    assert_true(desc->hostname[0] != '\0');
    assert_string_equal(desc->platform->os, "linux");
    assert_true(desc->resources->nano_cpus >= 1000000000LL);
    assert_true(desc->resources->memory_bytes > 0);
    assert_true(desc->engine->engine_version[0] != '\0');
    assert_true(strncmp(desc->engine->api_version, "1.", 2) == 0);
    protobuf_c_message_free_unpacked(&desc->base, NULL);
    executor_close(&ex);
}

static void test_docker_container_lifecycle_with_shoal_labels(void **state) {
    REQUIRE_DOCKER();
    const char *args[] = {"sleep", "300", NULL};
    test_task_t t;
    task_init(&t, NULL, args);
    executor_t *ex = open_executor();
    char err[512] = "", id[EXECUTOR_ID_MAX] = "";
    assert_int_equal(ex->ops->prepare(ex, &t.task, err, sizeof err), 0);
    assert_int_equal(ex->ops->create(ex, &t.task, id, sizeof id, err, sizeof err), 0);
    assert_int_equal(strlen(id), 64);
    /* creating again for the same task returns the same container */
    char again[EXECUTOR_ID_MAX];
    assert_int_equal(ex->ops->create(ex, &t.task, again, sizeof again, err, sizeof err), 0);
    assert_string_equal(again, id);

    executor_container_t c;
    assert_int_equal(ex->ops->inspect(ex, id, &c, err, sizeof err), 0);
    assert_string_equal(c.status, "created");
    assert_string_equal(c.task_id, t.id);
    assert_false(c.running);

    assert_int_equal(ex->ops->start(ex, id, err, sizeof err), 0);
    assert_int_equal(ex->ops->start(ex, id, err, sizeof err), 0); /* already started: fine */
    assert_int_equal(ex->ops->inspect(ex, id, &c, err, sizeof err), 0);
    assert_true(c.running);
    assert_string_equal(c.status, "running");
    assert_true(c.pid > 0);
    assert_true(c.ip[0] != '\0'); /* on the shoal network */

    /* list by label finds it */
    executor_container_t *list = NULL;
    size_t n = 0;
    assert_int_equal(ex->ops->list(ex, "node1", &list, &n, err, sizeof err), 0);
    bool found = false;
    for (size_t i = 0; i < n; i++) {
        assert_string_equal(list[i].node_id, "node1");
        if (strcmp(list[i].id, id) == 0) {
            found = true;
            assert_string_equal(list[i].task_id, t.id);
            assert_true(list[i].running);
        }
    }
    free(list);
    assert_true(found);
    /* another node's listing does not include it */
    assert_int_equal(ex->ops->list(ex, "node2", &list, &n, err, sizeof err), 0);
    for (size_t i = 0; i < n; i++)
        assert_string_not_equal(list[i].id, id);
    free(list);

    int64_t t0 = clock_mono_ms();
    assert_int_equal(ex->ops->stop(ex, id, 1, err, sizeof err), 0);
    assert_true(clock_mono_ms() - t0 < 5000); /* Init=true: sleep gets the SIGTERM */
    assert_int_equal(ex->ops->inspect(ex, id, &c, err, sizeof err), 0);
    assert_false(c.running);
    assert_string_equal(c.status, "exited");
    assert_int_equal(ex->ops->stop(ex, id, 1, err, sizeof err), 0); /* stopped already: fine */

    assert_int_equal(ex->ops->remove(ex, id, err, sizeof err), 0);
    assert_int_equal(ex->ops->inspect(ex, id, &c, err, sizeof err), -ENOENT);
    assert_non_null(strstr(err, "No such container"));
    assert_int_equal(ex->ops->remove(ex, id, err, sizeof err), -ENOENT);
    executor_close(&ex);
}

static void test_docker_events_follower_reports_die_with_exit_code(void **state) {
    REQUIRE_DOCKER();
    zactor_t *events = docker_events_new(SOCK);
    assert_non_null(events);
    zpoller_t *poller = zpoller_new(zactor_sock(events), NULL);
    executor_event_t ev;
    /* the follower says RESYNC once its stream is up */
    assert_non_null(zpoller_wait(poller, 10000));
    assert_int_equal(executor_event_recv(zactor_sock(events), &ev), 0);
    assert_int_equal(ev.kind, EXECUTOR_EVENT_RESYNC);

    const char *cmd[] = {"sh", "-c", NULL};
    const char *args[] = {"exit 3", NULL};
    test_task_t t;
    task_init(&t, cmd, args);
    executor_t *ex = open_executor();
    char err[512], id[EXECUTOR_ID_MAX];
    assert_int_equal(ex->ops->prepare(ex, &t.task, err, sizeof err), 0);
    assert_int_equal(ex->ops->create(ex, &t.task, id, sizeof id, err, sizeof err), 0);
    assert_int_equal(ex->ops->start(ex, id, err, sizeof err), 0);

    bool started = false, died = false;
    int64_t deadline = clock_mono_ms() + 15000;
    while (!died && clock_mono_ms() < deadline) {
        if (!zpoller_wait(poller, 1000))
            continue;
        assert_int_equal(executor_event_recv(zactor_sock(events), &ev), 0);
        if (strcmp(ev.task_id, t.id) != 0)
            continue;
        assert_string_equal(ev.container_id, id);
        if (ev.kind == EXECUTOR_EVENT_START)
            started = true;
        if (ev.kind == EXECUTOR_EVENT_DIE) {
            died = true;
            assert_int_equal(ev.exit_code, 3);
        }
    }
    assert_true(started);
    assert_true(died);
    executor_container_t c;
    assert_int_equal(ex->ops->inspect(ex, id, &c, err, sizeof err), 0);
    assert_int_equal(c.exit_code, 3);

    /* removing it yields destroy */
    assert_int_equal(ex->ops->remove(ex, id, err, sizeof err), 0);
    bool destroyed = false;
    deadline = clock_mono_ms() + 10000;
    while (!destroyed && clock_mono_ms() < deadline) {
        if (zpoller_wait(poller, 1000) && executor_event_recv(zactor_sock(events), &ev) == 0 &&
            strcmp(ev.task_id, t.id) == 0 && ev.kind == EXECUTOR_EVENT_DESTROY)
            destroyed = true;
    }
    assert_true(destroyed);
    zpoller_destroy(&poller);
    int64_t t0 = clock_mono_ms();
    zactor_destroy(&events);
    assert_true(clock_mono_ms() - t0 < 2000); /* $TERM is seen while streaming */
    executor_close(&ex);
}

static void test_docker_missing_image_error_carries_engine_message(void **state) {
    REQUIRE_DOCKER();
    docker_t *d = docker_new(SOCK);
    char err[512] = "";
    assert_int_equal(docker_image_inspect(d, "shoal-missing-image:nope", err, sizeof err), -ENOENT);
    assert_non_null(strcasestr(err, "no such image"));

    err[0] = '\0';
    int r = docker_image_pull(d, "shoal-missing-image:nope", err, sizeof err);
    assert_true(r < 0);
    /* the Engine's own words (registry unreachable, or repository does not exist) */
    assert_true(strlen(err) > 10);
    assert_null(strstr(err, "answered HTTP"));
    docker_destroy(&d);

    /* through the executor: pull policy NEVER never pulls and says why */
    test_task_t t;
    task_init(&t, NULL, NULL);
    t.c.image = (char *)"shoal-missing-image:nope";
    t.c.pull = SHOAL__CONTAINER_SPEC__PULL_POLICY__NEVER;
    executor_t *ex = open_executor();
    assert_int_equal(ex->ops->prepare(ex, &t.task, err, sizeof err), -ENOENT);
    assert_non_null(strcasestr(err, "no such image"));
    /* and creating from a missing image is refused by the Engine with its message */
    char id[EXECUTOR_ID_MAX];
    assert_int_equal(ex->ops->create(ex, &t.task, id, sizeof id, err, sizeof err), -ENOENT);
    assert_non_null(strcasestr(err, "no such image"));
    /* default policy: tries to pull, fails with the Engine's message */
    t.c.pull = SHOAL__CONTAINER_SPEC__PULL_POLICY__MISSING;
    r = ex->ops->prepare(ex, &t.task, err, sizeof err);
    assert_true(r < 0 && r != -ENOENT);
    assert_true(strlen(err) > 10);
    executor_close(&ex);
}

static void test_docker_unreachable_socket_is_refused_with_clear_message(void **state) {
    docker_t *d = docker_new("/tmp/shoal-agent-no-such.sock");
    char err[512];
    assert_int_equal(docker_ping(d, err, sizeof err), -ECONNREFUSED);
    assert_non_null(strstr(err, "/tmp/shoal-agent-no-such.sock"));
    docker_destroy(&d);
}

static void test_docker_rejects_references_that_would_change_the_path(void **state) {
    docker_t *d = docker_new(SOCK);
    char err[256];
    docker_container_t c;
    assert_int_equal(docker_container_inspect(d, "../../info", NULL, &c, err, sizeof err), -EINVAL);
    assert_int_equal(docker_container_stop(d, "a?b", 1, err, sizeof err), -EINVAL);
    assert_int_equal(docker_image_inspect(d, "x/../../y", err, sizeof err), -EINVAL);
    docker_destroy(&d);
}

int main(void) {
    log_init("agent-test", LOG_LEVEL_ERR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_docker_config_maps_command_to_entrypoint_and_args_to_cmd),
        cmocka_unit_test(test_docker_config_passes_the_spec_healthcheck_in_nanoseconds),
        cmocka_unit_test(test_docker_parses_health_status_events_and_inspect_health),
        cmocka_unit_test(test_docker_unreachable_socket_is_refused_with_clear_message),
        cmocka_unit_test(test_docker_rejects_references_that_would_change_the_path),
        cmocka_unit_test_teardown(test_docker_ping_discovers_api_version, teardown),
        cmocka_unit_test_teardown(test_docker_executor_describes_node_from_engine_info, teardown),
        cmocka_unit_test_teardown(test_docker_container_lifecycle_with_shoal_labels, teardown),
        cmocka_unit_test_teardown(test_docker_events_follower_reports_die_with_exit_code, teardown),
        cmocka_unit_test_teardown(test_docker_missing_image_error_carries_engine_message, teardown),
    };
    int rc = cmocka_run_group_tests(tests, group_setup, NULL);
    if (!docker_available)
        printf("agent_docker: Docker tests skipped: %s\n", skip_reason);
    remove_suite_containers();
    return rc;
}
