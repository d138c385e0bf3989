"""The guests' JUnit files: test cases keyed as pytest's junitxml names them, the guests'
files merged into one, and each case replayed as this session's reports.

Only the public XML is read: :func:`junit_names` derives the ``classname`` and ``name``
pytest writes from a node id (``tests/unit/test_vm.py`` checks it against a real
``--junitxml`` file); the replay goes through pytest's public hooks and ``pytest.TestReport``.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

# characters XML 1.0 cannot carry (and DEL): pytest's junitxml writes them as ``#xNN`` in a name
_NOT_XML = re.compile("[^\u0009\u000a\u000d\u0020-\u007e\u0080-\ud7ff\ue000-\ufffd"
                      "\U00010000-\U0010ffff]")


def _visible(text: str) -> str:
    return _NOT_XML.sub(lambda m: f"#x{ord(m.group()):02X}" if ord(m.group()) <= 0xFF
                        else f"#x{ord(m.group()):04X}", text)


def junit_names(nodeid: str) -> tuple[str, str]:
    """The ``(classname, name)`` pytest's junitxml writes for ``nodeid``: the file path dotted
    without ``.py``, then the classes; the function with its ``[parameters]`` as the name."""
    path, sep, tail = nodeid.partition("::")
    names = [path]
    if sep:   # the parameters are one opaque bracket: a "::" or "[" inside them stays there
        name_part, bracket, params = tail.partition("[")
        names += name_part.split("::")
        if bracket:
            names[-1] += f"[{params.removesuffix(']')}]"
    names[0] = re.sub(r"\.py$", "", names[0].replace("/", "."))
    return ".".join(names[:-1]), _visible(names[-1])


def junit_key(nodeid: str) -> str:
    """The ``classname.name`` pytest's junitxml writes for ``nodeid``."""
    classname, name = junit_names(nodeid)
    return f"{classname}.{name}" if classname else name


def read_junit(path: Path) -> dict[str, ET.Element]:
    """The guest's test cases keyed by ``classname.name``."""
    cases: dict[str, ET.Element] = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        classname, name = case.get("classname", ""), case.get("name", "")
        cases[f"{classname}.{name}" if classname else name] = case
    return cases


def merge_junit(parts: list[Path], into: Path) -> None:
    """One JUnit file from the guests' (a ``testsuites`` of their suites); the parts go."""
    if len(parts) == 1 and parts[0] == into:
        return
    root = ET.Element("testsuites")
    for part in parts:
        try:
            tree = ET.parse(part).getroot()
        except (OSError, ET.ParseError):
            continue
        root.extend(tree.iter("testsuite") if tree.tag == "testsuites" else [tree])
    if len(root):
        ET.ElementTree(root).write(into, encoding="utf-8", xml_declaration=True)
    for part in parts:
        part.unlink(missing_ok=True)


def replay(item: pytest.Item, case: ET.Element | None, labels: list[tuple[str, object]],
           problem: str) -> None:
    """Report ``item`` here as the guest ran it (setup, call, teardown)."""
    ihook = item.ihook
    ihook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
    item.user_properties.extend(labels)

    def report(when: str, outcome: str, longrepr: object = None, duration: float = 0.0,
               **extra: object) -> None:
        rep = pytest.TestReport(item.nodeid, item.location, {k: 1 for k in item.keywords},
                                outcome, longrepr, when, duration=duration,
                                user_properties=item.user_properties, **extra)
        ihook.pytest_runtest_logreport(report=rep)

    duration = float(case.get("time", 0)) if case is not None else 0.0
    path, lineno = item.location[0], (item.location[1] or 0) + 1
    if case is None:
        report("setup", "passed")
        report("call", "failed", problem or "the guest did not run this test (not in its junit)")
        report("teardown", "passed")
    else:
        skipped, failure, error = (case.find("skipped"), case.find("failure"),
                                   case.find("error"))
        if skipped is not None and skipped.get("type") == "pytest.xfail":
            report("setup", "passed")
            report("call", "skipped", (path, lineno, "xfail"), duration,
                   wasxfail=skipped.get("message", ""))
            report("teardown", "passed")
        elif skipped is not None:
            message = skipped.get("message", "")
            report("setup", "skipped", (path, lineno, message.removeprefix("Skipped: ")),
                   duration)
            report("teardown", "passed")
        elif error is not None and "teardown" in error.get("message", ""):
            report("setup", "passed")
            report("call", "failed" if failure is not None else "passed",
                   _text(failure), duration)
            report("teardown", "failed", _text(error))
        elif error is not None:
            report("setup", "failed", _text(error), duration)
            report("teardown", "passed")
        elif failure is not None:
            report("setup", "passed")
            report("call", "failed", _text(failure), duration)
            report("teardown", "passed")
        else:
            report("setup", "passed")
            report("call", "passed", None, duration)
            report("teardown", "passed")
    ihook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)


def _text(element: ET.Element | None) -> str:
    if element is None:
        return ""
    return f"[guest] {element.get('message', '')}\n{element.text or ''}".rstrip()
