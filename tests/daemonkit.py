"""Start a real `sluice run` on a temporary database and socket, and drive its CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from appliance.control.client import ControlClient, DaemonUnreachable

SLUICE = [sys.executable, "-m", "sluice"]


class Daemon:
    """``datapath``: "off" (default: fast, no bcc/root needed), "on" or "auto".
    ``netns``: run the daemon inside that network namespace (only the network one)."""

    def __init__(
        self,
        workdir: Path,
        datapath: str = "off",
        pin_dir: Path | None = None,
        netns: str | None = None,
    ) -> None:
        self.workdir = workdir
        self.db = workdir / "sluice.db"
        self.socket = workdir / "sluice.sock"
        self.log = workdir / "daemon.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.datapath = datapath
        self.pin_dir = pin_dir
        self.netns = netns

    @property
    def env(self) -> dict[str, str]:
        env = {**os.environ, "SLUICE_DB": str(self.db), "SLUICE_SOCKET": str(self.socket)}
        env["SLUICE_DATAPATH"] = self.datapath
        if self.pin_dir is not None:
            env["SLUICE_PIN_DIR"] = str(self.pin_dir)
        return env

    def start(self, timeout: float = 20.0) -> None:
        log = open(self.log, "ab")  # noqa: SIM115 - the daemon writes it until it stops
        # nsenter --net, not `ip netns exec`: the latter remounts /sys in a private mount
        # namespace, which hides bpffs (/sys/fs/bpf) and with it the pinned maps.
        prefix = ["nsenter", f"--net=/run/netns/{self.netns}"] if self.netns else []
        self.proc = subprocess.Popen(
            [*prefix, *SLUICE, "run"], env=self.env, stdout=log, stderr=log
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"daemon exited {self.proc.returncode}: {self.log.read_text()}")
            try:
                ControlClient(self.socket, timeout=2).close()
                return
            except DaemonUnreachable:
                time.sleep(0.05)
        raise TimeoutError(f"daemon did not answer within {timeout}s: {self.log.read_text()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(timeout)

    def cli(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*SLUICE, *args], env=self.env, capture_output=True, text=True, timeout=60, input=input
        )

    def cli_json(self, *args: str) -> Any:
        result = self.cli(*args, "-o", "json")
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    def client(self) -> ControlClient:
        return ControlClient(self.socket)

    def apply(self, doc: dict[str, Any]) -> None:
        """`sluice apply -f` of a document, as an operator would."""
        path = self.workdir / "apply.json"
        path.write_text(json.dumps(doc))
        res = self.cli("apply", "-f", str(path))
        assert res.returncode == 0, res.stderr

    def health(self, service: str, address: str) -> str:
        """An endpoint's health as `sluice ep list` shows it ("?" when not known yet)."""
        rows = self.cli_json("ep", "list", "--service", service)
        return next(r["state"].get("health", "?") for r in rows if r["address"] == address)


@pytest.fixture(params=["thread", "process"])
def prober_mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both ways the daemon can run the prober (SLUICE_PROBER); request it before the
    fixture that starts the daemon (`pytestmark = pytest.mark.usefixtures("prober_mode")`)."""
    monkeypatch.setenv("SLUICE_PROBER", request.param)
    return request.param


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    d = Daemon(tmp_path)
    d.start()
    try:
        yield d
    finally:
        d.stop()
