#!/usr/bin/env bash
# Measures Quire's storage and cluster set-ups with quire-bench's S1 (propagation, CPU per
# update) and S8 (durable ACKs), release builds, each set-up fresh per run:
#   sqlite    one node on its embedded SQLite (the default);
#   postgres  one node on PostgreSQL;
#   cluster   three nodes on PostgreSQL and Redis, each document's clients spread over the
#             nodes (so every update crosses from one node to another).
# PostgreSQL (initdb into a temporary directory, as the postgres user when run as root) and
# Redis run as processes of this script's own on loopback ports. Nodes, PostgreSQL and Redis
# share core 0 and the driver runs on core 1 where taskset exists: the figures are of
# overhead and correctness on one machine, not of scale. CPU per update is the nodes' CPU
# (PostgreSQL's and Redis's are reported apart, as "backend_cpu_s").
# NODE_FLAGS adds `serve` flags to every node (e.g. NODE_FLAGS="--commit-window-us 1000").
# Usage: scripts/cluster_bench.sh                       # all three set-ups, S1 and S8, 3 runs
#        SETUPS="cluster" SCENARIOS=S1 REPEATS=1 scripts/cluster_bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."

SETUPS=${SETUPS:-"sqlite postgres cluster"}
SCENARIOS=${SCENARIOS:-"S1 S8"}
REPEATS=${REPEATS:-3}
OUT=${OUT:-target/bench/cluster.jsonl}
SOURCES=${SOURCES:-127.0.0.1,127.0.0.2,127.0.0.3,127.0.0.4,127.0.0.5,127.0.0.6,127.0.0.7,127.0.0.8}

TARGET=${CARGO_TARGET_DIR:-target}
cargo build --release -p quire-server -p quire-bench
SERVER=$TARGET/release/quire-server
DRIVER=$TARGET/release/quire-bench

# shellcheck source=scripts/lib/loadrun.sh
source scripts/lib/loadrun.sh

PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[ -x "$PG_BIN/initdb" ] || { echo "PostgreSQL's binaries are missing (Debian's postgresql package)" >&2; exit 1; }
command -v redis-server >/dev/null || { echo "redis-server is missing (Debian's redis-server package)" >&2; exit 1; }

as_pg() {
    if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

pids=()
work=""
pg_dir=""
cleanup() {
    if [ -n "$pg_dir" ] && [ -f "$pg_dir/data/postmaster.pid" ]; then
        as_pg "$PG_BIN/pg_ctl" -D "$pg_dir/data" stop -m immediate >/dev/null 2>&1 || true
    fi
    pg_dir=""
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    pids=()
    [ -n "$work" ] && rm -rf "$work"
    work=""
}
trap cleanup EXIT

redis_pid=""
start_backends() {
    pg_dir="$work/pg"
    mkdir -p "$pg_dir"
    [ "$(id -u)" -eq 0 ] && chown postgres: "$work" "$pg_dir"
    as_pg "$PG_BIN/initdb" -D "$pg_dir/data" --auth=trust --username=quire --no-sync >/dev/null
    pg_port=$(free_port)
    "${PIN_SERVER[@]}" runuser -u postgres -- "$PG_BIN/postgres" -D "$pg_dir/data" -p "$pg_port" \
        -k "$pg_dir" -c listen_addresses=127.0.0.1 >"$work/pg.log" 2>&1 &
    pids+=($!)
    for _ in $(seq 200); do
        as_pg "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$pg_port" && break
        sleep 0.05
    done
    as_pg "$PG_BIN/psql" -q -h 127.0.0.1 -p "$pg_port" -U quire -d postgres -c 'CREATE DATABASE quire'
    database_url="postgres://quire@127.0.0.1:$pg_port/quire"
    redis_port=$(free_port)
    "${PIN_SERVER[@]}" redis-server --port "$redis_port" --bind 127.0.0.1 --save '' \
        --appendonly no >"$work/redis.log" 2>&1 &
    pids+=($!)
    redis_url="redis://127.0.0.1:$redis_port"
    for _ in $(seq 200); do
        [ "$(redis-cli -p "$redis_port" ping 2>/dev/null)" = PONG ] && break
        sleep 0.05
    done
    redis_pid=${pids[-1]}
}

# PostgreSQL's processes (the postmaster and its children: a backend per connection) and
# Redis: their pids now.
backend_pids() {
    local postmaster
    postmaster=$(head -1 "$pg_dir/data/postmaster.pid")
    echo "$postmaster" $(pgrep -P "$postmaster") "$redis_pid"
}

# start_node FLAG...: a node on a fresh data directory; appends to node_pids and node_urls.
node_pids=()
node_urls=()
start_node() {
    local dir
    dir=$(mktemp -d -p "$work")
    # shellcheck disable=SC2086 # NODE_FLAGS is a list of flags
    "${PIN_SERVER[@]}" "$SERVER" serve --insecure-plain-ws --no-auth --listen 127.0.0.1:0 \
        --data-dir "$dir" "$@" ${NODE_FLAGS:-} >"$dir/stdout" 2>"$dir/stderr" &
    pids+=($!)
    node_pids+=($!)
    for _ in $(seq 100); do
        url=$(sed -n 's/^listening on \(ws:\/\/[^ ]*\)$/\1/p' "$dir/stdout")
        [ -n "$url" ] && { node_urls+=("$url"); return 0; }
        sleep 0.1
    done
    cat "$dir/stderr" >&2
    return 1
}

cpu_of() {  # total CPU seconds of the given pids
    python3 -c 'import os, sys
tick = os.sysconf("SC_CLK_TCK"); total = 0
for pid in sys.argv[1:]:
    with open(f"/proc/{pid}/stat") as f: rest = f.read().rsplit(")", 1)[1].split()
    total += (int(rest[11]) + int(rest[12])) / tick
print(total)' "$@"
}

mkdir -p "$(dirname "$OUT")"
: >"$OUT"
for setup in $SETUPS; do
    for scenario in $SCENARIOS; do
        for run in $(seq "$REPEATS"); do
            echo "==> $setup $scenario run $run/$REPEATS" >&2
            work=$(mktemp -d)
            node_pids=()
            node_urls=()
            case $setup in
                sqlite) start_node ;;
                postgres) start_backends; start_node --database-url "$database_url" ;;
                cluster)
                    start_backends
                    for _ in 1 2 3; do
                        start_node --database-url "$database_url" --redis-url "$redis_url"
                    done ;;
                *) echo "unknown set-up $setup" >&2; exit 1 ;;
            esac
            urls=$(IFS=,; echo "${node_urls[*]}")
            node_pid_list=$(IFS=,; echo "${node_pids[*]}")
            backend_before=0
            # shellcheck disable=SC2046 # a list of pids
            [ -n "$pg_dir" ] && backend_before=$(cpu_of $(backend_pids))
            line=$("${PIN_DRIVER[@]}" "$DRIVER" scenario "$scenario" --url "$urls" \
                --server-pid "$node_pid_list" --source-addrs "$SOURCES")
            backend_after=0
            # shellcheck disable=SC2046
            [ -n "$pg_dir" ] && backend_after=$(cpu_of $(backend_pids))
            python3 -c 'import json, sys
r = json.loads(sys.argv[1]); r["setup"] = sys.argv[2]; r["nodes"] = int(sys.argv[3])
r["node_flags"] = sys.argv[6]
r["backend_cpu_s"] = float(sys.argv[5]) - float(sys.argv[4])
print(json.dumps(r))' "$line" "$setup" "${#node_pids[@]}" "$backend_before" "$backend_after" \
                "${NODE_FLAGS:-}" \
                | tee -a "$OUT"
            cleanup
        done
    done
done
echo "results: $OUT" >&2
