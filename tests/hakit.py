"""Two appliances in namespaces, each a real `sluice run --datapath on` whose daemon starts
its own keepalived, between a client-side and a backend-side bridge.

    client 198.18.0.1 ─┐                    ┌─ b1 198.18.1.11 (HTTP 8080 "b1")
                       cbr ─ lba 198.18.0.2 / 198.18.1.2 ─ bbr
                       cbr ─ lbb 198.18.0.3 / 198.18.1.3 ─ bbr
                                            └─ b2 198.18.1.12 (HTTP 8080 "b2")

VIP 198.18.0.10 (on the client's link: the client ARPs for it) moves with the VRRP
instance "front", and so does the backend-side return address 198.18.1.254, the backends'
default route. Services: `web` (DNAT, port 80) and `webnat` (full-NAT, port 81, SNAT
198.18.2.100, routed by the backends via the return address). Witness: the client.

With `synced=True` (the conntrack-sync failover test): IPv6 too (VIP 2001:db8::10 in a
second instance "front6", return address 2001:db8:1::fe), the sync channel between the
nodes' backend-side addresses with a source-port range per node, and echo services on
both VIPs: TCP 7 (DNAT) and 8 (full-NAT) to the backends' TCP echo on 7000, UDP 53 to
their UDP echo on 5353.
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
ECHO_PORT, UDP_ECHO_PORT = 7000, 5353


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
        return self.ha()["instances"][0]["role"]

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

    @property
    def nodes(self) -> tuple[Node, Node]:
        return (self.a, self.b)

    def master(self) -> Node | None:
        roles = {n.name: n.role() for n in self.nodes}
        masters = [n for n in self.nodes if roles[n.name] == "master"]
        assert len(masters) <= 1, f"two masters: {roles}"
        return masters[0] if masters else None

    def holders(self) -> list[str]:
        return [n.name for n in self.nodes if n.holds()]

    def client_neighbour(self) -> str | None:
        res = self.client.run(["ip", "-j", "neigh", "show", VIP], check=True)
        rows = [r for r in json.loads(res.stdout) if "lladdr" in r]
        return rows[0]["lladdr"] if rows else None

    def get(self, port: int, timeout: float = 2.0) -> str:
        return self.client.http_get(f"http://{VIP}:{port}/", timeout=timeout)


def _bridge(host: kit.Host) -> None:
    host.run(["ip", "link", "add", "br0", "type", "bridge"], check=True)
    host.run(["ip", "link", "set", "br0", "up"], check=True)


def _port(topo: kit.Topology, host: kit.Host, bridge: kit.Host,
          addrs: list[str]) -> tuple[str, str]:  # fmt: skip
    link = topo.link(host, bridge, addrs, [])
    bridge.run(["ip", "link", "set", link.ifname(bridge), "master", "br0"], check=True)
    return link.ifname(host), link.ifname(bridge)


def ha_section(me: str, peer: str, front: str, back: str, priority: int) -> dict[str, Any]:
    return {
        "witness": CLIENT, "witness-interval": 100, "witness-misses": 3,
        "instance": [{
            "name": "front", "virtual-router-id": 51, "priority": priority,
            "interface": front, "peer": [peer], "vip": [VIP],
            "return-interface": back, "return-address": [RETURN],
            "advert-interval": ADVERT_MS,
        }],
    }  # fmt: skip


def synced_ha_section(me: Node, peer: Node, priority: int) -> dict[str, Any]:
    """Faster adverts and VIP checks (the test asks for no gap over 1 s, and a client's TCP
    retransmits at 0.2, 0.6, 1.4 s), IPv6 beside IPv4, and the sync channel."""
    mine, theirs = _n(me), _n(peer)
    doc = ha_section(me.host.name, f"198.18.0.{theirs}", me.front, me.back, priority)
    doc["witness-misses"] = 2
    doc["instance"][0]["advert-interval"] = 50
    doc["instance"].append({
        "name": "front6", "virtual-router-id": 52, "priority": priority,
        "interface": me.front, "peer": [f"2001:db8::{theirs}"], "vip": [VIP6],
        "source-address": f"2001:db8::{mine}",
        "return-interface": me.back, "return-address": [RETURN6], "advert-interval": 50,
    })  # fmt: skip
    first = 20000 if me.name == "lba" else 40000
    doc["sync"] = {"address": f"198.18.1.{mine}", "peer": [f"198.18.1.{theirs}"],
                   "key": SYNC_KEY, "snat-ports": {"first": first, "last": first + 19999}}
    return doc


def echo_services() -> list[dict[str, Any]]:
    out = []
    for vip, snat, last in ((VIP, SNAT, "198.18.1.1"), (VIP6, SNAT6, "2001:db8:1::1")):
        eps = [{"address": f"{last}{n}", "port": ECHO_PORT} for n in (1, 2)]
        udp = [{"address": f"{last}{n}", "port": UDP_ECHO_PORT} for n in (1, 2)]
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
    eps = [{"address": "198.18.1.11", "port": 8080}, {"address": "198.18.1.12", "port": 8080}]
    probe = {"type": "tcp", "interval": 1, "timeout": 1}
    return [
        {"name": "web", "vip": VIP, "port": 80, "endpoint": eps, "health-probe": probe},
        {"name": "webnat", "vip": VIP, "port": 81, "mode": "full-nat", "snat-address": SNAT,
         "endpoint": eps, "health-probe": probe},
    ]  # fmt: skip


def _n(node: Node) -> int:
    return 2 if node.name == "lba" else 3


def build_pair(topo: kit.Topology, workdir: Path, synced: bool = False) -> Pair:
    client, cbr, bbr = topo.host("client"), topo.host("cbr"), topo.host("bbr")
    _bridge(cbr)
    _bridge(bbr)
    _port(topo, client, cbr, [f"{CLIENT}/24"] + ([f"{CLIENT6}/64"] if synced else []))
    ports = {}
    nodes = []
    for name, last in (("lba", 2), ("lbb", 3)):
        host = topo.host(name)
        v6f = [f"2001:db8::{last}/64"] if synced else []
        v6b = [f"2001:db8:1::{last}/64"] if synced else []
        front, ports[name] = _port(topo, host, cbr, [f"198.18.0.{last}/24", *v6f])
        back, _ = _port(topo, host, bbr, [f"198.18.1.{last}/24", *v6b])
        wd = workdir / name
        wd.mkdir()
        d = Daemon(wd, datapath="on", pin_dir=topo.pin_dir(name), netns=host.ns)
        nodes.append(Node(name, host, front, back, d))
    for n in (1, 2):
        b = topo.host(f"b{n}")
        _port(topo, b, bbr, [f"198.18.1.1{n}/24"] + ([f"2001:db8:1::1{n}/64"] if synced else []))
        b.add_route("default", RETURN)
        b.start_http_server(8080, body=f"b{n}")
        if synced:
            b.add_route("default", RETURN6)
            b.start_tcp_echo(ECHO_PORT)
            b.start_udp_echo(UDP_ECHO_PORT)
    a, b_ = nodes
    for node, peer, prio in ((a, b_, 150), (b_, a, 100)):
        node.daemon.start(timeout=90)
        ha = (synced_ha_section(node, peer, prio) if synced
              else ha_section(node.host.name, _addr(peer), node.front, node.back, prio))
        node.daemon.apply({
            "sluice:datapath": {"interface": [{"name": node.front}, {"name": node.back}]},
            "sluice:load-balancer": {"service": services() + (echo_services() if synced else [])},
            "sluice:ha": ha,
        })  # fmt: skip
    return Pair(topo, client, cbr, bbr, a, b_, ports)


def _addr(node: Node) -> str:
    return "198.18.0.2" if node.name == "lba" else "198.18.0.3"


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
