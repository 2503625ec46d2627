"""Control-socket methods: status and operational reads (datapath, conntrack, events)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from appliance import __version__
from appliance.config import ConfigError, FieldError
from appliance.control.api import CallContext, method


def _without_rule_rows(datapath: Any) -> dict[str, Any]:
    """The datapath status without the firewall's per-rule rows (10,000 rules: ~1 MB that
    every console poll would carry); `sluice fw list` and SNMP read those."""
    out = dict(datapath)
    fw = out.get("firewall")
    if isinstance(fw, dict) and "rules" in fw:
        out["firewall"] = {k: v for k, v in fw.items() if k not in ("rules", "warnings")} | {
            "rule-count": len(fw["rules"]), "warning-count": len(fw.get("warnings") or [])}
    return out


@method("status")
def _status(ctx: CallContext, params: dict[str, Any]) -> dict[str, Any]:
    svc = ctx.session.service
    status = {
        "version": __version__,
        "uptime-s": round(time.time() - ctx.started, 1),
        "services": len(svc.services),
        "endpoints": sum(len(s.get("endpoint", [])) for s in svc.services.values()),
        "last-commit": svc.commit_id,
        "sessions": len(svc.sessions),
    }
    snap = ctx.state.get("snapshot")
    if snap is not None and "datapath" in ctx.state:
        # The snapshot's reading (at most its datapath period old), not a walk of every map
        # and a netlink call per interface each time a console polls (every 2 s).
        current = snap.current()
        status["datapath"] = _without_rule_rows(current.datapath)
        if current.conntrack_entries is not None:
            status["conntrack-entries"] = current.conntrack_entries
        qos = _qos_summary(current.qos)
        if qos:
            status["qos"] = qos
    elif "datapath" in ctx.state:
        status["datapath"] = _without_rule_rows(ctx.state["datapath"]())
    # The daemon's own health: doors, alarms, the event loop's heartbeat.
    for name in ("doors", "alarms", "heartbeat"):
        if name in ctx.state:
            status[name] = ctx.state[name]()
    # The HA role of each instance (the console shows it on every screen).
    ha = ctx.state.get("ha")
    if ha is not None:
        current = ha()
        if current.get("enabled"):
            status["ha"] = {i["name"]: i["role"] for i in current["instances"]}
    return status


def _qos_summary(qos: Any) -> dict[str, int]:
    """Policers and their packets per color, mirror sessions and copies (the console's
    line); {} when none is programmed."""
    policers, mirrors = qos.get("policer") or {}, qos.get("mirror") or {}
    if not policers and not mirrors:
        return {}
    out = {"policers": len(policers), "mirrors": len(mirrors),
           "copies": sum(int(m.get("packets", 0)) for m in mirrors.values())}  # fmt: skip
    for color in ("green", "yellow", "red"):
        out[color] = sum(int((p.get(color) or {}).get("packets", 0)) for p in policers.values())
    return out


def _provider(ctx: CallContext, name: str) -> Callable[..., Any]:
    provider = ctx.state.get(name)
    if provider is None:
        raise ConfigError(
            "the datapath is not running in this daemon (sluice run --datapath on)",
            [FieldError("datapath", "not enabled")],
        )
    return provider


def _limit(params: dict[str, Any]) -> int | None:
    """The optional ``limit`` of a listing: a positive integer."""
    raw = params.get("limit")
    if raw is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, int) or raw < 1:
        raise ConfigError(
            f"limit must be a positive integer, not {raw!r}",
            [FieldError("limit", "must be a positive integer")],
        )
    return raw


@method("dp.conntrack")
def _dp_conntrack(ctx: CallContext, params: dict[str, Any]) -> list[dict[str, Any]]:
    limit = _limit(params)
    return _provider(ctx, "conntrack")(params.get("service") or None, limit=limit)


@method("ct.list")
def _ct_list(ctx: CallContext, params: dict[str, Any]) -> list[dict[str, Any]]:
    """Sessions, filtered as an operator would: by service, and by a client or endpoint
    address (a substring, so '198.18.0.1' and '198.18.0.1:4242' both work)."""
    limit = _limit(params)
    wanted = {c: str(params[c]) for c in ("client", "endpoint") if params.get(c)}

    def match(row: dict[str, Any]) -> bool:
        return all(text in str(row.get(column, "")) for column, text in wanted.items())

    return _provider(ctx, "conntrack")(
        params.get("service") or None, limit=limit, match=match if wanted else None
    )


@method("dp.stats")
def _dp_stats(ctx: CallContext, params: dict[str, Any]) -> list[dict[str, Any]]:
    return _provider(ctx, "stats")()


@method("dp.selection")
def _dp_selection(ctx: CallContext, params: dict[str, Any]) -> dict[str, Any]:
    """A service's live selection table read back from the maps: algorithm, slots, each
    endpoint's share and a digest to compare between appliances (`sluice dp selection`)."""
    name = str(params.get("service") or "")
    found = _provider(ctx, "selection")(name)
    if found is None:
        raise ConfigError(f"no service {name!r} in the datapath",
                          [FieldError("service", "not in the datapath")])  # fmt: skip
    return found


@method("dp.status")
def _dp_status(ctx: CallContext, params: dict[str, Any]) -> dict[str, Any]:
    """Read now (`sluice dp status`); ``cached``: the snapshot's reading, for pollers."""
    snap = ctx.state.get("snapshot")
    if params.get("cached") and snap is not None and snap.current().datapath:
        return dict(snap.current().datapath)
    provider = ctx.state.get("datapath")
    return provider() if provider else {"enabled": False}


@method("events.recent")
def _events_recent(ctx: CallContext, params: dict[str, Any]) -> list[dict[str, Any]]:
    """The newest events (endpoint and service health...), newest first."""
    provider = ctx.state.get("events")
    if provider is None:
        return []
    return provider(int(params.get("limit", 100)), params.get("type") or None)


@method("bgp.status")
def _bgp_status(ctx: CallContext, params: dict[str, Any]) -> dict[str, Any]:
    """The BGP speaker, its sessions and the prefixes announced (`sluice bgp status`)."""
    provider = ctx.state.get("bgp")
    return provider() if provider else {"speaker": "disabled", "neighbor": [], "announced": []}


@method("bgp.role")
def _bgp_role(ctx: CallContext, params: dict[str, Any]) -> dict[str, Any]:
    """Set the HA role the announcements follow ("master", "backup", or None): the hook an
    HA role source calls (`sluice bgp role` by hand). Not saved: it lasts until changed."""
    if ctx.session.read_only:
        raise ConfigError("a read-only session cannot set the BGP role",
                          [FieldError("role", "read-only session")])
    set_role = ctx.state.get("bgp-role")
    if set_role is None:
        raise ConfigError("BGP is not running in this daemon", [FieldError("role", "no BGP")])
    role = params.get("role")
    try:
        set_role(role)
    except ValueError as exc:
        raise ConfigError(str(exc), [FieldError("role", str(exc))]) from None
    return _bgp_status(ctx, {})
