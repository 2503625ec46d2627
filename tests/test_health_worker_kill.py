"""The probe worker (SLUICE_PROBER=process) under a real `sluice run`.

- Killed with SIGKILL, it is restarted: the daemon logs it, raises the "prober" alarm and
  clears it when the new worker is ready; meanwhile the datapath keeps its last health
  (traffic to every live backend goes on); afterwards probing has resumed: a backend that
  dies is out of the datapath within interval x retries + timeout (+ slack), as before.
- It stops with the daemon (SIGTERM), and dies with it (SIGKILL of the daemon: stdin EOF
  and the parent-death signal), never outliving it.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from daemonkit import Daemon
from dpkit import HTTP_PORT, VIP4, LbNet, backend_addr, probed_web, wait_for

INTERVAL, TIMEOUT, RETRIES = 1, 1, 2


@pytest.fixture(autouse=True)
def process_mode(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # Before the daemon fixtures start a daemon: it reads its environment at start.
    monkeypatch.setenv("SLUICE_PROBER", "process")
    yield


def workers(pid: int) -> list[int]:
    """The daemon's probe-worker children (/proc/<pid>/task/*/children)."""
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children = (task / "children").read_text().split()
        except OSError:
            continue
        for child in children:
            try:
                cmdline = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"probe-worker" in cmdline:
                found.append(int(child))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"





@pytest.mark.datapath
def test_a_killed_worker_is_restarted_and_probing_resumes(
    lb_daemon: tuple[LbNet, Daemon], tmp_path: Path
) -> None:
    net, d = lb_daemon
    assert d.proc is not None
    d.apply({"datapath": {"interface": [{"name": i} for i in net.interfaces]}})
    servers = [b.start_http_server(HTTP_PORT) for b in net.backends]
    web = probed_web("tcp", (1, 2), INTERVAL, TIMEOUT, RETRIES)
    d.apply({"load-balancer": {"service": [web]}})
    wait_for(lambda: d.health("web", backend_addr(2)) == "up", timeout=10, step=0.1)
    (first,) = wait_for(lambda: workers(d.proc.pid), timeout=10, step=0.1)

    os.kill(first, signal.SIGKILL)
    # Meanwhile the datapath keeps the health it had: both backends get new flows.
    assert sorted(net.get(VIP4) for _ in range(4)) == ["b1", "b1", "b2", "b2"]
    (second,) = wait_for(
        lambda: [p for p in workers(d.proc.pid) if p != first], timeout=15, step=0.1
    )
    wait_for(lambda: "probe worker restarted" in d.log.read_text(), timeout=15, step=0.1)
    log = d.log.read_text()
    assert f"pid={first}" in log and "probe worker exited" in log, log[-2000:]
    with d.client() as client:
        alarms = client.call("events.recent", type="alarm")
        assert client.call("status").get("alarms", []) == []  # cleared: the new one is ready
    assert [(a["name"], a["state"]) for a in alarms[::-1]] == [
        ("prober", "raised"),
        ("prober", "cleared"),
    ], alarms
    assert not alive(first)

    # Probing resumed: a backend that dies now leaves the datapath within the usual bound.
    servers[1].stop()
    died = time.monotonic()
    wait_for(lambda: d.health("web", backend_addr(2)) == "down", timeout=10, step=0.1)
    detected = time.monotonic() - died
    bound = INTERVAL * RETRIES + TIMEOUT
    assert detected <= bound + 1.0, f"down after {detected:.1f}s, bound {bound}s"
    assert [net.get(VIP4) for _ in range(6)] == ["b1"] * 6
    assert workers(d.proc.pid) == [second]
    del servers


def test_the_worker_stops_with_the_daemon_and_dies_with_it(tmp_path: Path) -> None:
    d = Daemon(tmp_path / "a")
    d.workdir.mkdir()
    d.start()
    try:
        assert d.proc is not None
        (worker,) = wait_for(lambda: workers(d.proc.pid), timeout=10, step=0.05)
        if os.geteuid() == 0:  # ahead of the daemon for a CPU (worker.NICE)
            nice = int(Path(f"/proc/{worker}/stat").read_text().rsplit(")", 1)[1].split()[16])
            assert nice == -5, nice
        assert d.stop() == 0
        assert not alive(worker)  # stopped before the daemon exited
        assert "probe worker exited" not in d.log.read_text()  # a stop is not a crash
    finally:
        d.stop()

    d = Daemon(tmp_path / "b")
    d.workdir.mkdir()
    d.start()
    try:
        assert d.proc is not None
        (worker,) = wait_for(lambda: workers(d.proc.pid), timeout=10, step=0.05)
        d.proc.kill()  # no clean stop: the worker must not outlive its daemon
        d.proc.wait(10)
        wait_for(lambda: not alive(worker), timeout=5, step=0.05)
    finally:
        d.stop()


@pytest.mark.datapath
def test_the_worker_pings_from_the_daemons_namespace(
    lb_daemon: tuple[LbNet, Daemon], tmp_path: Path
) -> None:
    """ICMP probes need a raw socket (root) in the daemon's network namespace: the worker
    inherits both. b1 answers pings; 198.18.13.1 (no such backend) does not."""
    _net, d = lb_daemon
    web = probed_web("ping", (1, 3), INTERVAL, TIMEOUT, RETRIES)
    d.apply({"load-balancer": {"service": [web]}})
    wait_for(lambda: d.health("web", backend_addr(3)) == "down", timeout=10, step=0.1)

    def b1() -> dict:
        rows = d.cli_json("ep", "list", "--service", "web")
        return next(r["state"] for r in rows if r["address"] == backend_addr(1))

    # A round-trip time: an echo reply came back (up alone is only the initial state).
    state = wait_for(lambda: (s := b1()).get("rtt-us") is not None and s, timeout=5)
    assert state["health"] == "up" and state["probe"] == "ping", state
    assert d.proc is not None and workers(d.proc.pid)
