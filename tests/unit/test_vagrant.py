"""The nightly without a machine: the Vagrantfile's addresses, ci/node-env, ci/peer-ssh and
ci/nightly's plan and gate (``vagrant validate`` itself is in tests/live)."""

from __future__ import annotations

import dataclasses
import fcntl
import ipaddress
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests import DATA, REPO


def test_vagrantfile_addresses_in_range() -> None:
    """Vagrant does not check addresses: every address or /24 prefix is in 198.18.0.0/15."""
    allowed = ipaddress.ip_network("198.18.0.0/15")
    text = (REPO / "Vagrantfile").read_text()
    found = re.findall(r'(?<!netmask: )"(\d+\.\d+\.\d+(?:\.\d+)?)(?:/(\d+))?"', text)
    assert len(found) >= 4, "expected the management, NAT, L2 and parent networks"
    for addr, prefix in found:
        net = addr if addr.count(".") == 3 else addr + ".0"
        network = ipaddress.ip_network(f"{net}/{prefix or 24}", strict=False)
        assert network.subnet_of(allowed), f"Vagrantfile: {addr} is outside {allowed}"


# ci/node-env: runs in the guest at provisioning; here it only reads this machine's links.

def first_ether_link() -> tuple[str, str]:
    links = json.loads(subprocess.run(["ip", "-j", "link", "show"], capture_output=True,
                                      text=True, check=True).stdout)
    for link in links:
        if link.get("link_type") == "ether" and link.get("address"):
            return link["ifname"], link["address"]
    pytest.skip("no Ethernet link visible in this namespace for ci/node-env to find")


def node_env(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "ci" / "node-env"), *args],
                          capture_output=True, text=True, timeout=30, check=False)


def test_node_env_finds_nics_by_mac(tmp_path: Path) -> None:
    ifname, mac = first_ether_link()
    out_file = tmp_path / "node.env"
    out = node_env("--node", "node-a", "--peer", "node-b", "--l2-mac", mac.replace(":", ""),
                   "--parent-mac", mac.upper(), "--l2-addr", "198.19.0.11/24",
                   "--peer-addr", "198.19.0.12", "--out", str(out_file))
    assert out.returncode == 0, out.stderr
    values = dict(line.split("=", 1) for line in out_file.read_text().splitlines()
                  if not line.startswith("#"))
    assert values["LINKLAB_PARENT_IF"] == ifname and values["LINKLAB_L2_IF"] == ifname
    assert values["LINKLAB_REMOTE_ARGS"] == "root@198.19.0.12"


@pytest.mark.parametrize("bad, field", [
    (("--l2-mac", "02:4c:4c:ff:ff:fe"), "--l2-mac 02:4c:4c:ff:ff:fe: no interface"),
    (("--l2-addr", "10.1.2.3/24"), "--l2-addr 10.1.2.3/24: outside 198.18.0.0/15"),
    (("--parent-mac", "zz"), "not a MAC address: 'zz'"),
])
def test_node_env_bad_input(tmp_path: Path, bad: tuple[str, str], field: str) -> None:
    _, mac = first_ether_link()
    opts = {"--node": "node-a", "--peer": "node-b", "--l2-mac": mac, "--parent-mac": mac,
            "--l2-addr": "198.19.0.11/24", "--peer-addr": "198.19.0.12",
            "--out": str(tmp_path / "node.env")}
    opts[bad[0]] = bad[1]
    out = node_env(*[x for kv in opts.items() for x in kv])
    assert out.returncode != 0
    assert field in out.stderr
    assert not (tmp_path / "node.env").exists()


# ci/nightly: the plan (--dry-run) and the gate, with a runner that plays the machines.

def earlier_night(root: Path, stamp: str, status: str) -> dict[str, Path]:
    """A night directory as ci/nightly leaves it, with one run per node."""
    runs = {}
    for node in ("node-a", "node-b"):
        run = root / "nights" / stamp / node / "results" / f"{stamp}-{node[-1]}x"
        run.mkdir(parents=True)
        (run / "meta.json").write_text("{}")
        (run / "bench.jsonl").write_text('{"metric": "throughput_bps", "value": 1e9}\n')
        runs[node] = run
    (root / "nights" / stamp / "nightly.json").write_text(json.dumps(
        {"status": status, "runs": {n: str(r.relative_to(root / "nights" / stamp))
                                    for n, r in runs.items()}}))
    return runs


def listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_dry_run_prints_the_exact_steps(tmp_path: Path) -> None:
    passed = earlier_night(tmp_path, "20260101T010000Z", "passed")
    earlier_night(tmp_path, "20260102T010000Z", "failed")      # never a baseline
    before = listing(tmp_path)
    out = subprocess.run([str(REPO / "ci" / "nightly"), "--nightly-dir", str(tmp_path)],
                         env={**os.environ, "DRY_RUN": "1",
                              "NIGHTLY_BENCH_FAIL_ON": "throughput:7%",
                              "NIGHTLY_STAMP": "20260103T010000Z"},
                         capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    assert listing(tmp_path) == before, "a dry run must not write anything"
    text = out.stdout
    body, final = text.split("\nfinally:\n")
    lines = body.splitlines()

    def at(fragment: str) -> int:
        hits = [i for i, line in enumerate(lines) if fragment in line]
        assert hits, f"no step with {fragment!r} in:\n{text}"
        return hits[0]

    up = at("vagrant up --provider=libvirt node-a node-b")
    for node in ("node-a", "node-b"):
        run = at(f"{node} -- 'sudo env -C /vagrant .venv/bin/python -m pytest")
        assert up < at(f"/home/vagrant/linklab-baseline/{passed[node].name}") < run
        assert f"--run-id 20260103T010000Z-{node} " in lines[run]
        assert f"--bench-baseline=/home/vagrant/linklab-baseline/{passed[node].name} " \
               "--bench-fail-on throughput:7%" in lines[run]
        collect = at(f"{node}:/vagrant/results/")
        assert run < collect
        report = at(f"{node}/results/20260103T010000Z-{node} --baseline {passed[node]} -o ")
        assert collect < report
    assert "[verdict]" in lines[at("connectivity suite and benchmarks on node-a")]
    assert "vagrant destroy --force node-a node-b" in final
    assert "vagrant up" not in final and "-m pytest" not in final
    assert f"VAGRANT_DOTFILE_PATH={tmp_path}/vagrant-state" in text


def test_make_nightly_dry_run_calls_the_script() -> None:
    out = subprocess.run(["make", "-n", "nightly", "DRY_RUN=1"], cwd=REPO, capture_output=True,
                         text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    assert "ci/nightly --dry-run" in out.stdout.splitlines()


def test_nightly_help_shows_the_default_gate() -> None:
    """--help renders every option's help (a bare % in one made argparse raise)."""
    out = subprocess.run([str(REPO / "ci" / "nightly"), "--help"], capture_output=True,
                         text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    assert "throughput:5%,latency_p99:10%" in " ".join(out.stdout.split())


@pytest.mark.parametrize("args, message", [
    (["--provider", "docker"], "--provider docker: use libvirt or virtualbox"),
    (["--box", "fedora"], "--box fedora: use debian or ubuntu"),
    (["--nightly-dir", "nights"], "--nightly-dir nights: give an absolute path"),
    (["--keep", "0"], "--keep 0: keep at least 1 night"),
    (["NIGHTLY_STAMP=2026-01-01"], "NIGHTLY_STAMP=2026-01-01: use the UTC form"),
])
def test_nightly_bad_option(args: list[str], message: str) -> None:
    env = dict(os.environ)
    env.update(a.split("=", 1) for a in args if a.startswith("NIGHTLY_"))
    args = [a for a in args if not a.startswith("NIGHTLY_")]
    out = subprocess.run([str(REPO / "ci" / "nightly"), "--dry-run", *args], env=env,
                         capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 2
    assert message in out.stderr


class Machines:
    """Plays vagrant, ssh and rsync for execute(): records argv, returns chosen exit codes."""

    def __init__(self, pytest_rc: dict[str, int] | None = None, up_rc: int = 0,
                 interrupt_at: str | None = None) -> None:
        self.pytest_rc = pytest_rc or {}
        self.up_rc = up_rc
        self.interrupt_at = interrupt_at
        self.calls: list[tuple[str, ...]] = []

    def __call__(self, step, env: dict[str, str]) -> int:
        argv = step.argv
        self.calls.append(argv)
        assert env["VAGRANT_CHECKPOINT_DISABLE"] == "1"
        if self.interrupt_at and self.interrupt_at in " ".join(argv):
            raise KeyboardInterrupt
        if argv[:2] == ("vagrant", "up"):
            return self.up_rc
        if step.stdout:
            step.stdout.parent.mkdir(parents=True, exist_ok=True)
            step.stdout.write_text("Host node-a\n")
        if argv[0] == "ssh" and "pytest" in argv[-1]:
            return self.pytest_rc.get(argv[argv.index("--") - 1], 0)
        if argv[0] == "rsync" and argv[-2].endswith("/vagrant/results/"):
            node = argv[-2].split(":")[0]
            run = Path(argv[-1]) / f"{Path(argv[-1]).parent.parent.name}-{node}"
            run.mkdir(parents=True)
            (run / "meta.json").write_text("{}")
            (run / "bench.jsonl").write_text("{}\n")
        return 0

    def index(self, *prefix: str) -> int:
        return next(i for i, c in enumerate(self.calls) if c[:len(prefix)] == prefix)


def config(ci_nightly, root: Path, stamp: str = "20260105T010000Z"):
    return ci_nightly.Config(nightly_dir=root, provider="libvirt", box="debian", keep=30,
                          two_host=False, bench_fail_on="", stamp=stamp)


def test_execute_passes_and_records_the_next_baseline(tmp_path: Path, ci_nightly) -> None:
    prev = earlier_night(tmp_path, "20260101T010000Z", "passed")
    cfg = config(ci_nightly, tmp_path)
    machines = Machines()
    assert ci_nightly.execute(ci_nightly.make_plan(cfg), machines) == ci_nightly.EXIT_PASSED
    report = next(c for c in machines.calls if "report" in c and "--baseline" in c)
    assert report[2] == str(cfg.night / "node-a" / "results" / "20260105T010000Z-node-a")
    assert report[report.index("--baseline") + 1] == str(prev["node-a"])
    assert machines.calls[-1] == ("vagrant", "destroy", "--force", "node-a", "node-b")
    record = json.loads((cfg.night / "nightly.json").read_text())
    assert record["status"] == "passed"
    assert record["runs"]["node-b"] == "node-b/results/20260105T010000Z-node-b"
    assert (tmp_path / "latest").resolve() == cfg.night.resolve()
    assert ci_nightly.find_baseline(tmp_path, "20260106T010000Z", "node-b") == \
        cfg.night / "node-b" / "results" / "20260105T010000Z-node-b"


def test_failed_cell_fails_the_night_but_collects_and_destroys(tmp_path: Path, ci_nightly) -> None:
    prev = earlier_night(tmp_path, "20260101T010000Z", "passed")
    cfg = config(ci_nightly, tmp_path)
    machines = Machines(pytest_rc={"node-b": 1})
    assert ci_nightly.execute(ci_nightly.make_plan(cfg), machines) == ci_nightly.EXIT_FAILED
    collect = next(i for i, c in enumerate(machines.calls) if c[-2] == "node-b:/vagrant/results/")
    assert collect > machines.index("ssh", "-F", str(cfg.ssh_config), *ci_nightly.SSH_BOUNDS,
                                    "node-b")
    assert machines.calls[-1][:2] == ("vagrant", "destroy")
    assert json.loads((cfg.night / "nightly.json").read_text())["status"] == "failed"
    # the failed night never becomes a baseline: tomorrow still compares with the last pass
    assert ci_nightly.find_baseline(tmp_path, "20260106T010000Z", "node-b") == prev["node-b"]


@pytest.mark.parametrize("machines, expected_calls", [
    (Machines(up_rc=1), "no pytest"),                 # a VM did not come up
    (Machines(pytest_rc={"node-a": 4}), "pytest"),    # pytest usage error: broken, not failed
])
def test_broken_run_exits_3_and_destroys(tmp_path: Path, machines: Machines,
                                         expected_calls: str, ci_nightly) -> None:
    cfg = config(ci_nightly, tmp_path)
    assert ci_nightly.execute(ci_nightly.make_plan(cfg), machines) == ci_nightly.EXIT_BROKEN
    ran_pytest = any(c[0] == "ssh" and "pytest" in c[-1] for c in machines.calls)
    assert ran_pytest == (expected_calls == "pytest")
    assert machines.calls[-1] == ("vagrant", "destroy", "--force", "node-a", "node-b")
    assert json.loads((cfg.night / "nightly.json").read_text())["status"] == "broken"


def test_interrupt_still_destroys(tmp_path: Path, ci_nightly) -> None:
    cfg = config(ci_nightly, tmp_path)
    machines = Machines(interrupt_at="pytest")
    with pytest.raises(KeyboardInterrupt):
        ci_nightly.execute(ci_nightly.make_plan(cfg), machines)
    assert machines.calls[-1] == ("vagrant", "destroy", "--force", "node-a", "node-b")
    assert json.loads((cfg.night / "nightly.json").read_text())["status"] == "broken"


def test_baseline_skips_a_passed_night_without_benchmarks(tmp_path: Path, ci_nightly) -> None:
    runs = earlier_night(tmp_path, "20260101T010000Z", "passed")
    later = earlier_night(tmp_path, "20260102T010000Z", "passed")
    (later["node-a"] / "bench.jsonl").unlink()
    assert ci_nightly.find_baseline(tmp_path, "20260103T010000Z", "node-a") == runs["node-a"]
    assert ci_nightly.find_baseline(tmp_path, "20260103T010000Z", "node-b") == later["node-b"]
    assert ci_nightly.find_baseline(tmp_path, "20260101T010000Z", "node-a") is None


def test_prune_keeps_the_baseline_in_use(tmp_path: Path, ci_nightly) -> None:
    runs = earlier_night(tmp_path, "20260101T010000Z", "passed")
    for day in (2, 3, 4):
        earlier_night(tmp_path, f"202601{day:02}T010000Z", "failed")
    ci_nightly.prune(tmp_path, keep=2, keep_also={runs["node-a"]})
    assert sorted(p.name for p in (tmp_path / "nights").iterdir()) == \
        ["20260101T010000Z", "20260103T010000Z", "20260104T010000Z"]


def test_two_host_plan_trusts_then_drives_the_peer(tmp_path: Path, ci_nightly) -> None:
    cfg = ci_nightly.Config(nightly_dir=tmp_path, provider="virtualbox", box="ubuntu", keep=3,
                         two_host=True, bench_fail_on="", stamp="20260105T010000Z")
    steps = [s.show() for s in ci_nightly.make_plan(cfg).body]
    key = next(i for i, s in enumerate(steps) if "node-a -- 'sudo /vagrant/ci/peer-ssh key'" in s)
    auth = next(i for i, s in enumerate(steps) if "node-b -- 'sudo /vagrant/ci/peer-ssh auth" in s)
    drive = next(i for i, s in enumerate(steps) if "--remote-env=/etc/linklab/node.env" in s)
    assert key < auth < drive
    assert steps[auth].endswith(f"< {cfg.night / 'work' / 'node-a.pub'}")


def test_two_host_summary_counts_cells_per_scenario(tmp_path: Path, ci_nightly) -> None:
    night = tmp_path / "20260105T010000Z"
    junit = night / "node-a" / "results" / f"{night.name}-two-host" / "junit-host.xml"
    junit.parent.mkdir(parents=True)
    (night / "work").mkdir()
    (night / "work" / "ping-back.json").write_text('{"peer_kernel": "6.1.0-57-amd64"}')

    def case(cid: str, inner: str = "") -> str:
        return f'<testcase classname="tests.test_connectivity" name="test_cell[{cid}]">' \
               f'{inner}</testcase>'
    cases = [case("twohost-macvlan-v4-child-to-child"), case("twohost-macvlan-mtu-inherit"),
             case("twohost-ipvlan-l3-l2-multicast"), case("twohost-ipvlan-l3-v6-neigh")]
    junit.write_text(f"<testsuites><testsuite>{''.join(cases)}</testsuite></testsuites>")
    assert ci_nightly.two_host_summary(night) == ci_nightly.EXIT_PASSED
    out = json.loads((night / "two-host.json").read_text())
    assert out["scenarios"] == {
        "twohost-macvlan": {"passed": 2, "failed": 0, "error": 0, "skipped": 0,
                            "not_run": 0},
        "twohost-ipvlan-l3": {"passed": 2, "failed": 0, "error": 0, "skipped": 0,
                              "not_run": 0}}
    assert out["ping_back"]["peer_kernel"] == "6.1.0-57-amd64" and out["status"] == "passed"
    cases.append(case("twohost-bridge-v4-neigh", "<failure message='x'/>"))
    junit.write_text(f"<testsuites><testsuite>{''.join(cases)}</testsuite></testsuites>")
    assert ci_nightly.two_host_summary(night) == ci_nightly.EXIT_FAILED
    cases.append(case("twohost-macvlan-mtu-inherit", "<error message='teardown'/>"))
    junit.write_text(f"<testsuites><testsuite>{''.join(cases)}</testsuite></testsuites>")
    assert ci_nightly.two_host_summary(night) == ci_nightly.EXIT_BROKEN   # the agent's teardown
    assert json.loads((night / "two-host.json").read_text())["scenarios"]["twohost-macvlan"] \
        == {"passed": 1, "failed": 0, "error": 1, "skipped": 0, "not_run": 0}  # one outcome
    cases.pop()
    cases.append(case("twohost-veth-v4-neigh", "<error message='PeerError: ...'/>"))
    junit.write_text(f"<testsuites><testsuite>{''.join(cases)}</testsuite></testsuites>")
    assert ci_nightly.two_host_summary(night) == ci_nightly.EXIT_BROKEN   # the executor broke
    junit.unlink()
    assert ci_nightly.two_host_summary(night) == ci_nightly.EXIT_BROKEN   # no results came back
    assert json.loads((night / "two-host.json").read_text())["status"] == "broken"


@pytest.mark.skipif(shutil.which("ssh-keygen") is None,
                    reason="ssh-keygen not installed (Debian package openssh-client)")
def test_peer_ssh_key_and_authorise(tmp_path: Path) -> None:
    env = {**os.environ, "PEER_SSH_DIR": str(tmp_path / "ssh")}
    peer_ssh = str(REPO / "ci" / "peer-ssh")
    pub = subprocess.run([peer_ssh, "key"], env=env, capture_output=True, text=True,
                         timeout=60, check=True).stdout
    assert pub.startswith("ssh-ed25519 ")
    for _ in range(2):      # idempotent: the key is authorised once
        subprocess.run([peer_ssh, "authorise"], env=env, input=pub, text=True, timeout=60,
                       check=True)
    assert (tmp_path / "ssh" / "authorized_keys").read_text() == pub
    bad = subprocess.run([peer_ssh, "authorise"], env=env, input="not a key\n", text=True,
                         capture_output=True, timeout=60, check=False)
    assert bad.returncode == 2 and "not an ssh-ed25519 public key" in bad.stderr


class CollectSample(Machines):
    """Machines whose nodes return tests/data/results-sample; the report step runs for real."""

    def __call__(self, step, env: dict[str, str]) -> int:
        argv = step.argv
        if argv[0] == "rsync" and argv[-2].endswith("/vagrant/results/"):
            self.calls.append(argv)
            node = argv[-2].split(":")[0]
            shutil.copytree(DATA / "results-sample",
                            Path(argv[-1]) / f"{Path(argv[-1]).parent.parent.name}-{node}")
            return 0
        if len(argv) > 1 and argv[1] == "report":
            self.calls.append(argv)
            return subprocess.run(argv, capture_output=True, timeout=300, check=False).returncode
        return super().__call__(step, env)


@pytest.mark.skipif(not os.access(REPO / ".venv" / "bin" / "python", os.X_OK),   # (a symlink)
                    reason="no .venv runnable by this user (`make setup`): ci/nightly's "
                           "report step runs .venv/bin/linklab")
def test_execute_renders_the_baseline_comparison(tmp_path: Path, ci_nightly) -> None:
    """The report steps as ci/nightly writes them, run by the real `linklab report`."""
    prev = tmp_path / "nights" / "20260101T010000Z"
    shutil.copytree(DATA / "results-sample",
                    prev / "node-a" / "results" / "20260101T010000Z-node-a")
    (prev / "nightly.json").write_text(json.dumps(
        {"status": "passed", "runs": {"node-a": "node-a/results/20260101T010000Z-node-a"}}))
    cfg = dataclasses.replace(config(ci_nightly, tmp_path), nodes=("node-a",))  # one render
    assert ci_nightly.execute(ci_nightly.make_plan(cfg), CollectSample()) == ci_nightly.EXIT_PASSED
    html = (cfg.night / "node-a" / "report" / "index.html").read_text()
    assert "Compared with baseline" in html


def test_second_nightly_refused_while_one_runs(tmp_path: Path) -> None:
    """The lock on NIGHTLY_DIR: a second run exits 2 before any vagrant command."""
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "vagrant").write_text("#!/bin/sh\necho 'test: vagrant must not run' >&2\nexit 99\n")
    (fake / "vagrant").chmod(0o755)
    nights = tmp_path / "nightly"
    nights.mkdir()
    with open(nights / ".lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        out = subprocess.run([str(REPO / "ci" / "nightly"), "--nightly-dir", str(nights)],
                             env={**os.environ, "PATH": f"{fake}:{os.environ['PATH']}"},
                             capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 2, out.stdout + out.stderr
    assert f"another nightly holds {nights / '.lock'}" in out.stderr
    assert "vagrant must not run" not in out.stderr
    assert not (nights / "nights").exists()


# ci/nightly --local: the plan it prints and the runner that puts every step in its namespace

def test_local_dry_run_names_the_box_driver_and_selection(tmp_path: Path) -> None:
    """TCG, the default (the KVM plan needs a usable /dev/kvm: tests/live/test_vagrant.py)."""
    def dry(**env: str) -> str:
        out = subprocess.run([str(REPO / "ci" / "nightly"), "--local", "--dry-run",
                              "--nightly-dir", str(tmp_path)],
                             env={**os.environ, "NIGHTLY_STAMP": "20260103T010000Z", **env},
                             capture_output=True, text=True, timeout=60, check=False)
        assert out.returncode == 0, out.stderr
        return out.stdout
    tcg = dry()
    assert "box local" in tcg and "LINKLAB_LIBVIRT_DRIVER=qemu" in tcg
    assert "LINKLAB_VM_CPUS=1" in tcg and "LINKLAB_VM_MEMORY_MIB=1024" in tcg
    assert ("-k '\"'\"'ipvlan or (bench and not rate_limited) or (dhcp and twohost)'\"'\"' "
            "--bench-smoke") in tcg
    assert "LINKLAB_TIME_SCALE=5" in tcg
    assert "linklab.remote --env /etc/linklab/node.env --ping-back" in tcg
    assert tcg.index("--ping-back") < tcg.index("finally:") < tcg.index("vagrant destroy --force",
                                                                         tcg.index("finally:"))
    assert listing(tmp_path) == [], "a dry run must not write anything"


def test_local_bad_driver_is_refused() -> None:
    out = subprocess.run([str(REPO / "ci" / "nightly"), "--local", "--dry-run", "--driver",
                          "xen"], capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 2 and "--driver xen: use qemu (TCG) or kvm" in out.stderr


