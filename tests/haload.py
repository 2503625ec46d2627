"""Client load for the HA failover test, run as a script inside the client namespace.

    python3 haload.py VIP --tcp PORT[,PORT] --conns N --udp PORT --udp-flows M
                      --new-port PORT --duration S

Opens N long-lived TCP connections to each TCP port (an echo service behind the VIP),
each sending a numbered line every 20 ms and waiting for its echo; M UDP flows (one socket,
a fixed 5-tuple each) sending a numbered datagram every 20 ms; and 20 new TCP connections a
second to --new-port (one line each, then closed). Prints READY once every connection is
open and has had its first echo, runs until its stdin closes (at most --duration seconds
more), then prints one JSON line:
per kind, the largest gap between two answers (s), connections reset or closed (with the
error), datagrams answered, new connections that failed. Standard library only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import sys
import time

TICK = 0.02


class Tcp:
    def __init__(self, port: int, i: int) -> None:
        self.port, self.i = port, i
        self.last = 0.0
        self.gap = 0.0
        self.error: str | None = None
        self.sent = 0


async def tcp_conn(vip: str, c: Tcp, ready: asyncio.Event, stop: asyncio.Event) -> None:
    try:
        reader, writer = await asyncio.open_connection(vip, c.port)
    except OSError as exc:
        c.error = f"connect: {exc}"
        return
    try:
        while not stop.is_set():
            c.sent += 1
            line = b"%d %d %d\n" % (c.port, c.i, c.sent)
            writer.write(line)
            await writer.drain()
            got = await reader.readline()
            if got != line:
                c.error = "closed" if not got else f"wrong echo {got!r}"
                return
            now = time.monotonic()
            if c.last and ready.is_set():
                c.gap = max(c.gap, now - c.last)
            c.last = now
            await asyncio.sleep(TICK)
    except OSError as exc:
        c.error = f"{type(exc).__name__}: {exc}"
    finally:
        writer.close()


class Udp:
    def __init__(self, i: int) -> None:
        self.i = i
        self.last = 0.0
        self.gap = 0.0
        self.answered = 0


async def udp_flow(vip: str, port: int, u: Udp, ready: asyncio.Event,
                   stop: asyncio.Event) -> None:  # fmt: skip
    fam = socket.AF_INET6 if ":" in vip else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_DGRAM)
    s.setblocking(False)
    s.connect((vip, port))
    seq = 0
    try:
        while not stop.is_set():
            seq += 1
            with contextlib.suppress(OSError):  # unreachable for a moment: keep going
                s.send(b"%d %d" % (u.i, seq))
            await asyncio.sleep(TICK)
            while True:
                try:
                    s.recv(2048)
                except (BlockingIOError, ConnectionRefusedError):
                    break
                now = time.monotonic()
                if u.last and ready.is_set():
                    u.gap = max(u.gap, now - u.last)
                u.last = now
                u.answered += 1
    finally:
        s.close()


async def new_conns(vip: str, port: int, stop: asyncio.Event, out: dict[str, int]) -> None:
    async def one() -> None:
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(vip, port), 5)
            writer.write(b"new\n")
            ok = await asyncio.wait_for(reader.readline(), 5) == b"new\n"
            writer.close()
            out["ok" if ok else "failed"] += 1
        except (OSError, TimeoutError):
            out["failed"] += 1

    tasks = []
    while not stop.is_set():
        tasks.append(asyncio.ensure_future(one()))
        await asyncio.sleep(0.05)
    await asyncio.gather(*tasks)


async def main(args: argparse.Namespace) -> dict[str, object]:
    loop = asyncio.get_running_loop()
    ready, stop = asyncio.Event(), asyncio.Event()
    tcps = [Tcp(int(p), i) for p in args.tcp.split(",") if p for i in range(args.conns)]
    udps = [Udp(i) for i in range(args.udp_flows)]
    new: dict[str, int] = {"ok": 0, "failed": 0}
    tasks = [asyncio.ensure_future(tcp_conn(args.vip, c, ready, stop)) for c in tcps]
    tasks += [asyncio.ensure_future(udp_flow(args.vip, args.udp, u, ready, stop)) for u in udps]
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if all(c.last or c.error for c in tcps) and all(u.last for u in udps):
            break
        await asyncio.sleep(0.05)
    ready.set()
    print("READY", flush=True)
    if args.new_port:
        tasks.append(asyncio.ensure_future(new_conns(args.vip, args.new_port, stop, new)))
    eof = loop.run_in_executor(None, sys.stdin.read)  # the test closes stdin to stop us
    await asyncio.wait([eof], timeout=args.duration)
    stop.set()
    await asyncio.gather(*tasks)
    return {
        "tcp": {"conns": len(tcps), "max_gap": round(max((c.gap for c in tcps), default=0), 3),
                "errors": [f"{c.port}/{c.i}: {c.error}" for c in tcps if c.error]},
        "udp": {"flows": len(udps), "max_gap": round(max((u.gap for u in udps), default=0), 3),
                "silent": [u.i for u in udps if not u.last]},
        "new": new,
    }  # fmt: skip


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("vip")
    ap.add_argument("--tcp", default="")
    ap.add_argument("--conns", type=int, default=10)
    ap.add_argument("--udp", type=int, default=53)
    ap.add_argument("--udp-flows", type=int, default=0)
    ap.add_argument("--new-port", type=int, default=0)
    ap.add_argument("--duration", type=float, default=60.0)
    result = asyncio.run(main(ap.parse_args()))
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    os._exit(0)  # the stdin reader thread may still block
