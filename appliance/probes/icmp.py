"""Ping probe: ICMP / ICMPv6 echo over one shared raw socket per family.

Replies are matched to probes by (source address, sequence) under the Pinger's own echo id;
a destination-unreachable quoting one of our echoes fails that probe at once.
"""

from __future__ import annotations

import asyncio
import ipaddress
import random
import socket
import struct
import time

from appliance.checksum import internet_checksum
from appliance.probes.base import ProbeResult, ProbeSpec, describe, fail, ok
from appliance.probes.rawsock import RawSocket

ICMP_ECHO_REPLY, ICMP_UNREACH, ICMP_ECHO = 0, 3, 8
ICMP6_UNREACH, ICMP6_ECHO, ICMP6_ECHO_REPLY = 1, 128, 129
SOL_RAW = 255
ICMP_FILTER = 1  # linux/icmp.h: bit set = type blocked
ICMP6_FILTER = 1  # linux/icmpv6.h: bit set = type blocked
PAYLOAD = b"sluice-probe"

_UNREACH_V4 = {0: "network unreachable", 1: "host unreachable", 3: "port unreachable"}
_UNREACH_V6 = {0: "no route", 1: "administratively prohibited", 3: "address unreachable"}


def echo_request(v6: bool, ident: int, seq: int) -> bytes:
    if v6:
        return struct.pack("!BBHHH", ICMP6_ECHO, 0, 0, ident, seq) + PAYLOAD
    head = struct.pack("!BBHHH", ICMP_ECHO, 0, 0, ident, seq)
    csum = internet_checksum(head + PAYLOAD)
    return struct.pack("!BBHHH", ICMP_ECHO, 0, csum, ident, seq) + PAYLOAD


def _v4_filter(sock: socket.socket) -> None:
    blocked = 0xFFFFFFFF & ~((1 << ICMP_ECHO_REPLY) | (1 << ICMP_UNREACH))
    sock.setsockopt(SOL_RAW, ICMP_FILTER, struct.pack("I", blocked))


def _v6_filter(sock: socket.socket) -> None:
    words = [0xFFFFFFFF] * 8
    for t in (ICMP6_ECHO_REPLY, ICMP6_UNREACH):
        words[t >> 5] &= ~(1 << (t & 31)) & 0xFFFFFFFF
    sock.setsockopt(socket.IPPROTO_ICMPV6, ICMP6_FILTER, struct.pack("8I", *words))


class Pinger:
    """All ping probes of one event loop."""

    def __init__(self) -> None:
        self.ident = random.randrange(1, 0xFFFF)
        self._seq = random.randrange(0, 0xFFFF)
        self._pending: dict[tuple[str, int], asyncio.Future[str]] = {}
        self._socks: dict[int, RawSocket] = {}

    def _sock(self, v6: bool) -> RawSocket:
        fam = 6 if v6 else 4
        if fam not in self._socks:
            if v6:
                self._socks[6] = RawSocket(
                    socket.AF_INET6, socket.IPPROTO_ICMPV6, self._on_v6, _v6_filter
                )
            else:
                self._socks[4] = RawSocket(
                    socket.AF_INET, socket.IPPROTO_ICMP, self._on_v4, _v4_filter
                )
        return self._socks[fam]

    def _resolve(self, key: tuple[str, int], error: str) -> None:
        fut = self._pending.get(key)
        if fut is not None and not fut.done():
            fut.set_result(error)

    def _on_v4(self, data: bytes, src: str) -> None:
        if len(data) < 8:
            return
        icmp_type, code, _, ident, seq = struct.unpack_from("!BBHHH", data)
        if icmp_type == ICMP_ECHO_REPLY and ident == self.ident:
            self._resolve((src, seq), "")
        elif icmp_type == ICMP_UNREACH and len(data) >= 8 + 20 + 8:
            inner = data[8:]
            ihl = (inner[0] & 0x0F) * 4
            if inner[9] != socket.IPPROTO_ICMP or len(inner) < ihl + 8:
                return
            dst = socket.inet_ntop(socket.AF_INET, inner[16:20])
            _, _, _, ident, seq = struct.unpack_from("!BBHHH", inner, ihl)
            if ident == self.ident:
                self._resolve((dst, seq), _UNREACH_V4.get(code, f"unreachable (code {code})"))

    def _on_v6(self, data: bytes, src: str) -> None:
        if len(data) < 8:
            return
        icmp_type, code, _, ident, seq = struct.unpack_from("!BBHHH", data)
        if icmp_type == ICMP6_ECHO_REPLY and ident == self.ident:
            self._resolve((_norm(src), seq), "")
        elif icmp_type == ICMP6_UNREACH and len(data) >= 8 + 40 + 8:
            inner = data[8:]
            if inner[6] != socket.IPPROTO_ICMPV6:
                return
            dst = socket.inet_ntop(socket.AF_INET6, inner[24:40])
            _, _, _, ident, seq = struct.unpack_from("!BBHHH", inner, 40)
            if ident == self.ident:
                self._resolve((dst, seq), _UNREACH_V6.get(code, f"unreachable (code {code})"))

    async def ping(self, spec: ProbeSpec) -> ProbeResult:
        v6 = ":" in spec.address
        address = _norm(spec.address) if v6 else spec.address
        self._seq = (self._seq + 1) & 0xFFFF
        key = (address, self._seq)
        fut: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._pending[key] = fut
        started = time.perf_counter()
        try:
            self._sock(v6).send(echo_request(v6, self.ident, self._seq), address)
            async with asyncio.timeout(spec.timeout):
                error = await fut
        except (OSError, TimeoutError) as exc:
            return fail(describe(exc))
        finally:
            self._pending.pop(key, None)
        return fail(error) if error else ok(started)

    def close(self) -> None:
        for sock in self._socks.values():
            sock.close()
        self._socks.clear()


def _norm(address: str) -> str:
    # The kernel reports IPv6 sources in compressed form; the config may not be.
    return ipaddress.ip_address(address).compressed
