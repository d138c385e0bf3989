"""Two users at once: ``make report`` and ``make test`` side by side, in one checkout and in
two (issue #24). Placeholder until the section lands: it reports nothing tried."""

from __future__ import annotations

from linklab.drill.runner import Drill


def two_users(d: Drill, quick: bool) -> list[dict]:
    """One dict per layout: layout, rc (one per user), mixed, left, wall_s."""
    d.log("  two users: not built yet")
    return []
