"""Add or edit one service in the session's candidate (config.edit), then validate.

YANG errors come back with data paths (/sluice:load-balancer/service[name='a']/port); each
is shown under the field that path names. A change that does not validate is taken back
out of the candidate, so a bad value never lingers in it.
"""

from __future__ import annotations

import copy
from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import Footer, Input, Label, Select, Static

from appliance.control.client import DaemonUnreachable, RemoteError
from tui.format import (
    FieldSyntaxError,
    endpoints_text,
    error_field,
    parse_endpoints,
    parse_port,
    pending_count,
    service_path,
)

ENUMS = {
    "protocol": ["tcp", "udp", "sctp", "icmp"],
    "mode": ["default", "one-arm", "full-nat", "dsr"],
    "translation": ["none", "nat64", "nat46"],
    "dsr-tunnel": ["none", "ip-in-ip"],
    "tcp-midstream-pickup": ["no", "yes"],
    "algorithm": [
        "round-robin", "weighted", "hash", "maglev", "least-connections", "priority",
        "persistence", "gtp-teid",
    ],
    "admin-state": ["enabled", "disabled"],
    "health-probe": ["none", "ping", "tcp", "udp", "sctp", "http", "https"],
}  # fmt: skip

# (field id = YANG leaf, label, placeholder); the order is the form's order.
FIELDS = [
    ("name", "Name", "web (letters, digits, . _ -)"),
    ("vip", "VIP", "198.18.0.10 or 2001:db8::10"),
    ("protocol", "Protocol", ""),
    ("port", "Port", "80 or 8000-8100"),
    ("mode", "Mode", ""),
    ("algorithm", "Algorithm", ""),
    ("snat-address", "SNAT address", "full-nat only; more: a pool (ADDR, ADDR…)"),
    ("endpoint", "Endpoints", "198.18.1.1:80[:weight], [2001:db8::1]:80"),
    ("health-probe", "Probe", ""),
    ("admin-state", "Admin state", ""),
    ("description", "Description", ""),
    ("translation", "NAT64/46", ""),
    ("dsr-tunnel", "DSR tunnel", ""),
    ("secondary-vip", "Secondary VIPs", "SCTP multihoming: 198.18.0.11, …"),
    ("secondary-snat-address", "Secondary SNAT", "one per secondary VIP"),
    ("tcp-midstream-pickup", "TCP mid-stream", ""),
]
FIELD_IDS = {f for f, _, _ in FIELDS} | {"port-range-end", "nat64", "nat46", "snat-pool"}
# Leaf-lists shown as comma-separated text.
LISTS = ("secondary-vip", "secondary-snat-address")
# Leaves that map onto another field of the form.
ALIAS = {"port-range-end": "port", "nat64": "translation", "nat46": "translation",
         "snat-pool": "snat-address"}


class ServiceForm(Screen[bool]):
    CSS_PATH = "service_form.tcss"
    # ctrl+s is XOFF on serial lines; ctrl+g ("go") is free in textual's Input.
    BINDINGS = [
        Binding("ctrl+g,f2", "apply", "Apply"),
        Binding("escape", "cancel", "Cancel"),
        Binding("tab", "app.focus_next", "Next", show=False),
    ]

    def __init__(self, service: dict[str, Any] | None, errors: RemoteError | None = None) -> None:
        """`errors`: a refused commit naming this service, shown at once under its fields."""
        super().__init__()
        self.original = copy.deepcopy(service) if service else None
        self.orig_name = service["name"] if service else None
        self.initial_errors = errors

    # -- layout --------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        title = f"Edit service {self.orig_name}" if self.orig_name else "Add a service"
        yield Label(f"{title} — Tab: next field, ^G/F2: apply, Esc: cancel", id="form-title")
        svc = self.original or {}
        with VerticalScroll(id="form"):
            for field, label, placeholder in FIELDS:
                with Horizontal(classes="field", id=f"row-{field}"):
                    yield Label(label, classes="field-label")
                    yield self._widget(field, placeholder, svc)
                yield Static("", classes="field-error", id=f"err-{field}")
            yield Static("", id="form-error")
        yield Footer(compact=True)

    def _widget(self, field: str, placeholder: str, svc: dict[str, Any]) -> Widget:
        wid = f"f-{field}"
        if field in ENUMS:
            if field == "health-probe":
                value = (svc.get("health-probe") or {}).get("type", "none")
            elif field == "translation":  # two boolean leaves, at most one true
                value = "nat64" if svc.get("nat64") else "nat46" if svc.get("nat46") else "none"
            elif field == "tcp-midstream-pickup":  # a boolean leaf
                value = "yes" if svc.get(field) in (True, "true") else "no"
            else:
                value = svc.get(field, ENUMS[field][0])
            return Select(
                [(v, v) for v in ENUMS[field]], value=value, allow_blank=False, compact=True,
                id=wid,
            )  # fmt: skip
        if field == "port":
            text = str(svc.get("port", ""))
            if "port-range-end" in svc:
                text += f"-{svc['port-range-end']}"
        elif field in LISTS:
            text = ", ".join(svc.get(field, []))
        elif field == "endpoint":
            text = endpoints_text(svc.get("endpoint", []))
        elif field == "snat-address":  # snat-address, then the rest of the pool
            text = ", ".join([a for a in [svc.get("snat-address")] if a] + svc.get("snat-pool", []))
        else:
            text = str(svc.get(field, ""))
        return Input(text, placeholder=placeholder, id=wid)

    def on_mount(self) -> None:
        for err in self.query(".field-error"):
            err.display = False
        self.query_one("#form-error").display = False
        first = "#f-vip" if self.orig_name else "#f-name"
        self.query_one(first).focus()
        if self.initial_errors is not None and self.orig_name:
            by_field, general, _ = self._split(self.initial_errors, self.orig_name)
            self.show_errors(by_field, general)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        # Enter in a field moves on, like a paper form; ^G applies.
        event.stop()
        self.focus_next()

    # -- reading the form ----------------------------------------------------------------
    def _value(self, field: str) -> str:
        widget = self.query_one(f"#f-{field}")
        if isinstance(widget, Select):
            return str(widget.value)
        assert isinstance(widget, Input)
        return widget.value.strip()

    def build(self) -> dict[str, Any]:
        """The service document: the edited one with the form's leaves laid over it.

        Leaves the form does not show (allowed-source, timeouts, probe timing, per-endpoint
        settings) are kept from the original, so editing never loses them.
        """
        svc = copy.deepcopy(self.original) if self.original else {}
        errors: dict[str, str] = {}
        for field in ("name", "vip", "description"):
            value = self._value(field)
            if value:
                svc[field] = value
            else:
                svc.pop(field, None)
        pool = [a.strip() for a in self._value("snat-address").split(",") if a.strip()]
        svc.pop("snat-address", None)
        svc.pop("snat-pool", None)
        if pool:
            svc["snat-address"] = pool[0]
        if pool[1:]:
            svc["snat-pool"] = pool[1:]
        for field in ("protocol", "mode", "algorithm", "admin-state"):
            svc[field] = self._value(field)
        translation = self._value("translation")
        for leaf in ("nat64", "nat46"):
            if leaf == translation:
                svc[leaf] = True
            else:
                svc.pop(leaf, None)
        if self._value("dsr-tunnel") == "none":
            svc.pop("dsr-tunnel", None)  # the default
        else:
            svc["dsr-tunnel"] = self._value("dsr-tunnel")
        if self._value("tcp-midstream-pickup") == "yes":
            svc["tcp-midstream-pickup"] = True
        else:
            svc.pop("tcp-midstream-pickup", None)  # the default: only a SYN opens a flow
        for field in LISTS:
            items = [a.strip() for a in self._value(field).split(",") if a.strip()]
            if items:
                svc[field] = items
            else:
                svc.pop(field, None)
        try:
            low, high = parse_port(self._value("port"))
            svc.pop("port", None)
            svc.pop("port-range-end", None)
            if low is not None:
                svc["port"] = low
            if high is not None:
                svc["port-range-end"] = high
        except FieldSyntaxError as exc:
            errors["port"] = str(exc)
        try:
            old_eps = {(e["address"], e["port"]): e for e in svc.get("endpoint", [])}
            eps = []
            for ep in parse_endpoints(self._value("endpoint")):
                kept = dict(old_eps.get((ep["address"], ep["port"]), {}))
                kept.pop("weight", None)  # the form's weight (or its absence) wins
                eps.append({**kept, **ep})
            svc["endpoint"] = eps
            if not eps:
                svc.pop("endpoint")
        except FieldSyntaxError as exc:
            errors["endpoint"] = str(exc)
        probe = dict(svc.get("health-probe") or {})
        probe["type"] = self._value("health-probe")
        svc["health-probe"] = probe
        if errors:
            raise FormErrors(errors)
        return svc

    # -- errors --------------------------------------------------------------------------
    def clear_errors(self) -> None:
        for field, _, _ in FIELDS:
            err = self.query_one(f"#err-{field}", Static)
            err.update("")
            err.display = False
            self.query_one(f"#row-{field}").remove_class("-invalid")
        self.query_one("#form-error", Static).display = False

    def show_errors(self, by_field: dict[str, str], general: list[str]) -> None:
        self.clear_errors()
        for field, message in by_field.items():
            field = ALIAS.get(field, field)
            err = self.query_one(f"#err-{field}", Static)
            err.update(f"  ↳ {message}")
            err.display = True
            self.query_one(f"#row-{field}").add_class("-invalid")
        form_error = self.query_one("#form-error", Static)
        form_error.update("\n".join(general))
        form_error.display = bool(general)
        if by_field:
            first = next(f for f, _, _ in FIELDS if f in {ALIAS.get(k, k) for k in by_field})
            self.query_one(f"#f-{first}").focus()

    def _split(self, exc: RemoteError, name: str) -> tuple[dict[str, str], list[str], bool]:
        """(errors per field, other errors, whether any error is about this service)."""
        by_field: dict[str, str] = {}
        general: list[str] = []
        ours = False
        for err in exc.errors or [{"path": "", "message": str(exc)}]:
            path, message = str(err.get("path", "")), str(err.get("message", ""))
            about_us = (
                f"[name='{name}']" in path
                or ("/service" in path and "[name=" not in path)
                or not path.startswith("/")
            )
            if not about_us:
                continue
            ours = True
            field = error_field(path, message, FIELD_IDS)
            if field is None and err.get("tag") == "data-exists":
                field = "name"
            if field is None:
                general.append(message)
            else:
                by_field.setdefault(field, message)
        return by_field, general, ours

    # -- actions -------------------------------------------------------------------------
    def action_cancel(self) -> None:
        self.dismiss(False)

    def action_apply(self) -> None:
        try:
            svc = self.build()
        except FormErrors as exc:
            self.show_errors(exc.errors, [])
            return
        if not svc.get("name"):
            self.show_errors({"name": "a service needs a name"}, [])
            return
        self.run_worker(self._apply(svc), group="form", exclusive=True)

    async def _apply(self, svc: dict[str, Any]) -> None:
        app = self.app
        name = svc["name"]
        # With nothing else pending, taking a bad change back is a plain discard.
        was_clean = not pending_count(app.pending)  # type: ignore[attr-defined]
        changes: list[dict[str, Any]] = []
        if self.orig_name and self.orig_name != name:
            changes.append({"op": "delete", "path": service_path(self.orig_name)})
        op = "replace" if self.orig_name == name else "create"
        changes.append({"op": op, "path": service_path(name), "value": svc})
        try:
            await app.call("config.edit", changes=changes)  # type: ignore[attr-defined]
        except DaemonUnreachable as exc:
            self.show_errors({}, [str(exc)])
            return
        except RemoteError as exc:
            by_field, general, _ = self._split(exc, name)
            self.show_errors(by_field, general or ([] if by_field else [str(exc)]))
            return
        try:
            await app.call("config.validate")  # type: ignore[attr-defined]
        except DaemonUnreachable as exc:
            self.show_errors({}, [str(exc)])
            return
        except RemoteError as exc:
            by_field, general, ours = self._split(exc, name)
            if ours:
                await self._take_back(name, was_clean)
                self.show_errors(by_field, general)
                return
            # Other services in the candidate are invalid, not this one: keep the change.
            self.notify("Staged, but other pending changes do not validate.", severity="warning")
        self.notify(f"Service {name} staged: C to commit, U to discard.")
        self.dismiss(True)

    async def _take_back(self, name: str, was_clean: bool) -> None:
        """Undo this form's edit in the candidate (best effort: report, don't hide)."""
        if was_clean:
            try:
                await self.app.call("config.discard")  # type: ignore[attr-defined]
            except (DaemonUnreachable, RemoteError) as exc:
                self.notify(f"Could not take the bad change back: {exc}", severity="error")
            return
        undo: list[dict[str, Any]] = []
        if self.orig_name != name:
            undo.append({"op": "remove", "path": service_path(name)})
        if self.original is not None and self.orig_name:
            undo.append(
                {"op": "replace", "path": service_path(self.orig_name), "value": self.original}
            )
        try:
            await self.app.call("config.edit", changes=undo)  # type: ignore[attr-defined]
        except (DaemonUnreachable, RemoteError) as exc:
            self.notify(f"Could not take the bad change back: {exc}", severity="error")


class FormErrors(Exception):
    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.errors = errors
