# The two commands: `make run` and `make test`. Everything else is a helper for them.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: run test install lint typecheck unit openapi bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: install
	mkdir -p var
	$(BIN)/waymark migrate
	$(BIN)/waymark seed-demo
	$(BIN)/waymark client add local-operator --scope 'system/*.cruds waymark/gate.override' \
	  --key-file var/local-operator-key.json --exist-ok
	@echo "To call the API, get a token in another shell:"
	@echo '  TOKEN=$$($(BIN)/waymark token --client local-operator)'
	@echo '  curl -H "Authorization: Bearer $$TOKEN" http://127.0.0.1:8000/Patient'
	$(BIN)/waymark serve

test: install lint typecheck unit

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy

unit: install
	$(BIN)/pytest

openapi: install
	$(BIN)/waymark openapi

bench: install
	$(BIN)/python -m bench.crud

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
