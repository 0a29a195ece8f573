#!/usr/bin/env bash
# The scheduler is swappable (issue 5, item 7; docs/scheduler-contract.md): stop shoal-scheduler,
# run the Python scheduler of examples/custom-scheduler (tier=spot nodes first, then pack), and a
# new service's 3 tasks are placed by it — its log names each one; stop it, restart
# shoal-scheduler with `shoal cluster up`, scale to 5: shoal-scheduler places the 2 new tasks. The
# store's own history (audit.py replays every /tasks/ event) then shows each of the 5 tasks
# assigned exactly once, to one node, by the scheduler expected, and 5 containers run — one per
# task: nothing double-placed, nothing lost. The policy's unit tests (several fake nodes: spot
# preference, then packing) and the contract tests against an in-memory store run first.
PY=/usr/bin/python3
if [ ! -x "$PY" ] || ! "$PY" -c 'import zmq, google.protobuf' 2>/dev/null; then
    echo "SKIP: $PY lacks the zmq or protobuf module (apt-get install python3-zmq python3-protobuf)"
    exit 77
fi
if ! command -v protoc >/dev/null && ! command -v protoc-c >/dev/null; then
    echo "SKIP: neither protoc nor protoc-c to compile proto/*.proto (apt-get install protobuf-compiler)"
    exit 77
fi
export PYTHONDONTWRITEBYTECODE=1
source "$(dirname "$0")/../lib/cluster.sh"
EX=$ROOT/examples/custom-scheduler
PYLOG=$STATE/logs/custom-scheduler.log
PYPID=
CMD=(sh -c 'trap "exit 0" TERM; while true; do sleep 0.2; done')

custom_cleanup() {
    local rc=$?
    if [ -n "$PYPID" ] && kill -0 "$PYPID" 2>/dev/null; then
        kill -TERM "$PYPID" 2>/dev/null
        for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$PYPID" 2>/dev/null || break; sleep 0.2; done
        kill -9 "$PYPID" 2>/dev/null
    fi
    (exit $rc)
    cluster_cleanup
}
trap custom_cleanup EXIT

out=$(cd "$ROOT" && "$PY" -m unittest examples/custom-scheduler/test_policy.py \
      examples/custom-scheduler/test_scheduler.py 2>&1) || { echo "$out"; fail "Python unit tests"; }
ok "policy and contract unit tests: $(grep -o 'Ran [0-9]* tests' <<<"$out")"

cluster_start
node=$(shoal node ls -q | head -1)
host=$(shoal node ls | awk 'NR == 2 {print $2}')
[ -n "$node" ] && [ -n "$host" ] || fail "no node registered"
shoal node update --label-add tier=spot "$node" >/dev/null || fail "node update --label-add tier=spot"
shoal node inspect "$node" | grep -q '"spot"' || fail "label tier=spot not on the node"

spid=$(daemon_pid scheduler); [ -n "$spid" ] || fail "no pid file for shoal-scheduler"
kill -TERM "$spid"
wait_for 10 "shoal-scheduler (pid $spid) gone" pid_gone "$spid"
rm -f "$STATE/run/scheduler.pid"
ok "shoal-scheduler stopped"

"$PY" "$EX/scheduler.py" --state-dir "$STATE" --log "$PYLOG" &
PYPID=$!
wait_for 10 "the Python scheduler takes the scheduler lease" grep -q "became scheduler leader" "$PYLOG"
ok "Python scheduler (pid $PYPID) holds /leases/scheduler"

unique_name spot >/dev/null # not in $(...): its TEST_NAMES entry drives the container cleanup
svc=${TEST_NAMES[-1]}
shoal service create --name "$svc" --replicas 3 --timeout 60s "$IMAGE" "${CMD[@]}" >/dev/null ||
    fail "service create with the Python scheduler"
running_count "$svc" 3 || fail "3 containers expected, $(containers_of "$svc" | wc -l) running"
first=$(shoal service ps -q --no-trunc "$svc" | sort)
[ "$(grep -c . <<<"$first")" -eq 3 ] || fail "3 tasks expected: $first"
for t in $first; do
    grep -q "placed task=$t node=$host reason=spot-pack" "$PYLOG" ||
        fail "the Python scheduler's log does not show task $t placed on $host"
done
ok "3 tasks placed by the Python scheduler (log: placed task=... node=$host reason=spot-pack), 3 running"

kill -TERM "$PYPID"
wait_for 10 "the Python scheduler (pid $PYPID) gone" pid_gone "$PYPID"
wait "$PYPID"; rc=$?
PYPID=
[ "$rc" -eq 0 ] || fail "the Python scheduler exited with $rc"
grep -q "released the scheduler lease" "$PYLOG" || fail "the Python scheduler did not release its lease"
ok "Python scheduler stopped and released the lease"

shoal cluster up --dns-listen 127.0.0.1:$DNS_PORT >/dev/null || fail "cluster up to restart shoal-scheduler"
npid=$(daemon_pid scheduler)
[ -n "$npid" ] && [ "$npid" != "$spid" ] || fail "shoal-scheduler was not restarted"
shoal service scale "$svc=5" >/dev/null || fail "scale to 5 with shoal-scheduler back"
running_count "$svc" 5 || fail "5 containers expected, $(containers_of "$svc" | wc -l) running"
ok "shoal-scheduler (pid $npid) back, scaled to 5"

audit=$("$PY" "$EX/audit.py" --state-dir "$STATE" --service "$svc") || {
    echo "$audit"; fail "audit of the store history found a task placed twice or moved"; }
echo "$audit"
[ "$(grep -c '^task=' <<<"$audit")" -eq 5 ] || fail "the history holds $(grep -c '^task=' <<<"$audit") tasks, want 5"
[ "$(grep -c " assigned=1 node=$node state=RUNNING desired=RUNNING " <<<"$audit")" -eq 5 ] ||
    fail "not every task was assigned exactly once to $node and is running"
by_custom=$(grep 'by="assigned by custom-scheduler (spot-pack)"' <<<"$audit" | sed 's/^task=\([^ ]*\) .*/\1/' | sort)
[ "$by_custom" = "$first" ] || fail "the Python scheduler's tasks in the history [$by_custom] are not the first 3 [$first]"
by_shoal=$(grep -v 'by="assigned by custom-scheduler' <<<"$audit" | grep -v 'by=""' | sed 's/^task=\([^ ]*\) .*/\1/' | sort)
[ "$(grep -c . <<<"$by_shoal")" -eq 2 ] || fail "2 tasks should be placed by shoal-scheduler: [$by_shoal]"
for t in $by_shoal; do
    grep -q "placed task=$t " "$PYLOG" && fail "task $t, placed after the Python scheduler stopped, is in its log"
done
ok "store history: each of the 5 tasks assigned once (3 by the Python scheduler, 2 by shoal-scheduler)"

tasks=$(sed 's/^task=\([^ ]*\) .*/\1/' <<<"$audit" | sort)
labels=$(for c in $(containers_of "$svc"); do
    docker inspect -f '{{index .Config.Labels "shoal.task.id"}}' "$c"; done | sort)
[ "$labels" = "$tasks" ] || fail "running containers [$labels] are not one per task [$tasks]"
ok "5 containers, one per task: nothing double-placed, nothing lost"
