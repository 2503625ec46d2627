"""The idle reset: a TCP session that reached its inactivity timeout is reset towards both
ends (the client and the endpoint), not dropped silently, so neither keeps a dead
ESTABLISHED socket, and the client's next packet is not balanced anew to an endpoint that
would answer it with a reset of its own.

The conntrack sweep (conntrack.py) finds the expired flows; each ORIG entry holds the
client's last segment as the datapath saw it (bpf/lib/tcpstate.h): ``tcp_seq``, the
client's next sequence number, and ``tcp_ack``, what the client acknowledged, i.e. the
endpoint's next sequence number. A receiver accepts an RST whose sequence number is the
one it expects next (RFC 5961 3.2), so:

- towards the endpoint: (snat, snat port) -> (endpoint, port), seq = client's tcp_seq;
- towards the client: (VIP, port) -> (client, port), seq = the client's tcp_ack.

Both are sent as raw IP packets from the datapath's network namespace and routed by the
kernel (they leave through the stack, not through the TC program). DSR: the endpoint holds
the VIP and knows the flow as (client -> VIP), so its reset is the client's own segment
with seq = tcp_seq, (client, port) -> (VIP, port), delivered the way the datapath delivers
the client's packets: L2-DSR as an Ethernet frame to the endpoint's MAC (the next hop the
ORIG entry cached: interface and both MACs) on an AF_PACKET socket; L3-DSR inside an outer
IPv4/IPv6 header from the tunnel's source (the entry's snat) to the endpoint, routed like
the others. A DSR flow whose next hop was never cached (it took only the slow path) gets
the client's reset alone. This is control-plane work once per expired session, never per
packet.
"""

from __future__ import annotations

import ctypes as ct
import logging
import os
import socket
import struct
import threading
from dataclasses import dataclass
from typing import Any

from appliance.checksum import internet_checksum

log = logging.getLogger(__name__)

RST_ACK = 0x14  # TCP flags RST | ACK
CLONE_NEWNET = 0x40000000


@dataclass(frozen=True)
class IdleSession:
    """What the reset needs of an expired TCP flow (addresses: 16-byte struct addr bytes,
    ports in host order)."""

    family: int
    client: bytes
    client_port: int
    vip: bytes
    vip_port: int
    snat: bytes
    snat_port: int
    ep: bytes
    ep_port: int
    seq: int  # the client's next sequence number
    ack: int  # what the client acknowledged (the endpoint's next sequence number)
    dsr: bool
    ep_family: int = 0  # the endpoint side's family if not the client's (NAT64/NAT46)
    ipip: bool = False  # L3-DSR: the endpoint is reached through the tunnel
    nh_ifindex: int = 0  # the ORIG direction's cached next hop (0: none)
    nh_macs: bytes = b""  # its destination and source MACs (12 bytes)


def rst_packet(family: int, src: bytes, sport: int, dst: bytes, dport: int, seq: int,
               ack: int) -> bytes:  # fmt: skip
    """An IPv4/IPv6 packet holding a TCP RST|ACK with valid checksums."""
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF,
                      5 << 4, RST_ACK, 0, 0, 0)  # fmt: skip
    if family == 4:
        s, d = src[:4], dst[:4]
        pseudo = s + d + struct.pack("!BBH", 0, socket.IPPROTO_TCP, len(tcp))
    else:
        s, d = src, dst
        pseudo = s + d + struct.pack("!I3xB", len(tcp), socket.IPPROTO_TCP)
    tcp = tcp[:16] + struct.pack("!H", internet_checksum(pseudo + tcp)) + tcp[18:]
    if family == 4:
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 0, 0x4000, 64,
                         socket.IPPROTO_TCP, 0, s, d)  # fmt: skip
        ip = ip[:10] + struct.pack("!H", internet_checksum(ip)) + ip[12:]
        return ip + tcp
    return struct.pack("!IHBB16s16s", 6 << 28, len(tcp), socket.IPPROTO_TCP, 64, s, d) + tcp


def tunnelled(family: int, src: bytes, dst: bytes, inner: bytes) -> bytes:
    """``inner`` inside an outer IPv4 (protocol 4) / IPv6 (next header 41) header."""
    if family == 4:
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(inner), 0, 0x4000, 64, 4, 0,
                         src[:4], dst[:4])  # fmt: skip
        return ip[:10] + struct.pack("!H", internet_checksum(ip)) + ip[12:] + inner
    return struct.pack("!IHBB16s16s", 6 << 28, len(inner), 41, 64, src, dst) + inner


def _in_netns(netns: str | None, fn: Any) -> Any:
    """``fn()`` run on a thread that entered ``netns`` (sockets it opens stay there)."""
    if netns is None:
        return fn()
    out: dict[str, Any] = {}

    def run() -> None:
        libc = ct.CDLL(None, use_errno=True)
        fd = os.open(f"/run/netns/{netns}", os.O_RDONLY)
        try:
            if libc.setns(fd, CLONE_NEWNET) != 0:
                raise OSError(ct.get_errno(), f"setns {netns}")
            out["value"] = fn()
        except BaseException as exc:  # handed to the caller's thread
            out["error"] = exc
        finally:
            os.close(fd)

    t = threading.Thread(target=run, name="tcp-reset-netns")
    t.start()
    t.join()
    if "error" in out:
        raise out["error"]
    return out["value"]


class Resetter:
    """Raw IPv4/IPv6 sockets in the datapath's namespace, opened on first use."""

    def __init__(self, netns: str | None = None) -> None:
        self.netns = netns
        self._socks: dict[int, socket.socket] = {}
        self.sent = 0
        self.failed = 0

    def _sock(self, family: int) -> socket.socket:
        s = self._socks.get(family)
        if s is None:
            af = socket.AF_INET if family == 4 else socket.AF_INET6
            # IPPROTO_RAW: we write the IP header (IP_HDRINCL; IPv6 alike since Linux 4.5).
            s = _in_netns(self.netns, lambda: socket.socket(af, socket.SOCK_RAW,
                                                            socket.IPPROTO_RAW))  # fmt: skip
            s.setblocking(False)
            self._socks[family] = s
        return s

    def _packet_sock(self) -> socket.socket:
        s = self._socks.get(0)
        if s is None:  # AF_PACKET: frames written whole, sent on the interface given
            s = _in_netns(self.netns, lambda: socket.socket(socket.AF_PACKET, socket.SOCK_RAW))
            s.setblocking(False)
            self._socks[0] = s
        return s

    def _send_ip(self, family: int, pkt: bytes, dst: bytes) -> int:
        af = socket.AF_INET if family == 4 else socket.AF_INET6
        addr = socket.inet_ntop(af, dst[:4] if family == 4 else dst)
        try:
            self._sock(family).sendto(pkt, (addr, 0))
            return 1
        except OSError as exc:
            self.failed += 1
            log.debug("idle reset not sent", extra={"to": addr, "error": str(exc)})
            return 0

    def _send_frame(self, ifindex: int, macs: bytes, family: int, pkt: bytes) -> int:
        ethertype = 0x0800 if family == 4 else 0x86DD
        try:
            # AF_PACKET addresses name the interface: the name the index has in the
            # datapath's namespace (looked up there; the socket sends there too).
            ifname = _in_netns(self.netns, lambda: socket.if_indextoname(ifindex))
            frame = macs + struct.pack("!H", ethertype) + pkt
            self._packet_sock().sendto(frame, (ifname, ethertype))
            return 1
        except OSError as exc:
            self.failed += 1
            log.debug("idle reset not sent", extra={"ifindex": ifindex, "error": str(exc)})
            return 0

    def reset(self, sessions: list[IdleSession]) -> int:
        """Send each session's RSTs; returns how many packets left."""
        sent = 0
        for x in sessions:
            sent += self._send_ip(x.family, rst_packet(x.family, x.vip, x.vip_port, x.client,
                                                       x.client_port, x.ack, x.seq), x.client)
            if not x.dsr:
                fam = x.ep_family or x.family
                sent += self._send_ip(fam, rst_packet(fam, x.snat, x.snat_port, x.ep, x.ep_port,
                                                      x.seq, x.ack), x.ep)  # fmt: skip
                continue
            # DSR: the client's own segment, as the endpoint knows the flow.
            rst = rst_packet(x.family, x.client, x.client_port, x.vip, x.vip_port, x.seq, x.ack)
            if x.ipip:
                sent += self._send_ip(x.family, tunnelled(x.family, x.snat, x.ep, rst), x.ep)
            elif x.nh_ifindex and len(x.nh_macs) == 12:
                sent += self._send_frame(x.nh_ifindex, x.nh_macs, x.family, rst)
        self.sent += sent
        return sent

    def close(self) -> None:
        for s in self._socks.values():
            s.close()
        self._socks.clear()
