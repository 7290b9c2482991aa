#!/usr/bin/env bash
# Runs quire-bench against Quire and its peers, one fresh server per run, on loopback only:
#   quire       quire-server (plain ws, no auth; it always stores in SQLite with durable acks)
#   hocuspocus  @hocuspocus/server 3 (with @hocuspocus/extension-sqlite when PERSIST=1)
#   y-websocket y-websocket 1.5.4's server (with LevelDB, YPERSISTENCE, when PERSIST=1)
#   y-sweet     y-sweet 0.9.1 (`cargo install y-sweet@0.9.1 --locked`; stores to a directory)
# Each server is pinned to core 0 and the driver to core 1 (taskset). The peers are installed
# from the public registries into target/peers/ on first use; none of their code is in the
# repository. Every run's JSON line (with a "server" field) goes to $OUT; a table of medians
# over the runs, with min-max, is printed at the end.
# Usage: scripts/peers.sh                                   # S1 and S2, 3 runs, every server
#        SERVERS="quire hocuspocus" SCENARIOS=S1 REPEATS=1 scripts/peers.sh
#        PERSIST=1 SCENARIOS=S8 scripts/peers.sh            # every server persisting
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib/setup.sh
source scripts/lib/setup.sh

SERVERS=${SERVERS:-"quire hocuspocus y-websocket y-sweet"}
SCENARIOS=${SCENARIOS:-"S1 S2"}
REPEATS=${REPEATS:-3}
PERSIST=${PERSIST:-0}
OUT=${OUT:-target/peers/results.jsonl}
PEERS=target/peers
SOURCES=${SOURCES:-127.0.0.1,127.0.0.2,127.0.0.3,127.0.0.4,127.0.0.5,127.0.0.6,127.0.0.7,127.0.0.8}

ensure_rust
ensure_node
cargo build --release -p quire-server -p quire-bench
DRIVER=target/release/quire-bench

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
const server = new Server({ port: Number(process.env.PORT), address: '127.0.0.1', quiet: true, extensions });
server.listen().then(() => console.log(`listening on ws://127.0.0.1:${process.env.PORT}`));
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
        quire) ;;
        *) echo "unknown server $server" >&2; exit 2 ;;
    esac
done

# shellcheck source=scripts/lib/loadrun.sh
source scripts/lib/loadrun.sh

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# start_server NAME: starts it, sets server_pid, url and protocol.
start_server() {
    data_dir=$(mktemp -d)
    local port
    port=$(free_port)
    case $1 in
        quire)
            "${PIN_SERVER[@]}" target/release/quire-server serve --insecure-plain-ws --no-auth \
                --listen "127.0.0.1:$port" --data-dir "$data_dir" >"$data_dir/log" 2>&1 &
            url="ws://127.0.0.1:$port/ws" protocol=quire ;;
        hocuspocus)
            local db=""
            [ "$PERSIST" = 1 ] && db="$data_dir/hocuspocus.sqlite"
            PORT=$port DB=$db "${PIN_SERVER[@]}" node "$PEERS/node/hocuspocus.js" >"$data_dir/log" 2>&1 &
            url="ws://127.0.0.1:$port" protocol=hocuspocus ;;
        y-websocket)
            # YPERSISTENCE must be unset, not empty, for no persistence.
            local persistence=()
            [ "$PERSIST" = 1 ] && persistence=("YPERSISTENCE=$data_dir/leveldb")
            env HOST=127.0.0.1 PORT="$port" "${persistence[@]}" "${PIN_SERVER[@]}" \
                node "$PEERS/node/node_modules/y-websocket/bin/server.js" >"$data_dir/log" 2>&1 &
            url="ws://127.0.0.1:$port/{doc}" protocol=y-websocket ;;
        y-sweet)
            "${PIN_SERVER[@]}" "$PEERS/ysweet/bin/y-sweet" serve "$data_dir/store" --host 127.0.0.1 \
                --port "$port" >"$data_dir/log" 2>&1 &
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

mkdir -p "$(dirname "$OUT")"
: >"$OUT"
for scenario in $SCENARIOS; do
    for run in $(seq "$REPEATS"); do
        # Servers alternate within a round, so a busy spell on the machine hits them alike.
        for server in $SERVERS; do
            echo "==> $server $scenario run $run/$REPEATS" >&2
            start_server "$server"
            "${PIN_DRIVER[@]}" "$DRIVER" scenario "$scenario" --protocol "$protocol" --url "$url" \
                --server-pid "$server_pid" --source-addrs "$SOURCES" \
                | python3 -c 'import json, sys
for line in sys.stdin:
    r = json.loads(line); r["server"] = sys.argv[1]; r["persist"] = sys.argv[2] == "1"; print(json.dumps(r))' \
                    "$server" "$PERSIST" >>"$OUT" || echo "    $server $scenario run $run failed" >&2
            stop_server
        done
    done
done

python3 scripts/peers_summary.py "$OUT"
