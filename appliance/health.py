"""Endpoint health in the daemon: the prober, off the main loop, wired to the config, the
datapath and the event bus. Two modes (SLUICE_PROBER): `process`, the daemon's default (the
prober in a worker process, see the end of this docstring), and `thread` (described first).

Why a thread of its own: the front doors (NETCONF, SNMP, SSH, the control socket) share the
daemon's main loop, and one costly request stalls it. A prober on that loop then stops
probing (dead backends stay in service) and, when the loop comes back, finds its in-flight
probes timed out (live backends marked down). On its own loop nothing a client sends can
delay a probe or its verdict:

- probes, their timers and the health state machine run on the "prober" thread;
- a change reaches the datapath from there, through the one-thread "health" pool (the
  reconciler's lock may be held by a long commit; the pool waits, the prober does not);
- events go to a prober-side bus (the service up/down tracker reads the prober's state
  there, in step with it) and are relayed to the daemon's bus on the main loop, where the
  doors' subscribers expect them, without the prober ever waiting for that loop;
- config commits arrive on the config worker thread and are handed to the prober's loop;
- `state["endpoint"]` reads a snapshot the prober keeps, from any thread, without a lock.

The loop's thread is created by the thread that calls `start()`, so it inherits that
thread's network namespace (tests run the daemon's loop inside a namespace).

A CPU-bound main loop still shares the GIL with a prober thread: a stall that waits or
runs in C (a blocking call, libyang) costs the prober nothing; pure-Python work costs it GIL
turns (see bench/probe_isolation.py for the figures). Hence the `process` mode, the
daemon's default: the prober runs in a worker process of its own
(appliance/probes/process.py and worker.py) and only its results come back, on a reader
thread that applies them exactly as the prober thread does above (health pool, relay,
endpoint rows). The service up/down tracker then runs in the worker, beside the prober.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from appliance.config import ConfigService
from appliance.events import EventBus, LoopRelay, RecentEvents
from appliance.probes import Prober
from appliance.probes.process import ProberProcess
from appliance.probes.service_state import ServiceStateTracker
from appliance.reconciler import Reconciler

log = logging.getLogger(__name__)

MODES = ("thread", "process")
# The daemon's default: a process, because on a thread the prober shares the GIL with the
# doors, and at 10,000 probes/s under their load it fell to half its rate (README,
# Benchmarks). SLUICE_PROBER=thread brings the thread back.
DEFAULT_MODE = "process"


def prober_mode(mode: str | None = None) -> str:
    """`mode`, else $SLUICE_PROBER, else DEFAULT_MODE; ValueError for anything else."""
    mode = mode or os.environ.get("SLUICE_PROBER") or DEFAULT_MODE
    if mode not in MODES:
        raise ValueError(f"SLUICE_PROBER must be one of {', '.join(MODES)}, not {mode!r}")
    return mode


# Bounds on start and stop: a prober that cannot start or stop in this time is broken, and
# the daemon must not hang on it.
START_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0


class ProberThread:
    """An asyncio loop on a thread of its own, running one Prober.

    `start()` and `stop()` are awaited on the caller's loop without blocking it (they wait
    on the prober loop's futures).
    """

    def __init__(self, prober: Prober, name: str = "prober") -> None:
        self.prober = prober
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
        finally:
            # Whatever is still pending (a probe task the runner abandoned) unwinds here.
            pending = asyncio.all_tasks(self.loop)
            for task in pending:
                task.cancel()
            self.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            self.loop.close()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def native_id(self) -> int | None:
        """The thread's kernel id (for /proc/self/task/<id>: its CPU use and waits)."""
        return self._thread.native_id

    async def start(self) -> None:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self.prober.start(), self.loop)
        await asyncio.wait_for(asyncio.wrap_future(future), START_TIMEOUT)

    async def stop(self) -> None:
        if not self._thread.is_alive():
            return
        future = asyncio.run_coroutine_threadsafe(self.prober.stop(), self.loop)
        try:
            await asyncio.wait_for(asyncio.wrap_future(future), STOP_TIMEOUT)
        except TimeoutError:
            log.error("prober did not stop in time; its thread is left to the exit")
        self.loop.call_soon_threadsafe(self.loop.stop)
        await asyncio.get_running_loop().run_in_executor(None, self._thread.join, STOP_TIMEOUT)


class HealthWiring:
    """The prober, fed by the config, feeding the datapath, the state providers and the bus.

    `prober_options` go to the Prober (tests shrink time with time_scale, turn off jitter;
    in process mode they must be JSON: no runner). `mode`: "thread" or "process" (see the
    module docstring); the daemon passes prober_mode(), whose default is process; here the
    default stays thread, for callers that hand the Prober objects (a scripted runner).
    `alarms`: raised while the probe worker is down.
    """

    def __init__(
        self,
        reconciler: Reconciler,
        state: dict[str, Any],
        bus: EventBus,
        *,
        prober_options: Mapping[str, Any] | None = None,
        mode: str = "thread",
        alarms: Any = None,
    ) -> None:
        self._reconciler = reconciler
        self._started = False
        self.state = state
        self.bus = bus
        self.mode = prober_mode(mode)
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="health")
        self.relay: LoopRelay | None = None
        # The prober publishes here, on its own thread; see the module docstring.
        self.prober_bus = EventBus()
        self.prober: Any
        self.thread: ProberThread | None = None
        if self.mode == "process":
            self.prober = ProberProcess(
                self._on_change, self._relay_event, options=prober_options, alarms=alarms
            )
        else:
            self.prober = Prober(
                self.prober_bus, on_change=self._on_change, **(prober_options or {})
            )
            self.thread = ProberThread(self.prober)
        self.services: ServiceStateTracker | None = None
        self.recent = RecentEvents(bus)
        state["events"] = self.recent.recent

    @property
    def reconciler(self) -> Reconciler:
        return self._reconciler

    @reconciler.setter
    def reconciler(self, reconciler: Reconciler) -> None:
        """The daemon swaps in the datapath reconciler when the datapath starts after the
        prober (a stored config that did not validate at start-up). The new one has not
        heard what the prober told the old one: every endpoint's state is told again."""
        self._reconciler = reconciler
        if self._started:
            self.prober.renotify()

    def _relay_event(self, event: dict[str, Any]) -> None:
        # Process mode: the worker's events, on the reader thread, to the daemon's bus.
        if self.relay is not None:
            self.relay(event)

    def _on_change(self, service: str, address: str, port: int, up: bool) -> None:
        set_health = getattr(self.reconciler, "set_endpoint_health", None)
        if set_health is None:
            return
        future = self.pool.submit(set_health, service, address, port, up)
        future.add_done_callback(_log_failure)

    async def _pinned_health(self) -> dict[tuple[str, str, int], bool]:
        """What the datapath's pinned maps say about endpoint health before this start
        (empty when the reconciler cannot tell). Read on the health pool: a map walk."""
        pinned = getattr(self.reconciler, "pinned_health", None)
        if pinned is None:
            return {}
        try:
            return dict(await asyncio.get_running_loop().run_in_executor(self.pool, pinned))
        except Exception as exc:  # no datapath loaded, unreadable maps: start as before
            log.warning("pinned endpoint health unreadable", extra={"error": repr(exc)})
            return {}

    async def start(self, service: ConfigService) -> None:
        self.prober.seed(await self._pinned_health())
        self.relay = LoopRelay(self.bus, asyncio.get_running_loop())
        if self.thread is not None:
            # The relay first, then the tracker: the daemon's bus sees an endpoint's change
            # before the service change it caused.
            self.prober_bus.subscribe(self.relay)
            self.services = ServiceStateTracker(self.prober_bus, self.prober.endpoints_up)
            await self.thread.start()
        else:
            # Before start(): the first worker gets the whole config once, with its init.
            self.prober.sync(service.services_effective)
            await self.prober.start()
        self._started = True
        # sync() and apply() hand their work to the prober's loop (thread-safe). The
        # subscription comes after the reconciler's, so the datapath knows new endpoints
        # before their health is set.
        if self.thread is not None:
            self.prober.sync(service.services_effective)
        service.subscribe(self.prober.apply)
        datapath_endpoint = self.state.get("endpoint")
        prober = self.prober

        def endpoint_state(svc: str, address: str, port: int) -> dict[str, Any]:
            merged = dict((datapath_endpoint and datapath_endpoint(svc, address, port)) or {})
            merged.update(prober.endpoint_state(svc, address, port) or {})
            return merged

        self.state["endpoint"] = endpoint_state

    async def stop(self) -> None:
        if self.thread is not None:
            await self.thread.stop()
        else:
            await self.prober.stop()
        if self.relay is not None:
            self.prober_bus.unsubscribe(self.relay)
        # The pool's queued datapath updates finish first (in order), off the loop.
        await asyncio.get_running_loop().run_in_executor(None, self.pool.shutdown, True)


def _log_failure(future: Future[Any]) -> None:
    exc = future.exception()
    if exc is not None:
        log.error("endpoint health update failed", extra={"error": repr(exc)})
