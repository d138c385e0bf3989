"""The DHCP client-identifier matrix as data (scenarios/dhcp/matrix.toml).

A *setup* says which scenarios it runs on and which identifier each container's client sends;
an *expectation* per (setup, server option), optionally refined per client, says whether the
two clients end up on the same lease or on distinct ones (or on none: DHCP cannot complete),
which identifiers the server's lease records hold, and why. Cells are
setup x scenario x server option x client. Every error names the file and the field.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from linklab.dhcp.clients import CLIENTS, ClientError, check_client_id
from linklab.dhcp.servers import OPTIONS
from linklab.format import Validator, load_toml
from linklab.model import SHIPPED, Scenario

LEASE_OUTCOMES = ("same", "distinct", "none")
ANY_SERVER = "any-server"
MATRIX_FILE = SHIPPED / "dhcp" / "matrix.toml"


@dataclass(frozen=True)
class Expected:
    lease: str                     # same | distinct | none
    stored: tuple[str, ...]        # sorted identifier classes of the server's leases
    why: str


@dataclass(frozen=True)
class Setup:
    name: str                      # A, B, ...
    description: str
    client_ids: Mapping[str, str]  # container -> none | mac | colon hex
    scenarios: tuple[str, ...]


@dataclass(frozen=True)
class DhcpCell:
    setup: Setup
    scenario: Scenario
    server: str                    # ServerOption label
    client: str                    # udhcpc | dhclient
    expected: Expected
    broadcast_flag: bool           # clients ask for broadcast replies (-B)
    duplicate_refused: bool        # the datapath refuses one address on two containers

    @property
    def expected_configured(self) -> tuple[str, ...]:
        """Containers expected to end up with their granted address configured."""
        names = tuple(self.setup.client_ids)
        if self.expected.lease == "none":
            return ()
        if self.expected.lease == "same" and self.duplicate_refused:
            return names[:1]
        return names

    @property
    def id(self) -> str:
        short = self.scenario.name.removeprefix("dhcp-")
        return f"dhcp-{self.setup.name}-{short}-{self.server}-{self.client}"


def _str(v: Validator, data: Mapping[str, Any], key: str, where: str) -> str:
    """A required string field (its presence already checked by :meth:`Validator.table`)."""
    return v.typed(data, key, f"{where}.", str)


def parse_expected(v: Validator, raw: Any, where: str, setup: Setup,
                   base: Expected | None = None) -> Expected:
    """One ``{ lease, stored, why }`` outcome; ``base`` gives the fields a refinement omits."""
    v.table(raw, where, set() if base else {"lease", "stored", "why"},
            {"lease", "stored", "why"})
    lease = raw.get("lease", base.lease if base else None)
    if lease not in LEASE_OUTCOMES:
        raise v.fail(f"{where}.lease", f"{lease!r}: must be one of "
                                            f"{' | '.join(LEASE_OUTCOMES)}")
    stored = raw.get("stored", list(base.stored) if base else None)
    classes = {"none", "mac", *setup.client_ids}
    if not isinstance(stored, list) or not all(isinstance(s, str) and s in classes
                                               for s in stored):
        raise v.fail(f"{where}.stored", f"{stored!r}: must be a list of identifier classes "
                                             f"({', '.join(sorted(classes))})")
    why = raw.get("why", base.why if base else None)
    if not isinstance(why, str) or not why:
        raise v.fail(f"{where}.why", "must be a non-empty string")
    return Expected(lease, tuple(sorted(stored)), why)


def load_matrix(path: Path | str, scenarios: Mapping[str, Scenario]) -> list[DhcpCell]:
    """Parse and validate the matrix; ``scenarios`` maps names to loaded scenarios."""
    v = Validator(Path(path))
    data = load_toml(path)
    v.table(data, "", {"setup", "expect"}, {"scenario"})

    # per-scenario client settings
    bflag: dict[str, bool] = {}
    dup_refused: dict[str, bool] = {}
    no_lease: dict[str, list[tuple[str | None, str | None, str]]] = {}
    for name, raw in (data.get("scenario") or {}).items():
        w = f"scenario.{name}"
        if name not in scenarios:
            raise v.fail(w, f"no scenario named {name!r}")
        v.table(raw, w, {"why"}, {"broadcast_flag", "duplicate_address", "no_lease"})
        _str(v, raw, "why", w)
        if not isinstance(raw.get("broadcast_flag", False), bool):
            raise v.fail(f"{w}.broadcast_flag", "must be true or false")
        bflag[name] = raw.get("broadcast_flag", False)
        dup = raw.get("duplicate_address", "allowed")
        if dup not in ("allowed", "refused"):
            raise v.fail(f"{w}.duplicate_address", f"{dup!r}: must be allowed | refused")
        dup_refused[name] = dup == "refused"
        rules = raw.get("no_lease", [])
        if not isinstance(rules, list):
            raise v.fail(f"{w}.no_lease", "must be a list of { client | server, why }")
        softwares = sorted({o.software for o in OPTIONS.values()})
        for i, rule in enumerate(rules):
            wr = f"{w}.no_lease[{i}]"
            v.table(rule, wr, {"why"}, {"client", "server"})
            if "client" not in rule and "server" not in rule:
                raise v.fail(wr, "give 'client' and/or 'server' (whom the rule is about)")
            if rule.get("client", CLIENTS[0]) not in CLIENTS:
                raise v.fail(f"{wr}.client", f"{rule['client']!r}: must be one of "
                                                  f"{' | '.join(CLIENTS)}")
            if rule.get("server", softwares[0]) not in softwares:
                raise v.fail(f"{wr}.server", f"{rule['server']!r}: must be one of "
                                                  f"{' | '.join(softwares)}")
            no_lease.setdefault(name, []).append(
                (rule.get("client"), rule.get("server"), _str(v, rule, "why", wr)))

    setups: dict[str, Setup] = {}
    for name, raw in data["setup"].items():
        w = f"setup.{name}"
        v.table(raw, w, {"description", "client_ids", "scenarios"}, set())
        ids = raw["client_ids"]
        if not isinstance(ids, Mapping) or not ids:
            raise v.fail(f"{w}.client_ids", "must be a non-empty table container = id")
        for cname, cid in ids.items():
            try:
                check_client_id(cid if isinstance(cid, str) else repr(cid))
            except ClientError as exc:
                raise v.fail(f"{w}.client_ids.{cname}", str(exc)) from None
        scs = raw["scenarios"]
        if not isinstance(scs, list) or not scs:
            raise v.fail(f"{w}.scenarios", "must be a non-empty list of scenario names")
        for i, sname in enumerate(scs):
            sc = scenarios.get(sname)
            if sc is None:
                raise v.fail(f"{w}.scenarios[{i}]", f"no scenario named {sname!r}")
            if sc.dhcp is None:
                raise v.fail(f"{w}.scenarios[{i}]", f"scenario {sname!r} has no [dhcp] "
                                                         "table (who serves which pool)")
            names = {c.name for c in sc.containers}
            for cname in ids:
                if cname not in names:
                    raise v.fail(f"{w}.client_ids.{cname}",
                                f"scenario {sname!r} has no container {cname!r} "
                                f"(has: {', '.join(sorted(names))})")
        setups[name] = Setup(name, _str(v, raw, "description", w), dict(ids), tuple(scs))

    cells = []
    expect = data["expect"]
    if not isinstance(expect, Mapping):
        raise v.fail("expect", "must be a table expect.SETUP.SERVER-OPTION")
    for name in expect:
        if name not in setups:
            raise v.fail(f"expect.{name}", f"no setup named {name!r}")
    for name, setup in setups.items():
        w = f"expect.{name}"
        if name not in expect:
            raise v.fail(w, "missing: every setup needs expected outcomes")
        per_server = expect[name]
        v.table(per_server, w, set(), {ANY_SERVER, *OPTIONS})
        for server in OPTIONS:
            raw = per_server.get(server, per_server.get(ANY_SERVER))
            ws = f"{w}.{server if server in per_server else ANY_SERVER}"
            if raw is None:
                raise v.fail(f"{w}.{server}", "missing: give it or 'any-server'")
            base_raw = {k: v for k, v in raw.items() if k not in CLIENTS} \
                if isinstance(raw, Mapping) else raw
            base = parse_expected(v, base_raw, ws, setup)
            for client in CLIENTS:
                exp = base
                if isinstance(raw, Mapping) and client in raw:
                    exp = parse_expected(v, raw[client], f"{ws}.{client}", setup, base)
                for sname in setup.scenarios:
                    cexp = exp
                    software = OPTIONS[server].software
                    for r_client, r_server, r_why in no_lease.get(sname, []):
                        if r_client in (None, client) and r_server in (None, software):
                            cexp = Expected("none", (), r_why)
                            break
                    # dhclient (ISC 4.4) has no way to ask for broadcast replies
                    cells.append(DhcpCell(setup, scenarios[sname], server, client, cexp,
                                          bflag.get(sname, False) and client == "udhcpc",
                                          dup_refused.get(sname, False)))
    return cells
