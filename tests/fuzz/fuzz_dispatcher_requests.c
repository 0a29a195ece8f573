/* Fuzz target: every dispatcher request decoded from arbitrary bytes, validated, and (when
 * valid) pushed through the pure logic the daemon would run on it: the heartbeat table, the
 * assignment waiters and the status merge. Nothing may crash, leak or read out of bounds. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../services/dispatcher/assign.h"
#include "../../services/dispatcher/nodeobj.h"
#include "../../services/dispatcher/nodes.h"
#include "../../services/dispatcher/request.h"
#include "../../services/dispatcher/status.h"

static int counter;

static void fuzz_id(char *buf) {
    snprintf(buf, 26, "fuzz%021d", ++counter);
}

static void check_register(const uint8_t *data, size_t size) {
    Shoal__Dispatcher__RegisterRequest *r =
        shoal__dispatcher__register_request__unpack(NULL, size, data);
    if (!r)
        return;
    char err[256];
    if (request_check_register(r, err, sizeof err) == 0) {
        nodes_t *n = nodes_new("key", fuzz_id, 1);
        nodes_registration_t reg;
        if (nodes_register(n, r->cluster_key, r->node_id, 0, &reg) == 0) {
            nodeobj_t obj;
            nodeobj_registered(&obj, NULL, reg.node_id, r, 0, 1);
            uint8_t *buf = malloc(protobuf_c_message_get_packed_size(&obj.node.base) + 1);
            protobuf_c_message_pack(&obj.node.base, buf);
            free(buf);
        }
        nodes_destroy(&n);
    }
    protobuf_c_message_free_unpacked(&r->base, NULL);
}

static void check_heartbeat(const uint8_t *data, size_t size) {
    Shoal__Dispatcher__HeartbeatRequest *r =
        shoal__dispatcher__heartbeat_request__unpack(NULL, size, data);
    if (!r)
        return;
    char err[256];
    if (request_check_heartbeat(r, err, sizeof err) == 0) {
        nodes_t *n = nodes_new("key", fuzz_id, 1);
        nodes_observe(n, r->node_id, NODES_STATE_READY, 1, 0);
        int64_t period;
        (void)nodes_heartbeat(n, r->node_id, r->session_id, 10, &period);
        nodes_destroy(&n);
    }
    protobuf_c_message_free_unpacked(&r->base, NULL);
}

static void count_wake(void *ctx, void *waiter, const char *node_id) {
    (void)waiter;
    (void)node_id;
    (*(int *)ctx)++;
}

static void check_assignments(const uint8_t *data, size_t size) {
    Shoal__Dispatcher__AssignmentsRequest *r =
        shoal__dispatcher__assignments_request__unpack(NULL, size, data);
    if (!r)
        return;
    char err[256];
    if (request_check_assignments(r, err, sizeof err) == 0) {
        assign_t *a = assign_new();
        int woken = 0;
        assign_wait(a, r->node_id, r->known_version, r->timeout_ms, r);
        assign_wake(a, 0, count_wake, &woken);
        assign_drain(a, count_wake, &woken);
        assign_destroy(&a);
    }
    protobuf_c_message_free_unpacked(&r->base, NULL);
}

static void check_update_task_status(const uint8_t *data, size_t size) {
    Shoal__Dispatcher__UpdateTaskStatusRequest *r =
        shoal__dispatcher__update_task_status_request__unpack(NULL, size, data);
    if (!r)
        return;
    char err[256];
    if (request_check_update_task_status(r, err, sizeof err) == 0) {
        Shoal__Task base = SHOAL__TASK__INIT;
        Shoal__TaskStatus status = SHOAL__TASK_STATUS__INIT;
        status.state = SHOAL__TASK_STATE__ASSIGNED;
        base.status = &status;
        base.node_id = r->node_id;
        status_merged_t *m = calloc(r->n_updates + 1, sizeof *m);
        const Shoal__Task *cur = &base;
        for (size_t i = 0; i < r->n_updates; i++)
            if (status_merge(cur, r->updates[i], 1, &m[i]))
                cur = &m[i].task;
        uint8_t *buf = malloc(protobuf_c_message_get_packed_size(&cur->base) + 1);
        protobuf_c_message_pack(&cur->base, buf);
        free(buf);
        free(m);
    }
    protobuf_c_message_free_unpacked(&r->base, NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    /* The first byte picks the request type, so seeds stay well-formed for one of them; the
     * rest is tried as every type as well. */
    if (size == 0)
        return 0;
    const uint8_t *body = data + 1;
    size_t len = size - 1;
    switch (data[0] % 4) {
    case 0:
        check_register(body, len);
        break;
    case 1:
        check_heartbeat(body, len);
        break;
    case 2:
        check_assignments(body, len);
        break;
    default:
        check_update_task_status(body, len);
        break;
    }
    check_register(data, size);
    check_update_task_status(data, size);
    return 0;
}
