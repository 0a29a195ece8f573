"""Unit tests of scheduler.py's side of the contract, against an in-memory store.

What is checked here is what docs/scheduler-contract.md asks of any scheduler: the leader key is
created only when absent and on our lease; an assignment is a Txn comparing the task key's mod
revision and the leader key's lease; a failed compare is dropped (never retried blind); a
scheduler that lost the key writes nothing; a task's "no suitable node" reason is written only
when it changes; tasks past PENDING are never written.

Run from the repository root:
  /usr/bin/python3 -m unittest examples/custom-scheduler/test_scheduler.py
Needs python3-protobuf and protoc or protoc-c (skipped otherwise); no zmq, no cluster.
"""

import os
import sys
import unittest

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import shoalproto  # noqa: E402

try:
    BUS, ST, OB = shoalproto.load()
    import scheduler  # noqa: E402
except (shoalproto.ProtoError, ImportError) as e:  # pragma: no cover - depends on the machine
    BUS = ST = OB = None
    SKIP = str(e)


class FakeStore:
    """The store.* semantics the scheduler relies on: revisions, Txn compares on MOD and LEASE,
    Batch of independent Txns, leases owning keys, Watch from a revision."""

    def __init__(self):
        self.kvs = {}  # key -> KeyValue
        self.rev = 1
        self.history = []  # Event
        self.leases = set()
        self.next_lease = 100
        self.txns = []  # every TxnRequest seen

    def _header(self):
        return ST.ResponseHeader(revision=self.rev)

    def put(self, key, value, lease=0):
        self.rev += 1
        old = self.kvs.get(key)
        kv = ST.KeyValue(key=key, value=value, lease=lease, mod_revision=self.rev,
                         create_revision=old.create_revision if old else self.rev,
                         version=(old.version + 1) if old else 1)
        self.kvs[key] = kv
        self.history.append(ST.Event(type=ST.Event.PUT, kv=kv))

    def range(self, key, prefix=False, timeout_ms=0):
        keys = sorted(k for k in self.kvs if (k.startswith(key) if prefix else k == key))
        return ST.RangeResponse(header=self._header(), kvs=[self.kvs[k] for k in keys])

    def txn(self, req, timeout_ms=0):
        self.txns.append(req)
        ok = True
        for c in req.compare:
            kv = self.kvs.get(c.key, ST.KeyValue())
            have = {ST.Compare.MOD: kv.mod_revision, ST.Compare.LEASE: kv.lease,
                    ST.Compare.VERSION: kv.version, ST.Compare.CREATE: kv.create_revision}[c.target]
            assert c.result == ST.Compare.EQUAL
            ok = ok and have == c.number
        resp = ST.TxnResponse(succeeded=ok)
        for op in (req.success if ok else req.failure):
            if op.HasField("put"):
                self.put(op.put.key, op.put.value, op.put.lease)
                resp.responses.add().put.CopyFrom(ST.PutResponse())
            elif op.HasField("range"):
                resp.responses.add().range.CopyFrom(self.range(op.range.key))
        resp.header.CopyFrom(self._header())
        return resp

    def batch(self, txns, timeout_ms=0):
        return ST.BatchResponse(responses=[self.txn(t) for t in txns], header=self._header())

    def watch(self, key, start_revision, timeout_ms, prefix=True, max_events=0):
        evs = [e for e in self.history if e.kv.mod_revision >= start_revision]
        return ST.WatchResponse(header=self._header(), events=evs, next_revision=self.rev + 1)

    def lease_grant(self, ttl_ms, timeout_ms=0):
        self.next_lease += 1
        self.leases.add(self.next_lease)
        return self.next_lease

    def lease_keepalive(self, lease_id, timeout_ms=0):
        return lease_id in self.leases

    def lease_revoke(self, lease_id, timeout_ms=0):
        self.leases.discard(lease_id)
        for k in [k for k, kv in self.kvs.items() if kv.lease == lease_id]:
            del self.kvs[k]


class QuietLog:
    def __init__(self):
        self.lines = []

    def write(self, level, text):
        self.lines.append((level, text))

    def err(self, text):
        self.write("err", text)

    def warn(self, text):
        self.write("warn", text)

    def info(self, text):
        self.write("info", text)

    def debug(self, text):
        self.write("debug", text)


def node(nid, hostname, spot=False, ready=True):
    n = OB.Node()
    n.meta.id, n.description.hostname = nid, hostname
    n.description.resources.memory_bytes = 4 << 30
    n.status.state = OB.NodeStatus.READY if ready else OB.NodeStatus.DOWN
    if spot:
        n.spec.annotations.labels.add(key="tier", value="spot")
    return n


def task(tid, state=None, node_id="", constraints=()):
    t = OB.Task()
    t.meta.id, t.meta.version, t.service_id, t.slot = tid, 1, "svc", 1
    t.desired_state = OB.RUNNING
    t.status.state = OB.PENDING if state is None else state
    t.node_id = node_id
    t.spec.placement.constraints.extend(constraints)
    return t


@unittest.skipIf(BUS is None, "proto modules unavailable" if BUS is None else "")
class ContractTest(unittest.TestCase):
    def setUp(self):
        self.store = FakeStore()
        self.store.put("/nodes/n1", node("n1", "ondemand").SerializeToString())
        self.store.put("/nodes/n2", node("n2", "spot", spot=True).SerializeToString())
        self.log = QuietLog()
        self.s = scheduler.CustomScheduler(self.store, ST, OB, "py-test", self.log)

    def stored_task(self, tid):
        kv = self.store.kvs["/tasks/" + tid]
        return OB.Task.FromString(kv.value), kv.mod_revision

    def lead(self):
        self.s.sync()
        self.s.campaign()
        self.assertTrue(self.s.leader)

    def catch_up(self):
        self.s.on_watch(self.store.watch("/", self.s.revision + 1, 0))

    def test_campaign_creates_the_leader_key_only_when_absent_and_on_our_lease(self):
        self.lead()
        kv = self.store.kvs[scheduler.LEADER_KEY]
        self.assertEqual(kv.value, b"py-test")
        self.assertEqual(kv.lease, self.s.lease_id)
        cmp = self.store.txns[-1].compare[0]
        self.assertEqual((cmp.target, cmp.key, cmp.number),
                         (ST.Compare.MOD, scheduler.LEADER_KEY, 0))

    def test_a_held_leader_key_means_standby_and_no_writes(self):
        self.store.put(scheduler.LEADER_KEY, b"shoal-scheduler", lease=7)
        self.store.put("/tasks/t1", task("t1").SerializeToString())
        self.s.sync()
        self.s.campaign()
        self.assertFalse(self.s.leader)
        self.assertEqual(self.s.leader_name, "shoal-scheduler")
        self.assertFalse(self.s.may_write())
        self.assertEqual(self.store.kvs[scheduler.LEADER_KEY].lease, 7)

    def test_a_pending_task_is_assigned_by_cas_with_the_lease_as_fence(self):
        self.store.put("/tasks/t1", task("t1").SerializeToString())
        _, rev = self.stored_task("t1")
        self.lead()
        self.s.schedule_pass()
        t, _ = self.stored_task("t1")
        self.assertEqual(t.status.state, OB.ASSIGNED)
        self.assertEqual(t.node_id, "n2", "the spot node")
        self.assertEqual(t.meta.version, 2)
        self.assertEqual(t.status.message, scheduler.ASSIGNED_MESSAGE)
        cmps = {(c.target, c.key, c.number) for c in self.store.txns[-1].compare}
        self.assertEqual(cmps, {(ST.Compare.MOD, "/tasks/t1", rev),
                                (ST.Compare.LEASE, scheduler.LEADER_KEY, self.s.lease_id)})
        self.assertIn(("info", "placed task=t1 node=spot reason=spot-pack"), self.log.lines)

    def test_a_task_changed_behind_our_back_is_not_overwritten_and_is_retried_on_the_new_one(self):
        self.store.put("/tasks/t1", task("t1").SerializeToString())
        self.lead()
        newer = task("t1")
        newer.meta.version = 2
        newer.spec.placement.constraints.append("node.hostname==ondemand")
        self.store.put("/tasks/t1", newer.SerializeToString())  # not seen by the scheduler yet
        self.s.schedule_pass()
        t, _ = self.stored_task("t1")
        self.assertEqual(t.status.state, OB.PENDING, "a failed compare writes nothing")
        self.assertEqual(list(self.s.pending_tasks()), [], "not retried against the old revision")
        self.catch_up()
        self.assertTrue(self.s.dirty)
        self.s.schedule_pass()
        t, _ = self.stored_task("t1")
        self.assertEqual((t.status.state, t.node_id), (OB.ASSIGNED, "n1"))

    def test_a_scheduler_that_lost_the_leader_key_writes_nothing_and_steps_down(self):
        self.store.put("/tasks/t1", task("t1").SerializeToString())
        self.lead()
        # another instance took the key (our lease expired while we were paused)
        self.store.put(scheduler.LEADER_KEY, b"other", lease=999)
        self.s.schedule_pass()
        t, _ = self.stored_task("t1")
        self.assertEqual(t.status.state, OB.PENDING)
        self.assertFalse(self.s.leader)

    def test_the_reason_a_task_cannot_be_placed_is_written_once(self):
        self.store.put("/tasks/t1", task("t1", constraints=["node.labels.gpu==yes"])
                       .SerializeToString())
        self.lead()
        self.s.schedule_pass()
        t, rev = self.stored_task("t1")
        self.assertEqual(t.status.state, OB.PENDING)
        self.assertEqual(t.status.err,
                         "no suitable node (scheduling constraints not satisfied on 2 nodes)")
        self.catch_up()
        self.s.dirty = True
        self.s.schedule_pass()
        self.assertEqual(self.stored_task("t1")[1], rev, "an unchanged reason is not rewritten")

    def test_tasks_past_pending_are_never_written(self):
        for i, st in enumerate((OB.ASSIGNED, OB.RUNNING, OB.FAILED)):
            self.store.put(f"/tasks/a{i}", task(f"a{i}", st, "n1").SerializeToString())
        before = {k: kv.mod_revision for k, kv in self.store.kvs.items()}
        self.lead()
        self.s.schedule_pass()
        for k, rev in before.items():
            if k.startswith("/tasks/"):
                self.assertEqual(self.store.kvs[k].mod_revision, rev, k)

    def test_running_tasks_count_as_load_for_packing(self):
        self.store.put("/nodes/n3", node("n3", "spot-2", spot=True).SerializeToString())
        self.store.put("/tasks/r1", task("r1", OB.RUNNING, "n3").SerializeToString())
        self.store.put("/tasks/t1", task("t1").SerializeToString())
        self.lead()
        self.s.schedule_pass()
        self.assertEqual(self.stored_task("t1")[0].node_id, "n3", "the busier spot node")

    def test_release_revokes_the_lease_so_the_key_goes_at_once(self):
        self.lead()
        self.s.release()
        self.assertNotIn(scheduler.LEADER_KEY, self.store.kvs)


if __name__ == "__main__":
    unittest.main()
