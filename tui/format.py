"""Pure helpers: turn daemon JSON into short console text (no textual, no I/O)."""

from __future__ import annotations

import re
from typing import Any

from appliance.control.endpoint_spec import EndpointSpecError, parse_endpoint

DASH = "-"
MODULE = "sluice"


def service_path(name: str) -> str:
    # The console speaks data paths to the daemon; it must not import appliance.config.
    return f"/{MODULE}:load-balancer/service[name='{name}']"


def endpoint_path(service: str, address: str, port: int | str) -> str:
    return f"{service_path(service)}/endpoint[address='{address}'][port='{port}']"


def human(n: float | None, unit: str = "") -> str:
    """1234567 -> '1.2M': rates and counters fit a 7-character column."""
    if n is None:
        return DASH
    for limit, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= limit:
            return f"{n / limit:.1f}{suffix}{unit}"
    return f"{n:.0f}{unit}" if isinstance(n, float) else f"{n}{unit}"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return DASH
    s = int(seconds)
    days, s = divmod(s, 86400)
    hours, s = divmod(s, 3600)
    minutes, s = divmod(s, 60)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{s:02d}s"


def vip_port(svc: dict[str, Any]) -> str:
    """198.18.0.10:80, [2001:db8::10]:443, or the bare VIP for icmp."""
    vip = str(svc.get("vip", DASH))
    port = port_text(svc)
    if not port:
        return vip
    return f"[{vip}]:{port}" if ":" in vip else f"{vip}:{port}"


def describe(doc: dict[str, Any]) -> list[str]:
    """An added item, one leaf per line ('port: 53'), endpoints on one line."""
    lines = [
        f"{k}: {_short(v)}"
        for k, v in _flat({k: v for k, v in doc.items() if k != "endpoint"}).items()
    ]
    if doc.get("endpoint"):
        lines.append(f"endpoints: {endpoints_text(doc['endpoint'])}")
    return lines


def port_text(svc: dict[str, Any]) -> str:
    port = svc.get("port")
    if port is None:
        return ""
    end = svc.get("port-range-end")
    return f"{port}-{end}" if end is not None else str(port)


def endpoint_count(svc: dict[str, Any]) -> int:
    """Endpoints of a service, from a full or a brief (``lb.list brief``) listing."""
    if "endpoint-count" in svc:
        return int(svc["endpoint-count"])
    return len(svc.get("endpoint", []))


def endpoint_health(svc: dict[str, Any]) -> str:
    """'up 2/3' from the service's state, or the endpoint count when nothing is probed."""
    total = endpoint_count(svc)
    state = svc.get("state") or {}
    if "endpoints-up" in state:
        return f"{state.get('oper-status', '?')} {state['endpoints-up']}/{total}"
    if state.get("oper-status"):
        return f"{state['oper-status']} ?/{total}"
    return f"{DASH} {total} ep"


class RateMeter:
    """Per-second rates from successive counter readings (the daemon reports totals)."""

    FIELDS = ("packets", "bytes")

    def __init__(self) -> None:
        self._last: dict[str, tuple[float, dict[str, int]]] = {}

    def rates(self, key: str, state: dict[str, Any] | None, now: float) -> dict[str, float | None]:
        out: dict[str, float | None] = dict.fromkeys(self.FIELDS)
        if not state:
            self._last.pop(key, None)
            return out
        counters = {f: int(state[f]) for f in self.FIELDS if isinstance(state.get(f), int)}
        previous = self._last.get(key)
        self._last[key] = (now, counters)
        if previous is not None and now > previous[0]:
            dt = now - previous[0]
            for f, value in counters.items():
                if f in previous[1] and value >= previous[1][f]:  # a reset gives no rate
                    out[f] = (value - previous[1][f]) / dt
        return out


def _flat(doc: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'health-probe': {'type': 'tcp'}} -> {'health-probe.type': 'tcp'}."""
    out: dict[str, Any] = {}
    for key, value in doc.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def field_changes(old: dict[str, Any] | None, new: dict[str, Any] | None) -> list[str]:
    """'port 80→81', 'endpoint +198.18.1.2:80' … for the commit bar and the diff view."""
    if old is None and new is None:
        return []
    if old is None:
        return ["added"]
    if new is None:
        return ["removed"]
    changes = []
    o = _flat({k: v for k, v in old.items() if k != "endpoint"})
    n = _flat({k: v for k, v in new.items() if k != "endpoint"})
    for key in sorted(set(o) | set(n)):
        if o.get(key) != n.get(key):
            changes.append(f"{key} {_short(o.get(key))}→{_short(n.get(key))}")
    old_eps = {_ep_key(e): e for e in old.get("endpoint", [])}
    new_eps = {_ep_key(e): e for e in new.get("endpoint", [])}
    for key in new_eps.keys() - old_eps.keys():
        changes.append(f"endpoint +{key}")
    for key in old_eps.keys() - new_eps.keys():
        changes.append(f"endpoint -{key}")
    for key in sorted(new_eps.keys() & old_eps.keys()):
        if new_eps[key] != old_eps[key]:
            diff = [
                f"{k}={_short(new_eps[key].get(k))}"
                for k in sorted(set(new_eps[key]) | set(old_eps[key]))
                if new_eps[key].get(k) != old_eps[key].get(k)
            ]
            changes.append(f"endpoint {key} {' '.join(diff)}")
    return changes


def _ep_key(ep: dict[str, Any]) -> str:
    address = str(ep.get("address"))
    address = f"[{address}]" if ":" in address else address
    return f"{address}:{ep.get('port')}"


def _short(value: Any) -> str:
    if value is None:
        return "∅"
    text = str(value)
    return text if len(text) <= 24 else text[:23] + "…"


def pending_lines(pending: dict[str, Any] | None) -> list[str]:
    """One line per changed item of config.pending: '+ web', '~ api: port 80→81', '- old'."""
    if not pending:
        return []
    lines = []
    for name, change in sorted(_real_changes(pending).items()):
        old, new = change.get("old"), change.get("new")
        if old is None:
            lines.append(f"+ service {name}")
        elif new is None:
            lines.append(f"- service {name}")
        else:
            lines.append(f"~ service {name}: " + ", ".join(field_changes(old, new)))
    for name in sorted(pending.get("sections") or {}):
        lines.append(f"~ {name}")
    return lines


def _real_changes(pending: dict[str, Any]) -> dict[str, Any]:
    # A service edited and then edited back stays in the session's overlay with old == new:
    # committing it changes nothing, so the console does not count it.
    return {
        name: change
        for name, change in (pending.get("services") or {}).items()
        if change.get("old") != change.get("new")
    }


def pending_count(pending: dict[str, Any] | None) -> int:
    if not pending:
        return 0
    return len(_real_changes(pending)) + len(pending.get("sections") or {})


def summary_text(summary: dict[str, Any] | None) -> str:
    """A commit's summary as '+web ~api -old' (names) or counts when names are elided."""
    if not summary:
        return ""
    names = summary.get("names") or {}
    parts = [f"+{n}" for n in names.get("added", [])]
    parts += [f"~{n}" for n in names.get("changed", [])]
    parts += [f"-{n}" for n in names.get("removed", [])]
    parts += [f"~{s}" for s in summary.get("sections-changed", [])]
    shown = len(names.get("added", [])) + len(names.get("changed", []))
    shown += len(names.get("removed", []))
    total = sum(
        int(summary.get(k, 0)) for k in ("services-added", "services-changed", "services-removed")
    )
    if total > shown:
        parts.append(f"(+{total - shown} more)")
    return " ".join(parts) or "(no change)"


# -- error paths -> form fields -----------------------------------------------------------
_SERVICE_STEP = re.compile(r"^/(?:sluice:)?load-balancer/service(?:\[[^\]]*\])?")


def error_field(path: str, message: str, fields: set[str]) -> str | None:
    """Which form field an error's YANG data path names, or None (shown for the form).

    /…/service[name='a']/port -> 'port'; /…/endpoint[…]/address -> 'endpoint';
    /…/health-probe/interval -> 'health-probe'. A `must` on the service itself names the
    service, not a leaf; its message starts with the leaf it is about ('snat-address is
    required when …'), so that leaf gets it.
    """
    match = _SERVICE_STEP.match(path or "")
    if match is None:
        return None
    rest = path[match.end() :].lstrip("/")
    leaf = re.sub(r"\[.*?\]", "", rest.split("/", 1)[0]) if rest else ""
    if leaf in fields:
        return leaf
    if not leaf:
        first = (message or "").split(" ", 1)[0]
        if first in fields:
            return first
    return None


# -- form text <-> YANG values --------------------------------------------------------------
class FieldSyntaxError(ValueError):
    pass


def parse_port(text: str) -> tuple[int | None, int | None]:
    """'80' -> (80, None); '8000-8100' -> (8000, 8100); '' -> (None, None).

    Only the syntax is checked here; ranges and rules are the daemon's (YANG) business.
    """
    text = text.strip()
    if not text:
        return None, None
    low, _, high = text.partition("-")
    try:
        return int(low), (int(high) if high else None)
    except ValueError:
        raise FieldSyntaxError("give PORT or LOW-HIGH (numbers)") from None


def parse_endpoints(text: str) -> list[dict[str, Any]]:
    """'198.18.1.1:80:5, [2001:db8::1]:80' -> [{address, port, weight?}, …]."""
    specs = (s.strip() for s in text.replace(" ", ",").split(","))
    try:
        return [parse_endpoint(spec) for spec in specs if spec]
    except EndpointSpecError as exc:
        raise FieldSyntaxError(str(exc)) from None


def endpoints_text(endpoints: list[dict[str, Any]]) -> str:
    parts = []
    for ep in endpoints:
        text = _ep_key(ep)
        if ep.get("weight") not in (None, 1):
            text += f":{ep['weight']}"
        parts.append(text)
    return ", ".join(parts)


def bgp_line(status: dict[str, Any] | None) -> str | None:
    """The console's BGP line from `status` (its "bgp" door), None when BGP is not set up."""
    door = ((status or {}).get("doors") or {}).get("bgp")
    if not isinstance(door, dict) or door.get("state") in (None, "disabled"):
        return None
    text = (f"bgp {door['state']} · sessions established {door.get('established', DASH)}"
            f" · vips announced {door.get('announced', DASH)}")
    if door.get("ha-role"):
        text += f" · {door['ha-role']}"
    if door.get("error"):
        text += f" · {door['error']}"
    return text


def qos_line(status: dict[str, Any] | None) -> str | None:
    """The console's QoS line from `status` ("qos": policers' colors, mirror copies), None
    when no policer or mirror session is programmed."""
    qos = (status or {}).get("qos")
    if not isinstance(qos, dict) or not (qos.get("policers") or qos.get("mirrors")):
        return None
    text = (f"qos: {qos.get('policers', 0)} policer(s) · packets green {qos.get('green', 0)}"
            f" yellow {qos.get('yellow', 0)} red {qos.get('red', 0)}")
    if qos.get("mirrors"):
        text += f" · {qos['mirrors']} mirror session(s), {qos.get('copies', 0)} copies"
    return text
