"""Control-socket methods: the generic config API (the console and scripts use these)."""

from __future__ import annotations

from typing import Any

from appliance import __version__
from appliance.config import ConfigError, FieldError
from appliance.config.paths import MODULE, service_path
from appliance.control.api import CallContext, commit_result, method, one_shot


def _normalise_doc(doc: Any) -> dict[str, Any]:
    """Accept top-level keys with or without the module prefix (hand-written files)."""
    if not isinstance(doc, dict):
        raise ConfigError(
            "a configuration document is a JSON/YAML object",
            [FieldError("/", "expected an object with keys such as load-balancer")],
        )
    return {k if ":" in k else f"{MODULE}:{k}": v for k, v in doc.items()}


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
    if params.get("account"):
        # A configured user (the SSH and serial consoles log them in): its role is read
        # again at every change, so deleting or demoting it takes effect in open consoles.
        s.account = user
    return _hello(ctx, params)


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
    return commit_result(ctx, diff)


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
    return one_shot(ctx, [change], str(params.get("comment", "import")))


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
    return one_shot(ctx, changes, str(params.get("comment", "apply")))


@method("config.save")
def _save(ctx: CallContext, params: dict[str, Any]) -> None:
    ctx.session.copy_running_to_startup()
