"""Control-socket methods of `sluice qos` and `sluice mirror`: policers, their attachments
and mirror sessions, each change an edit and a commit in one step (refused while the session
has uncommitted edits); `qos.show` / `mirror.show` add the datapath's counters."""

from __future__ import annotations

from typing import Any

from appliance.config import ConfigError, FieldError
from appliance.control.api import CallContext, method, one_shot

QOS = "/sluice:qos"
MIRROR = "/sluice:mirror"
# The list keys of each attachment kind (/sluice:qos/<kind>).
ATTACH_KEYS = {
    "interface": ("name", "direction"),
    "service": ("name",),
    "endpoint": ("service", "address", "port"),
    "client-prefix": ("prefix",),
}
UINT64_LEAVES = ("cir", "pir")  # RFC 7951: a uint64 is a JSON string


def _quote(field: str, value: Any) -> str:
    text = str(value)
    if "'" not in text:
        return f"'{text}'"
    if '"' not in text:
        return f'"{text}"'
    raise ConfigError(f"{field} holds both quote characters", [FieldError(field, "bad value")])


def _name(params: dict[str, Any], key: str = "name") -> str:
    value = params.get(key)
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{key} is missing", [FieldError(key, "missing")])
    return value


def _attachment_path(kind: Any, keys: Any) -> str:
    if kind not in ATTACH_KEYS:
        raise ConfigError(f"kind must be one of {', '.join(ATTACH_KEYS)}",
                          [FieldError("kind", f"unknown attachment kind {kind!r}")])  # fmt: skip
    if not isinstance(keys, dict):
        raise ConfigError("keys must be an object", [FieldError("keys", "not an object")])
    preds = ""
    for k in ATTACH_KEYS[kind]:
        if keys.get(k) in (None, ""):
            raise ConfigError(f"{kind} needs {k}", [FieldError(f"{QOS}/{kind}/{k}", "missing")])
        preds += f"[{k}={_quote(k, keys[k])}]"
    return f"{QOS}/{kind}{preds}"


def _state(ctx: CallContext) -> dict[str, Any]:
    provider = ctx.state.get("qos")
    return provider() if provider is not None else {}


def _entry_path(list_path: str, name: str) -> str:
    return f"{list_path}[name={_quote('name', name)}]"


def _set_entry(ctx: CallContext, params: dict[str, Any], key: str, list_path: str,
               value_of: Any = dict) -> dict[str, Any]:  # fmt: skip
    """Create or replace the named entry params[key] of list_path in one commit."""
    entry = params.get(key)
    if not isinstance(entry, dict):
        raise ConfigError(f"{key} must be an object", [FieldError(key, "not an object")])
    change = {"op": "replace", "path": _entry_path(list_path, _name(entry)),
              "value": value_of(entry)}  # fmt: skip
    return one_shot(ctx, [change], str(params.get("comment", "")))


def _delete_entry(ctx: CallContext, params: dict[str, Any], list_path: str) -> dict[str, Any]:
    change = {"op": "delete", "path": _entry_path(list_path, _name(params))}
    return one_shot(ctx, [change], str(params.get("comment", "")))


@method("qos.set-policer")
def _set_policer(ctx: CallContext, params: dict[str, Any]) -> dict[str, Any]:
    """Create or replace a policer (its buckets start full again)."""
    return _set_entry(ctx, params, "policer", f"{QOS}/policer",
                      lambda p: {k: (str(v) if k in UINT64_LEAVES and isinstance(v, int) else v)
                                 for k, v in p.items()})  # fmt: skip


@method("qos.delete-policer")
def _delete_policer(ctx: CallContext, params: dict[str, Any]) -> dict[str, Any]:
    return _delete_entry(ctx, params, f"{QOS}/policer")


@method("qos.attach")
def _attach(ctx: CallContext, params: dict[str, Any]) -> dict[str, Any]:
    """Police an interface, service, endpoint or client prefix with a policer."""
    path = _attachment_path(params.get("kind"), params.get("keys"))
    value = {**params["keys"], "policer": _name(params, "policer")}
    return one_shot(ctx, [{"op": "replace", "path": path, "value": value}],
                    str(params.get("comment", "")))  # fmt: skip


@method("qos.detach")
def _detach(ctx: CallContext, params: dict[str, Any]) -> dict[str, Any]:
    path = _attachment_path(params.get("kind"), params.get("keys"))
    return one_shot(ctx, [{"op": "delete", "path": path}], str(params.get("comment", "")))


@method("qos.show")
def _qos_show(ctx: CallContext, params: dict[str, Any]) -> dict[str, Any]:
    """/qos as configured (defaults filled), each policer with its color counters."""
    try:
        doc = dict(ctx.session.get(QOS, effective=True))
    except ConfigError:
        doc = {}
    counters = _state(ctx).get("policer", {})
    doc["policer"] = [{**p, "state": counters.get(p["name"], {})}
                      for p in doc.get("policer", [])]  # fmt: skip
    return doc


@method("mirror.set")
def _mirror_set(ctx: CallContext, params: dict[str, Any]) -> dict[str, Any]:
    """Create or replace a mirror session."""
    return _set_entry(ctx, params, "session", f"{MIRROR}/session")


@method("mirror.delete")
def _mirror_delete(ctx: CallContext, params: dict[str, Any]) -> dict[str, Any]:
    return _delete_entry(ctx, params, f"{MIRROR}/session")


@method("mirror.show")
def _mirror_show(ctx: CallContext, params: dict[str, Any]) -> dict[str, Any]:
    try:
        doc = dict(ctx.session.get(MIRROR, effective=True))
    except ConfigError:
        doc = {}
    counters = _state(ctx).get("mirror", {})
    doc["session"] = [{**s, "state": counters.get(s["name"], {})}
                      for s in doc.get("session", [])]  # fmt: skip
    return doc
