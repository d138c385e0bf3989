"""Read a saved results directory and aggregate it with pandas (no drawing, no HTML here).

Everything the report shows comes from :func:`load_results`; a live run is never consulted.
Problems a reader should know about (an unfinalised table, a missing ``meta.json``, error rows)
are collected in :attr:`Results.notes` instead of raising, so a partial run still renders.
"""

from __future__ import annotations

import json
import math
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from linklab.bench import compare as cmp
from linklab.bench.stats import summarise
from linklab.results import SCHEMA_VERSION, TABLES


class ReportError(Exception):
    """Input the report cannot be built from; the message names the file and what to do."""


# ---------------------------------------------------------------------------------------------
# loading


@dataclass(frozen=True)
class Leg:
    """Where figures were measured: the run's own machine, or a VM leg (never mixed)."""

    kernel: str
    virt: str
    is_host: bool

    @property
    def label(self) -> str:
        where = "host" if self.is_host else "VM leg"
        virt = "no virtualisation" if self.virt in ("none", "") else f"virtualised: {self.virt}"
        return f"{where} · kernel {self.kernel or 'unknown'} · {virt}"

    @property
    def slug(self) -> str:
        where = "host" if self.is_host else "vm"
        return re.sub(r"[^a-z0-9]+", "-", f"{where}-{self.kernel}-{self.virt}".lower()).strip("-")


@dataclass(frozen=True)
class JUnitSummary:
    file: str
    tests: int
    failures: int
    errors: int
    skipped: int
    time_s: float


@dataclass
class Results:
    """One results directory as read back from disk."""

    path: Path
    run_id: str
    meta: dict[str, Any]
    tables: dict[str, pd.DataFrame]
    junit: list[JUnitSummary] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return all(frame.empty for frame in self.tables.values())

    def legs(self, table: str) -> list[Leg]:
        """The (kernel, virt) legs present in ``table``, the run's own machine first."""
        frame = self.tables[table]
        if frame.empty:
            return []
        host = (str(self.meta.get("kernel", "")), str(self.meta.get("virt", "")))
        pairs = sorted({(k, v) for k, v in zip(frame["kernel"], frame["virt"])},
                       key=lambda kv: (kv != host, kv))
        known = bool(self.meta.get("kernel"))
        return [Leg(k, v, (k, v) == host if known else v in ("none", "")) for k, v in pairs]

    def leg_rows(self, table: str, leg: Leg) -> pd.DataFrame:
        frame = self.tables[table]
        return frame[(frame["kernel"] == leg.kernel) & (frame["virt"] == leg.virt)]


_META_FIELDS = ("kernel", "cpu_model", "cores", "virt", "tools", "git_commit", "started", "ended")


_UNIT_SUFFIXES = ("_s", "_ms", "_us", "_bps", "_pct")  # numbers carry their unit in the name


def _normalise(frame: pd.DataFrame, table: str) -> pd.DataFrame:
    """Declared columns only, key columns as plain strings ('' for missing)."""
    for col in TABLES[table]:
        if col not in frame.columns:
            frame[col] = None
    frame = frame[list(TABLES[table])].copy()
    for col in frame.columns:
        if col in ("value", "repetition", "load1", "position", "disturbed") or \
                col.endswith(_UNIT_SUFFIXES):
            frame[col] = pd.to_numeric(frame[col], errors="coerce")
        else:
            frame[col] = frame[col].map(_as_text)
    return frame


def _as_text(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


def _read_table(path: Path, table: str, notes: list[str]) -> pd.DataFrame:
    """Rows of one table: the .jsonl parts (complete even for an interrupted run), else the
    finalised Parquet, else the CSV."""
    parts = sorted(path.glob(f"{table}.jsonl")) + sorted(path.glob(f"{table}.*.jsonl"))
    if parts:
        rows: list[dict[str, Any]] = []
        for part in parts:
            bad = 0
            for line in part.read_text(errors="replace").splitlines():
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    bad += 1
                    continue
                if isinstance(row, dict):
                    rows.append(row)
                else:
                    bad += 1
            if bad:
                notes.append(f"{part.name}: {bad} unreadable line(s) skipped "
                             "(a row cut short when the run was killed?)")
        unknown = sorted({k for r in rows for k in r} - set(TABLES[table]))
        if unknown:
            notes.append(f"{table}: column(s) {unknown} are not known to this linklab; ignored")
        finalised = (path / f"{table}.parquet").exists() or (path / f"{table}.csv").exists()
        if rows and not finalised:
            notes.append(f"{table}: not finalised (no {table}.parquet / {table}.csv); "
                         "the run was interrupted or is still running — showing the rows it saved")
        return _normalise(pd.DataFrame(rows), table)
    for name, reader in ((f"{table}.parquet", pd.read_parquet), (f"{table}.csv", pd.read_csv)):
        file = path / name
        if file.exists():
            try:
                return _normalise(reader(file), table)
            except Exception as exc:
                notes.append(f"{name}: cannot be read ({type(exc).__name__}: {exc}); table skipped")
    return _normalise(pd.DataFrame(columns=list(TABLES[table])), table)


_JUNIT_COUNTS = ("tests", "failures", "errors", "skipped")


def _junit_sum(suites: list[ET.Element], key: str) -> int:
    return sum(int(float(s.get(key, 0) or 0)) for s in suites)


def _read_junit(path: Path, notes: list[str]) -> list[JUnitSummary]:
    out = []
    for file in sorted(path.glob("junit*.xml")):
        try:
            root = ET.parse(file).getroot()
        except (ET.ParseError, OSError) as exc:
            notes.append(f"{file.name}: not valid JUnit XML ({exc})")
            continue
        suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
        out.append(JUnitSummary(file.name, *(_junit_sum(suites, k) for k in _JUNIT_COUNTS),
                                sum(float(s.get("time", 0) or 0) for s in suites)))
    return out


def load_results(path: Path | str) -> Results:
    """Read ``results/<run-id>/``; raise :class:`ReportError` only when nothing can be shown."""
    path = Path(path)
    if not path.exists():
        raise ReportError(f"results directory {path} does not exist; run `make report` or "
                          "`pytest -m 'connectivity or bench'` first, or pass an existing run "
                          "directory such as results/<run-id>")
    if not path.is_dir():
        raise ReportError(f"{path} is not a directory; pass a results/<run-id> directory")
    notes: list[str] = []
    meta_file = path / "meta.json"
    meta: dict[str, Any] = {}
    if meta_file.exists():
        try:
            meta = json.loads(meta_file.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ReportError(f"{meta_file}: not valid JSON ({exc}); the run did not finish "
                              "writing it — re-run, or delete the file to render the rows "
                              "alone") from exc
        if not isinstance(meta, dict):
            raise ReportError(f"{meta_file}: expected a JSON object, found {type(meta).__name__}")
        schema = meta.get("schema")
        if schema is None:
            raise ReportError(f"{meta_file}: field 'schema' is missing; this is not a linklab "
                              f"results directory (linklab writes schema {SCHEMA_VERSION})")
        if schema != SCHEMA_VERSION:
            raise ReportError(f"{meta_file}: schema version {schema!r} is not known to this "
                              f"linklab (it reads schema {SCHEMA_VERSION}); render it with the "
                              "linklab version that wrote it")
        missing = [k for k in _META_FIELDS if k not in meta]
        if missing:
            notes.append(f"meta.json: field(s) {', '.join(missing)} missing")
    else:
        notes.append("meta.json missing: environment unknown (kernel, CPU, tools); "
                     "legs are told apart by the kernel/virt columns alone")
    tables = {name: _read_table(path, name, notes) for name in TABLES}
    junit = _read_junit(path, notes)
    for j in junit:
        if j.failures or j.errors:
            notes.append(f"{j.file}: {j.failures} failed, {j.errors} error(s) of {j.tests} tests; "
                         "tests that errored before running record no row, so their cells are "
                         "missing below — the file names them")
    if not meta and all(t.empty for t in tables.values()) and not junit:
        raise ReportError(f"{path} holds no linklab results (no meta.json, no "
                          f"{'/'.join(TABLES)} tables); pass a results/<run-id> directory")
    for name, frame in tables.items():
        if frame.empty:
            notes.append(f"{name}: no rows recorded in this run")
    run_id = str(meta.get("run_id") or path.resolve().name)
    return Results(path=path, run_id=run_id, meta=meta, tables=tables, junit=junit, notes=notes)


# ---------------------------------------------------------------------------------------------
# bench aggregation

BENCH_KEYS = ("kernel", "virt", "datapath", "mode", "flag", "family", "direction", "streams",
              "metric", "unit", "tool")
# a 'scenario' column, when the store declares one, tells apart datapaths of one kind built by
# different scenarios (e.g. bridge and twohost-bridge)
if "scenario" in TABLES["bench"]:
    BENCH_KEYS = ("scenario", *BENCH_KEYS)

LOOPBACK = "loopback"
_LATENCY = re.compile(r"latency_p(\d+)_(\w+)$")


def datapath_label(datapath: str, mode: str = "", flag: str = "") -> str:
    """'macvlan bridge', 'ipvlan l3s private', 'veth' (empty parts and repeats dropped)."""
    parts: list[str] = []
    for part in (datapath, mode, flag):
        if part and part not in parts:
            parts.append(part)
    return " ".join(parts) or "?"


def metric_family(metric: str) -> str:
    """Which report section a metric belongs to."""
    if metric.startswith("throughput") or metric in ("bits_per_second",):
        return "throughput"
    if _LATENCY.search(metric):
        return "latency"
    if "cpu_s_per_gbit" in metric:
        return "cpu"
    return "other"


def latency_parts(metric: str, direction: str) -> tuple[str, str]:
    """('tcp'|'udp'|'icmp'|'', 'p99.9'): the protocol may sit in the direction column or
    the name."""
    match = _LATENCY.search(metric)
    pct = match.group(1) if match else "?"
    pct = pct if len(pct) <= 2 else f"{pct[:2]}.{pct[2:]}"
    proto = ""
    for source in (direction, metric):
        for name in ("tcp", "udp", "icmp"):
            if name in source.lower().split("_") or source.lower() == name:
                proto = name
    return proto, f"p{pct}"


def bench_errors(bench: pd.DataFrame) -> pd.DataFrame:
    return bench[bench["error"] != ""]


def bench_summary(bench: pd.DataFrame) -> pd.DataFrame:
    """One row per measured figure: median, 95 % CI, n, CV, plus a readable datapath label."""
    ok = bench[(bench["error"] == "") & bench["value"].notna()]
    cols = list(BENCH_KEYS) + ["median", "ci_low", "ci_high", "n", "cv", "label", "section",
                               "disturbed"]
    if ok.empty:
        return pd.DataFrame(columns=cols)
    rows = []
    for key, group in ok.groupby(list(BENCH_KEYS), sort=False):
        values = group["value"].tolist()
        st = summarise(values)
        low = max(0.0, st.ci_low) if min(values) >= 0 else st.ci_low  # rates stop at zero
        row = dict(zip(BENCH_KEYS, key))
        row.update(median=st.median, ci_low=low, ci_high=st.ci_high, n=st.n, cv=st.cv,
                   label=row.get("scenario") or datapath_label(row["datapath"], row["mode"],
                                                               row["flag"]),
                   section=metric_family(row["metric"]),
                   disturbed=int((group["disturbed"] == 1).sum()))
        rows.append(row)
    return pd.DataFrame(rows, columns=cols)


def with_efficiency(summary: pd.DataFrame) -> pd.DataFrame:
    """Add ``efficiency``: throughput median / loopback median of the same leg, direction,
    streams and family (loopback = no datapath, this machine's ceiling)."""
    out = summary.copy()
    out["efficiency"] = math.nan
    match = ["kernel", "virt", "family", "direction", "streams", "metric"]
    thr = out[out["section"] == "throughput"]
    ceiling = thr[thr["datapath"] == LOOPBACK].set_index(match)["median"]
    ceiling = ceiling[~ceiling.index.duplicated()]
    for idx, row in thr.iterrows():
        key = tuple(row[c] for c in match)
        if key in ceiling.index and ceiling[key] > 0:
            out.at[idx, "efficiency"] = row["median"] / ceiling[key]
    return out


# ---------------------------------------------------------------------------------------------
# baseline comparison (the rules live in linklab.compare, shared with --bench-baseline)

machine_mismatch = cmp.machine_mismatch


@dataclass(frozen=True)
class Rules:
    """Which threshold judges a figure: the most specific ``--fail-on`` item that applies to
    it (its metric, and its row kind for ``METRIC@KIND``: ``*@tcg-icount:2%``), else
    ``default_pct``."""

    default_pct: float = 5.0
    fail_on: tuple[cmp.Threshold, ...] = ()

    def threshold(self, key: tuple) -> cmp.Threshold:
        """The threshold of the figure ``key`` (a :data:`linklab.bench.compare.KEY` tuple)."""
        return cmp.threshold_for(key, self.fail_on) or \
            cmp.Threshold(str(key[cmp.KEY.index("metric")]), self.default_pct)

    def verdict(self, delta: cmp.Delta) -> str:
        """'regressed' / 'improved' (the rank test, Holm-corrected over the figures compared,
        AND beyond the threshold), 'cannot' (too few repetitions on a side), else 'same'."""
        t = self.threshold(delta.key)
        v = delta.verdict
        if v.kind == "cannot":
            return "cannot"
        if t.fails(v):
            return "regressed"
        if v.kind == "better" and v.better_pct > t.pct:
            return "improved"
        return "same"


COMPARE_COLUMNS = (*cmp.KEY, "role", "label", "section", "threshold_pct", "median", "ci_low",
                   "ci_high", "base_median", "base_ci_low", "base_ci_high", "delta", "verdict",
                   "verdict_text", "n", "base_n")


def compare(current: Results, baseline: Results, rules: Rules) -> pd.DataFrame:
    """Per-figure deltas against the baseline (matched on datapath, mode, flag, family,
    direction, streams, metric, unit and virtualisation: a VM leg never meets the host)."""
    deltas = cmp.compare(current.tables["bench"].to_dict("records"),
                         baseline.tables["bench"].to_dict("records"), rules.fail_on)
    host_virt = str(current.meta.get("virt", ""))
    rows = []
    for d in deltas:
        k = dict(zip(cmp.KEY, d.key))
        rows.append(k | {
            "role": "host" if k["virt"] == host_virt or not host_virt else "vm",
            "label": datapath_label(k["datapath"], k["mode"], k["flag"]),
            "section": metric_family(k["metric"]),
            "threshold_pct": rules.threshold(d.key).pct,
            "median": d.current.median, "ci_low": d.current.ci_low, "ci_high": d.current.ci_high,
            "base_median": d.baseline.median, "base_ci_low": d.baseline.ci_low,
            "base_ci_high": d.baseline.ci_high, "delta": d.change_pct / 100,
            "verdict": rules.verdict(d), "verdict_text": d.verdict.text(),
            "n": d.current.n, "base_n": d.baseline.n})
    return pd.DataFrame(rows, columns=list(COMPARE_COLUMNS))
