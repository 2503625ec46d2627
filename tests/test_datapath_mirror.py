"""Mirror sessions (bpf/qos.c, lib/mirror.h) with real packets.

Beside the client/LB/backends net, a monitor host hangs off the LB (SPAN/RSPAN copies leave
the LB towards it) and a collector host behind a routed link (ERSPAN copies are sent to
its address). What the client sent is captured on the client's interface; the copies on
the monitor's / collector's; the original flow must work as before (UDP echo through the
VIP answers).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from dpkit import UDP_PORT, VIP4, service, wait_for
from qoskit import Capture, set_qos

pytestmark = pytest.mark.datapath

N = 5


def echo_service(net: Any) -> None:
    net.set(service("u", port=UDP_PORT, proto="udp", backends=(1,), ep_port=UDP_PORT))


def send_echoes(net: Any, n: int = N) -> None:
    for i in range(n):
        assert net.client.udp_request(VIP4, UDP_PORT, b"mirror-%d" % i) == b"mirror-%d" % i


def csum16(data: bytes) -> int:
    total = sum(int.from_bytes(data[i:i + 2], "big") for i in range(0, len(data), 2))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return 0xFFFF - total


def has_n(n: int) -> Any:
    return lambda frames: len(client_frames(frames)) >= n


def client_frames(frames: list[bytes]) -> list[bytes]:
    """UDP frames to the service port (IPv4, no VLAN) among ``frames``."""
    port = UDP_PORT.to_bytes(2, "big")
    return [f for f in frames if f[12:14] == b"\x08\x00" and f[23] == 17 and f[36:38] == port]


def test_span_copies_are_byte_identical(qnet: Any, tmp_path: Path) -> None:
    echo_service(qnet)
    mon = qnet.topo.host("mon")
    link = qnet.topo.link(qnet.lb, mon)
    client_if = qnet.interfaces[0]
    set_qos(qnet, None, {"session": [{
        "name": "s", "type": "span", "destination-interface": link.ifname(qnet.lb),
        "source-interface": [{"name": client_if, "direction": "ingress"}]}]})  # fmt: skip
    sent = Capture(qnet.client, qnet.topo.links[0].ifname(qnet.client), tmp_path / "c.pcap",
                   f"udp port {UDP_PORT}", direction="out")  # fmt: skip
    copy = Capture(mon, link.ifname(mon), tmp_path / "m.pcap", f"udp port {UDP_PORT}")
    send_echoes(qnet)  # the original flow works with the mirror on
    originals = client_frames(sent.stop(has_n(N)))
    copies = client_frames(copy.stop(has_n(N)))
    assert len(originals) >= N - 1, originals  # a loaded machine's capture may miss one
    assert all(o in copies for o in originals), (copies[:2], originals[:2])  # byte for byte
    st = qnet.rec.qos_state()["mirror"]["s"]
    assert st["packets"] >= N and st["failed"] == 0, st


def test_span_of_egress_copies_what_leaves(qnet: Any, tmp_path: Path) -> None:
    """An egress source: the frames the LB sends out of the backend's interface (after
    the balancer's rewrite, redirected there), copied as they leave."""
    echo_service(qnet)
    mon = qnet.topo.host("mon")
    link = qnet.topo.link(qnet.lb, mon)
    b1_link = qnet.topo.links[1]  # lb <-> b1
    set_qos(qnet, None, {"session": [{
        "name": "s", "type": "span", "destination-interface": link.ifname(qnet.lb),
        "source-interface": [{"name": qnet.interfaces[1], "direction": "egress"}]}]})  # fmt: skip
    got = Capture(qnet.backends[0], b1_link.ifname(qnet.backends[0]), tmp_path / "b.pcap",
                  f"udp port {UDP_PORT}", direction="in")  # fmt: skip
    copy = Capture(mon, link.ifname(mon), tmp_path / "m.pcap", f"udp port {UDP_PORT}")
    send_echoes(qnet)
    arrived = client_frames(got.stop(has_n(N)))
    copies = client_frames(copy.stop(has_n(N)))
    assert len(arrived) >= N - 1, arrived
    assert all(a in copies for a in arrived), (copies[:2], arrived[:2])  # byte for byte
    # Egress only: the echoes coming back in on that interface are not copied.
    assert len(copies) <= len(arrived) + 1, (len(copies), len(arrived))
    st = qnet.rec.qos_state()["mirror"]["s"]
    assert st["packets"] >= N - 1 and st["failed"] == 0, st


def test_rspan_copies_carry_the_vlan_and_sampling_skips(qnet: Any, tmp_path: Path) -> None:
    echo_service(qnet)
    mon = qnet.topo.host("mon")
    link = qnet.topo.link(qnet.lb, mon)
    set_qos(qnet, None, {"session": [{
        "name": "r", "type": "rspan", "vlan": 100, "destination-interface": link.ifname(qnet.lb),
        "source-service": ["u"]}]})  # fmt: skip
    sent = Capture(qnet.client, qnet.topo.links[0].ifname(qnet.client), tmp_path / "c.pcap",
                   f"udp port {UDP_PORT}", direction="out")  # fmt: skip
    copy = Capture(mon, link.ifname(mon), tmp_path / "m.pcap", "vlan 100")
    send_echoes(qnet)
    originals = client_frames(sent.stop(has_n(N)))
    frames = copy.stop(lambda f: len(f) >= 2 * N)
    assert len(originals) >= N - 1
    # The service's copies: both directions (requests, and the echoes from the backend).
    tagged = [f for f in frames if f[12:16] == b"\x81\x00\x00\x64"]
    untagged = [f[:12] + f[16:] for f in tagged]
    requests = [f for f in untagged if f[6:12] == originals[0][6:12]]  # the client's MAC
    assert all(o in requests for o in originals), (tagged[:2], originals[:2])
    assert len(tagged) >= 2 * N - 1, len(tagged)  # requests and echoes
    # One in 1,000 sampled: (almost) nothing copied, the rest counted as sampled out.
    set_qos(qnet, None, {"session": [{
        "name": "r", "type": "rspan", "vlan": 100, "destination-interface": link.ifname(qnet.lb),
        "source-service": ["u"], "sample": 1000}]})  # fmt: skip
    send_echoes(qnet)
    st = qnet.rec.qos_state()["mirror"]["r"]
    assert st["sampled-out"] >= 2 * N - 1 and st["packets"] <= 1, st


def erspan_run(qnet: Any, tmp_path: Path, addrs: tuple[str, str], session: dict[str, Any],
               gre_filter: str) -> tuple[list[bytes], list[bytes]]:
    """An ERSPAN session of the client's interface to a collector on a new link (the
    balancer's address, the collector's); the echoes sent and the copies captured."""
    echo_service(qnet)
    col = qnet.topo.host("col")
    link = qnet.topo.link(qnet.lb, col, [addrs[0]], [addrs[1]])
    collector = addrs[1].split("/")[0]
    set_qos(qnet, None, {"session": [{
        **session, "type": "erspan", "collector": collector,
        "source-interface": [{"name": qnet.interfaces[0]}]}]})  # fmt: skip
    sent = Capture(qnet.client, qnet.topo.links[0].ifname(qnet.client), tmp_path / "c.pcap",
                   f"udp port {UDP_PORT}", direction="out")  # fmt: skip
    copy = Capture(col, link.ifname(col), tmp_path / "e.pcap", gre_filter)
    # The session's set-up asked the kernel to resolve the collector's neighbour (the
    # program's FIB lookup cannot): copies go out once it is there.
    wait_for(lambda: "lladdr" in qnet.lb.run(["ip", "neigh", "show", collector]).stdout)
    send_echoes(qnet)
    originals = client_frames(sent.stop(has_n(N)))
    return originals, copy.stop(lambda f: len(f) >= N)


@pytest.mark.parametrize("version", [2, 3])
def test_erspan_copy_decodes_in_the_collector(qnet: Any, tmp_path: Path, version: int) -> None:
    scapy_all = pytest.importorskip("scapy.all")
    erspan = pytest.importorskip("scapy.contrib.erspan")
    originals, frames = erspan_run(qnet, tmp_path, ("198.18.30.254/24", "198.18.30.1/24"),
                                   {"name": "e", "erspan-version": version, "session-id": 77},
                                   "proto gre")  # fmt: skip
    assert len(originals) >= N - 1
    layer = erspan.ERSPAN_II if version == 2 else erspan.ERSPAN_III
    inner, seqs = [], []
    for raw in frames:
        pkt = scapy_all.Ether(raw)
        ip = pkt[scapy_all.IP]
        assert (ip.src, ip.dst, ip.proto) == ("198.18.30.254", "198.18.30.1", 47)
        assert ip.len == len(raw) - 14
        assert csum16(bytes(ip)[:20]) == 0  # the outer header's checksum is right
        e = pkt[layer]
        assert e.session_id == 77
        seqs.append(pkt[scapy_all.GRE].sequence_number)
        inner.append(bytes(e.payload))
    assert all(o in inner for o in originals), (frames[:1], originals[:1])
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    st = qnet.rec.qos_state()["mirror"]["e"]
    assert st["packets"] >= N and st["failed"] == 0, st


def test_erspan_with_an_ipv6_outer_header_decodes(qnet: Any, tmp_path: Path) -> None:
    """An IPv6 collector: the copies are IPv6/GRE/ERSPAN (type II), the inner frame as sent."""
    scapy_all = pytest.importorskip("scapy.all")
    erspan = pytest.importorskip("scapy.contrib.erspan")
    originals, frames = erspan_run(qnet, tmp_path, ("2001:db8:30::fe/64", "2001:db8:30::1/64"),
                                   {"name": "e6", "erspan-version": 2, "session-id": 78,
                                    "dscp": 10}, "ip6 proto 47")  # fmt: skip
    assert len(originals) >= N - 1 and frames, (originals, frames)
    inner = []
    for raw in frames:
        pkt = scapy_all.Ether(raw)
        ip6 = pkt[scapy_all.IPv6]
        assert (ip6.src, ip6.dst, ip6.nh) == ("2001:db8:30::fe", "2001:db8:30::1", 47)
        assert ip6.plen == len(raw) - 14 - 40 and ip6.tc == 10 << 2
        e = pkt[erspan.ERSPAN_II]
        assert e.session_id == 78
        inner.append(bytes(e.payload))
    assert all(o in inner for o in originals), (frames[:1], originals[:1])
    st = qnet.rec.qos_state()["mirror"]["e6"]
    assert st["packets"] >= N and st["failed"] == 0, st


def test_a_port_range_service_is_mirrored_from_each_flows_first_packet(
    qnet: Any, tmp_path: Path
) -> None:
    """A service over a port range: each new flow's first packet (no conntrack entry yet)
    is found through the range and copied, like the rest."""
    qnet.backends[0].start_udp_echo(6005)
    qnet.set(service("rng", port=6000, proto="udp", backends=(1,), ep_port=0,
                     **{"port-range-end": 6010}))  # fmt: skip
    mon = qnet.topo.host("mon")
    link = qnet.topo.link(qnet.lb, mon)
    set_qos(qnet, None, {"session": [{
        "name": "r", "type": "span", "destination-interface": link.ifname(qnet.lb),
        "source-service": ["rng"]}]})  # fmt: skip
    sent = Capture(qnet.client, qnet.topo.links[0].ifname(qnet.client), tmp_path / "c.pcap",
                   "udp port 6005", direction="out")  # fmt: skip
    copy = Capture(mon, link.ifname(mon), tmp_path / "m.pcap", "udp port 6005")
    for i in range(N):  # each request from a new socket: a new flow, its only packet
        assert qnet.client.udp_request(VIP4, 6005, b"r%d" % i) == b"r%d" % i

    def requests(frames: list[bytes]) -> list[bytes]:
        return [f for f in frames if f[12:14] == b"\x08\x00" and f[23] == 17
                and f[36:38] == (6005).to_bytes(2, "big")]  # fmt: skip

    originals = requests(sent.stop(lambda f: len(requests(f)) >= N))
    copies = requests(copy.stop(lambda f: len(requests(f)) >= N))
    assert len(originals) >= N - 1, originals
    assert all(o in copies for o in originals), (copies[:2], originals[:2])


BULK = """
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
s.sendall(b"g" * 262144)
s.shutdown(socket.SHUT_WR)
got = 0
while got < 262144 and (chunk := s.recv(65536)):
    got += len(chunk)
print(got)
"""
FULL_FRAME = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IP, 10, 2)  # IP_MTU_DISCOVER = IP_PMTUDISC_DO: one 1500-byte packet
for _ in range(3):
    s.sendto(b"f" * 1472, (sys.argv[1], 9))
"""
ARP = """
import sys
from scapy.all import ARP, Ether, conf, sendp
conf.verb = 0
sendp(Ether(dst="ff:ff:ff:ff:ff:ff") / ARP(op=1, psrc="198.18.0.1", pdst="198.18.0.254"),
      iface=sys.argv[1], count=3)
"""


def test_erspan_carries_non_ip_frames_and_gso_aggregates(qnet: Any, tmp_path: Path) -> None:
    """ERSPAN III of the client interface, both directions: ARP frames are carried whole,
    and the LB's own TCP bulk, which leaves as GSO aggregates, is carried one copy per
    aggregate cut to what the collector's path takes, with the ERSPAN T bit set (the loop
    through the loopback, bpf/lib/mirror.h erspan_loop). Nothing is "not carried"."""
    import sys

    scapy_all = pytest.importorskip("scapy.all")
    erspan = pytest.importorskip("scapy.contrib.erspan")
    col = qnet.topo.host("col")
    link = qnet.topo.link(qnet.lb, col, ["198.18.30.254/24"], ["198.18.30.1/24"])
    set_qos(qnet, None, {"session": [{
        "name": "x", "type": "erspan", "collector": "198.18.30.1", "erspan-version": 3,
        "session-id": 9, "source-interface": [{"name": qnet.interfaces[0],
                                               "direction": "both"}]}]})  # fmt: skip
    wait_for(lambda: "lladdr" in qnet.lb.run(["ip", "neigh", "show", "198.18.30.1"]).stdout)
    copy = Capture(col, link.ifname(col), tmp_path / "x.pcap", "proto gre")
    client_if = qnet.topo.links[0].ifname(qnet.client)
    res = qnet.client.run([sys.executable, "-c", ARP, client_if], timeout=30)
    assert res.returncode == 0, res.stderr
    qnet.client.start_tcp_echo(7070)
    res = qnet.lb.run([sys.executable, "-c", BULK, "198.18.0.1", "7070"], timeout=30)
    assert res.returncode == 0 and res.stdout.strip() == "262144", (res.stdout, res.stderr)
    # A full-size frame that is no aggregate (a busy machine sends some TCP segments that
    # way): too big for the collector's path with the outer headers, so it is looped and
    # cut too (it used to count as "failed").
    qnet.client.run([sys.executable, "-c", FULL_FRAME, "198.18.0.254"], timeout=30, check=True)

    def decoded(frames: list[bytes]) -> list[Any]:
        return [scapy_all.Ether(f) for f in frames if scapy_all.Ether(f).haslayer(layer)]

    layer = erspan.ERSPAN_III

    def full(p: Any) -> bool:  # the cut copy of a 1,472-byte UDP datagram
        inner = p[layer].payload
        udp = inner.haslayer(scapy_all.UDP)
        return bool(p[layer].t) and udp and inner[scapy_all.IP].len == 1500

    def enough(frames: list[bytes]) -> bool:
        pkts = decoded(frames)
        return (any(p[layer].payload.haslayer(scapy_all.ARP) for p in pkts)
                and any(p[layer].t for p in pkts) and any(full(p) for p in pkts))  # fmt: skip

    pkts = decoded(copy.stop(enough, timeout=10))
    arps = [p[layer].payload[scapy_all.ARP] for p in pkts
            if p[layer].payload.haslayer(scapy_all.ARP)]  # fmt: skip
    assert any(a.op == 1 and a.pdst == "198.18.0.254" for a in arps), arps  # the request
    cut = [p for p in pkts if p[layer].t]
    assert cut, [p.summary() for p in pkts[:5]]
    assert any(full(p) for p in cut), [p.summary() for p in cut[:5]]
    for p in cut:  # one copy per aggregate, within the collector link's MTU, inner TCP
        assert len(p) <= 1514 and p[scapy_all.IP].len <= 1500, len(p)
        assert p[layer].session_id == 9
        assert p[layer].payload[scapy_all.IP].haslayer(scapy_all.TCP) or full(p)
    st = qnet.rec.qos_state()["mirror"]["x"]
    assert st["not-carried"] == 0 and st["failed"] == 0 and st["packets"] > 0, st
