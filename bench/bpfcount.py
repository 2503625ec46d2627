"""How much work one packet costs the balancer, counted instead of timed.

A small eBPF interpreter in Python: it runs a loaded program's bytecode (bcc's
``dump_func``: the instructions as compiled, before the kernel's verifier rewrites them) on
one frame and counts what it executes. Map lookups read the real maps the program was
loaded with (through the bpf syscall, read-only: what the program writes lands in a private
copy), so the packet takes the path the kernel would take. Nothing is sent and no map is
changed.

It counts, per packet: BPF instructions executed, helper calls (by name), and the distinct
64-byte lines of memory the program touched (stack, context, packet, map values: what a
cold run pays cache misses on). These do not move with the machine's load, so two trees
can be compared in one run on a busy machine (bench/pktcost.py ``--count``): the timed
figures say what the work costs, the counts say whether the work changed.

Not counted: the work inside helpers (a hash lookup's bucket walk, a checksum helper's
loop) beyond the call itself, and the instructions the verifier adds (inlined array
lookups, context rewrites). The same for both trees, so a difference is a difference.
"""

from __future__ import annotations

import ctypes as ct
import os
import random
import re
import struct
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

M64 = (1 << 64) - 1
M32 = (1 << 32) - 1

# Address space: 64 KiB slots; slot number -> region.
SLOT = 16
STACK_BASE = 0x1000 << SLOT
CTX_BASE = 0x2000 << SLOT
PKT_BASE = 0x3000 << SLOT
MAPVAL_BASE = 0x4000 << SLOT
MAPOBJ_BASE = 0x5000 << SLOT
HEADROOM = 256

# struct __sk_buff offsets that hold pointers in the kernel's rewrite.
SKB_DATA, SKB_DATA_END, SKB_DATA_META = 76, 80, 140
SKB_SIZE = 192

# bpf_map_type values (uapi)
PERCPU_TYPES = {5, 6, 10}  # PERCPU_HASH, PERCPU_ARRAY, LRU_PERCPU_HASH
ARRAY_TYPES = {2, 6}  # ARRAY, PERCPU_ARRAY
PROG_ARRAY = 3
RINGBUF = 27

TC_ACT_OK, TC_ACT_SHOT, TC_ACT_REDIRECT = 0, 2, 7


def _helper_names() -> dict[int, str]:
    """Helper id -> name, from the uapi header's __BPF_FUNC_MAPPER (in order)."""
    names: dict[int, str] = {}
    try:
        text = Path("/usr/include/linux/bpf.h").read_text()
    except OSError:
        return names
    block = text[text.find("#define __BPF_FUNC_MAPPER") :]
    block = block[: block.find("\n\n")]
    for i, m in enumerate(re.finditer(r"FN\((\w+)", block)):
        names[i] = m.group(1)
    return names


HELPERS = _helper_names()


class _MapInfo(ct.Structure):
    _fields_ = [("type", ct.c_uint32), ("id", ct.c_uint32), ("key_size", ct.c_uint32),
                ("value_size", ct.c_uint32), ("max_entries", ct.c_uint32),
                ("map_flags", ct.c_uint32), ("name", ct.c_char * 16),
                ("rest", ct.c_uint8 * 128)]  # fmt: skip


_lib: Any = None


def _libbpf() -> Any:
    global _lib
    if _lib is None:
        _lib = ct.CDLL("libbpf.so.1", use_errno=True)
        _lib.bpf_map_lookup_elem.argtypes = [ct.c_int, ct.c_void_p, ct.c_void_p]
        _lib.bpf_obj_get_info_by_fd.argtypes = [ct.c_int, ct.c_void_p, ct.POINTER(ct.c_uint32)]
        _lib.libbpf_num_possible_cpus.argtypes = []
    return _lib


# struct bpf_prog_info: verified_insns (Linux >= 5.16) is the u32 at byte 216.
PROG_INFO_SIZE, PROG_INFO_VERIFIED = 232, 216


def verified_insns(fd: int) -> int:
    """How many instructions the verifier walked to load the program `fd` (its budget is
    1,000,000): what a change to the program's shape costs, which counting a packet does
    not show (see bpf/lib/parse.h, struct pkt)."""
    buf = ct.create_string_buffer(PROG_INFO_SIZE)
    n = ct.c_uint32(PROG_INFO_SIZE)
    if _libbpf().bpf_obj_get_info_by_fd(fd, buf, ct.byref(n)):
        raise OSError(ct.get_errno(), f"program info of fd {fd}")
    return struct.unpack_from("=I", buf.raw, PROG_INFO_VERIFIED)[0]


@dataclass
class KMap:
    fd: int
    type: int
    key_size: int
    value_size: int
    name: str

    @classmethod
    def of(cls, fd: int) -> KMap:
        info = _MapInfo()
        n = ct.c_uint32(ct.sizeof(info))
        if _libbpf().bpf_obj_get_info_by_fd(fd, ct.byref(info), ct.byref(n)):
            raise OSError(ct.get_errno(), f"map info of fd {fd}")
        return cls(fd, info.type, info.key_size, info.value_size, info.name.decode())

    def lookup(self, key: bytes) -> bytes | None:
        """The kernel's value for ``key`` (a per-CPU map's: CPU 0's), or None."""
        lib = _libbpf()
        size = self.value_size
        if self.type in PERCPU_TYPES:
            size = ((self.value_size + 7) & ~7) * lib.libbpf_num_possible_cpus()
        kbuf = ct.create_string_buffer(key, self.key_size)
        vbuf = ct.create_string_buffer(size)
        if lib.bpf_map_lookup_elem(self.fd, kbuf, vbuf):
            return None
        return vbuf.raw[: self.value_size]


class Fault(Exception):
    """The interpreter met something it does not model (or a bad access)."""


@dataclass
class Result:
    verdict: int
    insns: int
    helpers: Counter[str] = field(default_factory=Counter)
    lines: int = 0  # distinct 64-byte lines touched (stack, ctx, packet, map values)
    code_lines: int = 0  # distinct 64-byte lines of bytecode executed (8 instructions)
    tail_call: int | None = None  # the index of the tail call the run ended in
    hot: Counter[int] = field(default_factory=Counter)  # pc -> times executed
    # store instructions into map values, by (map name, key): what a packet writes where
    stores: Counter[tuple[str, bytes]] = field(default_factory=Counter)

    def summary(self) -> dict[str, Any]:
        return {"insns": self.insns, "helpers": dict(sorted(self.helpers.items())),
                "helper_calls": sum(n for h, n in self.helpers.items() if "inlined" not in h),
                "lines": self.lines, "code_lines": self.code_lines,
                "map_stores": dict(sorted(Counter(m for m, _ in self.stores.elements()).items())),
                "verdict": self.verdict, "tail_call": self.tail_call}  # fmt: skip


class Vm:
    """One run of ``insns`` (raw bytecode) on ``frame``: ``run()`` -> Result."""

    MAX_STEPS = 1_000_000

    def __init__(
        self,
        insns: bytes,
        frame: bytes,
        ifindex: int,
        now_ns: int | None = None,
        follow: dict[int, bytes] | None = None,
    ):
        self.code = _decode(insns)
        # Tail-call slots whose program the run goes on into (slot -> its bytecode), as the
        # kernel would: sluice_lb hands a VLAN-tagged IPv6 packet to sluice_lb6.
        self.follow = {slot: _decode(b) for slot, b in (follow or {}).items()}
        self.mem: dict[int, bytearray] = {}
        self.touched: set[int] = set()
        self.maps: dict[int, KMap] = {}
        self.shadow: dict[tuple[int, bytes], int] = {}  # (fd, key) -> value address
        self.value_of: dict[int, tuple[str, bytes]] = {}  # value slot -> (map name, key)
        self.stores: Counter[tuple[str, bytes]] = Counter()
        self.deleted: set[tuple[int, bytes]] = set()
        self.next_val = MAPVAL_BASE
        self.now = now_ns if now_ns is not None else time.monotonic_ns()
        self.helpers: Counter[str] = Counter()
        self.tail: int | None = None
        self.pkt = bytearray(HEADROOM) + bytearray(frame) + bytearray(512)
        self.mem[PKT_BASE >> SLOT] = self.pkt
        self.data, self.data_end = PKT_BASE + HEADROOM, PKT_BASE + HEADROOM + len(frame)
        ctx = bytearray(SKB_SIZE)
        struct.pack_into("<I", ctx, 0, len(frame))
        struct.pack_into("<I", ctx, 16, int.from_bytes(frame[12:14], "little"))  # __be16
        struct.pack_into("<II", ctx, 36, ifindex, ifindex)
        struct.pack_into("<I", ctx, 160, len(frame))  # wire_len
        self.ctx = ctx
        self.mem[CTX_BASE >> SLOT] = ctx

    # -- memory -----------------------------------------------------------------------------
    def _where(self, addr: int, size: int) -> tuple[bytearray, int]:
        buf = self.mem.get(addr >> SLOT)
        off = addr & ((1 << SLOT) - 1)
        if buf is None or off + size > len(buf):
            raise Fault(f"access {size} bytes at {addr:#x}")
        for line in range(addr >> 6, (addr + size - 1 >> 6) + 1):
            self.touched.add(line)
        return buf, off

    def load(self, addr: int, size: int) -> int:
        if addr >> SLOT == CTX_BASE >> SLOT:
            off = addr - CTX_BASE
            if off == SKB_DATA:
                return self.data
            if off == SKB_DATA_END:
                return self.data_end
            if off == SKB_DATA_META:
                return self.data
        buf, off = self._where(addr, size)
        return int.from_bytes(buf[off : off + size], "little")

    def store(self, addr: int, size: int, value: int) -> None:
        buf, off = self._where(addr, size)
        owner = self.value_of.get(addr >> SLOT)
        if owner is not None:
            self.stores[owner] += 1
        buf[off : off + size] = (value & ((1 << size * 8) - 1)).to_bytes(size, "little")

    def read(self, addr: int, n: int) -> bytes:
        buf, off = self._where(addr, n)
        return bytes(buf[off : off + n])

    def write(self, addr: int, data: bytes) -> None:
        buf, off = self._where(addr, len(data))
        buf[off : off + len(data)] = data

    def _alloc(self, data: bytes) -> int:
        addr = self.next_val
        self.next_val += 1 << SLOT
        self.mem[addr >> SLOT] = bytearray(data) + bytearray(8)
        return addr

    # -- maps -------------------------------------------------------------------------------
    def _map(self, ptr: int) -> KMap:
        fd = ptr - MAPOBJ_BASE
        if fd not in self.maps:
            self.maps[fd] = KMap.of(fd)
        return self.maps[fd]

    def map_lookup(self, ptr: int, key_addr: int) -> int:
        m = self._map(ptr)
        key = self.read(key_addr, m.key_size)
        sk = (m.fd, key)
        if sk in self.shadow:
            return self.shadow[sk]
        if sk in self.deleted:
            return 0
        if m.type == PROG_ARRAY:
            raise Fault("lookup in a prog array")
        val = m.lookup(key)
        if val is None:
            return 0
        self.shadow[sk] = addr = self._alloc(val)
        self.value_of[addr >> SLOT] = (m.name, key)
        return addr

    def map_update(self, ptr: int, key_addr: int, val_addr: int, flags: int) -> int:
        m = self._map(ptr)
        key = self.read(key_addr, m.key_size)
        sk = (m.fd, key)
        exists = sk in self.shadow or (sk not in self.deleted and m.lookup(key) is not None)
        if flags == 1 and exists:  # BPF_NOEXIST
            return -17
        if flags == 2 and not exists:  # BPF_EXIST
            return -2
        self.deleted.discard(sk)
        self.shadow[sk] = addr = self._alloc(self.read(val_addr, m.value_size))
        self.value_of[addr >> SLOT] = (m.name, key)
        return 0

    def map_delete(self, ptr: int, key_addr: int) -> int:
        m = self._map(ptr)
        sk = (m.fd, self.read(key_addr, m.key_size))
        self.shadow.pop(sk, None)
        self.deleted.add(sk)
        return 0

    # -- helpers ----------------------------------------------------------------------------
    def call(self, hid: int, r: list[int]) -> int:
        name = HELPERS.get(hid, str(hid))
        # An array's lookup is inlined by the verifier (a per-CPU array's since Linux 6.10):
        # no call at run time. Counted apart from the real calls.
        inlined = name == "map_lookup_elem" and self._map(r[1]).type in ARRAY_TYPES
        self.helpers[name + " (array, inlined)" if inlined else name] += 1
        a1, a2, a3, a4, a5 = r[1], r[2], r[3], r[4], r[5]
        if name == "map_lookup_elem":
            return self.map_lookup(a1, a2)
        if name == "map_update_elem":
            return self.map_update(a1, a2, a3, a4) & M64
        if name == "map_delete_elem":
            return self.map_delete(a1, a2)
        if name in ("ktime_get_ns", "ktime_get_coarse_ns", "ktime_get_boot_ns"):
            return self.now
        if name == "jiffies64":
            return self.now // 4_000_000
        if name == "get_prandom_u32":
            return random.getrandbits(32)
        if name in ("get_smp_processor_id", "get_numa_node_id"):
            return 0
        if name == "skb_store_bytes":
            self.write(self.data + a2, self.read(a3, a4))
            return 0
        if name == "skb_load_bytes":
            self.write(a3, self.read(self.data + a2, a4))
            return 0
        if name in ("l3_csum_replace", "l4_csum_replace", "skb_vlan_pop", "skb_pull_data",
                    "ringbuf_submit", "ringbuf_discard", "set_hash_invalid",
                    "skb_ecn_set_ce", "csum_update", "csum_level"):  # fmt: skip
            return 0  # checksums are not recomputed: no branch here depends on one
        if name == "csum_diff":
            return _csum_diff(self.read(a1, a2) if a2 else b"", self.read(a3, a4) if a4 else b"",
                              a5)  # fmt: skip
        if name in ("redirect", "redirect_neigh", "redirect_peer"):
            return TC_ACT_REDIRECT
        if name == "fib_lookup":
            return self._fib(a2)
        if name == "tail_call":
            m = self._map(a2)
            if m.lookup(struct.pack("<I", a3)) is None:
                return 0  # no program there: the call falls through
            self.tail = a3
            raise _TailCall()  # run() goes on if a3 is followed
        if name == "ringbuf_reserve":
            return self._alloc(bytes(a2))
        if name == "ringbuf_output":
            return 0
        raise Fault(f"helper {name} ({hid}) is not modelled")

    def _fib(self, params: int) -> int:
        """bpf_fib_lookup: success out of the ingress interface with made-up MACs (the
        established path with a cached next hop does not ask; a figure that does is told so
        by the helper count)."""
        ifindex = struct.unpack_from("<I", self.ctx, 40)[0]
        self.store(params + 8, 4, ifindex)  # ifindex field
        self.write(params + 52, b"\x02\0\0\0\0\x10" + b"\x02\0\0\0\0\x11")  # smac, dmac
        return 0

    # -- the interpreter --------------------------------------------------------------------
    def run(self) -> Result:
        """Run from the first instruction; into a followed tail call's program, as one run
        (its counts include the caller's; ``hot`` is the last program's)."""
        steps, lines = 0, 0
        while True:
            result = self._run(self.code, steps)
            if result.tail_call not in self.follow:
                result.code_lines += lines
                return result
            self.code = self.follow.pop(result.tail_call)
            steps, lines = result.insns, lines + result.code_lines
            self.tail = None

    def _run(self, code: list[tuple[int, int, int, int]], steps: int) -> Result:
        regs = [0] * 11
        regs[1] = CTX_BASE
        frames: list[tuple[int, list[int]]] = []
        depth = 0
        self.mem[(STACK_BASE >> SLOT)] = bytearray(512)
        regs[10] = STACK_BASE + 512
        n, pc = len(code), 0
        hot: Counter[int] = Counter()
        try:
            while True:
                if pc >= n:
                    raise Fault(f"pc {pc} out of the program")
                steps += 1
                if steps > self.MAX_STEPS:
                    raise Fault("too many steps")
                hot[pc] += 1
                op, rr, off, imm = code[pc]
                dst, src = rr & 0xF, rr >> 4
                cls = op & 7
                pc += 1
                if cls in (7, 4):  # ALU64, ALU
                    regs[dst] = self._alu(op, cls, regs, dst, src, off, imm)
                elif cls in (5, 6):  # JMP, JMP32
                    code_ = op & 0xF0
                    if code_ == 0x80:  # call
                        if src == 1:  # bpf-to-bpf
                            frames.append((pc, regs[6:10]))
                            depth += 1
                            base = STACK_BASE + (depth << SLOT)
                            self.mem[base >> SLOT] = bytearray(512)
                            regs[10] = base + 512
                            pc += imm
                            continue
                        regs[0] = self.call(imm, regs) & M64
                        continue
                    if code_ == 0x90:  # exit
                        if not frames:
                            break
                        pc, saved = frames.pop()
                        regs[6:10] = saved
                        depth -= 1
                        regs[10] = STACK_BASE + (depth << SLOT) + 512
                        continue
                    if code_ == 0x00:  # ja
                        pc += off if cls == 5 else imm
                        continue
                    a = regs[dst]
                    b = regs[src] if op & 8 else imm & M64
                    if cls == 6:
                        a, b = a & M32, b & M32
                    if _cond(code_, a, b, 64 if cls == 5 else 32):
                        pc += off
                elif cls == 0:  # LD: only ld_imm64
                    if op != 0x18:
                        raise Fault(f"opcode {op:#x}")
                    hi = code[pc][3] & M32
                    pc += 1
                    if src == 1:  # map fd
                        regs[dst] = MAPOBJ_BASE + imm
                    elif src == 0:
                        regs[dst] = ((hi << 32) | (imm & M32)) & M64
                    else:
                        raise Fault(f"ld_imm64 src {src}")
                elif cls == 1:  # LDX
                    size = _SIZE[op & 0x18]
                    mode = op & 0xE0
                    v = self.load((regs[src] + off) & M64, size)
                    if mode == 0x80:  # sign-extending load
                        v = _sext(v, size * 8) & M64
                    regs[dst] = v
                elif cls in (2, 3):  # ST, STX
                    size = _SIZE[op & 0x18]
                    addr = (regs[dst] + off) & M64
                    if (op & 0xE0) == 0xC0:  # atomic
                        self._atomic(addr, size, regs, src, imm)
                    else:
                        self.store(addr, size, regs[src] if cls == 3 else imm)
                else:
                    raise Fault(f"opcode {op:#x}")
        except _TailCall:
            return Result(
                -1,
                steps,
                self.helpers,
                len(self.touched),
                len({p // 8 for p in hot}),
                self.tail,
                hot,
                self.stores,
            )
        return Result(
            regs[0] & M32,
            steps,
            self.helpers,
            len(self.touched),
            len({p // 8 for p in hot}),
            None,
            hot,
            self.stores,
        )

    def _atomic(self, addr: int, size: int, regs: list[int], src: int, imm: int) -> None:
        old = self.load(addr, size)
        mask = (1 << size * 8) - 1
        v = regs[src]
        opc = imm & 0xF0
        if imm == 0xF1:  # cmpxchg
            if old == regs[0] & mask:
                self.store(addr, size, v)
            regs[0] = old
            return
        if imm == 0xE1:  # xchg
            self.store(addr, size, v)
            regs[src] = old
            return
        new = {0x00: old + v, 0x40: old | v, 0x50: old & v, 0xA0: old ^ v}[opc]
        self.store(addr, size, new)
        if imm & 1:  # fetch
            regs[src] = old

    def _alu(self, op: int, cls: int, regs: list[int], dst: int, src: int, off: int,
             imm: int) -> int:  # fmt: skip
        code = op & 0xF0
        bits = 64 if cls == 7 else 32
        mask = M64 if bits == 64 else M32
        a = regs[dst] & mask
        if code == 0xD0:  # byte swap
            width = imm
            v = regs[dst] & ((1 << width) - 1)
            if op & 8 or cls == 7:  # to big endian (or ALU64's bswap)
                v = int.from_bytes(v.to_bytes(width // 8, "little"), "big")
            return v
        b = (regs[src] if op & 8 else imm & M64) & mask
        if code == 0xB0:  # mov (movsx with off)
            if off:
                b = _sext(regs[src] if op & 8 else imm & M64, off) & mask
            return b
        if code == 0x00:
            r = a + b
        elif code == 0x10:
            r = a - b
        elif code == 0x20:
            r = a * b
        elif code == 0x30:
            if off:  # sdiv
                sa, sb = _sext(a, bits), _sext(b, bits)
                r = 0 if sb == 0 else int(sa / sb)
            else:
                r = 0 if b == 0 else a // b
        elif code == 0x40:
            r = a | b
        elif code == 0x50:
            r = a & b
        elif code == 0x60:
            r = a << (b & (bits - 1))
        elif code == 0x70:
            r = a >> (b & (bits - 1))
        elif code == 0x80:
            r = -a
        elif code == 0x90:
            if off:
                sa, sb = _sext(a, bits), _sext(b, bits)
                r = sa if sb == 0 else sa - sb * int(sa / sb)
            else:
                r = a if b == 0 else a % b
        elif code == 0xA0:
            r = a ^ b
        elif code == 0xC0:
            r = _sext(a, bits) >> (b & (bits - 1))
        else:
            raise Fault(f"alu opcode {op:#x}")
        return r & mask


class _TailCall(Exception):
    pass


_SIZE = {0x00: 4, 0x08: 2, 0x10: 1, 0x18: 8}


def _sext(v: int, bits: int) -> int:
    v &= (1 << bits) - 1
    return v - (1 << bits) if v >> (bits - 1) else v


def _cond(code: int, a: int, b: int, bits: int) -> bool:
    if code == 0x10:
        return a == b
    if code == 0x50:
        return a != b
    if code == 0x20:
        return a > b
    if code == 0x30:
        return a >= b
    if code == 0xA0:
        return a < b
    if code == 0xB0:
        return a <= b
    if code == 0x40:
        return bool(a & b)
    sa, sb = _sext(a, bits), _sext(b, bits)
    if code == 0x60:
        return sa > sb
    if code == 0x70:
        return sa >= sb
    if code == 0xC0:
        return sa < sb
    if code == 0xD0:
        return sa <= sb
    raise Fault(f"jump opcode {code:#x}")


def _csum_diff(frm: bytes, to: bytes, seed: int) -> int:
    s = seed & M32
    for i in range(0, len(frm), 4):
        s -= int.from_bytes(frm[i : i + 4], "little")
    for i in range(0, len(to), 4):
        s += int.from_bytes(to[i : i + 4], "little")
    s %= 1 << 32
    return s


def _decode(insns: bytes) -> list[tuple[int, int, int, int]]:
    return [struct.unpack_from("<BBhi", insns, i) for i in range(0, len(insns), 8)]


def count(
    bpf: Any, func: bytes, frame: bytes, ifindex: int, follow: dict[int, bytes] | None = None
) -> Result:
    """Run bcc object ``bpf``'s program ``func`` on ``frame`` (arriving on ``ifindex``) in
    the interpreter, against the program's real maps (read-only); on into the programs of
    the tail-call slots in ``follow`` (slot -> bytecode)."""
    return Vm(bpf.dump_func(func), frame, ifindex, follow=follow).run()


BALANCERS = ("sluice_lb", "sluice_lb6")  # bpf/lb.c: one per family


def balancer(prog: Any, frame: bytes, ifindex: int) -> Result:
    """``count`` for the balancer TC runs first for ``frame``: an untagged IPv6 packet's is
    sluice_lb6 (a filter of its own, when its module is loaded; Program.entry), any other
    packet's sluice_lb, followed into sluice_lb6 for a tagged IPv6 packet."""
    import sys

    # A tree before the per-family balancers (pktcount --baseline) has neither: its
    # sluice_lb is the balancer.
    jmp_index = getattr(sys.modules[type(prog).__module__], "JMP_INDEX", {})
    dumps = {name: m["bpf"].dump_func(name.encode())
             for m in getattr(prog, "modules", {}).values() for name in m["functions"]
             if name in BALANCERS}  # fmt: skip
    follow = {jmp_index[name]: code for name, code in dumps.items() if name in jmp_index}
    if frame[12:14] == b"\x86\xdd" and "sluice_lb6" in dumps:
        return Vm(dumps["sluice_lb6"], frame, ifindex, follow=follow).run()
    return count(prog.bpf, b"sluice_lb", frame, ifindex, follow)


if __name__ == "__main__":  # a smoke run: python bench/bpfcount.py (needs root)
    from bcc import BPF

    src = b"""
    BPF_ARRAY(a, u64, 4);
    int f(struct __sk_buff *skb) {
        void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
        if (data + 14 > end) return 1;
        u32 k = 1; u64 *v = a.lookup(&k);
        if (v) *v += skb->len;
        return ((unsigned char *)data)[12] == 8 ? 7 : 0;
    }"""
    b = BPF(text=src)
    b[b"a"][ct.c_int(1)] = ct.c_uint64(5)
    r = count(b, b"f", b"\0" * 12 + b"\x08\x00" + b"\0" * 50, os.getpid() % 100)
    print(r.summary())
