"""SCTP multihoming beyond one family and one parameter per path (bpf/lib/sctp_mh.h), with
scapy peers over raw sockets: the INIT / INIT ACK grown when a peer lists fewer addresses
than the service has secondaries, secondary addresses of the other family than the VIP's
(IPv4 associations with IPv6 paths and the other way round), and alternate paths that end
with their association."""

from __future__ import annotations

import time

import pytest
from dpkit import (
    SNAT4,
    SNAT6,
    VIP4,
    VIP6,
    LbNet,
    backend_addr,
    ct_values,
    service,
    wait_for,
)
from sctpkit import SctpServer, associate

pytestmark = pytest.mark.datapath

CLIENT4, CLIENT6 = "198.18.0.1", "2001:db8::1"
VIP4B, SNAT4B, VIP6B, SNAT6B = "198.19.0.11", "198.19.0.101", "2001:db8:ff::11", "2001:db8:ff::101"
VIP4C, SNAT4C, VIP6C, SNAT6C = "198.19.0.12", "198.19.0.102", "2001:db8:ff::12", "2001:db8:ff::102"
B1_4, B1_6 = backend_addr(1), backend_addr(1, 6)


def mh_service(name: str, vip: str, pairs: list[tuple[str, str]],
               **kw: object) -> dict[str, object]:  # fmt: skip
    return service(name, vip=vip, port=36412, proto="sctp", backends=(1,), ep_port=36412,
                   mode="full-nat", **{"snat-address": SNAT6 if ":" in vip else SNAT4,
                                       "secondary-vip": [v for v, _ in pairs],
                                       "secondary-snat-address": [s for _, s in pairs]}, **kw)


def rows(lbnet: LbNet, name: str) -> list[dict[str, object]]:
    return lbnet.rec.conntrack(name)


def test_sctp_init_and_init_ack_grow_and_paths_mix_families(lbnet: LbNet) -> None:
    """Each service has a secondary pair of the other family and one of its own. The client
    lists one address (the other family's), the endpoint too: that parameter is rewritten
    in place, the second secondary is appended (the packet grows, the CRC32c is right), and
    the paths are: the listed addresses through the other-family pair, the primary
    addresses through the same-family pair."""
    srv = SctpServer(lbnet.backends[0], "b1", addrs=(B1_4, B1_6), family="other")
    lbnet.set(mh_service("mx4", VIP4, [(VIP6B, SNAT6B), (VIP4C, SNAT4C)]),
              mh_service("mx6", VIP6, [(VIP4B, SNAT4B), (VIP6C, SNAT6C)]))
    todo = [
        {"vip": VIP4, "port": 36412, "sport": 46000, "local": CLIENT4, "addrs": [CLIENT6],
         "heartbeat": True, "paths": [(CLIENT4, VIP4), (CLIENT6, VIP6B), (CLIENT4, VIP4C)]},
        {"vip": VIP6, "port": 36412, "sport": 46001, "local": CLIENT6, "addrs": [CLIENT4],
         "heartbeat": True, "paths": [(CLIENT6, VIP6), (CLIENT4, VIP4B), (CLIENT6, VIP6C)]},
    ]  # fmt: skip
    got = associate(lbnet.client, todo)
    assert all(r["crc"] for r in got), got
    # The client learns the secondary VIPs, in order, never the endpoint's own addresses.
    assert [r["init_ack_addrs"] for r in got] == [[VIP6B, VIP4C], [VIP4B, VIP6C]]
    assert [r["heartbeats"] for r in got] == [[VIP4, VIP6B, VIP4C], [VIP6, VIP4B, VIP6C]]
    assert [r["echo"] for r in got] == [["b1:hello 0", "b1:hello 1", "b1:hello 2"]] * 2
    seen = srv.seen()
    assert seen and all(r["crc"] for r in seen), seen
    inits = [(r["src"], r["addrs"]) for r in seen if r["chunks"] == ["init"]]
    assert inits == [(SNAT4, [SNAT6B, SNAT4C]), (SNAT6, [SNAT4B, SNAT6C])]
    # What each path looks like from the endpoint: a secondary SNAT address to one of its own.
    paths = {(r["src"], r["dst"]) for r in seen if r["chunks"][0] in ("heartbeat", "data")}
    assert paths == {(SNAT4, B1_4), (SNAT6B, B1_6), (SNAT4C, B1_4),
                     (SNAT6, B1_6), (SNAT4B, B1_4), (SNAT6C, B1_6)}  # fmt: skip
    # One association each, three paths each (the alternate ones not counted as sessions).
    for name, want in (("mx4", {CLIENT4, f"[{CLIENT6}]"}), ("mx6", {CLIENT4, f"[{CLIENT6}]"})):
        assert {str(r["client"]).rsplit(":", 1)[0] for r in rows(lbnet, name)} == want
        assert len(rows(lbnet, name)) == 3
        assert sorted(bool(r.get("alternate-path")) for r in rows(lbnet, name)) == [
            False, True, True]  # fmt: skip
    lbnet.rec.driver.gc()
    assert len(rows(lbnet, "mx4")) == len(rows(lbnet, "mx6")) == 3


def test_sctp_alternate_paths_end_with_their_association(lbnet: LbNet) -> None:
    """Alternate paths have no idle limit of their own: their packets keep the association's
    primary flow alive, an ABORT on one closes the association, and the sweep removes them
    once the primary flow is closed or gone (IPv4 and IPv6)."""
    SctpServer(lbnet.backends[0], "b1", addrs=(B1_4, B1_6))
    lbnet.set(mh_service("a4", VIP4, [(VIP4B, SNAT4B)], **{"inactivity-timeout": 3}),
              mh_service("a6", VIP6, [(VIP6B, SNAT6B)], **{"inactivity-timeout": 3}))
    alt = {VIP4: (CLIENT4, VIP4B), VIP6: (CLIENT6, VIP6B)}
    local = {VIP4: CLIENT4, VIP6: CLIENT6}
    # ABORT on the alternate path: the association is closed, its paths removed by the sweep.
    aborted = associate(lbnet.client, [
        {"vip": v, "port": 36412, "sport": 47000 + i, "local": local[v], "abort": True,
         "paths": [(local[v], v), alt[v]], "abort_path": alt[v]}
        for i, v in enumerate((VIP4, VIP6))])  # fmt: skip
    assert all(r["echo"] == ["b1:hello 0", "b1:hello 1"] for r in aborted), aborted
    for name in ("a4", "a6"):
        wait_for(lambda n=name: [r["state"] for r in rows(lbnet, n)] == ["closed"] * 2, timeout=3)
    lbnet.rec.driver.gc()
    assert [r["state"] for r in rows(lbnet, "a4") + rows(lbnet, "a6")] == ["closed"] * 2
    assert lbnet.rec.driver.ct.alt_paths_removed == 2
    wait_for(lambda: (lbnet.rec.driver.gc(), not rows(lbnet, "a4") + rows(lbnet, "a6"))[1],
             timeout=6)

    # Traffic on the alternate path alone keeps the association alive past its timeout.
    up = associate(lbnet.client, [
        {"vip": v, "port": 36412, "sport": 47100 + i, "local": local[v],
         "paths": [(local[v], v), alt[v]]} for i, v in enumerate((VIP4, VIP6))])  # fmt: skip
    start = time.monotonic()
    while time.monotonic() - start < 5:  # > the 3 s timeout, a HEARTBEAT per second
        associate(lbnet.client, [
            {"vip": v, "port": 36412, "sport": 47100 + i, "local": local[v], "heartbeat": True,
             "peer_tag": r["peer_tag"], "paths": [alt[v]]}
            for i, (v, r) in enumerate(zip((VIP4, VIP6), up, strict=True))])  # fmt: skip
        lbnet.rec.driver.gc()
        assert len(rows(lbnet, "a4")) == len(rows(lbnet, "a6")) == 2
        time.sleep(1)
    # Idle beyond the timeout: the primary flow expires and its paths go with it.
    wait_for(lambda: (lbnet.rec.driver.gc(), not rows(lbnet, "a4") + rows(lbnet, "a6"))[1],
             timeout=8)
    assert ct_values(lbnet.rec.program) == []
    assert sum(1 for _ in lbnet.rec.program.table("mh_alt_map")) == 0
