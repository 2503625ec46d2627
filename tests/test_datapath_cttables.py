"""The conntrack tables by family (bpf/lib/ct_tables.h, appliance/datapath/cttables.py),
with real packets: an IPv4 flow's two entries are in ct4_map under the 20-byte key, an
IPv6 flow's in ct_map, a NAT64 flow's ORIG entry in ct_map and its REPLY entry in ct4_map;
the listing (`sluice ct list`), the status figures, the HA dump, a service's removal and a
flush see every table."""

from __future__ import annotations

import ctypes as ct

import pytest
from dpkit import UDP_PORT, VIP4, VIP6, LbNet, service

pytestmark = pytest.mark.datapath


def _ports(lbnet: LbNet) -> list[int]:
    return sorted(int(r["client"].rsplit(":", 1)[1]) for r in lbnet.rec.conntrack())


def test_each_family_in_its_own_table_and_every_reader_sees_both(lbnet: LbNet) -> None:
    from appliance.datapath.cttables import narrow
    from appliance.ha.flowsync import HEAD, FlowSync
    from appliance.ha.sync_codec import RECORD

    lbnet.set(service("u4", port=53, proto="udp", ep_port=UDP_PORT),
              service("u6", vip=VIP6, port=53, proto="udp", ep_port=UDP_PORT))  # fmt: skip
    lbnet.udp_from_ports(VIP4, 53, [47001, 47002])
    lbnet.udp_from_ports(VIP6, 53, [47003])
    prog = lbnet.rec.program
    t4, t6 = prog.table("ct4_map"), prog.table("ct_map")
    assert ct.sizeof(t4.Key) == 20 and ct.sizeof(t6.Key) == 44
    v4 = {bytes(k): v for k, v in t4.items()}
    v6 = {bytes(k): v for k, v in t6.items()}
    assert sorted((v.family, v.dir) for v in v4.values()) == [(4, 0), (4, 0), (4, 1), (4, 1)]
    assert sorted((v.family, v.dir) for v in v6.values()) == [(6, 0), (6, 1)]
    # The compact key is the struct ct_key the datapath looks up, narrowed (cttables.py).
    from appliance.datapath.conntrack import _orig_key

    for key, v in v4.items():
        if v.dir == 0:
            assert narrow(_orig_key(bytes(v))) == key
    # The listing: every flow, with the reply direction's counters (found in its table).
    rows = lbnet.rec.conntrack()
    assert _ports(lbnet) == [47001, 47002, 47003]
    assert all(r["packets"][0] == 1 and r["packets"][1] == 1 for r in rows), rows
    # The status figures: both families under "ct_map" (what SNMP, NETCONF, metrics read).
    assert lbnet.rec.driver.fill()["ct_map"]["entries"] == 6
    # The HA dump: a record per flow, of either family.
    fs = FlowSync(lbnet.rec, lambda payload: None)
    dump = b"".join(fs.dump_chunks())
    assert len(dump) == 3 * RECORD.size
    assert sorted(HEAD.unpack_from(dump, o)[0] for o in range(0, len(dump), RECORD.size)) == \
        [4, 4, 6]  # fmt: skip
    # A service's removal flushes its flows from its table; a flush takes the rest.
    lbnet.set(remove=("u4",))
    assert _ports(lbnet) == [47003] and not list(t4.items())
    assert lbnet.rec.driver.flush_conntrack(lambda e: True) == 2
    assert lbnet.rec.conntrack() == [] and not list(t6.items())


def test_a_nat64_flow_has_an_entry_in_each_table(lbnet: LbNet) -> None:
    """ORIG key IPv6 (client -> VIP6), REPLY key IPv4 (endpoint -> SNAT address): each in
    its family's table; the listing pairs them, the sweep's reply key finds the other one."""
    from test_datapath_nat64 import xlat

    lbnet.set(xlat("x", VIP6, "full-nat", 53, "udp", UDP_PORT))
    lbnet.udp_from_ports(VIP6, 53, [47011])
    prog = lbnet.rec.program
    (orig,) = prog.table("ct_map").values()
    (reply,) = prog.table("ct4_map").values()
    assert (orig.dir, orig.family, reply.dir) == (0, 6, 1)
    (row,) = lbnet.rec.conntrack("x")
    assert row["packets"] == [1, 1], row
    # Expired: the sweep deletes the ORIG entry here and the REPLY entry in the other table.
    for name in ("ct_map", "ct4_map"):
        t = prog.table(name)
        for k, v in list(t.items()):
            v.last_ns = 1
            t[k] = v
    assert lbnet.rec.driver.gc() == 1
    assert not list(prog.table("ct_map").items()) and not list(prog.table("ct4_map").items())
