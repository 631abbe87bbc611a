#!/usr/bin/env bash
# Runs every test: unit tests and the integration tests, which start moto's server on a
# free loopback port themselves. Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
export COACH_MOTO_SERVER="$PWD/.venv/bin/moto_server"
exec cargo test --workspace --locked "$@"
