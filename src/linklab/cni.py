"""CNI plugins as clients: the one module that invokes a containernetworking plugin.

A plugin is run by the CNI spec (1.0): ``CNI_COMMAND`` (ADD, CHECK, DEL), ``CNI_CONTAINERID``,
``CNI_NETNS`` (the container namespace's path), ``CNI_IFNAME`` and ``CNI_PATH`` in its
environment, the network configuration as JSON on stdin, its result JSON on stdout. It runs
inside the namespace that plays the host, since a plugin looks its master, bridge or
host-side veth up in the namespace it runs in. A failing plugin answers with JSON ``code`` and
``msg``: :class:`CniError` carries them with the plugin, the scenario and the command.

:func:`attached` is the lifecycle: ADD, then CHECK against the ADD result, yield, DEL. After a
failed ADD it calls DEL as the spec asks of a runtime; none of this is what cleans up:
the namespaces own the links (and run-owned directories the IPAM state), so they go even when
a plugin's DEL fails or a failed ADD left its link behind.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from linklab.cmd import CmdError, NamespaceLike, cmd, ns_path
from linklab.suite import time_scale

CNI_PATH = os.environ.get("LINKLAB_CNI_PATH", "/usr/lib/cni")
CNI_PACKAGE = "containernetworking-plugins"
SPEC_VERSION = "1.0.0"            # the newest version Debian's 1.1.1 plugins speak
SCALE = time_scale()
TIMEOUT_S = 30.0 * SCALE
VERSION_RE = re.compile(r"^(\d+)\.(\d+)\.(\d+)$")


class CniError(RuntimeError):
    """A CNI plugin failed (or could not be run): names the plugin, the scenario, the command
    and the plugin's own code and message."""

    def __init__(self, plugin: str, scenario: str, command: str, msg: str,
                 code: int | None = None, details: str = "") -> None:
        self.plugin = plugin
        self.scenario = scenario
        self.command = command
        self.code = code
        self.msg = msg
        self.details = details
        text = f"{scenario}: CNI plugin {plugin!r} {command}"
        text += f" failed (code {code}): {msg}" if code is not None else f": {msg}"
        super().__init__(text + (f" ({details})" if details else ""))


@dataclass(frozen=True)
class Attachment:
    """Where a plugin attaches one container: what the CNI_* variables carry."""

    scenario: str
    container_id: str
    netns: str                     # path of the container's namespace
    ifname: str
    host: NamespaceLike | str      # the namespace the plugin runs in


def parse_version(value: str) -> tuple[int, int, int] | None:
    m = VERSION_RE.match(value) if isinstance(value, str) else None
    return (int(m[1]), int(m[2]), int(m[3])) if m else None


def version_ok(value: Any) -> bool:
    """A ``cniVersion`` this module speaks: a version no newer than 1.0.0 (Debian's 1.1.1
    plugins are built on spec 1.0)."""
    v = parse_version(value)
    return v is not None and v <= parse_version(SPEC_VERSION)  # type: ignore[operator]


def plugin_path(plugin: str, scenario: str = "", command: str = "ADD") -> str:
    """The executable of ``plugin`` in CNI_PATH, or a CniError saying where it was looked for."""
    if not plugin or "/" in plugin or plugin in (".", ".."):
        raise CniError(plugin, scenario, command, "not a plugin name (the netconf's 'type')")
    for directory in CNI_PATH.split(":"):
        path = os.path.join(directory, plugin)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    raise CniError(plugin, scenario, command, f"no executable {plugin!r} in CNI_PATH "
                                              f"{CNI_PATH} (Debian package {CNI_PACKAGE})")


def invoke(command: str, netconf: Mapping[str, Any], at: Attachment, *,
           timeout_s: float = TIMEOUT_S) -> dict[str, Any] | None:
    """Run the netconf's plugin once with ``command``; return its result (ADD) or None."""
    plugin = str(netconf.get("type", ""))
    exe = plugin_path(plugin, at.scenario, command)
    env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
           "CNI_COMMAND": command, "CNI_CONTAINERID": at.container_id,
           "CNI_NETNS": at.netns, "CNI_IFNAME": at.ifname, "CNI_PATH": CNI_PATH}
    try:
        res = cmd([exe], ns=at.host, input=json.dumps(netconf), env=env, check=False,
                  timeout=timeout_s)
    except CmdError as exc:
        raise CniError(plugin, at.scenario, command, f"no answer within {timeout_s:g}s; "
                                                     f"stderr: {exc.stderr.strip()[-300:]}") \
            from None
    if res.returncode != 0:
        raise _plugin_error(plugin, at.scenario, command, res.returncode, res.stdout,
                            res.stderr)
    if command != "ADD":
        return None
    try:
        result = json.loads(res.stdout)
    except json.JSONDecodeError:
        raise CniError(plugin, at.scenario, command, f"result is not JSON: "
                                                     f"{res.stdout.strip()[:300]!r}") from None
    if not isinstance(result, dict):
        raise CniError(plugin, at.scenario, command, f"result is not a JSON object: "
                                                     f"{res.stdout.strip()[:300]!r}")
    return result


def _plugin_error(plugin: str, scenario: str, command: str, status: int, stdout: str,
                  stderr: str) -> CniError:
    """The plugin's JSON error (code, msg, details), or its exit status and stderr."""
    try:
        err = json.loads(stdout)
    except json.JSONDecodeError:
        err = None
    if isinstance(err, dict) and "msg" in err:
        return CniError(plugin, scenario, command, str(err["msg"]), code=err.get("code"),
                        details=str(err.get("details") or ""))
    tail = (stderr or stdout).strip()[-300:]
    return CniError(plugin, scenario, command, f"exited with status {status} without a CNI "
                                               f"error object; output: {tail or '(none)'}")


@contextmanager
def attached(netconf: Mapping[str, Any], at: Attachment, *, timeout_s: float = TIMEOUT_S,
             failed_add: Callable[[], None] | None = None) -> Iterator[dict[str, Any]]:
    """ADD, CHECK (with the ADD result as prevResult), yield the result, DEL on exit.
    ``failed_add`` is called after a failed ADD, before its DEL (to see what it left)."""
    try:
        result = invoke("ADD", netconf, at, timeout_s=timeout_s)
    except CniError:
        if failed_add is not None:
            failed_add()
        try:                       # the spec: a runtime calls DEL after a failed ADD
            invoke("DEL", netconf, at, timeout_s=timeout_s)
        except CniError:
            pass                   # the ADD error is the one to report
        raise
    assert result is not None
    try:
        invoke("CHECK", {**netconf, "prevResult": result}, at, timeout_s=timeout_s)
        yield result
    finally:
        invoke("DEL", {**netconf, "prevResult": result}, at, timeout_s=timeout_s)


def result_addresses(result: Mapping[str, Any], ifname: str) -> list[str]:
    """The addresses a result assigns to the container interface ``ifname`` (CIDR strings)."""
    ifaces = result.get("interfaces") or []
    out = []
    for ip in result.get("ips") or []:
        i = ip.get("interface")
        if i is None or (0 <= i < len(ifaces) and ifaces[i].get("name") == ifname
                         and ifaces[i].get("sandbox")):
            out.append(ip["address"])
    return out


def netns_path(ns: NamespaceLike | str) -> str:
    path = ns_path(ns)
    assert path is not None
    return path
