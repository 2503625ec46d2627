"""How the CLI prints: readable tables by default, JSON with -o json, errors on stderr."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any

from appliance.control.client import RemoteError

EXIT_USAGE = 2  # bad input (flags, files, values): the field is named on stderr


def print_json(data: Any) -> None:
    """Indented for a person at a terminal; compact (and several times faster: the C
    encoder) when piped to a program, which is where 10,000-service lists go."""
    if sys.stdout.isatty():
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
    else:
        sys.stdout.write(json.dumps(data, separators=(",", ":")) + "\n")


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        for i, value in enumerate(row):
            widths[i] = max(widths[i], len(value))
    line = "  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True))
    out = [line.rstrip()]
    for row in cells:
        out.append("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
    sys.stdout.write("\n".join(out) + "\n")


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, tuple)):
        return ",".join(_cell(v) for v in value) or "-"
    return str(value)


def fail(message: str, code: int = EXIT_USAGE) -> int:
    sys.stderr.write(f"error: {message}\n")
    return code


def report_remote_error(exc: RemoteError, flag_of: dict[str, str] | None = None) -> int:
    """Print each error with its field (and the CLI flag that set it, when known)."""
    errors = exc.errors or [{"path": "", "message": str(exc)}]
    for err in errors:
        path = err.get("path", "")
        leaf = path.rstrip("]").rsplit("/", 1)[-1].split("[", 1)[0] if path else ""
        flag = (flag_of or {}).get(leaf)
        where = f"{flag} ({path})" if flag else path
        sys.stderr.write(f"error: {where + ': ' if where else ''}{err.get('message', exc)}\n")
    return EXIT_USAGE


def warn_datapath_errors(result: dict[str, Any]) -> None:
    """A commit the datapath could not fully program: say so (it keeps retrying)."""
    for name, error in (result.get("datapath-errors") or {}).items():
        print(f"warning: service {name} is committed but not programmed in the datapath "
              f"(retrying): {error}", file=sys.stderr)
