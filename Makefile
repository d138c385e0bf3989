# linklab: `make report` (connectivity + benchmarks -> HTML report) and `make test`.
# Both install whatever is missing first (scripts/setup).

PY := .venv/bin/python
PYTEST := $(PY) -m pytest

.PHONY: setup test connectivity bench clean doctor nightly

setup:
	@bash scripts/setup

# The CI test command: unit tests, the connectivity matrix on the host kernel, the bench smoke.
test: setup
	$(PYTEST) -p xdist -n 2 -q -m "not bench"
	$(PYTEST) -p no:xdist -q -m bench --bench-smoke

connectivity: setup
	$(PYTEST) -m connectivity -q

bench: setup
	$(PYTEST) -m bench

doctor: setup
	.venv/bin/linklab doctor

# Nightly on two Vagrant VMs (ci/nightly.md). NIGHTLY_DIR (baselines, default
# /var/lib/linklab-nightly), NIGHTLY_PROVIDER=libvirt|virtualbox, LINKLAB_BOX=debian|ubuntu.
# DRY_RUN=1 prints the exact steps and runs nothing.
nightly: setup
	ci/nightly $(if $(filter-out 0,$(DRY_RUN)),--dry-run)

clean:
	-.venv/bin/linklab clean
