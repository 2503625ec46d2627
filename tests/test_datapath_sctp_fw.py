"""The firewall filters SCTP (bpf/lib/firewall.h through lb.c sluice_fw and back into
sluice_sctp): an association's first packet is matched by protocol and ports, for a VIP
(then balanced) and for a routed destination (then a "pass" pair), IPv4 and IPv6, with
scapy peers over raw sockets (this kernel has no SCTP)."""

from __future__ import annotations

import pytest
from dpkit import VIP4, VIP6, LbNet, backend_addr, service
from sctpkit import associate, serve_all
from test_datapath_firewall import hits, set_fw

pytestmark = pytest.mark.datapath

CLIENT4, CLIENT6 = "198.18.0.1", "2001:db8::1"


def assoc(vip: str, port: int, sport: int) -> dict[str, object]:
    return {"vip": vip, "port": port, "sport": sport, "local": CLIENT6 if ":" in vip else CLIENT4}


def refused(lbnet: LbNet, vip: str, port: int, sport: int) -> bool:
    try:
        associate(lbnet.client, [assoc(vip, port, sport)], timeout=1)
    except RuntimeError:
        return True
    return False


def test_firewall_filters_sctp(lbnet: LbNet) -> None:
    servers = serve_all(lbnet.backends)
    lbnet.set(service("s4", port=3868, proto="sctp", ep_port=3868),
              service("s6", vip=VIP6, port=3868, proto="sctp", ep_port=3868),
              service("d4", port=3869, proto="sctp", ep_port=3869),
              service("d6", vip=VIP6, port=3869, proto="sctp", ep_port=3869))  # fmt: skip
    set_fw(lbnet, [
        {"name": "sctp-vip", "preference": 10, "protocol": "sctp", "destination-port": 3868,
         "action": "allow"},
        {"name": "sctp-drop", "preference": 20, "protocol": "sctp", "destination-port": 3869,
         "action": "drop"},
        {"name": "sctp-b2", "preference": 30, "protocol": "sctp",
         "destination-prefix": "198.18.12.0/24", "action": "allow"},
        {"name": "sctp-b2-6", "preference": 31, "protocol": "sctp",
         "destination-prefix": "2001:db8:12::/64", "action": "allow"},
    ], policies={lbnet.interfaces[0]: "drop"})  # fmt: skip
    # SCTP reaches the firewall from its own module: loaded with the firewall's rules even
    # without an SCTP service (else routed SCTP would pass them unseen).
    assert "sctp" in lbnet.rec.program.modules
    # Allowed to the VIPs: balanced as ever, each association counted once by its rule.
    got = associate(lbnet.client, [assoc(v, 3868, 48000 + i + (10 if ":" in v else 0))
                                   for v in (VIP4, VIP6) for i in range(3)])  # fmt: skip
    assert [r["endpoint"] for r in got] == ["b1", "b2", "b3"] * 2 and all(r["crc"] for r in got)
    assert hits(lbnet, "sctp-vip") == 6
    # Dropped by a rule (port 3869), and by the interface's default policy (b1's own
    # address, routed): the backends never see them.
    assert refused(lbnet, VIP4, 3869, 48100) and refused(lbnet, VIP6, 3869, 48101)
    assert hits(lbnet, "sctp-drop") >= 2
    assert refused(lbnet, backend_addr(1), 3870, 48102)  # (3868: "sctp-vip" matches any
    assert refused(lbnet, backend_addr(1, 6), 3870, 48103)  # destination)
    seen = [r for s in servers for r in s.seen()]
    assert not [r for r in seen if r["dport"] == 3869 or r["sport"] in (48102, 48103)]
    # Allowed to b2's own addresses (routed, no service): a pass pair, answers come back.
    direct = associate(lbnet.client, [assoc(backend_addr(2), 3870, 48200),
                                      assoc(backend_addr(2, 6), 3870, 48201)])  # fmt: skip
    assert [r["endpoint"] for r in direct] == ["b2", "b2"] and all(r["crc"] for r in direct)
    assert hits(lbnet, "sctp-b2") >= 1 and hits(lbnet, "sctp-b2-6") >= 1
