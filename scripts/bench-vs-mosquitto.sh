#!/usr/bin/env bash
# Reruns the "Server throughput vs Mosquitto" comparison of docs/PERFORMANCE.md:
# the same shapes of work against the local Mosquitto (mqtt-loadgen, the
# baseline in shared/tools) and release-built sotto servers running as their
# own processes, scenario by scenario, in one run. sotto targets:
#
#   sotto-sqlite  one node, SQLite (the embedded default, --data)
#   sotto-pg      one node on PostgreSQL (--database, a fresh database)
#   sotto-pg2     two nodes on one PostgreSQL database (another fresh one),
#                 sharing certificate, key and server secret; the load
#                 generator spreads devices over both (--server twice)
#
#   scripts/bench-vs-mosquitto.sh            # full run (long: four targets)
#   QUICK=1 scripts/bench-vs-mosquitto.sh    # small counts, a smoke test
#   TARGETS="sqlite pg2" scripts/...         # a subset of the sotto targets
#   T_LIMIT=180 scripts/...                  # longer timed phases (a busy machine)
#
# Needs: Mosquitto listening on 127.0.0.1:1883 (`persistence true`), the
# mqtt-loadgen sources (MQTT_LOADGEN, default ../shared/tools/mqtt-loadgen),
# for the PostgreSQL targets PostgreSQL at PG_URL (default
# postgres://postgres@127.0.0.1:5432, trust) and psql; the databases
# bench_<random>_1 and _2 are created by the servers and dropped at the end.
# Results: $OUT/log (everything), $OUT/results.txt (the RESULT lines) and
# $OUT/summary.md (one column per target, ratios to Mosquitto,
# scripts/bench-summary.py). Every run is bounded (message counts, -T
# limits, loadgen watchdogs); the servers started here are stopped at the
# end. Loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."

MQTT_LOADGEN=${MQTT_LOADGEN:-../shared/tools/mqtt-loadgen}
MQTT_TARGET=${MQTT_TARGET:-/tmp/mqtt-target}
OUT=${OUT:-target/bench-vs-mosquitto}
PORT=${SOTTO_BENCH_PORT:-7443}
PG_URL=${PG_URL:-postgres://postgres@127.0.0.1:5432}
TARGETS=${TARGETS:-sqlite pg pg2}
# wall-clock limit of each timed phase, s (-T of both load generators; at
# most 240, as sotto-loadgen signs its requests before the timed phase)
T_LIMIT=${T_LIMIT:-60}

if [[ -n "${QUICK:-}" ]]; then
    N_SAT=2000 N_RATE=2000 RATE=1000 RATE2=500 M_OFF=2000 C_IDLE=200 HOLD=1
else
    N_SAT=50000 N_RATE=20000 RATE=5000 RATE2=${RATE2:-2000} M_OFF=50000 C_IDLE=10000 HOLD=3
fi

mkdir -p "$OUT"
: >"$OUT/log"
log() { echo "$*" | tee -a "$OUT/log"; }
run() {
    log "+ $*"
    "$@" 2>&1 | tee -a "$OUT/log"
}

# The idle scenario holds C connections in the load generator and as many
# in the servers.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

log "## $(date -u '+%Y-%m-%d %H:%M:%S UTC') on $(nproc) cores: $(lscpu | sed -n 's/^Model name: *//p' | head -1)"
log "## load: $(cut -d' ' -f1-3 /proc/loadavg); commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'); targets: $TARGETS"

cargo build --release --manifest-path "$MQTT_LOADGEN/Cargo.toml" --target-dir "$MQTT_TARGET"
cargo build --release -p sotto-loadgen -p sotto-cli
MQ="$MQTT_TARGET/release/mqtt-loadgen"
REL=${CARGO_TARGET_DIR:-target}/release
SL=$REL/sotto-loadgen

MPID=$(pgrep -o -x mosquitto) || { echo "Mosquitto is not running on this machine" >&2; exit 1; }
log "## $(mosquitto -h 2>&1 | head -1), pid $MPID"

PIDS=()
DIRS=()
DBS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    for d in "${DIRS[@]}"; do rm -rf "$d"; done
    for db in "${DBS[@]}"; do
        psql "$PG_URL/postgres" -q -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
    done
}
trap cleanup EXIT

# start_node NAME PORT ARGS...: a release `sotto server` in the background;
# sets NODE_PID and NODE_FP (the fingerprint it prints).
start_node() {
    local name=$1 port=$2
    shift 2
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        echo "port $port is in use; set SOTTO_BENCH_PORT" >&2
        exit 1
    fi
    "$REL/sotto" server --listen "127.0.0.1:$port" --no-rate-limits "$@" >"$OUT/server-$name.log" 2>&1 &
    NODE_PID=$!
    PIDS+=("$NODE_PID")
    for _ in $(seq 300); do
        grep -q '^fingerprint' "$OUT/server-$name.log" 2>/dev/null && break
        kill -0 "$NODE_PID" 2>/dev/null || break
        sleep 0.1
    done
    NODE_FP=$(sed -n 's/^fingerprint: *//p' "$OUT/server-$name.log")
    [[ -n "$NODE_FP" ]] || { cat "$OUT/server-$name.log" >&2; exit 1; }
    log "## $name: sotto server pid $NODE_PID on 127.0.0.1:$port $*"
}

tag=$$
db_tag=$(od -An -N4 -tx4 /dev/urandom | tr -d ' ')
# label -> the load generator's command line
declare -A S
i=0
for t in $TARGETS; do
    dir=$(mktemp -d /tmp/sotto-bench-XXXXXX)
    DIRS+=("$dir")
    case $t in
        sqlite)
            start_node sqlite $((PORT + i)) --data "$dir"
            S[sotto-sqlite]="$SL --server https://127.0.0.1:$((PORT + i)) --fingerprint $NODE_FP --server-pid $NODE_PID --label sotto-sqlite"
            i=$((i + 1))
            ;;
        pg)
            db="bench_${db_tag}_1"
            DBS+=("$db")
            start_node pg $((PORT + i)) --data "$dir" --database "$PG_URL/$db"
            S[sotto-pg]="$SL --server https://127.0.0.1:$((PORT + i)) --fingerprint $NODE_FP --server-pid $NODE_PID --label sotto-pg"
            i=$((i + 1))
            ;;
        pg2)
            db="bench_${db_tag}_2"
            DBS+=("$db")
            start_node pg2-a $((PORT + i)) --data "$dir" --database "$PG_URL/$db"
            a_pid=$NODE_PID a_port=$((PORT + i))
            dir_b=$(mktemp -d /tmp/sotto-bench-XXXXXX)
            DIRS+=("$dir_b")
            start_node pg2-b $((PORT + i + 1)) --data "$dir_b" --database "$PG_URL/$db" \
                --cert "$dir/cert.pem" --key "$dir/key.pem" --secret-file "$dir/server_secret"
            S[sotto-pg2]="$SL --server https://127.0.0.1:$a_port --server https://127.0.0.1:$((PORT + i + 1)) --fingerprint $NODE_FP --server-pid $a_pid --server-pid $NODE_PID --label sotto-pg2"
            i=$((i + 2))
            ;;
        *)
            echo "unknown target $t (want sqlite, pg, pg2)" >&2
            exit 1
            ;;
    esac
done

M=("$MQ" --port 1883 --broker-pid "$MPID" --label mosquitto)
# one scenario at a time: Mosquitto, then each sotto target, so all see the
# same machine
scenario() {
    local prefix=$1
    shift
    run "${M[@]}" --prefix "$prefix-$tag" "$@"
    for t in $TARGETS; do
        # shellcheck disable=SC2086 # the command line is split on purpose
        run ${S[sotto-$t]} "$@"
    done
}
scenario r1 relay -P 4 -S 100 -N "$N_SAT" -B 256 -T "$T_LIMIT"
scenario r2 relay -P 4 -S 100 -N "$N_RATE" -B 256 --rate "$RATE" -T "$T_LIMIT"
# latency at a rate both keep up with (not in the mqtt-loadgen README)
scenario r3 relay -P 4 -S 100 -N "$N_RATE" -B 256 --rate "$RATE2" -T "$T_LIMIT"
scenario o1 offline -P 4 -S 100 -M "$M_OFF" -B 256 -T "$T_LIMIT"
scenario i1 idle -C "$C_IDLE" --hold "$HOLD" -T "$T_LIMIT"

grep '^RESULT' "$OUT/log" >"$OUT/results.txt"
if command -v python3 >/dev/null; then
    python3 scripts/bench-summary.py "$OUT/results.txt" | tee "$OUT/summary.md"
fi
log "## done $(date -u '+%H:%M:%S UTC'), load $(cut -d' ' -f1-3 /proc/loadavg); RESULT lines in $OUT/results.txt"
