"""Each family has a balancer of its own (bpf/lb.c): the attached sluice_lb is IPv4's and
hands IPv6 packets to sluice_lb6 (the "ipv6" module), each verified with one conntrack
table (bpf/lib/ct_tables.h). Real packets through both: tests/test_datapath*.py; here what
those cannot show."""

from __future__ import annotations

import struct
import sys
from pathlib import Path
from typing import Any

import pytest

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


def test_a_packet_is_counted_through_its_familys_balancer(lb_program: Any) -> None:
    """bench/bpfcount.py follows sluice_lb into IPv6's balancer (what pktcount and the
    benchmarks count); an IPv4 packet stays in sluice_lb, a frame of neither family too."""
    sys.path.insert(0, str(BENCH))
    import bpfcount

    lb_program.need("ipv6")
    v4 = bytes(12) + b"\x08\x00" + bytes([0x45]) + bytes(60)
    v6 = bytes(12) + b"\x86\xdd" + bytes([0x60]) + bytes(60)
    alone = bpfcount.count(lb_program.bpf, b"sluice_lb", v6, 1)
    assert alone.tail_call is not None, alone.summary()  # it ends in the handoff
    res = bpfcount.balancer(lb_program, v6, 1)
    assert res.tail_call is None and res.insns > alone.insns + 20, res.summary()
    for frame in (v4, bytes(12) + b"\x08\x06" + bytes(28)):  # IPv4, ARP
        res = bpfcount.balancer(lb_program, frame, 1)
        assert res.verdict == 0 and res.tail_call is None, res.summary()
