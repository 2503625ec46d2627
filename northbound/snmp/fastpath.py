"""SNMPv2c table walks (GETBULK) answered without pysnmp's message processing.

A bulk walk of 10,000 services is 1,500 GETBULK requests at -Cr100; pysnmp spends about as
long decoding each request and re-encoding each response (pyasn1 objects for the message,
the PDU and every header field) as the tree spends reading 100 cells. For the one shape a
walk sends — SNMPv2c, GetBulkRequest, no non-repeaters, one variable binding, a community
of ours — this module parses the message itself, reads the run of cells from the tree
(TreeController.read_next_run, the same code the pysnmp path uses) and encodes the
response directly. Anything else, or anything it cannot parse, goes to pysnmp unchanged:
other PDUs and versions, SNMPv3 (USM), unknown communities (pysnmp counts and drops them).

Access: every configured community is granted the same read view (agent.py), so a known
community may read every table of the tree that lies in that view; the check is by OID
prefix, once per table.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from northbound.snmp import ber
from northbound.snmp.tree import Oid, Table, TreeController

GET_BULK = 0xA5
RESPONSE = 0xA2
VERSION_2C = 1
ROUTE = "sluice-v2c-bulk"


class _Malformed(Exception):
    pass


def _tlv(buf: bytes, pos: int, end: int) -> tuple[int, int, int]:
    """(tag, value start, value end) of the TLV at `pos`; definite lengths only."""
    if pos + 2 > end:
        raise _Malformed
    tag, first = buf[pos], buf[pos + 1]
    pos += 2
    if first < 0x80:
        length = first
    else:
        n = first & 0x7F
        if n == 0 or n > 4 or pos + n > end:
            raise _Malformed
        length = int.from_bytes(buf[pos : pos + n], "big")
        pos += n
    if pos + length > end:
        raise _Malformed
    return tag, pos, pos + length


def _int(buf: bytes, start: int, end: int) -> int:
    if not 0 < end - start <= 5:
        raise _Malformed
    return int.from_bytes(buf[start:end], "big", signed=True)


def _oid(body: bytes) -> Oid:
    if not body:
        raise _Malformed
    first, rest = body[0], body[1:]
    if first >= 0x80:
        raise _Malformed  # a first sub-identifier past 127: never one of ours
    out = [first // 40, first % 40] if first < 80 else [2, first - 80]
    value = 0
    for byte in rest:
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            out.append(value)
            value = 0
    if rest and rest[-1] & 0x80:
        raise _Malformed
    return tuple(out)


class V2cBulkFastPath:
    """Answers the v2c GETBULK walks of one engine; hands everything else to pysnmp."""

    def __init__(
        self,
        communities: Iterable[str],
        controller: TreeController,
        view: Sequence[Oid],
        budget: int,
        max_varbinds: int,
    ) -> None:
        self.communities = [c.encode() for c in communities]
        self.controller = controller
        self.view = tuple(view)
        self.budget = budget
        self.max_varbinds = max_varbinds
        self._in_view: dict[Oid, bool] = {}
        self.answered = 0

    def _table_in_view(self, table: Table) -> bool:
        allowed = self._in_view.get(table.prefix)
        if allowed is None:
            allowed = self._in_view[table.prefix] = any(
                table.prefix[: len(v)] == v for v in self.view
            )
        return allowed

    def _known(self, community: bytes) -> bool:
        known = False
        for secret in self.communities:  # no early exit: every secret is compared
            known |= hmac.compare_digest(secret, community)
        return known

    def parse(self, msg: bytes) -> tuple[bytes, bytes, int, Oid] | None:
        """(community, request-id TLV, max-repetitions, OID) of a walk we answer, else None."""
        try:
            tag, start, end = _tlv(msg, 0, len(msg))
            if tag != 0x30 or end != len(msg):
                return None
            tag, s, e = _tlv(msg, start, end)
            if tag != 0x02 or _int(msg, s, e) != VERSION_2C:
                return None
            tag, s, e = _tlv(msg, e, end)
            if tag != 0x04:
                return None
            community = msg[s:e]
            tag, pdu_start, pdu_end = _tlv(msg, e, end)
            if tag != GET_BULK or pdu_end != end or not self._known(community):
                return None
            tag, s, e = _tlv(msg, pdu_start, pdu_end)
            if tag != 0x02:
                return None
            request_id = msg[pdu_start:e]  # the whole TLV, sent back as it came
            tag, s, e = _tlv(msg, e, pdu_end)
            if tag != 0x02 or _int(msg, s, e) != 0:  # non-repeaters: pysnmp handles them
                return None
            tag, s, e = _tlv(msg, e, pdu_end)
            if tag != 0x02:
                return None
            max_repetitions = max(_int(msg, s, e), 0)
            tag, s, e = _tlv(msg, e, pdu_end)
            if tag != 0x30 or e != pdu_end:
                return None
            tag, vb_start, vb_end = _tlv(msg, s, e)
            if tag != 0x30 or vb_end != e:  # exactly one variable binding
                return None
            tag, s, oid_end = _tlv(msg, vb_start, vb_end)
            if tag != 0x06:
                return None
            oid = _oid(msg[s:oid_end])
            _tlv(msg, oid_end, vb_end)  # a value (NULL) must follow
        except _Malformed:
            return None
        return community, request_id, max_repetitions, oid

    def answer(self, msg: bytes) -> bytes | None:
        """The encoded response, or None when pysnmp must handle `msg`."""
        parsed = self.parse(msg)
        if parsed is None:
            return None
        community, request_id, max_repetitions, oid = parsed
        count = min(max_repetitions, self.max_varbinds)
        cells = (
            self.controller.read_next_run(oid, count, self.budget, view=self._table_in_view)
            if count
            else []
        )
        pdu = (
            request_id
            + b"\x02\x01\x00\x02\x01\x00"  # error-status, error-index: 0
            + ber.tlv(0x30, b"".join(vb for _, vb in cells))
        )
        body = b"\x02\x01\x01" + ber.tlv(0x04, community) + ber.tlv(RESPONSE, pdu)
        self.answered += 1
        return ber.tlv(0x30, body)

    def route(self, domain: Any, address: Any, msg: Any) -> str | None:
        """pysnmp's routing hook: which receive callback gets `msg` (None: pysnmp's)."""
        # Cheap test first: a v2c message's version is the octets 02 01 01 after the
        # outer header; everything else goes straight to pysnmp.
        raw = bytes(msg)
        if len(raw) < 8 or raw[0] != 0x30:
            return None
        head = 2 if raw[1] < 0x80 else 2 + (raw[1] & 0x7F)
        if raw[head : head + 3] != b"\x02\x01\x01":
            return None
        return ROUTE

    def receiver(self, engine: Any) -> Callable[..., None]:
        """The receive callback for ROUTE: answers, or passes the message to pysnmp."""

        def receive(dispatcher: Any, domain: Any, address: Any, msg: Any) -> None:
            response = self.answer(bytes(msg))
            if response is None:
                engine.message_dispatcher.receive_message(engine, domain, address, msg)
            else:
                dispatcher.send_message(response, domain, address)

        return receive
