"""Endpoints of one service: health, last error, RTT, and admin enable/disable/drain.

Admin changes go into the session's candidate (config.edit), like every other edit, so
they show in the commit bar and are committed (C) or discarded (U) together.
"""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Label

from appliance.control.client import DaemonUnreachable, RemoteError
from tui.format import DASH, endpoint_path
from tui.screens.base import ConsoleScreen
from tui.widgets import selected_key, sync_table


def _key(ep: dict[str, Any]) -> str:
    return f"{ep['address']}|{ep['port']}"


class EndpointsScreen(ConsoleScreen):
    MODE = "endpoints"
    EDIT_ACTIONS = frozenset({"admin"})
    CSS_PATH = "endpoints.tcss"
    SHOW_COMMIT_BAR = True
    BINDINGS = [
        Binding("left_square_bracket", "cycle(-1)", "Prev svc"),
        Binding("right_square_bracket", "cycle(1)", "Next svc"),
        Binding("n", "admin('enabled')", "Enable"),
        Binding("o", "admin('disabled')", "Disable"),
        Binding("r", "admin('drain')", "Drain"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.services: list[str] = []
        self.rows: list[dict[str, Any]] = []

    def compose_body(self) -> ComposeResult:
        yield Label("", id="ep-title", classes="section-title")
        table = DataTable(id="endpoints", cursor_type="row")
        for label, key in (
            ("address", "address"), ("port", "port"), ("wt", "weight"), ("admin", "admin"),
            ("health", "health"), ("rtt", "rtt"), ("last error", "error"),
        ):  # fmt: skip
            table.add_column(label, key=key)
        yield table
        yield Label("", id="ep-note", classes="empty-note")

    def on_mount(self) -> None:
        self.query_one("#endpoints", DataTable).focus()

    async def refresh_data(self) -> None:
        app = self.console
        try:
            services = await app.call("lb.list", brief=True)
            self.services = sorted(s["name"] for s in services)
            if app.selected_service not in self.services:
                app.selected_service = self.services[0] if self.services else None
            self.rows = (
                await app.call("ep.list", service=app.selected_service)
                if app.selected_service
                else []
            )
        except DaemonUnreachable:
            return
        except RemoteError as exc:  # the service went away between the two calls
            self.rows = []
            self.notify(str(exc), severity="warning")
        self.show_rows()

    def show_app_state(self) -> None:
        super().show_app_state()
        self.show_rows()

    def show_rows(self) -> None:
        name = self.console.selected_service
        pending = self._pending_admin(name)
        position = (
            f" ({self.services.index(name) + 1}/{len(self.services)}, [ ] to switch)"
            if name in self.services
            else ""
        )
        self.query_one("#ep-title", Label).update(
            f"Endpoints of {name}{position}" if name else "Endpoints: no service"
        )
        rows = []
        for ep in self.rows:
            st = ep.get("state") or {}
            admin = ep.get("admin-state", "enabled")
            staged = pending.get(_key(ep))
            if staged and staged != admin:
                admin = f"{admin}→{staged}"
            rtt = st.get("rtt-us")
            rows.append(
                (
                    _key(ep),
                    (
                        ep["address"],
                        ep["port"],
                        ep.get("weight", 1),
                        admin,
                        st.get("health", DASH),
                        f"{rtt / 1000:.1f}ms" if isinstance(rtt, int | float) else DASH,
                        st.get("last-error") or DASH,
                    ),
                )
            )
        sync_table(self.query_one("#endpoints", DataTable), rows)
        note = self.query_one("#ep-note", Label)
        note.update("No endpoints." if name else "No services: add one on screen 2.")
        note.display = not rows

    def _pending_admin(self, name: str | None) -> dict[str, str]:
        """Admin states staged in the candidate for this service's endpoints."""
        change = ((self.console.pending or {}).get("services") or {}).get(name or "") or {}
        new = change.get("new") or {}
        return {_key(e): e.get("admin-state", "enabled") for e in new.get("endpoint", [])}

    def action_cycle(self, step: int) -> None:
        if not self.services:
            return
        app = self.console
        current = (
            self.services.index(app.selected_service)
            if app.selected_service in (self.services)
            else 0
        )
        app.selected_service = self.services[(current + step) % len(self.services)]
        self.rows = []
        self.show_rows()
        app.poll()

    def action_admin(self, state: str) -> None:
        app = self.console
        key = selected_key(self.query_one("#endpoints", DataTable))
        if key is None or app.selected_service is None:
            return
        if app.read_only:
            self.notify("This console session is read-only.", severity="warning")
            return
        address, port = key.split("|")
        path = endpoint_path(app.selected_service, address, port)
        self.run_worker(self._set_admin(path, state, address, port), group="action")

    async def _set_admin(self, path: str, state: str, address: str, port: str) -> None:
        try:
            await self.console.call(
                "config.edit",
                changes=[{"op": "merge", "path": path, "value": {"admin-state": state}}],
            )
        except (DaemonUnreachable, RemoteError) as exc:
            self.notify(str(exc), severity="error")
            return
        self.notify(f"{address}:{port} → {state} staged: C to commit, U to discard.")
        self.console.poll()
