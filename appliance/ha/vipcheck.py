"""Is an instance's VIP answered by another node? An ARP probe on the wire, every interval.

Why: VRRP alone makes two masters when only the adverts are lost (a filter, a congested
link) while both nodes still reach the witness. So a node may be master only while no
other node answers for the instance's VIP: a node that sees another MAC answer an ARP probe
(RFC 5227: sender address 0.0.0.0, so no neighbour cache is touched) for the VIP holds its
instance in FAULT (a keepalived track file, weight 0) until that stops. When a node that
is master itself sees another answer for several rounds in a row (two masters: not the
moment of a handover, when the old master has not yet dropped the VIP), the one with the
lower MAC yields, so exactly one stays.

IPv4 VIPs only (an IPv6 VIP would need a neighbour solicitation prober); an instance with
IPv6 VIPs is not checked.

One thread ("ha-vipcheck") sends one probe per instance per interval and reads replies on
an AF_PACKET socket per interface until the next round.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import select
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)

ETH_P_ARP = 0x0806
ARP_REQUEST, ARP_REPLY = 1, 2
BROADCAST = b"\xff" * 6
PACKET_OUTGOING = 4


@dataclass(frozen=True)
class Target:
    instance: str
    interface: str
    vip: str


def probe_frame(mac: bytes, vip: str) -> bytes:
    """Ethernet + ARP request "who has vip", sender 0.0.0.0 (an RFC 5227 probe)."""
    eth = BROADCAST + mac + struct.pack("!H", ETH_P_ARP)
    arp = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, ARP_REQUEST, mac,
                      b"\0\0\0\0", b"\0" * 6, ipaddress.IPv4Address(vip).packed)  # fmt: skip
    return eth + arp


def parse_reply(frame: bytes) -> tuple[str, bytes] | None:
    """(sender address, sender MAC) of an ARP reply; None for anything else."""
    if len(frame) < 42 or frame[12:14] != b"\x08\x06":
        return None
    _htype, ptype, _hl, _pl, op, smac, sip = struct.unpack_from("!HHBBH6s4s", frame, 14)
    if ptype != 0x0800 or op != ARP_REPLY:
        return None
    return str(ipaddress.IPv4Address(sip)), smac


class VipCheck:
    def __init__(self, targets: list[Target], interval: float,
                 on_round: Callable[[str, bytes | None], None]) -> None:  # fmt: skip
        """`on_round(instance, other_mac)` after every round, for every instance: the MAC
        of another node that answered for its VIP, or None. The caller judges (how many
        rounds make a verdict is its policy)."""
        self.targets = [t for t in targets if ":" not in t.vip]
        self.interval = interval
        self.on_round = on_round
        self.macs: dict[str, bytes] = {}  # interface -> our MAC
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._socks: dict[str, socket.socket] = {}

    def start(self) -> None:
        if self.targets:
            self._thread = threading.Thread(target=self._run, name="ha-vipcheck", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        for sock in self._socks.values():
            with contextlib.suppress(OSError):
                sock.close()
        self._socks.clear()

    def _sock(self, ifname: str) -> socket.socket:
        sock = self._socks.get(ifname)
        if sock is None:
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP))
            sock.bind((ifname, ETH_P_ARP))
            sock.setblocking(False)
            self.macs[ifname] = sock.getsockname()[4][:6]
            self._socks[ifname] = sock
        return sock

    def _run(self) -> None:
        while not self._stop.is_set():
            answered: dict[str, bytes] = {}
            deadline = time.monotonic() + self.interval
            wanted: dict[tuple[str, str], str] = {}
            for t in self.targets:
                try:
                    sock = self._sock(t.interface)
                    sock.send(probe_frame(self.macs[t.interface], t.vip))
                    wanted[(t.interface, t.vip)] = t.instance
                except OSError as exc:  # no such interface (yet): try next round
                    self._socks.pop(t.interface, None)
                    log.debug("ha: vip probe failed", extra={"interface": t.interface,
                                                             "error": str(exc)})  # fmt: skip
            while (left := deadline - time.monotonic()) > 0 and not self._stop.is_set():
                socks = list(self._socks.items())
                if not socks:
                    self._stop.wait(left)
                    break
                ready, _, _ = select.select([s for _, s in socks], [], [], left)
                for ifname, sock in socks:
                    if sock not in ready:
                        continue
                    with contextlib.suppress(BlockingIOError, OSError):
                        frame, addr = sock.recvfrom(128)
                        if addr[2] == PACKET_OUTGOING:
                            continue
                        reply = parse_reply(frame)
                        if reply is None or reply[1] == self.macs.get(ifname):
                            continue
                        instance = wanted.get((ifname, reply[0]))
                        if instance is not None:
                            answered[instance] = reply[1]
            self._judge(answered)

    def _judge(self, answered: dict[str, bytes]) -> None:
        for t in self.targets:
            try:
                self.on_round(t.instance, answered.get(t.instance))
            except Exception:
                log.exception("ha: vip check callback failed")
