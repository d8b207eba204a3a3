# SMVM: two commands on a fresh machine with Python 3.11 and make:
#   make run   - set up, start the mesh, submit examples/idea.json over REST, print the decision, stop
#   make test  - set up and run the test suite
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PROTOS := $(shell find protos/smvm -name '*.proto')
GEN_STAMP := smvm/v1/.generated

.PHONY: install proto lint-proto test run up bench bench-tools soak clean postgres

install: $(STAMP) $(GEN_STAMP)

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -r requirements-dev.txt
	$(VENV)/bin/pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

proto: $(STAMP)
	rm -f $(GEN_STAMP)
	$(MAKE) $(GEN_STAMP)

# Python stubs and a descriptor set (for Envoy's grpc_json_transcoder) from protos/.
$(GEN_STAMP): $(PROTOS) $(STAMP)
	rm -rf smvm/v1 && mkdir -p smvm/v1 build
	$(PY) -m grpc_tools.protoc -Iprotos \
	  --python_out=. --pyi_out=. --grpc_python_out=. \
	  --include_imports --descriptor_set_out=build/smvm_descriptor.pb \
	  $(PROTOS)
	touch smvm/v1/__init__.py $(GEN_STAMP)

lint-proto: $(STAMP)
	$(VENV)/bin/buf lint

# The store's test suite runs against a real PostgreSQL server (a throwaway cluster from initdb +
# pg_ctl): install the server binaries where they are missing. SMVM_TEST_DATABASE_URL names an
# existing server instead.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
postgres:
	@if [ -z "$$SMVM_TEST_DATABASE_URL" ] && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null; then \
	  echo "installing PostgreSQL (server binaries for the store tests)"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq postgresql; \
	fi

test: install postgres
	$(PY) -m pytest -q

run: install
	$(VENV)/bin/smvm demo examples/idea.json --import competitors=examples/competitors.csv

up: install
	$(VENV)/bin/smvm up

# Benchmarks print a table and append a dated row to benchmarks/results/<name>.tsv (docs/benchmarks.md).
# sim_scaling starts the mesh three times (1, 2, 3 simulation replicas); 2 timed runs each here (3 by default)
# keep the whole target under 10 minutes on the slower 2-core hosts (10 min 36 s with 3, 2026-12-06).
bench: install bench-tools
	$(PY) benchmarks/sim_kernel.py
	$(PY) benchmarks/e2e_latency.py
	$(PY) benchmarks/run_breakdown.py --runs 10
	$(PY) benchmarks/gateway_load.py
	$(PY) benchmarks/sim_scaling.py --repeats 2

# wrk and h2load (Debian packages) generate the HTTP and gRPC load.
bench-tools:
	@command -v wrk >/dev/null && command -v h2load >/dev/null || \
	  (apt-get update -q && apt-get install -y -q --no-install-recommends wrk nghttp2-client)

# A bounded fixed-rate load on the real mesh with rate limits on; fails on any loss (docs/reliability.md).
soak: install
	$(PY) benchmarks/soak.py --seconds 60
	$(PY) benchmarks/ledger.py

include k8s/k8s.mk

clean:
	rm -rf $(VENV) smvm/v1 build .pytest_cache
