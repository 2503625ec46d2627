"""The next hop cached in each conntrack entry (bpf/lib/nexthop.h): established packets skip
the FIB, yet follow a route or neighbour change as soon as the daemon has bumped the route
generation, and Path MTU discovery still answers packets that are too big.

Each flow here is one UDP socket (a fixed 5-tuple) in the client, driven line by line, so
"the next packet of the same flow" is exactly that.
"""

from __future__ import annotations

import ctypes as ct
from typing import Any

import pytest
from dpkit import UDP_PORT, VIP4, VIP6, LbNet, ct_values, service, wait_for
from test_datapath_pmtu import NARROW, narrow_route
from udpflow import UdpFlow

pytestmark = pytest.mark.datapath

def bumped_since(lbnet: LbNet, gen: int) -> Any:
    return wait_for(lambda: lbnet.rec.driver.route_generation() > gen, timeout=5)


def cached_next_hops(lbnet: LbNet) -> list[int]:
    """The egress ifindex cached in each conntrack entry (0: none)."""
    return [int(v.nh.ifindex) for v in ct_values(lbnet.rec.program)]


def rx_packets(host: Any, ifname: str) -> int:
    return int(host.run(["cat", f"/sys/class/net/{ifname}/statistics/rx_packets"],
                        check=True).stdout)  # fmt: skip


def test_conntrack_layout_mirror_matches_the_compiled_struct(lb_program: Any) -> None:
    from appliance.datapath import ctwalk
    from appliance.datapath import layout as L

    def fields(ctype: Any) -> dict[str, tuple[int, int]]:  # bcc names its padding __pad_*
        return {k: v for k, v in ctwalk.offsets(ctype).items() if "__pad" not in k}

    t = lb_program.table("ct_map")
    assert ct.sizeof(t.Leaf) == ct.sizeof(L.CtEntry) and ct.sizeof(t.Key) == ct.sizeof(L.CtKey)
    assert fields(t.Leaf) == fields(L.CtEntry)
    assert fields(t.Key) == fields(L.CtKey)
    t4 = lb_program.table("ct4_map")  # IPv4 keys: struct ct4_key, the same entries
    assert fields(t4.Leaf) == fields(L.CtEntry)
    assert fields(t4.Key) == fields(L.Ct4Key) and ct.sizeof(t4.Key) == ct.sizeof(L.Ct4Key)


@pytest.mark.parametrize("vip", [VIP4, VIP6])
def test_a_new_backend_mac_is_followed_after_the_generation_bump(lbnet: LbNet, vip: str) -> None:
    lbnet.set(service("u", vip=vip, port=53, proto="udp", ep_port=UDP_PORT, backends=(1,)))
    flow = UdpFlow(lbnet.client, vip)
    try:
        assert flow.send(100) == "ok" and flow.send(100) == "ok"
        lb_if, b1 = lbnet.interfaces[1], lbnet.backends[0]
        b1_if = next(link.ifname(b1) for link in lbnet.topo.links if b1 in (link.a, link.b))
        assert lbnet.lb.ifindex(lb_if) in cached_next_hops(lbnet)
        # The backend gets a new MAC; the balancer learns it (as ARP/ND would tell it).
        new_mac = "02:5e:00:00:00:11"
        b1.run(["ip", "link", "set", b1_if, "address", new_mac], check=True)
        gen = lbnet.rec.driver.route_generation()
        addr = "198.18.11.1" if vip == VIP4 else "2001:db8:11::1"
        lbnet.lb.run(["ip", "neigh", "replace", addr, "lladdr", new_mac, "dev", lb_if],
                     check=True)  # fmt: skip
        bumped_since(lbnet, gen)
        assert flow.send(100) == "ok"  # the very next packet of the same flow
    finally:
        flow.close()


@pytest.mark.parametrize("vip", [VIP4, VIP6])
def test_a_backend_moved_to_another_interface_is_followed_after_the_bump(
    lbnet: LbNet, vip: str
) -> None:
    v4 = vip == VIP4
    b1 = lbnet.backends[0]
    second = lbnet.topo.link(lbnet.lb, b1, ["198.18.21.254/24", "2001:db8:21::fe/64"],
                             ["198.18.21.1/24", "2001:db8:21::1/64"])  # fmt: skip
    lbnet.set(service("u", vip=vip, port=53, proto="udp", ep_port=UDP_PORT, backends=(1,)))
    flow = UdpFlow(lbnet.client, vip)
    try:
        assert flow.send(100) == "ok" and flow.send(100) == "ok"
        assert lbnet.lb.ifindex(lbnet.interfaces[1]) in cached_next_hops(lbnet)
        before = rx_packets(b1, second.ifname(b1))
        gen = lbnet.rec.driver.route_generation()
        # The backend's address is now reached over the second link.
        dst, via = ("198.18.11.1/32", "198.18.21.1") if v4 else ("2001:db8:11::1/128",
                                                                   "2001:db8:21::1")  # fmt: skip
        lbnet.lb.run(["ip", "-4" if v4 else "-6", "route", "replace", dst, "via", via],
                     check=True)  # fmt: skip
        bumped_since(lbnet, gen)
        assert flow.send(100) == "ok"  # the very next packet of the same flow...
        assert rx_packets(b1, second.ifname(b1)) > before  # ...took the new way
        # The first one went with neighbour resolution (the new gateway was unknown); once
        # resolved, the new way is what the flow caches.
        assert flow.send(100) == "ok"
        assert lbnet.lb.ifindex(second.ifname(lbnet.lb)) in cached_next_hops(lbnet)
    finally:
        flow.close()


@pytest.mark.parametrize("vip", [VIP4, VIP6])
def test_a_too_big_packet_still_gets_fragmentation_needed(lbnet: LbNet, vip: str) -> None:
    lbnet.set(service("u", vip=vip, port=53, proto="udp", ep_port=UDP_PORT, backends=(1,)))
    # 1. Narrow from the start: the cache holds a short packet's next hop, a long one of the
    #    same flow must not use it.
    narrow_route(lbnet, "backends")
    flow = UdpFlow(lbnet.client, vip)
    try:
        assert flow.send(100) == "ok" and flow.send(100) == "ok"
        assert any(cached_next_hops(lbnet))
        wait_for(lambda: flow.send(1450) != "ok" and int(flow.ask("mtu")) == NARROW, timeout=5)
    finally:
        flow.close()


def test_a_route_narrowed_under_a_cached_flow_gets_fragmentation_needed(lbnet: LbNet) -> None:
    lbnet.set(service("u", port=53, proto="udp", ep_port=UDP_PORT, backends=(1,)))
    # 2. Full-size packets went through the cache; then the route narrows (a route change:
    #    the generation is bumped) and the next full-size one is answered.
    flow = UdpFlow(lbnet.client, VIP4)
    try:
        assert flow.send(1450) == "ok" and flow.send(1450) == "ok"
        gen = lbnet.rec.driver.route_generation()
        narrow_route(lbnet, "backends")
        bumped_since(lbnet, gen)
        wait_for(lambda: flow.send(1450) != "ok" and int(flow.ask("mtu")) == NARROW, timeout=5)
        assert flow.send(1300) == "ok"
    finally:
        flow.close()


class _Msg(dict):
    """A stand-in for a pyroute2 rtnetlink message (unit test: no kernel involved)."""

    def __init__(self, event: str, attrs: dict[str, Any] | None = None, **fields: Any) -> None:
        super().__init__(event=event, **fields)
        self.attrs = attrs or {}

    def get_attr(self, name: str) -> Any:
        return self.attrs.get(name)


def test_routing_watch_counts_moves_not_neighbour_churn() -> None:
    from appliance.netlink import RoutingWatch

    w = RoutingWatch(lambda: None)

    def neigh(lladdr: str | None, state: int = 0x02, event: str = "RTM_NEWNEIGH") -> _Msg:
        return _Msg(event, {"NDA_DST": "198.18.11.1", "NDA_LLADDR": lladdr}, ifindex=3,
                    state=state)  # fmt: skip

    assert w._counts(_Msg("RTM_NEWROUTE")) and w._counts(_Msg("RTM_DELROUTE"))
    assert w._counts(_Msg("RTM_NEWLINK"))
    assert w._counts(neigh("02:00:00:00:00:01"))  # first seen
    assert not w._counts(neigh("02:00:00:00:00:01", state=0x04))  # reachable -> stale
    assert not w._counts(neigh(None, state=0x01))  # incomplete: nothing cached from it
    assert w._counts(neigh("02:00:00:00:00:02"))  # a new MAC
    assert w._counts(neigh("02:00:00:00:00:02", state=0x20))  # failed
    assert w._counts(neigh("02:00:00:00:00:02", event="RTM_DELNEIGH"))
