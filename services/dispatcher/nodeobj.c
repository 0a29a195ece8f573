/* nodeobj — how the dispatcher changes /nodes/<id> (DESIGN §4 Node).
 *
 * The dispatcher owns a node's status (READY / UNKNOWN / DOWN, addr, heartbeat time) and its
 * description (what the agent reports); the spec (role wanted, availability, labels) belongs to
 * the user and is only set here when the node is created. Every write bumps meta.version and
 * sets meta.updated_at_ms; the daemon writes the result by compare-and-swap on the key's mod
 * revision, re-reading and rebuilding on conflict.
 *
 * Heartbeats are not written (a write per node every 500 ms would dominate the store); only state
 * changes are, so status.heartbeat_ms is the time of the last registration or state change.
 *
 * Pure: builds shallow message structs, no allocation, no I/O. */
#include "nodeobj.h"

#include <string.h>

static void copy_meta(nodeobj_t *out, const Shoal__Node *old, const char *node_id,
                      int64_t now_wall_ms) {
    if (old && old->meta) {
        out->meta = *old->meta;
    } else {
        Shoal__Meta meta = SHOAL__META__INIT;
        out->meta = meta;
        out->meta.id = (char *)node_id;
        out->meta.created_at_ms = now_wall_ms;
    }
    out->meta.version++;
    out->meta.updated_at_ms = now_wall_ms;
    out->node.meta = &out->meta;
}

void nodeobj_registered(nodeobj_t *out, const Shoal__Node *old, const char *node_id,
                        const Shoal__Dispatcher__RegisterRequest *req, int role,
                        int64_t now_wall_ms) {
    memset(out, 0, sizeof *out);
    if (old) {
        out->node = *old;
    } else {
        Shoal__Node node = SHOAL__NODE__INIT;
        out->node = node;
        Shoal__NodeSpec spec = SHOAL__NODE_SPEC__INIT;
        out->spec = spec;
        out->spec.availability = SHOAL__NODE_SPEC__AVAILABILITY__ACTIVE;
        out->spec.desired_role = (Shoal__NodeSpec__Role)role;
        out->node.spec = &out->spec;
        out->node.role = (Shoal__NodeSpec__Role)role;
    }
    copy_meta(out, old, node_id, now_wall_ms);
    if (req && req->description)
        out->node.description = req->description;

    Shoal__NodeStatus status = SHOAL__NODE_STATUS__INIT;
    out->status = status;
    out->status.state = SHOAL__NODE_STATUS__STATE__READY;
    out->status.addr =
        (req && req->addr && req->addr[0])
            ? req->addr
            : (old && old->status && old->status->addr ? old->status->addr : (char *)"");
    out->status.heartbeat_ms = now_wall_ms;
    out->node.status = &out->status;
}

void nodeobj_status(nodeobj_t *out, const Shoal__Node *old, int state, const char *message,
                    int64_t now_wall_ms) {
    memset(out, 0, sizeof *out);
    out->node = *old;
    copy_meta(out, old, old->meta ? old->meta->id : "", now_wall_ms);
    Shoal__NodeStatus status = SHOAL__NODE_STATUS__INIT;
    if (old->status)
        status = *old->status;
    out->status = status;
    out->status.state = (Shoal__NodeStatus__State)state;
    out->status.message = (char *)(message ? message : "");
    out->node.status = &out->status;
}
