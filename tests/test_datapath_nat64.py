"""NAT64 (IPv6 VIP, IPv4 endpoints) and NAT46 (IPv4 VIP, IPv6 endpoints) through the
balancer (bpf/lib/nat64.h): real curl, UDP and TCP clients in the client namespace, real
servers in the backends, and the ICMP errors about a translated flow translated too."""

from __future__ import annotations

from typing import Any

import pytest
from dpkit import HTTP_PORT, SNAT4, SNAT6, UDP_PORT, VIP4, VIP6, LbNet, backend_addr, service

pytestmark = pytest.mark.datapath

CLOSED_PORT = 5999  # nothing listens there: the endpoint answers "port unreachable"

# A connected UDP socket learns of an ICMP "port unreachable" (v4 or v6) as ECONNREFUSED.
REFUSED = r"""
import socket, sys
vip, port = sys.argv[1], int(sys.argv[2])
s = socket.socket(socket.AF_INET6 if ":" in vip else socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(2)
s.connect((vip, port))
s.send(b"anyone?")
try:
    s.recv(100)
    print("answered")
except ConnectionRefusedError:
    print("refused")
except TimeoutError:
    print("timeout")
"""


def xlat(name: str, vip: str, mode: str, port: int = 80, proto: str = "tcp",
         ep_port: int = HTTP_PORT) -> dict[str, Any]:  # fmt: skip
    """A service on ``vip`` whose endpoints (b1..b3) are of the other family."""
    v6_vip = ":" in vip
    doc = service(name, vip=vip, port=port, proto=proto, ep_port=ep_port, mode=mode)
    doc["nat64" if v6_vip else "nat46"] = True
    for n, ep in enumerate(doc["endpoint"], start=1):
        ep["address"] = backend_addr(n, 4 if v6_vip else 6)
    if mode == "full-nat":
        doc["snat-address"] = SNAT4 if v6_vip else SNAT6
    return doc


@pytest.mark.parametrize("mode", ["full-nat", "one-arm"])
def test_http_and_udp_through_nat64_and_nat46(lbnet: LbNet, mode: str) -> None:
    lbnet.set(xlat("web64", VIP6, mode), xlat("web46", VIP4, mode),
              xlat("dns64", VIP6, mode, 53, "udp", UDP_PORT),
              xlat("dns46", VIP4, mode, 53, "udp", UDP_PORT))  # fmt: skip
    assert [lbnet.curl(VIP6, 80) for _ in range(3)] == ["b1", "b2", "b3"]
    assert [lbnet.curl(VIP4, 80) for _ in range(3)] == ["b1", "b2", "b3"]
    for vip in (VIP6, VIP4):
        assert lbnet.client.udp_request(vip, 53, b"hello %s" % vip.encode()) == (
            b"hello %s" % vip.encode())  # fmt: skip
    rows = lbnet.rec.conntrack("web64")
    assert {r["endpoint"] for r in rows} == {f"{backend_addr(n)}:{HTTP_PORT}" for n in (1, 2, 3)}
    assert all(r["client"].startswith("[2001:db8::1]:") for r in rows), rows
    if mode == "full-nat":
        assert all(r["snat"].startswith(f"{SNAT4}:") for r in rows), rows
    else:  # one-arm: the balancer's own IPv4 address on each endpoint's link
        assert all(r["snat"].startswith("198.18.1") for r in rows), rows
    rows = lbnet.rec.conntrack("web46")
    assert {r["endpoint"] for r in rows} == {
        f"[{backend_addr(n, 6)}]:{HTTP_PORT}" for n in (1, 2, 3)}  # fmt: skip


def test_bulk_tcp_both_ways_keeps_its_checksums(lbnet: LbNet) -> None:
    # 200 KB each way: full-size segments (TSO/GSO skbs from the veth senders) translated.
    for b in lbnet.backends:
        b.start_tcp_echo(7007)
    lbnet.set(xlat("echo64", VIP6, "full-nat", 80, ep_port=7007),
              xlat("echo46", VIP4, "full-nat", 80, ep_port=7007))  # fmt: skip
    data = bytes(range(256)) * 800
    for vip in (VIP6, VIP4):
        assert lbnet.client.tcp_request(vip, 80, data, timeout=10) == data, vip


def test_an_icmp_error_is_translated_to_the_clients_family(lbnet: LbNet) -> None:
    # Port unreachable from an IPv4 endpoint reaches the IPv6 client as ICMPv6 (and the
    # other way round), quoting the client's own packet: its socket says "refused".
    lbnet.set(xlat("closed64", VIP6, "full-nat", 54, "udp", CLOSED_PORT),
              xlat("closed46", VIP4, "full-nat", 54, "udp", CLOSED_PORT))  # fmt: skip
    for vip in (VIP6, VIP4):
        res = lbnet.client.run(["python3", "-c", REFUSED, vip, "54"], timeout=6)
        assert res.stdout.strip() == "refused", (vip, res.stdout, res.stderr)


def test_a_full_nat_pool_spreads_clients_each_on_one_address(lbnet: LbNet) -> None:
    pool = [SNAT4, "198.19.0.101", "198.19.0.102"]  # snat-address first, then snat-pool
    doc = xlat("web64", VIP6, "full-nat")
    doc["snat-pool"] = pool[1:]
    lbnet.set(doc)
    link = next(i for i in lbnet.client.run(["ls", "/sys/class/net"]).stdout.split() if i != "lo")
    clients = [f"2001:db8::{i:x}" for i in range(0x11, 0x19)]
    for a in clients:
        lbnet.client.run(["ip", "addr", "add", f"{a}/64", "dev", link, "nodad"], check=True)
    for a in clients:
        for _ in range(2):
            res = lbnet.client.run(["curl", "-sS", "--fail", "-g", "--noproxy", "*", "--max-time",
                                    "3", "--interface", a, f"http://[{VIP6}]:80/"], timeout=6)
            assert res.returncode == 0, (a, res.stderr)  # fmt: skip
    used: dict[str, set[str]] = {}
    for r in lbnet.rec.conntrack("web64"):
        client = r["client"].rsplit(":", 1)[0].strip("[]")
        used.setdefault(client, set()).add(r["snat"].rsplit(":", 1)[0])
    assert set(used) == set(clients)
    assert all(len(s) == 1 for s in used.values()), used  # one source per client
    sources = set().union(*used.values())
    assert sources <= set(pool) and len(sources) >= 2, used
