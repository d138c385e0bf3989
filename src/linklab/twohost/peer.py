"""The peer agent: node-b's half of a two-host scenario, driven by node-a over the executor.

node-a starts ``python -m linklab.twohost.peer`` on node-b through
:mod:`linklab.twohost.remote` (ssh on the VMs, a namespace standing for node-b in the tests'
netns mode) once per topology. The agent loads the *same scenario file* (its SHA-256 must
match node-a's), builds the placed host's half (:func:`linklab.build.start` with a peer
:class:`~linklab.build.Split`: the host's namespace with the node's NIC as its parent, its
containers) under an ownership record of its own on node-b, answers one JSON request per
line on stdin, and tears everything down LIFO when stdin closes (node-a finished, was killed,
or the ssh link dropped) or on SIGTERM/SIGHUP.
What a killed agent leaves, ``linklab clean`` on node-b removes from that record.

Requests (one JSON object a line; each answered by one line, ``{"error": ...}`` on failure):
``facts`` (MACs of this half), ``observe`` (cells sourced here, with node-a's facts and
listeners), ``listen``/``heard`` (a receiver here for a cell probed from node-a), ``cmd``
(an argv in one of this half's namespaces), ``dhcp_clients`` (a DHCP cell's clients in this
half's containers, while node-a serves), ``cni_plug``/``cni_unplug`` (a CNI DHCP cell's
containers plugged by the CNI dhcp plugin here, kept until unplugged).

    python -m linklab.twohost.peer --scenario FILE --digest SHA256 --host host2 --uplink eth2
                           [--uplink-netns PATH]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from linklab.build import BuildError, Split, build
from linklab.checks import Cell
from linklab.cmd import CmdError, Result, cmd, proc_starttime
from linklab.dhcp.cell import run_clients
from linklab.dhcp.clients import ClientResult
from linklab.dhcp.cni import ClientSide, plugged_side
from linklab.model import Scenario, ScenarioError, load_scenario
from linklab.ownership import Run, clean
from linklab.probes import SPECIAL, Listener, Observation, facts_of, observe_batch
from linklab.suite import TIME_SCALE_ENV, time_scale
from linklab.twohost.placement import Placement, PlacementError, dhcp_peer_hosts, place
from linklab.twohost.remote import (
    NetnsRemote,
    Remote,
    RemoteError,
    SshRemote,
    load_env,
    remote_from_env,
)
from linklab.twohost.uplink import Uplink

READY_TIMEOUT_S = 120.0       # the agent's start and build (a TCG guest imports slowly)


class PeerError(RuntimeError):
    """The peer agent failed or went away; names the peer and carries its stderr tail
    (``marker``: the agent's ownership record on the peer, when it had one)."""

    def __init__(self, message: str, marker: str | None = None) -> None:
        super().__init__(message)
        self.marker = marker


class AgentGone(PeerError):
    """The agent's process is gone (killed, crashed, its ssh link dropped) in the middle of
    the protocol: its half on the peer is in no known state (a lent NIC may be half-moved),
    so a session splitting over this peer stops there (linklab.pytest.plugin)."""


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---- node-a: the client -----------------------------------------------------------------------

@dataclass(frozen=True)
class PeerConfig:
    """How node-a reaches node-b's agent: from a node.env file (``--remote-env``)."""

    remote: Remote
    uplink: str                   # node-a's NIC joining the halves (LINKLAB_PARENT_IF)
    uplink_netns: str | None      # where it lives (LINKLAB_PARENT_NETNS; None: this namespace)
    peer_uplink: str              # node-b's (LINKLAB_PEER_PARENT_IF, default the same name)
    peer_uplink_netns: str | None  # LINKLAB_PEER_PARENT_NETNS
    python: str                   # the peer's interpreter (LINKLAB_PEER_PYTHON)
    peer_hosts: tuple[str, ...]   # LINKLAB_PEER_HOSTS (default host2)
    env_file: Path

    @classmethod
    def from_env(cls, path: Path) -> PeerConfig:
        values = load_env(path)
        remote = remote_from_env(path)
        uplink = values.get("LINKLAB_PARENT_IF")
        if not uplink:
            raise RemoteError(f"{path}: LINKLAB_PARENT_IF is missing: the NIC that joins the "
                              "two halves of a split scenario")
        hosts = tuple(h for h in values.get("LINKLAB_PEER_HOSTS", "host2").split(",") if h)
        return cls(remote, uplink, values.get("LINKLAB_PARENT_NETNS") or None,
                   values.get("LINKLAB_PEER_PARENT_IF") or uplink,
                   values.get("LINKLAB_PEER_PARENT_NETNS") or None,
                   values.get("LINKLAB_PEER_PYTHON") or sys.executable, hosts, path)

    def where(self) -> str:
        return getattr(self.remote, "target", None) or f"netns {self.remote.name}"


def agent_argv(remote: Remote, argv: list[str]) -> list[str]:
    """argv run on the peer with stdin/stdout kept as the protocol's pipes. A netns peer is
    entered with ``nsenter --net`` only: ``ip netns exec`` would give the agent a mount
    namespace of its own, where the namespaces it creates under /run/netns stay invisible."""
    if isinstance(remote, NetnsRemote):
        return ["nsenter", f"--net=/run/netns/{remote.name}", "--", *argv]
    return remote.wrap(argv)


class PeerClient:
    """node-a's handle on one agent: started, asked, closed (stdin closed, exit awaited)."""

    def __init__(self, cfg: PeerConfig, sc: Scenario, placement: Placement, run: Any) -> None:
        self.cfg, self.sc = cfg, sc
        self.where = f"peer {cfg.where()} ({sc.name}: {', '.join(sorted(placement.peer_hosts))})"
        argv = ["env", f"{TIME_SCALE_ENV}={time_scale():g}", cfg.python,
                "-m", "linklab.twohost.peer",
                "--scenario", str(Path(sc.path).resolve()), "--digest", digest(Path(sc.path)),
                "--host", placement.peer_host, "--uplink", cfg.peer_uplink]
        if cfg.peer_uplink_netns:
            argv += ["--uplink-netns", cfg.peer_uplink_netns]
        self.argv = agent_argv(cfg.remote, argv)
        self.err = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.err, text=True, bufsize=1)
        self.run = run
        run.own_pid(self.proc.pid, _starttime(self.proc.pid), self.argv)
        self._heard: set[str] = set()
        self.gone = False                  # its death was already raised (AgentGone)
        try:
            hello = self._read(READY_TIMEOUT_S * time_scale())
            self.marker: str | None = hello.get("marker")
            if "error" in hello:
                raise PeerError(f"{self.where}: {hello['error']}", self.marker)
            self.kernel: str = hello["kernel"]
            self.facts: dict[str, dict[str, str]] = hello["facts"]
            self.namespaces: list[str] = hello["namespaces"]
        except BaseException:
            self.close(quiet=True)
            raise

    def _read(self, timeout: float) -> dict:
        out = self.proc.stdout
        ready, _, _ = select.select([out], [], [], timeout)
        line = out.readline() if ready else None
        if line is None:
            raise PeerError(f"{self.where}: the agent did not answer in time"
                            f" (argv: {' '.join(self.argv)}){self._tail()}")
        if not line:
            raise self._gone(f"the agent {self._died()} (argv: {' '.join(self.argv)})")
        return json.loads(line)

    def _gone(self, what: str) -> AgentGone:
        """The agent's death, said once: :meth:`close` does not say it again."""
        self.gone = True
        return AgentGone(f"{self.where}: {what}{self._tail()}")

    def _died(self) -> str:
        """The agent's output ended: how, once its exit status is known (bounded wait)."""
        try:
            rc = self.proc.wait(10)
        except subprocess.TimeoutExpired:
            return "died (its output closed, the process still runs)"
        return self._how(rc)

    def _how(self, rc: int) -> str:
        if rc < 0:
            return f"died (killed by signal {-rc})"
        return f"died (exit {rc}" + (": ssh's, the agent was killed or the link dropped"
                                     if rc == 255 and isinstance(self.cfg.remote, SshRemote)
                                     else "") + ")"

    def _tail(self) -> str:
        self.err.seek(0)
        tail = "\n".join(self.err.read().strip().splitlines()[-15:])
        return f"\n{tail}" if tail else ""

    def request(self, op: str, timeout: float = 120.0, **args: Any) -> dict:
        try:
            self.proc.stdin.write(json.dumps({"op": op, **args}) + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            raise self._gone("the agent is gone") from None
        reply = self._read(timeout * time_scale())
        if "error" in reply:
            raise PeerError(f"{self.where}: {op}: {reply['error']}")
        return reply

    def observe(self, cells: list[Cell], facts: dict, listeners: dict) -> dict:
        reply = self.request("observe", cells=[asdict(c) for c in cells], facts=facts,
                             listeners=listeners)
        return {cid: Observation(*seen) for cid, seen in reply["seen"].items()}

    def listen(self, cell_id: str, dst: str, kind: str, token: bytes) -> int:
        return self.request("listen", id=cell_id, ns=dst, kind=kind, token=token.hex())["port"]

    def heard(self, cell_id: str) -> bool:
        if cell_id not in self._heard:
            self._heard |= set(self.request("heard")["heard"])
        return cell_id in self._heard

    def cmd(self, argv: list[str], name: str, *, timeout: float = 60, check: bool = True,
            input: str | None = None) -> Result:
        r = self.request("cmd", timeout=timeout + 30, argv=[str(a) for a in argv], ns=name,
                         cmd_timeout=timeout, input=input)
        res = Result(r["argv"], r["rc"], r["stdout"], r["stderr"])
        if check and res.returncode != 0:
            raise CmdError([*self.argv[:1], "...", *res.argv], res.returncode, res.stdout,
                           res.stderr, why=f"exited {res.returncode} on {self.where}")
        return res

    def dhcp_clients(self, client: str, client_ids: dict[str, str], *, broadcast: bool,
                     expect_bound: bool) -> tuple[list[ClientResult], dict[str, str]]:
        """A DHCP cell's clients run on the peer (its containers live there), while this node
        serves; their results and their links' MACs."""
        reply = self.request("dhcp_clients", timeout=300, client=client, client_ids=client_ids,
                             broadcast=broadcast, expect_bound=expect_bound)
        return [ClientResult.from_json(r) for r in reply["results"]], reply["macs"]

    def cni_plug(self, daemon: str, expect_none: bool) -> ClientSide:
        """A CNI DHCP cell's containers plugged on the peer (daemon up, ADDs done) while this
        node serves; they stay plugged until :meth:`cni_unplug`."""
        reply = self.request("cni_plug", timeout=600, daemon=daemon, expect_none=expect_none)
        return ClientSide.from_json(reply["side"])

    def cni_unplug(self) -> None:
        """The DELs on the peer (released through its daemon), then its daemon stops."""
        self.request("cni_unplug", timeout=300)

    def close(self, quiet: bool = False) -> None:
        """Close the agent's stdin (it tears its half down) and wait for it; a hung one is
        killed by PID. A failed exit raises PeerError unless ``quiet`` (already failing)."""
        if self.proc.stdin and not self.proc.stdin.closed:
            try:
                self.proc.stdin.close()
            except BrokenPipeError:
                pass
        try:
            rc = self.proc.wait(60 * time_scale())
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        self.run.disown_pid(self.proc.pid)
        self.proc.stdout.close()
        tail = self._tail()
        self.err.close()
        if rc != 0 and not quiet and not self.gone:
            # killed between two requests, it is seen here: said as such (ssh's 255, a signal)
            if rc < 0 or (rc == 255 and isinstance(self.cfg.remote, SshRemote)):
                raise AgentGone(f"{self.where}: the agent {self._how(rc)} before its teardown"
                                + tail)
            raise PeerError(f"{self.where}: the agent's teardown exited {rc}{tail}")


def _starttime(pid: int) -> int | None:
    return proc_starttime(pid)


@contextmanager
def split_build(sc: Scenario, run: Any, cfg: PeerConfig) -> Iterator[Any]:
    """node-a's side of a split scenario: the agent builds the placed host's half on the peer,
    then this node builds the rest; released in the reverse order. A DHCP scenario puts its
    clients' host on the peer and keeps the server here (:func:`dhcp_peer_hosts`)."""
    placement = place(sc, dhcp_peer_hosts(sc) if sc.dhcp else cfg.peer_hosts)
    with ExitStack() as stack:
        client = PeerClient(cfg, sc, placement, run)
        stack.callback(client.close)
        topo = stack.enter_context(build(sc, run, Split(placement, False, Uplink(
            cfg.uplink, cfg.uplink_netns))))
        topo.peer, topo.facts = client, client.facts
        yield topo


# ---- node-b: the agent ------------------------------------------------------------------------

class Agent:
    """The peer's half and the answers to node-a's requests."""

    def __init__(self, topo: Any, run: Run) -> None:
        self.topo, self.run = topo, run
        self.listeners: dict[str, Any] = {}
        self.plugged = ExitStack()         # a CNI cell's containers, between plug and unplug

    def handle(self, req: dict) -> dict:
        op = req.get("op")
        fn = getattr(self, f"op_{op}", None)
        if fn is None:
            return {"error": f"unknown request {op!r}"}
        try:
            return fn(req)
        except Exception as exc:
            return {"error": f"{type(exc).__name__}: {exc}"}

    def op_facts(self, req: dict) -> dict:
        return {"facts": facts_of(self.topo)}

    def op_observe(self, req: dict) -> dict:
        cells = [Cell(**c) for c in req["cells"]]
        self.topo.facts = req.get("facts", {})
        self.topo.listening = {k: tuple(v) for k, v in req.get("listeners", {}).items()}
        seen = {c.id: SPECIAL[c.check](self.topo) for c in cells if c.check in SPECIAL}
        batch = [c for c in cells if c.check not in SPECIAL]
        if batch:
            seen |= observe_batch(self.topo, batch)
        return {"seen": {cid: [o.result, o.detail] for cid, o in seen.items()}}

    def op_listen(self, req: dict) -> dict:
        rx = Listener(self.topo, req["ns"], req["kind"], bytes.fromhex(req["token"]))
        self.listeners[req["id"]] = rx
        return {"port": rx.port}

    def op_heard(self, req: dict) -> dict:
        return {"heard": [cid for cid, rx in self.listeners.items() if rx.drain()]}

    def op_cmd(self, req: dict) -> dict:
        res = cmd(req["argv"], self.topo.ns(req["ns"]), timeout=req.get("cmd_timeout", 60),
                  check=False, input=req.get("input"))
        return {"argv": res.argv, "rc": res.returncode, "stdout": res.stdout,
                "stderr": res.stderr}

    def op_dhcp_clients(self, req: dict) -> dict:
        results, macs = run_clients(self.topo, self.run, req["client"], req["client_ids"],
                                    broadcast=req["broadcast"], expect_bound=req["expect_bound"])
        return {"results": [r.to_json() for r in results], "macs": macs}

    def op_cni_plug(self, req: dict) -> dict:
        self.plugged.close()               # a cell node-a never unplugged (it failed)
        side = self.plugged.enter_context(plugged_side(self.topo, self.run, req["daemon"],
                                                       req["expect_none"]))
        return {"side": side.to_json()}

    def op_cni_unplug(self, req: dict) -> dict:
        self.plugged.close()
        return {}

    def close(self) -> None:
        self.plugged.close()
        for rx in self.listeners.values():
            rx.close()


def _lines(fd: int) -> Iterator[str]:
    """Lines from ``fd`` until EOF (no buffering beyond one line's read)."""
    buf = b""
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            return
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            yield line.decode()


def _stop(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="linklab.peer", description=__doc__.splitlines()[0])
    p.add_argument("--scenario", type=Path, required=True)
    p.add_argument("--digest", required=True, help="SHA-256 of node-a's copy of the file")
    p.add_argument("--host", required=True, help="the host placed on this node")
    p.add_argument("--uplink", required=True, help="this node's NIC: the host's parent NIC")
    p.add_argument("--uplink-netns", help="the namespace holding it (default: the initial one)")
    a = p.parse_args(argv)
    # the protocol owns stdout; anything else printed goes to stderr
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, _stop)

    def say(obj: dict) -> None:
        proto.write(json.dumps(obj) + "\n")

    try:
        if not a.scenario.is_file():
            raise PeerError(f"{a.scenario}: no such scenario file on this node")
        if digest(a.scenario) != a.digest:
            raise PeerError(f"{a.scenario}: this node's copy differs from node-a's (SHA-256); "
                            "sync the checkout")
        sc = load_scenario(a.scenario)
        placement = place(sc, [a.host])
    except (PeerError, ScenarioError, PlacementError) as exc:
        say({"error": str(exc)})
        return 2
    clean(log=lambda _m: None)          # a dead agent's leftovers on this node go first
    run = Run()
    try:
        with ExitStack() as stack:
            try:
                topo = stack.enter_context(build(sc, run, Split(placement, True, Uplink(
                    a.uplink, a.uplink_netns))))
            except BuildError as exc:
                say({"error": f"build: {exc}", "marker": run.marker})
                return 1
            agent = Agent(topo, run)
            stack.callback(agent.close)
            say({"kernel": os.uname().release, "facts": agent.op_facts({})["facts"],
                 "marker": run.marker, "namespaces": [n.name for n in topo.namespaces.values()],
                 "pid": os.getpid(), "started": time.time()})
            for line in _lines(0):
                if line.strip():
                    say(agent.handle(json.loads(line)))
        return 0
    finally:
        run.close()


if __name__ == "__main__":
    sys.exit(main())
