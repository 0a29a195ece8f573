/* nodeobj — the /nodes/<id> objects the dispatcher writes: created at a node's first
 * registration, refreshed at each re-registration, and set UNKNOWN or DOWN. See nodeobj.c. */
#pragma once
#include <stdint.h>

#include "dispatcher.pb-c.h"
#include "objects.pb-c.h"

/* A node object to write: shallow, pointing into the old object and the request it came from
 * (keep both alive until it is packed). */
typedef struct nodeobj {
    Shoal__Node node;
    Shoal__Meta meta;
    Shoal__NodeSpec spec;
    Shoal__NodeStatus status;
} nodeobj_t;

/* The node after a registration: `old` NULL for a new node (spec: availability ACTIVE,
 * desired_role = role; role = role), else old with the new description (when the request has
 * one) and status READY. addr and heartbeat_ms (wall clock) go into the status. */
void nodeobj_registered(nodeobj_t *out, const Shoal__Node *old, const char *node_id,
                        const Shoal__Dispatcher__RegisterRequest *req, int role,
                        int64_t now_wall_ms);

/* `old` with status `state` (UNKNOWN or DOWN) and `message`; addr and heartbeat_ms are kept. */
void nodeobj_status(nodeobj_t *out, const Shoal__Node *old, int state, const char *message,
                    int64_t now_wall_ms);
