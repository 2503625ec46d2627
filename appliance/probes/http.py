"""HTTP and HTTPS probes: a small HTTP/1.1 client over asyncio streams.

Success: the status is the expected one and, when expected-response is set, the body (the
first MAX_READ bytes of it) contains that string. HTTPS verifies the server's chain against
ca-bundle (or the system store) and may present a client certificate. The host name is not
checked: endpoints are configured by address and the model has no server-name leaf, so the
CA is what pins the trust.
"""

from __future__ import annotations

import asyncio
import functools
import ssl
import time

from appliance.probes.base import MAX_READ, ProbeResult, ProbeSpec, describe, fail, ok

USER_AGENT = "sluice-probe/1"
MAX_HEADER_LINES = 100


@functools.lru_cache(maxsize=256)
def tls_context(
    ca_bundle: str | None, client_certificate: str | None, client_key: str | None
) -> ssl.SSLContext:
    """One context per distinct TLS setting, built once: loading a CA file per probe is
    expensive. Cached by path, so a changed file needs `tls_context.cache_clear()`."""
    ctx = ssl.create_default_context(cafile=ca_bundle)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_REQUIRED
    if client_certificate:
        ctx.load_cert_chain(client_certificate, client_key)
    return ctx


def build_request(spec: ProbeSpec) -> bytes:
    host = f"[{spec.address}]" if ":" in spec.address else spec.address
    default_port = 443 if spec.type == "https" else 80
    if spec.port != default_port:
        host = f"{host}:{spec.port}"
    body = (spec.request or "").encode() if spec.http_method == "POST" else b""
    lines = [
        f"{spec.http_method} {spec.http_path} HTTP/1.1",
        f"Host: {host}",
        f"User-Agent: {USER_AGENT}",
        "Accept: */*",
        "Connection: close",
    ]
    if spec.http_method == "POST":
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii") + body


def parse_status(line: bytes) -> int:
    """The code of an HTTP status line; ValueError if it is not one."""
    if not line:
        raise ValueError("connection closed before the status line")
    parts = line.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or len(parts[1]) != 3:
        raise ValueError(f"bad status line {line[:60]!r}")
    return int(parts[1])


async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
    """Up to MAX_READ bytes of the body: Content-Length, chunked, or until close."""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = b""
        while len(body) < MAX_READ:
            size_line = await reader.readline()
            size = int(size_line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                break
            body += await reader.readexactly(min(size, MAX_READ - len(body)))
            if len(body) < MAX_READ:
                await reader.readline()  # the CRLF after each chunk
        return body
    if "content-length" in headers:
        length = min(int(headers["content-length"]), MAX_READ)
        return await reader.readexactly(length)
    return await reader.read(MAX_READ)


async def probe_http(spec: ProbeSpec) -> ProbeResult:
    tls = None
    if spec.type == "https":
        try:
            tls = tls_context(spec.ca_bundle, spec.client_certificate, spec.client_key)
        except (OSError, ssl.SSLError) as exc:
            return fail(f"tls setup: {describe(exc)}")
    started = time.perf_counter()
    writer = None
    try:
        async with asyncio.timeout(spec.timeout):
            reader, writer = await asyncio.open_connection(
                spec.address, spec.port, ssl=tls, limit=MAX_READ
            )
            writer.write(build_request(spec))
            await writer.drain()
            status = parse_status(await reader.readline())
            headers: dict[str, str] = {}
            for _ in range(MAX_HEADER_LINES):
                line = await reader.readline()
                if line in (b"\r\n", b"\n", b""):
                    break
                name, _, value = line.decode("latin-1").partition(":")
                headers[name.strip().lower()] = value.strip()
            if status != spec.expected_status:
                return fail(f"status {status}, expected {spec.expected_status}")
            if spec.expected_response is None or spec.http_method == "HEAD":
                return ok(started)
            body = await _read_body(reader, headers)
            if spec.expected_response.encode() not in body:
                return fail(f"body does not contain {spec.expected_response[:60]!r}")
            return ok(started)
    except ssl.SSLCertVerificationError as exc:
        return fail(f"certificate: {exc.verify_message}")
    except (OSError, TimeoutError, ValueError, asyncio.IncompleteReadError) as exc:
        return fail(describe(exc))
    finally:
        if writer is not None:
            writer.transport.abort()  # no graceful TLS close-notify dance: the probe is over
