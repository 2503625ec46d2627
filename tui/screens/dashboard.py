"""Dashboard: appliance health, services with health and rates, recent events."""

from __future__ import annotations

import time
from typing import Any

from textual.app import ComposeResult
from textual.widgets import DataTable, Label

from appliance.control.client import DaemonUnreachable
from tui.format import DASH, RateMeter, endpoint_health, human, vip_port
from tui.screens.base import ConsoleScreen
from tui.widgets import HealthPanel, sync_table

RECENT_EVENTS = 5


class DashboardScreen(ConsoleScreen):
    MODE = "dashboard"
    CSS_PATH = "dashboard.tcss"

    def __init__(self) -> None:
        super().__init__()
        self.rates = RateMeter()

    def compose_body(self) -> ComposeResult:
        yield HealthPanel(id="health")
        yield Label("", id="dash-firewall")
        yield Label("Services", classes="section-title")
        services = DataTable(id="dash-services", cursor_type="row", zebra_stripes=False)
        for label, key in (
            ("name", "name"), ("vip:port", "vip"), ("proto", "proto"), ("health", "health"),
            ("pkt/s", "pps"), ("B/s", "bps"), ("sess", "sess"),
        ):  # fmt: skip
            services.add_column(label, key=key)
        yield services
        yield Label("Recent events", classes="section-title")
        events = DataTable(id="dash-events", cursor_type="none", show_header=False)
        events.add_column("at", key="at")
        events.add_column("event", key="text")
        yield events

    async def refresh_data(self) -> None:
        try:
            services: list[dict[str, Any]] = await self.console.call("lb.list", brief=True)
        except DaemonUnreachable:
            return
        self.show_services(services, time.monotonic())
        try:
            self.show_firewall(await self.console.call("fw.summary"))
        except DaemonUnreachable:
            return

    def show_firewall(self, fw: dict[str, Any]) -> None:
        """One line: the firewall's and SNAT's rules, hits, warnings (`sluice fw list`)."""
        if not fw.get("rules") and not fw.get("snat-rules"):
            text = "Firewall: off (no rules)"
        else:
            text = (f"Firewall: {fw['rules']} rules ({'on' if fw['firewall'] else 'off'}), "
                    f"SNAT: {fw['snat-rules']} rules ({'on' if fw['snat'] else 'off'}), "
                    f"{human(fw['hits'])} hits")
            if fw.get("warnings"):
                text += f", {fw['warnings']} warnings (sluice fw list)"
            if fw.get("error"):
                text += f", NOT PROGRAMMED: {fw['error']}"
        self.query_one("#dash-firewall", Label).update(text)

    def show_services(self, services: list[dict[str, Any]], now: float) -> None:
        rows = []
        for svc in services:
            state = svc.get("state")
            rate = self.rates.rates(svc["name"], state, now)
            sessions = (state or {}).get("active-sessions")
            rows.append(
                (
                    svc["name"],
                    (
                        svc["name"],
                        vip_port(svc),
                        svc.get("protocol", DASH),
                        endpoint_health(svc),
                        human(rate["packets"]),
                        human(rate["bytes"]),
                        human(sessions) if sessions is not None else DASH,
                    ),
                )
            )
        sync_table(self.query_one("#dash-services", DataTable), rows)

    def show_app_state(self) -> None:
        super().show_app_state()
        app = self.console
        self.query_one(HealthPanel).show(app.status)
        rows = [
            (e.key, (e.at.replace("T", " ").rstrip("Z")[5:16], e.text))
            for e in app.events[:RECENT_EVENTS]
        ]
        sync_table(self.query_one("#dash-events", DataTable), rows)
