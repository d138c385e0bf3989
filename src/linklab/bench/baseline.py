"""A saved bench run read back: its rows, a per-datapath summary table, and its figures
judged against a saved baseline's (``--bench-baseline``; the verdicts are
:mod:`linklab.bench.compare`'s)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from linklab import results as store
from linklab.bench.compare import KEY, Delta, Threshold, compare, machine_mismatch, summaries


def load_rows(run_dir: Path | str) -> list[dict[str, Any]]:
    """The bench rows of a saved run (its jsonl parts, else its Parquet/CSV table)."""
    path = Path(run_dir)
    rows = store.RunDir(path).rows("bench")
    if rows:
        return rows
    for name in ("bench.parquet", "bench.csv"):
        if (path / name).exists():
            import pandas as pd  # heavy: imported only for a run saved as a table

            frame = pd.read_parquet(path / name) if name.endswith("parquet") \
                else pd.read_csv(path / name, keep_default_na=False)
            return [{k: (None if isinstance(v, float) and math.isnan(v) else v)
                     for k, v in r.items()} for r in frame.to_dict("records")]
    return []


def read_meta(run_dir: Path | str) -> dict[str, Any]:
    """The run's meta.json, or {} when it is missing or unreadable."""
    try:
        return store.RunDir(Path(run_dir)).read_meta()
    except (OSError, ValueError):
        return {}


def _fmt(metric: str, value: float) -> str:
    if metric.endswith("_bps"):
        return f"{value / 1e9:.3f} Gbit/s"
    return f"{value:.4g}"


def format_deltas(deltas: Sequence[Delta]) -> list[str]:
    """One line per figure: baseline -> current median, change, verdict."""
    lines = []
    for d in deltas:
        verdict = ("REGRESSION: " if d.failed else "") + d.verdict.text()
        lines.append(f"{d.label():<62} {_fmt(d.metric, d.baseline.median):>16} -> "
                     f"{_fmt(d.metric, d.current.median):>16} {d.change_pct:+7.1f} %  {verdict}")
    return lines


def filter_leg(rows: Iterable[Mapping[str, Any]], kernel: str, virt: str) -> list[dict]:
    """Only this machine's rows (a results dir may also hold a VM leg's rows)."""
    return [dict(r) for r in rows if r.get("kernel") == kernel and r.get("virt") == virt]


def summary_lines(rows: Iterable[Mapping[str, Any]]) -> list[str]:
    """A compact per-datapath table of medians (95 % CI half-width, CV) and efficiency."""
    summ = summaries(rows)
    idx = {k: i for i, k in enumerate(KEY)}
    cols = (("tcp fwd x1", "forward", 1, "throughput_bps"),
            ("tcp rev x1", "reverse", 1, "throughput_bps"),
            ("tcp fwd x4", "forward", 4, "throughput_bps"),
            ("tcp rev x4", "reverse", 4, "throughput_bps"),
            ("udp loss", "forward", 1, "udp_loss_pct"),
            ("tcp p99", "pingpong", 1, "tcp_oneway_latency_p99_us"),
            ("udp p99", "pingpong", 1, "udp_oneway_latency_p99_us"),
            ("cpu fwd x1", "forward", 1, "cpu_s_per_gbit"))
    by_dp: dict[tuple, dict[str, Any]] = {}
    for key, s in summ.items():
        dp = (key[idx["virt"]], key[idx["datapath"]], key[idx["mode"]], key[idx["flag"]],
              key[idx["family"]])
        for label, direction, streams, metric in cols:
            if key[idx["direction"]] == direction and int(key[idx["streams"]]) == streams and \
                    key[idx["metric"]] == metric:
                by_dp.setdefault(dp, {})[label] = s
    ceiling = {(fam, c): v for (virt, name, _m, _f, fam), vals in by_dp.items()
               if name == "loopback" for c, v in vals.items()}
    lines = ["datapath                 " + "".join(f"{c[0]:>21}" for c in cols) +
             "   eff fwd x1",
             "(median ±CI95 CV%; Gbit/s, %, one-way us, s/Gbit)"]
    for (_virt, name, mode, flag, fam), vals in by_dp.items():
        label = " ".join(p for p in (name, mode, flag, fam) if p)
        cells = []
        for c, _d, _s, metric in cols:
            s = vals.get(c)
            if s is None:
                cells.append(f"{'-':>21}")
                continue
            scale = 1e9 if metric.endswith("_bps") else 1.0
            cv = f"{100 * s.cv:.0f}" if math.isfinite(s.cv) else "-"
            cells.append(f"{s.median / scale:>9.3g} ±{s.ci_half / scale:<5.2g}{cv:>4}%")
        eff = ""
        top = ceiling.get((fam, "tcp fwd x1"))
        if "tcp fwd x1" in vals and top is not None and top.median:
            eff = f"{vals['tcp fwd x1'].median / top.median:.2f}"
        lines.append(f"{label:<25}" + "".join(cells) + f"   {eff:>6}")
    return lines


@dataclass
class BaselineReport:
    deltas: list[Delta]
    warnings: list[str]

    @property
    def regressions(self) -> list[Delta]:
        return [d for d in self.deltas if d.failed]


def against_baseline(current_dir: Path | str, baseline_dir: Path | str,
                     thresholds: Sequence[Threshold], kernel: str, virt: str) -> BaselineReport:
    """Compare this machine's figures in ``current_dir`` with the same figures of a saved run."""
    cur = filter_leg(load_rows(current_dir), kernel, virt)
    base_all = load_rows(baseline_dir)
    base_meta = read_meta(baseline_dir)
    base_kernel = base_meta.get("kernel")
    base = [dict(r) for r in base_all if r.get("virt") == virt and
            (base_kernel is None or r.get("kernel") == base_kernel)]
    warnings = machine_mismatch(store.machine_meta(), base_meta)
    if not base:
        warnings.append(f"the baseline {baseline_dir} holds no bench figures measured with "
                        f"virtualisation {virt!r}; nothing compared")
    return BaselineReport(compare(cur, base, thresholds), warnings)
