"""The daemon's wiring: which front doors `sluice run` starts, and where their config lives.

Adding a door is one module with the Door shape (appliance/doors.py) and one line here.
Imported only by `sluice run`, so the CLI's other commands stay light.
"""

from __future__ import annotations

from typing import Any

from appliance.bgp.door import BgpDoor
from appliance.doors import DoorSpec
from appliance.ha.door import HaDoor
from northbound.console_ssh import ConsoleSSHDoor
from northbound.http.door import HttpDoor
from northbound.netconf.server import NetconfDoor
from northbound.snmp.agent import SnmpAgent

DOORS: list[DoorSpec] = [
    DoorSpec("netconf", ("management", "netconf"), NetconfDoor),
    DoorSpec("snmp", ("snmp",), SnmpAgent.from_context),
    DoorSpec("console-ssh", ("management", "console-ssh"), ConsoleSSHDoor),
    DoorSpec("http", ("management", "http"), HttpDoor),
    # Not a front door, but the same shape: /bgp in, the speaker's sessions out. Last, so
    # closed first at shutdown: the vips are withdrawn before the rest goes.
    DoorSpec("bgp", ("bgp",), BgpDoor),
]


def ha_door(gate: Any) -> DoorSpec:
    """The HA pair's roles (keepalived, a supervised child): not a front door, but the same
    life cycle. `gate`: the VipGate around the datapath, which the roles drive."""
    return DoorSpec("ha", ("ha",), HaDoor.with_gate(gate))
