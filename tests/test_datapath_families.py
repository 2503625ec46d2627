"""The attached sluice_lb hands each family's packets to a balancer of its own (bpf/lb.c):
sluice_lb4 (core) and sluice_lb6 (the "ipv6" module), each verified with one conntrack
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


def test_each_tail_call_of_the_dispatcher_has_a_constant_slot(lb_program: Any) -> None:
    """A slot the verifier knows (an immediate in r3 on every path to the call) becomes a
    direct jump; one merged call for two slots would be an indirect one per packet. LLVM
    merges calls that end alike: lb.c gives the IPv4 call a return of its own."""
    raw = lb_program.bpf.dump_func(b"sluice_lb")
    code = [struct.unpack_from("<BBhi", raw, i) for i in range(0, len(raw), 8)]
    targets = set()
    for pc, (op, _regs, off, _imm) in enumerate(code):
        if op & 7 in (5, 6) and op & 0xF0 not in (0x80, 0x90):
            targets.add(pc + 1 + off)  # where a jump lands
    calls = [pc for pc, (op, _r, _o, imm) in enumerate(code) if op == 0x85 and imm == TAIL_CALL]
    slots = []
    for pc in calls:
        j = pc - 1
        while code[j][1] & 0xF != 3:  # the last write to r3 before the call
            j -= 1
        op, _regs, _off, imm = code[j]
        assert op == 0xB7, f"r3 at insn {j} is not an immediate"  # mov64 r3, imm
        assert not any(j < t <= pc for t in targets), f"a jump lands between {j} and {pc}"
        slots.append(imm)
    from appliance.datapath.program import JMP_INDEX

    assert {JMP_INDEX["sluice_lb4"], JMP_INDEX["sluice_lb6"]} <= set(slots), slots


def test_a_packet_is_counted_through_its_familys_balancer(lb_program: Any) -> None:
    """bench/bpfcount.py follows sluice_lb into the family's balancer (what pktcount and
    the benchmarks count); a frame of neither family stops in sluice_lb, untouched."""
    sys.path.insert(0, str(BENCH))
    import bpfcount

    lb_program.need("ipv6")
    frames = {4: bytes(12) + b"\x08\x00" + bytes([0x45]) + bytes(60),
              6: bytes(12) + b"\x86\xdd" + bytes([0x60]) + bytes(60)}  # fmt: skip
    alone = bpfcount.count(lb_program.bpf, b"sluice_lb", frames[4], 1)
    for v, frame in frames.items():
        res = bpfcount.balancer(lb_program, frame, 1)
        assert res.insns > alone.insns + 20, (v, res.insns, alone.insns)  # parsed past L2
        assert res.verdict == 0 and res.tail_call is None, res.summary()
    arp = bpfcount.balancer(lb_program, bytes(12) + b"\x08\x06" + bytes(28), 1)
    assert arp.verdict == 0 and arp.insns < 60, arp.summary()
