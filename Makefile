# Everything a fresh machine needs is installed by these targets; nothing by hand.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
UV_VERSION := 0.13.8
STAMP := $(VENV)/.installed
export PYTHONPATH := $(CURDIR)/hack
export KUBECONFIG := $(CURDIR)/.cluster/kubeconfig

.PHONY: venv binaries prometheus container-tools image browser cluster cluster-down demo test lint unit bench fuzz clean

# Installed packages are compiled ahead: where PYTHONDONTWRITEBYTECODE is set (it is on these
# machines) every process would compile the Kubernetes client from source at each start, and
# a `kubectl collectjob get` took 2.1 s instead of 1.0 s.
venv: $(STAMP)
$(STAMP): pyproject.toml requirements.lock examples/processor/pyproject.toml tests/support/pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "python3 (3.11+) is missing: apt-get install python3 python3-venv"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check uv==$(UV_VERSION)
	$(VENV)/bin/uv pip sync -q --python $(PY) requirements.lock
	$(VENV)/bin/uv pip install -q --python $(PY) --no-deps --compile-bytecode -e . -e examples/processor -e tests/support
	touch $@

binaries:
	@bash hack/build-binaries.sh >/dev/null

prometheus:
	@bash hack/install-prometheus.sh

# buildah, podman, runc, debootstrap, skopeo, umoci, fuse-overlayfs from Debian.
container-tools:
	@bash hack/install-container-tools.sh

# The project's image, built from a debootstrap base with buildah (cached; see README).
image: venv container-tools
	$(PY) -m localcluster.image

# Chromium and chromedriver (Debian packages) for the console's browser tests.
browser:
	@bash hack/install-browser.sh

cluster: venv binaries container-tools
	$(PY) -m localcluster up

cluster-down: venv
	$(PY) -m localcluster down

demo: venv binaries image
	$(PY) -m localcluster demo

lint: venv
	$(VENV)/bin/ruff check api operator worker tools hack tests examples
	$(VENV)/bin/ruff format --check api operator worker tools hack tests examples
	$(VENV)/bin/lint-imports pyproject.toml
	$(VENV)/bin/mypy api/collectjob_api operator/collectjob_operator worker/collectjob_worker tools/collectjob_tools hack/localcluster

unit: venv prometheus
	$(PY) -m pytest -q tests/unit

test: venv binaries prometheus image browser lint
	$(PY) -m pytest -q tests/unit tests/cluster examples/processor/tests

# FUZZ_EXAMPLES (10000) over FUZZ_SHARDS processes (one per core); FUZZ_SEED repeats a run.
fuzz: venv
	$(PY) tests/unit/worker/fuzz_shards.py

bench: venv binaries
	$(PY) -m pytest -q -s tests/bench

clean: cluster-down
	rm -rf $(VENV)
