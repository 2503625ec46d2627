"""IF-MIB ifTable/ifXTable for every interface of the daemon's network namespace.

Every link the appliance has is served, the management port as well as the datapath's
interfaces: an NMS graphs them all. They come from the operational-state snapshot
(appliance/snapshot.py), whose thread reads them through netlink in the daemon's own
namespace, never from /sys/class/net: a daemon entered into a namespace with
`nsenter --net` still sees the host's sysfs, where the same names (lo, eth0) are the
host's interfaces and counters. A request reads the snapshot only (no netlink call on the
event loop).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
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
IFF_UP = 1
# ARPHRD_* -> IANAifType: ether -> ethernetCsmacd, loopback -> softwareLoopback, else other.
ARPHRD_TO_IFTYPE = {1: 6, 772: 24}
OPERSTATE = {
    "up": 1,
    "down": 2,
    "testing": 3,
    "unknown": 4,
    "dormant": 5,
    "notpresent": 6,
    "lowerlayerdown": 7,
}
Links = Mapping[str, Mapping[str, Any]]
# What a link without some attribute reads as.
DEFAULTS: dict[str, Any] = {
    "name": "", "mtu": 0, "alias": "",
    **{c: 0 for c in ("rx_bytes", "rx_packets", "rx_errors", "rx_dropped", "multicast",
                      "tx_bytes", "tx_packets", "tx_errors", "tx_dropped")},
}  # fmt: skip


def _mac(text: str) -> bytes:
    try:
        return bytes.fromhex(text.replace(":", ""))
    except ValueError:
        return b""


class Interfaces:
    """The links of the latest snapshot, by ifIndex.

    rows() takes the snapshot's links and keeps that list: the cells of one request (read
    after one rows() call) all come from the same reading, even if the snapshot moves on.
    """

    def __init__(self, links: Callable[[], Links]) -> None:
        self._links = links
        self._seen: Links | None = None
        self._rows: list[tuple[int, ...]] = []
        self._infos: list[Mapping[str, Any]] = []

    def rows(self) -> list[tuple[int, ...]]:
        current = self._links()
        if current is not self._seen:
            found = sorted(
                (int(i.get("index", 0)), i) for i in current.values() if int(i.get("index", 0)) > 0
            )
            self._rows = [(index,) for index, _ in found]
            self._infos = [i for _, i in found]
            self._seen = current
        return self._rows

    def info(self, pos: int) -> dict[str, Any]:
        link = self._infos[pos]
        flags = int(link.get("flags", 0))
        oper = OPERSTATE.get(str(link.get("operstate", "unknown")), 4)
        admin = 1 if flags & IFF_UP else 2
        # veth/lo report "unknown" while passing traffic; IF-MIB expects up then.
        if oper == 4 and admin == 1 and int(link.get("carrier", 0)) == 1:
            oper = 1
        return {
            **DEFAULTS,
            **link,
            "type": ARPHRD_TO_IFTYPE.get(int(link.get("type", 0)), 1),
            "mac": _mac(str(link.get("mac", ""))),
            "speed": int(link.get("speed-mbps", 0) or 0),
            "admin": admin,
            "oper": oper,
        }

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
