#!/usr/bin/env bash
# Scheduler benchmark (issue 5): placements per second with 10,000 nodes and 100,000 tasks against
# a real shoal-store, the same scheduler writing one Txn per task as the baseline measured in the
# same run (printed with the ratio), the time for a failed node's 1,000 tasks to be rescheduled,
# and the daemons' peak RSS. One command: bash bench/scheduler_bench.sh [scheduler_bench flags]
# (--nodes N --tasks N --services N --fail-tasks N --baseline-secs S --skip-baseline
#  --skip-failure --keep --profile scheduler|store). Environment: BIN (default bin).
# It builds what it needs (the daemons and build/bench/scheduler_bench), starts its own daemons in
# /tmp/shoal-scheduler-bench.* and stops exactly those.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
BIN=${BIN:-bin}
# Build what is needed; a daemon another change broke for the moment keeps its last binary.
for target in build/libshoal.a "$BIN/shoal-store" "$BIN/shoal-scheduler" "$BIN/shoal-orchestrator" \
    "$BIN/shoalctl"; do
    make -s "$target" >/dev/null 2>&1 || echo "scheduler_bench: note: make $target failed, using the existing one" >&2
    [ -e "$target" ] || { echo "scheduler_bench: $target is missing (run make all)" >&2; exit 1; }
done
mkdir -p build/bench
CFLAGS="-std=gnu11 -O2 -g -Wall -Wextra -Werror -Wno-unused-parameter -Wno-missing-field-initializers
        -Wno-format-truncation -fno-strict-aliasing -D_GNU_SOURCE -Ibuild/gen -Ilib"
if [ ! -x build/bench/scheduler_bench ] || [ bench/scheduler_bench.c -nt build/bench/scheduler_bench ] ||
    [ build/libshoal.a -nt build/bench/scheduler_bench ]; then
    # shellcheck disable=SC2086
    gcc $CFLAGS -o build/bench/scheduler_bench bench/scheduler_bench.c build/libshoal.a \
        -lczmq -lzmq -lprotobuf-c -lrocksdb -lcurl -lsystemd -ljansson -lcrypto -lpthread -lm
fi
exec build/bench/scheduler_bench --bin "$BIN" "$@"
