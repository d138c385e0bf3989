"""The scenario CLI without building anything: ``linklab check`` prints every cell and names a
bad field; ``up`` and ``down`` refuse bad input."""

from __future__ import annotations

from pathlib import Path

from linklab.model import SHIPPED


def test_check_prints_every_cell_and_names_a_bad_field(tmp_path: Path, linklab_cli,
                                                       without_expect) -> None:
    good = linklab_cli("check", str(SHIPPED / "macvlan-private.toml"))
    assert good.returncode == 0, good.stderr
    assert "macvlan-private-v4-child-to-child" in good.stdout
    line = next(ln for ln in good.stdout.splitlines() if "v4-child-to-child" in ln)
    assert "blocked" in line and "private mode" in line, line
    bad = tmp_path / "bad.toml"
    bad.write_text((SHIPPED / "veth.toml").read_text().replace('mtu = 1400', 'mtu = 99'))
    done = linklab_cli("check", str(SHIPPED / "veth.toml"), str(bad))
    assert done.returncode == 1
    assert done.stderr.startswith(f"{bad}: mtu: 99 is out of range"), done.stderr
    partial = linklab_cli("check", str(without_expect("partial")))
    assert partial.returncode == 1 and "expect: missing required field" in partial.stderr


def test_up_refuses_a_name_that_is_up_and_bad_input(tmp_path: Path, linklab_cli) -> None:
    bad = linklab_cli("up", str(tmp_path / "missing.toml"))
    assert bad.returncode == 1 and "missing.toml: cannot read" in bad.stderr
    assert linklab_cli("down", "no-such-topology").returncode == 1
    assert linklab_cli("down").returncode == 2
