"""Config history: commits, the diff of the highlighted one, and rollback to it."""

from __future__ import annotations

import functools
from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.widgets import DataTable, Static

from appliance.control.client import DaemonUnreachable, RemoteError
from tui.format import describe, field_changes, summary_text
from tui.screens.base import ConsoleScreen
from tui.screens.confirm import ConfirmScreen
from tui.widgets import selected_key, sync_table


def commit_diff_text(commit: dict[str, Any]) -> str:
    """The show-commit answer as lines an operator reads: one per changed item and leaf."""
    head = (
        f"commit #{commit.get('id')} at {commit.get('at')} by {commit.get('user')}"
        f" via {commit.get('interface')}"
    )
    if commit.get("comment"):
        head += f" — {commit['comment']}"
    lines = [head]
    for change in commit.get("changes", []):
        kind, name, old, new = change["kind"], change["name"], change["old"], change["new"]
        if old is None:
            lines.append(f"+ {kind} {name}")
            lines += [f"    {line}" for line in describe(new)]
        elif new is None:
            lines.append(f"- {kind} {name}")
        else:
            lines.append(f"~ {kind} {name}")
            lines += [f"    {c}" for c in field_changes(old, new)]
    return "\n".join(lines)


class HistoryScreen(ConsoleScreen):
    MODE = "history"
    EDIT_ACTIONS = frozenset({"rollback"})
    CSS_PATH = "history.tcss"
    BINDINGS = [
        Binding("r", "rollback", "Rollback to"),
        Binding("tab", "toggle_focus", "Diff/list"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.shown: str | None = None

    def compose_body(self) -> ComposeResult:
        table = DataTable(id="history", cursor_type="row")
        for label, key in (
            ("#", "id"), ("at (UTC)", "at"), ("user", "user"), ("changes", "summary"),
            ("comment", "comment"),
        ):  # fmt: skip
            table.add_column(label, key=key)
        yield table
        with VerticalScroll(id="diff-pane"):
            yield Static("", id="diff")

    def on_mount(self) -> None:
        self.query_one("#history", DataTable).focus()

    async def refresh_data(self) -> None:
        try:
            history = await self.console.call("config.history", limit=100)
        except DaemonUnreachable:
            return
        rows = [
            (
                str(c["id"]),
                (
                    c["id"],
                    str(c.get("at", "")).replace("T", " ").rstrip("Z"),
                    c.get("user", ""),
                    summary_text(c.get("summary"))[:30],
                    c.get("comment", "")[:20],
                ),
            )
            for c in history
        ]
        sync_table(self.query_one("#history", DataTable), rows)
        await self.show_diff(selected_key(self.query_one("#history", DataTable)))

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        key = event.row_key.value if event.row_key else None
        # A callable, not a coroutine: exclusive may cancel it before it starts.
        self.run_worker(functools.partial(self.show_diff, key), group="diff", exclusive=True)

    async def show_diff(self, key: str | None) -> None:
        if key is None or key == self.shown:
            return
        try:
            commit = await self.console.call("config.show-commit", id=int(key))
        except (DaemonUnreachable, RemoteError) as exc:
            self.query_one("#diff", Static).update(str(exc))
            return
        self.shown = key
        self.query_one("#diff", Static).update(commit_diff_text(commit))

    def action_toggle_focus(self) -> None:
        table = self.query_one("#history", DataTable)
        (self.query_one("#diff-pane") if table.has_focus else table).focus()

    def action_rollback(self) -> None:
        key = selected_key(self.query_one("#history", DataTable))
        app = self.console
        if key is None:
            return
        if app.read_only:
            self.notify("This console session is read-only.", severity="warning")
            return

        def done(yes: bool | None) -> None:
            if yes:
                self.run_worker(self._rollback(int(key)), group="action")

        self.app.push_screen(
            ConfirmScreen(
                f"Roll back to commit #{key}?",
                f"Running becomes what it was right after commit #{key}; this is a new "
                "commit, and history keeps everything.",
            ),
            done,
        )

    async def _rollback(self, commit_id: int) -> None:
        try:
            result = await self.console.call("config.rollback", id=commit_id)
        except (DaemonUnreachable, RemoteError) as exc:
            self.notify(str(exc), title="Rollback refused", severity="error", timeout=10)
            return
        self.notify(f"Rolled back to #{commit_id}: new commit #{result.get('commit-id')}.")
        self.console.poll()
