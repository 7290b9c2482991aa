#!/usr/bin/env bash
# Runs quire-bench against Quire and its peers, one fresh server per run, on loopback only:
#   quire       quire-server (plain ws, no auth; it always stores in SQLite with durable acks)
#   quire-tls   the same over TLS (its --dev certificate), for $TLS_SCENARIOS only
#   hocuspocus  @hocuspocus/server 3 (with @hocuspocus/extension-sqlite when PERSIST=1)
#   y-websocket y-websocket 1.5.4's server (with LevelDB, YPERSISTENCE, when PERSIST=1)
#   y-sweet     y-sweet 0.9.1 (`cargo install y-sweet@0.9.1 --locked`; stores to a directory)
# Each server is pinned to core 0 and the driver to core 1 (taskset). The peers are installed
# from the public registries into target/peers/ on first use; none of their code is in the
# repository. Every run's JSON line (with a "server" field) goes to $OUT; a table of medians
# over the runs, with min-max, is printed at the end.
# Scenarios: S1-S8 and S10 are load runs (`quire-bench scenario`); F0 and S9 replay the B4
# editing trace (`quire-bench trace`). S8 and S9 run every server persisting (Hocuspocus with
# SQLite, y-websocket with LevelDB, y-sweet to its store directory); S9 stores a document,
# waits until each server has written it (Quire: its durable ACK; the others: past their
# store intervals), restarts the server on the same data and times a new client's sync.
# S11 (isolation) stores S9's large document the same way, restarts the server and runs small
# edits beside a 20 MB upload and that document's cold load on one connection; it needs
# several documents per socket, so y-websocket and y-sweet skip it.
# ALL_CORES=1 leaves server and driver unpinned (the all-cores pass).
# QUIRE_SERVER=PATH runs that quire-server binary instead of building this checkout's.
# Usage: scripts/peers.sh                                   # every scenario, 3 runs, every server
#        SERVERS="quire hocuspocus" SCENARIOS=S1 REPEATS=1 scripts/peers.sh
#        PERSIST=1 SCENARIOS=S1 scripts/peers.sh            # every server persisting
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib/setup.sh
source scripts/lib/setup.sh

SERVERS=${SERVERS:-"quire quire-tls hocuspocus y-websocket y-sweet"}
# quire-tls (Quire over TLS) runs only these scenarios: its cost beside plain ws.
TLS_SCENARIOS=${TLS_SCENARIOS:-"S1 S2 S5"}
SCENARIOS=${SCENARIOS:-"S1 S2 S3 S4 S5 S6 S7 S8 S9 S10 S11 F0"}
REPEATS=${REPEATS:-3}
PERSIST=${PERSIST:-0}
OUT=${OUT:-target/peers/results.jsonl}
PEERS=target/peers
# 64 loopback source addresses keep S3's 10,000 connections under Quire's 256 per address.
SOURCES=${SOURCES:-$(seq -s, -f '127.0.0.%g' 1 64)}

ensure_rust
ensure_node
TARGET=${CARGO_TARGET_DIR:-target}
if [ -n "${QUIRE_SERVER:-}" ]; then
    cargo build --release -p quire-bench
else
    cargo build --release -p quire-server -p quire-bench
fi
QUIRE_BIN=${QUIRE_SERVER:-$TARGET/release/quire-server}
DRIVER=$TARGET/release/quire-bench

install_node_peers() {
    mkdir -p "$PEERS/node"
    if [ ! -d "$PEERS/node/node_modules/@hocuspocus/extension-sqlite" ] \
        || [ ! -d "$PEERS/node/node_modules/y-leveldb" ]; then
        echo "==> installing Hocuspocus 3 and y-websocket 1.5.4 into $PEERS/node" >&2
        (cd "$PEERS/node" \
            && { [ -f package.json ] || echo '{"name":"quire-peers","private":true}' >package.json; } \
            && npm install --no-audit --no-fund @hocuspocus/server@3 @hocuspocus/extension-sqlite@3 \
                y-websocket@1.5.4 y-leveldb@0.1 \
            && { npm install-scripts approve sqlite3 leveldown >/dev/null 2>&1 || true; } \
            && npm rebuild sqlite3 leveldown)
    fi
    # Hocuspocus has no command-line server: this starts one on $PORT (SQLite when $DB is set).
    cat >"$PEERS/node/hocuspocus.js" <<'EOF'
const { Server } = require('@hocuspocus/server');
const { SQLite } = require('@hocuspocus/extension-sqlite');
const extensions = process.env.DB ? [new SQLite({ database: process.env.DB })] : [];
const server = new Server({ quiet: true, extensions });
// Hocuspocus 3 hands its `address` option to Node as `address`, which Node ignores (it reads
// `host`), so `server.listen()` would listen on every interface: listen on loopback here.
server.httpServer.listen({ port: Number(process.env.PORT), host: '127.0.0.1' },
    () => console.log(`listening on ws://127.0.0.1:${process.env.PORT}`));
EOF
}

install_y_sweet() {
    if [ ! -x "$PEERS/ysweet/bin/y-sweet" ]; then
        echo "==> building y-sweet 0.9.1 into $PEERS/ysweet (about 5 minutes)" >&2
        cargo install y-sweet@0.9.1 --locked --root "$PEERS/ysweet"
    fi
}

for server in $SERVERS; do
    case $server in
        hocuspocus | y-websocket) install_node_peers ;;
        y-sweet) install_y_sweet ;;
        quire | quire-tls) ;;
        *) echo "unknown server $server" >&2; exit 2 ;;
    esac
done

# shellcheck source=scripts/lib/loadrun.sh
source scripts/lib/loadrun.sh

# A free port below the kernel's ephemeral range, which S3's 10,000 client sockets fill: a
# port picked from that range can be taken by a client socket before the server binds it.
free_port() {
    python3 -c 'import random, socket
low = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
for port in random.sample(range(10000, low), 500):
    try:
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))
        print(port)
        break
    except OSError:
        pass'
}

# start_server NAME [DATA_DIR]: starts it (on DATA_DIR to reopen what an earlier start
# stored, else on a fresh one), sets server_pid, url and protocol.
start_server() {
    data_dir=${2:-$(mktemp -d)}
    driver_tls=()
    local port
    port=$(free_port)
    case $1 in
        quire)
            "${PIN_SERVER[@]}" "$QUIRE_BIN" serve --insecure-plain-ws --no-auth \
                --listen "127.0.0.1:$port" --data-dir "$data_dir" >>"$data_dir/log" 2>&1 &
            url="ws://127.0.0.1:$port/ws" protocol=quire ;;
        quire-tls)
            # Quire's TLS cost, reported beside the plain-ws comparison: its self-signed
            # development certificate, which the driver is told to trust.
            "${PIN_SERVER[@]}" "$QUIRE_BIN" serve --dev --no-auth \
                --listen "127.0.0.1:$port" --data-dir "$data_dir" >>"$data_dir/log" 2>&1 &
            url="wss://127.0.0.1:$port/ws" protocol=quire
            driver_tls=(--ca-cert "$data_dir/dev-cert.pem") ;;
        hocuspocus)
            local db=""
            [ "$persist" = 1 ] && db="$data_dir/hocuspocus.sqlite"
            PORT=$port DB=$db "${PIN_SERVER[@]}" node "$PEERS/node/hocuspocus.js" >>"$data_dir/log" 2>&1 &
            url="ws://127.0.0.1:$port" protocol=hocuspocus ;;
        y-websocket)
            # YPERSISTENCE must be unset, not empty, for no persistence.
            local persistence=()
            [ "$persist" = 1 ] && persistence=("YPERSISTENCE=$data_dir/leveldb")
            env HOST=127.0.0.1 PORT="$port" "${persistence[@]}" "${PIN_SERVER[@]}" \
                node "$PEERS/node/node_modules/y-websocket/bin/server.js" >>"$data_dir/log" 2>&1 &
            url="ws://127.0.0.1:$port/{doc}" protocol=y-websocket ;;
        y-sweet)
            "${PIN_SERVER[@]}" "$PEERS/ysweet/bin/y-sweet" serve "$data_dir/store" --host 127.0.0.1 \
                --port "$port" >>"$data_dir/log" 2>&1 &
            url="ws://127.0.0.1:$port/d/{doc}/ws/{doc}" protocol=y-websocket ;;
    esac
    server_pid=$!
    for _ in $(seq 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    echo "$1 did not start:" >&2
    cat "$data_dir/log" >&2
    return 1
}

# Stops the server but keeps its data directory.
halt_server() {
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
    server_pid=""
}

# Seconds a peer may take to write a document it was sent: y-sweet stores every 10 s, the
# Hocuspocus SQLite extension after a debounce of at most 10 s, y-websocket's LevelDB
# persistence as soon as it can (a 27 MB document takes a while): 12 s for each. Quire's ACK
# already says it is on disk.
store_wait() {
    case $1 in
        quire | quire-tls) echo 0 ;;
        *) echo 12 ;;
    esac
}

tag() {
    python3 -c 'import json, sys
for line in sys.stdin:
    r = json.loads(line); r["server"] = sys.argv[1]; r["persist"] = sys.argv[2] == "1"
    r["all_cores"] = sys.argv[3] == "1"; print(json.dumps(r))' "$1" "$persist" "${ALL_CORES:-0}"
}

# run_one SERVER SCENARIO: one fresh server, one run of the scenario.
run_one() {
    local server=$1 scenario=$2
    persist=$PERSIST
    case $scenario in S8 | S9 | S11) persist=1 ;; esac
    start_server "$server"
    # DRIVER_ARGS: extra driver options, e.g. "--warmup 1 --duration 3" for a smoke run.
    # shellcheck disable=SC2206
    local common=(--protocol "$protocol" --url "$url" --server-pid "$server_pid" --source-addrs "$SOURCES"
        "${driver_tls[@]}" ${DRIVER_ARGS:-})
    case $scenario in
        F0)
            "${PIN_DRIVER[@]}" "$DRIVER" trace F0 "${common[@]}" | tag "$server" >>"$OUT" ;;
        S9)
            local scale dir
            for scale in 1 100; do
                # (The server restarts on another port: the URL is read again each time.)
                "${PIN_DRIVER[@]}" "$DRIVER" trace S9-store --scale "$scale" --doc "bench-S9-x$scale" \
                    --protocol "$protocol" --url "$url" --server-pid "$server_pid" "${driver_tls[@]}" \
                    | tag "$server" >>"$OUT"
                sleep "$(store_wait "$server")"
                halt_server
                dir=$data_dir
                start_server "$server" "$dir"
                "${PIN_DRIVER[@]}" "$DRIVER" trace S9-open --scale "$scale" --doc "bench-S9-x$scale" \
                    --protocol "$protocol" --url "$url" --server-pid "$server_pid" "${driver_tls[@]}" \
                    | tag "$server" >>"$OUT"
            done ;;
        S11)
            # As S9 at scale 100, then the isolation phase on the restarted (cold) server.
            "${PIN_DRIVER[@]}" "$DRIVER" trace S11-store --scale 100 --doc bench-S11-cold \
                --protocol "$protocol" --url "$url" --server-pid "$server_pid" "${driver_tls[@]}" >/dev/null
            sleep "$(store_wait "$server")"
            halt_server
            start_server "$server" "$data_dir"
            "${PIN_DRIVER[@]}" "$DRIVER" trace S11 --scale 100 --doc bench-S11-cold \
                --protocol "$protocol" --url "$url" --server-pid "$server_pid" "${driver_tls[@]}" \
                | tag "$server" >>"$OUT" ;;
        *)
            "${PIN_DRIVER[@]}" "$DRIVER" scenario "$scenario" "${common[@]}" | tag "$server" >>"$OUT" ;;
    esac
}

if [ "${ALL_CORES:-0}" = 1 ]; then
    PIN_SERVER=()
    PIN_DRIVER=()
fi
mkdir -p "$(dirname "$OUT")"
: >"$OUT"
for scenario in $SCENARIOS; do
    for run in $(seq "$REPEATS"); do
        # Servers alternate within a round, so a busy spell on the machine hits them alike.
        for server in $SERVERS; do
            if [ "$server" = quire-tls ] && [[ " $TLS_SCENARIOS " != *" $scenario "* ]]; then
                continue
            fi
            # One document per socket: S11's heavy connection cannot be built.
            if [ "$scenario" = S11 ] && { [ "$server" = y-websocket ] || [ "$server" = y-sweet ]; }; then
                continue
            fi
            echo "==> $server $scenario run $run/$REPEATS" >&2
            run_one "$server" "$scenario" || echo "    $server $scenario run $run failed" >&2
            stop_server
        done
    done
done

python3 scripts/peers_summary.py "$OUT"
