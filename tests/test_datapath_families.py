"""Each family has a balancer of its own (bpf/lb.c): sluice_lb is IPv4's, sluice_lb6 (the
"ipv6" module) IPv6's, each verified with one conntrack table (bpf/lib/ct_tables.h).
sluice_lb6 is a TC filter of its own for untagged IPv6 packets, ahead of sluice_lb, which
hands VLAN-tagged IPv6 packets over (TC matches a filter's protocol against the tag's).
Real packets through both: tests/test_datapath*.py (tagged ones: test_datapath_vlan.py,
test_datapath_l3dsr.py); here what those cannot show."""

from __future__ import annotations

import struct
import sys
from pathlib import Path
from typing import Any

import netkit as kit
import pytest

from appliance import netlink

pytestmark = pytest.mark.datapath

BENCH = Path(__file__).resolve().parent.parent / "bench"
TAIL_CALL = 12  # BPF_FUNC_tail_call


def test_the_handoff_to_ipv6s_balancer_has_a_constant_slot(lb_program: Any) -> None:
    """A slot the verifier knows (an immediate in r3 on every path to the call) becomes a
    direct jump; one call merged for two slots would be an indirect one per IPv6 packet.
    LLVM merges calls that end alike: lb.c gives this one a return of its own."""
    from appliance.datapath.program import JMP_INDEX

    raw = lb_program.bpf.dump_func(b"sluice_lb")
    code = [struct.unpack_from("<BBhi", raw, i) for i in range(0, len(raw), 8)]
    targets = set()
    for pc, (op, _regs, off, _imm) in enumerate(code):
        if op & 7 in (5, 6) and op & 0xF0 not in (0x80, 0x90):
            targets.add(pc + 1 + off)  # where a jump lands
    slots = []
    for pc, (op, _r, _o, imm) in enumerate(code):
        if op != 0x85 or imm != TAIL_CALL:
            continue
        j = pc - 1
        while code[j][1] & 0xF != 3:  # the last write to r3 before the call
            j -= 1
        if code[j][0] == 0xB7 and not any(j < t <= pc for t in targets):  # mov64 r3, imm
            slots.append(code[j][3])
    assert JMP_INDEX["sluice_lb6"] in slots, slots


def _tagged(frame: bytes) -> bytes:
    return frame[:12] + b"\x81\x00\x00\x07" + frame[12:]


def test_a_packet_is_counted_through_its_familys_balancer(lb_program: Any) -> None:
    """bench/bpfcount.py counts what TC runs first (what pktcount and the benchmarks
    count): sluice_lb6 for an untagged IPv6 packet, sluice_lb for the rest, followed into
    sluice_lb6 for a tagged IPv6 packet. sluice_lb passes an untagged one: its filter is
    behind sluice_lb6's, which saw it first."""
    sys.path.insert(0, str(BENCH))
    import bpfcount

    lb_program.need("ipv6")
    v4 = bytes(12) + b"\x08\x00" + bytes([0x45]) + bytes(60)
    v6 = bytes(12) + b"\x86\xdd" + bytes([0x60]) + bytes(60)
    alone = bpfcount.count(lb_program.bpf, b"sluice_lb", v6, 1)
    assert alone.tail_call is None and alone.verdict in (-1, 0xFFFFFFFF), alone.summary()
    assert alone.insns < 20, alone.summary()
    handed = bpfcount.count(lb_program.bpf, b"sluice_lb", _tagged(v6), 1)
    assert handed.tail_call == 12, handed.summary()  # JMP_LB6
    res = bpfcount.balancer(lb_program, v6, 1)
    assert res.tail_call is None and res.insns > alone.insns + 20, res.summary()
    res = bpfcount.balancer(lb_program, _tagged(v6), 1)
    assert res.tail_call is None and res.insns > handed.insns + 20, res.summary()
    for frame in (v4, bytes(12) + b"\x08\x06" + bytes(28)):  # IPv4, ARP
        res = bpfcount.balancer(lb_program, frame, 1)
        assert res.verdict == 0 and res.tail_call is None, res.summary()


def test_ipv6s_balancer_is_a_filter_ahead_of_sluice_lb(
    lb_program: Any, netkit: kit.Topology, monkeypatch: pytest.MonkeyPatch
) -> None:
    """attach puts sluice_lb6 (protocol ipv6) at prio 1 and sluice_lb (every protocol) at
    prio 2; an older daemon's single filter (sluice_lb, every protocol, prio 1) goes; a
    restarted daemon attaches the IPv6 program its predecessor left in the slot until its
    own module loads; detach removes both."""
    a, b = netkit.host("a"), netkit.host("b")
    link = netkit.link(a, b, ["198.18.0.1/30"], ["198.18.0.2/30"])
    ifname, ns = link.ifname(b), b.ns
    lb_program.need("ipv6")
    both = {1: netlink.ETH_P_IPV6, 2: netlink.ETH_P_ALL}
    try:
        # An older daemon's filter: sluice_lb for every protocol at prio 1.
        netlink.attach_tc(ifname, lb_program.fn.fd, "sluice_lb", "ingress", netns=ns)
        lb_program.attach(ifname, ns)
        assert netlink.tc_filters(ifname, "ingress", netns=ns) == ["sluice_lb6", "sluice_lb"]
        assert netlink.tc_protocols(ifname, "ingress", netns=ns) == both
        # Attaching again replaces both in place.
        lb_program.attach(ifname, ns)
        assert netlink.tc_protocols(ifname, "ingress", netns=ns) == both
        # A new daemon before its "ipv6" module: the program in the slot.
        with monkeypatch.context() as m:
            m.delitem(lb_program.modules, "ipv6")
            assert lb_program.entry(True) is lb_program.fn
            netlink.attach_tc(ifname, lb_program.fn.fd, "sluice_lb", "ingress", netns=ns)
            lb_program.attach(ifname, ns)
            assert netlink.tc_filters(ifname, "ingress", netns=ns) == ["sluice_lb6",
                                                                       "sluice_lb"]  # fmt: skip
            assert netlink.tc_protocols(ifname, "ingress", netns=ns) == both
        # Nothing IPv6 anywhere: sluice_lb alone, the older filter gone.
        with monkeypatch.context() as m:
            m.setattr(lb_program, "_ipv6_fd", lambda: (None, False))
            netlink.attach_tc(ifname, lb_program.fn.fd, "sluice_lb", "ingress", netns=ns)
            lb_program.attach(ifname, ns)
            assert netlink.tc_filters(ifname, "ingress", netns=ns) == ["sluice_lb"]
            assert netlink.tc_protocols(ifname, "ingress", netns=ns) == {2: netlink.ETH_P_ALL}
        assert lb_program.entry(True) is lb_program.function("sluice_lb6")
        assert lb_program.entry(False) is lb_program.fn
    finally:
        assert lb_program.detach(ifname, ns)
    assert netlink.tc_filters(ifname, netns=ns) == []
