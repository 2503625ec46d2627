"""Alarms: conditions an operator must see on every interface until they are cleared.

Raised by the daemon when it runs degraded (the datapath could not compile, load or
attach; the stored config no longer validates) or when the datapath cannot apply a
commit. Each alarm is published on the event bus (type "alarm": NETCONF sends it as a
notification, the event log shows it) and listed by `sluice status`, which the console's
banner and the NETCONF/SNMP state read.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from appliance.events import EventBus


class Alarms:
    def __init__(self, bus: EventBus | None = None) -> None:
        self._bus = bus
        self._lock = threading.Lock()
        self._active: dict[str, dict[str, Any]] = {}

    def raise_(self, name: str, text: str, severity: str = "major") -> None:
        alarm = {"name": name, "severity": severity, "text": text,
                 "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        with self._lock:
            known = self._active.get(name)
            if known is not None and known["text"] == text:
                return
            self._active[name] = alarm
        self._publish({"type": "alarm", "state": "raised", **alarm})

    def clear(self, name: str) -> None:
        with self._lock:
            alarm = self._active.pop(name, None)
        if alarm is not None:
            self._publish({"type": "alarm", "state": "cleared", **alarm})

    def active(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(a) for a in self._active.values()]

    def _publish(self, event: dict[str, Any]) -> None:
        if self._bus is not None:
            self._bus.publish(event)
