"""No connection reset when an ECMP appliance dies: two appliances (real `sluice run
--datapath on`) announce the same vip to a BIRD router, which spreads 50 long-lived TCP
connections over them; they share their flows over the HA sync channel (sync only, no
VRRP: /ha/sync without instances); one appliance's links all go down; every connection
carries on through the other, none is reset.

    client --- router ===(BGP, ECMP)=== lb1, lb2 --- b1, b2 (echo on 198.18.20.1 / .2)
                                         lb1 === lb2 (sync channel)

Full-NAT with each appliance's own SNAT address; each backend routes each SNAT address to
its appliance first and to the other one second (metric), and skips a route whose link is
down (ignore_routes_with_linkdown), as the router does: when lb1 goes, the replies of its
flows reach lb2, which holds them (installed from lb1's sync records, with lb1's
translation). The selection is Maglev (the cluster default with BGP), the same on both.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import netkit as kit
import pytest
from bgpkit import LB_AS, ROUTER_AS, Bird, lb_addr, require_bird, router_addr, wait
from daemonkit import Daemon

pytestmark = [pytest.mark.slow, pytest.mark.datapath]

VIP, PORT, ECHO_PORT = "198.19.0.10", 80, 9000
CLIENT_ADDR = "198.18.0.1"
ENDPOINTS = ["198.18.20.1", "198.18.20.2"]
CONNECTIONS = 50
SYNC_KEY = "5e" * 32
LINKDOWN = ["net.ipv4.conf.all.ignore_routes_with_linkdown=1",
            "net.ipv4.conf.default.ignore_routes_with_linkdown=1"]

# 50 connections, each a thread sending a numbered line every 100 ms and reading its echo,
# until the stop file appears (at most 90 s). Prints one JSON row per connection: lines
# echoed, the last echo's wall time, the longest pause between two echoes, and the error
# that ended it (None: none).
LOAD = """
import json, os, socket, sys, threading, time
vip, port, n, stop = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
end = time.time() + 90
rows = [{"echoed": 0, "last_ok": 0.0, "max_gap": 0.0, "error": None} for _ in range(n)]
socks = []
for i in range(n):
    s = socket.create_connection((vip, port), timeout=5)
    s.settimeout(15)
    socks.append(s)
print("open", flush=True)

def run(i):
    s, row, k = socks[i], rows[i], 0
    try:
        while time.time() < end and not os.path.exists(stop):
            k += 1
            line = b"%d %d\\n" % (i, k)
            s.sendall(line)
            got = b""
            while len(got) < len(line):
                chunk = s.recv(len(line) - len(got))
                if not chunk:
                    raise ConnectionError("closed by the peer")
                got += chunk
            if got != line:
                raise ValueError("echo mismatch")
            now = time.time()
            if row["last_ok"]:
                row["max_gap"] = max(row["max_gap"], now - row["last_ok"])
            row["echoed"] += 1
            row["last_ok"] = now
            time.sleep(0.1)
    except ConnectionResetError:
        row["error"] = "reset"
    except Exception as exc:
        row["error"] = type(exc).__name__ + ": " + str(exc)
    finally:
        s.close()

threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
for t in threads:
    t.start()
for t in threads:
    t.join(120)
print(json.dumps(rows), flush=True)
"""


def snat(n: int) -> str:
    return f"198.19.{n}.1"


def hop(n: int, b: int, side: str) -> str:
    """The address of appliance n's link to backend b: on the appliance or the backend."""
    return f"198.18.{10 * n + b}.{254 if side == 'lb' else 1}"


def config(n: int, ifaces: list[str]) -> dict[str, Any]:
    other = 3 - n
    return {
        "datapath": {"interface": [{"name": i} for i in ifaces]},
        "bgp": {"local-as": LB_AS, "router-id": lb_addr(n),
                "neighbor": [{"address": router_addr(n), "remote-as": ROUTER_AS}]},
        "ha": {"sync": {"address": f"198.18.9.{n}", "peer": [f"198.18.9.{other}"],
                        "key": SYNC_KEY}},
        "load-balancer": {"service": [
            {"name": "echo", "vip": VIP, "port": PORT, "mode": "full-nat",
             "snat-address": snat(n),
             "endpoint": [{"address": a, "port": ECHO_PORT} for a in ENDPOINTS]}]},
    }  # fmt: skip


def _flows(d: Daemon) -> int:
    return len(d.cli_json("ct", "list", "--service", "echo"))


@dataclass
class Outcome:
    rows: list[dict[str, Any]]  # one per connection (LOAD's rows)
    carried: int  # connections lb1 carried before it went
    failed_at: float  # wall time lb1's links went down
    path_gone_s: float  # from then until the router's table had lb2 alone


def test_no_connection_is_reset_when_an_ecmp_appliance_dies(netkit: kit.Topology,
                                                           tmp_path: Path) -> None:  # fmt: skip
    require_bird()
    pytest.importorskip("bcc", reason="needs bcc (python3-bpfcc)")
    out = lose_an_appliance(netkit, tmp_path)
    errors = [r["error"] for r in out.rows if r["error"]]
    assert not errors, f"{len(errors)} connections ended: {errors[:5]}"
    assert all(r["last_ok"] > out.failed_at + 3 for r in out.rows), out.rows
    assert out.carried, "no connection went through lb1"


def lose_an_appliance(netkit: kit.Topology, tmp_path: Path) -> Outcome:
    """Build the topology, open the connections, take lb1's links down, and report
    (bench/bgp_failover.py times the same run)."""
    client, router = netkit.host("cli"), netkit.host("rtr")
    netkit.link(client, router, [f"{CLIENT_ADDR}/24"], ["198.18.0.254/24"])
    client.add_route("default", "198.18.0.254")
    router.run(["sysctl", "-q", "-w", "net.ipv4.fib_multipath_hash_policy=1", *LINKDOWN],
               check=True)  # fmt: skip
    backends = [netkit.host(f"b{b}") for b in (1, 2)]
    for host, addr in zip(backends, ENDPOINTS, strict=True):
        host.run(["ip", "addr", "add", f"{addr}/32", "dev", "lo"], check=True)
        host.run(["sysctl", "-q", "-w", *LINKDOWN], check=True)
    lbs, ifaces = [], []
    for n in (1, 2):
        lb = netkit.host(f"lb{n}")
        up = netkit.link(router, lb, [f"{router_addr(n)}/24"], [f"{lb_addr(n)}/24"])
        lb.add_route("default", router_addr(n))
        names = [up.ifname(lb)]
        for b, host in enumerate(backends, start=1):
            link = netkit.link(lb, host, [f"{hop(n, b, 'lb')}/24"], [f"{hop(n, b, 'b')}/24"])
            lb.add_route(ENDPOINTS[b - 1], hop(n, b, "b"))
            names.append(link.ifname(lb))
        lbs.append(lb)
        ifaces.append(names)
    sync = netkit.link(lbs[0], lbs[1], ["198.18.9.1/24"], ["198.18.9.2/24"])
    for b, host in enumerate(backends, start=1):
        for n in (1, 2):  # its own appliance first, the other one when that link is down
            for via, metric in ((n, 10), (3 - n, 20)):
                host.run(["ip", "route", "add", snat(n), "via", hop(via, b, "lb"),
                          "metric", str(metric)], check=True)  # fmt: skip
        host.start_tcp_echo(ECHO_PORT)
    bird = Bird(router, {"lb1": (lb_addr(1), LB_AS), "lb2": (lb_addr(2), LB_AS)})

    daemons = [Daemon(tmp_path / f"lb{n}", datapath="on", pin_dir=netkit.pin_dir(f"lb{n}"),
                      netns=lbs[n - 1].ns) for n in (1, 2)]  # fmt: skip
    stop = tmp_path / "stop"
    load = None
    try:
        for n, d in enumerate(daemons, start=1):
            d.workdir.mkdir()
            d.start(timeout=180)  # compiling the datapath takes a while on a loaded machine
            d.apply(config(n, [*ifaces[n - 1], sync.ifname(lbs[n - 1])]))
        wait(lambda: bird.next_hops(VIP) == [lb_addr(1), lb_addr(2)], 60, "two paths")

        load = client.popen(["python3", "-c", LOAD, VIP, str(PORT), str(CONNECTIONS),
                             str(stop)], stdout=-1, text=True)  # fmt: skip
        assert load.stdout is not None
        assert load.stdout.readline().strip() == "open", "the 50 connections did not open"
        # Both carry some of them, and each holds all 50 (its own and the other's, synced).
        wait(lambda: min(_flows(d) for d in daemons) >= CONNECTIONS, 30,
             "every flow on both appliances")  # fmt: skip
        carried = [r for r in daemons[0].cli_json("ct", "list", "--service", "echo")
                   if str(r.get("snat", "")).startswith(snat(1) + ":")]  # lb1's own flows
        time.sleep(1)  # a few echoes on every connection before the failure

        # lb1's links go down: its BGP session and its path with them.
        failed_at = time.time()
        for name in [*ifaces[0], sync.ifname(lbs[0])]:
            lbs[0].run(["ip", "link", "set", name, "down"], check=True)
        wait(lambda: bird.next_hops(VIP) == [lb_addr(2)], 30, "lb1's path gone", step=0.02)
        path_gone_s = time.time() - failed_at
        time.sleep(5)  # every connection echoes a while through lb2
        stop.touch()
        out, _ = load.communicate(timeout=60)
        rows = json.loads(out.strip().splitlines()[-1])
        return Outcome(rows, len(carried), failed_at, path_gone_s)
    finally:
        stop.touch()
        if load is not None and load.poll() is None:
            load.kill()
        for d in daemons:
            d.stop()
