"""The conntrack sync's flow record: the one place that knows how a conntrack entry
(`appliance/datapath/layout.py` `CtEntry`, mirroring `struct ct_entry`) becomes bytes on
the sync channel and back.

What travels is what another node needs to carry the flow on with the same translation:
the whole NAT tuple (client, VIP, SNAT, endpoint, their ports), protocol, family, state,
flags, the entry's timeout and how long it has been idle, and for TCP each direction's last
segment (next sequence number, acknowledgement, window: what the strict RST check and the
idle reset need, bpf/lib/tcpstate.h). NAT64/NAT46 flows (flag XLAT) carry the client and
VIP in `family` and the SNAT and endpoint addresses in the other family. Not sent, because
they are this node's own: service and endpoint ids (the receiver binds a flow to its own
ids by VIP, protocol and port), the cached next hop (interface indexes, MACs), counters,
and the monotonic timestamps (sent as an idle age instead).

Records are fixed-size (RECORD.size bytes, network order); a FLOWS message is a run of
them. A record that does not decode (a short buffer, an unknown family) raises
CodecError: the channel drops the peer's connection rather than guess.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

# family, proto, state, flags (the entry's), fin_seen, dir, record flags, timeout_s, idle_ms,
# client, vip, snat, ep (16 bytes each, v4 in the first 4), client/vip/snat/ep ports,
# TCP: the client's last segment (next seq, ack, window, seen bits), then the endpoint's.
RECORD = struct.Struct("!BBBBBBHII16s16s16s16sHHHHIIHBxIIHBx")
FAMILIES = {4: 4, 6: 16}  # family -> address length
F_XLAT = 4  # record flag (= CT_F_XLAT): NAT64/46, the endpoint side is the other family


def endpoint_family(family: int, flags: int) -> int:
    """The family of the SNAT and endpoint addresses (NAT64/46: the other one)."""
    return 10 - family if flags & F_XLAT else family


class CodecError(ValueError):
    pass


@dataclass(frozen=True)
class FlowRecord:
    family: int  # 4 or 6
    proto: int  # IPPROTO_*
    client: str
    client_port: int
    vip: str
    vip_port: int
    endpoint: str
    endpoint_port: int
    snat: str | None = None  # None: the client's own address is kept (DNAT)
    snat_port: int = 0
    state: int = 0
    flags: int = 0
    fin_seen: int = 0
    direction: int = 0
    timeout_s: int = 0
    idle_ms: int = 0
    # TCP (seq, ack, window, seen) of each direction's last segment; seen 0: none known.
    tcp_orig: tuple[int, int, int, int] = (0, 0, 0, 0)
    tcp_reply: tuple[int, int, int, int] = (0, 0, 0, 0)


def _pack_addr(address: str | None, family: int) -> bytes:
    if address is None:
        return bytes(16)
    ip = ipaddress.ip_address(address)
    if ip.version != family:
        raise CodecError(f"address {address} is not IPv{family}")
    return ip.packed.ljust(16, b"\0")


def _unpack_addr(raw: bytes, family: int) -> str:
    return str(ipaddress.ip_address(raw[: FAMILIES[family]]))


def encode(records: Iterable[FlowRecord]) -> bytes:
    out = bytearray()
    for r in records:
        if r.family not in FAMILIES:
            raise CodecError(f"family must be 4 or 6, not {r.family}")
        efam = endpoint_family(r.family, r.flags)
        out += RECORD.pack(
            r.family, r.proto, r.state, r.flags, r.fin_seen, r.direction, 0,
            r.timeout_s, min(r.idle_ms, 0xFFFFFFFF),
            _pack_addr(r.client, r.family), _pack_addr(r.vip, r.family),
            _pack_addr(r.snat, efam), _pack_addr(r.endpoint, efam),
            r.client_port, r.vip_port, r.snat_port, r.endpoint_port,
            *r.tcp_orig, *r.tcp_reply,
        )  # fmt: skip
    return bytes(out)


def decode(data: bytes) -> list[FlowRecord]:
    if len(data) % RECORD.size:
        raise CodecError(f"{len(data)} bytes is not a whole number of {RECORD.size}-byte records")
    out = []
    for fields in RECORD.iter_unpack(data):
        (family, proto, state, flags, fin_seen, direction, _pad, timeout_s, idle_ms,
         client, vip, snat, ep, cport, vport, sport, eport) = fields[:17]  # fmt: skip
        if family not in FAMILIES:
            raise CodecError(f"unknown address family {family}")
        efam = endpoint_family(family, flags)
        out.append(FlowRecord(
            family=family, proto=proto, client=_unpack_addr(client, family), client_port=cport,
            vip=_unpack_addr(vip, family), vip_port=vport,
            endpoint=_unpack_addr(ep, efam), endpoint_port=eport,
            snat=None if not any(snat) else _unpack_addr(snat, efam), snat_port=sport,
            state=state, flags=flags, fin_seen=fin_seen, direction=direction,
            timeout_s=timeout_s, idle_ms=idle_ms,
            tcp_orig=tuple(fields[17:21]), tcp_reply=tuple(fields[21:25]),  # type: ignore[arg-type]
        ))  # fmt: skip
    return out


def from_entry(entry: Any, now_ns: int) -> FlowRecord:
    """A FlowRecord from a `CtEntry` (ctypes) read from this node's conntrack map.

    `now_ns`: the same clock as the entry's `last_ns` (the kernel's coarse monotonic).
    Ports are in network order in the entry.
    """
    from appliance.datapath.layout import ntohs, words_addr

    t, family = entry.t, int(entry.family)
    efam = endpoint_family(family, int(entry.flags))
    snat = words_addr(t.snat.w, efam)
    return FlowRecord(
        family=family, proto=int(entry.proto),
        client=words_addr(t.client.w, family), client_port=ntohs(int(t.client_port)),
        vip=words_addr(t.vip.w, family), vip_port=ntohs(int(t.vip_port)),
        endpoint=words_addr(t.ep.w, efam), endpoint_port=ntohs(int(t.ep_port)),
        snat=None if ipaddress.ip_address(snat).packed == bytes(FAMILIES[efam]) else snat,
        snat_port=ntohs(int(t.snat_port)), state=int(entry.state), flags=int(entry.flags),
        fin_seen=int(entry.fin_seen), direction=int(entry.dir),
        timeout_s=int(entry.timeout_s),
        idle_ms=max(0, (now_ns - int(entry.last_ns)) // 1_000_000),
        tcp_orig=(int(entry.tcp_seq), int(entry.tcp_ack), int(entry.tcp_win),
                  int(entry.tcp_seen)),
    )  # fmt: skip
