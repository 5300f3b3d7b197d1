# imageops — developer commands. `make test` is what CI runs (.ci/run).
SHELL := /bin/bash
.DEFAULT_GOAL := help
VENV ?= .venv
PY := $(VENV)/bin/python
export PYTHONPATH := $(CURDIR)/operator

.PHONY: help venv lint docs grpc crds chart-crds image kind-up test test-unit demo bench bench-scale testenv-up testenv-down clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,bench]'
	touch $@

venv: $(VENV)/.installed ## create .venv with the package and dev tools

SHELL_SCRIPTS := $(wildcard hack/*.sh hack/lib/*.sh bench/*.sh)

lint: venv ## ruff (check and format), mypy, the import contracts, shellcheck
	$(VENV)/bin/ruff check operator tests hack $(wildcard bench)
	$(VENV)/bin/ruff format --check operator tests hack $(wildcard bench)
	$(VENV)/bin/mypy
	$(VENV)/bin/mypy --strict --follow-imports=silent bench
	$(VENV)/bin/lint-imports
	@command -v shellcheck >/dev/null || { echo "shellcheck missing: apt-get install shellcheck (make testenv-up installs it)"; exit 1; }
	shellcheck -x $(SHELL_SCRIPTS)

docs: venv ## regenerate the docs' generated tables: README options, docs/install.md chart values (helm-docs)
	$(PY) hack/gen_docs.py

crds: venv ## regenerate crds/ and the chart's copy from the models
	$(VENV)/bin/imageops crds --output crds
	$(MAKE) chart-crds

grpc: venv ## regenerate the CRI/containerd gRPC stubs from the pinned Go modules' protos
	$(PY) hack/gen_grpc.py

chart-crds: ## copy crds/*.yaml into charts/imageops/files/crds (a test fails on drift)
	rm -f charts/imageops/files/crds/*.yaml
	cp crds/*.yaml charts/imageops/files/crds/

image: ## build the operator image (IMAGE=name:tag, BASE_IMAGE=..., DOCKER_GID=...)
	docker build $(if $(BASE_IMAGE),--build-arg BASE_IMAGE=$(BASE_IMAGE)) \
	  $(if $(DOCKER_GID),--build-arg DOCKER_GID=$(DOCKER_GID)) -t $(or $(IMAGE),imageops:dev) .

kind-up: ## kind cluster + image + chart (needs internet access)
	bash hack/kind-up.sh

test-unit: venv ## unit tests only (no test bed)
	$(PY) -m pytest tests/unit -q

test: venv ## lint, bring the test bed up, run every test, bring it down
	$(MAKE) lint
	bash hack/run-tests.sh

demo: venv ## test bed up, operator running, examples applied and their statuses shown
	bash hack/demo.sh

bench: venv ## benchmarks against the docker CLI: bench/results.md, bench/*.png
	bash bench/run.sh

bench-scale: venv ## fan-out to 10/100/1000 (simulated) nodes: the Scale section of bench/results.md
	bash bench/scale.sh

testenv-up: ## bring the test bed up (see hack/testenv.sh)
	bash hack/testenv.sh up

testenv-down: ## stop the test bed
	bash hack/testenv.sh down

clean: testenv-down ## remove the venv and caches (the built tools cache stays)
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
