"""The next hop cached per endpoint (bpf/lib/nexthop.h ep_nh_arr): a new flow to an endpoint
whose next hop is known asks the FIB nothing, while routing depends on the destination
alone (the daemon's RoutingWatch says so, appliance/netlink.py). A route or neighbour
change is followed by the next new flow after the generation bump; a policy rule sends new
flows back to the FIB (and its rule is followed); a too-big first packet still gets
"fragmentation needed".

Whether a packet asks the FIB is counted with bench/bpfcount.py: the loaded program's
bytecode run on one frame against the real maps (read-only), so the count is the path the
kernel takes with these maps.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
from dpkit import CT_TABLES, UDP_PORT, VIP4, VIP6, LbNet, backend_addr, service, wait_for
from test_datapath_pmtu import NARROW, narrow_route
from udpflow import UdpFlow

pytestmark = pytest.mark.datapath

BENCH = Path(__file__).resolve().parent.parent / "bench"
CLIENT = {4: "198.18.0.1", 6: "2001:db8::1"}


def version(vip: str) -> int:
    return 6 if ":" in vip else 4


def ep_id(lbnet: LbNet, name: str, n: int, vip: str) -> int:
    state = lbnet.rec.driver.services[name]
    return next(i for (a, _p), i in state.eps.items() if a == backend_addr(n, version(vip)))


def cached(lbnet: LbNet, ep: int) -> Any:
    """The endpoint's cache slot (nh.ifindex 0: nothing)."""
    t = lbnet.rec.program.table("ep_nh_arr")
    return t[t.Key(ep)]


def asks_fib(lbnet: LbNet, vip: str, sport: int) -> bool:
    """Whether a SYN from the client's ``sport`` to ``vip``:80 (a new flow) would call
    bpf_fib_lookup now (bench/bpfcount.py on the loaded program and its maps); it must
    be forwarded either way."""
    sys.path.insert(0, str(BENCH))
    import bpfcount
    import pktcost

    frame = pktcost.tcp_frame(CLIENT[version(vip)], vip, sport, 80, pktcost.SYN)
    front = lbnet.lb.ifindex(lbnet.interfaces[0])
    res = bpfcount.balancer(lbnet.rec.program, frame, front).summary()
    assert res["verdict"] == pktcost.TC_ACT_REDIRECT, res
    return any("fib" in h for h in res["helpers"])


def bumped_since(lbnet: LbNet, gen: int) -> None:
    wait_for(lambda: lbnet.rec.driver.route_generation() > gen, timeout=5)


def rx_packets(host: Any, ifname: str) -> int:
    return int(host.run(["cat", f"/sys/class/net/{ifname}/statistics/rx_packets"],
                        check=True).stdout)  # fmt: skip


def fill(lbnet: LbNet, vip: str, ep: int) -> Any:
    """New flows until the endpoint's cache holds a next hop of the current generation (the
    first may find the neighbour unresolved: the FIB answers "no neighbour", which is not
    cached; the slot may hold another test's endpoint of an older generation)."""
    driver = lbnet.rec.driver

    def filled() -> bool:  # (neighbour resolution itself bumps the generation meanwhile)
        slot = cached(lbnet, ep)
        return (lbnet.get(vip) == "b1" and slot.nh.ifindex != 0
                and slot.nh.gen == driver.route_generation() and driver.endpoint_next_hops())

    wait_for(filled, timeout=10)
    return cached(lbnet, ep)


def second_link(lbnet: LbNet) -> Any:
    """Another link from the LB to backend 1 (198.18.21.0/24, 2001:db8:21::/64)."""
    return lbnet.topo.link(lbnet.lb, lbnet.backends[0], ["198.18.21.254/24", "2001:db8:21::fe/64"],
                           ["198.18.21.1/24", "2001:db8:21::1/64"])  # fmt: skip


@pytest.mark.parametrize("vip", [VIP4, VIP6])
def test_the_second_new_flow_to_an_endpoint_asks_no_fib(lbnet: LbNet, vip: str) -> None:
    lbnet.set(service("web", vip=vip, backends=(1,)))
    assert lbnet.rec.driver.endpoint_next_hops()  # the test bed routes by destination
    ep = ep_id(lbnet, "web", 1, vip)
    assert asks_fib(lbnet, vip, 41001)  # nothing cached yet
    slot = fill(lbnet, vip, ep)  # real new flows: the FIB answers, the cache fills
    assert slot.nh.ifindex == lbnet.lb.ifindex(lbnet.interfaces[1])
    assert slot.nh.gen == lbnet.rec.driver.route_generation()
    assert not asks_fib(lbnet, vip, 41002)  # the next new flow: from the cache
    assert lbnet.get(vip) == "b1"
    # Off (as when a rule appears): every new flow asks the FIB again.
    lbnet.rec.driver.bump_route_generation(False)
    assert not lbnet.rec.driver.endpoint_next_hops()
    assert asks_fib(lbnet, vip, 41003)


@pytest.mark.parametrize("vip", [VIP4, VIP6])
def test_a_flow_made_from_the_cache_keeps_its_replies_own_next_hop(lbnet: LbNet,
                                                                  vip: str) -> None:  # fmt: skip
    # The REPLY entry is built as a copy of the ORIG one: it must not inherit the endpoint's
    # next hop (towards the backend). It did once: the replies went back to the backend
    # (here a backend forwards them on, and the first reply longer than the SYN refills the
    # entry from the FIB, which hid it; two-appliance tests saw no connection open). A
    # connection with no data keeps every reply as short as the SYN: its REPLY entry shows.
    lbnet.set(service("web", vip=vip, backends=(1,)))
    fill(lbnet, vip, ep_id(lbnet, "web", 1, vip))
    assert not asks_fib(lbnet, vip, 41004)  # new flows now come from the cache
    tables = [lbnet.rec.program.table(name) for name in CT_TABLES]
    before = {bytes(k) for t in tables for k in t}
    lbnet.client.run(["python3", "-c", "import socket, sys; socket.create_connection("
                      "(sys.argv[1], 80), timeout=3).close()", vip], check=True)  # fmt: skip
    gen = lbnet.rec.driver.route_generation()
    replies = [v for t in tables for k, v in t.items() if bytes(k) not in before and v.dir == 1]
    assert replies
    client_if = lbnet.lb.ifindex(lbnet.interfaces[0])
    for v in replies:  # none points at the backend in the current generation
        assert v.nh.ifindex in (0, client_if) or v.nh.gen != gen, (v.nh.ifindex, v.nh.gen, gen)


@pytest.mark.parametrize("vip", [VIP4, VIP6])
def test_a_new_flow_follows_a_backend_moved_to_another_interface_or_mac(
    lbnet: LbNet, vip: str
) -> None:
    v4, b1 = version(vip) == 4, lbnet.backends[0]
    second = second_link(lbnet)
    lbnet.set(service("web", vip=vip, backends=(1,)))
    ep = ep_id(lbnet, "web", 1, vip)
    assert fill(lbnet, vip, ep).nh.ifindex == lbnet.lb.ifindex(lbnet.interfaces[1])
    # 1. The backend's address is now reached over the second link.
    before = rx_packets(b1, second.ifname(b1))
    gen = lbnet.rec.driver.route_generation()
    dst, via = ("198.18.11.1/32", "198.18.21.1") if v4 else ("2001:db8:11::1/128",
                                                               "2001:db8:21::1")  # fmt: skip
    lbnet.lb.run(["ip", "-4" if v4 else "-6", "route", "replace", dst, "via", via], check=True)
    bumped_since(lbnet, gen)
    assert lbnet.get(vip) == "b1"  # the next new flow...
    assert rx_packets(b1, second.ifname(b1)) > before  # ...took the new way
    assert fill(lbnet, vip, ep).nh.ifindex == lbnet.lb.ifindex(second.ifname(lbnet.lb))
    assert not asks_fib(lbnet, vip, 41010)
    # 2. The backend gets a new MAC on that link; the balancer learns it.
    new_mac = "02:5e:00:00:00:21"
    b1.run(["ip", "link", "set", second.ifname(b1), "address", new_mac], check=True)
    gen = lbnet.rec.driver.route_generation()
    lbnet.lb.run(["ip", "neigh", "replace", via, "lladdr", new_mac, "dev",
                  second.ifname(lbnet.lb)], check=True)  # fmt: skip
    bumped_since(lbnet, gen)
    assert lbnet.get(vip) == "b1"  # the next new flow goes to the new MAC
    slot = cached(lbnet, ep)
    assert bytes(slot.nh.dmac) == bytes.fromhex(new_mac.replace(":", ""))


@pytest.mark.parametrize("vip", [VIP4, VIP6])
def test_a_policy_rule_sends_new_flows_to_the_fib_which_follows_it(lbnet: LbNet, vip: str) -> None:
    v4, b1 = version(vip) == 4, lbnet.backends[0]
    fam = "-4" if v4 else "-6"
    second = second_link(lbnet)
    lbnet.set(service("web", vip=vip, backends=(1,)))
    fill(lbnet, vip, ep_id(lbnet, "web", 1, vip))
    assert not asks_fib(lbnet, vip, 41020)
    # From the client's address (DNAT keeps it as the source), backend 1 is reached over
    # the second link: table 100, chosen by the source.
    dst, via = ("198.18.11.1/32", "198.18.21.1") if v4 else ("2001:db8:11::1/128",
                                                               "2001:db8:21::1")  # fmt: skip
    gen = lbnet.rec.driver.route_generation()
    lbnet.lb.run(["ip", fam, "route", "add", dst, "via", via, "table", "100"], check=True)
    lbnet.lb.run(["ip", fam, "rule", "add", "from", CLIENT[version(vip)], "table", "100"],
                 check=True)  # fmt: skip
    bumped_since(lbnet, gen)
    wait_for(lambda: not lbnet.rec.driver.endpoint_next_hops(), timeout=5)
    assert "rule" in (lbnet.rec._routing.why_not or "")
    assert asks_fib(lbnet, vip, 41021)
    before = rx_packets(b1, second.ifname(b1))
    assert lbnet.get(vip) == "b1"
    assert rx_packets(b1, second.ifname(b1)) > before  # the rule's way
    # The rule goes: routing is by destination alone again, the cache is back.
    lbnet.lb.run(["ip", fam, "rule", "del", "from", CLIENT[version(vip)], "table", "100"],
                 check=True)  # fmt: skip
    wait_for(lambda: lbnet.rec.driver.endpoint_next_hops(), timeout=5)
    assert lbnet.get(vip) == "b1" and not asks_fib(lbnet, vip, 41022)


def test_source_routes_and_multipath_turn_the_cache_off_until_they_go(lbnet: LbNet) -> None:
    driver, watch = lbnet.rec.driver, lbnet.rec._routing
    assert driver.endpoint_next_hops()
    changes = [
        (["-6", "route", "add", "2001:db8:60::/64", "from", "2001:db8::/64", "via",
          "2001:db8:11::1"], ["-6", "route", "del", "2001:db8:60::/64", "from", "2001:db8::/64"],
         "source-specific"),
        (["route", "add", "198.18.60.0/24", "nexthop", "via", "198.18.11.1", "nexthop", "via",
          "198.18.12.1"], ["route", "del", "198.18.60.0/24"], "multipath"),
        (["-6", "route", "add", "2001:db8:61::/64", "nexthop", "via", "2001:db8:11::1",
          "nexthop", "via", "2001:db8:12::1"], ["-6", "route", "del", "2001:db8:61::/64"],
         "multipath"),
    ]  # fmt: skip
    for add, delete, why in changes:
        lbnet.lb.run(["ip", *add], check=True)
        wait_for(lambda: not driver.endpoint_next_hops(), timeout=5)
        assert why in (watch.why_not or ""), watch.why_not
        lbnet.lb.run(["ip", *delete], check=True)
        wait_for(lambda: driver.endpoint_next_hops(), timeout=5)


@pytest.mark.parametrize("vip", [VIP4, VIP6])
def test_a_too_big_first_packet_still_gets_fragmentation_needed(lbnet: LbNet, vip: str) -> None:
    lbnet.set(service("u", vip=vip, port=53, proto="udp", ep_port=UDP_PORT, backends=(1,)))
    narrow_route(lbnet, "backends")
    ep = ep_id(lbnet, "u", 1, vip)

    def a_small_new_flow_fills() -> bool:
        small = UdpFlow(lbnet.client, vip)
        try:
            ok = small.send(100) == "ok"
        finally:
            small.close()
        slot = cached(lbnet, ep)
        return ok and slot.nh.ifindex != 0 and slot.nh.gen == lbnet.rec.driver.route_generation()

    wait_for(a_small_new_flow_fills, timeout=10)  # the cache holds a small packet's answer
    big = UdpFlow(lbnet.client, vip)  # a new flow whose first packet is too big
    try:
        wait_for(lambda: big.send(1450) != "ok" and int(big.ask("mtu")) == NARROW, timeout=5)
        assert big.send(1300) == "ok"
    finally:
        big.close()


class _Msg(dict):
    """A stand-in for a pyroute2 rtnetlink message (unit test: no kernel involved)."""

    def __init__(self, event: str, attrs: dict[str, Any] | None = None, **fields: Any) -> None:
        super().__init__(event=event, attrs=list((attrs or {}).items()), **fields)
        self.attr_map = attrs or {}

    def get_attr(self, name: str) -> Any:
        return self.attr_map.get(name)


def test_what_breaks_routing_by_destination_alone() -> None:
    from appliance.netlink import not_by_destination

    default = {"FRA_TABLE": 254, "FRA_PRIORITY": 32766, "FRA_SUPPRESS_PREFIXLEN": 0xFFFFFFFF,
               "FRA_PROTOCOL": 2}  # fmt: skip
    assert not_by_destination(_Msg("RTM_NEWRULE", default, family=2, action=1, table=254)) is None
    local = {"FRA_TABLE": 255, "FRA_SUPPRESS_PREFIXLEN": 0xFFFFFFFF, "FRA_PROTOCOL": 2}
    assert not_by_destination(_Msg("RTM_NEWRULE", local, family=10, action=1)) is None
    assert not_by_destination(_Msg("RTM_NEWRULE", {**default, "FRA_SRC": "198.18.0.0"},
                                   family=2, action=1, src_len=24))  # fmt: skip
    assert not_by_destination(_Msg("RTM_NEWRULE", {**default, "FRA_TABLE": 100}, action=1))
    assert not_by_destination(_Msg("RTM_NEWRULE", {**default, "FRA_FWMARK": 1}, action=1))
    assert not_by_destination(_Msg("RTM_NEWRULE", {**default, "FRA_SUPPRESS_PREFIXLEN": 0},
                                   action=1))  # fmt: skip
    assert not_by_destination(_Msg("RTM_NEWRULE", {**default, "FRA_IIFNAME": "eth0"}, action=1))
    route = {"RTA_TABLE": 254, "RTA_DST": "198.18.60.0"}
    assert not_by_destination(_Msg("RTM_NEWROUTE", route, family=2, dst_len=24)) is None
    assert not_by_destination(_Msg("RTM_NEWROUTE", {**route, "RTA_MULTIPATH": [{}, {}]},
                                   family=2, dst_len=24))  # fmt: skip
    assert not_by_destination(_Msg("RTM_NEWROUTE", {**route, "RTA_NH_ID": 7}, family=2))
    assert not_by_destination(_Msg("RTM_NEWROUTE", route, family=10, src_len=64))
    # A table no rule looks up (another rule would itself be reported).
    elsewhere = {**route, "RTA_TABLE": 100, "RTA_MULTIPATH": [{}, {}]}
    assert not_by_destination(_Msg("RTM_NEWROUTE", elsewhere)) is None
    assert not_by_destination(_Msg("RTM_DELRULE", {**default, "FRA_TABLE": 100})) is None


def test_the_watch_dumps_again_only_what_may_have_healed(monkeypatch: Any) -> None:
    """Unit test: the kernel's dump is a stand-in here (it answers "nothing breaks it") and
    the messages are made up; the real ones are the tests above."""
    from appliance import netlink

    asked: list[tuple[str, ...]] = []

    def survey(netns: Any, parts: tuple[str, ...] = netlink.SURVEY_PARTS) -> dict[str, Any]:
        asked.append(parts)
        return dict.fromkeys(parts)

    monkeypatch.setattr(netlink, "routing_survey", survey)
    w = netlink.RoutingWatch(lambda: None)
    assert not w.by_destination  # not surveyed yet
    w._survey()
    assert w.by_destination and asked == [netlink.SURVEY_PARTS]
    rule = {"FRA_TABLE": 100, "FRA_SRC": "198.18.0.1", "FRA_PRIORITY": 100}
    route = {"RTA_TABLE": 254, "RTA_DST": "198.18.9.0"}
    w._note([_Msg("RTM_NEWRULE", rule, action=1, src_len=32)])
    assert not w.by_destination and "rule" in (w.why_not or "") and len(asked) == 1
    # Route churn does not dump the routes (nor the rules) while a rule is the reason.
    w._note([_Msg("RTM_NEWROUTE", route, family=2, dst_len=24),
             _Msg("RTM_DELROUTE", route, family=2, dst_len=24)])  # fmt: skip
    assert not w.by_destination and len(asked) == 1
    w._note([_Msg("RTM_DELRULE", rule, action=1, src_len=32)])
    assert w.by_destination and asked[-1] == ("rules",)
    w._note([_Msg("RTM_NEWROUTE", {**route, "RTA_MULTIPATH": [{}, {}]}, family=2, dst_len=24)])
    assert not w.by_destination and "multipath" in (w.why_not or "")
    w._note([_Msg("RTM_NEWROUTE", {**route, "RTA_DST": "198.18.8.0"}, family=2, dst_len=24)])
    assert not w.by_destination and asked[-1] == ("rules",)  # an added route heals nothing
    w._note([_Msg("RTM_DELROUTE", route, family=2, dst_len=24)])
    assert w.by_destination and asked[-1] == ("routes",)
