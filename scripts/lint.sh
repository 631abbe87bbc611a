#!/usr/bin/env bash
# Static checks: formatting, clippy with warnings as errors, and the SAM template
# (sam validate --lint, then cfn-lint) and the API's OpenAPI document.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings

export SAM_CLI_TELEMETRY=0
# sam validate needs a region; it never calls AWS with --lint.
AWS_DEFAULT_REGION=${AWS_DEFAULT_REGION:-us-east-1} .venv/bin/sam validate --lint --template template.yaml
.venv/bin/cfn-lint template.yaml
.venv/bin/openapi-spec-validator openapi.yaml
echo "lint: ok"
