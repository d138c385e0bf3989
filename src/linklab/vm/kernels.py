"""Which installed distro kernel the guest boots."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from linklab.vm.common import VMError

BOOT = Path("/boot")
MODULES = Path("/lib/modules")


@dataclass(frozen=True)
class Kernel:
    """An installed distro kernel: its image and whether its modules include ipvlan."""

    release: str
    image: Path
    has_ipvlan: bool


def release_key(release: str) -> tuple:
    """Sort key ordering kernel releases numerically (6.12 after 6.1)."""
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in re.split(r"(\d+)", release) if p)


def _kernel(image: Path, modules: Path) -> Kernel:
    """The kernel of ``image``, its release read from the file name."""
    release = image.name.removeprefix("vmlinuz-")
    ipvlan = any((modules / release / "kernel/drivers/net/ipvlan").glob("ipvlan.ko*"))
    return Kernel(release, image, ipvlan)


def list_kernels(boot: Path = BOOT, modules: Path = MODULES) -> list[Kernel]:
    """Kernels with an image in ``boot``, newest first."""
    found = [_kernel(image, modules) for image in boot.glob("vmlinuz-*")]
    return sorted(found, key=lambda k: release_key(k.release), reverse=True)


def find_kernel(spec: str | None = None, boot: Path = BOOT, modules: Path = MODULES) -> Kernel:
    """The kernel ``spec`` names (an image path, a release or a release prefix such as
    ``6.1``), or by default the newest kernel whose modules include ipvlan."""
    kernels = list_kernels(boot, modules)
    if spec and ("/" in spec or Path(spec).is_file()):
        image = Path(spec)
        if not image.is_file():
            raise VMError(f"--kernel {spec}: no such kernel image")
        return _kernel(image, modules)
    if not kernels:
        raise VMError(f"no kernel image (vmlinuz-*) in {boot}: install the Debian package "
                      "linux-image-amd64 (run `make setup`)")
    if spec:
        match = [k for k in kernels if k.release == spec or k.release.startswith((spec + ".",
                                                                                  spec + "-"))]
        if not match:
            have = ", ".join(k.release for k in kernels)
            raise VMError(f"--kernel {spec}: no such kernel in {boot} (installed: {have})")
        return match[0]
    with_ipvlan = [k for k in kernels if k.has_ipvlan]
    if not with_ipvlan:
        raise VMError(f"no kernel in {boot} has ipvlan.ko under {modules}/<release>: install the "
                      "Debian package linux-image-amd64 (run `make setup`)")
    return with_ipvlan[0]
