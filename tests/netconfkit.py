"""A NetconfServer on 127.0.0.1 in a background thread, over a temporary config store.

ncclient is blocking, so the server gets its own thread and event loop; tests talk to it
with ncclient (or the raw client below) from the test thread.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncssh
from ncclient import manager

from appliance.config import ConfigService
from appliance.config.passwords import hash_password
from appliance.config.store import Store
from appliance.doors import DoorContext, DoorSpec, DoorSupervisor
from northbound.netconf import NetconfServer
from northbound.netconf.framing import Deframer, encode
from northbound.netconf.server import NetconfDoor
from northbound.ssh import Backoff

PASSWORD = "s3cret-pass"
SLUICE_NS = "urn:sluice:yang:sluice"
# Cheap scrypt parameters: the tests check the logic, not the work factor.
FAST_HASH = hash_password(PASSWORD, ln=4, r=8, p=1)


@dataclass
class Harness:
    service: ConfigService
    server: NetconfServer
    loop: asyncio.AbstractEventLoop
    thread: threading.Thread
    key_path: Path
    port: int
    events: list[Any] = field(default_factory=list)
    # What stops the server: the server itself, or the door supervisor running it.
    closer: Any = None

    def connect(self, user: str = "ops", password: str | None = PASSWORD,
                key: bool = False, timeout: int = 10) -> manager.Manager:
        kw: dict[str, Any] = {
            "host": "127.0.0.1",
            "port": self.port,
            "username": user,
            "hostkey_verify": False,
            "allow_agent": False,
            "look_for_keys": False,
            "timeout": timeout,
        }
        if key:
            kw["key_filename"] = str(self.key_path)
        else:
            kw["password"] = password
        return manager.connect(**kw)

    def run(self, coro: Any, timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)


def seed_users(service: ConfigService, public_key: str) -> None:
    with service.open_session("setup", "test") as s:
        s.edit([{
            "op": "merge",
            "path": "/sluice:management",
            "value": {"user": [
                {"name": "ops", "password-hash": FAST_HASH, "role": "read-write"},
                {"name": "ops2", "password-hash": FAST_HASH, "role": "read-write"},
                {"name": "viewer", "password-hash": FAST_HASH, "role": "read-only"},
                {"name": "keyuser", "authorized-key": [public_key], "role": "read-write"},
            ]},
        }])
        s.commit("users")


def start(tmp: Path, event_bus: Any = None, netconf: dict | None = None, **kw: Any) -> Harness:
    """`netconf`: /sluice:management/netconf settings committed before the server starts
    (with follow_config=True they decide where it listens: keep them on 127.0.0.1)."""
    service = ConfigService(Store(tmp / "config.db"))
    key = asyncssh.generate_private_key("ssh-ed25519")
    key_path = tmp / "client_key"
    key_path.write_bytes(key.export_private_key())
    key_path.chmod(0o600)
    seed_users(service, key.export_public_key().decode().strip())
    if netconf:
        with service.open_session("setup", "test") as s:
            s.edit([{"op": "merge", "path": "/sluice:management/netconf", "value": netconf}])
            s.commit("netconf settings")
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="netconf-test-loop", daemon=True)
    thread.start()
    if kw.pop("follow_config", False):
        # As the daemon runs it: a NetconfDoor under the door supervisor, listening where
        # /sluice:management/netconf says.
        ctx = DoorContext(service, ThreadPoolExecutor(1), kw.get("state") or {}, event_bus,
                          tmp / "state", tmp / "control.sock")
        supervisor = DoorSupervisor(
            ctx, [DoorSpec("netconf", ("management", "netconf"), NetconfDoor)])
        asyncio.run_coroutine_threadsafe(supervisor.start(), loop).result(30)
        server = supervisor.doors["netconf"].server  # type: ignore[attr-defined]
        return Harness(service, server, loop, thread, key_path, server.port,
                       closer=supervisor.close)
    kw.setdefault("backoff", Backoff(free_failures=3, base_delay=0.5, max_delay=2.0))
    server = NetconfServer(service, tmp / "state", host="127.0.0.1", port=0,
                           event_bus=event_bus, **kw)
    asyncio.run_coroutine_threadsafe(server.start(), loop).result(30)
    return Harness(service, server, loop, thread, key_path, server.port)


def stop(h: Harness) -> None:
    try:
        h.run((h.closer or h.server.close)())
    finally:
        h.loop.call_soon_threadsafe(h.loop.stop)
        h.thread.join(10)
        h.service.store.close()


def harness(tmp: Path, **kw: Any) -> Iterator[Harness]:
    h = start(tmp, **kw)
    try:
        yield h
    finally:
        stop(h)


def wait_for(predicate: Any, timeout: float = 10.0, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(interval)


class RawClient:
    """A NETCONF client speaking bytes, for what ncclient will not send (bad framing, bad XML)."""

    HELLO_11 = (
        b'<hello xmlns="urn:ietf:params:xml:ns:netconf:base:1.0"><capabilities>'
        b"<capability>urn:ietf:params:netconf:base:1.0</capability>"
        b"<capability>urn:ietf:params:netconf:base:1.1</capability>"
        b"</capabilities></hello>"
    )
    HELLO_10 = (
        b'<hello xmlns="urn:ietf:params:xml:ns:netconf:base:1.0"><capabilities>'
        b"<capability>urn:ietf:params:netconf:base:1.0</capability>"
        b"</capabilities></hello>"
    )

    def __init__(self, h: Harness, chunked: bool = True, user: str = "ops") -> None:
        self.h, self.chunked, self.user = h, chunked, user
        self.deframer = Deframer(1 << 30)
        self.pending: list[bytes] = []

    async def __aenter__(self) -> RawClient:
        self.conn = await asyncssh.connect(
            "127.0.0.1", self.h.port, username=self.user, password=PASSWORD,
            known_hosts=None, client_keys=None, agent_path=None)
        self.writer, self.reader, _ = await self.conn.open_session(
            subsystem="netconf", encoding=None)
        self.hello = await self.recv()
        self.writer.write(encode(self.HELLO_11 if self.chunked else self.HELLO_10, False))
        if self.chunked:
            self.deframer.switch_to_chunked()
        return self

    async def __aexit__(self, *_: Any) -> None:
        self.conn.close()
        await self.conn.wait_closed()

    def send_raw(self, data: bytes) -> None:
        self.writer.write(data)

    def send(self, message: bytes) -> None:
        self.writer.write(encode(message, self.chunked))

    async def recv(self, timeout: float = 10) -> bytes:
        async def more() -> bytes:
            while not self.pending:
                data = await self.reader.read(65536)
                if not data:
                    raise EOFError("session closed")
                self.pending.extend(m for m in self.deframer.feed(data) if isinstance(m, bytes))
            return self.pending.pop(0)

        return await asyncio.wait_for(more(), timeout)

    async def closed(self, timeout: float = 10) -> bool:
        try:
            await self.recv(timeout)
        except EOFError:
            return True
        return False
