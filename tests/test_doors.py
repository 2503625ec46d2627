"""The one front-door mechanism: the supervisor follows each door's config section, a door
that fails does not sink the others, and a listener that cannot bind keeps trying with a
visible state."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from pathlib import Path
from typing import Any

from daemonkit import Daemon

from appliance.config import ConfigService
from appliance.config.store import Store
from appliance.doors import Binding, DoorContext, DoorSpec, DoorSupervisor


class Recorder:
    """A door that records what it is told (no listener)."""

    def __init__(self, ctx: DoorContext, section: dict[str, Any]) -> None:
        self.sections = [section]
        self.closed = False

    async def start(self) -> None: ...

    async def reconfigure(self, section: dict[str, Any]) -> None:
        await asyncio.sleep(0.05)  # slow enough for commits to pile up behind it
        self.sections.append(section)

    async def close(self) -> None:
        self.closed = True

    def status(self) -> dict[str, Any]:
        return {"state": "listening"}


class Broken(Recorder):
    async def start(self) -> None:
        raise RuntimeError("cannot start")


def commit(service: ConfigService, path: str, value: dict[str, Any]) -> None:
    with service.open_session("test", "test") as s:
        s.edit([{"op": "merge", "path": path, "value": value}])
        s.commit("test")


def test_the_supervisor_hands_each_door_its_own_section(tmp_path: Path) -> None:
    service = ConfigService(Store(tmp_path / "c.db"))

    async def body() -> None:
        ctx = DoorContext(service, None, {}, None, tmp_path, tmp_path / "sock")  # type: ignore[arg-type]
        sup = DoorSupervisor(ctx, [
            DoorSpec("nc", ("management", "netconf"), Recorder),
            DoorSpec("bad", ("snmp",), Broken),
            DoorSpec("console", ("management", "console-ssh"), Recorder),
        ])
        await sup.start()
        nc, console = sup.doors["nc"], sup.doors["console"]
        assert sup.status()["bad"]["state"] == "failed" and "nc" in sup.status()
        for port in (2001, 2002, 2003):  # commits from another thread, as the worker makes
            await asyncio.to_thread(commit, service, "/sluice:management/netconf",
                                    {"port": port})
        await asyncio.to_thread(commit, service, "/sluice:system", {"hostname": "lb9"})
        deadline = time.monotonic() + 5
        while nc.sections[-1].get("port") != 2003:  # type: ignore[attr-defined]
            assert time.monotonic() < deadline, nc.sections  # type: ignore[attr-defined]
            await asyncio.sleep(0.02)
        # In order, the newest wins (those piled up behind a running one may be skipped);
        # the console door heard nothing: its section did not change.
        ports = [s.get("port") for s in nc.sections[1:]]  # type: ignore[attr-defined]
        assert ports == sorted(ports) and ports[-1] == 2003
        assert len(console.sections) == 1  # type: ignore[attr-defined]
        await sup.close()
        assert nc.closed and console.closed  # type: ignore[attr-defined]

    asyncio.run(body())
    service.store.close()


class Listener:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    async def close(self) -> None:
        self.sock.close()


async def open_tcp(port: int) -> Listener:
    sock = socket.socket()
    try:
        sock.bind(("127.0.0.1", port))
        sock.listen()
    except OSError:
        sock.close()
        raise
    return Listener(sock)


def test_a_binding_retries_a_busy_port_until_it_is_free() -> None:
    async def body() -> None:
        squatter = socket.socket()
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        binding = Binding("test", open_tcp, retry_delays=(0.05, 0.1))
        await binding.set(port)
        assert binding.status()["state"] == "retrying"
        assert "in use" in binding.status()["error"]
        squatter.close()
        deadline = time.monotonic() + 5
        while binding.state != "listening":
            assert time.monotonic() < deadline, binding.status()
            await asyncio.sleep(0.02)
        await binding.set(None)
        assert binding.state == "disabled" and binding.listener is None
        await binding.close()

    asyncio.run(body())


def test_netconf_comes_up_when_its_port_frees_after_start(tmp_path: Path) -> None:
    squatter = socket.socket()
    squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    squatter.bind(("127.0.0.1", 0))
    squatter.listen()
    port = squatter.getsockname()[1]
    service = ConfigService(Store(tmp_path / "sluice.db"))
    commit(service, "/sluice:management/netconf", {"port": port, "address": ["127.0.0.1"]})
    service.store.close()
    d = Daemon(tmp_path)
    d.start()
    try:
        def netconf() -> dict[str, Any]:
            return json.loads(d.cli("status", "-o", "json").stdout)["doors"]["netconf"]

        assert netconf()["state"] == "retrying", netconf()
        squatter.close()
        deadline = time.monotonic() + 20
        while netconf()["state"] != "listening":
            assert time.monotonic() < deadline, netconf()
            time.sleep(0.2)
        with socket.create_connection(("127.0.0.1", port), 5) as conn:
            assert conn.recv(64).startswith(b"SSH-2.0")
    finally:
        squatter.close()
        d.stop()
