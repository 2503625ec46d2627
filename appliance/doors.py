"""Front doors (NETCONF, SNMP, the SSH console, ...) and the one supervisor that runs them.

A door is built from its config section, started once, told when its section changes
(`reconfigure(section)`) and closed at shutdown. The supervisor owns what every door would
otherwise repeat: it reads the section, follows commits, hands each door the new section
in order (one reconfiguration at a time per door, the newest section wins), keeps going
when a door fails, and reports every door's state for `sluice status`.

A door that listens keeps its listener in a `Binding`: opened where the section says,
re-opened when that changes, retried with a visible state ("retrying", with the error)
when the address cannot be bound — a port still held by a dying process at start-up must
not leave the door down for good — and closed without touching sessions already open.

Adding a door is one module (a class with the `Door` shape and a constructor taking
`(DoorContext, section)`) plus one `DoorSpec` line in the composition root.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Hashable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger(__name__)

Section = dict[str, Any]


@dataclass
class DoorContext:
    """What a door gets from the daemon: the config service and the rest of the core."""

    service: Any  # appliance.config.ConfigService
    worker: Executor  # the config worker thread: config calls run here, never on the loop
    state: dict[str, Any]  # operational-state providers (datapath, prober, doors)
    bus: Any  # appliance.events.EventBus: endpoint-state and other events
    state_dir: Path  # per-appliance files (SSH host key) beside the database
    socket: Path  # the control socket (the SSH console's children connect to it)
    alarms: Any = None  # appliance.alarms.Alarms: conditions a door raises (BGP sessions lost)
    # appliance.notification_log.NotificationLog: the event stream's notices, for replay
    notices: Any = None


class Door(Protocol):
    async def start(self) -> None: ...

    async def reconfigure(self, section: Section) -> None: ...

    async def close(self) -> None: ...

    def status(self) -> dict[str, Any]: ...


DoorFactory = Callable[[DoorContext, Section], Door]


@dataclass(frozen=True)
class DoorSpec:
    name: str
    # Where its section lives in the running config: ("management", "netconf") is
    # /sluice:management/netconf; ("snmp",) is /sluice:snmp.
    section: tuple[str, ...]
    factory: DoorFactory


def section_of(sections: dict[str, Any], path: Sequence[str]) -> Section:
    """The effective section at `path` (defaults filled in by the config service), {} if
    absent. Secrets are included: doors need them (SNMP keys, password hashes)."""
    node: Any = sections
    for name in path:
        node = (node or {}).get(name)
    return dict(node or {})


class Listener(Protocol):
    async def close(self) -> None:
        """Stop accepting; sessions already open go on."""


# Waits between attempts to bind an address that was refused: quick at first (a previous
# daemon's socket closing), then every 30 s for as long as the config asks for it.
RETRY_DELAYS = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)


class Binding:
    """One door's listener, kept where the door's config says.

    `set(where)` with a hashable description of where to listen (None: disabled) opens it,
    or re-opens it if `where` changed. `open_listener(where)` opens it and raises OSError
    when it cannot (the state becomes "retrying" and it is tried again until `where`
    changes or the binding is closed); any other error means the settings cannot work
    (state "failed" until they change).
    """

    def __init__(
        self,
        door: str,
        open_listener: Callable[[Any], Awaitable[Listener]],
        retry_delays: Sequence[float] = RETRY_DELAYS,
        describe: Callable[[Any], str] = str,
    ) -> None:
        """`describe(where)`: where it listens, as `sluice status` shows it."""
        self.door = door
        self._open = open_listener
        self._describe = describe
        self._delays = tuple(retry_delays)
        self.where: Hashable | None = None
        self.listener: Listener | None = None
        self.state = "disabled"
        self.error: str | None = None
        self.attempts = 0
        self._lock = asyncio.Lock()
        self._retry: asyncio.Task[None] | None = None
        self._closed = False

    async def set(self, where: Hashable | None) -> None:
        async with self._lock:
            if self._closed or (where == self.where and self.state != "disabled"):
                return
            if where is None and self.state == "disabled":
                return
            self._cancel_retry()
            await self._close_listener()
            self.where, self.attempts, self.error = where, 0, None
            if where is None:
                self.state = "disabled"
                log.info("door disabled by configuration", extra={"door": self.door})
                return
            await self._try_open()

    async def _try_open(self) -> None:
        try:
            self.listener = await self._open(self.where)
        except OSError as exc:
            self.attempts += 1
            self.state, self.error = "retrying", str(exc)
            delay = self._delays[min(self.attempts, len(self._delays)) - 1]
            log.error(
                "door cannot listen; retrying",
                extra={"door": self.door, "where": self._describe(self.where), "error": str(exc),
                       "retry_in": delay, "attempt": self.attempts},
            )
            self._retry = asyncio.ensure_future(self._retry_after(delay, self.where))
            return
        except Exception as exc:  # a config the door cannot use: retrying would not help
            self.state, self.error = "failed", str(exc) or type(exc).__name__
            log.exception("door cannot start as configured", extra={"door": self.door})
            return
        self.state, self.error = "listening", None
        if self.attempts:
            log.info("door listening after retries", extra={"door": self.door,
                                                            "attempts": self.attempts})

    async def _retry_after(self, delay: float, where: Hashable | None) -> None:
        await asyncio.sleep(delay)
        async with self._lock:
            if self._closed or where != self.where or self.state != "retrying":
                return
            self._retry = None
            await self._try_open()

    def _cancel_retry(self) -> None:
        task, self._retry = self._retry, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    async def _close_listener(self) -> None:
        listener, self.listener = self.listener, None
        if listener is not None:
            try:
                await listener.close()
            except Exception:
                log.exception("door listener failed to close", extra={"door": self.door})

    async def close(self) -> None:
        async with self._lock:
            self._closed = True
            self._cancel_retry()
            await self._close_listener()
            self.state = "closed"

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {"state": self.state}
        if self.where is not None:
            out["where"] = self._describe(self.where)
        if self.error:
            out["error"] = self.error
            out["attempts"] = self.attempts
        return out


class DoorSupervisor:
    """Builds, starts, reconfigures and closes the daemon's doors."""

    def __init__(self, ctx: DoorContext, specs: Sequence[DoorSpec]) -> None:
        self.ctx = ctx
        self.specs = list(specs)
        self.doors: dict[str, Door] = {}
        self.failed: dict[str, str] = {}  # doors that could not be built or started
        self._pending: dict[str, Section] = {}  # newest section not yet handed over
        self._running: dict[str, asyncio.Task[None]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing = False

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        # Subscribe first: a commit made while doors start is not missed (it is applied
        # after that door's start, as a reconfiguration).
        self.ctx.service.subscribe(self._on_commit)
        for spec in self.specs:
            section = await self._section(spec)
            try:
                door = spec.factory(self.ctx, section)
                await door.start()
            except Exception as exc:  # one door that cannot start must not sink the rest
                log.exception("front door failed to start", extra={"door": spec.name})
                self.failed[spec.name] = str(exc) or type(exc).__name__
                continue
            self.doors[spec.name] = door
            if spec.name in self._pending:
                self._kick(spec.name)

    async def _section(self, spec: DoorSpec) -> Section:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self.ctx.worker,
            lambda: section_of(self.ctx.service.sections_effective, spec.section),
        )

    def _on_commit(self, diff: Any) -> None:
        """ConfigService subscriber: runs in the committing thread, after the commit."""
        if self._closing or self._loop is None:
            return
        changed = getattr(diff, "sections_changed", {})
        for spec in self.specs:
            if spec.section[0] not in changed:
                continue
            old, new = changed[spec.section[0]]
            old_s = section_of({spec.section[0]: old}, spec.section)
            new_s = section_of({spec.section[0]: new}, spec.section)
            if old_s != new_s:
                with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                    self._loop.call_soon_threadsafe(self._queue, spec.name, new_s)

    def _queue(self, name: str, section: Section) -> None:
        self._pending[name] = section
        if name in self.doors:
            self._kick(name)

    def _kick(self, name: str) -> None:
        if self._closing or name in self._running:
            return  # the running task picks up the newest section when it finishes
        task = asyncio.ensure_future(self._reconfigure(name))
        self._running[name] = task

    async def _reconfigure(self, name: str) -> None:
        try:
            while name in self._pending and not self._closing:
                section = self._pending.pop(name)
                try:
                    await self.doors[name].reconfigure(section)
                except Exception:
                    log.exception("front door failed to reconfigure", extra={"door": name})
        finally:
            self._running.pop(name, None)

    def status(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for spec in self.specs:
            if spec.name in self.doors:
                try:
                    out[spec.name] = self.doors[spec.name].status()
                except Exception as exc:
                    out[spec.name] = {"state": "unknown", "error": str(exc)}
            elif spec.name in self.failed:
                out[spec.name] = {"state": "failed", "error": self.failed[spec.name]}
        return out

    async def close(self) -> None:
        self._closing = True
        self.ctx.service.unsubscribe(self._on_commit)
        for task in list(self._running.values()):
            task.cancel()
        for name in reversed(list(self.doors)):
            try:
                await self.doors[name].close()
            except Exception:
                log.exception("front door failed to close", extra={"door": name})
