# bash benches/tls.sh
#
# Server throughput, latency and handshake rate over TLS: timewheel
# (`serve --tls-cert`) against `redis-server --tls-port`, side by side in the
# same run so that load from other processes hits both alike.
#
# Makes a throwaway CA and a server certificate for 127.0.0.1 with openssl
# (ECDSA P-256, as the tests' rcgen certificates), then each round starts a
# fresh timewheel (TLS only, in-memory) and a private TLS-only redis-server
# (`--port 0 --tls-port <free port>`, no persistence, no client certificates,
# temporary directory) and runs, alternating which server goes first:
#   1. pipelined:   redis-benchmark --tls -P $P -c $C -n $N -r $R
#                   `ADD o:__rand_int__ 600000 REPLACE` vs `ZADD due 600000 o:__rand_int__`
#   2. unpipelined: the same with -P 1 -n $N1 (latency percentiles from --csv)
#   3. handshakes:  redis-benchmark --tls -k 0 -c $C -n $NK PING: a new
#                   connection, and so a full TLS handshake, per request; the
#                   rate is bounded by redis-benchmark's own handshakes, so the
#                   server's CPU time per connection (/proc/<pid>/stat) is shown too
# then checks timewheel's COUNT against Redis's ZCARD (same ids drawn).
#
# Overrides (environment): N=2000000 P=64 C=50 R=100000000 N1=200000 NK=5000
#   ROUNDS=1  NO_BUILD=1 (skip `cargo build --release`)
#
# redis-benchmark and redis-server must be built with TLS (Debian's are).

set -euo pipefail

N=${N:-2000000}
P=${P:-64}
C=${C:-50}
R=${R:-100000000}
N1=${N1:-200000}
NK=${NK:-5000}
ROUNDS=${ROUNDS:-1}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$CARGO_TARGET_DIR/release/timewheel

CLK_TCK=$(getconf CLK_TCK)
die() { echo "tls.sh: $*" >&2; exit 1; }
# CPU ticks (user + system, all threads) a process has used so far.
cpu_ticks() { sed 's/.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'; }
for tool in redis-server redis-benchmark redis-cli openssl awk timeout; do
    command -v "$tool" >/dev/null || die "$tool not found on PATH"
done
if [[ -z ${NO_BUILD:-} ]]; then
    (cd "$ROOT" && cargo build --release --quiet --bin timewheel) || die "cargo build --release failed"
fi
[[ -x $BIN ]] || die "no binary at $BIN"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/timewheel-tlsbench.XXXXXX")
TW_PID=
REDIS_PID=
stop_servers() {
    local pid
    for pid in $TW_PID $REDIS_PID; do kill "$pid" 2>/dev/null || true; done
    for pid in $TW_PID $REDIS_PID; do wait "$pid" 2>/dev/null || true; done
    TW_PID=
    REDIS_PID=
}
trap 'stop_servers; rm -rf "$WORK"' EXIT
trap 'exit 130' INT TERM

# A CA and a server certificate for 127.0.0.1 / localhost.
(
    cd "$WORK"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
        -subj "/CN=tls.sh test CA" -keyout ca.key -out ca.crt 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
        -subj "/CN=localhost" -keyout server.key -out server.csr 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n' >ext.cnf
    openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
        -extfile ext.cnf -out server.crt 2>/dev/null
)
TLS=(--tls --cacert "$WORK/ca.crt")

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

start_timewheel() {
    local log _
    log=$(mktemp "$WORK/timewheel.XXXXXX.log")
    RUST_LOG=info "$BIN" serve --bind 127.0.0.1:0 \
        --tls-cert "$WORK/server.crt" --tls-key "$WORK/server.key" 2>"$log" &
    TW_PID=$!
    TW_PORT=
    for _ in $(seq 200); do
        TW_PORT=$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$log")
        [[ -n $TW_PORT ]] && return 0
        sleep 0.05
    done
    cat "$log" >&2
    die "timewheel did not report 'listening on'"
}

start_redis() {
    local attempt _
    for attempt in 1 2 3 4 5; do
        REDIS_PORT=$((20000 + RANDOM % 30000))
        port_in_use "$REDIS_PORT" && continue
        redis-server --bind 127.0.0.1 --port 0 --tls-port "$REDIS_PORT" \
            --tls-cert-file "$WORK/server.crt" --tls-key-file "$WORK/server.key" \
            --tls-ca-cert-file "$WORK/ca.crt" --tls-auth-clients no \
            --save "" --appendonly no --dir "$WORK" --daemonize no \
            --logfile "$WORK/redis.log" &
        REDIS_PID=$!
        for _ in $(seq 200); do
            if redis-cli "${TLS[@]}" -p "$REDIS_PORT" PING 2>/dev/null | grep -q PONG; then
                return 0
            fi
            kill -0 "$REDIS_PID" 2>/dev/null || break
            sleep 0.05
        done
        wait "$REDIS_PID" 2>/dev/null || true
        REDIS_PID=
    done
    die "could not start redis-server --tls-port"
}

# Prints "rps p50 p99" from redis-benchmark's --csv row.
bench() {
    local port=$1
    shift
    timeout 600 redis-benchmark "${TLS[@]}" -p "$port" --csv "$@" 2>/dev/null |
        awk -F, 'NR == 2 { gsub(/"/, ""); print $2, $5, $7 }'
}

printf '%-6s %-6s %10s %10s %7s %9s %9s %15s %15s %9s %9s %9s %9s\n' \
    round first "ADD -P$P" "ZADD -P$P" ratio "ADD -P1" "ZADD -P1" \
    "ADD p50/p99" "ZADD p50/p99" "tw conn/s" "rd conn/s" "tw ms/hs" "rd ms/hs"
for round in $(seq "$ROUNDS"); do
    start_redis
    start_timewheel
    if ((round % 2)); then order=(tw redis); else order=(redis tw); fi
    declare -A pipe one hs
    for side in "${order[@]}"; do
        if [[ $side == tw ]]; then
            pipe[tw]=$(bench "$TW_PORT" -c "$C" -r "$R" -P "$P" -n "$N" ADD o:__rand_int__ 600000 REPLACE)
        else
            pipe[redis]=$(bench "$REDIS_PORT" -c "$C" -r "$R" -P "$P" -n "$N" ZADD due 600000 o:__rand_int__)
        fi
    done
    for side in "${order[@]}"; do
        if [[ $side == tw ]]; then
            one[tw]=$(bench "$TW_PORT" -c "$C" -r "$R" -P 1 -n "$N1" ADD o:__rand_int__ 600000 REPLACE)
        else
            one[redis]=$(bench "$REDIS_PORT" -c "$C" -r "$R" -P 1 -n "$N1" ZADD due 600000 o:__rand_int__)
        fi
    done
    declare -A cpu
    for side in "${order[@]}"; do
        if [[ $side == tw ]]; then
            before=$(cpu_ticks "$TW_PID")
            hs[tw]=$(bench "$TW_PORT" -k 0 -c "$C" -n "$NK" PING)
            cpu[tw]=$(($(cpu_ticks "$TW_PID") - before))
        else
            before=$(cpu_ticks "$REDIS_PID")
            hs[redis]=$(bench "$REDIS_PORT" -k 0 -c "$C" -n "$NK" PING)
            cpu[redis]=$(($(cpu_ticks "$REDIS_PID") - before))
        fi
    done
    ms_per() { awk -v t="$1" -v hz="$CLK_TCK" -v n="$NK" 'BEGIN { printf "%.3f", t * 1000 / hz / n }'; }
    count=$(redis-cli "${TLS[@]}" -p "$TW_PORT" COUNT)
    zcard=$(redis-cli "${TLS[@]}" -p "$REDIS_PORT" ZCARD due)
    read -r tw_p _ _ <<<"${pipe[tw]}"
    read -r rd_p _ _ <<<"${pipe[redis]}"
    read -r tw_1 tw_50 tw_99 <<<"${one[tw]}"
    read -r rd_1 rd_50 rd_99 <<<"${one[redis]}"
    read -r tw_hs _ _ <<<"${hs[tw]}"
    read -r rd_hs _ _ <<<"${hs[redis]}"
    ratio=$(awk -v a="$tw_p" -v b="$rd_p" 'BEGIN { printf "%.2fx", a / b }')
    printf '%-6s %-6s %10s %10s %7s %9s %9s %15s %15s %9s %9s %9s %9s\n' \
        "$round" "${order[0]}" "$tw_p" "$rd_p" "$ratio" "$tw_1" "$rd_1" \
        "$tw_50/$tw_99" "$rd_50/$rd_99" "$tw_hs" "$rd_hs" \
        "$(ms_per "${cpu[tw]}")" "$(ms_per "${cpu[redis]}")"
    echo "       COUNT $count, ZCARD $zcard (same ids drawn: they should be close)"
    stop_servers
done
