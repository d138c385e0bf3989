"""``linklab schema``: the JSON Schema of the scenario format, for TOML editors (Taplo's
``#:schema`` directive). It is rendered from the tables the validator itself checks
(:data:`linklab.format.FORMAT`), the kinds' MODES/FLAGS from the registry and the check names,
so the schema and the validator cannot drift; the copy shipped in the package
(``linklab/scenario.schema.json``) is tested equal to it. The validator stays the authority:
it also checks what a schema cannot say (address ranges, duplicates, a kind's shape)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from linklab.checks import CHECKS
from linklab.flows import FAMILIES, GROUP_RULE, PROTOS, RESULTS
from linklab.format import FORMAT, IFNAME_MAX, MTU_RANGE, NAME_RE, SCENARIO_NAME_RE, Field
from linklab.kinds import REGISTRY

SHIPPED_SCHEMA = Path(__file__).resolve().parent.parent / "scenario.schema.json"
SCHEMA_ID = "https://linklab.invalid/scenario.schema.json"


def field_schema(f: Field) -> dict[str, Any]:
    """The JSON Schema of one field of :data:`FORMAT`."""
    kinds = REGISTRY
    t = f.type
    if t.startswith("table:"):
        out: dict[str, Any] = {"$ref": f"#/$defs/{t.split(':', 1)[1]}"}
    elif t.startswith("tables:"):
        out = {"type": "array", "items": {"$ref": f"#/$defs/{t.split(':', 1)[1]}"}}
    else:
        out = {
            "string": {"type": "string"},
            "integer": {"type": "integer"},
            "any-table": {"type": "object"},
            "strings": {"type": "array", "items": {"type": "string"}},
            "boolean": {"type": "boolean"},
            "ip": {"type": "string"},
            "route-to": {"type": "string"},
            "name": {"type": "string", "pattern": NAME_RE.pattern},
            "scenario-name": {"type": "string", "pattern": SCENARIO_NAME_RE.pattern},
            "kind": {"enum": list(kinds)},
            "mode": {"enum": sorted({m for k in kinds.values() for m in k.MODES})},
            "flag": {"enum": sorted({g for k in kinds.values() for g in k.FLAGS})},
            "mtu": {"type": "integer", "minimum": MTU_RANGE[0], "maximum": MTU_RANGE[1]},
            "ifname": {"type": "string", "minLength": 1, "maxLength": IFNAME_MAX,
                       "pattern": r"^[^/\s]+$"},
            "ifaddrs": {"type": "array", "items": {"type": "string", "pattern": "/"}},
            "mac": {"type": "string", "pattern": "^([0-9a-f]{2}:){5}[0-9a-f]{2}$"},
            "pool": {"type": "array", "items": {"type": "string"}, "minItems": 2,
                     "maxItems": 2},
            "result": {"type": "string", "pattern": "^(pass|blocked|E[A-Z0-9]+)$"},
            "expect": {"type": "object", "propertyNames": {"enum": list(CHECKS)},
                       "additionalProperties": {"$ref": "#/$defs/expectation"}},
            # the scenario's own checks (linklab.flows)
            "proto": {"enum": list(PROTOS)},
            "family": {"enum": list(FAMILIES)},
            "families": {"type": "array", "items": {"enum": list(FAMILIES)}},
            "check-result": {"enum": list(RESULTS)},
            "pair-rule": {"enum": [*RESULTS, GROUP_RULE]},
            "probes": {"type": "array", "items": {"type": "string",
                                                  "pattern": "^(icmp|(tcp|udp):[0-9]+)$"}},
            "pairs": {"oneOf": [{"const": "all"}, {"$ref": "#/$defs/pairs"}]},
            "groups": {"type": "object",      # group name -> its containers
                       "additionalProperties": {"type": "array", "items": {"type": "string"},
                                                "minItems": 1}},
        }[t]
    if f.doc:
        out = {**out, "description": f.doc}
    return out


def table_schema(name: str) -> dict[str, Any]:
    spec = FORMAT[name]
    out: dict[str, Any] = {"type": "object",
                           "properties": {k: field_schema(f) for k, f in spec.items()},
                           "additionalProperties": False}
    required = [k for k, f in spec.items() if f.required]
    if required:
        out["required"] = required
    if "kind" in spec:          # each kind's own modes and flags
        out["allOf"] = [kind_rule(k, mod) for k, mod in REGISTRY.items()]
    return out


def kind_rule(kind: str, mod: Any) -> dict[str, Any]:
    then: dict[str, Any] = {"properties": {}}
    for key, choices in (("mode", mod.MODES), ("flag", mod.FLAGS)):
        then["properties"][key] = {"enum": list(choices)} if choices else {"not": {}}
    return {"if": {"properties": {"kind": {"const": kind}}, "required": ["kind"]},
            "then": then}


def scenario_schema() -> dict[str, Any]:
    """The whole schema: the scenario table at the top, every other table in ``$defs``."""
    top = table_schema("scenario")
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": SCHEMA_ID,
            "title": "linklab scenario",
            "description": "A linklab scenario file (TOML); `linklab check FILE` validates "
                           "it fully (address ranges, duplicates, a kind's shape).",
            **top, "oneOf": [{"required": ["host"]}, {"required": ["hosts"]}],
            "$defs": {n: table_schema(n) for n in FORMAT if n != "scenario"}}


def render() -> str:
    return json.dumps(scenario_schema(), indent=2) + "\n"


def cli_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", "--output", type=Path, help="write it here instead of stdout")


def cli_main(args: argparse.Namespace) -> int:
    text = render()
    if args.output:
        args.output.write_text(text)
    else:
        print(text, end="")
    return 0
