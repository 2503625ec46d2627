"""The main loop proves it is alive; a loop stuck too long gets the daemon restarted.

A heartbeat task on the daemon's loop ticks every `interval`. Each tick is reported to
systemd (`WATCHDOG=1` over $NOTIFY_SOCKET, when the unit sets `WatchdogSec=`), and a
thread of its own checks the age of the last tick: when it is older than `limit` the loop
is stuck (a runaway request, a deadlock) and no client is being served, so the daemon
ends itself with a clear log line and systemd starts it again. That restart is hitless:
the datapath's maps and filters are pinned and keep forwarding without the daemon.

`sluice status` shows the heartbeat: its age and the worst lag seen (how late a tick
came), so an operator sees a struggling loop before the watchdog has to act.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)


def sd_notify(message: str) -> bool:
    """Send one sd_notify(3) datagram to $NOTIFY_SOCKET; False when not under systemd."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):  # an abstract socket
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(message.encode())
    except OSError as exc:
        log.warning("sd_notify failed", extra={"error": str(exc)})
        return False
    return True


def systemd_watchdog_s() -> float | None:
    """The unit's WatchdogSec in seconds, if systemd asked for keep-alives."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return int(usec) / 1e6
    except ValueError:
        return None


def _die(age: float) -> None:
    log.critical("event loop stuck; exiting so the daemon is restarted",
                 extra={"stuck_s": round(age, 1)})
    logging.shutdown()
    os._exit(70)  # EX_SOFTWARE: systemd's Restart=on-failure starts it again


class Watchdog:
    def __init__(
        self,
        limit: float = 60.0,
        interval: float = 1.0,
        on_stuck: Callable[[float], None] = _die,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        systemd = systemd_watchdog_s()
        # Keep-alives at least twice per systemd period, as sd_watchdog_enabled(3) advises.
        self.interval = min(interval, systemd / 2) if systemd else interval
        self.limit = limit
        self.on_stuck = on_stuck
        self.clock = clock
        self.last_beat = clock()
        self.max_lag = 0.0
        self.beats = 0
        self._task: asyncio.Task[None] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="watchdog", daemon=True)
        self._notify = systemd is not None

    async def start(self) -> None:
        self.last_beat = self.clock()
        self._task = asyncio.ensure_future(self._beat())
        self._thread.start()

    async def _beat(self) -> None:
        while True:
            due = self.clock() + self.interval
            await asyncio.sleep(self.interval)
            now = self.clock()
            self.max_lag = max(self.max_lag, now - due)
            self.last_beat = now
            self.beats += 1
            if self._notify:
                sd_notify("WATCHDOG=1")

    def _watch(self) -> None:
        while not self._stop.wait(min(self.interval, self.limit / 4)):
            age = self.clock() - self.last_beat
            if age > self.limit:
                self.on_stuck(age)
                self.last_beat = self.clock()  # once per stall, if on_stuck returns

    def status(self) -> dict[str, Any]:
        return {
            "heartbeat-age-s": round(self.clock() - self.last_beat, 2),
            "max-lag-ms": round(self.max_lag * 1000, 1),
            "limit-s": self.limit,
        }

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            self._task.cancel()
        if self._thread.is_alive():
            await asyncio.to_thread(self._thread.join, 5)
