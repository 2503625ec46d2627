"""SCTP probe: INIT → INIT-ACK over a raw IP socket (protocol 132).

The kernel here has no SCTP sockets, so the probe speaks the first half of the RFC 9260
four-way handshake itself: an INIT with a fresh initiate tag, answered by an INIT-ACK
carrying that tag as its verification tag means a listener is there; an ABORT means the
port is closed. No association is left behind: the server keeps no state until it gets
COOKIE-ECHO, which the probe never sends.
"""

from __future__ import annotations

import asyncio
import random
import socket
import struct
import time
from dataclasses import dataclass

from appliance.probes.base import ProbeResult, ProbeSpec, describe, fail, ok
from appliance.probes.rawsock import RawSocket

IPPROTO_SCTP = 132
CHUNK_INIT, CHUNK_INIT_ACK, CHUNK_ABORT = 1, 2, 6
COMMON_HEADER = struct.Struct("!HHII")  # source port, destination port, vtag, checksum
INIT_CHUNK = struct.Struct("!BBHIIHHI")  # type, flags, length, tag, a_rwnd, os, mis, tsn
A_RWND = 65535


def _crc32c_table() -> list[int]:
    poly = 0x82F63B78  # Castagnoli, reflected
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ poly if c & 1 else c >> 1
        table.append(c)
    return table


_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli) as SCTP uses it (RFC 9260 appendix A); crc32c(b"123456789")
    is 0xE3069283."""
    crc = 0xFFFFFFFF
    table = _TABLE
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def with_checksum(packet: bytes) -> bytes:
    """`packet` with its checksum field filled in. SCTP puts the CRC in the header in
    little-endian byte order (RFC 9260 appendix A: the reflected CRC's low byte first)."""
    zeroed = packet[:8] + b"\0\0\0\0" + packet[12:]
    return packet[:8] + struct.pack("<I", crc32c(zeroed)) + packet[12:]


def checksum_ok(packet: bytes) -> bool:
    return len(packet) >= 12 and with_checksum(packet) == packet


def build_init(src_port: int, dst_port: int, initiate_tag: int, initial_tsn: int) -> bytes:
    """An SCTP packet holding one INIT chunk (verification tag 0, as RFC 9260 5.1 says)."""
    chunk = INIT_CHUNK.pack(CHUNK_INIT, 0, INIT_CHUNK.size, initiate_tag, A_RWND, 1, 1, initial_tsn)
    return with_checksum(COMMON_HEADER.pack(src_port, dst_port, 0, 0) + chunk)


@dataclass(frozen=True)
class Reply:
    src_port: int
    dst_port: int
    vtag: int
    chunk_type: int
    t_bit: bool  # ABORT with T set carries the sender's own tag (RFC 9260 8.5.1)


def parse_reply(packet: bytes) -> Reply | None:
    """The header and first chunk of an SCTP packet; None if short or its CRC is wrong."""
    if len(packet) < COMMON_HEADER.size + 4 or not checksum_ok(packet):
        return None
    src, dst, vtag, _ = COMMON_HEADER.unpack_from(packet)
    ctype, flags = packet[12], packet[13]
    return Reply(src, dst, vtag, ctype, bool(flags & 1))


class SctpProber:
    """All SCTP probes of one event loop: one raw socket per family, demuxed by tag."""

    def __init__(self) -> None:
        self._pending: dict[int, tuple[str, int, int, asyncio.Future[str]]] = {}
        self._socks: dict[int, RawSocket] = {}

    def _sock(self, v6: bool) -> RawSocket:
        fam = 6 if v6 else 4
        if fam not in self._socks:
            self._socks[fam] = RawSocket(
                socket.AF_INET6 if v6 else socket.AF_INET, IPPROTO_SCTP, self._on_packet
            )
        return self._socks[fam]

    def _on_packet(self, data: bytes, src: str) -> None:
        reply = parse_reply(data)
        if reply is None:
            return
        entry = self._pending.get(reply.vtag)
        if entry is None:
            return
        _address, src_port, dst_port, fut = entry
        if fut.done() or reply.src_port != dst_port or reply.dst_port != src_port:
            return
        if reply.chunk_type == CHUNK_INIT_ACK:
            fut.set_result("")
        elif reply.chunk_type == CHUNK_ABORT:
            fut.set_result("abort (port closed)")

    async def probe(self, spec: ProbeSpec) -> ProbeResult:
        v6 = ":" in spec.address
        tag = random.randrange(1, 1 << 32)
        while tag in self._pending:
            tag = random.randrange(1, 1 << 32)
        # An ephemeral-range source port: the kernel has no SCTP, so nothing else owns it.
        src_port = random.randrange(32768, 61000)
        fut: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._pending[tag] = (spec.address, src_port, spec.port, fut)
        started = time.perf_counter()
        try:
            packet = build_init(src_port, spec.port, tag, random.randrange(0, 1 << 32))
            self._sock(v6).send(packet, spec.address)
            async with asyncio.timeout(spec.timeout):
                error = await fut
        except (OSError, TimeoutError) as exc:
            return fail(describe(exc))
        finally:
            self._pending.pop(tag, None)
        return fail(error) if error else ok(started)

    def close(self) -> None:
        for sock in self._socks.values():
            sock.close()
        self._socks.clear()
