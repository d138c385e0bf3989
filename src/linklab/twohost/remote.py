"""The other end of a two-host run: one small class per ``REMOTE_TYPE`` (after the kernel
selftests' ``drivers/net/lib/py``: ``remote_ssh.py``, ``remote_netns.py``, ``env.py``).

A node's environment file (``/etc/linklab/node.env``, written by ci/node-env; the selftests
call theirs ``net.config``) holds ``KEY=value`` lines; ``LINKLAB_REMOTE_TYPE`` picks the class
and ``LINKLAB_REMOTE_ARGS`` is its argument (``root@198.19.0.12`` for ssh, a namespace name for
netns). :func:`cmd` runs an argv list here, or on the remote with ``host=``, and raises
:class:`linklab.cmd.CmdError` either way, so a check does not know which end is a machine.

    python -m linklab.remote --env /etc/linklab/node.env [--ns NS] -- ARGV...
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from linklab.cmd import CmdError, Result
from linklab.cmd import cmd as local_cmd
from linklab.suite import SUITE_V4

# bounded: a peer that is down or hung fails the command within about a minute
SSH_OPTS = ("-o", "BatchMode=yes", "-o", "ConnectTimeout=20", "-o", "ServerAliveInterval=10",
            "-o", "ServerAliveCountMax=3")


class RemoteError(ValueError):
    """A bad environment file: names the file and the key."""


def load_env(path: Path) -> dict[str, str]:
    """KEY=value lines (comments and blank lines skipped); RemoteError names the line."""
    try:
        text = path.read_text()
    except OSError as err:
        raise RemoteError(f"{path}: cannot read ({err.strerror})") from None
    values: dict[str, str] = {}
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.isidentifier():
            raise RemoteError(f"{path}:{n}: not KEY=value: {line!r}")
        values[key] = value.strip().strip('"')
    return values


@dataclass(frozen=True)
class SshRemote:
    """A machine reached over ssh (``REMOTE_ARGS``: ``[user@]address``, in 198.18.0.0/15)."""

    target: str
    options: tuple[str, ...] = SSH_OPTS

    def __post_init__(self) -> None:
        host = self.target.rpartition("@")[2]
        try:
            addr = ipaddress.ip_address(host)
        except ValueError:
            raise RemoteError(f"LINKLAB_REMOTE_ARGS={self.target}: give an address, "
                              "not a name") from None
        if addr not in SUITE_V4:      # the peer is reached over the suite's own segment
            raise RemoteError(f"LINKLAB_REMOTE_ARGS={self.target}: {addr} is outside "
                              f"{SUITE_V4}")

    def wrap(self, argv: Sequence[str], ns: str | None = None) -> list[str]:
        inner = [str(a) for a in argv]
        if ns:
            inner = ["ip", "netns", "exec", ns, *inner]
        return ["ssh", *self.options, self.target, "--", shlex.join(inner)]


@dataclass(frozen=True)
class NetnsRemote:
    """Another network namespace on this machine standing in for the peer (tests, one box)."""

    name: str

    def wrap(self, argv: Sequence[str], ns: str | None = None) -> list[str]:
        if ns:
            raise RemoteError(f"netns remote {self.name}: a namespace inside it is not "
                              "supported (namespaces do not nest)")
        return ["ip", "netns", "exec", self.name, *[str(a) for a in argv]]


Remote = SshRemote | NetnsRemote
TYPES = {"ssh": SshRemote, "netns": NetnsRemote}


def remote_from_env(path: Path) -> Remote:
    """The peer named by an environment file (``LINKLAB_REMOTE_TYPE``/``_ARGS``)."""
    values = load_env(path)
    kind = values.get("LINKLAB_REMOTE_TYPE")
    args = values.get("LINKLAB_REMOTE_ARGS")
    if kind not in TYPES:
        raise RemoteError(f"{path}: LINKLAB_REMOTE_TYPE={kind}: use one of "
                          f"{', '.join(TYPES)}")
    if not args:
        raise RemoteError(f"{path}: LINKLAB_REMOTE_ARGS is missing or empty")
    try:
        return TYPES[kind](args)
    except RemoteError as err:
        raise RemoteError(f"{path}: {err}") from None


def cmd(argv: Sequence[str], ns: str | None = None, *, host: Remote | None = None,
        timeout: float = 60, check: bool = True, input: str | None = None) -> Result:
    """Run argv here (``host=None``) or on ``host``, inside ``ns`` if given; CmdError on
    failure, carrying the full argv (ssh included) and both outputs."""
    if host is None:
        return local_cmd(argv, ns, timeout=timeout, check=check, input=input)
    full = host.wrap(argv, ns)
    res = local_cmd(full, None, timeout=timeout, check=False, input=input)
    if isinstance(host, SshRemote) and res.returncode == 255:
        raise CmdError(full, 255, res.stdout, res.stderr,
                       why=f"ssh to {host.target} failed (unreachable, refused or hung)")
    if check and res.returncode != 0:
        raise CmdError(full, res.returncode, res.stdout, res.stderr)
    return res


# run on the peer: TCP connect to this node's sshd over the shared L2, timed (the box has no
# ping; a connect is one round trip through both kernels and the libvirt switch)
_CONNECT = """import json, socket, sys, time
addr, n = sys.argv[1], int(sys.argv[2])
times = []
for _ in range(n):
    t = time.monotonic()
    socket.create_connection((addr, 22), timeout=10).close()
    times.append((time.monotonic() - t) * 1000)
print(json.dumps({"connects": n, "connect_ms": times}))
"""


def ping_back(env_file: Path, count: int = 3) -> dict:
    """The peer connects back to this node over the shared L2 (both ends real kernels): a
    cross-node smoke of the executor. Numbers as numbers (``connect_ms``)."""
    values = load_env(env_file)
    host = remote_from_env(env_file)
    mine = values.get("LINKLAB_L2_ADDR", "").split("/")[0]
    if not mine:
        raise RemoteError(f"{env_file}: LINKLAB_L2_ADDR is missing")
    out = cmd(["python3", "-c", _CONNECT, mine, str(count)], host=host, timeout=120)
    return {"local_node": values.get("LINKLAB_NODE"), "peer": values.get("LINKLAB_PEER"),
            "local_kernel": local_cmd(["uname", "-r"]).stdout.strip(),
            "peer_kernel": cmd(["uname", "-r"], host=host).stdout.strip(),
            "target": mine, **json.loads(out.stdout)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="linklab.remote", description=__doc__.splitlines()[0])
    p.add_argument("--env", type=Path, default=Path("/etc/linklab/node.env"),
                   help="the node's environment file (LINKLAB_REMOTE_TYPE, _ARGS)")
    p.add_argument("--ns", help="namespace on the remote to run in")
    p.add_argument("--timeout", type=float, default=60)
    p.add_argument("--ping-back", action="store_true",
                   help="the peer connects back to this node's LINKLAB_L2_ADDR; print both "
                        "kernels and the connect times as JSON")
    p.add_argument("argv", nargs=argparse.REMAINDER)
    a = p.parse_args(argv)
    command = a.argv[1:] if a.argv[:1] == ["--"] else a.argv
    if a.ping_back:
        try:
            print(json.dumps(ping_back(a.env), indent=2))
        except (RemoteError, CmdError) as err:
            print(f"linklab.remote: {err}", file=sys.stderr)
            return 2 if isinstance(err, RemoteError) else 1
        return 0
    if not command:
        p.error("give the command after --")
    try:
        res = cmd(command, a.ns, host=remote_from_env(a.env), timeout=a.timeout, check=False)
    except (RemoteError, CmdError) as err:
        print(f"linklab.remote: {err}", file=sys.stderr)
        return 2 if isinstance(err, RemoteError) else 255
    sys.stdout.write(res.stdout)
    sys.stderr.write(res.stderr)
    return res.returncode


if __name__ == "__main__":
    sys.exit(main())
