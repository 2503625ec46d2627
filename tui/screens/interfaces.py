"""Interfaces and VIP addresses: where the datapath is attached, and which VIPs it serves."""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.widgets import DataTable, Label

from appliance.control.client import DaemonUnreachable, RemoteError, is_unknown_method
from tui.format import DASH, port_text
from tui.screens.base import ConsoleScreen
from tui.widgets import sync_table


def vip_rows(services: list[dict[str, Any]]) -> list[tuple[str, list[str]]]:
    """One row per VIP: its family, its (protocol port) listeners and their services."""
    by_vip: dict[str, list[dict[str, Any]]] = {}
    for svc in services:
        by_vip.setdefault(str(svc.get("vip")), []).append(svc)
    rows = []
    for vip, svcs in sorted(by_vip.items()):
        listeners = ", ".join(f"{s.get('protocol', 'tcp')}/{port_text(s) or '*'}" for s in svcs)
        rows.append(
            (
                vip,
                [
                    vip,
                    "IPv6" if ":" in vip else "IPv4",
                    listeners,
                    ", ".join(s["name"] for s in svcs),
                ],
            )
        )
    return rows


class InterfacesScreen(ConsoleScreen):
    MODE = "interfaces"
    CSS_PATH = "interfaces.tcss"

    def compose_body(self) -> ComposeResult:
        yield Label("Datapath interfaces", classes="section-title")
        ifaces = DataTable(id="ifaces", cursor_type="row")
        ifaces.add_column("interface", key="name")
        ifaces.add_column("programs (xdp:mode, tc ingress)", key="filters")
        yield ifaces
        yield Label("", id="if-note", classes="empty-note")
        yield Label("VIP addresses", classes="section-title")
        vips = DataTable(id="vips", cursor_type="row")
        for label, key in (
            ("vip", "vip"), ("family", "family"), ("listeners", "listeners"),
            ("services", "services"),
        ):  # fmt: skip
            vips.add_column(label, key=key)
        yield vips

    def on_mount(self) -> None:
        self.query_one("#vips", DataTable).focus()

    async def refresh_data(self) -> None:
        app = self.console
        note = self.query_one("#if-note", Label)
        try:
            services = await app.call("lb.list", brief=True)
            try:
                dp = await app.call("dp.status", cached=True)
            except RemoteError as exc:
                dp = {"enabled": False} if is_unknown_method(exc) else {"error": str(exc)}
        except DaemonUnreachable:
            return
        sync_table(self.query_one("#vips", DataTable), vip_rows(services))
        interfaces = dp.get("interfaces") or {}
        if isinstance(interfaces, list):
            interfaces = {name: [] for name in interfaces}
        sync_table(
            self.query_one("#ifaces", DataTable),
            [
                (name, [name, ", ".join(map(str, filters)) or DASH])
                for name, filters in sorted(interfaces.items())
            ],
        )
        if dp.get("error"):
            note.update(f"datapath: {dp['error']}")
        elif not dp.get("enabled", True):
            note.update("The datapath is not running in this daemon.")
        elif not dp.get("loaded", True):
            note.update("The datapath is enabled but its program is not loaded.")
        else:
            note.update("" if interfaces else "Attached to no interface.")
        note.display = bool(str(note.render()))
