#!/usr/bin/env bash
# arm64 (Graviton, the deploy target), run rather than only compiled: cross-builds for
# aarch64-unknown-linux-gnu (Debian's gcc-aarch64-linux-gnu links it and builds the
# tokenizer's C code) and runs under qemu-user (Debian's qemu-user-static):
#   1. the embedding crate's tests: its kernels against their references, and the model's
#      vectors against sentence-transformers' (shared/embed/tests/reference.rs);
#   2. a cold start of each release function against a local Lambda Runtime API, AWS calls to
#      moto (scripts/bench/coldstart.py --runner qemu, one start each): every one must answer.
# Correctness only: an emulator's times say nothing of Graviton's, so none is reported.
# Installs what it needs when missing (the Rust target with rustup, the Debian packages with
# apt-get). The release build drops fat LTO for thin LTO and 16 codegen units
# (ARM64_FAT_LTO=1 keeps the deploy profile whole): the same code, a fraction of the build.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh

target=aarch64-unknown-linux-gnu
if ! rustup target list --installed 2>/dev/null | grep -qx "$target"; then
  rustup target add "$target"
fi
missing=()
command -v aarch64-linux-gnu-gcc >/dev/null 2>&1 || missing+=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross)
command -v qemu-aarch64-static >/dev/null 2>&1 || missing+=(qemu-user-static)
if [ "${#missing[@]}" -gt 0 ]; then
  sudo=
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

runner="qemu-aarch64-static -L /usr/aarch64-linux-gnu"
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="$runner"
export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
export AR_aarch64_unknown_linux_gnu=aarch64-linux-gnu-ar

echo "arm64: the embedding crate's tests under qemu-user"
cargo test --locked -p coach-embed --target "$target"

echo "arm64: the release functions"
if [ "${ARM64_FAT_LTO:-0}" != 1 ]; then
  export CARGO_PROFILE_RELEASE_LTO=thin CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16
fi
cargo build --locked --release --target "$target" -p chat -p upload-url -p ingest -p docs-refresh
cargo build --locked --quiet -p coach-dev --bin coach-dev
readelf -h "target/$target/release/chat" | grep -q AArch64 || { echo "arm64: not an aarch64 binary" >&2; exit 1; }

echo "arm64: a cold start of each function under qemu-user"
.venv/bin/python scripts/bench/coldstart.py --bin-dir "target/$target/release" --runner "$runner" --runs 1 \
  --start-timeout 300 --deadline 900 --no-times
echo "arm64: passed"
