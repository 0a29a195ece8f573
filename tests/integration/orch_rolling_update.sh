#!/usr/bin/env bash
# Start-first rolling update with parallelism 2 on 4 replicas, against a real cluster and dockerd:
# the running container count, sampled every 100 ms through the update, never drops below 4; the
# update ends COMPLETED with every task on the new spec.
source "$(dirname "$0")/../lib/cluster.sh"
cluster_start
svc=$(unique_name roll)
CMD='["sh","-c","trap \"exit 0\" TERM; while true; do sleep 0.2; done"]'

spec() { # spec ENV_JSON_ARRAY
    echo "{\"annotations\":{\"name\":\"$svc\"},\"task\":{\"container\":{\"image\":\"$IMAGE\",\"command\":$CMD,\"env\":$1}},\"replicated\":{\"replicas\":4},\"update\":{\"parallelism\":2,\"order\":\"START_FIRST\",\"monitor_ms\":1000}}"
}
update_state() {
    shoalctl call orchestrator orchestrator.ServiceInspect "{\"service\":\"$svc\"}" |
        grep -o '"state": *"[A-Z_]*"' | head -1 | sed 's/.*"\([A-Z_]*\)"$/\1/'
}
all_on_v2() {
    local ids; ids=$(containers_of "$svc")
    [ "$(echo "$ids" | grep -c .)" -eq 4 ] || return 1
    for c in $ids; do docker inspect -f '{{.Config.Env}}' "$c" | grep -q SHOAL_V=2 || return 1; done
}

shoalctl call orchestrator orchestrator.ServiceCreate "{\"spec\":$(spec '["SHOAL_V=1"]')}" >/dev/null ||
    fail "ServiceCreate with update order START_FIRST"
wait_for 60 "4 running containers" running_count "$svc" 4
orig=$(containers_of "$svc")
ok "4 replicas running"

samples=$STATE/samples
( while [ ! -e "$STATE/stop-sampling" ]; do
      docker ps -q --filter "label=shoal.service.name=$svc" | grep -c . >>"$samples"
      sleep 0.1
  done ) &
sampler=$!
sleep 0.5
shoalctl call orchestrator orchestrator.ServiceUpdate "{\"service\":\"$svc\",\"spec\":$(spec '["SHOAL_V=2"]')}" >/dev/null ||
    fail "ServiceUpdate"
wait_for 60 "update COMPLETED" bash -c "[ \"\$(shoalctl call orchestrator orchestrator.ServiceInspect '{\"service\":\"$svc\"}' | grep -o '\"state\": *\"[A-Z_]*\"' | head -1)\" = '\"state\": \"COMPLETED\"' ]"
wait_for 20 "4 containers on the new spec" all_on_v2
sleep 0.5
touch "$STATE/stop-sampling"; wait "$sampler"

n=$(grep -c . "$samples"); min=$(sort -n "$samples" | head -1); max=$(sort -n "$samples" | tail -1)
echo "samples=$n min=$min max=$max"
[ "$n" -ge 10 ] || fail "only $n samples taken"
[ "$min" -ge 4 ] || fail "running containers dropped to $min during a start-first update"
[ "$max" -le 6 ] || fail "$max containers at once: more than 4 + parallelism 2"
ok "start-first, parallelism 2: never fewer than 4 running (min $min, max $max over $n samples)"
for c in $orig; do containers_of "$svc" | grep -q "$c" && fail "old container $c still running"; done
[ "$(update_state)" = COMPLETED ] || fail "update state $(update_state)"
ok "every task replaced, update COMPLETED"
