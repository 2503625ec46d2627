"""Firewall and egress SNAT: rules from the config (model), compiled to tuple-space tables
(compile), checked at commit (validate). Pure Python; appliance/datapath/fwmaps.py writes
the compiled tables into the datapath's maps (bpf/lib/firewall.h)."""
