# pvgrub-py developer entry points.  `make demo` and `make test` each run
# `setup` first, so on a fresh Debian 12 machine they are the only two
# commands needed.

PYTHON ?= python3
PIP ?= $(PYTHON) -m pip
# Debian packages the project uses.  Keep this list the single source.
DEBIAN_PACKAGES = swtpm swtpm-tools tpm2-tools xenstore-utils libxen-dev pkg-config \
  e2fsprogs xfsprogs btrfs-progs dosfstools mtools xorriso fdisk qemu-utils lvm2 tmux \
  xen-utils-4.17 lzop
SETUP_STAMP = .setup.stamp
PYTEST_ARGS ?=

.PHONY: setup test test-fast demo bench lint clean e2e-xen fuzz

$(SETUP_STAMP): Makefile setup.py
	@missing=""; for p in $(DEBIAN_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "setup: installing Debian packages:$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q $$missing; \
	fi
	$(PIP) install -q -e '.[test]'
	@touch $(SETUP_STAMP)

setup: $(SETUP_STAMP)

test: setup
	$(PYTHON) -m pytest $(PYTEST_ARGS)

test-fast: setup
	$(PYTHON) -m pytest -m "not slow" $(PYTEST_ARGS)

demo: setup
	$(PYTHON) -m pvgrub_py.demo

bench: setup
	@for b in bench/run.py bench/bench_*.py; do echo "== $$b"; $(PYTHON) $$b || exit 1; done

# Coverage-guided fuzzing (atheris) of the boot-config parsers, FUZZ_TIME seconds
# (default 600), corpus kept in .fuzz-corpus; findings land in .fuzz-out.
FUZZ_TIME ?= 600
fuzz: setup
	@mkdir -p .fuzz-out
	$(PYTHON) tests/fuzz_bootcfg_atheris.py --seed .fuzz-corpus
	cd .fuzz-out && $(PYTHON) ../tests/fuzz_bootcfg_atheris.py ../.fuzz-corpus \
	  -max_total_time=$(FUZZ_TIME) -max_len=8192 -timeout=10 -rss_limit_mb=2048 -print_final_stats=1

lint: setup
	ruff check pvgrub_py tests bench
	mypy

# Real Xen 4.17 nested under QEMU (stubdom/e2e/run.sh, see stubdom/README.md): a Debian
# dom0 built with debootstrap, this checkout installed into it, the scenarios run inside.
# Log: stubdom/e2e/out/scenarios.log.  Needs root.  Exit 77 from the harness (QEMU cannot
# run here) is a skip, printed with its reason; under CI=true the harness fails instead.
e2e-xen:
	@bash stubdom/e2e/run.sh || { rc=$$?; [ $$rc = 77 ] && exit 0; exit $$rc; }

clean:
	rm -rf build *.egg-info $(SETUP_STAMP) .pytest_cache .mypy_cache .ruff_cache
