# bash benches/rcluster.sh
#
# The Redis Cluster benchmarks, each beside the one-Redis figure measured in
# the same run (every example starts its own private redis-servers, Redis
# Cluster of 3 masters without replicas and timewheel nodes, in temporary
# directories; its module doc says what it measures):
#   1. examples/cluster_rebuild.rs: one node starting alone serves
#      $REBUILD_N journaled timers ($ROUNDS rebuilds per setup; lease
#      $REBUILD_LEASE_MS, long enough that the one-partition-at-a-time take
#      round of 10M timers does not outlast it: docs/benchmarks.md);
#   2. examples/cluster_add.rs: ADD through a cluster client (slot map from
#      CLUSTER SLOTS, one connection per node, $DEPTH in flight) against
#      the same generator's ZADD with random keys and against
#      redis-benchmark [--cluster] ZADD, interleaved ($ROUNDS rounds of
#      $ADD_N each);
#   3. examples/burst_layouts.rs: $BURST_N ids due in the same second moved
#      into streams by five script designs, Redis CPU and wall time
#      ($ROUNDS runs).
# Every line it prints carries the 1-minute load average.
#
# Overrides (environment): REBUILD_N=10000000 REBUILD_LEASE_MS=600000 ADD_N=1000000 BURST_N=1000000
# ROUNDS=2 DEPTH=1024 ONLY=rebuild|add|layouts NO_BUILD=1 (skip the build),
# TIMEWHEEL_BIN=path.

set -euo pipefail

REBUILD_N=${REBUILD_N:-10000000}
REBUILD_LEASE_MS=${REBUILD_LEASE_MS:-600000}
ADD_N=${ADD_N:-1000000}
BURST_N=${BURST_N:-1000000}
ROUNDS=${ROUNDS:-2}
DEPTH=${DEPTH:-1024}
ONLY=${ONLY:-}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
export TIMEWHEEL_BIN=${TIMEWHEEL_BIN:-$ROOT/target/release/timewheel}
[[ -n ${NO_BUILD:-} ]] || cargo build --release --bin timewheel \
    --example cluster_rebuild --example cluster_add --example burst_layouts

echo "machine: $(nproc) cores, $(free -g | awk '/^Mem:/ { print $2 }') GiB; $(redis-server --version | cut -d' ' -f1-3); $(uptime)"
run() { "$ROOT/target/release/examples/$1" "${@:2}"; }
[[ -n $ONLY && $ONLY != rebuild ]] || run cluster_rebuild "$REBUILD_N" "$ROUNDS" "$REBUILD_LEASE_MS"
[[ -n $ONLY && $ONLY != add ]] || run cluster_add "$ADD_N" "$ROUNDS" "$DEPTH"
[[ -n $ONLY && $ONLY != layouts ]] || run burst_layouts "$BURST_N" "$ROUNDS"
echo "done: $(uptime)"
