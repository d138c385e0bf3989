"""The night's two-machine DHCP table: each split cell beside the same cell on one machine.

The two-host step runs the DHCP cells of the two-host scenarios split (the server on node-a,
the clients on node-b, the libvirt L2 between them); each node's own suite runs the same cells
inside one machine. This pairs the ``dhcp`` rows of both (read with
:meth:`linklab.results.RunDir.rows`) by cell: setup, scenario, server option, client;
``ci/nightly --two-host-summary`` calls it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class DhcpPair:
    """One DHCP cell: what the matrix expects, what two machines and one machine gave."""

    cell: str                     # setup-scenario-server option-client
    expected: str                 # "lease [stored ids]", as the rows write it
    split: str                    # observed across two machines ('' not run)
    split_outcome: str            # passed | failed | skipped | '' (not run)
    server_kernel: str
    clients_kernel: str
    one_machine: dict[str, str]   # node -> observed on that node alone

    @property
    def same(self) -> bool | None:
        """Two machines gave what every one-machine run gave (None: nothing to compare)."""
        alone = [o for o in self.one_machine.values() if o]
        if not self.split or not alone:
            return None
        return all(o == self.split for o in alone)


def cell_key(row: dict) -> str:
    return "-".join(str(row.get(k, "")) for k in ("setup", "scenario", "server_option", "client"))


def pair(split_rows: list[dict], alone: dict[str, list[dict]]) -> list[DhcpPair]:
    """Each two-host scenario's cell, split beside alone (by node); split cells first."""
    alone_by = {node: {cell_key(r): r for r in rs if r.get("outcome") != "skipped"}
                for node, rs in alone.items()}
    out = []
    for r in sorted(split_rows, key=cell_key):
        key = cell_key(r)
        out.append(DhcpPair(key, str(r.get("expected", "")),
                            str(r.get("observed", "")) if r.get("outcome") != "skipped" else "",
                            str(r.get("outcome", "")), str(r.get("kernel", "")),
                            str(r.get("clients_kernel", "")),
                            {node: str(by[key].get("observed", "")) if key in by else ""
                             for node, by in alone_by.items()}))
    return out


def summary(pairs: list[DhcpPair]) -> dict:
    """two-host.json's ``dhcp``: the cells, and counts of passed / failed / differing."""
    split = [p for p in pairs if p.split_outcome in ("passed", "failed")]
    return {"cells": [{**asdict(p), "same": p.same} for p in pairs],
            "total": {"split": len(split),
                      "passed": sum(p.split_outcome == "passed" for p in split),
                      "failed": sum(p.split_outcome == "failed" for p in split),
                      "compared": sum(p.same is not None for p in pairs),
                      "differ": sum(p.same is False for p in pairs)}}


def lines(pairs: list[DhcpPair], nodes: tuple[str, ...]) -> list[str]:
    """The table as text: one line per cell."""
    head = f"{'dhcp cell':58} {'expected':22} {'two machines':22} " + \
        " ".join(f"{n + ' alone':22}" for n in nodes)
    out = [head]
    for p in pairs:
        verdict = {True: "same", False: "DIFFERS", None: "-"}[p.same]
        out.append(f"{p.cell:58} {p.expected:22} {p.split or 'not run':22} "
                   + " ".join(f"{p.one_machine.get(n) or 'not run':22}" for n in nodes)
                   + f" {verdict}")
    return out
