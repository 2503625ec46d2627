"""The firewall for every IP protocol (bpf/lib/fw_other.h): GRE, ESP, OSPF, any number, ICMP
of every type, with scapy-built packets through real namespaces.

Topology (dpkit): client 198.18.0.1 / 2001:db8::1 --- lb --- bN 198.18.1N.1 / 2001:db8:1N::1;
the LB routes between them. Receivers are raw sockets in the destination namespace; each
packet carries a marker, so a test sees exactly which ones arrived.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest
from dpkit import backend_addr
from test_datapath_firewall import hits, set_fw

pytestmark = pytest.mark.datapath

CLIENT = {4: "198.18.0.1", 6: "2001:db8::1"}

# Raw sockets for the given protocols; one JSON line per packet received (its protocol,
# source and bytes: IPv4 raw sockets include the IP header, IPv6 ones do not). Ends when
# every marker in argv[4] (hex, comma-separated) was seen, 1 s after its stdin closes (the
# sender is done: what has not arrived by then was dropped), or after 30 s.
RECV = """
import json, select, socket, sys, time
fam, protos = int(sys.argv[1]), [int(p) for p in sys.argv[2].split(",")]
want = set(filter(None, sys.argv[3].split(",")))
af = socket.AF_INET if fam == 4 else socket.AF_INET6
socks = {socket.socket(af, socket.SOCK_RAW, p): p for p in protos}
inputs = [*socks, sys.stdin]
print("ready", flush=True)
end = time.monotonic() + 30
while (left := end - time.monotonic()) > 0:
    for s in select.select(inputs, [], [], left)[0]:
        if s is sys.stdin:
            if not sys.stdin.readline():
                inputs.remove(sys.stdin)
                end = min(end, time.monotonic() + 1.0)
            continue
        data, addr = s.recvfrom(65535)
        print(json.dumps({"proto": socks[s], "src": addr[0], "hex": data.hex()}), flush=True)
        if want:
            want = {w for w in want if w not in data.hex()}
            if not want:
                end = 0
"""

SEND = """
import sys
from scapy.all import GRE, ICMP, IP, UDP, ICMPv6DestUnreach, IPv6, Raw, conf, send
from scapy.layers.ipsec import ESP
conf.verb = 0
"""


class Receiver:
    """RECV in ``host``'s namespace; ``packets()`` once the sender is done. ``expect``: the
    markers that should arrive (it stops as soon as they did)."""

    def __init__(self, host: Any, family: int, protos: tuple[int, ...],
                 expect: tuple[bytes, ...] = ()):  # fmt: skip
        argv = [sys.executable, "-u", "-c", RECV, str(family), ",".join(map(str, protos)),
                ",".join(m.hex() for m in expect)]
        self.proc = host.popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline().strip() == "ready"

    def packets(self) -> list[dict[str, Any]]:
        out, _ = self.proc.communicate(timeout=40)  # closes its stdin: the sender is done
        return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def got(packets: list[dict[str, Any]], marker: bytes) -> bool:
    return any(marker.hex() in p["hex"] for p in packets)


def scapy_send(host: Any, code: str) -> None:
    res = host.run([sys.executable, "-c", SEND + code], timeout=30)
    assert res.returncode == 0, res.stderr


def flush_neighbours(*hosts: Any) -> None:
    for h in hosts:
        h.run(["ip", "-6", "neigh", "flush", "all"], check=True)
        h.run(["ip", "-4", "neigh", "flush", "all"], check=True)


@pytest.mark.parametrize("version", [4, 6])
def test_other_protocols_allow_drop_reject_count_and_default(lbnet: Any, version: int) -> None:
    """Rules by protocol name and number on GRE (47), ESP (50), OSPF (89) and two
    experimental numbers; the client side's default policy drops what no rule lets in; a
    rejected one gets "administratively prohibited" back. IPv6: the neighbour cache is
    flushed first, so the client's neighbour solicitations had to pass the default drop."""
    net = lbnet
    up = net.interfaces[0]
    b1 = backend_addr(1, version)
    plen = 32 if version == 4 else 128
    dst = f"{b1}/{plen}"
    rules = [
        {"name": "drop-gre", "preference": 10, "destination-prefix": dst, "protocol": "gre",
         "action": "drop"},
        {"name": "reject-esp", "preference": 20, "destination-prefix": dst, "protocol": "esp",
         "action": "reject"},
        {"name": "count-89", "preference": 30, "destination-prefix": dst, "protocol": 89,
         "action": "count"},
        {"name": "allow-253", "preference": 40, "destination-prefix": dst, "protocol": 253,
         "action": "allow"},
    ]  # fmt: skip
    set_fw(net, rules, {up: "drop"})
    flush_neighbours(net.client, net.lb)
    sink = Receiver(net.backends[0], version, (47, 50, 89, 253, 254))
    icmp = Receiver(net.client, version, (1 if version == 4 else 58,))
    ip = f"IP(dst={b1!r})" if version == 4 else f"IPv6(dst={b1!r})"
    nh = "proto" if version == 4 else "nh"
    scapy_send(net.client, f"""
for i in range(3):
    send({ip}/GRE()/Raw(b"m-gre"))
    send({ip}/ESP(spi=7, seq=i + 1)/Raw(b"m-esp" + bytes(40)))
    send({ip.replace(")", f", {nh}=89)")}/Raw(b"m-ospf"))
    send({ip.replace(")", f", {nh}=253)")}/Raw(b"m-253"))
    send({ip.replace(")", f", {nh}=254)")}/Raw(b"m-254"))
""")
    seen = sink.packets()
    assert got(seen, b"m-253"), seen  # allowed by number
    for marker in (b"m-gre", b"m-esp", b"m-ospf", b"m-254"):
        assert not got(seen, marker), (marker, seen)  # dropped, rejected, count + default
    errors = icmp.packets()
    prohibited = "030d" if version == 4 else "0101"  # type, code
    quoted = [p for p in errors if got([p], b"m-esp") or "0000000700000001" in p["hex"]]
    assert any(prohibited in p["hex"][40 if version == 4 else 0:][:4] for p in quoted), errors
    for name in ("drop-gre", "reject-esp", "count-89"):
        assert hits(net, name) >= 3, name  # every packet: nothing was let in
    assert hits(net, "allow-253") == 1  # the first: the others were the pair's (stateful)
    # Without the rules and the policy, all of them pass.
    set_fw(net, [])
    sink = Receiver(net.backends[0], version, (47, 89, 254),
                    expect=(b"m-gre", b"m-ospf", b"m-254"))
    scapy_send(net.client, f"""
send({ip}/GRE()/Raw(b"m-gre"))
send({ip.replace(")", f", {nh}=89)")}/Raw(b"m-ospf"))
send({ip.replace(")", f", {nh}=254)")}/Raw(b"m-254"))
""")
    seen = sink.packets()
    assert all(got(seen, m) for m in (b"m-gre", b"m-ospf", b"m-254")), seen


def test_replies_of_an_allowed_gre_tunnel_pass_a_default_drop(lbnet: Any) -> None:
    """Protocols without ports are tracked by (addresses, protocol): GRE that b1 starts is
    dropped by its side's default policy, until the client's GRE to b1 made the pair; then
    b1's comes back. IPv4 and IPv6."""
    net = lbnet
    up, down = net.interfaces[0], net.interfaces[1]
    set_fw(net, [], {down: "drop", up: "allow"})
    b1 = net.backends[0]
    for version in (4, 6):
        ip_to_client = (f"IP(dst={CLIENT[version]!r})" if version == 4
                        else f"IPv6(dst={CLIENT[version]!r})")  # fmt: skip
        addr = backend_addr(1, version)
        ip_to_b1 = f"IP(dst={addr!r})" if version == 4 else f"IPv6(dst={addr!r})"
        sink = Receiver(net.client, version, (47,))
        scapy_send(b1, f"send({ip_to_client}/GRE()/Raw(b'm-first'))")
        assert not got(sink.packets(), b"m-first"), version
        far = Receiver(net.backends[0], version, (47,), expect=(b"m-out",))
        sink = Receiver(net.client, version, (47,), expect=(b"m-back",))
        scapy_send(net.client, f"send({ip_to_b1}/GRE()/Raw(b'm-out'))")
        scapy_send(b1, f"send({ip_to_client}/GRE()/Raw(b'm-back'))")
        assert got(far.packets(), b"m-out"), version
        assert got(sink.packets(), b"m-back"), version
    pairs = [r for r in net.rec.conntrack() if r["protocol"] in ("47", "gre")]
    assert pairs, net.rec.conntrack()


def test_icmp_types_and_infrastructure(lbnet: Any) -> None:
    """Rules match ICMP by type (and code). ICMP errors and IPv6 neighbour discovery pass
    rules that do not name their type and every default policy, so a broad drop never cuts
    them; a rule naming the type does (here: neighbour advertisements from b1's side)."""
    net = lbnet
    up, down = net.interfaces[0], net.interfaces[1]
    b1 = backend_addr(1)
    # A broad drop of everything b1's side sends, and its side's default drop: the
    # appliance's own ping still works, neighbour discovery included.
    broad = {"name": "from-b1", "preference": 20, "source-prefix": "2001:db8:11::/64",
             "action": "drop"}  # fmt: skip
    set_fw(net, [broad], {down: "drop"})
    flush_neighbours(net.lb, net.backends[0])
    assert net.lb.ping(backend_addr(1, 6), timeout=3)
    # A rule naming neighbour advertisements (an "RA guard" shape) does cut it.
    no_na = {"name": "no-na", "preference": 10, "protocol": "icmp", "icmp-type": 136,
             "ingress-interface": down, "action": "drop"}  # fmt: skip
    set_fw(net, [no_na, broad], {down: "drop"})
    flush_neighbours(net.lb, net.backends[0])
    assert not net.lb.ping(backend_addr(1, 6), timeout=2)
    assert hits(net, "no-na") >= 1
    # IPv4 from the client: a timestamp request (type 13) dropped by its type; an error
    # (type 3) passes an "all ICMP" rule and the default drop, and is dropped only by a
    # rule naming its type.
    rules = [
        {"name": "no-ts", "preference": 10, "protocol": "icmp", "icmp-type": 13,
         "action": "drop"},
        {"name": "all-icmp", "preference": 20, "protocol": "icmp",
         "destination-prefix": f"{b1}/32", "action": "count"},
    ]  # fmt: skip
    set_fw(net, rules, {up: "drop"})
    error = (f"ICMP(type=3, code=1)/IP(src={b1!r}, dst='198.18.0.1')"
             "/UDP(sport=5555, dport=6666)/Raw(b'm-err')")  # fmt: skip
    sink = Receiver(net.backends[0], 4, (1,))
    scapy_send(net.client, f"""
send(IP(dst={b1!r})/ICMP(type=13)/Raw(b"m-ts" + bytes(12)))
send(IP(dst={b1!r})/{error})
""")
    seen = sink.packets()
    assert not got(seen, b"m-ts"), seen
    assert got(seen, b"m-err"), seen
    assert hits(net, "no-ts") >= 1
    assert hits(net, "all-icmp") == 0  # the error is infrastructure: only its type matches
    rules.insert(0, {"name": "no-unreach", "preference": 5, "protocol": "icmp",
                     "icmp-type": 3, "icmp-code": 1, "action": "drop"})  # fmt: skip
    set_fw(net, rules, {up: "drop"})
    sink = Receiver(net.backends[0], 4, (1,))
    scapy_send(net.client, f"send(IP(dst={b1!r})/{error})")
    assert not got(sink.packets(), b"m-err")
    assert hits(net, "no-unreach") >= 1
