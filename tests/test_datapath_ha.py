"""The datapath's HA hooks (bpf/lib/ha.h, appliance/datapath/flows.py) with real packets:
a paused VIP is not answered yet keeps its flows; flow events carry the translation;
flows installed from a peer's records are forwarded with their translation and endpoint;
full-NAT source ports come from this node's range. The HA sync's installer
(appliance/ha/flowsync.py) is driven directly here, without a channel."""

from __future__ import annotations

import ipaddress
import struct
import threading
from typing import Any

import pytest
from dpkit import HTTP_PORT, SNAT4, UDP_PORT, VIP4, VIP6, LbNet, backend_addr, service, wait_for
from udpflow import UdpFlow

pytestmark = pytest.mark.datapath


def a16(address: str) -> bytes:
    return ipaddress.ip_address(address).packed.ljust(16, b"\0")


def record(client: str, cport: int, vip: str, vport: int, ep: str, eport: int,
           proto: int = 6, state: int = 1, flags: int = 1, timeout: int = 240,
           family: int | None = None, snat: str | None = None, sport: int | None = None,
           idle_ms: int = 0) -> bytes:  # fmt: skip
    """One wire record (appliance/ha/sync_codec.RECORD) as a peer would send it."""
    from appliance.ha.flowsync import HEAD

    fam = family or (6 if ":" in vip else 4)
    tup = (a16(client) + a16(vip) + a16(snat or client) + a16(ep)
           + struct.pack("!HHHH", cport, vport, sport if sport is not None else cport, eport))
    return HEAD.pack(fam, proto, state, flags, 0, 0, 0, timeout, idle_ms) + tup


class Events:
    def __init__(self) -> None:
        self.got: list[tuple[int, bytes]] = []
        self.cond = threading.Condition()

    def __call__(self, batch: list[tuple[int, bytes]]) -> None:
        with self.cond:
            self.got.extend(batch)

    def decoded(self, lbnet: LbNet) -> list[tuple[int, Any]]:
        t = lbnet.rec.program.table("ct_map")
        with self.cond:
            return [(kind, t.Leaf.from_buffer_copy(e)) for kind, e in self.got]


def test_paused_vip_is_not_answered_and_keeps_its_flows(lbnet: LbNet) -> None:
    lbnet.set(service("u", port=53, proto="udp", ep_port=UDP_PORT), service("web"))
    flow = UdpFlow(lbnet.client, VIP4)
    try:
        assert flow.send(100) == "ok"
        before = lbnet.rec.conntrack("u")
        assert len(before) == 1
        lbnet.rec.set_paused([VIP4])
        assert lbnet.rec.flows.paused() == [VIP4]
        assert flow.send(100) != "ok"  # the established flow waits: not forwarded
        with pytest.raises(RuntimeError):
            lbnet.curl(VIP4, 80)  # nor is a new one answered
        # Services, endpoints and the flow are all still there.
        assert set(lbnet.rec.driver.services) == {"u", "web"}
        rows = lbnet.rec.conntrack("u")
        assert [(r["client"], r["endpoint"]) for r in rows] == \
            [(r["client"], r["endpoint"]) for r in before]  # fmt: skip
        lbnet.rec.set_paused([])
        assert flow.send(100) == "ok"  # the same flow, its endpoint kept
        assert lbnet.rec.conntrack("u")[0]["endpoint"] == before[0]["endpoint"]
        assert lbnet.get(VIP4) in ("b1", "b2", "b3")
    finally:
        flow.close()


def test_flow_events_carry_the_translation(lbnet: LbNet) -> None:
    from appliance.datapath import layout as L

    lbnet.set(service("web", mode="full-nat", **{"snat-address": SNAT4}))
    events = Events()
    lbnet.rec.flows.start_events(events)
    try:
        assert lbnet.get(VIP4) == "b1"
        wait_for(lambda: len(events.got) >= 3, timeout=5)  # created, established, fin...
        got = events.decoded(lbnet)
        kinds = [k for k, _ in got]
        assert kinds[0] == L.FE_CREATED and L.FE_STATE in kinds
        e = got[0][1]
        assert L.words_addr(e.t.vip.w, 4) == VIP4 and L.ntohs(e.t.vip_port) == 80
        assert L.words_addr(e.t.ep.w, 4) == backend_addr(1)
        assert L.ntohs(e.t.ep_port) == HTTP_PORT
        assert L.words_addr(e.t.snat.w, 4) == SNAT4 and e.dir == L.CT_DIR_ORIG
        wait_for(lambda: events.decoded(lbnet)[-1][1].state in (2, 3), timeout=5)  # fin, closed
    finally:
        lbnet.rec.flows.stop_events(events)
    # Events off: new flows emit nothing.
    n = len(events.got)
    assert lbnet.get(VIP4) == "b2"
    assert len(events.got) == n


def test_installed_flows_keep_their_peer_translation(lbnet: LbNet) -> None:
    """Records as a peer sends them: bound to this node's ids, forwarded to the record's
    endpoint (not the one round-robin would pick), never sent back; bad ones refused by
    field; a GONE record deletes."""
    from appliance.datapath import layout as L
    from appliance.ha.flowsync import REC_F_GONE, FlowSync

    lbnet.set(service("web"), service("web6", vip=VIP6))
    sent: list[bytes] = []
    fs = FlowSync(lbnet.rec, sent.append)
    client = "198.18.0.1"
    want = {40001: 3, 40002: 3, 40003: 2}  # round-robin would give b1, b2, b3
    good = b"".join(record(client, port, VIP4, 80, backend_addr(n), HTTP_PORT)
                    for port, n in want.items())  # fmt: skip
    bad = (record(client, 40010, VIP4, 80, backend_addr(1), HTTP_PORT, family=5)
           + record(client, 40011, VIP4, 80, backend_addr(1), HTTP_PORT, proto=99)
           + record(client, 40012, VIP4, 80, backend_addr(1), HTTP_PORT, flags=0x20)
           + record(client, 40013, VIP4, 9999, backend_addr(1), HTTP_PORT)  # no such service
           + record("2001:db8::1", 40014, VIP6, 80, backend_addr(1, 6), HTTP_PORT))
    res = fs.install("198.18.0.3", good + bad)
    assert res == {"entries": 8, "deleted": 0, "unbound": 1, "refused": 3}
    assert dict(fs.refused) == {"family": 1, "protocol": 1, "flags": 1}
    rows = {int(r["client"].rsplit(":", 1)[1]): r for r in lbnet.rec.conntrack()}
    assert rows[40001]["service"] == "web" and rows[40003]["endpoint"].startswith("198.18.12.1")
    # Installed flows are the peer's: a dump of this node's own flows leaves them out.
    assert b"".join(fs.dump_chunks()) == b""
    for port, n in want.items():
        assert lbnet.curl(VIP4, 80, local_port=port) == f"b{n}"
    # Met by packets here, they are this node's now: dumped (the returning peer gets them).
    mine = b"".join(fs.dump_chunks())
    assert len(mine) // 88 >= 1
    # GONE deletes both entries of a flow.
    gone = record(client, 40099, VIP4, 80, backend_addr(1), HTTP_PORT)
    fs.install("198.18.0.3", gone)
    assert any(r["client"].endswith(":40099") for r in lbnet.rec.conntrack())
    head = bytearray(gone)
    head[3] |= REC_F_GONE
    assert fs.install("198.18.0.3", bytes(head))["deleted"] == 2
    assert not any(r["client"].endswith(":40099") for r in lbnet.rec.conntrack())
    assert L.CT_F_SYNCED == 0x80


def test_full_nat_source_ports_from_this_nodes_range(lbnet: LbNet) -> None:
    lbnet.set(service("nat", mode="full-nat", **{"snat-address": SNAT4}))
    lbnet.rec.flows.set_snat_ports(30000, 30009)
    assert lbnet.rec.flows.snat_ports() == (30000, 30009)
    for _ in range(6):
        assert lbnet.get(VIP4) in ("b1", "b2", "b3")
    # (A port is unique per endpoint: two flows to two endpoints may share one.)
    ports = [int(r["snat"].rsplit(":", 1)[1]) for r in lbnet.rec.conntrack("nat")]
    assert len(ports) == 6 and all(30000 <= p <= 30009 for p in ports), ports
    with pytest.raises(ValueError):
        lbnet.rec.flows.set_snat_ports(100, 200)
