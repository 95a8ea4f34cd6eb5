# bash benches/cluster.sh
#
# Cluster ADD throughput against ZADD, side by side in one run: one private
# `redis-server` (own loopback port, AOF, appendfsync $FSYNC, temporary
# directory) holds the journal of three release `timewheel serve --cluster`
# nodes; then
#   1. redis-benchmark --cluster -P $P -c $C -n $N -r $R
#        `ADD o:{tag}:__rand_int__ 600000 REPLACE` against the nodes
#        (redis-benchmark puts each node's own hash tag in `{tag}`, so every
#        request goes to a node that owns it: no -MOVED)
#   2. redis-benchmark -P $P -c $C -n $N -r $R
#        `ZADD due 600000 o:__rand_int__` against that same Redis
# and checks that the nodes' COUNTs add up to the journal's size (the
# partitions' ZCARD) and to the number of distinct ids expected.
#
# Overrides (environment): N=1000000 P=64 C=50 R=100000000 FSYNC=always
# NO_BUILD=1 (skip `cargo build --release`), TIMEWHEEL_BIN=path.
# REPLACE: with -r some ids repeat, and redis-benchmark stops at the first
# error reply (-EXISTS); REPLACE has ZADD's upsert semantics.

set -euo pipefail

N=${N:-1000000}
P=${P:-64}
C=${C:-50}
R=${R:-100000000}
FSYNC=${FSYNC:-always}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=${TIMEWHEEL_BIN:-$ROOT/target/release/timewheel}
[[ -n ${NO_BUILD:-}${TIMEWHEEL_BIN:-} ]] || (cd "$ROOT" && cargo build --release --bin timewheel)

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
DIR=$(mktemp -d)
PIDS=()
cleanup() { for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null || true; done; rm -rf "$DIR"; }
trap cleanup EXIT

RPORT=$(free_port)
redis-server --port "$RPORT" --bind 127.0.0.1 --dir "$DIR" --save '' \
    --appendonly yes --appendfsync "$FSYNC" --daemonize no >/dev/null &
PIDS+=($!)
until redis-cli -p "$RPORT" PING >/dev/null 2>&1; do sleep 0.1; done

PORTS=()
for i in 1 2 3; do
    port=$(free_port)
    RUST_LOG=warn "$BIN" serve --bind "127.0.0.1:$port" --cluster \
        --redis "redis://127.0.0.1:$RPORT/0" >"$DIR/node$i.log" 2>&1 &
    PIDS+=($!)
    PORTS+=("$port")
done
# Stable: all 16384 slots served, by three nodes.
until [[ $(redis-cli -p "${PORTS[0]}" CLUSTER INFO 2>/dev/null | tr -d '\r' | grep -c -e '^cluster_state:ok' -e '^cluster_size:3') == 2 ]]; do
    sleep 0.2
done
sleep 4 # hand-offs settle (rendezvous): a few rounds of the 3 s lease

echo "== cluster ADD (3 nodes, journal AOF $FSYNC), -P $P -c $C -n $N"
redis-benchmark --cluster -p "${PORTS[0]}" -P "$P" -c "$C" -n "$N" -r "$R" -q \
    ADD 'o:{tag}:__rand_int__' 600000 REPLACE | tr '\r' '\n' | grep -v '^$' | tail -2
echo "== ZADD into the same Redis, -P $P -c $C -n $N"
redis-benchmark -p "$RPORT" -P "$P" -c "$C" -n "$N" -r "$R" -q \
    ZADD due 600000 'o:__rand_int__' | tr '\r' '\n' | grep -v '^$' | tail -2

COUNT=0
for port in "${PORTS[@]}"; do COUNT=$((COUNT + $(redis-cli -p "$port" COUNT))); done
JOURNAL=0
for p in $(seq 0 127); do
    JOURNAL=$((JOURNAL + $(redis-cli -p "$RPORT" ZCARD "$(printf '{tw:p%03d}:due' "$p")")))
done
echo "COUNT over the nodes: $COUNT; in the journal: $JOURNAL; ZADD's ZCARD: $(redis-cli -p "$RPORT" ZCARD due)"
[[ $COUNT == "$JOURNAL" ]] || { echo "COUNT and journal differ" >&2; exit 1; }
