"""The scenario format as data, and the validator that checks a file against it.

:data:`FORMAT` lists every table of a scenario file and its fields; :class:`Validator` checks
tables and typed values against it and raises :class:`ScenarioError` naming the file and the
field. :mod:`linklab.model` builds the dataclasses with it, the kinds validate their own fields
with it, ``linklab schema`` renders :data:`FORMAT` as JSON Schema, and the DHCP matrices
(:mod:`linklab.dhcp.matrix`) reuse the validator for their own tables.
"""

from __future__ import annotations

import ipaddress
import json
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from linklab.suite import SUITE_RANGES, SUITE_RANGES_TEXT, SUITE_V4, SUITE_V6, in_suite

IPAddr = ipaddress.IPv4Address | ipaddress.IPv6Address
IPIface = ipaddress.IPv4Interface | ipaddress.IPv6Interface

ALLOWED = SUITE_RANGES                                     # every address lies inside
NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,11}$")           # namespace names (marker added)
SCENARIO_NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,39}$")
IFNAME_MAX = 15  # IFNAMSIZ - 1 bytes
MTU_RANGE = (1280, 65535)                                 # IPv6 needs at least 1280
# the most containers a scenario may declare: beyond it a file is refused (bench/scale.py
# measured 250 containers' build, all pairs and teardown; namespaces and probe sockets grow
# with it, all pairs with its square)
MAX_CONTAINERS = 1024
# the most pairs a [pairs] table may ask for (containers x destinations x probes x families):
# each is a probe and a results row, ~1 kB of memory while checked (bench/scale.py: 189 000
# pairs of 250 containers in ~10 s, 213 MB)
MAX_PAIRS = 500_000


class ScenarioError(ValueError):
    """A scenario file is malformed; the message names the file and the field."""

    def __init__(self, path: Path | str, where: str, message: str) -> None:
        self.path = str(path)
        self.where = where
        super().__init__(f"{path}: {where}: {message}" if where else f"{path}: {message}")


@dataclass(frozen=True)
class Field:
    """One field of a table of the scenario format: its type (see :mod:`linklab.schema`)."""

    type: str
    required: bool = False
    doc: str = ""


NFTABLES_DOC = ("a ruleset (nft -f) loaded in the host's namespace once every link exists, e.g. "
                "tenant isolation on its bridge")
NODE = {"ifname": Field("ifname", True, "the interface of interest in this namespace"),
        "addrs": Field("ifaddrs", doc=f"ADDR/PREFIX inside {SUITE_V4} or {SUITE_V6}"),
        "routes": Field("tables:route")}
# The scenario format, table by table. The validator checks every table against these
# (required and known fields) and ``linklab schema`` renders them as JSON Schema, so the two
# cannot drift. "tables:X" is an array of tables X, "table:X" one table X.
FORMAT: dict[str, dict[str, Field]] = {
    "scenario": {
        "name": Field("scenario-name", True, "unique across every --scenarios path"),
        "kind": Field("kind", True, "the datapath (src/linklab/kinds/)"),
        "mode": Field("mode"), "flag": Field("flag"),
        "mtu": Field("mtu", doc="default 1500"),
        "description": Field("string"),
        "host": Field("table:host", doc="the host namespace (or [[hosts]] for several)"),
        "hosts": Field("tables:hosts", doc="several hosts joined by the upstream switch"),
        "upstream": Field("table:upstream", True, "the LAN switch and router"),
        "remote": Field("table:remote", True, "a host behind the router"),
        "container": Field("tables:container", True),
        "dhcp": Field("table:dhcp"),
        "cni": Field("table:cni",
                     doc="kind cni: the plugin's netconf as data (src/linklab/kinds/cni.py)"),
        "expect": Field("expect", True, "check = { result = ..., why = ... } for every cell"),
        "check": Field("tables:check", doc="your own checks: one flow each (linklab/flows.py)"),
        "pairs": Field("pairs", doc='"all", or a [pairs] table: probe every pair of containers'),
        "group": Field("groups", doc="containers by group (tenant), for pairs.containers = "
                                     "'same-group'"),
    },
    "host": {**NODE, "bridge": Field("table:bridge", doc="bridge kind: the host's bridge"),
             "nftables": Field("string", doc=NFTABLES_DOC)},
    "hosts": {"name": Field("name", True), **NODE,
              "bridge": Field("table:bridge", doc="bridge kind: the host's bridge"),
              "kind": Field("kind"), "mode": Field("mode"), "flag": Field("flag"),
              "nftables": Field("string", doc=NFTABLES_DOC)},
    "bridge": {"ifname": NODE["ifname"], "addrs": NODE["addrs"],
               "ageing_time": Field("integer", doc="seconds (0 = flood every frame)")},
    "upstream": {**NODE, "hairpin": Field("boolean", doc="reflect frames back to their port")},
    "remote": {**NODE, "gateway": Field("ifaddrs", True, "upstream's side of the remote link")},
    "container": {"name": Field("name", True), **NODE, "mac": Field("mac"),
                  "peer": Field("table:peer", doc="veth/bridge kinds: the host-side end"),
                  "host": Field("string", doc="several hosts: the host it hangs on")},
    "peer": {"ifname": NODE["ifname"], "addrs": NODE["addrs"]},
    "route": {"to": Field("route-to", True, "'default' or a prefix"), "via": Field("ip"),
              "dev": Field("ifname")},
    "cni": {"netconf": Field("any-table", True, "the network configuration given to the plugin"),
            "native": Field("string", doc="the native scenario this one matches"),
            "differs": Field("strings", doc="checks where the plugin deliberately differs")},
    "dhcp": {"server": Field("string", True, "'upstream' or a host's name"),
             "pool": Field("pool", True, "[first, last] IPv4 addresses")},
    "check": {"from": Field("string", True, "the node the probe is sent from"),
              "to": Field("string", True, "NODE, or NODE:PORT for tcp and udp"),
              "proto": Field("proto", doc="icmp (default) | tcp | udp"),
              "family": Field("family", doc="v4 | v6 (default: every family both nodes have)"),
              "expect": Field("check-result", True, "pass | blocked"),
              "why": Field("string", True, "a one-line reason")},
    "pairs": {"probes": Field("probes", doc="icmp | tcp:PORT | udp:PORT (default ['icmp'])"),
              "families": Field("families", doc="default: both"),
              "containers": Field("pair-rule", doc="container -> container: pass | blocked | "
                                                   "same-group (default: [expect] child-to-child)"),
              "host": Field("check-result", doc="container -> its host (default: [expect] "
                                                "child-to-host)"),
              "gateway": Field("check-result", doc="container -> upstream (default: [expect] "
                                                   "child-to-gateway)"),
              "remote": Field("check-result", doc="container -> remote (default: [expect] "
                                                  "child-to-remote)"),
              "why": Field("string", doc="the reason of the rules given here")},
    "expectation": {"why": Field("string", True, "a one-line reason (a kernel doc sentence)"),
                    "result": Field("result", doc="for every family"),
                    "v4": Field("result"), "v6": Field("result"), "l2": Field("result"),
                    "any": Field("result")},
}


def fields(table: str) -> tuple[set[str], set[str]]:
    """(required, optional) field names of a table of :data:`FORMAT`."""
    spec = FORMAT[table]
    return ({k for k, f in spec.items() if f.required},
            {k for k, f in spec.items() if not f.required})


def load_toml(path: Path | str) -> dict[str, Any]:
    """Read and parse a TOML file; :class:`ScenarioError` names the file if it cannot."""
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ScenarioError(path, "", f"cannot read: {exc}") from None
    return parse_toml(text, path)


def parse_toml(text: str, path: Path | str = "<inline>") -> dict[str, Any]:
    """Parse TOML text; :class:`ScenarioError` names ``path`` if it is not valid TOML."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(path, "", f"not valid TOML: {exc}") from None
    except RecursionError:   # tomllib recurses per nested array or inline table
        raise ScenarioError(path, "", "not valid TOML: arrays or tables nested deeper than "
                                      "Python's TOML parser can follow") from None


BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def dotted(where: str, key: object) -> str:
    """The field ``key`` of the table at ``where``, as TOML writes it: a key that is not bare
    (empty, a dot, a space, unicode) in quotes, so that the error still names a field."""
    name = key if isinstance(key, str) and BARE_KEY.match(key) \
        else json.dumps(str(key), ensure_ascii=False)
    return f"{where}.{name}" if where else name


class Validator:
    """Checks one file's tables against :data:`FORMAT` and typed values; every failure is a
    :class:`ScenarioError` naming the file and the field (``where``)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, where: str, message: str) -> ScenarioError:
        """The error to raise for ``where`` (a dotted field name, "" for the whole file)."""
        return ScenarioError(self.path, where, message)

    def table(self, data: Mapping[str, Any], where: str, required: set[str],
              optional: set[str]) -> None:
        """``data`` is a table with every ``required`` field and no field outside both sets."""
        if not isinstance(data, Mapping):
            raise self.fail(where, f"must be a table, got {type(data).__name__}")
        missing = sorted(required - set(data))
        if missing:
            raise self.fail(dotted(where, missing[0]), "missing required field")
        unknown = sorted(set(data) - required - optional, key=str)
        if unknown:
            raise self.fail(dotted(where, unknown[0]),
                            f"unknown field (known: {', '.join(sorted(required | optional))})")

    def typed(self, data: Mapping[str, Any], key: str, where: str, typ: type | tuple,
              default: Any = None) -> Any:
        """``data[key]`` checked to be a ``typ`` (``default`` when absent); ``where`` is the
        prefix of the field's name, e.g. ``"dhcp."``."""
        if key not in data:
            return default
        value = data[key]
        if isinstance(value, bool) and typ in (int, str):
            raise self.fail(f"{where}{key}", f"must be {typ.__name__}, got bool")
        if not isinstance(value, typ):
            want = typ.__name__ if isinstance(typ, type) else " or ".join(t.__name__ for t in typ)
            raise self.fail(f"{where}{key}", f"must be {want}, got {type(value).__name__}"
                            f" ({value!r})")
        return value

    def name(self, value: Any, where: str) -> str:
        """A node name (a namespace name once the run's marker is added)."""
        if not isinstance(value, str) or not NAME_RE.match(value):
            raise self.fail(where, f"{value!r} is not a valid name (lower-case letters, digits, "
                                   "'-', starting with a letter, at most 12 characters)")
        return value

    def ifname(self, value: Any, where: str) -> str:
        """An interface name Linux accepts."""
        if not isinstance(value, str) or not value:
            raise self.fail(where, f"interface name must be a non-empty string, got {value!r}")
        if len(value.encode()) > IFNAME_MAX:
            raise self.fail(where, f"interface name {value!r} is {len(value.encode())} bytes; "
                                   f"Linux allows at most {IFNAME_MAX}")
        if "/" in value or any(c.isspace() for c in value) or value in (".", ".."):
            raise self.fail(where, f"interface name {value!r} has a character Linux refuses")
        return value

    def allowed(self, addr: IPAddr | ipaddress.IPv4Network | ipaddress.IPv6Network,
                where: str, text: str) -> None:
        """The address or prefix lies inside the suite's range of its family."""
        if not in_suite(addr):
            raise self.fail(where, f"{text} is outside the suite's ranges {SUITE_RANGES_TEXT}")

    def iface_addr(self, value: Any, where: str) -> IPIface:
        """``ADDR/PREFIX`` inside the suite's ranges."""
        if not isinstance(value, str) or "/" not in value:
            raise self.fail(where, f"address must be a string 'ADDR/PREFIX', got {value!r}")
        try:
            iface = ipaddress.ip_interface(value)
        except ValueError as exc:
            raise self.fail(where, str(exc)) from None
        self.allowed(iface.ip, where, value)
        return iface

    def addrs(self, data: Mapping[str, Any], where: str) -> tuple[IPIface, ...]:
        """The ``addrs`` list of a node's table."""
        raw = self.typed(data, "addrs", where, list, [])
        return tuple(self.iface_addr(a, f"{where}addrs[{i}]") for i, a in enumerate(raw))
