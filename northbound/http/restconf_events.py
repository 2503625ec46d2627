"""RESTCONF event streams (RFC 8040 6): the NETCONF stream as server-sent events, in JSON or
XML, with replay.

`/restconf/streams/NETCONF/json` (also `/restconf/streams/NETCONF`) and `.../NETCONF/xml`
carry what NETCONF subscribers get: `netconf-config-change` for every commit from any door
and the sluice-events notifications (endpoint and service health, alarms, BGP, HA), each
encoded as RFC 8040 6.4 says — JSON: `ietf-restconf:notification`; XML: the RFC 5277
`<notification>`, built by NETCONF's own builders (northbound.netconf.notifications).

Both are read from the daemon's notification log (appliance.notification_log): `start-time`
replays the log from then (then RFC 5277's `replayComplete`), `stop-time` ends the stream
at that time (`notificationComplete`). A notice reaches the loop through
call_soon_threadsafe and each client's bounded queue, encoded once per encoding. A client
that does not read is cut off when its queue fills (the daemon never buffers without end for
it); every 15 s an SSE comment keeps idle proxies open.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from lxml import etree

from appliance import notification_log
from appliance.config.paths import module_of, service_path
from appliance.doors import DoorContext
from appliance.notification_log import CONFIG_CHANGE, Notice, NotificationLog
from northbound.http.restconf_codec import JSON_TYPE, XML_TYPE, error_body
from northbound.netconf import notifications
from northbound.netconf.modules import ServedModules

log = logging.getLogger(__name__)

STREAM = "NETCONF"
ENCODINGS = ("json", "xml")
QUEUE = 256
MAX_CLIENTS = 32
KEEPALIVE = 15.0
_END = object()


def event_time(when: datetime) -> str:
    return when.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Encoder:
    """A notice as the stream's JSON or XML text (None: not a notification of a served
    module, so not sent — as NETCONF does)."""

    def __init__(self, event_leaves: dict[str, set[str]], namespace: str) -> None:
        self.event_leaves = event_leaves
        self.namespace = namespace  # the sluice module's, for NETCONF's XML edit targets

    def encode(self, notice: Notice, fmt: str) -> str | None:
        content = self._json(notice) if fmt == "json" else self.xml_content(notice)
        if content is None:
            return None
        if fmt == "xml":
            return etree.tostring(notifications.wrap(content, notice.time)).decode()
        return json.dumps({"ietf-restconf:notification": {
            "eventTime": event_time(notice.time), **content}})

    def _json(self, notice: Notice) -> dict[str, Any] | None:
        if notice.kind == CONFIG_CHANGE:
            user = notice.data.get("user")
            by = ({"server": [None]} if user is None
                  else {"username": user, "session-id": 0})  # fmt: skip
            edits = [{"target": service_path(name) if kind == "service"
                      else f"/{module_of(name)}:{name}", "operation": op}
                     for kind, name, op in notice.data["edits"]]  # fmt: skip
            return {"ietf-netconf-notifications:netconf-config-change": {
                "changed-by": by, "datastore": "running", "edit": edits}}
        fields = notifications.event_fields(notice, self.event_leaves)
        if fields is None:
            return None
        return {f"sluice-events:{notice.data['type']}": fields}

    def xml_content(self, notice: Notice) -> etree._Element | None:
        """The notification's XML content (NETCONF's builders): the XML stream's, and what
        NACM's notification rules are checked on for either encoding."""
        return notifications.notice_content(notice, self.namespace, self.event_leaves)

    @staticmethod
    def control(name: str, fmt: str) -> str:
        """RFC 5277's replayComplete / notificationComplete, now."""
        now = datetime.now(UTC)
        if fmt == "xml":
            return etree.tostring(notifications.wrap(notifications.control(name), now)
                                  ).decode()  # fmt: skip
        return json.dumps({"ietf-restconf:notification": {
            "eventTime": event_time(now), f"nc-notifications:{name}": {}}})


class _Client:
    def __init__(self, fmt: str, user: str) -> None:
        self.fmt = fmt
        self.user = user  # NACM's notification rules apply per user
        self.queue: asyncio.Queue[Any] = asyncio.Queue(QUEUE)


class StreamProblem(Exception):
    def __init__(self, status: int, tag: str, message: str) -> None:
        super().__init__(message)
        self.status, self.tag = status, tag


def parse_time(name: str, text: str) -> datetime:
    """A YANG date-and-time query value (RFC 3339, with its offset or Z)."""
    try:
        return notification_log.parse_time(text)
    except ValueError as exc:
        raise StreamProblem(400, "invalid-value", f"{name}={exc}") from None


class EventStreams:
    def __init__(self, ctx: DoorContext) -> None:
        self.ctx = ctx
        self.notices: NotificationLog = ctx.notices
        self._own_log = ctx.notices is None
        self.encoder: Encoder | None = None
        self.nacm: Any = None  # the door's Nacm (Restconf sets it)
        self.clients: set[_Client] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing = False

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        modules = await asyncio.to_thread(ServedModules)
        self.encoder = Encoder(modules.event_leaves, modules.schemas["sluice"].namespace)
        if self._own_log:  # a door built without the daemon's log (unit tests)
            self.notices = NotificationLog()
            self.notices.attach(self.ctx.service, self.ctx.bus)
        self.notices.listen(self._on_notice)

    async def close(self) -> None:
        self._closing = True
        if self.notices is not None:
            self.notices.unlisten(self._on_notice)
            if self._own_log:
                self.notices.detach()
        for client in list(self.clients):
            self._end(client)

    def describe(self, base: str) -> dict[str, Any]:
        """The stream's entry of restconf-state/streams (RFC 8040 9.3)."""
        entry: dict[str, Any] = {
            "name": STREAM, "description": "config changes (netconf-config-change) and "
            "Sluice events, as NETCONF sends them",
            "replay-support": self.notices is not None}  # fmt: skip
        if self.notices is not None:
            entry["replay-log-creation-time"] = event_time(self.notices.created)
            if self.notices.aged_time is not None:
                entry["replay-log-aged-time"] = event_time(self.notices.aged_time)
        entry["access"] = [{"encoding": enc, "location": f"{base}/streams/{STREAM}/{enc}"}
                           for enc in ENCODINGS]
        return entry

    # -- publishers (any thread) --------------------------------------------------------------
    def _on_notice(self, notice: Notice) -> None:
        loop = self._loop
        if self._closing or not self.clients or loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(self._fan_out, notice)

    def allowed(self, notice: Notice, user: str) -> bool:
        """NACM (RFC 8341 3.4.6) on the notification's XML content, as NETCONF checks it."""
        if self.nacm is None or self.encoder is None:
            return True
        content = self.encoder.xml_content(notice)
        return content is not None and self.nacm.allows_notification(user, content)

    def _fan_out(self, notice: Notice) -> None:
        assert self.encoder is not None
        texts: dict[str, str | None] = {}
        allowed: dict[str, bool] = {}
        for client in list(self.clients):
            if client.user not in allowed:
                allowed[client.user] = self.allowed(notice, client.user)
            if not allowed[client.user]:
                continue
            if client.fmt not in texts:
                texts[client.fmt] = self.encoder.encode(notice, client.fmt)
            text = texts[client.fmt]
            if text is None:
                continue
            try:
                client.queue.put_nowait((notice, text))
            except asyncio.QueueFull:
                log.warning("restconf stream client not reading: cut off")
                self._end(client)

    def _end(self, client: _Client) -> None:
        self.clients.discard(client)
        while True:
            try:
                client.queue.get_nowait()
            except asyncio.QueueEmpty:
                break
        client.queue.put_nowait(_END)

    # -- the SSE response ------------------------------------------------------------------------
    def _interval(self, request: web.Request) -> tuple[datetime | None, datetime | None]:
        q = request.query
        unknown = set(q) - {"start-time", "stop-time"}
        if unknown:
            raise StreamProblem(400, "invalid-value", "query parameter(s) "
                                f"{', '.join(sorted(unknown))} not supported on a stream "
                                "(start-time, stop-time)")
        for name in q:
            if len(q.getall(name)) > 1:
                raise StreamProblem(400, "invalid-value", f"{name} given more than once")
        start = parse_time("start-time", q["start-time"]) if "start-time" in q else None
        stop = parse_time("stop-time", q["stop-time"]) if "stop-time" in q else None
        try:
            notification_log.check_interval(start, stop)
        except ValueError as exc:
            raise StreamProblem(400, "invalid-value", str(exc)) from None
        return start, stop

    async def stream(self, request: web.Request) -> web.StreamResponse:
        fmt = request.match_info.get("encoding", "json")
        try:
            if request.match_info.get("name") != STREAM or fmt not in ENCODINGS:
                raise StreamProblem(404, "invalid-value", "no stream "
                                    f"{request.path.removeprefix('/restconf/streams/')!r} "
                                    f"(there is {STREAM}, encodings {', '.join(ENCODINGS)})")
            start, stop = self._interval(request)
            if len(self.clients) >= MAX_CLIENTS or self._closing or self.encoder is None:
                raise StreamProblem(503, "resource-denied",
                                    f"at most {MAX_CLIENTS} stream clients")
        except StreamProblem as exc:
            err = {"error-type": "protocol" if exc.status == 400 else "application",
                   "error-tag": exc.tag, "error-message": str(exc)}
            return web.Response(status=exc.status, body=error_body([err], fmt), headers={
                "Content-Type": XML_TYPE if fmt == "xml" else JSON_TYPE})
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                               "Cache-Control": "no-cache"})
        await response.prepare(request)
        client = _Client(fmt, request["caller"].user)
        self.clients.add(client)  # before the log is read: nothing falls in between
        try:
            await response.write(f": sluice {STREAM} stream ({fmt})\n\n".encode())
            last = await self._replay(response, client, start, stop)
            if await self._live(response, client, last, stop):
                await _send(response, Encoder.control("notificationComplete", fmt))
        except ConnectionError:
            pass
        finally:
            self.clients.discard(client)
        with contextlib.suppress(ConnectionError, RuntimeError):
            await response.write_eof()
        return response

    async def _replay(self, response: web.StreamResponse, client: _Client,
                      start: datetime | None, stop: datetime | None) -> int:
        """Sends the logged notices of [start, stop] and replayComplete; returns the last
        sequence number sent (0: no replay asked)."""
        if start is None:
            return 0
        encoder = self.encoder
        assert encoder is not None
        notices = self.notices.since(start, stop)
        # Up to the whole log: encoded off the loop.
        texts = await asyncio.to_thread(lambda: [
            encoder.encode(n, client.fmt) if self.allowed(n, client.user) else None
            for n in notices])
        for text in texts:
            if text is not None:
                await _send(response, text)
        await _send(response, Encoder.control("replayComplete", client.fmt))
        return notices[-1].seq if notices else 0

    async def _live(self, response: web.StreamResponse, client: _Client, last: int,
                    stop: datetime | None) -> bool:
        """Sends live notices until the stream ends; True when it ended at stop-time."""
        while True:
            timeout = KEEPALIVE
            if stop is not None:
                left = (stop - datetime.now(UTC)).total_seconds()
                if left <= 0:
                    return True
                timeout = min(timeout, left)
            try:
                item = await asyncio.wait_for(client.queue.get(), timeout)
            except TimeoutError:
                if stop is None or datetime.now(UTC) < stop:
                    await response.write(b": keepalive\n\n")
                continue
            if item is _END:
                return False
            notice, text = item
            if notice.seq <= last:
                continue  # already sent by the replay
            if stop is not None and notice.time > stop:
                return True
            await _send(response, text)


async def _send(response: web.StreamResponse, text: str) -> None:
    """One SSE event: each line of the text after 'data: ' (RFC 8040 6.4)."""
    lines = "".join(f"data: {line}\n" for line in text.split("\n"))
    await response.write(f"{lines}\n".encode())
