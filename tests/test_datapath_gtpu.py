"""GTP-U (N3) balanced by TEID: packets built with scapy (GTP_U_Header / inner IP / UDP),
sent from many outer source ports; the backends log which TEIDs reached them."""

from __future__ import annotations

import json
import sys
import time

import netkit as kit
import pytest
from dpkit import VIP4, VIP6, LbNet, service, wait_for

pytestmark = pytest.mark.datapath

GTPU = 2152

# A UDP sink on 2152 (dual-stack): one JSON line per datagram, with the GTP-U TEID.
SINK = """
import json, socket, struct
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
s.bind(("::", 2152))
print(json.dumps({"ready": True}), flush=True)
while True:
    data, src = s.recvfrom(4096)
    print(json.dumps({"src": src[0], "sport": src[1], "teid": struct.unpack("!I", data[4:8])[0]}),
          flush=True)
"""

# Sends, for each (teid, source port), one G-PDU with an inner IPv4/UDP packet.
SEND = """
import socket, sys, json
from scapy.contrib.gtp import GTP_U_Header
from scapy.layers.inet import IP, UDP
vip, todo = sys.argv[1], json.loads(sys.argv[2])
fam = socket.AF_INET6 if ":" in vip else socket.AF_INET
for teid, sport in todo:
    gpdu = GTP_U_Header(teid=teid) / IP(src="10.45.0.1", dst="10.100.0.1") / UDP(sport=1, dport=2)
    s = socket.socket(fam, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("", sport))
    s.sendto(bytes(gpdu) + b"payload", (vip, 2152))
    s.close()
"""


def sinks(hosts: list[kit.Host]) -> list[tuple[kit.Host, object]]:
    out = []
    for h in hosts:
        proc = h.popen([sys.executable, "-c", SINK])
        log = h.logs[proc.pid]
        deadline = time.monotonic() + 10
        while '"ready"' not in log.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        out.append((h, log))
    return out


def received(logs: list[tuple[kit.Host, object]]) -> dict[str, list[dict[str, int]]]:
    got = {}
    for h, log in logs:
        rows = [json.loads(x) for x in log.read_text().splitlines() if x]  # type: ignore[attr-defined]
        got[h.name] = [r for r in rows if "teid" in r]
    return got


def test_gtpu_teid_keeps_a_tunnel_on_one_upf_whatever_the_outer_ports(lbnet: LbNet) -> None:
    logs = sinks(lbnet.backends)
    lbnet.set(service("n3", port=GTPU, proto="udp", ep_port=GTPU, algorithm="gtp-teid"),
              service("n3v6", vip=VIP6, port=GTPU, proto="udp", ep_port=GTPU,
                      algorithm="gtp-teid"))  # fmt: skip
    teids = [0x1000 + 7919 * i for i in range(12)]
    todo = [(t, 20000 + 10 * i + j) for i, t in enumerate(teids) for j in range(4)]
    for vip in (VIP4, VIP6):
        res = lbnet.client.run([sys.executable, "-c", SEND, vip, json.dumps(todo)], timeout=30)
        assert res.returncode == 0, res.stderr
    want = 2 * len(todo)
    wait_for(lambda: sum(len(v) for v in received(logs).values()) == want, timeout=5)
    where: dict[tuple[bool, int], set[str]] = {}
    for name, rows in received(logs).items():
        for r in rows:
            where.setdefault((":" in r["src"] and "." not in r["src"], r["teid"]), set()).add(name)
    # Every tunnel on one endpoint (4 outer source ports each), in both families...
    assert len(where) == 2 * len(teids) and all(len(v) == 1 for v in where.values()), where
    # ...and the tunnels spread over the endpoints.
    assert len({next(iter(v)) for (v6, _), v in where.items() if not v6}) >= 2
    assert len({next(iter(v)) for (v6, _), v in where.items() if v6}) >= 2
    assert lbnet.rec.conntrack("n3") == []  # per packet: no flow state
    st = lbnet.rec.service_state("n3")
    assert st["packets"] == len(todo)
