#!/usr/bin/env bash
# Node failure without needless churn, on a real single-node cluster and dockerd: kill -9 of the
# only agent → the node goes DOWN and replacements are created at once (PENDING: nowhere to run),
# while the old tasks keep desired RUNNING; the agent comes back after a slow restart → the
# replacements are cancelled and the very same containers keep running.
source "$(dirname "$0")/../lib/cluster.sh"
cluster_start
svc=$(unique_name nd)
CMD=(sh -c 'trap "exit 0" TERM; while true; do sleep 0.2; done')
shoal service create --name "$svc" --replicas 2 "$IMAGE" "${CMD[@]}" >/dev/null || fail "service create"
wait_for 60 "2 running containers" running_count "$svc" 2
orig=$(containers_of "$svc")

node_state() { shoalctl call orchestrator orchestrator.NodeList '{}' | grep -o '"state": *"[A-Z]*"' | head -1 | sed 's/.*"\([A-Z]*\)"$/\1/'; }
tasks() { shoalctl call orchestrator orchestrator.TaskList "{\"service\":\"$svc\"}"; }
desired_running() { tasks | grep -c '"desired_state": *"RUNNING"'; }
node_is() { [ "$(node_state)" = "$1" ]; }
desired_running_is() { [ "$(desired_running)" -eq "$1" ]; }

pid=$(daemon_pid agent); [ -n "$pid" ] || fail "no agent pid"
kill -9 "$pid"
wait_for 10 "agent pid $pid gone" pid_gone "$pid"
wait_for 15 "node DOWN" node_is DOWN
wait_for 5 "2 replacements created next to the 2 old tasks" desired_running_is 4
ok "node DOWN: replacements created at once, old tasks still desired RUNNING"
sleep 2 # a slow restart
[ "$(containers_of "$svc")" = "$orig" ] || fail "containers changed while the agent was down"
shoal cluster up --dns-listen 127.0.0.1:$DNS_PORT >/dev/null || fail "cluster up after killing the agent"
wait_for 15 "node READY again" node_is READY
wait_for 15 "replacements cancelled" desired_running_is 2
sleep 3
[ "$(desired_running)" -eq 2 ] || fail "$(desired_running) tasks desired RUNNING after the node came back"
now=$(containers_of "$svc")
[ "$now" = "$orig" ] || fail "containers changed: before [$orig] after [$now]"
n=$(tasks | grep -c '"slot"')
[ "$n" -eq 2 ] || fail "$n tasks left, want 2 (cancelled replacements are deleted)"
ok "agent back: replacements cancelled, the same 2 containers kept"
