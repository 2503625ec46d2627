"""End to end through one real daemon (`sluice run --datapath on` in the LB namespace):

- the health prober takes a dead endpoint out of the datapath within
  interval × retries + timeout, and puts it back when it recovers;
- a service provisioned over NETCONF (ncclient) carries traffic.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from daemonkit import Daemon
from dpkit import HTTP_PORT, VIP4, LbNet, backend_addr, probed_web, wait_for
from lxml import etree

from appliance.config.passwords import hash_password
from northbound.netconf.modules import ServedModules

pytestmark = [pytest.mark.datapath, pytest.mark.usefixtures("prober_mode")]



INTERVAL, TIMEOUT, RETRIES = 1, 1, 2
NETCONF_PORT = 18830
PASSWORD = "e2e-secret-pass"





def test_dead_endpoint_leaves_traffic_and_comes_back(
    lb_daemon: tuple[LbNet, Daemon], tmp_path: Path
) -> None:
    net, d = lb_daemon
    d.apply({"datapath": {"interface": [{"name": i} for i in net.interfaces]}})
    servers = [b.start_http_server(HTTP_PORT) for b in net.backends]
    web = probed_web("tcp", (1, 2), INTERVAL, TIMEOUT, RETRIES)
    d.apply({"load-balancer": {"service": [web]}})
    assert sorted(net.get(VIP4) for _ in range(4)) == ["b1", "b1", "b2", "b2"]

    servers[1].stop()
    died = time.monotonic()
    wait_for(lambda: d.health("web", backend_addr(2)) == "down", timeout=10, step=0.1)
    detected = time.monotonic() - died
    bound = INTERVAL * RETRIES + TIMEOUT
    assert detected <= bound + 1.0, f"down after {detected:.1f}s, bound {bound}s"
    row = next(r for r in d.cli_json("ep", "list") if r["address"] == backend_addr(2))
    assert row["state"]["last-error"]
    assert [net.get(VIP4) for _ in range(6)] == ["b1"] * 6  # no new flow to the dead one

    with d.client() as client:
        events = client.call("events.recent", type="endpoint-state")
    assert any(e["address"] == backend_addr(2) and e["new"] == "down" for e in events)

    servers[0].stop()  # the last healthy endpoint goes: the service is down
    with d.client() as client:
        wait_for(lambda: client.call("events.recent", type="service-state"), timeout=10)
        (event,) = client.call("events.recent", type="service-state")
    assert (event["service"], event["new"]) == ("web", "down")

    for b in net.backends:
        b.start_http_server(HTTP_PORT)
    wait_for(lambda: d.health("web", backend_addr(2)) == "up", timeout=10, step=0.1)
    wait_for(lambda: d.health("web", backend_addr(1)) == "up", timeout=10, step=0.1)
    assert sorted(net.get(VIP4) for _ in range(4)) == ["b1", "b1", "b2", "b2"]


NCCLIENT_SCRIPT = """
import sys
from ncclient import manager
port, password, vip, b1, b2 = sys.argv[1:6]
config = f'''<config xmlns="urn:ietf:params:xml:ns:netconf:base:1.0">
 <load-balancer xmlns="urn:sluice:yang:sluice"><service>
  <name>nc-web</name><vip>{vip}</vip><port>80</port>
  <endpoint><address>{b1}</address><port>8080</port></endpoint>
  <endpoint><address>{b2}</address><port>8080</port></endpoint>
 </service></load-balancer></config>'''
with manager.connect(host="127.0.0.1", port=int(port), username="oss", password=password,
                     hostkey_verify=False, look_for_keys=False, allow_agent=False,
                     timeout=20) as m:
    with m.locked("candidate"):
        m.edit_config(target="candidate", config=config)
        m.validate(source="candidate")
        m.commit()
    print("committed")
    if len(sys.argv) > 6:  # then a <get> of config and state, after traffic
        input()
        print(m.get().data_xml)
"""


def test_service_provisioned_over_netconf_carries_traffic(
    lb_daemon: tuple[LbNet, Daemon], tmp_path: Path
) -> None:
    net, d = lb_daemon
    d.apply({"datapath": {"interface": [{"name": i} for i in net.interfaces]}})
    for b in net.backends:
        b.start_http_server(HTTP_PORT)
    user = {"name": "oss", "role": "read-write", "password-hash": hash_password(PASSWORD)}
    management = {"user": [user], "netconf": {"port": NETCONF_PORT, "address": ["127.0.0.1"]}}
    d.apply({"management": management})
    # ncclient runs inside the LB namespace, where the daemon (and its NETCONF) lives.
    args = [str(NETCONF_PORT), PASSWORD, VIP4, backend_addr(1), backend_addr(2)]
    cmd = ["nsenter", f"--net=/run/netns/{net.lb.ns}", sys.executable, "-c", NCCLIENT_SCRIPT]

    def provision() -> subprocess.CompletedProcess[str]:
        return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=60)

    done = wait_for(lambda: (r := provision()).returncode == 0 and r, timeout=20, step=0.5)
    assert "committed" in done.stdout
    assert sorted(net.get(VIP4) for _ in range(4)) == ["b1", "b1", "b2", "b2"]

    # The <get> of a daemon with traffic and probes: every node of config and state (and
    # netconf-state, yang-library) is defined by a module the server advertises.
    again = subprocess.run([*cmd, *args, "get"], input="\n", capture_output=True,
                           text=True, timeout=60)
    assert again.returncode == 0, again.stderr
    data = etree.fromstring(again.stdout.split("committed", 1)[1].strip().encode())
    assert data.xpath("//*[local-name()='endpoint']/*[local-name()='state']")
    ServedModules().validate_data("".join(etree.tostring(c).decode() for c in data))
    history = d.cli_json("config", "history")
    assert history[0]["interface"] == "netconf" and history[0]["user"] == "oss"
