"""SCTP through the TC load balancer: INIT / INIT ACK / COOKIE ECHO / COOKIE ACK / DATA crafted
with scapy over raw sockets (the kernel has no SCTP), every mode, IPv4 and IPv6, the CRC32c
checked by the backends and by the client."""

from __future__ import annotations

from typing import Any

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
from sctpkit import SctpServer, associate, serve_all

from appliance.config import Diff
from appliance.datapath import crc32c

pytestmark = pytest.mark.datapath

CLIENT4, CLIENT6 = "198.18.0.1", "2001:db8::1"


def assoc(vip: str, port: int, sport: int, **kw: object) -> dict[str, object]:
    return {"vip": vip, "port": port, "sport": sport,
            "local": CLIENT6 if ":" in vip else CLIENT4, **kw}  # fmt: skip


def ct_entries(lbnet: LbNet) -> int:
    return len(ct_values(lbnet.rec.program))


def test_crc32c_incremental_fix_matches_a_full_recompute() -> None:
    # Pure Python mirror of bpf/lib/crc32c.h: the fix for changed ports equals the CRC of
    # the rewritten packet (unit test of the arithmetic; the datapath tests below check it
    # on real packets).
    import os
    import struct

    table = crc32c.shift_table(2048)
    for n in (16, 52, 1500):
        pkt = bytearray(os.urandom(n))
        pkt[8:12] = bytes(4)
        new = bytearray(pkt)
        new[0:4] = os.urandom(4)
        x = struct.unpack("<I", bytes(a ^ b for a, b in zip(pkt[:4], new[:4], strict=True)))[0]
        word = x
        for _ in range(32):
            word = (word >> 1) ^ (crc32c.POLY if word & 1 else 0)
        fix = crc32c.mul(table[n - 4], word)
        assert crc32c.crc32c(bytes(pkt)) ^ fix == crc32c.crc32c(bytes(new))


def test_sctp_every_nat_mode_round_robin_ipv4_ipv6(lbnet: LbNet) -> None:
    servers = serve_all(lbnet.backends)
    # default (DNAT, endpoint port differs: the CRC follows the port), one-arm, full-NAT.
    lbnet.set(
        service("d4", port=3868, proto="sctp", ep_port=3869),
        service("o4", port=3870, proto="sctp", ep_port=3870, mode="one-arm"),
        service("f4", port=3871, proto="sctp", ep_port=3868, mode="full-nat",
                **{"snat-address": SNAT4}),
        service("d6", vip=VIP6, port=3868, proto="sctp", ep_port=3869),
        service("o6", vip=VIP6, port=3870, proto="sctp", ep_port=3870, mode="one-arm"),
        service("f6", vip=VIP6, port=3871, proto="sctp", ep_port=3868, mode="full-nat",
                **{"snat-address": SNAT6}),
    )  # fmt: skip
    ports = {"d": 3868, "o": 3870, "f": 3871}
    todo = [assoc(vip, ports[m], 40000 + 10 * i + j)
            for i, (m, vip) in enumerate((m, v) for v in (VIP4, VIP6) for m in "dof")
            for j in range(3)]  # fmt: skip
    got = associate(lbnet.client, todo)
    assert all(r["crc"] for r in got), got
    for k in range(6):
        assert [r["endpoint"] for r in got[3 * k : 3 * k + 3]] == ["b1", "b2", "b3"], got
        assert all(r["echo"] == [f"{r['endpoint']}:hello 0"] for r in got[3 * k : 3 * k + 3])
    # What the backends saw: every chunk with a valid CRC32c, sources and ports translated.
    for n, srv in enumerate(servers, start=1):
        rows = srv.seen()
        assert rows and all(r["crc"] for r in rows), rows
        by = {(r["dport"], ":" in r["src"]): r for r in rows if r["chunks"][0] == "init"}
        v4, v6 = backend_addr(n), backend_addr(n, 6)
        assert by[(3869, False)]["src"] == CLIENT4 and by[(3869, True)]["src"] == CLIENT6
        assert by[(3870, False)]["src"] == f"198.18.{10 + n}.254"  # one-arm: the LB's own
        assert by[(3870, True)]["src"] == f"2001:db8:{10 + n}::fe"
        assert by[(3868, False)]["src"] == SNAT4 and by[(3868, True)]["src"] == SNAT6
        assert {r["dst"] for r in rows} == {v4, v6}
        seq = [r["chunks"][0] for r in rows if r["dport"] == 3869 and ":" not in r["src"]]
        assert seq == ["init", "cookie-echo", "data"]
    rows = lbnet.rec.conntrack("f4")
    assert len(rows) == 3 and {r["state"] for r in rows} == {"established"}
    assert all(r["protocol"] == "sctp" and r["snat"].startswith(SNAT4) for r in rows)
    # The daemon's sweep keeps every SCTP entry (the ports are part of SCTP's keys).
    assert ct_entries(lbnet) == 2 * len(todo)
    lbnet.rec.driver.gc()
    assert ct_entries(lbnet) == 2 * len(todo)


def test_sctp_dsr(lbnet: LbNet) -> None:
    for b in lbnet.backends:
        b.run(["ip", "addr", "add", f"{VIP4}/32", "dev", "lo"], check=True)
        b.run(["ip", "addr", "add", f"{VIP6}/128", "dev", "lo"], check=True)
    servers = serve_all(lbnet.backends)
    lbnet.set(service("s4", port=38412, proto="sctp", ep_port=38412, mode="dsr"),
              service("s6", vip=VIP6, port=38412, proto="sctp", ep_port=38412, mode="dsr"))
    got = associate(lbnet.client, [assoc(v, 38412, 41000 + i + (10 if ":" in v else 0))
                                   for v in (VIP4, VIP6) for i in range(3)])  # fmt: skip
    assert [r["endpoint"] for r in got] == ["b1", "b2", "b3"] * 2
    assert all(r["crc"] for r in got)
    for srv in servers:
        rows = srv.seen()
        assert rows and all(r["crc"] and r["dst"] in (VIP4, VIP6) for r in rows), rows
    rows = lbnet.rec.conntrack("s4")
    assert len(rows) == 3 and {r["state"] for r in rows} == {"established"}  # COOKIE ECHO


def test_sctp_every_algorithm(lbnet: LbNet) -> None:
    serve_all(lbnet.backends)
    algorithms = ["weighted", "hash", "maglev", "least-connections", "priority", "persistence"]
    lbnet.set(*(service(a, port=2905 + i, proto="sctp", ep_port=2999, algorithm=a,
                        mode="full-nat", **{"snat-address": SNAT4})
                for i, a in enumerate(algorithms)))  # fmt: skip
    got = associate(lbnet.client, [assoc(VIP4, 2905 + i, 42000 + 10 * i + j)
                                   for i in range(len(algorithms)) for j in range(3)])
    assert all(r["crc"] and r["echo"] == [f"{r['endpoint']}:hello 0"] for r in got), got
    eps = {a: [r["endpoint"] for r in got[3 * i : 3 * i + 3]] for i, a in enumerate(algorithms)}
    assert eps["priority"] == ["b1"] * 3
    assert len(set(eps["persistence"])) == 1  # one client address
    assert set(eps["weighted"]) == set(eps["least-connections"]) == {"b1", "b2", "b3"}, eps


def test_sctp_states_and_who_may_open(lbnet: LbNet) -> None:
    servers = serve_all(lbnet.backends)
    lbnet.set(service("st", port=3868, proto="sctp", ep_port=3869))
    got = associate(lbnet.client, [assoc(VIP4, 3868, 43001, shutdown=True),
                                   assoc(VIP4, 3868, 43002, abort=True),
                                   assoc(VIP4, 3868, 43003)])  # fmt: skip
    assert all(r["crc"] for r in got)

    def states() -> dict[int, tuple[str, int]]:
        return {int(r["client"].rsplit(":", 1)[1]): (r["state"], r["timeout-s"])
                for r in lbnet.rec.conntrack("st")}  # fmt: skip

    want = {43001: ("fin-wait", 10), 43002: ("closed", 2), 43003: ("established", 240)}
    wait_for(lambda: states() == want, timeout=3)
    # Only an INIT opens an association: a DATA (or a COOKIE ECHO) with no flow is not
    # balanced; the backends never see it.
    before = sum(len(s.seen()) for s in servers)
    with pytest.raises(RuntimeError):
        associate(lbnet.client, [assoc(VIP4, 3868, 43004, paths=[(CLIENT4, VIP4)],
                                       skip_init=True)], timeout=1)  # fmt: skip
    assert 43004 not in states()
    assert sum(len(s.seen()) for s in servers) == before
    # A new INIT on the closed association's tuple starts a new one, on the next endpoint
    # (a flow of its own: the closed one, keyed by its own tag, ends with its 2 s).
    again = associate(lbnet.client, [assoc(VIP4, 3868, 43002)])
    assert again[0]["endpoint"] == "b1"
    assert sorted(r["state"] for r in lbnet.rec.conntrack("st")
                  if r["client"].endswith(":43002")) in (["closed", "established"],
                                                         ["established"])  # fmt: skip


def test_sctp_through_the_cli_on_a_running_daemon(lb_daemon: tuple[LbNet, Any]) -> None:
    net, d = lb_daemon
    d.apply({"datapath": {"interface": [{"name": i} for i in net.interfaces]}})
    serve_all(net.backends)
    eps = f"{backend_addr(1)}:38412,{backend_addr(2)}:38412"
    res = d.cli("lb", "add", "ngap", "--vip", VIP4, "--proto", "sctp", "--port", "38412",
                "--mode", "full-nat", "--snat", SNAT4, "--endpoints", eps)  # fmt: skip
    assert res.returncode == 0, res.stderr
    got = associate(net.client, [assoc(VIP4, 38412, 44000 + i) for i in range(4)])
    assert [r["endpoint"] for r in got] == ["b1", "b2", "b1", "b2"] and all(r["crc"] for r in got)
    rows = d.cli_json("ct", "list", "--service", "ngap")
    assert len(rows) == 4 and {(r["protocol"], r["state"]) for r in rows} == {
        ("sctp", "established")}  # fmt: skip
    # Multihoming and gtp-teid through the CLI; misuse refused naming the flag.
    bad = d.cli("lb", "add", "bad", "--vip", VIP4, "--proto", "tcp", "--port", "81",
                "--secondary-vip", VIP4B, "--secondary-snat", SNAT4B, "--endpoints", eps)
    assert bad.returncode != 0 and "--secondary-vip" in bad.stderr, bad.stderr
    res = d.cli("lb", "add", "mh", "--vip", VIP4, "--proto", "sctp", "--port", "36412",
                "--mode", "full-nat", "--snat", SNAT4, "--secondary-vip", VIP4B,
                "--secondary-snat", SNAT4B, "--endpoints", eps)  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert VIP4B in d.cli("lb", "show", "mh").stdout
    assert d.cli_json("lb", "show", "mh")["secondary-snat-address"] == [SNAT4B]
    res = d.cli("lb", "add", "n3", "--vip", VIP4, "--proto", "udp", "--port", "2152",
                "--algo", "gtp-teid", "--endpoints", eps.replace("38412", "2152"))
    assert res.returncode == 0, res.stderr
    assert d.cli_json("lb", "show", "n3")["algorithm"] == "gtp-teid"


VIP4B, SNAT4B, VIP6B, SNAT6B = "198.19.0.11", "198.19.0.101", "2001:db8:ff::11", "2001:db8:ff::101"


def test_sctp_multihoming_path_failover(lbnet: LbNet) -> None:
    """Client and backend with two addresses each; full-NAT service with a secondary VIP and
    SNAT address. The INIT / INIT ACK address parameters are rewritten to the balancer's
    (IPv4 and IPv6), the second path gets state when the association comes up, and after
    the first path's links go down HEARTBEAT and DATA continue on the second."""
    c, lb, b1 = lbnet.client, lbnet.lb, lbnet.backends[0]
    cl = lbnet.topo.link(c, lb, ["198.18.2.1/24", "2001:db8:2::1/64"],
                         ["198.18.2.254/24", "2001:db8:2::fe/64"])  # fmt: skip
    bl = lbnet.topo.link(lb, b1, ["198.18.21.254/24", "2001:db8:21::fe/64"],
                         ["198.18.21.1/24", "2001:db8:21::1/64"])  # fmt: skip
    c.add_route(f"{VIP4B}/32", "198.18.2.254")
    c.add_route(f"{VIP6B}/128", "2001:db8:2::fe")
    b1.add_route(f"{SNAT4B}/32", "198.18.21.254")
    b1.add_route(f"{SNAT6B}/128", "2001:db8:21::fe")
    interfaces = [*lbnet.interfaces, cl.ifname(lb), bl.ifname(lb)]
    lbnet.rec.apply(Diff(sections_changed={"sluice:datapath": (
        None, {"interface": [{"name": i, "hook": "tc"} for i in interfaces]})}))  # fmt: skip
    srv = SctpServer(b1, "b1", addrs=("198.18.21.1", "2001:db8:21::1"))
    lbnet.set(
        service("mh4", port=36412, proto="sctp", backends=(1,), ep_port=36412, mode="full-nat",
                **{"snat-address": SNAT4, "secondary-vip": [VIP4B],
                   "secondary-snat-address": [SNAT4B]}),
        service("mh6", vip=VIP6, port=36412, proto="sctp", backends=(1,), ep_port=36412,
                mode="full-nat", **{"snat-address": SNAT6, "secondary-vip": [VIP6B],
                                    "secondary-snat-address": [SNAT6B]}),
    )  # fmt: skip
    second = {VIP4: ("198.18.2.1", VIP4B), VIP6: ("2001:db8:2::1", VIP6B)}
    todo = [assoc(v, 36412, 45000 + n, addrs=[second[v][0]], heartbeat=True,
                  paths=[(CLIENT6 if n else CLIENT4, v), second[v]])
            for n, v in enumerate((VIP4, VIP6))]  # fmt: skip
    got = associate(lbnet.client, todo)
    assert all(r["crc"] for r in got), got
    assert [r["init_ack_addrs"] for r in got] == [[VIP4B], [VIP6B]]  # the endpoint's: hidden
    assert [r["heartbeats"] for r in got] == [[VIP4, VIP4B], [VIP6, VIP6B]]
    assert [r["echo_from"] for r in got] == [[VIP4, VIP4B], [VIP6, VIP6B]]
    inits = [r for r in srv.seen() if r["chunks"] == ["init"]]
    assert [(r["src"], r["addrs"]) for r in inits] == [(SNAT4, [SNAT4B]), (SNAT6, [SNAT6B])]
    assert all(r["crc"] for r in srv.seen())
    for name, client2 in (("mh4", "198.18.2.1"), ("mh6", "[2001:db8:2::1]")):
        rows = lbnet.rec.conntrack(name)
        assert {r["client"].rsplit(":", 1)[0] for r in rows} >= {client2}, rows
    assert len(lbnet.rec.conntrack("mh4")) == 2  # the primary path and the second
    assert ct_entries(lbnet) == 8  # two paths x two directions x two families
    lbnet.rec.driver.gc()
    assert ct_entries(lbnet) == 8

    # The first path's links go down; the association carries on over the second one.
    c.run(["ip", "link", "set", "dev", lbnet.topo.links[0].ifname(c), "down"], check=True)
    b1.run(["ip", "link", "set", "dev", lbnet.topo.links[1].ifname(b1), "down"], check=True)
    seen = len(srv.seen())
    again = associate(lbnet.client, [
        {**t, "peer_tag": r["peer_tag"], "paths": [second[t["vip"]]]}
        for t, r in zip(todo, got, strict=True)])  # fmt: skip
    assert [(r["heartbeats"], r["echo_from"]) for r in again] == [
        ([VIP4B], [VIP4B]), ([VIP6B], [VIP6B])]  # fmt: skip
    after = srv.seen()[seen:]
    assert {(r["src"], r["dst"]) for r in after} == {(SNAT4B, "198.18.21.1"),
                                                     (SNAT6B, "2001:db8:21::1")}
    assert all(r["crc"] for r in after)


def test_sctp_verification_tags_are_checked(lbnet: LbNet) -> None:
    """A packet with a verification tag other than the one its receiver chose is not the
    association's: the balancer drops it (DNAT IPv4, full-NAT IPv6), the right tag goes on."""
    servers = serve_all(lbnet.backends)
    lbnet.set(service("vt4", port=3868, proto="sctp", ep_port=3869),
              service("vt6", vip=VIP6, port=3868, proto="sctp", ep_port=3869, mode="full-nat",
                      **{"snat-address": SNAT6}))  # fmt: skip
    up = associate(lbnet.client, [assoc(VIP4, 3868, 49000), assoc(VIP6, 3868, 49001)])
    tags = {r["peer_tag"] for r in up}
    for r, vip in zip(up, (VIP4, VIP6), strict=True):
        with pytest.raises(RuntimeError):  # no answer: the DATA never reached the endpoint
            associate(lbnet.client, [assoc(vip, 3868, r["sport"], peer_tag=r["peer_tag"] ^ 0x5A5A,
                                           paths=[(CLIENT6 if ":" in vip else CLIENT4, vip)])],
                      timeout=1)  # fmt: skip
    seen = [x for s in servers for x in s.seen() if x["chunks"][0] != "init"]
    assert seen and {x["tag"] for x in seen} <= tags, seen
    again = associate(lbnet.client, [assoc(vip, 3868, r["sport"], peer_tag=r["peer_tag"])
                                     for r, vip in zip(up, (VIP4, VIP6), strict=True)])
    assert [a["echo"] for a in again] == [[f"{r['endpoint']}:hello 0"] for r in up]


def test_sctp_verification_tags_key_the_flow(lbnet: LbNet) -> None:
    """Two associations from one client address and port (clients behind an SCTP-aware NAT)
    are two flows: keyed by their verification tags, balanced apart, each packet to its own
    endpoint (DNAT IPv4, full-NAT IPv6). Through DNAT to one endpoint (hash), a new INIT is
    that association's restart for the endpoint: the old flow gives way."""
    servers = serve_all(lbnet.backends)
    lbnet.set(service("k4", port=3868, proto="sctp", ep_port=3869),
              service("k6", vip=VIP6, port=3868, proto="sctp", ep_port=3869, mode="full-nat",
                      **{"snat-address": SNAT6}),
              service("h4", port=3870, proto="sctp", ep_port=3869, algorithm="hash"))  # fmt: skip
    for vip, sport in ((VIP4, 50000), (VIP6, 50001)):
        up = associate(lbnet.client, [assoc(vip, 3868, sport, init_tag=0x11110000),
                                      assoc(vip, 3868, sport, init_tag=0x22220000)])
        assert all(r["crc"] for r in up)
        assert up[0]["endpoint"] != up[1]["endpoint"], up
        rows = [r for r in lbnet.rec.conntrack("k4" if vip == VIP4 else "k6")
                if r["client"].endswith(f":{sport}")]
        assert len(rows) == 2 and {r["state"] for r in rows} == {"established"}, rows
        # Each association's DATA (same addresses and ports, its own tag) reaches its own
        # endpoint, in either order.
        again = associate(lbnet.client, [assoc(vip, 3868, sport, peer_tag=r["peer_tag"])
                                         for r in reversed(up)])
        assert [a["echo"] for a in again] == [[f"{r['endpoint']}:hello 0"] for r in reversed(up)]
    for srv in servers:  # every DATA an endpoint got carried the tag it chose
        mine = {r["tag"] for r in srv.seen() if r["chunks"][0] == "data"}
        assert len(mine) <= 1, mine
    first = associate(lbnet.client, [assoc(VIP4, 3870, 50002, init_tag=0x33330000)])
    second = associate(lbnet.client, [assoc(VIP4, 3870, 50002, init_tag=0x44440000)])
    assert first[0]["endpoint"] == second[0]["endpoint"]
    rows = lbnet.rec.conntrack("h4")
    assert len(rows) == 1 and rows[0]["state"] == "established", rows


def test_fragmented_sctp_follows_its_first_fragment(lbnet: LbNet) -> None:
    """A DATA bigger than the links (4,000 bytes: the client's and the endpoint's kernels
    send it in IP fragments) reaches the endpoint whole and its answer the client, IPv4 and
    IPv6: the first fragment finds the flow, the rest follow it (lib/frag.h, with the
    verification tag). Where NAT changes the ports (full-NAT) the CRC32c cannot follow a
    fragment: its fragments are dropped, never sent with a wrong checksum."""
    servers = serve_all(lbnet.backends)
    lbnet.set(service("fr4", port=3868, proto="sctp", ep_port=3868),
              service("fr6", vip=VIP6, port=3868, proto="sctp", ep_port=3868),
              service("ff4", port=3870, proto="sctp", ep_port=3870, mode="full-nat",
                      **{"snat-address": SNAT4}))  # fmt: skip
    pad = 4000
    got = associate(lbnet.client, [assoc(v, 3868, 51000 + i + (10 if ":" in v else 0), pad=pad)
                                   for v in (VIP4, VIP6) for i in range(2)])  # fmt: skip
    assert all(r["crc"] for r in got), got
    assert [r["endpoint"] for r in got] == ["b1", "b2"] * 2
    assert all(r["echo"] == [f"{r['endpoint']}:hello 0" + "." * pad] for r in got)
    big = [x for s in servers for x in s.seen() if "data" in x["chunks"]]
    assert len(big) == 4 and all(x["crc"] for x in big), big
    up = associate(lbnet.client, [assoc(VIP4, 3870, 51100)])
    before = sum(len(s.seen()) for s in servers)
    with pytest.raises(RuntimeError):
        associate(lbnet.client, [assoc(VIP4, 3870, 51100, peer_tag=up[0]["peer_tag"],
                                       pad=pad)], timeout=1)  # fmt: skip
    assert sum(len(s.seen()) for s in servers) == before
    again = associate(lbnet.client, [assoc(VIP4, 3870, 51100, peer_tag=up[0]["peer_tag"])])
    assert again[0]["echo"] == [f"{up[0]['endpoint']}:hello 0"]


def test_sctp_an_abort_with_the_clients_own_tag_closes_its_flow(lbnet: LbNet) -> None:
    """An ABORT with the T bit carries its sender's own tag (RFC 9260 8.5.1): from the
    client that is not the tag its flow is keyed by; the balancer finds the flow through
    its client-tag index and closes it (DNAT IPv4, full-NAT IPv6), the endpoint gets it."""
    servers = serve_all(lbnet.backends)
    lbnet.set(service("ab4", port=3868, proto="sctp", ep_port=3869),
              service("ab6", vip=VIP6, port=3868, proto="sctp", ep_port=3869, mode="full-nat",
                      **{"snat-address": SNAT6}))  # fmt: skip
    associate(lbnet.client, [assoc(VIP4, 3868, 52000, abort=True, abort_own_tag=True),
                             assoc(VIP6, 3868, 52001, abort=True, abort_own_tag=True)])
    for name in ("ab4", "ab6"):
        wait_for(lambda n=name: [r["state"] for r in lbnet.rec.conntrack(n)] == ["closed"],
                 timeout=3, what=f"{name} closed")  # fmt: skip
    aborts = [x for s in servers for x in s.seen() if x["chunks"][0] == "abort"]
    assert len(aborts) == 2 and all(x["crc"] for x in aborts), aborts


# The first ICMP destination-unreachable a backend gets: its quoted packet's addresses and
# ports ("src dst sport dport").
RECV_UNREACH = r"""
import socket, struct
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
s.settimeout(6)
print("ready", flush=True)
while True:
    pkt = s.recv(2000)
    icmp = pkt[(pkt[0] & 15) * 4:]
    if icmp[0] == 3:
        inner = icmp[8:]
        sp, dp = struct.unpack("!HH", inner[(inner[0] & 15) * 4:][:4])
        print(socket.inet_ntoa(inner[12:16]), socket.inet_ntoa(inner[16:20]), sp, dp, flush=True)
        break
"""

# From the client: "port unreachable" quoting an SCTP packet VIP -> client with the
# client's own tag. argv: client vip client-port vip-port tag.
SEND_UNREACH = r"""
import sys
from scapy.all import IP, ICMP, send, conf
from scapy.layers.sctp import SCTP, SCTPChunkData
conf.verb = 0
client, vip, cport, vport, tag = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:6])
quoted = IP(src=vip, dst=client) / SCTP(sport=vport, dport=cport, tag=tag) / SCTPChunkData(
    tsn=1, data=b"x" * 20)
send(IP(src=client, dst=vip) / ICMP(type=3, code=3) / bytes(quoted)[:48])
"""


def test_an_icmp_error_quoting_the_clients_tag_reaches_the_endpoint(lbnet: LbNet) -> None:
    """The client's "port unreachable" about a packet the balancer sent it quotes the
    client's own tag, not the one the flow is keyed by: found through the client-tag
    index and translated to the endpoint's view (DNAT IPv4)."""
    import subprocess
    import sys

    serve_all(lbnet.backends)
    lbnet.set(service("ie4", port=3868, proto="sctp", ep_port=3869))
    ctag = 0x55550000
    up = associate(lbnet.client, [assoc(VIP4, 3868, 53000, init_tag=ctag)])
    b = lbnet.backends[int(up[0]["endpoint"][1:]) - 1]
    rx = b.popen(["python3", "-c", RECV_UNREACH], stdout=subprocess.PIPE, text=True)
    try:
        assert rx.stdout is not None and rx.stdout.readline().strip() == "ready"
        sent = lbnet.client.run([sys.executable, "-c", SEND_UNREACH, CLIENT4, VIP4, "53000",
                                 "3868", str(ctag)], timeout=20)  # fmt: skip
        assert sent.returncode == 0, sent.stderr
        out, _ = rx.communicate(timeout=10)
    finally:
        if rx.poll() is None:
            rx.kill()
    ep = backend_addr(int(up[0]["endpoint"][1:]))
    assert out.split() == [ep, CLIENT4, "3869", "53000"], out
