# The two commands of the README: `make up` and `make test`.
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: up test test-fast bootstrap bench lint clean

bootstrap:
	@scripts/bootstrap.sh

## Bootstrap, initialize ./rlhf-workspace, generate round 1 and serve the app on :8501.
up: bootstrap
	$(BIN)/rlhf up

## Bootstrap and run the whole test suite (PostgreSQL tests use a throwaway cluster).
test: bootstrap
	scripts/with_postgres.sh $(BIN)/python -m pytest $(PYTEST_ARGS)

## The suite without the tests that load the real default models.
test-fast: bootstrap
	scripts/with_postgres.sh $(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

bench: bootstrap
	@for script in bench/*.py; do echo "== $$script"; $(BIN)/python $$script || exit 1; done

lint: bootstrap
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
