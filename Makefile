# Coach developer commands. Each script installs what it needs into ./.venv first.
.PHONY: dev test lint ci fuzz loadtest bench eval

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

bench: ## Benchmarks and cold start vs the Python stack, raw output in target/bench/ (docs/PERFORMANCE.md)
	scripts/bench.sh

eval: ## Retrieval quality on the CISI collection: Coach (BM25-only, hybrid) vs a BM25 library (docs/PERFORMANCE.md)
	scripts/eval.sh
