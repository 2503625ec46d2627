"""NetconfServer: NETCONF over SSH (RFC 6242) on asyncssh, in the daemon's asyncio loop.

    server = NetconfServer(config_service, state_dir, host="::", port=830, event_bus=bus)
    await server.start()
    ...
    await server.close()

Config-service calls run on one worker thread (the daemon's, when passed as `worker`), as
every other front door's do; XML building runs on a helper thread so a 10,000-service
get-config does not stall other sessions' I/O.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncssh
from lxml import etree

from appliance.config import ConfigService
from appliance.doors import Binding, DoorContext, Section
from appliance.notification_log import CONFIG_CHANGE, Notice, NotificationLog
from northbound.netconf import (
    monitoring,
    notifications,
    ops_commit,
    ops_edit,
    ops_read,
    ops_session,
)
from northbound.netconf.edit import EditTranslator
from northbound.netconf.framing import DEFAULT_MAX_MESSAGE
from northbound.netconf.modules import SchemaFile, ServedModules
from northbound.netconf.nacm import Nacm
from northbound.netconf.rpc import Dispatcher
from northbound.netconf.schema_index import LIST, SchemaIndex
from northbound.netconf.session import BASE_10, BASE_11, NetconfSession
from northbound.netconf.state import state_source as make_state_source
from northbound.netconf.xmlutil import BASE_NS, local, ns_of, qn, sub
from northbound.ssh import (
    Acceptor,
    Backoff,
    Limits,
    Logins,
    Throttle,
    describe,
    listen_spec,
    load_or_create_host_key,
    users_from_config,
)

log = logging.getLogger(__name__)

CAP = "urn:ietf:params:netconf:capability:"
# Exactly what works; see the ops_* modules.
PROTOCOL_CAPABILITIES = (
    BASE_10,
    BASE_11,
    CAP + "writable-running:1.0",
    CAP + "candidate:1.0",
    CAP + "confirmed-commit:1.1",
    CAP + "rollback-on-error:1.0",
    CAP + "validate:1.1",
    CAP + "xpath:1.0",
    CAP + "notification:1.0",
    CAP + "interleave:1.0",
    CAP + "with-defaults:1.0?basic-mode=explicit"
    "&also-supported=report-all,report-all-tagged,trim",
)


STARTUP = CAP + "startup:1.0"


class NetconfServer:
    def __init__(
        self,
        config_service: ConfigService,
        state_dir: Path | str,
        host: str | Sequence[str] | None = "::",
        port: int = 830,
        event_bus: Any = None,
        *,
        worker: Executor | None = None,
        max_message: int = DEFAULT_MAX_MESSAGE,
        backoff: Backoff | None = None,
        state_source: Callable[[], dict[str, Any]] | None = None,
        max_sessions: int = 64,
        limits: dict[str, int] | None = None,
        state: dict[str, Callable[..., Any]] | None = None,
        listen: bool = True,
        notices: NotificationLog | None = None,
    ) -> None:
        """`host`: an address, a list of addresses, or "::"/""/None for every address of both
        families (asyncio sets IPV6_V6ONLY, so a literal "::" would leave out IPv4).
        `listen`: False when a NetconfDoor decides where to listen instead (the config's
        /sluice:management/netconf, followed across commits; open sessions are kept).
        `state_source()`, if given, returns operational state (config false nodes, libyang
        JSON encoding) merged into <get> replies; `state` is the alternative: the daemon's
        state-provider dict (as the control socket gets), turned into such a source."""
        self.config_service = config_service
        self.state_dir = Path(state_dir)
        self.host = host
        self.listen_at_start = listen
        self._key: asyncssh.SSHKey | None = None
        self.port = port
        self.event_bus = event_bus
        # The daemon's notification log (commits and events, for replay); without one the
        # server keeps its own from start().
        self.notices = notices
        self._own_notices = notices is None
        self.max_message = max_message
        if state_source is None and state:
            state_source = make_state_source(config_service, state)
        self.state_source = state_source
        self.logins = Logins.from_config("netconf", config_service, Throttle(backoff or Backoff()),
                                         Limits(sessions=max_sessions, **(limits or {})))
        self._own_worker = worker is None
        self.worker = worker or ThreadPoolExecutor(1, thread_name_prefix="netconf-config")
        schema = config_service.schema
        self.index = SchemaIndex(schema)
        self.translator = EditTranslator(self.index.top, self.index.namespace,
                                         self.index.module_name, self.index.top_ns,
                                         self.index.namespaces)
        self.modules: ServedModules | None = None  # from start(): loading takes a while
        self.schemas: dict[str, SchemaFile] = {}
        self._yanglib = ""
        self.nacm = Nacm(config_service, self.index.namespaces)
        self.dispatcher = Dispatcher()
        for group in (ops_read, ops_edit, ops_commit, ops_session, monitoring, notifications):
            group.register(self.dispatcher)
        self.sessions: dict[int, NetconfSession] = {}
        self.confirmed = ops_commit.ConfirmedCommits(self)
        self.committing: NetconfSession | None = None  # set on the worker during a commit
        self.candidate: Any = None  # the shared candidate (a config Session), from start()
        self._acceptor: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._background: set[asyncio.Future[Any]] = set()

    # -- life cycle --------------------------------------------------------------------------
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._key = await asyncio.to_thread(self._host_key)
        self.modules = await asyncio.to_thread(ServedModules)
        self.schemas = self.modules.schemas
        self._yanglib = await asyncio.to_thread(self.modules.yang_library_xml)
        # RFC 6241 8.3: one candidate, shared by every NETCONF session and outliving them
        # (the CLI and the console keep their own private candidates).
        self.candidate = await self.call(self.config_service.open_session, "netconf",
                                         "netconf-candidate")
        if self.listen_at_start:
            self._acceptor = await self.listen(self.host, self.port)
        if self.notices is None:
            self.notices = NotificationLog()
            self.notices.attach(self.config_service, self.event_bus)
        self.notices.listen(self._on_notice)

    @property
    def throttle(self) -> Throttle:
        return self.logins.throttle

    async def listen(self, host: str | Sequence[str] | None, port: int) -> Any:
        """A new listener (an asyncssh acceptor); closing it leaves open sessions alone."""
        host = None if host in ("::", "", None) else host
        acceptor = await asyncssh.listen(
            host,
            port,
            server_factory=self.logins.server,
            server_host_keys=[self._key],
            process_factory=self._process,
            encoding=None,
            allow_pty=False,
            agent_forwarding=False,
            x11_forwarding=False,
            allow_scp=False,
            gss_host=None,
            login_timeout=60,
        )
        self.host, self.port = host, acceptor.get_port()
        log.info("netconf server listening", extra={"host": host, "port": self.port})
        return acceptor

    async def _stop_listening(self) -> None:
        if self._acceptor is not None:
            acceptor, self._acceptor = self._acceptor, None
            acceptor.close()  # stops accepting; sessions already open go on
            await acceptor.wait_closed()

    async def close(self) -> None:
        self._closing = True
        if self.notices is not None:
            self.notices.unlisten(self._on_notice)
            if self._own_notices:
                self.notices.detach()
        await self._stop_listening()
        # A pending confirmed commit is not confirmed by a shutdown: undo it now, while the
        # config service is still there (the next start would otherwise keep it).
        await self.confirmed.roll_back("shutdown")
        for s in list(self.sessions.values()):
            s.kill()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5)
        if self.candidate is not None:
            await self.call(self.candidate.close)
        if self._own_worker:
            self.worker.shutdown(wait=True)

    def _host_key(self) -> asyncssh.SSHKey:
        return load_or_create_host_key(self.state_dir)

    def yang_library_xml(self) -> str:
        return self._yanglib

    # -- helpers for the ops modules ---------------------------------------------------------
    def spawn(self, coro: Any) -> None:
        """A background task, referenced until done (the loop keeps only weak references)."""
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def call(self, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.worker, lambda: fn(*args, **kw))

    async def offload(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.to_thread(fn, *args)

    def capabilities(self) -> list[str]:
        caps = list(PROTOCOL_CAPABILITIES)
        if self.config_service.boots_from_startup():
            # Only then is startup what the appliance boots from (RFC 6241 8.7).
            caps.append(STARTUP)
        if self.modules is not None:
            caps.append(self.modules.capability())
        for sf in self.schemas.values():
            caps.append(f"{sf.namespace}?module={sf.identifier}&revision={sf.version}")
        return caps

    def hello(self, session_id: int) -> etree._Element:
        hello = etree.Element(qn(BASE_NS, "hello"), nsmap={None: BASE_NS})
        caps = sub(hello, BASE_NS, "capabilities")
        for cap in self.capabilities():
            sub(caps, BASE_NS, "capability", cap)  # lxml escapes '&' (see NOTES-northbound)
        sub(hello, BASE_NS, "session-id", str(session_id))
        return hello

    def keys_of(self, el: etree._Element) -> tuple[str, ...]:
        """List keys of a data element of the sluice module (for filters), else ()."""
        names = []
        node: Any = el
        while node is not None and ns_of(node) in self.index.top_ns.values():
            names.append(local(node))
            node = node.getparent()
        if not names:
            return ()
        names.reverse()
        snode = self.index.top.get(names[0])
        for name in names[1:]:
            snode = snode.children.get(name) if snode is not None else None
        return snode.keys if snode is not None and snode.kind == LIST else ()

    # -- sessions ----------------------------------------------------------------------------
    async def _process(self, process: asyncssh.SSHServerProcess) -> None:
        if process.subsystem != "netconf":
            what = f"subsystem {process.subsystem}" if process.subsystem else "shell/exec"
            log.info("netconf ssh: refused", extra={"request": what})
            process.stderr.write(b"this server offers only the netconf subsystem\n")
            process.exit(1)
            return
        username = process.get_extra_info("username")
        peer = (process.get_extra_info("peername") or ("?",))[0]
        user = users_from_config(self.config_service).get(username)
        if user is None or self._closing:
            process.exit(1)
            return
        refused = self.logins.open_session(username)
        if refused:
            log.warning("netconf session refused", extra={"user": username, "peer": peer,
                                                          "reason": refused})
            process.stderr.write(refused.encode() + b"\n")
            process.exit(1)
            return
        try:
            config = await self.call(self.config_service.open_session, username, "netconf",
                                     read_only=user.read_only, account=username)
        except BaseException:
            self.logins.close_session(username)
            raise
        session = NetconfSession(self, process, config, username, peer)
        self.sessions[session.id] = session
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        self.broadcast(notifications.session_event("start", username, session.id, peer),
                       exclude=session)
        try:
            await session.run()
        finally:
            if task is not None:
                self._tasks.discard(task)

    async def session_ended(self, s: NetconfSession, reason: str = "closed") -> None:
        """Called once per session however it ends: confirmed commit, locks, candidate."""
        if self.sessions.pop(s.id, None) is None:
            return
        self.logins.close_session(s.user)
        s.closed = True
        pending = self.confirmed.pending
        if pending is not None and pending.owner == s.id and pending.persist is None:
            await self.confirmed.roll_back("session ended", s.config)
        await self.call(self._close_config, s)
        killed_by = getattr(s, "killed_by", None)
        self.broadcast(notifications.session_event(
            "end", s.user, s.id, s.peer,
            reason="killed" if killed_by is not None else getattr(s, "end_reason", reason),
            killed_by=killed_by))
        log.info("netconf session ended", extra={"session": s.id, "user": s.user})

    def _close_config(self, s: NetconfSession) -> None:
        if self.config_service.lock_owner("candidate") is s.config:
            # RFC 6241 8.3.5.2: a candidate lock released by a session's end discards the
            # changes made under it.
            self.candidate.discard()
        s.config.close()

    async def kill(self, target: NetconfSession, killed_by: NetconfSession | None = None) -> None:
        """kill-session: the target's locks are free when this returns (RFC 6241 7.9)."""
        target.killed_by = killed_by.id if killed_by else None  # type: ignore[attr-defined]
        target.kill()
        await self.session_ended(target)

    # -- notifications -----------------------------------------------------------------------
    def broadcast(self, content: etree._Element, exclude: NetconfSession | None = None,
                  notice: Notice | None = None) -> None:
        """Send to every subscribed session whose filter lets it through (loop thread).
        `notice`: the log's notice this is (its time is the eventTime; a replay that sent it
        already, or a stopTime before it, keeps it from a session)."""
        for s in list(self.sessions.values()):
            sub = s.subscription
            if sub is None or s is exclude or s.closed:
                continue
            if sub.held is not None:  # its replay is not sent yet: this follows it
                sub.held.append((notice, content))
                continue
            if notice is not None and (notice.seq <= sub.replayed or (
                    sub.stop is not None and notice.time > sub.stop)):
                continue
            self._deliver(s, content, notice)

    def _deliver(self, s: NetconfSession, content: etree._Element,
                 notice: Notice | None = None) -> None:
        selected = notifications.passes(s.subscription, content)
        if selected is not None and self.nacm.allows_notification(s.user, selected):
            s.send_notification(notifications.wrap(selected,
                                                   notice.time if notice else None))

    def replay(self, s: NetconfSession, start: datetime, stop: datetime | None) -> None:
        """RFC 5277 replay, started on the loop right after the create-subscription reply:
        the logged notices of [start, stop], replayComplete, then what arrived meanwhile."""
        self.spawn(self._replay(s, start, stop))

    async def _replay(self, s: NetconfSession, start: datetime, stop: datetime | None) -> None:
        sub = s.subscription
        if sub is None or s.closed or self.notices is None or self.modules is None:
            return
        notices = self.notices.since(start, stop)
        ns, leaves, user = self.index.namespace, self.modules.event_leaves, s.user

        def build() -> list[etree._Element]:
            # Up to the whole log (1,000 notices, megabytes of XML): off the loop.
            out = []
            for notice in notices:
                content = notifications.notice_content(notice, ns, leaves)
                if content is None:
                    continue
                selected = notifications.passes(sub, content)
                if selected is not None and self.nacm.allows_notification(user, selected):
                    out.append(notifications.wrap(selected, notice.time))
            return out

        for el in await asyncio.to_thread(build):
            if s.closed or s.subscription is not sub:
                return
            s.send_notification(el)
            await s.drain()  # a replay waits for a slow reader rather than dropping
        sub.replayed = notices[-1].seq if notices else 0
        s.send_notification(notifications.wrap(notifications.control("replayComplete")))
        held, sub.held = sub.held or [], None
        for notice, content in held:
            if notice is None or (notice.seq > sub.replayed
                                  and (stop is None or notice.time <= stop)):
                self._deliver(s, content, notice)
        if stop is not None:
            self.end_at(s, stop)

    def end_at(self, s: NetconfSession, stop: datetime) -> None:
        """At stopTime: notificationComplete, and the subscription ends (RFC 5277 2.1.1)."""
        sub = s.subscription

        def end() -> None:
            if s.subscription is sub and not s.closed:
                s.send_notification(
                    notifications.wrap(notifications.control("notificationComplete")))
                s.subscription = None

        delay = (stop - datetime.now(UTC)).total_seconds()
        if delay <= 0:
            end()
        else:
            asyncio.get_running_loop().call_later(delay, end)

    def _from_thread(self, build: Callable[[], etree._Element | None],
                     notice: Notice | None = None) -> None:
        if self._closing or self._loop is None or self._loop.is_closed():
            return

        def publish() -> None:
            content = build()
            if content is not None:
                self.broadcast(content, notice=notice)

        with contextlib.suppress(RuntimeError):  # the loop closed between check and call
            self._loop.call_soon_threadsafe(publish)

    def _on_notice(self, notice: Notice) -> None:
        """The notification log's listener, in the publishing thread: a commit's (with
        `committing` still set when a NETCONF session commits) or the event bus's."""
        if self._closing or self.modules is None:
            return
        if not any(s.subscription is not None for s in list(self.sessions.values())):
            return  # nobody listens live (a replay reads the log itself)
        by = None
        s = self.committing
        if notice.kind == CONFIG_CHANGE and s is not None:
            by = (s.user, s.id, s.peer)
        ns, leaves = self.index.namespace, self.modules.event_leaves
        self._from_thread(lambda: notifications.notice_content(notice, ns, leaves, by), notice)

    def notify_confirmed_commit(self, session_id: int, event: str,
                                timeout: int | None = None) -> None:
        s = self.sessions.get(session_id)
        user = s.user if s else "unknown"
        self.broadcast(notifications.confirmed_commit(user, session_id, s.peer if s else None,
                                                      event, timeout))


class NetconfDoor:
    """The NETCONF door: one NetconfServer, listening where the config says."""

    def __init__(self, ctx: DoorContext, section: Section) -> None:
        self.section = section
        self.server = NetconfServer(
            ctx.service, ctx.state_dir, worker=ctx.worker, state=ctx.state,
            event_bus=ctx.bus, listen=False, notices=ctx.notices,
        )
        self.binding = Binding("netconf", self._open, describe=describe)

    async def _open(self, where: tuple[tuple[str, ...], int]) -> Acceptor:
        addresses, port = where
        return Acceptor(await self.server.listen(list(addresses) or None, port))

    async def start(self) -> None:
        await self.server.start()
        await self.binding.set(listen_spec(self.section, 830))

    async def reconfigure(self, section: Section) -> None:
        self.section = section
        await self.binding.set(listen_spec(section, 830))

    async def close(self) -> None:
        await self.binding.close()
        await self.server.close()

    def status(self) -> dict[str, Any]:
        return {**self.binding.status(), "sessions": len(self.server.sessions)}
