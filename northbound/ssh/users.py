"""Who may log in to an SSH door: /sluice:management/user entries, read afresh at every
login, and the checks of a password or key against them.

Password checks (scrypt, ~50 ms and 16 MiB each) run on their own small executor with a
bounded queue: a flood of logins cannot take the threads the daemon's other work needs.
An account without a password, or no account, costs the same work as a wrong password, so
timing does not tell which accounts exist or have no password.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
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
