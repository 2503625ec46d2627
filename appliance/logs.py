"""Logging set up once for every Sluice process: one line per event, key=value fields.

Structured so that journald, a serial console and a log shipper can all read it:
`ts=... level=... logger=... msg="..." key=value ...`. Extra fields come from the
`extra=` argument of the logging call.
"""

from __future__ import annotations

import logging
import os
import sys
import time

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


def _quote(value: object) -> str:
    text = str(value)
    if text == "" or any(c in text for c in ' "=\n\t'):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    return text


class KeyValueFormatter(logging.Formatter):
    """Formats a record as `ts=… level=… logger=… msg=… k=v…` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        parts = [
            f"ts={ts}.{int(record.msecs):03d}Z",
            f"level={record.levelname.lower()}",
            f"logger={record.name}",
            f"msg={_quote(record.getMessage())}",
        ]
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                parts.append(f"{key}={_quote(value)}")
        if record.exc_info:
            parts.append(f"exc={_quote(self.formatException(record.exc_info))}")
        return " ".join(parts)


def setup_logging(level: str | None = None) -> None:
    """Configure the root logger once; level from the argument, $SLUICE_LOG_LEVEL or INFO."""
    root = logging.getLogger()
    if getattr(root, "_sluice_configured", False):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(KeyValueFormatter())
    root.handlers[:] = [handler]
    root.setLevel((level or os.environ.get("SLUICE_LOG_LEVEL") or "INFO").upper())
    root._sluice_configured = True  # type: ignore[attr-defined]
