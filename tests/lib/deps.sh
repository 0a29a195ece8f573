#!/usr/bin/env bash
# make deps: install the Debian packages shoal needs (only those missing) and make sure a Docker
# Engine answers on /var/run/docker.sock, starting dockerd in the background when none does.
# Idempotent; needs root on a machine without the packages.
set -euo pipefail
PKGS=(gcc make pkg-config libzmq3-dev libczmq-dev libprotobuf-c-dev protobuf-c-compiler libssl-dev
      librocksdb-dev libcurl4-openssl-dev libsystemd-dev libcmocka-dev libjansson-dev docker.io
      busybox-static dnsutils iproute2 nftables procps curl ca-certificates python3 python3-zmq
      python3-protobuf protobuf-compiler clang-format)
missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "deps: installing ${missing[*]}"
    if [ "$(id -u)" != 0 ]; then echo "deps: need root to install packages" >&2; exit 1; fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null || true
    apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi

engine_up() { curl -sf --max-time 2 --unix-socket /var/run/docker.sock http://engine/_ping >/dev/null 2>&1; }
if ! engine_up; then
    if [ "$(id -u)" != 0 ]; then echo "deps: no Docker Engine on /var/run/docker.sock and not root to start one" >&2; exit 1; fi
    echo "deps: starting dockerd (log /var/log/shoal-dockerd.log)"
    nohup /usr/sbin/dockerd >/var/log/shoal-dockerd.log 2>&1 </dev/null &
    for _ in $(seq 1 60); do engine_up && break; sleep 0.5; done
    engine_up || { echo "deps: dockerd did not answer within 30 s; see /var/log/shoal-dockerd.log" >&2; exit 1; }
fi
echo "deps: ok (Docker API $(curl -s -D - -o /dev/null --unix-socket /var/run/docker.sock http://engine/_ping | tr -d '\r' | awk -F': ' 'tolower($1)=="api-version"{print $2}'))"
