#!/usr/bin/env bash
# Runs the cargo-fuzz targets, each for a while: quire-protocol's decoders
# (shared/protocol/fuzz/README.md) and quire-server's handling of channel payloads
# (server/fuzz/README.md).
#
#   scripts/fuzz.sh [SECONDS] [LIBFUZZER_FLAG...]
#
# SECONDS is the run length per target (default 60). Extra flags go to libFuzzer; to keep
# exploring past known findings instead of stopping at the first one:
#
#   scripts/fuzz.sh 600 -fork=1 -ignore_ooms=1 -ignore_crashes=1
#
# Needs a nightly toolchain (the targets build with AddressSanitizer, debug assertions and
# overflow checks). With QUIRE_FUZZ_STABLE=1 the targets build on stable as a release server is
# built, without a sanitizer or overflow checks (`cargo fuzz run -s none -O`): the short pass
# scripts/test.sh runs. Installs cargo-fuzz if it is missing. Exits non-zero if any target found something; inputs that crash, run out of
# memory or time out are written to <fuzz dir>/artifacts/<target>/.
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

if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

# fuzz directory, target, libFuzzer's largest input (the channel payload target handles
# several payloads per input, each capped at 64 KiB), and whether committed seeds exist in
# seeds/<target>/ (read alongside corpus/<target>/, where libFuzzer writes what it finds).
targets=(
    "shared/protocol/fuzz frame_decode 4096 no"
    "shared/protocol/fuzz payload_decode 4096 no"
    "server/fuzz channel_payload 65536 yes"
)

toolchain=(+nightly)
sanitizer=()
if [[ "${QUIRE_FUZZ_STABLE:-0}" == 1 ]]; then
    toolchain=()
    sanitizer=(-s none -O)
fi

status=0
for entry in "${targets[@]}"; do
    read -r dir target max_len seeded <<<"$entry"
    corpora=()
    if [[ "$seeded" == yes ]]; then
        mkdir -p "$root/$dir/corpus/$target"
        corpora=("corpus/$target" "seeds/$target")
    fi
    echo "== fuzzing $target for ${seconds}s" >&2
    if (cd "$root/$dir" && cargo "${toolchain[@]}" fuzz run "${sanitizer[@]}" "$target" "${corpora[@]}" -- \
        -max_total_time="$seconds" -rss_limit_mb=512 -max_len="$max_len" "$@"); then
        echo "fuzz result: $target passed"
    else
        echo "== $target found something: see $root/$dir/artifacts/$target/" >&2
        echo "fuzz result: $target failed"
        status=1
    fi
done
exit "$status"
