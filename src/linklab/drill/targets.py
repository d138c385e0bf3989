"""The runs under test (pytest selections) and the kill points that fire inside them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from linklab.dhcp.servers import holds_udp_port
from linklab.drill import DHCP_COMMS, PY
from linklab.drill.observe import Owned, Proc


@dataclass(frozen=True)
class Target:
    name: str
    argv: tuple[str, ...]


def pytest_argv(*args: str) -> tuple[str, ...]:
    return (PY, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args)


TARGETS = {
    "connectivity": Target("connectivity", pytest_argv("-m", "connectivity")),
    "xdist": Target("xdist -n 2", pytest_argv("-n", "2", "-m", "connectivity")),
    "bench": Target("bench", pytest_argv("-m", "bench", "bench/test_bench.py",
                                         "--bench-datapaths=veth", "--bench-reps=1",
                                         "--bench-warmup=0", "--bench-duration=3",
                                         "--bench-latency-duration=3")),
    "dhcp": Target("dhcp", pytest_argv("tests/live/test_dhcp.py", "-k",
                                       "dhcp-C-macvlan or emulated-shared-mac")),
    "dhcp-dnsmasq": Target("dhcp (dnsmasq)", pytest_argv(
        "tests/live/test_dhcp.py", "-k", "dnsmasq and (dhcp-C-macvlan or emulated-shared-mac)")),
}


def dhcp_bound() -> Callable[[Owned, dict[int, Proc]], bool]:
    def cond(o: Owned, procs: dict[int, Proc]) -> bool:
        return any(p in procs and procs[p].comm in DHCP_COMMS and holds_udp_port(p, 67)
                   for p in o.pids)
    return cond


def comm_alive(*comms: str, arg: str | None = None) -> Callable[[Owned, dict[int, Proc]], bool]:
    def cond(o: Owned, procs: dict[int, Proc]) -> bool:
        return any(p in procs and procs[p].comm in comms and
                   (arg is None or arg in procs[p].argv) for p in o.pids)
    return cond


def namespaces_alive(n: int, runs: int = 1) -> Callable[[Owned, dict[int, Proc]], bool]:
    def cond(o: Owned, _procs: dict[int, Proc]) -> bool:
        markers = {name[2:].split("-", 1)[0] for name in o.namespaces}
        return len(o.namespaces) >= n and len(markers) >= runs
    return cond


def after_namespaces(k: int) -> Callable[[Owned, dict[int, Proc]], bool]:
    """A random moment that always comes: once the run has created its ``k``-th namespace
    (a random *time* could fall after the run's end on a fast machine), while it owns some.
    Scenarios reuse namespace names, so creations are counted as appearances."""
    present: set[str] = set()
    created = 0

    def cond(o: Owned, _p: dict[int, Proc]) -> bool:
        nonlocal present, created
        now = set(o.namespaces)
        created += len(now - present)
        present = now
        return created >= k and o.count() > 0
    return cond
