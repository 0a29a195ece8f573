/* Unit tests of the agent's assignments long-poller (services/agent/session.c) against a real
 * lib/bus server playing the dispatcher (in an actor thread, over ipc with Curve): it parks
 * dispatcher.Assignments until the set's version differs from the agent's or the poll times out,
 * and refuses the session "stale" with FAILED_PRECONDITION, like shoal-dispatcher. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "../../services/agent/session.h"
#include "bus.h"
#include "dispatcher.pb-c.h"
#include "log.h"

static char state_dir[256];
static shoal_config_t cfg;
static zactor_t *server;

/* ---- the fake dispatcher (server thread only) ---------------------------------------------- */

static uint64_t version = 1;
static bus_call_t *parked;
static uint64_t parked_known;
static int64_t parked_until;
static int calls; /* Assignments requests seen */

static void reply_set(bus_call_t *call) {
    Shoal__Task task = SHOAL__TASK__INIT;
    Shoal__Meta meta = SHOAL__META__INIT;
    char id[32];
    snprintf(id, sizeof id, "task-v%llu", (unsigned long long)version);
    meta.id = id;
    task.meta = &meta;
    Shoal__Task *tasks[] = {&task};
    Shoal__Dispatcher__AssignmentsResponse out = SHOAL__DISPATCHER__ASSIGNMENTS_RESPONSE__INIT;
    out.version = version;
    out.tasks = tasks;
    out.n_tasks = 1;
    bus_reply_ok(call, &out.base);
}

static void on_assignments(void *ctx, bus_call_t *call, const ProtobufCMessage *input) {
    const Shoal__Dispatcher__AssignmentsRequest *req = (const void *)input;
    calls++;
    if (strcmp(req->session_id, "stale") == 0) {
        bus_reply_error(call, BUS_FAILED_PRECONDITION, "unknown session, register again");
        return;
    }
    if (req->known_version != version) {
        reply_set(call);
        return;
    }
    if (parked) /* one poller per test */
        reply_set(parked);
    parked = call;
    parked_known = req->known_version;
    parked_until = clock_mono_ms() + req->timeout_ms;
}

static int on_timer(zloop_t *loop, int id, void *arg) {
    if (parked && (version != parked_known || clock_mono_ms() >= parked_until)) {
        reply_set(parked);
        parked = NULL;
    }
    return 0;
}

static int on_pipe(zloop_t *loop, zsock_t *pipe, void *arg) {
    char *cmd = zstr_recv(pipe);
    int rc = 0;
    if (!cmd || strcmp(cmd, "$TERM") == 0)
        rc = -1;
    else if (strcmp(cmd, "BUMP") == 0)
        version++;
    else if (strcmp(cmd, "CALLS") == 0)
        zsock_send(pipe, "i", calls);
    zstr_free(&cmd);
    return rc;
}

static const bus_method_t methods[] = {
    {"dispatcher.Assignments", &shoal__dispatcher__assignments_request__descriptor,
     &shoal__dispatcher__assignments_response__descriptor, on_assignments, BUS_ROLES_ALL},
};

static void server_fn(zsock_t *pipe, void *arg) {
    bus_server_t *srv = bus_server_new(&cfg, "dispatcher", "test", NULL, NULL);
    bus_server_add(srv, methods, 1, NULL);
    zloop_t *loop = zloop_new();
    bus_server_attach(srv, loop);
    zloop_timer(loop, 20, 0, on_timer, NULL);
    zloop_reader(loop, pipe, on_pipe, NULL);
    zsock_signal(pipe, 0);
    zloop_start(loop);
    if (parked) { /* a parked call belongs to the handler until answered */
        bus_reply_error(parked, BUS_UNAVAILABLE, "shutting down");
        parked = NULL;
    }
    zloop_destroy(&loop);
    bus_server_destroy(&srv);
}

static int server_calls(void) {
    int n = -1;
    zstr_send(server, "CALLS");
    zsock_recv(server, "i", &n);
    return n;
}

/* ---- fixture ----------------------------------------------------------------------------- */

/* One state dir (keys) for the whole group: this process's ZAP handler starts once. */
static int group_setup(void **state) {
    snprintf(state_dir, sizeof state_dir, "/tmp/shoal-test-agent-session-%d", getpid());
    static const char *const names[] = {"dispatcher", "agent", NULL};
    if (config_init(state_dir, names) < 0 || config_load(state_dir, &cfg) < 0)
        return -1;
    return 0;
}

static int group_teardown(void **state) {
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", state_dir);
    (void)!system(cmd);
    return 0;
}

static int setup(void **state) {
    version = 1;
    parked = NULL;
    calls = 0;
    server = zactor_new(server_fn, NULL);
    return 0;
}

static int teardown(void **state) {
    zactor_destroy(&server);
    return 0;
}

static zactor_t *poller_new(unsigned timeout_ms) {
    zcert_t *cert = bus_identity_load(state_dir, "agent");
    assert_non_null(cert);
    char ep[512], key[41];
    config_rpc_endpoint(&cfg, "dispatcher", ep, sizeof ep);
    assert_int_equal(bus_public_key(state_dir, "dispatcher", key), 0);
    zactor_t *p = assignments_poller_new(cert, ep, key, timeout_ms);
    zcert_destroy(&cert); /* the poller keeps its own copy */
    assert_non_null(p);
    return p;
}

/* Waits for one message from the poller: returns its first frame (caller frees), the rest in
 * *ret_msg. NULL on timeout. */
static char *poller_recv(zactor_t *p, int timeout_ms, zmsg_t **ret_msg) {
    zpoller_t *zp = zpoller_new(zactor_sock(p), NULL);
    void *which = zpoller_wait(zp, timeout_ms);
    zpoller_destroy(&zp);
    if (!which)
        return NULL;
    zmsg_t *msg = zmsg_recv(p);
    char *head = zmsg_popstr(msg);
    *ret_msg = msg;
    return head;
}

static Shoal__Dispatcher__AssignmentsResponse *recv_assign(zactor_t *p, int timeout_ms) {
    zmsg_t *msg = NULL;
    char *head = poller_recv(p, timeout_ms, &msg);
    if (!head)
        return NULL;
    assert_string_equal(head, "ASSIGN");
    zframe_t *f = zmsg_first(msg);
    Shoal__Dispatcher__AssignmentsResponse *set =
        shoal__dispatcher__assignments_response__unpack(NULL, zframe_size(f), zframe_data(f));
    assert_non_null(set);
    zstr_free(&head);
    zmsg_destroy(&msg);
    return set;
}

/* ---- tests ------------------------------------------------------------------------------- */

static void test_poller_delivers_each_new_assignment_set_once(void **state) {
    zactor_t *p = poller_new(300);
    zmsg_t *msg = NULL;
    assert_null(poller_recv(p, 300, &msg)); /* no session: no polling */
    assert_int_equal(server_calls(), 0);
    assert_int_equal(assignments_poller_set_session(p, "node1", "s1"), 0);
    Shoal__Dispatcher__AssignmentsResponse *set = recv_assign(p, 3000);
    assert_non_null(set);
    assert_int_equal(set->version, 1);
    assert_int_equal(set->n_tasks, 1);
    assert_string_equal(set->tasks[0]->meta->id, "task-v1");
    shoal__dispatcher__assignments_response__free_unpacked(set, NULL);
    /* long-polls that end with the same version deliver nothing */
    assert_null(recv_assign(p, 800));
    assert_true(server_calls() >= 3);
    /* a new version is delivered as soon as the server has it */
    zstr_send(server, "BUMP");
    int64_t t0 = clock_mono_ms();
    set = recv_assign(p, 3000);
    assert_non_null(set);
    assert_int_equal(set->version, 2);
    assert_true(clock_mono_ms() - t0 < 1000);
    shoal__dispatcher__assignments_response__free_unpacked(set, NULL);
    /* a new session starts from version 0: the same set again */
    assignments_poller_set_session(p, "node1", "s2");
    set = recv_assign(p, 3000);
    assert_non_null(set);
    assert_int_equal(set->version, 2);
    shoal__dispatcher__assignments_response__free_unpacked(set, NULL);
    zactor_destroy(&p);
}

static void test_poller_reports_unknown_session_and_pauses(void **state) {
    zactor_t *p = poller_new(300);
    assignments_poller_set_session(p, "node1", "stale");
    zmsg_t *msg = NULL;
    char *head = poller_recv(p, 3000, &msg);
    assert_non_null(head);
    assert_string_equal(head, "LOST");
    char *session = zmsg_popstr(msg), *why = zmsg_popstr(msg);
    assert_string_equal(session, "stale");
    assert_non_null(strstr(why, "unknown session"));
    zstr_free(&head);
    zstr_free(&session);
    zstr_free(&why);
    zmsg_destroy(&msg);
    int n = server_calls();
    usleep(500 * 1000);
    assert_int_equal(server_calls(), n); /* paused until the next SESSION */
    zactor_destroy(&p);
}

static void test_poller_ends_at_once_during_a_long_poll(void **state) {
    zactor_t *p = poller_new(5000);
    assignments_poller_set_session(p, "node1", "s1");
    Shoal__Dispatcher__AssignmentsResponse *set = recv_assign(p, 3000);
    assert_non_null(set);
    shoal__dispatcher__assignments_response__free_unpacked(set, NULL);
    usleep(200 * 1000); /* now parked in a 5 s long-poll */
    int64_t t0 = clock_mono_ms();
    zactor_destroy(&p);
    assert_true(clock_mono_ms() - t0 < 500);
}

static void test_poller_retries_when_dispatcher_is_not_there(void **state) {
    zactor_destroy(&server); /* the dispatcher is down */
    zactor_t *p = poller_new(300);
    assignments_poller_set_session(p, "node1", "s1");
    zmsg_t *msg = NULL;
    assert_null(poller_recv(p, 1500, &msg));
    server = zactor_new(server_fn, NULL); /* it comes back */
    Shoal__Dispatcher__AssignmentsResponse *set = recv_assign(p, 8000);
    assert_non_null(set);
    assert_int_equal(set->version, 1);
    shoal__dispatcher__assignments_response__free_unpacked(set, NULL);
    zactor_destroy(&p);
}

int main(void) {
    log_init("agent-test", LOG_LEVEL_ERR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_poller_delivers_each_new_assignment_set_once, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_poller_reports_unknown_session_and_pauses, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_poller_ends_at_once_during_a_long_poll, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_poller_retries_when_dispatcher_is_not_there, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
