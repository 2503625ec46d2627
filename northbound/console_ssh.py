"""The console over SSH: one PTY and one `sluice console` child process per session.

Textual has no SSH server, so the daemon runs this asyncssh listener (default port 2222,
for appliances without OpenSSH). Each session gets a pseudo-terminal sized from the
client's PTY request; the child runs the console with the slave as its terminal in a new
session (so resizes reach it as SIGWINCH), and asyncssh copies bytes between the channel
and the master side, forwarding window-size changes to it.

Users are the config's /sluice:management/user entries — the same users, password hashes
and keys as NETCONF. A read-only user's console hides edits, and the
daemon refuses them: the console identifies its user and role (session.identify).
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
from concurrent.futures import Executor
from pathlib import Path
from typing import Any

import asyncssh

from appliance.ssh_login import (
    Throttle,
    User,
    check_password,
    key_matches,
    load_or_create_host_key,
    lookup_user,
)

log = logging.getLogger(__name__)

DEFAULT_PORT = 2222
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


def lookup_from_config(config_service: Any) -> UserLookup:
    """Users of the running config, read afresh at every login."""
    return lambda name: lookup_user(config_service, name)


class ConsoleSSHServer:
    def __init__(
        self,
        users: UserLookup | Any,
        state_dir: str | Path,
        port: int = DEFAULT_PORT,
        *,
        host: str | list[str] | None = None,
        socket: str | Path | None = None,
        console_cmd: tuple[str, ...] | list[str] = DEFAULT_CONSOLE_CMD,
    ) -> None:
        """`users`: a lookup name -> User, or the config service itself."""
        self.lookup: UserLookup = users if callable(users) else lookup_from_config(users)
        self.state_dir = Path(state_dir)
        self.port = port
        self.host = host
        self.socket = str(socket) if socket else None
        self.console_cmd = tuple(console_cmd)
        self._acceptor: asyncssh.SSHAcceptor | None = None
        self._children: set[asyncio.subprocess.Process] = set()
        self.throttle = Throttle()

    async def start(self) -> None:
        key = await asyncio.to_thread(self._host_key)
        self._acceptor = await asyncssh.listen(
            self.host,
            self.port,
            server_factory=lambda: _Auth(self),
            server_host_keys=[key],
            process_factory=self._session,
            encoding=None,  # raw bytes both ways: it is a terminal
            agent_forwarding=False,
            x11_forwarding=False,
            allow_scp=False,
            login_timeout=60,
        )
        if self.port == 0:  # tests ask for any free port
            self.port = self._acceptor.get_port()
        log.info("console ssh listening", extra={"port": self.port})

    def has_sessions(self) -> bool:
        return bool(self._children)

    async def stop_listening(self) -> None:
        """No new connections; sessions already open go on."""
        if self._acceptor is not None:
            self._acceptor.close()
            await self._acceptor.wait_closed()
            self._acceptor = None

    async def close(self) -> None:
        await self.stop_listening()
        for child in list(self._children):
            with contextlib.suppress(ProcessLookupError):
                child.terminate()

    def _host_key(self) -> asyncssh.SSHKey:
        return load_or_create_host_key(self.state_dir)

    async def _session(self, process: asyncssh.SSHServerProcess[bytes]) -> None:
        user = self.lookup(process.get_extra_info("username") or "")
        if process.get_terminal_type() is None:
            process.stderr.write(b"the sluice console needs a terminal: use ssh -t\r\n")
            process.exit(1)
            return
        try:
            code = await self.run_child(process, read_only=user is None or user.read_only)
        except Exception:
            log.exception("console session failed")
            code = 1
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


class _Auth(asyncssh.SSHServer):
    def __init__(self, server: ConsoleSSHServer) -> None:
        self.server = server
        self.peer = "?"

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        peer = conn.get_extra_info("peername")
        self.peer = str(peer[0]) if peer else "?"

    def begin_auth(self, username: str) -> bool:
        return True  # always authenticate: no anonymous console

    def password_auth_supported(self) -> bool:
        return True

    def public_key_auth_supported(self) -> bool:
        return True

    def auth_completed(self) -> None:
        self.server.throttle.succeeded(self.peer)

    async def validate_password(self, username: str, password: str) -> bool:
        if self.server.throttle.blocked(self.peer):
            log.warning("console login refused: too many failures", extra={"peer": self.peer})
            return False
        user = self.server.lookup(username)
        ok = await asyncio.to_thread(check_password, user, password)
        if not ok:
            self.server.throttle.failed(self.peer)
        log.log(
            logging.INFO if ok else logging.WARNING,
            "console login" if ok else "console login failed",
            extra={"user": username, "peer": self.peer, "method": "password"},
        )
        return ok

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        # A client offers keys one by one: a non-matching key is not a failed login.
        if self.server.throttle.blocked(self.peer):
            return False
        user = self.server.lookup(username)
        return user is not None and key_matches(user.authorized_keys, key)


def settings_of(config_service: Any) -> tuple[bool, int, tuple[str, ...]]:
    """(enabled, port, addresses) from /sluice:management/console-ssh (effective values)."""
    sections = getattr(config_service, "sections_effective", None) or {}
    settings = (sections.get("management") or {}).get("console-ssh") or {}
    return (
        bool(settings.get("enabled", True)),
        int(settings.get("port", DEFAULT_PORT)),
        tuple(settings.get("address") or ()),
    )


class ConsoleSSHDoor:
    """The console-ssh front door: listens where /sluice:management/console-ssh says and
    follows commits that change it. Open console sessions outlive a move of the listener;
    they end when their user quits or the daemon stops."""

    def __init__(
        self,
        config_service: Any,
        state_dir: str | Path,
        *,
        socket: str | Path | None = None,
        worker: Executor | None = None,
    ) -> None:
        self.config_service = config_service
        self.state_dir = state_dir
        self.socket = socket
        self.worker = worker  # where the running config is read (the daemon's config thread)
        self.server: ConsoleSSHServer | None = None
        self.current: tuple[bool, int, tuple[str, ...]] | None = None
        self._retired: list[ConsoleSSHServer] = []  # moved listeners whose sessions live on
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False

    @property
    def port(self) -> int | None:
        return self.server.port if self.server else None

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        await self.reconfigure()
        self.config_service.subscribe(self._on_commit)

    async def reconfigure(self) -> None:
        """Listen as the running config says now (nothing happens if it says the same)."""
        loop = asyncio.get_running_loop()
        wanted = await loop.run_in_executor(self.worker, settings_of, self.config_service)
        if self._closing or wanted == self.current:
            return
        old, self.server = self.server, None
        # Retired listeners are kept only while a console session of theirs is open.
        self._retired = [r for r in self._retired if r.has_sessions()]
        if old is not None:
            await old.stop_listening()
            if old.has_sessions():
                self._retired.append(old)
        self.current = wanted
        enabled, port, addresses = wanted
        if not enabled:
            log.info("console ssh disabled")
            return
        server = ConsoleSSHServer(
            self.config_service,
            self.state_dir,
            port,
            host=list(addresses) or None,  # asyncssh listens on each address of a list
            socket=self.socket,
        )
        try:
            await server.start()
        except OSError as exc:  # e.g. the port is taken: say so, keep the daemon running
            log.error("console ssh cannot listen", extra={"port": port, "error": str(exc)})
            return
        self.server = server

    def _on_commit(self, diff: Any) -> None:
        """ConfigService subscriber (runs in the committing thread)."""
        old, new = diff.sections_changed.get("management", (None, None))
        if (old or {}).get("console-ssh") == (new or {}).get("console-ssh"):
            return
        if self._loop is None or self._closing:
            return
        with contextlib.suppress(RuntimeError):  # the loop closed between check and call
            self._loop.call_soon_threadsafe(self._spawn_reconfigure)

    def _spawn_reconfigure(self) -> None:
        task = asyncio.ensure_future(self.reconfigure())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        self._closing = True
        self.config_service.unsubscribe(self._on_commit)
        for task in list(self._tasks):
            task.cancel()
        for server in [*self._retired, *([self.server] if self.server else [])]:
            await server.close()


async def start_from_config(
    config_service: Any,
    state_dir: str | Path,
    *,
    socket: str | Path | None = None,
    worker: Executor | None = None,
) -> ConsoleSSHDoor:
    """Start the console SSH front door (/sluice:management/console-ssh; it follows commits,
    so a door that starts disabled can be enabled later)."""
    door = ConsoleSSHDoor(config_service, state_dir, socket=socket, worker=worker)
    await door.start()
    return door
