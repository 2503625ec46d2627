"""The console's screens: one per file, each with its CSS beside it."""
