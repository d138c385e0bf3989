"""The Vagrantfile passes `vagrant validate`, broken copies fail it; ci/nightly's plan and gate."""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data" / "vagrant"

needs_vagrant = pytest.mark.skipif(
    shutil.which("vagrant") is None,
    reason="vagrant not installed (Debian packages vagrant vagrant-libvirt; `make setup`)")


def vagrant_validate(cwd: Path, tmp: Path, provider: str, **env: str) -> subprocess.CompletedProcess:
    """`vagrant validate` in cwd, offline, with a throwaway Vagrant home and state dir."""
    full = {
        **os.environ,
        "VAGRANT_CHECKPOINT_DISABLE": "1",       # no version check over the network
        "VAGRANT_HOME": str(tmp / "vagrant-home"),
        "VAGRANT_DOTFILE_PATH": str(tmp / "vagrant-state"),   # no .vagrant/ in the tree
        "VAGRANT_DEFAULT_PROVIDER": provider,
        "VAGRANT_CWD": str(cwd),
        **env,
    }
    if provider == "virtualbox":
        # VirtualBox cannot be installed here; Vagrant only asks `VBoxManage --version`
        # before validating the provider block, and the shim refuses anything else.
        full["PATH"] = f"{DATA}:{full['PATH']}"
    return subprocess.run(["vagrant", "validate"], cwd=cwd, env=full, capture_output=True,
                          text=True, timeout=120, check=False)


def copy_tree(dest: Path) -> Path:
    """The Vagrantfile and the files its provisioners name, copied to dest."""
    (dest / "ci").mkdir(parents=True)
    shutil.copy2(REPO / "Vagrantfile", dest / "Vagrantfile")
    shutil.copy2(REPO / "ci" / "node-env", dest / "ci" / "node-env")
    return dest


@needs_vagrant
@pytest.mark.parametrize("provider", ["libvirt", "virtualbox"])
@pytest.mark.parametrize("box", ["debian", "ubuntu"])
def test_vagrantfile_validates(tmp_path: Path, provider: str, box: str) -> None:
    out = vagrant_validate(REPO, tmp_path, provider, LINKLAB_BOX=box)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "validated successfully" in out.stdout
    assert not (REPO / ".vagrant").exists() or (REPO / ".vagrant").is_dir()


@dataclass(frozen=True)
class Breakage:
    """One way to break a copy of the real Vagrantfile, and what validate must say."""

    anchor: str          # text that must be in the real Vagrantfile
    replacement: str
    provider: str
    message: tuple[str, ...]


BREAKAGES = {
    "libvirt-unknown-setting": Breakage(
        "lv.memory = 2048", "lv.memory = 2048\n    lv.memroy = 2048", "libvirt",
        ("Libvirt Provider", "shouldn't exist: memroy")),
    "virtualbox-unknown-setting": Breakage(
        "vb.cpus = 2", "vb.cpus = 2\n    vb.cpu = 2", "virtualbox",
        ("VirtualBox Provider", "shouldn't exist: cpu")),
    "syntax-error": Breakage(
        'config.vm.define name do |node|', 'config.vm.define name do |node', "libvirt",
        ("syntax error", "Vagrantfile:")),
}


@needs_vagrant
@pytest.mark.parametrize("name", sorted(BREAKAGES))
def test_broken_vagrantfile_fails(tmp_path: Path, name: str) -> None:
    brk = BREAKAGES[name]
    tree = copy_tree(tmp_path / "tree")
    text = (tree / "Vagrantfile").read_text()
    assert text.count(brk.anchor) == 1, f"Vagrantfile changed: {brk.anchor!r} not found once"
    (tree / "Vagrantfile").write_text(text.replace(brk.anchor, brk.replacement))
    out = vagrant_validate(tree, tmp_path, brk.provider)
    assert out.returncode != 0
    said = out.stdout + out.stderr
    for fragment in brk.message:
        assert fragment in said, said


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


@needs_vagrant
def test_missing_provisioning_script_fails(tmp_path: Path) -> None:
    tree = copy_tree(tmp_path / "tree")
    (tree / "ci" / "node-env").unlink()
    out = vagrant_validate(tree, tmp_path, "libvirt")
    assert out.returncode != 0
    assert "ci/node-env" in out.stdout + out.stderr


@needs_vagrant
def test_unknown_box_names_the_variable(tmp_path: Path) -> None:
    out = vagrant_validate(REPO, tmp_path, "libvirt", LINKLAB_BOX="fedora")
    assert out.returncode != 0
    assert "LINKLAB_BOX=fedora" in out.stderr and "debian, ubuntu" in out.stderr


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
