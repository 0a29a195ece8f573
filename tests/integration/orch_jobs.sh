#!/usr/bin/env bash
# A replicated job on a real cluster and dockerd: 4 completions, at most 2 at a time, each task
# `sh -c 'sleep 1'` → 4 COMPLETE tasks, never more than 2 containers running, no restart once
# done (no further containers or tasks), and ServiceList reports the progress (completed 4).
source "$(dirname "$0")/../lib/cluster.sh"
cluster_start
svc=$(unique_name job)

tasks() { shoalctl call orchestrator orchestrator.TaskList "{\"service\":\"$svc\"}"; }
count_state() { tasks | grep -c "\"state\": *\"$1\""; }
complete_is() { [ "$(count_state COMPLETE)" -eq "$1" ]; }

shoalctl call orchestrator orchestrator.ServiceCreate "{\"spec\":{\"annotations\":{\"name\":\"$svc\"},\"task\":{\"container\":{\"image\":\"$IMAGE\",\"command\":[\"sh\",\"-c\",\"sleep 1\"]}},\"replicated_job\":{\"max_concurrent\":2,\"total_completions\":4}}}" >/dev/null ||
    fail "ServiceCreate of a replicated job"
samples=$STATE/samples
( while [ ! -e "$STATE/stop-sampling" ]; do
      docker ps -q --filter "label=shoal.service.name=$svc" | grep -c . >>"$samples"
      sleep 0.1
  done ) &
sampler=$!
wait_for 60 "4 COMPLETE tasks" complete_is 4
ok "4 completions"
sleep 3
touch "$STATE/stop-sampling"; wait "$sampler"
max=$(sort -n "$samples" | tail -1)
[ "$max" -le 2 ] || fail "$max containers ran at once, max_concurrent is 2"
[ "$max" -ge 1 ] || fail "no container was ever seen running"
ok "at most $max containers at once (max_concurrent 2)"
running_count "$svc" 0 || fail "containers still running after the job completed"
n=$(tasks | grep -c '"slot"')
[ "$n" -eq 4 ] || fail "$n tasks, want exactly 4: a completed job restarted something"
[ "$(count_state FAILED)" -eq 0 ] || fail "a job task failed"
all=$(docker ps -aq --filter "label=shoal.service.name=$svc" | grep -c .)
[ "$all" -le 4 ] || fail "$all containers were created for 4 completions"
complete_is 4 || fail "COMPLETE tasks changed after the job finished"
ok "no restart after success: 4 tasks, $all containers, none running"
shoalctl call orchestrator orchestrator.ServiceList "{\"name_prefix\":\"$svc\"}" | grep -q '"completed": *4' ||
    fail "ServiceList does not report 4 completions"
shoalctl call orchestrator orchestrator.ServiceList "{\"name_prefix\":\"$svc\"}" | grep -q '"desired": *4' ||
    fail "ServiceList does not report 4 desired completions"
ok "ServiceList shows completed 4 of 4"
