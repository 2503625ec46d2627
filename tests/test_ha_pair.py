"""Two appliances, each daemon with its own keepalived, in namespaces (tests/hakit.py: an
IPv4 and an IPv6 instance, three backends): roles, failover, no preemption, maintenance
switchover, split-brain guards, checked in both namespaces and on the wire (who answers
ARP and neighbour solicitation for the VIPs, who answers and forwards a SYN to them).

No conntrack sync here: only new connections after a failover are asserted to flow
(connections that live through one: tests/test_ha_failover.py).
"""

from __future__ import annotations

import time

import pytest
from hakit import NAMES, VIP, VIP6, Node, Pair, wait_for

pytestmark = [pytest.mark.datapath, pytest.mark.slow]

FAILOVER_LIMIT_S = 3.0  # the issue asks ~1-2 s; the shared 2-core CI machine gets margin


def settled(p: Pair) -> tuple[Node, Node]:
    """Wait for exactly one master holding the VIP, the other a backup; (master, backup)."""

    def check() -> tuple[Node, Node] | None:
        master = p.master()
        if master is None:
            return None
        other = p.b if master is p.a else p.a
        if other.role() != "backup" or p.holders() != [master.name]:
            return None
        if p.holders(VIP6) != [master.name]:
            return None
        return master, other

    return wait_for(check, timeout=20)


def serves(p: Pair) -> bool:
    """The services answer new connections through the VIPs (DNAT and full-NAT, IPv6)."""
    return (p.get(80) in NAMES and p.get(81) in NAMES
            and p.client.http_get(f"http://[{VIP6}]:80/", timeout=2.0) in NAMES)


def never_two_holders(p: Pair, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for vip in (VIP, VIP6):
            assert len(p.holders(vip)) <= 1, f"both nodes hold {vip}"
        time.sleep(0.05)


def test_failover_no_preemption_maintenance_and_partition(pair: Pair) -> None:
    p = pair
    master, backup = settled(p)
    wait_for(lambda: serves(p), timeout=15)
    assert p.client_neighbour() == master.mac()
    status = master.ha()
    assert status["witness-reachable"] is True and status["last-failover"]
    assert master.daemon.cli_json("status")["ha"] == {"front": "master", "front6": "master"}

    # The master's links go down (a dead node: its TC program would forward on otherwise).
    master.links(False)
    started = time.monotonic()
    wait_for(lambda: backup.holds() and backup.holds(VIP6), timeout=FAILOVER_LIMIT_S + 5,
             step=0.02)  # fmt: skip
    took = time.monotonic() - started
    print(f"failover: the VIP on the backup {took:.2f} s after the master's links went down")
    wait_for(lambda: p.client_neighbour() == backup.mac(), timeout=3)
    wait_for(lambda: serves(p), timeout=5)
    assert took < FAILOVER_LIMIT_S, f"failover took {took:.2f} s"
    assert backup.role() == "master"

    # The old master returns: no preemption (nopreempt, and it sees the VIP answered).
    master.links(True)
    wait_for(lambda: master.role() == "backup", timeout=10)
    never_two_holders(p, 2.0)
    assert backup.role() == "master" and p.holders() == [backup.name]
    assert serves(p)

    # Maintenance: take the master role back on purpose, then release it.
    res = master.daemon.cli("ha", "takeover")
    assert res.returncode == 0, res.stderr
    try:
        wait_for(lambda: master.role() == "master" and backup.role() == "backup", timeout=10)
    except AssertionError:
        raise AssertionError(f"takeover: {master.ha()} / {backup.ha()}") from None
    wait_for(lambda: p.holders() == [master.name] and p.client_neighbour() == master.mac(),
             timeout=5)  # fmt: skip
    wait_for(lambda: serves(p), timeout=5)
    # The takeover is over once master: back to the configured priority and nopreempt.
    conf = master.daemon.workdir / "ha" / "keepalived.conf"
    wait_for(lambda: "priority 150" in conf.read_text(), timeout=5)
    assert master.daemon.cli("ha", "release").returncode == 0
    wait_for(lambda: backup.role() == "master" and p.holders() == [backup.name], timeout=10)
    assert master.role() == "fault" and master.ha()["released"] is True
    assert master.daemon.cli("ha", "resume").returncode == 0
    wait_for(lambda: master.role() == "backup", timeout=10)
    assert backup.role() == "master"

    # The same pair then goes through the split-brain guards (one pair start per test run:
    # each costs two datapath compilations).
    advert_partition_keeps_one_holder(p)


def on_the_wire(p: Pair, holder: Node, other: Node) -> None:
    """Seen with packets on the wire: only `holder` answers ARP for the IPv4 VIP and
    neighbour solicitation for the IPv6 one, and a SYN to either VIP is answered and sent on
    to the backends by `holder` alone, whichever node's MAC it was sent to (`other`, a
    router, hands a packet for an address it does not hold to the node that does, with an
    ICMP redirect: its datapath does not balance it)."""
    wire = p.wire([holder.mac(), other.mac()])
    assert wire["arp"] == [holder.mac()] and wire["nd"] == [holder.mac()], wire
    assert len(wire["syn"]) == 4, wire
    for mac, vip, answered_by, forwarded_by in wire["syn"]:
        assert answered_by == [holder.mac()] and forwarded_by == [holder.name], (mac, vip, wire)


def advert_partition_keeps_one_holder(p: Pair) -> None:
    master, backup = settled(p)
    # Drop only the VRRP adverts (IPv4 and IPv6) between the two nodes, on the client-side
    # bridge.
    p.cbr.run(["nft", "-f", "-"], check=True, input=(
        "table bridge sl_ha {\n chain filt {\n  type filter hook forward priority 0;\n"
        "  ip protocol vrrp drop\n  ip6 nexthdr vrrp drop\n }\n}\n"))  # fmt: skip
    # VRRP alone would make the backup master after 3 adverts: it must not take the VIPs.
    never_two_holders(p, 3.0)
    assert p.holders() == [master.name] and p.holders(VIP6) == [master.name]
    assert backup.role() == "backup"
    on_the_wire(p, master, backup)
    wait_for(lambda: serves(p), timeout=5)

    # Now the master also loses the witness (ICMP to the client dropped): it must go to
    # FAULT and release, and the backup, no longer seeing the VIPs answered, takes them.
    port = p.ports[master.name]
    p.cbr.run(["nft", "add", "rule", "bridge", "sl_ha", "filt", "iifname", port,
               "ip", "protocol", "icmp", "drop"], check=True)  # fmt: skip
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and (p.holders() != [backup.name]
                                           or p.holders(VIP6) != [backup.name]):
        for vip in (VIP, VIP6):
            assert len(p.holders(vip)) <= 1, f"both nodes hold {vip}"
        time.sleep(0.05)
    assert p.holders() == [backup.name] and p.holders(VIP6) == [backup.name]
    wait_for(lambda: master.ha()["witness-reachable"] is False, timeout=3)
    assert master.role() == "fault" and backup.role() == "master"
    never_two_holders(p, 2.0)
    # The FAULT node is silent for both VIPs on the wire; the new master answers.
    on_the_wire(p, backup, master)
    wait_for(lambda: serves(p), timeout=5)
