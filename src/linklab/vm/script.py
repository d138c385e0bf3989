"""The shell script the guest runs: the cached 9p view, the environment, the command between
two console markers."""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

from linklab.vm.common import GUEST_PATH, REPO, VENV_BIN
from linklab.vm.host import ICOUNT_OPTS, ICOUNT_VIRT, qemu_version

START = "linklab-vm: guest command starting"
END = "linklab-vm: guest command exited "
# A second read-only 9p export of / mounted with the page cache on (see guest_script).
CACHE_TAG, CACHE_DIR = "linklabroot", "/run/linklab-cached"
CACHE_OPTS = "ro,trans=virtio,version=9p2000.L,msize=524288,cache=loose"
CACHE_QEMU_OPTS = (f"-fsdev local,id={CACHE_TAG},path=/,security_model=none,readonly=on,"
                   f"multidevs=remap -device virtio-9p-pci,fsdev={CACHE_TAG},"
                   f"mount_tag={CACHE_TAG}")
HOST_CACHE = Path("/var/cache/linklab")   # compiled helpers, seen read-only by the guests


def covering(paths: Iterable[Path]) -> list[Path]:
    """The paths not inside another one of ``paths`` (sorted)."""
    out: list[Path] = []
    for p in sorted(set(paths)):
        if not any(p.is_relative_to(q) for q in out):
            out.append(p)
    return out


def guest_script(argv: Sequence[str], cwd: str, env: dict[str, str],
                 cached: Sequence[Path] = (), rwdirs: Sequence[Path] = ()) -> str:
    """The shell script the guest runs: markers around ``argv`` with a venv-first PATH.

    ``cached`` directories are re-mounted from a second, read-only 9p export of / with
    ``cache=loose`` (virtme-ng's root has no cache: every Python import stats over 9p,
    ~5x slower); ``rwdirs`` inside them are bound back on top so they stay writable.
    """
    q = shlex.quote
    exports = "".join(f"export {k}={q(v)}\n" for k, v in sorted(env.items()))
    lines = ["#!/bin/sh", f"echo '{START}' >&2"]
    if cached:
        inner = [d for d in rwdirs if any(d.is_relative_to(c) for c in cached)]
        mount = f"mount -t 9p -o {CACHE_OPTS} {CACHE_TAG} {CACHE_DIR}"
        lines.append(f"if mkdir -p {CACHE_DIR} && {mount}; then")
        for i, d in enumerate(inner):
            lines.append(f"  mkdir -p /run/linklab-rw{i} && "
                         f"mount --bind {q(str(d))} /run/linklab-rw{i}")
        for c in cached:   # (mkdir: a directory under one of virtme-ng's tmpfs mounts)
            lines.append(f"  mkdir -p {q(str(c))} && "
                         f"mount --bind {q(CACHE_DIR + str(c))} {q(str(c))}")
        for i, d in enumerate(inner):
            lines.append(f"  mount --bind /run/linklab-rw{i} {q(str(d))}")
        lines.append("else echo 'linklab vm: no cached 9p view; running uncached' >&2; fi")
    lines += [
        f"export PATH={q(str(VENV_BIN))}:{GUEST_PATH}",
        f"export VIRTUAL_ENV={q(sys.prefix)}",
        exports.rstrip("\n"),
        f"cd {q(cwd)} || exit 126",
        shlex.join(argv),
        "status=$?",
        f'echo "{END}$status" >&2',
        "exit $status",
    ]
    return "\n".join(line for line in lines if line) + "\n"


def guest_env(virt: str, env: dict[str, str] | None) -> dict[str, str]:
    """The guest command's environment: this process's ``LINKLAB_*`` and ``PYTHONPATH``, the
    labels, ``env``."""
    # PYTHONPATH too: the guest starts from a clean environment, and a second checkout run with
    # the first one's virtualenv (PYTHONPATH=<checkout>/src) would otherwise test the first
    # checkout's code in its guests (the venv's editable install points there)
    out = {k: v for k, v in os.environ.items() if k.startswith("LINKLAB_")
           or k == "PYTHONPATH"}
    out.update({"LINKLAB_VIRT": virt, "LINKLAB_IN_VM": "1", "PYTHONUNBUFFERED": "1"})
    # the guest runs Python ~20x and traffic ~25x slower: stretch every wait (probes, servers)
    out.setdefault("LINKLAB_TIME_SCALE", "2" if virt == "kvm" else "5")
    if virt == ICOUNT_VIRT:   # the same hash order every boot; the clock's settings for meta.json
        out.update({"PYTHONHASHSEED": "0", "LINKLAB_VM_QEMU": qemu_version(),
                    "LINKLAB_VM_ICOUNT": ICOUNT_OPTS})
    out.update(env or {})
    return out


def write_script(scriptdir: Path, argv: Sequence[str], env: dict[str, str],
                 rwdirs: Iterable[Path], icount: bool) -> tuple[Path, list[Path]]:
    """The guest script in ``scriptdir``, and the directories the guest may write (created)."""
    script = scriptdir / "guest.sh"
    shared = list(dict.fromkeys(Path(d).resolve() for d in (REPO / "results", *rwdirs)))
    for d in shared:
        d.mkdir(parents=True, exist_ok=True)
    # the host's compile cache too (llcost, BPF objects): virtme-ng puts a tmpfs on /var/cache
    # On the instruction clock /usr too: a read over the uncached 9p root leaves the vCPU idle,
    # and an idle guest's clock jumps to its next timer (sleep=off), which may be a command's
    # own timeout (a process in D state outlived stop_pid's 5 s after SIGKILL that way).
    cached = covering([*(Path(p).resolve() for p in (REPO, sys.prefix, sys.base_prefix)),
                       *([HOST_CACHE] if HOST_CACHE.is_dir() else []),
                       *([Path("/usr")] if icount else [])])
    script.write_text(guest_script(argv, os.getcwd(), env, cached, shared))
    return script, shared
