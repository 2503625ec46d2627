"""bcc smoke test: compile bpf/smoke.c, attach it with appliance.netlink, count real pings."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import netkit as kit
import pytest

from appliance import netlink

SMOKE_C = Path(__file__).resolve().parents[1] / "bpf" / "smoke.c"
IPPROTO_ICMP, IPPROTO_ICMPV6 = 1, 58
PINGS = 5

pytestmark = pytest.mark.datapath


@pytest.fixture(scope="module")
def smoke() -> Iterator[Any]:
    """bpf/smoke.c compiled once for the module (clang takes about a second)."""
    kit.require_netns()  # root first: loading BPF programs needs it as much as netns do
    bcc = pytest.importorskip("bcc", reason="needs bcc (python3-bpfcc)")
    b = bcc.BPF(src_file=str(SMOKE_C).encode())  # bcc 0.26 warns on str arguments
    try:
        yield b
    finally:
        b.cleanup()


def _count(b: Any, proto: int) -> tuple[int, int]:
    """(packets, bytes) of one protocol slot, summed over CPUs."""
    table = b[b"smoke_counters"]
    per_cpu = table[table.Key(proto)]
    return sum(c.packets for c in per_cpu), sum(c.bytes for c in per_cpu)


def test_smoke_program_counts_pings(smoke: Any, netkit: kit.Topology) -> None:
    from bcc import BPF

    client, server = netkit.host("client"), netkit.host("server")
    link = netkit.link(
        client, server, ["198.18.0.1/30", "2001:db8::1/64"], ["198.18.0.2/30", "2001:db8::2/64"]
    )
    ifname, ns = link.ifname(server), server.ns
    assert netlink.ifindex(ifname, netns=ns) == server.ifindex(ifname)

    fn = smoke.load_func(b"smoke_count", BPF.SCHED_CLS)
    netlink.attach_tc(ifname, fn.fd, fn.name, "ingress", netns=ns)
    assert netlink.tc_filters(ifname, netns=ns) == ["smoke_count"]
    # Attaching again replaces our filter in place instead of stacking a second one.
    netlink.attach_tc(ifname, fn.fd, fn.name, "ingress", netns=ns)
    assert netlink.tc_filters(ifname, "ingress", netns=ns) == ["smoke_count"]
    assert netlink.tc_filters(ifname, "egress", netns=ns) == []

    icmp_before, _ = _count(smoke, IPPROTO_ICMP)
    icmp6_before, _ = _count(smoke, IPPROTO_ICMPV6)
    assert client.ping("198.18.0.2", count=PINGS)
    assert client.ping("2001:db8::2", count=PINGS)
    icmp, icmp_bytes = _count(smoke, IPPROTO_ICMP)
    icmp6, _ = _count(smoke, IPPROTO_ICMPV6)

    # Ingress on the server's end sees every echo request (v6 also neighbour discovery).
    assert icmp - icmp_before >= PINGS > 0
    assert icmp6 - icmp6_before >= PINGS
    assert icmp_bytes >= (icmp - icmp_before) * 84  # Ethernet-less 20 + 8 + 56 per echo

    assert netlink.detach_tc(ifname, "ingress", netns=ns) is True
    assert netlink.tc_filters(ifname, netns=ns) == []
    assert netlink.detach_tc(ifname, "ingress", netns=ns) is False  # idempotent
    # With the program gone, pings still work and no longer count.
    assert client.ping("198.18.0.2", count=2)
    assert _count(smoke, IPPROTO_ICMP)[0] == icmp

    namespaces = netkit.namespaces
    netkit.close()  # the fixture would do it too; closing here lets us look afterwards
    assert not set(namespaces) & set(kit.list_netns())


def test_netlink_errors_are_plain_python(netkit: kit.Topology) -> None:
    host = netkit.host("a")
    with pytest.raises(LookupError):
        netlink.ifindex("nosuchif0", netns=host.ns)
    with pytest.raises(FileNotFoundError):
        netlink.ifindex("lo", netns="sl-00000000-nosuchns")
    assert "sl-00000000-nosuchns" not in kit.list_netns()  # never created as a side effect
    with pytest.raises(ValueError):
        netlink.tc_filters("lo", "sideways", netns=host.ns)  # type: ignore[arg-type]
    assert netlink.detach_tc("lo", netns=host.ns) is False
    assert netlink.tc_filters("lo", netns=host.ns) == []


def test_detach_removes_clsact_only_when_both_hooks_are_empty(
    smoke: Any, netkit: kit.Topology
) -> None:
    from bcc import BPF

    a, b = netkit.host("a"), netkit.host("b")
    link = netkit.link(a, b, ["198.18.0.1/30"], ["198.18.0.2/30"])
    ifname = link.ifname(a)

    def qdiscs() -> str:
        return a.run(["tc", "qdisc", "show", "dev", ifname], check=True).stdout

    fn = smoke.load_func(b"smoke_count", BPF.SCHED_CLS)
    netlink.attach_tc(ifname, fn.fd, fn.name, "ingress", netns=a.ns)
    netlink.attach_tc(ifname, fn.fd, fn.name, "egress", netns=a.ns)
    assert netlink.tc_filters(ifname, netns=a.ns) == ["smoke_count", "smoke_count"]

    assert netlink.detach_tc(ifname, "ingress", netns=a.ns)
    assert netlink.tc_filters(ifname, "egress", netns=a.ns) == ["smoke_count"]
    assert "clsact" in qdiscs()  # still needed by the egress filter

    assert netlink.detach_tc(ifname, "egress", netns=a.ns)
    assert "clsact" not in qdiscs()
    assert a.ping("198.18.0.2")
