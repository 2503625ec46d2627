"""Sluice northbound package."""
