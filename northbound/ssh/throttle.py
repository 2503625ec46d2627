"""Failed logins are throttled, not locked out.

After `free_failures` failures a key is refused for an exponentially growing pause. The
keys are the source address, its /64 (an IPv6 client owns a whole /64, so per-address
counting alone is free to dodge) and the user name (one account guessed from many
addresses). A success takes back only the failures of that user from that address, so
logging in to one's own account does not wipe out what an attacker has spent on another
one. An attempt counts against the keys while its check runs, so parallel attempts cannot
outrun the throttle; an attempt held back only by others still being checked waits its
turn (`waiting_on_checks`) rather than being refused, so an OSS that opens several
sessions at once from one address gets them all.
"""

from __future__ import annotations

import ipaddress
import threading
import time
from dataclasses import dataclass
from typing import Any


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

    def _wait(self, key: str, now: float, in_flight: bool = True) -> float:
        count, last = self._failures.get(key, (0, 0.0))
        if count and now - last > self.policy.window:
            self._failures.pop(key, None)
            count = 0
        if in_flight:
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

    def waiting_on_checks(self, address: str, user: str | None = None) -> bool:
        """Whether only attempts still being checked hold this one back: its failures so
        far would let it in, so it should wait for them to settle, not be refused."""
        with self._lock:
            now = self._clock()
            keys = self.keys(address, user)
            return all(self._wait(k, now, in_flight=False) == 0 for k in keys) and any(
                self._in_flight.get(k, 0) for k in keys)

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
