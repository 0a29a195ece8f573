"""Unit tests of policy.py: spot nodes first, then pack, under shoal's filters.

Run from the repository root: /usr/bin/python3 -m unittest examples/custom-scheduler/test_policy.py
Needs nothing but Python 3 (no zmq, no protobuf, no cluster).
"""

import os
import sys
import unittest

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import policy  # noqa: E402
from policy import NodeView, TaskView  # noqa: E402

GiB = 1 << 30


def cluster(**overrides):
    """Four idle nodes: two spot (s1, s2), two on-demand (d1, d2), 4 GiB and 2 CPUs each."""
    nodes = {
        "s1": NodeView("s1", hostname="spot-1", labels={"tier": "spot"}),
        "s2": NodeView("s2", hostname="spot-2", labels={"tier": "spot"}),
        "d1": NodeView("d1", hostname="ondemand-1", labels={"tier": "ondemand"}),
        "d2": NodeView("d2", hostname="ondemand-2"),
    }
    for n in nodes.values():
        n.memory_bytes, n.nano_cpus, n.os, n.arch = 4 * GiB, 2_000_000_000, "linux", "x86_64"
    for nid, fields in overrides.items():
        for k, v in fields.items():
            setattr(nodes[nid], k, v)
    return nodes


def tasks(n, service="web", **fields):
    return [TaskView(f"{service}-{i}", service_id=service, spec_version=1, slot=i, **fields)
            for i in range(1, n + 1)]


def placed_on(decisions):
    return [d.node_id for d in decisions]


class SpotThenPack(unittest.TestCase):
    def test_tasks_go_to_a_spot_node_before_any_on_demand_node(self):
        nodes = cluster(d1={"tasks": 5}, d2={"tasks": 9})  # busier, but not spot
        d = policy.place(tasks(1), nodes)
        self.assertIn(d[0].node_id, ("s1", "s2"))
        self.assertTrue(d[0].spot)

    def test_pack_fills_the_most_loaded_spot_node_first(self):
        nodes = cluster(s2={"tasks": 2})
        d = policy.place(tasks(3), nodes)
        self.assertEqual(placed_on(d), ["s2", "s2", "s2"])
        self.assertEqual(nodes["s2"].tasks, 5)
        self.assertEqual(nodes["s1"].tasks, 0, "pack keeps the idle spot node empty")

    def test_equal_idle_spot_nodes_pack_onto_one_node_not_spread(self):
        d = policy.place(tasks(4), cluster())
        self.assertEqual(placed_on(d), ["s1"] * 4)

    def test_on_demand_nodes_are_used_only_when_no_spot_node_fits(self):
        # each spot node has room for one 2 GiB task after its reservations
        nodes = cluster(s1={"reserved_memory": 2 * GiB}, s2={"reserved_memory": 2 * GiB})
        d = policy.place(tasks(4, memory_bytes=2 * GiB), nodes)
        got = placed_on(d)
        self.assertEqual(sorted(got[:2]), ["s1", "s2"], "spot capacity is used up first")
        self.assertEqual(got[2:], ["d1", "d1"], "then pack onto one on-demand node")
        self.assertEqual(nodes["d2"].tasks, 0)

    def test_among_equally_loaded_nodes_the_one_with_less_free_memory_wins(self):
        nodes = cluster(s1={"memory_bytes": 8 * GiB}, s2={"memory_bytes": 2 * GiB})
        d = policy.place(tasks(1), nodes)
        self.assertEqual(placed_on(d), ["s2"])

    def test_spot_label_is_configurable(self):
        nodes = cluster(d2={"labels": {"pool": "cheap"}})
        d = policy.place(tasks(1), nodes, spot_label=("pool", "cheap"))
        self.assertEqual(placed_on(d), ["d2"])


class Filters(unittest.TestCase):
    def test_down_paused_and_drained_nodes_take_no_task(self):
        nodes = cluster(s1={"ready": False}, s2={"active": False}, d1={"active": False})
        d = policy.place(tasks(2), nodes)
        self.assertEqual(placed_on(d), ["d2", "d2"])

    def test_memory_reservations_are_respected(self):
        nodes = cluster()
        d = policy.place(tasks(5, memory_bytes=3 * GiB), nodes)
        got = placed_on(d)
        self.assertEqual(got[:4], ["s1", "s2", "d1", "d2"], "one 3 GiB task per 4 GiB node")
        self.assertEqual(got[4], "")
        self.assertEqual(d[4].reason, "no suitable node (insufficient resources on 4 nodes)")

    def test_cpu_reservations_are_respected(self):
        nodes = cluster(s1={"nano_cpus": 1_000_000_000})
        d = policy.place(tasks(1, nano_cpus=1_500_000_000), nodes)
        self.assertEqual(placed_on(d), ["s2"])

    def test_constraints_on_labels_hostname_role_and_id(self):
        nodes = cluster(d2={"role": "manager"})
        cases = {
            ("node.labels.tier==ondemand",): "d1",
            ("node.labels.tier!=spot", "node.role==worker"): "d1",
            ("node.hostname==ONDEMAND-2",): "d2",  # hostname compares case-insensitively
            ("node.role==manager",): "d2",
            ("node.id==s2",): "s2",
            ("node.id!=s1",): "s2",
            ("node.platform.os==linux", "node.labels.tier==spot"): "s1",
            ("engine.labels.gpu==yes",): "",
        }
        for constraints, want in cases.items():
            nodes = cluster(d2={"role": "manager"})
            d = policy.place(tasks(1, constraints=constraints), nodes)
            self.assertEqual(d[0].node_id, want, constraints)

    def test_label_values_compare_exactly(self):
        d = policy.place(tasks(1, constraints=("node.labels.tier==SPOT",)), cluster())
        self.assertEqual(d[0].reason,
                         "no suitable node (scheduling constraints not satisfied on 4 nodes)")

    def test_an_invalid_constraint_matches_no_node(self):
        d = policy.place(tasks(1, constraints=("node.label.tier==spot",)), cluster())
        self.assertEqual(d[0].node_id, "")

    def test_max_replicas_per_node_moves_on_to_the_next_spot_node(self):
        nodes = cluster()
        d = policy.place(tasks(3, max_replicas=1), nodes)
        self.assertEqual(sorted(placed_on(d)[:2]), ["s1", "s2"])
        self.assertEqual(placed_on(d)[2], "d1")

    def test_platforms(self):
        nodes = cluster(s1={"arch": "aarch64"})
        d = policy.place(tasks(1, platforms=(("linux", "arm64"),)), nodes)
        self.assertEqual(placed_on(d), ["s1"])

    def test_constraint_on_arch_accepts_docker_and_kernel_names(self):
        d = policy.place(tasks(1, constraints=("node.platform.arch==amd64",)), cluster())
        self.assertEqual(placed_on(d), ["s1"], "x86_64 nodes match amd64")

    def test_a_host_mode_port_is_bound_once_per_node(self):
        nodes = cluster()
        d = policy.place(tasks(3, host_ports=((0, 8080),)), nodes)
        self.assertEqual(placed_on(d), ["s1", "s2", "d1"], "pack yields to the port conflict")
        d = policy.place(tasks(2, service="other", host_ports=((0, 8080),)),
                         {k: nodes[k] for k in ("s1", "s2")})
        self.assertEqual(d[0].reason,
                         "no suitable node (host-mode port already in use on 2 nodes)")

    def test_reason_lists_the_most_common_failure_first(self):
        nodes = cluster(s1={"ready": False})
        d = policy.place(tasks(1, constraints=("node.labels.tier==gpu",)), nodes)
        self.assertEqual(d[0].reason, "no suitable node (scheduling constraints not satisfied "
                                      "on 3 nodes; 1 node not available for new tasks)")

    def test_no_nodes_at_all(self):
        d = policy.place(tasks(1), {})
        self.assertEqual(d[0].reason, "no suitable node")


class Preassigned(unittest.TestCase):
    def test_a_global_task_stays_on_its_node_even_when_a_spot_node_is_free(self):
        nodes = cluster()
        d = policy.place([TaskView("g1", service_id="g", node_id="d2")], nodes)
        self.assertEqual(placed_on(d), ["d2"])

    def test_a_global_task_waits_for_an_unknown_node(self):
        self.assertEqual(policy.place([TaskView("g1", node_id="nope")], cluster()), [])

    def test_a_global_task_that_does_not_fit_its_node_says_why(self):
        d = policy.place([TaskView("g1", node_id="d2", memory_bytes=8 * GiB)], cluster())
        self.assertEqual(d[0].reason, "no suitable node (insufficient resources on 1 node)")


class ConstraintParser(unittest.TestCase):
    def test_parses_like_lib_constraint(self):
        self.assertEqual(policy.parse_constraint(" Node.Labels.zone == eu-1 "),
                         ("node.labels", "zone", "==", "eu-1"))
        self.assertEqual(policy.parse_constraint("node.role!=manager"),
                         ("node.role", None, "!=", "manager"))

    def test_rejects_what_lib_constraint_rejects(self):
        for bad in ("node.role=worker", "node.label.x==1", "node.labels.==1", "node.role==",
                    'node.role=="x"'):
            with self.assertRaises(policy.ConstraintError, msg=bad):
                policy.parse_constraint(bad)


if __name__ == "__main__":
    unittest.main()
