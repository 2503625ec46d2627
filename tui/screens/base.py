"""What every console screen has: the nav bar, the daemon status line and the footer."""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual.app import ComposeResult
from textual.screen import Screen
from textual.widgets import Footer

from tui.widgets import CommitBar, NavBar, StatusLine

if TYPE_CHECKING:
    from tui.app import SluiceConsole


class ConsoleScreen(Screen[None]):
    MODE = ""
    SHOW_COMMIT_BAR = False

    @property
    def console(self) -> SluiceConsole:
        return self.app  # type: ignore[return-value]

    # Actions that change the config: greyed out in the footer for a read-only session.
    EDIT_ACTIONS: frozenset[str] = frozenset()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in self.EDIT_ACTIONS and self.console.read_only:
            return None
        return True

    def compose(self) -> ComposeResult:
        yield NavBar(self.MODE, id="nav")
        yield StatusLine(id="status-line")
        yield from self.compose_body()
        if self.SHOW_COMMIT_BAR:
            yield CommitBar(id="commit-bar")
        yield Footer(compact=True)

    def compose_body(self) -> ComposeResult:
        yield from ()

    async def refresh_data(self) -> None:
        """Fetch this screen's data from the daemon (the app calls it every poll)."""

    def show_app_state(self) -> None:
        """Redraw what comes from the app's last poll (status, pending, errors)."""
        app = self.console
        alarms = (app.status or {}).get("alarms") or ()
        ha = (app.status or {}).get("ha")
        self.query_one(StatusLine).show(
            app.daemon_error, app.pending, app.user, app.read_only, alarms, ha
        )
        for bar in self.query(CommitBar):
            bar.set_pending(app.pending)

    def on_screen_resume(self) -> None:
        self.show_app_state()
        self.console.poll()
