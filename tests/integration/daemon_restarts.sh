#!/usr/bin/env bash
# kill -9 of each daemon in turn (store, orchestrator, scheduler, dispatcher, agent, dns), then
# `shoal cluster up` restarts it: the cluster recovers, running containers are kept (same ids),
# no acknowledged store write is lost, and the service still heals afterwards.
source "$(dirname "$0")/../lib/cluster.sh"
cluster_start
svc=$(unique_name keep)
CMD=(sh -c 'trap "exit 0" TERM; while true; do sleep 0.2; done')
shoal service create --name "$svc" --replicas 3 "$IMAGE" "${CMD[@]}" || fail "service create"
orig=$(containers_of "$svc")
[ "$(echo "$orig" | grep -c .)" -eq 3 ] || fail "3 containers expected"

i=0
for d in store orchestrator scheduler dispatcher agent dns; do
    i=$((i + 1))
    # an acknowledged write just before the crash must survive it
    shoalctl call store store.Put "{\"key\":\"/test/ack/$i\",\"value\":\"$(echo -n "v$i" | base64)\"}" >/dev/null || fail "store.Put before killing $d"
    pid=$(daemon_pid $d); [ -n "$pid" ] || fail "no pid for $d"
    kill -9 "$pid"
    wait_for 10 "$d pid $pid gone" pid_gone "$pid"
    shoal cluster up --dns-listen 127.0.0.1:$DNS_PORT >/dev/null || fail "cluster up after killing $d"
    [ "$(daemon_pid $d)" != "$pid" ] || fail "$d was not restarted"
    shoalctl status $d >/dev/null || fail "$d does not answer after restart"
    sleep 1
    now=$(containers_of "$svc")
    [ "$now" = "$orig" ] || fail "containers changed after kill -9 of $d: before [$orig] after [$now]"
    ok "kill -9 $d → restarted, the same 3 containers kept"
done
for j in $(seq 1 $i); do
    v=$(shoalctl --json call store store.Range "{\"key\":\"/test/ack/$j\"}" | grep -o '"value": *"[^"]*"' | sed 's/.*"\([^"]*\)"$/\1/' | base64 -d)
    [ "$v" = "v$j" ] || fail "acknowledged write /test/ack/$j lost (got '$v')"
done
ok "no acknowledged store write lost across the kills"

shoal service scale "$svc=4" || fail "scale after the restarts"
running_count "$svc" 4 || fail "scale after restarts: $(containers_of "$svc" | wc -l) running"
victim=$(containers_of "$svc" | head -1); docker kill "$victim" >/dev/null
wait_for 30 "replacement after restarts" bash -c "[ \$(docker ps -q --no-trunc --filter label=shoal.service.name=$svc | grep -v $victim | grep -c .) -eq 4 ]"
ok "cluster still converges and heals after every daemon was killed"
