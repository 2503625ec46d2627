"""What every probe shares: the spec of one probe and the shape of its result."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import NamedTuple

# Cap on what a probe reads from an endpoint: a health answer is small, and a broken or
# hostile endpoint must not make the appliance buffer megabytes.
MAX_READ = 64 * 1024


class ProbeResult(NamedTuple):
    ok: bool
    rtt_us: int | None  # round trip of the successful exchange; None when it failed
    error: str  # "" when ok


@dataclass(frozen=True, slots=True)
class ProbeSpec:
    """One endpoint's probe, fully resolved (service settings with endpoint overrides)."""

    type: str  # ping | tcp | udp | sctp | http | https | none
    address: str
    port: int
    timeout: float  # seconds
    request: str | None = None
    expected_response: str | None = None
    http_method: str = "GET"
    http_path: str = "/"
    expected_status: int = 200
    ca_bundle: str | None = None
    client_certificate: str | None = None
    client_key: str | None = None


def ok(started: float) -> ProbeResult:
    """A success whose round trip began at `started` (time.perf_counter())."""
    return ProbeResult(True, int((time.perf_counter() - started) * 1e6), "")


def fail(error: str) -> ProbeResult:
    return ProbeResult(False, None, error)


def describe(exc: BaseException) -> str:
    """Short, operator-readable text for an exception (shown by `sluice ep list`)."""
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    text = str(exc) or type(exc).__name__
    return text[:200]
