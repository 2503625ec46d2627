"""A small in-process event bus: health changes today, NETCONF notifications and SNMP traps
read from it later.

Publishers call `bus.publish(event)` from any thread. Subscribers are either

- sync callbacks (`bus.subscribe(fn)`), called in the publisher's thread: they must be quick
  and must not block; or
- asyncio queues (`bus.queue()`), filled on the loop the queue was made on, so a consumer
  coroutine can `await q.get()` whichever thread published.

A slow queue consumer never blocks a publisher: a full queue drops its oldest event and counts
the drop (`bus.dropped`), because the newest state is what a notification reader needs.

`LoopRelay` carries events from a publisher on another thread (the health prober, on its own
loop) to a bus whose subscribers expect the daemon's main loop: the publisher only appends
to a buffer; the loop publishes the buffer, in order, when it gets to it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

Event = dict[str, Any]
Callback = Callable[[Event], None]

# Enough for a burst of changes (a whole rack going down) without unbounded memory.
DEFAULT_QUEUE_SIZE = 10_000


class _QueueSub:
    def __init__(self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[Event]) -> None:
        self.loop, self.queue = loop, queue

    def put(self, event: Event, bus: EventBus) -> None:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self.loop:
            self._put_now(event, bus)
        elif not self.loop.is_closed():
            # asyncio.Queue is not thread-safe: hand the put to the queue's own loop.
            self.loop.call_soon_threadsafe(self._put_now, event, bus)

    def _put_now(self, event: Event, bus: EventBus) -> None:
        if self.queue.full():
            with contextlib.suppress(asyncio.QueueEmpty):
                self.queue.get_nowait()
            bus._count_drop()
        self.queue.put_nowait(event)


class EventBus:
    """Publish/subscribe for dict events carrying a "type" key."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._callbacks: list[tuple[str | None, Callback]] = []
        self._queues: list[tuple[str | None, _QueueSub]] = []
        self.dropped = 0
        self.published = 0

    def subscribe(self, callback: Callback, event_type: str | None = None) -> Callback:
        """Call `callback(event)` for every event (of `event_type`, if given)."""
        with self._lock:
            self._callbacks.append((event_type, callback))
        return callback

    def unsubscribe(self, subscriber: Callback | asyncio.Queue[Event]) -> None:
        with self._lock:
            self._callbacks = [(t, c) for t, c in self._callbacks if c is not subscriber]
            self._queues = [(t, q) for t, q in self._queues if q.queue is not subscriber]

    def queue(
        self, event_type: str | None = None, maxsize: int = DEFAULT_QUEUE_SIZE
    ) -> asyncio.Queue[Event]:
        """A new asyncio.Queue receiving every event; call from the consumer's loop."""
        q: asyncio.Queue[Event] = asyncio.Queue(maxsize=maxsize)
        with self._lock:
            self._queues.append((event_type, _QueueSub(asyncio.get_running_loop(), q)))
        return q

    def publish(self, event: Event) -> None:
        """Deliver `event` to every matching subscriber; a failing callback is logged only."""
        etype = event.get("type")
        with self._lock:
            callbacks = [c for t, c in self._callbacks if t is None or t == etype]
            queues = [q for t, q in self._queues if t is None or t == etype]
            self.published += 1
        for callback in callbacks:
            try:
                callback(event)
            except Exception:
                log.exception("event subscriber failed", extra={"subscriber": repr(callback)})
        for sub in queues:
            sub.put(event, self)

    def _count_drop(self) -> None:
        with self._lock:
            self.dropped += 1
        log.warning("event queue full: oldest event dropped", extra={"dropped": self.dropped})


class RecentEvents:
    """The last `size` events of a bus, numbered, for clients that poll (the console's
    event log over the control socket)."""

    def __init__(self, bus: EventBus, size: int = 1000) -> None:
        self._events: collections.deque[Event] = collections.deque(maxlen=size)
        self._lock = threading.Lock()
        self._seq = 0
        bus.subscribe(self._record)

    def _record(self, event: Event) -> None:
        with self._lock:
            self._seq += 1
            self._events.append({"seq": self._seq, **event})

    def recent(self, limit: int = 100, event_type: str | None = None) -> list[Event]:
        """Newest first."""
        with self._lock:
            events = list(self._events)
        if event_type:
            events = [e for e in events if e.get("type") == event_type]
        return events[::-1][: max(0, limit)]


class LoopRelay:
    """A bus callback that re-publishes every event on `bus` from `loop`'s thread.

    The calling thread never waits for the loop: it appends to a buffer under a lock held
    only for that append (or the loop's swap of the buffer), and wakes the loop once per
    batch with call_soon_threadsafe. While the loop is stalled, events wait in the buffer,
    in order; past `maxlen` the oldest are dropped and counted (`dropped`), as a full
    subscriber queue does.
    """

    def __init__(
        self, bus: EventBus, loop: asyncio.AbstractEventLoop, maxlen: int = DEFAULT_QUEUE_SIZE
    ) -> None:
        self.bus, self.loop, self.maxlen = bus, loop, maxlen
        self._lock = threading.Lock()
        self._pending: collections.deque[Event] = collections.deque()
        self._scheduled = False
        self.dropped = 0
        self._reported = 0

    def __call__(self, event: Event) -> None:
        with self._lock:
            if len(self._pending) >= self.maxlen:
                self._pending.popleft()
                self.dropped += 1
            self._pending.append(event)
            if self._scheduled:
                return  # the loop already has a drain queued: it takes this one too
            self._scheduled = True
        try:
            self.loop.call_soon_threadsafe(self._drain)
        except RuntimeError:  # the loop is closed: the daemon is going away
            with self._lock:
                self._pending.clear()
                self._scheduled = False

    def _drain(self) -> None:
        with self._lock:
            batch, self._pending = self._pending, collections.deque()
            self._scheduled = False
            dropped = self.dropped
        if dropped != self._reported:
            # Logged here, on the loop, not by the publisher (which must not wait on I/O).
            log.warning(
                "event relay full: oldest events dropped",
                extra={"dropped": dropped - self._reported},
            )
            self._reported = dropped
        for event in batch:
            self.bus.publish(event)
