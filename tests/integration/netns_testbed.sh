#!/usr/bin/env bash
# The multi-node test bed itself (tests/lib/netns.sh): three namespaces on a bridge reach each
# other; a partition cuts exactly one pair; healing restores it; kill -9 and restart of a process.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
[ "$(id -u)" = 0 ] || { echo "SKIP: needs root for network namespaces"; exit 77; }
command -v nft >/dev/null || { echo "SKIP: nft not installed"; exit 77; }
source "$ROOT/tests/lib/netns.sh"
trap nb_cleanup EXIT
fail() { echo "FAIL: $*"; exit 1; }
reach() { ip netns exec "$(nb_ns "$1")" busybox ping -c 1 -W 1 "$(nb_ip "$2")" >/dev/null 2>&1; }
nb_setup 3 || fail "setup"
reach 1 2 && reach 2 3 && reach 3 1 || fail "nodes cannot reach each other"
echo "ok: 3 nodes reach each other"
nb_partition 1 2
reach 1 2 && fail "partition 1-2 did not cut"
reach 2 1 && fail "partition 1-2 did not cut both ways"
reach 1 3 && reach 2 3 || fail "partition cut more than 1-2"
echo "ok: partition cuts exactly one pair"
nb_heal
reach 1 2 || fail "heal did not restore 1-2"
echo "ok: heal"
nb_start 2 sleeper -- busybox sh -c 'trap "exit 0" TERM; while true; do sleep 1; done'
p=$(nb_pid 2 sleeper); kill -0 "$p" || fail "process did not start"
nb_restart 2 sleeper
kill -0 "$p" 2>/dev/null && fail "kill -9 left the process"
kill -0 "$(nb_pid 2 sleeper)" || fail "restart did not start it again"
echo "ok: kill -9 and restart"
