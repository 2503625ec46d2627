"""SSH for every SSH door (NETCONF, the console): users, logins, throttling, the host key.

Users are /sluice:management/user entries, read afresh at every login, so a user added,
removed, re-keyed or demoted by a commit counts for the next login (and, through
`role_of`, for the next operation of a session already open).

Failed logins are throttled, not locked out: after `free_failures` failures a key is
refused for an exponentially growing pause. The keys are the source address, its /64
(an IPv6 client owns a whole /64, so per-address counting alone is free to dodge) and the
user name (one account guessed from many addresses). A success takes back only the
failures of that user from that address, so logging in to one's own account does not
wipe out what an attacker has spent on another one. An attempt counts against the keys
while its check runs, so parallel attempts cannot outrun the throttle.

Password checks (scrypt, ~50 ms and 16 MiB each) run on their own small executor with a
bounded queue: a flood of logins cannot take the threads the daemon's other work needs.
An account without a password, or no account, costs the same work as a wrong password, so
timing does not tell which accounts exist or have no password.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncssh

from appliance.config.passwords import verify_password

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class User:
    name: str
    password_hash: str | None
    authorized_keys: tuple[str, ...]
    read_only: bool


def users_from_config(config_service: Any) -> dict[str, User]:
    """The configured users, with their password hashes (never masked here).

    Reads the service's in-memory running sections: they are replaced whole on commit, so
    a reference read is consistent, and it avoids copying every service per login.
    """
    management = (getattr(config_service, "sections", None) or {}).get("management") or {}
    users = {}
    for entry in management.get("user", []):
        name = str(entry.get("name", ""))
        users[name] = User(
            name=name,
            password_hash=entry.get("password-hash"),
            authorized_keys=tuple(entry.get("authorized-key", [])),
            read_only=entry.get("role", "read-only") != "read-write",
        )
    return users


def lookup_user(config_service: Any, name: str) -> User | None:
    """One user, read afresh (a commit that adds, removes or re-keys a user counts at once)."""
    return users_from_config(config_service).get(name)


def role_of(config_service: Any, name: str) -> str | None:
    """"read-write", "read-only", or None when the user no longer exists: what an open
    session of this user may do now."""
    user = lookup_user(config_service, name)
    if user is None:
        return None
    return "read-only" if user.read_only else "read-write"


def key_matches(authorized: tuple[str, ...], key: asyncssh.SSHKey) -> bool:
    offered = key.public_data
    for line in authorized:
        try:
            known = asyncssh.import_public_key(line)
        except (asyncssh.KeyImportError, ValueError):
            log.warning("unusable authorized-key in config", extra={"key": line[:40]})
            continue
        if known.public_data == offered:
            return True
    return False


# A valid hash of a random password: checking against it costs a real scrypt.
_DUMMY_HASH = (
    "$scrypt$ln=14,r=8,p=1$c2x1aWNlLWR1bW15LXNhbHQ=$"
    "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
)


def check_password(user: User | None, password: str) -> bool:
    """True if `password` is this user's. No user, or a user without a password, spends
    the same scrypt work on a dummy hash and fails."""
    stored = user.password_hash if user is not None else None
    ok = verify_password(password, stored or _DUMMY_HASH)
    return ok and stored is not None


# -- throttling ------------------------------------------------------------------------------
@dataclass
class Backoff:
    free_failures: int = 3
    base_delay: float = 1.0
    max_delay: float = 60.0
    # Forget a key after this long without failures.
    window: float = 900.0


def _network_of(address: str) -> str | None:
    """The /64 of an IPv6 address (None for IPv4 and for what is not an address)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    if ip.version == 6 and ip.ipv4_mapped is None:
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return None


class Throttle:
    """Failed-login bookkeeping per address, per IPv6 /64 and per user name.

    Thread-safe (checks run on the event loop, results may come back from elsewhere)."""

    MAX_KEYS = 10_000

    def __init__(self, policy: Backoff | None = None, clock: Any = time.monotonic) -> None:
        self.policy = policy or Backoff()
        self._clock = clock
        self._lock = threading.Lock()
        self._failures: dict[str, tuple[int, float]] = {}  # key → (count, last failure)
        self._pairs: dict[tuple[str, str], int] = {}  # (address, user) → failures
        self._in_flight: dict[str, int] = {}  # key → attempts being checked now

    @staticmethod
    def keys(address: str, user: str | None = None) -> list[str]:
        keys = [f"addr {address}"]
        net = _network_of(address)
        if net is not None:
            keys.append(f"net {net}")
        if user:
            keys.append(f"user {user}")
        return keys

    def _wait(self, key: str, now: float) -> float:
        count, last = self._failures.get(key, (0, 0.0))
        if count and now - last > self.policy.window:
            self._failures.pop(key, None)
            count = 0
        count += self._in_flight.get(key, 0)
        if count < self.policy.free_failures:
            return 0.0
        excess = count - self.policy.free_failures
        delay = min(self.policy.max_delay, self.policy.base_delay * 2 ** excess)
        return max(0.0, last + delay - now) if last else delay

    def blocked_for(self, address: str, user: str | None = None) -> float:
        """Seconds before this address (and user) may try again (0: may try now)."""
        with self._lock:
            now = self._clock()
            return max(self._wait(k, now) for k in self.keys(address, user))

    def blocked(self, address: str, user: str | None = None) -> bool:
        return self.blocked_for(address, user) > 0

    def begin(self, address: str, user: str | None = None) -> bool:
        """Reserve an attempt: False (and nothing reserved) if the keys are blocked."""
        with self._lock:
            now = self._clock()
            keys = self.keys(address, user)
            if any(self._wait(k, now) > 0 for k in keys):
                return False
            for k in keys:
                self._in_flight[k] = self._in_flight.get(k, 0) + 1
            return True

    def end(self, address: str, user: str | None, ok: bool) -> int:
        """Settle a reserved attempt; returns the failure count of the address."""
        with self._lock:
            for k in self.keys(address, user):
                left = self._in_flight.get(k, 0) - 1
                if left > 0:
                    self._in_flight[k] = left
                else:
                    self._in_flight.pop(k, None)
        if ok:
            self.succeeded(address, user)
            return 0
        return self.failed(address, user)

    def failed(self, address: str, user: str | None = None) -> int:
        with self._lock:
            now = self._clock()
            for k in self.keys(address, user):
                count, _ = self._failures.get(k, (0, 0.0))
                self._failures[k] = (count + 1, now)
            if user:
                pair = (address, user)
                self._pairs[pair] = self._pairs.get(pair, 0) + 1
            if len(self._failures) > self.MAX_KEYS:
                # A scan from many addresses must not grow this without bound.
                oldest = sorted(self._failures, key=lambda k: self._failures[k][1])
                for k in oldest[: len(self._failures) - self.MAX_KEYS]:
                    self._failures.pop(k, None)
            if len(self._pairs) > self.MAX_KEYS:
                self._pairs.clear()
            return self._failures[f"addr {address}"][0]

    def succeeded(self, address: str, user: str | None = None) -> None:
        """Take back this user's own failures from this address, and nobody else's."""
        with self._lock:
            mine = self._pairs.pop((address, user), 0) if user else 0
            if not mine:
                return
            for k in self.keys(address, user):
                count, last = self._failures.get(k, (0, 0.0))
                if count - mine > 0:
                    self._failures[k] = (count - mine, last)
                else:
                    self._failures.pop(k, None)


# One bounded pool for every SSH door's password checks.
PASSWORD_WORKERS = 2
PASSWORD_QUEUE = 32


class PasswordChecker:
    """scrypt checks off the event loop, at most PASSWORD_QUEUE waiting at once."""

    def __init__(self, workers: int = PASSWORD_WORKERS, queue: int = PASSWORD_QUEUE) -> None:
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="ssh-password")
        self._slots = threading.BoundedSemaphore(queue)

    async def check(self, user: User | None, password: str) -> bool:
        if not self._slots.acquire(blocking=False):
            log.warning("ssh login refused: too many password checks waiting")
            return False
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._pool, check_password, user, password)
        finally:
            self._slots.release()


_CHECKER: PasswordChecker | None = None


def password_checker() -> PasswordChecker:
    global _CHECKER
    if _CHECKER is None:
        _CHECKER = PasswordChecker()
    return _CHECKER


# -- the host key ----------------------------------------------------------------------------
# One host key for the appliance: NETCONF and the SSH console show the same fingerprint.
HOST_KEY_FILE = "ssh_host_ed25519_key"


def load_or_create_host_key(state_dir: Path) -> asyncssh.SSHKey:
    """The appliance's SSH host key, generated on first use and kept in `state_dir`.

    Written atomically (a temporary file, fsync, rename): a crash while writing leaves
    either no key or the whole key, never an empty file. A file that is not a key (left
    by an older release that wrote in place) is set aside and replaced, so both doors
    come up rather than failing for good.
    """
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / HOST_KEY_FILE
    if path.exists():
        try:
            return asyncssh.read_private_key(str(path))
        except (asyncssh.KeyImportError, OSError, ValueError) as exc:
            broken = path.with_name(f"{HOST_KEY_FILE}.broken")
            os.replace(path, broken)
            log.error("ssh host key unreadable; generating a new one",
                      extra={"path": str(path), "moved_to": str(broken), "error": str(exc)})
    key = asyncssh.generate_private_key("ssh-ed25519")
    # mkstemp creates the file 0600: the key is never readable by others, not even briefly.
    fd, tmp = tempfile.mkstemp(prefix=f".{HOST_KEY_FILE}.", dir=state_dir)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(key.export_private_key())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(state_dir)
    log.info("ssh host key generated", extra={"path": str(path)})
    return key


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# -- where an SSH door listens ---------------------------------------------------------------
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


# -- the login side of every SSH door --------------------------------------------------------
UserLookup = Callable[[str], User | None]


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
        if not throttle.begin(self.peer, username):
            self._refused(username)
            return False
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
