"""policy — where the custom scheduler puts a task: spot nodes first, then pack.

This is the part of a scheduler that is about the placement rules. It is pure Python on plain
objects (NodeView, TaskView): no store, no socket, no clock and no protobuf, so it is unit-tested
on its own (test_policy.py) and scheduler.py only translates store objects into views and back.

Filters, in shoal-scheduler's order and with its wording (services/scheduler/filter.c), so a
task left PENDING explains itself the same way in `shoal service ps` whoever scheduled it:
  ready         node status READY and availability ACTIVE (PAUSE and DRAIN take no new task)
  resources     the task's CPU and memory reservations fit what the node has left
  constraints   ==/!= on node.id, node.hostname, node.role, node.platform.os/arch,
                node.labels.<name>, engine.labels.<name> (grammar of lib/constraint.c)
  platform      one of spec.placement.platforms, when the spec gives any
  host-ports    a port published in host mode is not already bound by a task on the node
  max-replicas  spec.placement.max_replicas tasks of the service per node

Ranking among the nodes that pass (the policy shoal's own strategies lack):
  1. nodes labelled tier=spot before all others: cheap, preemptible capacity is used first;
  2. then pack: the node that already runs the most tasks first, so whole nodes stay empty
     (and can be scaled down), then the one with the least free memory;
  3. node id, so equal inputs give equal outputs.
Every placement counts on its node at once, so the next task of the same pass sees the new load.

Cost: every task looks at every node, O(tasks x nodes) per pass. That is fine for an example and
for clusters of hundreds of nodes; shoal-scheduler's heap per task group is the scalable form.
"""

from dataclasses import dataclass, field

SPOT_LABEL = ("tier", "spot")
POLICY_NAME = "spot-pack"

# The filters, in the order they run; the first one a node fails is the one counted for it.
(FILTER_READY, FILTER_RESOURCES, FILTER_CONSTRAINTS, FILTER_PLATFORM, FILTER_HOST_PORTS,
 FILTER_MAX_REPLICAS) = range(6)


def _nodes(n):
    return f"{n} node{'' if n == 1 else 's'}"


_EXPLAIN = {
    FILTER_READY: lambda n: f"{_nodes(n)} not available for new tasks",
    FILTER_RESOURCES: lambda n: f"insufficient resources on {_nodes(n)}",
    FILTER_CONSTRAINTS: lambda n: f"scheduling constraints not satisfied on {_nodes(n)}",
    FILTER_PLATFORM: lambda n: f"unsupported platform on {_nodes(n)}",
    FILTER_HOST_PORTS: lambda n: f"host-mode port already in use on {_nodes(n)}",
    FILTER_MAX_REPLICAS: lambda n: "max replicas per node limit exceed",  # SwarmKit's words
}


@dataclass
class NodeView:
    """What the policy knows about a node: its description plus the load counted on it."""

    id: str
    hostname: str = ""
    role: str = "worker"  # "worker" | "manager"
    labels: dict = field(default_factory=dict)  # spec.annotations.labels
    engine_labels: dict = field(default_factory=dict)  # description.engine.labels
    os: str = ""
    arch: str = ""
    ready: bool = True  # status.state == READY
    active: bool = True  # spec.availability == ACTIVE
    nano_cpus: int = 0  # description.resources
    memory_bytes: int = 0
    reserved_cpus: int = 0  # sums over the tasks counted on the node
    reserved_memory: int = 0
    tasks: int = 0
    service_tasks: dict = field(default_factory=dict)  # service id -> tasks counted
    host_ports: dict = field(default_factory=dict)  # (protocol, port) -> tasks binding it

    def is_spot(self, spot_label=SPOT_LABEL):
        return self.labels.get(spot_label[0]) == spot_label[1]

    @property
    def free_cpus(self):
        return self.nano_cpus - self.reserved_cpus

    @property
    def free_memory(self):
        return self.memory_bytes - self.reserved_memory

    def add(self, task):
        """Counts `task` (a TaskView) on this node."""
        self.tasks += 1
        self.reserved_cpus += task.nano_cpus
        self.reserved_memory += task.memory_bytes
        self.service_tasks[task.service_id] = self.service_tasks.get(task.service_id, 0) + 1
        for p in task.host_ports:
            self.host_ports[p] = self.host_ports.get(p, 0) + 1


@dataclass
class TaskView:
    """What the policy needs of a PENDING task."""

    id: str
    service_id: str = ""
    spec_version: int = 0
    slot: int = 0
    node_id: str = ""  # set at creation for global services: only that node may take it
    constraints: tuple = ()
    platforms: tuple = ()  # (os, arch) pairs; "" accepts anything
    nano_cpus: int = 0  # spec.resources.reservations
    memory_bytes: int = 0
    max_replicas: int = 0  # per node, 0 = unlimited
    host_ports: tuple = ()  # (protocol, published port) of ports published in host mode


@dataclass
class Decision:
    task_id: str
    node_id: str = ""  # "" = not placed
    reason: str = ""  # for a task not placed: "no suitable node (...)"
    spot: bool = False


# ---- constraints (lib/constraint.c) ---------------------------------------------------------

_FIXED_KEYS = ("node.id", "node.hostname", "node.role", "node.platform.os", "node.platform.arch")
_LABEL_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")
_VALUE_CHARS = _LABEL_CHARS | set(" \t:*()?+[]\\^$|/")


class ConstraintError(ValueError):
    pass


def parse_constraint(expr):
    """'node.labels.zone==a' -> (key, label, op, value); key is lower case, label may be None.
    Raises ConstraintError for anything lib/constraint.c refuses."""
    eq, ne = expr.find("=="), expr.find("!=")
    if eq < 0 and ne < 0:
        raise ConstraintError(f'constraint "{expr}": expected an operator (== or !=)')
    at, op = (ne, "!=") if ne >= 0 and (eq < 0 or ne < eq) else (eq, "==")
    key, value = expr[:at].strip(" \t"), expr[at + 2:].strip(" \t")
    low, label = key.lower(), None
    if low in _FIXED_KEYS:
        pass
    elif low.startswith("node.labels.") or low.startswith("engine.labels."):
        prefix = "node.labels." if low.startswith("node.labels.") else "engine.labels."
        label, low = key[len(prefix):], prefix[:-1]
        if not label or not set(label) <= _LABEL_CHARS:
            raise ConstraintError(f'constraint "{expr}": bad label name')
    else:
        raise ConstraintError(f'constraint "{expr}": unknown key "{key}"')
    if not value or not set(value) <= _VALUE_CHARS:
        raise ConstraintError(f'constraint "{expr}": bad value')
    return (low, label, op, value)


def constraint_matches(c, node):
    key, label, op, value = c
    if key == "node.labels":
        have, exact = node.labels.get(label, ""), True
    elif key == "engine.labels":
        have, exact = node.engine_labels.get(label, ""), True
    else:
        have = {"node.id": node.id, "node.hostname": node.hostname, "node.role": node.role,
                "node.platform.os": node.os, "node.platform.arch": node.arch}[key]
        exact = False
    equal = have == value if exact else have.lower() == value.lower()
    if key == "node.platform.arch" and not equal:
        equal = _normal_arch(have).lower() == _normal_arch(value).lower()
    return equal if op == "==" else not equal


def _normal_arch(arch):
    """Docker's architecture names, as lib/constraint.c's constraint_normal_arch()."""
    return {"x86_64": "amd64", "x86-64": "amd64", "aarch64": "arm64"}.get(arch, arch)


# ---- filters ----------------------------------------------------------------------------------


class _Filters:
    """The filters for one task, with its constraints parsed once."""

    def __init__(self, task):
        self.task = task
        try:
            self.constraints = [parse_constraint(c) for c in task.constraints]
            self.invalid = False
        except ConstraintError:
            self.constraints, self.invalid = [], True

    def first_failure(self, node, only_resources=False):
        """The first filter `node` fails for the task, or None when it passes them all."""
        t = self.task
        if not only_resources and not (node.ready and node.active):
            return FILTER_READY
        if (t.nano_cpus > 0 or t.memory_bytes > 0) and (
                t.nano_cpus > node.free_cpus or t.memory_bytes > node.free_memory):
            return FILTER_RESOURCES
        if only_resources:
            return None
        if self.invalid or not all(constraint_matches(c, node) for c in self.constraints):
            return FILTER_CONSTRAINTS
        if t.platforms and not any(
                (not os_ or os_ == node.os)
                and (not arch or _normal_arch(arch) == _normal_arch(node.arch))
                for os_, arch in t.platforms):
            return FILTER_PLATFORM
        if any(node.host_ports.get(p) for p in t.host_ports):
            return FILTER_HOST_PORTS
        if t.max_replicas > 0 and node.service_tasks.get(t.service_id, 0) >= t.max_replicas:
            return FILTER_MAX_REPLICAS
        return None


def no_suitable_node(failures):
    """status.err for a task no node takes, from {filter: nodes that failed it first}."""
    order = sorted((f for f in failures if failures[f]), key=lambda f: (-failures[f], f))
    why = "; ".join(_EXPLAIN[f](failures[f]) for f in order)
    return f"no suitable node ({why})" if why else "no suitable node"


def rank_key(node, spot_label=SPOT_LABEL):
    """Lower is better: spot first, then the most loaded node (pack), then node id."""
    return (0 if node.is_spot(spot_label) else 1, -node.tasks, node.free_memory, node.id)


def place(tasks, nodes, spot_label=SPOT_LABEL):
    """Decides where each PENDING task goes. `nodes` maps node id -> NodeView and is updated
    with every placement. Returns one Decision per task decided: placed (node_id set) or not
    placed (reason set). A preassigned task whose node is not known yet gets no decision."""
    decisions = []
    pre = sorted((t for t in tasks if t.node_id), key=lambda t: t.id)
    free = sorted((t for t in tasks if not t.node_id),
                  key=lambda t: (t.service_id, t.spec_version, t.slot, t.id))
    # Preassigned tasks (global services) first, as in SwarmKit: they can run nowhere else.
    for t in pre:
        node = nodes.get(t.node_id)
        if node is None:
            continue
        f = _Filters(t).first_failure(node, only_resources=True)
        if f is None:
            node.add(t)
            decisions.append(Decision(t.id, node.id, spot=node.is_spot(spot_label)))
        else:
            decisions.append(Decision(t.id, reason=no_suitable_node({f: 1})))
    for t in free:
        filters, failures, best = _Filters(t), {}, None
        for node in nodes.values():
            f = filters.first_failure(node)
            if f is not None:
                failures[f] = failures.get(f, 0) + 1
            elif best is None or rank_key(node, spot_label) < rank_key(best, spot_label):
                best = node
        if best is None:
            decisions.append(Decision(t.id, reason=no_suitable_node(failures)))
        else:
            best.add(t)
            decisions.append(Decision(t.id, best.id, spot=best.is_spot(spot_label)))
    return decisions
