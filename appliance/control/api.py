"""The methods of the control socket: thin translations onto the config service.

Each method takes the connection's config `Session` and a params dict and returns JSON.
They run in the daemon's config worker thread, never in the event loop.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from appliance import __version__
from appliance.config import ConfigError, FieldError, Session
from appliance.config.paths import MODULE, service_path

Handler = Callable[["CallContext", dict[str, Any]], Any]
METHODS: dict[str, Handler] = {}


@dataclass
class CallContext:
    session: Session
    # Operational state providers (datapath counters, prober health) register here.
    state: dict[str, Callable[..., Any]] = field(default_factory=dict)
    started: float = field(default_factory=time.time)


def method(name: str) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        METHODS[name] = fn
        return fn

    return register


def dispatch(ctx: CallContext, name: str, params: dict[str, Any]) -> Any:
    handler = METHODS.get(name)
    if handler is None:
        raise ConfigError(
            f"unknown method {name!r}", [FieldError("method", f"unknown method {name!r}")]
        )
    return handler(ctx, params)


def _one_shot(ctx: CallContext, changes: list[dict[str, Any]], comment: str) -> dict[str, Any]:
    """Edit and commit in one step (CLI verbs); refused if the session has pending edits."""
    session = ctx.session
    if session.has_changes():
        raise ConfigError("this session has uncommitted changes; commit or discard them first")
    try:
        session.edit(changes)
        diff = session.commit(comment)
    except ConfigError:
        session.discard()
        raise
    return {"commit-id": diff.commit_id, "summary": diff.summary()}


def _normalise_doc(doc: Any) -> dict[str, Any]:
    """Accept top-level keys with or without the module prefix (hand-written files)."""
    if not isinstance(doc, dict):
        raise ConfigError(
            "a configuration document is a JSON/YAML object",
            [FieldError("/", "expected an object with keys such as load-balancer")],
        )
    return {k if ":" in k else f"{MODULE}:{k}": v for k, v in doc.items()}


# -- generic config access (the console and scripts use these) ---------------------------
@method("hello")
def _hello(ctx: CallContext, params: dict[str, Any]) -> dict[str, Any]:
    s = ctx.session
    return {"version": __version__, "session-id": s.id, "user": s.user, "read-only": s.read_only}


@method("session.identify")
def _identify(ctx: CallContext, params: dict[str, Any]) -> dict[str, Any]:
    """A trusted local client (the SSH console, running as root for a logged-in user) names
    the user it acts for: history records that user, and a read-only user's session refuses
    every change. Privileges only go down: read-only cannot be lifted again."""
    s = ctx.session
    user = str(params.get("user") or "").strip()
    if not user:
        raise ConfigError("session.identify needs a user", [FieldError("user", "missing")])
    if s.has_changes():
        raise ConfigError("identify before editing: this session has uncommitted changes")
    s.user = user
    s.interface = str(params.get("interface") or "console")
    s.read_only = s.read_only or bool(params.get("read-only", False))
    return _hello(ctx, params)


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
    if "datapath" in ctx.state:
        status["datapath"] = ctx.state["datapath"]()
    return status


@method("config.get")
def _get(ctx: CallContext, params: dict[str, Any]) -> Any:
    return ctx.session.get(
        params.get("path", "/"),
        params.get("datastore", "running"),
        effective=bool(params.get("effective", False)),
    )


@method("config.edit")
def _edit(ctx: CallContext, params: dict[str, Any]) -> None:
    changes = params.get("changes")
    if not isinstance(changes, list):
        raise ConfigError(
            "params.changes must be a list", [FieldError("changes", "expected a list")]
        )
    ctx.session.edit(changes)


@method("config.validate")
def _validate(ctx: CallContext, params: dict[str, Any]) -> dict[str, bool]:
    ctx.session.validate()
    return {"valid": True}


@method("config.commit")
def _commit(ctx: CallContext, params: dict[str, Any]) -> dict[str, Any]:
    diff = ctx.session.commit(str(params.get("comment", "")))
    return {"commit-id": diff.commit_id, "summary": diff.summary()}


@method("config.discard")
def _discard(ctx: CallContext, params: dict[str, Any]) -> None:
    ctx.session.discard()


@method("config.pending")
def _pending(ctx: CallContext, params: dict[str, Any]) -> dict[str, Any]:
    return ctx.session.pending_diff()


@method("config.lock")
def _lock(ctx: CallContext, params: dict[str, Any]) -> None:
    ctx.session.lock(params.get("datastore", "running"))


@method("config.unlock")
def _unlock(ctx: CallContext, params: dict[str, Any]) -> None:
    ctx.session.unlock(params.get("datastore", "running"))


@method("config.history")
def _history(ctx: CallContext, params: dict[str, Any]) -> list[dict[str, Any]]:
    return ctx.session.service.history(int(params.get("limit", 50)))


@method("config.show-commit")
def _show_commit(ctx: CallContext, params: dict[str, Any]) -> dict[str, Any]:
    svc = ctx.session.service
    commit_id = int(params.get("id") or svc.commit_id)
    return svc.commit_diff(commit_id)


@method("config.rollback")
def _rollback(ctx: CallContext, params: dict[str, Any]) -> dict[str, Any]:
    diff = ctx.session.rollback(int(params["id"]), str(params.get("comment", "")))
    return {"commit-id": diff.commit_id, "summary": diff.summary()}


@method("config.export")
def _export(ctx: CallContext, params: dict[str, Any]) -> dict[str, Any]:
    return ctx.session.service.running_doc()


@method("config.import")
def _import(ctx: CallContext, params: dict[str, Any]) -> dict[str, Any]:
    """Replace the whole running config with a document."""
    doc = _normalise_doc(params.get("config"))
    change = {"op": "replace", "path": "/", "value": doc}
    return _one_shot(ctx, [change], str(params.get("comment", "import")))


@method("config.apply")
def _apply(ctx: CallContext, params: dict[str, Any]) -> dict[str, Any]:
    """Declare the services and sections a document names; others are left alone."""
    doc = _normalise_doc(params.get("config"))
    changes: list[dict[str, Any]] = []
    for key, content in doc.items():
        name = key.split(":", 1)[1]
        if name == "load-balancer" and isinstance(content, dict):
            for svc in content.get("service", []):
                svc_name = svc.get("name") if isinstance(svc, dict) else None
                if not svc_name:
                    raise ConfigError(
                        "every service needs a name",
                        [FieldError(f"/{MODULE}:load-balancer/service", "missing name")],
                    )
                changes.append({"op": "replace", "path": service_path(svc_name), "value": svc})
            rest = {k: v for k, v in content.items() if k != "service"}
            if rest:
                changes.append({"op": "merge", "path": f"/{key}", "value": rest})
        else:
            changes.append({"op": "replace", "path": f"/{MODULE}:{name}", "value": content})
    return _one_shot(ctx, changes, str(params.get("comment", "apply")))


@method("config.save")
def _save(ctx: CallContext, params: dict[str, Any]) -> None:
    ctx.session.copy_running_to_startup()


# -- load-balancer nouns (the CLI's lb and ep verbs) --------------------------------------
def _service_state(ctx: CallContext, name: str) -> dict[str, Any] | None:
    provider = ctx.state.get("service")
    return provider(name) if provider else None


@method("lb.list")
def _lb_list(ctx: CallContext, params: dict[str, Any]) -> list[dict[str, Any]]:
    """Every service with its state. ``brief``: without the endpoint lists (only
    ``endpoint-count``), for pollers: at 10,000 services x 32 endpoints the full list is
    ~30 MB of JSON and seconds of daemon time, the brief one a few MB."""
    brief = bool(params.get("brief", False))
    svc = ctx.session.service
    with svc._mutex:
        services = list(svc.services_effective.values())
    out = []
    for s in services:
        if brief:
            item = {k: v for k, v in s.items() if k != "endpoint"}
            item["endpoint-count"] = len(s.get("endpoint", []))
        else:
            item = dict(s)
        state = _service_state(ctx, s["name"])
        if state is not None:
            item["state"] = state
        out.append(item)
    return out


@method("lb.show")
def _lb_show(ctx: CallContext, params: dict[str, Any]) -> dict[str, Any]:
    name = str(params.get("name", ""))
    item = dict(ctx.session.get(service_path(name), effective=True))
    state = _service_state(ctx, name)
    if state is not None:
        item["state"] = state
    return item


@method("lb.add")
def _lb_add(ctx: CallContext, params: dict[str, Any]) -> dict[str, Any]:
    service = params.get("service")
    if not isinstance(service, dict) or not service.get("name"):
        raise ConfigError("lb.add needs a service with a name", [FieldError("name", "missing")])
    change = {"op": "create", "path": service_path(service["name"]), "value": service}
    return _one_shot(ctx, [change], str(params.get("comment", "")))


@method("lb.delete")
def _lb_delete(ctx: CallContext, params: dict[str, Any]) -> dict[str, Any]:
    change = {"op": "delete", "path": service_path(str(params.get("name", "")))}
    return _one_shot(ctx, [change], str(params.get("comment", "")))


@method("ep.list")
def _ep_list(ctx: CallContext, params: dict[str, Any]) -> list[dict[str, Any]]:
    wanted = params.get("service")
    svc = ctx.session.service
    with svc._mutex:
        services = [s for n, s in svc.services_effective.items() if not wanted or n == wanted]
    if wanted and not services:
        ctx.session.get(service_path(str(wanted)))  # raises NotFoundError naming the path
    health = ctx.state.get("endpoint")
    rows = []
    for s in services:
        for ep in s.get("endpoint", []):
            row = {"service": s["name"], **ep}
            if health:
                row["state"] = health(s["name"], ep["address"], ep["port"])
            rows.append(row)
    return rows


@method("ep.set")
def _ep_set(ctx: CallContext, params: dict[str, Any]) -> dict[str, Any]:
    path = (
        f"{service_path(str(params.get('service', '')))}/endpoint"
        f"[address='{params.get('address', '')}'][port='{params.get('port', '')}']"
    )
    ctx.session.get(path)  # refuse to create an endpoint by accident: it must exist
    value = {k: params[k] for k in ("admin-state", "weight") if k in params}
    return _one_shot(ctx, [{"op": "merge", "path": path, "value": value}], "")


# -- datapath operational state (sluice ct / stats / dp) ----------------------------------
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


@method("events.recent")
def _events_recent(ctx: CallContext, params: dict[str, Any]) -> list[dict[str, Any]]:
    """The newest events (endpoint and service health...), newest first."""
    provider = ctx.state.get("events")
    if provider is None:
        return []
    return provider(int(params.get("limit", 100)), params.get("type") or None)


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


@method("dp.status")
def _dp_status(ctx: CallContext, params: dict[str, Any]) -> dict[str, Any]:
    provider = ctx.state.get("datapath")
    return provider() if provider else {"enabled": False}
