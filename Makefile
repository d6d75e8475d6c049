# meshlab — two entry points: `make lab` and `make test`. Both do all set-up themselves.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

VENV    ?= .venv
PY      := $(VENV)/bin/python
BIN     := $(VENV)/bin
# Debian packages the local testbed needs (versions come from Debian 12; see docs/architecture.md).
APT_PACKAGES := nginx libnginx-mod-http-echo iptables iproute2 clang llvm libbpf-dev bpftool \
                prometheus prometheus-node-exporter curl util-linux procps chromium
EXPERIMENT ?= experiments/default.yml
RESULTS ?= results
export PATH := $(abspath $(BIN)):$(PATH)
# `make lab` run from inside another make (the test suite's end-to-end test) would otherwise
# print "Leaving directory" after the run's answer, which must stay its last line.
MAKEFLAGS += --no-print-directory

.PHONY: help setup apt venv bpf lab test test-unit test-testbed lint bench-testbed bench-dataplane bench-placement bench-sweep bench-report calibration clean

help:
	@echo "make lab              set up, bring the local testbed up, run $(EXPERIMENT), write the report"
	@echo "make test             set up, then lint and the whole test suite (root: namespaces, iptables, eBPF)"
	@echo ""
	@echo "make setup            Debian packages, the venv, the eBPF programs (what lab and test run first)"
	@echo "make lint             ruff, yamllint, ansible-lint (production profile)"
	@echo "make test-unit        the unit tests only (no root)"
	@echo "make test-testbed     the root and testbed tests only"
	@echo "make bench-testbed    seconds to bring the testbed up and write the 50x500 flood"
	@echo "make bench-dataplane  experiments/dataplane.yml: iptables vs ebpf vs ebpf-connect vs no-mesh"
	@echo "make bench-placement  experiments/placement.yml: same-node vs cross-node, flood off/50x500"
	@echo "make bench-sweep      experiments/sweep.yml: curves across load, saturation points, SMP export"
	@echo "make bench-report     how long a report of a large run takes to build"
	@echo "make calibration      false positives, coverage and power of the decision rules (simulated)"
	@echo "make clean            take the testbed down, remove the venv"

setup: apt venv bpf

# The eBPF arm's programs, compiled against this kernel's BTF. A host that cannot build them
# still gets a working iptables arm; `--dataplane ebpf` then names what is missing.
bpf: venv
	@$(BIN)/meshlab ebpf build || echo "setup: the eBPF arm is unavailable on this host (above); the iptables arm works"

# Idempotent: installs only what is missing. policy-rc.d keeps Debian from starting nginx or
# prometheus in the host's root namespace; the testbed runs its own copies inside namespaces.
apt:
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "setup: installing Debian packages:$$missing"; \
	  [ "$$(id -u)" = 0 ] || { echo "setup: need root to apt-get install:$$missing" >&2; exit 1; }; \
	  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod 755 /usr/sbin/policy-rc.d; \
	  trap 'rm -f /usr/sbin/policy-rc.d' EXIT; \
	  apt-get update -q; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	fi

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || python3.11 -m venv $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade 'pip>=24'
	$(PY) -m pip install -q -e '.[dev]'
	@touch $@

# Brings the testbed up if needed, runs the experiment with a progress bar, writes the report.
# `meshlab run` exits 3 (inconclusive) or 4 (environment unfit) when the run itself worked and
# its last line says the answer; make lab then still succeeds. Errors (2) and ^C (130) fail.
RUN_WORKED = rc=0; "$$@" || rc=$$?; case $$rc in 0|3|4) ;; *) exit $$rc;; esac

lab: setup
	@set -- "$(BIN)/meshlab" run "$(EXPERIMENT)" --results-dir "$(RESULTS)"; echo "$$*"; $(RUN_WORKED)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/yamllint -s .
	$(BIN)/ansible-lint -q

test-unit: venv
	$(BIN)/pytest -q tests/unit

test-testbed: setup
	$(BIN)/pytest -q -m "root or testbed" tests

# the slowest tests are listed at the end (the goal: at most 25 minutes of pytest on CI's 2 cores)
test: setup lint
	$(BIN)/pytest --durations=20 tests

bench-testbed: setup
	$(BIN)/meshlab bench testbed

bench-dataplane: setup
	$(BIN)/meshlab bench dataplane

bench-placement: setup
	$(BIN)/meshlab run experiments/placement.yml

# an inconclusive run (exit 3) still has curves worth exporting
bench-sweep: setup
	$(BIN)/meshlab run experiments/sweep.yml --results-dir "$(RESULTS)" || [ $$? -eq 3 ]
	$(BIN)/meshlab export "$$(ls -dt "$(RESULTS)"/sweep/*/ | head -n 1)" --format smp

bench-report: venv
	$(BIN)/meshlab bench report

calibration: venv
	$(BIN)/meshlab bench calibration

clean:
	-$(BIN)/meshlab testbed down
	rm -rf $(VENV) .meshlab
