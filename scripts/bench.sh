#!/usr/bin/env bash
# Runs quire-bench's scenarios against a fresh release quire-server per run (plain ws, no
# auth, temp data dir), server pinned to core 0 and driver to core 1 where `taskset` exists.
# Every run's JSON line goes to $OUT; a median-of-runs summary table is printed at the end
# (paste it into docs/BENCHMARKS.md).
# Usage: scripts/bench.sh                      # S1 S2 S5 S7 S8, 3 times each
#        SCENARIOS="S1 S7" REPEATS=1 scripts/bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."

SCENARIOS=${SCENARIOS:-"S1 S2 S5 S7 S8"}
REPEATS=${REPEATS:-3}
OUT=${OUT:-target/bench/results.jsonl}
# 8 loopback source addresses keep 2,000 connections under the server's 256-per-address limit.
SOURCES=${SOURCES:-127.0.0.1,127.0.0.2,127.0.0.3,127.0.0.4,127.0.0.5,127.0.0.6,127.0.0.7,127.0.0.8}

cargo build --release -p quire-server -p quire-bench
SERVER=target/release/quire-server
DRIVER=target/release/quire-bench

# shellcheck source=scripts/lib/loadrun.sh
source scripts/lib/loadrun.sh

mkdir -p "$(dirname "$OUT")"
: >"$OUT"

start_server() {
    data_dir=$(mktemp -d)
    "${PIN_SERVER[@]}" "$SERVER" serve --insecure-plain-ws --no-auth --listen 127.0.0.1:0 \
        --data-dir "$data_dir" >"$data_dir/stdout" 2>"$data_dir/stderr" &
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

for scenario in $SCENARIOS; do
    for run in $(seq "$REPEATS"); do
        echo "==> $scenario run $run/$REPEATS" >&2
        start_server
        "${PIN_DRIVER[@]}" "$DRIVER" scenario "$scenario" --url "$url" \
            --server-pid "$server_pid" --source-addrs "$SOURCES" >>"$OUT" || echo "    $scenario run $run failed" >&2
        stop_server
    done
done

python3 scripts/bench_summary.py "$OUT"
