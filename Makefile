# Two commands on a fresh machine (Debian 12, Python 3.11):
#   make demo   set up, then run the pipeline on the embedded defaults (digits model)
#   make test   set up, then lint, type-check and run the whole test suite
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Debian packages the tests and the demo use (real components, started on 127.0.0.1).
APT_PACKAGES := docker-registry skopeo umoci buildah podman runc shellcheck
DEMO_DIR ?= .demo
PYTEST_ARGS ?=

export TF_CPP_MIN_LOG_LEVEL := 2
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: help setup apt-packages lint typecheck test unit demo lock clean golden bench-kserve-venv \
	k8s-control-plane k8s-up checkov-venv lock-checkov

help:
	@echo "make demo   - three digits releases through the pipeline: promote, promote, roll back"
	@echo "make test   - lint, type-check and run all tests"
	@echo "make unit   - fast unit tests only"
	@echo "make golden - regenerate tests/golden/*.yaml (review the diff)"
	@echo "make lock   - regenerate constraints.txt from a fresh venv"
	@echo "make lock-checkov - regenerate constraints-checkov.txt (the pins of .venv-checkov)"
	@echo "make bench-kserve-venv - .venv-kserve for the kserve baseline of benchmarks/serving.py"
	@echo "make k8s-control-plane - build etcd, kube-apiserver, -controller-manager, -scheduler, kwok (cached)"
	@echo "make k8s-up - run that control plane in the foreground; prints export KUBECONFIG=..."

$(STAMP): requirements.txt requirements-deploy.txt requirements-dev.txt requirements-nodeps.txt constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt -c constraints.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -r requirements-nodeps.txt
	touch $@

apt-packages:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; elif command -v sudo >/dev/null; then SUDO=sudo; \
	  else echo "need root (or sudo) to install:$$missing" >&2; exit 1; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing; \
	fi

setup: apt-packages $(STAMP)

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check scripts tests models benchmarks

typecheck: setup
	$(VENV)/bin/mypy

unit: setup
	$(PY) -m pytest tests/unit -q $(PYTEST_ARGS)

# Under `make test` a missing requirement fails the tests that need it (never a skip).
test: lint typecheck k8s-control-plane checkov-venv
	TF_PIPELINE_STRICT_TESTS=1 $(PY) -m pytest -q $(PYTEST_ARGS)

# checkov (tests/integration/test_checkov.py scans every rendered overlay) in its own venv:
# its dependency pins (packaging 23.2, termcolor 2, python-dateutil 2, ...) conflict with
# constraints.txt. Pinned by requirements-checkov.txt + constraints-checkov.txt; a no-op
# while neither changed.
CHECKOV_VENV := .venv-checkov
CHECKOV_STAMP := $(CHECKOV_VENV)/.installed
$(CHECKOV_STAMP): requirements-checkov.txt constraints-checkov.txt
	test -x $(CHECKOV_VENV)/bin/python || $(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install --quiet --disable-pip-version-check \
	  -r requirements-checkov.txt -c constraints-checkov.txt
	touch $@

checkov-venv: $(CHECKOV_STAMP)

lock-checkov:
	rm -rf .venv-checkov-lock && $(PYTHON) -m venv .venv-checkov-lock
	.venv-checkov-lock/bin/pip install --quiet -r requirements-checkov.txt
	(echo "# Full transitive pins of .venv-checkov (pip freeze of a venv built from requirements-checkov.txt)."; \
	 echo "# Regenerate with: make lock-checkov"; \
	 .venv-checkov-lock/bin/pip freeze | grep -v -i -E '^(pip|setuptools|wheel)==') > constraints-checkov.txt
	rm -rf .venv-checkov-lock

# The real Kubernetes control plane of the tests, built from Go modules (tests/controlplane/,
# go.mod and go.sum committed) into $XDG_CACHE_HOME/tf-release-pipeline/controlplane, keyed by
# version: a no-op when nothing changed. Go 1.26 and the Go module proxy are needed.
k8s-control-plane: setup
	@$(PY) -m tests.controlplane build

# The same control plane in the foreground, to try `deploy --target k8s` without a cloud.
k8s-up: k8s-control-plane
	@$(PY) -m tests.controlplane up

# The whole story on one machine: v1 becomes stable, v2 is gated against v1 and promoted,
# v3 (made slow with the local server's fault injection) is gated and rolled back.
DEMO_RUN = $(PY) -m scripts run --target local --state-dir $(DEMO_DIR)/local --cache-dir $(DEMO_DIR)/cache
demo: setup
	-$(PY) -m scripts teardown --target local --state-dir $(DEMO_DIR)/local --model digits -q 2>/dev/null
	rm -rf $(DEMO_DIR)
	for v in 1 2 3; do \
	  $(PY) models/digits/export.py --out $(DEMO_DIR)/export --version $$v --seed $$v > /dev/null && \
	  $(PY) -m scripts package $(DEMO_DIR)/export/digits/$$v --name digits --version $$v --out $(DEMO_DIR)/release -q > /dev/null || exit 1; \
	done
	$(DEMO_RUN) --source $(DEMO_DIR)/release/digits-1.tar.gz --workdir $(DEMO_DIR)/v1 \
	  --sha256 "$$(cut -d' ' -f1 $(DEMO_DIR)/release/digits-1.tar.gz.sha256)"
	$(DEMO_RUN) --source $(DEMO_DIR)/release/digits-2.tar.gz --workdir $(DEMO_DIR)/v2
	$(DEMO_RUN) --source $(DEMO_DIR)/release/digits-3.tar.gz --workdir $(DEMO_DIR)/v3 \
	  --unsafe-fault-injection latency_ms=60 || test $$? -eq 50
	$(PY) -m scripts report $(DEMO_DIR)/v1/run.json $(DEMO_DIR)/v2/run.json $(DEMO_DIR)/v3/run.json
	$(PY) -m scripts teardown --target local --state-dir $(DEMO_DIR)/local --model digits -q

golden: setup
	$(PY) tests/golden/regenerate.py

lock:
	rm -rf .venv-lock && $(PYTHON) -m venv .venv-lock
	.venv-lock/bin/pip install --quiet -r requirements-dev.txt && .venv-lock/bin/pip install --quiet --no-deps -r requirements-nodeps.txt
	(echo "# Full transitive pins (pip freeze of a venv built from requirements-dev.txt)."; \
	 echo "# Regenerate with: make lock"; \
	 .venv-lock/bin/pip freeze | grep -v -i -E '^(pip|setuptools|wheel)==') > constraints.txt
	rm -rf .venv-lock

# The kserve python model server, the digits baseline of benchmarks/serving.py, in its own
# venv: kserve 0.21 needs protobuf < 7, the project has 7. TensorFlow and the HTTP stack
# are pinned to the project's versions (constraints.txt) so the comparison is of servers.
KSERVE_VENV := .venv-kserve
KSERVE_PINS := kserve==0.21.0 protobuf==6.33.6 tensorflow-cpu==2.21.0 numpy==2.4.6 \
  uvicorn==0.54.0 starlette==1.10.0 fastapi==0.165.0 httptools==0.9.0 uvloop==0.23.0 orjson==3.13.0
bench-kserve-venv:
	test -x $(KSERVE_VENV)/bin/python || $(PYTHON) -m venv $(KSERVE_VENV)
	$(KSERVE_VENV)/bin/python -m pip install --quiet --disable-pip-version-check $(KSERVE_PINS)
	$(KSERVE_VENV)/bin/python -c "import kserve, tensorflow" 2>/dev/null

clean:
	rm -rf $(DEMO_DIR) .pytest_cache .mypy_cache .ruff_cache
