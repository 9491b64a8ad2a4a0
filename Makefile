# Switchboard — every developer and CI entry point. `make help` lists the targets.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
UV_VERSION := 0.13.9
BOOTSTRAP := .local/bootstrap
UV := $(BOOTSTRAP)/bin/uv
VENV := .venv
PY := $(VENV)/bin/python
STACK := deploy/local/stack.sh
SERVICES := deploy/local/services.sh
PROTO_OUT := libs/common/src
PROTOS := $(wildcard proto/switchboard/v1/*.proto)
SRC := libs/common/src services/*/src tools/*/src

.PHONY: help
help: ## List the targets
	@grep -hE '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

# ---- environment --------------------------------------------------------------------

$(UV):
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
		|| { echo "Python 3.11 or newer is needed (found $$($(PYTHON) --version))" >&2; exit 1; }
	@echo "creating the bootstrap environment with uv $(UV_VERSION)" >&2
	@$(PYTHON) -m venv $(BOOTSTRAP)
	@$(BOOTSTRAP)/bin/pip install --quiet uv==$(UV_VERSION) >&2

$(VENV)/.synced: $(UV) uv.lock pyproject.toml libs/common/pyproject.toml services/*/pyproject.toml tools/*/pyproject.toml
	@$(UV) sync --locked --python $(PYTHON) >&2
	@touch $@

.PHONY: venv
venv: $(VENV)/.synced ## Create the virtualenv with the locked dependencies

.PHONY: lock
lock: $(UV) ## Re-resolve uv.lock after a dependency change
	$(UV) lock

# ---- contracts ----------------------------------------------------------------------
# Generated code is committed (so `uv sync` alone gives importable packages and images
# need no protoc); `make proto-check` fails when it is stale.

.PHONY: proto
proto: venv ## Regenerate the protobuf and gRPC code from proto/
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) -m grpc_tools.protoc -I proto \
		--python_out=$(PROTO_OUT) --grpc_python_out=$(PROTO_OUT) \
		--mypy_out=$(PROTO_OUT) --mypy_grpc_out=$(PROTO_OUT) $(PROTOS)

.PHONY: proto-check
proto-check: venv ## Fail when the committed generated code differs from proto/
	@tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) -m grpc_tools.protoc -I proto \
		--python_out=$$tmp --grpc_python_out=$$tmp --mypy_out=quiet:$$tmp --mypy_grpc_out=quiet:$$tmp $(PROTOS); \
	diff -r "$$tmp/switchboard/v1" $(PROTO_OUT)/switchboard/v1 -x '__pycache__' \
		|| { echo "generated code is stale: run 'make proto' and commit" >&2; exit 1; }
	@echo "generated protobuf code is up to date"

# ---- quality ------------------------------------------------------------------------

.PHONY: lint
lint: venv ## ruff lint and format check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

.PHONY: format
format: venv ## Format the code with ruff
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

.PHONY: typecheck
typecheck: venv ## mypy (strict) over every package
	$(VENV)/bin/mypy $(SRC)

# ---- local stack and services -------------------------------------------------------

.PHONY: stack-up
stack-up: ## Install (first time) and start Kafka, FerretDB and Redis
	$(STACK) up

.PHONY: stack-down
stack-down: ## Stop Kafka, FerretDB and Redis
	$(STACK) down

.PHONY: up
up: venv stack-up ## Start the stack, the simulator and the four services in the background
	$(SERVICES) up
	@echo
	@echo "Switchboard is up: gRPC ChatService on 127.0.0.1:50051"
	@echo "  API key (demo tenant): $${SWITCHBOARD_DEV_API_KEY:-sb-dev-key}"
	@echo "  chat:  $(PY) -m switchboard.chat_cli      stop: make down      logs: .local/logs/"

.PHONY: down
down: ## Stop the services and the stack
	$(SERVICES) down
	$(STACK) down

.PHONY: status
status: ## Show what runs
	$(STACK) status
	$(SERVICES) status

GRPCURL_VERSION := v1.9.3

.PHONY: grpcurl
grpcurl: .local/bin/grpcurl ## Install grpcurl (pinned, go install) into .local/bin

.local/bin/grpcurl:
	GOBIN="$(CURDIR)/.local/bin" go install github.com/fullstorydev/grpcurl/cmd/grpcurl@$(GRPCURL_VERSION)

.PHONY: run
run: venv ## Set everything up and chat in the terminal (one message per line when piped)
	@deploy/local/run.sh

# ---- tests --------------------------------------------------------------------------

.PHONY: test-unit
test-unit: venv ## Unit tests (no servers needed)
	$(PY) -m pytest tests/unit -q

.PHONY: test
test: venv ## The whole suite: checks, unit tests, end-to-end tests on the real stack
	$(MAKE) --no-print-directory proto-check lint typecheck
	deploy/local/with-stack.sh $(PY) -m pytest tests -q
