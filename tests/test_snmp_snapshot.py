"""SNMP cells read the operational-state snapshot, never a provider on the event loop."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

from northbound.snmp import ber
from northbound.snmp.model import LbMib, Snapshot, StateReader

DOC = {"sluice:load-balancer": {"service": [
    {"name": "web", "vip": "198.18.0.10", "port": 80,
     "endpoint": [{"address": "198.18.1.1", "port": 8080}]}]}}


def netlink_like_status() -> dict[str, Any]:
    """Like the real datapath status: pyroute2 runs its own loop, so it fails inside one."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return {"loaded": True, "interfaces": {"lo": ["sluice_lb"]},
                "maps": {"ct_map": {"entries": 40, "capacity": 1024}}}  # 20 flows
    raise RuntimeError("This event loop is already running")


def test_conntrack_gauge_from_the_real_status_shape_read_on_the_loop() -> None:
    threads: set[str] = set()

    def service(name: str) -> dict[str, Any]:
        threads.add(threading.current_thread().name)
        return {"packets": 3}

    reader = StateReader({"datapath": netlink_like_status, "service": service}, ttl=0.05)
    mib = LbMib(Snapshot.from_doc(DOC), reader, time.monotonic(), lambda: 0)

    async def on_the_loop() -> tuple[Any, Any]:
        deadline = time.monotonic() + 5
        while not reader.snapshot.current().service("web") and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        return mib.global_cell(2, 0), mib.service_cell(13, 0)

    try:
        gauge, packets = asyncio.run(on_the_loop())
    finally:
        reader.snapshot.stop()
    assert gauge == ber.gauge32(40)
    assert packets == ber.counter64(3)
    assert threads == {"state-snapshot"}


def test_clear_asks_for_a_refresh_now() -> None:
    n = []
    reader = StateReader({"service": lambda name: n.append(1) or {}}, ttl=60)
    reader.track(Snapshot.from_doc(DOC))
    try:
        deadline = time.monotonic() + 5
        while not n and time.monotonic() < deadline:
            time.sleep(0.01)
        before = len(n)
        reader.clear()
        while len(n) == before and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(n) > before
    finally:
        reader.snapshot.stop()
