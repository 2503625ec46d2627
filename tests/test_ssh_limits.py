"""Bounded resources at the SSH doors: connections that never log in, and sessions per
user and in all, are limited; everyone else is still served."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import netconfkit as kit
import pytest

from northbound.console_ssh import ConsoleSSHServer
from northbound.ssh import Limits


def closed_by_server(sock: socket.socket, within: float = 3.0) -> bool:
    """True if the server closes the connection (after its banner, if any) in time."""
    sock.settimeout(0.2)
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            if sock.recv(4096) == b"":
                return True
        except TimeoutError:
            continue
        except ConnectionResetError:
            return True
    return False


def test_connections_that_never_log_in_are_bounded_per_address(tmp_path: Path) -> None:
    async def body() -> None:
        server = ConsoleSSHServer(
            lambda name: None, tmp_path, 0, host="127.0.0.1",
            limits=Limits(unauthenticated=10, unauthenticated_per_address=2),
        )
        await server.start()
        socks = []
        try:
            for _ in range(3):
                socks.append(await asyncio.to_thread(
                    socket.create_connection, ("127.0.0.1", server.port), 5))
            verdicts = await asyncio.gather(
                *(asyncio.to_thread(closed_by_server, s, 2.0) for s in socks))
            assert verdicts == [False, False, True]
            # One of them gives up: a new connection is admitted again.
            socks.pop(0).close()
            await asyncio.sleep(0)
            deadline = time.monotonic() + 5
            while True:
                fresh = await asyncio.to_thread(
                    socket.create_connection, ("127.0.0.1", server.port), 5)
                socks.append(fresh)
                if not await asyncio.to_thread(closed_by_server, fresh, 1.0):
                    break
                assert time.monotonic() < deadline, "a freed slot was never reused"
        finally:
            for s in socks:
                s.close()
            await server.close()

    asyncio.run(body())


def test_netconf_sessions_per_user_are_bounded(tmp_path: Path) -> None:
    h = kit.start(tmp_path, limits={"sessions_per_user": 2})
    try:
        first, second = h.connect("ops"), h.connect("ops")
        try:
            with pytest.raises(Exception):  # noqa: B017 - the server ends the third at once
                third = h.connect("ops", timeout=5)
                third.get_config("running")
            with h.connect("ops2") as other:  # another user is still served
                other.get_config("running")
        finally:
            first.close_session()
            second.close_session()
        kit.wait_for(lambda: not h.server.sessions)
        with h.connect("ops") as again:  # the slots are given back when sessions end
            again.get_config("running")
    finally:
        kit.stop(h)
