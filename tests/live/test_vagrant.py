"""The nightly's Vagrantfile under ``vagrant validate`` (offline, both providers and boxes, and
each breakage named), and ci/nightly --local's runner inside a namespace; the plan, the gate
and node.env are in tests/unit."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from linklab.netns import NetNS
from tests import DATA, REPO

needs_vagrant = pytest.mark.skipif(
    shutil.which("vagrant") is None,
    reason="vagrant not installed (Debian packages vagrant vagrant-libvirt; `make setup`)")


def vagrant_validate(cwd: Path, tmp: Path, provider: str,
                     **env: str) -> subprocess.CompletedProcess:
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
        full["PATH"] = f"{DATA / 'vagrant'}:{full['PATH']}"
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
        "lv.memory = MEMORY_MIB", "lv.memory = MEMORY_MIB\n    lv.memroy = 2048", "libvirt",
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


@needs_vagrant
def test_local_box_under_tcg_validates(tmp_path: Path) -> None:
    out = vagrant_validate(REPO, tmp_path, "libvirt", LINKLAB_BOX="local",
                           LINKLAB_LIBVIRT_DRIVER="qemu", LINKLAB_LIBVIRT_PREFIX="ll0000-",
                           LINKLAB_VM_CPUS="1", LINKLAB_VM_MEMORY_MIB="1024")
    assert out.returncode == 0, out.stdout + out.stderr
    bad = vagrant_validate(REPO, tmp_path, "libvirt", LINKLAB_BOX="local",
                           LINKLAB_LIBVIRT_DRIVER="xen")
    assert bad.returncode != 0
    assert "LINKLAB_LIBVIRT_DRIVER=xen: use kvm or qemu" in bad.stderr


def test_local_runner_runs_each_step_inside_the_nights_namespace(tmp_path: Path,
                                                                ci_nightly) -> None:
    ns = NetNS(f"llnight-{os.getpid()}")
    try:
        step = ci_nightly.Step("where am I", ("readlink", "/proc/self/ns/net"),
                            stdout=tmp_path / "out")
        assert ci_nightly.in_namespace(ns.path)(step, {}).rc == 0
        inode = os.stat(ns.path).st_ino
        assert (tmp_path / "out").read_text().strip() == f"net:[{inode}]"
    finally:
        ns.close()


@pytest.mark.skipif(not os.access("/dev/kvm", os.R_OK | os.W_OK),
                    reason="/dev/kvm is not usable here (no KVM, or not in its group)")
def test_local_dry_run_under_kvm_takes_two_cpus_and_the_selection(tmp_path: Path) -> None:
    """ci/nightly --local --driver kvm checks /dev/kvm before it prints its plan."""
    out = subprocess.run([str(REPO / "ci" / "nightly"), "--local", "--dry-run", "--nightly-dir",
                          str(tmp_path)],
                         env={**os.environ, "NIGHTLY_STAMP": "20260103T010000Z",
                              "NIGHTLY_DRIVER": "kvm", "NIGHTLY_SELECT": "ipvlan-l3"},
                         capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    kvm = out.stdout
    assert "LINKLAB_LIBVIRT_DRIVER=kvm" in kvm and "LINKLAB_VM_CPUS=2" in kvm
    assert "--bench-smoke" not in kvm and "LINKLAB_TIME_SCALE" not in kvm
    assert "-k ipvlan-l3" in kvm
    assert not list(tmp_path.iterdir()), "a dry run must not write anything"
