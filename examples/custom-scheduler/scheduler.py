#!/usr/bin/python3
"""custom-scheduler — a second, independent shoal scheduler in Python.

It replaces shoal-scheduler by speaking the scheduler contract (docs/scheduler-contract.md) and
nothing more: the store API over the bus, the /leases/scheduler lease, and compare-and-swap
writes of /tasks/<id>. It needs only Debian's python3-zmq and python3-protobuf; the messages
come from proto/*.proto at start (shoalproto.py). Its placement rules live in policy.py: nodes
labelled tier=spot first, then pack.

Shape of the program (one thread, no event library):
  * Bus/Store: a CurveZMQ DEALER to the store's ROUTER (ipc://<state>/run/store.rpc), the server
    key pinned from keys/public/store.key, our identity from keys/private/scheduler.key_secret.
    One frame per request (shoal.bus.Request) and per reply (shoal.bus.Reply); an attempt that
    gets no reply is resent with the same request id on a fresh socket, so the store answers a
    retried write from its reply cache instead of applying it twice.
  * View: list "/" once, then long-poll store.Watch from the next revision; keeps /nodes/,
    /tasks/ (with each key's mod revision) and /leases/scheduler. Compacted history: list again.
  * Leadership: a 3 s store lease, kept alive every second; the key /leases/scheduler created by a
    Txn that compares its mod revision with 0 and attaches the lease. Only the holder writes, and
    only while its last successful keep-alive is younger than TTL - 500 ms. Every assignment Txn
    also compares the leader key's lease with ours (fencing), so a scheduler that lost the key
    cannot write even if its clock or its view is late.
  * A pass (after task events, node events while tasks wait, or election): policy.place() over
    the PENDING tasks, then one store.Batch of Txns (at most 1000 per Batch), each comparing the
    task key's mod revision with the one read. A failed compare is dropped: the watch brings the
    newer version and the next pass looks again.
  * Exit (SIGTERM, SIGINT, --once): revoke the lease, which deletes /leases/scheduler at once,
    so shoal-scheduler (or another instance) takes over without waiting for the TTL.

Usage: scheduler.py --state-dir DIR [--once] [--log FILE] [--log-level info|debug]
"""

import argparse
import os
import secrets
import signal
import socket
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import policy  # noqa: E402
import shoalproto  # noqa: E402

try:
    import zmq
except ImportError:  # reported in main(), so --help still works
    zmq = None

LEADER_KEY = "/leases/scheduler"
LEASE_TTL_MS = 3000
LEASE_KEEPALIVE_MS = 1000
LEASE_MARGIN_MS = 500
BATCH_MAX = 1000
RETRY_MS = 500
WATCH_MAX_MS = 1000
ASSIGNED_MESSAGE = f"assigned by custom-scheduler ({policy.POLICY_NAME})"


def mono_ms():
    return int(time.monotonic() * 1000)


def wall_ms():
    return int(time.time() * 1000)


# ---- logging ----------------------------------------------------------------------------------


class Log:
    """key=value lines in lib/log.c's format: ts=... level=... daemon=custom-scheduler <text>."""

    LEVELS = {"err": 0, "warn": 1, "info": 2, "debug": 3}

    def __init__(self, path=None, level="info"):
        self.level = self.LEVELS[level]
        self.out = open(path, "a", buffering=1, encoding="utf-8") if path else sys.stderr

    def write(self, level, text):
        if self.LEVELS[level] > self.level:
            return
        now = time.time()
        ms = int(now * 1000) % 1000
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{ms:03d}Z"
        self.out.write(f"ts={ts} level={level} daemon=custom-scheduler {text}\n")
        self.out.flush()

    def err(self, text):
        self.write("err", text)

    def warn(self, text):
        self.write("warn", text)

    def info(self, text):
        self.write("info", text)

    def debug(self, text):
        self.write("debug", text)


def quote(s):
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


# ---- the bus ----------------------------------------------------------------------------------


class BusError(Exception):
    """A reply with code != OK (code is a shoal.bus.Code number), or no reply in time (code
    None)."""

    def __init__(self, method, code, name, message):
        super().__init__(f"{method}: {name}: {message}")
        self.code, self.name, self.message = code, name, message


def read_zcert(path):
    """(public, secret) Z85 keys from a CZMQ zcert file (secret None in a public one)."""
    keys = {}
    with open(path, encoding="ascii") as f:
        for line in f:
            name, sep, value = line.strip().partition("=")
            if sep and name.strip() in ("public-key", "secret-key"):
                keys[name.strip()] = value.strip().strip('"').encode("ascii")
    if len(keys.get("public-key", b"")) != 40:
        raise ValueError(f"{path}: no public-key in this certificate")
    return keys["public-key"], keys.get("secret-key")


class BusClient:
    """A Curve DEALER to one shoal daemon; calls are synchronous, retried by request id."""

    def __init__(self, pb_bus, endpoint, server_key, public, secret, retry_ms=1000):
        self.pb = pb_bus
        self.ctx = zmq.Context.instance()
        self.endpoint, self.server_key = endpoint, server_key
        self.public, self.secret = public, secret
        self.retry_ms = retry_ms
        self.prefix = secrets.token_hex(5)  # request ids are unique across clients and restarts
        self.seq = 0
        self.sock = None
        self.wake_fd = None  # readable when a signal arrives (signal.set_wakeup_fd)
        self._open()

    def _open(self):
        if self.sock is not None:
            self.sock.close(linger=0)
        s = self.ctx.socket(zmq.DEALER)
        s.linger = 0
        s.curve_publickey = self.public
        s.curve_secretkey = self.secret
        s.curve_serverkey = self.server_key
        s.connect(self.endpoint)
        self.sock = s

    def close(self):
        if self.sock is not None:
            self.sock.close(linger=0)
            self.sock = None

    def _wait(self, timeout_ms, interruptible):
        """True when a reply is ready; raises InterruptedError when a signal came first."""
        if not interruptible or self.wake_fd is None:
            return bool(self.sock.poll(timeout_ms, zmq.POLLIN))
        poller = zmq.Poller()
        poller.register(self.sock, zmq.POLLIN)
        poller.register(self.wake_fd, zmq.POLLIN)
        ready = dict(poller.poll(timeout_ms))
        if self.wake_fd in ready:
            try:
                os.read(self.wake_fd, 512)
            except BlockingIOError:
                pass
            raise InterruptedError("interrupted by a signal")
        return self.sock in ready

    def call(self, method, request, reply_cls, timeout_ms, retry_ms=None, interruptible=False):
        """Sends `request` (a message) to `method`, returns the decoded reply payload. An
        interruptible call (a read, never a write) gives up with InterruptedError on a signal."""
        self.seq += 1
        rid = f"{self.prefix}-{self.seq}"
        frame = self.pb.Request(id=rid, method=method, deadline_ms=timeout_ms,
                                payload=request.SerializeToString()).SerializeToString()
        deadline = mono_ms() + timeout_ms
        retry_ms = retry_ms or self.retry_ms
        first = True
        while mono_ms() < deadline:
            if not first:
                self._open()  # drop whatever libzmq queued for a peer that went away
            first = False
            try:
                self.sock.send(frame, zmq.NOBLOCK)
            except zmq.Again:
                pass
            attempt_end = min(deadline, mono_ms() + retry_ms)
            while (left := attempt_end - mono_ms()) > 0:
                if not self._wait(left, interruptible):
                    continue
                try:
                    rep = self.pb.Reply.FromString(self.sock.recv())
                except Exception:  # noqa: BLE001 - a garbled frame is not our reply
                    continue
                if rep.id != rid:
                    continue  # a late reply to an earlier call
                if rep.code == self.pb.OK:
                    return reply_cls.FromString(rep.payload)
                msg = rep.message + (f" (leader: {rep.leader_hint})" if rep.leader_hint else "")
                raise BusError(method, rep.code, self.pb.Code.Name(rep.code), msg)
        raise BusError(method, None, "TIMEOUT",
                       f"no reply from {self.endpoint} within {timeout_ms} ms (is the cluster "
                       "up, and is this key in keys/public/?)")


class Store:
    """Typed store.* calls (proto/store.proto). UNAVAILABLE and NOT_LEADER are retried until the
    call's timeout, as lib/storecli.c does."""

    def __init__(self, pb_bus, pb_store, state_dir, identity):
        self.pb = pb_store
        public, secret = read_zcert(os.path.join(state_dir, "keys", "private",
                                                 identity + ".key_secret"))
        if not secret:
            raise ValueError(f"keys/private/{identity}.key_secret has no secret-key")
        server_key, _ = read_zcert(os.path.join(state_dir, "keys", "public", "store.key"))
        endpoint = "ipc://" + os.path.join(state_dir, "run", "store.rpc")
        self.bus = BusClient(pb_bus, endpoint, server_key, public, secret)
        self.codes = pb_bus

    def call(self, method, request, reply_cls, timeout_ms=5000, retry_ms=None,
             interruptible=False):
        deadline = mono_ms() + timeout_ms
        while True:
            left = max(1, deadline - mono_ms())
            try:
                return self.bus.call(method, request, reply_cls, left, retry_ms, interruptible)
            except BusError as e:
                again = e.code in (self.codes.UNAVAILABLE, self.codes.NOT_LEADER)
                if not again or mono_ms() + 100 >= deadline:
                    raise
                time.sleep(0.1)

    def range(self, key, prefix=False, timeout_ms=5000):
        return self.call("store.Range", self.pb.RangeRequest(key=key, prefix=prefix),
                         self.pb.RangeResponse, timeout_ms)

    def batch(self, txns, timeout_ms=5000):
        return self.call("store.Batch", self.pb.BatchRequest(txns=txns), self.pb.BatchResponse,
                         timeout_ms)

    def txn(self, txn, timeout_ms=5000):
        return self.call("store.Txn", txn, self.pb.TxnResponse, timeout_ms)

    def watch(self, key, start_revision, timeout_ms, prefix=True, max_events=0):
        req = self.pb.WatchRequest(key=key, prefix=prefix, start_revision=start_revision,
                                   timeout_ms=timeout_ms, max_events=max_events)
        # the store answers by timeout_ms: one attempt, no resend while it holds the call
        wait = timeout_ms + 1500
        return self.call("store.Watch", req, self.pb.WatchResponse, wait, retry_ms=wait,
                         interruptible=True)

    def lease_grant(self, ttl_ms, timeout_ms=1000):
        return self.call("store.LeaseGrant", self.pb.LeaseGrantRequest(ttl_ms=ttl_ms),
                         self.pb.LeaseGrantResponse, timeout_ms).id

    def lease_keepalive(self, lease_id, timeout_ms=1000):
        """True when renewed, False when the lease is gone (expired or revoked)."""
        try:
            r = self.call("store.LeaseKeepAlive", self.pb.LeaseKeepAliveRequest(id=lease_id),
                          self.pb.LeaseKeepAliveResponse, timeout_ms)
        except BusError as e:
            if e.code == self.codes.NOT_FOUND:
                return False
            raise
        return r.ttl_ms > 0

    def lease_revoke(self, lease_id, timeout_ms=300):
        self.call("store.LeaseRevoke", self.pb.LeaseRevokeRequest(id=lease_id),
                  self.pb.LeaseRevokeResponse, timeout_ms)

    def close(self):
        self.bus.close()


# ---- the scheduler ----------------------------------------------------------------------------


class CustomScheduler:
    def __init__(self, store, pb_store, pb_objects, instance, log, spot_label=policy.SPOT_LABEL):
        self.store, self.st, self.ob = store, pb_store, pb_objects
        self.instance, self.log, self.spot_label = instance, log, spot_label
        self.nodes = {}  # id -> shoal.Node
        self.tasks = {}  # id -> (shoal.Task, mod_revision)
        self.stale = {}  # id -> mod revision whose CAS failed: wait for a newer one
        self.revision = 0
        self.leader = False
        self.leader_revision = 0
        self.leader_name = ""
        self.standby_logged = False
        self.lease_id = 0
        self.lease_ok_ms = 0
        self.next_lease_ms = 0
        self.dirty = False
        self.retry_at_ms = 0
        self.placed_total = 0

    # -- the store view --

    def sync(self):
        """Lists every key, then the watch goes on from the next revision."""
        resp = self.store.range("/", prefix=True)
        self.nodes, self.tasks, self.stale = {}, {}, {}
        self.leader_name = ""
        for kv in resp.kvs:
            self.apply(kv, deleted=False)
        if self.leader and not any(kv.key == LEADER_KEY for kv in resp.kvs):
            self.step_down("leader key gone")  # deleted while our watch was behind
            self.next_lease_ms = 0
        if resp.more:
            self.log.warn(f"store list was cut short: some keys are missing keys={len(resp.kvs)}")
        self.revision = resp.header.revision
        self.dirty = True
        self.log.info(f"store view loaded revision={self.revision} nodes={len(self.nodes)} "
                      f"tasks={len(self.tasks)} pending={sum(1 for _ in self.pending_tasks())}")

    def apply(self, kv, deleted):
        """Applies one key of the list or the watch; returns "task", "node" or None."""
        key = kv.key
        if key.startswith("/tasks/"):
            tid = key[len("/tasks/"):]
            held = self.tasks.get(tid)
            if held and kv.mod_revision <= held[1]:
                return None  # our own write coming back, or older history
            if deleted:
                self.tasks.pop(tid, None)
                return "task"
            try:
                t = self.ob.Task.FromString(kv.value)
            except Exception:  # noqa: BLE001 - never write what we cannot read
                t = None
            if t is None or t.meta.id != tid:
                self.log.warn(f"ignoring undecodable task key={key}")
                self.tasks.pop(tid, None)
                return None
            self.tasks[tid] = (t, kv.mod_revision)
            return "task"
        if key.startswith("/nodes/"):
            nid = key[len("/nodes/"):]
            if deleted:
                self.nodes.pop(nid, None)
                return "node"
            try:
                n = self.ob.Node.FromString(kv.value)
            except Exception:  # noqa: BLE001
                n = None
            if n is None or n.meta.id != nid:
                self.log.warn(f"ignoring undecodable node key={key}")
                self.nodes.pop(nid, None)
                return None
            self.nodes[nid] = n
            return "node"
        if key == LEADER_KEY:
            if self.leader and kv.mod_revision < self.leader_revision:
                return None  # history from before our election
            if deleted:
                self.leader_name = ""
                self.step_down("leader key deleted")
                self.next_lease_ms = 0  # campaign at once
            else:
                self.leader_name = kv.value.decode("utf-8", "replace")
                if self.leader and kv.lease != self.lease_id:
                    self.step_down("leader key taken by another instance")
        return None

    def on_watch(self, resp):
        if resp.compacted:
            self.log.warn(f"store history compacted, re-listing from={self.revision} "
                          f"compact_revision={resp.compact_revision}")
            self.sync()
            return
        tasks_changed = nodes_changed = False
        for ev in resp.events:
            what = self.apply(ev.kv, ev.type == self.st.Event.DELETE)
            tasks_changed |= what == "task"
            nodes_changed |= what == "node"
            self.revision = max(self.revision, ev.kv.mod_revision)
        self.revision = max(self.revision, resp.next_revision - 1)
        # node changes matter only while some task waits for a node
        if tasks_changed or (nodes_changed and any(True for _ in self.pending_tasks())):
            self.dirty = True

    # -- leadership --

    def step_down(self, why):
        if not self.leader:
            return
        self.leader = False
        self.log.warn(f"lost scheduler leadership, writing stops instance={self.instance} "
                      f"reason={quote(why)}")

    def campaign(self):
        """Tries to take /leases/scheduler: create it if absent (mod revision 0), on our lease."""
        if self.leader:
            return
        granted_ms = mono_ms()  # the lease lives at least TTL from here
        try:
            if self.lease_id and not self.store.lease_keepalive(self.lease_id):
                self.lease_id = 0
                granted_ms = mono_ms()
            if not self.lease_id:
                self.lease_id = self.store.lease_grant(LEASE_TTL_MS)
            txn = self.st.TxnRequest(
                compare=[self.st.Compare(result=self.st.Compare.EQUAL,
                                         target=self.st.Compare.MOD, key=LEADER_KEY, number=0)],
                success=[self.st.RequestOp(put=self.st.PutRequest(
                    key=LEADER_KEY, value=self.instance.encode(), lease=self.lease_id))],
                failure=[self.st.RequestOp(range=self.st.RangeRequest(key=LEADER_KEY))])
            resp = self.store.txn(txn, timeout_ms=1000)
        except BusError as e:
            self.log.debug(f"leader election failed err={quote(str(e))}")
            return
        revision = resp.header.revision
        if not resp.succeeded:
            kvs = resp.responses[0].range.kvs if resp.responses else []
            if not kvs or kvs[0].lease != self.lease_id:
                name = kvs[0].value.decode("utf-8", "replace") if kvs else ""
                if name != self.leader_name or not self.standby_logged:
                    self.standby_logged = True
                    self.log.info(f"standing by, the scheduler lease is held leader={quote(name)}")
                self.leader_name = name
                return
            revision = kvs[0].mod_revision  # ours already (we stepped down on a stale event)
        self.leader = True
        self.leader_revision = revision
        self.lease_ok_ms = granted_ms
        self.leader_name = self.instance
        self.dirty = True
        self.log.info(f"became scheduler leader instance={self.instance} lease={self.lease_id}")

    def keepalive(self):
        sent_ms = mono_ms()
        try:
            alive = self.store.lease_keepalive(self.lease_id)
        except BusError as e:
            if mono_ms() - self.lease_ok_ms > LEASE_TTL_MS - LEASE_MARGIN_MS:
                self.step_down(f"cannot renew the lease: {e}")
            return
        if alive:
            self.lease_ok_ms = sent_ms
        else:
            self.lease_id = 0
            self.step_down("lease expired")

    def may_write(self):
        """A leader writes only while its lease is surely alive."""
        if self.leader and mono_ms() - self.lease_ok_ms > LEASE_TTL_MS - LEASE_MARGIN_MS:
            self.step_down("lease not renewed in time")
        return self.leader

    def release(self):
        """Hands leadership over at once instead of after the TTL."""
        if self.lease_id:
            try:
                self.store.lease_revoke(self.lease_id)
                self.log.info(f"released the scheduler lease lease={self.lease_id}")
            except BusError as e:
                self.log.warn(f"lease revoke failed, it expires in {LEASE_TTL_MS} ms "
                              f"err={quote(str(e))}")
        self.lease_id = 0
        self.leader = False

    # -- placing --

    def pending_tasks(self):
        P = self.ob.PENDING
        for tid, (t, rev) in self.tasks.items():
            if t.status.state == P and t.desired_state <= self.ob.RUNNING and \
                    self.stale.get(tid, -1) < rev:
                yield t, rev

    def node_views(self):
        """policy.NodeView of every node, with the tasks that count on it (shoal-scheduler's
        rule: node_id set, PENDING < state <= RUNNING, desired state <= RUNNING)."""
        ob = self.ob
        views = {}
        for nid, n in self.nodes.items():
            d = n.description
            views[nid] = policy.NodeView(
                id=nid, hostname=d.hostname,
                role="manager" if n.role == ob.NodeSpec.MANAGER else "worker",
                labels={lb.key: lb.value for lb in n.spec.annotations.labels},
                engine_labels={lb.key: lb.value for lb in d.engine.labels},
                os=d.platform.os, arch=d.platform.architecture,
                ready=n.status.state == ob.NodeStatus.READY,
                active=n.spec.availability == ob.NodeSpec.ACTIVE,
                nano_cpus=d.resources.nano_cpus, memory_bytes=d.resources.memory_bytes)
        for t, _ in self.tasks.values():
            if t.node_id in views and ob.PENDING < t.status.state <= ob.RUNNING and \
                    t.desired_state <= ob.RUNNING:
                views[t.node_id].add(self.task_view(t))
        return views

    def task_view(self, t):
        s = t.spec
        r = s.resources.reservations
        ports = t.endpoint.ports or t.endpoint.spec.ports  # allocated, else as asked
        host_ports = tuple((p.protocol, p.published_port) for p in ports
                           if p.publish_mode == self.ob.PortConfig.HOST
                           and 0 < p.published_port <= 0xFFFF)
        return policy.TaskView(
            id=t.meta.id, service_id=t.service_id, spec_version=t.spec_version, slot=t.slot,
            node_id=t.node_id, constraints=tuple(s.placement.constraints),
            platforms=tuple((p.os, p.architecture) for p in s.placement.platforms),
            nano_cpus=max(0, r.nano_cpus), memory_bytes=max(0, r.memory_bytes),
            max_replicas=s.placement.max_replicas, host_ports=host_ports)

    def decide(self, now_ms):
        """[(decision, old task, its mod revision, new task)] for this pass."""
        pending = {t.meta.id: (t, rev) for t, rev in self.pending_tasks()}
        nodes = self.node_views()
        views = [self.task_view(t) for t, _ in pending.values()]
        out = []
        for d in policy.place(views, nodes, self.spot_label):
            old, rev = pending[d.task_id]
            if not d.node_id and old.status.err == d.reason:
                continue  # the reason is already written: write only when it changes
            new = self.ob.Task()
            new.CopyFrom(old)
            if d.node_id:
                new.node_id = d.node_id
                new.status.state = self.ob.ASSIGNED
                new.status.message = ASSIGNED_MESSAGE
                new.status.err = ""
            else:
                new.status.err = d.reason
            new.status.timestamp_ms = now_ms
            new.meta.version += 1
            new.meta.updated_at_ms = now_ms
            out.append((d, old, rev, new))
        return out

    def txn_for(self, task_id, rev, new):
        st = self.st
        key = "/tasks/" + task_id
        return st.TxnRequest(
            compare=[
                st.Compare(result=st.Compare.EQUAL, target=st.Compare.MOD, key=key, number=rev),
                # fencing: only while /leases/scheduler is still attached to our lease
                st.Compare(result=st.Compare.EQUAL, target=st.Compare.LEASE, key=LEADER_KEY,
                           number=self.lease_id)],
            success=[st.RequestOp(put=st.PutRequest(key=key, value=new.SerializeToString()))],
            failure=[st.RequestOp(range=st.RangeRequest(key=LEADER_KEY))])

    def schedule_pass(self):
        self.dirty = False
        decisions = self.decide(wall_ms())
        for off in range(0, len(decisions), BATCH_MAX):
            if not self.may_write():
                return
            self.write_batch(decisions[off:off + BATCH_MAX])

    def write_batch(self, chunk):
        try:
            resp = self.store.batch([self.txn_for(d.task_id, rev, new) for d, _, rev, new in chunk])
        except BusError as e:
            self.log.warn(f"placement batch failed, retrying in {RETRY_MS} ms "
                          f"decisions={len(chunk)} err={quote(str(e))}")
            self.retry_at_ms = mono_ms() + RETRY_MS
            return
        placed = conflicts = 0
        for (d, old, rev, new), tr in zip(chunk, resp.responses):
            if tr.succeeded:
                self.tasks[d.task_id] = (new, tr.header.revision)
                if d.node_id:
                    placed += 1
                    node = self.nodes.get(d.node_id)
                    host = node.description.hostname if node and node.description.hostname \
                        else d.node_id
                    self.log.info(f"placed task={d.task_id} node={host} "
                                  f"reason={policy.POLICY_NAME}")
                else:
                    self.log.info(f"unplaced task={d.task_id} reason={quote(d.reason)}")
                continue
            kvs = tr.responses[0].range.kvs if tr.responses else []
            if not kvs or kvs[0].lease != self.lease_id:
                self.step_down("the leader key is no longer on our lease")
                return
            conflicts += 1
            self.stale[d.task_id] = rev  # the watch brings the newer version
        self.placed_total += placed
        self.log.info(f"placement batch written decisions={len(chunk)} assigned={placed} "
                      f"conflicts={conflicts}")

    # -- the loop --

    def run(self, once=False, stopping=lambda: False, once_wait_ms=10000):
        """Runs until stopping() is true. With once: places what is pending as soon as it leads
        (waiting up to once_wait_ms for the lease), then returns. Returns 0, or 3 when --once
        never got the lease."""
        started = mono_ms()
        while not stopping():
            try:
                self.sync()
                break
            except BusError as e:
                self.log.warn(f"store list failed, retrying in 1 s err={quote(str(e))}")
                time.sleep(1)
        while not stopping():
            now = mono_ms()
            if now >= self.next_lease_ms:
                self.next_lease_ms = now + LEASE_KEEPALIVE_MS
                if self.leader:
                    self.keepalive()
                else:
                    self.campaign()
            if self.retry_at_ms and now >= self.retry_at_ms:
                self.retry_at_ms, self.dirty = 0, True
            if self.dirty and self.may_write():
                self.schedule_pass()
                if once:
                    return 0
            if once and not self.leader and now - started > once_wait_ms:
                self.log.err(f"--once: the scheduler lease stayed with {quote(self.leader_name)}")
                return 3
            wait = max(10, min(WATCH_MAX_MS, self.next_lease_ms - mono_ms()))
            try:
                resp = self.store.watch("/", self.revision + 1, wait)
            except InterruptedError:
                continue  # a signal: stopping() says whether to go on
            except BusError as e:
                self.log.debug(f"watch failed from={self.revision + 1} err={quote(str(e))}")
                time.sleep(0.2)
                continue
            self.on_watch(resp)
        return 0


def main(argv=None):
    ap = argparse.ArgumentParser(
        description="A custom shoal scheduler: tier=spot nodes first, then pack.")
    ap.add_argument("--state-dir", default=os.environ.get("SHOAL_STATE_DIR", "/var/lib/shoal"),
                    help="cluster state directory (default $SHOAL_STATE_DIR or /var/lib/shoal)")
    ap.add_argument("--once", action="store_true",
                    help="take the lease, place what is pending, release the lease and exit")
    ap.add_argument("--log", help="append the log to this file instead of stderr")
    ap.add_argument("--log-level", default="info", choices=["err", "warn", "info", "debug"])
    ap.add_argument("--instance", default=f"custom-scheduler-{socket.gethostname()}-{os.getpid()}",
                    help="name written in /leases/scheduler while this instance leads")
    ap.add_argument("--identity", default="scheduler",
                    help="key name under <state>/keys/private/ (default: scheduler)")
    ap.add_argument("--spot-label", default="=".join(policy.SPOT_LABEL),
                    help="node label that marks spot nodes (default tier=spot)")
    ap.add_argument("--proto-dir", help="shoal's proto/ directory (default: this tree's)")
    args = ap.parse_args(argv)

    if zmq is None:
        print("custom-scheduler: python3-zmq is missing (apt-get install python3-zmq)",
              file=sys.stderr)
        return 1
    if not zmq.has("curve"):
        print("custom-scheduler: this libzmq has no CURVE support", file=sys.stderr)
        return 1
    try:
        pb_bus, pb_store, pb_objects = shoalproto.load(args.proto_dir)
    except (shoalproto.ProtoError, ImportError) as e:
        print(f"custom-scheduler: {e}", file=sys.stderr)
        return 1
    key, sep, value = args.spot_label.partition("=")
    if not key or not sep or not value:
        print(f"custom-scheduler: --spot-label must be KEY=VALUE (got {args.spot_label!r})",
              file=sys.stderr)
        return 1
    try:
        log = Log(args.log, args.log_level)
    except OSError as e:
        print(f"custom-scheduler: cannot open the log file: {e}", file=sys.stderr)
        return 1
    try:
        store = Store(pb_bus, pb_store, args.state_dir, args.identity)
    except (OSError, ValueError) as e:
        print(f"custom-scheduler: cannot load the keys of state dir {args.state_dir}: {e}",
              file=sys.stderr)
        return 1

    stop = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.append(True))
    # a signal also wakes the watch long-poll at once, so stopping takes milliseconds
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    store.bus.wake_fd = wake_r
    sched = CustomScheduler(store, pb_store, pb_objects, args.instance, log, (key, value))
    log.info(f"started instance={args.instance} pid={os.getpid()} state_dir={args.state_dir} "
             f"policy={policy.POLICY_NAME} spot_label={key}={value}")
    rc = 0
    try:
        rc = sched.run(once=args.once, stopping=lambda: bool(stop))
    except BusError as e:
        log.err(f"store unreachable err={quote(str(e))}")
        rc = 1
    finally:
        sched.release()
        store.close()
        log.info(f"stopping instance={args.instance} placed_total={sched.placed_total}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
