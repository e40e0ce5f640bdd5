#!/usr/bin/env bash
# Reruns the "Server throughput vs Mosquitto" comparison of docs/PERFORMANCE.md:
# the same shapes of work against the local Mosquitto (mqtt-loadgen, the
# baseline in shared/tools) and a release-built sotto server running as its
# own process, scenario by scenario, in one run.
#
#   scripts/bench-vs-mosquitto.sh            # full run (several minutes)
#   QUICK=1 scripts/bench-vs-mosquitto.sh    # small counts, a smoke test
#
# Needs: Mosquitto listening on 127.0.0.1:1883 (`persistence true`), the
# mqtt-loadgen sources (MQTT_LOADGEN, default ../shared/tools/mqtt-loadgen).
# Results: $OUT/log (everything), $OUT/results.txt (the RESULT lines) and
# $OUT/summary.md (side by side with ratios, scripts/bench-summary.py).
# Every run is bounded (message counts, -T limits, loadgen watchdogs); the
# sotto server started here is stopped at the end. Loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."

MQTT_LOADGEN=${MQTT_LOADGEN:-../shared/tools/mqtt-loadgen}
MQTT_TARGET=${MQTT_TARGET:-/tmp/mqtt-target}
OUT=${OUT:-target/bench-vs-mosquitto}
PORT=${SOTTO_BENCH_PORT:-7443}

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
# in the server.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

log "## $(date -u '+%Y-%m-%d %H:%M:%S UTC') on $(nproc) cores: $(lscpu | sed -n 's/^Model name: *//p' | head -1)"
log "## load: $(cut -d' ' -f1-3 /proc/loadavg)"

cargo build --release --manifest-path "$MQTT_LOADGEN/Cargo.toml" --target-dir "$MQTT_TARGET"
cargo build --release -p sotto-loadgen -p sotto-cli
MQ="$MQTT_TARGET/release/mqtt-loadgen"
SL=target/release/sotto-loadgen

MPID=$(pgrep -o -x mosquitto) || { echo "Mosquitto is not running on this machine" >&2; exit 1; }
log "## $(mosquitto -h 2>&1 | head -1), pid $MPID"

if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
    echo "port $PORT is in use; set SOTTO_BENCH_PORT" >&2
    exit 1
fi
DATA=$(mktemp -d /tmp/sotto-bench-XXXXXX)
target/release/sotto server --listen "127.0.0.1:$PORT" --data "$DATA" --no-rate-limits >"$OUT/server.log" 2>&1 &
SPID=$!
cleanup() {
    kill "$SPID" 2>/dev/null || true
    wait "$SPID" 2>/dev/null || true
    rm -rf "$DATA"
}
trap cleanup EXIT
for _ in $(seq 100); do
    grep -q '^fingerprint' "$OUT/server.log" 2>/dev/null && break
    sleep 0.1
done
FP=$(sed -n 's/^fingerprint: *//p' "$OUT/server.log")
[[ -n "$FP" ]] || { cat "$OUT/server.log" >&2; exit 1; }
log "## sotto server pid $SPID, data $DATA, $(head -1 "$OUT/server.log")"

M=("$MQ" --port 1883 --broker-pid "$MPID" --label mosquitto)
S=("$SL" --server "https://127.0.0.1:$PORT" --fingerprint "$FP" --server-pid "$SPID" --label sotto)
tag=$$

# one scenario at a time, Mosquitto then sotto, so both see the same machine
run "${M[@]}" --prefix "r1-$tag" relay -P 4 -S 100 -N "$N_SAT" -B 256
run "${S[@]}" relay -P 4 -S 100 -N "$N_SAT" -B 256
run "${M[@]}" --prefix "r2-$tag" relay -P 4 -S 100 -N "$N_RATE" -B 256 --rate "$RATE"
run "${S[@]}" relay -P 4 -S 100 -N "$N_RATE" -B 256 --rate "$RATE"
# latency at a rate both keep up with (not in the mqtt-loadgen README)
run "${M[@]}" --prefix "r3-$tag" relay -P 4 -S 100 -N "$N_RATE" -B 256 --rate "$RATE2"
run "${S[@]}" relay -P 4 -S 100 -N "$N_RATE" -B 256 --rate "$RATE2"
run "${M[@]}" --prefix "o1-$tag" offline -P 4 -S 100 -M "$M_OFF" -B 256
run "${S[@]}" offline -P 4 -S 100 -M "$M_OFF" -B 256
run "${M[@]}" --prefix "i1-$tag" idle -C "$C_IDLE" --hold "$HOLD"
run "${S[@]}" idle -C "$C_IDLE" --hold "$HOLD"

grep '^RESULT' "$OUT/log" >"$OUT/results.txt"
if command -v python3 >/dev/null; then
    python3 scripts/bench-summary.py "$OUT/results.txt" | tee "$OUT/summary.md"
fi
log "## done; RESULT lines in $OUT/results.txt"
