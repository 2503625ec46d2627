"""One appliance (a real `sluice run`, datapath off: only BGP and health matter here) peering
with a BIRD 2 router over IPv4 and IPv6, through ExaBGP as the daemon's supervised child:

- both sessions Established (TCP MD5 signed); the vips arrive with the export attributes
  configured; the password is never shown;
- the only healthy endpoint dies → the vip is withdrawn within the probe bound + 1 s; it
  returns → announced again; the service deleted → withdrawn;
- a "peer" that answers with garbage disturbs neither the daemon nor the other sessions;
- a bad neighbour is refused naming the field, and changes nothing;
- kill -9 of the daemon: its speaker goes with it and the router withdraws the vips.

The two-appliance ECMP test is in test_bgp_ecmp.py.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path
from typing import Any

import netkit as kit
import pytest
from bgpkit import (
    LB_AS,
    Bird,
    appliance_peers,
    bgp_section,
    lb_addr,
    require_bird,
    router_addr,
    wait,
)
from daemonkit import Daemon

pytestmark = pytest.mark.slow

VIP4, VIP6 = "198.19.0.10", "2001:db8:ff::10"
BACKEND4, BACKEND6 = "198.18.11.1", "2001:db8:11::1"
PORT = 8080
INTERVAL, TIMEOUT, RETRIES = 1, 1, 2
GARBAGE_PEER, GARBAGE_PORT = "198.18.7.3", 1790
MD5_KEY = "md5-s3cret!"

# A "router" that answers every connection with bytes that are no BGP message, for as long
# as the test needs (bounded: it exits after 60 s or 50 connections).
GARBAGE_SERVER = """
import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(8); s.settimeout(1)
print("ready", flush=True)
end = time.monotonic() + 60
n = 0
while time.monotonic() < end and n < 50:
    try:
        c, _ = s.accept()
    except OSError:
        continue
    n += 1
    c.sendall(b"\\xff" * 16 + b"\\x00\\x13\\x09" + b"garbage, not BGP" * 8)
    c.sendall(bytes(range(256)))
    time.sleep(0.2)
    c.close()
"""


def _service(name: str, vip: str, backend: str) -> dict[str, Any]:
    probe = {"type": "tcp", "interval": INTERVAL, "timeout": TIMEOUT, "retries": RETRIES,
             "successes-before-up": 1}  # fmt: skip
    return {"name": name, "vip": vip, "port": 80, "health-probe": probe,
            "endpoint": [{"address": backend, "port": PORT}]}  # fmt: skip


def _bgp_status(d: Daemon) -> dict[str, Any]:
    return d.cli_json("bgp", "status")


def _established(d: Daemon) -> set[str]:
    return {n["address"] for n in _bgp_status(d)["neighbor"]
            if n["session-state"] == "established"}  # fmt: skip


def test_one_appliance_announces_by_health_and_withdraws_when_it_dies(
    netkit: kit.Topology, tmp_path: Path
) -> None:
    require_bird()
    router, lb, backend = netkit.host("rtr"), netkit.host("lb1"), netkit.host("b1")
    netkit.link(router, lb, [f"{router_addr(1)}/24", f"{router_addr(1, 6)}/64",
                             f"{GARBAGE_PEER}/24"],
                [f"{lb_addr(1)}/24", f"{lb_addr(1, 6)}/64"])  # fmt: skip
    netkit.link(lb, backend, ["198.18.11.254/24", "2001:db8:11::fe/64"],
                [f"{BACKEND4}/24", f"{BACKEND6}/64"])  # fmt: skip
    # Both sessions signed with TCP MD5 (RFC 2385): they come up only if ExaBGP signs.
    bird = Bird(router, appliance_peers(1), password=MD5_KEY)
    garbage = router.popen([sys.executable, "-c", GARBAGE_SERVER, GARBAGE_PEER,
                            str(GARBAGE_PORT)], stdout=-1)  # fmt: skip
    assert garbage.stdout is not None and garbage.stdout.readline().strip() == b"ready"
    server = backend.start_http_server(PORT)

    d = Daemon(tmp_path, datapath="off", netns=lb.ns)
    d.start(timeout=60)
    try:
        section = bgp_section(1, password=MD5_KEY)
        section["neighbor"][1]["export"] = {"community": ["65001:7"], "med": 50,
                                            "as-path-prepend": 1}  # fmt: skip
        d.apply({"bgp": section, "load-balancer": {"service": [
            _service("web", VIP4, BACKEND4), _service("web6", VIP6, BACKEND6)]}})
        wait(lambda: bird.sessions() == {"lb1": "Established", "lb1v6": "Established"}, 20,
             "both sessions Established")  # fmt: skip
        wait(lambda: bird.route(f"{VIP4}/32"), 10, "the IPv4 vip at the router")
        route6 = wait(lambda: bird.route(f"{VIP6}/128"), 10, "the IPv6 vip at the router")
        assert "BGP.med: 50" in route6 and "(65001,7)" in route6, route6
        assert f"BGP.as_path: {LB_AS} {LB_AS}" in route6, route6
        assert bird.next_hops(VIP4) == [lb_addr(1)]
        assert bird.next_hops(VIP6) == [lb_addr(1, 6)]
        status = _bgp_status(d)
        assert status["speaker"] == "running"
        shown = d.cli("config", "export")
        assert shown.returncode == 0 and "password" in shown.stdout, shown.stderr
        assert MD5_KEY not in shown.stdout
        assert sorted(status["announced"]) == sorted([f"{VIP4}/32", f"{VIP6}/128"])
        assert {n["address"]: n["prefixes-sent"] for n in status["neighbor"]} == {
            router_addr(1): 1, router_addr(1, 6): 1}
        door = d.cli_json("status")["doors"]["bgp"]
        assert (door["state"], door["established"]) == ("running", "2/2"), door

        # The only healthy endpoint dies: withdrawn within the probe bound + 1 s.
        server.stop()
        died = time.monotonic()
        wait(lambda: not bird.route(f"{VIP4}/32") and not bird.route(f"{VIP6}/128"), 10,
             "the vips withdrawn", step=0.02)  # fmt: skip
        took = time.monotonic() - died
        bound = INTERVAL * RETRIES + TIMEOUT
        assert took <= bound + 1.0, f"withdrawn after {took:.2f} s, bound {bound} s + 1 s"
        print(f"endpoint death -> withdrawal: {took:.2f} s (probe bound {bound} s)")
        assert _bgp_status(d)["announced"] == []
        assert _established(d) == {router_addr(1), router_addr(1, 6)}  # sessions stay up

        server = backend.start_http_server(PORT)
        wait(lambda: bird.route(f"{VIP4}/32") and bird.route(f"{VIP6}/128"), 10,
             "the vips announced again")  # fmt: skip

        # A neighbour that answers with garbage: the daemon and the other sessions go on.
        # Adding it restarts no other session (one ExaBGP process per neighbour).
        since = {n["address"]: n["since"] for n in _bgp_status(d)["neighbor"]}
        garbage_neighbor = {"address": GARBAGE_PEER, "remote-as": 65099, "port": GARBAGE_PORT}
        section["neighbor"].append(garbage_neighbor)
        d.apply({"bgp": section})
        wait(lambda: garbage.poll() is not None or _speaker_log_mentions(d, GARBAGE_PEER), 15,
             "the speaker reaching the garbage peer")  # fmt: skip
        time.sleep(2)  # a few more rounds of garbage; what follows must still hold
        status = _bgp_status(d)
        rows = {n["address"]: n for n in status["neighbor"]}
        assert rows[GARBAGE_PEER]["session-state"] != "established"
        assert {a: rows[a]["since"] for a in since} == since, rows  # no session flapped
        assert _established(d) == {router_addr(1), router_addr(1, 6)}
        assert d.cli("status").returncode == 0
        assert bird.route(f"{VIP4}/32")

        # Changing one neighbour restarts its session alone: events for each change, and
        # the bgp-session alarm while it is down, cleared once it is back.
        section["neighbor"][0]["hold-time"] = 30
        d.apply({"bgp": section})
        with d.client() as client:
            wait(lambda: {(e["neighbor"], e["new"]) for e in client.call(
                "events.recent", type="bgp-neighbor", limit=100)} >= {
                (router_addr(1), "down"), (router_addr(1), "established")}, 20,
                "the changed session down and up again")  # fmt: skip
        wait(lambda: not [a for a in d.cli_json("status").get("alarms", [])
                          if a["name"] == "bgp-session"], 10, "the bgp-session alarm cleared")
        rows = {n["address"]: n for n in _bgp_status(d)["neighbor"]}
        assert rows[router_addr(1, 6)]["since"] == since[router_addr(1, 6)]
        wait(lambda: bird.route(f"{VIP4}/32"), 10, "the IPv4 vip back at the router")

        # A bad neighbour is refused, naming the field; running config unchanged.
        bad = d.workdir / "bad.json"
        bad.write_text(json.dumps({"bgp": {**section, "neighbor": [
            {"address": "198.18.7.999", "remote-as": 65000}]}}))
        res = d.cli("apply", "-f", str(bad))
        assert res.returncode != 0 and "neighbor" in res.stderr and "address" in res.stderr, \
            res.stderr
        bad.write_text(json.dumps({"bgp": {**section, "neighbor": [
            {"address": "198.18.7.9", "remote-as": 4294967296}]}}))
        res = d.cli("apply", "-f", str(bad))
        assert res.returncode != 0 and "remote-as" in res.stderr, res.stderr
        assert len(_bgp_status(d)["neighbor"]) == 3

        # Service deleted: withdrawn.
        assert d.cli("lb", "delete", "web6").returncode == 0
        wait(lambda: not bird.route(f"{VIP6}/128"), 10, "the deleted service's vip withdrawn")
        assert bird.route(f"{VIP4}/32")

        # kill -9: the speaker dies with the daemon, the router withdraws at once.
        d.stop(signal.SIGKILL)
        killed = time.monotonic()
        wait(lambda: not bird.route(f"{VIP4}/32"), 10, "the vip withdrawn after kill -9")
        print(f"daemon kill -9 -> withdrawal: {time.monotonic() - killed:.2f} s")
        wait(lambda: bird.sessions().get("lb1") != "Established", 5, "session down")
    finally:
        d.stop()


def _speaker_log_mentions(d: Daemon, text: str) -> bool:
    return text in d.log.read_text(errors="replace")
