#!/usr/bin/env bash
# Sets up and runs Quire on this machine: the sync server in --dev mode (self-signed TLS,
# embedded SQLite in ./quire-data) and the desktop app connected to it. The first start
# writes the app's settings (server URL, a token for every document, the dev certificate's
# fingerprint); later starts keep what you changed in the app.
# Usage: scripts/run.sh            (QUIRE_LISTEN=127.0.0.1:7700 by default;
#                                   QUIRE_PROFILE=debug for a faster, unoptimised build)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib/setup.sh
source scripts/lib/setup.sh

ensure_rust
ensure_node
ensure_apt "${DESKTOP_PACKAGES[@]}"
build_ui
PROFILE="${QUIRE_PROFILE:-release}"
if [ "$PROFILE" = release ]; then
    cargo build --release -p quire-server -p quire-desktop
else
    cargo build -p quire-server -p quire-desktop
fi
BIN="${CARGO_TARGET_DIR:-target}/$PROFILE"

DATA_DIR="${QUIRE_DATA_DIR:-$PWD/quire-data}"
LISTEN="${QUIRE_LISTEN:-127.0.0.1:7700}"
mkdir -p "$DATA_DIR"
SERVER="$BIN/quire-server"

"$SERVER" serve --dev --data-dir "$DATA_DIR" --listen "$LISTEN" > "$DATA_DIR/server.out" 2> "$DATA_DIR/server.log" &
SERVER_PID=$!
XVFB_PID=
# Whatever this script started stops with it, however it ends (the app quit, Ctrl-C, an error).
stop_all() {
    for pid in "$SERVER_PID" $XVFB_PID; do
        kill "$pid" 2>/dev/null || true
    done
    wait 2>/dev/null || true
}
trap stop_all EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
for _ in $(seq 1 100); do
    grep -q "^listening on" "$DATA_DIR/server.out" 2>/dev/null && break
    kill -0 "$SERVER_PID" 2>/dev/null || { cat "$DATA_DIR/server.log" >&2; exit 1; }
    sleep 0.1
done
cat "$DATA_DIR/server.out"
URL=$(sed -n 's/^listening on //p' "$DATA_DIR/server.out")
FINGERPRINT=$(sed -n 's/^dev certificate SHA-256: //p' "$DATA_DIR/server.out")

CONFIG_DIR="${QUIRE_DESKTOP_CONFIG_DIR:-${XDG_CONFIG_HOME:-$HOME/.config}/org.quire.desktop}"
if [ ! -f "$CONFIG_DIR/settings.json" ]; then
    TOKEN=$("$SERVER" token --data-dir "$DATA_DIR" --user me --name "${USER:-me}" --docs '*' --write --ttl 365d)
    mkdir -p "$CONFIG_DIR"
    cat > "$CONFIG_DIR/settings.json" <<JSON
{"serverUrl":"$URL","token":"$TOKEN","localOnly":false,"displayName":"${USER:-me}","color":"#3b82f6","trustedFingerprint":"$FINGERPRINT"}
JSON
    echo "==> wrote the app's settings to $CONFIG_DIR/settings.json"
fi

if [ -z "${DISPLAY:-}" ]; then
    ensure_apt xvfb
    # Xvfb picks a free display number and writes it to the descriptor given.
    exec {display_fd}<> <(:)
    Xvfb -displayfd "$display_fd" -screen 0 1280x800x24 -nolisten tcp 2>/dev/null &
    XVFB_PID=$!
    read -r -t 10 display_number <&"$display_fd" || { echo "Xvfb did not start" >&2; exit 1; }
    exec {display_fd}>&-
    export DISPLAY=":$display_number"
    echo "==> no display: running the app on a virtual one ($DISPLAY)"
fi
echo "==> starting the Quire desktop app (quit it to stop the server)"
"$BIN/quire-desktop"
