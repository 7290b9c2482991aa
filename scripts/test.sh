#!/usr/bin/env bash
# Sets up and runs all of Quire's tests on a Debian/Ubuntu machine, installing what is missing:
# protocol, server, client and end-to-end tests in Rust, the UI's unit tests (Vitest), and the
# desktop app driven over WebDriver under a virtual display.
# Usage: scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib/setup.sh
source scripts/lib/setup.sh

ensure_rust
ensure_node
ensure_kosoku
ensure_apt "${DESKTOP_PACKAGES[@]}" "${E2E_PACKAGES[@]}"
if ! command -v tauri-driver >/dev/null 2>&1 && [ ! -x "$HOME/.cargo/bin/tauri-driver" ]; then
    echo "==> installing tauri-driver"
    cargo install tauri-driver --locked
fi

echo "==> UI: unit tests and bundle"
build_ui
(cd ui && npm test)

echo "==> building every binary the end-to-end tests run"
cargo build --workspace --bins

echo "==> running the Rust test suite (desktop end-to-end included)"
QUIRE_E2E_DESKTOP=1 cargo test --workspace --no-fail-fast
