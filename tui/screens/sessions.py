"""Sessions (conntrack entries), filtered by service, client and endpoint.

The daemon's `ct.list` is being built elsewhere; until a daemon has it, this screen says
"not available" rather than failing.
"""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.widgets import DataTable, Input, Label

from appliance.control.client import DaemonUnreachable, RemoteError, is_unknown_method
from tui.format import DASH, human
from tui.screens.base import ConsoleScreen
from tui.widgets import sync_table

MAX_ROWS = 500  # a screen of sessions is for looking, not for dumping a 1M-entry table

COLUMNS = (
    ("service", "service"), ("client", "client"), ("endpoint", "endpoint"),
    ("proto", "protocol"), ("state", "state"), ("pkts", "packets"), ("bytes", "bytes"),
)  # fmt: skip


def _addr(entry: dict[str, Any], side: str) -> str:
    if isinstance(entry.get(side), str):
        return entry[side]
    address, port = entry.get(f"{side}-address"), entry.get(f"{side}-port")
    if address is None:
        return DASH
    return f"[{address}]:{port}" if ":" in str(address) else f"{address}:{port}"


def _total(value: Any) -> int | None:
    """Counters come as a number or as [original, reply] (the datapath's conntrack rows)."""
    if isinstance(value, list):
        return sum(v for v in value if isinstance(v, int))
    return value if isinstance(value, int) else None


class SessionsScreen(ConsoleScreen):
    MODE = "sessions"
    CSS_PATH = "sessions.tcss"
    BINDINGS = [
        Binding("slash", "filter", "Filter"),
        Binding("escape", "focus_table", "Table", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.available: bool | None = None

    def compose_body(self) -> ComposeResult:
        with Horizontal(classes="filter-row"):
            yield Label("service")
            yield Input(id="ct-service", placeholder="any")
            yield Label(" client")
            yield Input(id="ct-client", placeholder="any")
            yield Label(" endpoint")
            yield Input(id="ct-endpoint", placeholder="any")
        table = DataTable(id="sessions", cursor_type="row")
        for label, key in COLUMNS:
            table.add_column(label, key=key)
        yield table
        yield Label("", id="ct-note", classes="empty-note")

    def on_mount(self) -> None:
        self.query_one("#sessions", DataTable).focus()

    def params(self) -> dict[str, str | None]:
        return {
            name: (self.query_one(f"#ct-{name}", Input).value.strip() or None)
            for name in ("service", "client", "endpoint")
        }

    async def refresh_data(self) -> None:
        note = self.query_one("#ct-note", Label)
        try:
            # One more than shown: enough to say "more", and the daemon stops its walk there.
            entries = await self.console.call("ct.list", limit=MAX_ROWS + 1, **self.params())
        except DaemonUnreachable:
            return
        except RemoteError as exc:
            if is_unknown_method(exc):
                self.available = False
                note.update("Sessions: not available (this daemon has no ct.list yet).")
            else:
                note.update(f"Sessions: {exc}")
            note.display = True
            sync_table(self.query_one("#sessions", DataTable), [])
            return
        self.available = True
        if isinstance(entries, dict):  # tolerate {"sessions": [...], "total": n}
            entries = entries.get("sessions") or entries.get("entries") or []
        rows = []
        for i, e in enumerate(entries[:MAX_ROWS]):
            rows.append(
                (
                    str(e.get("id", i)),
                    (
                        str(e.get("service", DASH)),
                        _addr(e, "client"),
                        _addr(e, "endpoint"),
                        str(e.get("protocol", DASH)),
                        str(e.get("state", DASH)),
                        human(_total(e.get("packets"))),
                        human(_total(e.get("bytes"))),
                    ),
                )
            )
        sync_table(self.query_one("#sessions", DataTable), rows)
        more = f" (the first {MAX_ROWS}; filter to see others)" if len(entries) > MAX_ROWS else ""
        note.update(f"{len(rows)} session(s){more}" if rows or more else "No sessions.")
        note.display = True

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.action_focus_table()
        self.console.poll()

    def action_filter(self) -> None:
        self.query_one("#ct-service", Input).focus()

    def action_focus_table(self) -> None:
        self.query_one("#sessions", DataTable).focus()
