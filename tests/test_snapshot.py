"""The operational-state snapshot: refreshed off the caller's thread, read without waiting."""

from __future__ import annotations

import asyncio
import gc
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from appliance.snapshot import Snapshot, State, for_providers


def wait_for(predicate: Any, timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.01)
    raise AssertionError("condition not met in time")


class Config:
    """The two attributes the snapshot reads from a ConfigService."""

    def __init__(self, services: dict[str, Any]) -> None:
        self._mutex = threading.RLock()
        self.services_effective = services


def providers(calls: list[str]) -> dict[str, Any]:
    def service(name: str) -> dict[str, Any]:
        calls.append(threading.current_thread().name)
        return {"oper-status": "up", "packets": 5}

    def endpoint(name: str, address: str, port: int) -> dict[str, Any]:
        return {"health": "up" if port == 80 else "down"}

    def datapath() -> dict[str, Any]:
        return {"loaded": True, "interfaces": {"lo": ["sluice_lb"]},
                "maps": {"ct_map": {"entries": 40, "capacity": 1024}}}

    return {"service": service, "endpoint": endpoint, "datapath": datapath}


SERVICES = {"web": {"name": "web", "endpoint": [{"address": "198.18.1.1", "port": 80},
                                                 {"address": "198.18.1.2", "port": 81}]}}


def test_refresh_reads_every_configured_key() -> None:
    snap = Snapshot(providers([]), config_service=Config(SERVICES))
    state = snap.refresh()
    assert state.service("web")["packets"] == 5
    assert state.endpoint("web", "198.18.1.1", 80)["health"] == "up"
    assert state.endpoint("web", "198.18.1.2", 81)["health"] == "down"
    assert state.service("nope") == {}
    # The real datapath status has no "conntrack-entries": the count is ct_map's fill.
    assert state.conntrack_entries == 40
    assert "lo" in state.interfaces and "rx_bytes" in state.interfaces["lo"]
    with pytest.raises(TypeError):
        state.service("web")["packets"] = 6  # type: ignore[index]


def test_providers_run_in_the_snapshot_thread_never_the_readers() -> None:
    calls: list[str] = []
    snap = Snapshot(providers(calls), config_service=Config(SERVICES), period=0.05)
    snap.start()
    try:
        wait_for(lambda: snap.current().service("web"))
        assert set(calls) == {"state-snapshot"}
    finally:
        snap.stop()
    assert not snap.running


def test_a_provider_needing_its_own_event_loop_works() -> None:
    """pyroute2 runs asyncio inside: called from a running loop it fails. The snapshot
    thread has no loop, so a reader on the event loop still gets the datapath status."""

    def datapath() -> dict[str, Any]:
        return asyncio.run(asyncio.sleep(0, {"maps": {"ct_map": {"entries": 20}}}))

    snap = Snapshot({"datapath": datapath}, period=0.05)

    async def reader() -> int | None:
        snap.start()
        deadline = time.monotonic() + 5
        while snap.current().conntrack_entries is None and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        return snap.current().conntrack_entries

    try:
        assert asyncio.run(reader()) == 20
    finally:
        snap.stop()


def test_a_slow_provider_never_makes_a_reader_wait() -> None:
    gate = threading.Event()

    def service(name: str) -> dict[str, Any]:
        gate.wait(5)  # a datapath lock held by a long commit
        return {"packets": 1}

    snap = Snapshot({"service": service}, config_service=Config(SERVICES), period=0.05)
    snap.start()
    try:
        t0 = time.monotonic()
        for _ in range(1000):
            assert snap.current().service("web") == {}
        assert time.monotonic() - t0 < 0.5
        gate.set()
        wait_for(lambda: snap.current().service("web"))
    finally:
        gate.set()
        snap.stop()


def test_failing_provider_reads_as_empty_and_is_recorded() -> None:
    def boom(*_: Any) -> dict[str, Any]:
        raise RuntimeError("This event loop is already running")

    snap = Snapshot({"service": boom, "datapath": boom}, config_service=Config(SERVICES))
    state = snap.refresh()
    assert state.service("web") == {} and state.conntrack_entries is None
    assert "already running" in state.errors["datapath"]


def test_keys_from_tracked_rows_and_from_stats() -> None:
    seen: list[tuple[str, str, int]] = []

    def endpoint(s: str, a: str, p: int) -> dict[str, Any]:
        seen.append((s, a, p))
        return {"health": "up"}

    snap = Snapshot({"endpoint": endpoint})
    snap.track(lambda: [("a", [("2001:db8::1", 53)])])
    snap.refresh()
    assert seen == [("a", "2001:db8::1", 53)]
    seen.clear()
    stats = [{"service": "b"}, {"service": "b", "endpoint": "198.18.0.1:8080"}]
    Snapshot({"endpoint": endpoint, "stats": lambda: stats}).refresh()
    assert seen == [("b", "198.18.0.1", 8080)]


def test_datapath_status_is_read_less_often(tmp_path: Path) -> None:
    n = []
    snap = Snapshot({"datapath": lambda: n.append(1) or {"loaded": True}}, period=0.01,
                    datapath_period=60, links=None)
    for _ in range(5):
        snap.refresh()
    assert len(n) == 1


def test_lazy_snapshot_is_shared_and_ends_with_its_users() -> None:
    state: dict[str, Any] = providers([])
    a = for_providers(state, period=0.05)
    b = for_providers(state, config_service=Config(SERVICES))
    assert a is b and state["snapshot"] is a and a.running
    assert for_providers(a) is a
    deadline = time.monotonic() + 5
    while not a.current().service("web") and time.monotonic() < deadline:
        time.sleep(0.01)
    assert a.current().service("web")
    thread = a._thread
    assert thread is not None
    del a, b, state
    gc.collect()
    wait_for(lambda: not thread.is_alive())


def test_state_defaults_are_empty() -> None:
    s = State()
    assert s.taken == 0 and s.service("x") == {} and s.conntrack_entries is None


def test_unchanged_entries_are_kept_changed_ones_replaced() -> None:
    counters = {"web": {"packets": 1}}
    snap = Snapshot({"service": lambda name: counters[name]}, config_service=Config(SERVICES))
    first = snap.refresh().service("web")
    assert snap.refresh().service("web") is first  # no new object for the collector
    counters["web"]["packets"] = 2  # the provider changes its own dict...
    assert first["packets"] == 1  # ...the published state does not
    assert snap.refresh().service("web")["packets"] == 2


def test_a_slow_refresh_is_spaced_out() -> None:
    """At most `max_duty` of a core: a 50 ms refresh with max_duty 0.25 runs every ~200 ms."""

    def service(name: str) -> dict[str, Any]:
        time.sleep(0.05)  # a provider costing what 10,000 real ones do, scaled down
        return {"packets": 1}

    snap = Snapshot({"service": service}, config_service=Config(SERVICES), period=0.01,
                    max_duty=0.25)
    snap.start()
    try:
        time.sleep(1.0)  # a measurement window, not synchronisation
    finally:
        snap.stop()
    assert 2 <= snap.refreshes <= 7, snap.refreshes


def test_pokes_do_not_break_the_duty_cycle() -> None:
    def service(name: str) -> dict[str, Any]:
        time.sleep(0.05)
        return {"packets": 1}

    snap = Snapshot({"service": service}, config_service=Config(SERVICES), period=60,
                    max_duty=0.25)
    snap.start()
    try:
        end = time.monotonic() + 1.0
        while time.monotonic() < end:  # an event storm
            snap.poke()
            time.sleep(0.001)
    finally:
        snap.stop()
    assert 2 <= snap.refreshes <= 7, snap.refreshes
