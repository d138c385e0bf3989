"""llcost's output parser: a result line becomes an OpResult; anything else is a ToolFailure
naming what was wrong, never a crash. The good lines were saved from runs over a veth pair."""

from __future__ import annotations

import pytest

from linklab.bench.llcost import OpResult, parse
from linklab.bench.tools import ToolFailure

SAVED = {
    "udp-rr": '{"op": "udp-rr", "count": 2000, "ns": 8100658, "bytes": 128000}\n',
    "icmp-rr": '{"op": "icmp-rr", "count": 2000, "ns": 3522123, "bytes": 128000}\n',
    "udp-stream": '{"op": "udp-stream", "count": 20000, "ns": 35705277, "bytes": 1280000}\n',
    "tcp-crr": '{"op": "tcp-crr", "count": 1000, "ns": 20521647, "bytes": 1000}\n',
}


@pytest.mark.parametrize("op", SAVED)
def test_saved_output_parses(op: str) -> None:
    res = parse(SAVED[op], op)
    assert res.op == op and res.count > 0 and res.ns > 0
    assert res.ns_per_op == res.ns / res.count


def test_fields_and_cost_per_operation() -> None:
    res = parse(SAVED["udp-rr"])
    assert res == OpResult("udp-rr", 2000, 8100658, 128000)
    assert res.ns_per_op == pytest.approx(4050.329)


def test_surrounding_blank_lines_are_fine() -> None:
    assert parse("\n" + SAVED["tcp-crr"] + "\n\n").count == 1000


BAD = {
    "empty": ("", "got 0"),
    "truncated": ('{"op": "udp-rr", "count": 2000, "ns": 81', "not JSON"),
    "cut-before-newline": (SAVED["udp-rr"][:-3], "not JSON"),
    "garbage": ("\x00\xff\x1b[31mSegmentation fault\n", "not JSON"),
    "stderr-text": ("llcost udp-rr: recv, round trip 17 of 2000: no echo within 2 s\n",
                    "not JSON"),
    "two-lines": (SAVED["udp-rr"] * 2, "got 2"),
    "noise-before": ("warning: x\n" + SAVED["udp-rr"], "got 2"),
    "a-list": ("[1, 2, 3]\n", "fields"),
    "a-number": ("42\n", "fields"),
    "missing-field": ('{"op": "udp-rr", "count": 1, "ns": 5}\n', "fields"),
    "extra-field": ('{"op": "udp-rr", "count": 1, "ns": 5, "bytes": 1, "x": 0}\n', "fields"),
    "string-count": ('{"op": "udp-rr", "count": "1", "ns": 5, "bytes": 1}\n', "integers"),
    "float-ns": ('{"op": "udp-rr", "count": 1, "ns": 5.5, "bytes": 1}\n', "integers"),
    "bool-count": ('{"op": "udp-rr", "count": true, "ns": 5, "bytes": 1}\n', "integers"),
    "negative-ns": ('{"op": "udp-rr", "count": 1, "ns": -5, "bytes": 1}\n', "integers"),
    "null-op": ('{"op": null, "count": 1, "ns": 5, "bytes": 1}\n', "string"),
    "zero-count": ('{"op": "udp-rr", "count": 0, "ns": 5, "bytes": 0}\n', "no operation"),
    "zero-ns": ('{"op": "udp-rr", "count": 3, "ns": 0, "bytes": 3}\n', "no operation"),
    "nan-ns": ('{"op": "udp-rr", "count": 1, "ns": NaN, "bytes": 1}\n', "integers"),
}


@pytest.mark.parametrize("name", BAD)
def test_bad_output_is_a_tool_failure(name: str) -> None:
    text, why = BAD[name]
    with pytest.raises(ToolFailure, match=why):
        parse(text)


def test_another_operations_result_is_refused() -> None:
    with pytest.raises(ToolFailure, match="expected a udp-rr result, got tcp-crr"):
        parse(SAVED["tcp-crr"], "udp-rr")
