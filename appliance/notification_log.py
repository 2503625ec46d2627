"""The notification log: what the NETCONF event stream carried, kept for replay.

RFC 5277 and RFC 8040 (`start-time`/`stop-time`) let a subscriber ask for the notifications
of a past interval. This is the daemon's one record of them, from its start: a config
change per commit (who, which services and sections were created, replaced or deleted) and
each event-bus event (its scalar fields), in a neutral form every door encodes its own way
(RESTCONF JSON and XML; NETCONF's XML builders). Bounded: the newest LOG_SIZE notices, at
most MAX_EDITS edits each; when the oldest go, `aged_time` says since when the log is
incomplete (RFC 8040's replay-log-aged-time).

Publishers are the config service's commit subscribers (the committing thread) and the bus
(any thread). A listener (a door's live stream) is called with each notice in the
publisher's thread right after it is in the log, so a reader that registers, then reads the
log, misses nothing and, comparing `seq`, sees nothing twice.
"""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

log = logging.getLogger(__name__)

CONFIG_CHANGE, EVENT = "config-change", "event"
LOG_SIZE = 1000
# A commit of 10,000 services is one notice, not a megabyte: this many edits are kept.
MAX_EDITS = 100


@dataclass(frozen=True)
class Notice:
    seq: int
    time: datetime  # UTC: the notification's eventTime
    kind: str  # CONFIG_CHANGE or EVENT
    # CONFIG_CHANGE: {"user": str | None, "edits": [(kind, name, operation)], "edits-total"}
    # with kind "service" or "section", operation create/replace/delete.
    # EVENT: the bus event's scalar fields ("type" among them).
    data: dict[str, Any]


def diff_edits(diff: Any) -> list[tuple[str, str, str]]:
    """A commit's Diff as (kind, name, operation): services created, replaced and deleted,
    then the top-level sections, each in name order."""
    edits = []
    for names, op in ((diff.services_added, "create"), (diff.services_changed, "replace"),
                      (diff.services_removed, "delete")):  # fmt: skip
        edits += [("service", n, op) for n in sorted(names)]
    for name, (old, new) in sorted(diff.sections_changed.items()):
        op = "create" if old is None else "delete" if new is None else "replace"
        edits.append(("section", name, op))
    return edits


def now() -> datetime:
    return datetime.now(UTC)


def parse_time(text: str) -> datetime:
    """A YANG date-and-time / XML dateTime (RFC 3339, with its offset or Z), for replay's
    start and stop times; ValueError with what is wrong."""
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ValueError(f"{text!r} is not a date-and-time (e.g. 2026-11-30T01:00:00Z)"
                         ) from None  # fmt: skip
    if when.tzinfo is None:
        raise ValueError(f"{text!r} needs its time zone offset (Z or +hh:mm)")
    return when


def check_interval(start: datetime | None, stop: datetime | None) -> None:
    """RFC 5277 / RFC 8040 rules for a replay interval; ValueError naming the bad bound."""
    if start is not None and start > now():
        raise ValueError("start-time is in the future")
    if stop is not None and start is None:
        raise ValueError("stop-time needs start-time (replay)")
    if stop is not None and start is not None and stop < start:
        raise ValueError("stop-time is before start-time")


class NotificationLog:
    def __init__(self, size: int = LOG_SIZE) -> None:
        self.created = now()
        self._log: collections.deque[Notice] = collections.deque(maxlen=size)
        self._lock = threading.Lock()
        self._seq = 0
        self._aged: datetime | None = None
        self._listeners: list[Callable[[Notice], None]] = []
        self._service: Any = None
        self._bus: Any = None

    # -- sources -------------------------------------------------------------------------------
    def attach(self, service: Any, bus: Any = None) -> None:
        """Record every commit of `service` and every event of `bus` from now on."""
        self._service, self._bus = service, bus
        service.subscribe(self._on_commit)
        if bus is not None:
            bus.subscribe(self._on_event)

    def detach(self) -> None:
        if self._service is not None:
            self._service.unsubscribe(self._on_commit)
        if self._bus is not None and hasattr(self._bus, "unsubscribe"):
            self._bus.unsubscribe(self._on_event)
        self._service = self._bus = None

    def _on_commit(self, diff: Any) -> None:
        if diff.empty():
            return
        last = self._service.history(1) if self._service is not None else []
        edits = diff_edits(diff)
        self.record(CONFIG_CHANGE, {"user": last[0]["user"] if last else None,
                                    "edits": edits[:MAX_EDITS], "edits-total": len(edits)})

    def _on_event(self, event: Any) -> None:
        if isinstance(event, dict) and event.get("type"):
            self.record(EVENT, {k: v for k, v in event.items()
                                if isinstance(v, str | int | float | bool)})

    # -- the log -------------------------------------------------------------------------------
    def record(self, kind: str, data: dict[str, Any]) -> Notice:
        with self._lock:
            self._seq += 1
            notice = Notice(self._seq, now(), kind, data)
            if len(self._log) == self._log.maxlen:
                self._aged = self._log[0].time
            self._log.append(notice)
            listeners = list(self._listeners)
        for listener in listeners:
            try:
                listener(notice)
            except Exception:  # one door's fault must not cost the others their notice
                log.exception("notification listener failed")
        return notice

    def since(self, start: datetime, stop: datetime | None = None) -> list[Notice]:
        """The notices of [start, stop] still in the log, oldest first."""
        with self._lock:
            kept = list(self._log)
        return [n for n in kept if n.time >= start and (stop is None or n.time <= stop)]

    @property
    def aged_time(self) -> datetime | None:
        """The time of the newest notice the log dropped (None: it has dropped none)."""
        return self._aged

    def listen(self, listener: Callable[[Notice], None]) -> None:
        with self._lock:
            self._listeners.append(listener)

    def unlisten(self, listener: Callable[[Notice], None]) -> None:
        with self._lock:
            self._listeners = [x for x in self._listeners if x is not listener]
