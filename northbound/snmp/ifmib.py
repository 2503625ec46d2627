"""IF-MIB ifTable/ifXTable for the datapath interfaces, read from /sys/class/net.

Only the interfaces named in the config (`datapath/interface`) are served: those are the
ones an NMS graphs for a load balancer, and it keeps management and other host interfaces
out of the view. An interface missing from this network namespace (moved into another one,
or not created yet) is skipped, not shown with zeros, so the NMS sees a row disappear
rather than a counter reset.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from northbound.snmp import ber
from northbound.snmp.tree import Table

MIB2 = (1, 3, 6, 1, 2, 1)
IF_GROUP = (*MIB2, 2)  # ifNumber is IF_GROUP.1.0
IF_ENTRY = (*MIB2, 2, 2, 1)
IFX_ENTRY = (*MIB2, 31, 1, 1, 1)

IF_COLUMNS = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 16, 17, 19, 20)
IFX_COLUMNS = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 15, 18)

U32 = 2**32 - 1
# /sys/class/net/<if>/type (ARPHRD_*) -> IANAifType.
ARPHRD_TO_IFTYPE = {1: 6, 772: 24, 65534: 1}  # ether, loopback, none (tun) -> other
OPERSTATE = {
    "up": 1,
    "down": 2,
    "testing": 3,
    "unknown": 4,
    "dormant": 5,
    "notpresent": 6,
    "lowerlayerdown": 7,
}
STATS = (
    "rx_bytes",
    "rx_packets",
    "rx_errors",
    "rx_dropped",
    "multicast",
    "tx_bytes",
    "tx_packets",
    "tx_errors",
    "tx_dropped",
)


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def _int(text: str, default: int = 0) -> int:
    try:
        return int(text, 0)
    except ValueError:
        return default


class Interfaces:
    """The configured datapath interfaces present here, each read at most once a second."""

    def __init__(
        self, names: Sequence[str], root: Path = Path("/sys/class/net"), ttl: float = 1.0
    ) -> None:
        self.names = list(names)
        self.root = root
        self.ttl = ttl
        self._rows_at = 0.0
        self._rows: list[tuple[int, ...]] = []
        self._refs: list[str] = []
        self._stats: dict[str, tuple[float, dict[str, Any]]] = {}

    def rows(self) -> list[tuple[int, ...]]:
        now = time.monotonic()
        if now - self._rows_at >= self.ttl:
            found = []
            for name in self.names:
                index = _int(_read(self.root / name / "ifindex"), -1)
                if index > 0:
                    found.append(((index,), name))
            found.sort()
            self._rows = [r for r, _ in found]
            self._refs = [n for _, n in found]
            self._rows_at = now
        return self._rows

    def info(self, pos: int) -> dict[str, Any]:
        name = self._refs[pos]
        now = time.monotonic()
        hit = self._stats.get(name)
        if hit is not None and now - hit[0] < self.ttl:
            return hit[1]
        base = self.root / name
        stats = {s: _int(_read(base / "statistics" / s)) for s in STATS}
        flags = _int(_read(base / "flags"))
        info = {
            "name": name,
            "index": self._rows[pos][0],
            "type": ARPHRD_TO_IFTYPE.get(_int(_read(base / "type")), 1),
            "mtu": _int(_read(base / "mtu")),
            # speed is in Mb/s, -1 or unreadable for virtual interfaces.
            "speed": max(_int(_read(base / "speed"), 0), 0),
            "mac": bytes.fromhex(_read(base / "address").replace(":", ""))
            if _read(base / "address")
            else b"",
            "admin": 1 if flags & 1 else 2,  # IFF_UP
            "oper": OPERSTATE.get(_read(base / "operstate"), 4),
            "alias": _read(base / "ifalias"),
            **stats,
        }
        # veth/lo report "unknown" while passing traffic; IF-MIB expects up then.
        if info["oper"] == 4 and info["admin"] == 1 and _read(base / "carrier") == "1":
            info["oper"] = 1
        self._stats[name] = (now, info)
        return info

    def if_cell(self, col: int, pos: int) -> Any:
        i = self.info(pos)
        ucast_in = max(i["rx_packets"] - i["multicast"], 0)
        values = {
            1: lambda: ber.integer(i["index"]),
            2: lambda: ber.octets(i["name"]),
            3: lambda: ber.integer(i["type"]),
            4: lambda: ber.integer(i["mtu"]),
            5: lambda: ber.gauge32(min(i["speed"] * 1_000_000, U32)),
            6: lambda: ber.octets(i["mac"]),
            7: lambda: ber.integer(i["admin"]),
            8: lambda: ber.integer(i["oper"]),
            9: lambda: ber.timeticks(0),
            # The 32-bit counters wrap, as IF-MIB defines them; the HC twins do not.
            10: lambda: ber.counter32(i["rx_bytes"] & U32),
            11: lambda: ber.counter32(ucast_in & U32),
            13: lambda: ber.counter32(i["rx_dropped"] & U32),
            14: lambda: ber.counter32(i["rx_errors"] & U32),
            16: lambda: ber.counter32(i["tx_bytes"] & U32),
            17: lambda: ber.counter32(i["tx_packets"] & U32),
            19: lambda: ber.counter32(i["tx_dropped"] & U32),
            20: lambda: ber.counter32(i["tx_errors"] & U32),
        }
        return values[col]()

    def ifx_cell(self, col: int, pos: int) -> Any:
        i = self.info(pos)
        ucast_in = max(i["rx_packets"] - i["multicast"], 0)
        # Linux has no per-interface broadcast or outgoing multicast count: report 0.
        values = {
            1: lambda: ber.octets(i["name"]),
            2: lambda: ber.counter32(i["multicast"] & U32),
            3: lambda: ber.counter32(0),
            4: lambda: ber.counter32(0),
            5: lambda: ber.counter32(0),
            6: lambda: ber.counter64(i["rx_bytes"]),
            7: lambda: ber.counter64(ucast_in),
            8: lambda: ber.counter64(i["multicast"]),
            9: lambda: ber.counter64(0),
            10: lambda: ber.counter64(i["tx_bytes"]),
            11: lambda: ber.counter64(i["tx_packets"]),
            12: lambda: ber.counter64(0),
            13: lambda: ber.counter64(0),
            15: lambda: ber.gauge32(min(i["speed"], U32)),
            18: lambda: ber.octets(i["alias"]),
        }
        return values[col]()

    def tables(self) -> list[Table]:
        return [
            Table(IF_GROUP, (1,), lambda: [(0,)], lambda c, p: ber.integer(len(self.rows()))),
            Table(IF_ENTRY, IF_COLUMNS, self.rows, self.if_cell),
            Table(IFX_ENTRY, IFX_COLUMNS, self.rows, self.ifx_cell),
        ]
