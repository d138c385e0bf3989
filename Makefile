# linklab: `make report` (connectivity + benchmarks -> HTML report) and `make test`.
# Both install whatever is missing first (scripts/setup).

PY := .venv/bin/python
PYTEST := $(PY) -m pytest

.PHONY: setup lint test unit connectivity bench cost clean doctor nightly nightly-local report kernel-matrix drill

# One results/<run-id>/ per `make test` / `make kernel-matrix` / `make report`
# (LINKLAB_RUN_ID overrides): the UTC second, the target and make's own PID, so two users who
# start make in the same second in one checkout never share a run directory (no live process
# shares make's PID).
STAMP := $(shell echo "$$(date -u +%Y%m%dT%H%M%SZ) $$PPID")
TEST_RUN_ID := $(or $(LINKLAB_RUN_ID),$(word 1,$(STAMP))-make-$(word 2,$(STAMP)))
REPORT_RUN_ID := $(or $(LINKLAB_RUN_ID),$(word 1,$(STAMP))-report-$(word 2,$(STAMP)))

setup:
	@bash scripts/setup

# The CI test command: lint (ruff, the rules in pyproject.toml), unit tests, the connectivity
# matrix on the host kernel, the bench smoke.
# Then a project of its own (examples/own-tests) and the VM leg: the ipvlan and netkit cells and
# their anatomy (this host kernel lacks both) on a Debian kernel under
# QEMU (linklab vm); all legs write into one results/<run-id>/, each row and JUnit record
# labelled with its kernel and virtualisation.
# The VM leg's selection: every ipvlan and netkit connectivity and DHCP cell (CNI ipvlan
# included), and the anatomy of every ipvlan and netkit datapath (the 9 ipvlan modes and flags,
# the 4 netkit ones) and of the packet from the wire (ipvlan beside veth, bridge, macvlan);
# the seed recipes and two-host scenarios repeat those datapaths and are left out. The host
# traces its own datapaths (REPORT_ANATOMY, make test's host run).
VM_LEG := -m "connectivity or anatomy" -k "connectivity and (ipvlan or netkit) or anatomy and \
  (ipvlan or netkit) and not (seed or twohost)"
test: export LINKLAB_RUN_ID = $(TEST_RUN_ID)
test: setup
	$(PY) -m ruff check .
	$(PYTEST) -p xdist -n 2 -q -m "not bench and not cost" --junitxml=results/$(TEST_RUN_ID)/junit-host.xml
	$(PYTEST) -q -m bench --bench-smoke
	cd examples/own-tests && $(CURDIR)/$(PY) -m pytest -q --rootdir=.   # a project of its own
	$(PYTEST) -v -rfEs --vm $(VM_LEG)
	$(PYTEST) -v -rfEs $(COST) --cost-smoke

# ruff over the tree with the rule set in pyproject.toml ([tool.ruff.lint]); `make test` runs it
# first. Only the virtualenv is needed (ruff is pinned in the dev extra).
lint:
	@test -x $(PY) || { echo "make lint: no $(PY); python3 -m venv .venv && \
	.venv/bin/pip install -e '.[dev]' (or make setup)" >&2; exit 2; }
	$(PY) -m ruff check .

# The unit tests alone (tests/unit): no root, no namespace, no QEMU; seconds on any machine.
# Only the virtualenv is needed, not `make setup`'s Debian packages (which need root).
unit:
	@test -x $(PY) || { echo "make unit: no $(PY); python3 -m venv .venv && \
	.venv/bin/pip install -e '.[dev]' (or make setup)" >&2; exit 2; }
	$(PYTEST) -q tests/unit

# The cost bench: every datapath's instructions per byte, packet, round trip, echo and
# connection in QEMU guests on the instruction clock (TCG, -icount shift=0: 1 ns of guest time
# per guest instruction), two guests side by side; rows labelled tcg-icount (docs/cost.md).
COST := --vm --vm-clock=instructions -m cost bench/test_cost.py
cost: setup
	$(PYTEST) -q -rfEs $(COST)

connectivity: setup
	$(PYTEST) -m connectivity -q

bench: setup
	$(PYTEST) -m bench

# The connectivity suite on each Debian 12 kernel (6.1: linux-image-amd64, 6.12:
# linux-image-6.12-amd64) under QEMU, into one results/<run-id>/ labelled per kernel.
MATRIX_KERNELS ?= 6.1 6.12
kernel-matrix: export LINKLAB_RUN_ID = $(TEST_RUN_ID)
kernel-matrix: setup
	@rc=0; for k in $(MATRIX_KERNELS); do \
	  $(PYTEST) -rfEs --vm --vm-kernel $$k -m connectivity || rc=1; \
	  $(PYTEST) -q -rfEs $(COST) --vm-kernel $$k || rc=1; done; exit $$rc

doctor: setup
	.venv/bin/linklab doctor

# The main job: the connectivity suite, its VM leg for ipvlan (REPORT_VM=0 skips it) and a
# short benchmark into one results/<run-id>/ (JUnit XML next to the rows), rendered to
# reports/<run-id>/index.html (reports/latest points at it), then checked in headless Chromium
# (screenshot next to the report). Exit status: non-zero when a test failed; the report is
# rendered either way.
# Bench budget: the cost bench on the instruction clock (~7 min, two guests) is what ranks
# datapaths here; the host's wall-clock bench (bench/power.py: detects 10 % only on a quiet
# machine) keeps IPv4 only, 3 interleaved repetitions + 1 warm-up of 1-s runs (~1.1 min per
# repetition on 6 datapaths), so make report stays within 20 min; every verdict states its own
# smallest detectable change.
REPORT_BENCH ?= --bench-reps=3 --bench-warmup=1 --bench-duration=1 --bench-omit=0.25 \
	--bench-latency-duration=1 --bench-families=v4
# Anatomy (docs/anatomy.md): the host run traces every datapath the host kernel builds (veth
# pair, veth, bridge, the 5 macvlan scenarios, veth-bpf, the two-host ones; ~30 s), the VM leg
# every ipvlan and netkit datapath (VM_LEG; ~45 s more of two guests than the bridge modes
# alone); the kill -9 cleanup test is make test's.
REPORT_ANATOMY := \
	--deselect tests/live/test_anatomy.py::test_kill_9_mid_measurement_is_cleaned_by_ownership
REPORT_VM ?= 1
report: setup
	@run=$(REPORT_RUN_ID); dir=results/$$run; rc=0; \
	export LINKLAB_RUN_ID=$$run; mkdir -p $$dir; start=$$(date +%s); \
	$(PYTEST) -q -rfEs -m "connectivity or bench or anatomy" $(REPORT_BENCH) $(REPORT_ANATOMY) \
	  --junitxml=$$dir/junit-host.xml tests bench/test_bench.py || rc=1; \
	if [ "$(REPORT_VM)" != 0 ]; then \
	  $(PYTEST) -q -rfEs --vm $(VM_LEG) || rc=1; \
	  $(PYTEST) -q -rfEs $(COST) || rc=1; fi; \
	.venv/bin/linklab report $$dir || exit 2; \
	scratch=$$(mktemp -d); \
	env -u LINKLAB_RUN_ID LINKLAB_REPORT_HTML=reports/$$run/index.html \
	  $(PYTEST) -q tests/live/test_report_browser.py --results-dir=$$scratch || rc=1; \
	rm -rf $$scratch; \
	echo "make report: $$(( $$(date +%s) - start )) s; open reports/$$run/index.html (reports/latest)"; \
	exit $$rc

# Nightly on two Vagrant VMs (ci/nightly.md). NIGHTLY_DIR (baselines, default
# /var/lib/linklab-nightly), NIGHTLY_PROVIDER=libvirt|virtualbox, LINKLAB_BOX=debian|ubuntu.
# DRY_RUN=1 prints the exact steps and runs nothing.
nightly: setup
	ci/nightly $(if $(filter-out 0,$(DRY_RUN)),--dry-run)

# The same night on this machine (ci/nightly --local, ci/nightly.md "Local night"): the box
# built here and cached in /var/cache/linklab, libvirtd in a namespace of the night's own,
# TCG guests (NIGHTLY_DRIVER=kvm on a KVM host), the ipvlan cells and the bench smoke
# (NIGHTLY_SELECT), reports with the baseline gate, everything destroyed afterwards.
nightly-local: setup
	ci/nightly --local $(if $(filter-out 0,$(DRY_RUN)),--dry-run)

# Reliability and safety drill (src/linklab/drill/): kill -9 / Ctrl-C at live kill points,
# tool failures, concurrent sessions, bad input, host diff and uplink capture; prints a summary
# table. CI (.ci/run) runs it without --nightly and --users-full; DRILL=--quick is a smaller one (fewer kill and Ctrl-C points).
drill: setup
	$(PY) -m linklab.drill $(DRILL)

clean:
	-.venv/bin/linklab clean
