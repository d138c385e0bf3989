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
    """The guest's test cases keyed by ``classname.name``. A test that failed and then erred
    in teardown has two ``testcase`` elements: they become one, holding both results."""
    cases: dict[str, ET.Element] = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        classname, name = case.get("classname", ""), case.get("name", "")
        key = f"{classname}.{name}" if classname else name
        if (first := cases.get(key)) is None:
            cases[key] = case
            continue
        first.extend(list(case))
        first.set("time", str(float(first.get("time", 0)) + float(case.get("time", 0))))
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


Report = tuple[str, str, object, float, dict]   # when, outcome, longrepr, duration, extra


def case_reports(case: ET.Element | None, problem: str, path: str,
                 lineno: int) -> list[Report]:
    """The setup, call and teardown reports a guest's test case stands for (``case`` None:
    the guest did not run it, ``problem`` says why)."""
    if case is None:
        return [("setup", "passed", None, 0.0, {}),
                ("call", "failed", problem or "the guest did not run this test (not in its "
                 "junit)", 0.0, {}),
                ("teardown", "passed", None, 0.0, {})]
    duration = float(case.get("time", 0))
    skipped, failure, error = case.find("skipped"), case.find("failure"), case.find("error")
    setup, teardown = ("setup", "passed", None, 0.0, {}), ("teardown", "passed", None, 0.0, {})
    if skipped is not None and skipped.get("type") == "pytest.xfail":
        return [setup, ("call", "skipped", (path, lineno, "xfail"), duration,
                        {"wasxfail": skipped.get("message", "")}), teardown]
    if skipped is not None:
        message = skipped.get("message", "").removeprefix("Skipped: ")
        return [("setup", "skipped", (path, lineno, message), duration, {}), teardown]
    if error is not None and "teardown" in error.get("message", ""):
        return [setup, ("call", "failed" if failure is not None else "passed", _text(failure),
                        duration, {}), ("teardown", "failed", _text(error), 0.0, {})]
    if error is not None:
        return [("setup", "failed", _text(error), duration, {}), teardown]
    if failure is not None:
        return [setup, ("call", "failed", _text(failure), duration, {}), teardown]
    return [setup, ("call", "passed", None, duration, {}), teardown]


def replay(item: pytest.Item, case: ET.Element | None, labels: list[tuple[str, object]],
           problem: str) -> None:
    """Report ``item`` here as the guest ran it (setup, call, teardown)."""
    ihook = item.ihook
    ihook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
    item.user_properties.extend(labels)
    path, lineno = item.location[0], (item.location[1] or 0) + 1
    for when, outcome, longrepr, duration, extra in case_reports(case, problem, path, lineno):
        keywords = {k: 1 for k in item.keywords}
        report = pytest.TestReport(item.nodeid, item.location, keywords, outcome, longrepr,
                                   when, duration=duration,
                                   user_properties=item.user_properties, **extra)
        ihook.pytest_runtest_logreport(report=report)
    ihook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)


def _text(element: ET.Element | None) -> str:
    if element is None:
        return ""
    return f"[guest] {element.get('message', '')}\n{element.text or ''}".rstrip()
