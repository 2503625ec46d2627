"""UDP probe: the expected string comes back, or, without one, no ICMP port-unreachable
does within the timeout (a connected UDP socket reports it as ECONNREFUSED on receive)."""

from __future__ import annotations

import asyncio
import socket
import time

from appliance.probes.base import MAX_READ, ProbeResult, ProbeSpec, describe, fail, ok
from appliance.probes.tcp import family_of


async def probe_udp(spec: ProbeSpec) -> ProbeResult:
    # A plain non-blocking socket rather than a DatagramTransport: the transport silently
    # drops an empty datagram, and an empty request is a legitimate probe.
    loop = asyncio.get_running_loop()
    expected = spec.expected_response.encode() if spec.expected_response is not None else None
    sock = socket.socket(family_of(spec.address), socket.SOCK_DGRAM)
    sock.setblocking(False)
    seen = b""
    try:
        # connect(): only the endpoint's answers are accepted, and ICMP errors surface.
        sock.connect((spec.address, spec.port))
        started = time.perf_counter()
        sock.send((spec.request or "").encode())
        async with asyncio.timeout(spec.timeout):
            while True:
                data = await loop.sock_recv(sock, MAX_READ)
                if expected is None or expected in data:
                    return ok(started)
                seen = data[:60]
    except TimeoutError:
        if expected is None:
            # Silence is the success case: nothing said the port was closed.
            return ProbeResult(True, None, "")
        return fail(f"unexpected response {seen!r}" if seen else "timeout")
    except OSError as exc:
        return fail(describe(exc))
    finally:
        sock.close()
