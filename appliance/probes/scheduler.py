"""The prober: one asyncio task scheduling every endpoint's probe from a heap of due times.

The prober is loop-agnostic: it runs on whichever loop `start()` is awaited on. The daemon
gives it a loop of its own, in a worker process (appliance/probes/worker.py, the default)
or on a thread (appliance/health.py, `HealthWiring`), so that nothing the front doors do on
the main loop can delay a probe or its result:

    prober = Prober(bus, on_change=..., initial_health=pinned)  # pinned: (svc, addr, port) -> up
    ... on the prober's own loop:  await prober.start()
    prober.sync(service.services_effective)        # whole config (any thread)
    service.subscribe(prober.apply)                 # each commit's Diff (any thread)
    prober.endpoint_state(svc, addr, port)          # any thread: reads a snapshot

on_change and bus.publish run in the prober's thread; both must hand their work off
(the datapath takes a lock a long commit may hold; bus subscribers may live on another
loop) rather than block it.

Why one task and a heap: 10,000 endpoints would be 10,000 sleeping tasks otherwise, each
with its own timer; the heap keeps one timer armed (the earliest due time), a probe exists
only while it is in flight, and at most `concurrency` are in flight at once.
"""

from __future__ import annotations

import asyncio
import functools
import heapq
import itertools
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, NamedTuple

from appliance.config import Diff
from appliance.events import EventBus
from appliance.probes.base import ProbeResult
from appliance.probes.runner import ProbeRunner
from appliance.probes.settings import Key, TargetConfig, endpoint_key, targets_of
from appliance.probes.state import ADMIN_DISABLED, DOWN, SERVING, UP, Health

log = logging.getLogger(__name__)

OnChange = Callable[[str, str, int, bool], None]
EVENT_TYPE = "endpoint-state"
DEFAULT_CONCURRENCY = 4096
# Dispatch at most this many due probes before yielding to the loop, so running probes
# (and the control socket) make progress during a burst.
DISPATCH_BATCH = 512
# Lateness samples kept for `lag_stats()` (the newest ones).
LAG_SAMPLES = 200_000


def iso_time(wall: float) -> str:
    return (
        datetime.fromtimestamp(wall, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    )


class EndpointView(NamedTuple):
    """One endpoint's health as other threads see it: replaced whole, never mutated, so a
    reader gets a consistent row without a lock and without asking the prober's loop."""

    state: str
    last_change: float
    last_error: str
    rtt_us: int | None
    probe: str


def view_state(view: EndpointView) -> dict[str, Any]:
    """An endpoint's row as `sluice ep list` shows it."""
    out: dict[str, Any] = {
        "health": view.state,
        "last-change": iso_time(view.last_change),
        "last-error": view.last_error,
        "probe": view.probe,
    }
    if view.rtt_us is not None:
        out["rtt-us"] = view.rtt_us
    return out


class _Target:
    __slots__ = ("cfg", "gen", "health", "key")

    def __init__(self, key: Key, cfg: TargetConfig, health: Health) -> None:
        self.key, self.cfg, self.health = key, cfg, health
        self.gen = 0  # bumped on every (re)schedule: stale heap entries carry an old one


class Prober:
    """Health probes of every endpoint in the effective config.

    `on_change(service, address, port, up)` is called in the loop thread whenever an
    endpoint starts or stops being eligible for new flows (also once for each endpoint
    when it first appears, so a datapath restored from pinned maps is corrected). Each
    state change is published on `bus` as one "endpoint-state" event and logged.

    `initial_health` maps (service, address, port) to whether the endpoint was taking new
    flows before (the datapath's pinned state after a restart): an endpoint known down
    starts down (still probed; it comes up by the usual rules, hold-down counted from the
    start), so a restart does not send new flows to a backend already known dead. An
    endpoint it does not name starts in `initial_state`.
    """

    def __init__(
        self,
        bus: EventBus | None = None,
        on_change: OnChange | None = None,
        *,
        concurrency: int = DEFAULT_CONCURRENCY,
        time_scale: float = 1.0,
        jitter: bool = True,
        initial_state: str = UP,
        runner: ProbeRunner | None = None,
        rng: random.Random | None = None,
        initial_health: Mapping[tuple[str, str, int], bool] | None = None,
    ) -> None:
        self.bus = bus
        self.on_change = on_change
        self.concurrency = concurrency
        self.time_scale = time_scale
        self.jitter = jitter
        # Up by default (as keepalived does): a daemon restart must not take every
        # endpoint out of service until it has been probed again.
        self.initial_state = initial_state
        self._runner = runner
        self._rng = rng or random.Random()
        self._targets: dict[Key, _Target] = {}
        self._by_service: dict[str, set[Key]] = {}
        # What other threads read (endpoint_state, endpoints_up): one immutable row per
        # endpoint, replaced by the prober's thread; a dict item store is atomic.
        self._view: dict[Key, EndpointView] = {}
        self._seed: dict[Key, bool] = {}
        if initial_health:
            self.seed(initial_health)
        self._heap: list[tuple[float, int, _Target, int]] = []
        self._seq = itertools.count()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: int | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Future[None] | None = None
        self._wake_at = float("inf")
        # In-flight probe count and a future the scheduler awaits when it hits the cap: a
        # plain counter, because asyncio.Semaphore's bookkeeping showed up in profiles at
        # 10,000 probes/s.
        self._running = 0
        self._slot_free: asyncio.Future[None] | None = None
        self._lag: deque[float] = deque(maxlen=LAG_SAMPLES)  # lateness / interval
        self.dispatched = 0

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        """Start the scheduler task on the running loop."""
        if self._task is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._thread = threading.get_ident()
        if self._runner is None:
            self._runner = ProbeRunner()
        # Schedule afresh: targets synced before start() and, after a stop(), those whose
        # probe was abandoned in flight (they had no heap entry).
        self._heap.clear()
        now = self._now()
        for target in self._targets.values():
            if target.cfg.probed:
                target.gen += 1
                self._schedule_first(target, now)
        self._task = self._loop.create_task(self._schedule(), name="sluice-prober")

    async def stop(self) -> None:
        """Cancel the scheduler and in-flight probes; close the raw sockets."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if self._runner is not None:
            self._runner.close()  # in-flight probes are abandoned; the runner is reusable
            await self._runner.wait_closed()
        self._running = 0

    # -- configuration -----------------------------------------------------------------------
    def seed(self, health: Mapping[tuple[str, str, int], bool]) -> None:
        """Known prior health, used once per endpoint when it first appears (see the class
        docstring). Call before the endpoints are synced."""
        for (service, address, port), up in health.items():
            self._seed[endpoint_key(service, address, port)] = bool(up)

    def sync(self, services: dict[str, dict[str, Any]]) -> None:
        """Make the targets exactly those of `services` (name → effective service dict).

        Endpoints whose resolved settings did not change keep their state and schedule.
        Thread-safe: from another thread the work is handed to the prober's loop.
        """
        self._in_loop(self._sync, services)

    def apply(self, diff: Diff) -> None:
        """Apply one commit's Diff: only the services it names are touched."""
        self._in_loop(self._apply, diff)

    def update(self, services: Mapping[str, dict[str, Any]], removed: list[str]) -> None:
        """What apply() does, for callers without a Diff (the probe worker gets each
        commit as JSON): remove the `removed` services, set `services` (name → effective
        service dict) as they are now. Thread-safe like sync()."""
        self._in_loop(self._update, (dict(services), list(removed)))

    def _update(self, arg: tuple[dict[str, dict[str, Any]], list[str]]) -> None:
        services, removed = arg
        for name in removed:
            self._set_service(name, {})
        for name, svc in services.items():
            self._set_service(name, targets_of(svc, self.time_scale))

    def _in_loop(self, fn: Callable[[Any], None], arg: Any) -> None:
        if self._loop is not None and threading.get_ident() != self._thread:
            try:
                self._loop.call_soon_threadsafe(fn, arg)
            except RuntimeError:
                # Its loop is closed (the daemon is exiting): a late commit has no one to
                # probe it.
                log.debug("prober stopped: config change ignored")
        else:
            fn(arg)

    def _sync(self, services: dict[str, dict[str, Any]]) -> None:
        for name in list(self._by_service):
            if name not in services:
                self._set_service(name, {})
        for name, svc in services.items():
            self._set_service(name, targets_of(svc, self.time_scale))

    def _apply(self, diff: Diff) -> None:
        for name in diff.services_removed:
            self._set_service(name, {})
        for name, svc in diff.services_added.items():
            self._set_service(name, targets_of(svc, self.time_scale))
        for name, (_old, new) in diff.services_changed.items():
            self._set_service(name, targets_of(new, self.time_scale))

    def _set_service(self, name: str, wanted: dict[Key, TargetConfig]) -> None:
        old_keys = self._by_service.get(name, set())
        for key in old_keys - wanted.keys():
            target = self._targets.pop(key)
            target.gen += 1  # its heap entry and any in-flight result are now ignored
            self._view.pop(key, None)
        now, wall = self._now(), time.time()
        for key, cfg in wanted.items():
            target = self._targets.get(key)
            if target is None:
                # A seed is used once: an endpoint removed and added again later starts
                # afresh, like any new endpoint.
                known_up = self._seed.pop(key, None)
                if not cfg.probed:
                    health = Health(self._resting_state(cfg), wall)
                elif known_up is False:
                    # Down since we know of it: hold-down counts from now.
                    health = Health(DOWN, wall, "down before restart", down_since=now)
                else:
                    health = Health(self.initial_state, wall)
                target = self._targets[key] = _Target(key, cfg, health)
                self._publish_view(target)
                self._notify_datapath(target)
                if cfg.probed:
                    self._schedule_first(target, now)
            elif target.cfg != cfg:
                self._reconfigure(target, cfg, now, wall)
        if wanted:
            self._by_service[name] = set(wanted)
        else:
            self._by_service.pop(name, None)

    def _resting_state(self, cfg: TargetConfig) -> str:
        # Not probed: admin-disabled, or probe type none ("every enabled endpoint is up").
        return ADMIN_DISABLED if cfg.admin != "enabled" else UP

    def _reconfigure(self, target: _Target, cfg: TargetConfig, now: float, wall: float) -> None:
        was_probed = target.cfg.probed
        target.cfg = cfg
        target.gen += 1
        self._publish_view(target)  # the probe type may have changed
        if not cfg.probed:
            self._change(target, target.health.set_state(self._resting_state(cfg), now, wall))
            return
        if not was_probed:
            # Back from admin-disabled (or from type none): start over like a new endpoint.
            change = target.health.set_state(self.initial_state, now, wall)
            self._change(target, change)
        else:
            # Same endpoint, new probe settings: keep its state, restart the counting.
            target.health.fails = target.health.successes = 0
        self._schedule_first(target, now)

    # -- scheduling --------------------------------------------------------------------------
    def _now(self) -> float:
        return self._loop.time() if self._loop is not None else time.monotonic()

    def _schedule_first(self, target: _Target, now: float) -> None:
        # Jitter: spread first probes over one interval, so a start-up or a big commit does
        # not fire thousands of probes in the same millisecond (and every interval after).
        delay = self._rng.uniform(0, target.cfg.timing.interval) if self.jitter else 0.0
        self._push(target, now + delay)

    def _push(self, target: _Target, due: float) -> None:
        heapq.heappush(self._heap, (due, next(self._seq), target, target.gen))
        if due < self._wake_at:
            self._poke(due)

    def _poke(self, due: float) -> None:
        """Make the scheduler wake by `due` (it sleeps until the earliest due time)."""
        self._wake_at = min(self._wake_at, due)
        if self._wake is not None and not self._wake.done() and self._loop is not None:
            self._wake.set_result(None)

    async def _schedule(self) -> None:
        loop = asyncio.get_running_loop()
        heap = self._heap
        runner = self._runner
        assert runner is not None
        while True:
            now = loop.time()
            dispatched = 0
            while heap and heap[0][0] <= now and dispatched < DISPATCH_BATCH:
                due, _, target, gen = heapq.heappop(heap)
                if gen != target.gen:
                    continue  # rescheduled or removed since it was pushed
                while self._running >= self.concurrency:
                    # Back-pressure: wait for a probe to finish before starting another.
                    self._slot_free = loop.create_future()
                    await self._slot_free
                self._running += 1
                self._lag.append((loop.time() - due) / target.cfg.timing.interval)
                runner.start(target.cfg.spec, functools.partial(self._probed, target, due, gen))
                dispatched += 1
            self.dispatched += dispatched
            if dispatched == DISPATCH_BATCH:
                await asyncio.sleep(0)
                continue
            self._wake_at = heap[0][0] if heap else float("inf")
            self._wake = loop.create_future()
            timer = None
            if heap:
                timer = loop.call_at(self._wake_at, _wake_up, self._wake)
            try:
                await self._wake
            finally:
                if timer is not None:
                    timer.cancel()
                self._wake = None
                self._wake_at = float("inf")

    def _probed(self, target: _Target, due: float, gen: int, result: ProbeResult) -> None:
        """A probe ended: count it, maybe change state, schedule the next one."""
        if self._task is None:
            return  # stopped meanwhile
        self._running -= 1
        if self._slot_free is not None and not self._slot_free.done():
            self._slot_free.set_result(None)
        if gen != target.gen:
            return  # reconfigured or removed while the probe ran: its result is stale
        now = self._now()
        timing = target.cfg.timing
        change = target.health.record(
            result.ok, result.rtt_us, result.error, timing, now, time.time()
        )
        self._publish_view(target)  # before the event: a subscriber may read it
        self._change(target, change)
        # Fixed rate (due + interval), so the schedule does not creep by each probe's run
        # time; a target that fell a whole interval behind is not fired twice to catch up.
        due += timing.interval
        self._push(target, due if due > now else now)

    # -- changes -----------------------------------------------------------------------------
    def _change(self, target: _Target, change: tuple[str, str] | None) -> None:
        if change is None:
            return
        old, new = change
        service, address, port = target.key
        health = target.health
        self._publish_view(target)
        event = {
            "type": EVENT_TYPE,
            "service": service,
            "address": address,
            "port": port,
            "old": old,
            "new": new,
            "time": iso_time(health.last_change),
            "error": health.last_error if new not in SERVING else "",
        }
        level = logging.WARNING if new not in SERVING else logging.INFO
        log.log(
            level,
            "endpoint health changed",
            extra={k: v for k, v in event.items() if k not in ("type", "time")},
        )
        if (old in SERVING) != (new in SERVING):
            self._notify_datapath(target)
        if self.bus is not None:
            self.bus.publish(event)

    def renotify(self) -> None:
        """Call on_change again for every endpoint with its current state: for a datapath
        that starts (or is replaced) after the prober did. Thread-safe; done on the
        prober's loop, so it is ordered with the changes on_change reports."""
        self._in_loop(self._renotify, None)

    def _renotify(self, _: Any) -> None:
        for target in list(self._targets.values()):
            self._notify_datapath(target)

    def _notify_datapath(self, target: _Target) -> None:
        if self.on_change is None:
            return
        service, address, port = target.key
        try:
            self.on_change(service, address, port, target.health.state in SERVING)
        except Exception:
            log.exception(
                "datapath health update failed",
                extra={"service": service, "address": address, "port": port},
            )

    # -- operational state (any thread) ------------------------------------------------------
    def _publish_view(self, target: _Target) -> None:
        h = target.health
        self._view[target.key] = EndpointView(
            h.state, h.last_change, h.last_error, h.rtt_us, target.cfg.spec.type
        )

    def endpoint_state(self, service: str, address: str, port: int) -> dict[str, Any] | None:
        """What `sluice ep list` shows for one endpoint; None if it is not known.

        Thread-safe and cheap: one read of the snapshot the prober's thread keeps current.
        """
        view = self._view.get(endpoint_key(service, address, port))
        return None if view is None else view_state(view)

    def view(self, key: Key) -> EndpointView | None:
        """One endpoint's current row (key as endpoint_key() makes it)."""
        return self._view.get(key)

    def views(self) -> Mapping[Key, EndpointView]:
        """Every endpoint's row: the live mapping, to be read on the prober's loop (the
        probe worker copies the changed rows out from there)."""
        return self._view

    def endpoints_up(self, service: str) -> int:
        """How many endpoints of `service` take new flows (for the service's state).

        Thread-safe: tuple() copies the key set in one step under the GIL, and rows come
        from the snapshot."""
        view = self._view
        keys = tuple(self._by_service.get(service, ()))
        return sum(1 for key in keys if (row := view.get(key)) is not None and row.state in SERVING)

    def lag_stats(self) -> dict[str, float]:
        """Dispatch lateness of recent probes, as a fraction of their interval."""
        samples = sorted(list(self._lag))  # list(): one C-level copy, safe from any thread
        if not samples:
            return {"count": 0, "p50": 0.0, "p99": 0.0, "max": 0.0}
        n = len(samples)
        return {
            "count": n,
            "p50": samples[n // 2],
            "p99": samples[min(n - 1, int(n * 0.99))],
            "max": samples[-1],
        }

    def reset_lag(self) -> None:
        self._lag.clear()

    def __len__(self) -> int:
        return len(self._targets)


def _wake_up(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
