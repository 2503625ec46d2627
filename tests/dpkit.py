"""Datapath test kit: one compiled program per test session, and a client/LB/backends net.

Topology (all inside namespaces the test creates):

    client 198.18.0.1, 2001:db8::1 --- 198.18.0.254, 2001:db8::fe  lb
    lb 198.18.1N.254, 2001:db8:1N::fe --- 198.18.1N.1, 2001:db8:1N::1  bN   (N = 1..3)

VIPs (198.19.0.0/24, 2001:db8:ff::/64) are on no interface: the client routes everything
via the LB, the backends route back via the LB, and the LB's TC program does the rest.
Every backend runs an HTTP server on 8080 answering its own name and a UDP echo on 5353.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import netkit as kit
import pytest
from waiting import wait_for as wait_for  # re-exported: the datapath tests import it from here

from appliance.config import Diff

VIP4, VIP6 = "198.19.0.10", "2001:db8:ff::10"
SNAT4, SNAT6 = "198.19.0.100", "2001:db8:ff::100"
HTTP_PORT, UDP_PORT = 8080, 5353


@pytest.fixture(scope="session")
def lb_program() -> Iterator[Any]:
    """bpf/lb.c compiled and loaded once per session, maps pinned in a test pin dir."""
    kit.require_netns()
    pytest.importorskip("bcc", reason="needs bcc (python3-bpfcc)")
    from appliance.datapath.program import Program

    topo = kit.Topology()  # only for its pin dir (removed at close)
    prog = Program(topo.pin_dir("session"), ct_capacity=65536)
    try:
        prog.load()
        yield prog
    finally:
        prog.close()
        topo.close()


@pytest.fixture(scope="session")
def xdp_program(lb_program: Any) -> Any:
    """The XDP fast path (bpf/xdp.c): lb_program's "xdp" module, compiled once per session."""
    from appliance.datapath.xdp import XdpProgram

    x = XdpProgram(lb_program)
    x.load()
    return x


def backend_addr(n: int, version: int = 4) -> str:
    return f"198.18.{10 + n}.1" if version == 4 else f"2001:db8:{10 + n}::1"


def probed_web(probe_type: str, backends: tuple[int, ...], interval: int, timeout: int,
               retries: int) -> dict[str, Any]:
    """Service "web" on VIP4:80 whose endpoints (backend n, HTTP_PORT) are health-probed
    with ``probe_type``; one success brings an endpoint up."""
    probe = {"type": probe_type, "interval": interval, "timeout": timeout, "retries": retries,
             "successes-before-up": 1}  # fmt: skip
    endpoints = [{"address": backend_addr(n), "port": HTTP_PORT} for n in backends]
    return {"name": "web", "vip": VIP4, "port": 80, "health-probe": probe, "endpoint": endpoints}


def service(name: str, vip: str = VIP4, port: int | None = 80, proto: str = "tcp",
            backends: tuple[int, ...] = (1, 2, 3), ep_port: int = HTTP_PORT,
            **extra: Any) -> dict[str, Any]:  # fmt: skip
    """An effective service dict (the fields the datapath reads)."""
    version = 6 if ":" in vip else 4
    doc: dict[str, Any] = {
        "name": name, "vip": vip, "protocol": proto, "admin-state": "enabled",
        "mode": "default", "algorithm": "round-robin", "persistence-timeout": 10800,
        "endpoint": [
            {"address": backend_addr(n, version), "port": ep_port if proto != "icmp" else 0,
             "weight": 1, "admin-state": "enabled"} for n in backends
        ],
    }  # fmt: skip
    if port is not None and proto != "icmp":
        doc["port"] = port
    doc.update(extra)
    return doc


@dataclass
class LbNet:
    topo: kit.Topology
    client: kit.Host
    lb: kit.Host
    backends: list[kit.Host]
    interfaces: list[str]
    rec: Any = None
    services: dict[str, dict[str, Any]] = field(default_factory=dict)

    def set(self, *docs: dict[str, Any], remove: tuple[str, ...] = ()) -> None:
        """Commit-like: add or change services (and remove some) through the reconciler."""
        diff = Diff()
        for doc in docs:
            if doc["name"] in self.services:
                diff.services_changed[doc["name"]] = (self.services[doc["name"]], doc)
            else:
                diff.services_added[doc["name"]] = doc
            self.services[doc["name"]] = doc
        for name in remove:
            diff.services_removed[name] = self.services.pop(name)
        self.rec.apply(diff)
        assert not self.rec.errors, self.rec.errors

    def restart(self, *docs: dict[str, Any], sections: dict[str, Any] | None = None) -> Any:
        """A "restarted daemon": a new reconciler over the same pinned maps (and the same
        loaded program), started with ``docs`` as the whole load-balancer config and
        ``sections`` (other top-level sections by qualified name) beside it."""
        from appliance.datapath.reconciler import DatapathReconciler

        self.rec.close()
        dp = {"interface": [{"name": i, "hook": "tc"} for i in self.interfaces]}
        self.rec = DatapathReconciler(self.rec.pin_root, netns=self.lb.ns,
                                      program=self.rec.program, housekeeping=False)  # fmt: skip
        self.rec.start({"sluice:datapath": dp, "sluice:load-balancer": {"service": list(docs)},
                        **(sections or {})})  # fmt: skip
        self.services = {d["name"]: d for d in docs}
        return self.rec

    def get(self, vip: str = VIP4, port: int = 80, timeout: float = 3.0, **kw: Any) -> str:
        host = f"[{vip}]" if ":" in vip else vip
        return self.client.http_get(f"http://{host}:{port}/", timeout=timeout, **kw)

    def curl(self, vip: str, port: int, local_port: int | None = None) -> str:
        host = f"[{vip}]" if ":" in vip else vip
        cmd = ["curl", "-sS", "--fail", "-g", "--noproxy", "*", "--max-time", "3"]
        if local_port:
            cmd += ["--local-port", str(local_port)]
        res = self.client.run([*cmd, f"http://{host}:{port}/"], timeout=6)
        if res.returncode != 0:
            raise RuntimeError(res.stderr)
        return res.stdout

    def udp_from_ports(self, vip: str, port: int, ports: list[int], timeout: float = 2.0) -> None:
        """One datagram from each local port (fixed 5-tuples), each echo awaited."""
        fam = "AF_INET6" if ":" in vip else "AF_INET"
        script = (
            "import socket,sys\n"
            f"for p in {list(ports)!r}:\n"
            f" s=socket.socket(socket.{fam},socket.SOCK_DGRAM); s.settimeout({timeout})\n"
            " s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n"
            " s.bind(('',p))\n"
            f" s.sendto(b'x%d'%p,({vip!r},{port})); assert s.recv(100)==b'x%d'%p; s.close()\n"
        )
        res = self.client.run(["python3", "-c", script], timeout=timeout * len(ports) + 5)
        assert res.returncode == 0, res.stderr

    def endpoint_by_client_port(self, service: str) -> dict[int, str]:
        return {int(r["client"].rsplit(":", 1)[1]): r["endpoint"]
                for r in self.rec.conntrack(service)}  # fmt: skip


BIG_DATAGRAM = bytes(range(256)) * 125  # 32,000 bytes: 22 IPv4 / 23 IPv6 fragments


def assert_big_datagrams_echoed(lbnet: LbNet, vips: tuple[str, ...], names: tuple[str, ...],
                                port: int = 53) -> None:
    """Each VIP echoes a 32,000-byte datagram intact twice (a new flow, then an established
    one), and each of the services' two flows saw its fragments both ways."""
    for vip in vips:
        for _ in range(2):
            assert lbnet.client.udp_request(vip, port, BIG_DATAGRAM, timeout=3) == BIG_DATAGRAM, vip
    for name in names:
        rows = lbnet.rec.conntrack(name)
        assert len(rows) == 2, rows
        assert all(r["packets"][0] >= 22 and r["packets"][1] >= 22 for r in rows), rows


def build_lbnet(
    topo: kit.Topology, n_backends: int = 3, servers: bool = True, prefix: str = ""
) -> LbNet:
    """``prefix`` starts every host's name (the demo's ``demo``: its namespaces are then
    ``sl-<id>-demo<host>``, which `make demo-stop` finds); servers still answer ``bN``."""
    client, lb = topo.host(f"{prefix}client"), topo.host(f"{prefix}lb")
    up = topo.link(client, lb, ["198.18.0.1/24", "2001:db8::1/64"],
                   ["198.18.0.254/24", "2001:db8::fe/64"])  # fmt: skip
    client.add_route("default", "198.18.0.254")
    client.add_route("default", "2001:db8::fe")
    interfaces = [up.ifname(lb)]
    backends = []
    for n in range(1, n_backends + 1):
        b = topo.host(f"{prefix}b{n}")
        link = topo.link(lb, b, [f"198.18.{10 + n}.254/24", f"2001:db8:{10 + n}::fe/64"],
                         [f"{backend_addr(n)}/24", f"{backend_addr(n, 6)}/64"])  # fmt: skip
        b.add_route("default", f"198.18.{10 + n}.254")
        b.add_route("default", f"2001:db8:{10 + n}::fe")
        interfaces.append(link.ifname(lb))
        if servers:
            b.start_http_server(HTTP_PORT, body=f"b{n}")
            b.start_udp_echo(UDP_PORT)
        backends.append(b)
    return LbNet(topo, client, lb, backends, interfaces)


def clear_maps(prog: Any) -> None:
    """Leave the shared program's maps as a fresh start would find them."""
    live = prog.table("fw_live")  # the firewall off (bpf/lib/firewall.h)
    live[live.Key(0)] = live.Leaf(0)
    for name in ("svc_map", "range_map", "ep_map", "sel_map", "persist_map", "ifaddr_map",
                 "allow_map", "ct_map", "syn_map", "ct4_map", "syn4_map", "ep_stats", "frag_map",
                 "fw_keys", "fw_ifpol", "fw_names", "ha_pause_map", "mh_peer_map",
                 "mh_alt_map"):  # fmt: skip
        table = prog.table(name)
        if not any(True for _ in table):
            continue
        try:
            # bcc's clear() walks and deletes key by key (slow for a Maglev table).
            table.items_delete_batch()
        except Exception:  # LPM tries have no batch operations (ENOTSUPP)
            table.clear()
    zero_gauges(prog.table("ep_active"))
    cfg = prog.table("ha_cfg_map")  # HA hooks off (bpf/lib/ha.h)
    cfg[cfg.Key(0)] = cfg.Leaf()


# The conntrack tables (bpf/lib/ct_tables.h): IPv4 keys in ct4_map/syn4_map, IPv6 in
# ct_map/syn_map. Tests that read entries read them all.
CT_TABLES = ("ct_map", "ct4_map")
SYN_TABLES = ("syn_map", "syn4_map")


def ct_values(prog: Any, names: tuple[str, ...] = CT_TABLES) -> list[Any]:
    """Every entry (ctypes struct ct_entry) of these conntrack tables."""
    return [v for name in names for v in prog.table(name).values()]


def zero_gauges(table: Any) -> None:
    """Zero an array of gauges where it is not 0 (ep_active: 524,288 slots, which bcc's
    clear() would write one syscall each)."""
    from appliance.datapath import ctwalk

    ids = [i for keys, values, n in ctwalk.walk(table)
           for i, v in zip(struct.unpack(f"={n}I", keys), struct.unpack(f"={n}q", values),
                           strict=True) if v]  # fmt: skip
    for i in ids:
        table[table.Key(i)] = table.Leaf(0)


@pytest.fixture
def lbnet(netkit: kit.Topology, lb_program: Any) -> Iterator[LbNet]:
    from appliance.datapath.reconciler import DatapathReconciler

    net = build_lbnet(netkit)
    clear_maps(lb_program)
    net.rec = DatapathReconciler(
        lb_program.pin_root, netns=net.lb.ns, program=lb_program, housekeeping=False
    )
    net.rec.start({
        "sluice:datapath": {"interface": [{"name": i, "hook": "tc"} for i in net.interfaces]},
    })  # fmt: skip
    try:
        yield net
    finally:
        net.rec.close()
        clear_maps(lb_program)


@pytest.fixture
def lb_daemon(netkit: kit.Topology, tmp_path: Any) -> Iterator[tuple[LbNet, Any]]:
    """A real `sluice run --datapath on` inside the LB namespace of a two-backend topology
    (no servers started: each test decides what its backends run)."""
    pytest.importorskip("bcc", reason="needs bcc (python3-bpfcc)")
    from daemonkit import Daemon

    net = build_lbnet(netkit, n_backends=2, servers=False)
    d = Daemon(tmp_path, datapath="on", pin_dir=netkit.pin_dir("daemon"), netns=net.lb.ns)
    d.start(timeout=60)
    try:
        yield net, d
    finally:
        d.stop()
