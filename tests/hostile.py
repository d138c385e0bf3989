"""A results directory carrying hostile strings: someone else's run (a nightly's artefact) whose
tool errors, scenario names, ``why`` texts, datapath names and meta fields hold HTML, JS,
template syntax and matplotlib mathtext. The report must show each one as text.

Every script payload appends its name to ``window.__pwned`` and sets ``document.title``, so a
browser test can tell whether any ran (tests/live/test_report_browser.py).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

from tests import DATA


def _ran(name: str) -> str:
    return f"(window.__pwned=(window.__pwned||[]).concat('{name}'),document.title='PWNED-{name}')"


PAYLOADS: dict[str, str] = {
    "script": f"<script>{_ran('script')}</script>",
    "img": f'"><img src=x onerror="{_ran("img")}">',
    "svg": f"</svg><script>{_ran('svg')}</script><svg>",
    "attr": f"' onmouseover='{_ran('attr')}' x='",
    "title": f"</title><script>{_ran('title')}</script>",
    "js-url": f"javascript:{_ran('url')}",
    "template": "{{ 7*7 }}{% if 1 %}x{% endif %}",
    "mathtext": r"$\frac{1}{$ 5 $x^$",
}


def hostile_results(dest: Path) -> Path:
    """The committed sample (tests/data/results-sample) with a payload in every free-text
    field the report shows; returns ``dest``."""
    shutil.copytree(DATA / "results-sample", dest)
    meta = json.loads((dest / "meta.json").read_text())
    meta.update(run_id=PAYLOADS["title"], cpu_model=PAYLOADS["img"],
                git_commit=PAYLOADS["js-url"])
    meta["tools"]["iperf3"] = PAYLOADS["svg"]
    meta["tools"]["sockperf"] = PAYLOADS["template"]
    (dest / "meta.json").write_text(json.dumps(meta))

    def rewrite(table: str, change: Callable[[int, dict], dict]) -> None:
        for part in dest.glob(f"{table}*.jsonl"):
            rows = [json.loads(ln) for ln in part.read_text().splitlines() if ln.strip()]
            part.write_text("".join(json.dumps(change(i, r)) + "\n" for i, r in enumerate(rows)))

    def bench(i: int, row: dict) -> dict:
        if row["datapath"] != "loopback":        # a datapath name: table cells, chart labels
            row["datapath"] = PAYLOADS["svg"] + PAYLOADS["mathtext"] + row["datapath"]
        if i == 3:                               # a tool error
            row.update(error=PAYLOADS["script"] + PAYLOADS["js-url"], value=None)
        return row

    def connectivity(i: int, row: dict) -> dict:
        row["scenario"] = PAYLOADS["img"] + row["scenario"]
        row["reason"] = PAYLOADS["attr"] + " why: " + PAYLOADS["script"]
        if i == 0:
            row.update(outcome="failed", observed="blocked", detail=PAYLOADS["template"])
        return row

    def dhcp(i: int, row: dict) -> dict:
        row.update(detail=PAYLOADS["script"], scenario=PAYLOADS["title"] + row["scenario"])
        if i == 0:
            row.update(outcome="failed")
        return row

    rewrite("bench", bench)
    rewrite("connectivity", connectivity)
    rewrite("dhcp", dhcp)
    return dest
