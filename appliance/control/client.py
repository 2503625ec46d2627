"""Blocking client of the control socket (the CLI uses it; one connection = one session)."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

from appliance.control.protocol import MAX_MESSAGE, decode, encode, socket_path


class DaemonUnreachable(Exception):
    pass


class RemoteError(Exception):
    """The daemon refused a request; `errors` lists {path, message, tag}."""

    def __init__(self, error: dict[str, Any]) -> None:
        self.type = error.get("type", "Error")
        self.errors: list[dict[str, str]] = list(error.get("errors") or [])
        super().__init__(error.get("message", "request failed"))


class ControlClient:
    def __init__(self, path: str | Path | None = None, timeout: float = 120.0) -> None:
        self.path = socket_path(str(path) if path else None)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(timeout)
        try:
            self._sock.connect(str(self.path))
        except OSError as exc:
            self._sock.close()
            raise DaemonUnreachable(
                f"cannot reach the sluice daemon at {self.path}: {exc.strerror or exc}"
                " (is `sluice run` running?)"
            ) from None
        self._file = self._sock.makefile("rb")
        self._next_id = 1

    def call(self, method: str, **params: Any) -> Any:
        request_id = self._next_id
        self._next_id += 1
        self._sock.sendall(encode({"id": request_id, "method": method, "params": params}))
        line = self._file.readline(MAX_MESSAGE)
        if not line:
            raise DaemonUnreachable("the daemon closed the connection")
        reply = decode(line)
        if "error" in reply:
            raise RemoteError(reply["error"])
        return reply.get("result")

    def close(self) -> None:
        self._file.close()
        self._sock.close()

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
