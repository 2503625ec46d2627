# Sluice: the two commands a new user needs are `make demo` and `make test`.
# Both run scripts/setup first (idempotent: installs what a fresh Debian 12 machine lacks).

VENV   ?= .venv
PYTEST ?= $(VENV)/bin/pytest

.PHONY: setup demo demo-stop test lint bundle image bench

setup:
	scripts/setup

demo: setup
	$(VENV)/bin/python scripts/demo.py

demo-stop:
	$(VENV)/bin/python scripts/demo.py --stop

test: setup
	$(VENV)/bin/ruff check .
	$(PYTEST) -q

lint: setup
	$(VENV)/bin/ruff check .

# The one-binary bundle (dist/sluice) and the appliance root-fs overlay (dist/sluice-rootfs.tar.gz).
bundle: setup
	image/build-bundle

image: setup
	image/build-image

# Side-by-side benchmarks (direct path, Sluice, nftables, HAProxy, nginx): ~7 minutes.
bench: setup
	scripts/setup --bench
	$(VENV)/bin/python bench/run.py
