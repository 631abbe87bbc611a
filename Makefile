# Coach developer commands. Each script installs what it needs into ./.venv first.
.PHONY: dev test lint ci

dev:  ## Run the local stack: moto + example docs + cargo lambda watch
	scripts/dev.sh

test: ## Run every test (unit and integration, against moto on loopback)
	scripts/test.sh

lint: ## cargo fmt --check, clippy -D warnings, sam validate --lint, cfn-lint
	scripts/lint.sh

ci:   ## What CI runs
	bash .ci/run
