"""Run asyncio code inside a netkit namespace, in-process: a thread that setns()es into it.

A network namespace is per thread on Linux and a socket belongs to the namespace it was
created in, so an event loop running on a thread that entered the namespace opens every
socket (probes' raw sockets too) there, while the test itself stays in the root namespace
and can inspect the prober's state directly. No subprocess, no IPC.

    with NsLoop(host) as ns:
        result = ns.run(runner.run(spec))
"""

from __future__ import annotations

import asyncio
import ctypes
import functools
import os
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")
CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def enter_netns(ns: str) -> None:
    """Move the calling thread into the named namespace (``ip netns`` bind mount)."""
    fd = os.open(f"/run/netns/{ns}", os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns {ns}: {os.strerror(err)}")
    finally:
        os.close(fd)


class NsLoop:
    """An event loop on its own thread inside a namespace; `run` submits coroutines to it."""

    def __init__(self, host: Any) -> None:
        self.ns: str = host.ns
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name=f"nsloop-{self.ns}", daemon=True)

    def _main(self) -> None:
        try:
            enter_netns(self.ns)
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(self._ready.set)
        self.loop.run_forever()
        # Finish whatever is still pending (cancelled tasks) and close, on this thread.
        pending = asyncio.all_tasks(self.loop)
        for task in pending:
            task.cancel()
        self.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        self.loop.close()

    def __enter__(self) -> NsLoop:
        self._thread.start()
        if not self._ready.wait(10):
            raise TimeoutError("namespace loop did not start")
        if self._error is not None:
            raise self._error
        return self

    def __exit__(self, *_: object) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        """Run `coro` on the namespace's loop and return its result (bounded by timeout)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call(self, fn: Callable[[], T], timeout: float = 10.0) -> T:
        """Call a plain function on the loop thread (for non-thread-safe objects)."""

        async def wrapper() -> T:
            return fn()

        return self.run(wrapper(), timeout)


async def wait_until(predicate: Callable[[], bool], timeout: float, poll: float = 0.005) -> float:
    """Poll `predicate` on the running loop until true; return the seconds it took.

    TimeoutError after `timeout` seconds: a deadline, never a fixed sleep.
    """
    loop = asyncio.get_running_loop()
    start = loop.time()
    while not predicate():
        if loop.time() - start > timeout:
            raise TimeoutError(f"condition not met within {timeout} s")
        await asyncio.sleep(poll)
    return loop.time() - start


def async_test(fn: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run an async test function on a fresh loop (no pytest-asyncio here), bounded to 60 s."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        asyncio.run(asyncio.wait_for(fn(*args, **kwargs), 60))

    return wrapper
