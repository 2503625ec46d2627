"""The console-ssh door: the operator console over SSH, one PTY and one `sluice console`
child process per session.

Textual has no SSH server, so the daemon runs this asyncssh listener (default port 2222,
for appliances without OpenSSH). Each session gets a pseudo-terminal sized from the
client's PTY request; the child runs the console with the slave as its terminal in a new
session (so resizes reach it as SIGWINCH), and asyncssh copies bytes between the channel
and the master side, forwarding window-size changes to it.

Users, passwords, keys and the login throttle are the ones every SSH door shares
(northbound/ssh/). A read-only user's console hides edits, and the daemon refuses them:
the console identifies its user and role (session.identify). The door listens where
/sluice:management/console-ssh says; the supervisor (appliance/doors.py) hands it every
change; sessions already open outlive a move of the listener.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import pty
import struct
import sys
import termios
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncssh

from appliance.doors import Binding, DoorContext, Section
from northbound.ssh import (
    Acceptor,
    Limits,
    Logins,
    Throttle,
    User,
    describe,
    listen_spec,
    load_or_create_host_key,
    lookup_user,
)

log = logging.getLogger(__name__)

DEFAULT_PORT = 2222
CONSOLE_LIMITS = Limits(unauthenticated=16, unauthenticated_per_address=4, sessions=16,
                        sessions_per_user=4)
# Run the console as its own process: a crash or a hang of one operator's console cannot
# touch the daemon or other sessions.
# `--take-tty` makes the PTY slave (its stdin) the console's controlling terminal: done by
# the child itself rather than in a preexec_fn, since the daemon has threads and code between
# fork and exec in a threaded process must not take locks. In the PyInstaller bundle
# sys.executable is the `sluice` binary itself.
DEFAULT_CONSOLE_CMD = (
    (sys.executable, "console", "--take-tty")
    if getattr(sys, "frozen", False)
    else (sys.executable, "-m", "sluice", "console", "--take-tty")
)


UserLookup = Callable[[str], User | None]


class ConsoleSSHServer:
    """The console's SSH sessions; `listen(host, port)` opens a listener for them (the door
    keeps one, where the config says)."""

    def __init__(
        self,
        users: UserLookup | Any,
        state_dir: str | Path,
        port: int = DEFAULT_PORT,
        *,
        host: str | list[str] | None = None,
        socket: str | Path | None = None,
        console_cmd: tuple[str, ...] | list[str] = DEFAULT_CONSOLE_CMD,
        throttle: Throttle | None = None,
        limits: Limits | None = None,
    ) -> None:
        """`users`: a lookup name -> User, or the config service itself."""
        self.lookup: UserLookup = (
            users if callable(users) else (lambda name: lookup_user(users, name))
        )
        # Each console session is a whole child process: fewer than NETCONF's.
        self.logins = Logins("console", self.lookup, throttle, limits=limits or CONSOLE_LIMITS)
        self.state_dir = Path(state_dir)
        self.port = port
        self.host = host
        self.socket = str(socket) if socket else None
        self.console_cmd = tuple(console_cmd)
        self._key: asyncssh.SSHKey | None = None
        self._acceptor: asyncssh.SSHAcceptor | None = None
        self._children: set[asyncio.subprocess.Process] = set()

    @property
    def throttle(self) -> Throttle:
        return self.logins.throttle

    async def start(self) -> None:
        """Listen on the constructor's host and port."""
        self._acceptor = await self.listen(self.host, self.port)
        self.port = self._acceptor.get_port()

    async def listen(self, host: str | list[str] | None, port: int) -> asyncssh.SSHAcceptor:
        if self._key is None:
            self._key = await asyncio.to_thread(load_or_create_host_key, self.state_dir)
        acceptor = await asyncssh.listen(
            host,
            port,
            server_factory=self.logins.server,
            server_host_keys=[self._key],
            process_factory=self._session,
            encoding=None,  # raw bytes both ways: it is a terminal
            agent_forwarding=False,
            x11_forwarding=False,
            allow_scp=False,
            login_timeout=60,
        )
        log.info("console ssh listening", extra={"port": acceptor.get_port()})
        return acceptor

    def has_sessions(self) -> bool:
        return bool(self._children)

    async def close(self) -> None:
        """Stop listening (if started by start()) and end every console session."""
        if self._acceptor is not None:
            self._acceptor.close()
            await self._acceptor.wait_closed()
            self._acceptor = None
        for child in list(self._children):
            with contextlib.suppress(ProcessLookupError):
                child.terminate()

    async def _session(self, process: asyncssh.SSHServerProcess[bytes]) -> None:
        user = self.lookup(process.get_extra_info("username") or "")
        if process.get_terminal_type() is None:
            process.stderr.write(b"the sluice console needs a terminal: use ssh -t\r\n")
            process.exit(1)
            return
        name = process.get_extra_info("username") or ""
        refused = self.logins.open_session(name)
        if refused:
            log.warning("console session refused", extra={"user": name, "reason": refused})
            process.stderr.write(refused.encode() + b"\r\n")
            process.exit(1)
            return
        try:
            code = await self.run_child(process, read_only=user is None or user.read_only)
        except Exception:
            log.exception("console session failed")
            code = 1
        finally:
            self.logins.close_session(name)
        process.exit(code)
    async def run_child(self, process: asyncssh.SSHServerProcess[bytes], read_only: bool) -> int:
        master, slave = pty.openpty()
        cols, rows, _, _ = process.get_terminal_size()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows or 24, cols or 80, 0, 0))
        env = {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "TERM": process.get_terminal_type() or "vt100",
            "LANG": os.environ.get("LANG", "C.UTF-8"),
            "SLUICE_CONSOLE_USER": process.get_extra_info("username") or "",
            # The console names this user and role to the daemon (session.identify): the
            # daemon records the user in history and refuses a read-only user's changes.
            "SLUICE_CONSOLE_READ_ONLY": "1" if read_only else "0",
        }
        if self.socket:
            env["SLUICE_SOCKET"] = self.socket
        for name in ("PYTHONPATH", "SLUICE_SOCKET", "TEXTUAL_COLOR_SYSTEM"):
            if name in os.environ and name not in env:
                env[name] = os.environ[name]
        child = await asyncio.create_subprocess_exec(
            *self.console_cmd,
            stdin=slave, stdout=slave, stderr=slave, env=env, start_new_session=True,
        )  # fmt: skip
        os.close(slave)
        self._children.add(child)
        try:
            # Two descriptors for the master: asyncssh closes each side when it is done.
            redirect = asyncio.ensure_future(
                process.redirect(stdin=master, stdout=os.dup(master), send_eof=False)
            )
            code = await child.wait()
            await redirect
            return code
        finally:
            self._children.discard(child)
            if child.returncode is None:
                child.terminate()


class ConsoleSSHDoor:
    """The console-ssh door (one listener kept by a Binding; sessions outlive its moves)."""

    def __init__(self, ctx: DoorContext, section: Section) -> None:
        self.section = section
        self.server = ConsoleSSHServer(ctx.service, ctx.state_dir, socket=ctx.socket)
        self.binding = Binding("console-ssh", self._open, describe=describe)

    async def _open(self, where: tuple[tuple[str, ...], int]) -> Acceptor:
        addresses, port = where
        # asyncssh listens on each address of a list; None is every address.
        return Acceptor(await self.server.listen(list(addresses) or None, port))

    @property
    def port(self) -> int | None:
        listener = self.binding.listener
        return listener.port if isinstance(listener, Acceptor) else None

    async def start(self) -> None:
        await self.binding.set(listen_spec(self.section, DEFAULT_PORT))

    async def reconfigure(self, section: Section) -> None:
        self.section = section
        await self.binding.set(listen_spec(section, DEFAULT_PORT))

    async def close(self) -> None:
        await self.binding.close()
        await self.server.close()

    def status(self) -> dict[str, Any]:
        return {**self.binding.status(), "sessions": len(self.server._children)}
