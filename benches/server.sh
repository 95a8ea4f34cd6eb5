# bash benches/server.sh
#
# Server throughput and latency, timewheel against Redis, measured side by
# side in the same run so that load from other processes hits both alike.
#
# Each round starts a fresh `timewheel serve` and a private `redis-server`
# (own loopback port, never 6379, no persistence, temporary directory), then
# runs, alternating which server goes first from one round to the next:
#   1. pipelined:   redis-benchmark -P $P -c $C -n $N -r $R
#                   `ADD o:__rand_int__ 600000 REPLACE` vs `ZADD due 600000 o:__rand_int__`
#   2. unpipelined: the same with -P 1 -n $N1, latency percentiles from --csv
# and checks that timewheel's COUNT (and Redis's ZCARD) match the number of
# distinct ids expected. CPU time of the servers and of redis-benchmark is
# read around each run, to show which side was saturated.
#
# Overrides (environment):
#   N=2000000 P=64 C=50 R=100000000   pipelined run
#   N1=200000                         unpipelined run (-P 1, same C and R)
#   IO_THREADS=1                      timewheel serve --io-threads
#   BENCH_THREADS=                    redis-benchmark --threads (empty: single-threaded)
#   ROUNDS=1                          rounds, each with fresh servers
#   TIMEWHEEL_ARGS=                   extra flags for `timewheel serve`
#   BENCH_TIMEOUT=600                 seconds before one redis-benchmark run is abandoned
#   JOURNAL=                          always|everysec: Redis runs with AOF and that fsync
#                                     policy, and timewheel journals into that same Redis
#                                     (`--redis`), so ADD is compared with ZADD on the
#                                     Redis that also holds the journal
#   NO_BUILD=1                        skip `cargo build --release`
#   TIMEWHEEL_BIN=path                another timewheel binary (A/B runs); implies NO_BUILD
#
# Why REPLACE: redis-benchmark stops at the first error reply, and with -r
# some ids repeat, so a plain ADD would hit `-EXISTS` and abort the run.
# REPLACE gives the same upsert semantics as ZADD.

set -euo pipefail

N=${N:-2000000}
P=${P:-64}
C=${C:-50}
R=${R:-100000000}
N1=${N1:-200000}
IO_THREADS=${IO_THREADS:-1}
BENCH_THREADS=${BENCH_THREADS:-}
ROUNDS=${ROUNDS:-1}
TIMEWHEEL_ARGS=${TIMEWHEEL_ARGS:-}
JOURNAL=${JOURNAL:-}
case $JOURNAL in "" | always | everysec) ;; *) echo "JOURNAL must be always or everysec" >&2; exit 2 ;; esac
BENCH_TIMEOUT=${BENCH_TIMEOUT:-600}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=${TIMEWHEEL_BIN:-$CARGO_TARGET_DIR/release/timewheel}
CLK_TCK=$(getconf CLK_TCK)

die() { echo "server.sh: $*" >&2; exit 1; }

for tool in redis-server redis-benchmark redis-cli awk timeout; do
    command -v "$tool" >/dev/null || die "$tool not found on PATH"
done

if [[ -z ${NO_BUILD:-}${TIMEWHEEL_BIN:-} ]]; then
    (cd "$ROOT" && cargo build --release --quiet) || die "cargo build --release failed"
fi
[[ -x $BIN ]] || die "no binary at $BIN"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/timewheel-serverbench.XXXXXX")
TW_PID=
REDIS_PID=
BENCH_PID=

stop_servers() {
    local pid
    for pid in $TW_PID $REDIS_PID; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in $TW_PID $REDIS_PID; do
        wait "$pid" 2>/dev/null || true
    done
    TW_PID=
    REDIS_PID=
}
cleanup() {
    [[ -z $BENCH_PID ]] || kill "$BENCH_PID" 2>/dev/null || true
    stop_servers
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Something answers on this loopback port?
port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Starts timewheel on a port the kernel picks; sets TW_PID and TW_PORT.
start_timewheel() {
    # A fresh log per start: the port is read from it, never from an old one.
    local log
    log=$(mktemp "$WORK/timewheel.XXXXXX.log")
    # The port is read from the info-level log line.
    local journal=()
    # Nothing fires during a round (its delays are 600 s), so no sink is needed.
    [[ -n $JOURNAL ]] && journal=(--redis "redis://127.0.0.1:$REDIS_PORT/0" --best-effort-delivery)
    # shellcheck disable=SC2086  # TIMEWHEEL_ARGS is a list of flags
    RUST_LOG=info "$BIN" serve --bind 127.0.0.1:0 \
        --io-threads "$IO_THREADS" "${journal[@]}" $TIMEWHEEL_ARGS 2>"$log" &
    TW_PID=$!
    TW_PORT=
    local _
    for _ in $(seq 200); do
        TW_PORT=$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$log")
        [[ -n $TW_PORT ]] && return 0
        kill -0 "$TW_PID" 2>/dev/null || break
        sleep 0.05
    done
    cat "$log" >&2
    die "timewheel did not report 'listening on'"
}

# Starts redis-server on a free random port; sets REDIS_PID and REDIS_PORT.
start_redis() {
    local attempt _
    for attempt in 1 2 3 4 5; do
        REDIS_PORT=$((20000 + RANDOM % 40000))
        port_in_use "$REDIS_PORT" && continue
        local persistence=(--appendonly no)
        [[ -n $JOURNAL ]] && persistence=(--appendonly yes --appendfsync "$JOURNAL")
        rm -rf "$WORK/appendonlydir"
        redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save "" "${persistence[@]}" \
            --dir "$WORK" --daemonize no --logfile "$WORK/redis.log" &
        REDIS_PID=$!
        for _ in $(seq 200); do
            if redis-cli -p "$REDIS_PORT" PING 2>/dev/null | grep -q PONG; then
                return 0
            fi
            kill -0 "$REDIS_PID" 2>/dev/null || break
            sleep 0.05
        done
        wait "$REDIS_PID" 2>/dev/null || true
        REDIS_PID=
        echo "server.sh: redis-server on port $REDIS_PORT failed (attempt $attempt):" \
            "$(tail -n 1 "$WORK/redis.log" 2>/dev/null)" >&2
    done
    die "could not start redis-server"
}

# CPU ticks (user + system, all threads) a process has used so far.
cpu_ticks() { sed 's/.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'; }

# CPU ticks the whole machine has been busy (all cores, everything but idle and iowait).
machine_busy_ticks() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9; exit }' /proc/stat; }

# Sets CHILD_CPU: this shell's reaped children's user + system CPU seconds so
# far, from the `times` builtin (no extra tools). It must run in this shell,
# not in a $(...), so it sets a variable instead of printing.
children_cpu_seconds() {
    times >"$WORK/times"
    CHILD_CPU=$(awk 'NR == 2 { split($1, u, /[ms]/); split($2, s, /[ms]/)
        print u[1] * 60 + u[2] + s[1] * 60 + s[2] }' "$WORK/times")
}

# bench NAME PORT SERVER_PID REDIS_BENCHMARK_ARGS...
# Appends one line to RESULTS: NAME rps p50 p99 server_cpu% bench_cpu% other_cpu% (CPU in %
# of one core; other = everything else on the machine, e.g. other people's compilers).
bench() {
    local name=$1 port=$2 pid=$3
    shift 3
    local threads=()
    [[ -n $BENCH_THREADS ]] && threads=(--threads "$BENCH_THREADS")
    local csv=$WORK/$name.csv
    local before busy_before bench_before start
    before=$(cpu_ticks "$pid")
    busy_before=$(machine_busy_ticks)
    children_cpu_seconds
    bench_before=$CHILD_CPU
    start=$EPOCHREALTIME
    # In the background so that a signal interrupts `wait` and the EXIT trap
    # stops it; `timeout` because redis-benchmark retries forever, at full
    # CPU, if the server dies.
    timeout "$BENCH_TIMEOUT" redis-benchmark -h 127.0.0.1 -p "$port" -c "$C" -r "$R" \
        "${threads[@]}" --csv "$@" >"$csv" 2>"$WORK/$name.err" &
    BENCH_PID=$!
    local status=0
    wait "$BENCH_PID" || status=$?
    BENCH_PID=
    local end=$EPOCHREALTIME bench_after after busy_after
    children_cpu_seconds
    bench_after=$CHILD_CPU
    after=$(cpu_ticks "$pid")
    busy_after=$(machine_busy_ticks)
    if ((status != 0)); then
        cat "$WORK/$name.err" "$csv" >&2
        die "redis-benchmark failed ($name, exit status $status)"
    fi
    # The data row is the last line: "test","rps","avg","min","p50","p95","p99","max"
    local row
    row=$(tail -n 1 "$csv" | tr -d '"')
    [[ $row == *,*,*,*,*,*,*,* ]] || { cat "$csv" >&2; die "no CSV row from redis-benchmark ($name)"; }
    RESULTS+=("$(awk -v name="$name" -v row="$row" -v start="$start" -v end="$end" \
        -v bench="$bench_before $bench_after" -v ticks=$((after - before)) \
        -v busy=$((busy_after - busy_before)) -v hz="$CLK_TCK" 'BEGIN {
        n = split(row, f, ","); split(bench, b, " ")
        wall = end - start; if (wall <= 0) wall = 1
        server = 100 * ticks / hz / wall; bench = 100 * (b[2] - b[1]) / wall
        other = 100 * busy / hz / wall - server - bench
        printf "%s %s %s %s %.0f %.0f %.0f", name, f[n-6], f[n-3], f[n-1],
            server, bench, other < 0 ? 0 : other
    }')")
}

# Expected distinct ids after `total` uniform draws from `r` values.
expected_distinct() {
    awk -v n="$1" -v r="$2" 'BEGIN { printf "%.0f", r * (1 - exp(-n / r)) }'
}

run_tw_p() {
    bench tw_p "$TW_PORT" "$TW_PID" -P "$P" -n "$N" ADD o:__rand_int__ 600000 REPLACE
}
run_redis_p() {
    bench redis_p "$REDIS_PORT" "$REDIS_PID" -P "$P" -n "$N" ZADD due 600000 o:__rand_int__
}
run_tw_1() {
    bench tw_1 "$TW_PORT" "$TW_PID" -P 1 -n "$N1" ADD o:__rand_int__ 600000 REPLACE
}
run_redis_1() {
    bench redis_1 "$REDIS_PORT" "$REDIS_PID" -P 1 -n "$N1" ZADD due 600000 o:__rand_int__
}

echo "# timewheel vs redis-server $(redis-server --version | sed -n 's/.*v=\([^ ]*\).*/\1/p')," \
    "$(nproc) cores, io-threads=$IO_THREADS, redis-benchmark threads=${BENCH_THREADS:-1}"
[[ -n $JOURNAL ]] && echo "# journal on: timewheel --redis into the same redis-server (appendonly yes, appendfsync $JOURNAL)"
echo "# pipelined: -P $P -c $C -n $N -r $R; unpipelined: -P 1 -c $C -n $N1 -r $R;" \
    "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-5s %-6s %11s %11s %7s | %9s %9s %9s %9s %6s | %-9s %-9s | %s\n' \
    round first "tw_P$P/s" "redis_P$P/s" ratio "tw_P1/s" "redis_P1/s" "tw_p99" "redis_p99" \
    "p99/r" "cpu_P$P" "cpu_P1" "count (expected)"

declare -a RATIOS P99_OK DETAILS
for round in $(seq "$ROUNDS"); do
    # Redis first: with JOURNAL, timewheel needs it to start.
    start_redis
    start_timewheel
    if ((round % 2)); then first=tw; else first=redis; fi
    RESULTS=()
    for phase in p 1; do
        if [[ $first == tw ]]; then order=(tw redis); else order=(redis tw); fi
        for who in "${order[@]}"; do
            "run_${who}_$phase"
        done
    done
    count=$(redis-cli -p "$TW_PORT" COUNT)
    zcard=$(redis-cli -p "$REDIS_PORT" ZCARD due)
    expected=$(expected_distinct $((N + N1)) "$R")
    stop_servers

    # name rps p50 p99 server_cpu bench_cpu, keyed by name
    declare -A rps=() p50=() p99=() scpu=() bcpu=()
    for line in "${RESULTS[@]}"; do
        read -r name a b c d e _ <<<"$line"
        rps[$name]=$a p50[$name]=$b p99[$name]=$c scpu[$name]=$d bcpu[$name]=$e
    done
    ratio=$(awk -v a="${rps[tw_p]}" -v b="${rps[redis_p]}" 'BEGIN { printf "%.2f", a / b }')
    p99_ratio=$(awk -v a="${p99[tw_1]}" -v b="${p99[redis_1]}" 'BEGIN { printf "%.2f", a / b }')
    RATIOS+=("$ratio")
    P99_OK+=("$(awk -v r="$p99_ratio" 'BEGIN { print (r <= 1.0 ? "yes" : "no") }')")
    printf '%-5s %-6s %11.0f %11.0f %6sx | %9.0f %9.0f %9s %9s %6s | %-9s %-9s | %s (%s), redis %s\n' \
        "$round" "$first" "${rps[tw_p]}" "${rps[redis_p]}" "$ratio" \
        "${rps[tw_1]}" "${rps[redis_1]}" "${p99[tw_1]}" "${p99[redis_1]}" "$p99_ratio" \
        "${scpu[tw_p]}/${bcpu[tw_p]}" "${scpu[tw_1]}/${bcpu[tw_1]}" "$count" "$expected" "$zcard"
    DETAILS+=("${RESULTS[@]/#/$round }")
done

echo "# cpu_P$P / cpu_P1: timewheel CPU % / redis-benchmark CPU % of one core during the run."
echo "# p99 in ms; p99/r = timewheel p99 / Redis p99. Every run, in the order it ran:"
echo "# (CPU in % of one core, $(nproc) cores = $(($(nproc) * 100))%; other = the rest of the machine)"
printf '#   %-5s %-8s %11s %8s %8s %10s %9s %9s\n' round run rps p50_ms p99_ms server_cpu% \
    bench_cpu% other_cpu%
for line in "${DETAILS[@]}"; do
    # shellcheck disable=SC2086  # split the fields
    printf '#   %-5s %-8s %11.0f %8s %8s %10s %9s %9s\n' $line
done
echo "# targets: ADD with -P $P >= 3x Redis ZADD: ratios ${RATIOS[*]};" \
    "unpipelined p99 <= Redis's: ${P99_OK[*]}"
