"""Service up/down from endpoint health: a service is down when no endpoint takes new flows.

Listens to the prober's endpoint-state events and publishes one "service-state" event per
transition (NETCONF notifications and the console's event log read them from the bus).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from appliance.events import EventBus
from appliance.probes.scheduler import EVENT_TYPE as ENDPOINT_EVENT
from appliance.probes.scheduler import iso_time

log = logging.getLogger(__name__)

EVENT_TYPE = "service-state"


class ServiceStateTracker:
    def __init__(self, bus: EventBus, endpoints_up: Callable[[str], int]) -> None:
        self.bus = bus
        self.endpoints_up = endpoints_up
        # Endpoints start up (see the prober), so a service starts up until told otherwise.
        self._up: dict[str, bool] = {}
        bus.subscribe(self._on_endpoint, ENDPOINT_EVENT)

    def _on_endpoint(self, event: dict[str, Any]) -> None:
        service = str(event.get("service"))
        up = self.endpoints_up(service) > 0
        was = self._up.get(service, True)
        self._up[service] = up
        if up == was:
            return
        old, new = ("up", "down") if was else ("down", "up")
        level = logging.WARNING if not up else logging.INFO
        log.log(level, "service state changed", extra={"service": service, "new": new})
        self.bus.publish(
            {"type": EVENT_TYPE, "service": service, "old": old, "new": new,
             "time": iso_time(time.time())}
        )  # fmt: skip

    def state(self, service: str) -> str:
        return "up" if self._up.get(service, True) else "down"
