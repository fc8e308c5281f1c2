#!/usr/bin/env bash
# Runs every cargo-fuzz target for a bounded time, one after the other (docs/fuzzing.md).
# Needs a nightly toolchain; installs cargo-fuzz if it is missing. New inputs land in
# fuzz/corpus/<target>; a crash stops the run and leaves its input in fuzz/artifacts/.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${FUZZ_SECONDS:-60}
if ! command -v rustup >/dev/null || ! rustup toolchain list | grep -q '^nightly'; then
    echo "make fuzz: skipped: cargo-fuzz needs a nightly toolchain (rustup toolchain install nightly)"
    exit 0
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "==> installing cargo-fuzz (once; a few minutes)"
    cargo install --locked cargo-fuzz
fi

targets=${FUZZ_TARGETS:-$(cargo +nightly fuzz list)}
cargo +nightly fuzz build
for target in $targets; do
    echo "==> fuzz $target for ${seconds}s"
    mkdir -p "fuzz/corpus/$target"
    cargo +nightly fuzz run "$target" "fuzz/corpus/$target" "fuzz/seeds/$target" -- \
        -max_total_time="$seconds" -timeout=10 -print_final_stats=1
done
echo "==> no crash in $(echo $targets | wc -w) targets; minimise what they found with"
echo "    cargo +nightly fuzz cmin TARGET fuzz/corpus/TARGET"
