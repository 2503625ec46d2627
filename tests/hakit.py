"""Two appliances in namespaces, each a real `sluice run --datapath on` whose daemon starts
its own keepalived, between a client-side and a backend-side bridge.

    client 198.18.0.1 ─┐                    ┌─ b1 198.18.1.11 (HTTP 8080 "b1")
                       cbr ─ lba 198.18.0.2 / 198.18.1.2 ─ bbr
                       cbr ─ lbb 198.18.0.3 / 198.18.1.3 ─ bbr ─ b2 198.18.1.12 ("b2")
                                            └─ b3 198.18.1.13 ("b3")

VIP 198.18.0.10 (on the client's link: the client ARPs for it) moves with the VRRP
instance "front", and so does the backend-side return address 198.18.1.254, the backends'
default route; VIP 2001:db8::10 moves with a second instance "front6" (return address
2001:db8:1::fe). Services: `web` and `web6` (DNAT, port 80) and `webnat` (full-NAT, port
81, SNAT 198.18.2.100, routed by the backends via the return address). Witness: the
client.

With `synced=True` (the conntrack-sync failover test): the sync channel between the nodes'
backend-side addresses with a source-port range per node, faster adverts, an SNMP agent
per node, and echo services on both VIPs: TCP 7 (DNAT) and 8 (full-NAT) to the backends'
TCP echo on 7000, UDP 53 to their UDP echo on 5353.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import netkit as kit
import pytest
from daemonkit import Daemon

VIP = "198.18.0.10"
RETURN = "198.18.1.254"
SNAT = "198.18.2.100"
CLIENT = "198.18.0.1"
ADVERT_MS = 100
VIP6 = "2001:db8::10"
RETURN6 = "2001:db8:1::fe"
SNAT6 = "2001:db8:2::100"
CLIENT6 = "2001:db8::1"
SYNC_KEY = "00112233445566778899aabbccddeeff"
# The synced pair's SNMP agents (each in its node's namespace, on its 127.0.0.1).
SNMP_PORT, SNMP_COMMUNITY = 16161, "ha-ro"
SLUICE_HA_OID = "1.3.6.1.4.1.32473.1.20"  # SLUICE-LB-MIB::sluiceHa
ECHO_PORT, UDP_ECHO_PORT = 7000, 5353
BACKENDS = (1, 2, 3)  # b1..b3: the topology has three backends
NAMES = tuple(f"b{n}" for n in BACKENDS)


@dataclass
class Node:
    name: str
    host: kit.Host
    front: str
    back: str
    daemon: Daemon

    def holds(self, address: str = VIP) -> bool:
        res = self.host.run(["ip", "-j", "addr", "show", "dev", self.front], check=True)
        return any(a.get("local") == address
                   for i in json.loads(res.stdout) for a in i.get("addr_info", []))  # fmt: skip

    def mac(self) -> str:
        res = self.host.run(["ip", "-j", "link", "show", "dev", self.front], check=True)
        return json.loads(res.stdout)[0]["address"]

    def ha(self) -> dict[str, Any]:
        return self.daemon.cli_json("ha", "status")

    def role(self) -> str:
        """The node's role when its instances agree, else "mixed: ..." (never a role)."""
        roles = sorted({i["role"] for i in self.ha()["instances"]})
        return roles[0] if len(roles) == 1 else "mixed: " + ",".join(roles)

    def snmp_walk(self, root: str = SLUICE_HA_OID) -> dict[str, str]:
        """A real v2c walk of the node's agent (net-snmp, in the node's namespace)."""
        from snmpkit import parse_walk

        res = self.host.run(["snmpbulkwalk", "-v2c", "-c", SNMP_COMMUNITY, "-t", "2", "-r", "1",
                             "-OnqeU", f"127.0.0.1:{SNMP_PORT}", root], timeout=20)  # fmt: skip
        assert res.returncode == 0, res.stderr
        return parse_walk(res.stdout)

    def links(self, up: bool) -> None:
        for ifname in (self.front, self.back):
            self.host.run(["ip", "link", "set", ifname, "up" if up else "down"], check=True)


@dataclass
class Pair:
    topo: kit.Topology
    client: kit.Host
    cbr: kit.Host
    bbr: kit.Host
    a: Node
    b: Node
    ports: dict[str, str]  # node name -> its port on the client bridge
    client_if: str  # the client's interface

    @property
    def nodes(self) -> tuple[Node, Node]:
        return (self.a, self.b)

    def master(self) -> Node | None:
        roles = {n.name: n.role() for n in self.nodes}
        masters = [n for n in self.nodes if roles[n.name] == "master"]
        assert len(masters) <= 1, f"two masters: {roles}"
        return masters[0] if masters else None

    def holders(self, address: str = VIP) -> list[str]:
        return [n.name for n in self.nodes if n.holds(address)]

    def client_neighbour(self) -> str | None:
        res = self.client.run(["ip", "-j", "neigh", "show", VIP], check=True)
        rows = [r for r in json.loads(res.stdout) if "lladdr" in r]
        return rows[0]["lladdr"] if rows else None

    def wire(self, macs: list[str]) -> dict[str, Any]:
        """What the client's link shows, with packets: the MACs that answer ARP for VIP
        ("arp") and neighbour solicitation for VIP6 ("nd"), and for a SYN to each VIP sent
        to each of `macs` (a row of "syn": [mac, vip, answered, forwarded]): the MACs its
        SYN-ACKs came from, and the nodes that sent it on to the backend side (captured
        leaving each node's backend-side interface)."""
        import signal
        import subprocess
        import sys

        caps = {}
        try:
            for node in self.nodes:
                cap = node.host.popen(["tcpdump", "-i", node.back, "-Q", "out", "-n", "-l", "-p",
                                       "tcp dst port 8080"], stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True)  # fmt: skip
                caps[node.name] = cap
                said = ""
                while "listening on" not in said:  # once it captures (after a usage note)
                    line = cap.stderr.readline() if cap.stderr else ""
                    assert line, said
                    said += line
            res = self.client.run([sys.executable, "-c", _WIRE, self.client_if, CLIENT,
                                   CLIENT6, VIP, VIP6, *macs], timeout=30)  # fmt: skip
            assert res.returncode == 0, res.stderr
            out = json.loads(res.stdout.strip().splitlines()[-1])
            time.sleep(0.2)  # a SYN forwarded late is still seen
        finally:
            for cap in caps.values():
                cap.send_signal(signal.SIGINT)
        sent: dict[str, set[int]] = {}
        for name, cap in caps.items():
            captured, _ = cap.communicate(timeout=10)
            # "12:00:00.000 IP 198.18.0.1.4321 > 198.18.1.11.8080: Flags [S], ..." (IP6 alike)
            sent[name] = {int(f[2].rsplit(".", 1)[1]) for f in map(str.split, captured.splitlines())
                          if len(f) > 2 and f[1] in ("IP", "IP6")}  # fmt: skip
        out["syn"] = [[mac, vip, synack, sorted(n for n, ports in sent.items() if sport in ports)]
                      for mac, vip, sport, synack in out["syn"]]  # fmt: skip
        return out

    def get(self, port: int, timeout: float = 2.0) -> str:
        return self.client.http_get(f"http://{VIP}:{port}/", timeout=timeout)


# Run in the client namespace (scapy): who answers ARP for VIP and neighbour solicitation
# for VIP6, and whether a SYN to either VIP (port 80) sent to each given MAC is answered.
_WIRE = """
import json, random, socket, sys
from scapy.all import ARP, ICMPv6ND_NA, ICMPv6ND_NS, ICMPv6NDOptSrcLLAddr, IP, IPv6, TCP
from scapy.all import Ether, conf, get_if_hwaddr, srp
from scapy.utils6 import in6_getnsma, in6_getnsmac
conf.verb = 0
iface, client, client6, vip, vip6, *macs = sys.argv[1:]
me = get_if_hwaddr(iface)
out = {}
ans, _ = srp(Ether(src=me, dst="ff:ff:ff:ff:ff:ff") / ARP(hwsrc=me, psrc=client, pdst=vip),
             iface=iface, timeout=0.5, multi=True)
out["arp"] = sorted({r[ARP].hwsrc for _, r in ans if r[ARP].op == 2 and r[ARP].psrc == vip})
group = socket.inet_ntop(socket.AF_INET6, in6_getnsma(socket.inet_pton(socket.AF_INET6, vip6)))
ns = (Ether(src=me, dst=in6_getnsmac(socket.inet_pton(socket.AF_INET6, group)))
      / IPv6(src=client6, dst=group, hlim=255) / ICMPv6ND_NS(tgt=vip6)
      / ICMPv6NDOptSrcLLAddr(lladdr=me))
ans, _ = srp(ns, iface=iface, timeout=0.5, multi=True)
out["nd"] = sorted({r[Ether].src for _, r in ans if ICMPv6ND_NA in r})
out["syn"] = []
for mac in macs:
    for dst in (IP(src=client, dst=vip), IPv6(src=client6, dst=vip6)):
        sport = random.randint(20000, 60000)
        # multi: an ICMP redirect (quoting the SYN) may come first; the SYN-ACK after it
        ans, _ = srp(Ether(src=me, dst=mac) / dst / TCP(sport=sport, dport=80, flags="S"),
                     iface=iface, timeout=0.5, multi=True)
        synack = sorted({r[Ether].src for _, r in ans
                         if r.haslayer(TCP) and r[TCP].flags.S and r[TCP].flags.A})
        out["syn"].append([mac, dst.dst, sport, synack])
print(json.dumps(out))
"""


def _bridge(host: kit.Host) -> None:
    host.run(["ip", "link", "add", "br0", "type", "bridge"], check=True)
    host.run(["ip", "link", "set", "br0", "up"], check=True)


def _port(topo: kit.Topology, host: kit.Host, bridge: kit.Host,
          addrs: list[str]) -> tuple[str, str]:  # fmt: skip
    link = topo.link(host, bridge, addrs, [])
    bridge.run(["ip", "link", "set", link.ifname(bridge), "master", "br0"], check=True)
    return link.ifname(host), link.ifname(bridge)


def ha_section(me: Node, peer: Node, priority: int) -> dict[str, Any]:
    """Two instances that move together: "front" (IPv4) and "front6" (IPv6)."""
    mine, theirs = _n(me), _n(peer)
    return {
        "witness": CLIENT, "witness-interval": 100, "witness-misses": 3,
        "instance": [{
            "name": "front", "virtual-router-id": 51, "priority": priority,
            "interface": me.front, "peer": [f"198.18.0.{theirs}"], "vip": [VIP],
            "return-interface": me.back, "return-address": [RETURN],
            "advert-interval": ADVERT_MS,
        }, {
            "name": "front6", "virtual-router-id": 52, "priority": priority,
            "interface": me.front, "peer": [f"2001:db8::{theirs}"], "vip": [VIP6],
            "source-address": f"2001:db8::{mine}",
            "return-interface": me.back, "return-address": [RETURN6],
            "advert-interval": ADVERT_MS,
        }],
    }  # fmt: skip


def synced_ha_section(me: Node, peer: Node, priority: int) -> dict[str, Any]:
    """Faster adverts and VIP checks, and the sync channel. The test asks for no gap over
    1 s; a client's TCP retransmits at about 1, 3 and 7 times its RTO (200 ms + its RTT),
    so the VIPs must move well within 3 RTOs. A backup stands back (FAULT) while the master
    answers for the VIPs, so short adverts cannot make a second master; once the VIPs are
    silent for witness-misses checks it waits 3 adverts and a skew (~70 ms at 20 ms)."""
    mine, theirs = _n(me), _n(peer)
    doc = ha_section(me, peer, priority)
    doc["witness-misses"] = 2
    for instance in doc["instance"]:
        instance["advert-interval"] = 20
    first = 20000 if me.name == "lba" else 40000
    doc["sync"] = {"address": f"198.18.1.{mine}", "peer": [f"198.18.1.{theirs}"],
                   "key": SYNC_KEY, "snat-ports": {"first": first, "last": first + 19999}}
    return doc


def echo_services() -> list[dict[str, Any]]:
    out = []
    for vip, snat, last in ((VIP, SNAT, "198.18.1.1"), (VIP6, SNAT6, "2001:db8:1::1")):
        eps = [{"address": f"{last}{n}", "port": ECHO_PORT} for n in BACKENDS]
        udp = [{"address": f"{last}{n}", "port": UDP_ECHO_PORT} for n in BACKENDS]
        probe = {"type": "tcp", "interval": 1, "timeout": 1}
        v = "6" if ":" in vip else "4"
        out += [
            {"name": f"echo{v}", "vip": vip, "port": 7, "endpoint": eps, "health-probe": probe},
            {"name": f"echonat{v}", "vip": vip, "port": 8, "mode": "full-nat",
             "snat-address": snat, "endpoint": eps, "health-probe": probe},
            {"name": f"dns{v}", "vip": vip, "port": 53, "protocol": "udp", "endpoint": udp},
        ]  # fmt: skip
    return out


def services() -> list[dict[str, Any]]:
    eps = [{"address": f"198.18.1.1{n}", "port": 8080} for n in BACKENDS]
    eps6 = [{"address": f"2001:db8:1::1{n}", "port": 8080} for n in BACKENDS]
    probe = {"type": "tcp", "interval": 1, "timeout": 1}
    return [
        {"name": "web", "vip": VIP, "port": 80, "endpoint": eps, "health-probe": probe},
        {"name": "web6", "vip": VIP6, "port": 80, "endpoint": eps6, "health-probe": probe},
        {"name": "webnat", "vip": VIP, "port": 81, "mode": "full-nat", "snat-address": SNAT,
         "endpoint": eps, "health-probe": probe},
    ]  # fmt: skip


def _n(node: Node) -> int:
    return 2 if node.name == "lba" else 3


def build_pair(topo: kit.Topology, workdir: Path, synced: bool = False) -> Pair:
    client, cbr, bbr = topo.host("client"), topo.host("cbr"), topo.host("bbr")
    _bridge(cbr)
    _bridge(bbr)
    client_if, _ = _port(topo, client, cbr, [f"{CLIENT}/24", f"{CLIENT6}/64"])
    ports = {}
    nodes = []
    for name, last in (("lba", 2), ("lbb", 3)):
        host = topo.host(name)
        front, ports[name] = _port(topo, host, cbr,
                                   [f"198.18.0.{last}/24", f"2001:db8::{last}/64"])
        back, _ = _port(topo, host, bbr, [f"198.18.1.{last}/24", f"2001:db8:1::{last}/64"])
        # A node that returns has its addresses, as a real one's network config restores
        # them: by default Linux drops IPv6 addresses at link down, and keepalived then keeps
        # the IPv6 instance in FAULT ("src address not configured").
        host.run(["sysctl", "-qw", f"net.ipv6.conf.{front}.keep_addr_on_down=1",
                  f"net.ipv6.conf.{back}.keep_addr_on_down=1"], check=True)  # fmt: skip
        wd = workdir / name
        wd.mkdir()
        d = Daemon(wd, datapath="on", pin_dir=topo.pin_dir(name), netns=host.ns)
        nodes.append(Node(name, host, front, back, d))
    for n in BACKENDS:
        b = topo.host(f"b{n}")
        _port(topo, b, bbr, [f"198.18.1.1{n}/24", f"2001:db8:1::1{n}/64"])
        b.add_route("default", RETURN)
        b.add_route("default", RETURN6)
        b.start_http_server(8080, body=f"b{n}")
        if synced:
            b.start_tcp_echo(ECHO_PORT)
            b.start_udp_echo(UDP_ECHO_PORT)
    a, b_ = nodes
    for node, peer, prio in ((a, b_, 150), (b_, a, 100)):
        node.daemon.start(timeout=90)
        ha = synced_ha_section(node, peer, prio) if synced else ha_section(node, peer, prio)
        doc = {
            "sluice:datapath": {"interface": [{"name": node.front}, {"name": node.back}]},
            "sluice:load-balancer": {"service": services() + (echo_services() if synced else [])},
            "sluice:ha": ha,
        }  # fmt: skip
        if synced:
            doc["sluice:snmp"] = {"enabled": True, "port": SNMP_PORT,
                                  "listen-address": ["127.0.0.1"],
                                  "community": [{"name": "ro", "secret": SNMP_COMMUNITY}]}
        node.daemon.apply(doc)
    return Pair(topo, client, cbr, bbr, a, b_, ports, client_if)


@pytest.fixture
def pair(netkit: kit.Topology, tmp_path: Path) -> Iterator[Pair]:
    pytest.importorskip("bcc", reason="needs bcc (python3-bpfcc)")
    from appliance.ha.keepalived import binary

    if binary() is None:
        pytest.skip("keepalived is not installed (scripts/setup)")
    p = build_pair(netkit, tmp_path)
    try:
        yield p
    finally:
        for node in p.nodes:
            node.daemon.stop()


@pytest.fixture
def synced_pair(netkit: kit.Topology, tmp_path: Path) -> Iterator[Pair]:
    pytest.importorskip("bcc", reason="needs bcc (python3-bpfcc)")
    from appliance.ha.keepalived import binary

    if binary() is None:
        pytest.skip("keepalived is not installed (scripts/setup)")
    p = build_pair(netkit, tmp_path, synced=True)
    try:
        yield p
    finally:
        for node in p.nodes:
            node.daemon.stop()


def wait_for(check: Callable[[], Any], timeout: float = 10.0, step: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except (OSError, RuntimeError, AssertionError, TimeoutError) as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(step)
    raise AssertionError(f"condition not met within {timeout}s (last: {last!r})")
