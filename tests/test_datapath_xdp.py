"""The XDP fast path (bpf/xdp.c, lib/xdp_fast.h) attached together with the TC program: real
packets through namespaces, XDP on both ends of every veth (the balancer's program on the
LB's ends, an XDP_PASS program on the peers': native XDP redirect into a veth needs one
there), checksum offload off on the senders (README, "XDP fast path").

Each flow's first packets go through TC (new flow, handshake, first reply); the rest of an
established flow must go through XDP — counted by the fast path's own counter — and still
arrive intact (the receivers verify every checksum), counted in the service's statistics.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from typing import Any

import netkit as kit
import pytest
from dpkit import (
    CT_TABLES,
    SNAT4,
    SNAT6,
    UDP_PORT,
    VIP4,
    VIP6,
    LbNet,
    build_lbnet,
    clear_maps,
    service,
)
from udpflow import UdpFlow

pytestmark = pytest.mark.datapath

TCP_PORT = 9000  # the backends' TCP echo; the service port too (DSR cannot change ports)
ROUNDS = 12  # request/response rounds per flow


@pytest.fixture(scope="session")
def pass_program() -> Iterator[Any]:
    """XDP_PASS: what the peers' ends of the veths run (lets native redirect into them)."""
    from bcc import BPF

    b = BPF(text=b"int xdp_pass(struct xdp_md *ctx) { return XDP_PASS; }")
    try:
        yield b.load_func(b"xdp_pass", BPF.XDP)
    finally:
        b.cleanup()


def prepare_peers(net: LbNet, pass_fn: Any, mode: str) -> None:
    """The other end of each of the LB's links: an XDP program, and no checksum offload on
    the senders (a partial checksum would not survive an XDP redirect: README)."""
    from appliance import netlink

    for link in net.topo.links:
        peer = link.b if link.a is net.lb else link.a
        ifname = link.ifname(peer)
        peer.run(["ethtool", "-K", ifname, "tx", "off"], check=True)
        netlink.attach_xdp(ifname, pass_fn.fd, mode, netns=peer.ns)


def make_net(topo: kit.Topology, lb_program: Any, xdp: Any, pass_fn: Any, mode: str) -> LbNet:
    from appliance.datapath.reconciler import DatapathReconciler

    net = build_lbnet(topo, n_backends=2, servers=False)
    for b in net.backends:
        b.start_tcp_echo(TCP_PORT)
        b.start_udp_echo(UDP_PORT)
    prepare_peers(net, pass_fn, mode)
    clear_maps(lb_program)
    xdp.mode = mode
    net.rec = DatapathReconciler(lb_program.pin_root, netns=net.lb.ns, program=lb_program,
                                 housekeeping=False, xdp=xdp)  # fmt: skip
    net.rec.start({"sluice:datapath": {
        "interface": [{"name": i, "hook": "xdp"} for i in net.interfaces]}})  # fmt: skip
    assert not net.rec.errors, net.rec.errors
    return net


@pytest.fixture
def xdpnet(netkit: kit.Topology, lb_program: Any, xdp_program: Any,
           pass_program: Any) -> Iterator[LbNet]:  # fmt: skip
    net = make_net(netkit, lb_program, xdp_program, pass_program, "native")
    try:
        yield net
    finally:
        net.rec.close()
        clear_maps(lb_program)


# One TCP connection: ROUNDS request/response rounds, each echo checked byte for byte.
TCP_CLIENT = """
import socket, sys
vip, port, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
s = socket.create_connection((vip, port), timeout=3)
for i in range(rounds):
    data = (b"%03d" % i) * 300
    s.sendall(data)
    got = b""
    while len(got) < len(data):
        chunk = s.recv(65536)
        assert chunk, "closed early"
        got += chunk
    assert got == data, "echo differs"
s.close()
print("ok")
"""


def tcp_rounds(net: LbNet, vip: str) -> None:
    res = net.client.run(["python3", "-c", TCP_CLIENT, vip, str(TCP_PORT), str(ROUNDS)],
                         timeout=20)  # fmt: skip
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr


def udp_rounds(net: LbNet, vip: str, port: int = UDP_PORT) -> int:
    flow = UdpFlow(net.client, vip, port=port)
    try:
        for _ in range(ROUNDS):
            assert flow.send(200) == "ok"
    finally:
        flow.close()
    return 2 * ROUNDS


def forwarded(net: LbNet) -> int:
    return net.rec.xdp.counters()["forwarded"]


def forwarded_by(net: LbNet, step: Any, tries: int = 4) -> int:
    """How many packets XDP forwarded while `step()` ran, in a run during which the route
    generation stayed put. A bump (RoutingWatch: a neighbour learned late, a link message
    under load) rightly sends the next packet of each direction to TC to refresh its next
    hop, which would be counted as XDP's miss."""
    for _ in range(tries):
        gen, before = net.rec.driver.route_generation(), forwarded(net)
        step()
        if net.rec.driver.route_generation() == gen:
            return forwarded(net) - before
    raise AssertionError(f"the route generation moved in each of {tries} tries")


DSR_UDP_PORT = 5354  # a UDP echo bound to the VIP itself: its replies come from the VIP


def dsr_backends(net: LbNet) -> None:
    # The endpoints own the VIP on lo (their replies leave with it as source, not via us).
    for b in net.backends:
        b.run(["ip", "addr", "add", f"{VIP4}/32", "dev", "lo"], check=True)
        b.run(["ip", "addr", "add", f"{VIP6}/128", "dev", "lo"], check=True)
        b.start_udp_echo(DSR_UDP_PORT, addr=VIP4)
        b.start_udp_echo(DSR_UDP_PORT, addr=VIP6)


MODES = {"dnat": {"mode": "default"}, "one-arm": {"mode": "one-arm"},
         "full-nat": {"mode": "full-nat"}, "dsr": {"mode": "dsr"}}  # fmt: skip


@pytest.mark.parametrize("mode", list(MODES))
def test_xdp_and_tc_together_forward_new_and_established_flows(xdpnet: LbNet, mode: str) -> None:
    net = xdpnet
    if mode == "dsr":
        dsr_backends(net)
    udp_port = DSR_UDP_PORT if mode == "dsr" else UDP_PORT
    docs = []
    for vip in (VIP4, VIP6):
        extra: dict[str, Any] = dict(MODES[mode])
        if mode == "full-nat":
            extra["snat-address"] = SNAT4 if vip == VIP4 else SNAT6
        v = "4" if vip == VIP4 else "6"
        docs.append(service(f"t{v}", vip=vip, port=TCP_PORT, ep_port=TCP_PORT, backends=(1, 2),
                            **extra))  # fmt: skip
        docs.append(service(f"u{v}", vip=vip, port=udp_port, proto="udp", ep_port=udp_port,
                            backends=(1, 2), **extra))  # fmt: skip
    net.set(*docs)
    status = net.rec.status()
    assert set(status["xdp"]) == set(net.interfaces)
    assert {s["mode"] for s in status["xdp"].values()} == {"native"}
    for vip in (VIP4, VIP6):
        v = "4" if vip == VIP4 else "6"
        # TCP: a new connection each time (its handshake through TC), data both ways.
        before = forwarded(net)
        tcp_rounds(net, vip)
        tcp_rounds(net, vip)
        # Each round is at least one data segment each way (DSR: the client's only).
        least = ROUNDS if mode == "dsr" else 2 * ROUNDS
        assert forwarded(net) - before >= least, (vip, "tcp", forwarded(net) - before)
        assert net.rec.service_state(f"t{v}")["total-sessions"] == 2
        # UDP: one fixed flow; after its first exchange every packet is XDP's.
        before = forwarded(net)
        sent = udp_rounds(net, vip, udp_port)
        if mode == "dsr":
            sent //= 2  # the replies bypass the balancer
        # (Margin: a route-generation bump or a reply's CT_SYNC_NS refresh passes a few.)
        assert forwarded(net) - before >= sent // 2, (vip, "udp", forwarded(net) - before)
        # Counted once each, whichever hook forwarded it (lb list, SNMP, Prometheus).
        assert net.rec.service_state(f"u{v}")["packets"] == sent
        eps = [net.rec.endpoint_state(f"u{v}", a, udp_port) for a in
               ((f"198.18.{10 + n}.1" if v == "4" else f"2001:db8:{10 + n}::1") for n in (1, 2))]
        assert sum(e["packets"] for e in eps if e) == sent


def test_generic_mode_forwards_too(netkit: kit.Topology, lb_program: Any, xdp_program: Any,
                                   pass_program: Any) -> None:  # fmt: skip
    net = make_net(netkit, lb_program, xdp_program, pass_program, "generic")
    try:
        net.set(service("u", port=UDP_PORT, proto="udp", ep_port=UDP_PORT, backends=(1,)),
                service("t", port=TCP_PORT, ep_port=TCP_PORT, backends=(1,),
                        mode="full-nat", **{"snat-address": SNAT4}))  # fmt: skip
        assert {s["mode"] for s in net.rec.status()["xdp"].values()} == {"generic"}
        before = forwarded(net)
        udp_rounds(net, VIP4)
        tcp_rounds(net, VIP4)
        assert forwarded(net) - before >= 2 * ROUNDS
    finally:
        net.rec.close()
        xdp_program.mode = "auto"
        clear_maps(lb_program)


def test_long_packets_and_a_paused_vip_go_to_tc(xdpnet: LbNet) -> None:
    net = xdpnet
    net.set(service("u", port=UDP_PORT, proto="udp", ep_port=UDP_PORT, backends=(1,)))
    flow = UdpFlow(net.client, VIP4, port=UDP_PORT)
    try:
        for _ in range(4):
            assert flow.send(100) == "ok"
        # Longer than any packet the FIB let through on this path: TC's (which asks the FIB
        # and widens the cache), then XDP's again.
        passed = net.rec.xdp.counters()["passed"]
        assert flow.send(1400) == "ok"
        assert net.rec.xdp.counters()["passed"] > passed
        def two_long() -> None:
            assert flow.send(1400) == "ok" and flow.send(1400) == "ok"

        assert forwarded_by(net, two_long) >= 3
        # HA backup: the VIP paused. XDP must not answer for it; TC (which knows) does not
        # either, so the flow stops.
        net.rec.set_paused([VIP4])
        before = forwarded(net)
        assert flow.send(100) == "timeout"
        assert forwarded(net) == before
        net.rec.set_paused([])
        assert flow.send(100) == "ok"
        # A flow synced from an HA peer (CT_F_SYNCED on its ORIG entry): TC's first (it makes
        # the flow this node's own and clears the flag), then XDP's again.
        for name in CT_TABLES:
            ct = net.rec.program.table(name)
            for k, v in list(ct.items()):
                if v.dir == 0:
                    v.flags |= 0x80
                    ct[k] = v
        passed = net.rec.xdp.counters()["passed"]
        assert flow.send(100) == "ok"
        assert net.rec.xdp.counters()["passed"] > passed
        assert not any(v.flags & 0x80 for v in ct.values())
        assert forwarded_by(net, lambda: flow.send(100)) >= 1
        # A reply entry due for its CT_SYNC_NS refresh: XDP refreshes the ORIG entry itself.
        for k, v in list(ct.items()):
            if v.dir == 1:
                v.last_ns = 0
                ct[k] = v
        before, passed = forwarded(net), net.rec.xdp.counters()["passed"]
        assert flow.send(100) == "ok"
        assert forwarded(net) - before == 2 and net.rec.xdp.counters()["passed"] == passed
        assert all(v.last_ns > 0 for v in ct.values())
    finally:
        flow.close()


def test_hook_tc_detaches_the_fast_path(xdpnet: LbNet) -> None:
    from appliance import netlink
    from appliance.config import Diff

    net = xdpnet
    lb_if = net.interfaces[0]
    assert netlink.xdp_state(lb_if, netns=net.lb.ns)["mode"] == "native"
    assert "xdp:native" in net.rec.status()["interfaces"][lb_if]
    diff = Diff()
    dp = {"interface": [{"name": i, "hook": "tc"} for i in net.interfaces]}
    diff.sections_changed["sluice:datapath"] = ({}, dp)
    net.rec.apply(diff)
    assert netlink.xdp_state(lb_if, netns=net.lb.ns) == {}
    assert net.rec.status()["xdp"] == {}
    net.set(service("u", port=UDP_PORT, proto="udp", ep_port=UDP_PORT, backends=(1,)))
    udp_rounds(net, VIP4)  # TC alone carries it


def test_netconf_state_shows_the_xdp_interfaces_and_counters() -> None:
    # Unit test: a datapath status dict as the reconciler returns it, no kernel.
    from lxml import etree

    from appliance import snapshot
    from appliance.config.schema import get_schema
    from northbound.netconf.output import json_to_xml
    from northbound.netconf.schema_index import SchemaIndex
    from northbound.netconf.state import state_doc

    dp = {"interfaces": {"v0": ["xdp:native", "sluice_lb"], "v1": ["sluice_lb"]},
          "xdp": {"v0": {"mode": "native", "prog-id": 7}},
          "xdp-packets": {"forwarded": 41, "passed": 3}}  # fmt: skip
    doc = state_doc(snapshot.State(datapath=dp))
    assert doc["sluice:datapath"]["state"]["xdp-interface"] == [{"name": "v0", "mode": "native"}]
    idx = SchemaIndex(get_schema())
    data = etree.Element("data")
    json_to_xml(data, {}, idx.top, idx.namespace, overlay=doc)
    text = etree.tostring(data).decode()
    for piece in ("<mode>native</mode>", "<xdp-forwarded-packets>41</xdp-forwarded-packets>",
                  "<xdp-passed-packets>3</xdp-passed-packets>"):  # fmt: skip
        assert piece in text, text


def test_hook_xdp_through_a_daemon_cli_status_and_cleanup(
    netkit: kit.Topology, tmp_path: Any, pass_program: Any
) -> None:
    """`sluice run` with `hook xdp` applied from a file: the fast path is compiled and
    attached by the daemon, forwards, shows in `sluice dp status`; a daemon stop leaves it
    forwarding (the kernel holds it, the maps are pinned); --cleanup detaches it."""
    from daemonkit import SLUICE, Daemon

    from appliance import netlink

    net = build_lbnet(netkit, n_backends=1, servers=False)
    net.backends[0].start_tcp_echo(TCP_PORT)
    prepare_peers(net, pass_program, "native")
    d = Daemon(tmp_path, datapath="on", pin_dir=netkit.pin_dir("daemon"), netns=net.lb.ns)
    d.start(timeout=60)
    try:
        d.apply({"datapath": {"interface": [{"name": i, "hook": "xdp"} for i in net.interfaces]}})
        res = d.cli("lb", "add", "echo", "--vip", VIP4, "--port", str(TCP_PORT),
                    "--endpoints", f"198.18.11.1:{TCP_PORT}")  # fmt: skip
        assert res.returncode == 0, res.stderr
        tcp_rounds(net, VIP4)
        status = d.cli_json("dp", "status")
        assert all(f[0] == "xdp:native" for f in status["interfaces"].values()), status
        # Most of the ~2 x ROUNDS segments (the daemon's route-generation bumps after the
        # attach and the handshake pass a few to TC).
        assert status["xdp-packets"]["forwarded"] >= ROUNDS, status["xdp-packets"]
        text = d.cli("dp", "status").stdout
        assert f"{net.interfaces[0]}: xdp:native,sluice_lb" in text and "forwarded" in text
        assert d.stop() == 0
        tcp_rounds(net, VIP4)  # no daemon: TC and XDP stay, on the pinned maps
    finally:
        d.stop()
    res = subprocess.run(["nsenter", f"--net=/run/netns/{net.lb.ns}", *SLUICE, "run",
                          "--cleanup"], env=d.env, capture_output=True, text=True,
                         timeout=60)  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert all(netlink.xdp_state(i, netns=net.lb.ns) == {} for i in net.interfaces)


def test_one_arm_back_out_of_the_ingress_interface_is_xdp_tx(xdpnet: LbNet) -> None:
    # An endpoint on the client's own link (a second address of the client host): the
    # translated packet leaves where it came in, by XDP_TX, both ways.
    net = xdpnet
    client_if = next(link.ifname(net.client) for link in net.topo.links
                     if net.client in (link.a, link.b))  # fmt: skip
    net.client.run(["ip", "addr", "add", "198.18.0.2/24", "dev", client_if], check=True)
    net.client.start_udp_echo(UDP_PORT, addr="198.18.0.2")
    doc = service("u", port=UDP_PORT, proto="udp", ep_port=UDP_PORT, backends=(), mode="one-arm")
    doc["endpoint"] = [{"address": "198.18.0.2", "port": UDP_PORT, "weight": 1,
                        "admin-state": "enabled"}]  # fmt: skip
    net.set(doc)
    before = forwarded(net)
    sent = udp_rounds(net, VIP4)
    assert forwarded(net) - before >= sent // 2
    (row,) = net.rec.conntrack("u")
    assert row["snat"].startswith("198.18.0.254:")  # the LB's own address on that link
