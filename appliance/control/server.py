"""The asyncio side of the control socket: accept, frame, hand calls to the config worker.

Config operations run on one worker thread (they are plain Python and a 10,000-service
commit takes seconds): the event loop stays free for probes, SNMP and NETCONF.
"""

from __future__ import annotations

import asyncio
import logging
import os
import pwd
import socket
import struct
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from appliance.config import ConfigError, ConfigService
from appliance.control.api import CallContext, dispatch
from appliance.control.protocol import MAX_MESSAGE, decode, encode

log = logging.getLogger(__name__)


def _peer_user(sock: socket.socket | None) -> str:
    """The Unix user on the other end (SO_PEERCRED): history records who committed."""
    if sock is None:
        return "unknown"
    try:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        _pid, uid, _gid = struct.unpack("3i", creds)
        return pwd.getpwuid(uid).pw_name
    except (OSError, KeyError):
        return "unknown"


class ControlServer:
    def __init__(
        self,
        service: ConfigService,
        path: Path,
        worker: ThreadPoolExecutor,
        state: dict[str, Any] | None = None,
    ) -> None:
        self.service = service
        self.path = path
        self.worker = worker
        self.state = state if state is not None else {}
        self._server: asyncio.AbstractServer | None = None
        self.started = time.time()

    async def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists() or self.path.is_symlink():
            if _answers(self.path):
                raise OSError(f"another daemon is serving {self.path}")
            self.path.unlink()  # stale, left by a daemon that was killed
        old_umask = os.umask(0o177)  # socket created 0600: root only
        try:
            self._server = await asyncio.start_unix_server(
                self._serve, path=str(self.path), limit=MAX_MESSAGE
            )
        finally:
            os.umask(old_umask)
        os.chmod(self.path, 0o600)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        if self.path.exists():
            self.path.unlink()

    async def _call(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.worker, fn, *args)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        user = _peer_user(writer.get_extra_info("socket"))
        session = await self._call(self.service.open_session, user, "cli")
        ctx = CallContext(session, self.state, self.started)
        try:
            while True:
                try:
                    line = await reader.readline()
                except (asyncio.LimitOverrunError, ValueError):
                    writer.write(encode({"id": None, "error": _error("message too large")}))
                    break
                if not line:
                    break
                reply = await self._handle(ctx, line)
                # Off the loop: a 10,000-service listing is ~30 MB of JSON (~0.3 s to encode).
                writer.write(await asyncio.to_thread(encode, reply))
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            await self._call(session.close)
            writer.close()

    async def _handle(self, ctx: CallContext, line: bytes) -> dict[str, Any]:
        try:
            # An import of 10,000 services is ~10 MB: parsed off the loop too.
            request = decode(line) if len(line) < 65536 else await asyncio.to_thread(decode, line)
        except ValueError as exc:
            return {"id": None, "error": _error(f"malformed request: {exc}")}
        request_id = request.get("id")
        params = request.get("params") or {}
        if not isinstance(params, dict):
            return {"id": request_id, "error": _error("params must be an object")}
        try:
            result = await self._call(dispatch, ctx, str(request.get("method")), params)
        except ConfigError as exc:
            return {"id": request_id, "error": exc.to_dict()}
        except (KeyError, TypeError, ValueError) as exc:
            return {"id": request_id, "error": _error(f"bad parameters: {exc}")}
        except Exception as exc:  # a bug: report it, keep serving
            log.exception("control call failed", extra={"method": request.get("method")})
            return {"id": request_id, "error": _error(f"internal error: {exc}")}
        return {"id": request_id, "result": result}


def _answers(path: Path) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
        return True
    except OSError:
        return False
    finally:
        probe.close()


def _error(message: str) -> dict[str, Any]:
    return {
        "type": "RequestError",
        "message": message,
        "errors": [{"path": "", "message": message}],
    }
