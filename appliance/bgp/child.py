"""The two processes the `sluice` binary runs for BGP (hidden subcommands, so the
PyInstaller bundle needs no other executable):

- `sluice bgp-speaker CONF`: ExaBGP itself. It dies with the daemon (the kernel's
  parent-death signal), and ExaBGP's session closes, so the peers withdraw the routes.
- `sluice bgp-bridge SOCKET`: ExaBGP's API process (ExaBGP starts it from the config): a
  byte pipe between ExaBGP (stdin/stdout) and the daemon (a Unix socket). When the daemon's
  end closes, the bridge stops ExaBGP (SIGTERM to its parent): no announcement outlives the
  daemon that decided it.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import sys
import threading

PARENT_ENV = "SLUICE_BGP_PARENT"
SPEAKER_ENV = "SLUICE_BGP_SPEAKER"  # the speaker's pid, for the bridge it starts
PR_SET_PDEATHSIG = 1

# ExaBGP's own settings (its environment variables): run as root without dropping
# privileges (it is already confined to the daemon's namespace), no named-pipe CLI (the
# daemon is its only client), acks on, no respawn of the bridge and exit if it dies.
EXABGP_ENV = {
    "exabgp_daemon_user": "root",
    "exabgp_daemon_drop": "false",
    "exabgp_daemon_daemonize": "false",
    "exabgp_api_cli": "false",
    "exabgp_api_ack": "true",
    "exabgp_api_respawn": "false",
    "exabgp_api_terminate": "true",
    "exabgp_log_destination": "stderr",
    "exabgp_log_level": "WARNING",
    "exabgp_log_short": "true",
    # No listening socket: the appliance connects out to its neighbours.
    "exabgp_tcp_bind": "",
}


def _die_with_parent() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    expected = os.environ.get(PARENT_ENV)
    if expected and os.getppid() != int(expected):
        sys.exit(1)  # the daemon died before the signal was armed


def speaker_main(conf: str) -> int:
    _die_with_parent()
    os.environ.update(EXABGP_ENV)
    os.environ[SPEAKER_ENV] = str(os.getpid())
    from exabgp.application.main import main as exabgp_main

    from appliance.bgp import speedups

    speedups.apply()  # one turn per command, no deep copy per route

    # Its settings come from EXABGP_ENV; an empty env file (beside the config) keeps it
    # from looking for, and advising about, /etc/exabgp/exabgp.env.
    envfile = os.path.join(os.path.dirname(os.path.abspath(conf)), "exabgp.env")
    if not os.path.exists(envfile):
        with open(envfile, "w"):
            pass
    sys.argv = ["exabgp", "--env-file", envfile, "server", conf]
    try:
        return int(exabgp_main() or 0)
    except SystemExit as exc:
        return int(exc.code or 0) if not isinstance(exc.code, str) else 1


def bridge_main(path: str) -> int:
    speaker = os.getppid()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
    except OSError as exc:
        print(f"bgp-bridge: cannot reach the daemon at {path}: {exc}", file=sys.stderr)
        _stop_speaker(speaker)
        return 1
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer

    def from_speaker() -> None:
        # ExaBGP's messages (acks, session changes) to the daemon.
        with contextlib.suppress(OSError):
            while data := os.read(stdin.fileno(), 65536):
                sock.sendall(data)
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_WR)

    threading.Thread(target=from_speaker, daemon=True).start()
    # The daemon's commands to ExaBGP, until the daemon goes.
    with contextlib.suppress(OSError):
        while data := sock.recv(65536):
            stdout.write(data)
            stdout.flush()
    _stop_speaker(speaker)
    return 0


def _stop_speaker(speaker: int) -> None:
    # Only the speaker that started this bridge: never a shell that ran it by hand, nor,
    # once the speaker is gone, the reaper that adopted the bridge.
    if os.getppid() == speaker == int(os.environ.get(SPEAKER_ENV) or 0) and speaker > 1:
        with contextlib.suppress(OSError):
            os.kill(speaker, signal.SIGTERM)
