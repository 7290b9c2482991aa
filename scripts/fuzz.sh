#!/usr/bin/env bash
# Runs quire-protocol's cargo-fuzz targets (shared/protocol/fuzz/README.md), each for a while.
#
#   scripts/fuzz.sh [SECONDS] [LIBFUZZER_FLAG...]
#
# SECONDS is the run length per target (default 60). Extra flags go to libFuzzer; to keep
# exploring past known findings instead of stopping at the first one:
#
#   scripts/fuzz.sh 600 -fork=1 -ignore_ooms=1 -ignore_crashes=1
#
# Needs a nightly toolchain (the targets build with AddressSanitizer). Installs cargo-fuzz if
# it is missing. Exits non-zero if any target found something; inputs that crash, run out of
# memory or time out are written to shared/protocol/fuzz/artifacts/<target>/.
set -euo pipefail

seconds="${1:-60}"
if [[ $# -gt 0 ]]; then
    shift
fi
if [[ ! "$seconds" =~ ^[1-9][0-9]*$ ]]; then
    echo "usage: $0 [SECONDS] [LIBFUZZER_FLAG...]" >&2
    exit 2
fi

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
fuzz_dir="$root/shared/protocol/fuzz"

if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

status=0
for target in frame_decode payload_decode; do
    echo "== fuzzing $target for ${seconds}s" >&2
    if ! (cd "$fuzz_dir" && cargo +nightly fuzz run "$target" -- \
        -max_total_time="$seconds" -rss_limit_mb=512 "$@"); then
        echo "== $target found something: see $fuzz_dir/artifacts/$target/" >&2
        status=1
    fi
done
exit "$status"
