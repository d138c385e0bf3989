"""Run argv lists, in the default namespace or inside a suite namespace.

One helper for every external command (modelled on the kernel selftests' ``cmd``):
it raises :class:`CmdError` carrying argv, exit status, stdout and stderr.
Background processes are context managers that stop their process by PID.
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol

from linklab.nsfs import NETNS_DIR, entered
from linklab.suite import time_scale


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


@contextmanager
def spawning_in(ns: NamespaceLike | str | None, full: Sequence[str]) -> Iterator[None]:
    """Processes started in the body start inside ``ns``: this thread enters it around the
    spawn (a child is born in its parent thread's namespace), which saves the exec of
    ``nsenter`` that ``full`` (the :func:`wrap` form, shown in errors and records) names."""
    path = ns_path(ns)
    if path is None:
        yield
        return
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise CmdError(full, None, "", "", why=f"cannot enter {path}: {exc.strerror}") from None
    try:
        with entered(fd):
            yield
    finally:
        os.close(fd)


def cmd(argv: Sequence[str], ns: NamespaceLike | str | None = None, *, timeout: float = 60,
        check: bool = True, input: str | None = None, env: dict[str, str] | None = None) -> Result:
    """Run argv (inside ``ns``), wait at most ``timeout`` s; raise CmdError on failure."""
    full = wrap(argv, ns)
    try:
        with spawning_in(ns, full):
            proc = subprocess.run([str(a) for a in argv], capture_output=True, text=True,
                                  timeout=timeout, input=input, env=env,
                                  stdin=None if input else subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        raise CmdError(full, None, _text(exc.stdout), _text(exc.stderr),
                       why=f"timed out after {timeout:g}s") from None
    except FileNotFoundError:
        raise MissingTool(f"{argv[0]} is not installed") from None
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


class StillAlive(RuntimeError):
    """A process survived SIGKILL for the whole wait (e.g. stuck in uninterruptible sleep)."""


def stop_pid(pid: int, starttime: int | None = None, *, grace: float = 2.0,
             kill_wait_s: float = 5.0) -> bool:
    """Stop the process ``pid`` if it is still the same process (same start time): SIGTERM,
    up to ``grace`` s for it to exit, then SIGKILL and up to ``kill_wait_s`` s more. Returns
    True only once it is gone (exited: a zombie waiting for its parent counts), False when it
    was not there; raises :class:`StillAlive` if it outlives SIGKILL. A pidfd pins the process:
    a recycled PID is never signalled."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return False
    try:
        if starttime is not None and proc_starttime(pid) != starttime:
            return False
        try:
            signal.pidfd_send_signal(fd, signal.SIGTERM)
        except ProcessLookupError:
            return False
        if _exited(fd, grace):
            return True
        try:
            signal.pidfd_send_signal(fd, signal.SIGKILL)
        except ProcessLookupError:
            return True
        # (scaled: in a guest whose clock skips idle time, a process in D state waiting on
        # the host's 9p answer outlived an unscaled 5 s while the host took well under it)
        kill_wait_s *= time_scale()
        if _exited(fd, kill_wait_s):
            return True
        raise StillAlive(f"process {pid} is still alive {kill_wait_s:g} s after SIGKILL "
                         f"(state {_state(pid)})")
    finally:
        os.close(fd)


def _exited(pidfd: int, timeout_s: float) -> bool:
    """Wait up to ``timeout_s`` for the process behind ``pidfd`` to exit (readable pidfd)."""
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    return bool(poller.poll(max(0.0, timeout_s) * 1000))


def _state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[0].decode()
    except OSError:
        return "gone"


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
        with spawning_in(ns, full):
            proc = subprocess.Popen([str(a) for a in argv], stdin=subprocess.DEVNULL,
                                    stdout=stdout, stderr=stderr, env=env, text=True,
                                    start_new_session=True)
    except FileNotFoundError:
        raise MissingTool(f"{argv[0]} is not installed") from None
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
