"""`sluice run`: the daemon. One asyncio loop; config work on one worker thread.

Start-up: take the single-instance lock on the database, open the store, load and validate
running, hand it to the reconciler, start the health prober, serve the control socket, then
start the front doors (NETCONF, SNMP, SSH console) the caller chose. SIGTERM/SIGINT shut
down cleanly (socket removed, lock released).
"""

from __future__ import annotations

import asyncio
import fcntl
import gc
import logging
import os
import signal
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any

from appliance import __version__
from appliance.alarms import Alarms
from appliance.bgp.validate import check as bgp_check
from appliance.config import ConfigService, Diff
from appliance.config.store import Store
from appliance.control.server import ControlServer
from appliance.datapath.qos_plan import check as qos_check
from appliance.datapath.validate import check as datapath_limits
from appliance.doors import DoorContext, DoorSpec, DoorSupervisor
from appliance.events import EventBus
from appliance.firewall.compile import check as firewall_rules
from appliance.ha.settings import check as ha_rules
from appliance.health import HealthWiring, prober_mode
from appliance.notification_log import NotificationLog
from appliance.reconciler import LoggingReconciler, Reconciler
from appliance.snapshot import Snapshot
from appliance.watchdog import Watchdog, sd_notify

log = logging.getLogger(__name__)


class AlreadyRunning(Exception):
    pass


def acquire_instance_lock(db: Path) -> IO[str]:
    """An exclusive flock beside the database; a second daemon on the same db is refused."""
    db.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    # 0600 from the start (the store tightens an existing one): it sits beside the secrets.
    fd = os.open(f"{db}.lock", os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
    handle = os.fdopen(fd, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise AlreadyRunning(
            f"another sluice daemon (pid {holder}) is already using {db}"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


async def run_daemon(
    db: Path,
    socket: Path,
    reconciler: Reconciler | None = None,
    state: dict[str, Any] | None = None,
    doors: Sequence[DoorSpec] = (),
    datapath_error: str | None = None,
) -> None:
    """Run until SIGTERM/SIGINT. ``state``: operational-state providers for the control
    socket (the datapath reconciler's ``state_providers()``). ``doors``: the front doors,
    chosen by the composition root (sluice/wiring.py), so this module never imports
    northbound/ or tui/ (the arrows point one way). ``datapath_error``: why the caller
    could not even build the datapath (the daemon then runs degraded, see below).

    Degraded, not dead: when the datapath cannot compile, load or attach, or the stored
    config no longer validates (a stricter release), the daemon still starts the control
    socket and every door, raises an alarm that `sluice status` shows, and leaves the pinned
    datapath as it is (its filters keep forwarding). A valid commit then (re)programs it."""
    lock = acquire_instance_lock(db)
    worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="config")
    loop = asyncio.get_running_loop()
    reconciler = reconciler or LoggingReconciler()
    state = state if state is not None else {}
    bus = EventBus()
    alarms = Alarms(bus)
    state["alarms"] = alarms.active
    if datapath_error:
        alarms.raise_("datapath", f"datapath unavailable: {datapath_error}", "critical")
    # Before anything slow: a SIGTERM during start-up must still shut down cleanly.
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        store = await loop.run_in_executor(worker, Store, db)
        service = await loop.run_in_executor(
            worker, lambda: ConfigService(store, tolerant=True)
        )
        # Even with the datapath off: a config accepted now must program when it is on.
        service.add_validator(datapath_limits)
        service.add_validator(bgp_check)
        service.add_validator(ha_rules)
        service.add_validator(firewall_rules)
        service.add_validator(qos_check)
        startup_error = await loop.run_in_executor(worker, service.boot_from_startup)
        if startup_error:
            alarms.raise_("startup-not-loaded", startup_error, "major")
        datapath = DatapathStart(reconciler, service, state, alarms)
        if service.load_error is None:
            await loop.run_in_executor(worker, datapath.start)
        else:
            alarms.raise_("config-invalid", "the stored running config does not validate "
                          f"with this release: {service.load_error}; fix it through any door "
                          "(the datapath keeps its last programming until then)", "critical")
            service.subscribe(datapath.start_after_valid_commit)
        health = HealthWiring(datapath.active, state, bus, mode=prober_mode(), alarms=alarms)
        datapath.health = health
        await health.start(service)
        # After the prober wrapped state["endpoint"]: one thread reads every provider, the
        # doors and the control socket read its snapshot (state["snapshot"]).
        snapshot = Snapshot(state, config_service=service,
                            period=float(os.environ.get("SLUICE_SNAPSHOT_S") or 1.0))
        state["snapshot"] = snapshot
        snapshot.start()
        # Before the control socket and the doors: no client session exists yet, so nothing
        # short-lived is frozen (a frozen cycle is never collected).
        freeze_heap()
        service.subscribe(collect_after_bulk_commit)
        server = ControlServer(service, socket, worker, state)
        await server.start()
        # From here on every commit and event is kept for the streams' replay.
        notices = NotificationLog()
        notices.attach(service, bus)
        supervisor = DoorSupervisor(
            DoorContext(service, worker, state, bus, db.parent, socket, alarms, notices), doors
        )
        state["doors"] = supervisor.status
        await supervisor.start()
        watchdog = Watchdog(limit=float(os.environ.get("SLUICE_WATCHDOG_S") or 60))
        state["heartbeat"] = watchdog.status
        await watchdog.start()
        log.info(
            "sluice daemon ready",
            extra={
                "version": __version__,
                "db": str(db),
                "socket": str(socket),
                "doors": ",".join(supervisor.doors) or "-",
            },
        )
        sd_notify("READY=1")
        await stop.wait()
        sd_notify("STOPPING=1")
        log.info("sluice daemon stopping")
        await watchdog.stop()
        await supervisor.close()
        notices.detach()
        await server.close()
        await loop.run_in_executor(None, snapshot.stop)  # before the providers go away
        await health.stop()
        datapath.stop()
        await loop.run_in_executor(worker, datapath.active.close)
        await loop.run_in_executor(worker, store.close)
    finally:
        worker.shutdown(wait=True)
        lock.close()


# A commit touching this many services is a bulk provision: worth a full collection.
BULK_COMMIT = 1000


def freeze_heap() -> None:
    """Move everything alive now (modules, the loaded config) out of the collector's sight.

    At 10,000 services each full collection walked the whole config (~0.1 s, stalling the
    event loop and SNMP/NETCONF answers); frozen objects are skipped. They are still freed
    by reference counting when a commit drops them; only reference cycles among them would
    stay, and config documents have none. Called once, at start-up, before any session.
    """
    gc.collect()
    gc.freeze()


PROGRAMMING_CHECK_S = 2.0


class DatapathStart:
    """Starts the reconciler, or runs without one (degraded) when it cannot start."""

    def __init__(self, reconciler: Reconciler, service: ConfigService,
                 state: dict[str, Any], alarms: Alarms) -> None:
        self.reconciler = reconciler
        self.service = service
        self.state = state
        self.alarms = alarms
        self.health: Any = None  # HealthWiring, told which reconciler is live
        # Until the datapath is started nothing is programmed: the pinned one stays as is.
        self.active: Reconciler = LoggingReconciler()
        self._stopped = threading.Event()

    def start(self) -> None:
        """Runs on the config worker thread."""
        try:
            self.reconciler.start(self.service.running_doc(effective=True, with_secrets=True))
        except Exception as exc:
            log.exception("datapath failed to start; running degraded")
            self.alarms.raise_("datapath", f"datapath failed to start: {exc}", "critical")
            # Its providers would read a datapath that is not there.
            for name in ("service", "endpoint", "conntrack", "stats", "interfaces", "qos"):
                self.state.pop(name, None)
            why = str(exc)
            self.state["datapath"] = lambda: {"enabled": False, "degraded": why}
            return
        self.active = self.reconciler
        if self.health is not None:
            self.health.reconciler = self.reconciler
        self.service.subscribe(self.reconciler.apply)
        errors = getattr(self.reconciler, "errors", None)
        if errors is not None:
            self.state["programming-errors"] = lambda: dict(errors)
            self.service.subscribe(self.report_programming)
            threading.Thread(target=self._watch_programming, name="dp-alarm", daemon=True).start()

    def report_programming(self, _diff: Diff | None = None) -> None:
        """An alarm while any service is not programmed (its retry goes on meanwhile)."""
        errors = dict(getattr(self.reconciler, "errors", None) or {})
        if errors:
            name, why = sorted(errors.items())[0]
            more = f" and {len(errors) - 1} more" if len(errors) > 1 else ""
            self.alarms.raise_("datapath-programming",
                               f"service {name}{more} not programmed: {why}", "major")
        else:
            self.alarms.clear("datapath-programming")

    def _watch_programming(self) -> None:
        # The reconciler retries failed services on its own thread: clear the alarm when
        # a retry succeeds, without a commit.
        while not self._stopped.wait(PROGRAMMING_CHECK_S):
            self.report_programming()

    def stop(self) -> None:
        self._stopped.set()

    def start_after_valid_commit(self, diff: Diff) -> None:
        """After each commit while the stored config did not validate: once running
        validates as a whole again, program the datapath from it."""
        if self.service.load_error is not None:
            return
        self.service.unsubscribe(self.start_after_valid_commit)
        self.alarms.clear("config-invalid")
        self.start()


def collect_after_bulk_commit(diff: Diff) -> None:
    """A bulk provision replaced much of the config: collect now, on the committing (worker)
    thread, rather than in a full pass the event loop would pay for later. Not a freeze:
    what is alive now includes client sessions, whose cycles a freeze would leak."""
    changed = len(diff.services_added) + len(diff.services_changed) + len(diff.services_removed)
    if changed >= BULK_COMMIT:
        gc.collect()
