# Coach developer commands. Each script installs what it needs into ./.venv first.
.PHONY: dev test lint ci fuzz loadtest loadtest-volume contract arm64 bench eval

dev:  ## Run the local stack: moto + example docs + cargo lambda watch
	scripts/dev.sh

test: ## Run every test (unit and integration, against moto on loopback)
	scripts/test.sh

lint: ## cargo fmt --check, clippy -D warnings, sam validate --lint, cfn-lint, openapi-spec-validator
	scripts/lint.sh

ci:   ## What CI runs
	bash .ci/run

fuzz: ## Run the cargo-fuzz targets for FUZZ_SECONDS each (default 60); not part of CI
	scripts/fuzz.sh

loadtest: ## Bounded load test of a running `make dev` stack: make loadtest TOKEN=...
	@python3 scripts/loadtest.py --token "$(TOKEN)"

loadtest-volume: ## A running `COACH_RATE_LIMIT_USER=0 COACH_RATE_LIMIT_TENANT=0 make dev` through 5,000 documents and 2,000 chat turns: make loadtest-volume TOKEN=...
	@python3 scripts/loadtest.py --token "$(TOKEN)" --documents 5000 --turns 2000

contract: ## The API contract fuzzed: schemathesis, every check, every operation, against the local stack
	scripts/bootstrap.sh && .venv/bin/python tests/clients/contract.py

arm64: ## Cross-build for aarch64 and run the embedding tests and each function's cold start under qemu-user
	scripts/arm64.sh

bench: ## Benchmarks and cold start vs the Python stack, raw output in target/bench/ (docs/PERFORMANCE.md)
	scripts/bench.sh

eval: ## Retrieval quality on the CISI collection: Coach (BM25-only, hybrid) vs a BM25 library (docs/PERFORMANCE.md)
	scripts/eval.sh
