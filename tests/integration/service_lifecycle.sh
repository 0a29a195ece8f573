#!/usr/bin/env bash
# A replicated service through its life on a real cluster and dockerd: create 3 replicas → 3
# running containers; scale 3→6→1; a killed container is replaced; update env and image replace
# the tasks; rm removes every container.
source "$(dirname "$0")/../lib/cluster.sh"
cluster_start
svc=$(unique_name web)
CMD=(sh -c 'trap "exit 0" TERM; while true; do sleep 0.2; done')

shoal service create --name "$svc" --replicas 3 "$IMAGE" "${CMD[@]}" || fail "service create"
running_count "$svc" 3 || fail "create returned before 3 containers ran: $(containers_of "$svc" | wc -l)"
ok "create --replicas 3 → 3 running containers"
for c in $(containers_of "$svc"); do
    lbl=$(docker inspect -f '{{index .Config.Labels "shoal.service.name"}} {{index .Config.Labels "shoal.task.id"}}' "$c")
    [ "${lbl%% *}" = "$svc" ] && [ -n "${lbl#* }" ] || fail "container $c lacks shoal labels ($lbl)"
done
ok "containers carry shoal.service.name and shoal.task.id"
shoal service ls | grep -q "$svc.*3/3" || fail "service ls does not show 3/3"
[ "$(shoal service ps -q "$svc" | grep -c .)" -ge 3 ] || fail "service ps lists fewer than 3 tasks"

shoal service scale "$svc=6" || fail "scale to 6"
running_count "$svc" 6 || fail "scale 6: $(containers_of "$svc" | wc -l) running"
ok "scale 3→6"
shoal service scale "$svc=1" || fail "scale to 1"
wait_for 30 "1 container after scale to 1" running_count "$svc" 1
ok "scale 6→1"

victim=$(containers_of "$svc" | head -1)
docker kill "$victim" >/dev/null || fail "docker kill"
wait_for 30 "a replacement container" bash -c "[ \"\$(docker ps -q --no-trunc --filter label=shoal.service.name=$svc)\" != '' ] && ! docker ps -q --no-trunc --filter label=shoal.service.name=$svc | grep -q $victim"
running_count "$svc" 1 || fail "after kill: $(containers_of "$svc" | wc -l) running, want 1"
shoal service ps "$svc" | grep -qiE 'failed|shutdown' || fail "service ps shows no history for the killed task"
ok "killed container replaced"

shoal service scale "$svc=2" || fail "scale to 2"
before=$(containers_of "$svc")
shoal service update --env-add SHOAL_COLOR=blue "$svc" || fail "update --env-add"
wait_for 30 "2 containers with the new env" bash -c "
  ids=\$(docker ps -q --filter label=shoal.service.name=$svc); [ \$(echo \"\$ids\" | grep -c .) -eq 2 ] &&
  for c in \$ids; do docker inspect -f '{{.Config.Env}}' \$c | grep -q SHOAL_COLOR=blue || exit 1; done"
for c in $before; do docker ps -q --no-trunc | grep -q "$c" && fail "old container $c still running after update"; done
ok "update --env-add replaced every task"

docker tag "$IMAGE" shoal-test:v2 >/dev/null || fail "docker tag"
shoal service update --image shoal-test:v2 "$svc" || fail "update --image"
wait_for 30 "containers on shoal-test:v2" bash -c "
  ids=\$(docker ps -q --filter label=shoal.service.name=$svc); [ \$(echo \"\$ids\" | grep -c .) -eq 2 ] &&
  for c in \$ids; do [ \"\$(docker inspect -f '{{.Config.Image}}' \$c)\" = shoal-test:v2 ] || exit 1; done"
ok "update --image replaced every task"

shoal service rm "$svc" || fail "service rm"
wait_for 30 "every container removed" bash -c "[ -z \"\$(docker ps -aq --filter label=shoal.service.name=$svc)\" ]"
shoal service ls | grep -q "$svc" && fail "service still listed after rm"
ok "rm removed every container"
