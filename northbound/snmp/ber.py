"""Just enough BER to encode response variable bindings fast.

pysnmp builds a response by cloning pyasn1 objects for every varbind and encoding them with
pyasn1's generic encoder: about 60 µs per varbind, so a 350,000-cell table walk costs over
20 s of event-loop time. Values of the tree are therefore produced directly as BER (a few
µs each) and handed to pysnmp as one pre-encoded VarBindList (`EncodedVarBindList`), which
pyasn1 copies into the message verbatim. Message framing, USM authentication and privacy
stay pysnmp's.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from pyasn1.codec.ber import encoder as ber_encoder
from pysnmp.proto import rfc1905

INTEGER, OCTET_STRING, NULL, OBJECT_ID, SEQUENCE = 0x02, 0x04, 0x05, 0x06, 0x30
IP_ADDRESS, COUNTER32, GAUGE32, TIMETICKS, COUNTER64 = 0x40, 0x41, 0x42, 0x43, 0x46
U32 = 2**32 - 1
U64 = 2**64 - 1


def _length(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    if n < 0x100:
        return bytes((0x81, n))
    if n < 0x10000:
        return bytes((0x82, n >> 8, n & 0xFF))
    return bytes((0x83, n >> 16, (n >> 8) & 0xFF, n & 0xFF))


def tlv(tag: int, body: bytes) -> bytes:
    return bytes((tag,)) + _length(len(body)) + body


def _unsigned(tag: int, n: int, limit: int) -> bytes:
    n = min(max(int(n), 0), limit)
    # Minimal two's complement: a leading 0 octet when the top bit would read as a sign.
    return tlv(tag, n.to_bytes(n.bit_length() // 8 + 1, "big"))


def integer(n: int) -> bytes:
    n = int(n)
    return tlv(INTEGER, n.to_bytes(n.bit_length() // 8 + 1, "big", signed=True))


def octets(value: bytes | str) -> bytes:
    return tlv(OCTET_STRING, value.encode() if isinstance(value, str) else bytes(value))


def gauge32(n: int) -> bytes:
    """Gauge32 and Unsigned32 (same tag in SMIv2); clamps at 2^32-1 as a gauge does."""
    return _unsigned(GAUGE32, n, U32)


unsigned32 = gauge32


def counter32(n: int) -> bytes:
    return _unsigned(COUNTER32, int(n) & U32, U32)


def counter64(n: int) -> bytes:
    return _unsigned(COUNTER64, int(n) & U64, U64)


def timeticks(n: int) -> bytes:
    return _unsigned(TIMETICKS, int(n) & U32, U32)


def subids(oid: Iterable[int]) -> bytes:
    """Base-128 encoding of sub-identifiers (not the first two)."""
    out = bytearray()
    for s in oid:
        if s < 0x80:
            out.append(s)
        elif s < 0x4000:
            out += bytes(((s >> 7) | 0x80, s & 0x7F))
        else:
            chunk = [s & 0x7F]
            s >>= 7
            while s:
                chunk.append((s & 0x7F) | 0x80)
                s >>= 7
            out += bytes(reversed(chunk))
    return bytes(out)


def oid_body(oid: Sequence[int]) -> bytes:
    return subids((oid[0] * 40 + oid[1], *oid[2:]))


def object_id(oid: Sequence[int]) -> bytes:
    return tlv(OBJECT_ID, oid_body(oid))


# The v2 exception values, as complete value TLVs.
NO_SUCH_OBJECT = b"\x80\x00"
NO_SUCH_INSTANCE = b"\x81\x00"


class EndOfView(bytes):
    """An encoded varbind whose value is endOfMibView (GETBULK stops on these)."""


def varbind(oid_tlv_body: bytes, value: bytes) -> bytes:
    return tlv(SEQUENCE, tlv(OBJECT_ID, oid_tlv_body) + value)


def end_of_view(oid: Sequence[int]) -> EndOfView:
    return EndOfView(varbind(oid_body(oid), b"\x82\x00"))


class EncodedVarBindList(rfc1905.VarBindList):
    """A VarBindList whose content is already BER: the encoder copies it as is."""

    typeId = object()  # its own encoder entry (below), distinct from SequenceOf's

    def __init__(self, raw: bytes = b"", **kwargs: object) -> None:
        super().__init__(**kwargs)
        self._raw = raw

    @property
    def isValue(self) -> bool:  # an empty list is a value here (no varbinds)
        return True

    @property
    def isInconsistent(self) -> bool:
        return False

    def clone(self, *args: object, **kwargs: object) -> EncodedVarBindList:
        return EncodedVarBindList(self._raw)


class _RawEncoder(ber_encoder.SequenceOfEncoder):
    def encodeValue(self, value: Any, asn1Spec: Any, encodeFun: Any, **options: Any) -> Any:
        return value._raw, True, True


# pyasn1's module-level encoder reads this dict at each call, so registering here covers
# every encode pysnmp does (v2c message, v3 scoped PDU before encryption).
ber_encoder.TYPE_MAP[EncodedVarBindList.typeId] = _RawEncoder()
