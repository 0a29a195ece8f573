#!/usr/bin/env bash
# make demo: a single-node cluster, a sample web service of 3 replicas, and proof it serves:
# shoal-dns resolves the service to its task IPs and each task answers HTTP.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
export PATH="$ROOT/bin:$PATH"
export SHOAL_STATE_DIR=${SHOAL_STATE_DIR:-/var/lib/shoal}
bash "$ROOT/tests/lib/mkimage.sh" shoal-test:latest
step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }
step shoal cluster up
shoal service rm hello >/dev/null 2>&1 && sleep 2 || true
step shoal service create --name hello --replicas 3 shoal-test:latest httpd -f -p 80 -h /www
step shoal service ls
step shoal service ps hello
step dig @127.0.0.1 -p 8053 +short hello
echo
for ip in $(dig @127.0.0.1 -p 8053 +short hello); do
    printf 'GET http://%s/ → %s\n' "$ip" "$(curl -s --max-time 3 "http://$ip/")"
done
cat <<MSG

The cluster keeps running (state in $SHOAL_STATE_DIR). Try:
  bin/shoal service scale hello=5        bin/shoal service ps hello
  docker kill \$(docker ps -q --filter label=shoal.service.name=hello | head -1)   # it comes back
  bin/shoalctl list                      bin/shoalctl monitor
Clean up: bin/shoal service rm hello && bin/shoal cluster down
MSG
