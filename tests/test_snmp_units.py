"""Units of the SNMP agent: the BER encoder against pyasn1's, and the OID tree's ordering."""

from __future__ import annotations

import random

import pytest
from pyasn1.codec.ber import encoder
from pysnmp.proto import rfc1902

from northbound.snmp import ber
from northbound.snmp.model import Snapshot, date_and_time, inet_index, string_index
from northbound.snmp.tree import Table, Tree


@pytest.mark.parametrize("n", [0, 1, 127, 128, 255, 256, 2**31 - 1, 2**32 - 1])
def test_unsigned_encodings_match_pyasn1(n: int) -> None:
    assert ber.gauge32(n) == encoder.encode(rfc1902.Gauge32(n))
    assert ber.counter32(n) == encoder.encode(rfc1902.Counter32(n))
    assert ber.timeticks(n) == encoder.encode(rfc1902.TimeTicks(n))
    assert ber.counter64(n * 2**31) == encoder.encode(rfc1902.Counter64(n * 2**31))


@pytest.mark.parametrize("n", [0, 1, -1, 127, 128, -129, 2**31 - 1, -(2**31)])
def test_integer_encoding_matches_pyasn1(n: int) -> None:
    assert ber.integer(n) == encoder.encode(rfc1902.Integer32(n))


def test_strings_and_oids_match_pyasn1() -> None:
    for text in (b"", b"web", bytes(range(256)) * 3):
        assert ber.octets(text) == encoder.encode(rfc1902.OctetString(text))
    for oid in (
        (1, 3, 6, 1, 4, 1, 32473, 3, 1),
        (1, 3, 6, 1, 2, 1, 1, 5, 0),
        (2, 100, 3, 2**32 - 1, 16384, 2097152),
    ):
        assert ber.object_id(oid) == encoder.encode(rfc1902.ObjectIdentifier(oid))


def test_counters_clamp_and_wrap() -> None:
    assert ber.gauge32(2**40) == ber.gauge32(2**32 - 1)  # a gauge sticks at its maximum
    assert ber.counter32(2**32 + 5) == ber.counter32(5)  # a counter wraps


def test_date_and_time() -> None:
    assert date_and_time("2026-11-23T19:00:01.5Z") == bytes(
        [0x07, 0xEA, 11, 23, 19, 0, 1, 5, ord("+"), 0, 0]
    )
    assert date_and_time("2026-11-23T21:00:00+02:00")[4] == 19  # shown in UTC
    assert date_and_time(None) == date_and_time("garbage")  # the epoch, not an error


def test_table_walk_order_is_lexicographic() -> None:
    rng = random.Random(7)
    rows = sorted({(rng.randrange(4), rng.randrange(300)) for _ in range(60)})
    table = Table(
        (1, 3, 6, 9),
        (2, 3, 5),
        lambda: rows,
        lambda c, p: None if (c == 3 and p % 5 == 0) else ber.integer(p),
    )
    cells = sorted(
        (1, 3, 6, 9, c, *r)
        for c in (2, 3, 5)
        for i, r in enumerate(rows)
        if not (c == 3 and i % 5 == 0)
    )
    tree = Tree([table])
    # GETNEXT from every cell and from points between cells lands on the next cell.
    probes = [*cells, (1, 3, 6), (1, 3, 6, 9, 3), (1, 3, 6, 9, 4, 1), (1, 3, 6, 9, 2, 0, 0, 0)]
    for probe in probes:
        expected = next((c for c in cells if c > probe), None)
        found = tree.next(probe)
        assert (found[0] if found else None) == expected, probe
    # The run iterator yields them all in order.
    assert [oid for oid, _, _ in tree.iter_after((1,))] == cells


def test_snapshot_indexes() -> None:
    doc = {
        "sluice:load-balancer": {
            "service": [
                {
                    "name": "bb",
                    "vip": "198.18.0.1",
                    "endpoint": [
                        {"address": "198.18.1.2", "port": 80},
                        {"address": "198.18.1.10", "port": 80},
                    ],
                },
                {"name": "a", "vip": "2001:db8::1", "endpoint": []},
            ]
        }
    }
    snap = Snapshot.from_doc(doc)
    # Length-prefixed string index: the shorter name sorts first (as SNMP orders it).
    assert snap.service_index == [string_index("a"), string_index("bb")]
    assert [e.address for e in snap.endpoints] == ["198.18.1.2", "198.18.1.10"]
    assert inet_index("2001:db8::1")[1] == 2


def test_fast_path_parser_never_raises_on_mutated_requests() -> None:
    from northbound.snmp.fastpath import V2cBulkFastPath
    from northbound.snmp.tree import TreeController

    oid = (1, 3, 6, 1, 4, 1, 32473, 1, 2)
    varbinds = ber.tlv(0x30, ber.tlv(0x30, ber.object_id(oid) + b"\x05\x00"))
    pdu = ber.integer(77) + ber.integer(0) + ber.integer(100) + varbinds
    good = ber.tlv(0x30, ber.integer(1) + ber.octets("pub") + ber.tlv(0xA5, pdu))
    fast = V2cBulkFastPath(["pub"], TreeController(lambda: Tree([])), [(1, 3, 6)], 60_000, 100)
    assert fast.parse(good) == (b"pub", ber.integer(77), 100, oid)
    assert fast.parse(good.replace(b"pub", b"puX")) is None  # not our community
    rng = random.Random(11)
    for _ in range(3000):
        msg = bytearray(good)
        for _ in range(rng.randint(1, 3)):
            msg[rng.randrange(len(msg))] = rng.randrange(256)
        cut = bytes(msg[: rng.randint(0, len(msg))] if rng.random() < 0.3 else msg)
        parsed = fast.parse(cut)  # None or a well-formed tuple: never an exception
        assert parsed is None or isinstance(parsed[3], tuple)
    # An empty tree answers endOfMibView, in a well-formed response.
    response = fast.answer(good)
    assert response is not None and response[0] == 0x30 and b"\x82\x00" in response


def test_translation_and_dsr_tunnel_columns() -> None:
    from northbound.snmp.model import LbMib

    doc = {"sluice:load-balancer": {"service": [
        {"name": "a64", "vip": "2001:db8::1", "nat64": True, "endpoint": []},
        {"name": "b46", "vip": "198.18.0.1", "nat46": True, "endpoint": []},
        {"name": "c", "vip": "198.18.0.2", "mode": "dsr", "dsr-tunnel": "ip-in-ip",
         "endpoint": []},
    ]}}  # fmt: skip

    class NoState:
        def track(self, snap: Snapshot) -> None:
            pass

    mib = LbMib(Snapshot.from_doc(doc), NoState(), 0.0, lambda: 0)  # type: ignore[arg-type]
    # Rows in index order (length first): c, a64, b46.
    assert [mib.service_cell(17, i) for i in range(3)] == [ber.integer(v) for v in (1, 2, 3)]
    assert [mib.service_cell(18, i) for i in range(3)] == [ber.integer(v) for v in (2, 1, 1)]


def test_midstream_pickup_column_and_sweep_interval_scalar() -> None:
    from northbound.snmp.model import LbMib

    class NoState:
        def track(self, snap: Snapshot) -> None:
            pass

    doc = {"sluice:load-balancer": {"service": [
        {"name": "a", "vip": "198.18.0.1", "tcp-midstream-pickup": True, "endpoint": []},
        {"name": "b", "vip": "198.18.0.2", "endpoint": []},
    ]}, "sluice:datapath": {"conntrack-sweep-interval": 7}}  # fmt: skip
    mib = LbMib(Snapshot.from_doc(doc), NoState(), 0.0, lambda: 0)  # type: ignore[arg-type]
    assert [mib.service_cell(19, i) for i in range(2)] == [ber.integer(1), ber.integer(2)]
    assert mib.global_cell(7, 0) == ber.unsigned32(7)
    doc.pop("sluice:datapath")  # not configured: the model's default
    mib = LbMib(Snapshot.from_doc(doc), NoState(), 0.0, lambda: 0)  # type: ignore[arg-type]
    assert mib.global_cell(7, 0) == ber.unsigned32(30)


def test_secondary_address_table_rows_and_cells() -> None:
    from northbound.snmp.model import ALGORITHM, LbMib

    mh = {"name": "n2", "vip": "198.19.0.10", "protocol": "sctp", "mode": "full-nat",
          "algorithm": "gtp-teid", "secondary-vip": ["198.19.0.11", "198.19.0.12"],
          "secondary-snat-address": ["198.19.0.101", "198.19.0.102"]}  # fmt: skip
    snap = Snapshot.from_doc({"sluice:load-balancer": {"service": [mh, {"name": "a",
                                                                         "vip": "2001:db8::1"}]}})
    assert snap.secondary_index == [(*string_index("n2"), 1), (*string_index("n2"), 2)]
    mib = LbMib.__new__(LbMib)
    mib.snap = snap
    assert mib.secondary_cell(2, 1) == ber.integer(1)
    assert mib.secondary_cell(3, 1) == ber.octets(bytes([198, 19, 0, 12]))
    assert mib.secondary_cell(5, 0) == ber.octets(bytes([198, 19, 0, 101]))
    assert ALGORITHM["gtp-teid"] == 8
