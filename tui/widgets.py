"""Widgets shared by the screens. They take data (dicts from the daemon), never a client."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.text import Text
from textual.widgets import DataTable, Static

from tui.format import DASH, bgp_line, duration, pending_count, pending_lines, qos_line

# (key, mode, label): the top bar shows every screen's key, so the footer keeps room for
# the current screen's actions at 80 columns.
NAV = (
    ("1", "dashboard", "Dash"),
    ("2", "services", "Services"),
    ("3", "endpoints", "Endpts"),
    ("4", "sessions", "Sessions"),
    ("5", "history", "History"),
    ("6", "events", "Events"),
    ("7", "interfaces", "Ifaces"),
    ("?", "help", "Help"),
)


class NavBar(Static):
    """One line: the screens and their keys, the current one in reverse video."""

    def __init__(self, current: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.current = current

    def render(self) -> Text:
        # 8 screens in 80 columns: no room for a product name, and none is needed.
        text = Text()
        for key, mode, label in NAV:
            style = "reverse bold" if mode == self.current else ""
            text.append(f"{key} {label}", style=style)
            text.append(" ")
        return text


def ha_label(ha: dict[str, str] | None) -> str:
    """The HA role for the status line: " HA MASTER ·" (every instance alike) or
    " HA web=master dns=backup ·"; "" when HA is not configured."""
    if not ha:
        return ""
    roles = set(ha.values())
    if len(roles) == 1:
        return f" HA {roles.pop().upper()} ·"
    return " HA " + " ".join(f"{name}={role}" for name, role in sorted(ha.items())) + " ·"


class StatusLine(Static):
    """Daemon reachability and the pending-change count (one line, reverse when bad)."""

    def show(
        self,
        error: str | None,
        pending: dict[str, Any] | None,
        user: str = "",
        read_only: bool = False,
        alarms: Sequence[dict[str, Any]] = (),
        ha: dict[str, str] | None = None,
    ) -> None:
        role = ha_label(ha)
        if alarms and not error:
            # An alarm outranks the pending count: the operator at the console must see
            # that the box runs degraded (details: `sluice status`).
            first = alarms[0]
            more = f" (+{len(alarms) - 1} more)" if len(alarms) > 1 else ""
            self.update(
                Text(
                    f"{role} ALARM {first.get('name', '?')}{more}: {first.get('text', '')} ",
                    style="reverse bold",
                    no_wrap=True,
                    overflow="ellipsis",
                )
            )
            return
        if error:
            # The first words must survive 80 columns: the reason comes after them.
            reason = error.split(": ", 1)[1] if error.startswith("daemon not reachable") else error
            self.update(
                Text(
                    f" daemon not reachable — retrying · {reason} ",
                    style="reverse bold",
                    no_wrap=True,
                    overflow="ellipsis",
                )
            )
            return
        count = pending_count(pending)
        who = (f" as {user}" if user else "") + (" (read-only)" if read_only else "")
        if count:
            self.update(
                Text(
                    f"{role} connected{who} · {count} uncommitted change(s): C commit, U discard ",
                    style="bold",
                )
            )
        else:
            self.update(Text(f"{role} connected{who} · no uncommitted changes "))


class CommitBar(Static):
    """The pending diff (config.pending) in a few lines, with the keys to act on it."""

    def set_pending(self, pending: dict[str, Any] | None, max_lines: int = 3) -> None:
        lines = pending_lines(pending)
        self.display = bool(lines)
        if not lines:
            self.update("")
            return
        shown = lines[:max_lines]
        if len(lines) > max_lines:
            shown.append(f"… {len(lines) - max_lines} more")
        text = Text("Uncommitted (C commit, U discard):\n", style="bold")
        text.append("\n".join(shown))
        self.update(text)


class HealthPanel(Static):
    """The daemon's `status`: version, uptime, counts, last commit, datapath."""

    def show(self, status: dict[str, Any] | None) -> None:
        if status is None:
            self.update("appliance: -   (no answer from the daemon)")
            return
        dp = status.get("datapath")
        if isinstance(dp, dict) and dp.get("enabled", True):
            # "interfaces" is {ifname: [tc filters]} from the datapath reconciler.
            ifaces = dp.get("interfaces") or dp.get("attached-interface") or []
            names = ", ".join(i if isinstance(i, str) else str(i.get("name", i)) for i in ifaces)
            loaded = "loaded" if dp.get("loaded", True) else "NOT loaded"
            errors = len(dp.get("errors") or {})
            dp_text = f"datapath {loaded} · attached: {names or DASH}"
            if dp.get("conntrack-sweep-interval") is not None:
                dp_text += f" · conntrack sweep every {dp['conntrack-sweep-interval']:g} s"
            if errors:
                dp_text += f" · {errors} service(s) failed to program"
        else:
            dp_text = "datapath: off (not running in this daemon)"
        self.update(
            f"sluice {status.get('version', DASH)}  up {duration(status.get('uptime-s'))}"
            f"  services {status.get('services', DASH)}"
            f"  endpoints {status.get('endpoints', DASH)}"
            f"  last commit #{status.get('last-commit', DASH)}"
            f"  sessions {status.get('sessions', DASH)}\n{dp_text}"
            + (f"\n{bgp}" if (bgp := bgp_line(status)) else "")
            + (f"\n{qos}" if (qos := qos_line(status)) else "")
        )


def sync_table(table: DataTable, rows: Sequence[tuple[str, Sequence[Any]]]) -> None:
    """Make `table` show `rows` ((key, cells) in order) by editing it in place.

    Clearing and refilling a table every refresh flickers and loses the cursor; here rows
    that stay keep their place and only changed cells are redrawn. Only when the order of
    keys changes (a row added in the middle) is the table rebuilt, keeping the cursor's row.
    """
    keys = [k for k, _ in rows]
    current_keys = [k.value for k in table.rows]
    if [k for k in current_keys if k in set(keys)] + [
        k for k in keys if k not in set(current_keys)
    ] != keys:
        selected = selected_key(table)
        table.clear()
        for key, cells in rows:
            table.add_row(*cells, key=key)
        if selected in keys:
            table.move_cursor(row=keys.index(selected))
        return
    wanted = dict(rows)
    for key in current_keys:
        if key not in wanted:
            table.remove_row(key)
    columns = list(table.columns)
    for key, cells in rows:
        if key in current_keys:
            for column, old, new in zip(columns, table.get_row(key), cells, strict=False):
                if old != new:
                    table.update_cell(key, column, new, update_width=True)
        else:
            table.add_row(*cells, key=key)


def selected_key(table: DataTable) -> str | None:
    if table.row_count == 0:
        return None
    try:
        row_key, _ = table.coordinate_to_cell_key(table.cursor_coordinate)
    except Exception:  # cursor outside the table (empty or shrinking)
        return None
    return row_key.value
