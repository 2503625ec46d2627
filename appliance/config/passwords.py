"""Password hashes for operator accounts: '$scrypt$ln=<log2 N>,r=<r>,p=<p>$<salt>$<hash>'.

The config stores only this form (the YANG pattern of management/user/password-hash refuses
anything else), so every front door that logs users in (NETCONF, console SSH) verifies with
`verify_password` and every tool that sets a password writes `hash_password(...)`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import secrets

# N=2^14, r=8, p=1: the parameters RFC 7914 and OWASP give for interactive logins
# (~16 MiB, tens of milliseconds per check).
DEFAULT_LN, DEFAULT_R, DEFAULT_P = 14, 8, 1
SALT_BYTES = 16
HASH_BYTES = 32
# A hash from the config decides how much work a login costs: cap it so a hand-edited
# ln=30 cannot make every login attempt allocate gigabytes.
MAX_LN = 20
MAX_MEMORY = 1 << 30

_FORM = re.compile(
    r"^\$scrypt\$ln=(?P<ln>[1-9][0-9]?),r=(?P<r>[1-9][0-9]{0,2}),p=(?P<p>[1-9][0-9]{0,2})"
    r"\$(?P<salt>[A-Za-z0-9+/.]+={0,2})\$(?P<hash>[A-Za-z0-9+/.]+={0,2})$"
)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    # '.' is allowed by the pattern (passlib-style alphabets); map it onto standard base64.
    text = text.replace(".", "+")
    return base64.b64decode(text + "=" * (-len(text) % 4))


def _scrypt(password: str, salt: bytes, ln: int, r: int, p: int, length: int) -> bytes:
    n = 1 << ln
    maxmem = min(MAX_MEMORY, 128 * r * n * p + 128 * r * n + (1 << 20))
    return hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=maxmem, dklen=length
    )


def hash_password(
    password: str, *, ln: int = DEFAULT_LN, r: int = DEFAULT_R, p: int = DEFAULT_P
) -> str:
    """A new salted scrypt hash of `password` in the config's password-hash form."""
    if not 1 <= ln <= MAX_LN:
        raise ValueError(f"ln must be 1..{MAX_LN}")
    salt = os.urandom(SALT_BYTES)
    digest = _scrypt(password, salt, ln, r, p, HASH_BYTES)
    return f"$scrypt$ln={ln},r={r},p={p}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, encoded: str | None) -> bool:
    """True if `password` matches `encoded`; False for a wrong password or a malformed hash."""
    if not encoded:
        return False
    match = _FORM.match(encoded)
    if match is None:
        return False
    ln, r, p = int(match["ln"]), int(match["r"]), int(match["p"])
    if ln > MAX_LN:
        return False
    try:
        salt, expected = _unb64(match["salt"]), _unb64(match["hash"])
        if not expected:
            return False
        digest = _scrypt(password, salt, ln, r, p, len(expected))
    except (ValueError, MemoryError):
        return False
    # Constant-time: a timing difference must not tell how much of the hash matched.
    return hmac.compare_digest(digest, expected)


# HTTP API tokens: random and long, so a fast hash is enough (nothing to brute-force), and
# a request is checked without an scrypt.
TOKEN_PREFIX = "sha256$"


def token_hash(token: str) -> str:
    """What /sluice:management/user/api-token-hash holds for `token`."""
    return TOKEN_PREFIX + hashlib.sha256(token.encode()).hexdigest()


def new_token() -> tuple[str, str]:
    """(token, its hash): 32 random bytes, URL-safe."""
    token = secrets.token_urlsafe(32)
    return token, token_hash(token)
