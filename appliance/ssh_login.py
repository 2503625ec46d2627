"""SSH logins for every SSH front door (NETCONF, the console): users of
/sluice:management/user by password or public key, failed-login throttling, and the
appliance's one SSH host key.

Every lookup reads the running config, so a user added, removed or re-keyed by a commit is
effective for the next login. Failed logins are logged and slowed per source address: after
`free_failures` failures the address is refused outright for an exponentially growing
pause, which makes guessing expensive without locking the account for everyone.
"""

from __future__ import annotations

import logging
import os
import time
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


@dataclass
class Backoff:
    free_failures: int = 3
    base_delay: float = 1.0
    max_delay: float = 60.0
    # Forget an address after this long without failures.
    window: float = 900.0


class Throttle:
    """Failed-login bookkeeping per source address."""

    def __init__(self, policy: Backoff | None = None, clock: Any = time.monotonic) -> None:
        self.policy = policy or Backoff()
        self._clock = clock
        self._failures: dict[str, tuple[int, float]] = {}  # address → (count, last failure)

    def blocked_for(self, address: str) -> float:
        """Seconds this address must still wait before it may try again (0: may try)."""
        count, last = self._failures.get(address, (0, 0.0))
        now = self._clock()
        if count and now - last > self.policy.window:
            self._failures.pop(address, None)
            return 0.0
        if count < self.policy.free_failures:
            return 0.0
        delay = min(
            self.policy.max_delay,
            self.policy.base_delay * 2 ** (count - self.policy.free_failures),
        )
        return max(0.0, last + delay - now)

    def blocked(self, address: str) -> bool:
        return self.blocked_for(address) > 0

    def failed(self, address: str) -> int:
        count, _ = self._failures.get(address, (0, 0.0))
        self._failures[address] = (count + 1, self._clock())
        if len(self._failures) > 10_000:
            # A scan from many addresses must not grow this without bound: drop the oldest.
            oldest = min(self._failures, key=lambda a: self._failures[a][1])
            self._failures.pop(oldest, None)
        return count + 1

    def succeeded(self, address: str) -> None:
        self._failures.pop(address, None)


def users_from_config(config_service: Any) -> dict[str, User]:
    """The configured users, with their password hashes (never masked here).

    Reads the service's in-memory running sections: they are replaced whole on commit, so
    a reference read is consistent, and it avoids copying every service per login.
    """
    management = (config_service.sections or {}).get("management") or {}
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


def check_password(user: User | None, password: str) -> bool:
    if user is None:
        # Spend the same time as a real check, so a timing probe cannot list users.
        verify_password(password, _DUMMY_HASH)
        return False
    return verify_password(password, user.password_hash)


# A valid hash of a random password: the "user does not exist" path costs a real scrypt.
_DUMMY_HASH = (
    "$scrypt$ln=14,r=8,p=1$c2x1aWNlLWR1bW15LXNhbHQ=$"
    "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
)


# One host key for the appliance: NETCONF and the SSH console show the same fingerprint.
HOST_KEY_FILE = "ssh_host_ed25519_key"


def load_or_create_host_key(state_dir: Path) -> asyncssh.SSHKey:
    """The appliance's SSH host key, generated on first use and kept in `state_dir`."""
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / HOST_KEY_FILE
    if path.exists():
        return asyncssh.read_private_key(str(path))
    key = asyncssh.generate_private_key("ssh-ed25519")
    # O_EXCL + 0600: the key is never readable by others, not even for a moment.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.export_private_key())
    log.info("ssh host key generated", extra={"path": str(path)})
    return key
