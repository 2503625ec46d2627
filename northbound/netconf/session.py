"""One NETCONF session over one SSH channel: hello, framing, the in-order RPC loop.

RPCs of a session are answered one at a time, in order (RFC 6241 section 4.1 requires
replies in request order); notifications are written between replies, never inside one,
because every frame goes to the channel in a single write.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from lxml import etree

from northbound.netconf import framing
from northbound.netconf.errors import RpcError, RpcErrors
from northbound.netconf.xmlutil import (
    BASE_NS,
    MalformedXML,
    child,
    elements,
    local,
    ns_of,
    parse,
    qn,
    sub,
    tostring,
)

if TYPE_CHECKING:
    from appliance.config import Session as ConfigSession
    from northbound.netconf.server import NetconfServer

log = logging.getLogger(__name__)

BASE_10 = "urn:ietf:params:netconf:base:1.0"
BASE_11 = "urn:ietf:params:netconf:base:1.1"
READ_SIZE = 65536
# A peer that says nothing before its hello is dropped after this long.
HELLO_TIMEOUT = 60.0
# Bytes queued to a session's channel past which notifications to it are dropped.
MAX_NOTIFICATION_BACKLOG = 8 * 1024 * 1024
# Bytes queued to a session's channel past which it reads no further request until they drain.
REPLY_BACKLOG = 1024 * 1024


class SessionEnd(Exception):
    """The session must end now (close-session, kill-session, fatal framing error)."""


class NetconfSession:
    def __init__(
        self,
        server: NetconfServer,
        process: Any,
        config: ConfigSession,
        user: str,
        peer: str,
    ) -> None:
        self.server = server
        self.process = process
        self.config = config
        self.id = config.id
        self.user = user
        self.peer = peer
        self.login_time = datetime.now(UTC)
        self.deframer = framing.Deframer(server.max_message)
        self.chunked = False
        self.closed = False
        self.locked_at: dict[str, datetime] = {}
        self.subscription: Any = None  # notifications.Subscription while one is active
        # Run on the loop once the current rpc's reply is written (a replay follows it).
        self.after_reply: list[Callable[[], None]] = []
        self.stats = {"in-rpcs": 0, "in-bad-rpcs": 0, "out-rpc-errors": 0, "out-notifications": 0}
        self._task: asyncio.Task[None] | None = None
        self._inbox: Any = None

    @property
    def candidate(self) -> ConfigSession:
        """The candidate every NETCONF session shares (the server's)."""
        return self.server.candidate

    @property
    def read_only(self) -> bool:
        """Asked at every operation: a user demoted or deleted since login may not write."""
        return self.config.read_only

    # -- life cycle --------------------------------------------------------------------------
    async def run(self) -> None:
        self._task = asyncio.current_task()
        try:
            self._send(self.server.hello(self.id))
            await asyncio.wait_for(self._await_hello(), HELLO_TIMEOUT)
            await self._rpc_loop()
        except (TimeoutError, SessionEnd, asyncio.CancelledError):
            pass
        except (ConnectionError, OSError) as exc:
            log.info("netconf session lost", extra={"session": self.id, "error": str(exc)})
        except Exception:
            log.exception("netconf session failed", extra={"session": self.id})
        finally:
            await self.server.session_ended(self)
            with contextlib.suppress(Exception):  # the channel may already be gone
                self.process.exit(0)

    def kill(self) -> None:
        """End this session from outside (kill-session, server close)."""
        self.closed = True
        if self._task is not None and not self._task.done():
            self._task.cancel()

    # -- input -------------------------------------------------------------------------------
    async def _messages(self) -> Any:
        while True:
            data = await self.process.stdin.read(READ_SIZE)
            if not data:
                raise SessionEnd()
            try:
                for msg in self.deframer.feed(data):
                    yield msg
            except framing.FramingError as exc:
                # RFC 6242: a chunked-framing error cannot be recovered from.
                log.info("netconf framing error", extra={"session": self.id, "error": str(exc)})
                self._reply_error(None, [RpcError("malformed-message", f"framing error: {exc}",
                                                  type="rpc")])
                raise SessionEnd() from None

    async def _await_hello(self) -> None:
        # One generator for the whole session: bytes after the hello in the same read stay
        # in it for the RPC loop.
        self._inbox = self._messages()
        async for msg in self._inbox:
            if msg is framing.TOO_BIG:
                raise SessionEnd()
            try:
                root = parse(msg)
            except MalformedXML:
                log.info("netconf hello is not XML", extra={"session": self.id})
                raise SessionEnd() from None
            if local(root) != "hello" or ns_of(root) != BASE_NS:
                log.info("netconf peer did not start with hello", extra={"session": self.id})
                raise SessionEnd()
            if child(root, "session-id") is not None:
                # RFC 6241 8.1: a client hello with a session-id ends the session.
                raise SessionEnd()
            caps_el = child(root, "capabilities")
            caps_list = elements(caps_el) if caps_el is not None else []
            caps = {(c.text or "").strip() for c in caps_list}
            if BASE_11 in caps:
                self.chunked = True
                self.deframer.switch_to_chunked()
            elif BASE_10 not in caps:
                log.info("netconf peer has no common base", extra={"session": self.id})
                raise SessionEnd()
            log.info(
                "netconf session started",
                extra={"session": self.id, "user": self.user, "peer": self.peer,
                       "framing": "chunked" if self.chunked else "eom"},
            )
            return

    async def _rpc_loop(self) -> None:
        async for msg in self._inbox:
            if msg is framing.TOO_BIG:
                self.stats["in-bad-rpcs"] += 1
                self._reply_error(None, [RpcError(
                    "too-big", f"message exceeds {self.server.max_message} bytes", type="rpc")])
                continue
            await self._handle(msg)
            if self.closed:
                raise SessionEnd()

    async def _handle(self, msg: bytes) -> None:
        try:
            root = parse(msg)
        except MalformedXML as exc:
            self.stats["in-bad-rpcs"] += 1
            # malformed-message is base:1.1 only (RFC 6241 appendix A); 1.0 peers get the
            # generic tag. The framing is intact, so the session goes on.
            tag = "malformed-message" if self.chunked else "operation-failed"
            self._reply_error(None, [RpcError(tag, f"not well-formed XML: {exc}", type="rpc")])
            return
        attrs = dict(root.attrib)
        if local(root) != "rpc" or ns_of(root) != BASE_NS:
            self.stats["in-bad-rpcs"] += 1
            self._reply_error(attrs, [RpcError(
                "unknown-element" if ns_of(root) == BASE_NS else "unknown-namespace",
                f"expected <rpc>, got <{local(root)}>", type="rpc",
                info={"bad-element": local(root)})])
            return
        if "message-id" not in attrs:
            self.stats["in-bad-rpcs"] += 1
            self._reply_error(attrs, [RpcError(
                "missing-attribute", "rpc without message-id", type="rpc",
                info={"bad-attribute": "message-id", "bad-element": "rpc"})])
            return
        self.stats["in-rpcs"] += 1
        started = time.monotonic()
        try:
            result = await self.server.dispatcher.dispatch(self, root)
        except RpcError as exc:
            self._reply_error(attrs, [exc])
            if exc.session_ends:
                self.closed = True
            return
        except RpcErrors as exc:
            self._reply_error(attrs, exc.errors)
            return
        except Exception as exc:
            log.exception("netconf rpc failed", extra={"session": self.id})
            self._reply_error(attrs, [RpcError("operation-failed", f"internal error: {exc}")])
            return
        await self._reply_async(attrs, result)
        hooks, self.after_reply = self.after_reply, []
        for hook in hooks:
            hook()
        log.debug("netconf rpc done", extra={"session": self.id,
                                              "ms": round((time.monotonic() - started) * 1000)})

    # -- output ------------------------------------------------------------------------------
    def _send(self, el: etree._Element) -> None:
        data = framing.encode(tostring(el), self.chunked)
        self.process.stdout.write(data)

    @staticmethod
    def _reply_element(attrs: dict[str, str] | None,
                       content: list[etree._Element] | None) -> etree._Element:
        reply = etree.Element(qn(BASE_NS, "rpc-reply"), nsmap={None: BASE_NS})
        for k, v in (attrs or {}).items():
            reply.set(k, v)
        if content:
            for el in content:
                reply.append(el)
        else:
            sub(reply, BASE_NS, "ok")
        return reply

    def _reply(self, attrs: dict[str, str] | None, content: list[etree._Element] | None) -> None:
        self._send(self._reply_element(attrs, content))

    async def _reply_async(self, attrs: dict[str, str] | None,
                           content: list[etree._Element] | None) -> None:
        """A reply serialised in a worker thread (a 10,000-service <data> takes a while),
        written in one piece, then the session waits for the client to take it in.

        Waiting is the backpressure: the next request of this session is not read until the
        reply has drained, so a client that pipelines requests and never reads fills its
        own TCP window instead of the daemon's memory.
        """
        reply = self._reply_element(attrs, content)
        chunked = self.chunked
        data = await asyncio.to_thread(lambda: framing.encode(tostring(reply), chunked))
        self.process.stdout.write(data)
        await self._drain()

    async def drain(self) -> None:
        """Wait while the client has more than a reply's worth unread."""
        await self._drain()

    async def _drain(self) -> None:
        try:
            backlog = self.process.channel.get_write_buffer_size()
        except Exception:
            return
        if backlog > REPLY_BACKLOG:
            await self.process.stdout.drain()

    def _reply_error(self, attrs: dict[str, str] | None, errors: list[RpcError]) -> None:
        self.stats["out-rpc-errors"] += 1
        reply = etree.Element(qn(BASE_NS, "rpc-reply"), nsmap={None: BASE_NS})
        for k, v in (attrs or {}).items():
            reply.set(k, v)
        for err in errors:
            err.to_xml(reply)
        self._send(reply)

    def send_notification(self, el: etree._Element) -> None:
        if self.closed:
            return
        try:
            backlog = self.process.channel.get_write_buffer_size()
        except Exception:
            backlog = 0
        if backlog > MAX_NOTIFICATION_BACKLOG:
            # A subscriber that stopped reading must not make the daemon buffer without end.
            self.stats["dropped-notifications"] = self.stats.get("dropped-notifications", 0) + 1
            log.warning("netconf notification dropped: client not reading",
                        extra={"session": self.id, "backlog": backlog})
            return
        self.stats["out-notifications"] += 1
        try:
            self._send(el)
        except Exception:  # the channel closed under us; the read side will end the session
            log.debug("notification not delivered", extra={"session": self.id})

