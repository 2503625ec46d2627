"""NAT64 (IPv6 VIP, IPv4 endpoints) and NAT46 (IPv4 VIP, IPv6 endpoints) through the
balancer (bpf/lib/nat64.h): real curl, UDP and TCP clients in the client namespace, real
servers in the backends, and the ICMP errors about a translated flow translated too."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest
from dpkit import (
    HTTP_PORT,
    SNAT4,
    SNAT6,
    UDP_PORT,
    VIP4,
    VIP6,
    LbNet,
    assert_big_datagrams_echoed,
    backend_addr,
    service,
    wait_for,
)

pytestmark = pytest.mark.datapath

CLOSED_PORT = 5999  # nothing listens there: the endpoint answers "port unreachable"

# A connected UDP socket that waits (argv[3] seconds) for an ICMP error about its one
# datagram; it prints the error's errno name (ECONNREFUSED for "port unreachable", v4 or v6).
WAIT_ERROR = r"""
import errno, socket, sys
vip, port, wait = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
s = socket.socket(socket.AF_INET6 if ":" in vip else socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(wait)
s.connect((vip, port))
s.send(b"anyone?")
print("sent", flush=True)
try:
    s.recv(100)
    print("answered")
except TimeoutError:
    print("timeout")
except OSError as e:
    print(errno.errorcode.get(e.errno, e.errno))
"""


def xlat(name: str, vip: str, mode: str, port: int | None = 80, proto: str = "tcp",
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
    # other way round), quoting the client's own packet: its socket says ECONNREFUSED.
    lbnet.set(xlat("closed64", VIP6, "full-nat", 54, "udp", CLOSED_PORT),
              xlat("closed46", VIP4, "full-nat", 54, "udp", CLOSED_PORT))  # fmt: skip
    for vip in (VIP6, VIP4):
        res = lbnet.client.run(["python3", "-c", WAIT_ERROR, vip, "54", "2"], timeout=6)
        assert res.stdout.split()[-1:] == ["ECONNREFUSED"], (vip, res.stdout, res.stderr)


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


@pytest.mark.parametrize("mode", ["full-nat", "one-arm"])
def test_ping_through_nat64_and_nat46(lbnet: LbNet, mode: str) -> None:
    # ICMPv6 echo to the IPv6 VIP reaches an IPv4 endpoint as ICMP echo, and its reply comes
    # back as ICMPv6 (and the other way round): each ping process is one flow (its own
    # identifier), round-robin over the three backends.
    lbnet.set(xlat("ping64", VIP6, mode, None, "icmp"), xlat("ping46", VIP4, mode, None, "icmp"))
    for vip, name in ((VIP6, "ping64"), (VIP4, "ping46")):
        for _ in range(3):
            assert lbnet.client.ping(vip, count=2, timeout=4), vip
        rows = lbnet.rec.conntrack(name)
        other = 4 if vip == VIP6 else 6
        eps = {backend_addr(n, other) for n in (1, 2, 3)}
        assert {a for a in eps for r in rows if r["endpoint"].strip("[]").startswith(a)} == eps
        assert len(rows) == 3, rows
        assert all(r["packets"][0] >= 2 and r["packets"][1] >= 2 for r in rows), rows


def test_a_fragmented_ping_through_nat64_and_nat46(lbnet: LbNet) -> None:
    # 3,000-byte pings: the client's kernel sends them in fragments (IPv6 and IPv4), and so
    # do the endpoints' answers. A ping's checksum covers the whole message's length in the
    # ICMPv6 pseudo-header, which its first fragment does not give: the balancer holds the
    # translated first fragment until the last one gives it (bpf/lib/nat64.h), both ways.
    _mtu_1600_links_1500_routes(lbnet)
    lbnet.set(xlat("ping64", VIP6, "full-nat", None, "icmp"),
              xlat("ping46", VIP4, "one-arm", None, "icmp"))  # fmt: skip
    for vip, name in ((VIP6, "ping64"), (VIP4, "ping46")):
        res = lbnet.client.run(["ping", "-n", "-q", "-c", "3", "-i", "0.2", "-s", "3000",
                                "-w", "6", vip], timeout=10)  # fmt: skip
        assert res.returncode == 0, (vip, res.stdout, res.stderr)
        rows = lbnet.rec.conntrack(name)  # in fragments both ways: 2 or 3 per ping
        assert len(rows) == 1 and rows[0]["packets"][0] >= 6 and rows[0]["packets"][1] >= 6, rows


def _mtu_1600_links_1500_routes(lbnet: LbNet) -> None:
    """Every link carries 1600 bytes, every host still sends (and fragments) at 1500: a
    fragment grows by 28 bytes (fragment header + the longer IPv6 header) towards IPv6."""
    for host, gw in [(lbnet.client, ("198.18.0.254", "2001:db8::fe"))] + [
            (b, (f"198.18.{10 + n}.254", f"2001:db8:{10 + n}::fe"))
            for n, b in enumerate(lbnet.backends, start=1)]:  # fmt: skip
        link = next(i for i in host.run(["ls", "/sys/class/net"]).stdout.split() if i != "lo")
        host.run(["ip", "link", "set", link, "mtu", "1600"], check=True)
        for g in gw:
            host.run(["ip", "route", "replace", "default", "via", g, "mtu", "1500"], check=True)
    for ifname in lbnet.interfaces:
        lbnet.lb.run(["ip", "link", "set", ifname, "mtu", "1600"], check=True)


def test_a_fragmented_datagram_through_nat64_and_nat46(lbnet: LbNet) -> None:
    # 32,000 bytes each way: the client's fragments are translated one by one (RFC 7915
    # 4.1 / 5.1.1: fragment header <-> IPv4 identification, offset, MF), the first choosing
    # the endpoint and the later ones following its record (frag.h); the endpoint reassembles
    # and echoes, its own fragments translated back the same way.
    _mtu_1600_links_1500_routes(lbnet)
    lbnet.set(xlat("dns64", VIP6, "full-nat", 53, "udp", UDP_PORT),
              xlat("dns46", VIP4, "full-nat", 53, "udp", UDP_PORT))  # fmt: skip
    assert_big_datagrams_echoed(lbnet, (VIP6, VIP4), ("dns64", "dns46"))


# From a router's address on the endpoint's link: "administratively prohibited" about the
# datagram the balancer sent (snat:sport -> endpoint:dport, UDP). argv: router snat sport ep
# dport.
ROUTER_ERROR = r"""
import socket, struct, sys
router, snat, ep = sys.argv[1], sys.argv[2], sys.argv[4]
sport, dport = int(sys.argv[3]), int(sys.argv[5])
def csum(b):
    if len(b) % 2: b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16: s = (s & 0xffff) + (s >> 16)
    return ~s & 0xffff
udp = struct.pack("!HHHH", sport, dport, 15, 0) + b"anyone?"
if ":" not in router:
    quote = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0x4000, 63, 17, 0,
                        socket.inet_aton(snat), socket.inet_aton(ep)) + udp
    icmp = struct.pack("!BBHI", 3, 13, 0, 0) + quote
    icmp = icmp[:2] + struct.pack("!H", csum(icmp)) + icmp[4:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(icmp), 2, 0, 64, 1, 0,
                     socket.inet_aton(router), socket.inet_aton(snat))
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    s.sendto(ip + icmp, (snat, 0))
else:
    a = lambda x: socket.inet_pton(socket.AF_INET6, x)
    quote = struct.pack("!IHBB16s16s", 6 << 28, len(udp), 17, 63, a(snat), a(ep)) + udp
    icmp = struct.pack("!BBHI", 1, 1, 0, 0) + quote
    ph = a(router) + a(snat) + struct.pack("!I3xB", len(icmp), 58)
    icmp = icmp[:2] + struct.pack("!H", csum(ph + icmp)) + icmp[4:]
    ip = struct.pack("!IHBB16s16s", 6 << 28, len(icmp), 58, 64, a(router), a(snat))
    s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_RAW)
    s.sendto(ip + icmp, (snat, 0))
"""


@pytest.mark.parametrize("vip", [VIP6, VIP4])
def test_a_routers_icmp_error_reaches_the_client_from_the_vip(lbnet: LbNet, vip: str) -> None:
    # A router between balancer and endpoint (an address on the endpoint's link) refuses
    # the translated datagram. Its address has no form in the client's family, so the error
    # reaches the client from the VIP, quoting the client's own datagram: the client's
    # connected socket takes it as its own (IPv6: EACCES; IPv4: EHOSTUNREACH).
    v6_vip = ":" in vip
    ep_family = 4 if v6_vip else 6
    b1 = lbnet.backends[0]
    link = next(i for i in b1.run(["ls", "/sys/class/net"]).stdout.split() if i != "lo")
    router = "198.18.11.2" if v6_vip else "2001:db8:11::2"
    b1.run(["ip", "addr", "add", router + ("/24" if v6_vip else "/64"), "dev", link, "nodad"],
           check=True)  # fmt: skip
    b1.popen(["python3", "-c", "import socket,time\ns=socket.socket(socket.AF_INET6,"
              "socket.SOCK_DGRAM)\ns.bind(('::',5998))\ntime.sleep(30)"])  # fmt: skip
    # Bound before anything is sent (else the endpoint answers "port unreachable" itself).
    wait_for(lambda: ":5998 " in b1.run(["ss", "-Huan"]).stdout, timeout=5,
             what="the silent endpoint socket")  # fmt: skip
    doc = xlat("quiet", vip, "full-nat", 55, "udp", 5998)
    doc["endpoint"] = doc["endpoint"][:1]
    lbnet.set(doc)
    client = lbnet.client.popen(["python3", "-c", WAIT_ERROR, vip, "55", "8"],
                                stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        rows = wait_for(lambda: lbnet.rec.conntrack("quiet"), timeout=5, what="the flow")
        snat, sport = rows[0]["snat"].rsplit(":", 1)
        res = b1.run(["python3", "-c", ROUTER_ERROR, router, snat.strip("[]"), sport,
                      backend_addr(1, ep_family), "5998"], timeout=5)  # fmt: skip
        assert res.returncode == 0, res.stderr
        out, _ = client.communicate(timeout=12)
    finally:
        if client.poll() is None:
            client.kill()
    assert out.split() == ["sent", "EACCES" if v6_vip else "EHOSTUNREACH"], out
