"""The datapath's own per-packet cost, measured with BPF_PROG_TEST_RUN.

libbpf's ``bpf_prog_test_run_opts`` (Debian's libbpf1, through ctypes) runs the loaded TC
program on a packet we build, in the load balancer's network namespace (so its FIB lookups
see the real routes and neighbours), and the kernel reports the run time.

Why ``repeat=1`` per call, many calls: the kernel runs a repeated test on the *same* skb,
and our program rewrites it (DNAT, TTL): from the second repetition on it would measure a
packet that no longer matches anything. So every call gets a fresh copy of the packet and
runs once; the figure is the median (and mean) of the kernel-reported durations. Each
duration includes one ``ktime_get_ns`` pair of timer overhead, measured separately as
``floor_ns`` (a non-IP frame the program returns on at once) and reported, not subtracted.

- established: one TCP SYN creates the flow, then the same 5-tuple's ACK segments are run
  (conntrack hit, NAT, FIB lookup, redirect verdict);
- new flow: every packet is a SYN from a fresh source port (conntrack miss, service lookup,
  endpoint selection by the service's algorithm, two conntrack inserts, NAT, FIB).
"""

from __future__ import annotations

import contextlib
import ctypes as ct
import os
import statistics
import struct
from collections.abc import Callable, Iterator
from typing import Any

ALGORITHMS = ["round-robin", "weighted", "hash", "maglev", "least-connections", "priority",
              "persistence"]  # fmt: skip
CLONE_NEWNET = 0x40000000
TC_ACT_REDIRECT = 7


class _Opts(ct.Structure):
    # struct bpf_test_run_opts (libbpf 1.1, bpf.h)
    _fields_ = [
        ("sz", ct.c_size_t), ("data_in", ct.c_void_p), ("data_out", ct.c_void_p),
        ("data_size_in", ct.c_uint32), ("data_size_out", ct.c_uint32),
        ("ctx_in", ct.c_void_p), ("ctx_out", ct.c_void_p),
        ("ctx_size_in", ct.c_uint32), ("ctx_size_out", ct.c_uint32),
        ("retval", ct.c_uint32), ("repeat", ct.c_int), ("duration", ct.c_uint32),
        ("flags", ct.c_uint32), ("cpu", ct.c_uint32), ("batch_size", ct.c_uint32),
    ]  # fmt: skip


class TestRun:
    """Run a program fd once on a packet, as if it came in on ``ifindex``."""

    def __init__(self, prog_fd: int, ifindex: int) -> None:
        self.lib = ct.CDLL("libbpf.so.1", use_errno=True)
        self.lib.bpf_prog_test_run_opts.argtypes = [ct.c_int, ct.POINTER(_Opts)]
        self.fd = prog_fd
        # struct __sk_buff up to (not including) cb[]: len .. tc_index; the kernel accepts
        # ingress_ifindex and ifindex here and wants the rest zero.
        self.ctx = ct.create_string_buffer(48)
        struct.pack_into("<II", self.ctx, 36, ifindex, ifindex)
        self.out = ct.create_string_buffer(2048)

    def __call__(self, packet: bytes) -> tuple[int, int]:
        buf = ct.create_string_buffer(packet, len(packet))
        o = _Opts(sz=ct.sizeof(_Opts), data_in=ct.addressof(buf), data_size_in=len(packet),
                  data_out=ct.addressof(self.out), data_size_out=len(self.out),
                  ctx_in=ct.addressof(self.ctx), ctx_size_in=len(self.ctx), repeat=1)  # fmt: skip
        rc = self.lib.bpf_prog_test_run_opts(self.fd, ct.byref(o))
        if rc != 0:
            err = ct.get_errno()
            raise OSError(err, f"bpf_prog_test_run_opts: {os.strerror(err)}")
        return int(o.retval), int(o.duration)


@contextlib.contextmanager
def in_netns(name: str) -> Iterator[None]:
    """Move this thread into /run/netns/NAME for the block (setns), then back."""
    libc = ct.CDLL(None, use_errno=True)
    here = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    there = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        if libc.setns(there, CLONE_NEWNET) != 0:
            raise OSError(ct.get_errno(), "setns")
        try:
            yield
        finally:
            if libc.setns(here, CLONE_NEWNET) != 0:
                raise OSError(ct.get_errno(), "setns back")
    finally:
        os.close(here)
        os.close(there)


def _csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def _ip4(addr: str) -> bytes:
    return bytes(int(x) for x in addr.split("."))


MAC_A, MAC_B = b"\x02\0\0\0\0\x01", b"\x02\0\0\0\0\x02"


def tcp4(src: str, dst: str, sport: int, dport: int, flags: int, payload: bytes = b"",
         dmac: bytes = MAC_A, smac: bytes = MAC_B) -> bytes:  # fmt: skip
    """An Ethernet + IPv4 + TCP frame with valid checksums."""
    s, d = _ip4(src), _ip4(dst)
    tcp = struct.pack("!HHIIBBHHH", sport, dport, 1, 1 if flags & 0x10 else 0, 5 << 4, flags,
                      65535, 0, 0) + payload  # fmt: skip
    pseudo = s + d + struct.pack("!BBH", 0, 6, len(tcp))
    tcp = tcp[:16] + struct.pack("!H", _csum(pseudo + tcp)) + tcp[18:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 1, 0x4000, 64, 6, 0, s, d)
    ip = ip[:10] + struct.pack("!H", _csum(ip)) + ip[12:]
    return dmac + smac + b"\x08\x00" + ip + tcp


def _ip4_ttl(frame: bytes, ttl: int) -> bytes:
    """``frame`` (Ethernet + IPv4) with the TTL set and the IP checksum fixed."""
    ip = bytearray(frame[14:34])
    ip[8], ip[10:12] = ttl, b"\0\0"
    ip[10:12] = struct.pack("!H", _csum(bytes(ip)))
    return frame[:14] + bytes(ip) + frame[34:]


def repeated(run: TestRun, packet: bytes, repeat: int) -> float:
    """Mean ns/run of ``repeat`` kernel-side repetitions (no timer overhead per run).

    Only valid for a packet the program leaves unchanged (it returns before any rewrite).
    """
    buf = ct.create_string_buffer(packet, len(packet))
    o = _Opts(sz=ct.sizeof(_Opts), data_in=ct.addressof(buf), data_size_in=len(packet),
              data_out=ct.addressof(run.out), data_size_out=len(run.out),
              ctx_in=ct.addressof(run.ctx), ctx_size_in=len(run.ctx), repeat=repeat)  # fmt: skip
    if run.lib.bpf_prog_test_run_opts(run.fd, ct.byref(o)) != 0:
        err = ct.get_errno()
        raise OSError(err, f"bpf_prog_test_run_opts: {os.strerror(err)}")
    return float(o.duration)


def _stats(durations: list[int], floor: float) -> dict[str, float]:
    return {"median_ns": float(statistics.median(durations)),
            "mean_ns": round(statistics.fmean(durations), 1),
            "floor_ns": floor, "samples": len(durations)}  # fmt: skip


def measure(
    prog_fd: int,
    netns: str,
    ifindex: int,
    set_service: Callable[[str, str], None],
    clear_conntrack: Callable[[], None],
    client: str,
    vip: str,
    algorithms: list[str] | None = None,
    packets: int = 5000,
    port: int = 80,
) -> dict[str, Any]:
    """Cost per algorithm: {'floor_ns', algo: {'established': {...}, 'new': {...}}}.

    ``set_service(algorithm, vip)`` must make ``vip:port`` a TCP service with that algorithm;
    ``clear_conntrack()`` empties the conntrack table (called between algorithms and at the
    end). ``client`` is the source address (the client's), ``ifindex`` the LB interface the
    client's packets arrive on (in ``netns``).
    """
    out: dict[str, Any] = {}
    with in_netns(netns):
        run = TestRun(prog_fd, ifindex)
        arp = b"\xff" * 6 + b"\x02\0\0\0\0\x02" + b"\x08\x06" + bytes(28)
        floor_d = [run(arp)[1] for _ in range(max(200, packets // 5))]
        floor = float(statistics.median(floor_d))
        out["floor_ns"] = floor
        for algo in algorithms or ALGORITHMS:
            set_service(algo, vip)
            clear_conntrack()
            # established: one SYN opens the flow, then the same tuple's ACKs
            ret, _ = run(tcp4(client, vip, 40000, port, 0x02))
            ack = tcp4(client, vip, 40000, port, 0x10, b"x" * 64)
            est = []
            for _ in range(packets):
                ret, d = run(ack)
                est.append(d)
            est_ret = ret
            if "profile" not in out:
                # Where the established-flow time goes, from packets the program does not
                # rewrite, so the kernel can repeat them without a timer per run:
                reps = max(1000, packets * 5)
                out["profile"] = {
                    # not IP: parse the Ethernet header, return
                    "not_ip_ns": repeated(run, arp, reps),
                    # IPv4/TCP to no service: parse, conntrack miss, service miss
                    "no_service_ns": repeated(run, tcp4(client, "198.18.255.1", 40000, port,
                                                         0x10), reps),
                    # the established flow with TTL 1: parse, conntrack hit, expiry check,
                    # then handed to the stack before counting, NAT and FIB
                    "ct_hit_ttl1_ns": repeated(run, _ip4_ttl(ack, 1), reps),
                    "repeat": reps,
                }  # fmt: skip
            # new flows: a SYN from a fresh source port each time
            new = []
            for i in range(packets):
                ret, d = run(tcp4(client, vip, 1024 + (i % 60000), port, 0x02))
                new.append(d)
            clear_conntrack()
            out[algo] = {
                "established": {**_stats(est, floor), "verdict": est_ret},
                "new": {**_stats(new, floor), "verdict": ret},
            }
    return out
