"""``linklab schema``: the JSON Schema is rendered from the validator's own tables, the copy
shipped in the package equals it, and the two agree on good and bad files."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from linklab import schema
from linklab.model import FORMAT, SHIPPED, ScenarioError, load_data
from tests import REPO

# a dev extra: the nightly box (runtime dependencies only) lacks it, and its nodes collect this
# module with the rest of tests/ (an ImportError there stopped the whole node suite)
jsonschema = pytest.importorskip("jsonschema", reason="jsonschema is not installed (the dev "
                                 "extra: pip install -e '.[dev]')")

FILES = sorted(SHIPPED.glob("*.toml")) + sorted((REPO / "examples").glob("*/scenarios/*.toml"))


def validator() -> jsonschema.protocols.Validator:
    s = schema.scenario_schema()
    jsonschema.Draft202012Validator.check_schema(s)
    return jsonschema.Draft202012Validator(s)


def test_the_shipped_schema_is_the_rendered_one() -> None:
    assert schema.SHIPPED_SCHEMA.read_text() == schema.render(), \
        "run `linklab schema -o src/linklab/scenario.schema.json`"
    printed = subprocess.run([sys.executable, "-m", "linklab.cli", "schema"],
                             capture_output=True, text=True, check=True).stdout
    assert printed == schema.render()


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_every_shipped_scenario_is_valid_for_the_schema(path: Path) -> None:
    errors = [e.message for e in validator().iter_errors(tomllib.loads(path.read_text()))]
    assert errors == []


# (a scenario, where a table sits in it, its FORMAT table)
PLACES = [("macvlan-bridge", [], "scenario"), ("macvlan-bridge", ["host"], "host"),
          ("macvlan-bridge", ["upstream"], "upstream"), ("macvlan-bridge", ["remote"], "remote"),
          ("macvlan-bridge", ["container", 0], "container"),
          ("veth", ["container", 0, "peer"], "peer"),
          ("veth", ["remote", "routes", 0], "route"),
          ("bridge", ["host", "bridge"], "bridge"),
          ("twohost-macvlan", ["hosts", 0], "hosts"),
          ("dhcp-macvlan", ["dhcp"], "dhcp")]


@pytest.mark.parametrize("name, where, table", PLACES,
                         ids=[f"{t}" for _, _, t in PLACES])
def test_validator_and_schema_know_the_same_fields(name: str, where: list, table: str) -> None:
    data = tomllib.loads((SHIPPED / f"{name}.toml").read_text())
    node = data
    for key in where:
        node = node[key]
    node["zzz-unknown"] = 1
    with pytest.raises(ScenarioError, match="unknown field") as err:
        load_data(data, f"{name}.toml")
    known = str(err.value).split("(known: ", 1)[1].rstrip(")").split(", ")
    props = schema.scenario_schema() if table == "scenario" else \
        schema.scenario_schema()["$defs"][table]
    assert sorted(known) == sorted(props["properties"]) == sorted(FORMAT[table])
    assert not validator().is_valid(data)


@pytest.mark.parametrize("change", [{"kind": "macvtap"}, {"mode": "l3s"}, {"mtu": 99},
                                    {"flag": "vepa"}, {"name": "Bad Name"}])
def test_both_reject_what_the_format_forbids(change: dict) -> None:
    data = tomllib.loads((SHIPPED / "macvlan-bridge.toml").read_text()) | change
    with pytest.raises(ScenarioError):
        load_data(data, "x.toml")
    assert not validator().is_valid(data)


def test_a_field_added_to_the_model_appears_in_the_schema(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from linklab.model import Field

    monkeypatch.setitem(FORMAT, "container", {**FORMAT["container"], "cni": Field("string")})
    assert "cni" in schema.scenario_schema()["$defs"]["container"]["properties"]
