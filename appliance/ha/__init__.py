"""The HA pair: roles by keepalived (VRRPv3), the datapath following them, the split-brain
guards. door.py ties the pieces together; each other module is one concern."""
