"""Operational state for <get>: the daemon's state providers → config false nodes (JSON).

The providers are the same dict the control socket gets (the datapath reconciler's
`state_providers()`): `service(name)`, `endpoint(name, address, port)` and `datapath()`,
each returning a dict whose keys are already the YANG state leaves (oper-status,
endpoints-up, packets, health, ...), or None when there is nothing to say.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

Doc = dict[str, Any]


def state_source(
    config_service: Any, providers: dict[str, Callable[..., Any]]
) -> Callable[[], Doc]:
    """A zero-argument callable building the state document from running + providers."""

    def build() -> Doc:
        service_fn = providers.get("service")
        endpoint_fn = providers.get("endpoint")
        services = []
        running = config_service.running_doc(effective=True)
        for svc in (running.get("sluice:load-balancer") or {}).get("service", []):
            name = svc["name"]
            entry: Doc = {"name": name}
            state = _call(service_fn, name)
            if state:
                entry["state"] = _counters(state)
            endpoints = []
            for ep in svc.get("endpoint", []):
                ep_state = _call(endpoint_fn, name, ep["address"], ep["port"])
                if ep_state:
                    endpoints.append({"address": ep["address"], "port": ep["port"],
                                      "state": _counters(ep_state)})
            if endpoints:
                entry["endpoint"] = endpoints
            if len(entry) > 1:
                services.append(entry)
        doc: Doc = {}
        if services:
            doc["sluice:load-balancer"] = {"service": services}
        status = _call(providers.get("datapath"))
        if isinstance(status, dict) and isinstance(status.get("interfaces"), dict):
            doc["sluice:datapath"] = {"state": {"attached-interface": sorted(status["interfaces"])}}
        return doc

    return build


def _call(fn: Callable[..., Any] | None, *args: Any) -> Any:
    if fn is None:
        return None
    try:
        return fn(*args)
    except Exception as exc:  # a failing provider must not fail the whole <get>
        log.warning("state provider failed", extra={"error": str(exc)})
        return None


def _counters(state: Doc) -> Doc:
    # Only scalar leaves; anything nested is not part of the model's state containers.
    return {k: v for k, v in state.items() if isinstance(v, str | int | float | bool)}
