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
# overflow checks). Installs cargo-fuzz if it is missing. Exits non-zero if any target found
# something; inputs that crash, run out of memory or time out are written to
# <fuzz dir>/artifacts/<target>/.
#
# QUIRE_FUZZ_STABLE=1 is the short pass scripts/test.sh runs: the targets build on stable as a
# release server is built (`cargo fuzz run -s none -O`). The decoder targets run
# QUIRE_FUZZ_RUNS inputs (default 1000000) from a fixed libFuzzer seed and an empty corpus
# instead of SECONDS, so every run of the test command tries the same inputs. The server target
# only replays its committed seeds: what it explores depends on yrs's randomly seeded hash maps,
# so no seed makes its search repeat, and it still has an open finding (server/fuzz/README.md).
# Open-ended exploration is the nightly run above.
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
# several payloads per input, each capped at 64 KiB), whether committed seeds exist in
# seeds/<target>/ (read alongside corpus/<target>/, where libFuzzer writes what it finds), and
# what the short pass does with it (explore, or replay the seeds).
targets=(
    "shared/protocol/fuzz frame_decode 4096 no explore"
    "shared/protocol/fuzz payload_decode 4096 no explore"
    "server/fuzz channel_payload 65536 yes replay"
)

toolchain=(+nightly)
sanitizer=()
length=(-max_total_time="$seconds")
stable=0
if [[ "${QUIRE_FUZZ_STABLE:-0}" == 1 ]]; then
    stable=1
    toolchain=()
    sanitizer=(-s none -O)
    length=(-seed=1 -runs="${QUIRE_FUZZ_RUNS:-1000000}")
fi

status=0
for entry in "${targets[@]}"; do
    read -r dir target max_len seeded short_pass <<<"$entry"
    run_length=("${length[@]}")
    if [[ "$stable" == 1 && "$short_pass" == replay ]]; then
        run_length=(-runs=0)
    fi
    # The first directory is where libFuzzer writes new inputs: a fresh one for the short pass.
    if [[ "$stable" == 1 ]]; then
        fresh=$(mktemp -d)
        corpora=("$fresh")
    else
        mkdir -p "$root/$dir/corpus/$target"
        corpora=("corpus/$target")
    fi
    if [[ "$seeded" == yes ]]; then
        corpora+=("seeds/$target")
    fi
    echo "== fuzzing $target: ${run_length[*]}" >&2
    if (cd "$root/$dir" && cargo "${toolchain[@]}" fuzz run "${sanitizer[@]}" "$target" "${corpora[@]}" -- \
        "${run_length[@]}" -rss_limit_mb=512 -max_len="$max_len" "$@"); then
        echo "fuzz result: $target passed"
    else
        echo "== $target found something: see $root/$dir/artifacts/$target/" >&2
        echo "fuzz result: $target failed"
        status=1
    fi
    if [[ "$stable" == 1 ]]; then
        rm -rf "$fresh"
    fi
done
exit "$status"
