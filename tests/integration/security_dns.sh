#!/usr/bin/env bash
# A client with an unknown Curve key is rejected; every daemon is in the registry; shoal-dns
# answers <service> and tasks.<service> with the task IPs over UDP and TCP.
source "$(dirname "$0")/../lib/cluster.sh"
command -v dig >/dev/null || skip "dig not installed (apt-get install dnsutils)"
cluster_start

# a key that is not part of this cluster: the admin key of another cluster
other=$(mktemp -d /tmp/shoal-other.XXXXXX)
shoal --state-dir "$other" init >/dev/null || fail "init of a second cluster"
cp "$other/keys/private/admin.key_secret" "$STATE/keys/private/rogue.key_secret"
rm -rf "$other"
out=$(shoalctl --key rogue --timeout 3000 status store 2>&1) && fail "a rogue key was served: $out"
echo "$out"
grep -qiE 'not authorized|refused|rejected' <<<"$out" || fail "rejection is not explained: $out"
grep -q 'rejected' "$STATE/logs/store.log" || fail "the store did not log the rejected key"
ok "unknown Curve key rejected and logged"

list=$(shoalctl list)
echo "$list"
# workers' agents never talk to the store, so they are not in the registry; they answer on the bus
for d in store orchestrator scheduler dispatcher dns; do
    grep -q "^$d " <<<"$list" || fail "$d missing from shoalctl list"
done
shoalctl status agent >/dev/null || fail "shoalctl status agent"
shoalctl introspect store | grep -q 'store.Put' || fail "introspect store lacks store.Put"
ok "registry lists every daemon; introspect shows methods"

svc=$(unique_name dns)
shoal service create --name "$svc" --replicas 2 "$IMAGE" sh -c 'trap "exit 0" TERM; while true; do sleep 0.2; done' || fail "service create"
ips=$(for c in $(containers_of "$svc"); do docker inspect -f '{{.NetworkSettings.Networks.shoal.IPAddress}}' "$c"; done | sort)
[ "$(echo "$ips" | grep -c .)" -eq 2 ] || fail "containers have no IP on the shoal network: [$ips]"
wait_for 10 "dig $svc" bash -c "[ \"\$(dig @127.0.0.1 -p $DNS_PORT +short $svc | sort)\" = \"$ips\" ]"
ok "dig $svc → $(echo $ips)"
got=$(dig @127.0.0.1 -p $DNS_PORT +short +tcp "tasks.$svc" | sort)
[ "$got" = "$ips" ] || fail "dig +tcp tasks.$svc gave [$got], want [$ips]"
ok "dig +tcp tasks.$svc → $(echo $got)"
dig @127.0.0.1 -p $DNS_PORT "nosuch-$svc" | grep -qE 'NXDOMAIN|REFUSED|SERVFAIL' || fail "unknown name did not fail"
ok "unknown name is not answered with an address"
shoal service scale "$svc=1" >/dev/null || fail "scale"
wait_for 10 "dns drops the removed task" bash -c "[ \$(dig @127.0.0.1 -p $DNS_PORT +short $svc | grep -c .) -eq 1 ]"
ok "dns follows scale-down"
