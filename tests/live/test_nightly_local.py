"""The local nightly's live parts that run in seconds: libvirt in a namespace of the run's own
with its ownership records and ``linklab clean``, and the remote executor at work (the box
recipe and node.env's bad input are in tests/unit)."""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from linklab import ownership, remote
from linklab.cmd import CmdError, cmd
from linklab.netns import NetNS
from linklab.nightly import virt

needs_libvirt = pytest.mark.skipif(
    any(shutil.which(t, path="/usr/sbin:/usr/bin:/sbin:/bin") is None
        for t in ("libvirtd", "virtlogd", "virsh")),
    reason="libvirtd, virtlogd or virsh not installed (Debian libvirt-daemon-system, "
           "libvirt-clients)")


# libvirt inside a namespace of the run's own

def _libvirtd_free() -> None:
    """Wait for libvirt to be free (a nightly or the other libvirt test may hold it)."""
    deadline = time.monotonic() + 120
    while virt.libvirtd_answers() or _locked(virt.LOCK):
        if time.monotonic() > deadline:
            pytest.skip(f"libvirt is held by another linklab run ({virt.LOCK}, {virt.SOCKET})")
        time.sleep(1)


def _locked(path: str) -> bool:
    with open(path, "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
    return False


@needs_libvirt
def test_daemons_run_inside_the_runs_namespace_and_leave_nothing(process_state) -> None:
    _libvirtd_free()
    run = ownership.Run()
    env = virt.Libvirt(run, lock_wait_s=120)
    try:
        pids = {n: int((env.state / f"{n}.pid").read_text()) for n in virt.DAEMONS}
        default_ns = os.stat("/proc/self/ns/net").st_ino
        for name, pid in pids.items():
            assert os.stat(f"/proc/{pid}/ns/net").st_ino == os.stat(env.ns.path).st_ino, name
            assert os.stat(f"/proc/{pid}/ns/net").st_ino != default_ns
        assert virt.virsh("pool-info", env.names.pool).returncode == 0
        # libvirt's default network exists as a definition but is never started
        nets = virt.virsh("net-list", "--all").stdout
        assert not any(line.split()[:2] == ["default", "active"] for line in nets.splitlines())
    finally:
        env.close()
        run.close()
    for pid in pids.values():
        assert process_state(pid) in ("gone", "Z")
    assert not os.path.exists(env.ns.path) and not env.state.exists()
    assert not Path(run.record).exists(), "a clean close removes the record"


@needs_libvirt
def test_clean_removes_a_killed_runs_network_pool_and_daemons(tmp_path: Path,
                                                              process_state) -> None:
    """kill -9 of the process that started libvirt: ``linklab clean`` removes its domain,
    volume, network, pool and both daemons (found by the record, not by name), then the
    namespace."""
    _libvirtd_free()
    script = tmp_path / "start.py"
    script.write_text(
        "import sys, time\n"
        "from linklab.ownership import Run\n"
        "from linklab.nightly import virt\n"
        "run = Run()\n"
        "env = virt.Libvirt(run, lock_wait_s=120)\n"
        "env.own_network('l2')\n"
        "xml = ('<network><name>%s</name><bridge name=\"virbr-ll\"/>'\n"
        "       '<ip address=\"198.19.250.1\" netmask=\"255.255.255.0\"/></network>')\n"
        "open(sys.argv[1], 'w').write(xml % env.names.network('l2'))\n"
        "virt.virsh('net-create', sys.argv[1], check=True)\n"
        "env.own_domain('node-x')\n"
        "vol = env.names.domain('node-x') + '.img'\n"
        "virt.virsh('vol-create-as', env.names.pool, vol, '1M', '--format', 'qcow2',\n"
        "           check=True)\n"
        "dom = ('<domain type=\"qemu\"><name>%s</name><memory unit=\"MiB\">64</memory>'\n"
        "       '<os><type arch=\"x86_64\">hvm</type></os><devices><disk type=\"file\" '\n"
        "       'device=\"disk\"><source file=\"%s\"/><target dev=\"vda\"/></disk>'\n"
        "       '</devices></domain>')\n"
        "open(sys.argv[1] + '.dom', 'w').write(dom % (env.names.domain('node-x'),\n"
        "                                          env.state / 'pool' / vol))\n"
        "virt.virsh('define', sys.argv[1] + '.dom', check=True)\n"
        "print(run.record, env.ns.name, env.names.prefix, env.state, flush=True)\n"
        "time.sleep(600)\n")
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path / "net.xml")],
                            stdout=subprocess.PIPE, text=True)
    try:
        record, ns, prefix, state = proc.stdout.readline().split()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    pids = [int((Path(state) / f"{n}.pid").read_text()) for n in virt.DAEMONS]
    assert f"{prefix}l2" in virt.virsh("net-list", "--name").stdout
    # the bridge is in the run's namespace, not here
    assert subprocess.run(["ip", "link", "show", "virbr-ll"], capture_output=True,
                          check=False).returncode
    removed = ownership.clean(log=lambda _m: None)
    mine = [r for r in removed if r.record.startswith(record)]
    assert mine, f"clean did not take the dead run's record {record}"
    assert {k for k, _ in mine[0].objects} == {"libvirt-daemon", "libvirt-pool",
                                               "libvirt-network", "libvirt-domain",
                                               "libvirt-volume"}
    time.sleep(0.5)
    for pid in pids:
        assert process_state(pid) in ("gone", "Z")
    assert not os.path.exists(f"/run/netns/{ns}")
    assert not Path(state).exists()
    assert not (virt.ETC / "networks" / f"{prefix}l2.xml").exists()
    assert not (virt.ETC / f"{prefix}node-x.xml").exists()
    assert not Path(record).exists()


# the remote executor

@pytest.fixture
def peer_ns() -> str:
    """A namespace standing in for the peer machine (REMOTE_TYPE=netns)."""
    name = f"llremote-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    yield name
    subprocess.run(["ip", "netns", "del", name], check=True)


def test_remote_cmd_runs_on_the_peer(tmp_path: Path, peer_ns: str) -> None:
    env = tmp_path / "node.env"
    env.write_text(f"# test\nLINKLAB_REMOTE_TYPE=netns\nLINKLAB_REMOTE_ARGS={peer_ns}\n")
    host = remote.remote_from_env(env)
    here = remote.cmd(["readlink", "/proc/self/ns/net"]).stdout
    there = remote.cmd(["readlink", "/proc/self/ns/net"], host=host).stdout
    assert here != there
    assert there.strip() == f"net:[{os.stat(f'/run/netns/{peer_ns}').st_ino}]"
    with pytest.raises(CmdError, match="exited 3"):
        remote.cmd(["sh", "-c", "exit 3"], host=host)


@pytest.mark.skipif(shutil.which("ssh") is None, reason="ssh not installed (openssh-client)")
def test_ssh_to_a_hung_peer_is_a_bounded_clear_error() -> None:
    """A peer that accepts TCP and then says nothing (a hung guest): ssh gives up after its
    ConnectTimeout and the error names ssh and the target. All inside a namespace of the
    test's own, the peer's address on its loopback."""
    ns = NetNS(f"llhung-{os.getpid()}")
    try:
        cmd(["ip", "link", "set", "lo", "up"], ns=ns)
        cmd(["ip", "addr", "add", "198.18.255.254/32", "dev", "lo"], ns=ns)
        with ns.enter():
            listener = socket.socket()
            listener.bind(("198.18.255.254", 2222))
            listener.listen(1)
            host = remote.SshRemote("root@198.18.255.254", options=(
                "-p", "2222", "-o", "BatchMode=yes", "-o", "ConnectTimeout=3",
                "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"))
            start = time.monotonic()
            with pytest.raises(CmdError, match=r"ssh to root@198\.18\.255\.254 failed"):
                remote.cmd(["true"], host=host, timeout=60)
            took = time.monotonic() - start
            listener.close()
        assert took < 30, f"ssh waited {took:.0f} s for a silent peer"
    finally:
        ns.close()


def test_ping_back_connects_from_the_peer_over_a_link(tmp_path: Path) -> None:
    """The two-host step of the local night, on one machine: 'here' and the peer are two
    namespaces joined by a veth pair; the peer (REMOTE_TYPE=netns) connects back to a
    listener on this side's LINKLAB_L2_ADDR, port 22."""
    here = NetNS(f"llhere-{os.getpid()}")
    peer_name = f"llpeer-{os.getpid()}"
    peer = NetNS(peer_name)
    try:
        cmd(["ip", "link", "add", "l2", "type", "veth", "peer", "name", "l2p", "netns",
             peer.path], ns=here)
        cmd(["ip", "addr", "add", "198.18.254.11/24", "dev", "l2"], ns=here)
        cmd(["ip", "addr", "add", "198.18.254.12/24", "dev", "l2p"], ns=peer)
        for ns, dev in ((here, "l2"), (peer, "l2p")):
            cmd(["ip", "link", "set", dev, "up"], ns=ns)
            cmd(["ip", "link", "set", "lo", "up"], ns=ns)
        env = tmp_path / "node.env"
        env.write_text("LINKLAB_NODE=node-a\nLINKLAB_PEER=node-b\n"
                       "LINKLAB_L2_ADDR=198.18.254.11/24\n"
                       f"LINKLAB_REMOTE_TYPE=netns\nLINKLAB_REMOTE_ARGS={peer_name}\n")
        with here.enter():
            listener = socket.socket()
            listener.bind(("198.18.254.11", 22))
            listener.listen(8)
            try:
                result = remote.ping_back(env, count=2)
            finally:
                listener.close()
        assert result["connects"] == 2 and len(result["connect_ms"]) == 2
        assert all(isinstance(ms, float) and ms > 0 for ms in result["connect_ms"])
        assert result["peer"] == "node-b" and result["target"] == "198.18.254.11"
        assert result["peer_kernel"] == os.uname().release
        # nobody listens any more: the peer's connect fails and the error says so
        with here.enter(), pytest.raises(CmdError, match="Connection refused"):
            remote.ping_back(env, count=1)
    finally:
        peer.close()
        here.close()
