#!/usr/bin/env bash
# Sets up and runs all of Quire's tests on a Debian/Ubuntu machine, installing what is missing.
# Usage: scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib/setup.sh
source scripts/lib/setup.sh

ensure_rust

echo "==> building the binaries the end-to-end tests run"
cargo build --workspace --bins

echo "==> running the test suite"
cargo test --workspace --no-fail-fast
