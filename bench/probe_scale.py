"""Prober scale: 10,000 TCP endpoints probed every second on one core.

Listeners run in a child process on the other core (when there is one), on a few ports of
several loopback addresses (127.0.0.1-127.0.0.N); the endpoints point at them. The prober
process is pinned to one CPU (the prober is single-threaded anyway). After a warm-up (the
jittered first probes), it measures for --seconds: schedule lateness (dispatch time minus
due time, as % of the interval: p50, p99, max), the prober process's CPU use (getrusage,
user + system; and per probe) and how long it waited for a CPU (schedstat): lateness with a
high wait is another process's doing, on a shared machine.

    .venv/bin/python bench/probe_scale.py [--endpoints 10000] [--seconds 20] [--no-pin]

Prints a Markdown row and writes bench/results/probe_scale.json. Every loop is bounded: the
run stops after warm-up + --seconds, the listener child is killed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import selectors
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from appliance.probes import Prober

LISTEN_ADDRS = [f"127.0.0.{i}" for i in range(1, 9)]
BASE_PORT = 20000
PORTS = 10  # 8 addresses x 10 ports = 80 distinct listeners


def listen_forever(seconds: float, addrs: list[str] = LISTEN_ADDRS) -> None:
    """Child: accept and close on every listener until `seconds` pass (bounded)."""
    sel = selectors.DefaultSelector()
    for addr in addrs:
        for p in range(PORTS):
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((addr, BASE_PORT + p))
            s.listen(4096)
            s.setblocking(False)
            sel.register(s, selectors.EVENT_READ)
    print("READY", flush=True)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for key, _ in sel.select(timeout=0.5):
            lsock: socket.socket = key.fileobj  # type: ignore[assignment]
            for _ in range(256):  # bounded per wake-up
                try:
                    conn, _ = lsock.accept()
                except BlockingIOError:
                    break
                conn.close()


def services(n: int, addrs: list[str] = LISTEN_ADDRS) -> dict[str, dict[str, Any]]:
    """Effective-shaped services, 80 endpoints each (one per listener)."""
    per = len(addrs) * PORTS
    out: dict[str, dict[str, Any]] = {}
    for i in range((n + per - 1) // per):
        eps = []
        for j in range(min(per, n - i * per)):
            addr, port = addrs[j % len(addrs)], BASE_PORT + j // len(addrs)
            eps.append({"address": addr, "port": port, "admin-state": "enabled"})
        out[f"svc{i}"] = {
            "name": f"svc{i}",
            "admin-state": "enabled",
            "health-probe": {
                "type": "tcp",
                "interval": 1,
                "timeout": 1,
                "retries": 2,
                "successes-before-up": 2,
                "hold-down": 0,
            },
            "endpoint": eps,
        }
    return out


def runqueue_wait() -> float:
    """Seconds this thread spent runnable but waiting for a CPU (/proc schedstat): shows
    when another process on the same core, not the prober, caused the lateness."""
    try:
        return int(Path("/proc/thread-self/schedstat").read_text().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return float("nan")


def cpu_seconds() -> tuple[float, float]:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime, ru.ru_stime


async def measure(n: int, seconds: float) -> dict[str, Any]:
    downs: list[dict[str, Any]] = []

    def on_change(service: str, address: str, port: int, up: bool) -> None:
        if not up:
            downs.append({"service": service, "address": address, "port": port})

    prober = Prober(on_change=on_change)
    await prober.start()
    try:
        prober.sync(services(n))
        await asyncio.sleep(1.5)  # warm-up: the jittered first round and a bit
        prober.reset_lag()
        dispatched0, cpu0, t0 = prober.dispatched, cpu_seconds(), time.perf_counter()
        wait0 = runqueue_wait()
        await asyncio.sleep(seconds)
        wall = time.perf_counter() - t0
        waited = runqueue_wait() - wait0
        user, system = (b - a for a, b in zip(cpu0, cpu_seconds(), strict=True))
        lag = prober.lag_stats()
        probes = prober.dispatched - dispatched0
        states: dict[str, int] = {}
        for svc in services(n).values():
            for ep in svc["endpoint"]:
                st = prober.endpoint_state(svc["name"], ep["address"], ep["port"]) or {}
                states[st.get("health", "?")] = states.get(st.get("health", "?"), 0) + 1
    finally:
        await prober.stop()
    return {
        "endpoints": n,
        "seconds": round(wall, 1),
        "probes_per_s": round(probes / wall),
        "lag_p50_pct": round(lag["p50"] * 100, 2),
        "lag_p99_pct": round(lag["p99"] * 100, 2),
        "lag_max_pct": round(lag["max"] * 100, 2),
        "cpu_pct": round((user + system) / wall * 100, 1),
        # The intrinsic cost, meaningful even when another process shares the core.
        "cpu_us_per_probe": round((user + system) / max(probes, 1) * 1e6, 1),
        "cpu_user_pct": round(user / wall * 100, 1),
        "cpu_sys_pct": round(system / wall * 100, 1),
        "runqueue_wait_pct": round(waited / wall * 100, 1),
        "states": states,
        "went_down": len(downs),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoints", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--no-pin", action="store_true", help="leave CPU placement to the OS")
    parser.add_argument("--listen", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.listen:
        listen_forever(args.seconds)
        return 0
    cpus = sorted(os.sched_getaffinity(0))
    listener = subprocess.Popen(
        [sys.executable, __file__, "--listen", "--seconds", str(args.seconds + 30)],
        stdout=subprocess.PIPE,
    )
    try:
        assert listener.stdout is not None
        if listener.stdout.readline().strip() != b"READY":
            raise RuntimeError("listener did not start")
        if not args.no_pin:
            if len(cpus) > 1:
                os.sched_setaffinity(listener.pid, {cpus[-1]})
            os.sched_setaffinity(0, {cpus[0]})  # the prober gets one core
        result = asyncio.run(measure(args.endpoints, args.seconds))
    finally:
        listener.kill()
        listener.wait(timeout=5)
    result["machine"] = (
        f"{platform.machine()} {os.cpu_count()} cpu, Python {sys.version.split()[0]}"
    )
    print(
        "| endpoints | probes/s | lag p50 | lag p99 | lag max | CPU (1 core) | user/sys "
        "| CPU per probe | waiting for CPU | states |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    print(
        f"| {result['endpoints']} | {result['probes_per_s']} | {result['lag_p50_pct']}% "
        f"| {result['lag_p99_pct']}% | {result['lag_max_pct']}% | {result['cpu_pct']}% "
        f"| {result['cpu_user_pct']}/{result['cpu_sys_pct']}% "
        f"| {result['cpu_us_per_probe']} µs "
        f"| {result['runqueue_wait_pct']}% | {result['states']} |"
    )
    out = Path(__file__).resolve().parent / "results" / "probe_scale.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
