"""The local nightly's parts that need no machine: the box recipe and the remote executor's
node.env (the libvirt daemons and the remote executor at work are in tests/live)."""

from __future__ import annotations

from pathlib import Path

import pytest

from linklab import remote
from linklab.nightly import box


def test_recipe_digest_follows_every_input(tmp_path: Path) -> None:
    base = box.Recipe(box.PACKAGES, ("pyroute2==0.9.7",), "ssh-ed25519 AAAA k")
    same = box.Recipe(tuple(reversed(box.PACKAGES)), ("pyroute2==0.9.7",), "ssh-ed25519 AAAA k")
    assert base.digest() == same.digest(), "package order must not rebuild the box"
    changed = [
        box.Recipe(box.PACKAGES + ("strace",), ("pyroute2==0.9.7",), "ssh-ed25519 AAAA k"),
        box.Recipe(box.PACKAGES, ("pyroute2==0.9.8",), "ssh-ed25519 AAAA k"),
        box.Recipe(box.PACKAGES, ("pyroute2==0.9.7",), "ssh-ed25519 BBBB k"),
        box.Recipe(box.PACKAGES, ("pyroute2==0.9.7",), "ssh-ed25519 AAAA k", cmdline="x"),
    ]
    assert len({r.digest() for r in changed} | {base.digest()}) == len(changed) + 1


def test_requirements_come_from_pyproject_without_host_only_ones(tmp_path: Path) -> None:
    reqs = box.requirements()
    assert any(r.startswith("pyroute2") for r in reqs)
    assert not any(r.startswith("virtme-ng") for r in reqs)
    bad = tmp_path / "pyproject.toml"
    bad.write_text("[project]\nname = 'x'\n")
    with pytest.raises(box.BoxError, match=f"{bad}: cannot read project.dependencies"):
        box.requirements(bad)


def test_guest_files_are_what_vagrant_and_the_node_need() -> None:
    rec = box.Recipe(box.PACKAGES, ("pyroute2==0.9.7",), "ssh-ed25519 AAAA k")
    text = "\n".join(box.hooks(rec, Path("/w")))
    assert "ssh-ed25519 AAAA k" in text and "authorized_keys" in text
    assert "NOPASSWD: ALL" in text and "Name=eth0" in text and "DHCP=ipv4" in text
    assert "systemctl mask" in text and "kea-dhcp4-server.service" in text
    for needed in ("openssh-server", "sudo", "rsync", "linux-image-amd64", "python3-venv",
                   "iperf3", "iputils-ping", "kea-dhcp4-server"):
        assert needed in box.PACKAGES
    assert 'config.ssh.private_key_path = File.join(dir, "vagrant_key")' in box.BOX_VAGRANTFILE
    assert "lv.kernel" in box.BOX_VAGRANTFILE and f"LABEL={box.ROOT_LABEL}" in box.CMDLINE


@pytest.mark.parametrize("text, message", [
    ("LINKLAB_REMOTE_TYPE=telnet\nLINKLAB_REMOTE_ARGS=x\n", "LINKLAB_REMOTE_TYPE=telnet: use"),
    ("LINKLAB_REMOTE_TYPE=ssh\n", "LINKLAB_REMOTE_ARGS is missing"),
    ("LINKLAB_REMOTE_TYPE=ssh\nLINKLAB_REMOTE_ARGS=root@10.0.0.2\n", "outside 198.18.0.0/15"),
    ("LINKLAB_REMOTE_TYPE=ssh\nLINKLAB_REMOTE_ARGS=root@node-b\n", "give an address"),
    ("just words\n", ":1: not KEY=value"),
])
def test_remote_env_bad_input(tmp_path: Path, text: str, message: str) -> None:
    env = tmp_path / "node.env"
    env.write_text(text)
    with pytest.raises(remote.RemoteError, match=message) as err:
        remote.remote_from_env(env)
    assert str(env) in str(err.value)
