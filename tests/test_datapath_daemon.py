"""End to end: `sluice run --datapath on` inside the LB namespace, driven by the CLI.

Also: a long-lived TCP connection keeps flowing while the daemon is stopped and after a new
daemon has re-attached over the same pinned maps.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import netkit as kit
import pytest
from daemonkit import SLUICE, Daemon
from dpkit import VIP4, VIP6, backend_addr, build_lbnet, wait_for

from appliance import netlink

pytestmark = pytest.mark.datapath

# A client that keeps one TCP connection busy: a line every 20 ms, each echo checked,
# until STOP exists; prints the number of round trips so far after each one (the last line
# is the total); any error exits non-zero.
CHATTER = """
import os, socket, sys, time
stop, deadline = sys.argv[1], time.monotonic() + 60
s = socket.create_connection(({vip!r}, 90), timeout=3)
n = 0
while not os.path.exists(stop) and time.monotonic() < deadline:
    msg = b"ping %d\\n" % n
    s.sendall(msg)
    got = b""
    while len(got) < len(msg):
        chunk = s.recv(100)
        if not chunk:
            sys.exit("connection closed by peer")
        got += chunk
    assert got == msg, got
    n += 1
    print(n, flush=True)
    time.sleep(0.02)
print(n)
"""


def _sluice_apply(d: Daemon, tmp: Path, doc: dict) -> None:
    path = tmp / "apply.json"
    path.write_text(json.dumps(doc))
    res = d.cli("apply", "-f", str(path))
    assert res.returncode == 0, res.stderr


def test_daemon_cli_end_to_end_and_restart_keeps_flows(
    netkit: kit.Topology, tmp_path: Path
) -> None:
    pytest.importorskip("bcc", reason="needs bcc (python3-bpfcc)")
    net = build_lbnet(netkit, n_backends=2)
    for b in net.backends:
        b.start_tcp_echo(9000)
    pins = netkit.pin_dir("daemon")
    d = Daemon(tmp_path, datapath="on", pin_dir=pins, netns=net.lb.ns)
    d.start(timeout=60)
    try:
        interfaces = [{"name": i} for i in net.interfaces]
        _sluice_apply(d, tmp_path, {"datapath": {"interface": interfaces}})
        eps = f"{backend_addr(1)}:8080,{backend_addr(2)}:8080"
        res = d.cli("lb", "add", "web", "--vip", VIP4, "--port", "80", "--endpoints", eps)
        assert res.returncode == 0, res.stderr
        eps6 = f"[{backend_addr(1, 6)}]:8080,[{backend_addr(2, 6)}]:8080"
        res = d.cli("lb", "add", "web6", "--vip", VIP6, "--port", "80", "--endpoints", eps6)
        assert res.returncode == 0, res.stderr
        # Applied within the commit: the very next request goes through.
        assert [net.get(VIP4) for _ in range(4)] == ["b1", "b2", "b1", "b2"]
        assert net.get(VIP6) == "b1"

        ct = d.cli_json("ct", "list", "--service", "web")
        assert len(ct) == 4 and {r["endpoint"] for r in ct} == {
            f"{backend_addr(1)}:8080", f"{backend_addr(2)}:8080"}  # fmt: skip
        first = d.cli_json("ct", "list", "--service", "web", "--limit", "3")
        assert len(first) == 3 and {r["client"] for r in first} <= {r["client"] for r in ct}
        stats = d.cli_json("stats")
        web = next(r for r in stats if r["service"] == "web" and "endpoint" not in r)
        assert web["total-sessions"] == 4 and web["packets"] >= 4 * 5
        status = d.cli_json("dp", "status")
        # IPv6's balancer ahead of sluice_lb for untagged IPv6 packets (web6).
        assert all(f == ["sluice_lb6", "sluice_lb"] for f in status["interfaces"].values())
        assert status["maps"]["svc_map"]["entries"] == 2
        assert status["maps"]["ct_map"]["capacity"] == 1048576
        shown = d.cli_json("lb", "show", "web")
        assert shown["state"]["oper-status"] == "up"
        assert d.cli("ct", "list").returncode == 0 and d.cli("dp", "status").returncode == 0

        # A long-lived connection across a daemon stop and restart.
        eps = f"{backend_addr(1)}:9000,{backend_addr(2)}:9000"
        res = d.cli("lb", "add", "echo", "--vip", VIP4, "--port", "90", "--endpoints", eps)
        assert res.returncode == 0, res.stderr
        stop = tmp_path / "stop"
        chatter = net.client.popen(["python3", "-c", CHATTER.format(vip=VIP4), str(stop)])
        chatter_log = net.client.logs[chatter.pid]

        def rounds() -> int:  # round trips so far: the last complete line of the log
            lines = chatter_log.read_text().split("\n")[:-1]
            return int(lines[-1]) if lines else 0

        wait_for(lambda: d.cli_json("ct", "list", "--service", "echo"), timeout=5)
        assert d.stop() == 0
        ifname = net.interfaces[0]
        assert netlink.tc_filters(ifname, "ingress", netns=net.lb.ns) == ["sluice_lb6",
                                                                           "sluice_lb"]  # fmt: skip
        assert net.get(VIP6) == "b2"  # round-robin goes on with no daemon
        at_stop = rounds()
        wait_for(lambda: rounds() >= at_stop + 25, timeout=5)  # traffic flows with no daemon
        d.start(timeout=60)
        at_start = rounds()
        wait_for(lambda: rounds() >= at_start + 10, timeout=5)  # and with the new one
        (row,) = d.cli_json("ct", "list", "--service", "echo")
        assert row["state"] == "established" and row["packets"][0] > 50
        assert [net.get(VIP4) for _ in range(2)] == ["b1", "b2"]  # same config after restart
        assert net.get(VIP6) in ("b1", "b2")
        stop.touch()
        assert chatter.wait(10) == 0, chatter_log.read_text()
        assert rounds() > 60  # no gap long enough to fail the chatter's 3 s timeout

        # A deleted service stops answering.
        assert d.cli("lb", "delete", "web").returncode == 0
        with pytest.raises(RuntimeError):
            net.get(VIP4, timeout=1)
    finally:
        d.stop()
    # --cleanup detaches and removes the pins.
    res = subprocess.run(
        ["nsenter", f"--net=/run/netns/{net.lb.ns}", *SLUICE, "run", "--cleanup"],
        env=d.env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert netlink.tc_filters(net.interfaces[0], netns=net.lb.ns) == []
    assert not pins.exists()  # maps unpinned, the emptied directory removed
