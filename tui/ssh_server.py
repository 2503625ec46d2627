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
    else (sys.executable, "-m", "appliance.cli.main", "console", "--take-tty")
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

    async def close(self) -> None:
        if self._acceptor is not None:
            self._acceptor.close()
            await self._acceptor.wait_closed()
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


async def start_from_config(
    config_service: Any, state_dir: str | Path, *, socket: str | Path | None = None
) -> ConsoleSSHServer | None:
    """Start the console SSH server as /sluice:management/console-ssh says (a front door).

    None when it is disabled. Read once at start: a later change of port or addresses takes
    a daemon restart (TODO: follow commits like the NETCONF server's follow_config).
    """
    sections = getattr(config_service, "sections_effective", None) or {}
    settings = (sections.get("management") or {}).get("console-ssh") or {}
    if not settings.get("enabled", True):
        return None
    addresses = list(settings.get("address") or [])
    server = ConsoleSSHServer(
        config_service,
        state_dir,
        int(settings.get("port", DEFAULT_PORT)),
        host=addresses or None,  # asyncssh listens on each address of a list
        socket=socket,
    )
    await server.start()
    return server
