# Sourced by integration tests: a real single-node shoal cluster in a private state dir, against the
# machine's dockerd, torn down on exit (daemons by pid, containers by the test's service names).
#
#   source tests/lib/cluster.sh
#   cluster_start                 # shoal cluster up in $STATE
#   svc=$(unique_name web)        # service names unique to this run, cleaned up on exit
#   shoal service create --name $svc ...
#   wait_for 20 "3 running" running_count $svc 3
#
# Prerequisites missing (not root, no Docker) → exit 77 with the reason (counted as a skip).
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BIN=${BIN:-$ROOT/bin}
export PATH="$BIN:$PATH"
STATE=$(mktemp -d /tmp/shoal-it.XXXXXX)
export SHOAL_STATE_DIR=$STATE
IMAGE=${IMAGE:-shoal-test:latest}
TEST_NAMES=()
DNS_PORT=$((20000 + RANDOM % 20000))
SOCK=/var/run/docker.sock

skip() { echo "SKIP: $*"; exit 77; }
fail() { echo "FAIL: $*"; echo "--- shoal service ls"; shoal service ls 2>&1 | head -20
         for n in $(shoal service ls -q 2>/dev/null); do echo "--- shoal service ps $n"; shoal service ps "$n" 2>&1 | head -20; done
         for f in "$STATE"/logs/*.log; do [ -f "$f" ] && { echo "--- $f"; tail -15 "$f"; }; done
         exit 1; }
ok() { echo "ok: $*"; }

engine() { curl -sf --unix-socket $SOCK "http://engine$1"; }

[ "$(id -u)" = 0 ] || skip "integration tests need root (docker socket, state under /tmp)"
[ -S $SOCK ] && engine /_ping >/dev/null || skip "no Docker Engine answers on $SOCK (run: make deps)"
[ -x "$BIN/shoal" ] || skip "bin/shoal not built (run: make all)"
bash "$ROOT/tests/lib/mkimage.sh" "$IMAGE" >/dev/null || fail "cannot build test image $IMAGE"

# Names start with this run's prefix; cleanup removes every container of a service with it (the
# function runs in $(...) subshells, so a list kept here would not reach the EXIT trap).
NAME_PREFIX="it$$x"
unique_name() { local n="$NAME_PREFIX${RANDOM}$1"; TEST_NAMES+=("$n"); echo "$n"; }
test_containers() {
    docker ps -a --filter label=shoal.service.name --format '{{.ID}} {{.Label "shoal.service.name"}}' |
        awk -v p="$NAME_PREFIX" 'index($2, p) == 1 { print $1 }'
}

containers_of() { # ids of running containers of a service
    docker ps -q --no-trunc --filter "label=shoal.service.name=$1" 2>/dev/null | sort; }
running_count() { [ "$(containers_of "$1" | grep -c .)" -eq "$2" ]; }

wait_for() { # wait_for SECONDS DESCRIPTION COMMAND...
    local secs=$1 what=$2; shift 2
    local end=$((SECONDS + secs))
    while ((SECONDS < end)); do "$@" && return 0; sleep 0.2; done
    fail "timed out after ${secs}s waiting for: $what"
}

cluster_cleanup() {
    local rc=$?
    shoal cluster down >/dev/null 2>&1 || true
    # any daemon still alive from this state dir (pid files) is ours
    for p in "$STATE"/run/*.pid; do [ -f "$p" ] && kill -9 "$(cat "$p")" 2>/dev/null; done
    ids=$(test_containers)
    [ -n "$ids" ] && docker rm -f $ids >/dev/null 2>&1
    if [ $rc -eq 0 ] || [ -z "${KEEP_STATE:-}" ]; then rm -rf "$STATE"; fi
    exit $rc
}
trap cluster_cleanup EXIT

cluster_start() {
    shoal cluster up --dns-listen 127.0.0.1:$DNS_PORT >"$STATE.up.log" 2>&1 || { cat "$STATE.up.log"; fail "shoal cluster up failed"; }
    rm -f "$STATE.up.log"
}

daemon_pid() { cat "$STATE/run/$1.pid" 2>/dev/null; }
# a killed daemon is gone once it is a zombie: its parent (init here) may reap it late
pid_gone() { [ ! -e "/proc/$1" ] || [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" = Z ]; }
