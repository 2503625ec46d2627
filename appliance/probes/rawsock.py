"""A shared raw IP socket per (family, protocol), read by the event loop.

ICMP and SCTP probes each keep one of these for all endpoints and match answers to probes by
an identifier of their own (echo id/sequence, SCTP verification tag): one socket and one
reader callback, not one per endpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable

log = logging.getLogger(__name__)

# Bounded per wake-up so a flood of packets cannot starve the rest of the loop.
MAX_PACKETS_PER_WAKEUP = 256
RCVBUF = 4 * 1024 * 1024

# (packet without IPv4 header, source address)
Handler = Callable[[bytes, str], None]


class RawSocket:
    def __init__(
        self,
        family: socket.AddressFamily,
        proto: int,
        handler: Handler,
        setup: Callable[[socket.socket], None] | None = None,
    ) -> None:
        self.family = family
        self.handler = handler
        self.sock = socket.socket(family, socket.SOCK_RAW, proto)
        self.sock.setblocking(False)
        # A failure leaves the default buffer: it still works, it only drops sooner.
        with contextlib.suppress(OSError):
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
        if setup is not None:
            setup(self.sock)
        self.loop = asyncio.get_running_loop()
        self.loop.add_reader(self.sock.fileno(), self._readable)

    def send(self, packet: bytes, address: str) -> None:
        # The kernel builds the IP header (no IP_HDRINCL); the port field must be 0.
        self.sock.sendto(packet, (address, 0))

    def _readable(self) -> None:
        for _ in range(MAX_PACKETS_PER_WAKEUP):
            try:
                data, addr = self.sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                # An ICMP error queued on the socket: not ours to interpret here.
                log.debug("raw socket error", extra={"error": str(exc)})
                continue
            if self.family == socket.AF_INET:
                # IPv4 raw sockets deliver the IP header, IPv6 ones do not.
                if len(data) < 20:
                    continue
                data = data[(data[0] & 0x0F) * 4 :]
            try:
                self.handler(data, addr[0])
            except Exception:
                log.exception("raw packet handler failed")

    def close(self) -> None:
        if self.sock.fileno() >= 0:
            if not self.loop.is_closed():
                self.loop.remove_reader(self.sock.fileno())
            self.sock.close()
