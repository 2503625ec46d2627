"""SNMP agent (v2c, v3 USM) serving the system group, IF-MIB and SLUICE-LB-MIB, with traps."""

from appliance import resources
from northbound.snmp.agent import SnmpAgent, SnmpError

# The MIB module an NMS loads (shipped as package data).
MIB_DIR = resources.mib_dir()

__all__ = ["MIB_DIR", "SnmpAgent", "SnmpError"]
