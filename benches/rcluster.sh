# bash benches/rcluster.sh
#
# Cluster ADD throughput against ZADD on a Redis Cluster, side by side in
# one run: three private cluster-enabled `redis-server`s (ports below 55535,
# AOF, appendfsync $FSYNC, --cluster-require-full-coverage no, temporary
# directory) joined as 3 masters without replicas; three release
# `timewheel serve --cluster --stream burst:closed` nodes keep their journal
# on it; then
#   1. redis-benchmark --cluster -P $P -c $C -n $N -r $R
#        `ADD o:{tag}:__rand_int__ 600000 REPLACE` against the nodes
#   2. redis-benchmark --cluster -P $P -c $C -n $N -r $R
#        `ZADD z:{tag} 600000 o:__rand_int__` against the Redis Cluster
# redis-benchmark --cluster routes a request only by `{tag}`, which it
# replaces with a hash tag of the node the client talks to; any other key
# (`z:{__rand_int__}` too) is sent to that node whatever its slot, and the
# first -MOVED reply stops the run. So each master gets one sorted set,
# and all the ADDs a node receives carry the node's one tag: they hash to
# one slot, hence one partition per node, three partitions in all, on
# whichever masters those partitions' own slots fall (printed at the end).
# Afterwards it checks that the nodes' COUNTs add up to the journal's size
# (the partitions' due sets, summed over the masters), and prints the
# number of distinct ids ZADD left, for comparison.
#
# Overrides (environment): N=1000000 P=64 C=50 R=100000000 FSYNC=everysec
# NO_BUILD=1 (skip `cargo build --release`), TIMEWHEEL_BIN=path.

set -euo pipefail

N=${N:-1000000}
P=${P:-64}
C=${C:-50}
R=${R:-100000000}
FSYNC=${FSYNC:-everysec}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=${TIMEWHEEL_BIN:-$ROOT/target/release/timewheel}
[[ -n ${NO_BUILD:-}${TIMEWHEEL_BIN:-} ]] || (cd "$ROOT" && cargo build --release --bin timewheel)

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# A port at most 55535 whose cluster bus port (+10000) is free too.
cluster_port() {
    python3 -c '
import random, socket
while True:
    p = random.randint(20000, 45000)
    try:
        for q in (p, p + 10000):
            s = socket.socket(); s.bind(("127.0.0.1", q)); s.close()
        print(p); break
    except OSError:
        pass'
}
DIR=$(mktemp -d)
PIDS=()
cleanup() { for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null || true; done; rm -rf "$DIR"; }
trap cleanup EXIT

MASTERS=()
for i in 1 2 3; do
    port=$(cluster_port)
    mkdir -p "$DIR/$port"
    redis-server --port "$port" --bind 127.0.0.1 --dir "$DIR/$port" --save '' \
        --appendonly yes --appendfsync "$FSYNC" --cluster-enabled yes \
        --cluster-config-file nodes.conf --cluster-node-timeout 2000 \
        --cluster-require-full-coverage no --daemonize no >/dev/null &
    PIDS+=($!)
    MASTERS+=("$port")
    until redis-cli -p "$port" PING >/dev/null 2>&1; do sleep 0.1; done
done
redis-cli --cluster create "${MASTERS[@]/#/127.0.0.1:}" --cluster-replicas 0 --cluster-yes >/dev/null
for port in "${MASTERS[@]}"; do
    until redis-cli -p "$port" CLUSTER INFO | tr -d '\r' | grep -q '^cluster_state:ok'; do sleep 0.2; done
done

PORTS=()
for i in 1 2 3; do
    port=$(free_port)
    RUST_LOG=warn "$BIN" serve --bind "127.0.0.1:$port" --cluster --stream burst:closed \
        --redis "redis://127.0.0.1:${MASTERS[0]}" >"$DIR/node$i.log" 2>&1 &
    PIDS+=($!)
    disown
    PORTS+=("$port")
done
until [[ $(redis-cli -p "${PORTS[0]}" CLUSTER INFO 2>/dev/null | tr -d '\r' | grep -c -e '^cluster_state:ok' -e '^cluster_size:3') == 2 ]]; do
    sleep 0.2
done
sleep 4 # hand-offs settle (rendezvous): a few rounds of the 3 s lease

cpu() { redis-cli -p "$1" INFO cpu | tr -d '\r' | awk -F: '/^used_cpu_(user|sys):/ { s += $2 } END { printf "%.2f", s }'; }
report_cpu() { # label, then "port:cpu_before" pairs
    local label=$1; shift
    local line="$label Redis CPU s per master:"
    for pc in "$@"; do
        line+=" ${pc%%:*}=$(echo "$(cpu "${pc%%:*}") - ${pc##*:}" | bc)"
    done
    echo "$line"
}
before() { for m in "${MASTERS[@]}"; do echo -n "$m:$(cpu "$m") "; done; }

echo "== cluster ADD (3 nodes, journal on 3 Redis masters, AOF $FSYNC), -P $P -c $C -n $N"
B=$(before)
redis-benchmark --cluster -p "${PORTS[0]}" -P "$P" -c "$C" -n "$N" -r "$R" -q \
    ADD 'o:{tag}:__rand_int__' 600000 REPLACE | tr '\r' '\n' | grep -v '^$' | tail -2
# shellcheck disable=SC2086
report_cpu ADD $B
echo "== ZADD into the Redis Cluster, -P $P -c $C -n $N"
B=$(before)
redis-benchmark --cluster -p "${MASTERS[0]}" -P "$P" -c "$C" -n "$N" -r "$R" -q \
    ZADD 'z:{tag}' 600000 'o:__rand_int__' | tr '\r' '\n' | grep -v '^$' | tail -2
# shellcheck disable=SC2086
report_cpu ZADD $B

COUNT=0
for port in "${PORTS[@]}"; do COUNT=$((COUNT + $(redis-cli -p "$port" COUNT))); done
JOURNAL=0
ZSETS=0
for m in "${MASTERS[@]}"; do
    parts=0 here=0
    for key in $(redis-cli -p "$m" --scan --pattern '{tw:p*}:due'); do
        here=$((here + $(redis-cli -p "$m" ZCARD "$key")))
        parts=$((parts + 1))
    done
    echo "master $m: $here timers in $parts due sets"
    JOURNAL=$((JOURNAL + here))
    for key in $(redis-cli -p "$m" --scan --pattern 'z:*'); do
        ZSETS=$((ZSETS + $(redis-cli -p "$m" ZCARD "$key")))
    done
done
echo "COUNT over the nodes: $COUNT; in the journal (due sets over the masters): $JOURNAL; ZADD's ZCARD sum: $ZSETS"
[[ $COUNT == "$JOURNAL" ]] || { echo "COUNT and journal differ" >&2; exit 1; }
