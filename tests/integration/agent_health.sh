#!/usr/bin/env bash
# Docker health checks through the agent (issue 5 item 1): a task with a health check is RUNNING
# but not healthy until Docker's first health_status: healthy event, then healthy; a container
# whose check starts failing is reported FAILED "task: container unhealthy", stopped, and
# replaced by a new task (restart policy), with a new container.
source "$(dirname "$0")/../lib/cluster.sh"
ok() { echo "ok: $* (at ${SECONDS}s)"; }
t0=$SECONDS
cluster_start
echo "cluster up in $((SECONDS - t0))s"

# task_json SERVICE: its tasks as a JSON array (shoal.Task)
task_json() { shoal service ps "$1" --json 2>/dev/null || echo '[]'; }
create() { # create NAME HEALTH_CMD INTERVAL_MS RETRIES SHELL_SCRIPT
    local spec
    spec=$(jq -nc --arg name "$1" --arg hc "$2" --argjson iv "$3" --argjson re "$4" \
        --arg img "$IMAGE" --arg sh "$5" \
        '{spec: {annotations: {name: $name}, replicated: {replicas: 1},
          task: {container: {image: $img, init: true, command: ["sh", "-c", $sh],
                             healthcheck: {test: ["CMD-SHELL", $hc], interval_ms: $iv,
                                           timeout_ms: 10000, retries: $re}}}}}')
    shoalctl call orchestrator orchestrator.ServiceCreate "$spec" >/dev/null || fail "ServiceCreate $1"
}

# Both services at once: Docker's starts dominate the time of this test.
h=$(unique_name healthy)
u=$(unique_name unhealthy)
create "$h" "true" 3000 10 'sleep 100000' # generous: a loaded machine must not fail it
create "$u" "test -f /tmp/ok" 1000 2 'touch /tmp/ok; sleep 3; rm -f /tmp/ok; sleep 100000'

# Watch both: the healthy service's task must be seen RUNNING with healthy=false before its
# first check passes, then healthy=true; the other's first task healthy, then FAILED.
h_unhealthy_running=0 h_state="" u_first="" u_cid="" u_seen_healthy=0 u_state=""
end=$((SECONDS + 60))
while ((SECONDS < end)); do
    st=$(task_json "$h" | jq -r '[.[] | select(.desired_state == "RUNNING")][0] |
        "\(.status.state // "") \(.status.healthy // false)"')
    [ "$st" = "RUNNING false" ] && [ "$h_state" != "RUNNING true" ] && h_unhealthy_running=1
    [ "$h_state" = "RUNNING true" ] || h_state=$st
    uj=$(task_json "$u")
    [ -n "$u_first" ] || u_first=$(jq -r 'sort_by(.meta.created_at_ms) | .[0].meta.id // ""' <<<"$uj")
    if [ -n "$u_first" ]; then
        read -r u_state u_healthy u_cid < <(jq -r ".[] | select(.meta.id == \"$u_first\") |
            \"\(.status.state) \(.status.healthy // false) \(.status.container.container_id // \"\")\"" <<<"$uj")
        [ "$u_healthy" = true ] && u_seen_healthy=1
    fi
    [ "$h_state" = "RUNNING true" ] && [ "$u_state" = FAILED ] && break
    sleep 0.2
done
[ "$h_state" = "RUNNING true" ] || fail "healthy service's task never reported healthy (last: $h_state)"
[ $h_unhealthy_running = 1 ] || fail "task was never seen RUNNING with healthy=false before its first check passed"
ok "task with a health check: RUNNING healthy=false until Docker says healthy, then healthy=true"

[ $u_seen_healthy = 1 ] || fail "the first task of $u was never reported healthy"
[ "$u_state" = FAILED ] || fail "the first task of $u is $u_state, not FAILED"
err=$(task_json "$u" | jq -r ".[] | select(.meta.id == \"$u_first\") | .status.err")
[ "$err" = "task: container unhealthy" ] || fail "unhealthy task's err is \"$err\""
ok "task $u_first went healthy, then FAILED with err \"$err\" once its check failed"

[ -n "$u_cid" ] || fail "no container id for task $u_first"
wait_for 20 "the unhealthy container stopped" bash -c "[ \"\$(docker inspect -f '{{.State.Running}}' $u_cid 2>/dev/null)\" = false ]"
ok "its container ${u_cid:0:12} was stopped"

wait_for 30 "a replacement task running in a new container" bash -c "shoal service ps $u --json | jq -e '[.[] | select(.meta.id != \"$u_first\" and .desired_state == \"RUNNING\" and .status.state == \"RUNNING\" and .status.container.container_id != \"$u_cid\")] | length == 1' >/dev/null"
new=$(task_json "$u" | jq -r ".[] | select(.meta.id != \"$u_first\" and .status.state == \"RUNNING\") | .meta.id" | head -1)
slot_old=$(task_json "$u" | jq -r ".[] | select(.meta.id == \"$u_first\") | .slot")
slot_new=$(task_json "$u" | jq -r ".[] | select(.meta.id == \"$new\") | .slot")
[ "$slot_old" = "$slot_new" ] || fail "replacement took slot $slot_new, not $slot_old"
ok "replaced by task $new (slot $slot_new) in a new container"
