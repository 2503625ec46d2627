"""Who is asking the HTTP door, and may they write.

Users are the appliance's (/sluice:management/user), read afresh at every request, so a
user removed, demoted or re-keyed by a commit counts at once. Two ways in:

- HTTP basic, only over TLS (a password must not cross the network in clear): the scrypt
  check runs on the SSH doors' bounded password pool, and a success is remembered for a
  minute per (user, stored hash, password digest), so a client sending basic auth with
  every request does not cost an scrypt each time; a changed password misses the cache;
- an API token (`Authorization: Bearer <token>`, or the bare token as kube-loxilb sends
  it), matched by its SHA-256 against the users' `api-token-hash`. Tokens are random and
  long, so a fast hash is the right one (nothing to brute-force).

Failures are throttled like SSH logins (per address, IPv6 /64 and user). Roles are
NETCONF's: read-only users may only read.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from appliance.config.passwords import token_hash
from northbound.http.wire import ApiError
from northbound.ssh import PasswordChecker, Throttle, User, password_checker, users_from_config

CACHE_SECONDS = 60.0
CACHE_MAX = 1024


@dataclass(frozen=True)
class Caller:
    user: str
    read_only: bool
    method: str  # "basic" or "token"


def unauthorized(message: str) -> ApiError:
    return ApiError(401, message, "unauthorized")


class Authenticator:
    def __init__(self, config_service: Any, throttle: Throttle | None = None,
                 checker: PasswordChecker | None = None) -> None:  # fmt: skip
        self.config_service = config_service
        self.throttle = throttle or Throttle()
        self.checker = checker or password_checker()
        self._cache: dict[tuple[str, str, str], float] = {}

    def _users(self) -> dict[str, User]:
        return users_from_config(self.config_service)

    async def authenticate(self, request: web.Request) -> Caller:
        header = request.headers.get("Authorization", "").strip()
        peer = request.remote or "?"
        if not header:
            raise unauthorized("authentication required: HTTP basic (over TLS) or an API token")
        scheme, _, rest = header.partition(" ")
        if scheme.lower() == "basic":
            return await self._basic(request, peer, rest.strip())
        token = rest.strip() if scheme.lower() == "bearer" else header
        return self._token(peer, token)

    def _token(self, peer: str, token: str) -> Caller:
        if self.throttle.blocked(peer):
            raise unauthorized("too many failed logins from this address; retry later")
        digest = token_hash(token)
        management = (self.config_service.sections or {}).get("management") or {}
        for entry in management.get("user", []):
            stored = entry.get("api-token-hash")
            if stored and hmac.compare_digest(str(stored), digest):
                name = str(entry["name"])
                self.throttle.succeeded(peer, name)
                return Caller(name, entry.get("role") != "read-write", "token")
        self.throttle.failed(peer)
        raise unauthorized("unknown API token")

    async def _basic(self, request: web.Request, peer: str, encoded: str) -> Caller:
        if not request.secure:
            raise unauthorized("basic authentication needs TLS (https); over plain http "
                               "use an API token")
        try:
            name, sep, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise unauthorized("malformed basic credentials") from None
        if not sep:
            raise unauthorized("malformed basic credentials")
        user = self._users().get(name)
        key = (name, (user.password_hash or "") if user else "",
               hashlib.sha256(password.encode()).hexdigest())
        now = time.monotonic()
        if user is not None and user.password_hash and self._cache.get(key, 0) > now:
            return Caller(name, user.read_only, "basic")
        if not self.throttle.begin(peer, name):
            raise unauthorized("too many failed logins; retry later")
        ok = False
        try:
            ok = await self.checker.check(user, password)
        finally:
            self.throttle.end(peer, name, ok)
        if not ok or user is None:
            raise unauthorized("wrong user name or password")
        if len(self._cache) >= CACHE_MAX:
            self._cache = {k: t for k, t in self._cache.items() if t > now}
            if len(self._cache) >= CACHE_MAX:
                self._cache.clear()
        self._cache[key] = now + CACHE_SECONDS
        return Caller(name, user.read_only, "basic")
