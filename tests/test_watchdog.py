"""The event loop proves it is alive: heartbeats to systemd and in `sluice status`, and a
loop stuck longer than the limit is acted on."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import threading
import time
from pathlib import Path

from daemonkit import Daemon

from appliance.watchdog import Watchdog


def test_a_stuck_loop_is_caught_and_a_live_one_is_not() -> None:
    stuck: list[float] = []
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    dog = Watchdog(limit=0.6, interval=0.1, on_stuck=stuck.append)
    asyncio.run_coroutine_threadsafe(dog.start(), loop).result(5)
    try:
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:  # a healthy loop: never reported
            assert not stuck
            time.sleep(0.05)
        assert dog.beats >= 5
        # Stall the loop as a runaway request would: it runs, and nothing else does.
        loop.call_soon_threadsafe(time.sleep, 2.0)
        deadline = time.monotonic() + 5
        while not stuck:
            assert time.monotonic() < deadline, "the stuck loop was not noticed"
            time.sleep(0.05)
        assert stuck[0] > 0.6
        # Once the loop runs again, the late tick shows in the status.
        deadline = time.monotonic() + 5
        while dog.status()["max-lag-ms"] < 500:
            assert time.monotonic() < deadline, dog.status()
            time.sleep(0.05)
    finally:
        asyncio.run_coroutine_threadsafe(dog.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


def test_the_daemon_tells_systemd_it_is_ready_and_alive(tmp_path: Path) -> None:
    address = str(tmp_path / "notify.sock")
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(address)
    receiver.settimeout(0.2)
    d = Daemon(tmp_path)
    os.environ["NOTIFY_SOCKET"] = address
    os.environ["WATCHDOG_USEC"] = "1000000"  # keep-alives every 0.5 s
    try:
        d.start()
    finally:
        del os.environ["NOTIFY_SOCKET"], os.environ["WATCHDOG_USEC"]
    try:
        seen: list[str] = []
        deadline = time.monotonic() + 15
        while not ("READY=1" in seen and seen.count("WATCHDOG=1") >= 2):
            assert time.monotonic() < deadline, f"got only {seen}"
            with contextlib.suppress(TimeoutError):
                seen.append(receiver.recv(4096).decode())
        status = json.loads(d.cli("status", "-o", "json").stdout)
        assert status["heartbeat"]["heartbeat-age-s"] < 5
    finally:
        d.stop()
        receiver.close()
