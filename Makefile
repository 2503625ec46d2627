# Sluice: the two commands a new user needs are `make demo` and `make test`.
# Both run scripts/setup first (idempotent: installs what a fresh Debian 12 machine lacks).

VENV   ?= .venv
PYTEST ?= $(VENV)/bin/pytest

.PHONY: setup demo demo-stop test lint bundle image bench vm vm-test

setup:
	scripts/setup

demo: setup
	$(VENV)/bin/python scripts/demo.py

demo-stop:
	$(VENV)/bin/python scripts/demo.py --stop

# SLUICE_REQUIRE_DATAPATH=1: on a machine that can run the datapath tests (root, bcc,
# bpffs), a skipped or missing datapath test fails the run (tests/datapathgate.py).
test: setup
	$(VENV)/bin/ruff check .
	SLUICE_REQUIRE_DATAPATH=1 $(PYTEST) -q

lint: setup
	$(VENV)/bin/ruff check .

# The one-binary bundle (dist/sluice) and the appliance root-fs overlay (dist/sluice-rootfs.tar.gz).
bundle: setup
	image/build-bundle

image: setup
	image/build-image

# Side-by-side benchmarks (direct path, Sluice, nftables, HAProxy, nginx), the per-packet
# meters (bench/pktcost.py) and the SYN rate (bench/synrate.py): ~20 minutes.
bench: setup
	scripts/setup --bench
	$(VENV)/bin/python bench/run.py

# A bootable VM disk of the image (dist/sluice-vm.raw + kernel + initrd; see image/README.md)
# and the test that boots it: first boot, first serial login, the console (minutes).
vm: setup
	scripts/setup --vm
	image/build-image
	image/build-vm

vm-test: vm
	SLUICE_VM_TEST=1 $(PYTEST) -q -m vm tests/test_image_boot.py
