# Two commands matter: `make serve` and `make test`. Both install what they need.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
DEVSTAMP := $(VENV)/.installed-dev
JSDIR  := tests/js
JSSTAMP := $(JSDIR)/node_modules/.installed

.PHONY: serve test lint typecheck bench bench-quick soak clean chromium proto

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e .
	touch $@

$(DEVSTAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP) $@

$(JSSTAMP): $(JSDIR)/package.json $(JSDIR)/package-lock.json
	cd $(JSDIR) && npm ci --no-audit --no-fund --silent
	touch $@

# Debian's Chromium, for the tests of web pages (Playwright drives it; it never downloads a browser).
chromium:
	@command -v chromium >/dev/null 2>&1 || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) || echo "chromium could not be installed: browser tests will skip"

serve: $(STAMP)
	$(VENV)/bin/xshathra serve

test: $(DEVSTAMP) $(JSSTAMP) chromium
	$(VENV)/bin/ruff check src tests
	$(VENV)/bin/mypy
	# Two workers, each taking whole test files (their module fixtures start one server each):
	# most tests wait on a server process or a client, so two run well on two cores.
	$(PY) -m pytest -n 2 --dist loadfile

# Not part of `make test`: 30 minutes of mixed load on two nodes (PostgreSQL + Redis); prints
# what was lost (nothing, or it exits 1) and draws bench/results/soak.png.
# SOAKARGS passes options through, e.g. `make soak SOAKARGS="--duration 120"`.
soak: $(DEVSTAMP) $(BENCHSTAMP)
	$(PY) -m bench.soak $(SOAKARGS)

lint: $(DEVSTAMP)
	$(VENV)/bin/ruff check src tests
	$(VENV)/bin/mypy

BENCHSTAMP := $(VENV)/.installed-bench
BENCHJS := bench/node_modules/.installed

$(BENCHSTAMP): pyproject.toml $(DEVSTAMP)
	$(PY) -m pip install -q -e '.[dev,bench]'
	touch $@

$(BENCHJS): bench/package.json bench/package-lock.json
	cd bench && npm ci --no-audit --no-fund --silent
	touch $@

# Not part of `make test`: the benchmark pins the server to core 0, the load client and the
# publisher to core 1. The load client is C (bench/loadclient/): the run compiles it with `cc`
# into bench/.build/ when the source is newer, so a C compiler is needed.
# BENCHARGS passes options through, e.g. `make bench BENCHARGS="--scenarios many,recovery"`.
bench: $(BENCHSTAMP) $(BENCHJS)
	$(PY) -m bench.run $(BENCHARGS)

bench-quick: $(BENCHSTAMP) $(BENCHJS)
	$(PY) -m bench.run --quick $(BENCHARGS)

clean:
	rm -rf $(VENV) $(JSDIR)/node_modules .pytest_cache .mypy_cache

# The protobuf wire format: regenerate protocol/client_pb2.py (and its .pyi stub) from our
# client.proto with protoc from grpcio-tools (a dev dependency). The output is committed, so
# running the server needs only the `protobuf` package.
proto: $(DEVSTAMP)
	$(PY) -m grpc_tools.protoc -I src --python_out=src --pyi_out=src src/xshathra/protocol/client.proto
