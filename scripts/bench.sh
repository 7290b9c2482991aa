#!/usr/bin/env bash
# Runs quire-bench's scenarios against a fresh release quire-server per run (plain ws, no
# auth, temp data dir), server pinned to core 0 and driver to core 1 where `taskset` exists.
# Every run's JSON line goes to $OUT; a median-of-runs summary table is printed at the end
# (paste it into docs/BENCHMARKS.md).
# S11 (isolation) stores S9's large document, restarts the server on the same data and runs
# the isolation phase against the cold server (as scripts/peers.sh does for S9).
# H1 (version history) times listing and restoring a named version on S9's two documents and
# on the B4 trace in `content`, then replays the trace over $H1_PACE_SECS against a server
# making automatic versions every $H1_INTERVAL_SECS and reads its versions from its database.
# QUIRE_SERVER=PATH runs a given server binary instead of building this checkout's (the
# driver is still built from this checkout); BUILD=LABEL adds "build": LABEL to every line.
# Usage: scripts/bench.sh                      # S1 S2 S5 S7 S8, 3 times each
#        SCENARIOS="S1 S7" REPEATS=1 scripts/bench.sh
#        QUIRE_SERVER=/path/to/quire-server BUILD=before SCENARIOS=S11 scripts/bench.sh
#        SCENARIOS=H1 REPEATS=1 scripts/bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."

SCENARIOS=${SCENARIOS:-"S1 S2 S5 S7 S8"}
REPEATS=${REPEATS:-3}
OUT=${OUT:-target/bench/results.jsonl}
# 8 loopback source addresses keep 2,000 connections under the server's 256-per-address limit.
SOURCES=${SOURCES:-127.0.0.1,127.0.0.2,127.0.0.3,127.0.0.4,127.0.0.5,127.0.0.6,127.0.0.7,127.0.0.8}

TARGET=${CARGO_TARGET_DIR:-target}
if [ -n "${QUIRE_SERVER:-}" ]; then
    cargo build --release -p quire-bench
    SERVER=$QUIRE_SERVER
else
    cargo build --release -p quire-server -p quire-bench
    SERVER=$TARGET/release/quire-server
fi
DRIVER=$TARGET/release/quire-bench

# shellcheck source=scripts/lib/loadrun.sh
source scripts/lib/loadrun.sh

mkdir -p "$(dirname "$OUT")"
: >"$OUT"

# start_server [DATA_DIR [FLAG...]]: on DATA_DIR to reopen what an earlier start stored, else
# (empty or none) on a fresh one, with any further `serve` flags; sets server_pid and url.
start_server() {
    data_dir=${1:-$(mktemp -d)}
    shift $(($# > 0 ? 1 : 0))
    "${PIN_SERVER[@]}" "$SERVER" serve --insecure-plain-ws --no-auth --listen 127.0.0.1:0 \
        --data-dir "$data_dir" "$@" >"$data_dir/stdout" 2>"$data_dir/stderr" &
    server_pid=$!
    for _ in $(seq 100); do
        url=$(sed -n 's/^listening on \(ws:\/\/[^ ]*\)$/\1/p' "$data_dir/stdout")
        if [ -n "$url" ]; then
            return 0
        fi
        sleep 0.1
    done
    echo "server did not start:" >&2
    cat "$data_dir/stderr" >&2
    return 1
}

# Stops the server but keeps its data directory.
halt_server() {
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
    server_pid=""
}

tag() {
    if [ -n "${BUILD:-}" ]; then
        python3 -c 'import json, sys
for line in sys.stdin:
    r = json.loads(line); r["build"] = sys.argv[1]; print(json.dumps(r))' "$BUILD"
    else
        cat
    fi
}

# S11: store the 26.7 MB document, restart the server on the same data so that it is cold,
# then the isolation phase (small edits beside a 20 MB upload and the cold document's load).
run_s11() {
    "${PIN_DRIVER[@]}" "$DRIVER" trace S11-store --scale 100 --doc bench-S11-cold \
        --url "$url" --server-pid "$server_pid" >/dev/null
    halt_server
    start_server "$data_dir"
    "${PIN_DRIVER[@]}" "$DRIVER" trace S11 --scale 100 --doc bench-S11-cold \
        --url "$url" --server-pid "$server_pid"
}

H1_PACE_SECS=${H1_PACE_SECS:-120}
H1_INTERVAL_SECS=${H1_INTERVAL_SECS:-1}

# H1: list and restore on S9's B4-sized document, on the trace in `content` and on S9's 100×
# document, a fresh server each; then the trace paced over $H1_PACE_SECS against a server
# with automatic versions every $H1_INTERVAL_SECS (default quota), stopped so that its
# database can be read: the document's versions, added to the driver's line as "sqlite".
run_h1() {
    local variant first=1 storage
    for variant in "--scale 1" "--scale 1 --in-content" "--scale 100"; do
        if [ -z "$first" ]; then
            stop_server
            start_server
        fi
        first=""
        # shellcheck disable=SC2086 # the variant is several flags
        "${PIN_DRIVER[@]}" "$DRIVER" trace H1 $variant --doc bench/H1/doc \
            --url "$url" --server-pid "$server_pid"
    done
    stop_server
    start_server "" --version-interval-secs "$H1_INTERVAL_SECS"
    storage=$("${PIN_DRIVER[@]}" "$DRIVER" trace H1-storage --pace-secs "$H1_PACE_SECS" \
        --doc bench/H1/storage --url "$url" --server-pid "$server_pid")
    halt_server
    python3 -c 'import json, os, sqlite3, sys
db, doc, interval = sys.argv[1], sys.argv[2], int(sys.argv[3])
r = json.loads(sys.stdin.read())
c = sqlite3.connect(db)
count, size, state, auto = c.execute(
    "SELECT COUNT(*), COALESCE(SUM(size), 0), COALESCE(SUM(LENGTH(state)), 0),"
    " COALESCE(SUM(kind = 0), 0) FROM versions WHERE doc_id = ?", (doc,)).fetchone()
made = c.execute("SELECT seq FROM sqlite_sequence WHERE name = ?", ("versions",)).fetchone()
r["version_interval_s"] = interval
r["sqlite"] = {"versions": count, "auto": auto, "bytes": size, "state_bytes": state,
               "versions_made": made[0] if made else 0, "db_file_bytes": os.path.getsize(db)}
print(json.dumps(r))' "$data_dir/quire.db" bench/H1/storage "$H1_INTERVAL_SECS" <<<"$storage"
}

for scenario in $SCENARIOS; do
    for run in $(seq "$REPEATS"); do
        echo "==> $scenario run $run/$REPEATS" >&2
        start_server
        # Into a file, not a pipe: run_s11 restarts the server, which a subshell would hide
        # from stop_server.
        line=$(mktemp)
        if case $scenario in
            S11) run_s11 ;;
            H1) run_h1 ;;
            *) "${PIN_DRIVER[@]}" "$DRIVER" scenario "$scenario" --url "$url" \
                --server-pid "$server_pid" --source-addrs "$SOURCES" ;;
        esac >"$line"; then
            tag <"$line" >>"$OUT"
        else
            echo "    $scenario run $run failed" >&2
        fi
        rm -f "$line"
        stop_server
    done
done

python3 scripts/bench_summary.py "$OUT"
