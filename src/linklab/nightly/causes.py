"""Why a night broke, in one line a reader can act on: from a step's exit code and output tail
(:func:`name_cause`), from the two-host step's JUnit (:func:`two_host_cause`), and from the
night's guard (:class:`NightGuard`, ``--local``), which watches libvirtd/virtlogd and, during
``vagrant up``, each node's DHCP lease while a step runs.

Standard library only: ``ci/nightly`` imports it from the checkout before (or without) the
project's virtualenv, as it does :mod:`linklab.checks`.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import NamedTuple, Protocol

# how the split tests after the first dead peer agent are skipped (linklab.pytest.plugin)
NOT_RUN = "not run: "
# the peer client's words when its agent went away mid-scenario (linklab.twohost.peer)
AGENT_DIED = re.compile(r"the agent (?:died|exited|is gone)(?: \([^()\n]*\))?")
# ssh's and rsync's own words when the link to a node fails (their exit 255)
SSH_SAID = re.compile(r"^(ssh: .*|Timeout, server .* not responding.*|Connection (to|closed|"
                      r"reset|timed out).*|client_loop: .*|kex_exchange_identification: .*|"
                      r"rsync: connection unexpectedly closed.*|Broken pipe.*)$")
VAGRANT_ON = re.compile(r"An error occurred while executing the action on the '([^']+)'")


class StepLike(Protocol):
    """What naming a cause reads of a night's step (``ci/nightly``'s ``Step``)."""

    title: str
    argv: tuple[str, ...]
    verdict: bool


class Ran(NamedTuple):
    """A step's exit code, the tail of its output (to name a failure) and, when the night's
    guard stopped it, the guard's cause."""

    rc: int
    tail: str = ""
    cause: str = ""


# asked every few seconds while a step runs; a cause stops the step and the night
Guard = Callable[[StepLike], "str | None"]


def step_nodes(step: StepLike, nodes: tuple[str, ...]) -> list[str]:
    """The nodes a step reaches over ssh (ssh's host argument, rsync's ``node:path``)."""
    argv = step.argv
    if argv[:1] == ("ssh",) and "--" in argv:
        return [n for n in (argv[argv.index("--") - 1],) if n in nodes]
    if argv[:1] == ("rsync",):
        return [a.split(":", 1)[0] for a in argv[1:] if a.split(":", 1)[0] in nodes]
    return []


def name_cause(step: StepLike, ran: Ran, nodes: tuple[str, ...], seconds: float) -> str:
    """One line a reader can act on: which node, what broke, during which step, how long."""
    if ran.cause:
        return ran.cause
    lines = [line.strip() for line in ran.tail.splitlines() if line.strip()]
    last = lines[-1] if lines else ""
    targets = step_nodes(step, nodes)
    said = next((line for line in reversed(lines) if SSH_SAID.match(line)), "")
    if targets and (ran.rc == 255 or (step.argv[0] == "rsync" and said)):
        node = targets[0]
        how = "could not connect" if "connect to host" in said else "lost mid-step"
        return (f"ssh to {node} {how} (exit {ran.rc}" + (f": {said}" if said else "")
                + f") during '{step.title}', after {seconds:.0f} s")
    if step.argv[:2] == ("vagrant", "up"):
        m = VAGRANT_ON.search(ran.tail)       # its parallel error: the node, then the words
        what = next((lines[k + 1] for k, x in enumerate(lines[:-1]) if "try again:" in x), last)
        return ("vagrant up" + (f": {m[1]}" if m else "") + f": {what} (exit {ran.rc}, "
                f"after {seconds:.0f} s)")
    if step.verdict:
        return f"{step.title}: pytest could not run (exit {ran.rc})" + (f": {last}" if last
                                                                          else "")
    return f"{step.title}: exit {ran.rc}" + (f": {last}" if last else "")


def two_host_cause(out: dict, errors: list[tuple[str, str]], peer: str,
                   not_run: int = 0) -> str:
    """Why the two-host step broke, naming the first errored cell and what its error said
    (and, after a dead peer agent, how many split tests the step did not run)."""
    if "error" in out:
        return f"no two-host results came back ({out['error']})"
    if not errors:
        return "no two-host cell ran"
    died = next(((cell, m) for cell, text in errors if (m := AGENT_DIED.search(text))), None)
    if died:
        return (f"the peer agent on {peer} died mid-cell ({died[0]}; {len(errors)} "
                f"{'cell' if len(errors) == 1 else 'cells'} broke, {not_run} split tests not "
                f"run): {died[1].group(0).strip()}")
    cell, text = errors[0]
    first = next((line.strip() for line in text.splitlines() if line.strip()), "no message")
    return f"{len(errors)} two-host cells errored, the first {cell}: {first}"


class Names(Protocol):
    def network(self, role: str) -> str: ...


class Watched(Protocol):
    """What the guard asks of the night's libvirt (:class:`linklab.nightly.virt.Libvirt`)."""

    names: Names

    def daemon_died(self) -> str | None: ...

    def address(self, node: str) -> tuple[bool, str | None]: ...


class NightGuard:
    """--local: what the night watches while a body step runs. Its own libvirtd and virtlogd
    (a dead one: nothing can be destroyed through it, so the night stops), and during
    ``vagrant up`` each node's DHCP lease on the management network: a node running for
    ``boot_timeout_s`` without one stops the night (vagrant-libvirt itself would wait 300
    tries of its address, about ten minutes, whatever the boot timeout)."""

    ADDRESS_EVERY_S = 5.0

    def __init__(self, env: Watched, nodes: tuple[str, ...], boot_timeout_s: float,
                 final: set[str], clock: Callable[[], float] = time.monotonic) -> None:
        self.env, self.nodes, self.boot_timeout_s, self.final = env, nodes, boot_timeout_s, final
        self.clock = clock
        self.running_since: dict[str, float] = {}
        self.addresses: dict[str, dict] = {}      # node -> address, seconds after its start
        self.last = 0.0

    def __call__(self, step: StepLike) -> str | None:
        if step.title in self.final:          # destroy runs whatever happened
            return None
        if died := self.env.daemon_died():
            return f"{died}, during '{step.title}'"
        if step.argv[:2] != ("vagrant", "up") or \
                self.clock() - self.last < self.ADDRESS_EVERY_S:
            return None
        self.last = now = self.clock()
        late = []
        for node in self.nodes:
            if node in self.addresses:
                continue
            running, addr = self.env.address(node)
            if running:
                self.running_since.setdefault(node, now)
            if addr:
                s = round(now - self.running_since.get(node, now), 1)
                self.addresses[node] = {"address": addr, "seconds": s}
                print(f"nightly: {node} has an address, {addr}, {s:.0f} s after its start",
                      flush=True)
            elif running and now - self.running_since[node] > self.boot_timeout_s:
                late.append(node)
        if late:
            return (f"{' and '.join(late)} never got an address within "
                    f"{self.boot_timeout_s:.0f} s of {'its' if len(late) == 1 else 'their'} "
                    f"start (no DHCP lease on {self.env.names.network('mgmt')})")
        return None
