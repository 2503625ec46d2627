"""The datapath's HA hooks (bpf/lib/ha.h, appliance/datapath/flows.py) with real packets:
a paused VIP is not answered yet keeps its flows; flow events carry the translation;
flows installed from a peer's records are forwarded with their translation and endpoint;
full-NAT source ports come from this node's range. The HA sync's installer
(appliance/ha/flowsync.py) is driven directly here, without a channel."""

from __future__ import annotations

import ipaddress
import logging
import struct
import sys
import threading
import time
from typing import Any

import pytest
from dpkit import (
    HTTP_PORT,
    SNAT4,
    UDP_PORT,
    VIP4,
    VIP6,
    LbNet,
    backend_addr,
    ct_values,
    service,
    wait_for,
)
from udpflow import UdpFlow

pytestmark = pytest.mark.datapath
RECORD_SIZE = 112  # appliance/ha/sync_codec.RECORD


def a16(address: str) -> bytes:
    return ipaddress.ip_address(address).packed.ljust(16, b"\0")


def record(client: str, cport: int, vip: str, vport: int, ep: str, eport: int,
           proto: int = 6, state: int = 1, flags: int = 1, timeout: int = 240,
           family: int | None = None, snat: str | None = None, sport: int | None = None,
           idle_ms: int = 0) -> bytes:  # fmt: skip
    """One wire record (appliance/ha/sync_codec.RECORD) as a peer would send it."""
    from appliance.ha.flowsync import HEAD, NO_TCP

    fam = family or (6 if ":" in vip else 4)
    tup = (a16(client) + a16(vip) + a16(snat or client) + a16(ep)
           + struct.pack("!HHHH", cport, vport, sport if sport is not None else cport, eport))
    return HEAD.pack(fam, proto, state, flags, 0, 0, 0, timeout, idle_ms) + tup + 2 * NO_TCP


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


def test_installed_flows_keep_their_peer_translation(lbnet: LbNet,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    """Records as a peer sends them: bound to this node's ids, forwarded to the record's
    endpoint (not the one round-robin would pick), never sent back; bad ones refused by
    field; a GONE record deletes."""
    from appliance.datapath import layout as L
    from appliance.ha.flowsync import REC_F_GONE, FlowSync
    from appliance.ha.sync_codec import RECORD

    lbnet.set(service("web"), service("web6", vip=VIP6))
    sent: list[bytes] = []
    fs = FlowSync(lbnet.rec, sent.append)
    client = "198.18.0.1"
    want = {40001: 3, 40002: 3, 40003: 2}  # round-robin would give b1, b2, b3
    good = b"".join(record(client, port, VIP4, 80, backend_addr(n), HTTP_PORT)
                    for port, n in want.items())  # fmt: skip
    bad = (record(client, 40010, VIP4, 80, backend_addr(1), HTTP_PORT, family=5)
           + record(client, 40011, VIP4, 80, backend_addr(1), HTTP_PORT, proto=99)
           + record(client, 40012, VIP4, 80, backend_addr(1), HTTP_PORT, flags=0x80)
           + record(client, 40013, VIP4, 9999, backend_addr(1), HTTP_PORT)  # no such service
           + record("2001:db8::1", 40014, VIP6, 80, backend_addr(1, 6), HTTP_PORT))
    with caplog.at_level(logging.WARNING, logger="appliance.ha.flowsync"):
        res = fs.install("198.18.0.3", good + bad)
    assert res == {"entries": 8, "deleted": 0, "unbound": 1, "refused": 3}
    assert dict(fs.refused) == {"family": 1, "protocol": 1, "flags": 1}
    # Each refusal is logged by the field it got wrong; a flow for a VIP and port this node
    # has no service for, by its VIP (the rest of the batch went in).
    logged = {r.getMessage(): r.__dict__ for r in caplog.records}
    assert logged["ha sync: flow records refused"]["refused"] == dict(fs.refused)
    unbound = logged["ha sync: flow records for no service or endpoint here (skipped)"]
    assert (unbound["field"], unbound["vip"], unbound["port"]) == ("vip", VIP4, 9999)
    rows = {int(r["client"].rsplit(":", 1)[1]): r for r in lbnet.rec.conntrack()}
    assert rows[40001]["service"] == "web" and rows[40003]["endpoint"].startswith("198.18.12.1")
    # Installed flows are the peer's: a dump of this node's own flows leaves them out.
    assert b"".join(fs.dump_chunks()) == b""
    for port, n in want.items():
        assert lbnet.curl(VIP4, 80, local_port=port) == f"b{n}"
    # Met by packets here, they are this node's now: dumped (the returning peer gets them).
    mine = b"".join(fs.dump_chunks())
    assert len(mine) // RECORD.size >= 1
    # GONE deletes both entries of a flow.
    gone = record(client, 40099, VIP4, 80, backend_addr(1), HTTP_PORT)
    fs.install("198.18.0.3", gone)
    assert any(r["client"].endswith(":40099") for r in lbnet.rec.conntrack())
    head = bytearray(gone)
    head[6:8] = REC_F_GONE.to_bytes(2, "big")  # the record's own flags
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


def _as_peers(lbnet: LbNet, fs: Any) -> bytes:
    """This node's flows as its peer would get them (a full dump), then gone from here and
    installed again from those records: the takeover of a peer's flows, on one node."""
    dump = b"".join(fs.dump_chunks())
    lbnet.rec.driver.ct.flush(lambda e: True)
    assert lbnet.rec.conntrack() == []
    res = fs.install("198.18.0.3", dump)
    assert res["refused"] == 0 and res["unbound"] == 0, res
    return dump


@pytest.mark.parametrize("kind", ["dnat", "nat64", "nat46"])
def test_every_kind_of_flow_carries_on_from_its_record(lbnet: LbNet, kind: str) -> None:
    """A flow made here, sent as a record, deleted and installed from it, goes on to the
    same endpoint (round-robin would pick the next one for a new flow). NAT64/46 records
    carry the endpoint side in the other family."""
    from test_datapath_nat64 import xlat

    from appliance.ha.flowsync import FlowSync
    from appliance.ha.sync_codec import RECORD

    vip = VIP6 if kind == "nat64" else VIP4
    svc = (service("u", vip=vip, port=53, proto="udp", ep_port=UDP_PORT) if kind == "dnat"
           else xlat("u", vip, "full-nat", 53, "udp", UDP_PORT))  # fmt: skip
    lbnet.set(svc)
    fs = FlowSync(lbnet.rec, lambda payload: None)
    flow = UdpFlow(lbnet.client, vip)
    try:
        assert flow.send(100) == "ok"
        (before,) = lbnet.rec.conntrack("u")
        assert len(_as_peers(lbnet, fs)) == RECORD.size
        (synced,) = lbnet.rec.conntrack("u")
        assert (synced["client"], synced["snat"], synced["endpoint"]) == \
            (before["client"], before["snat"], before["endpoint"])  # fmt: skip
        assert flow.send(100) == "ok"
        (after,) = lbnet.rec.conntrack("u")
        assert after["endpoint"] == before["endpoint"] and sum(after["packets"]) > 0
    finally:
        flow.close()


@pytest.mark.parametrize("source", ["dump", "events"])
def test_a_synced_tcp_flow_keeps_its_rst_window(lbnet: LbNet, source: str) -> None:
    """The record carries both directions' sequence numbers and windows: on the node that
    takes the flow over, an RST outside the window is dropped before any packet of the flow
    has met it there (a record without them let any RST close the flow), from the client
    and from the endpoint; one inside closes it. "dump": the record of a full dump (or a
    refresh walk), which pairs the flow's two entries. "events": a failover right after the
    handshake, when the peer has only the flow's events: the state change's event carries
    the REPLY entry's numbers beside the ORIG entry's."""
    import test_datapath_tcp as tcpt

    from appliance.datapath import layout as L
    from appliance.ha.flowsync import HEAD, TCP, TUPLE, FlowSync
    from appliance.ha.sync_codec import RECORD

    for b in lbnet.backends:
        b.start_tcp_echo(tcpt.ECHO_PORT)
    lbnet.set(service("e", port=tcpt.ECHO_PORT, ep_port=tcpt.ECHO_PORT))
    sent: list[bytes] = []
    fs = FlowSync(lbnet.rec, sent.append)
    if source == "events":
        lbnet.rec.flows.start_events(fs._on_events)
    held = tcpt.Held(lbnet, VIP4, tcpt.ECHO_PORT)
    try:
        if source == "dump":
            assert held.ask("echo") == "ok"
            (own,) = tcpt._entries(lbnet, held.port)
            rec = _as_peers(lbnet, fs)
            assert TCP.unpack_from(rec, HEAD.size + TUPLE) == (own.tcp_seq, own.tcp_ack,
                                                               own.tcp_win, 3)  # fmt: skip
        else:
            def established() -> bytes | None:  # the newest event record of the flow
                wire = b"".join(sent)
                for i in range(len(wire) - RECORD.size, -1, -RECORD.size):
                    r = wire[i : i + RECORD.size]
                    if struct.unpack_from("!H", r, HEAD.size + 64)[0] == held.port and r[2] == 1:
                        return r
                return None

            rec = wait_for(established, timeout=5)
            lbnet.rec.flows.stop_events(fs._on_events)
            lbnet.rec.driver.ct.flush(lambda e: True)  # the failover: gone from here ...
            res = fs.install("198.18.0.3", rec)  # ... and back from that record alone
            assert res["refused"] == 0 and res["unbound"] == 0, res
        orig = TCP.unpack_from(rec, HEAD.size + TUPLE)
        reply = TCP.unpack_from(rec, HEAD.size + TUPLE + TCP.size)
        assert orig[3] and reply[3] == 3, (orig, reply)  # the endpoint's seq and ack
        (entry,) = tcpt._entries(lbnet, held.port)
        assert entry.flags & L.CT_F_SYNCED and entry.tcp_seq == orig[0]
        seq = int(entry.tcp_seq)
        for off in (10_000_000, 2**31):  # far outside any window, from the client ...
            tcpt._send_rst(lbnet, held.port, (seq + off) % 2**32)
        # ... and from the endpoint, acknowledging what the client never sent
        ep = L.words_addr(entry.t.ep.w, 4)
        backend = lbnet.backends[[backend_addr(n) for n in (1, 2, 3)].index(ep)]
        script = ("from scapy.all import IP, TCP, send, conf\nconf.verb = 0\n"
                  f"send(IP(src={ep!r}, dst={tcpt.CLIENT4!r})/TCP(sport={tcpt.ECHO_PORT},"
                  f" dport={held.port}, flags='RA', seq=1, ack={(seq + 2**30) % 2**32}))")
        out = backend.run([sys.executable, "-c", script], timeout=30)
        assert out.returncode == 0, out.stderr
        time.sleep(0.2)
        assert tcpt._state(lbnet, "e", held.port) == "established"
        assert held.ask("echo") == "ok"
        (entry,) = tcpt._entries(lbnet, held.port)
        tcpt._send_rst(lbnet, held.port, int(entry.tcp_seq))
        wait_for(lambda: tcpt._state(lbnet, "e", held.port) == "closed")
    finally:
        lbnet.rec.flows.stop_events(fs._on_events)
        held.close()


def test_a_peers_gone_leaves_a_flow_this_node_carries_now(lbnet: LbNet) -> None:
    """A peer ends its copy of a flow (its sweep expired it, or its datapath reused the
    tuple) while the flow lives here now (it moved here: a failover, ECMP): the GONE must
    not cut it. Only a peer's copy no packet has met here is deleted."""
    from appliance.ha.flowsync import REC_F_GONE, FlowSync

    lbnet.set(service("u", port=53, proto="udp", ep_port=UDP_PORT))
    fs = FlowSync(lbnet.rec, lambda payload: None)
    flow = UdpFlow(lbnet.client, VIP4)

    def ended(records: bytes) -> bytes:
        out = bytearray(records)
        out[6:8] = REC_F_GONE.to_bytes(2, "big")  # the record's own flags
        return bytes(out)

    try:
        assert flow.send(100) == "ok"
        (before,) = lbnet.rec.conntrack("u")
        dump = _as_peers(lbnet, fs)  # the flow is the peer's copy here now (SYNCED)
        assert flow.send(100) == "ok"  # ... and met by packets: this node carries it
        res = fs.install("198.18.0.3", ended(dump))
        assert res["deleted"] == 0 and fs.stats["gone-kept"] == 1, (res, fs.stats)
        (kept,) = lbnet.rec.conntrack("u")
        assert kept["endpoint"] == before["endpoint"]
        assert flow.send(100) == "ok"
        # A peer's copy that no packet has met here goes with the peer's GONE.
        dump = _as_peers(lbnet, fs)
        assert fs.install("198.18.0.3", ended(dump))["deleted"] == 2
        assert lbnet.rec.conntrack("u") == []
    finally:
        flow.close()


def test_the_sweeps_expiries_reach_the_peers_as_gone(lbnet: LbNet) -> None:
    """A flow the conntrack sweep expires (no packet of it came back for the datapath to
    notice) goes to the peers as GONE, like the datapath's own deletions."""
    from appliance.datapath import layout as L
    from appliance.ha.flowsync import HEAD, REC_F_GONE, FlowSync

    lbnet.set(service("u", port=53, proto="udp", ep_port=UDP_PORT))
    sent: list[bytes] = []
    fs = FlowSync(lbnet.rec, sent.append)
    fs.start()
    flow = UdpFlow(lbnet.client, VIP4)
    try:
        assert flow.send(100) == "ok"
        ct = lbnet.rec.program.table("ct4_map")  # IPv4 keys (bpf/lib/ct_tables.h)
        for k, v in list(ct.items()):  # its last packet, long ago: expired
            v.last_ns = 1
            ct[k] = v
        assert lbnet.rec.driver.gc() == 1
        assert lbnet.rec.conntrack("u") == []

        def gone() -> list[bytes]:
            blob = b"".join(sent)
            return [blob[o : o + RECORD_SIZE] for o in range(0, len(blob), RECORD_SIZE)
                    if HEAD.unpack_from(blob, o)[6] & REC_F_GONE]  # fmt: skip

        (rec,) = wait_for(gone, timeout=5)
        assert rec[HEAD.size + 16 : HEAD.size + 20] == bytes(map(int, VIP4.split(".")))
        assert HEAD.unpack_from(rec)[1] == 17 and L.FE_GONE == 3
    finally:
        flow.close()
        fs.close()


def test_a_backup_neither_forwards_nor_takes_a_synced_flows_replies(lbnet: LbNet) -> None:
    """A reply (endpoint -> client) of a flow whose VIP is paused here waits like the
    client's packets: not translated, not counted, the flow not made this node's own."""
    from appliance.datapath import layout as L

    lbnet.set(service("u", port=53, proto="udp", ep_port=UDP_PORT))
    flow = UdpFlow(lbnet.client, VIP4)
    try:
        assert flow.send(100) == "ok"
        (row,) = lbnet.rec.conntrack("u")
        ep, eport = row["endpoint"].rsplit(":", 1)
        cport = int(row["client"].rsplit(":", 1)[1])
        ct = lbnet.rec.program.table("ct4_map")  # IPv4 keys (bpf/lib/ct_tables.h)

        def reply_entry() -> Any:
            return next(v for v in ct.values() if v.dir == L.CT_DIR_REPLY)

        lbnet.rec.set_paused([VIP4])  # a backup now: its flows are the master's
        assert reply_entry().flags & L.CT_F_SYNCED
        n = int(reply_entry().packets)
        backend = lbnet.backends[int(ep.split(".")[2]) - 11]  # backend n: 198.18.(10+n).1
        send = ("from scapy.all import IP, UDP, send, conf\nconf.verb = 0\n"
                f"send(IP(src={ep!r}, dst='198.18.0.1')/UDP(sport={eport}, dport={cport})"
                "/b'late reply', count=3)")  # fmt: skip
        assert backend.run([sys.executable, "-c", send], timeout=30).returncode == 0
        time.sleep(0.3)
        assert int(reply_entry().packets) == n and reply_entry().flags & L.CT_F_SYNCED
        lbnet.rec.set_paused([])  # master again: replies go through and the flow is its own
        assert backend.run([sys.executable, "-c", send], timeout=30).returncode == 0
        wait_for(lambda: int(reply_entry().packets) >= n + 3, timeout=5)
        assert not reply_entry().flags & L.CT_F_SYNCED
    finally:
        flow.close()


@pytest.mark.parametrize("pickup", [True, False])
def test_an_unsynced_flow_on_a_new_master(lbnet: LbNet, pickup: bool) -> None:
    """A flow younger than the sync latency reaches the new master unknown (here: this
    node's entries of a live connection removed). Only a SYN opens a TCP flow, so it is
    dropped (not reset: the client's retransmissions time out), unless the service picks
    flows up mid-stream: then a Maglev service sends it to the endpoint it had."""
    import test_datapath_tcp as tcpt

    for b in lbnet.backends:
        b.start_tcp_echo(tcpt.ECHO_PORT)
    lbnet.set(service("e", port=tcpt.ECHO_PORT, ep_port=tcpt.ECHO_PORT, algorithm="maglev",
                      **{"tcp-midstream-pickup": pickup}))  # fmt: skip
    held = tcpt.Held(lbnet, VIP4, tcpt.ECHO_PORT)
    try:
        assert held.ask("echo") == "ok"
        (before,) = lbnet.rec.conntrack("e")
        lbnet.rec.driver.ct.flush(lambda e: True)
        if pickup:
            assert held.ask("echo") == "ok"
            (after,) = lbnet.rec.conntrack("e")
            assert after["endpoint"] == before["endpoint"] and after["state"] == "established"
        else:
            assert held.ask("echo", timeout=10) == "timeout"  # dropped, never reset
            assert lbnet.rec.conntrack("e") == []
    finally:
        held.close()


def test_an_sctp_association_carries_on_from_its_record(lbnet: LbNet) -> None:
    """An SCTP association (scapy peers) synced as a record carries on: its DATA reaches
    the same endpoint (a DATA chunk opens no association: without the synced entry it
    would be dropped)."""
    from sctpkit import associate, serve_all

    from appliance.ha.flowsync import FlowSync

    serve_all(lbnet.backends)
    lbnet.set(service("s", port=3868, proto="sctp", ep_port=3869))
    fs = FlowSync(lbnet.rec, lambda payload: None)
    a = {"vip": VIP4, "port": 3868, "sport": 40001, "local": "198.18.0.1"}
    (got,) = associate(lbnet.client, [a])
    assert got["echo"] == [f"{got['endpoint']}:hello 0"], got
    _as_peers(lbnet, fs)
    (row,) = lbnet.rec.conntrack("s")
    assert row["protocol"] == "sctp" and row["state"] == "established"
    # Both entries hold both verification tags (bpf/lib/sctp.h), as the record carried them.
    tags = {(int(v.tcp_seq), int(v.tcp_ack)) for v in ct_values(lbnet.rec.program)}
    assert len(tags) == 1 and all(next(iter(tags))), tags
    (again,) = associate(lbnet.client, [{**a, "peer_tag": got["peer_tag"]}])
    assert again["echo"] == [f"{got['endpoint']}:hello 0"], again


def test_sctp_alternate_paths_carry_on_after_a_sync(lbnet: LbNet) -> None:
    """A multihomed SCTP association synced to a peer (its primary flow and its alternate
    path, as records), then the failover: on the new master a HEARTBEAT and a DATA on the
    alternate path find their state and reach the same endpoint, and the sweep keeps the
    path (it belongs to a live association: the peer links it to its primary flow, which
    only the node that made the paths knew)."""
    from sctpkit import SctpServer, associate
    from test_datapath_sctp_mh import B1_4, B1_6, CLIENT4, SNAT4B, VIP4B, mh_service

    from appliance.ha.flowsync import FlowSync
    from appliance.ha.sync_codec import RECORD

    SctpServer(lbnet.backends[0], "b1", addrs=(B1_4, B1_6))
    lbnet.set(mh_service("m4", VIP4, [(VIP4B, SNAT4B)]))
    fs = FlowSync(lbnet.rec, lambda payload: None)
    a = {"vip": VIP4, "port": 36412, "sport": 47200, "local": CLIENT4,
         "paths": [(CLIENT4, VIP4), (CLIENT4, VIP4B)]}  # fmt: skip
    (up,) = associate(lbnet.client, [a])
    assert up["echo"] == ["b1:hello 0", "b1:hello 1"], up
    dump = b"".join(fs.dump_chunks())
    assert len(dump) // RECORD.size == 2  # the primary flow and the alternate path
    # The peer knows only what the records carry: no conntrack, no path -> primary links.
    lbnet.rec.driver.ct.flush(lambda e: True)
    for name in ("mh_alt_map", "mh_peer_map"):
        lbnet.rec.program.table(name).clear()
    # The alternate path first (a dump walks in hash order): linked once its primary comes.
    alt = next(i for i in (0, RECORD.size) if dump[i + 3] & 64)  # CT_F_MH_ALT
    res = fs.install("198.18.0.3", dump[alt : alt + RECORD.size])
    res2 = fs.install("198.18.0.3", dump[RECORD.size - alt : 2 * RECORD.size - alt])
    assert res["refused"] == res2["refused"] == 0, fs.refused
    assert res["unbound"] == res2["unbound"] == 0
    assert len(lbnet.rec.program.table("mh_alt_map")) == 1
    lbnet.rec.driver.gc()
    assert len(lbnet.rec.conntrack("m4")) == 2  # the sweep keeps the path
    (again,) = associate(lbnet.client, [{**a, "peer_tag": up["peer_tag"], "heartbeat": True,
                                         "paths": [(CLIENT4, VIP4B)]}])  # fmt: skip
    assert again["heartbeats"] == [VIP4B] and again["echo"] == ["b1:hello 0"], again
    lbnet.rec.driver.gc()
    rows = lbnet.rec.conntrack("m4")
    assert sorted((bool(r.get("alternate-path")), r["state"]) for r in rows) == [
        (False, "established"), (True, "established")], rows  # fmt: skip


def test_flows_no_service_owns_are_synced_too(lbnet: LbNet) -> None:
    """A firewall "pass" flow (allowed on an interface whose default drops its replies) and
    an egress-SNAT flow have no service: their records say so, are installed without ids,
    and carry on with their translation."""
    from test_datapath_firewall import set_fw

    from appliance.datapath import layout as L
    from appliance.ha.flowsync import HEAD, REC_F_NOSVC, FlowSync

    up, down = lbnet.interfaces[0], lbnet.interfaces[1]
    b2_out = {"name": "b2-out", "preference": 10, "source-prefix": "198.18.12.0/24",
              "action": "allow"}  # fmt: skip
    set_fw(lbnet, [b2_out], {down: "drop", up: "allow"},
           snat=[{"name": "v4", "preference": 10, "source-prefix": "198.18.12.0/24",
                  "address": "198.18.99.250"}])  # fmt: skip
    fs = FlowSync(lbnet.rec, lambda payload: None)
    passed = UdpFlow(lbnet.client, backend_addr(1), port=UDP_PORT)  # client -> b1: pass
    snat = UdpFlow(lbnet.backends[1], "198.18.0.1", port=UDP_PORT)  # b2 -> client: SNAT
    lbnet.client.start_udp_echo(UDP_PORT)
    try:
        assert passed.send(100) == "ok" and snat.send(100) == "ok"
        dump = b"".join(fs.dump_chunks())
        heads = [HEAD.unpack_from(dump, o) for o in range(0, len(dump), RECORD_SIZE)]
        assert sorted((h[3] & L.CT_F_PASS, h[6]) for h in heads) == \
            [(0, REC_F_NOSVC), (L.CT_F_PASS, REC_F_NOSVC)]  # fmt: skip
        ct = lbnet.rec.program.table("ct4_map")  # IPv4 keys (bpf/lib/ct_tables.h)

        def origs() -> dict[int, Any]:  # flags & PASS -> the ORIG entry's (snat, port)
            return {v.flags & L.CT_F_PASS: (L.words_addr(v.t.snat.w, 4), int(v.t.snat_port))
                    for v in ct.values() if v.dir == L.CT_DIR_ORIG}  # fmt: skip

        before = origs()
        assert before[0][0] == "198.18.99.250"  # the egress SNAT flow's translation
        lbnet.rec.driver.ct.flush(lambda e: True)
        res = fs.install("198.18.0.3", dump)
        assert res["entries"] == 4 and res["unbound"] == 0 and res["refused"] == 0, res
        assert all(v.flags & L.CT_F_SYNCED and v.svc_id == 0 for v in ct.values())
        assert passed.send(100) == "ok" and snat.send(100) == "ok"
        assert origs() == before  # the same translation: the installed entries carried them
        assert not any(v.flags & L.CT_F_SYNCED for v in ct.values() if v.dir == L.CT_DIR_ORIG)
    finally:
        passed.close()
        snat.close()
