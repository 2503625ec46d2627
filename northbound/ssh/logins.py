"""The login side of every SSH door: one asyncssh server object per connection, the
limits on connections not logged in and on sessions, and the throttle around it all."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import asyncssh

from northbound.ssh.throttle import Throttle
from northbound.ssh.users import (
    PasswordChecker,
    User,
    key_matches,
    lookup_user,
    password_checker,
)

log = logging.getLogger(__name__)


UserLookup = Callable[[str], User | None]

# How long a password attempt waits for the other attempts from its address (at most
# `unauthenticated_per_address` of them) to be checked before it is refused, and how often
# it looks.
QUEUE_WAIT = 10.0
QUEUE_POLL = 0.05


@dataclass(frozen=True)
class Limits:
    """How much one SSH door lets clients hold: connections that have not logged in yet
    (in all and per address: a login takes up to `login_timeout`, so unbounded they are a
    cheap way to exhaust the daemon), and sessions in all and per user."""

    unauthenticated: int = 32
    unauthenticated_per_address: int = 8
    sessions: int = 64
    sessions_per_user: int = 16


class Logins:
    """What an SSH door needs to log users in: who they are, the throttle, the limits."""

    def __init__(
        self,
        door: str,
        lookup: UserLookup,
        throttle: Throttle | None = None,
        checker: PasswordChecker | None = None,
        limits: Limits | None = None,
    ) -> None:
        self.door = door
        self.lookup = lookup
        self.throttle = throttle or Throttle()
        self.checker = checker or password_checker()
        self.limits = limits or Limits()
        self._unauthenticated: dict[str, int] = {}  # address -> connections not logged in
        self._sessions: dict[str, int] = {}  # user -> open sessions

    # -- connections before login (the event loop only: no lock needed) ---------------------
    def admit(self, address: str) -> bool:
        total = sum(self._unauthenticated.values())
        mine = self._unauthenticated.get(address, 0)
        if total >= self.limits.unauthenticated or mine >= self.limits.unauthenticated_per_address:
            log.warning(f"{self.door} connection refused: too many not logged in",
                        extra={"peer": address, "from_peer": mine, "total": total})
            return False
        self._unauthenticated[address] = mine + 1
        return True

    def admitted_done(self, address: str) -> None:
        left = self._unauthenticated.get(address, 0) - 1
        if left > 0:
            self._unauthenticated[address] = left
        else:
            self._unauthenticated.pop(address, None)

    # -- sessions ----------------------------------------------------------------------------
    def open_session(self, user: str) -> str | None:
        """Count a new session of `user`; the reason it is refused, or None."""
        total = sum(self._sessions.values())
        mine = self._sessions.get(user, 0)
        if total >= self.limits.sessions:
            return f"too many {self.door} sessions ({self.limits.sessions})"
        if mine >= self.limits.sessions_per_user:
            return f"too many {self.door} sessions for {user} ({self.limits.sessions_per_user})"
        self._sessions[user] = mine + 1
        return None

    def close_session(self, user: str) -> None:
        left = self._sessions.get(user, 0) - 1
        if left > 0:
            self._sessions[user] = left
        else:
            self._sessions.pop(user, None)

    @classmethod
    def from_config(cls, door: str, config_service: Any, throttle: Throttle | None = None,
                    limits: Limits | None = None) -> Logins:
        return cls(door, lambda name: lookup_user(config_service, name), throttle,
                   limits=limits)

    def server(self) -> asyncssh.SSHServer:
        """A new asyncssh server object (asyncssh makes one per connection)."""
        return LoginServer(self)


class LoginServer(asyncssh.SSHServer):
    """Authentication for one connection: config users only, password or public key."""

    def __init__(self, logins: Logins) -> None:
        self.logins = logins
        self.peer = "?"
        self.authenticated = False
        self.key_user: str | None = None  # a user who offered only keys, none matching
        self.admitted = False  # counted among the connections not logged in yet

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        peer = conn.get_extra_info("peername")
        self.peer = str(peer[0]) if peer else "?"
        self.admitted = self.logins.admit(self.peer)
        if not self.admitted:
            conn.close()

    def auth_completed(self) -> None:
        self._leave_unauthenticated()

    def _leave_unauthenticated(self) -> None:
        if self.admitted:
            self.admitted = False
            self.logins.admitted_done(self.peer)

    def connection_lost(self, exc: Exception | None) -> None:
        self._leave_unauthenticated()
        # A client offers its keys one by one: a key that does not match is not a failed
        # login, a connection that ends without logging in after offering keys is one.
        if not self.authenticated and self.key_user is not None:
            n = self.logins.throttle.failed(self.peer, self.key_user)
            self._log_failure(self.key_user, "publickey", n)

    def begin_auth(self, username: str) -> bool:
        return True  # always require authentication: no anonymous access

    def password_auth_supported(self) -> bool:
        return True

    def public_key_auth_supported(self) -> bool:
        return True

    def kbdint_auth_supported(self) -> bool:
        return False

    def host_based_auth_supported(self) -> bool:
        return False

    def _refused(self, username: str) -> bool:
        wait = self.logins.throttle.blocked_for(self.peer, username)
        if wait > 0:
            log.warning(f"{self.logins.door} login refused: too many failures",
                        extra={"peer": self.peer, "user": username, "retry_in": round(wait, 1)})
            return True
        return False

    async def validate_password(self, username: str, password: str) -> bool:
        throttle = self.logins.throttle
        queued_until = time.monotonic() + QUEUE_WAIT
        while not throttle.begin(self.peer, username):
            # Parallel logins from one address take turns; failures still refuse at once.
            if not throttle.waiting_on_checks(self.peer, username) or \
                    time.monotonic() > queued_until:
                self._refused(username)
                return False
            await asyncio.sleep(QUEUE_POLL)
        ok = False
        try:
            ok = await self.logins.checker.check(self.logins.lookup(username), password)
        finally:
            n = throttle.end(self.peer, username, ok)
        if ok:
            self.authenticated = True
            log.info(f"{self.logins.door} login",
                     extra={"user": username, "peer": self.peer, "method": "password"})
        else:
            self._log_failure(username, "password", n)
        return ok

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        if self._refused(username):
            return False
        user = self.logins.lookup(username)
        if user is not None and key_matches(user.authorized_keys, key):
            self.authenticated = True
            self.key_user = None
            self.logins.throttle.succeeded(self.peer, username)
            log.info(f"{self.logins.door} login",
                     extra={"user": username, "peer": self.peer, "method": "publickey"})
            return True
        self.key_user = username
        return False

    def _log_failure(self, username: str, method: str, failures: int) -> None:
        log.warning(f"{self.logins.door} login failed",
                    extra={"user": username, "peer": self.peer, "method": method,
                           "failures": failures})
