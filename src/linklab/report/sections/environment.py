"""Section "environment": the machine, kernel, tools and times the run recorded."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from linklab.report.sections.common import epoch

if TYPE_CHECKING:   # the view imports the sections to register them: no import circle
    from linklab.report.view import Inputs


def environment(meta: dict[str, Any]) -> list[tuple[str, str]]:
    """(what, value) rows of the run's machine and tools; unknown when not recorded."""
    tools = meta.get("tools") or {}
    tool_text = ", ".join(f"{k} {v}" for k, v in sorted(tools.items())) \
        if isinstance(tools, dict) else str(tools)
    rows = [("kernel release", meta.get("kernel")), ("CPU", meta.get("cpu_model")),
            ("cores", meta.get("cores")), ("virtualisation", meta.get("virt")),
            ("tool versions", tool_text or None), ("git commit", meta.get("git_commit")),
            ("started", _when(meta.get("started"))), ("ended", _when(meta.get("ended"))),
            ("duration", _duration(meta.get("started"), meta.get("ended")))]
    return [(k, "unknown (not recorded)" if v in (None, "") else str(v)) for k, v in rows]


def _when(value: Any) -> Any:
    secs = epoch(value)
    if secs is None:
        return value
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(secs))


def _duration(start: Any, end: Any) -> str | None:
    a, b = epoch(start), epoch(end)
    if a is None or b is None:
        return None
    return f"{b - a:.0f} s"


def build(inputs: Inputs) -> list[tuple[str, str]]:
    """Section "environment": the run's kernel, machine, tools, commit and times."""
    return environment(inputs.results.meta)
