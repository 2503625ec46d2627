"""The control socket's method registry: the call context, `@method`, `dispatch`.

The methods themselves live in one module per concern — `methods_config` (the generic
config API: get, edit, commit, locks, history, import/export), `methods_cli` (the CLI's
lb/ep verbs, each an edit and a commit in one step), `methods_oper` (status and
operational reads: datapath, conntrack, events) — and register here on import. They take
the connection's config `Session` and a params dict, return JSON, and run in the daemon's
config worker thread, never in the event loop.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from appliance.config import ConfigError, FieldError, Session

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


def one_shot(ctx: CallContext, changes: list[dict[str, Any]], comment: str) -> dict[str, Any]:
    """Edit and commit in one step (CLI verbs, import, apply); refused if the session has
    pending edits."""
    session = ctx.session
    if session.has_changes():
        raise ConfigError("this session has uncommitted changes; commit or discard them first")
    try:
        session.edit(changes)
        diff = session.commit(comment)
    except ConfigError:
        session.discard()
        raise
    return commit_result(ctx, diff)


def commit_result(ctx: CallContext, diff: Any) -> dict[str, Any]:
    """What a committer is told: the commit, and any service of it the datapath could not
    program (the datapath applies a commit before the commit call returns)."""
    result: dict[str, Any] = {"commit-id": diff.commit_id, "summary": diff.summary()}
    failing = ctx.state.get("programming-errors")
    if failing is not None:
        touched = set(diff.services_added) | {n for n in diff.services_changed}
        errors = {n: e for n, e in failing().items() if n in touched}
        if errors:
            result["datapath-errors"] = errors
    return result


# Importing the method modules registers their methods (they import this module's names).
from appliance.control import (  # noqa: E402, F401
    methods_cli,
    methods_config,
    methods_fw,
    methods_ha,
    methods_oper,
    methods_qos,
)
