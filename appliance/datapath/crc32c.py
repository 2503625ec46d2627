"""CRC32c (SCTP's checksum, RFC 9260 appendix B) for the datapath's incremental fix.

bpf/lib/crc32c.h changes an SCTP packet's checksum after a rewrite without reading the
packet: it needs x^(8m) modulo the CRC32c polynomial for every distance m (in bytes) from
the rewritten word to the packet's end. ``shift_table`` computes them; ``fill`` writes them
into the pinned ``crc_shift`` array once. Pure Python, no bcc (``crc32c`` is also the
tests' reference).
"""

from __future__ import annotations

import logging
from typing import Any

from appliance.datapath import layout as L

log = logging.getLogger(__name__)

POLY = 0x82F63B78  # reflected
ONE = 1 << 31  # x^0 in the reflected representation


def _step(reg: int) -> int:
    return (reg >> 1) ^ (POLY if reg & 1 else 0)


def crc32c(data: bytes) -> int:
    """The CRC32c of ``data`` (as SCTP puts it in its checksum field, little-endian)."""
    reg = 0xFFFFFFFF
    for byte in data:
        reg ^= byte
        for _ in range(8):
            reg = _step(reg)
    return reg ^ 0xFFFFFFFF


def mul(a: int, b: int) -> int:
    """a * b modulo the polynomial (bit 31 is x^0); bpf/lib/crc32c.h crc32c_mul."""
    p = 0
    for i in range(32):
        if a & (ONE >> i):
            p ^= b
        b = _step(b)
    return p


def shift_table(n: int = L.SCTP_CRC_MAX_LEN) -> list[int]:
    """x^(8m) for m = 0..n-1."""
    x8 = ONE
    for _ in range(8):
        x8 = _step(x8)  # one zero byte through the register x^0
    out = [ONE]
    for _ in range(n - 1):
        out.append(mul(x8, out[-1]))
    return out


def fill(table: Any) -> None:
    """Write the shift table into bcc's ``crc_shift`` array unless a pin already holds it."""
    last = L.SCTP_CRC_MAX_LEN - 1
    if table[table.Key(last)].value:
        return  # filled by an earlier load (the values never change)
    values = shift_table()
    keys = (table.Key * len(values))(*range(len(values)))
    leaves = (table.Leaf * len(values))(*values)
    try:
        table.items_update_batch(keys, leaves)
    except Exception:  # no batch operations on this kernel: one by one
        for k, v in zip(keys, leaves, strict=True):
            table[k] = v
    log.debug("crc32c shift table written", extra={"entries": len(values)})


__all__ = ["crc32c", "fill", "mul", "shift_table"]
