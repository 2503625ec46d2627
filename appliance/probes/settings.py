"""From effective config to probe targets: service probe settings with endpoint overrides.

The service dicts are the config service's *effective* ones (every default filled in), so a
missing leaf here means "not set" only for the optional leaves (port, request, ...).
"""

from __future__ import annotations

import contextlib
import ipaddress
from dataclasses import dataclass
from typing import Any

from appliance.probes.base import ProbeSpec

Key = tuple[str, str, int]  # (service, address, endpoint port)

ADMIN_ENABLED = "enabled"


@dataclass(frozen=True, slots=True)
class Timing:
    interval: float  # seconds between probe starts
    timeout: float
    retries: int  # consecutive failures before down
    rise: int  # consecutive successes before up
    hold_down: float  # minimum seconds down before up again


@dataclass(frozen=True, slots=True)
class TargetConfig:
    spec: ProbeSpec
    timing: Timing
    admin: str  # enabled | disabled | drain (disabled also when the service is)

    @property
    def probed(self) -> bool:
        return self.admin == ADMIN_ENABLED and self.spec.type != "none"


def endpoint_key(service: str, address: str, port: int) -> Key:
    """The target key; the address in canonical form so '2001:DB8::1' finds '2001:db8::1'."""
    with contextlib.suppress(ValueError):
        address = ipaddress.ip_address(address).compressed
    return (service, address, int(port))


def targets_of(service: dict[str, Any], time_scale: float = 1.0) -> dict[Key, TargetConfig]:
    """Every endpoint of one effective service dict, resolved.

    `time_scale` multiplies every duration (interval, timeout, hold-down): 1.0 in the
    daemon; tests and benchmarks shrink it to run config-shaped schedules quickly.
    """
    name = service["name"]
    probe = service.get("health-probe", {})
    service_admin = service.get("admin-state", ADMIN_ENABLED)
    out: dict[Key, TargetConfig] = {}
    for ep in service.get("endpoint", []):
        over = ep.get("health-probe", {})

        def pick(leaf: str, default: Any, over: dict[str, Any] = over) -> Any:
            return over.get(leaf, probe.get(leaf, default))

        timing = Timing(
            interval=float(pick("interval", 10)) * time_scale,
            timeout=float(pick("timeout", 2)) * time_scale,
            retries=int(pick("retries", 2)),
            rise=int(pick("successes-before-up", 2)),
            hold_down=float(pick("hold-down", 0)) * time_scale,
        )
        key = endpoint_key(name, ep["address"], ep["port"])
        spec = ProbeSpec(
            type=probe.get("type", "none"),
            address=key[1],
            # Endpoint override, else the service probe's port, else the endpoint's own.
            port=int(over.get("port") or probe.get("port") or ep["port"]),
            timeout=timing.timeout,
            request=probe.get("request"),
            expected_response=probe.get("expected-response"),
            http_method=probe.get("http-method", "GET"),
            http_path=probe.get("http-path", "/"),
            expected_status=int(probe.get("expected-status", 200)),
            ca_bundle=probe.get("ca-bundle"),
            client_certificate=probe.get("client-certificate"),
            client_key=probe.get("client-key"),
        )
        admin = ep.get("admin-state", ADMIN_ENABLED)
        if service_admin != ADMIN_ENABLED:
            admin = "disabled"
        out[key] = TargetConfig(spec, timing, admin)
    return out
