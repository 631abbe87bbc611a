#!/usr/bin/env bash
# Runs every benchmark behind docs/PERFORMANCE.md and keeps the raw output in target/bench/:
#   coldstart.txt/.json  release binaries under a local Runtime API, beside the Python stack
#   chat.txt             chat handler overhead without the model, emulator time apart, and
#                        the OpenAI-compatible route beside /chat
#   index.txt            tenant index at scale: 1,000 documents ingested at once, cold first
#                        chat for 1,400 and 10,000 documents, S3 requests, memory
#   embedding.txt        the embedded model: load, query p50, chunks/s at ingest, peak RSS,
#                        on one thread and on every core
#   core.txt, auth.txt   criterion micro-benchmarks (retrieval, extraction, prompt, JWT)
#   arm64.txt            the arm64 build through cargo lambda, or why it could not run
# Loopback only. BENCH_RUNS (default 7) sets the cold starts per function; BENCH_QUICK=1
# shortens the criterion runs (less precise figures). First run: about 40 minutes (two
# fat-LTO release builds, x86_64 and arm64); later runs about 15.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
export COACH_MOTO_SERVER="$PWD/.venv/bin/coach-moto-server"
out=target/bench
mkdir -p "$out"

# The Python stack to compare with, in a venv of its own.
python=${PYTHON:-python3}
if [ ! -x .venv-bench/bin/python ]; then
  echo "bench: creating .venv-bench for the Python comparison"
  "$python" -m venv .venv-bench
fi
stamp=.venv-bench/.installed-requirements
if ! cmp -s scripts/bench/python-requirements.txt "$stamp"; then
  .venv-bench/bin/python -m pip install --quiet --disable-pip-version-check -r scripts/bench/python-requirements.txt
  cp scripts/bench/python-requirements.txt "$stamp"
fi

echo "bench: building release binaries (fat LTO: several minutes the first time)"
cargo build --release --locked -p chat -p upload-url -p ingest -p docs-refresh
cargo build --locked -p coach-dev --bin coach-dev

echo "bench: cold start"
.venv/bin/python scripts/bench/coldstart.py --runs "${BENCH_RUNS:-7}" --python .venv-bench/bin/python \
  --json "$out/coldstart.json" | tee "$out/coldstart.txt"

echo "bench: chat overhead"
cargo bench --locked -p coach-integration-tests --bench chat | tee "$out/chat.txt"

echo "bench: tenant index at scale"
cargo bench --locked -p coach-integration-tests --bench index | tee "$out/index.txt"

echo "bench: postgres index store at scale (1,000,000 chunks; BENCH_PG_DOCS sets the documents, 10 chunks each)"
cargo bench --locked -p coach-integration-tests --bench postgres | tee "$out/postgres.txt"

echo "bench: embedded embedding model"
RAYON_NUM_THREADS=1 cargo bench --locked -p coach-integration-tests --bench embedding | tee "$out/embedding.txt"
cargo bench --locked -p coach-integration-tests --bench embedding | tee -a "$out/embedding.txt"

criterion_args=()
if [ "${BENCH_QUICK:-0}" = 1 ]; then
  criterion_args=(--warm-up-time 1 --measurement-time 2)
fi
echo "bench: micro-benchmarks"
cargo bench --locked -p coach-shared --bench core -- ${criterion_args[@]+"${criterion_args[@]}"} | tee "$out/core.txt"
cargo bench --locked -p coach-integration-tests --bench auth -- ${criterion_args[@]+"${criterion_args[@]}"} | tee "$out/auth.txt"

echo "bench: arm64 build (zig from requirements-dev.txt cross-links; the binaries cannot run on this host)"
if command -v rustup >/dev/null 2>&1; then
  rustup target add aarch64-unknown-linux-gnu >/dev/null 2>&1 || true
fi
if PATH="$PWD/.venv/bin:$PATH" .venv/bin/cargo-lambda lambda build --release --arm64 --locked -p chat -p upload-url -p ingest -p docs-refresh \
  >"$out/arm64.txt" 2>&1; then
  ls -l target/lambda/*/bootstrap | tee -a "$out/arm64.txt"
else
  echo "bench: the arm64 build failed; the reason is in $out/arm64.txt:"
  tail -n 5 "$out/arm64.txt"
fi

echo
echo "bench: summary (full output in $out/)"
cat "$out/coldstart.txt"
grep -E "^(chat|stream|openai|mcp|bedrock):|p50|added over|added by" "$out/chat.txt"
grep -E "^(ingest|  checked|cold|  of which|  S3|warm|  handler|memory)" "$out/index.txt"
grep -E "^(postgres|[0-9]\.|  )" "$out/postgres.txt"
grep -E "^(embedding|kernels|load|query|ingest|memory)" "$out/embedding.txt"
# Criterion: each benchmark's name, time [low estimate high], and throughput where measured.
awk '/^[a-z0-9_]+\/[^ ]+$/ { name = $0; next }
     /^ +time:/ && name { t = $0; sub(/^ +time: +/, "", t); printf "%-50s %s", name, t; name = ""; open = 1; next }
     /^ +thrpt:/ && open { t = $0; sub(/^ +thrpt: +/, "", t); printf "  %s", t; next }
     { if (open) print ""; open = 0 }
     END { if (open) print "" }' "$out/core.txt" "$out/auth.txt"
