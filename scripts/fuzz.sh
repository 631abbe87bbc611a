#!/usr/bin/env bash
# Runs every cargo-fuzz target for a bounded time (FUZZ_SECONDS each, default 60), starting
# from the committed seeds in fuzz/seeds/<target> plus whatever corpus earlier runs grew in
# fuzz/corpus/<target> (git-ignored). Installs cargo-fuzz into ./.tools on first use. Works on
# stable Rust: libFuzzer's coverage instrumentation without a sanitizer (`-s none`).
# A crash stops the run with the reproducing input in fuzz/artifacts/<target>/.
#   scripts/fuzz.sh               # all targets
#   scripts/fuzz.sh extract chunk # some targets
# The first build compiles the shared crate and the AWS SDK with instrumentation (about 10
# minutes on 2 cores); later runs reuse fuzz/target.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${FUZZ_SECONDS:-60}
version=0.13.2

if [ "$(.tools/bin/cargo-fuzz --version 2>/dev/null | awk '{print $2}')" != "$version" ]; then
  echo "fuzz: installing cargo-fuzz $version into ./.tools"
  cargo install --quiet --locked --root .tools cargo-fuzz --version "$version"
fi
export PATH="$PWD/.tools/bin:$PATH"

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(extract chunk jwt_header events)
fi
cd fuzz
cargo fuzz build -s none -O
log=$(mktemp)
trap 'rm -f "$log"' EXIT
for target in "${targets[@]}"; do
  mkdir -p "corpus/$target"
  echo "fuzz: $target for ${seconds}s"
  status=0
  cargo fuzz run -s none -O "$target" "corpus/$target" "seeds/$target" -- \
    -max_total_time="$seconds" -max_len=65536 -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    >"$log" 2>&1 || status=$?
  grep -E '^stat::(number_of_executed_units|average_exec_per_sec|peak_rss_mb|new_units_added)|^Done|panicked|SUMMARY|artifact_prefix|Test unit written' "$log" || true
  if [ "$status" -ne 0 ]; then
    tail -40 "$log" >&2
    echo "fuzz: $target failed (exit $status); reproduce with: cd fuzz && cargo fuzz run -s none -O $target artifacts/$target/<file>" >&2
    exit "$status"
  fi
done
echo "fuzz: ${#targets[@]} targets ran ${seconds}s each without a crash"
