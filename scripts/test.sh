#!/usr/bin/env bash
# Runs every test: unit tests and the integration tests, which start moto's server on a
# free loopback port themselves, then (for the whole suite) the playground's browser test and
# the official OpenAI SDK against the local stack.
# Extra arguments go to `cargo test` (and skip the browser test). Ends with one line
# totalling every test binary: "tests: N passed, N failed".
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
export COACH_MOTO_SERVER="$PWD/.venv/bin/coach-moto-server"

log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace --locked "$@" 2>&1 | tee "$log" || status=$?
# The playground in headless Chromium against the local stack (tests/browser/playground.py),
# with the whole suite only: it skips, saying why, without chromium and chromedriver.
if [ "$#" -eq 0 ] && [ "$status" -eq 0 ]; then
  if .venv/bin/python tests/browser/playground.py 2>&1 | tee -a "$log"; then
    grep -q '^playground: passed' "$log" && echo "test result: ok. 1 passed; 0 failed (browser)" >>"$log"
  else
    status=1
    echo "test result: FAILED. 0 passed; 1 failed (browser)" >>"$log"
  fi
fi
# The official OpenAI SDK against the OpenAI-compatible API on the local stack, with the
# whole suite only.
if [ "$#" -eq 0 ] && [ "$status" -eq 0 ]; then
  if .venv/bin/python tests/clients/openai_sdk.py 2>&1 | tee -a "$log"; then
    grep -q '^openai-sdk: passed' "$log" && echo "test result: ok. 1 passed; 0 failed (openai sdk)" >>"$log"
  else
    status=1
    echo "test result: FAILED. 0 passed; 1 failed (openai sdk)" >>"$log"
  fi
fi
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed;?$/) p += $(i-1); if ($i ~ /^failed;?$/) f += $(i-1) } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
