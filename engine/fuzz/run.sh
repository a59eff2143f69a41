#!/usr/bin/env bash
# Runs every engine fuzz target for a bounded time, one after another, each from its committed
# seeds plus the corpus earlier runs grew (fuzz/corpus, not committed). Exits non-zero on the
# first crash, leaving the input in fuzz/artifacts/<target>/.
#
#   engine/fuzz/run.sh                      # 60 s per target
#   SHOAL_FUZZ_SECONDS=600 engine/fuzz/run.sh sstable block
#
# Needs the nightly toolchain (libFuzzer's sanitizer flags) and cargo-fuzz, which it installs
# from crates.io when missing. `.ci/run` calls it when SHOAL_FUZZ=1.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${SHOAL_FUZZ_SECONDS:-60}
if ! rustup toolchain list | grep -q '^nightly'; then
  echo "engine/fuzz/run.sh: needs the nightly toolchain (rustup toolchain install nightly)" >&2
  exit 1
fi
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo +nightly fuzz list)
fi
for target in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$target"
  echo "== fuzz $target for ${seconds}s"
  # -O: optimised; -a: debug assertions and overflow checks on (they find more).
  cargo +nightly fuzz run -O -a "$target" "fuzz/corpus/$target" "fuzz/seeds/$target" \
    -- -max_total_time="$seconds" -print_final_stats=1
done
