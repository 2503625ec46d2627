"""Services: the candidate's services (running plus this session's edits), with a filter."""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.widgets import DataTable, Input, Label

from appliance.control.client import DaemonUnreachable, RemoteError
from tui.format import DASH, endpoint_count, endpoint_health, port_text, service_path
from tui.screens.base import ConsoleScreen
from tui.screens.confirm import ConfirmScreen
from tui.screens.service_form import ServiceForm
from tui.widgets import selected_key, sync_table

# Marks of the pending column: what a commit would do to the row.
MARK = {"added": "+", "changed": "~", "removed": "-", None: " "}


def candidate_services(
    running: list[dict[str, Any]], pending: dict[str, Any] | None
) -> list[tuple[dict[str, Any], str | None]]:
    """Running services overlaid with the pending changes: (service, change kind)."""
    changes = (pending or {}).get("services") or {}
    out: list[tuple[dict[str, Any], str | None]] = []
    seen = set()
    for svc in running:
        name = svc["name"]
        seen.add(name)
        change = changes.get(name)
        if change is None:
            out.append((svc, None))
        elif change.get("new") is None:
            out.append((svc, "removed"))
        else:
            # Explicit values from the candidate; keep running's operational state.
            out.append(({**change["new"], "state": svc.get("state")}, "changed"))
    for name, change in sorted(changes.items()):
        if name not in seen and change.get("new") is not None:
            out.append((change["new"], "added"))
    return out


def matches(svc: dict[str, Any], text: str) -> bool:
    if not text:
        return True
    hay = (
        " ".join(str(svc.get(k, "")) for k in ("name", "vip", "protocol", "mode", "algorithm"))
        + f" {port_text(svc)} {svc.get('description', '')}"
    )
    return all(word in hay.lower() for word in text.lower().split())


class ServicesScreen(ConsoleScreen):
    MODE = "services"
    EDIT_ACTIONS = frozenset({"add", "edit", "delete"})
    CSS_PATH = "services.tcss"
    SHOW_COMMIT_BAR = True
    BINDINGS = [
        Binding("slash", "filter", "Filter"),
        Binding("a", "add", "Add"),
        Binding("enter", "edit", "Edit", priority=True),
        Binding("x,delete", "delete", "Delete"),
        Binding("e", "endpoints", "Endpoints"),
        Binding("escape", "focus_table", "Table", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.running: list[dict[str, Any]] = []

    def compose_body(self) -> ComposeResult:
        with Horizontal(classes="filter-row"):
            yield Label("Filter /")
            yield Input(placeholder="name, vip, port… (Enter/Esc: back to the list)", id="filter")
        table = DataTable(id="services", cursor_type="row")
        for label, key in (
            (" ", "chg"), ("name", "name"), ("vip", "vip"), ("proto", "proto"),
            ("port", "port"), ("mode", "mode"), ("algorithm", "algo"), ("eps", "eps"),
            ("admin", "admin"),
        ):  # fmt: skip
            table.add_column(label, key=key)
        yield table
        yield Label("", id="services-note", classes="empty-note")

    def on_mount(self) -> None:
        self.query_one("#services", DataTable).focus()

    async def refresh_data(self) -> None:
        try:
            self.running = await self.console.call("lb.list", brief=True)
        except DaemonUnreachable:
            return
        self.show_rows()

    def show_app_state(self) -> None:
        super().show_app_state()
        self.show_rows()

    def show_rows(self) -> None:
        text = self.query_one("#filter", Input).value
        rows = []
        for svc, change in candidate_services(self.running, self.console.pending):
            if not matches(svc, text):
                continue
            rows.append(
                (
                    svc["name"],
                    (
                        MARK[change],
                        svc["name"],
                        svc.get("vip", DASH),
                        svc.get("protocol", "tcp"),
                        port_text(svc) or DASH,
                        svc.get("mode", "default"),
                        svc.get("algorithm", "round-robin"),
                        endpoint_health(svc) if svc.get("state") else endpoint_count(svc),
                        svc.get("admin-state", "enabled"),
                    ),
                )
            )
        sync_table(self.query_one("#services", DataTable), rows)
        note = self.query_one("#services-note", Label)
        note.update("" if rows else "No services" + (" match the filter." if text else "."))
        note.display = not rows

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "filter":
            self.show_rows()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.action_focus_table()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.action_edit()

    def action_filter(self) -> None:
        self.query_one("#filter", Input).focus()

    def action_focus_table(self) -> None:
        self.query_one("#services", DataTable).focus()

    def _selected(self) -> str | None:
        return selected_key(self.query_one("#services", DataTable))

    def _refuse_read_only(self) -> bool:
        if self.console.read_only:
            self.notify("This console session is read-only.", severity="warning")
        return self.console.read_only

    def action_add(self) -> None:
        if not self._refuse_read_only():
            self.app.push_screen(ServiceForm(None), self._form_closed)

    def action_edit(self) -> None:
        # Enter is a priority binding (so the footer shows it over the table's own); in
        # the filter box it means "done filtering".
        if self.query_one("#filter", Input).has_focus:
            self.action_focus_table()
            return
        name = self._selected()
        if name is None or self._refuse_read_only():
            return
        self.run_worker(self._open_edit(name), group="action")

    async def _open_edit(self, name: str) -> None:
        try:
            current = await self.console.call(
                "config.get", path=service_path(name), datastore="candidate"
            )
        except (DaemonUnreachable, RemoteError) as exc:
            self.notify(str(exc), severity="error")
            return
        self.app.push_screen(ServiceForm(current), self._form_closed)

    def _form_closed(self, changed: bool | None) -> None:
        if changed:
            self.console.poll()

    def action_delete(self) -> None:
        name = self._selected()
        if name is None or self._refuse_read_only():
            return

        def done(yes: bool | None) -> None:
            if yes:
                self.run_worker(self._delete(name), group="action")

        self.app.push_screen(
            ConfirmScreen(f"Delete service {name}?", "The deletion is staged; C commits it."),
            done,
        )

    async def _delete(self, name: str) -> None:
        try:
            await self.console.call(
                "config.edit", changes=[{"op": "delete", "path": service_path(name)}]
            )
        except (DaemonUnreachable, RemoteError) as exc:
            self.notify(str(exc), severity="error")
            return
        self.notify(f"Deletion of {name} staged: C to commit, U to discard.")
        self.console.poll()

    def action_endpoints(self) -> None:
        name = self._selected()
        if name is not None:
            self.console.selected_service = name
            self.console.action_go("endpoints")
