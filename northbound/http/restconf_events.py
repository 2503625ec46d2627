"""RESTCONF event streams (RFC 8040 6): the NETCONF stream as server-sent events.

What NETCONF subscribers get, as JSON notifications: `netconf-config-change` for every
commit from any door (who, and which items were created, replaced or deleted) and the
daemon's events (endpoint and service health...). A commit is published from the
committing thread; it reaches the loop through call_soon_threadsafe and each client's
bounded queue. A client that does not read is cut off when its queue fills (the daemon
never buffers without end for it); every 15 s an SSE comment keeps idle proxies open.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from appliance.config.paths import service_path
from appliance.doors import DoorContext

log = logging.getLogger(__name__)

STREAM = "NETCONF"
QUEUE = 256
MAX_CLIENTS = 32
KEEPALIVE = 15.0
MAX_EDITS = 100
_END = object()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def config_change(diff: Any, user: str | None) -> dict[str, Any]:
    edits = []
    for names, op in ((diff.services_added, "create"), (diff.services_changed, "replace"),
                      (diff.services_removed, "delete")):  # fmt: skip
        edits += [{"target": service_path(n), "operation": op} for n in sorted(names)]
    for name, (old, new) in sorted(diff.sections_changed.items()):
        op = "create" if old is None else "delete" if new is None else "replace"
        edits.append({"target": f"/sluice:{name}", "operation": op})
    return {"ietf-restconf:notification": {
        "eventTime": _now(),
        "ietf-netconf-notifications:netconf-config-change": {
            "changed-by": {"username": user or "unknown", "session-id": 0},
            "datastore": "running", "edit": edits[:MAX_EDITS]}}}  # fmt: skip


def bus_event(event: dict[str, Any]) -> dict[str, Any]:
    return {"ietf-restconf:notification": {
        "eventTime": _now(),
        "sluice-events:event": {k: v for k, v in event.items()
                                if isinstance(v, str | int | float | bool)}}}  # fmt: skip


class EventStreams:
    def __init__(self, ctx: DoorContext) -> None:
        self.service = ctx.service
        self.bus = ctx.bus
        self.clients: set[asyncio.Queue[Any]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing = False

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.service.subscribe(self._on_commit)
        if self.bus is not None:
            self.bus.subscribe(self._on_event)

    async def close(self) -> None:
        self._closing = True
        self.service.unsubscribe(self._on_commit)
        if self.bus is not None:
            self.bus.unsubscribe(self._on_event)
        for q in list(self.clients):
            self._end(q)

    # -- publishers (any thread) --------------------------------------------------------------
    def _on_commit(self, diff: Any) -> None:
        if self._closing or diff.empty() or not self.clients:
            return
        last = self.service.history(1)
        user = last[0]["user"] if last else None
        self._publish(json.dumps(config_change(diff, user)))

    def _on_event(self, event: Any) -> None:
        if self._closing or not self.clients or not isinstance(event, dict):
            return
        self._publish(json.dumps(bus_event(event)))

    def _publish(self, text: str) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(self._fan_out, text)

    def _fan_out(self, text: str) -> None:
        for q in list(self.clients):
            try:
                q.put_nowait(text)
            except asyncio.QueueFull:
                log.warning("restconf stream client not reading: cut off")
                self._end(q)

    def _end(self, q: asyncio.Queue[Any]) -> None:
        self.clients.discard(q)
        while True:
            try:
                q.get_nowait()
            except asyncio.QueueEmpty:
                break
        q.put_nowait(_END)

    # -- the SSE response ------------------------------------------------------------------------
    async def stream(self, request: web.Request) -> web.StreamResponse:
        if request.match_info.get("name") != STREAM:
            body = {"ietf-restconf:errors": {"error": [{
                "error-type": "application", "error-tag": "invalid-value",
                "error-message": f"no stream {request.match_info.get('name')!r} "
                                 f"(there is {STREAM})"}]}}  # fmt: skip
            return web.Response(status=404, body=json.dumps(body).encode(),
                                headers={"Content-Type": "application/yang-data+json"})
        if len(self.clients) >= MAX_CLIENTS or self._closing:
            body = {"ietf-restconf:errors": {"error": [{
                "error-type": "application", "error-tag": "resource-denied",
                "error-message": f"at most {MAX_CLIENTS} stream clients"}]}}
            return web.Response(status=503, body=json.dumps(body).encode(),
                                headers={"Content-Type": "application/yang-data+json"})
        q: asyncio.Queue[Any] = asyncio.Queue(QUEUE)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                               "Cache-Control": "no-cache"})
        await response.prepare(request)
        self.clients.add(q)
        try:
            await response.write(b": sluice NETCONF stream\n\n")
            while True:
                try:
                    item = await asyncio.wait_for(q.get(), KEEPALIVE)
                except TimeoutError:
                    await response.write(b": keepalive\n\n")
                    continue
                if item is _END:
                    break
                await response.write(f"data: {item}\n\n".encode())
        except ConnectionError:
            pass
        finally:
            self.clients.discard(q)
        with contextlib.suppress(ConnectionError, RuntimeError):
            await response.write_eof()
        return response
