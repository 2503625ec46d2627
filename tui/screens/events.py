"""Event log: every event the console's sources know of, newest first."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.widgets import DataTable, Label

from tui.screens.base import ConsoleScreen
from tui.widgets import sync_table


class EventsScreen(ConsoleScreen):
    MODE = "events"
    CSS_PATH = "events.tcss"

    def compose_body(self) -> ComposeResult:
        yield Label(
            "Events (config commits; health events once the daemon streams them)",
            classes="section-title",
        )
        table = DataTable(id="events", cursor_type="row")
        table.add_column("at (UTC)", key="at")
        table.add_column("kind", key="kind")
        table.add_column("event", key="text")
        yield table

    def on_mount(self) -> None:
        self.query_one("#events", DataTable).focus()

    def show_app_state(self) -> None:
        super().show_app_state()
        rows = [
            (e.key, (e.at.replace("T", " ").rstrip("Z"), e.kind, e.text))
            for e in self.console.events
        ]
        sync_table(self.query_one("#events", DataTable), rows)
