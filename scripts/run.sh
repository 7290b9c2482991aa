#!/usr/bin/env bash
# Sets up and runs Quire locally: the sync server in --dev mode (self-signed TLS, embedded
# SQLite in ./quire-data), with a read-write token for every document printed at start.
# Usage: scripts/run.sh [extra quire-server serve flags]
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib/setup.sh
source scripts/lib/setup.sh

ensure_rust
cargo build --release -p quire-server

DATA_DIR="${QUIRE_DATA_DIR:-$PWD/quire-data}"
mkdir -p "$DATA_DIR"
SERVER=target/release/quire-server
TOKEN=$("$SERVER" token --data-dir "$DATA_DIR" --user me --name "Me" --docs '*' --write --ttl 30d)
echo "==> token for every document (read-write, 30 days):"
echo "$TOKEN"
echo "$TOKEN" > "$DATA_DIR/local-token.txt"
exec "$SERVER" serve --dev --data-dir "$DATA_DIR" --listen "${QUIRE_LISTEN:-127.0.0.1:7700}" "$@"
