"""The kinds' registry contract (src/linklab/kinds/__init__.py): every kind module provides
its hooks, including those it takes from another kind (netkit and veth-bpf reuse veth's)."""

from __future__ import annotations

import pytest

from linklab.kinds import REGISTRY

HOOKS = ("MODES", "FLAGS", "HOST_FORWARDS", "validate_mode", "validate", "prepare", "attach",
         "probe")


@pytest.mark.parametrize("kind", sorted(REGISTRY))
def test_every_kind_provides_its_hooks(kind: str) -> None:
    """A lint fix once removed netkit's and veth-bpf's imports of veth's hooks as unused: every
    netkit and veth-bpf scenario then failed to load with AttributeError."""
    missing = [h for h in HOOKS if not hasattr(REGISTRY[kind], h)]
    assert not missing, f"kind {kind}: no {', '.join(missing)}"
