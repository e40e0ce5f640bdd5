#!/usr/bin/env bash
# Issue 12's benchmarks (docs/PERFORMANCE.md, "Sender API: delivery to
# phone numbers"): the sender API to N unregistered numbers (held, one
# invitation SMS each queued), to N registered numbers (registered first
# with codes read from the SMS sink; sealed on the server; every message
# then drained and opened on its device), and E2E held messages followed
# to their number's registration, opening and `delivered`.
# Each of the two parts runs against a fresh server (a fresh data
# directory, or a fresh PostgreSQL database), so that the invitation SMS
# queued by the first do not delay the codes of the second.
#
#   cargo build --release -p sotto-cli -p sotto-loadgen
#   scripts/bench-phone.sh [sqlite|postgres]
#
# Environment: N (10000), M (messages to registered numbers, N), E2E (100),
# C (sender API calls in flight, 32), R (registrations in flight, 64),
# BIN (target/release), PORT (7560), PG (postgres://postgres@127.0.0.1:5432).
# Output: a directory under /tmp with the server logs and summary.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
STORE=${1:-sqlite}
N=${N:-10000}
M=${M:-$N}
E2E=${E2E:-100}
C=${C:-32}
R=${R:-64}
BIN=${BIN:-target/release}
PORT=${PORT:-7560}
PG=${PG:-postgres://postgres@127.0.0.1:5432}
OUT=$(mktemp -d /tmp/sotto-phone-bench.XXXXXX)
SRV_PID=
DB=

log() { echo "$*" | tee -a "$OUT/summary.txt"; }

stop_server() {
    if [[ -n $SRV_PID ]]; then
        kill "$SRV_PID" 2>/dev/null || true
        wait "$SRV_PID" 2>/dev/null || true
        SRV_PID=
    fi
    if [[ -n $DB ]]; then
        psql "$PG/postgres" -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null
        DB=
    fi
}
trap stop_server EXIT

# fresh_server NAME: a new data directory (and database), a sender; sets
# DATA, FP, KEY, SRV_PID, DB_ARGS.
fresh_server() {
    local name=$1
    DATA="$OUT/$name"
    mkdir -p "$DATA"
    DB_ARGS=()
    if [[ $STORE == postgres ]]; then
        DB=sotto_phone_$(od -An -N4 -tx4 /dev/urandom | tr -d ' ')
        DB_ARGS=(--database "$PG/$DB")
        # creates the database and its schema (for the sender below)
        "$BIN/sotto" admin migrate "${DB_ARGS[@]}" >/dev/null 2>>"$OUT/admin.log"
    fi
    KEY=$("$BIN/sotto" admin --data "$DATA" "${DB_ARGS[@]}" sender add acme \
        --name "Acme Clinic" --webhook http://127.0.0.1:9/none 2>>"$OUT/admin.log" | sed -n 's/^api key: *//p')
    [[ -n $KEY ]] || { echo "no API key printed" >&2; exit 1; }
    "$BIN/sotto" server --listen "127.0.0.1:$PORT" --data "$DATA" "${DB_ARGS[@]}" \
        --sms-sink "$DATA/sms.jsonl" --no-rate-limits >"$OUT/server-$name.log" 2>&1 &
    SRV_PID=$!
    for _ in $(seq 300); do
        grep -q '^fingerprint' "$OUT/server-$name.log" 2>/dev/null && break
        kill -0 "$SRV_PID" 2>/dev/null || break
        sleep 0.1
    done
    FP=$(sed -n 's/^fingerprint: *//p' "$OUT/server-$name.log")
    [[ -n $FP ]] || { cat "$OUT/server-$name.log" >&2; exit 1; }
    log "## $name: sotto server pid $SRV_PID, $STORE, data $DATA"
}

loadgen() {
    local cmd=("$BIN/sotto-loadgen" --server "https://127.0.0.1:$PORT" --fingerprint "$FP"
        --label "$STORE" --setup-timeout 3000 --max-secs 3600 "$@")
    log "\$ ${cmd[*]/$KEY/sk_...}"
    "${cmd[@]}" | tee -a "$OUT/summary.txt"
}

log "# $(date -u '+%F %T UTC'), commit $(git rev-parse --short HEAD), $STORE, binaries $BIN"
log "# uptime:$(uptime)"

fresh_server held
loadgen sender --api-key "$KEY" -N "$N" -M "$N" -C "$C"
stop_server
log "# uptime:$(uptime)"

fresh_server registered
loadgen phone --api-key "$KEY" --sms-sink "$DATA/sms.jsonl" -N "$N" -M "$M" -C "$C" -R "$R" --e2e "$E2E"
stop_server
log "# $(date -u '+%F %T UTC') uptime:$(uptime)"
log "# output in $OUT"
