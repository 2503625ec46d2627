"""`make demo`: start Sluice with a sample service and show what to try.

Runs the daemon on its own database and socket under /run/sluice-demo, loads a sample
service through the CLI (exactly as a user would), prints the commands to try, and
cleans up on Ctrl-C or `make demo-stop`.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

DEMO_DIR = Path("/run/sluice-demo")
PIDFILE = DEMO_DIR / "daemon.pid"
SLUICE = [sys.executable, "-m", "appliance.cli.main"]
ENV = {
    **os.environ,
    "SLUICE_DB": str(DEMO_DIR / "sluice.db"),
    "SLUICE_SOCKET": str(DEMO_DIR / "sluice.sock"),
}


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SLUICE, *args], env=ENV, capture_output=True, text=True, timeout=60)


def stop() -> int:
    if PIDFILE.exists():
        pid = int(PIDFILE.read_text())
        try:
            os.kill(pid, signal.SIGTERM)
            print(f"demo: stopped the daemon (pid {pid})")
        except ProcessLookupError:
            pass
        PIDFILE.unlink(missing_ok=True)
    else:
        print("demo: not running")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--stop", action="store_true", help="stop a running demo")
    args = parser.parse_args()
    if args.stop:
        return stop()
    DEMO_DIR.mkdir(parents=True, exist_ok=True)
    # SIGTERM (make demo-stop, a closing terminal) cleans up like Ctrl-C does.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    log = open(DEMO_DIR / "daemon.log", "ab")  # noqa: SIM115 - the daemon keeps it
    daemon = subprocess.Popen([*SLUICE, "run"], env=ENV, stdout=log, stderr=log)
    PIDFILE.write_text(str(daemon.pid))
    try:
        deadline = time.monotonic() + 20
        while cli("status").returncode != 0:
            if daemon.poll() is not None or time.monotonic() > deadline:
                print((DEMO_DIR / "daemon.log").read_text()[-2000:], file=sys.stderr)
                print("demo: the daemon did not start", file=sys.stderr)
                return 1
            time.sleep(0.1)
        if not any(s for s in cli("lb", "list", "-o", "json").stdout.strip("[]\n")):
            added = cli(
                "lb", "add", "web", "--vip", "198.18.0.10", "--port", "80",
                "--endpoints", "198.18.1.1:8080,198.18.1.2:8080,198.18.1.3:8080",
                "--probe", "http", "--probe-path", "/", "-m", "demo service",
            )  # fmt: skip
            if added.returncode != 0:
                print(added.stderr, file=sys.stderr)
                return 1
        print(cli("lb", "list").stdout)
        env = f"SLUICE_SOCKET={ENV['SLUICE_SOCKET']}"
        print(
            "Sluice is running (config in "
            f"{ENV['SLUICE_DB']}). In another shell, try:\n"
            f"  {env} .venv/bin/sluice lb list\n"
            f"  {env} .venv/bin/sluice ep list\n"
            f"  {env} .venv/bin/sluice config history\n"
            f"  {env} .venv/bin/sluice lb add api --vip 198.18.0.11 --port 443 "
            "--endpoints 198.18.1.4:8443\n"
            "Not in this demo yet: traffic through the eBPF datapath, the console, NETCONF\n"
            "and SNMP (they land with their own issues; see the README).\n"
            "Ctrl-C (or `make demo-stop`) stops it."
        )
        daemon.wait()
    except KeyboardInterrupt:
        print("\ndemo: stopping")
    finally:
        if daemon.poll() is None:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(20)
        PIDFILE.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
