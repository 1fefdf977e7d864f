# pvgrub-py developer entry points.  `make demo` and `make test` each run
# `setup` first, so on a fresh Debian 12 machine they are the only two
# commands needed.
#
# Everything Python runs in a virtual environment the Makefile makes (.venv/),
# from Debian's own interpreter: Debian 12's /usr/bin/python3 refuses a
# system-wide `pip install` (PEP 668, "externally-managed-environment"), and
# the venv keeps the project's dependencies out of the system's.

# The interpreter the venv is made from: Debian's own where it exists.
BASE_PYTHON ?= $(shell test -x /usr/bin/python3 && echo /usr/bin/python3 || command -v python3)
VENV ?= .venv
PYTHON = $(VENV)/bin/python
PIP = $(PYTHON) -m pip
# Debian packages the project uses.  Keep this list the single source.
# python3-venv makes the venv; gcc, python3-dev and pkg-config build the cffi
# bindings against libxen-dev (without a compiler setup.py falls back to
# simulator-only mode, as without libxen-dev); libtss2-dev builds tpm2-pytss
# (the [attest] extra: pvgrubctl attest challenge/activate/quote).
DEBIAN_PACKAGES = python3-venv python3-dev gcc libc6-dev pkg-config \
  swtpm swtpm-tools tpm2-tools xenstore-utils libxen-dev \
  e2fsprogs xfsprogs btrfs-progs dosfstools mtools xorriso fdisk qemu-utils lvm2 tmux \
  xen-utils-4.17 lzop libtss2-dev
SETUP_STAMP = $(VENV)/.setup.stamp
# Keylime, a test oracle for the formats it reads (its quote check and tpm_policy
# reader, tests/test_attest_keylime.py), without its verifier's dependency set
# (python-gnupg's gpg does not build from PyPI); pyyaml is in the test extras.
KEYLIME = keylime==7.14.3
PYTEST_ARGS ?=
# The third-party corpora (petitboot, pygrub, tpm2-tools, go-attestation test data)
# live outside the repository; `make conformance` runs them.
PVGRUB_SHARED ?= $(abspath ../shared)
export PVGRUB_SHARED

.PHONY: setup test test-fast conformance demo bench lint clean e2e-xen fuzz

$(SETUP_STAMP): Makefile setup.py pyproject.toml
	@missing=""; for p in $(DEBIAN_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "setup: installing Debian packages:$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q \
	    --no-install-recommends $$missing; \
	fi
	@test -x $(PYTHON) || { echo "setup: creating the virtual environment $(VENV) from $(BASE_PYTHON)"; \
	  $(BASE_PYTHON) -m venv $(VENV); }
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[test,attest]'
	$(PIP) install -q --no-deps $(KEYLIME)
	@# The sandboxed parser child loads byte code from memory and never writes it:
	@# compiled here, as a wheel install would, not from source at every boot.
	$(PYTHON) -m compileall -q pvgrub_py
	@# ... and gathered into one checked file, read by --runas instead of ~280.
	$(PYTHON) -m pvgrub_py.bootloader.preload --build >/dev/null
	@touch $(SETUP_STAMP)

setup: $(SETUP_STAMP)

# The project's own tests: everything they need is made by the tests or held in
# the repository.  The third-party corpora are `make conformance`.
test: setup
	$(PYTHON) -m pytest -m "not conformance" $(PYTEST_ARGS)

test-fast: setup
	$(PYTHON) -m pytest -m "not slow and not conformance" $(PYTEST_ARGS)

# Third-party test data in $(PVGRUB_SHARED)/fixtures.  Missing corpus: a skip with
# the reason, a failure under CI=true.
conformance: setup
	$(PYTHON) -m pytest -m conformance $(PYTEST_ARGS)

demo: setup
	$(PYTHON) -m pvgrub_py.demo

# Every bench runs, each making its own inputs; a bench that misses its target exits
# non-zero, and `make bench` names them at the end (and fails).
bench: setup
	@missed=""; for b in bench/run.py bench/bench_*.py; do echo "== $$b"; \
	  $(PYTHON) $$b || missed="$$missed $$b"; done; \
	if [ -n "$$missed" ]; then echo "bench: missed a target or failed:$$missed"; exit 1; fi

# Coverage-guided fuzzing (atheris) of the boot-config parsers, FUZZ_TIME seconds
# (default 600), corpus kept in .fuzz-corpus; findings land in .fuzz-out.
FUZZ_TIME ?= 600
fuzz: setup
	@mkdir -p .fuzz-out
	$(PYTHON) tests/fuzz_bootcfg_atheris.py --seed .fuzz-corpus
	cd .fuzz-out && $(abspath $(PYTHON)) ../tests/fuzz_bootcfg_atheris.py ../.fuzz-corpus \
	  -max_total_time=$(FUZZ_TIME) -max_len=8192 -timeout=10 -rss_limit_mb=2048 -print_final_stats=1

lint: setup
	$(VENV)/bin/ruff check pvgrub_py tests bench
	$(VENV)/bin/mypy

# Real Xen 4.17 nested under QEMU (stubdom/e2e/run.sh, see stubdom/README.md): a Debian
# dom0 built with debootstrap, this checkout installed into it, the scenarios run inside.
# Log: stubdom/e2e/out/scenarios.log.  Needs root.  Exit 77 from the harness (QEMU cannot
# run here) is a skip, printed with its reason; under CI=true the harness fails instead.
e2e-xen:
	@bash stubdom/e2e/run.sh || { rc=$$?; [ $$rc = 77 ] && exit 0; exit $$rc; }

clean:
	rm -rf build *.egg-info $(VENV) .pytest_cache .mypy_cache .ruff_cache
