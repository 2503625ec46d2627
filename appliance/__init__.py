"""Sluice appliance: the daemon, its config model and store, the datapath driver and the CLI."""

__version__ = "0.1.0"
