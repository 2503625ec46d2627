"""Path MTU discovery through the balancer when the balancer's own next link is the narrow one.

The LB's route towards the backends (or towards the client) gets a locked MTU of 1400 while
every link carries 1500: the FIB then says "fragmentation needed" for full-size packets, and
only an ICMP error that the *sender* can match to its socket (quoting client->VIP, or
endpoint->client as the endpoint sent it) lets the transfer go on. Without it, TCP stalls and
the UDP socket never learns the smaller MTU.
"""

from __future__ import annotations

from typing import Any

import pytest
from dpkit import SNAT4, SNAT6, UDP_PORT, VIP4, VIP6, LbNet, service, wait_for
from udpflow import UdpFlow

NARROW = 1400



def narrow_route(lbnet: LbNet, towards: str) -> None:
    """Lock a 1400-byte MTU on the LB's connected routes towards the backends or the client."""
    if towards == "client":
        links = [(lbnet.interfaces[0], "198.18.0.0/24", "2001:db8::/64")]
    else:
        links = [(ifname, f"198.18.{10 + n}.0/24", f"2001:db8:{10 + n}::/64")
                 for n, ifname in enumerate(lbnet.interfaces[1:], start=1)]  # fmt: skip
    for ifname, net4, net6 in links:
        lbnet.lb.run(["ip", "route", "replace", net4, "dev", ifname, "mtu", "lock", str(NARROW)],
                     check=True)  # fmt: skip
        lbnet.lb.run(["ip", "-6", "route", "replace", net6, "dev", ifname, "metric", "256",
                      "mtu", "lock", str(NARROW)], check=True)  # fmt: skip


def services(mode: str, proto: str, port: int, ep_port: int) -> list[dict]:
    """The same service on VIP4 and VIP6."""
    out = []
    for vip, snat in ((VIP4, SNAT4), (VIP6, SNAT6)):
        extra = {"mode": mode, "snat-address": snat} if mode == "full-nat" else {"mode": mode}
        name = f"{proto}{6 if vip == VIP6 else 4}"
        out.append(service(name, vip=vip, port=port, proto=proto, ep_port=ep_port, **extra))
    return out


@pytest.mark.parametrize("mode", ["default", "full-nat"])
def test_too_big_towards_the_endpoint_reaches_the_client_as_its_own_flow(
    lbnet: LbNet, mode: str
) -> None:
    narrow_route(lbnet, "backends")
    lbnet.set(*services(mode, "udp", 53, UDP_PORT), *services(mode, "tcp", 80, 7007))
    for b in lbnet.backends:
        b.start_tcp_echo(7007)
    for vip in (VIP4, VIP6):
        flow = UdpFlow(lbnet.client, vip, 53, timeout=0.2)
        try:
            # 1450 bytes of payload are 1478 / 1498 on the wire: too big for the narrow route,
            # so the socket's path MTU drops once the ICMP error reaches it.
            mtu = wait_for(lambda f=flow: f.send(1450) and int(f.ask("mtu")) < 1500 and
                           int(f.ask("mtu")), timeout=5, what=f"path MTU learnt via {vip}")
        finally:
            flow.close()
        assert mtu == NARROW, vip
        # TCP: full-size segments (TSO from the client, so GSO skbs) must shrink and arrive.
        data = bytes(range(256)) * 800  # 200 KB
        assert lbnet.client.tcp_request(vip, 80, data, timeout=10) == data, vip


@pytest.mark.parametrize("mode", ["default", "full-nat"])
def test_too_big_towards_the_client_reaches_the_endpoint_as_its_own_flow(
    lbnet: LbNet, mode: str
) -> None:
    narrow_route(lbnet, "client")
    body = "0123456789abcdef" * 7000  # 112 KB (one argv string): full-size segments
    for b in lbnet.backends:
        b.start_http_server(8081, body=body)
    lbnet.set(*services(mode, "tcp", 80, 8081))
    for vip in (VIP4, VIP6):
        assert lbnet.get(vip, timeout=10) == body, vip


def test_packets_that_fit_are_untouched_by_the_narrow_route(lbnet: LbNet) -> None:
    narrow_route(lbnet, "backends")
    lbnet.set(*services("default", "udp", 53, UDP_PORT))
    for vip in (VIP4, VIP6):
        assert lbnet.client.udp_request(vip, 53, b"y" * 1300) == b"y" * 1300


def test_an_older_smaller_pinned_tail_call_table_is_replaced(netkit: Any) -> None:
    # An upgrade from a build with one tail call: its pinned prog array has one slot, and
    # bcc would silently reuse it (the too-big target could then never be installed).
    pytest.importorskip("bcc", reason="needs bcc (python3-bpfcc)")
    from bcc import BPF

    from appliance.datapath.program import LAYOUT_SUFFIX, TAIL_CALLS, Program

    pins = netkit.pin_dir("upgrade")
    table = f'BPF_TABLE_PINNED("prog", int, int, jmp_map, 1, "{pins}/jmp{LAYOUT_SUFFIX}");'
    old = BPF(text=table.encode())
    old.cleanup()
    prog = Program(pins, ct_capacity=4096)
    try:
        assert prog._pinned_info("jmp").max_entries == 1
        prog.load()
        assert prog.map_capacity("jmp_map") == len(TAIL_CALLS)
    finally:
        prog.close()
        prog.remove_pins()
