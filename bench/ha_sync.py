"""HA conntrack sync: latency, throughput and a full resync, between two datapaths.

    sudo .venv/bin/python bench/ha_sync.py [--flows 1000000] [--latency-flows 2000]

Two real programs (bpf/lb.c, each with its own pinned maps, not attached) and their
reconcilers, each with the same service; node A's FlowSync sends, node B's installs,
through the real sync channel (TCP over loopback in a namespace of its own, HMAC, the
channel's batching and back-pressure):

- **latency**: SYNs run through A's program with BPF_PROG_TEST_RUN (each creates a flow and
  its event), at --rate flows/s; per flow, the time from the run to the moment B's
  installer has written its entries; p50, p99, max;
- **full resync**: A's table is filled with --flows flows (written straight into its map),
  then B's channel connects: the time from connect to the last of them installed in B's map,
  and flows/s.
Prints a JSON object (also to --json).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes as ct
import json
import os
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH.parent), str(BENCH)]

from pktcost import SYN, tcp_frame, test_run  # noqa: E402

CLONE_NEWNET = 0x40000000
VIP, EP_NET = "198.19.9.10", "198.18.9."
KEY = bytes(range(16))


def service() -> dict[str, Any]:
    eps = [{"address": f"{EP_NET}{i}", "port": 8080, "weight": 1, "admin-state": "enabled"}
           for i in range(1, 5)]  # fmt: skip
    return {"name": "web", "vip": VIP, "port": 80, "protocol": "tcp", "mode": "default",
            "algorithm": "round-robin", "admin-state": "enabled", "endpoint": eps}  # fmt: skip


def node(pin: Path, capacity: int) -> Any:
    from appliance.datapath.program import Program
    from appliance.datapath.reconciler import DatapathReconciler

    prog = Program(pin, capacity)
    prog.load()
    rec = DatapathReconciler(pin, program=prog, housekeeping=False, follow_routes=False)
    rec.start({"sluice:load-balancer": {"service": [service()]}})
    return rec


def fill(rec: Any, n: int) -> float:
    """n ORIG entries (client 198.18.x.y:port -> VIP:80 -> endpoint), straight into the
    conntrack (struct ct_key keys: FlowHooks.install puts each into its family's table)."""
    from appliance.datapath import layout as L
    from appliance.ha.flowsync import TUPLE

    started = time.monotonic()
    hooks = rec.flows
    write = hooks.entry_format([("t", f"{TUPLE}s"), ("created_ns", "Q"), ("last_ns", "Q"),
                                ("svc_id", "I"), ("ep_id", "I"), ("timeout_s", "I"),
                                ("dir", "B"), ("state", "B"), ("flags", "B"), ("proto", "B"),
                                ("family", "B")])  # fmt: skip
    sid = rec.driver.services["web"].id
    eids = list(rec.driver.services["web"].eps.values())
    vip = bytes(map(int, VIP.split("."))) + bytes(12)
    eps = [bytes(map(int, f"{EP_NET}{i}".split("."))) + bytes(12) for i in range(1, 5)]
    now = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
    chunk = 65536
    key_size = ct.sizeof(L.CtKey)
    for base in range(0, n, chunk):
        keys, values = [], []
        for i in range(base, min(n, base + chunk)):
            c = i // 60000  # 60,000 ports per client address: every tuple distinct
            client = bytes((198, 18, 100 + c // 256, c % 256)) + bytes(12)
            cport = struct.pack("!H", 1024 + i % 60000)
            ep = eps[i % 4]
            t = client + vip + client + ep + cport + b"\x00\x50" + cport + b"\x1f\x90"
            key = client + vip + cport + b"\x00\x50" + bytes((6, 4, 0, 0))
            keys.append(key.ljust(key_size, b"\x00"))  # vtag (SCTP only) and any later field: 0
            values.append(write.pack(t, now, now, sid, eids[i % 4], 240, L.CT_DIR_ORIG, 1,
                                     L.CT_F_COUNTED, 6, 4))  # fmt: skip
        hooks.install(b"".join(keys), b"".join(values))
    return time.monotonic() - started


async def run(args: argparse.Namespace, a: Any, b: Any) -> dict[str, Any]:
    from appliance.ha.flowsync import FlowSync
    from appliance.ha.sync_channel import SyncSender, SyncServer
    from appliance.ha.sync_codec import RECORD

    loop = asyncio.get_running_loop()
    out: dict[str, Any] = {}
    done_at: dict[bytes, float] = {}  # orig key -> when B installed it
    fb = FlowSync(b, lambda payload: None)
    real_install = fb.install

    def install(peer: str, payload: bytes) -> dict[str, int]:
        res = real_install(peer, payload)
        now = time.monotonic()
        size = RECORD.size
        if len(payload) <= 64 * size:  # the latency phase's small batches: note each flow
            for off in range(0, len(payload), size):  # head 16, client 16, vip 16, ..., ports
                done_at[payload[off + 16 : off + 48] + payload[off + 80 : off + 82]] = now
        return res

    fb.install = install  # type: ignore[method-assign]
    fb.start()
    server = SyncServer("127.0.0.1", 0, KEY, ("127.0.0.1",), lambda *x: None, fb.receive)
    await server.start()
    fa = FlowSync(a, lambda payload: loop.call_soon_threadsafe(sender.send_encoded, payload))
    sender = SyncSender("127.0.0.1", server.bound_port, KEY, fa.dump_chunks)
    fa.start()
    sender.start()
    # -- latency: flows created by A's program, one by one --------------------------------
    await asyncio.sleep(1.0)
    fd = a.program.fn.fd
    sent: dict[bytes, float] = {}
    for i in range(args.latency_flows):
        sport = 20000 + i
        frame = tcp_frame("198.18.0.1", VIP, sport, 80, SYN)
        key = (bytes((198, 18, 0, 1)) + bytes(12) + bytes(map(int, VIP.split("."))) + bytes(12)
               + struct.pack("!H", sport))  # the tuple's client, vip, client port
        sent[key] = time.monotonic()
        await loop.run_in_executor(None, test_run, fd, frame, 1)
        await asyncio.sleep(1 / args.rate)
    deadline = time.monotonic() + 10
    while len(done_at.keys() & sent.keys()) < len(sent) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    lat = sorted((done_at[k] - t) * 1000 for k, t in sent.items() if k in done_at)
    out["latency_ms"] = {"flows": len(sent), "synced": len(lat),
                         "p50": round(statistics.median(lat), 2) if lat else None,
                         "p99": round(lat[int(len(lat) * 0.99) - 1], 2) if lat else None,
                         "max": round(lat[-1], 2) if lat else None}  # fmt: skip
    await sender.close()
    # -- full resync ---------------------------------------------------------------------
    out["fill_s"] = round(await loop.run_in_executor(None, fill, a, args.flows), 2)
    before = fb.stats["installed"]
    started = time.monotonic()
    sender2 = SyncSender("127.0.0.1", server.bound_port, KEY, fa.dump_chunks)
    sender2.start()
    # The filled flows, both entries each. The latency run's flows may come again or not:
    # a flow still in its handshake lives in the SYN table, which the dump does not walk.
    want = before + 2 * args.flows
    deadline = time.monotonic() + args.timeout
    while fb.stats["installed"] < want and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    took = time.monotonic() - started
    got = (fb.stats["installed"] - before) // 2
    out["resync"] = {"flows": got, "seconds": round(took, 2), "flows_per_s": round(got / took),
                     "channel": server.status(), "installer": fb.status()}
    await sender2.close()
    await server.close()
    fa.close()
    fb.close()
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--flows", type=int, default=1_000_000)
    ap.add_argument("--latency-flows", type=int, default=2000)
    ap.add_argument("--rate", type=float, default=500.0, help="new flows/s in the latency run")
    ap.add_argument("--timeout", type=float, default=600.0)
    ap.add_argument("--json")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("run as root (eBPF, namespaces)", file=sys.stderr)
        return 2
    libc = ct.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNET) != 0:  # loopback of our own: nothing else sees the channel
        raise OSError(ct.get_errno(), "unshare")
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    pins = [Path(tempfile.mkdtemp(prefix="sluice-bench-ha-", dir="/sys/fs/bpf")) for _ in "ab"]
    a = b = None
    try:
        # LRU tables slow down badly when nearly full: A holds one entry per flow (ORIG
        # only), B two; both with room to spare.
        a, b = node(pins[0], 1 << 21), node(pins[1], 1 << 22)
        load0 = os.getloadavg()[0]
        res = asyncio.run(run(args, a, b))
        res["load"] = [load0, os.getloadavg()[0]]
        res["commit"] = subprocess.run(["git", "-C", str(BENCH.parent), "log", "-1",
                                        "--format=%h"], capture_output=True,
                                       text=True).stdout.strip()  # fmt: skip
    finally:
        for rec, pin in zip((a, b), pins, strict=True):
            if rec is not None:
                rec.close()
                rec.program.close()
                rec.program.remove_pins()
            with contextlib.suppress(OSError):
                pin.rmdir()
    print(json.dumps(res, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
