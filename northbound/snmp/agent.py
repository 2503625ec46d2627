"""The SNMP agent: pysnmp inside the daemon's asyncio loop, configured from the config service.

    agent = SnmpAgent(config_service, {"service": fn, "endpoint": fn, "datapath": fn}, bus)
    await agent.start()      # serves if snmp/enabled is true; its tables follow every commit
    await agent.reconfigure(section)  # the door supervisor: /sluice:snmp changed
    await agent.close()

What it serves is one `Tree` (system group, IF-MIB for the datapath interfaces, SLUICE-LB-MIB)
behind a custom instrumentation controller: pysnmp's own MIB tree, which holds the engine's
USM and community tables, is never reachable from a request. Notifications go out through a
second engine with the same engine ID, so that the trap targets, the notification views and
the manager credentials they need never mix with the tables requests are checked against.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import json
import logging
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pysnmp.carrier.asyncio.dgram import udp, udp6
from pysnmp.entity import config, engine
from pysnmp.entity.rfc3413 import cmdrsp, context, ntforg
from pysnmp.proto import rfc1902
from pysnmp.proto.rfc1902 import Integer32, ObjectIdentifier, OctetString, Unsigned32

from appliance.config import LOAD_BALANCER
from appliance.doors import Binding, DoorContext, Section
from northbound.snmp import ber, model
from northbound.snmp.boots import MAX_BOOTS, EngineBoots
from northbound.snmp.fastpath import ROUTE, V2cBulkFastPath
from northbound.snmp.ifmib import Interfaces
from northbound.snmp.model import LbMib, Snapshot, StateReader
from northbound.snmp.responders import (
    HEADER_BUDGET,
    MAX_RESPONSE,
    GetCommandResponder,
    NextCommandResponder,
    SizedBulkCommandResponder,
)
from northbound.snmp.tree import Table, Tree, TreeController

log = logging.getLogger(__name__)

SNMP_ENGINE = (1, 3, 6, 1, 6, 3, 10, 2, 1)
MAX_MESSAGE_SIZE = 65507  # pysnmp's default, which the engines keep
# What any principal may read: the system group, IF-MIB (interfaces, ifMIB) and the
# enterprise subtree. Never 1.3.6 or snmpModules: pysnmp keeps communities and USM keys there.
VIEW_SUBTREES = (
    model.SYSTEM,
    (1, 3, 6, 1, 2, 1, 2),
    (1, 3, 6, 1, 2, 1, 31),
    model.ENTERPRISE,
    # SNMP-FRAMEWORK-MIB's snmpEngine group only (ID, boots, time, max message size):
    # served from our tree, like everything else, never from pysnmp's.
    SNMP_ENGINE,
)
VIEW = "sluice-view"
SYS_UPTIME_0 = (1, 3, 6, 1, 2, 1, 1, 3, 0)
SNMP_TRAP_OID_0 = (1, 3, 6, 1, 6, 3, 1, 1, 4, 1, 0)
COLD_START = (1, 3, 6, 1, 6, 3, 1, 1, 5, 1)

AUTH = {
    "sha-1": config.USM_AUTH_HMAC96_SHA,
    "sha-256": config.USM_AUTH_HMAC192_SHA256,
    "sha-512": config.USM_AUTH_HMAC384_SHA512,
}
PRIV = {
    "aes-128": config.USM_PRIV_CFB128_AES,
    "aes-256": config.USM_PRIV_CFB256_AES,
    "none": config.USM_PRIV_NONE,
}
LEVEL = {"no-auth-no-priv": 1, "auth-no-priv": 2, "auth-priv": 3}
LEVEL_NAME = {1: "noAuthNoPriv", 2: "authNoPriv", 3: "authPriv"}
# sluiceAlarm and its objects (SLUICE-LB-MIB).
ALARM = (*model.NOTIFICATIONS, 4)
NOTIFY_ALARM_NAME = (*model.NOTIFY_OBJECTS, 4, 0)
NOTIFY_ALARM_STATE = (*model.NOTIFY_OBJECTS, 5, 0)
NOTIFY_ALARM_TEXT = (*model.NOTIFY_OBJECTS, 6, 0)
HA_ROLE_CHANGE = (*model.NOTIFICATIONS, 5)
NOTIFY_HA_INSTANCE = (*model.NOTIFY_OBJECTS, 7, 0)
NOTIFY_HA_ROLE = (*model.NOTIFY_OBJECTS, 8, 0)
NOTIFY_HA_PREVIOUS = (*model.NOTIFY_OBJECTS, 9, 0)
HA_ROLES = model.HA_ROLES
# BGP4-MIB's bgpEstablishedNotification and bgpBackwardTransNotification as
# sluiceBgpEstablished / sluiceBgpBackwardTransition (the peer row's index names the peer).
BGP_ESTABLISHED = (*model.NOTIFICATIONS, 6)
BGP_BACKWARD = (*model.NOTIFICATIONS, 7)
NOTIFY_BGP_PREVIOUS = (*model.NOTIFY_OBJECTS, 10, 0)
INFORM_TIMEOUT_S = 1.5
INFORM_RETRIES = 3

Provider = Callable[..., Any]


class SnmpError(Exception):
    """The agent could not start as configured (e.g. no address could be bound)."""


def _bind(address: str, port: int) -> socket.socket:
    """A bound, non-blocking UDP socket; IPv6 sockets are v6-only so :: and 0.0.0.0 coexist."""
    ip = ipaddress.ip_address(address)
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((address, port))
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


async def _bind_retry(address: str, port: int, attempts: int = 20) -> socket.socket:
    """Bind, waiting a little while the previous engine's socket on the same port closes.

    asyncio closes a datagram transport's socket on a later loop iteration, so a
    reconfiguration that re-binds the same address can briefly find it in use.
    """
    for attempt in range(attempts):
        try:
            return _bind(address, port)
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE or attempt == attempts - 1:
                raise
            await asyncio.sleep(0.05)
    raise AssertionError("unreachable")


class _Engine:
    """One configured command-responder engine plus its notification engine."""

    def __init__(self, cfg: dict[str, Any], controller: TreeController, boots: EngineBoots) -> None:
        self.cfg = cfg
        self._boots = boots
        self.boots = 0  # snmpEngineBoots of this engine, once built
        self.born = time.time()  # snmpEngineTime counts from here
        engine_id = cfg.get("engine-id")
        self.engine_id = bytes.fromhex(engine_id) if engine_id else model.default_engine_id()
        self.engine: engine.SnmpEngine | None = None
        self.controller = controller
        self.notifier: engine.SnmpEngine | None = None
        self.managers: list[tuple[str, str]] = []  # (notification name, kind)
        self.responders: list[Any] = []
        self.fast: V2cBulkFastPath | None = None

    def _build(self) -> None:
        """Runs in a worker thread: building an engine loads pysnmp's MIB modules (~0.1 s
        each, two engines) and writing users and VACM entries is slow too. Nothing here
        touches the event loop; the engines serve nothing until their transports are added."""
        self.boots = self._boots.next()
        self.born = time.time()
        self.engine = engine.SnmpEngine(snmpEngineID=OctetString(self.engine_id))
        self._set_boots(self.engine)
        self._configure_access()
        ctx = context.SnmpContext(self.engine)
        # Replace the default context's instrumentation (pysnmp's own MIB tree) with ours.
        ctx.unregister_context_name(b"")
        ctx.register_context_name(b"", self.controller)
        self.responders = [
            GetCommandResponder(self.engine, ctx),
            NextCommandResponder(self.engine, ctx),
            SizedBulkCommandResponder(self.engine, ctx),
            cmdrsp.SetCommandResponder(self.engine, ctx),
        ]
        self._configure_notifier()

    async def start(self) -> None:
        await asyncio.to_thread(self._build)
        assert self.engine is not None
        self.controller.reset_access()
        if self.notifier is not None:
            # Client transports need the running loop: added here, not in _build.
            config.add_transport(
                self.notifier, udp.DOMAIN_NAME, udp.UdpTransport().open_client_mode()
            )
            config.add_transport(
                self.notifier, udp6.DOMAIN_NAME, udp6.Udp6Transport().open_client_mode()
            )
            self.notifier.transport_dispatcher.job_started(1)
        cfg = self.cfg
        port = int(cfg.get("port", 161))
        addresses = cfg.get("listen-address") or ["0.0.0.0", "::"]
        transports = []
        for i, address in enumerate(addresses, start=1):
            try:
                sock = await _bind_retry(address, port)
            except OSError as exc:
                log.error(
                    "snmp: cannot listen",
                    extra={"address": address, "port": port, "error": str(exc)},
                )
                continue
            if sock.family == socket.AF_INET6:
                transport = udp6.Udp6Transport().open_server_mode(sock=sock)
                domain = (*udp6.DOMAIN_NAME, i)
            else:
                transport = udp.UdpTransport().open_server_mode(sock=sock)
                domain = (*udp.DOMAIN_NAME, i)
            config.add_transport(self.engine, domain, transport)
            transports.append(transport)
        if not transports:
            raise SnmpError(f"snmp: no address could be bound on port {port}")
        # open_server_mode only schedules create_datagram_endpoint; wait for it here so
        # start() returns once requests are served.
        await asyncio.gather(*(t._lport for t in transports if t._lport is not None))
        # v2c table walks skip pysnmp's message processing (fastpath.py); the rest, and
        # whatever the fast path does not recognise, goes through pysnmp as before.
        communities = [c["secret"] for c in cfg.get("community", [])]
        if communities:
            fast = V2cBulkFastPath(
                communities,
                self.controller,
                VIEW_SUBTREES,
                MAX_RESPONSE - HEADER_BUDGET,
                SizedBulkCommandResponder.max_varbinds,
            )
            dispatcher = self.engine.transport_dispatcher
            dispatcher.register_recv_callback(fast.receiver(self.engine), ROUTE)
            dispatcher.register_routing_callback(fast.route)
            self.fast = fast
        # Keep the dispatcher's timer (USM time windows, retries) alive in this loop; the
        # blocking open_dispatcher()/run_dispatcher() must not be used inside the daemon.
        self.engine.transport_dispatcher.job_started(1)

    def _set_boots(self, eng: engine.SnmpEngine) -> None:
        """Our persisted snmpEngineBoots and a time counted from this build, in the LCD
        pysnmp's USM reads (its own counter lives in /tmp and is lost at reboot)."""
        builder = eng.get_mib_builder()
        boots, clock = builder.import_symbols(
            "__SNMP-FRAMEWORK-MIB", "snmpEngineBoots", "snmpEngineTime"
        )
        boots.syntax = boots.syntax.clone(self.boots)
        clock.syntax = clock.syntax.clone(int(self.born))

    def _configure_access(self) -> None:
        cfg, eng = self.cfg, self.engine
        assert eng is not None
        write_enabled = bool(cfg.get("write-access", False))
        for subtree in VIEW_SUBTREES:
            config.add_vacm_view(eng, VIEW, "included", subtree, b"")
        config.add_context(eng, b"")

        def grant(group: str, model_id: int, name: str, level: int, access: str) -> None:
            config.add_vacm_group(eng, group, model_id, name)
            # An empty view name means no access of that kind.
            write_view = VIEW if write_enabled and access == "read-write" else ""
            config.add_vacm_access(eng, group, b"", model_id, level, "exact", VIEW, write_view, "")

        for n, comm in enumerate(cfg.get("community", []), start=1):
            sec_name = f"community-{comm['name']}"
            config.add_v1_system(eng, f"c{n}", comm["secret"], securityName=sec_name)
            # Security model 2 only: v1 requests find no group and are refused.
            grant(f"g-c{n}", 2, sec_name, 1, comm.get("access", "read-only"))

        allow_no_auth = bool(cfg.get("allow-no-auth", False))
        for n, user in enumerate(cfg.get("usm-user", []), start=1):
            level = LEVEL[user.get("security-level", "auth-priv")]
            if level == 1 and not allow_no_auth:
                log.warning("snmp: no-auth user refused", extra={"user": user["name"]})
                continue
            self._add_user(eng, user, level)
            grant(f"g-u{n}", 3, user["name"], level, user.get("access", "read-only"))

    def _add_user(
        self, eng: engine.SnmpEngine, user: dict[str, Any], level: int, master: bool = False
    ) -> None:
        auth = AUTH[user.get("auth-protocol", "sha-256")] if level >= 2 else config.USM_AUTH_NONE
        priv = PRIV[user.get("priv-protocol", "aes-128")] if level == 3 else config.USM_PRIV_NONE
        # The config holds keys already localized to our engine ID (RFC 3414 2.6), and,
        # for informs only, the master keys (Ku): no pass phrase is ever stored.
        suffix, key_type = (
            ("-master-key", config.USM_KEY_TYPE_MASTER)
            if master
            else ("-key", config.USM_KEY_TYPE_LOCALIZED)
        )
        config.add_v3_user(
            eng,
            user["name"],
            auth,
            bytes.fromhex(user["auth" + suffix]) if level >= 2 else None,
            priv,
            bytes.fromhex(user["priv" + suffix]) if level == 3 else None,
            authKeyType=key_type,
            privKeyType=key_type,
        )

    def _configure_notifier(self) -> None:
        managers = self.cfg.get("manager", [])
        if not managers:
            return
        eng = engine.SnmpEngine(snmpEngineID=OctetString(self.engine_id))
        # The same engine as the responder (same ID): the same boots and time.
        self._set_boots(eng)
        config.add_context(eng, b"")
        communities = {c["name"]: c for c in self.cfg.get("community", [])}
        users = {u["name"]: u for u in self.cfg.get("usm-user", [])}
        added: set[str] = set()
        for n, mgr in enumerate(managers, start=1):
            kind = mgr.get("notification-type", "trap")
            params = f"p{n}"
            if mgr.get("community") in communities:
                sec_name = f"m{n}"
                config.add_v1_system(
                    eng, sec_name, communities[mgr["community"]]["secret"], securityName=sec_name
                )
                config.add_target_parameters(eng, params, sec_name, "noAuthNoPriv", 1)
                config.add_vacm_user(eng, 2, sec_name, "noAuthNoPriv", (), (), (1, 3, 6))
            elif mgr.get("usm-user") in users:
                user = users[mgr["usm-user"]]
                level = LEVEL[user.get("security-level", "auth-priv")]
                if user["name"] not in added:
                    added.add(user["name"])
                    if user.get("auth-master-key") and level >= 2:
                        # An inform's receiver is the authoritative engine: pysnmp learns
                        # its engine ID by discovery (a report), then localizes these
                        # master keys to it (its USM clones the user for that engine).
                        self._add_user(eng, user, level, master=True)
                    else:
                        # Traps: we are authoritative, the keys localized to us serve.
                        self._add_user(eng, user, level)
                config.add_target_parameters(eng, params, user["name"], LEVEL_NAME[level], 3)
                config.add_vacm_user(eng, 3, user["name"], LEVEL_NAME[level], (), (), (1, 3, 6))
            else:
                log.warning(
                    "snmp: manager without usable credential", extra={"manager": mgr["name"]}
                )
                continue
            ip = ipaddress.ip_address(mgr["address"])
            domain = udp6.DOMAIN_NAME if ip.version == 6 else udp.DOMAIN_NAME
            config.add_target_address(
                eng,
                f"a{n}",
                domain,
                (mgr["address"], int(mgr.get("port", 162))),
                params,
                timeout=int(INFORM_TIMEOUT_S * 100),
                retryCount=INFORM_RETRIES,
                tagList=f"t{n}",
            )
            config.add_notification_target(eng, f"n{n}", params, f"t{n}", kind)
            self.managers.append((f"n{n}", mgr["name"]))
        self.notifier = eng

    def notify(self, var_binds: list[tuple[Any, Any]]) -> None:
        if self.notifier is None or self.notifier.transport_dispatcher is None:
            return
        originator = ntforg.NotificationOriginator()
        for name, manager in self.managers:

            def done(
                eng: Any,
                handle: Any,
                error: Any,
                status: Any,
                index: Any,
                vbs: Any,
                ctx: Any,
                manager: str = manager,
            ) -> None:
                if error:
                    log.warning(
                        "snmp: notification not acknowledged",
                        extra={"manager": manager, "error": str(error)},
                    )

            try:
                originator.send_varbinds(self.notifier, name, None, b"", var_binds, done)
            except Exception:
                log.exception("snmp: notification failed", extra={"manager": manager})

    def close(self) -> None:
        for eng in (self.engine, self.notifier):
            if eng is None or eng.transport_dispatcher is None:
                continue
            with contextlib.suppress(Exception):
                eng.transport_dispatcher.job_finished(1)
            with contextlib.suppress(Exception):
                eng.transport_dispatcher.close_dispatcher()


def _describe(where: str) -> str:
    """The engine's addresses and port (its whole section is `where`), for `sluice status`."""
    cfg = json.loads(where)
    addresses = cfg.get("listen-address") or ["0.0.0.0", "::"]
    return f"{','.join(addresses)}:{cfg.get('port', 161)} (udp)"


class _EngineListener:
    """A Binding's listener: closing it stops the engine (SNMP has no sessions to keep)."""

    def __init__(self, agent: SnmpAgent, eng: _Engine) -> None:
        self.agent, self.engine = agent, eng

    async def close(self) -> None:
        if self.agent._engine is self.engine:
            self.agent._engine = None
        self.engine.close()
        # Let asyncio run the transports' close callbacks (the sockets close there).
        for _ in range(3):
            await asyncio.sleep(0)


class SnmpAgent:
    """SNMP v2c/v3 agent and notification originator for one config service."""

    def __init__(
        self,
        config_service: Any,
        state_providers: dict[str, Provider] | None = None,
        event_bus: Any = None,
        *,
        cache_ttl: float = 1.0,
        state_dir: Path | None = None,
    ) -> None:
        self.config_service = config_service
        # snmpEngineBoots, persisted beside the database (None: in memory, tests).
        self.boots = EngineBoots(state_dir)
        # Kept by reference: providers registered in the daemon's dict later are seen.
        self.state = StateReader(state_providers if state_providers is not None else {}, cache_ttl)
        self.event_bus = event_bus
        self.started = time.monotonic()
        self.snapshot = Snapshot()
        self.tree = Tree([])
        self.controller = TreeController(lambda: self.tree)
        self._engine: _Engine | None = None
        # The engine is the door's listener: rebuilt when /sluice:snmp changes, retried
        # while its port cannot be bound.
        self.binding = Binding("snmp", self._open_engine, describe=_describe)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False
        # Endpoint health as last reported by events, to tell when a service loses its
        # last healthy endpoint or regains one.
        self._health: dict[tuple[str, str, int], str] = {}

    # -- life cycle --------------------------------------------------------------------
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.started = time.monotonic()
        snap = await asyncio.to_thread(self._build_snapshot)
        self._install(snap)
        await self.reconfigure(snap.snmp)
        self.config_service.subscribe(self._on_commit)
        if self.event_bus is not None:
            self.event_bus.subscribe(self._on_event)

    async def close(self) -> None:
        self._closed = True
        if self.event_bus is not None and hasattr(self.event_bus, "unsubscribe"):
            with contextlib.suppress(Exception):
                self.event_bus.unsubscribe(self._on_event)
        with contextlib.suppress(Exception):
            self.config_service.unsubscribe(self._on_commit)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.binding.close()
        # Let the transports' close callbacks run before the loop may be closed.
        await asyncio.sleep(0)

    @classmethod
    def from_context(cls, ctx: DoorContext, section: Section) -> SnmpAgent:
        """The SNMP door (its section, /sluice:snmp, is read again at start)."""
        return cls(ctx.service, ctx.state, ctx.bus, state_dir=ctx.state_dir)

    def status(self) -> dict[str, Any]:
        return self.binding.status()

    @property
    def running(self) -> bool:
        return self._engine is not None

    @property
    def engine_id(self) -> bytes | None:
        return self._engine.engine_id if self._engine else None

    # -- config --------------------------------------------------------------------------
    def _build_snapshot(self) -> Snapshot:
        """Runs in a worker thread: sorting a big config takes a while."""
        svc = self.config_service
        if all(hasattr(svc, a) for a in ("_mutex", "services_effective", "sections_effective")):
            # Share the running effective items instead of running_doc()'s deep copy: the
            # config service replaces an item's dict on commit and never edits one in place
            # (as api.py's lb.list relies on too), and we only read. At 10,000 services the
            # copy is ~300,000 new objects per commit, enough to set off full GC passes
            # that stall the event loop for 100-200 ms.
            with svc._mutex:
                services = list(svc.services_effective.values())
                sections = dict(svc.sections_effective)
                commit_id = svc.commit_id
            doc: dict[str, Any] = {f"sluice:{k}": v for k, v in sections.items()}
            doc[LOAD_BALANCER] = {"service": services}
        else:
            doc = svc.running_doc(effective=True, with_secrets=True)
            commit_id = getattr(svc, "commit_id", 0)
        return Snapshot.from_doc(doc, commit_id or 0)

    def _install(self, snap: Snapshot) -> None:
        """Swap in a new snapshot: one assignment, so a request sees old or new, not a mix."""
        self.snapshot = snap
        lb = LbMib(snap, self.state, self.started, self._commit_id)
        interfaces = Interfaces(lambda: self.state.snapshot.current().interfaces)
        self.tree = Tree([*lb.tables(), *interfaces.tables(), self._engine_table()])

    def _engine_table(self) -> Table:
        """SNMP-FRAMEWORK-MIB's snmpEngine group, of the engine serving now."""

        def cell(col: int, pos: int) -> bytes | None:
            eng = self._engine
            if eng is None:
                return None
            if col == 1:
                return ber.octets(eng.engine_id)
            if col == 2:
                return ber.integer(eng.boots)
            if col == 3:
                return ber.integer(min(int(time.time() - eng.born), MAX_BOOTS))
            return ber.integer(MAX_MESSAGE_SIZE)

        return Table(SNMP_ENGINE, (1, 2, 3, 4), lambda: [(0,)], cell)

    def _commit_id(self) -> int:
        return int(getattr(self.config_service, "commit_id", 0) or 0)

    async def reconfigure(self, section: Section) -> None:
        """/sluice:snmp changed: rebuild the engine (users, communities, port...)."""
        where = json.dumps(section, sort_keys=True) if section.get("enabled", False) else None
        await self.binding.set(where)

    async def _open_engine(self, where: str) -> _EngineListener:
        cfg = json.loads(where)
        eng = _Engine(cfg, self.controller, self.boots)
        try:
            await eng.start()
        except SnmpError as exc:
            eng.close()
            raise OSError(str(exc)) from None
        except Exception:
            eng.close()
            raise
        self._engine = eng
        # The engine ID is logged because v3 managers and trap receivers need it (keys are
        # localized to it) and the agent does not serve SNMP-FRAMEWORK-MIB.
        log.info(
            "snmp: agent listening",
            extra={
                "port": cfg.get("port", 161),
                "addresses": cfg.get("listen-address") or ["0.0.0.0", "::"],
                "engine-id": eng.engine_id.hex(),
                "engine-boots": eng.boots,
            },
        )
        # coldStart (RFC 3418): the agent (re)initialized and its configuration may have
        # changed, at the daemon's start and whenever a commit switches SNMP on or
        # changes it (the engine is rebuilt, with the next snmpEngineBoots).
        self.notify(COLD_START, [])
        return _EngineListener(self, eng)

    def _on_commit(self, diff: Any) -> None:
        """Config service subscriber: runs in the committing (worker) thread."""
        if self._closed or self._loop is None or self._loop.is_closed():
            return
        summary = diff.summary() if hasattr(diff, "summary") else {}
        self._loop.call_soon_threadsafe(self._spawn, self._after_commit(diff.commit_id, summary))

    async def _after_commit(self, commit_id: int | None, summary: dict[str, Any]) -> None:
        async with self._lock:
            snap = await asyncio.to_thread(self._build_snapshot)
            if self._closed:
                return
            self._install(snap)
        text = (
            f"services added {summary.get('services-added', 0)}, "
            f"removed {summary.get('services-removed', 0)}, "
            f"changed {summary.get('services-changed', 0)}; sections changed: "
            + (", ".join(summary.get("sections-changed", [])) or "none")
        )
        self.notify(
            model.CONFIG_COMMITTED,
            [
                (model.NOTIFY_COMMIT_ID, Unsigned32(commit_id or 0)),
                (model.NOTIFY_COMMIT_SUMMARY, OctetString(text[:255])),
            ],
        )

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("snmp: background task failed", exc_info=task.exception())

    # -- events and notifications ---------------------------------------------------------
    def _on_event(self, event: dict[str, Any]) -> None:
        """Event bus subscriber: may run in any thread; the work happens in our loop."""
        if self._closed or self._loop is None or self._loop.is_closed():
            return
        kind = event.get("type")
        if kind == "endpoint-state":
            self._loop.call_soon_threadsafe(self._endpoint_event, dict(event))
        elif kind == "alarm":
            self._loop.call_soon_threadsafe(self._alarm_event, dict(event))
        elif kind == "ha-role":
            self._loop.call_soon_threadsafe(self._ha_role_event, dict(event))
        elif kind == "bgp-neighbor":
            self._loop.call_soon_threadsafe(self._bgp_event, dict(event))

    def _bgp_event(self, event: dict[str, Any]) -> None:
        """A BGP session changed: sluiceBgpEstablished when it reached established,
        sluiceBgpBackwardTransition when it fell to a lower state (as BGP4-MIB defines
        bgpBackwardTransNotification), nothing for a move up short of established."""
        self.state.bgp_changed()
        try:
            address = str(event["neighbor"])
            idx, _, _ = model.inet_index(address)
        except (KeyError, ValueError, TypeError):
            log.warning("snmp: malformed bgp event", extra={"event": repr(event)})
            return
        old, new = model.bgp_state(event.get("old")), model.bgp_state(event.get("new"))
        if new == model.BGP_STATE["established"] and old != new:
            trap = BGP_ESTABLISHED
        elif new < old:
            trap = BGP_BACKWARD
        else:
            return
        binds: list[tuple[Any, Any]] = [
            ((*model.BGP_PEER_ENTRY, model.BGP_STATE_COL, *idx), Integer32(new)),
            (NOTIFY_BGP_PREVIOUS, Integer32(old)),
        ]
        row = next((r for r in self.snapshot.bgp_peers if r.address == address), None)
        if row is not None:
            binds.append(((*model.BGP_PEER_ENTRY, model.BGP_REMOTE_AS_COL, *idx),
                          Unsigned32(row.remote_as)))  # fmt: skip
        self.notify(trap, binds)

    def _ha_role_event(self, event: dict[str, Any]) -> None:
        self.state.clear()  # sluiceHaInstanceRole reads the new role soon, not at the period
        self.notify(
            HA_ROLE_CHANGE,
            [
                (NOTIFY_HA_INSTANCE, OctetString(str(event.get("instance", ""))[:255])),
                (NOTIFY_HA_ROLE, Integer32(HA_ROLES.get(str(event.get("instance-role")), 1))),
                (NOTIFY_HA_PREVIOUS, Integer32(HA_ROLES.get(str(event.get("previous")), 1))),
            ],
        )

    def _alarm_event(self, event: dict[str, Any]) -> None:
        self.notify(
            ALARM,
            [
                (NOTIFY_ALARM_NAME, OctetString(str(event.get("name", ""))[:255])),
                (NOTIFY_ALARM_STATE, Integer32(1 if event.get("state") == "raised" else 2)),
                (NOTIFY_ALARM_TEXT, OctetString(str(event.get("text", ""))[:255])),
            ],
        )

    def _endpoint_event(self, event: dict[str, Any]) -> None:
        try:
            service = str(event["service"])
            address = str(event["address"])
            port = int(event["port"])
            addr_idx, _, _ = model.inet_index(address)
        except (KeyError, ValueError, TypeError):
            log.warning("snmp: malformed endpoint event", extra={"event": repr(event)})
            return
        old, new = str(event.get("old", "unknown")), str(event.get("new", "unknown"))
        row = self.snapshot.by_name.get(service)
        was_up = self._service_up(row) if row else None
        self._health[(service, address, port)] = new
        # The cached provider answer predates the event: drop it so reads agree with it.
        self.state.clear()
        idx = (*model.string_index(service), *addr_idx, port)
        error = str(event.get("last-error") or event.get("error") or "")
        self.notify(
            model.ENDPOINT_STATE_CHANGE,
            [
                (
                    (*model.ENDPOINT_ENTRY, model.EP_HEALTH_COL, *idx),
                    Integer32(model.HEALTH.get(new, 5)),
                ),
                (model.NOTIFY_PREVIOUS_HEALTH, Integer32(model.HEALTH.get(old, 5))),
                ((*model.ENDPOINT_ENTRY, model.EP_LAST_ERROR_COL, *idx), OctetString(error[:255])),
            ],
        )
        if row is None:
            return
        is_up = self._service_up(row)
        if was_up is not None and was_up != is_up:
            up = sum(1 for ep in row.endpoints if self._ep_health(ep) == "up")
            svc_idx = model.string_index(service)
            self.notify(
                model.SERVICE_STATE_CHANGE,
                [
                    (
                        (*model.SERVICE_ENTRY, model.SVC_OPER_COL, *svc_idx),
                        Integer32(model.OPER["up" if is_up else "down"]),
                    ),
                    ((*model.SERVICE_ENTRY, model.SVC_EP_UP_COL, *svc_idx), rfc1902.Gauge32(up)),
                ],
            )

    def _ep_health(self, ep: model.EndpointRow) -> str:
        known = self._health.get((ep.service, ep.address, ep.port))
        return known if known is not None else self.state.endpoint_health(ep)

    def _service_up(self, row: model.ServiceRow) -> bool:
        return any(self._ep_health(ep) == "up" for ep in row.endpoints)

    def notify(self, trap_oid: tuple[int, ...], var_binds: list[tuple[Any, Any]]) -> None:
        """Send a notification (trap or inform per manager) to every configured manager."""
        if self._engine is None:
            return
        ticks = int((time.monotonic() - self.started) * 100) & 0xFFFFFFFF
        full = [
            (rfc1902.ObjectName(SYS_UPTIME_0), rfc1902.TimeTicks(ticks)),
            (rfc1902.ObjectName(SNMP_TRAP_OID_0), ObjectIdentifier(trap_oid)),
            *((rfc1902.ObjectName(oid), value) for oid, value in var_binds),
        ]
        self._engine.notify(full)
