"""The daemon's side of the probe worker (appliance/probes/worker.py): start it, feed it,
apply what it reports, restart it when it dies.

`ProberProcess` offers what HealthWiring uses of a Prober (seed, sync, apply, renotify,
endpoint_state, endpoints_up, the lag figures), so the wiring is the same in both modes.

Threads, and why:

- "prober-super" reads the worker's stdout and applies each line: health goes to
  `on_change` (HealthWiring's: the one-thread health pool, then the reconciler), events to
  `on_event` (the LoopRelay to the daemon's bus), rows to the dict endpoint_state() reads.
  The daemon's main loop is not on the path from a probe result to the datapath. When the
  worker dies the same thread logs it, raises an alarm, waits (back-off) and starts the next
  one with the config and the health the datapath has now; the datapath keeps its last
  health meanwhile. It is made by the thread that calls start(), and starts every worker,
  so each worker is in that thread's network namespace (tests run the daemon's loop in one),
  and the kernel's parent-death signal (tied to the thread that forked) fires only when the
  daemon goes.
- "prober-writer" writes to the worker's stdin from a queue: a commit on the config thread
  never blocks on a full pipe or a stuck worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from typing import IO, Any

from appliance.config import Diff
from appliance.probes.scheduler import EndpointView, OnChange, view_state
from appliance.probes.settings import Key, endpoint_key
from appliance.probes.state import SERVING
from appliance.probes.worker import PARENT_ENV, parse_row

log = logging.getLogger(__name__)

START_TIMEOUT = 10.0  # the first worker must say "ready" within this
STOP_TIMEOUT = 5.0  # then it is killed
STATS_TIMEOUT = 5.0
# Restart back-off: doubles from MIN to MAX while workers keep dying young; a worker that
# ran STABLE_S seconds resets it.
BACKOFF_MIN, BACKOFF_MAX, STABLE_S = 0.2, 10.0, 30.0
# A worker that has sent nothing for HANG_S seconds (it sends its rows every second) is
# wedged, not slow: it is killed, and restarted like a worker that died. Checked every
# HANG_CHECK_S by its writer thread, which otherwise only waits for lines to send.
HANG_S, HANG_CHECK_S = 30.0, 1.0
ALARM = "prober"

OnEvent = Callable[[dict[str, Any]], None]


def worker_command() -> list[str]:
    """How to start the worker: the PyInstaller bundle's sys.executable is the `sluice`
    binary itself; otherwise the interpreter runs the sluice package."""
    if getattr(sys, "frozen", False):
        return [sys.executable, "probe-worker"]
    return [sys.executable, "-m", "sluice", "probe-worker"]


class _Worker:
    """One worker process and the thread writing to its stdin."""

    def __init__(self, command: list[str]) -> None:
        env = {**os.environ, PARENT_ENV: str(os.getpid())}
        level = logging.getLogger().getEffectiveLevel()
        env["SLUICE_LOG_LEVEL"] = logging.getLevelName(level)
        # stderr is inherited: the worker logs where the daemon logs. close_fds (the
        # default) keeps the daemon's instance lock and sockets out of the worker.
        self.proc = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env
        )
        self.pid = self.proc.pid
        self.started = self.heard = time.monotonic()  # heard: its last line (reader sets)
        self._out: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._writer = threading.Thread(target=self._write, name="prober-writer", daemon=True)
        self._writer.start()

    def send(self, msg: dict[str, Any]) -> None:
        self._out.put(json.dumps(msg, separators=(",", ":"), default=str).encode() + b"\n")

    def close_input(self) -> None:
        self._out.put(None)

    def _write(self) -> None:
        stdin = self.proc.stdin
        assert stdin is not None
        try:
            while True:
                try:
                    data = self._out.get(timeout=HANG_CHECK_S)
                except queue.Empty:
                    self._check_hang()
                    continue
                if data is None:
                    break
                stdin.write(data)
                stdin.flush()
        except OSError:
            pass  # the worker died: the supervisor sees its stdout close
        finally:
            with contextlib.suppress(OSError):
                stdin.close()

    def _check_hang(self) -> None:
        silent = time.monotonic() - self.heard
        if silent > HANG_S and self.proc.poll() is None:
            log.error(
                "probe worker silent: killed", extra={"pid": self.pid, "silent_s": round(silent, 1)}
            )
            self.proc.kill()

    @property
    def stdout(self) -> IO[bytes]:
        assert self.proc.stdout is not None
        return self.proc.stdout

    def reap(self, timeout: float) -> int:
        """Its exit status; killed if it has not exited within `timeout`."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log.error("probe worker did not stop in time: killed", extra={"pid": self.pid})
            self.proc.kill()
            return self.proc.wait()
        finally:
            self.close_input()

    def close_output(self) -> None:
        """After its last line was read (on the supervisor thread, the only reader)."""
        with contextlib.suppress(OSError):
            self.stdout.close()


class ProberProcess:
    """The prober in a supervised worker process; see the module docstring."""

    def __init__(
        self,
        on_change: OnChange,
        on_event: OnEvent,
        *,
        options: Mapping[str, Any] | None = None,
        alarms: Any = None,
        command: list[str] | None = None,
    ) -> None:
        self.on_change = on_change
        self.on_event = on_event
        self.options = dict(options or {})
        self.alarms = alarms
        self.command = command or worker_command()
        self.restarts = 0
        # What a new worker is given: the effective services as of the last sync/apply,
        # and each endpoint's health as the datapath was last told it. One lock orders the
        # mirror's updates with what is sent, so a worker started during a commit gets
        # either the config before it and then the commit, or the config after it.
        self._lock = threading.Lock()
        self._services: dict[str, dict[str, Any]] = {}
        self._health: dict[Key, bool] = {}
        self._views: dict[Key, EndpointView] = {}
        self._worker: _Worker | None = None
        self._ready = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, list[Any]] = {}  # id -> [threading.Event, answer]

    # -- what HealthWiring calls -------------------------------------------------------------
    def seed(self, health: Mapping[tuple[str, str, int], bool]) -> None:
        """The datapath's pinned health, before start(): the first worker's seed."""
        with self._lock:
            for (service, address, port), up in health.items():
                self._health[endpoint_key(service, address, port)] = bool(up)

    def sync(self, services: dict[str, dict[str, Any]]) -> None:
        with self._lock:
            self._services = dict(services)
            self._send({"op": "sync", "services": self._services})

    def apply(self, diff: Diff) -> None:
        """A commit's Diff (on the config worker thread): only the services it names."""
        updated = dict(diff.services_added)
        updated.update({name: new for name, (_old, new) in diff.services_changed.items()})
        removed = list(diff.services_removed)
        if not updated and not removed:
            return
        with self._lock:
            for name in removed:
                self._services.pop(name, None)
            self._services.update(updated)
            # An endpoint removed and added later starts afresh (as in Prober): forget
            # the health of endpoints no longer configured.
            touched = set(removed) | set(updated)
            keep = {
                endpoint_key(name, ep["address"], ep["port"])
                for name in updated
                for ep in updated[name].get("endpoint", [])
            }
            self._health = {
                k: up for k, up in self._health.items() if k[0] not in touched or k in keep
            }
            self._send({"op": "update", "services": updated, "removed": removed})

    def renotify(self) -> None:
        with self._lock:
            self._send({"op": "renotify"})

    def endpoint_state(self, service: str, address: str, port: int) -> dict[str, Any] | None:
        """From the rows the worker sent: any thread, no lock (a dict read)."""
        view = self._views.get(endpoint_key(service, address, port))
        return None if view is None else view_state(view)

    def endpoints_up(self, service: str) -> int:
        views = tuple(self._views.items())
        return sum(1 for key, view in views if key[0] == service and view.state in SERVING)

    # -- figures (tests, bench): a round trip to the worker -----------------------------------
    def stats(self, timeout: float = STATS_TIMEOUT) -> dict[str, Any]:
        rid = next(self._ids)
        slot: list[Any] = [threading.Event(), None]
        with self._lock:
            self._pending[rid] = slot
            self._send({"op": "stats", "id": rid})
        try:
            if not slot[0].wait(timeout):
                raise TimeoutError("the probe worker did not answer")
            return dict(slot[1])
        finally:
            self._pending.pop(rid, None)

    @property
    def dispatched(self) -> int:
        return int(self.stats()["dispatched"])

    def lag_stats(self) -> dict[str, float]:
        return dict(self.stats()["lag"])

    def reset_lag(self) -> None:
        with self._lock:
            self._send({"op": "reset_lag"})

    @property
    def pid(self) -> int | None:
        worker = self._worker
        return worker.pid if worker is not None else None

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # -- lifecycle ----------------------------------------------------------------------------
    async def start(self) -> None:
        """Start the supervisor (and with it the first worker); wait for it to be ready."""
        self._thread = threading.Thread(target=self._supervise, name="prober-super", daemon=True)
        self._thread.start()
        ready = await asyncio.get_running_loop().run_in_executor(
            None, self._ready.wait, START_TIMEOUT
        )
        if not ready:
            # Not fatal: the daemon serves on (the datapath keeps its pinned health) and
            # the supervisor goes on trying; the alarm says why nothing is probed.
            log.error("probe worker not ready in time", extra={"timeout_s": START_TIMEOUT})
            self._raise_alarm(f"probe worker not ready after {START_TIMEOUT:.0f} s")

    async def stop(self) -> None:
        """Ask the worker to stop (killed past STOP_TIMEOUT); end the supervisor."""
        with self._lock:  # ordered with _spawn(): no worker starts after this
            self._stopping.set()
            self._send({"op": "stop"})
            worker = self._worker
        loop = asyncio.get_running_loop()
        if worker is not None:
            await loop.run_in_executor(None, worker.reap, STOP_TIMEOUT)
        if self._thread is not None:
            await loop.run_in_executor(None, self._thread.join, STOP_TIMEOUT)

    def _send(self, msg: dict[str, Any]) -> None:
        """Under self._lock. No worker (between two): the next one gets the mirror."""
        if self._worker is not None:
            self._worker.send(msg)

    def _spawn(self) -> _Worker | None:
        with self._lock:
            if self._stopping.is_set():
                return None
            worker = _Worker(self.command)
            seed = [[*key, up] for key, up in self._health.items()]
            worker.send({"op": "init", "options": self.options, "seed": seed})
            worker.send({"op": "sync", "services": self._services})
            self._worker = worker
        log.info("probe worker started", extra={"pid": worker.pid, "restarts": self.restarts})
        return worker

    def _supervise(self) -> None:
        backoff = BACKOFF_MIN
        while not self._stopping.is_set():
            try:
                worker = self._spawn()
                if worker is None:
                    break
                self._read(worker)
                worker.close_output()
                with self._lock:
                    self._worker = None
                status = worker.reap(STOP_TIMEOUT)
                ran = time.monotonic() - worker.started
                if self._stopping.is_set():
                    break
                if ran >= STABLE_S:
                    backoff = BACKOFF_MIN
                self.restarts += 1
                log.error(
                    "probe worker exited; restarting it (the datapath keeps its last health)",
                    extra={"pid": worker.pid, "status": status, "ran_s": round(ran, 1),
                           "restart_in_s": backoff},
                )  # fmt: skip
                self._raise_alarm(
                    f"probe worker (pid {worker.pid}) exited with status {status}; restarting"
                )
            except OSError as exc:  # no such executable, no memory, no fds
                log.error("probe worker could not start", extra={"error": repr(exc)})
                self._raise_alarm(f"probe worker could not start: {exc}")
            except Exception as exc:
                # Supervision must go on: this thread's exit would also kill the worker
                # (its parent-death signal is tied to the thread that forked it).
                log.exception("probe worker supervision failed; retrying")
                self._raise_alarm(f"probe worker supervision failed: {exc!r}")
            if self._stopping.wait(backoff):
                break
            backoff = min(backoff * 2, BACKOFF_MAX)

    def _raise_alarm(self, text: str) -> None:
        if self.alarms is not None:
            self.alarms.raise_(ALARM, text, "major")

    def _read(self, worker: _Worker) -> None:
        """Apply the worker's lines until its stdout closes (it exited or was killed)."""
        for line in worker.stdout:
            try:
                msg = json.loads(line)
                self._handle(msg, worker)
            except Exception:
                log.exception("probe worker: bad message", extra={"line": line[:200]})

    def _handle(self, msg: dict[str, Any], worker: _Worker) -> None:
        worker.heard = time.monotonic()
        op = msg.get("op")
        if op == "health":
            service, address, port = msg["key"]
            key = (service, address, int(port))
            if msg.get("view"):
                self._views[key] = parse_row(msg["view"])[1]
            with self._lock:  # apply() replaces the dict under it
                self._health[key] = bool(msg["up"])
            self.on_change(service, address, int(port), bool(msg["up"]))
        elif op == "event":
            if msg.get("view"):
                key, view = parse_row(msg["view"])
                self._views[key] = view  # before the event: a subscriber may read it
            self.on_event(msg["event"])
        elif op == "views":
            for row in msg["rows"]:
                key, view = parse_row(row)
                self._views[key] = view
            for service, address, port in msg["gone"]:
                self._views.pop((service, address, int(port)), None)
        elif op == "stats":
            slot = self._pending.get(msg.get("id", 0))
            if slot is not None:
                slot[1] = msg
                slot[0].set()
        elif op == "ready":
            if self.restarts:
                log.warning(
                    "probe worker restarted", extra={"pid": worker.pid, "restarts": self.restarts}
                )
            if self.alarms is not None:
                self.alarms.clear(ALARM)
            self._ready.set()
