#!/usr/bin/env bash
# Retrieval quality end to end (`make eval`; not part of `make test`): uploads a test
# collection (default: the handbook's CISI, ../shared/eval/cisi; or EVAL_COLLECTION) as one
# tenant's documents through the API against moto on loopback, asks every judged query
# through POST /chat, and scores Coach's sources beside a plain BM25 library (bm25s) in the
# same run. Output: target/eval/cisi.json (Coach's runs) and target/eval/cisi.md (the table).
# COACH_RETRIEVAL_* and COACH_CHUNK_* in the environment are passed to Coach (for tuning).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
collection=${EVAL_COLLECTION:-../shared/eval/cisi}
if [ ! -f "$collection/CISI.ALL" ]; then
  echo "eval: no test collection at $collection (set EVAL_COLLECTION)" >&2
  exit 1
fi
stamp=.venv/.installed-eval
if ! cmp -s requirements-eval.txt "$stamp"; then
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-eval.txt
  cp requirements-eval.txt "$stamp"
fi
export COACH_MOTO_SERVER="$PWD/.venv/bin/coach-moto-server"
mkdir -p target/eval
# Extra arguments: more Coach runs over the same ingest, NAME:VAR=VALUE,... (see coach-eval).
cargo run --quiet --locked -p coach-integration-tests --bin coach-eval -- "$collection" target/eval/cisi.json "$@"
.venv/bin/python scripts/eval.py "$collection" target/eval/cisi.json target/eval/cisi.md
