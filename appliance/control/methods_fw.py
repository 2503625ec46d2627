"""Control-socket methods of the firewall and egress SNAT (`sluice fw ...`, `sluice snat
...`): each changing verb is one edit and one commit; `fw.list` / `snat.list` return the
rules with their hit counters and the compiler's warnings (shadowed, overlapping)."""

from __future__ import annotations

from typing import Any

from appliance.config import ConfigError, FieldError
from appliance.control.api import CallContext, method, one_shot
from appliance.firewall.compile import lint

TABLES = ("firewall", "snat")
LIVE_KEYS = ("generation", "firewall", "snat", "snat-active", "own-flows")


def _table(params: dict[str, Any]) -> str:
    table = params.get("table", "firewall")
    if table not in TABLES:
        raise ConfigError(f"unknown table {table!r}", [FieldError("table", "firewall or snat")])
    return str(table)


def _rule_path(table: str, name: str) -> str:
    return f"/sluice:{table}/rule[name='{name}']"


def _state(ctx: CallContext) -> dict[str, Any]:
    provider = ctx.state.get("firewall")
    return dict(provider() or {}) if provider else {}


def _warnings(ctx: CallContext, table: str) -> list[str]:
    doc = ctx.session.service.running_doc(effective=True)
    return [w for w in lint(doc) if w.startswith(f"/sluice:{table}")]


def _result(ctx: CallContext, result: dict[str, Any], table: str) -> dict[str, Any]:
    """A commit's result, with the compiler's warnings about this table's rules."""
    return {**result, "warnings": _warnings(ctx, table)}


@method("fw.add")
def _fw_add(ctx: CallContext, params: dict[str, Any]) -> dict[str, Any]:
    table = _table(params)
    rule = params.get("rule")
    if not isinstance(rule, dict) or not rule.get("name"):
        raise ConfigError("fw.add needs a rule with a name", [FieldError("name", "missing")])
    change = {"op": "create", "path": _rule_path(table, rule["name"]), "value": rule}
    return _result(ctx, one_shot(ctx, [change], str(params.get("comment", ""))), table)


@method("fw.delete")
def _fw_delete(ctx: CallContext, params: dict[str, Any]) -> dict[str, Any]:
    table = _table(params)
    change = {"op": "delete", "path": _rule_path(table, str(params.get("name", "")))}
    return one_shot(ctx, [change], str(params.get("comment", "")))


@method("fw.policy")
def _fw_policy(ctx: CallContext, params: dict[str, Any]) -> dict[str, Any]:
    name, policy = str(params.get("interface", "")), params.get("policy")
    path = f"/sluice:firewall/interface[name='{name}']"
    value = {"name": name, "default-policy": policy}
    result = one_shot(ctx, [{"op": "merge", "path": path, "value": value}], "")
    return _result(ctx, result, "firewall")


@method("fw.list")
def _fw_list(ctx: CallContext, params: dict[str, Any]) -> dict[str, Any]:
    """Rules of one table (by preference) with hit counters, interface policies, warnings."""
    table = _table(params)
    doc = ctx.session.service.running_doc(effective=True)
    section = doc.get(f"sluice:{table}") or {}
    state = _state(ctx)
    hits = {r["name"]: r for r in state.get("rules", []) if r["table"] == table}
    rules = []
    for rule in sorted(section.get("rule", []), key=lambda r: (r.get("preference", 0), r["name"])):
        counters = hits.get(rule["name"], {})
        rules.append({**rule, "packets": counters.get("packets"), "bytes": counters.get("bytes"),
                      "sessions": counters.get("sessions")})  # fmt: skip
    return {
        "rules": rules,
        "interfaces": section.get("interface", []) if table == "firewall" else [],
        "warnings": _warnings(ctx, table),
        "error": state.get("error"),
        "live": {k: state.get(k) for k in LIVE_KEYS},
    }


@method("fw.summary")
def _fw_summary(ctx: CallContext, params: dict[str, Any]) -> dict[str, Any]:
    """One line's worth for the console (polled): from the state snapshot, no map reads."""
    snap = ctx.state.get("snapshot")
    fw = dict((snap.current().datapath if snap is not None else {}).get("firewall") or {})
    rules = fw.get("rules") or []
    sections = ctx.session.service.sections or {}  # the config's count, datapath or not
    counts = {t: len((sections.get(t) or {}).get("rule", [])) for t in TABLES}
    return {
        "firewall": bool(fw.get("firewall")),
        "snat": bool(fw.get("snat")),
        "rules": counts["firewall"],
        "snat-rules": counts["snat"],
        "hits": sum(int(r.get("packets") or 0) for r in rules),
        "warnings": len(fw.get("warnings") or []),
        "error": fw.get("error"),
    }
