"""`make demo` and `make demo-stop`, as a new user runs them: the demo answers through the VIP
round-robin, and the stop leaves no namespace, no pinned map and no daemon behind."""

from __future__ import annotations

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

pytestmark = [pytest.mark.datapath, pytest.mark.slow]


def test_demo_runs_and_demo_stop_removes_everything(tmp_path: Path) -> None:
    kit.require_netns()
    pytest.importorskip("bcc", reason="needs bcc (python3-bpfcc)")
    if PIDFILE.exists():
        pytest.skip("a demo is running on this machine")
    log = tmp_path / "demo.log"
    with open(log, "wb") as out:
        demo = subprocess.Popen(DEMO, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        deadline = time.monotonic() + 120
        while "Ctrl-C here" not in log.read_text(errors="replace"):
            assert demo.poll() is None, log.read_text(errors="replace")
            assert time.monotonic() < deadline, log.read_text(errors="replace")
            time.sleep(0.5)
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
