#!/usr/bin/python3
"""audit — replays the store's history of /tasks/ and checks every task was placed once.

A scheduler hand-over (shoal-scheduler -> a custom scheduler -> back) must neither place a task
twice nor lose one. The store keeps every revision's events for Watch (until compaction), so
this reads them all from revision 1 and follows each task: every PENDING -> ASSIGNED transition
is counted with the node and the status.message written with it (which tells the schedulers
apart: "scheduler assigned task to node" is shoal-scheduler, "assigned by custom-scheduler
(spot-pack)" is scheduler.py). It prints one line per task:

  task=<id> slot=<n> assigned=<count> node=<node id> state=<last state> desired=<state> by="<msg>"

and exits 1 when a task was assigned more than once, moved to another node, or went backwards
in state; 2 when the history is compacted (the audit would be partial); 0 otherwise.

Usage: audit.py --state-dir DIR [--service NAME]
"""

import argparse
import os
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import scheduler  # noqa: E402
import shoalproto  # noqa: E402


class TaskHistory:
    def __init__(self, tid):
        self.id, self.slot, self.service = tid, 0, ""
        self.assigned, self.node, self.by = 0, "", ""
        self.state, self.desired, self.deleted = 0, 0, False
        self.problems = []


def audit(store, pb_store, ob, service=None):
    """Returns ({task id: TaskHistory}, compacted)."""
    head = store.range("/tasks/", prefix=True, timeout_ms=5000).header.revision
    tasks, start = {}, 1
    while start <= head:
        resp = store.watch("/tasks/", start, 1, max_events=10000)
        if resp.compacted:
            return tasks, True
        for ev in resp.events:
            tid = ev.kv.key[len("/tasks/"):]
            h = tasks.get(tid)
            if ev.type == pb_store.Event.DELETE:
                if h:
                    h.deleted = True
                continue
            t = ob.Task.FromString(ev.kv.value)
            if service and t.service_name != service:
                continue
            if h is None:
                h = tasks[tid] = TaskHistory(tid)
            h.slot, h.service, h.desired = t.slot, t.service_name, t.desired_state
            state = t.status.state
            if state < h.state:
                h.problems.append(f"state went back from {ob.TaskState.Name(h.state)} to "
                                  f"{ob.TaskState.Name(state)} at revision {ev.kv.mod_revision}")
            if state == ob.ASSIGNED and h.state < ob.ASSIGNED:
                h.assigned += 1
                h.by = t.status.message
            if h.node and t.node_id != h.node:
                h.problems.append(f"node changed from {h.node} to {t.node_id or '(none)'} at "
                                  f"revision {ev.kv.mod_revision}")
            h.node, h.state = t.node_id, state
        start = max(resp.next_revision, start + 1)
    return tasks, False


def main(argv=None):
    ap = argparse.ArgumentParser(description="Check from the store history that every task was "
                                 "placed exactly once.")
    ap.add_argument("--state-dir", default=os.environ.get("SHOAL_STATE_DIR", "/var/lib/shoal"))
    ap.add_argument("--service", help="only the tasks of this service (by name)")
    ap.add_argument("--identity", default="admin", help="key under <state>/keys/private/")
    ap.add_argument("--proto-dir")
    args = ap.parse_args(argv)
    if scheduler.zmq is None:
        print("audit: python3-zmq is missing", file=sys.stderr)
        return 2
    pb_bus, pb_store, ob = shoalproto.load(args.proto_dir)
    store = scheduler.Store(pb_bus, pb_store, args.state_dir, args.identity)
    try:
        tasks, compacted = audit(store, pb_store, ob, args.service)
    except scheduler.BusError as e:
        print(f"audit: {e}", file=sys.stderr)
        return 2
    finally:
        store.close()
    if compacted:
        print("audit: the store history is compacted, cannot replay every task", file=sys.stderr)
        return 2
    bad = 0
    for h in sorted(tasks.values(), key=lambda h: (h.service, h.slot, h.id)):
        if h.assigned > 1:
            h.problems.append(f"assigned {h.assigned} times")
        print(f"task={h.id} slot={h.slot} assigned={h.assigned} node={h.node or '-'} "
              f"state={ob.TaskState.Name(h.state)} desired={ob.TaskState.Name(h.desired)}"
              f"{' deleted=true' if h.deleted else ''} by={scheduler.quote(h.by)}")
        for p in h.problems:
            print(f"  problem task={h.id}: {p}")
        bad += bool(h.problems)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
