"""keepalived's `vrrp_notify_fifo`: one line per role change, read on the "ha-fifo" thread.

Lines look like `INSTANCE "inst0" MASTER 150` (also GROUP lines, which are ignored). The
FIFO is opened read-write, so a keepalived restart or reload (which closes and reopens its
end) is never an end of file for the reader.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import select
import stat
import threading
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

LINE = re.compile(r'^INSTANCE "(?P<name>[^"]+)" (?P<state>[A-Z_]+) (?P<prio>\d+)$')
ROLES = {"MASTER": "master", "BACKUP": "backup", "FAULT": "fault", "STOP": "stopped",
         "DELETED": "stopped"}  # fmt: skip
MAX_LINE = 4096

OnRole = Callable[[str, str], None]  # (instance, role)


def parse(line: str) -> tuple[str, str] | None:
    """(instance, role) of an INSTANCE line; None for any other line."""
    m = LINE.match(line.strip())
    if m is None:
        return None
    role = ROLES.get(m["state"])
    return (m["name"], role) if role else None


def make_fifo(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        if not stat.S_ISFIFO(path.stat().st_mode):
            path.unlink()
    if not path.exists():
        os.mkfifo(path, 0o600)


class NotifyFifo:
    def __init__(self, path: Path, on_role: OnRole) -> None:
        self.path = path
        self.on_role = on_role
        self._fd: int | None = None
        self._wake_r, self._wake_w = os.pipe()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        make_fifo(self.path)
        self._fd = os.open(self.path, os.O_RDWR | os.O_NONBLOCK)
        self._thread = threading.Thread(target=self._read, name="ha-fifo", daemon=True)
        self._thread.start()

    def close(self) -> None:
        os.write(self._wake_w, b"x")
        if self._thread is not None:
            self._thread.join(5)
        for fd in (self._fd, self._wake_r, self._wake_w):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._fd = None

    def _read(self) -> None:
        assert self._fd is not None
        buf = b""
        while True:
            ready, _, _ = select.select([self._fd, self._wake_r], [], [])
            if self._wake_r in ready:
                return
            try:
                chunk = os.read(self._fd, 65536)
            except BlockingIOError:
                continue
            buf += chunk
            *lines, buf = buf.split(b"\n")
            if len(buf) > MAX_LINE:
                buf = b""
            for raw in lines:
                parsed = parse(raw.decode(errors="replace"))
                if parsed is None:
                    continue
                try:
                    self.on_role(*parsed)
                except Exception:
                    log.exception("ha role change failed", extra={"line": raw[:200]})
