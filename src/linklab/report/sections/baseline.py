"""Section "baseline": every figure this run shares with a baseline run, with its verdict."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from linklab.report.aggregate import Results, Rules, compare, machine_mismatch
from linklab.report.sections.common import display_scale

if TYPE_CHECKING:   # the view imports the sections to register them: no import circle
    from linklab.report.view import Inputs


@dataclass
class BaselineView:
    """This run against a baseline: every shared figure with its verdict, worst first."""

    run_id: str
    rows: list[dict[str, Any]]          # regressed, improved, cannot, same (in that order)
    mismatch: list[str]
    rules: Rules

    def count(self, verdict: str) -> int:
        return sum(1 for r in self.rows if r["verdict"] == verdict)

    def having(self, *verdicts: str) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["verdict"] in verdicts]


_VERDICT_ORDER = {"regressed": 0, "improved": 1, "cannot": 2, "same": 3}


def baseline_view(results: Results, baseline: Results, rules: Rules) -> BaselineView:
    comparison = compare(results, baseline, rules)
    shown = [display_scale(u, m) for u, m in zip(comparison["unit"], comparison["metric"])]
    factor = [f for f, _ in shown]
    for col in ("median", "ci_low", "ci_high", "base_median", "base_ci_low", "base_ci_high"):
        comparison[col] = comparison[col] * factor
    comparison["unit"] = [u for _, u in shown]
    rows = comparison.assign(_o=comparison["verdict"].map(_VERDICT_ORDER)).sort_values(
        ["_o", "role", "section", "label"], kind="stable").to_dict("records")
    return BaselineView(baseline.run_id, rows, machine_mismatch(results.meta, baseline.meta),
                        rules)


def build(inputs: Inputs) -> BaselineView | None:
    """Section "baseline": this run against ``--baseline`` (None without one)."""
    return inputs.comparison
