"""The one client of the daemon's control socket, for the CLI and the console.

`AsyncControlClient` never blocks its event loop: every call has a timeout, replies are
matched to requests by id (a reply that arrives after its call timed out is dropped, so the
stream never goes out of step), and a lost connection is re-opened on the next call.
`ControlClient` is the same client for blocking callers (the CLI, scripts, tests): it runs
an `AsyncControlClient` on a private event loop in its own thread, so it also works from
code that already runs an event loop.

One connection is one config session on the daemon: the candidate (uncommitted edits) lives
there. A reconnect therefore starts a *new* session with an empty candidate; `generation`
counts connections so the console can tell the operator their edits are gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from appliance.control.protocol import MAX_MESSAGE, decode, encode, socket_path

T = TypeVar("T")


class DaemonUnreachable(Exception):
    pass


class RemoteError(Exception):
    """The daemon refused a request; `errors` lists {path, message, tag}."""

    def __init__(self, error: dict[str, Any]) -> None:
        self.type = error.get("type", "Error")
        self.errors: list[dict[str, str]] = list(error.get("errors") or [])
        super().__init__(error.get("message", "request failed"))


# Reads must come back quickly or the console says so; commits of a big config take longer.
DEFAULT_TIMEOUT = 5.0
SLOW_METHODS = {"config.commit": 120.0, "config.rollback": 120.0, "config.validate": 60.0}
CONNECT_TIMEOUT = 2.0


def is_unknown_method(exc: RemoteError) -> bool:
    """The daemon has no such method (an older daemon, or a feature not built yet)."""
    return any(e.get("path") == "method" for e in exc.errors) or "unknown method" in str(exc)


class AsyncControlClient:
    def __init__(
        self,
        path: str | Path | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        identity: dict[str, Any] | None = None,
    ) -> None:
        self.path = socket_path(str(path) if path else None)
        self.timeout = timeout
        # Who the console acts for (an SSH login): told to every new daemon session first.
        self.identity = identity
        self._identified = 0  # the connection generation that was identified
        self.generation = 0  # incremented on each new connection (= new daemon session)
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._ids = itertools.count(1)
        self._connect_lock = asyncio.Lock()

    @property
    def connected(self) -> bool:
        return self._writer is not None and not self._writer.is_closing()

    async def connect(self) -> None:
        async with self._connect_lock:
            if self.connected:
                return
            try:
                self._reader, self._writer = await asyncio.wait_for(
                    asyncio.open_unix_connection(str(self.path), limit=MAX_MESSAGE),
                    CONNECT_TIMEOUT,
                )
            except (OSError, TimeoutError) as exc:
                raise DaemonUnreachable(
                    f"daemon not reachable at {self.path}: "
                    f"{getattr(exc, 'strerror', None) or exc or 'timeout'}"
                ) from None
            self.generation += 1
            self._reader_task = asyncio.create_task(self._read_replies(self._reader))

    async def _read_replies(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                line = await reader.readline()
                if not line:
                    break
                try:
                    reply = decode(line)
                except ValueError:
                    continue
                future = self._pending.pop(reply.get("id"), None)  # type: ignore[arg-type]
                if future is not None and not future.done():
                    future.set_result(reply)
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            # A reader of an older connection must not drop the one that replaced it.
            if reader is self._reader:
                self._drop_connection("the daemon closed the connection")

    def _drop_connection(self, why: str) -> None:
        if self._writer is not None:
            self._writer.close()
        self._writer = self._reader = None
        pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(DaemonUnreachable(why))

    async def call(self, method: str, timeout: float | None = None, **params: Any) -> Any:
        """One request; RemoteError if the daemon refused it, DaemonUnreachable otherwise."""
        if not self.connected:
            await self.connect()
        if self.identity and self._identified != self.generation:
            self._identified = self.generation
            await self.call("session.identify", **self.identity)
        assert self._writer is not None
        request_id = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        try:
            self._writer.write(encode({"id": request_id, "method": method, "params": params}))
            await self._writer.drain()
        except (ConnectionError, RuntimeError) as exc:
            self._pending.pop(request_id, None)
            self._drop_connection(str(exc))
            raise DaemonUnreachable(f"daemon not reachable at {self.path}: {exc}") from None
        limit = timeout or max(SLOW_METHODS.get(method, 0.0), self.timeout)
        try:
            reply = await asyncio.wait_for(future, limit)
        except TimeoutError:
            raise DaemonUnreachable(
                f"daemon did not answer {method} within {limit:g}s (busy or hung)"
            ) from None
        finally:
            # Answered, timed out or cancelled: a late reply finds no one and is dropped.
            self._pending.pop(request_id, None)
        if "error" in reply:
            raise RemoteError(reply["error"])
        return reply.get("result")

    async def close(self) -> None:
        task, self._reader_task = self._reader_task, None
        self._drop_connection("closed")
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


class ControlClient:
    """A blocking control-socket client: one connection (= one daemon config session) for
    its lifetime. Connects at construction, so an absent daemon is reported at once."""

    def __init__(self, path: str | Path | None = None, timeout: float = 120.0) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="control-client", daemon=True
        )
        self._thread.start()
        self._client = AsyncControlClient(path, timeout)
        self.path = self._client.path
        try:
            self._run(self._client.connect())
        except DaemonUnreachable as exc:
            self._stop_loop()
            reason = str(exc).split(": ", 1)[-1]
            raise DaemonUnreachable(
                f"cannot reach the sluice daemon at {self.path}: {reason}"
                " (is `sluice run` running?)"
            ) from None
        except BaseException:
            self._stop_loop()
            raise

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def call(self, method: str, **params: Any) -> Any:
        """One request; RemoteError if the daemon refused it, DaemonUnreachable otherwise."""
        return self._run(self._client.call(method, **params))

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def close(self) -> None:
        if self._loop.is_closed():
            return
        with contextlib.suppress(Exception):
            self._run(self._client.close())
        self._stop_loop()

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
