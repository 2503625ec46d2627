"""`make demo` and `make demo-stop`, as a new user runs them: the demo answers through the VIP
round-robin, and the stop leaves no namespace, no pinned map and no daemon behind."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import netkit as kit
import pytest

ROOT = Path(__file__).resolve().parent.parent
DEMO = [sys.executable, str(ROOT / "scripts" / "demo.py")]
PIN_DIR = Path("/sys/fs/bpf/sluice-demo")
PIDFILE = Path("/run/sluice-demo/demo.pid")
DEMO_NS = re.compile(r"^sl-[0-9a-f]{8}-demo[a-z0-9]*$")  # the demo's hosts: democlient, ...

pytestmark = [pytest.mark.datapath, pytest.mark.slow]


def start_demo(log: Path) -> subprocess.Popen[bytes]:
    """`make demo`'s script, returned once it has printed its instructions."""
    kit.require_netns()
    pytest.importorskip("bcc", reason="needs bcc (python3-bpfcc)")
    if PIDFILE.exists():
        pytest.skip("a demo is running on this machine")
    with open(log, "wb") as out:
        demo = subprocess.Popen(DEMO, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    deadline = time.monotonic() + 120
    while "Ctrl-C here" not in log.read_text(errors="replace"):
        if demo.poll() is not None or time.monotonic() > deadline:
            demo.kill()
            demo.wait(30)
            pytest.fail(f"the demo did not start:\n{log.read_text(errors='replace')}")
        time.sleep(0.5)
    return demo


def alive(pid: int) -> bool:
    """True if ``pid`` is a live process (a zombie, dead but not yet reaped, is not)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status


def test_demo_runs_and_demo_stop_removes_everything(tmp_path: Path) -> None:
    log = tmp_path / "demo.log"
    demo = start_demo(log)
    try:
        text = log.read_text()
        assert "answered by: b1 b2 b3 b1 b2 b3" in text, text
        namespaces = [ns for ns in kit.list_netns() if ns in text]
        assert namespaces and PIN_DIR.exists()
        stop = subprocess.run([*DEMO, "--stop"], capture_output=True, text=True, timeout=60)
        assert stop.returncode == 0 and "stopped" in stop.stdout, stop
        assert demo.wait(30) == 0
        assert not PIN_DIR.exists(), sorted(p.name for p in PIN_DIR.iterdir())
        assert not [ns for ns in kit.list_netns() if ns in namespaces]
        assert "cleanup left" not in log.read_text()
    finally:
        if demo.poll() is None:
            demo.terminate()
            demo.wait(30)


@pytest.mark.parametrize("state", ["stale-pid-file", "no-pid-file"])
def test_demo_stop_after_a_killed_demo_removes_everything(tmp_path: Path, state: str) -> None:
    """An interrupted demo (SIGKILL, a closed terminal) leaves its daemon, namespaces and
    pinned maps behind; `make demo-stop` still removes them all, with or without its
    pid file."""
    log = tmp_path / "demo.log"
    demo = start_demo(log)
    # The text names some of them (client, lb, b2): all of that topology's are the demo's.
    text = log.read_text()
    ids = {m.group(1) for ns in kit.list_netns() if ns in text and (m := kit.NS_PATTERN.match(ns))}
    namespaces = [ns for ns in kit.list_netns()
                  if (m := kit.NS_PATTERN.match(ns)) and m.group(1) in ids]  # fmt: skip
    pids = {int(p) for ns in namespaces
            for p in subprocess.run(["ip", "netns", "pids", ns], capture_output=True,
                                    text=True, timeout=10).stdout.split()}  # fmt: skip
    try:
        assert namespaces, log.read_text()
        demo.send_signal(signal.SIGKILL)
        assert demo.wait(30) == -signal.SIGKILL
        # What the kill left: the daemon (among pids), the namespaces, the pins, the pid file.
        assert any(alive(p) for p in pids) and PIN_DIR.exists() and PIDFILE.exists()
        assert set(namespaces) <= set(kit.list_netns())
        if state == "no-pid-file":
            PIDFILE.unlink()

        stop = subprocess.run([*DEMO, "--stop"], capture_output=True, text=True, timeout=120)
        assert stop.returncode == 0, stop
        assert not PIN_DIR.exists(), (stop.stdout, sorted(p.name for p in PIN_DIR.iterdir()))
        left = [ns for ns in kit.list_netns() if ns in namespaces or DEMO_NS.match(ns)]
        assert not left, stop.stdout
        deadline = time.monotonic() + 10  # the killed ones are reaped by init
        while [p for p in pids if alive(p)] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [p for p in pids if alive(p)], stop.stdout
        assert not PIDFILE.exists()
        # Named so that a stop without any state still finds them: sl-<id>-demo<host>.
        assert all(DEMO_NS.match(ns) for ns in namespaces), namespaces
    finally:  # whatever the outcome, nothing of this demo stays on the machine
        for pid in pids:
            if alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        for ns in namespaces:
            if ns in kit.list_netns():
                kit._delete_netns(ns)
        shutil.rmtree(PIN_DIR, ignore_errors=True)
        PIDFILE.unlink(missing_ok=True)
