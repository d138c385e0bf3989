"""Run argv lists, in the default namespace or inside a suite namespace.

One helper for every external command (modelled on the kernel selftests' ``cmd``):
it raises :class:`CmdError` carrying argv, exit status, stdout and stderr.
Background processes are context managers that stop their process by PID.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol

NETNS_DIR = "/run/netns"


class NamespaceLike(Protocol):
    """Anything with the path of a bind-mounted network namespace."""

    path: str


class CmdError(RuntimeError):
    """A command failed or timed out; carries everything needed to act on it."""

    def __init__(self, argv: Sequence[str], returncode: int | None, stdout: str, stderr: str,
                 why: str = "") -> None:
        self.argv = list(argv)
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        tail = "\n".join((stderr or stdout).strip().splitlines()[-15:])
        status = why or f"exited {returncode}"
        super().__init__(f"{' '.join(self.argv)}: {status}" + (f"\n{tail}" if tail else ""))


class MissingTool(RuntimeError):
    """A required executable is not installed."""


@dataclass(frozen=True)
class Result:
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str


def ns_path(ns: NamespaceLike | str | None) -> str | None:
    """The bind-mount path of a namespace given as an object, a name or a path."""
    if ns is None:
        return None
    if isinstance(ns, str):
        return ns if ns.startswith("/") else f"{NETNS_DIR}/{ns}"
    return ns.path


def require(tool: str, package: str | None = None) -> str:
    """Absolute path of ``tool``, or :class:`MissingTool` naming the Debian package."""
    found = shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/sbin:/usr/bin:/bin")
    if not found:
        hint = f" (Debian package {package})" if package else ""
        raise MissingTool(f"{tool} is not installed{hint}; run `make setup`")
    return found


def wrap(argv: Sequence[str], ns: NamespaceLike | str | None = None) -> list[str]:
    """argv run inside ``ns`` through nsenter (exec, so the PID is the tool's own)."""
    path = ns_path(ns)
    if path is None:
        return [str(a) for a in argv]
    return ["nsenter", f"--net={path}", "--", *[str(a) for a in argv]]


def cmd(argv: Sequence[str], ns: NamespaceLike | str | None = None, *, timeout: float = 60,
        check: bool = True, input: str | None = None, env: dict[str, str] | None = None) -> Result:
    """Run argv (inside ``ns``), wait at most ``timeout`` s; raise CmdError on failure."""
    full = wrap(argv, ns)
    try:
        proc = subprocess.run(full, capture_output=True, text=True, timeout=timeout,
                              input=input, env=env, stdin=None if input else subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        raise CmdError(full, None, _text(exc.stdout), _text(exc.stderr),
                       why=f"timed out after {timeout:g}s") from None
    except FileNotFoundError:
        raise MissingTool(f"{full[0]} is not installed") from None
    if check and proc.returncode != 0:
        raise CmdError(full, proc.returncode, proc.stdout, proc.stderr)
    return Result(full, proc.returncode, proc.stdout, proc.stderr)


def _text(data: bytes | str | None) -> str:
    if data is None:
        return ""
    return data.decode(errors="replace") if isinstance(data, bytes) else data


def proc_starttime(pid: int) -> int | None:
    """The kernel start time of ``pid`` (clock ticks since boot), None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except OSError:
        return None
    # comm may hold spaces or parentheses: split after the last ')'
    fields = stat[stat.rindex(b")") + 2:].split()
    return int(fields[19])


def stop_pid(pid: int, starttime: int | None = None, *, grace: float = 2.0) -> bool:
    """SIGTERM, then SIGKILL after ``grace`` s, the process ``pid`` if it is still the same
    process (same start time). Returns True when something was stopped."""
    if starttime is not None and proc_starttime(pid) != starttime:
        return False
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if _reaped_or_gone(pid):
            return True
        time.sleep(0.01)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return True
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and not _reaped_or_gone(pid):
        time.sleep(0.01)
    return True


def _reaped_or_gone(pid: int) -> bool:
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return True
    except ChildProcessError:
        pass  # not our child: look at /proc instead
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            state = fh.read().rsplit(b")", 1)[1].split()[0]
        return state in (b"Z", b"X")
    except OSError:
        return True


@contextmanager
def bkg(argv: Sequence[str], ns: NamespaceLike | str | None = None, *, owner: object = None,
        stdout: int | None = subprocess.PIPE, stderr: int | None = subprocess.PIPE,
        env: dict[str, str] | None = None, grace: float = 2.0) -> Iterator[subprocess.Popen]:
    """Start argv in the background (inside ``ns``); on exit stop it by PID and wait for it.

    ``owner`` is a :class:`linklab.ownership.Run`: the PID is recorded before anything else
    happens, so a later run can stop it if this process dies.
    """
    full = wrap(argv, ns)
    try:
        proc = subprocess.Popen(full, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr,
                                env=env, text=True, start_new_session=True)
    except FileNotFoundError:
        raise MissingTool(f"{full[0]} is not installed") from None
    start = proc_starttime(proc.pid)
    if owner is not None:
        owner.own_pid(proc.pid, start, full)  # type: ignore[attr-defined]
    try:
        yield proc
    finally:
        if proc.poll() is None:
            stop_pid(proc.pid, start, grace=grace)
        proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
        if owner is not None:
            owner.disown_pid(proc.pid)  # type: ignore[attr-defined]
