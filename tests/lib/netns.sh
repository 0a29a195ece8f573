# Sourced by multi-node tests: a test bed of N "nodes", each a network namespace with its own
# address on a private bridge, where processes can be started, killed with -9, restarted, cut off
# from each other (nftables drop rules inside the namespaces) and healed. Everything it makes is
# named after this shell's pid and removed by nb_cleanup (call it from your EXIT trap).
#
#   source tests/lib/netns.sh
#   nb_setup 3                       # nodes 1..3 at $(nb_ip 1) .. $(nb_ip 3)
#   nb_start 1 store -- shoal-store --state-dir ...   # background, logs in $NB_DIR/1-store.log
#   nb_kill 1 store; nb_restart 1 store
#   nb_partition 1 2; nb_heal        # drop traffic between nodes 1 and 2 / remove every cut
#   nb_isolate 3                     # node 3 can reach nobody
#
# Latency: this kernel has no sch_netem (tc qdisc netem is "unknown"), so delays are injected by
# the processes under test, not here.
NB_ID=${NB_ID:-$(($$ % 200 + 20))}
NB_BR=shbr$NB_ID
NB_NET=10.$((NB_ID % 250)).77
NB_DIR=${NB_DIR:-$(mktemp -d /tmp/shoal-nb.XXXXXX)}
NB_N=0
declare -gA NB_PID NB_CMD

nb_ns() { echo "shoal$NB_ID-$1"; }
nb_ip() { echo "$NB_NET.$((10 + $1))"; }

nb_setup() {
    NB_N=$1
    ip link add "$NB_BR" type bridge || return 1
    ip addr add "$NB_NET.1/24" dev "$NB_BR"
    ip link set "$NB_BR" up
    # dockerd sets FORWARD's policy to DROP and bridged frames pass through iptables
    # (br_netfilter): let our bridge forward to itself
    iptables -I FORWARD -i "$NB_BR" -o "$NB_BR" -j ACCEPT 2>/dev/null || true
    for i in $(seq 1 "$NB_N"); do
        local ns; ns=$(nb_ns "$i")
        ip netns add "$ns" || return 1
        ip link add "vh$NB_ID-$i" type veth peer name "vn$NB_ID-$i" || return 1
        ip link set "vn$NB_ID-$i" netns "$ns"
        ip link set "vh$NB_ID-$i" master "$NB_BR" up
        ip -n "$ns" link set lo up
        ip -n "$ns" link set "vn$NB_ID-$i" name eth0
        ip -n "$ns" addr add "$(nb_ip "$i")/24" dev eth0
        ip -n "$ns" link set eth0 up
        ip netns exec "$ns" nft add table inet shoaltest
        ip netns exec "$ns" nft add chain inet shoaltest input '{ type filter hook input priority 0; }'
        ip netns exec "$ns" nft add chain inet shoaltest output '{ type filter hook output priority 0; }'
    done
}

# nb_start NODE NAME -- CMD...   runs CMD in the node's namespace in the background
nb_start() {
    local i=$1 name=$2; shift 2; [ "$1" = -- ] && shift
    NB_CMD[$i/$name]=$(printf '%q ' "$@")
    ip netns exec "$(nb_ns "$i")" "$@" >>"$NB_DIR/$i-$name.log" 2>&1 </dev/null &
    NB_PID[$i/$name]=$!
}
nb_pid() { echo "${NB_PID[$1/$2]:-}"; }
nb_kill() { # kill -9, and wait until it is gone
    local p=${NB_PID[$1/$2]:-}; [ -n "$p" ] || return 0
    kill -9 "$p" 2>/dev/null; wait "$p" 2>/dev/null; NB_PID[$1/$2]=
}
nb_stop() { local p=${NB_PID[$1/$2]:-}; [ -n "$p" ] && kill "$p" 2>/dev/null && wait "$p" 2>/dev/null; NB_PID[$1/$2]=; }
nb_restart() { local i=$1 name=$2; nb_kill "$i" "$name"; eval "nb_start $i $name -- ${NB_CMD[$i/$name]}"; }

# Drop every packet between nodes i and j, both ways (rules live in both namespaces).
nb_partition() {
    local i=$1 j=$2
    ip netns exec "$(nb_ns "$i")" nft add rule inet shoaltest input ip saddr "$(nb_ip "$j")" drop
    ip netns exec "$(nb_ns "$i")" nft add rule inet shoaltest output ip daddr "$(nb_ip "$j")" drop
    ip netns exec "$(nb_ns "$j")" nft add rule inet shoaltest input ip saddr "$(nb_ip "$i")" drop
    ip netns exec "$(nb_ns "$j")" nft add rule inet shoaltest output ip daddr "$(nb_ip "$i")" drop
}
# One-way: node i stops receiving from node j (j still receives from i).
nb_partition_oneway() {
    ip netns exec "$(nb_ns "$1")" nft add rule inet shoaltest input ip saddr "$(nb_ip "$2")" drop
}
nb_isolate() { local i=$1; for j in $(seq 1 "$NB_N"); do [ "$j" != "$i" ] && nb_partition "$i" "$j"; done; }
nb_heal() {
    for i in $(seq 1 "$NB_N"); do
        ip netns exec "$(nb_ns "$i")" nft flush chain inet shoaltest input
        ip netns exec "$(nb_ns "$i")" nft flush chain inet shoaltest output
    done
}

nb_cleanup() {
    for k in "${!NB_PID[@]}"; do
        local p=${NB_PID[$k]}; [ -n "$p" ] && kill -9 "$p" 2>/dev/null
    done
    wait 2>/dev/null
    for i in $(seq 1 "$NB_N"); do ip netns del "$(nb_ns "$i")" 2>/dev/null; done
    ip link del "$NB_BR" 2>/dev/null
    iptables -D FORWARD -i "$NB_BR" -o "$NB_BR" -j ACCEPT 2>/dev/null || true
    [ -n "${NB_KEEP:-}" ] || rm -rf "$NB_DIR"
}
