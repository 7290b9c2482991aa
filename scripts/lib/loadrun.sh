# Shared by scripts/bench.sh and scripts/peers.sh: pinning (server on core 0, driver on core 1
# where taskset exists and there are two cores), a file limit for thousands of connections,
# and stopping the current server and removing its data directory (also on exit).
# After sourcing: PIN_SERVER / PIN_DRIVER arrays; set server_pid and data_dir when starting one.

PIN_SERVER=()
PIN_DRIVER=()
if command -v taskset >/dev/null 2>&1 && [ "$(nproc)" -ge 2 ]; then
    PIN_SERVER=(taskset -c 0)
    PIN_DRIVER=(taskset -c 1)
fi
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

server_pid=""
data_dir=""
stop_server() {
    if [ -n "$server_pid" ]; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
        server_pid=""
    fi
    if [ -n "$data_dir" ]; then
        rm -rf "$data_dir"
        data_dir=""
    fi
}
trap stop_server EXIT
