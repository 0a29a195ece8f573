#!/usr/bin/env bash
# Builds the test image (default name shoal-test:latest) from Debian's static busybox, without a
# registry: a rootfs with relative applet symlinks, imported with the Engine API. Idempotent.
# Usage: tests/lib/mkimage.sh [NAME]
set -euo pipefail
name=${1:-shoal-test:latest}
sock=/var/run/docker.sock
if curl -sf --unix-socket $sock "http://engine/images/${name}/json" >/dev/null; then exit 0; fi
bb=/bin/busybox
[ -x $bb ] || { echo "mkimage: $bb missing (apt-get install busybox-static)" >&2; exit 1; }
root=$(mktemp -d); trap 'rm -rf "$root"' EXIT
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,tmp,etc,proc,sys,dev,www}
cp $bb "$root/bin/busybox"
for applet in $($bb --list); do
    [ "$applet" = busybox ] && continue
    [ -e "$root/bin/$applet" ] || ln -s busybox "$root/bin/$applet"
done
echo 'root:x:0:0:root:/root:/bin/sh' >"$root/etc/passwd"
echo 'root:x:0:' >"$root/etc/group"
echo 'hello from shoal' >"$root/www/index.html"
repo=${name%%:*}; tag=${name##*:}; [ "$repo" = "$name" ] && tag=latest
tar -C "$root" -c . | curl -sf --unix-socket $sock -X POST -H 'Content-Type: application/x-tar' \
    --data-binary @- "http://engine/images/create?fromSrc=-&repo=${repo}&tag=${tag}" >/dev/null
curl -sf --unix-socket $sock "http://engine/images/${name}/json" >/dev/null
echo "mkimage: built $name"
