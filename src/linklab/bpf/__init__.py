"""BPF programs of the eBPF datapaths: C sources beside this module, compiled by clang into a
cache keyed by the sources' hash, loaded with the field's tools.

- tc programs: iproute2's ``tc filter add dev X ingress bpf da obj F sec S`` inside the
  namespace; they die with the device (and so with its namespace).
- netkit programs: ``nk_attach`` (a small C loader against libbpf) holds a BPF_LINK_CREATE
  link; the link and its program live exactly as long as that process, which the run owns.
- maps: each attached program has its own instance of ``ll_dests``/``ll_parent``; the builder
  fills them by map id with one ``bpftool batch`` (no bpffs pins: nothing outlives its owner).
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from linklab.cmd import CmdError, MissingTool, NamespaceLike, bkg, cmd, require
from linklab.suite import time_scale

SOURCES = Path(__file__).resolve().parent
REDIRECT = "redirect.bpf.c"
LOADER = "nk_attach.c"
CACHE = Path(os.environ.get("LINKLAB_BPF_CACHE", "/var/cache/linklab/bpf"))
INCLUDE = "/usr/include/x86_64-linux-gnu"     # asm/types.h for -target bpf (Debian multiarch)
DESTS, PARENT = "ll_dests", "ll_parent"
ATTACH_TIMEOUT_S = 30.0      # each tool's timeouts stretch with LINKLAB_TIME_SCALE (VM guests)


class BpfError(RuntimeError):
    """Compiling, loading or attaching a BPF program failed; names the file, device or map."""


@dataclass(frozen=True)
class Objects:
    """The compiled programs: the BPF object and the netkit loader."""

    redirect: Path
    loader: Path


def missing() -> str | None:
    """Why BPF datapaths cannot be built here (a missing tool, naming its package), or None."""
    for tool, package in (("clang", "clang"), ("bpftool", "bpftool"), ("tc", "iproute2")):
        try:
            require(tool, package)
        except MissingTool as exc:
            return str(exc)
    if not Path("/usr/include/bpf/bpf_helpers.h").exists():
        return "libbpf headers are not installed (Debian package libbpf-dev); run `make setup`"
    return None


def _key() -> str:
    # the compiler by its real path, size and mtime: running `clang --version` costs seconds
    # under the VM leg's TCG (it timed out there once)
    clang = Path(require("clang", "clang")).resolve()
    st = clang.stat()
    h = hashlib.sha256(f"{clang}\0{st.st_size}\0{st.st_mtime_ns}".encode())
    for name in (REDIRECT, LOADER):
        h.update(name.encode() + b"\0" + (SOURCES / name).read_bytes())
    return h.hexdigest()[:16]


def _compile(out: Path) -> None:
    clang = require("clang", "clang")
    cmd([clang, "-O2", "-g", "-Wall", "-target", "bpf", f"-I{INCLUDE}", "-c",
         SOURCES / REDIRECT, "-o", out / "redirect.bpf.o"], timeout=120)
    cmd([clang, "-O2", "-Wall", SOURCES / LOADER, "-lbpf", "-o", out / "nk_attach"],
        timeout=120)


def objects(run: object = None) -> Objects:
    """The compiled objects for the current sources: from the cache, compiled into it, or
    (cache not writable, e.g. the VM leg's read-only root) into a directory ``run`` owns."""
    key = _key()
    cached = CACHE / key
    if (cached / "redirect.bpf.o").exists() and (cached / "nk_attach").exists():
        return Objects(cached / "redirect.bpf.o", cached / "nk_attach")
    try:
        CACHE.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=CACHE))
    except OSError as exc:
        if run is None:
            raise BpfError(f"{CACHE} is not writable and no run owns a scratch directory") from exc
        work = Path(run.tmpdir("bpf"))  # type: ignore[attr-defined]
        _compile(work)
        return Objects(work / "redirect.bpf.o", work / "nk_attach")
    try:
        _compile(work)
        try:
            work.rename(cached)       # atomic: a concurrent compile of the same key loses
        except OSError:
            shutil.rmtree(work, ignore_errors=True)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return Objects(cached / "redirect.bpf.o", cached / "nk_attach")


# ---- attach ---------------------------------------------------------------------------------

def tc_attach(ns: NamespaceLike, dev: str, obj: Path, section: str) -> int:
    """Attach ``section`` of ``obj`` at tc ingress of ``dev`` in ``ns`` (direct action);
    return the program id."""
    tc = require("tc", "iproute2")
    try:
        cmd([tc, "qdisc", "add", "dev", dev, "clsact"], ns=ns, timeout=10 * time_scale())
        cmd([tc, "filter", "add", "dev", dev, "ingress", "bpf", "da", "obj", obj,
             "sec", section], ns=ns, timeout=ATTACH_TIMEOUT_S * time_scale())
    except CmdError as exc:
        raise BpfError(f"{dev}: attaching {obj.name} [{section}] at tc ingress: {exc}") from None
    return tc_prog_id(ns, dev)


def tc_prog_id(ns: NamespaceLike, dev: str) -> int:
    """The id of the BPF program at tc ingress of ``dev`` (BpfError if there is none)."""
    out = cmd([require("tc", "iproute2"), "-j", "filter", "show", "dev", dev, "ingress"],
              ns=ns, timeout=10 * time_scale()).stdout
    for f in json.loads(out or "[]"):
        prog = f.get("options", {}).get("prog")
        if prog:
            return int(prog["id"])
    raise BpfError(f"{dev}: no BPF program at tc ingress")


def tc_detach(ns: NamespaceLike, dev: str) -> None:
    """Remove the clsact qdisc of ``dev`` and with it every tc program on it."""
    cmd([require("tc", "iproute2"), "qdisc", "del", "dev", dev, "clsact"], ns=ns,
        timeout=10 * time_scale())


@contextmanager
def netkit_attach(ns: NamespaceLike, primary_index: int, objs: Objects, section: str,
                  where: str, owner: object) -> Iterator[int]:
    """Attach ``section`` to the netkit whose PRIMARY has ``primary_index`` in ``ns``, at
    ``where`` (``primary`` or ``peer``); yield the program id; detach on exit (the holder
    process, owned by ``owner``, is stopped and the kernel drops the link with its fd)."""
    argv = [objs.loader, objs.redirect, section, primary_index, where]
    with bkg(argv, ns=ns, owner=owner, stdout=subprocess.PIPE,
             stderr=subprocess.PIPE) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        line = proc.stdout.readline()
        if not line:
            proc.wait(timeout=ATTACH_TIMEOUT_S * time_scale())
            raise BpfError(f"netkit index {primary_index}: {objs.loader.name} {section} {where}:"
                           f" {proc.stderr.read().strip() or f'exited {proc.returncode}'}")
        yield int(json.loads(line)["prog_id"])


def link_detach(prog_ids: Iterable[int]) -> int:
    """BPF_LINK_DETACH every link running one of ``prog_ids``; return how many."""
    bpftool = require("bpftool", "bpftool")
    wanted = set(prog_ids)
    shown = cmd([bpftool, "-j", "link", "show"], timeout=30 * time_scale()).stdout
    links = [lk["id"] for lk in json.loads(shown or "[]") if lk.get("prog_id") in wanted]
    for link in links:
        cmd([bpftool, "link", "detach", "id", link], timeout=10 * time_scale())
    return len(links)


# ---- maps -----------------------------------------------------------------------------------

def loaded(what: str, ident: int) -> bool:
    """Is BPF ``what`` (prog, map) ``ident`` still in the kernel?"""
    res = cmd([require("bpftool", "bpftool"), what, "show", "id", ident], check=False,
              timeout=10 * time_scale())
    return res.returncode == 0


def maps_of(prog_ids: Iterable[int]) -> dict[int, dict[str, int]]:
    """prog id -> {map name: map id} for the programs given."""
    bpftool = require("bpftool", "bpftool")
    progs = {p["id"]: p for p in json.loads(cmd([bpftool, "-j", "prog", "show"],
                                                timeout=30 * time_scale()).stdout)}
    names = {m["id"]: m.get("name", "") for m in json.loads(cmd([bpftool, "-j", "map", "show"],
                                                                timeout=30 * time_scale()).stdout)}
    out = {}
    for pid in prog_ids:
        if pid not in progs:
            raise BpfError(f"BPF program {pid} is not loaded")
        out[pid] = {names[m]: m for m in progs[pid].get("map_ids", []) if m in names}
    return out


def addr_key(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bytes:
    """The 16-byte map key of an address (IPv4 as ::ffff:a.b.c.d)."""
    if addr.version == 4:
        return ipaddress.IPv6Address(f"::ffff:{addr}").packed
    return addr.packed


def _hex(data: bytes) -> str:
    return " ".join(f"{b:02x}" for b in data)


Dest = tuple[int, str | None]    # (host-side ifindex, container MAC); (0, None): the host's own


def fill(prog_ids: Iterable[int], dests: Mapping[ipaddress.IPv4Address | ipaddress.IPv6Address,
                                                 Dest], parent_index: int) -> int:
    """Write ``dests`` and the parent's index into the maps of every program in ``prog_ids``;
    return the number of entries written."""
    lines = []
    for pid, maps in maps_of(prog_ids).items():
        if DESTS not in maps:
            raise BpfError(f"BPF program {pid} has no map {DESTS} (found: "
                           f"{', '.join(maps) or 'none'})")
        for addr, (index, mac) in dests.items():
            value = index.to_bytes(4, "little") + bytes.fromhex((mac or "0" * 12)
                                                                .replace(":", "")) + bytes(2)
            lines.append(f"map update id {maps[DESTS]} key hex {_hex(addr_key(addr))} "
                         f"value hex {_hex(value)}")
        if PARENT in maps:     # only programs that send to the parent use it
            lines.append(f"map update id {maps[PARENT]} key hex 00 00 00 00 "
                         f"value hex {_hex(parent_index.to_bytes(4, 'little'))}")
    try:
        cmd([require("bpftool", "bpftool"), "batch", "file", "-"], input="\n".join(lines) + "\n",
            timeout=30 * time_scale())
    except CmdError as exc:
        raise BpfError(f"filling BPF maps: {exc}") from None
    return len(lines)
