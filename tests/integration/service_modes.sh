#!/usr/bin/env bash
# Global mode, placement constraints, spec validation, and a missing image.
source "$(dirname "$0")/../lib/cluster.sh"
cluster_start
CMD=(sh -c 'trap "exit 0" TERM; while true; do sleep 0.2; done')

g=$(unique_name glob)
shoal service create --name "$g" --mode global "$IMAGE" "${CMD[@]}" || fail "global create"
running_count "$g" 1 || fail "global service runs $(containers_of "$g" | wc -l) tasks on one node, want 1"
ok "global service runs one task on the single node"

c=$(unique_name pinned)
shoal service create --detach --name "$c" --replicas 2 --constraint 'node.labels.zone==mars' "$IMAGE" "${CMD[@]}" >/dev/null || fail "create with constraint"
wait_for 15 "tasks pending with a reason" bash -c "shoal service ps $c | grep -q 'no suitable node'"
shoal service ps "$c" | grep -qi pending || fail "tasks are not PENDING"
running_count "$c" 0 || fail "a task ran despite the constraint"
ok "unsatisfiable constraint leaves tasks PENDING with a reason"
node=$(shoal node ls -q | head -1)
shoal node update --label-add zone=mars "$node" >/dev/null || fail "node update --label-add"
wait_for 30 "constraint satisfied after labelling the node" running_count "$c" 2
ok "labelling the node lets them run"

before=$(shoal service ls -q | sort)
out=$(shoal service create --name "-bad name" --replicas -3 --env =x --restart-delay -5s "" 2>&1) && fail "bad spec accepted"
echo "$out"
[ "$(echo "$out" | wc -l)" -le 2 ] || fail "error is not one clear line"
grep -q 'shoal:' <<<"$out" || fail "error line lacks the shoal: prefix"
after=$(shoal service ls -q | sort)
[ "$before" = "$after" ] || fail "a bad spec wrote something"
out=$(shoal service create --name bad.img "" 2>&1) && fail "empty image accepted"
grep -qi image <<<"$out" || fail "error does not name the image field: $out"
out=$(shoalctl call orchestrator orchestrator.ServiceCreate \
  '{"spec":{"annotations":{"name":"-bad"},"task":{"container":{"image":"","env":["=x"]},"restart":{"delay_ms":-5}},"replicated":{"replicas":3}}}' 2>&1) && fail "bad spec accepted over the bus"
echo "$out"
for field in annotations.name task.container.image task.container.env task.restart.delay; do
    grep -q "$field" <<<"$out" || fail "validation error does not name $field"
done
[ "$before" = "$(shoal service ls -q | sort)" ] || fail "a bad spec wrote something"
ok "bad spec gets a clear error naming every bad field and writes nothing"

m=$(unique_name missing)
out=$(shoal service create --name "$m" --replicas 1 --timeout 60 127.0.0.1:1/nosuch:1 true 2>&1) && fail "create with a missing image succeeded"
echo "$out"
shoal service ps "$m" | grep -qi rejected || fail "task not REJECTED for a missing image"
ok "missing image → task REJECTED with the Engine's message"
