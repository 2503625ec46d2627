"""snmpEngineBoots, persisted: one more on every engine start (daemon start or reconfigure).

USM replay protection (RFC 3414 3.2 step 7) rests on (snmpEngineBoots, snmpEngineTime)
never going back: an engine that restarts at boots 1 with time 0 accepts every message
recorded during an earlier life of the same engine ID. So each engine the agent builds
takes the next value from a file in the daemon's state directory, written (atomically,
fsynced) before the engine serves anything.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

log = logging.getLogger(__name__)

# RFC 3414 2.2.2: at this value the engine stays, and needs a new engine ID (or new keys).
MAX_BOOTS = 2147483647
FILE_NAME = "snmp-engine-boots"


class EngineBoots:
    """The persisted counter. ``state_dir`` None keeps it in memory only (tests, bench)."""

    def __init__(self, state_dir: Path | None) -> None:
        self.path = state_dir / FILE_NAME if state_dir is not None else None
        self._lock = threading.Lock()
        self._last = 0

    def _read(self) -> int:
        if self.path is None:
            return self._last
        try:
            return max(int(self.path.read_text().strip()), 0)
        except FileNotFoundError:
            return 0
        except (OSError, ValueError) as exc:
            # Unreadable: never go back below what this process already handed out.
            log.error(
                "snmp: engine boots unreadable", extra={"path": str(self.path), "error": str(exc)}
            )
            return self._last

    def next(self) -> int:
        """The value for an engine starting now (blocking file I/O: call off the loop)."""
        with self._lock:
            value = min(max(self._read(), self._last) + 1, MAX_BOOTS)
            if value == MAX_BOOTS:
                log.error("snmp: snmpEngineBoots at its maximum: configure a new engine-id")
            self._last = value
            if self.path is not None:
                self._write(value)
            return value

    def _write(self, value: int) -> None:
        assert self.path is not None
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, f"{value}\n".encode())
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self.path)
        except OSError as exc:
            # The engine still starts (with a value above every earlier one in this
            # process); the next daemon start may repeat values, so say so loudly.
            log.error(
                "snmp: engine boots not persisted",
                extra={"path": str(self.path), "error": str(exc)},
            )
