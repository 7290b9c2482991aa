#!/usr/bin/env bash
# Sets up and runs all of Quire's tests on a Debian/Ubuntu machine, installing what is missing:
# formatting and clippy lints, protocol, server, client and end-to-end tests in Rust, the UI's
# unit tests (Vitest), the desktop app driven over WebDriver under a virtual display, the
# PostgreSQL engine against PostgreSQL servers the tests start themselves, and a short pass of
# every fuzz target.
# Usage: scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib/setup.sh
source scripts/lib/setup.sh

ensure_rust
ensure_node
ensure_kosoku
ensure_apt "${DESKTOP_PACKAGES[@]}" "${E2E_PACKAGES[@]}" "${CLUSTER_PACKAGES[@]}"
if ! command -v tauri-driver >/dev/null 2>&1 && [ ! -x "$HOME/.cargo/bin/tauri-driver" ]; then
    echo "==> installing tauri-driver"
    cargo install tauri-driver --locked
fi

LOG_DIR=$(mktemp -d)
trap 'rm -rf "$LOG_DIR"' EXIT

echo "==> UI: unit tests and bundle"
build_ui
(cd ui && npm test) 2>&1 | tee "$LOG_DIR/ui.log"

echo "==> formatting and lints (cargo fmt --check, clippy with warnings as errors)"
if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
    rustup component add rustfmt clippy
fi
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings

echo "==> building every binary the end-to-end tests run"
cargo build --workspace --bins

echo "==> running the Rust test suite (desktop end-to-end included)"
set +e
QUIRE_E2E_DESKTOP=1 cargo test --workspace --no-fail-fast 2>&1 | tee "$LOG_DIR/rust.log"
status=${PIPESTATUS[0]}

echo "==> fuzz targets on stable: fixed-seed inputs, the server's seeds replayed (scripts/fuzz.sh 120 is the documented run)"
QUIRE_FUZZ_STABLE=1 scripts/fuzz.sh 2>&1 | tee "$LOG_DIR/fuzz.log"
fuzz_status=${PIPESTATUS[0]}
[ "$status" -eq 0 ] && status=$fuzz_status
set -e

# One closing line for the whole run: cargo's last lines are doc-test targets with no tests.
awk '
    FILENAME ~ /rust.log$/ && /^test result:/ {
        for (i = 1; i < NF; i++) {
            if ($(i + 1) ~ /^passed;?$/) passed += $i
            if ($(i + 1) ~ /^failed;?$/) failed += $i
        }
    }
    FILENAME ~ /ui.log$/ && /^ *Tests +/ {
        for (i = 1; i < NF; i++) {
            if ($(i + 1) ~ /^passed/) passed += $i
            if ($(i + 1) ~ /^failed/) failed += $i
        }
    }
    FILENAME ~ /fuzz.log$/ && /^fuzz result: .* passed$/ { passed += 1 }
    FILENAME ~ /fuzz.log$/ && /^fuzz result: .* failed$/ { failed += 1 }
    END { printf "Total: %d passed, %d failed\n", passed, failed }
' "$LOG_DIR/ui.log" "$LOG_DIR/rust.log" "$LOG_DIR/fuzz.log"
exit "$status"
