"""VLAN-tagged clients on the NAT64/NAT46 and GTP-U paths, one 802.1Q tag or QinQ (802.1ad
outside, 802.1Q inside), frames built with scapy (this kernel has no VLAN devices). The
tags belong to the client's link: each path pops them (bpf/lib/vlan.h) before its packet
leaves for the endpoint's untagged link, where a tagged frame would be dropped. (DNAT,
full-NAT and L3-DSR: tests/test_datapath_l3dsr.py.)"""

from __future__ import annotations

import json
import sys

import pytest
from dpkit import UDP_PORT, VIP4, VIP6, LbNet, service, wait_for
from test_datapath_gtpu import received, sinks
from test_datapath_l3dsr import TAGS, tagged_request
from test_datapath_nat64 import xlat

pytestmark = pytest.mark.datapath


@pytest.mark.parametrize("tags", TAGS)
def test_a_vlan_tagged_client_is_served_through_nat64_and_nat46(lbnet: LbNet,
                                                                tags: str) -> None:  # fmt: skip
    lbnet.set(xlat("dns64", VIP6, "full-nat", 53, "udp", UDP_PORT),
              xlat("dns46", VIP4, "one-arm", 53, "udp", UDP_PORT))  # fmt: skip
    for vip, src, sport in ((VIP6, "2001:db8::1", 4646), (VIP4, "198.18.0.1", 4647)):
        assert tagged_request(lbnet, vip, src, sport, tags) == "tagged", vip
    for name in ("dns64", "dns46"):
        rows = lbnet.rec.conntrack(name)
        assert len(rows) == 1 and rows[0]["packets"] == [1, 1], rows


# One G-PDU in a tagged frame per TEID (argv: iface lb-mac src vip tags teids-json).
TAGGED_GPDU = r"""
import json, sys
from scapy.all import Ether, Dot1AD, Dot1Q, IP, IPv6, UDP, Raw, sendp, conf
from scapy.contrib.gtp import GTP_U_Header
conf.verb = 0
iface, mac, src, vip, tags, teids = sys.argv[1:7]
vlans = [int(v) for v in tags.split(".")]
ip = IPv6(src=src, dst=vip) if ":" in vip else IP(src=src, dst=vip)
for teid in json.loads(teids):
    frame = Ether(dst=mac)
    for i, v in enumerate(vlans):
        frame = frame / (Dot1AD(vlan=v) if i < len(vlans) - 1 else Dot1Q(vlan=v))
    inner = IP(src="10.45.0.1", dst="10.100.0.1") / UDP(sport=1, dport=2) / Raw(b"payload")
    sendp(frame / ip / UDP(sport=2152, dport=2152) / GTP_U_Header(teid=teid) / inner,
          iface=iface)
"""


@pytest.mark.parametrize("tags", TAGS)
def test_tagged_gtpu_reaches_its_upf_untagged(lbnet: LbNet, tags: str) -> None:
    logs = sinks(lbnet.backends)
    lbnet.set(service("n3", port=2152, proto="udp", ep_port=2152, algorithm="gtp-teid"),
              service("n3v6", vip=VIP6, port=2152, proto="udp", ep_port=2152,
                      algorithm="gtp-teid"))  # fmt: skip
    clink = next(i for i in lbnet.client.run(["ls", "/sys/class/net"]).stdout.split()
                 if i != "lo")  # fmt: skip
    mac = lbnet.lb.run(["cat", f"/sys/class/net/{lbnet.interfaces[0]}/address"]).stdout.strip()
    teids = [0x2000 + 7919 * i for i in range(6)]
    for vip, src in ((VIP4, "198.18.0.1"), (VIP6, "2001:db8::1")):
        res = lbnet.client.run([sys.executable, "-c", TAGGED_GPDU, clink, mac, src, vip, tags,
                                json.dumps(teids)], timeout=30)  # fmt: skip
        assert res.returncode == 0, res.stderr
    wait_for(lambda: sum(len(v) for v in received(logs).values()) == 2 * len(teids),
             timeout=5)  # fmt: skip
    got = sorted(r["teid"] for rows in received(logs).values() for r in rows)
    assert got == sorted(teids * 2)
