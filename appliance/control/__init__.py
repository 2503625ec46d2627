"""The local control socket: the daemon's API for the CLI and the console (JSON lines)."""
