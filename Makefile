# pyinit: the two commands of the README, and the rest.
PY := .venv/bin/python
PYTEST := $(PY) -m pytest
# VM tests boot QEMU under TCG: run two at a time on the two cores.
VM_JOBS ?= 2

LINT_PATHS := pyinit mkinitramfs hooks devtools tests

.PHONY: setup demo lint test test-unit test-container test-vm bench clean fuzz deb

setup:
	@sh devtools/setup.sh

demo: setup
	$(PY) -m devtools.demo

# ruff (rules in pyproject.toml) on everything; mypy --strict on the two packages,
# --check-untyped-defs on the hooks (each hooks/NAME/NAME.py is a top-level module, as pyinit
# loads it by path) and the developer tools.
define LINT
$(PY) -m ruff check $(LINT_PATHS)
$(PY) -m mypy --strict pyinit mkinitramfs
$(PY) -m mypy --check-untyped-defs $$(find hooks -name '*.py') devtools
endef

# lint first: a type error or a lint finding stops the run before the slow tiers.
test: setup
	$(LINT)
	$(PYTEST) -m unit -q tests/unit
	$(PYTEST) -m container -v tests/container
	$(PYTEST) -m vm -v -n $(VM_JOBS) --dist loadgroup tests/vm

lint: setup
	$(LINT)

test-unit:
	$(PYTEST) -m unit -q tests/unit

test-container:
	$(PYTEST) -m container -v tests/container

test-vm:
	$(PYTEST) -m vm -v -n $(VM_JOBS) --dist loadgroup tests/vm

# dist/pyinit_VERSION_all.deb, built by debhelper + dh-python (debian/), checked by lintian.
# Debian's python3 runs it: the package must not depend on the venv.
deb:
	@sh devtools/setup.sh deb
	env -u PYTHONPATH /usr/bin/python3 -m devtools.debpkg

bench:
	@sh devtools/setup.sh bench
	$(PY) -m devtools.bench

clean:
	rm -rf build dist *.egg-info .pytest_cache results out

# Coverage-guided fuzzing of the image reader, unpack, the disk probes and the command-line tokenizer with
# atheris, in a venv of its own (.cache/fuzzenv); FUZZ_SECONDS per target.
FUZZ_SECONDS ?= 300
FUZZ_PY := .cache/fuzzenv/bin/python
fuzz:
	@[ -x $(FUZZ_PY) ] || (python3 -m venv .cache/fuzzenv && .cache/fuzzenv/bin/pip install -q atheris zstandard pyelftools)
	for t in image unpack disk cmdline; do $(FUZZ_PY) -m devtools.fuzz $$t -- -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 -artifact_prefix=.cache/fuzz-$$t- || exit 1; done
