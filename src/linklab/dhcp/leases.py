"""Read DHCP servers' lease records: Kea's memfile CSV and dnsmasq's lease file.

Both parsers return the *current* IPv4 leases as :class:`Lease` records with the identifier
the server stored; a malformed file raises :class:`LeaseFileError` naming the file and line.
"""

from __future__ import annotations

import csv
import io
import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MAC_RE = re.compile(r"^([0-9a-f]{2}:){5}[0-9a-f]{2}$")
HEX_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2})*$")
KEA_COLUMNS = ("address", "hwaddr", "client_id", "valid_lifetime", "expire", "state")
KEA_STATE_DEFAULT = 0   # 1 = declined, 2 = expired-reclaimed


class LeaseFileError(ValueError):
    """A lease file cannot be read; the message names the file and the line."""

    def __init__(self, path: str, line: int | None, message: str) -> None:
        where = f"{path}:{line}" if line is not None else path
        super().__init__(f"{where}: {message}")


@dataclass(frozen=True)
class Lease:
    address: ipaddress.IPv4Address
    hwaddr: str                 # lower-case aa:bb:cc:dd:ee:ff
    client_id: str | None       # lower-case colon hex as stored, None when none was stored
    expire_s: int               # unix time the lease ends


def _hex_id(value: str, path: str, line: int, field: str) -> str | None:
    value = value.strip().lower()
    if value in ("", "*"):
        return None
    if not HEX_RE.match(value):
        raise LeaseFileError(path, line, f"{field} {value!r} is not colon-separated hex")
    return value


def _mac(value: str, path: str, line: int) -> str:
    value = value.strip().lower()
    if not MAC_RE.match(value):
        raise LeaseFileError(path, line, f"hardware address {value!r} is not an Ethernet MAC")
    return value


def _int(value: str, path: str, line: int, field: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise LeaseFileError(path, line, f"{field} {value!r} is not an integer") from None


def _addr(value: str, path: str, line: int) -> ipaddress.IPv4Address:
    try:
        return ipaddress.IPv4Address(value.strip())
    except ValueError:
        raise LeaseFileError(path, line, f"address {value!r} is not IPv4") from None


def parse_kea_csv(text: str, path: str = "<kea memfile>") -> list[Lease]:
    """Kea's memfile is append-only: the last row of an address wins; a row with
    valid_lifetime 0 is a deletion (release), state != 0 is declined or reclaimed."""
    reader = csv.reader(io.StringIO(text))
    try:
        return _kea_leases(reader, path)
    except csv.Error as exc:      # a field over csv's limit (128 KiB), a NUL on older Pythons
        raise LeaseFileError(path, reader.line_num, f"not a CSV file: {exc}") from None


def _kea_leases(reader: Any, path: str) -> list[Lease]:
    try:
        header = next(reader)
    except StopIteration:
        raise LeaseFileError(path, None, "empty file (no CSV header)") from None
    missing = [c for c in KEA_COLUMNS if c not in header]
    if missing:
        raise LeaseFileError(path, 1, f"not a Kea lease4 file: header lacks {missing[0]!r}")
    col = {name: header.index(name) for name in KEA_COLUMNS}
    latest: dict[ipaddress.IPv4Address, Lease | None] = {}
    for row in reader:
        line = reader.line_num
        if not row:
            continue
        if len(row) < len(header):
            raise LeaseFileError(path, line, f"{len(row)} fields, the header has {len(header)}")
        address = _addr(row[col["address"]], path, line)
        lifetime = _int(row[col["valid_lifetime"]], path, line, "valid_lifetime")
        state = _int(row[col["state"]], path, line, "state")
        if lifetime == 0 or state != KEA_STATE_DEFAULT:
            latest[address] = None
            continue
        latest[address] = Lease(address, _mac(row[col["hwaddr"]], path, line),
                                _hex_id(row[col["client_id"]], path, line, "client_id"),
                                _int(row[col["expire"]], path, line, "expire"))
    return sorted((lease for lease in latest.values() if lease), key=lambda le: le.address)


def parse_dnsmasq(text: str, path: str = "<dnsmasq leases>") -> list[Lease]:
    """dnsmasq rewrites its whole file: ``EXPIRY MAC ADDRESS HOSTNAME CLIENT-ID`` per line
    (``*`` for no hostname / no client-id); a ``duid`` line starts the DHCPv6 part."""
    out = []
    for line, raw in enumerate(text.splitlines(), start=1):
        fields = raw.split()
        if not fields:
            continue
        if fields[0] == "duid":
            break
        if len(fields) != 5:
            raise LeaseFileError(path, line, f"{len(fields)} fields, a dnsmasq lease line has 5 "
                                             "(expiry mac address hostname client-id)")
        expire, mac, address, _hostname, client_id = fields
        out.append(Lease(_addr(address, path, line), _mac(mac, path, line),
                         _hex_id(client_id, path, line, "client-id"),
                         _int(expire, path, line, "expiry")))
    return sorted(out, key=lambda le: le.address)


def read_leases(path: Path | str, fmt: str) -> list[Lease]:
    """The current leases in ``path``; ``fmt`` is ``kea`` or ``dnsmasq``. A file the server
    has not created yet holds no lease."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    if fmt == "kea":
        return parse_kea_csv(text, str(path)) if text else []
    if fmt == "dnsmasq":
        return parse_dnsmasq(text, str(path))
    raise ValueError(f"unknown lease file format {fmt!r} (known: kea, dnsmasq)")
