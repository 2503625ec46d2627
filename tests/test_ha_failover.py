"""Hitless failover of an HA pair with conntrack sync (issue #16), in namespaces
(tests/hakit.py, `synced_pair`): the master streams its flows to the backup, which installs
them bound to its own ids while its VIPs are paused; the master's links go down; every
connection carries on through the new master with its translation and endpoint.

Load (tests/haload.py, in the client): long-lived TCP connections to a DNAT and a full-NAT
service, each sending a numbered line every 20 ms; UDP flows every 20 ms; 20 new
connections a second; on the IPv4 and the IPv6 VIP at once. Then the old master returns:
no preemption, it takes the new master's full dump and is a ready backup, and the load sees
no second disruption. Roles and the sync are also read as an NMS reads them: a real SNMP
walk of each daemon's SLUICE-LB-MIB::sluiceHa.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from hakit import NAMES, SLUICE_HA_OID, VIP, VIP6, Node, Pair, wait_for

pytestmark = [pytest.mark.datapath, pytest.mark.slow]

LOAD = Path(__file__).with_name("haload.py")
CONNS = 25  # per TCP port and VIP: 50 long-lived connections per VIP (the figure)
UDP_FLOWS = 5  # per VIP
MAX_GAP_S = 1.0


def settled(p: Pair) -> tuple[Node, Node]:
    def check() -> tuple[Node, Node] | None:
        st = {n.name: n.ha() for n in p.nodes}
        roles = {n: {i["name"]: i["role"] for i in s["instances"]} for n, s in st.items()}
        masters = [n for n in p.nodes if set(roles[n.name].values()) == {"master"}]
        if len(masters) != 1:
            return None
        other = p.b if masters[0] is p.a else p.a
        if set(roles[other.name].values()) != {"backup"}:
            return None
        return masters[0], other

    return wait_for(check, timeout=30)


def flows(node: Node, vip: str, min_age: float = 0.0) -> dict[tuple[str, str], str]:
    """(service, client) -> endpoint of the node's established flows to `vip` at least
    `min_age` s old (the load's long-lived ones; its new connections last milliseconds)."""
    rows = node.daemon.cli_json("ct", "list")
    return {(r["service"], r["client"]): r["endpoint"] for r in rows
            if r["vip"].startswith(f"[{vip}]" if ":" in vip else vip) and not r["expired"]
            and r["state"] == "established" and r["age-s"] >= min_age}  # fmt: skip


def snmp_ha(node: Node, peer: Node) -> dict[str, Any]:
    """SLUICE-LB-MIB's sluiceHa as an NMS reads it from the node's running daemon: the role
    per instance, the sync scalars and the row of the sync peer."""
    from snmpkit import string_index

    tree = node.snmp_walk()
    ha = SLUICE_HA_OID
    row = f"1.4.198.18.1.{2 if peer.name == 'lba' else 3}"
    names = ("front", "front6")
    return {
        "roles": {n: int(tree.get(f"{ha}.2.1.2.{string_index(n)}", 0)) for n in names},
        "synced": tree.get(f"{ha}.1.2.0"), "last-failover": tree.get(f"{ha}.1.3.0"),
        "peer": {c: tree.get(f"{ha}.3.1.{c}.{row}") for c in range(3, 13)},
    }  # fmt: skip


def start_load(p: Pair, vip: str) -> subprocess.Popen[str]:
    return p.client.popen(["python3", str(LOAD), vip, "--tcp", "7,8", "--conns", str(CONNS),
                           "--udp", "53", "--udp-flows", str(UDP_FLOWS), "--new-port", "7",
                           "--duration", "60"], stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip


def ready(proc: subprocess.Popen[str]) -> None:
    import select

    assert proc.stdout is not None
    r, _, _ = select.select([proc.stdout], [], [], 30)
    assert r, "the load did not start"
    line = proc.stdout.readline().strip()
    assert line == "READY", (line, proc.stderr.read() if proc.stderr else "")


def result(proc: subprocess.Popen[str]) -> dict[str, Any]:
    """Stop the load (stdin closed) and read its summary."""
    out, err = proc.communicate(input="", timeout=60)
    assert proc.returncode == 0, err
    return json.loads(out.strip().splitlines()[-1])


def test_failover_keeps_every_connection(synced_pair: Pair) -> None:
    p = synced_pair
    master, backup = settled(p)
    wait_for(lambda: p.get(80) in NAMES, timeout=15)
    loads = {vip: start_load(p, vip) for vip in (VIP, VIP6)}
    try:
        for proc in loads.values():
            ready(proc)
        # Every established flow of the master is on the backup, bound to the same endpoint.
        for vip in (VIP, VIP6):
            mine = wait_for(lambda vip=vip: (m := flows(master, vip, min_age=1.0))
                            and len(m) >= 2 * CONNS + UDP_FLOWS and m, timeout=10)  # fmt: skip
            try:
                wait_for(lambda vip=vip, mine=mine: flows(backup, vip).items() >= mine.items(),
                         timeout=5)  # fmt: skip
            except AssertionError:
                theirs = flows(backup, vip)
                missing = {k: v for k, v in mine.items() if theirs.get(k) != v}
                rows = [r for r in backup.daemon.cli_json("ct", "list")
                        if r["service"].startswith("echo")]
                raise AssertionError(f"not synced: {missing}; backup rows {rows[:6]}; sync: "
                                     f"{master.ha()['sync']} / {backup.ha()['sync']}") from None
        before = {vip: flows(master, vip, min_age=1.0) for vip in (VIP, VIP6)}
        # The same through SNMP (a real walk of each daemon's agent): roles, the channel
        # both ways, flows sent and received, lag samples, the backup's full resync.
        # The agents answer from each daemon's snapshot, refreshed off the loop: a node whose
        # roles changed a moment ago (a backup's keepalived starts after its first commit's
        # compiles) shows them at the next refresh.
        snmp_m = wait_for(lambda: (r := snmp_ha(master, backup))["roles"]
                          == {"front": 3, "front6": 3} and r, timeout=20)  # master(3)
        snmp_b = wait_for(lambda: (r := snmp_ha(backup, master))["roles"]
                          == {"front": 2, "front6": 2} and r, timeout=20)  # backup(2)
        assert snmp_b["synced"] == "1", snmp_b
        assert snmp_m["peer"][4] == "1" and int(snmp_m["peer"][6]) > 0, snmp_m  # sending
        assert snmp_b["peer"][3] == "1" and int(snmp_b["peer"][5]) > 0, snmp_b  # receiving
        assert int(snmp_b["peer"][9]) > 0 and int(snmp_b["peer"][10]) >= 1, snmp_b  # lag, dumps
        assert int(snmp_b["peer"][8]) >= int(snmp_b["peer"][7]), snmp_b  # p99 >= p50 (us)
        master.links(False)
        started = time.monotonic()
        wait_for(lambda: backup.holds(VIP) and backup.holds(VIP6), timeout=5, step=0.02)
        print(f"failover: the VIPs on the backup after {time.monotonic() - started:.2f} s")
        wait_for(lambda: p.client_neighbour() == backup.mac(), timeout=3)
        # Flows live through the new master now; every flow kept its endpoint there.
        time.sleep(2.0)
        after = {vip: flows(backup, vip) for vip in (VIP, VIP6)}
        snmp_new = wait_for(lambda: (r := snmp_ha(backup, master))["roles"]
                            == {"front": 3, "front6": 3} and r, timeout=3)  # fmt: skip
        assert snmp_new["last-failover"] != snmp_b["last-failover"], (snmp_b, snmp_new)
        # The old master returns: it stays a backup (no preemption), is in sync again and
        # holds the flows, while the load runs. In sync: the new master's channel either
        # broke during the outage and reconnected with a full dump, or (an outage shorter
        # than its idle timeout) survived it, and TCP delivers the queued changes in order.
        peer = next(iter(master.ha()["sync"]["peers"]))
        was = dict(master.ha()["sync"]["peers"][peer])
        master.links(True)
        try:
            wait_for(lambda: {i["role"] for i in master.ha()["instances"]} == {"backup"},
                     timeout=15)  # fmt: skip
        except AssertionError:
            raise AssertionError(f"the old master: {master.ha()}") from None
        wait_for(lambda: (st := master.ha()["sync"]["peers"][peer])["connected"] and (
            st["dumps"] > was["dumps"] or st["flows"] > was["flows"]), timeout=10)
        for vip in (VIP, VIP6):  # the long-lived flows, each on its endpoint
            wait_for(lambda vip=vip: flows(master, vip).items() >= before[vip].items(), timeout=5)
        time.sleep(1.0)
        assert {i["role"] for i in backup.ha()["instances"]} == {"master"}
        assert backup.holds(VIP) and not master.holds(VIP) and not master.holds(VIP6)
        results = {vip: result(proc) for vip, proc in loads.items()}
    finally:
        for proc in loads.values():
            if proc.poll() is None:
                proc.kill()
    print("failover:", json.dumps(results))
    for vip, res in results.items():
        assert res["tcp"]["errors"] == [], (vip, res)
        assert res["tcp"]["max_gap"] < MAX_GAP_S, (vip, res)
        assert res["udp"]["silent"] == [] and res["udp"]["max_gap"] < MAX_GAP_S, (vip, res)
        assert {k: after[vip].get(k) for k in before[vip]} == before[vip]
    assert {i["role"] for i in backup.ha()["instances"]} == {"master"}
