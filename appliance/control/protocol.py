"""Wire format of the control socket: one JSON object per line, both ways.

request:  {"id": 1, "method": "lb.list", "params": {...}}
response: {"id": 1, "result": ...}  or  {"id": 1, "error": {"type", "message", "errors": [...]}}
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

DEFAULT_SOCKET = "/run/sluice/sluice.sock"
DEFAULT_DB = "/var/lib/sluice/sluice.db"
# A 10,000-service import is ~10 MB of JSON; leave room.
MAX_MESSAGE = 256 * 1024 * 1024


def socket_path(explicit: str | None = None) -> Path:
    return Path(explicit or os.environ.get("SLUICE_SOCKET") or DEFAULT_SOCKET)


def db_path(explicit: str | None = None) -> Path:
    return Path(explicit or os.environ.get("SLUICE_DB") or DEFAULT_DB)


def encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


def decode(line: bytes) -> dict[str, Any]:
    message = json.loads(line)
    if not isinstance(message, dict):
        raise ValueError("a control message is a JSON object")
    return message
