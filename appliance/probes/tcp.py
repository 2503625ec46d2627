"""TCP probe: a connection can be opened; with a request, the answer contains the expected
string."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import socket
import struct
import time
from collections.abc import Callable

from appliance.probes.base import MAX_READ, ProbeResult, ProbeSpec, describe, fail, ok

# SO_LINGER on with 0 s: close() sends RST instead of FIN. A prober that connects 10,000
# times a second would otherwise leave as many sockets in TIME_WAIT and run out of source
# ports; common L4 health checkers close the same way.
_LINGER_RST = struct.pack("ii", 1, 0)


def family_of(address: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in address else socket.AF_INET


def _expire(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_exception(TimeoutError())


def _writable(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


async def connect(sock: socket.socket, address: tuple[str, int], deadline: float) -> None:
    """Non-blocking connect finished by `deadline` (loop time); raises OSError/TimeoutError.

    Hand-rolled rather than loop.sock_connect + asyncio.timeout: at 10,000 probes/s their
    extra futures, address checks and task cancellation cost a third of the prober's CPU.
    """
    err = sock.connect_ex(address)
    if err == 0:
        return
    if err != errno.EINPROGRESS:
        raise OSError(err, os.strerror(err))
    loop = asyncio.get_running_loop()
    fd = sock.fileno()
    fut: asyncio.Future[None] = loop.create_future()
    loop.add_writer(fd, _writable, fut)
    timer = loop.call_at(deadline, _expire, fut)
    try:
        await fut
    finally:
        timer.cancel()
        loop.remove_writer(fd)
    err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    if err:
        raise OSError(err, os.strerror(err))


async def probe_tcp(spec: ProbeSpec) -> ProbeResult:
    loop = asyncio.get_running_loop()
    sock = socket.socket(family_of(spec.address), socket.SOCK_STREAM)
    sock.setblocking(False)
    started = time.perf_counter()
    deadline = loop.time() + spec.timeout
    try:
        await connect(sock, (spec.address, spec.port), deadline)
        if spec.request is None and spec.expected_response is None:
            return ok(started)
        async with asyncio.timeout_at(deadline):
            if spec.request:
                await loop.sock_sendall(sock, spec.request.encode())
            if spec.expected_response is None:
                return ok(started)
            return await _expect(loop, sock, spec.expected_response.encode(), started)
    except (OSError, TimeoutError) as exc:
        return fail(describe(exc))
    finally:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
        sock.close()


async def _expect(
    loop: asyncio.AbstractEventLoop, sock: socket.socket, expected: bytes, started: float
) -> ProbeResult:
    """Read until `expected` shows up, the peer closes, or MAX_READ bytes came."""
    data = b""
    while len(data) < MAX_READ:
        chunk = await loop.sock_recv(sock, MAX_READ - len(data))
        if not chunk:
            break
        data += chunk
        if expected in data:
            return ok(started)
    return fail(f"unexpected response {data[:60]!r}")


class TcpConnect:
    """A connect-only TCP probe driven by loop callbacks, with no task or coroutine.

    The common probe at scale is a bare connect; run as a coroutine in its own task it
    costs several loop handles and a task per probe, which at 10,000 probes/s is most of
    the prober's CPU. This does the same with one writer callback and one timer.
    """

    __slots__ = ("done", "fd", "loop", "open", "sock", "started", "timer")

    def __init__(
        self,
        spec: ProbeSpec,
        done: Callable[[ProbeResult], None],
        open_probes: set[TcpConnect],
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.done = done
        self.open = open_probes
        self.timer: asyncio.TimerHandle | None = None
        # Non-blocking from birth: one syscall fewer than setblocking(False) afterwards.
        self.sock = socket.socket(
            family_of(spec.address), socket.SOCK_STREAM | socket.SOCK_NONBLOCK
        )
        self.fd = self.sock.fileno()
        self.started = time.perf_counter()
        try:
            err = self.sock.connect_ex((spec.address, spec.port))
        except Exception:
            self.sock.close()
            raise
        if err == errno.EINPROGRESS:
            open_probes.add(self)
            self.loop.add_writer(self.fd, self._writable)
            self.timer = self.loop.call_later(spec.timeout, self._expired)
        else:
            # Finished (or failed) at once: still report from the loop, never re-entrantly.
            result = (
                ok(self.started) if err == 0 else fail(describe(OSError(err, os.strerror(err))))
            )
            self.loop.call_soon(self._finish, result)

    def _writable(self) -> None:
        err = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err == 0:
            self._finish(ok(self.started))
        else:
            self._finish(fail(describe(OSError(err, os.strerror(err)))))

    def _expired(self) -> None:
        self._finish(fail("timeout"))

    def _finish(self, result: ProbeResult) -> None:
        self.cancel()
        self.done(result)

    def cancel(self) -> None:
        """Release the socket, its writer and timer; no result is reported."""
        if self.timer is not None:
            self.timer.cancel()
            self.loop.remove_writer(self.fd)
            self.timer = None
        self.open.discard(self)
        if self.sock.fileno() >= 0:
            with contextlib.suppress(OSError):
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
            self.sock.close()
