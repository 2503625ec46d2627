"""Consistent selection across appliances: two appliances (real `sluice run --datapath on`)
with the same config, except that their endpoints were listed in another order, pick the
same backend for a flow, whichever of them the router sends it through.

    client --- router ---(static route, moved)--- lb1, lb2 --- bbr --- b1..b4

- /bgp has a neighbour, so services that set no algorithm run Maglev (the cluster default;
  the neighbour need not be up); one that sets round-robin keeps it;
- the tables read back from each appliance's maps (`sluice dp selection`) are the same
  (equal digests), though each appliance numbered its endpoints in its own order;
- 24 flows (fixed client ports) first routed through lb1, then through lb2, reach the same
  backend each, and more than one backend between them;
- /bgp without neighbours: the default goes back to round-robin, reprogrammed at once.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import netkit as kit
import pytest
from bgpkit import LB_AS, ROUTER_AS, lb_addr, router_addr, wait
from daemonkit import Daemon

pytestmark = [pytest.mark.slow, pytest.mark.datapath]

VIP = "198.19.0.10"
CLIENT_ADDR = "198.18.0.1"
BACKENDS = [f"198.18.1.1{b}" for b in (1, 2, 3, 4)]
PORTS = list(range(41000, 41024))

# One connection per fixed source port (the same 5-tuple each time the script runs);
# prints the backend that answered each one.
FLOWS = """
import json, socket, sys
vip, src, ports = sys.argv[1], sys.argv[2], [int(p) for p in sys.argv[3:]]
out = []
for port in ports:
    s = socket.socket(); s.settimeout(3)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((src, port)); s.connect((vip, 80)); s.sendall(b"GET / HTTP/1.0\\r\\n\\r\\n")
    data = b""
    while chunk := s.recv(4096):
        data += chunk
    s.close()
    out.append(data.split(b"\\r\\n\\r\\n", 1)[-1].decode().strip())
print(json.dumps(out))
"""


def snat(n: int) -> str:
    return f"198.19.{n}.1"


def lb_back(n: int) -> str:
    return f"198.18.1.{n + 1}"


def config(n: int, order: list[int]) -> dict[str, Any]:
    eps = [{"address": BACKENDS[i], "port": 8080} for i in order]
    return {
        "bgp": {"local-as": LB_AS, "router-id": lb_addr(n),
                "neighbor": [{"address": router_addr(n), "remote-as": ROUTER_AS}]},
        "load-balancer": {"service": [
            {"name": "web", "vip": VIP, "port": 80, "mode": "full-nat",
             "snat-address": snat(n), "endpoint": eps},
            {"name": "rr", "vip": VIP, "port": 81, "mode": "full-nat", "algorithm": "round-robin",
             "snat-address": snat(n), "endpoint": eps},
        ]},
    }  # fmt: skip


def _flows(client: kit.Host) -> list[str]:
    res = client.run(["python3", "-c", FLOWS, VIP, CLIENT_ADDR, *map(str, PORTS)], timeout=60)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def test_two_appliances_pick_the_same_backend_for_a_flow(netkit: kit.Topology,
                                                         tmp_path: Path) -> None:  # fmt: skip
    pytest.importorskip("bcc", reason="needs bcc (python3-bpfcc)")
    client, router, bbr = netkit.host("cli"), netkit.host("rtr"), netkit.host("bbr")
    netkit.link(client, router, [f"{CLIENT_ADDR}/24"], ["198.18.0.254/24"])
    client.add_route("default", "198.18.0.254")
    bbr.run(["ip", "link", "add", "br0", "type", "bridge"], check=True)
    bbr.run(["ip", "link", "set", "br0", "up"], check=True)

    def port_on_bbr(host: kit.Host, addr: str) -> str:
        link = netkit.link(host, bbr, [f"{addr}/24"], [])
        bbr.run(["ip", "link", "set", link.ifname(bbr), "master", "br0"], check=True)
        return link.ifname(host)

    lbs, ifaces = [], []
    for n in (1, 2):
        lb = netkit.host(f"lb{n}")
        up = netkit.link(router, lb, [f"{router_addr(n)}/24"], [f"{lb_addr(n)}/24"])
        lb.add_route("default", router_addr(n))
        ifaces.append([up.ifname(lb), port_on_bbr(lb, lb_back(n))])
        lbs.append(lb)
    for b, addr in enumerate(BACKENDS, start=1):
        host = netkit.host(f"b{b}")
        port_on_bbr(host, addr)
        for n in (1, 2):
            host.add_route(snat(n), lb_back(n))  # each appliance's SNAT comes back to it
        host.start_http_server(8080, body=f"b{b}")

    daemons = [Daemon(tmp_path / f"lb{n}", datapath="on", pin_dir=netkit.pin_dir(f"lb{n}"),
                      netns=lbs[n - 1].ns) for n in (1, 2)]  # fmt: skip
    try:
        for n, (d, order) in enumerate(zip(daemons, ([0, 1, 2, 3], [2, 0, 3, 1]), strict=True),
                                       start=1):  # fmt: skip
            d.workdir.mkdir()
            d.start(timeout=90)
            d.apply({"datapath": {"interface": [{"name": i} for i in ifaces[n - 1]]},
                     **config(n, order)})  # fmt: skip
        tables = [d.cli_json("dp", "selection", "web") for d in daemons]
        assert [t["algorithm"] for t in tables] == ["maglev", "maglev"], tables
        assert tables[0]["slots"] == 4027 and tables[0]["digest"] == tables[1]["digest"], tables
        assert set(tables[0]["share"]) == {f"{a}:8080" for a in BACKENDS}
        assert [d.cli_json("dp", "selection", "rr")["algorithm"] for d in daemons] == [
            "round-robin", "round-robin"]  # an explicit algorithm is kept
        assert daemons[0].cli_json("lb", "show", "web")["algorithm"] == "maglev"

        answers = []
        for n in (1, 2):
            router.run(["ip", "route", "replace", VIP, "via", lb_addr(n)], check=True)
            answers.append(_flows(client))
        assert answers[0] == answers[1], answers
        assert len(answers[0]) == len(PORTS) and len(set(answers[0])) >= 2, answers
        assert all(len(d.cli_json("ct", "list", "--service", "web")) >= len(PORTS)
                   for d in daemons)  # both appliances carried the flows  # fmt: skip

        # No neighbour left: the standalone default (round-robin) applies at once.
        daemons[0].apply({"bgp": {"local-as": LB_AS, "router-id": lb_addr(1)}})
        wait(lambda: daemons[0].cli_json("dp", "selection", "web")["algorithm"]
             == "round-robin", 10, "round-robin again")  # fmt: skip
        assert daemons[0].cli_json("dp", "selection", "web")["slots"] == 4
    finally:
        for d in daemons:
            d.stop()
