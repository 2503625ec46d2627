"""Conntrack walks at scale: Driver.gc(), conntrack() and flush_conntrack() on a full table.

Loads the real program (bpf/lb.c) on a private pin root under /sys/fs/bpf (removed at the
end, whatever happens), fills the IPv4 conntrack table (ct4_map; ct_map before layout
_v5) from Python with N synthetic TCP flows (both directions, half of them idle past their
timeout) spread over 10,000 services x 32 endpoints, and times the driver's whole-table
operations. No traffic, no namespaces: this measures the control plane's map handling, not
the datapath.

    .venv/bin/python bench/ct_scale.py [--flows 10000,100000,1000000] [--driver FILE]

``--driver FILE`` times another driver.py (e.g. the committed one, for a before/after:
``git show HEAD:appliance/datapath/driver.py > /tmp/driver_head.py``).

Order per N (no refill needed: each step leaves the table the next one expects):
conntrack(service) -> conntrack() -> flush_conntrack(one service, a lambda) -> the id flush
remove_service uses (another service; new driver only) -> gc() (half the flows expired;
the gauges start at 0, so every gauge with a live flow is rewritten) -> gc() again (a
routine pass: nothing to delete, gauges right).
"""

from __future__ import annotations

import argparse
import ctypes as ct
import importlib.util
import inspect
import ipaddress
import os
import resource
import struct
import sys
import time
from pathlib import Path
from typing import Any

from appliance.datapath import layout as L
from appliance.datapath.conntrack import monotonic_ns
from appliance.datapath.program import Program

SERVICES, ENDPOINTS = 10_000, 32
KEY = struct.Struct("=16s16s2s2sBBHI")  # struct ct_key (bpf/lib/structs.h)
KEY4 = struct.Struct("=4s4s2s2sBBHI")  # struct ct4_key: IPv4 keys in ct4_map (since _v5)
# struct ct_entry: nat_tuple (client, vip, snat, ep, 4 ports), created/last/packets/bytes,
# svc_id, ep_id, timeout_s, dir, state, flags, proto, family, fin_seen, pad, the next-hop
# cache (ifindex, gen, mtu, dmac, smac, pad; left empty), the TCP segment record (seq, ack,
# win, seen, pad; left empty). (appliance/datapath/layout.py CtEntry is the reference.)
LEAF = struct.Struct("=16s16s16s16s2s2s2s2sQQQQIIIBBBBBBHIIH6s6sHIIHBB")
# An empty next-hop cache, and no TCP segment seen.
NO_NEXTHOP = (0, 0, 0, bytes(6), bytes(6), 0, 0, 0, 0, 0, 0)
CHUNK = 65536
OLDEST_S = 3000  # fill() dates flows up to 2000 s back


def _check_layout(t: Any) -> None:
    """The packers above must match what bcc parsed from the C structs."""
    key = KEY4 if ct.sizeof(t.Key) == KEY4.size else KEY
    assert key.size == ct.sizeof(t.Key) and LEAF.size == ct.sizeof(t.Leaf)
    assert t.Key.proto.offset == (12 if key is KEY4 else 36)
    assert t.Leaf.svc_id.offset == 104 and t.Leaf.dir.offset == 116


def _a4(base: str, n: int) -> bytes:
    return (ipaddress.IPv4Address(base) + n).packed + bytes(12)


def _be(port: int) -> bytes:
    return port.to_bytes(2, "big")


def fill(t: Any, n: int, now: int) -> None:
    """N flows; flow i: service 1 + i % 10000, endpoint from that service's 32, even i idle."""
    vport, eport = _be(80), _be(8080)
    compact = ct.sizeof(t.Key) == KEY4.size  # the IPv4 table (ct4_map) of layout _v5 on
    key = KEY4 if compact else KEY
    w = 4 if compact else 16  # the key's address width
    vips = [_a4("198.19.0.0", s) for s in range(SERVICES + 1)]
    for start in range(0, n, CHUNK // 2):
        m = min(CHUNK // 2, n - start)
        kb, vb = bytearray(key.size * 2 * m), bytearray(LEAF.size * 2 * m)
        for j in range(m):
            i = start + j
            sid = 1 + i % SERVICES
            ep_id = (sid - 1) * ENDPOINTS + 1 + (i // SERVICES) % ENDPOINTS
            client, cport = _a4("198.18.0.0", i % 100_000), _be(1024 + i // 100_000)
            ep = _a4("198.19.128.0", ep_id % 32768)
            last = now - 1000 * 10**9 if i % 2 == 0 else now  # 1000 s idle > 240 s timeout
            tup = (client, vips[sid], client, ep, cport, vport, cport, eport)
            common = (now - 2000 * 10**9, last, 10, 1000, sid, ep_id, 240)
            key.pack_into(kb, 2 * j * key.size, client[:w], vips[sid][:w], cport, vport, 6, 4,
                          0, 0)  # fmt: skip
            LEAF.pack_into(vb, 2 * j * LEAF.size, *tup, *common,
                           L.CT_DIR_ORIG, 1, L.CT_F_COUNTED, 6, 4, 0, 0, *NO_NEXTHOP)  # fmt: skip
            key.pack_into(kb, (2 * j + 1) * key.size, ep[:w], client[:w], eport, cport, 6, 4, 0, 0)
            LEAF.pack_into(vb, (2 * j + 1) * LEAF.size, *tup, *common,
                           L.CT_DIR_REPLY, 1, L.CT_F_COUNTED, 6, 4, 0, 0, *NO_NEXTHOP)  # fmt: skip
        keys = (t.Key * (2 * m)).from_buffer(kb)
        values = (t.Leaf * (2 * m)).from_buffer(vb)
        t.items_update_batch(keys, values)


def prepare_gauges(driver: Any, state_cls: Any) -> None:
    """What program_service would leave: an ep_active entry per endpoint, gauges at 0."""
    t = driver.t["ep_active"]
    ids = range(1, SERVICES * ENDPOINTS + 1)
    for start in range(0, len(ids), CHUNK):
        part = ids[start : start + CHUNK]
        t.items_update_batch((t.Key * len(part))(*part), (t.Leaf * len(part))())
    for sid in range(1, SERVICES + 1):
        key = (4, L.addr_words(str(ipaddress.IPv4Address("198.19.0.0") + sid))[1], 80, 6)
        # Services are registered in the driver's memory only (no map writes): conntrack()
        # needs names and ids, not the service table, and 10,000 program_service() calls
        # would dominate the bench without measuring anything it is about.
        driver.services[f"svc-{sid}"] = state_cls(f"svc-{sid}", sid, key)


def shift_clock(mod: Any) -> None:
    """Run the driver's clock at least OLDEST_S past boot (fill() back-dates flows 2000 s).

    bpf_ktime_get_ns is CLOCK_MONOTONIC, time since boot: on a machine up for less than
    that, ``now - 2000 s`` is negative. No packet is sent here, so only the driver reads the
    clock, and shifting its reading changes no decision it makes.
    """
    from appliance.datapath import conntrack

    shift = max(0, OLDEST_S * 10**9 - monotonic_ns())
    for m in (conntrack, mod):  # the new layout reads conntrack's; an older driver its own
        if hasattr(m, "monotonic_ns"):
            m.monotonic_ns = lambda: monotonic_ns() + shift


def timed(fn: Any) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def one(n: int, mod: Any, pin_base: Path) -> dict[str, float]:
    capacity = 1 << max(16, (int(n * 2 * 1.25) - 1).bit_length())  # LRU: no eviction
    prog = Program(pin_base / f"n{n}", ct_capacity=capacity)
    try:
        prog.load()
        drv = mod.Driver(prog)
        t = drv.t.get("ct4_map") or drv.t["ct_map"]  # IPv4 flows: ct4_map since layout _v5
        _check_layout(t)
        prepare_gauges(drv, mod.ServiceState)
        shift_clock(mod)
        from appliance.datapath import conntrack

        now = conntrack.monotonic_ns()
        t0 = time.perf_counter()
        fill(t, n, now)
        fill_s = time.perf_counter() - t0
        sid = 7
        res: dict[str, float] = {"fill": fill_s}
        res["conntrack(svc)"], rows = timed(lambda: drv.conntrack(f"svc-{sid}"))
        per_svc = len(range(sid - 1, n, SERVICES))
        assert len(rows) == per_svc, (len(rows), per_svc)
        res["conntrack()"], rows = timed(drv.conntrack)
        assert len(rows) == n, (len(rows), n)
        del rows
        if "limit" in inspect.signature(drv.conntrack).parameters:  # the console's screenful
            res["first 501"], rows = timed(lambda: drv.conntrack(limit=501))
            assert len(rows) == 501, len(rows)
        res["flush(svc)"], gone = timed(lambda: drv.flush_conntrack(lambda e: e.svc_id == sid))
        assert gone == 2 * per_svc, (gone, per_svc)
        if hasattr(drv, "_flush_ids"):  # what remove_service uses (no ctypes per entry)
            res["flush ids"], gone = timed(lambda: drv._flush_ids(svc_ids={sid + 1}))
            assert gone == 2 * len(range(sid, n, SERVICES)), gone
            per_svc += len(range(sid, n, SERVICES))
        flushed = {sid, sid + 1} if "flush ids" in res else {sid}
        expired_left = sum(1 for i in range(0, n, 2) if 1 + i % SERVICES not in flushed)
        res["gc()"], gone = timed(drv.gc)
        assert gone == expired_left, (gone, expired_left)
        res["gc() again"], gone = timed(drv.gc)  # a routine pass: nothing expired
        assert gone == 0
        left = sum(1 for _ in t)
        assert left == 2 * (n - per_svc - expired_left), left
        return res
    finally:
        prog.close()
        prog.remove_pins()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--flows", default="10000,100000")
    ap.add_argument("--driver", help="a driver.py to time instead of the installed one")
    args = ap.parse_args()
    if args.driver:
        spec = importlib.util.spec_from_file_location("bench_driver", args.driver)
        assert spec and spec.loader
        mod = importlib.util.module_from_spec(spec)
        sys.modules["bench_driver"] = mod  # dataclasses look their module up there
        spec.loader.exec_module(mod)
    else:
        from appliance.datapath import driver as mod
    pin_base = Path(f"/sys/fs/bpf/sluice-bench-ct-{os.getpid()}")
    pin_base.mkdir(parents=True, exist_ok=True)
    try:
        cols = ["fill", "conntrack(svc)", "conntrack()", "first 501", "flush(svc)", "flush ids",
                "gc()", "gc() again"]  # fmt: skip
        print(f"driver: {args.driver or 'appliance.datapath.driver'}")
        print("| flows | " + " | ".join(f"{c} s" for c in cols) + " |")
        print("|---:|" + "---:|" * len(cols))
        for n in (int(x) for x in args.flows.split(",")):
            res = one(n, mod, pin_base)
            cells = [f"{res[c]:.2f}" if c in res else "n/a" for c in cols]
            print(f"| {n:,} | " + " | ".join(cells) + " |", flush=True)
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"peak RSS {rss:.0f} MiB", file=sys.stderr)
    finally:
        for d in sorted(pin_base.glob("*"), reverse=True):
            for f in d.iterdir():
                f.unlink()
            d.rmdir()
        pin_base.rmdir()


if __name__ == "__main__":
    main()
