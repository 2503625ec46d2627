"""The prober in a worker process of its own (SLUICE_PROBER=process): HealthWiring with a
real worker (`python -m sluice probe-worker`) probing real TCP listeners on 127.0.0.1.

No namespaces and no datapath: the reconciler is a recorder. What is checked here is the
wiring around the process: health reaches the datapath from the reader thread while the
main loop is blocked, events reach the daemon's bus on the main loop (endpoint before
service), endpoint rows are readable from any thread, commits reach the worker, and a
worker killed with SIGKILL is restarted (logged, alarmed, alarm cleared) with the config
and the current health, and probes again. With real namespaces and a real daemon:
tests/test_health_isolation.py, test_health_restart.py, test_e2e_daemon.py and
test_health_worker_kill.py.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from probekit import async_test, wait_until
from test_health_unit import RecordingReconciler

from appliance.alarms import Alarms
from appliance.config import ConfigService
from appliance.config.store import Store
from appliance.events import EventBus
from appliance.health import HealthWiring, prober_mode
from appliance.probes import DOWN, UP

# 1 configured second = 100 ms: a probe every 100 ms, down after 2 failures.
OPTIONS = {"time_scale": 0.1, "jitter": False}


def _listener() -> socket.socket:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(64)
    return s


def _commit(service: ConfigService, doc: dict[str, Any]) -> None:
    path = f"/sluice:load-balancer/service[name='{doc['name']}']"
    with service.open_session("ops", "cli") as session:
        session.edit([{"op": "create", "path": path, "value": doc}])
        session.commit()


def _web(ports: list[int]) -> dict[str, Any]:
    return {"name": "web", "vip": "198.18.0.10", "port": 80,
            "health-probe": {"type": "tcp", "interval": 1, "timeout": 1, "retries": 2,
                             "successes-before-up": 1},
            "endpoint": [{"address": "127.0.0.1", "port": p} for p in ports]}  # fmt: skip


def test_the_mode_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SLUICE_PROBER", raising=False)
    assert prober_mode() == "process"  # the daemon's default
    monkeypatch.setenv("SLUICE_PROBER", "thread")
    assert prober_mode() == "thread"
    monkeypatch.setenv("SLUICE_PROBER", "fork")
    with pytest.raises(ValueError, match="SLUICE_PROBER"):
        prober_mode()


@async_test
async def test_worker_probes_reports_and_is_restarted_after_sigkill(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="appliance.probes.process")
    live, dies, later = _listener(), _listener(), _listener()
    ports = [s.getsockname()[1] for s in (live, dies, later)]
    dp = RecordingReconciler(pinned={})
    bus = EventBus()
    events: list[tuple[str, str, str, str]] = []
    bus.subscribe(
        lambda e: events.append((e["type"], e.get("address", ""), str(e.get("new", e.get("state"))),
                                 threading.current_thread().name))
    )  # fmt: skip
    alarms = Alarms(bus)
    state: dict[str, Any] = {}
    wiring = HealthWiring(dp, state, bus, prober_options=OPTIONS, mode="process", alarms=alarms)
    config = ConfigService(Store(tmp_path / "sluice.db"))
    loop = asyncio.get_running_loop()
    key = ("web", "127.0.0.1")
    try:
        _commit(config, _web(ports[:2]))  # before start: found by the start-up sync
        await wiring.start(config)
        first = wiring.prober.pid
        assert first is not None and first != os.getpid()
        await wait_until(lambda: len(dp.calls) == 2, 5)
        assert all(up for *_, up in dp.calls)
        assert state["endpoint"](*key, ports[0])["health"] == UP
        assert wiring.prober.dispatched >= 2

        # A commit (on another thread, as the config worker does) reaches the worker.
        await loop.run_in_executor(None, _commit_third, config, ports)
        await wait_until(lambda: (*key, ports[2], True) in dp.calls, 5)

        # The main loop blocks while an endpoint dies: the reader thread still takes it
        # out of the datapath and updates its row; the bus hears of it afterwards.
        dies.close()
        deadline = time.monotonic() + 5
        while (*key, ports[1], False) not in dp.calls and time.monotonic() < deadline:
            time.sleep(0.02)  # blocks the loop, as a stalled front door does
        assert (*key, ports[1], False) in dp.calls
        assert state["endpoint"](*key, ports[1])["health"] == DOWN
        assert not [e for e in events if e[0] == "endpoint-state"]
        await wait_until(lambda: ("endpoint-state", "127.0.0.1", DOWN, "MainThread") in events, 5)

        # SIGKILL: the worker is restarted, with the config and the health it had.
        calls = len(dp.calls)
        os.kill(first, signal.SIGKILL)
        await wait_until(lambda: ("alarm", "raised") in [e[::2] for e in events], 5)
        await wait_until(lambda: wiring.prober.pid not in (None, first), 5)
        await wait_until(lambda: ("alarm", "cleared") in [e[::2] for e in events], 10)
        assert wiring.prober.restarts == 1
        assert alarms.active() == []
        # The new worker told the datapath every endpoint's health again: the dead one
        # still down (seeded from what the datapath had), the others up. No flap.
        await wait_until(lambda: len(dp.calls) >= calls + 3, 5)
        assert sorted(dp.calls[calls : calls + 3]) == sorted(
            [(*key, ports[0], True), (*key, ports[1], False), (*key, ports[2], True)]
        )
        # Probing resumed: an endpoint that dies now goes down.
        later.close()
        await wait_until(lambda: (*key, ports[2], False) in dp.calls, 5)
        messages = [r.getMessage() for r in caplog.records]
        assert "probe worker exited; restarting it (the datapath keeps its last health)" in (
            messages
        )
        assert "probe worker restarted" in messages
    finally:
        await wiring.stop()
        config.store.close()
        live.close()
    assert not wiring.prober.alive
    # The worker's events reach the daemon's bus on the main loop (alarms are published
    # where they are raised, as every alarm is).
    assert {t for kind, *_, t in events if kind != "alarm"} == {"MainThread"}
    kinds = [(kind, new) for kind, _, new, _ in events]
    assert ("service-state", "down") not in kinds  # one endpoint always lived


def _commit_third(config: ConfigService, ports: list[int]) -> None:
    path = "/sluice:load-balancer/service[name='web']"
    with config.open_session("ops", "cli") as session:
        session.edit([{"op": "replace", "path": path, "value": _web(ports)}])
        session.commit()


class _Transport:
    def __init__(self) -> None:
        self.data = b""

    def is_closing(self) -> bool:
        return False

    def write(self, data: bytes) -> None:
        self.data += data


@async_test
async def test_views_carry_round_trip_only_changes_less_often() -> None:
    import json

    from appliance.probes.scheduler import EndpointView
    from appliance.probes.worker import Channel

    transport = _Transport()
    channel = Channel(transport)  # type: ignore[arg-type]
    a, b = ("web", "127.0.0.1", 1), ("web", "127.0.0.1", 2)

    async def views(rows: dict[Any, EndpointView], with_rtt: bool) -> dict[str, Any]:
        transport.data = b""
        channel.views(rows, with_rtt)
        await asyncio.sleep(0)  # the channel writes once per loop turn
        return json.loads(transport.data)

    up = EndpointView(UP, 1.0, "", 10, "tcp")
    first = await views({a: up, b: up}, with_rtt=False)
    assert len(first["rows"]) == 2  # new rows go out whatever changed
    moved = await views({a: up._replace(rtt_us=11), b: up._replace(state=DOWN)}, False)
    assert [r[:3] for r in moved["rows"]] == [list(b)]  # a's rtt only: not yet
    none = await views({a: up._replace(rtt_us=None), b: up._replace(state=DOWN)}, False)
    assert none["rows"] == [[*a, UP, 1.0, "", None, "tcp"]]  # no rtt any more: at once
    later = await views({a: up._replace(rtt_us=12)}, with_rtt=True)
    assert later["rows"] == [[*a, UP, 1.0, "", 12, "tcp"]] and later["gone"] == [list(b)]


@async_test
async def test_a_wedged_worker_is_killed_and_restarted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """SIGSTOP: alive but silent. Past HANG_S without a line (it sends its rows every
    second) the worker is killed and a new one started."""
    from appliance.probes import process

    monkeypatch.setattr(process, "HANG_S", 2.5)
    monkeypatch.setattr(process, "HANG_CHECK_S", 0.1)
    caplog.set_level(logging.INFO, logger="appliance.probes.process")
    live = _listener()
    dp = RecordingReconciler(pinned={})
    wiring = HealthWiring(dp, {}, EventBus(), prober_options=OPTIONS, mode="process")
    config = ConfigService(Store(tmp_path / "sluice.db"))
    try:
        _commit(config, _web([live.getsockname()[1]]))
        await wiring.start(config)
        first = wiring.prober.pid
        assert first is not None
        await asyncio.sleep(3)  # longer than HANG_S: a healthy worker is not killed
        assert wiring.prober.pid == first
        os.kill(first, signal.SIGSTOP)
        await wait_until(lambda: wiring.prober.pid not in (None, first), 10)
        assert wiring.prober.restarts == 1
        assert "probe worker silent: killed" in [r.getMessage() for r in caplog.records]
        assert wiring.prober.dispatched >= 0  # the new one answers
    finally:
        await wiring.stop()
        config.store.close()
        live.close()


@async_test
async def test_a_worker_that_cannot_run_is_retried_with_an_alarm(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A worker that exits at once (a broken install): start() does not hang the daemon,
    the alarm says why, restarts back off, stop() ends it all."""
    import sys

    from appliance.probes import process

    monkeypatch.setattr(process, "START_TIMEOUT", 1.0)
    alarms = Alarms()
    prober = process.ProberProcess(
        lambda *_: None, lambda _: None, alarms=alarms,
        command=[sys.executable, "-c", "import sys; sys.exit(3)"],
    )  # fmt: skip
    await prober.start()  # not ready in time: logged and alarmed, not raised
    await wait_until(lambda: prober.restarts >= 2, 5)
    # The next exit says why (the alarm said "not ready" when start() gave up waiting).
    await wait_until(lambda: "exited with status 3" in str(alarms.active()), 5)
    assert [a["name"] for a in alarms.active()] == ["prober"]
    await asyncio.wait_for(prober.stop(), 5)
    assert not prober.alive
    restarts = prober.restarts
    await asyncio.sleep(1)
    assert prober.restarts == restarts  # stopped for good


@async_test
async def test_a_datapath_swapped_in_later_hears_every_endpoint(tmp_path: Path) -> None:
    """As in test_health_unit, in process mode: the reconciler setter makes the worker
    tell every endpoint's health again, to the new datapath."""
    from appliance.reconciler import LoggingReconciler

    live, dead = _listener(), _listener()
    ports = [s.getsockname()[1] for s in (live, dead)]
    dead.close()
    wiring = HealthWiring(LoggingReconciler(), {}, EventBus(), prober_options=OPTIONS,
                          mode="process")  # fmt: skip
    config = ConfigService(Store(tmp_path / "sluice.db"))
    try:
        _commit(config, _web(ports))
        await wiring.start(config)
        await wait_until(
            lambda: (wiring.state["endpoint"]("web", "127.0.0.1", ports[1]) or {}).get("health")
            == DOWN,
            5,
        )
        dp = RecordingReconciler(pinned={})
        t = threading.Thread(target=setattr, args=(wiring, "reconciler", dp))
        t.start()
        t.join()
        await wait_until(lambda: len(dp.calls) == 2, 5)
        assert sorted(dp.calls) == sorted([("web", "127.0.0.1", ports[0], True),
                                           ("web", "127.0.0.1", ports[1], False)])  # fmt: skip
    finally:
        await wiring.stop()
        config.store.close()
        live.close()
