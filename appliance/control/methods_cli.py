"""Control-socket methods: the CLI's load-balancer nouns (`sluice lb ...`, `sluice ep ...`).

Each changing verb is an edit and a commit in one step, refused while the session has
uncommitted edits of its own.
"""

from __future__ import annotations

from typing import Any

from appliance.algorithm import default_algorithm, service_algorithm
from appliance.config import ConfigError, FieldError
from appliance.config.paths import service_path
from appliance.control.api import CallContext, method, one_shot


def _service_state(ctx: CallContext, name: str, cached: bool = False) -> dict[str, Any] | None:
    """``cached``: from the state snapshot (pollers), else read from the datapath now."""
    snap = ctx.state.get("snapshot")
    if cached and snap is not None:
        return dict(snap.current().service(name)) or None
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
        default = default_algorithm(svc.sections_effective.get("bgp"))
    out = []
    for s in services:
        if brief:
            item = {k: v for k, v in s.items() if k != "endpoint"}
            item["endpoint-count"] = len(s.get("endpoint", []))
        else:
            item = dict(s)
        item["algorithm"] = service_algorithm(s, default)  # what it runs (the YANG has no default)
        # The consoles poll the brief list every 2 s: 10,000 datapath reads (each taking
        # the datapath lock) per poll and per console, unless read from the snapshot.
        state = _service_state(ctx, s["name"], cached=brief)
        if state is not None:
            item["state"] = state
        out.append(item)
    return out


@method("lb.show")
def _lb_show(ctx: CallContext, params: dict[str, Any]) -> dict[str, Any]:
    name = str(params.get("name", ""))
    item = dict(ctx.session.get(service_path(name), effective=True))
    svc = ctx.session.service
    with svc._mutex:
        default = default_algorithm(svc.sections_effective.get("bgp"))
    item["algorithm"] = service_algorithm(item, default)
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
    return one_shot(ctx, [change], str(params.get("comment", "")))


@method("lb.delete")
def _lb_delete(ctx: CallContext, params: dict[str, Any]) -> dict[str, Any]:
    change = {"op": "delete", "path": service_path(str(params.get("name", "")))}
    return one_shot(ctx, [change], str(params.get("comment", "")))


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
    return one_shot(ctx, [{"op": "merge", "path": path, "value": value}], "")
