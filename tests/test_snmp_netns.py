"""IF-MIB of a daemon in its own network namespace: the namespace's interfaces, all of them,
with the namespace's counters, even where the host has interfaces of the same names.

The daemon is started the README's way (`nsenter --net`, so /sys is still the host's): its
namespace has `lo` and `eth0`, and so has the host. Traffic from a peer namespace moves the
namespace's eth0 counters; the agent must report exactly those (read through netlink in the
daemon's namespace), never the host's eth0.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from daemonkit import Daemon
from dpkit import wait_for
from netkit import Topology
from snmpkit import parse_walk

pytestmark = pytest.mark.datapath  # root and network namespaces (no bcc needed)

AGENT_PORT = 16171
COMMUNITY = "ns-ro"
IF_NUMBER = "1.3.6.1.2.1.2.1.0"
IF_DESCR = "1.3.6.1.2.1.2.2.1.2"
IF_HC_IN_OCTETS = "1.3.6.1.2.1.31.1.1.1.6"


def in_ns(ns: str, *cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["nsenter", f"--net=/run/netns/{ns}", *cmd],
                          capture_output=True, text=True, timeout=20)  # fmt: skip


def walk(ns: str, oid: str) -> dict[str, str]:
    res = in_ns(ns, "snmpbulkwalk", "-v2c", "-c", COMMUNITY, "-t", "1", "-r", "1", "-OnqeU",
                "-Cr50", f"127.0.0.1:{AGENT_PORT}", oid)  # fmt: skip
    assert res.returncode == 0, res.stderr
    return parse_walk(res.stdout)


def ns_links(ns: str) -> dict[str, dict[str, Any]]:
    res = subprocess.run(["ip", "-n", ns, "-s", "-s", "-j", "link", "show"],
                         capture_output=True, text=True, timeout=10, check=True)  # fmt: skip
    return {link["ifname"]: link for link in json.loads(res.stdout)}


def test_if_mib_reads_the_daemons_namespace(netkit: Topology, tmp_path: Path) -> None:
    host_eth0 = Path("/sys/class/net/eth0/statistics/rx_bytes")
    if not host_eth0.exists():
        pytest.skip("the host has no eth0 to collide with")
    lb, peer = netkit.host("lb"), netkit.host("peer")
    link = netkit.link(lb, peer, ["198.18.0.254/24"], ["198.18.0.1/24"])
    # The LB's side takes the name of the host's interface.
    name = link.ifname(lb)
    for args in (["dev", name, "down"], ["dev", name, "name", "eth0"], ["dev", "eth0", "up"]):
        subprocess.run(["ip", "-n", lb.ns, "link", "set", *args], check=True, timeout=10)
    d = Daemon(tmp_path, netns=lb.ns)
    d.start()
    try:
        d.apply({"snmp": {"enabled": True, "port": AGENT_PORT, "listen-address": ["127.0.0.1"],
                          "community": [{"name": "nms", "secret": COMMUNITY}]}})  # fmt: skip
        assert peer.ping("198.18.0.254", count=20, timeout=5)
        links = ns_links(lb.ns)
        assert set(links) == {"lo", "eth0"}
        eth0 = links["eth0"]["ifindex"]
        expected = links["eth0"]["stats64"]["rx"]["bytes"]
        assert expected > 20 * 84  # twenty echo requests at least

        def counter() -> int | None:
            value = walk(lb.ns, IF_HC_IN_OCTETS).get(f"{IF_HC_IN_OCTETS}.{eth0}")
            return int(value) if value and value.isdigit() else None

        # The snapshot is refreshed every second or so; nothing else talks on this eth0
        # (no IPv6 on it, so no router solicitations) once the pings are answered.
        got = wait_for(lambda: (v := counter()) is not None and v >= expected and v, timeout=10,
                       step=0.3)  # fmt: skip
        assert got - expected < 2_000, (got, expected)
        assert got != int(host_eth0.read_text())  # not the host's eth0
        # Every interface of the namespace, each at its own index, and nothing else.
        assert walk(lb.ns, IF_NUMBER)[IF_NUMBER] == "2"
        descr = walk(lb.ns, IF_DESCR)
        assert descr == {f"{IF_DESCR}.{link['ifindex']}": n for n, link in links.items()}
    finally:
        d.stop()
