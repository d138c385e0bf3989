"""The nightly's Vagrant box, built here from Debian packages: linklab/debian12 for libvirt.

    python -m linklab.nightly.box [--cache DIR] [--force] [--dry-run]

Recipe (declare): the package list, the guest's files and the Python wheels of linklab's
dependencies. Build: mmdebstrap a Debian 12 root -> ``mke2fs -d`` (no loop mount) ->
``qemu-img convert -O qcow2`` -> box.img + metadata.json + a box Vagrantfile + the guest's own
kernel and initrd (direct kernel boot, no bootloader) + the vagrant user's private key ->
``vagrant box add --name linklab/debian12``. The box is keyed on a digest of every input; an
unchanged recipe reuses the cached box, a changed one rebuilds it. The cache directory
(default /var/cache/linklab) is the only thing a night leaves behind.

Standard library only: it runs on the nightly host before anything else is known to work.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

BOX_NAME = "linklab/debian12"
SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
SECURITY = "http://deb.debian.org/debian-security"
DEFAULT_CACHE = Path(os.environ.get("LINKLAB_CACHE", "/var/cache/linklab"))
REPO = Path(__file__).resolve().parents[3]
GUEST_REPO = "/vagrant"          # the Vagrantfile's rsync synced folder; the venv lives in it
ROOT_LABEL = "linklab-root"
DISK_GIB = 6
FORMAT = 1                       # bump when the image layout changes without a recipe change

# What the guest needs, from Debian only: boot, ssh, sudo, rsync for the synced folder, the
# suite's tools (scripts/setup's list without the host-only parts: VM leg, browser, Vagrant).
PACKAGES = (
    "systemd-sysv", "udev", "kmod", "linux-image-amd64", "initramfs-tools",
    "openssh-server", "sudo", "rsync", "ca-certificates",
    "iproute2", "util-linux", "procps", "ethtool", "nftables", "tcpdump",
    "iperf3", "sockperf", "iputils-ping",
    "kea-dhcp4-server", "dnsmasq-base", "busybox-static", "isc-dhcp-client",
    "containernetworking-plugins",        # the CNI dhcp plugin as a client across two nodes
    "python3", "python3-venv", "git",
)
# Services a test node must not run on its own (the suite starts its servers in namespaces;
# timers would compete for the single TCG vCPU).
MASKED = (
    "kea-dhcp4-server.service", "kea-dhcp6-server.service", "kea-ctrl-agent.service",
    "kea-dhcp-ddns.service", "iperf3.service", "apt-daily.timer", "apt-daily-upgrade.timer",
    "e2scrub_all.timer", "e2scrub_reap.service", "fstrim.timer", "getty@tty1.service",
)
# Python packages the guest's venv must not install (host-only: the VM leg's launcher).
GUEST_SKIP = ("virtme-ng",)
CMDLINE = f"root=LABEL={ROOT_LABEL} rw console=ttyS0 net.ifnames=0 quiet"

NETWORK_UNIT = """\
[Match]
Name=eth0

[Network]
DHCP=ipv4
"""
SUDOERS = "vagrant ALL=(ALL) NOPASSWD: ALL\nDefaults:vagrant !requiretty\n"
FSTAB = f"LABEL={ROOT_LABEL} / ext4 rw,errors=remount-ro 0 1\n"

BOX_VAGRANTFILE = f"""\
# The box's own settings (linklab/debian12, built by linklab.nightly.box).
Vagrant.configure("2") do |config|
  dir = File.dirname(__FILE__)
  config.ssh.username = "vagrant"
  config.ssh.private_key_path = File.join(dir, "vagrant_key")
  config.ssh.insert_key = false
  config.vm.provider :libvirt do |lv|
    # direct kernel boot with the guest's own kernel: no bootloader in the image
    lv.kernel = File.join(dir, "vmlinuz")
    lv.initrd = File.join(dir, "initrd.img")
    lv.cmd_line = "{CMDLINE}"
    lv.disk_bus = "virtio"
  end
end
"""


class BoxError(RuntimeError):
    """A build step failed: the message names the step and the tool's last words."""


@dataclass(frozen=True)
class Recipe:
    """Every input of the box; its digest names the build."""

    packages: tuple[str, ...]
    requirements: tuple[str, ...]
    pubkey: str
    masked: tuple[str, ...] = MASKED
    cmdline: str = CMDLINE
    files: dict[str, str] = field(default_factory=dict)

    def digest(self) -> str:
        text = json.dumps({"format": FORMAT, "suite": SUITE, "packages": sorted(self.packages),
                           "requirements": sorted(self.requirements), "pubkey": self.pubkey,
                           "masked": sorted(self.masked), "cmdline": self.cmdline,
                           "files": self.files, "vagrantfile": BOX_VAGRANTFILE},
                          sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def requirements(pyproject: Path = REPO / "pyproject.toml") -> tuple[str, ...]:
    """linklab's runtime dependencies (pyproject.toml) that the guest needs, plus setuptools
    for the editable install of the synced checkout."""
    try:
        deps = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    except (OSError, KeyError, tomllib.TOMLDecodeError) as err:
        raise BoxError(f"{pyproject}: cannot read project.dependencies ({err})") from None
    build = tomllib.loads(pyproject.read_text()).get("build-system", {}).get("requires", [])
    keep = [d for d in deps if not any(d.replace(" ", "").startswith(s) for s in GUEST_SKIP)]
    return tuple(keep) + tuple(build) + ("wheel",)


def run(argv: list[str], what: str, timeout: float, **kw: object) -> subprocess.CompletedProcess:
    """One build step; BoxError names it and quotes the tool's last lines."""
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                             check=False, stdin=subprocess.DEVNULL, **kw)
    except subprocess.TimeoutExpired:
        raise BoxError(f"box: {what}: timed out after {timeout:.0f} s ({argv[0]})") from None
    except FileNotFoundError:
        raise BoxError(f"box: {what}: {argv[0]} is not installed (`make setup`)") from None
    if out.returncode != 0:
        tail = "\n".join((out.stderr or out.stdout).strip().splitlines()[-20:])
        raise BoxError(f"box: {what}: {' '.join(argv[:3])}... exited {out.returncode}\n{tail}")
    return out


def ensure_key(cache: Path) -> tuple[Path, str]:
    """The vagrant user's key pair, generated once and kept in the cache."""
    key = cache / "vagrant_key"
    if not key.exists():
        cache.mkdir(parents=True, exist_ok=True)
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "linklab-box", "-f", str(key)],
            "generate the vagrant user's key", 60)
    return key, (cache / "vagrant_key.pub").read_text().strip()


def recipe(cache: Path) -> Recipe:
    _, pub = ensure_key(cache)
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    hooks_of_install = json.dumps({k: project.get(k) for k in ("entry-points", "scripts")},
                                  sort_keys=True)   # the editable install's entry points
    return Recipe(PACKAGES, requirements(), pub,
                  files={"network": NETWORK_UNIT, "sudoers": SUDOERS, "fstab": FSTAB,
                         "entry-points": hooks_of_install})


def box_dir(cache: Path, rec: Recipe) -> Path:
    return cache / "box" / rec.digest()


def box_file(cache: Path, rec: Recipe) -> Path:
    return box_dir(cache, rec) / "linklab-debian12.box"


def hooks(rec: Recipe, wheelhouse: Path) -> list[str]:
    """mmdebstrap --customize-hook commands ("$1" is the new root)."""
    r = '"$1"'
    masks = " ".join(rec.masked)
    return [
        f"chroot {r} useradd -m -s /bin/bash -G sudo vagrant",
        f"install -d -m 700 {r}/home/vagrant/.ssh",
        f"printf '%s\\n' '{rec.pubkey}' > {r}/home/vagrant/.ssh/authorized_keys",
        f"chmod 600 {r}/home/vagrant/.ssh/authorized_keys",
        f"chroot {r} chown -R vagrant:vagrant /home/vagrant/.ssh",
        f"printf '%s' '{SUDOERS}' > {r}/etc/sudoers.d/vagrant",
        f"chmod 440 {r}/etc/sudoers.d/vagrant",
        f"printf '%s' '{FSTAB}' > {r}/etc/fstab",
        f"echo linklab-node > {r}/etc/hostname",
        f"printf '%s' '{NETWORK_UNIT}' > {r}/etc/systemd/network/10-eth0.network",
        f"chroot {r} systemctl enable systemd-networkd.service ssh.service",
        f"chroot {r} systemctl mask {masks}",
        # the guest's linklab venv, pre-filled: the synced checkout is installed editable on it
        f"install -d {r}{GUEST_REPO}/src/linklab {r}/tmp/wheelhouse",
        f"cp -a {wheelhouse}/. {r}/tmp/wheelhouse/",
        f"cp {REPO}/pyproject.toml {REPO}/README.md {r}{GUEST_REPO}/",
        f"touch {r}{GUEST_REPO}/src/linklab/__init__.py",
        f"chroot {r} python3 -m venv {GUEST_REPO}/.venv",
        (f"chroot {r} {GUEST_REPO}/.venv/bin/pip install -q --no-index "
         f"--find-links /tmp/wheelhouse " + " ".join(f"'{q}'" for q in rec.requirements)),
        (f"chroot {r} env -C {GUEST_REPO} {GUEST_REPO}/.venv/bin/pip install -q --no-index "
         f"--no-build-isolation --no-deps -e ."),
        f"rm -rf {r}/tmp/wheelhouse {r}/var/cache/apt/archives/*.deb {r}/var/lib/apt/lists/*",
        f"chroot {r} chown -R vagrant:vagrant {GUEST_REPO}",
    ]


def build(cache: Path, rec: Recipe, log=print) -> tuple[Path, dict[str, float]]:
    """Build the box file for ``rec`` under the cache; returns it and each step's seconds."""
    out_dir = box_dir(cache, rec)
    work = cache / "work" / rec.digest()
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    times: dict[str, float] = {}

    def step(name: str) -> None:
        times[name] = round(time.monotonic() - step.t0, 1)   # type: ignore[attr-defined]
        log(f"box: {name}: {times[name]} s")
        step.t0 = time.monotonic()                           # type: ignore[attr-defined]

    step.t0 = time.monotonic()                               # type: ignore[attr-defined]
    try:
        wheelhouse = work / "wheelhouse"
        # the guest is Debian 12 like this host (CPython 3.11, glibc 2.36): its wheels fit
        run([sys.executable, "-m", "pip", "download", "-q", "-d", str(wheelhouse),
             *rec.requirements],
            "download the Python wheels of linklab's dependencies", 1800)
        step("wheels")
        root = work / "root"
        argv = ["mmdebstrap", "--variant=apt", "--mode=root", "--format=directory",
                "--include=" + ",".join(rec.packages),
                "--aptopt=Acquire::Retries \"3\"",
                "--dpkgopt=path-exclude=/usr/share/{doc,man,info,locale}/*",
                "--dpkgopt=path-include=/usr/share/doc/*/copyright"]
        argv += [f"--customize-hook={h}" for h in hooks(rec, wheelhouse)]
        argv += [SUITE, str(root), f"deb {MIRROR} {SUITE} main",
                 f"deb {MIRROR} {SUITE}-updates main", f"deb {SECURITY} {SUITE}-security main"]
        run(argv, "mmdebstrap the Debian 12 root", 3600)
        step("mmdebstrap")
        kernels = sorted((root / "boot").glob("vmlinuz-*"))
        if len(kernels) != 1:
            raise BoxError(f"box: expected one kernel in {root}/boot, found {kernels}")
        release = kernels[0].name.removeprefix("vmlinuz-")
        initrd = root / "boot" / f"initrd.img-{release}"
        if not initrd.exists():
            raise BoxError(f"box: {initrd}: missing (initramfs-tools did not run?)")
        stage = work / "stage"
        stage.mkdir()
        shutil.copy2(kernels[0], stage / "vmlinuz")
        shutil.copy2(initrd, stage / "initrd.img")
        raw = work / "root.ext4"
        run(["mke2fs", "-q", "-t", "ext4", "-L", ROOT_LABEL, "-d", str(root), str(raw),
             f"{DISK_GIB}G"], "fill the ext4 image (mke2fs -d)", 1800)
        step("mke2fs")
        run(["qemu-img", "convert", "-O", "qcow2", str(raw), str(stage / "box.img")],
            "convert to qcow2", 1800)
        raw.unlink()
        step("qcow2")
        (stage / "metadata.json").write_text(json.dumps(
            {"provider": "libvirt", "format": "qcow2", "virtual_size": DISK_GIB}) + "\n")
        (stage / "Vagrantfile").write_text(BOX_VAGRANTFILE)
        shutil.copy2(cache / "vagrant_key", stage / "vagrant_key")
        (stage / "linklab-box.json").write_text(json.dumps(
            {"digest": rec.digest(), "kernel": release, "packages": list(rec.packages),
             "requirements": list(rec.requirements), "built": time.strftime(
                 "%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "seconds": times}, indent=2) + "\n")
        out_dir.mkdir(parents=True, exist_ok=True)
        part = out_dir / ".linklab-debian12.box.part"
        with tarfile.open(part, "w") as tar:   # uncompressed: qcow2 is already sparse
            for f in sorted(stage.iterdir()):
                tar.add(f, arcname=f.name)
        os.replace(part, box_file(cache, rec))
        step("archive")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return box_file(cache, rec), times


def vagrant_env(cache: Path) -> dict[str, str]:
    """Vagrant's home lives in the cache: the registered box survives, nothing else does."""
    return {**os.environ, "VAGRANT_HOME": str(cache / "vagrant-home"),
            "VAGRANT_CHECKPOINT_DISABLE": "1"}


def registered_digest(cache: Path) -> str | None:
    """The digest of the box Vagrant has under BOX_NAME, if any."""
    found = sorted((cache / "vagrant-home" / "boxes").glob(
        f"{BOX_NAME.replace('/', '-VAGRANTSLASH-')}/*/libvirt/linklab-box.json"))
    for meta in found:
        try:
            return json.loads(meta.read_text())["digest"]
        except (OSError, ValueError, KeyError):
            continue
    return None


def box_info(cache: Path) -> dict:
    """linklab-box.json of the registered box (kernel release, digest, build times)."""
    for meta in (cache / "vagrant-home" / "boxes").glob(
            f"{BOX_NAME.replace('/', '-VAGRANTSLASH-')}/*/libvirt/linklab-box.json"):
        return json.loads(meta.read_text())
    return {}


def ensure(cache: Path = DEFAULT_CACHE, force: bool = False, log=print) -> dict:
    """Build (if the recipe changed) and register the box; returns what was done and timed."""
    start = time.monotonic()
    rec = recipe(cache)
    digest = rec.digest()
    done: dict = {"digest": digest, "built": False, "added": False}
    if force or not box_file(cache, rec).exists():
        log(f"box: building {BOX_NAME} {digest} under {cache} (inputs changed or no box yet)")
        _, done["build_seconds"] = build(cache, rec, log)
        done["built"] = True
        for old in (cache / "box").iterdir():            # superseded recipes
            if old.name != digest:
                shutil.rmtree(old, ignore_errors=True)
    if registered_digest(cache) != digest:
        run(["vagrant", "box", "add", "--force", "--name", BOX_NAME, str(box_file(cache, rec))],
            f"vagrant box add --name {BOX_NAME}", 1800, env=vagrant_env(cache))
        done["added"] = True
    done["kernel"] = box_info(cache).get("kernel")
    done["seconds"] = round(time.monotonic() - start, 1)
    log(f"box: {BOX_NAME} {digest} ready (kernel {done['kernel']}; "
        f"{'built' if done['built'] else 'cached'}; {done['seconds']} s)")
    return done


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="linklab.nightly.box", description=__doc__.splitlines()[0])
    p.add_argument("--cache", type=Path, default=DEFAULT_CACHE,
                   help=f"box cache and Vagrant home (default {DEFAULT_CACHE})")
    p.add_argument("--force", action="store_true", help="rebuild even if the recipe is unchanged")
    p.add_argument("--dry-run", action="store_true", help="print the digest and hooks only")
    a = p.parse_args(argv)
    if a.dry_run:
        rec = recipe(a.cache)
        print(f"digest {rec.digest()}; box {box_file(a.cache, rec)}")
        print("\n".join(hooks(rec, a.cache / "work" / "wheelhouse")))
        return 0
    try:
        ensure(a.cache, a.force)
    except BoxError as err:
        print(err, file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
