#!/usr/bin/env bash
# make bench: shoal against baselines measured in the same run, printed as ratios.
#
# 1. service create --replicas 50 → 50 running, against the raw engine floor: 50 containers
#    created and started straight through the Engine API (curl over the unix socket) at the same
#    concurrency as the agent (8), same image, command and network. Goal: ratio ≤ 1.5.
# Runs are bounded (REPLICAS, ROUNDS) and clean up their containers and daemons.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
REPLICAS=${REPLICAS:-50}
ROUNDS=${ROUNDS:-3}
CONC=${CONC:-8}
IMAGE=shoal-test:latest
SOCK=/var/run/docker.sock
export PATH="$ROOT/bin:$PATH"
bash "$ROOT/tests/lib/mkimage.sh" "$IMAGE" >/dev/null
STATE=$(mktemp -d /tmp/shoal-bench.XXXXXX)
export SHOAL_STATE_DIR=$STATE
cleanup() {
    shoal cluster down >/dev/null 2>&1
    ids=$(docker ps -aq --filter label=shoal.bench=1; docker ps -aq --filter label=shoal.service.name=benchsvc)
    [ -n "$ids" ] && docker rm -f $ids >/dev/null 2>&1
    rm -rf "$STATE"
}
trap cleanup EXIT
now_ms() { date +%s%3N; }
api() { curl -sf --unix-socket $SOCK -H 'Content-Type: application/json' "$@"; }

# the same network the agent uses, so both sides pay the same attach cost
api http://engine/networks/shoal >/dev/null 2>&1 ||
    api -X POST http://engine/networks/create -d '{"Name":"shoal","Driver":"bridge","Labels":{"shoal.network":"true"}}' >/dev/null

floor_one() {
    local body id
    body='{"Image":"'$IMAGE'","Cmd":["sh","-c","trap \"exit 0\" TERM; while true; do sleep 1; done"],"Labels":{"shoal.bench":"1"},"HostConfig":{"Init":true,"NetworkMode":"shoal"}}'
    id=$(api -X POST "http://engine/containers/create" -d "$body" | sed 's/.*"Id":"\([0-9a-f]*\)".*/\1/')
    api -X POST "http://engine/containers/$id/start" >/dev/null
}
export -f floor_one api; export IMAGE SOCK

floor_times=() shoal_times=()
shoal cluster up >/dev/null || { echo "bench: cluster up failed"; exit 1; }
for r in $(seq 1 "$ROUNDS"); do
    t0=$(now_ms)
    seq 1 "$REPLICAS" | xargs -P "$CONC" -I{} bash -c floor_one
    t1=$(now_ms)
    n=$(docker ps -q --filter label=shoal.bench=1 | wc -l)
    [ "$n" -eq "$REPLICAS" ] || echo "bench: floor round $r started $n of $REPLICAS"
    floor_times+=($((t1 - t0)))
    docker rm -f $(docker ps -aq --filter label=shoal.bench=1) >/dev/null

    t0=$(now_ms)
    shoal service create --detach --name benchsvc --replicas "$REPLICAS" --init "$IMAGE" \
        sh -c 'trap "exit 0" TERM; while true; do sleep 1; done' >/dev/null
    while [ "$(docker ps -q --filter label=shoal.service.name=benchsvc --filter status=running | wc -l)" -lt "$REPLICAS" ]; do
        sleep 0.05
        (( $(now_ms) - t0 > 300000 )) && { echo "bench: shoal did not converge in 300 s"; break; }
    done
    t1=$(now_ms)
    shoal_times+=($((t1 - t0)))
    shoal service rm benchsvc >/dev/null
    while [ -n "$(docker ps -aq --filter label=shoal.service.name=benchsvc)" ]; do sleep 0.2; done
    echo "round $r: engine floor ${floor_times[-1]} ms, shoal ${shoal_times[-1]} ms"
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
f=$(median "${floor_times[@]}"); s=$(median "${shoal_times[@]}")
echo
echo "service create --replicas $REPLICAS → $REPLICAS running (median of $ROUNDS, concurrency $CONC)"
printf '  %-28s %8s ms\n' "raw Engine API floor" "$f" "shoal" "$s"
awk -v s="$s" -v f="$f" 'BEGIN { printf "  %-28s %8.2f   (goal <= 1.5)\n", "ratio shoal/floor", s / f }'

# 2. the scheduler: 10,000 nodes, 100,000 tasks, placements/s against one-Txn-per-task in the
#    same run, and the time to reschedule 1,000 tasks of a failed node (bench/scheduler_bench.sh)
echo
bash "$ROOT/bench/scheduler_bench.sh"
