"""L3-DSR (bpf/lib/l3dsr.h): the client's packet, untouched, inside an IPv4-in-IPv4 or
IPv6-in-IPv6 header from the balancer to the endpoint, which holds the VIP on lo and answers
the client directly.

This kernel has no ipip/ip6tnl devices, so each backend decapsulates with a small TC
program of the test's own (below) that also records the last outer header it removed: the
test checks that header, and that curl through the VIP gets the endpoint's answer.
"""

from __future__ import annotations

import ipaddress
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from dpkit import SNAT4, SNAT6, VIP4, VIP6, LbNet, service, wait_for
from test_datapath_pmtu import narrow_route
from udpflow import UdpFlow

pytestmark = pytest.mark.datapath

DECAP = r"""
#include <uapi/linux/bpf.h>
#include <uapi/linux/pkt_cls.h>
#include <uapi/linux/if_ether.h>
#include <uapi/linux/ip.h>
#include <uapi/linux/ipv6.h>

struct outer {
    u64 count;
    u32 proto;
    u32 pad;
    u8 src[16];
    u8 dst[16];
};
BPF_ARRAY(seen, struct outer, 2);      // [0]: IPv4 in IPv4, [1]: IPv6 in IPv6

int decap(struct __sk_buff *skb)
{
    void *data = (void *)(long)skb->data;
    void *end = (void *)(long)skb->data_end;
    struct ethhdr *eth = data;
    if ((void *)(eth + 1) > end)
        return TC_ACT_OK;
    int i;
    struct outer *o;
    if (eth->h_proto == htons(ETH_P_IP)) {
        struct iphdr *ip = (void *)(eth + 1);
        if ((void *)(ip + 1) > end || ip->protocol != 4)
            return TC_ACT_OK;
        i = 0;
        o = seen.lookup(&i);
        if (!o)
            return TC_ACT_SHOT;
        o->count++;
        o->proto = ip->protocol;
        __builtin_memcpy(o->src, &ip->saddr, 4);
        __builtin_memcpy(o->dst, &ip->daddr, 4);
        return bpf_skb_adjust_room(skb, -20, BPF_ADJ_ROOM_MAC, 0) ? TC_ACT_SHOT : TC_ACT_OK;
    }
    if (eth->h_proto == htons(ETH_P_IPV6)) {
        struct ipv6hdr *ip6 = (void *)(eth + 1);
        if ((void *)(ip6 + 1) > end || ip6->nexthdr != 41)
            return TC_ACT_OK;
        i = 1;
        o = seen.lookup(&i);
        if (!o)
            return TC_ACT_SHOT;
        o->count++;
        o->proto = ip6->nexthdr;
        __builtin_memcpy(o->src, &ip6->saddr, 16);
        __builtin_memcpy(o->dst, &ip6->daddr, 16);
        return bpf_skb_adjust_room(skb, -40, BPF_ADJ_ROOM_MAC, 0) ? TC_ACT_SHOT : TC_ACT_OK;
    }
    return TC_ACT_OK;
}
"""


def attach_decap(backends: list[Any]) -> Any:
    """The decapsulating program on each backend's link (TC ingress), and the VIPs on each
    backend's lo. Returns the loaded BPF object (its `seen` map; `cleanup()` when done)."""
    from bcc import BPF
    from pyroute2 import NetNS

    bpf = BPF(text=DECAP.encode())
    fn = bpf.load_func(b"decap", BPF.SCHED_CLS)
    for b in backends:
        link = next(i for i in b.run(["ls", "/sys/class/net"]).stdout.split() if i != "lo")
        with NetNS(b.ns, flags=0) as ipr:
            idx = ipr.link_lookup(ifname=link)[0]
            ipr.tc("add", "clsact", idx)
            ipr.tc("add-filter", "bpf", idx, ":1", fd=fn.fd, name=fn.name, parent="ffff:fff2",
                   classid=1, direct_action=True)  # fmt: skip
        for vip in (f"{VIP4}/32", f"{VIP6}/128"):
            b.run(["ip", "addr", "add", vip, "dev", "lo"], check=True)
    return bpf


@pytest.fixture
def decap(lbnet: LbNet) -> Iterator[Any]:
    bpf = attach_decap(lbnet.backends)
    try:
        yield bpf[b"seen"]
    finally:
        bpf.cleanup()  # the namespaces (and their filters) go with the topology


def outer(seen: Any, i: int) -> tuple[int, str, str, int]:
    o = seen[seen.Key(i)]
    n = 4 if i == 0 else 16
    src, dst = bytes(o.src)[:n], bytes(o.dst)[:n]
    return (int(o.count), str(ipaddress.ip_address(src)), str(ipaddress.ip_address(dst)),
            int(o.proto))  # fmt: skip


def l3dsr(name: str, vip: str, port: int = 80, proto: str = "tcp",
          backends: tuple[int, ...] = (1, 2)) -> dict[str, Any]:  # fmt: skip
    return service(name, vip=vip, port=port, proto=proto, ep_port=port, backends=backends,
                   mode="dsr", **{"dsr-tunnel": "ip-in-ip"})  # fmt: skip


def test_curl_through_ipip_and_ip6ip6_answered_straight_by_the_endpoint(
    lbnet: LbNet, decap: Any
) -> None:
    for b in lbnet.backends[:2]:
        b.start_http_server(80)
    lbnet.set(l3dsr("web4", VIP4), l3dsr("web6", VIP6))
    assert [lbnet.curl(VIP4, 80) for _ in range(4)] == ["b1", "b2", "b1", "b2"]
    assert [lbnet.curl(VIP6, 80) for _ in range(2)] == ["b1", "b2"]
    # What backend 2 last took off: the balancer's own address on its link -> its own.
    count, src, dst, proto = outer(decap, 0)
    assert count > 0 and (src, dst, proto) == ("198.18.12.254", "198.18.12.1", 4)
    count, src, dst, proto = outer(decap, 1)
    assert count > 0 and (src, dst, proto) == ("2001:db8:12::fe", "2001:db8:12::1", 41)
    rows = lbnet.rec.conntrack("web4")
    assert len(rows) == 4 and {r["endpoint"] for r in rows} == {"198.18.11.1:80", "198.18.12.1:80"}


@pytest.mark.parametrize("vip,expected", [(VIP4, 1400 - 20), (VIP6, 1400 - 40)])
def test_too_big_for_the_tunnel_tells_the_client_the_mtu_less_the_overhead(
    lbnet: LbNet, decap: Any, vip: str, expected: int
) -> None:
    narrow_route(lbnet, "backends")
    lbnet.backends[0].start_udp_echo(53, addr=vip)  # answers from the VIP (its lo address)
    lbnet.set(l3dsr("dns", vip, 53, "udp", backends=(1,)))
    flow = UdpFlow(lbnet.client, vip, 53, timeout=0.2)
    try:
        # 1450 bytes of payload: too big for the tunnel on the narrow route.
        mtu = wait_for(lambda: flow.send(1450) and int(flow.ask("mtu")) < 1500 and
                       int(flow.ask("mtu")), timeout=5, what=f"path MTU learnt via {vip}")
    finally:
        flow.close()
    assert mtu == expected
    # Datagrams that fit the tunnel go through it and are echoed.
    assert lbnet.client.udp_request(vip, 53, b"z" * (expected - 100)) == b"z" * (expected - 100)


def test_a_fragmented_datagram_follows_its_first_fragment_through_the_tunnel(
    lbnet: LbNet, decap: Any
) -> None:
    # The tunnel's links carry 1600 bytes, so each 1500-byte fragment fits with its outer
    # header; the endpoint reassembles and answers the client straight (VIP as source).
    for b, ifname in zip(lbnet.backends, lbnet.interfaces[1:], strict=True):
        lbnet.lb.run(["ip", "link", "set", ifname, "mtu", "1600"], check=True)
        link = next(i for i in b.run(["ls", "/sys/class/net"]).stdout.split() if i != "lo")
        b.run(["ip", "link", "set", link, "mtu", "1600"], check=True)
    lbnet.backends[0].start_udp_echo(53, addr=VIP4)
    lbnet.set(l3dsr("dns", VIP4, 53, "udp", backends=(1,)))
    big = bytes(range(256)) * 125  # 32,000 bytes: 22 fragments
    assert lbnet.client.udp_request(VIP4, 53, big, timeout=3) == big
    count, _, _, _ = outer(decap, 0)
    assert count >= 22


# A non-DF IPv4 UDP packet from a raw socket (the kernel fills in the IP checksum).
# argv: src dst sport payload-length.
SEND_NON_DF = r"""
import socket, struct, sys
src, dst, sport, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
payload = (bytes(range(256)) * 40)[:n]
udp = struct.pack("!HHHH", sport, 53, 8 + len(payload), 0) + payload
ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0x1234, 0, 64, 17, 0,
                 socket.inet_aton(src), socket.inet_aton(dst))
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
s.sendto(ip + udp, (dst, 0))
"""

# The endpoint's stack reassembles the outer fragments; a raw socket for protocol 4 gets the
# whole IPIP packet. Prints, for the first one over 1000 bytes: outer length, outer
# source, inner source, inner UDP part (hex).
RECV_IPIP = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, 4)
s.settimeout(8)
print("ready", flush=True)
while True:
    pkt = s.recv(65535)
    if len(pkt) > 1000:
        break
print(len(pkt), socket.inet_ntoa(pkt[12:16]), socket.inet_ntoa(pkt[32:36]), pkt[40:].hex())
"""


@pytest.mark.parametrize("size", [1472, 5000])
def test_a_non_df_packet_too_big_for_the_tunnel_goes_in_outer_fragments(
    lbnet: LbNet, size: int
) -> None:
    # 1500 bytes from the client + 20 of outer header > the endpoint link's 1500: as an IPIP
    # tunnel device would, the balancer fragments the outer packet (1500 + 40 bytes); the
    # endpoint's stack reassembles it and finds the client's packet intact inside. 5,028
    # bytes (the client's link carries 9,000) take four outer fragments. (A small datagram
    # of the same flow first: the endpoint's neighbour is then resolved, as the health
    # probes make sure of in service.)
    if size > 1472:
        clink = next(i for i in lbnet.client.run(["ls", "/sys/class/net"]).stdout.split()
                     if i != "lo")  # fmt: skip
        lbnet.client.run(["ip", "link", "set", clink, "mtu", "9000"], check=True)
        lbnet.lb.run(["ip", "link", "set", lbnet.interfaces[0], "mtu", "9000"], check=True)
    lbnet.set(l3dsr("dns", VIP4, 53, "udp", backends=(1,)))
    b1 = lbnet.backends[0]
    rx = b1.popen(["python3", "-c", RECV_IPIP], stdout=subprocess.PIPE, text=True)
    try:
        assert rx.stdout is not None and rx.stdout.readline().strip() == "ready"
        for n in ("100", str(size)):
            sent = lbnet.client.run(["python3", "-c", SEND_NON_DF, "198.18.0.1", VIP4, "4242", n])
            assert sent.returncode == 0, sent.stderr
        out, _ = rx.communicate(timeout=12)
    finally:
        if rx.poll() is None:
            rx.kill()
    length, outer_src, inner_src, udp = out.split()
    payload = (bytes(range(256)) * 40)[:size]
    assert (int(length), outer_src, inner_src) == (size + 48, "198.18.11.254", "198.18.0.1")
    assert bytes.fromhex(udp)[8:] == payload
    rows = lbnet.rec.conntrack("dns")
    assert len(rows) == 1 and rows[0]["endpoint"] == "198.18.11.1:53", rows


# A UDP request in a VLAN-tagged frame to the balancer's MAC, the answer read on an ordinary
# socket (it comes back untagged, through the balancer's stack or the balancer). argv: iface
# lb-mac src vip sport tags [port]; tags "100": one 802.1Q tag, "200.100": QinQ (802.1ad 200
# outside, 802.1Q 100 inside). Prints the answer or "timeout".
TAGGED_REQUEST = r"""
import socket, sys
from scapy.all import Ether, Dot1AD, Dot1Q, IP, IPv6, UDP, Raw, sendp, conf
conf.verb = 0
iface, mac, src, vip, sport = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
vlans = [int(v) for v in sys.argv[6].split(".")]
port = int(sys.argv[7]) if len(sys.argv) > 7 else 53
v6 = ":" in vip
s = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_DGRAM)
s.bind((src, sport))
s.settimeout(3)
frame = Ether(dst=mac)
for i, v in enumerate(vlans):
    frame = frame / (Dot1AD(vlan=v) if i < len(vlans) - 1 else Dot1Q(vlan=v))
ip = IPv6(src=src, dst=vip) if v6 else IP(src=src, dst=vip)
sendp(frame / ip / UDP(sport=sport, dport=port) / Raw(b"tagged"), iface=iface)
try:
    print(s.recv(100).decode())
except TimeoutError:
    print("timeout")
"""
TAGS = ["100", "200.100"]  # one 802.1Q tag; QinQ


def tagged_request(lbnet: LbNet, vip: str, src: str, sport: int, tags: str,
                   port: int = 53) -> str:  # fmt: skip
    """TAGGED_REQUEST from the client: the answer, or "timeout"."""
    clink = next(i for i in lbnet.client.run(["ls", "/sys/class/net"]).stdout.split()
                 if i != "lo")  # fmt: skip
    mac = lbnet.lb.run(["cat", f"/sys/class/net/{lbnet.interfaces[0]}/address"]).stdout.strip()
    res = lbnet.client.run([sys.executable, "-c", TAGGED_REQUEST, clink, mac, src, vip,
                            str(sport), tags, str(port)], timeout=20)  # fmt: skip
    assert res.returncode == 0, res.stderr
    return res.stdout.strip()


@pytest.mark.parametrize("tags", TAGS)
def test_a_vlan_tagged_client_is_served_through_the_tunnel(lbnet: LbNet, decap: Any,
                                                           tags: str) -> None:  # fmt: skip
    # The client's frames carry VLAN 100, or QinQ (the kernel takes the outer tag into the
    # skb's metadata before TC, the inner one stays in the frame): the tags are the client
    # link's, so they are popped before the packet goes into the tunnel (the metadata tag
    # used to stay on the skb and tag the frame on the endpoint's untagged link, where the
    # endpoint dropped it); the endpoint decapsulates and answers.
    b1 = lbnet.backends[0]
    for vip in (VIP4, VIP6):
        b1.start_udp_echo(53, addr=vip)
    lbnet.set(l3dsr("dns4", VIP4, 53, "udp", backends=(1,)),
              l3dsr("dns6", VIP6, 53, "udp", backends=(1,)))  # fmt: skip
    for vip, src, sport in ((VIP4, "198.18.0.1", 4343), (VIP6, "2001:db8::1", 4344)):
        assert tagged_request(lbnet, vip, src, sport, tags) == "tagged", vip
    assert outer(decap, 0)[0] >= 1 and outer(decap, 1)[0] >= 1


@pytest.mark.parametrize("tags", TAGS)
@pytest.mark.parametrize("mode", ["default", "full-nat"])
def test_a_vlan_tagged_client_is_served_by_dnat_and_full_nat(lbnet: LbNet, mode: str,
                                                             tags: str) -> None:  # fmt: skip
    # The same tagged client without a tunnel: the tag in the skb's metadata went out with
    # the translated packet onto the endpoint's untagged link (the endpoint dropped it, no
    # answer), and QinQ's inner tag in the frame too; both are popped before the
    # translation now (bpf/lib/vlan.h). IPv4 and IPv6.
    lbnet.backends[0].start_udp_echo(53)
    extra4 = {"mode": mode, "snat-address": SNAT4} if mode == "full-nat" else {}
    extra6 = {"mode": mode, "snat-address": SNAT6} if mode == "full-nat" else {}
    lbnet.set(service("dns4", vip=VIP4, port=53, proto="udp", ep_port=53, backends=(1,),
                      **extra4),
              service("dns6", vip=VIP6, port=53, proto="udp", ep_port=53, backends=(1,),
                      **extra6))  # fmt: skip
    for vip, src, sport in ((VIP4, "198.18.0.1", 4545), (VIP6, "2001:db8::1", 4546)):
        assert tagged_request(lbnet, vip, src, sport, tags) == "tagged", vip
