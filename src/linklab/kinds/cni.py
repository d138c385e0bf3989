"""cni: the container's interface is made by a containernetworking reference plugin.

``mode`` names the plugin and its mode (``macvlan-bridge``, ``ipvlan-l2``, ``bridge``, ``ptp``,
...); the scenario's ``[cni]`` table holds the network configuration as data
(``[cni.netconf]``), optionally the native scenario it matches (``native``) and the checks
where the plugin deliberately differs from it (``differs``). linklab builds host, upstream
and remote as for every kind, then runs the plugin in the host namespace (ADD, CHECK; DEL at
teardown, see :mod:`linklab.cni`). The containers' ``addrs`` are the addresses the IPAM must
hand out (checked against the result); their routes come from the IPAM. host-local keeps its
state in a run-owned directory; static IPAM gets each container's ``addrs`` through the
``args.cni.ips`` convention. With ``dhcp`` IPAM the containers stay address-less and are
plugged by the DHCP cell once its server and the CNI dhcp daemon run.
"""

from __future__ import annotations

import ipaddress
import shutil
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from typing import Any

from linklab import cni
from linklab.format import fields
from linklab.held import Held, unusable
from linklab.kinds.bridge import probe as probe_bridge
from linklab.kinds.common import check_choice, container_count, no_bridge
from linklab.kinds.ipvlan import probe as probe_ipvlan
from linklab.kinds.macvlan import probe as probe_macvlan
from linklab.kinds.veth import probe as probe_veth
from linklab.poll import poll
from linklab.suite import time_scale

# mode -> (plugin, the plugin's own mode or None)
PLUGINS: dict[str, tuple[str, str | None]] = {
    "macvlan-bridge": ("macvlan", "bridge"), "macvlan-vepa": ("macvlan", "vepa"),
    "macvlan-private": ("macvlan", "private"), "macvlan-passthru": ("macvlan", "passthru"),
    "ipvlan-l2": ("ipvlan", "l2"), "ipvlan-l3": ("ipvlan", "l3"), "ipvlan-l3s": ("ipvlan", "l3s"),
    "bridge": ("bridge", None), "ptp": ("ptp", None),
}
# mode -> the native (kind, mode, flag) whose kernel support it needs
NATIVE: dict[str, tuple[str, str | None, str | None]] = {
    **{m: ("macvlan", pm, None) for m, (p, pm) in PLUGINS.items() if p == "macvlan"},
    **{m: ("ipvlan", pm, "bridge") for m, (p, pm) in PLUGINS.items() if p == "ipvlan"},
    "bridge": ("bridge", None, None), "ptp": ("veth", None, None),
}
# the native kinds' probes (the registry imports this module, so not through the registry)
NATIVE_PROBES: dict[str, Callable[..., None]] = {
    "macvlan": probe_macvlan, "ipvlan": probe_ipvlan, "bridge": probe_bridge, "veth": probe_veth}
MODES = tuple(PLUGINS)
FLAGS: tuple[str, ...] = ()
FOREIGN = True              # the plugin names and creates the links (kinds.foreign)
HOST_FORWARDS = False        # bridge (isGateway) and ptp turn forwarding on themselves
IPAM_TYPES = ("host-local", "static", "dhcp")
# how long a plugged interface may keep an address it cannot use yet (tentative IPv6: the
# kernel's DAD work, which with DAD off only has to run once)
SETTLE_S = 10.0 * time_scale()


def validate_mode(ctx, mode, flag, prefix: str = "") -> None:
    check_choice(ctx, "mode", mode, MODES, "cni", prefix)
    check_choice(ctx, "flag", flag, FLAGS, "cni", prefix)


def native(mode: str, flag: str | None = None) -> tuple[str, str | None, str | None]:
    """The native link this plugin mode creates (for the kernel-support check)."""
    return NATIVE[mode]


def missing_plugin(mode: str) -> str | None:
    """Why the plugin (and its IPAM helpers) cannot run here, or None."""
    try:
        cni.plugin_path(PLUGINS[mode][0])
    except cni.CniError as exc:
        return f"CNI plugin {PLUGINS[mode][0]} is not installed ({exc.msg})"
    return None


def ipam(sc) -> Mapping[str, Any]:
    return sc.cni["netconf"].get("ipam") or {}


def validate(ctx, sc, host, where: str) -> None:
    raw = sc.cni
    if raw is None:
        raise ctx.fail("cni", "missing: kind 'cni' needs a [cni] table with the plugin's "
                              "netconf ([cni.netconf])")
    ctx.table(raw, "cni", *fields("cni"))
    ctx.typed(raw, "native", "cni.", str)
    differs = ctx.typed(raw, "differs", "cni.", list, [])
    if not all(isinstance(d, str) for d in differs):
        raise ctx.fail("cni.differs", "must be a list of check names")
    nc = raw["netconf"]
    if not isinstance(nc, Mapping):
        raise ctx.fail("cni.netconf", "must be a table (the network configuration)")
    plugin, plugin_mode = PLUGINS[host.mode]
    if nc.get("type") != plugin:
        raise ctx.fail("cni.netconf.type", f"{nc.get('type')!r}: mode {host.mode!r} is made by "
                                           f"the {plugin!r} plugin")
    if not isinstance(nc.get("name"), str) or not nc["name"]:
        raise ctx.fail("cni.netconf.name", "missing: the network name (a non-empty string)")
    if "cniVersion" in nc and not cni.version_ok(nc["cniVersion"]):
        raise ctx.fail("cni.netconf.cniVersion", f"{nc['cniVersion']!r}: must be a version no "
                                                 f"newer than {cni.SPEC_VERSION} (Debian's "
                                                 "1.1.1 plugins speak spec 1.0)")
    if plugin_mode is not None:
        if nc.get("mode") != plugin_mode:
            raise ctx.fail("cni.netconf.mode", f"{nc.get('mode')!r}: mode {host.mode!r} needs "
                                               f"{plugin_mode!r}")
        if nc.get("master") != host.node.ifname:
            raise ctx.fail("cni.netconf.master", f"{nc.get('master')!r}: the parent is the "
                                                 f"host's {host.node.ifname!r}")
    if "prevResult" in nc:
        raise ctx.fail("cni.netconf.prevResult", "linklab passes the ADD result to CHECK and "
                                                 "DEL itself")
    ip = nc.get("ipam")
    if not isinstance(ip, Mapping):
        raise ctx.fail("cni.netconf.ipam", f"{ip!r}: must be a table with a type (one of "
                                           f"{' | '.join(IPAM_TYPES)})")
    if ip.get("type") not in IPAM_TYPES:
        raise ctx.fail("cni.netconf.ipam.type", f"{ip.get('type')!r}: must be one of "
                                                f"{' | '.join(IPAM_TYPES)}")
    if "dataDir" in ip:
        raise ctx.fail("cni.netconf.ipam.dataDir", "linklab keeps host-local state in a "
                                                   "run-owned directory; do not set it")
    if "daemonSocketPath" in ip:
        raise ctx.fail("cni.netconf.ipam.daemonSocketPath", "linklab runs the dhcp daemon per "
                                                            "test on its own socket")
    _addresses_allowed(ctx, nc, "cni.netconf")
    dhcp = ip["type"] == "dhcp"
    if dhcp and sc.dhcp is None:
        raise ctx.fail("dhcp", "missing: dhcp IPAM needs a [dhcp] table (who serves which pool)")
    no_bridge(ctx, host, where)
    for i, c in enumerate(sc.containers):
        if c.host != host.name:
            continue
        for attr, why in (("routes", "routes come from the netconf's IPAM"),
                          ("mac", "the plugin chooses the link's MAC"),
                          ("peer", "the plugin makes the host side")):
            if getattr(c, attr):
                raise ctx.fail(f"container[{i}].{attr}", f"kind cni: {why}")
        if dhcp and c.addrs:
            raise ctx.fail(f"container[{i}].addrs", "dhcp IPAM: the address comes from the "
                                                    "DHCP server")
        if not dhcp and not c.addrs:
            raise ctx.fail(f"container[{i}].addrs", "missing: the addresses the IPAM must hand "
                                                    "out (checked against the plugin's result)")
    container_count(ctx, sc, host, where, single=host.mode == "macvlan-passthru")


def _addresses_allowed(ctx, value: Any, where: str) -> None:
    """Every address or prefix in the netconf (ranges, gateways, routes) lies in the suite's
    ranges; default routes (prefix length 0) are fine."""
    if isinstance(value, Mapping):
        for k, v in value.items():
            _addresses_allowed(ctx, v, f"{where}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _addresses_allowed(ctx, v, f"{where}[{i}]")
    elif isinstance(value, str) and any(ch in value for ch in ".:") and \
            all(ch in "0123456789abcdefABCDEF.:/" for ch in value):
        try:
            net = ipaddress.ip_network(value, strict=False)
        except ValueError:
            return                  # not an address (e.g. a version string)
        if net.prefixlen:
            ctx.allowed(net, where, value)


def prepare(topo, host) -> None:
    """A run-owned directory for host-local's allocations, removed with the topology."""
    if ipam(topo.scenario).get("type") != "host-local":
        return
    path = topo.run.tmpdir("cni-ipam")

    def remove() -> None:
        shutil.rmtree(path, ignore_errors=True)
        topo.run.disown_path(path)

    topo.stack.callback(remove)
    topo.kind_state[("cni-ipam", host.name)] = path


def netconf(topo, c, host) -> dict[str, Any]:
    """The netconf handed to the plugin for container ``c``: the scenario's, with cniVersion
    defaulted, host-local's dataDir in the run's directory and static IPAM's ``args.cni.ips``
    from the container's addresses."""
    nc = dict(topo.scenario.cni["netconf"])
    nc.setdefault("cniVersion", cni.SPEC_VERSION)
    ip = dict(nc["ipam"])
    if ip["type"] == "host-local":
        ip["dataDir"] = topo.kind_state[("cni-ipam", host.name)]
    elif ip["type"] == "static":
        args = dict(nc.get("args") or {})
        args["cni"] = {**(args.get("cni") or {}), "ips": [str(a) for a in c.addrs]}
        nc["args"] = args
    nc["ipam"] = ip
    return nc


def container_id(topo, c) -> str:
    return f"linklab-{topo.run.marker}-{topo.scenario.name}-{c.name}"


def attachment(topo, c) -> cni.Attachment:
    return cni.Attachment(topo.scenario.name, container_id(topo, c),
                          cni.netns_path(topo.ns(c.name)), c.ifname, topo.ns(c.host))


def plug(topo, c, host, extra_ipam: Mapping[str, Any] | None = None,
         stack: ExitStack | None = None, timeout_s: float = cni.TIMEOUT_S,
         failed_add: Callable[[], None] | None = None) -> dict[str, Any]:
    """ADD and CHECK ``c``'s interface now (DEL deferred to ``stack``, by default the
    topology's teardown); verify the addresses; register the interface. Returns the result."""
    nc = netconf(topo, c, host)
    if extra_ipam:
        nc["ipam"] = {**nc["ipam"], **extra_ipam}
    at = attachment(topo, c)
    result = (stack or topo.stack).enter_context(cni.attached(nc, at, timeout_s=timeout_s,
                                                                 failed_add=failed_add))
    got = sorted(cni.result_addresses(result, c.ifname))
    want = sorted(str(a) for a in c.addrs)
    if want and got != want:
        raise cni.CniError(nc["type"], topo.scenario.name, "ADD",
                           f"{c.name}/{c.ifname} got {', '.join(got) or 'no address'}, the "
                           f"scenario declares {', '.join(want)}")
    index = topo.ns(c.name).ipr.link_lookup(ifname=c.ifname)
    if not index:
        raise cni.CniError(nc["type"], topo.scenario.name, "ADD",
                           f"reported success but {c.name} has no interface {c.ifname!r}")
    settle(topo, c, index[0], nc["type"])
    topo.register(c.name, c.ifname, index[0])
    return result


def settle(topo, c, index: int, plugin: str) -> None:
    """Wait until ``c``'s interface can use every address the plugin gave it. The plugin adds
    IPv6 addresses without ``nodad`` and returns while the kernel still holds them tentative
    (:mod:`linklab.held`; it waits itself only when the IPAM names an IPv6 gateway), and a
    probe's ``bind()`` right after the build fails with EADDRNOTAVAIL."""
    ns = topo.ns(c.name)
    left: list[Held] = []

    def settled() -> bool:
        left[:] = unusable(ns, index)
        return not left

    if poll(settled, SETTLE_S, interval=0.02) is None:
        raise cni.CniError(plugin, topo.scenario.name, "ADD",
                           f"{c.name}/{c.ifname} still holds {', '.join(map(str, left))} "
                           f"{SETTLE_S:g} s after the plugin returned (the kernel's duplicate "
                           "address detection has not finished)")


def attach(topo, c, host) -> None:
    """Plug the container (build adds no address: the IPAM did). dhcp IPAM: later."""
    if ipam(topo.scenario).get("type") != "dhcp":
        plug(topo, c, host)


def probe(nl, parent: int, mode, flag) -> None:
    kind, native_mode, native_flag = NATIVE[mode]
    NATIVE_PROBES[kind](nl, parent, native_mode, native_flag)
