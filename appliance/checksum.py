"""The Internet checksum (RFC 1071), for the few packets the control plane builds itself:
ICMP echo probes and the TCP resets of idle sessions (and the benchmarks' test frames)."""

from __future__ import annotations

import struct


def internet_checksum(data: bytes) -> int:
    """The ones'-complement sum of ``data`` as 16-bit words, complemented."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF
