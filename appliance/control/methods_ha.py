"""Control-socket methods of the HA pair: `ha.status` and `ha.command` (takeover, release,
resume). The HA door (appliance/ha/door.py) registers its `ha` and `ha-command` providers."""

from __future__ import annotations

from typing import Any

from appliance.config import ConfigError, FieldError
from appliance.control.api import CallContext, method


def _not_running() -> ConfigError:
    return ConfigError("HA is not running in this daemon",
                       [FieldError("/sluice:ha", "not running")])  # fmt: skip


@method("ha.status")
def _ha_status(ctx: CallContext, params: dict[str, Any]) -> dict[str, Any]:
    provider = ctx.state.get("ha")
    if provider is None:
        raise _not_running()
    return dict(provider())


@method("ha.command")
def _ha_command(ctx: CallContext, params: dict[str, Any]) -> dict[str, Any]:
    provider = ctx.state.get("ha-command")
    if provider is None:
        raise _not_running()
    action, instance = params.get("action"), params.get("instance")
    if not isinstance(action, str) or (instance is not None and not isinstance(instance, str)):
        raise ConfigError("action (and instance) must be strings",
                          [FieldError("action", "must be a string")])  # fmt: skip
    try:
        return dict(provider(action, instance))
    except LookupError as exc:
        raise ConfigError(str(exc.args[0]), [FieldError("instance", str(exc.args[0]))]) from None
    except ValueError as exc:
        raise ConfigError(str(exc), [FieldError("action", str(exc))]) from None
