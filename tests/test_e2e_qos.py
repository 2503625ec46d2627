"""`sluice qos` and `sluice mirror` on a running daemon (`sluice run --datapath on` in the LB
namespace): a policer set and attached from the CLI polices real traffic, its colors show
in `sluice qos list`, NETCONF <get> and SNMP; a mirror session set from the CLI copies;
bad input is refused naming the field and changes nothing while the daemon serves on."""

from __future__ import annotations

from pathlib import Path

import pytest
from daemonkit import Daemon
from dpkit import VIP4, LbNet, backend_addr, wait_for
from qoskit import udp_blast

pytestmark = pytest.mark.datapath

PORT = 6000
RATE = 4_000_000
SECS = 2.0


def test_cli_policer_and_mirror_on_a_running_daemon(
    lb_daemon: tuple[LbNet, Daemon], tmp_path: Path
) -> None:
    net, d = lb_daemon
    d.apply({"datapath": {"interface": [{"name": i} for i in net.interfaces]}})
    svc = {"name": "u", "vip": VIP4, "port": PORT, "protocol": "udp",
           "endpoint": [{"address": backend_addr(1), "port": PORT}]}  # fmt: skip
    d.apply({"load-balancer": {"service": [svc]}})

    def ok(*args: str) -> str:
        res = d.cli(*args)
        assert res.returncode == 0, (args, res.stderr)
        return res.stdout

    ok("qos", "policer", "set", "p", "--cir", "4M", "--cbs", "8k", "--red", "drop")
    ok("qos", "attach", "p", "--service", "u")
    got = udp_blast(net.client, net.backends[0], VIP4, backend_addr(1), PORT, 2 * RATE, SECS)
    rate = sum(v[1] for v in got.values()) * 8 / SECS
    assert abs(rate - RATE) < 0.15 * RATE, rate

    # The colors: the CLI (read now), NETCONF <get> and SNMP (the state snapshot).
    (pol,) = d.cli_json("qos", "list")["policer"]
    assert pol["state"]["green"]["packets"] > 0 and pol["state"]["red"]["packets"] > 0, pol
    assert "p" in ok("qos", "list")

    # Bad input: refused, the field named, nothing changed, the daemon serves on.
    before = d.cli_json("qos", "list")
    bad = [
        (("qos", "policer", "set", "q", "--cir", "4M", "--cbs", "100"), "--cbs"),
        (("qos", "policer", "set", "q", "--cir", "fast", "--cbs", "8k"), "--cir"),
        (("qos", "policer", "set", "q", "--cir", "4M", "--cbs", "8k", "--type", "two-rate"),
         "pir and pbs"),
        (("qos", "attach", "nope", "--service", "u"), "policer"),
        (("qos", "attach", "p", "--service", "ghost"), "no service 'ghost'"),
        (("qos", "policer", "set", "q", "--cir", "4M", "--cbs", "8k", "--red", "paint"),
         "--red"),
        (("mirror", "set", "m", "--type", "erspan"), "collector"),
        (("mirror", "set", "m", "--type", "rspan", "--to", "x"), "vlan"),
    ]
    for args, field in bad:
        res = d.cli(*args)
        assert res.returncode == 2, (args, res.stdout, res.stderr)
        assert field in res.stderr, (args, res.stderr)
    after = d.cli_json("qos", "list")
    assert [p["name"] for p in after["policer"]] == [p["name"] for p in before["policer"]]
    assert after["service"] == before["service"]

    # A SPAN session from the CLI: the client's packets are copied to a monitor link.
    mon = net.topo.host("mon")
    link = net.topo.link(net.lb, mon)
    ok("mirror", "set", "m", "--type", "span", "--to", link.ifname(net.lb),
       "--interface", f"{net.interfaces[0]}:ingress")  # fmt: skip
    assert net.client.ping(backend_addr(1), count=3)
    wait_for(lambda: d.cli_json("mirror", "list")["session"][0]["state"].get("packets", 0) >= 3,
             timeout=10)  # fmt: skip
    assert "span" in ok("mirror", "list")

    # Taken away again: the QoS program leaves every interface.
    ok("mirror", "delete", "m")
    ok("qos", "detach", "--service", "u")
    ok("qos", "policer", "delete", "p")
    assert d.cli_json("qos", "list")["policer"] == []
    status = d.cli_json("dp", "status")
    assert status["qos"]["attached"] == [], status["qos"]
