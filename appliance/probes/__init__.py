"""Endpoint health probes: probe types, the scheduler and the health state machine.

Public surface: `Prober` (see appliance/probes/scheduler.py for how the daemon wires it),
`ProbeRunner`/`ProbeSpec`/`ProbeResult` to run a single probe, and the state names.
"""

from appliance.probes.base import ProbeResult, ProbeSpec
from appliance.probes.runner import PROBE_TYPES, ProbeRunner
from appliance.probes.scheduler import EVENT_TYPE, Prober
from appliance.probes.state import ADMIN_DISABLED, DEGRADED, DOWN, UP

__all__ = [
    "ADMIN_DISABLED",
    "DEGRADED",
    "DOWN",
    "EVENT_TYPE",
    "PROBE_TYPES",
    "UP",
    "ProbeResult",
    "ProbeRunner",
    "ProbeSpec",
    "Prober",
]
