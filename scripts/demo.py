"""`make demo`: Sluice balancing real traffic between network namespaces.

Builds a small topology on this machine (a client and three HTTP backends, each a network
namespace, joined to a load-balancer namespace by veth pairs; addresses from the
198.18.0.0/15 benchmarking range, nothing leaves the machine), starts `sluice run` with the
eBPF datapath inside the load-balancer namespace, loads a sample service through the CLI
exactly as a user would (round-robin, HTTP health probes), shows a few requests going
round, prints what to try, and removes everything on Ctrl-C or `make demo-stop`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent / "tests"
sys.path.insert(0, str(TESTS))

import netkit  # noqa: E402 - the namespace kit: safe addresses, servers, guaranteed clean-up
from dpkit import VIP4, backend_addr, build_lbnet  # noqa: E402

from appliance.config.passwords import hash_password  # noqa: E402

DEMO_DIR = Path("/run/sluice-demo")
PIDFILE = DEMO_DIR / "demo.pid"
PIN_DIR = Path("/sys/fs/bpf/sluice-demo")
SLUICE = [sys.executable, "-m", "sluice"]
DEMO_USER, DEMO_PASSWORD = "demo", "demo-only-password"  # a demo credential, never a default
SNMP_COMMUNITY = "demo-public"


# The demo's hosts are named demo<host> (dpkit.build_lbnet prefix), so its namespaces are
# sl-<topology id>-demo<host>: `--stop` finds them with no state at all (tests never use it).
DEMO_PREFIX = "demo"
DEMO_NS = re.compile(rf"^sl-([0-9a-f]{{8}})-{DEMO_PREFIX}[a-z0-9]*$")
DEMO_ENV = {
    "SLUICE_DB": str(DEMO_DIR / "sluice.db"),
    "SLUICE_SOCKET": str(DEMO_DIR / "sluice.sock"),
    "SLUICE_PIN_DIR": str(PIN_DIR),
    "SLUICE_DATAPATH": "on",
}


def _alive(pid: int) -> bool:
    """True if ``pid`` runs (a zombie, dead but not yet reaped by its parent, does not)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status


def _wait_gone(pids: list[int], timeout: float) -> list[int]:
    """Poll until every pid has exited or the deadline passes; return those still alive."""
    deadline = time.monotonic() + timeout
    while (left := [p for p in pids if _alive(p)]) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


def _stop(pids: list[int], timeout: float) -> None:
    """SIGTERM, wait up to ``timeout``, SIGKILL what is left."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    for pid in _wait_gone(pids, timeout):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    _wait_gone(pids, 5)


def _demo_process() -> int | None:
    """The pid of the running `demo.py` (from the pid file), or None; a stale or reused pid
    (a process that is not this script) is not the demo."""
    try:
        pid = int(PIDFILE.read_text())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        return None
    if not _alive(pid) or not any(arg.endswith(b"demo.py") for arg in cmdline):
        return None
    return pid


def _demo_daemons() -> list[int]:
    """Daemons of a demo, found by their environment (the demo's socket and pin dir)."""
    want = {f"{k}={v}".encode() for k, v in DEMO_ENV.items() if k != "SLUICE_DATAPATH"}
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            env = set((proc / "environ").read_bytes().split(b"\0"))
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if want <= env and b"run" in argv and _alive(int(proc.name)):
            found.append(int(proc.name))
    return found


def remove_leftovers() -> list[str]:
    """Remove whatever a demo left (daemon, pinned maps, namespaces), return what went.

    Needs no state: the daemon is found by its environment, the namespaces by their names.
    """
    removed = []
    daemons = _demo_daemons()
    if daemons:
        _stop(daemons, 30)
        removed.append(f"daemon (pid {', '.join(map(str, daemons))})")
    namespaces = [ns for ns in netkit.list_netns() if DEMO_NS.match(ns)]
    if PIN_DIR.exists():
        # Detach the program where it is attached (the LB namespace), then unpin the maps.
        lb = next((ns for ns in namespaces if ns.endswith(f"-{DEMO_PREFIX}lb")), None)
        where = ["nsenter", f"--net=/run/netns/{lb}"] if lb else []
        subprocess.run([*where, *SLUICE, "run", "--cleanup"], env={**os.environ, **DEMO_ENV},
                       capture_output=True, text=True, timeout=60)  # fmt: skip
        shutil.rmtree(PIN_DIR, ignore_errors=True)  # with the namespaces gone nothing uses them
        removed.append(str(PIN_DIR))
    for ns in namespaces:
        netkit._delete_netns(ns)  # kills what still runs in it (the backends' servers)
        removed.append(f"namespace {ns}")
    for topo_id in {m.group(1) for ns in namespaces if (m := DEMO_NS.match(ns))}:
        if not netkit._owner_alive(topo_id):  # the killed demo's netkit lock and logs
            (netkit.LOCK_DIR / f"{topo_id}.lock").unlink(missing_ok=True)
            for logs in Path(tempfile.gettempdir()).glob(f"sluice-netkit-{topo_id}-*"):
                shutil.rmtree(logs, ignore_errors=True)
    return removed


def stop_running_demo() -> int:
    pid = _demo_process()
    if pid is not None:
        # The demo's SIGTERM handler stops the daemon, unpins and removes the namespaces.
        _stop([pid], 60)
    # Then whatever an interrupted demo (SIGKILL, a closed terminal) left behind.
    removed = remove_leftovers()
    PIDFILE.unlink(missing_ok=True)
    if pid is not None:
        print("demo: stopped")
    if removed:
        print("demo: removed what an interrupted demo left behind: " + "; ".join(removed))
    elif pid is None:
        print("demo: not running")
    return 1 if PIN_DIR.exists() or any(DEMO_NS.match(n) for n in netkit.list_netns()) else 0


class Demo:
    def __init__(self, topo: netkit.Topology) -> None:
        self.topo = topo
        self.net = build_lbnet(topo, n_backends=3, prefix=DEMO_PREFIX)
        self.env = {**os.environ, **DEMO_ENV}
        self.in_lb = ["nsenter", f"--net=/run/netns/{self.net.lb.ns}"]
        self.daemon: subprocess.Popen[bytes] | None = None

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*SLUICE, *args], env=self.env, capture_output=True, text=True, timeout=60
        )

    def start_daemon(self) -> None:
        log = open(DEMO_DIR / "daemon.log", "ab")  # noqa: SIM115 - the daemon keeps it
        self.daemon = subprocess.Popen(
            [*self.in_lb, *SLUICE, "run"], env=self.env, stdout=log, stderr=log
        )
        deadline = time.monotonic() + 60
        while self.cli("status").returncode != 0:
            if self.daemon.poll() is not None or time.monotonic() > deadline:
                tail = (DEMO_DIR / "daemon.log").read_text()[-3000:]
                raise RuntimeError(f"the daemon did not start:\n{tail}")
            time.sleep(0.2)

    def configure(self) -> None:
        config = {
            "datapath": {"interface": [{"name": i} for i in self.net.interfaces]},
            "management": {
                "user": [{"name": DEMO_USER, "role": "read-write",
                          "password-hash": hash_password(DEMO_PASSWORD)}],
                "netconf": {"port": 830},
                "console-ssh": {"port": 2222},
            },
            "snmp": {"enabled": True, "port": 161, "listen-address": ["127.0.0.1"],
                     "community": [{"name": "demo", "secret": SNMP_COMMUNITY}]},
        }  # fmt: skip
        path = DEMO_DIR / "appliance.json"
        path.write_text(json.dumps(config))
        self._check(self.cli("apply", "-f", str(path), "-m", "demo appliance settings"))
        endpoints = ",".join(f"{backend_addr(n)}:8080" for n in (1, 2, 3))
        self._check(
            self.cli(
                "lb", "add", "web", "--vip", VIP4, "--port", "80", "--endpoints", endpoints,
                "--probe", "http", "--probe-path", "/", "--probe-interval", "2",
                "-m", "demo service",
            )
        )

    @staticmethod
    def _check(result: subprocess.CompletedProcess[str]) -> None:
        if result.returncode != 0:
            raise RuntimeError(result.stderr.strip())

    def show(self) -> None:
        answers = [self.net.get(VIP4) for _ in range(6)]
        client, lb = self.net.client.ns, self.net.lb.ns
        sock = f"SLUICE_SOCKET={self.env['SLUICE_SOCKET']}"
        print(f"\nSix requests from the client to http://{VIP4}/ were answered by: "
              f"{' '.join(answers)}\n")  # fmt: skip
        print(self.cli("lb", "list").stdout)
        print(f"""Try, in another shell (as root, from {Path.cwd()}):
  ip netns exec {client} curl -s http://{VIP4}/         # the client, through the VIP
  {sock} .venv/bin/sluice lb list
  {sock} .venv/bin/sluice ep list                       # health from the probes
  {sock} .venv/bin/sluice ct list                       # sessions in the eBPF conntrack
  {sock} .venv/bin/sluice stats
  {sock} .venv/bin/sluice config history
  {sock} .venv/bin/sluice console                       # the operator console (q quits)
  ip netns pids {self.net.backends[1].ns} | xargs kill   # stop b2's server: the probe
                                                      # takes b2 out, traffic goes to b1, b3
The daemon runs in the load-balancer namespace {lb}; its NETCONF (830), SSH console
(2222) and SNMP (161, 127.0.0.1) listen there. User {DEMO_USER!r}, password
{DEMO_PASSWORD!r} (demo only):
  ip netns exec {lb} ssh -p 2222 {DEMO_USER}@127.0.0.1        # the console over SSH
  ip netns exec {lb} snmpwalk -v2c -c {SNMP_COMMUNITY} 127.0.0.1 1.3.6.1.4.1.32473
  ip netns exec {lb} .venv/bin/python -c "from ncclient import manager; \\
m = manager.connect(host='127.0.0.1', port=830, username='{DEMO_USER}', \\
password='{DEMO_PASSWORD}', hostkey_verify=False); print(m.get_config('running').data_xml)"

Ctrl-C here (or `make demo-stop`) stops the daemon and removes every namespace.""")

    def stop(self) -> None:
        if self.daemon is not None and self.daemon.poll() is None:
            self.daemon.send_signal(signal.SIGTERM)
            try:
                self.daemon.wait(30)
            except subprocess.TimeoutExpired:
                self.daemon.kill()
        # Detach the program and remove the pinned maps (the namespaces go with the kit).
        # Without the namespace there is nothing left to detach: remove the pins from here.
        where = self.in_lb if Path(f"/run/netns/{self.net.lb.ns}").exists() else []
        res = subprocess.run([*where, *SLUICE, "run", "--cleanup"], env=self.env,
                             capture_output=True, text=True, timeout=60)  # fmt: skip
        if res.returncode != 0 or PIN_DIR.exists():
            print(f"demo: cleanup left {PIN_DIR}: {res.stderr.strip()[-500:]}", file=sys.stderr)


def main() -> int:
    parser = argparse.ArgumentParser(description="Sluice demo")
    parser.add_argument("--stop", action="store_true", help="stop a running demo")
    args = parser.parse_args()
    if args.stop:
        return stop_running_demo()
    if PIDFILE.exists():
        if _demo_process() is not None:
            print(f"demo: already running (pid {PIDFILE.read_text()}); `make demo-stop` first")
            return 1
        remove_leftovers()  # an interrupted demo's: start clean
    DEMO_DIR.mkdir(parents=True, exist_ok=True)
    for stale in ("sluice.db", "sluice.db-wal", "sluice.db-shm"):
        (DEMO_DIR / stale).unlink(missing_ok=True)  # each demo starts from an empty config
    PIDFILE.write_text(str(os.getpid()))
    topo = netkit.Topology()
    # SIGTERM (make demo-stop, a closing terminal) cleans up like Ctrl-C does. Set after the
    # Topology: the kit's own SIGTERM handler would remove the namespaces (and kill the
    # daemon in them) before the daemon could stop and its pinned maps be removed.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    signal.signal(signal.SIGHUP, signal.default_int_handler)  # the terminal closed
    demo = Demo(topo)
    try:
        demo.start_daemon()
        demo.configure()
        demo.show()
        while demo.daemon is not None and demo.daemon.poll() is None:
            time.sleep(1)
        print("demo: the daemon stopped; see /run/sluice-demo/daemon.log")
        return 1
    except KeyboardInterrupt:
        print("\ndemo: stopping")
        return 0
    except RuntimeError as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 1
    finally:
        demo.stop()
        topo.close()
        PIDFILE.unlink(missing_ok=True)


if __name__ == "__main__":
    sys.exit(main())
