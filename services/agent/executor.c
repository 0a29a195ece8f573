/* executor — the pieces of the executor interface (executor.h) that every implementation
 * shares: decoding the event-source pipe protocol. Called by the agent's main loop when an
 * executor's event actor has something to say. */
#include "executor.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

const char *executor_event_kind_name(enum executor_event_kind kind) {
    switch (kind) {
    case EXECUTOR_EVENT_START:
        return "start";
    case EXECUTOR_EVENT_DIE:
        return "die";
    case EXECUTOR_EVENT_OOM:
        return "oom";
    case EXECUTOR_EVENT_DESTROY:
        return "destroy";
    case EXECUTOR_EVENT_RESYNC:
        return "resync";
    case EXECUTOR_EVENT_HEALTHY:
        return "healthy";
    case EXECUTOR_EVENT_UNHEALTHY:
        return "unhealthy";
    }
    return "unknown";
}

static int kind_from_name(const char *name) {
    static const enum executor_event_kind kinds[] = {
        EXECUTOR_EVENT_START,   EXECUTOR_EVENT_DIE,     EXECUTOR_EVENT_OOM,
        EXECUTOR_EVENT_DESTROY, EXECUTOR_EVENT_HEALTHY, EXECUTOR_EVENT_UNHEALTHY};
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++)
        if (strcmp(name, executor_event_kind_name(kinds[i])) == 0)
            return (int)kinds[i];
    return -EINVAL;
}

int executor_event_recv(zsock_t *pipe, executor_event_t *ret) {
    memset(ret, 0, sizeof *ret);
    ret->exit_code = -1;
    zmsg_t *msg = zmsg_recv(pipe);
    if (!msg)
        return -EINTR;
    int r = -EINVAL;
    char *head = zmsg_popstr(msg);
    if (head && strcmp(head, "RESYNC") == 0) {
        ret->kind = EXECUTOR_EVENT_RESYNC;
        r = 0;
    } else if (head && strcmp(head, "EVENT") == 0 && zmsg_size(msg) == 4) {
        char *kind = zmsg_popstr(msg), *task = zmsg_popstr(msg), *cid = zmsg_popstr(msg),
             *code = zmsg_popstr(msg);
        int k = kind ? kind_from_name(kind) : -EINVAL;
        if (k > 0 && task && cid && code && strlen(task) < sizeof ret->task_id &&
            strlen(cid) < sizeof ret->container_id) {
            ret->kind = (enum executor_event_kind)k;
            snprintf(ret->task_id, sizeof ret->task_id, "%s", task);
            snprintf(ret->container_id, sizeof ret->container_id, "%s", cid);
            ret->exit_code = atoi(code);
            r = 0;
        }
        zstr_free(&kind);
        zstr_free(&task);
        zstr_free(&cid);
        zstr_free(&code);
    }
    zstr_free(&head);
    zmsg_destroy(&msg);
    return r;
}
