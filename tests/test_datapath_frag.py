"""Fragmented datagrams through the balancer (bpf/lib/frag.h): the first fragment chooses the
endpoint, the later ones follow it; a later fragment without its first is left to the stack.

The client's own stack fragments (a 32,000-byte UDP datagram, a 4,000-byte ping) at its
1500-byte link; the backend's stack fragments its echo the same way, so both directions
carry fragments through the balancer.
"""

from __future__ import annotations

import pytest
from dpkit import (
    BIG_DATAGRAM,
    SNAT4,
    SNAT6,
    UDP_PORT,
    VIP4,
    VIP6,
    LbNet,
    assert_big_datagrams_echoed,
    service,
)

pytestmark = pytest.mark.datapath

BIG = BIG_DATAGRAM

# Raw-socket IPv4 fragments of one UDP datagram (client -> VIP:53), written by hand so a
# test can send some of them only, or out of order. argv: src vip sport which...
FRAGMENTS4 = r"""
import socket, struct, sys
src, dst, sport, which = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4:]
payload = bytes(range(256)) * 12                       # 3072 bytes: three fragments
udp = struct.pack("!HHHH", sport, 53, 8 + len(payload), 0) + payload
def csum(b):
    if len(b) % 2: b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16: s = (s & 0xffff) + (s >> 16)
    return ~s & 0xffff
ph = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, 17, len(udp))
c = csum(ph + udp) or 0xffff
udp = udp[:6] + struct.pack("!H", c) + udp[8:]
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
chunks = [udp[i:i + 1480] for i in range(0, len(udp), 1480)]
for i in map(int, which):
    off = i * 1480 // 8
    mf = 0x2000 if i < len(chunks) - 1 else 0
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(chunks[i]), 0x4242, mf | off, 64, 17,
                      0, socket.inet_aton(src), socket.inet_aton(dst))
    s.sendto(hdr + chunks[i], (dst, 0))
"""


def modes(proto: str, port: int, ep_port: int, mode: str) -> list[dict]:
    out = []
    for vip, snat in ((VIP4, SNAT4), (VIP6, SNAT6)):
        extra = {"mode": mode, "snat-address": snat} if mode == "full-nat" else {"mode": mode}
        out.append(service(f"{proto}{6 if vip == VIP6 else 4}", vip=vip, port=port, proto=proto,
                           ep_port=ep_port, **extra))  # fmt: skip
    return out


@pytest.mark.parametrize("mode", ["default", "full-nat"])
def test_a_32000_byte_datagram_is_echoed_intact(lbnet: LbNet, mode: str) -> None:
    lbnet.set(*modes("udp", 53, UDP_PORT, mode))
    # Each request is one flow (its own source port) whose every fragment, both ways,
    # went through its conntrack entries: 22 fragments (IPv4), 23 (IPv6) each way.
    assert_big_datagrams_echoed(lbnet, (VIP4, VIP6), ("udp4", "udp6"))


def test_a_fragmented_ping_is_answered(lbnet: LbNet) -> None:
    lbnet.set(service("ping4", proto="icmp", port=None),
              service("ping6", vip=VIP6, proto="icmp", port=None))  # fmt: skip
    for vip in (VIP4, VIP6):
        res = lbnet.client.run(["ping", "-n", "-q", "-c", "2", "-i", "0.2", "-w", "4", "-s",
                                "4000", vip], timeout=8)  # fmt: skip
        assert res.returncode == 0, (vip, res.stdout, res.stderr)


def test_later_fragments_without_their_first_go_to_the_stack(lbnet: LbNet) -> None:
    lbnet.set(service("udp4", port=53, proto="udp", ep_port=UDP_PORT))
    client = "198.18.0.1"
    # Fragments 1 and 2 only: they create nothing and reach no backend.
    res = lbnet.client.run(["python3", "-c", FRAGMENTS4, client, VIP4, "40001", "1", "2"])
    assert res.returncode == 0, res.stderr
    assert lbnet.rec.conntrack("udp4") == []
    assert not any(True for _ in lbnet.rec.program.table("frag_map"))
    # The first fragment then starts the flow and records itself; the datagram is
    # incomplete at the endpoint (its later fragments went to the balancer's stack).
    res = lbnet.client.run(["python3", "-c", FRAGMENTS4, client, VIP4, "40001", "0"])
    assert res.returncode == 0, res.stderr
    assert len(lbnet.rec.conntrack("udp4")) == 1
    assert sum(1 for _ in lbnet.rec.program.table("frag_map")) == 1
    # The whole datagram in order (the sender's retry) is balanced and echoed.
    assert lbnet.client.udp_request(VIP4, 53, BIG, timeout=3) == BIG


# A TCP SYN carrying 2,000 bytes, sent as two IPv4 fragments from a raw socket; prints the
# flags of the first TCP segment from VIP:80 back to our port (the backend's SYN-ACK, which
# it sends only once it has reassembled both fragments with a valid checksum).
TCP_FRAGMENTS = r"""
import socket, struct, sys, time
src, dst, sport = sys.argv[1], sys.argv[2], int(sys.argv[3])
payload = bytes(range(250)) * 8
def csum(b):
    if len(b) % 2: b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16: s = (s & 0xffff) + (s >> 16)
    return ~s & 0xffff
tcp = struct.pack("!HHIIBBHHH", sport, 80, 1000, 0, 5 << 4, 0x02, 64240, 0, 0) + payload
ph = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, 6, len(tcp))
tcp = tcp[:16] + struct.pack("!H", csum(ph + tcp)) + tcp[18:]
rx = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
rx.settimeout(0.5)
tx = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
for i, chunk in enumerate((tcp[:1480], tcp[1480:])):
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(chunk), 0x5151,
                      (0x2000 if i == 0 else 0) | (i * 1480 // 8), 64, 6, 0,
                      socket.inet_aton(src), socket.inet_aton(dst))
    tx.sendto(hdr + chunk, (dst, 0))
deadline = time.monotonic() + 3
while time.monotonic() < deadline:
    try:
        pkt = rx.recv(4096)
    except TimeoutError:
        continue
    ihl = (pkt[0] & 15) * 4
    s, d = struct.unpack("!HH", pkt[ihl:ihl + 4])
    if socket.inet_ntoa(pkt[12:16]) == dst and s == 80 and d == sport:
        print(hex(pkt[ihl + 13]))
        break
"""


def test_a_fragmented_tcp_syn_reaches_the_endpoint_whole(lbnet: LbNet) -> None:
    lbnet.set(service("web4"))
    res = lbnet.client.run(["python3", "-c", TCP_FRAGMENTS, "198.18.0.1", VIP4, "40123"],
                           timeout=8)  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "0x12", res.stdout  # SYN-ACK from the VIP
    rows = lbnet.rec.conntrack("web4")
    assert len(rows) == 1 and rows[0]["packets"][0] >= 2, rows  # both fragments counted
