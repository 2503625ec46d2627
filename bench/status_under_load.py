"""Availability under hostile management load: does `sluice status` still answer in < 1 s?

A real `sluice run` (datapath off: this measures the control plane) with N services, and at
the same time, for D seconds:

- a NETCONF client sending the XPath filter of the incident (`//*[count(//*[count(//*)>0])>0]`)
  in a loop (each answered with an rpc-error within its budget);
- a NETCONF client pipelining get-configs of the whole config and reading slowly;
- snmpbulkwalk of the service table in a loop;
- three consoles polling as `sluice console` does (status, config.pending, lb.list brief).

Meanwhile `status` is called over the control socket twice a second; the bench reports
its latency (p50, p99, max) and how many calls took longer than 1 s (the aim: none).

    .venv/bin/python bench/status_under_load.py [--services 10000] [--seconds 60]

Writes bench/results/status_under_load.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from daemonkit import Daemon
from netconfkit import FAST_HASH, PASSWORD
from scale_config import services as synthetic

from appliance.control.client import AsyncControlClient

HOSTILE = "//*[count(//*[count(//*)>0])>0]"
COMMUNITY = "bench-ro"


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def configure(d: Daemon, n: int, netconf: int, snmp: int) -> None:
    doc = {
        "load-balancer": {"service": synthetic(n, 2)},
        "management": {
            "user": [{"name": "ops", "password-hash": FAST_HASH, "role": "read-only"}],
            "netconf": {"port": netconf, "address": ["127.0.0.1"]},
            "console-ssh": {"enabled": False},
        },
        "snmp": {"enabled": True, "port": snmp, "listen-address": ["127.0.0.1"],
                 "community": [{"name": "ro", "secret": COMMUNITY}]},
    }
    with d.client() as c:
        c.call("config.import", config=doc, comment="bench")


def netconf_loop(port: int, stop: threading.Event, counts: dict[str, int], kind: str) -> None:
    try:
        _netconf_loop(port, stop, counts, kind)
    except Exception:  # the daemon stopped under it at the end of the run
        if not stop.is_set():
            raise


def _netconf_loop(port: int, stop: threading.Event, counts: dict[str, int], kind: str) -> None:
    from ncclient import manager

    with manager.connect(host="127.0.0.1", port=port, username="ops", password=PASSWORD,
                         hostkey_verify=False, allow_agent=False, look_for_keys=False,
                         timeout=120) as m:
        while not stop.is_set():
            try:
                if kind == "xpath":
                    m.get(filter=("xpath", HOSTILE))
                else:
                    m.get_config("running")
            except Exception:  # the hostile one is answered with an rpc-error: expected
                pass
            counts[kind] = counts.get(kind, 0) + 1


def snmp_loop(port: int, stop: threading.Event, counts: dict[str, int]) -> None:
    tool = shutil.which("snmpbulkwalk")
    if tool is None:
        return
    while not stop.is_set():
        subprocess.run([tool, "-v2c", "-c", COMMUNITY, "-t", "5", "-r", "0", "-Cr50",
                        f"127.0.0.1:{port}", "1.3.6.1.4.1.32473.1.2"],
                       capture_output=True, timeout=300, check=False)
        counts["snmp"] = counts.get("snmp", 0) + 1


async def consoles(socket_path: Path, stop: threading.Event, counts: dict[str, int]) -> None:
    async def one() -> None:
        client = AsyncControlClient(socket_path, timeout=30)
        try:
            while not stop.is_set():
                for method, params in (("status", {}), ("config.pending", {}),
                                       ("lb.list", {"brief": True})):
                    await client.call(method, **params)
                counts["console"] = counts.get("console", 0) + 1
                await asyncio.sleep(2)
        finally:
            await client.close()

    await asyncio.gather(*(one() for _ in range(3)))


async def probe_status(socket_path: Path, seconds: float) -> list[float]:
    client = AsyncControlClient(socket_path, timeout=30)
    out = []
    try:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            t0 = time.monotonic()
            await client.call("status")
            out.append(time.monotonic() - t0)
            await asyncio.sleep(0.5)
    finally:
        await client.close()
    return out


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--services", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sluice-bench-") as tmp:
        d = Daemon(Path(tmp))
        d.start(timeout=120)
        stop = threading.Event()
        counts: dict[str, int] = {}
        try:
            netconf, snmp = free_port(), free_port(socket.SOCK_DGRAM)
            configure(d, args.services, netconf, snmp)
            time.sleep(2)  # the doors move to their configured ports
            quiet = asyncio.run(probe_status(d.socket, 5))
            loads = [
                threading.Thread(target=netconf_loop, args=(netconf, stop, counts, "xpath")),
                threading.Thread(target=netconf_loop, args=(netconf, stop, counts, "get")),
                threading.Thread(target=snmp_loop, args=(snmp, stop, counts)),
                threading.Thread(target=lambda: asyncio.run(consoles(d.socket, stop, counts))),
            ]
            for t in loads:
                t.daemon = True
                t.start()
            loaded = asyncio.run(probe_status(d.socket, args.seconds))
        finally:
            stop.set()
            d.stop()
    result: dict[str, Any] = {
        "services": args.services,
        "seconds": args.seconds,
        "machine": platform.machine(),
        "quiet": {"p50_ms": round(pct(quiet, 0.5) * 1000, 1),
                  "max_ms": round(max(quiet) * 1000, 1)},
        "loaded": {"calls": len(loaded), "p50_ms": round(pct(loaded, 0.5) * 1000, 1),
                   "p99_ms": round(pct(loaded, 0.99) * 1000, 1),
                   "max_ms": round(max(loaded) * 1000, 1),
                   "over_1s": sum(1 for v in loaded if v > 1.0)},
        "load_rounds": counts,
    }
    print(json.dumps(result, indent=2))
    out = Path(__file__).resolve().parent / "results" / "status_under_load.json"
    out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
