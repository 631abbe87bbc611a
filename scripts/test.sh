#!/usr/bin/env bash
# Runs every test: unit tests and the integration tests, which start moto's server on a
# free loopback port themselves, then (for the whole suite) the playground's browser test,
# the official OpenAI and MCP SDKs and the schemathesis contract run against the local stack.
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
# A test of a client nobody here wrote against the local stack, with the whole suite only:
# `script` prints "`marker`: passed" when it ran (the browser test skips, saying why,
# without chromium and chromedriver) and fails otherwise.
client_test() {
  local script=$1 marker=$2 name=$3
  if [ "$status" -ne 0 ]; then return; fi
  if .venv/bin/python "$script" 2>&1 | tee -a "$log"; then
    if grep -q "^$marker: passed" "$log"; then
      echo "test result: ok. 1 passed; 0 failed ($name)" >>"$log"
    fi
  else
    status=1
    echo "test result: FAILED. 0 passed; 1 failed ($name)" >>"$log"
  fi
}
if [ "$#" -eq 0 ]; then
  # The playground in headless Chromium (tests/browser/playground.py).
  client_test tests/browser/playground.py playground browser
  # The official OpenAI SDK against the OpenAI-compatible API (tests/clients/openai_sdk.py).
  client_test tests/clients/openai_sdk.py openai-sdk "openai sdk"
  # The official MCP SDK against the MCP server (tests/clients/mcp_sdk.py).
  client_test tests/clients/mcp_sdk.py mcp-sdk "mcp sdk"
  # The API contract fuzzed by schemathesis (tests/clients/contract.py).
  client_test tests/clients/contract.py contract "api contract"
fi
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed;?$/) p += $(i-1); if ($i ~ /^failed;?$/) f += $(i-1) } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
