"""Sluice tui package."""
