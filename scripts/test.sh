#!/usr/bin/env bash
# Runs every test: unit tests and the integration tests, which start moto's server on a
# free loopback port themselves. Extra arguments go to `cargo test`. Ends with one line
# totalling every test binary: "tests: N passed, N failed".
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
export COACH_MOTO_SERVER="$PWD/.venv/bin/coach-moto-server"

log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace --locked "$@" 2>&1 | tee "$log" || status=$?
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed;?$/) p += $(i-1); if ($i ~ /^failed;?$/) f += $(i-1) } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
