"""SNMP end to end through one real daemon (datapath on, in the LB namespace): the service
table's counters follow real traffic and agree with `sluice lb list -o json`, the conntrack
gauge and NETCONF's /datapath/state/conntrack-entries agree with the datapath's table, and
snmptrapd receives the traps when the prober sees an endpoint die and recover.

Everything runs inside the LB namespace (the agent listens on its 127.0.0.1); net-snmp's
tools and snmptrapd are entered into it with nsenter.
"""

from __future__ import annotations

import json
import socket
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from daemonkit import Daemon
from dpkit import HTTP_PORT, VIP4, LbNet, backend_addr, wait_for
from netconfkit import FAST_HASH, PASSWORD, SLUICE_NS
from probekit import enter_netns
from snmpkit import parse_walk, string_index

pytestmark = pytest.mark.datapath  # net-snmp is required: tests/test_snmp.py checks it

AGENT_PORT, TRAP_PORT = 16161, 16162
COMMUNITY = "e2e-ro"
SVC = "1.3.6.1.4.1.32473.1.2.1"  # sluiceServiceEntry
PACKETS, OPER_STATE = 13, 10
CT_ENTRIES = "1.3.6.1.4.1.32473.1.1.2.0"  # sluiceConntrackEntries
ENDPOINT_STATE_CHANGE = "1.3.6.1.4.1.32473.0.1"  # sluiceEndpointStateChange


def in_lb(net: LbNet, *cmd: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["nsenter", f"--net=/run/netns/{net.lb.ns}", *cmd],
                          capture_output=True, text=True, timeout=timeout)  # fmt: skip


def snmpget(net: LbNet, oid: str) -> str | None:
    res = in_lb(net, "snmpget", "-v2c", "-c", COMMUNITY, "-t", "1", "-r", "0", "-OnqeU",
                f"127.0.0.1:{AGENT_PORT}", oid)  # fmt: skip
    return parse_walk(res.stdout).get(oid)


def netconf_conntrack_entries(net: LbNet) -> int | None:
    """/datapath/state/conntrack-entries read with ncclient from inside the LB namespace
    (the daemon's NETCONF listens on its 127.0.0.1:830; the socket is made in there)."""
    from ncclient import manager

    made: list[socket.socket] = []

    def connect() -> None:
        enter_netns(net.lb.ns)  # this thread only
        made.append(socket.create_connection(("127.0.0.1", 830), timeout=5))

    thread = threading.Thread(target=connect)
    thread.start()
    thread.join(10)
    if not made:
        return None
    with manager.connect(sock=made[0], host="127.0.0.1", port=830, username="ops",
                         password=PASSWORD, hostkey_verify=False, allow_agent=False,
                         look_for_keys=False, timeout=10) as m:  # fmt: skip
        reply = m.get(filter=("subtree", f'<datapath xmlns="{SLUICE_NS}"><state/></datapath>'))
    found = reply.data.xpath("//sl:datapath/sl:state/sl:conntrack-entries/text()",
                             namespaces={"sl": SLUICE_NS})  # fmt: skip
    return int(found[0]) if found else None


def test_counters_follow_traffic_and_traps_follow_health(
    lb_daemon: tuple[LbNet, Daemon], tmp_path: Path
) -> None:
    net, d = lb_daemon
    servers = [b.start_http_server(HTTP_PORT) for b in net.backends]
    conf = tmp_path / "snmptrapd.conf"
    conf.write_text(f"authCommunity log {COMMUNITY}\ndisableAuthorization no\n")
    traps = tmp_path / "traps.log"
    (tmp_path / "persist").mkdir()
    with traps.open("w") as out:
        trapd = subprocess.Popen(
            ["nsenter", f"--net=/run/netns/{net.lb.ns}", "/usr/sbin/snmptrapd", "-f", "-Lo",
             "-C", "-c", str(conf), "-On", "-F", "TRAP %v\\n", f"udp:127.0.0.1:{TRAP_PORT}"],
            stdout=out, stderr=subprocess.STDOUT,
            env={"SNMP_PERSISTENT_DIR": str(tmp_path / "persist"), "PATH": "/usr/bin:/bin"},
        )  # fmt: skip
    try:
        wait_for(lambda: "NET-SNMP version" in traps.read_text(), timeout=5)
        probe = {"type": "tcp", "interval": 1, "timeout": 1, "retries": 2,
                 "successes-before-up": 1}  # fmt: skip
        endpoints = [{"address": backend_addr(n), "port": HTTP_PORT} for n in (1, 2)]
        config = {
            "datapath": {"interface": [{"name": i} for i in net.interfaces]},
            "management": {"user": [{"name": "ops", "password-hash": FAST_HASH,
                                     "role": "read-only"}]},
            "snmp": {"enabled": True, "port": AGENT_PORT, "listen-address": ["127.0.0.1"],
                     "community": [{"name": "nms", "secret": COMMUNITY}],
                     "manager": [{"name": "trapd", "address": "127.0.0.1", "port": TRAP_PORT,
                                  "community": "nms"}]},
            "load-balancer": {"service": [{"name": "web", "vip": VIP4, "port": 80,
                                           "health-probe": probe, "endpoint": endpoints}]},
        }  # fmt: skip
        path = tmp_path / "config.json"
        path.write_text(json.dumps(config))
        applied = d.cli("apply", "-f", str(path))
        assert applied.returncode == 0, applied.stderr

        packets_oid = f"{SVC}.{PACKETS}.{string_index('web')}"
        wait_for(lambda: snmpget(net, packets_oid) is not None, timeout=10, step=0.2)
        before = int(snmpget(net, packets_oid) or 0)
        assert sorted(net.get(VIP4) for _ in range(6)) == ["b1"] * 3 + ["b2"] * 3
        # Live values come from the state snapshot, refreshed every second: poll for them.
        wait_for(lambda: int(snmpget(net, packets_oid) or 0) >= before + 6 * 5,
                 timeout=5, step=0.2)  # at least SYN, ACK, request, ACK, FIN per connection
        after = int(snmpget(net, packets_oid) or 0)
        listed = next(s for s in d.cli_json("lb", "list") if s["name"] == "web")
        assert abs(listed["state"]["packets"] - after) <= 20  # same counters, read ~1 s apart
        assert snmpget(net, f"{SVC}.{OPER_STATE}.{string_index('web')}") is not None

        # sluiceConntrackEntries: ct_map's fill, as the datapath status reports it (it read 0:
        # the provider has no "conntrack-entries" key, and its netlink call failed on the loop).
        with d.client() as c:
            table = c.call("dp.status", live=True)["maps"]["ct_map"]["entries"]
        assert table >= 2 * 6  # both directions of the six flows above
        # Both serve a snapshot refreshed every second: on a loaded machine the first non-zero
        # one can predate some of the flows (the gauge read 4 of 12 once), so each is polled
        # until it agrees with the table.
        def agrees(read: Callable[[], int]) -> int | None:
            value = read()
            return value if value and abs(value - table) <= 4 else None

        wait_for(lambda: agrees(lambda: int(snmpget(net, CT_ENTRIES) or 0)), timeout=12,
                 what="sluiceConntrackEntries near ct_map's fill", step=0.2)  # fmt: skip
        # NETCONF's /datapath/state/conntrack-entries: the same snapshot, never empty.
        wait_for(lambda: agrees(lambda: netconf_conntrack_entries(net)), timeout=12,
                 what="NETCONF conntrack-entries near ct_map's fill", step=0.3)  # fmt: skip

        servers[1].stop()  # b2 dies: the prober sees it, the agent traps
        # The trap's varbinds are endpoint-table cells: their index names service and endpoint
        # (web = 3.119.101.98, then ipv4(1), 4 octets, the port).
        endpoint_index = f"{string_index('web')}.1.4.{backend_addr(2)}.{HTTP_PORT}"

        def endpoint_traps() -> list[str]:
            return [line for line in traps.read_text().splitlines()
                    if ENDPOINT_STATE_CHANGE in line and endpoint_index in line]  # fmt: skip

        wait_for(endpoint_traps, timeout=10, step=0.2)
        downs = len(endpoint_traps())
        net.backends[1].start_http_server(HTTP_PORT)
        wait_for(lambda: len(endpoint_traps()) > downs, timeout=10, step=0.2)
    finally:
        trapd.terminate()
        trapd.wait(5)
