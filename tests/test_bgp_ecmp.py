"""Active-active behind ECMP: two appliances (real `sluice run --datapath on`, each in its
namespace) announce the same vips to a BIRD router over IPv4 and IPv6 (eBGP); the router's
kernel spreads flows over both (fib_multipath_hash_policy=1), and each appliance full-NATs
them to the same two backends.

    client --- router ===(BGP, ECMP)=== lb1, lb2 --- b1, b2 (each backend on both)

- all four sessions Established; the router's kernel routes each vip with two next hops;
- connections from the client reach the backends through both appliances;
- HA roles: the master's path alone is in the router's table, and after a swap the other's;
- kill -9 of one daemon: its speaker dies with it, the router drops that next hop and new
  connections all go through the other.

That connections open through a dying appliance survive on the other (the conntrack sync):
`test_bgp_failover.py`.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import netkit as kit
import pytest
from bgpkit import Bird, appliance_peers, bgp_section, lb_addr, require_bird, router_addr, wait
from daemonkit import Daemon

pytestmark = [pytest.mark.slow, pytest.mark.datapath]

VIP4, VIP6 = "198.19.0.10", "2001:db8:ff::10"
PORT = 8080
CONNECTIONS = 40

# Each connection from its own ephemeral port: the router hashes the 5-tuple. Prints the
# backend that answered each one.
CLIENT = """
import socket, sys, json
vip, n = sys.argv[1], int(sys.argv[2])
fam = socket.AF_INET6 if ":" in vip else socket.AF_INET
out = []
for _ in range(n):
    s = socket.socket(fam, socket.SOCK_STREAM); s.settimeout(3)
    s.connect((vip, 80)); s.sendall(b"GET / HTTP/1.0\\r\\n\\r\\n")
    data = b""
    while chunk := s.recv(4096):
        data += chunk
    s.close()
    out.append(data.split(b"\\r\\n\\r\\n", 1)[-1].decode().strip())
print(json.dumps(out))
"""


def snat(n: int, version: int = 4) -> str:
    return f"198.19.{n}.1" if version == 4 else f"2001:db8:ff:{n}::1"


def backend(lb: int, b: int, version: int = 4) -> str:
    """Backend b's address on its link to appliance lb."""
    return f"198.18.{10 * lb + b}.1" if version == 4 else f"2001:db8:{10 * lb + b}::1"


def _services(n: int) -> list[dict[str, Any]]:
    probe = {"type": "tcp", "interval": 1, "timeout": 1, "retries": 2}
    out = []
    for name, vip, version in (("web", VIP4, 4), ("web6", VIP6, 6)):
        out.append({"name": name, "vip": vip, "port": 80, "mode": "full-nat",
                    "snat-address": snat(n, version), "health-probe": probe,
                    "endpoint": [{"address": backend(n, b, version), "port": PORT}
                                 for b in (1, 2)]})  # fmt: skip
    return out


def _flows(d: Daemon) -> int:
    return len(d.cli_json("ct", "list"))


def test_two_appliances_share_the_vips_by_ecmp(netkit: kit.Topology, tmp_path: Path) -> None:
    require_bird()
    pytest.importorskip("bcc", reason="needs bcc (python3-bpfcc)")
    client, router = netkit.host("cli"), netkit.host("rtr")
    netkit.link(client, router, ["198.18.0.1/24", "2001:db8::1/64"],
                ["198.18.0.254/24", "2001:db8::fe/64"])  # fmt: skip
    client.add_route("default", "198.18.0.254")
    client.add_route("default", "2001:db8::fe")
    router.run(["sysctl", "-q", "-w", "net.ipv4.fib_multipath_hash_policy=1",
                "net.ipv6.fib_multipath_hash_policy=1"], check=True)  # fmt: skip
    backends = [netkit.host(f"b{b}") for b in (1, 2)]
    lbs, ifaces = [], []
    for n in (1, 2):
        lb = netkit.host(f"lb{n}")
        up = netkit.link(router, lb, [f"{router_addr(n)}/24", f"{router_addr(n, 6)}/64"],
                         [f"{lb_addr(n)}/24", f"{lb_addr(n, 6)}/64"])  # fmt: skip
        lb.add_route("default", router_addr(n))
        lb.add_route("default", router_addr(n, 6))
        names = [up.ifname(lb)]
        for b, host in enumerate(backends, start=1):
            link = netkit.link(lb, host, [f"198.18.{10 * n + b}.254/24",
                                          f"2001:db8:{10 * n + b}::fe/64"],
                               [f"{backend(n, b)}/24", f"{backend(n, b, 6)}/64"])  # fmt: skip
            host.add_route(snat(n), f"198.18.{10 * n + b}.254")
            host.add_route(snat(n, 6), f"2001:db8:{10 * n + b}::fe")
            names.append(link.ifname(lb))
        lbs.append(lb)
        ifaces.append(names)
    for b, host in enumerate(backends, start=1):
        host.start_http_server(PORT, body=f"b{b}")
    bird = Bird(router, appliance_peers(1, 2))

    daemons = [Daemon(tmp_path / f"lb{n}", datapath="on", pin_dir=netkit.pin_dir(f"lb{n}"),
                      netns=lbs[n - 1].ns) for n in (1, 2)]  # fmt: skip
    try:
        for d in daemons:
            d.workdir.mkdir()
            d.start(timeout=90)
        for n, d in enumerate(daemons, start=1):
            d.apply({"datapath": {"interface": [{"name": i} for i in ifaces[n - 1]]},
                     "bgp": bgp_section(n),
                     "load-balancer": {"service": _services(n)}})  # fmt: skip
        wait(lambda: set(bird.sessions().values()) == {"Established"}
             and len(bird.sessions()) == 4, 30, "four sessions Established")  # fmt: skip
        wait(lambda: bird.next_hops(VIP4) == [lb_addr(1), lb_addr(2)], 15, "two IPv4 paths")
        wait(lambda: bird.next_hops(VIP6) == [lb_addr(1, 6), lb_addr(2, 6)], 15,
             "two IPv6 paths")  # fmt: skip
        route = bird.birdc("show", "route", "for", f"{VIP4}/32", "all")
        assert route.count("BGP.next_hop") == 2, route

        for vip, count in ((VIP4, CONNECTIONS), (VIP6, CONNECTIONS // 4)):
            res = client.run(["python3", "-c", CLIENT, vip, str(count)], timeout=60)
            assert res.returncode == 0, res.stderr
            answers = json.loads(res.stdout)
            assert len(answers) == count and set(answers) <= {"b1", "b2"}, answers
        flows = [_flows(d) for d in daemons]
        # 50 flows hashed over two paths: each appliance carried some (1 in 2^49 to fail).
        assert all(f > 0 for f in flows) and sum(flows) >= CONNECTIONS, flows

        # HA roles: the master's path is preferred (MED 10 against 20), then the other's.
        for master, backup in ((0, 1), (1, 0)):
            assert daemons[master].cli("bgp", "role", "master").returncode == 0
            assert daemons[backup].cli("bgp", "role", "backup").returncode == 0
            wait(lambda m=master: bird.next_hops(VIP4) == [lb_addr(m + 1)], 10,
                 f"only lb{master + 1}'s IPv4 path")  # fmt: skip
            wait(lambda m=master: bird.next_hops(VIP6) == [lb_addr(m + 1, 6)], 10,
                 f"only lb{master + 1}'s IPv6 path")  # fmt: skip
        assert "BGP.med: 10" in bird.route(f"{VIP4}/32")
        assert daemons[1].cli_json("bgp", "status")["ha-role"] == "master"
        for d in daemons:
            assert d.cli("bgp", "role", "none").returncode == 0
        wait(lambda: bird.next_hops(VIP4) == [lb_addr(1), lb_addr(2)], 10, "ECMP again")

        # kill -9 one daemon: its speaker goes with it, the router keeps only the other path.
        daemons[1].stop(signal.SIGKILL)
        wait(lambda: bird.next_hops(VIP4) == [lb_addr(1)], 10, "lb2's IPv4 path withdrawn")
        wait(lambda: bird.next_hops(VIP6) == [lb_addr(1, 6)], 10, "lb2's IPv6 path withdrawn")
        before = _flows(daemons[0])
        res = client.run(["python3", "-c", CLIENT, VIP4, "10"], timeout=60)
        assert res.returncode == 0, res.stderr
        assert _flows(daemons[0]) >= before + 10
    finally:
        for d in daemons:
            d.stop()
