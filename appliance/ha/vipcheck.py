"""Is an instance's VIP answered by another node? A probe on the wire, every interval: ARP
for an IPv4 VIP, a neighbour solicitation for an IPv6 one.

Why: VRRP alone makes two masters when only the adverts are lost (a filter, a congested
link) while both nodes still reach the witness. So a node may be master only while no
other node answers for the instance's VIP: a node that sees another MAC answer an ARP probe
(RFC 5227: sender address 0.0.0.0, so no neighbour cache is touched) for the VIP holds its
instance in FAULT (a keepalived track file, weight 0) until that stops. When a node that
is master itself sees another answer for several rounds in a row (two masters: not the
moment of a handover, when the old master has not yet dropped the VIP), the one with the
lower MAC yields, so exactly one stays.

IPv6: the probe is a neighbour solicitation from the unspecified address (::) to the VIP's
solicited-node group, as duplicate address detection sends it (RFC 4862 5.4.2): a node that
holds the VIP answers with an advertisement to all nodes, and no neighbour cache learns
anything. It matters most when a node comes back: its own IPv6 address is tentative for a
while (DAD), the peer's unicast VRRP adverts to it are not delivered meanwhile, and VRRP
alone would make it a second master for the IPv6 instance.

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
ETH_P_IPV6 = 0x86DD
ICMP6_NS, ICMP6_NA = 135, 136
ALL_NODES_MAC = b"\x33\x33\x00\x00\x00\x01"
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


def _solicited_node(vip: bytes) -> tuple[bytes, bytes]:
    """(group address, its MAC) of a VIP's solicited-node multicast group."""
    group = bytes.fromhex("ff0200000000000000000001ff") + vip[13:]
    return group, b"\x33\x33" + group[12:]


def _icmp6_checksum(src: bytes, dst: bytes, icmp: bytes) -> int:
    data = src + dst + struct.pack("!I3xB", len(icmp), 58) + icmp
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ns_probe_frame(mac: bytes, vip: str) -> bytes:
    """Ethernet + IPv6 + ICMPv6 neighbour solicitation for `vip` from :: (a DAD probe)."""
    target = ipaddress.IPv6Address(vip).packed
    group, group_mac = _solicited_node(target)
    src = bytes(16)
    icmp = struct.pack("!BBH4x16s", ICMP6_NS, 0, 0, target)
    icmp = icmp[:2] + struct.pack("!H", _icmp6_checksum(src, group, icmp)) + icmp[4:]
    ip6 = struct.pack("!IHBB16s16s", 6 << 28, len(icmp), 58, 255, src, group)
    return group_mac + mac + struct.pack("!H", ETH_P_IPV6) + ip6 + icmp


# Classic BPF for the IPv6 socket: neighbour advertisements only (IPv6, next header ICMPv6,
# type 136), so the VIP's own traffic never reaches this thread.
_NA_FILTER = [(0x28, 0, 0, 12), (0x15, 0, 5, ETH_P_IPV6), (0x30, 0, 0, 20), (0x15, 0, 3, 58),
              (0x30, 0, 0, 54), (0x15, 0, 1, ICMP6_NA), (0x06, 0, 0, 256), (0x06, 0, 0, 0)]
SO_ATTACH_FILTER = 26


def _only_advertisements(sock: socket.socket) -> None:
    import ctypes

    prog = ctypes.create_string_buffer(b"".join(struct.pack("HBBI", *i) for i in _NA_FILTER))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER,
                    struct.pack("HL", len(_NA_FILTER), ctypes.addressof(prog)))  # fmt: skip


def parse_na(frame: bytes) -> tuple[str, bytes] | None:
    """(target address, sender MAC) of a neighbour advertisement; None for anything else
    (an IPv6 header with extension headers included: advertisements carry none)."""
    if len(frame) < 14 + 40 + 24 or frame[12:14] != b"\x86\xdd":
        return None
    if frame[14 + 6] != 58 or frame[14 + 40] != ICMP6_NA:
        return None
    target = frame[14 + 40 + 8 : 14 + 40 + 24]
    return str(ipaddress.IPv6Address(target)), frame[6:12]


class VipCheck:
    def __init__(self, targets: list[Target], interval: float,
                 on_round: Callable[[str, bytes | None], None]) -> None:  # fmt: skip
        """`on_round(instance, other_mac)` after every round, for every instance: the MAC
        of another node that answered for its VIP, or None. The caller judges (how many
        rounds make a verdict is its policy)."""
        self.targets = [Target(t.instance, t.interface, str(ipaddress.ip_address(t.vip)))
                        for t in targets]  # fmt: skip
        self.interval = interval
        self.on_round = on_round
        self.macs: dict[str, bytes] = {}  # interface -> our MAC
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._socks: dict[tuple[str, int], socket.socket] = {}  # (interface, ethertype)

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

    def _sock(self, ifname: str, ethertype: int) -> socket.socket:
        sock = self._socks.get((ifname, ethertype))
        if sock is None:
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ethertype))
            if ethertype == ETH_P_IPV6:
                _only_advertisements(sock)
            sock.bind((ifname, ethertype))
            sock.setblocking(False)
            self.macs[ifname] = sock.getsockname()[4][:6]
            self._socks[(ifname, ethertype)] = sock
        return sock

    def _run(self) -> None:
        while not self._stop.is_set():
            answered: dict[str, bytes] = {}
            deadline = time.monotonic() + self.interval
            wanted: dict[tuple[str, str], str] = {}
            for t in self.targets:
                v6 = ":" in t.vip
                ethertype = ETH_P_IPV6 if v6 else ETH_P_ARP
                try:
                    sock = self._sock(t.interface, ethertype)
                    make = ns_probe_frame if v6 else probe_frame
                    sock.send(make(self.macs[t.interface], t.vip))
                    wanted[(t.interface, t.vip)] = t.instance
                except OSError as exc:  # no such interface (yet): try next round
                    self._socks.pop((t.interface, ethertype), None)
                    log.debug("ha: vip probe failed", extra={"interface": t.interface,
                                                             "error": str(exc)})  # fmt: skip
            while (left := deadline - time.monotonic()) > 0 and not self._stop.is_set():
                socks = list(self._socks.items())
                if not socks:
                    self._stop.wait(left)
                    break
                ready, _, _ = select.select([s for _, s in socks], [], [], left)
                for key, sock in socks:
                    if sock in ready:
                        self._read(key, sock, wanted, answered, 1)
            # What arrived in time but was not read (this thread was not scheduled: a busy
            # machine) still counts: a round is silent only if nothing came back.
            for key, sock in list(self._socks.items()):
                self._read(key, sock, wanted, answered, 64)
            self._judge(answered)

    def _read(self, key: tuple[str, int], sock: socket.socket,
              wanted: dict[tuple[str, str], str], answered: dict[str, bytes],
              most: int) -> None:  # fmt: skip
        """Up to `most` queued frames of one socket: the answers to this round's probes."""
        ifname, ethertype = key
        parse = parse_na if ethertype == ETH_P_IPV6 else parse_reply
        for _ in range(most):
            try:
                frame, addr = sock.recvfrom(256)
            except (BlockingIOError, OSError):
                return
            if addr[2] == PACKET_OUTGOING:
                continue
            reply = parse(frame)
            if reply is None or reply[1] == self.macs.get(ifname):
                continue
            instance = wanted.get((ifname, reply[0]))
            if instance is not None:
                answered[instance] = reply[1]

    def _judge(self, answered: dict[str, bytes]) -> None:
        for t in self.targets:
            try:
                self.on_round(t.instance, answered.get(t.instance))
            except Exception:
                log.exception("ha: vip check callback failed")
