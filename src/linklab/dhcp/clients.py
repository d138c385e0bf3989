"""Real DHCPv4 clients (busybox udhcpc, ISC dhclient) run inside a container namespace.

Each client gets its own script that only runs ``ip addr add`` for the bound address inside
the namespace it runs in (never resolv.conf, routes or anything on the host), its own config,
lease and pid files in a run-owned temporary directory, and a bounded number of tries. The
result says what the client did: its exit status, the address it configured (read back via
netlink in the namespace) and how long it took.
"""

from __future__ import annotations

import ipaddress
import re
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from linklab.cmd import CmdError, bkg, cmd, require
from linklab.netns import NetNS
from linklab.ownership import Run
from linklab.suite import time_scale

SCALE = time_scale()
CLIENTS = ("udhcpc", "dhclient")
SCRIPT_WAIT_S = 1.0 * SCALE   # from dhclient's DHCPACK to its script's address
NO_ID = "none"           # send no client identifier (option 61)
MAC_ID = "mac"           # the client's default identifier derived from the MAC: 01 + MAC
ID_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2})+$")
LEASED_RE = {"udhcpc": re.compile(r"lease of ([0-9.]+) obtained"),
             "dhclient": re.compile(r"DHCPACK of ([0-9.]+)")}


class ClientError(RuntimeError):
    """A DHCP client could not be run (bad argument or a broken installation)."""


@dataclass(frozen=True)
class ClientResult:
    client: str
    ns: str
    ifname: str
    returncode: int | None       # None: still running when stopped (dhclient after binding)
    address: ipaddress.IPv4Interface | None
    seconds: float
    log: str

    @property
    def bound(self) -> bool:
        """The client configured an address."""
        return self.address is not None

    @property
    def leased(self) -> ipaddress.IPv4Address | None:
        """The address the server granted, from the client's own log (also when configuring
        it failed afterwards, e.g. ipvlan refusing an address a sibling slave holds)."""
        match = LEASED_RE[self.client].search(self.log)
        return ipaddress.IPv4Address(match.group(1)) if match else None

    def to_json(self) -> dict:
        """For the peer agent's reply (the clients of a split DHCP cell ran on node-b)."""
        return {**asdict(self), "address": str(self.address) if self.address else None}

    @classmethod
    def from_json(cls, raw: dict) -> ClientResult:
        address = raw.get("address")
        return cls(**{**raw, "address": ipaddress.IPv4Interface(address) if address else None})

    @property
    def timed_out(self) -> bool:
        """The client gave up cleanly after its bounded tries (not an error exit)."""
        if self.client == "udhcpc":
            return self.returncode == 1 and "no lease, failing" in self.log
        return self.returncode == 2 and "No DHCPOFFERS received" in self.log


def check_client_id(client_id: str) -> str:
    """``none``, ``mac`` or colon hex of at least two bytes (type byte first)."""
    if client_id in (NO_ID, MAC_ID) or ID_RE.match(client_id):
        return client_id
    raise ClientError(f"client id {client_id!r}: must be 'none', 'mac' or colon-separated "
                      "hex such as '00:6c:6c:2d:63:31'")


def ipv4_addresses(ns: NetNS, ifname: str) -> list[ipaddress.IPv4Interface]:
    """The IPv4 addresses on ``ifname`` inside ``ns``, read via netlink."""
    index = ns.ipr.link_lookup(ifname=ifname)
    if not index:
        raise ClientError(f"{ns.name}: no interface {ifname!r}")
    out = []
    for msg in ns.ipr.get_addr(family=2, index=index[0]):
        out.append(ipaddress.IPv4Interface(f"{msg.get_attr('IFA_ADDRESS')}/{msg['prefixlen']}"))
    return out


def _write_script(path: Path, body: str) -> Path:
    path.write_text(body)
    path.chmod(0o755)
    return path


def udhcpc_script(path: Path) -> Path:
    """udhcpc calls SCRIPT bound|renew with $ip, $mask (prefix length), $interface."""
    ip = require("ip", "iproute2")
    return _write_script(path, f"""#!/bin/sh
# linklab: only set the leased address inside this namespace; nothing else
case "$1" in
    bound|renew) exec {ip} addr add "$ip/$mask" dev "$interface" ;;
esac
exit 0
""")


def dhclient_script(path: Path) -> Path:
    """dhclient calls SCRIPT with $reason, $new_ip_address, $new_subnet_mask, $interface
    (and no PATH, hence the absolute path of ip)."""
    ip = require("ip", "iproute2")
    return _write_script(path, f"""#!/bin/sh
# linklab: only set the leased address inside this namespace; never resolv.conf or routes
case "$reason" in
    BOUND|RENEW|REBIND|REBOOT)
        exec {ip} addr add "$new_ip_address/$new_subnet_mask" dev "$interface" ;;
esac
exit 0
""")


def dhclient_config(client_id: str, timeout_s: int) -> str:
    """dhclient.conf: the identifier to send (if any) and a bounded wait for a lease."""
    lines = [f"timeout {timeout_s};", "retry 1;", "select-timeout 0;", "initial-interval 1;",
             "request subnet-mask;"]
    if client_id == MAC_ID:
        lines.append("send dhcp-client-identifier = hardware;")
    elif client_id != NO_ID:
        lines.append(f"send dhcp-client-identifier {client_id};")
    return "\n".join(lines) + "\n"


def run_udhcpc(ns: NetNS, ifname: str, client_id: str, workdir: Path, *, tries: int,
               broadcast: bool, interval_s: int | None = None) -> ClientResult:
    """``udhcpc -f -q -n``: one lease, then exit; exit status 1 after ``tries`` DISCOVERs,
    ``interval_s`` apart (default: 1 s scaled by LINKLAB_TIME_SCALE)."""
    interval = interval_s or max(1, round(SCALE))
    check_client_id(client_id)
    script = udhcpc_script(workdir / f"udhcpc-{ns.name}.sh")
    argv = [require("busybox", "busybox-static"), "udhcpc", "-i", ifname, "-f", "-q", "-n",
            "-t", str(tries), "-T", str(interval), "-s", str(script)]
    if client_id == NO_ID:
        argv.append("-C")
    elif client_id != MAC_ID:
        argv += ["-x", "0x3d:" + client_id.replace(":", "")]
    if broadcast:
        argv.append("-B")
    limit = (tries * interval + 5) * 2 * max(1, round(SCALE))
    t0 = time.monotonic()
    try:
        res = cmd(argv, ns=ns, timeout=limit, check=False)
    except CmdError as exc:  # timed out: udhcpc ignored its own -t/-n bound
        raise ClientError(f"udhcpc in {ns.name} did not exit within {limit}s: {exc}") from None
    seconds = time.monotonic() - t0
    addrs = ipv4_addresses(ns, ifname)
    return ClientResult("udhcpc", ns.name, ifname, res.returncode, addrs[0] if addrs else None,
                        seconds, (res.stderr + res.stdout).strip())


def run_dhclient(ns: NetNS, ifname: str, client_id: str, workdir: Path, run: Run, *,
                 timeout_s: int, broadcast: bool) -> ClientResult:
    """``dhclient -d -1``: in the foreground, one attempt bounded by ``timeout_s``; stopped by
    PID as soon as its script has configured the address (it would stay to renew)."""
    check_client_id(client_id)
    tag = ns.name
    conf = workdir / f"dhclient-{tag}.conf"
    conf.write_text(dhclient_config(client_id, timeout_s))
    leases = workdir / f"dhclient-{tag}.leases"
    leases.touch()                               # dhclient refuses a missing -lf
    script = dhclient_script(workdir / f"dhclient-{tag}.sh")
    log_path = workdir / f"dhclient-{tag}.log"
    argv = [require("dhclient", "isc-dhcp-client"), "-4", "-d", "-1", "-v", "-cf", str(conf),
            "-lf", str(leases), "-pf", str(workdir / f"dhclient-{tag}.pid"), "-sf", str(script)]
    if broadcast:
        raise ClientError("dhclient (ISC 4.4) cannot ask for broadcast replies (no -B, no "
                          "config statement); run it without the broadcast flag")
    argv.append(ifname)
    limit = (timeout_s + 5) * 2 * max(1, round(SCALE))  # a hang guard, scaled as udhcpc's
    t0 = time.monotonic()
    address = None
    acked: float | None = None
    with open(log_path, "w") as log, bkg(argv, ns=ns, owner=run, stdout=log, stderr=log) as proc:
        delay = 0.002
        while time.monotonic() - t0 < limit:
            addrs = ipv4_addresses(ns, ifname)
            if addrs:
                address = addrs[0]
                break
            if proc.poll() is not None:
                break
            if acked is None and "DHCPACK of " in log_path.read_text():
                acked = time.monotonic()
            if acked is not None and time.monotonic() - acked > SCRIPT_WAIT_S:
                break                       # granted, but the script did not configure it
            time.sleep(delay)
            delay = min(delay * 2, 0.02)
        seconds = time.monotonic() - t0
        returncode = proc.poll()
        if address is None and returncode is None and "DHCPACK of " not in log_path.read_text():
            raise ClientError(f"dhclient in {ns.name} neither bound nor exited within {limit}s "
                              f"(its own timeout is {timeout_s}s); log:\n"
                              f"{log_path.read_text()[-2000:]}")
    return ClientResult("dhclient", ns.name, ifname, returncode, address, seconds,
                        log_path.read_text().strip())


def run_client(client: str, ns: NetNS, ifname: str, client_id: str, workdir: Path, run: Run,
               *, attempts_s: int, broadcast: bool, scaled: bool = True) -> ClientResult:
    """Run ``client`` (udhcpc | dhclient) once in ``ns``; give up after about ``attempts_s``
    seconds (scaled by LINKLAB_TIME_SCALE unless ``scaled`` is false: a client expected to
    time out only has to show that it gives up, a slow machine changes nothing there)."""
    if client == "udhcpc":
        return run_udhcpc(ns, ifname, client_id, workdir, tries=attempts_s, broadcast=broadcast,
                          interval_s=None if scaled else 1)
    if client == "dhclient":
        return run_dhclient(ns, ifname, client_id, workdir, run,
                            timeout_s=max(1, attempts_s), broadcast=broadcast)
    raise ClientError(f"unknown DHCP client {client!r} (known: {', '.join(CLIENTS)})")


def client_workdir(run: Run) -> Path:
    return Path(run.tmpdir("dhcp-clients"))


def remove_workdir(run: Run, path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
    run.disown_path(str(path))
