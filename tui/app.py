"""`sluice console`: the operator console, a client of the daemon's control socket.

The app owns the one connection (= one config session: the candidate lives on the daemon)
and one poll timer. Each poll asks for `status` and `config.pending`, merges the event
sources, then lets the *current* screen fetch its own data. Nothing here waits on the
daemon in a message handler: polls and actions run as workers, so a slow or absent daemon
shows "daemon not reachable" and the keys keep working.
"""

from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path
from typing import Any

from textual.app import App
from textual.binding import Binding

from appliance.control.client import (
    DEFAULT_TIMEOUT,
    AsyncControlClient,
    DaemonUnreachable,
    RemoteError,
)
from tui.events import Event, EventSource, default_sources, merge
from tui.format import pending_count, pending_lines, service_path
from tui.screens.base import ConsoleScreen
from tui.screens.confirm import CommitScreen, ConfirmScreen
from tui.screens.dashboard import DashboardScreen
from tui.screens.endpoints import EndpointsScreen
from tui.screens.events import EventsScreen
from tui.screens.help import HelpScreen
from tui.screens.history import HistoryScreen
from tui.screens.interfaces import InterfacesScreen
from tui.screens.service_form import ServiceForm
from tui.screens.services import ServicesScreen
from tui.screens.sessions import SessionsScreen

# At most one second in POLL_DUTY is spent refreshing from the daemon.
POLL_DUTY = 5


def next_poll_at(now: float, started: float, interval: float) -> float:
    """When the timer may refresh again after a refresh that ran from ``started`` to ``now``:
    quick refreshes keep the timer's pace, a slow one (a very big config) stretches it."""
    return now + max(0.0, (now - started) * POLL_DUTY - interval)


class SluiceConsole(App[int]):
    CSS_PATH = "app.tcss"
    TITLE = "Sluice console"
    # A console on a serial line: no palette pop-up, no mouse-only affordances.
    ENABLE_COMMAND_PALETTE = False
    MODES = {
        "dashboard": DashboardScreen,
        "services": ServicesScreen,
        "endpoints": EndpointsScreen,
        "sessions": SessionsScreen,
        "history": HistoryScreen,
        "events": EventsScreen,
        "interfaces": InterfacesScreen,
        "help": HelpScreen,
    }
    # Screen keys are listed in the nav bar (top line), not the footer: the footer keeps
    # its 80 columns for the current screen's actions.
    BINDINGS = [
        Binding("1", "go('dashboard')", "Dashboard", show=False),
        Binding("2", "go('services')", "Services", show=False),
        Binding("3", "go('endpoints')", "Endpoints", show=False),
        Binding("4", "go('sessions')", "Sessions", show=False),
        Binding("5", "go('history')", "History", show=False),
        Binding("6", "go('events')", "Events", show=False),
        Binding("7", "go('interfaces')", "Interfaces", show=False),
        Binding("question_mark,f1", "go('help')", "Help", show=False),
        Binding("C", "commit", "Commit"),
        Binding("U", "discard", "Discard"),
        Binding("q", "quit_console", "Quit"),
        Binding("ctrl+c", "quit_console", "Quit", show=False, priority=True),
    ]

    def __init__(
        self,
        socket: str | Path | None = None,
        *,
        poll_interval: float = 2.0,
        sources: list[EventSource] | None = None,
        read_only: bool | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        super().__init__()
        env_ro = os.environ.get("SLUICE_CONSOLE_READ_ONLY", "") not in ("", "0")
        ssh_user = os.environ.get("SLUICE_CONSOLE_USER")
        # Over SSH the daemon would see root: name the logged-in user, so the daemon records
        # them in history and enforces their role (read-only sessions refuse changes).
        identity = (
            {"user": ssh_user, "read-only": env_ro, "account": True} if ssh_user else None
        )
        self.client = AsyncControlClient(socket, timeout, identity)
        self.poll_interval = poll_interval
        self.sources = sources if sources is not None else default_sources()
        # The daemon decides read-only per session; an SSH login of a read-only user also
        # sets SLUICE_CONSOLE_READ_ONLY so the keys that edit are hidden from the start.
        self.read_only = bool(read_only) if read_only is not None else env_ro
        self.daemon_error: str | None = None
        self.status: dict[str, Any] | None = None
        self.pending: dict[str, Any] | None = None
        self.events: list[Event] = []
        self.user = ""
        self.selected_service: str | None = None  # services -> endpoints hand-over
        self._polling = False
        self._generation = 0
        self._next_poll = 0.0  # monotonic; the timer skips ticks until then

    # -- life cycle ----------------------------------------------------------------------
    def on_mount(self) -> None:
        self.switch_mode("dashboard")
        self.set_interval(self.poll_interval, self._tick)

    async def on_unmount(self) -> None:
        await self.client.close()

    # -- talking to the daemon -----------------------------------------------------------
    async def call(self, method: str, **params: Any) -> Any:
        """A daemon call that keeps the status line honest; errors still reach the caller."""
        try:
            result = await self.client.call(method, **params)
        except DaemonUnreachable as exc:
            self._set_error(str(exc))
            raise
        self._check_session()
        if self.daemon_error:
            self._set_error(None)
        return result

    def _check_session(self) -> None:
        if self.client.generation != self._generation:
            lost = self._generation and pending_count(self.pending)
            self._generation = self.client.generation
            if lost:
                # The candidate lived in the daemon session that the old connection was.
                self.notify(
                    "The connection to the daemon was re-opened: uncommitted changes are gone.",
                    severity="warning",
                    timeout=10,
                )
                self.pending = None

    def _set_error(self, error: str | None) -> None:
        self.daemon_error = error
        if isinstance(self.screen, ConsoleScreen):
            self.screen.show_app_state()

    def _tick(self) -> None:
        if time.monotonic() >= self._next_poll:
            self.poll()

    def poll(self) -> None:
        """Refresh now (after an action too); the timer's own refreshes are throttled."""
        if not self._polling:
            self._polling = True
            self.run_worker(self._poll(), group="poll", exit_on_error=False)

    async def _poll(self) -> None:
        started = time.monotonic()
        try:
            if not self.client.connected or not self.user:
                hello = await self.call("hello")
                # Over SSH the daemon sees the console's Unix user; show the login name.
                self.user = os.environ.get("SLUICE_CONSOLE_USER") or str(hello.get("user", ""))
                if hello.get("read-only"):
                    self.read_only = True
            self.status = await self.call("status")
            self.pending = await self.call("config.pending")
            found: list[Event] = []
            for source in self.sources:
                found += await source.fetch(self.client)
            self.events = merge([*found, *self.events])
            screen = self.screen
            if isinstance(screen, ConsoleScreen):
                await screen.refresh_data()
        except DaemonUnreachable:
            self.status = None
            self.user = ""
        except RemoteError as exc:
            self.notify(str(exc), severity="error")
        finally:
            self._polling = False
            # A big config makes a refresh slow (daemon and console both): keep the time
            # spent refreshing to at most 1/POLL_DUTY of the wall clock.
            self._next_poll = next_poll_at(time.monotonic(), started, self.poll_interval)
            screen = self.screen
            if isinstance(screen, ConsoleScreen):
                screen.show_app_state()
            self.refresh_bindings()

    # -- actions -------------------------------------------------------------------------
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ("commit", "discard"):
            # None: shown greyed out in the footer, so the key is still discoverable.
            return None if self.read_only or not pending_count(self.pending) else True
        return True

    def action_go(self, mode: str) -> None:
        if self.current_mode != mode:
            self.switch_mode(mode)

    def action_commit(self) -> None:
        if not pending_count(self.pending):
            self.notify("Nothing to commit.")
            return

        def done(comment: str | None) -> None:
            if comment is not None:
                self.run_worker(self._commit(comment), group="action")

        self.push_screen(CommitScreen(pending_lines(self.pending)), done)

    async def _commit(self, comment: str) -> None:
        try:
            result = await self.call("config.commit", comment=comment)
        except DaemonUnreachable as exc:
            self.notify(str(exc), severity="error")
            return
        except RemoteError as exc:
            self.notify(error_text(exc), title="Commit refused", severity="error", timeout=15)
            await self._show_in_form(exc)
            return
        self.notify(f"Committed: commit #{result.get('commit-id')}")
        self.poll()

    async def _show_in_form(self, exc: RemoteError) -> None:
        """Open the form of the first service a refused commit names, errors under fields."""
        for err in exc.errors:
            match = re.search(r"/service\[name='([^']*)'\]", str(err.get("path", "")))
            if match is None:
                continue
            try:
                doc = await self.call(
                    "config.get", path=service_path(match[1]), datastore="candidate"
                )
            except (DaemonUnreachable, RemoteError):
                continue  # deleted in the candidate: the notification says it all
            self.push_screen(ServiceForm(doc, errors=exc), lambda _: self.poll())
            return

    def action_discard(self) -> None:
        def done(yes: bool | None) -> None:
            if yes:
                self.run_worker(self._discard(), group="action")

        self.push_screen(ConfirmScreen("Discard every uncommitted change?"), done)

    async def _discard(self) -> None:
        try:
            await self.call("config.discard")
        except (DaemonUnreachable, RemoteError) as exc:
            self.notify(str(exc), severity="error")
            return
        self.notify("Uncommitted changes discarded.")
        self.poll()

    def action_quit_console(self) -> None:
        if isinstance(self.screen, ConfirmScreen):
            return  # already asking (Ctrl-C pressed twice)
        count = pending_count(self.pending)
        if not count:
            self.exit(0)
            return

        def done(yes: bool | None) -> None:
            if yes:
                self.exit(0)

        self.push_screen(
            ConfirmScreen(f"{count} uncommitted change(s) will be lost. Quit anyway?"), done
        )


def error_text(exc: RemoteError) -> str:
    """The daemon's error list as lines 'path: message' (paths shortened)."""
    lines = [str(exc)] if not exc.errors else []
    for err in exc.errors:
        path = str(err.get("path", "")).replace("/sluice:load-balancer/", "")
        lines.append(f"{path}: {err.get('message', '')}" if path else str(err.get("message")))
    return "\n".join(lines)


def run_console(socket: str | Path | None = None) -> int:
    """Entry point for `sluice console` (the CLI imports this lazily)."""
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        # Without a terminal textual would draw into a pipe and wait for keys forever.
        print("sluice console: needs a terminal (for SSH use ssh -t)", file=sys.stderr)
        return 2
    # On a serial console (vt100/vt220, linux) there is no mouse: don't send the mouse
    # tracking sequences down the line at all.
    term = os.environ.get("TERM", "")
    mouse = not (term.startswith("vt") or term in ("linux", "dumb"))
    result = SluiceConsole(socket).run(mouse=mouse)
    return int(result or 0)
