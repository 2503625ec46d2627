"""Where an SSH door listens, and its listener as the door's Binding keeps it."""

from __future__ import annotations

from typing import Any

import asyncssh


def listen_spec(section: dict[str, Any], default_port: int) -> tuple[tuple[str, ...], int] | None:
    """(addresses, port) of an SSH door's section (address, port, enabled), None when
    disabled; () addresses: every address of both families."""
    if not section.get("enabled", True):
        return None
    return tuple(section.get("address") or ()), int(section.get("port", default_port))


def describe(where: tuple[tuple[str, ...], int]) -> str:
    """"*:830", "127.0.0.1,::1:2222": where an SSH door listens, for `sluice status`."""
    addresses, port = where
    return f"{','.join(addresses) or '*'}:{port}"


class Acceptor:
    """An asyncssh listener as a door's Binding keeps it: closing it stops accepting, the
    sessions already open go on."""

    def __init__(self, acceptor: asyncssh.SSHAcceptor) -> None:
        self.acceptor = acceptor
        self.port = acceptor.get_port()

    async def close(self) -> None:
        self.acceptor.close()
        await self.acceptor.wait_closed()
