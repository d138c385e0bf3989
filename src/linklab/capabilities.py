"""What this machine can do: link kinds and modes the kernel creates, and tools installed.

Each kind/mode is tried once per process in a scratch namespace (EOPNOTSUPP: the kernel lacks
it). ``linklab doctor`` prints the table; tests skip with the exact reason.
"""

from __future__ import annotations

import argparse
import errno
import itertools
import platform
import shutil
from functools import cache

from linklab import kinds
from linklab.netns import NetNS
from linklab.nl import NetlinkError
from linklab.ownership import Run

KCONFIG = {"veth": "CONFIG_VETH", "bridge": "CONFIG_BRIDGE", "macvlan": "CONFIG_MACVLAN",
           "ipvlan": "CONFIG_IPVLAN"}
# tool -> (Debian package, what needs it)
TOOLS = {
    "nft": ("nftables", "host-netfilter cells"),
    "iperf3": ("iperf3", "throughput benchmarks"),
    "sockperf": ("sockperf", "latency benchmarks"),
    "kea-dhcp4": ("kea-dhcp4-server", "DHCP (Kea)"),
    "dnsmasq": ("dnsmasq-base", "DHCP (dnsmasq)"),
    "busybox": ("busybox-static", "DHCP client udhcpc"),
    "dhclient": ("isc-dhcp-client", "DHCP client dhclient"),
    "ethtool": ("ethtool", "offload settings in results"),
    "qemu-system-x86_64": ("qemu-system-x86", "VM leg"),
    "chromium": ("chromium", "report browser test"),
    "vagrant": ("vagrant", "Vagrantfile validation"),
    "clang": ("clang", "BPF programs (veth-bpf, netkit-*-bpf)"),
    "bpftool": ("bpftool", "BPF maps (veth-bpf, netkit-*-bpf)"),
}


def variants(kind: str) -> list[tuple[str | None, str | None]]:
    mod = kinds.REGISTRY[kind]
    return list(itertools.product(mod.MODES or (None,), mod.FLAGS or (None,)))


@cache
def link_support() -> dict[tuple[str, str | None, str | None], str | None]:
    """(kind, mode, flag) -> None when the kernel creates it, else the reason it cannot."""
    run = Run()
    out: dict[tuple[str, str | None, str | None], str | None] = {}
    try:
        run.own_namespace(run.ns_name("probe"))
        ns = NetNS(run.ns_name("probe"))
        try:
            parent = 1000
            ns.nl.link_add("llparent", parent, "veth", peer={"ifname": "llparent1"})
            for kind, mod in kinds.REGISTRY.items():
                if hasattr(mod, "native"):      # made by a plugin: its native link's support
                    continue
                for mode, flag in variants(kind):
                    try:
                        mod.probe(ns.nl, parent, mode, flag)
                        needs = getattr(mod, "needs", None)   # tools beyond the link
                        out[(kind, mode, flag)] = needs(mode, flag) if needs else None
                    except NetlinkError as exc:
                        if exc.errno == errno.EOPNOTSUPP:
                            out[(kind, mode, flag)] = (f"kernel lacks {kind} "
                                                       f"({KCONFIG.get(kind) or mod.KCONFIG})")
                        else:
                            label = "-".join(p for p in (kind, mode, flag) if p)
                            out[(kind, mode, flag)] = f"kernel refuses {label}: {exc.strerror}"
                    for name in ("llprobe1", "llprobe0"):
                        if ns.ipr.link_lookup(ifname=name):
                            ns.ipr.link("del", ifname=name)
        finally:
            ns.close()
            run.disown_namespace(ns.name)
    finally:
        run.close()
    return out


def missing_link(kind: str, mode: str | None, flag: str | None) -> str | None:
    """Why this kernel cannot build (kind, mode, flag), or None."""
    mod = kinds.REGISTRY[kind]
    if hasattr(mod, "native"):                  # cni: the native link, then the plugin
        return missing_link(*mod.native(mode, flag)) or mod.missing_plugin(mode)
    if mod.FLAGS and flag is None:
        flag = mod.FLAGS[0]
    return link_support().get((kind, mode, flag), f"unknown link {kind}")


def missing_tool(tool: str) -> str | None:
    """Why ``tool`` cannot be used, naming its Debian package, or None."""
    if shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/sbin"):
        return None
    package, _ = TOOLS.get(tool, (tool, ""))
    return f"{tool} is not installed (Debian package {package})"


def cli_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def cli_main(args: argparse.Namespace) -> int:
    print(f"kernel {platform.release()}")
    print(f"{'link':<24} {'status'}")
    for (kind, mode, flag), why in link_support().items():
        label = "-".join(p for p in (kind, mode, flag) if p)
        print(f"{label:<24} {'ok' if why is None else why}")
    print(f"\n{'tool':<24} {'status':<40} used for")
    for tool, (_pkg, purpose) in TOOLS.items():
        why = missing_tool(tool)
        print(f"{tool:<24} {'ok' if why is None else why:<40} {purpose}")
    return 0
