#!/usr/bin/env bash
# The shoal CLI's service flags (issue 5): every flag lands in the spec `service create --dry-run`
# prints, and every bad value is one error line naming the flag. No cluster needed for that part.
# Then, when root and a Docker Engine are there, a short cluster part: inspect --pretty, ls, ps
# health, `service update` that rolls back (non-zero exit, docker's "rollback: ..." line) and
# `service rollback`.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
SHOAL=${BIN:-$ROOT/bin}/shoal
PY=/usr/bin/python3
[ -x "$SHOAL" ] || { echo "SKIP: $SHOAL not built (run: make all)"; exit 77; }
[ -x "$PY" ] || { echo "SKIP: $PY is missing"; exit 77; }

fail() { echo "FAIL: $*"; exit 1; }
ok() { echo "ok: $*"; }

# check EXPR: EXPR (Python, over the spec JSON on stdin as `j`; g('a', 'b', d=0) reads a path
# with a default, since default values are left out of the JSON) must be true.
check() {
    "$PY" -c '
import json, sys
j = json.load(sys.stdin)
def g(*path, d=None):
    x = j
    for k in path:
        if isinstance(x, dict) and k in x: x = x[k]
        elif isinstance(x, list) and isinstance(k, int) and k < len(x): x = x[k]
        else: return d
    return x
sys.exit(0 if eval("(" + sys.argv[1] + ")") else 1)' "$1"
}

# spec_has DESCRIPTION EXPR FLAGS...: `service create --dry-run FLAGS busybox` satisfies EXPR.
spec_has() {
    local what=$1 expr=$2; shift 2
    local out
    out=$("$SHOAL" service create --dry-run --name t "$@" busybox 2>&1) || fail "$what: shoal failed: $out"
    echo "$out" | check "$expr" || fail "$what: spec does not satisfy [$expr]: $out"
}

# rejects FLAG ARGS...: `service create --dry-run ARGS busybox` fails with one line naming --FLAG.
rejects() {
    local flag=$1; shift
    local out
    out=$("$SHOAL" service create --dry-run "$@" busybox 2>&1) && fail "accepted: $*"
    [ "$(echo "$out" | wc -l)" -eq 1 ] || fail "more than one line for [$*]: $out"
    grep -q -- "^shoal: service create: --$flag" <<<"$out" ||
        fail "error for [$*] does not start with --$flag: $out"
}

# ---- every new flag lands in the spec ------------------------------------------------------
spec_has "health check" \
    'g("task","container","healthcheck","test") == ["CMD-SHELL", "nc -z localhost 80"] and
     g("task","container","healthcheck","interval_ms") == 2000 and
     g("task","container","healthcheck","timeout_ms") == 500 and
     g("task","container","healthcheck","retries") == 3 and
     g("task","container","healthcheck","start_period_ms") == 90000' \
    --health-cmd 'nc -z localhost 80' --health-interval 2s --health-timeout 500ms \
    --health-retries 3 --health-start-period 1m30s
spec_has "no health check" 'g("task","container","healthcheck","test") == ["NONE"]' --no-healthcheck
ok "--health-cmd/-interval/-timeout/-retries/-start-period and --no-healthcheck"

spec_has "restart policy" \
    'g("task","restart","condition") == "ON_FAILURE" and g("task","restart","delay_ms") == 250 and
     g("task","restart","window_ms") == 60000 and g("task","restart","max_attempts") == 4' \
    --restart-condition on-failure --restart-delay 250ms --restart-window 1m --restart-max-attempts 4
ok "--restart-window and --restart-max-attempts"

spec_has "update config" \
    'g("update","parallelism") == 2 and g("update","delay_ms") == 3000 and
     g("update","monitor_ms") == 4000 and g("update","failure_action") == "ROLLBACK" and
     abs(g("update","max_failure_ratio") - 0.25) < 1e-6 and g("update","order") == "START_FIRST"' \
    --update-parallelism 2 --update-delay 3s --update-monitor 4s --update-failure-action rollback \
    --update-max-failure-ratio 0.25 --update-order start-first
spec_has "docker's update and rollback defaults" \
    'g("update") == {"parallelism": 1, "monitor_ms": 5000} and
     g("rollback") == {"parallelism": 1, "monitor_ms": 5000}' --replicas 2
spec_has "rollback config" \
    'g("rollback","parallelism", d=0) == 0 and g("rollback","delay_ms") == 1000 and
     g("rollback","monitor_ms") == 2000 and g("rollback","failure_action") == "CONTINUE" and
     abs(g("rollback","max_failure_ratio") - 0.5) < 1e-6 and g("rollback","order") == "START_FIRST"
     and g("update","parallelism") == 1' \
    --rollback-parallelism 0 --rollback-delay 1s --rollback-monitor 2s \
    --rollback-failure-action continue --rollback-max-failure-ratio 0.5 --rollback-order start-first
ok "--update-* and --rollback-* (parallelism, delay, monitor, failure action, max failure ratio, order)"

spec_has "nested placement preferences in order" \
    '[p["spread_descriptor"] for p in g("task","placement","preferences")] ==
     ["node.labels.zone", "node.labels.rack"]' \
    --placement-pref spread=node.labels.zone --placement-pref spread=node.labels.rack
spec_has "strategy binpack" 'g("task","placement","strategy") == "binpack"' --placement-strategy binpack
spec_has "strategy random" 'g("task","placement","strategy") == "random"' --placement-strategy random
spec_has "max replicas per node" 'g("task","placement","max_replicas") == 2' --max-replicas 2
spec_has "docker's spelling" 'g("task","placement","max_replicas") == 3' --replicas-max-per-node 3
spec_has "platforms" \
    'g("task","placement","platforms") == [{"os": "linux", "architecture": "amd64"}, {"os": "linux"}]' \
    --platform linux/amd64 --platform linux
spec_has "constraints" 'g("task","placement","constraints") == ["node.labels.zone==a"]' \
    --constraint node.labels.zone==a
ok "--placement-pref (repeatable), --placement-strategy, --max-replicas, --platform"

spec_has "replicated" 'g("replicated","replicas") == 3 and "global" not in j' --replicas 3
spec_has "global" '"global" in j and "replicated" not in j' --mode global
spec_has "replicated job: --replicas is the total, run that many at once" \
    'g("replicated_job") == {"max_concurrent": 4, "total_completions": 4} and
     g("task","restart","condition") == "ON_FAILURE" and "update" not in j and "rollback" not in j' \
    --mode replicated-job --replicas 4
spec_has "replicated job with --max-concurrent" \
    'g("replicated_job") == {"max_concurrent": 2, "total_completions": 6}' \
    --mode replicated-job --replicas 6 --max-concurrent 2
spec_has "replicated job with only --max-concurrent" \
    'g("replicated_job") == {"max_concurrent": 3, "total_completions": 3}' \
    --mode replicated-job --max-concurrent 3
spec_has "replicated job restarting on any exit" 'g("task","restart","condition", d="ANY") == "ANY"' \
    --mode replicated-job --restart-condition any
spec_has "global job" '"global_job" in j and "update" not in j' --mode global-job
ok "--mode replicated|global|replicated-job|global-job, --max-concurrent, --replicas for jobs"

spec_has "task history" 'g("task_history_limit") == 10' --task-history-limit 10
spec_has "resources" \
    'g("task","resources","reservations") == {"nano_cpus": 500000000, "memory_bytes": 67108864} and
     g("task","resources","limits") == {"nano_cpus": 1500000000, "memory_bytes": 1073741824}' \
    --reserve-cpu 0.5 --reserve-memory 64M --limit-cpu 1.5 --limit-memory 1G
spec_has "ports, short and long syntax" \
    'g("endpoint","ports") == [
       {"protocol": "UDP", "target_port": 80, "published_port": 8080},
       {"target_port": 80, "published_port": 8081, "publish_mode": "HOST"},
       {"target_port": 443}]' \
    --publish 8080:80/udp --publish mode=host,target=80,published=8081 -p 443
ok "--task-history-limit, --reserve-*/--limit-*, --publish short and long syntax"

# ---- bad values: one line, naming the flag --------------------------------------------------
rejects health-interval --health-interval abc
rejects health-timeout --health-timeout -1s
rejects health-start-period --health-start-period 5parsecs
rejects health-retries --health-retries x
rejects health-retries --health-retries 99999999999
rejects no-healthcheck --no-healthcheck --health-cmd true
rejects no-healthcheck --health-interval 1s --no-healthcheck
rejects restart-window --restart-window 5parsecs
rejects restart-max-attempts --restart-max-attempts -1
rejects restart-condition --restart-condition sometimes
rejects update-parallelism --update-parallelism two
rejects update-delay --update-delay 1y
rejects update-monitor --update-monitor soon
rejects update-failure-action --update-failure-action explode
rejects update-max-failure-ratio --update-max-failure-ratio 1.5
rejects update-max-failure-ratio --update-max-failure-ratio -0.1
rejects update-max-failure-ratio --update-max-failure-ratio half
rejects update-order --update-order sideways
rejects rollback-parallelism --rollback-parallelism x
rejects rollback-delay --rollback-delay x
rejects rollback-monitor --rollback-monitor x
rejects rollback-failure-action --rollback-failure-action rollback
rejects rollback-max-failure-ratio --rollback-max-failure-ratio 2
rejects rollback-order --rollback-order x
rejects placement-pref --placement-pref node.labels.zone
rejects placement-strategy --placement-strategy fastest
rejects max-replicas --max-replicas x
rejects replicas-max-per-node --mode global --replicas-max-per-node 2
rejects platform --platform /amd64
rejects platform --platform linux/arm64/v8
rejects mode --mode batch
rejects replicas --mode global-job --replicas 2
rejects replicas --mode global --replicas 2
rejects max-concurrent --max-concurrent 2
rejects max-concurrent --mode replicated-job --max-concurrent 0
rejects replicas --mode replicated-job --replicas 0
rejects max-concurrent --mode replicated-job --max-concurrent x
rejects update-delay --mode replicated-job --update-delay 1s
rejects rollback-order --mode global-job --rollback-order start-first
rejects task-history-limit --task-history-limit many
rejects reserve-cpu --reserve-cpu lots
rejects limit-memory --limit-memory 12Q
rejects publish --publish 99999:80
rejects publish --publish mode=host,published=80
ok "bad values are one line naming the flag"

# ---- with a cluster --------------------------------------------------------------------------
if [ "$(id -u)" != 0 ] || ! curl -sf --unix-socket /var/run/docker.sock http://engine/_ping >/dev/null; then
    ok "cluster part skipped (needs root and a Docker Engine)"
    exit 0
fi
source "$ROOT/tests/lib/cluster.sh"
cluster_start
CMD=(sh -c 'trap "exit 0" TERM; while true; do sleep 0.2; done')

svc=$(unique_name flags)
out=$(shoal service create --name "$svc" --replicas 2 --health-cmd true --health-interval 1s \
    --placement-strategy spread --placement-pref spread=node.labels.zone --max-replicas 5 \
    --update-failure-action rollback --update-max-failure-ratio 0 --rollback-order stop-first \
    --update-monitor 2s --rollback-monitor 1s \
    --task-history-limit 3 --publish 18080:80 "$IMAGE" "${CMD[@]}" 2>&1) ||
    fail "create a service with the new flags: $out"
echo "$out"
pretty=$(shoal service inspect --pretty "$svc")
echo "$pretty"
for want in "Service Mode: *Replicated" "^Placement:" " Strategy: *spread" \
    " Preferences: *\[spread=node.labels.zone\]" " Max Replicas Per Node: *5" "^UpdateConfig:" \
    " On failure: *rollback" " Monitoring Period: *2s" " Max failure ratio: *0" "^RollbackConfig:" \
    " Monitoring Period: *1s" " Rollback order: *stop-first" \
    "^Task History Limit: *3" " Healthcheck:" "  Interval = 1s" "	 Test = CMD-SHELL"; do
    grep -q -- "$want" <<<"$pretty" || fail "inspect --pretty lacks \"$want\""
done
ok "service inspect --pretty shows placement, update and rollback config, health"

version() { shoal service inspect "$svc" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)[0]["meta"]["version"])'; }
before=$(version)
shoal service update --dry-run --update-parallelism 3 --placement-pref-add spread=node.labels.rack \
    --platform-add linux "$svc" |
    check 'g("update","parallelism") == 3 and len(g("task","placement","preferences")) == 2 and
           g("task","placement","platforms") == [{"os": "linux"}] and g("task_history_limit") == 3' ||
    fail "update --dry-run does not print the edited spec"
[ "$(version)" = "$before" ] || fail "update --dry-run wrote the service"
ok "service update --dry-run prints the edited spec and writes nothing"

ls_out=$(shoal service ls)
echo "$ls_out"
echo "$ls_out" | grep "$svc" | grep -q '2/2 (max 5 per node)' || fail "service ls REPLICAS is not docker's '2/2 (max 5 per node)'"
echo "$ls_out" | grep "$svc" | grep -q '\*:18080->80/tcp' || fail "service ls PORTS lacks *:18080->80/tcp"
ps_out=$(shoal service ps -f desired-state=running "$svc")
echo "$ps_out"
[ "$(echo "$ps_out" | grep -cE 'Running [a-z0-9 ]+ ago \((healthy|health: starting)\)')" -eq 2 ] ||
    fail "service ps CURRENT STATE does not read 'Running ... ago (health)' for both tasks"
ok "service ls REPLICAS/PORTS and service ps health"

# A new spec whose tasks fail at once: the orchestrator rolls back, the CLI says so and fails.
out=$(shoal service update --args "sh -c 'exit 3'" --timeout 60 "$svc" 2>&1) && fail "an update that rolled back exited 0: $out"
echo "$out"
grep -q '^rollback: update rolled back due to failure or early termination of task' <<<"$out" ||
    fail "no docker-style rollback line"
echo "$out" | tail -1 | grep -q "^shoal: service \"$svc\": update rolled back" || fail "last line does not say the update was rolled back"
state=$(shoal service inspect "$svc" | "$PY" -c 'import json,sys; s=json.load(sys.stdin)[0]; print(s["update_status"]["state"], " ".join(s["spec"]["task"]["container"].get("args", [])))')
[ "${state%% *}" = ROLLBACK_COMPLETED ] || fail "update status is $state, want ROLLBACK_COMPLETED"
grep -q "exit 3" <<<"$state" && fail "the failing args are still the spec: $state"
ok "service update that fails rolls back: 'rollback: ...' line, non-zero exit, old spec back"

shoal service update --env-add COLOR=blue --timeout 60 "$svc" >/dev/null 2>&1 || fail "a good update failed"
out=$(shoal service rollback --timeout 60 "$svc" 2>&1) || fail "service rollback failed: $out"
echo "$out"
grep -q '^rollback: ' <<<"$out" || fail "service rollback shows no rollback line"
grep -q 'verify: Service converged' <<<"$out" || fail "service rollback did not wait for convergence"
shoal service inspect "$svc" | "$PY" -c 'import json,sys; sys.exit("COLOR=blue" in json.load(sys.stdin)[0]["spec"]["task"]["container"].get("env", []))' ||
    fail "rollback left COLOR=blue in the spec"
shoal service inspect --pretty "$svc" | grep -q "State: *rollback_completed" || fail "inspect --pretty does not show rollback_completed"
ok "service rollback waits for ROLLBACK_COMPLETED and restores the previous spec"

j=$(unique_name job)
if out=$(shoal service create --name "$j" --mode replicated-job --replicas 3 --max-concurrent 2 --timeout 60 "$IMAGE" true 2>&1); then
    echo "$out"
    grep -q 'job complete' <<<"$out" || fail "job create did not wait for completion"
    shoal service ls | grep "$j" | grep -q '0/0 (3/3 completed)' || fail "service ls REPLICAS for a job is not '0/0 (3/3 completed)': $(shoal service ls | grep "$j")"
    ok "replicated job runs to completion; service ls shows 0/0 (3/3 completed)"
else
    grep -q 'not supported' <<<"$out" || fail "job create failed: $out"
    ok "jobs not supported by this orchestrator yet: job checks skipped ($out)"
fi
