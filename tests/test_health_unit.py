"""Unit tests of the daemon's health wiring: the prober on its own thread, seeding from the
datapath's pinned health, the thread-safe event relay and state snapshot.

No namespaces and no kernel: probes come from a scripted fake runner (it stands in for the
network, not for anything under test), the reconciler is a recorder that stands in for the
datapath. The functional version, with real probes in namespaces, is
tests/test_health_isolation.py.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

from probekit import async_test, wait_until

from appliance.config import ConfigService
from appliance.config.store import Store
from appliance.events import EventBus, LoopRelay
from appliance.health import HealthWiring
from appliance.probes import DOWN, UP, Prober, ProbeResult, ProbeRunner, ProbeSpec

SCALE = 0.02  # 1 configured second = 20 ms


class ScriptedRunner(ProbeRunner):
    """Results by address (alive unless told otherwise); counts calls per address."""

    fast_tcp = False

    def __init__(self) -> None:
        super().__init__()
        self.alive: dict[str, bool] = {}
        self.calls: dict[str, int] = {}
        self.threads: set[str] = set()

    async def run(self, spec: ProbeSpec) -> ProbeResult:
        self.calls[spec.address] = self.calls.get(spec.address, 0) + 1
        self.threads.add(threading.current_thread().name)
        if self.alive.get(spec.address, True):
            return ProbeResult(True, 42, "")
        return ProbeResult(False, None, "connection refused")


class RecordingReconciler:
    """Stands in for the datapath reconciler: records set_endpoint_health calls."""

    def __init__(self, pinned: dict[tuple[str, str, int], bool] | None = None) -> None:
        self.calls: list[tuple[str, str, int, bool]] = []
        self.pinned = pinned

    def start(self, effective: dict[str, Any]) -> None:
        pass

    def apply(self, diff: Any) -> None:
        pass

    def close(self) -> None:
        pass

    def set_endpoint_health(self, service: str, address: str, port: int, up: bool) -> None:
        self.calls.append((service, address, port, up))

    def pinned_health(self) -> dict[tuple[str, str, int], bool]:
        if self.pinned is None:
            raise RuntimeError("no datapath loaded")
        return dict(self.pinned)


def svc(name: str, endpoints: list[tuple[str, int]], **probe: Any) -> dict[str, Any]:
    hp = {"type": "tcp", "interval": 1, "timeout": 1, "retries": 2, "successes-before-up": 2,
          "hold-down": 0, **probe}  # fmt: skip
    eps = [{"address": a, "port": p, "admin-state": "enabled"} for a, p in endpoints]
    return {"name": name, "admin-state": "enabled", "health-probe": hp, "endpoint": eps}


def state_of(prober: Prober, service: str, address: str, port: int) -> str:
    st = prober.endpoint_state(service, address, port)
    return st["health"] if st else "?"


# -- seeding from pinned health -------------------------------------------------------------
@async_test
async def test_an_endpoint_known_down_starts_down_and_comes_up_by_the_rules() -> None:
    runner = ScriptedRunner()
    bus = EventBus()
    events: list[dict[str, Any]] = []
    bus.subscribe(events.append)
    changes: list[tuple[str, str, int, bool]] = []
    pinned = {
        ("web", "198.18.1.1", 80): False,
        ("web", "198.18.1.2", 80): True,
        ("web", "2001:DB8::1", 80): False,  # found whatever the address's spelling
    }
    prober = Prober(bus, on_change=lambda *a: changes.append(a), time_scale=SCALE,
                    jitter=False, runner=runner, initial_health=pinned)  # fmt: skip
    eps = [("198.18.1.1", 80), ("198.18.1.2", 80), ("198.18.1.3", 80), ("2001:db8::1", 80)]
    runner.alive["198.18.1.1"] = False
    prober.sync({"web": svc("web", eps)})
    # Before a single probe: known-down endpoints are down in the datapath, the rest up.
    assert changes == [
        ("web", "198.18.1.1", 80, False),
        ("web", "198.18.1.2", 80, True),
        ("web", "198.18.1.3", 80, True),  # no pinned state: as before, up
        ("web", "2001:db8::1", 80, False),
    ]
    st = prober.endpoint_state("web", "198.18.1.1", 80)
    assert st is not None and st["health"] == DOWN and st["last-error"]
    await prober.start()
    try:
        # Still probed: a live one comes up after successes-before-up (2) probes.
        await wait_until(lambda: state_of(prober, "web", "2001:db8::1", 80) == UP, 2)
        assert runner.calls["2001:db8::1"] >= 2
        # A dead one stays down, probed all along, with no event (no change).
        await wait_until(lambda: runner.calls.get("198.18.1.1", 0) >= 5, 2)
        assert state_of(prober, "web", "198.18.1.1", 80) == DOWN
        runner.alive["198.18.1.1"] = True
        await wait_until(lambda: state_of(prober, "web", "198.18.1.1", 80) == UP, 2)
        # The seed is used once: removed and added again, an endpoint starts afresh (up).
        runner.alive["198.18.1.2"] = False
        prober.sync({})
        prober.sync({"web": svc("web", [("198.18.1.1", 80)])})
        assert state_of(prober, "web", "198.18.1.1", 80) == UP
    finally:
        await prober.stop()
    assert [(e["address"], e["old"], e["new"]) for e in events] == [
        ("2001:db8::1", DOWN, UP),
        ("198.18.1.1", DOWN, UP),
    ]
    assert changes[4:6] == [("web", "2001:db8::1", 80, True), ("web", "198.18.1.1", 80, True)]


@async_test
async def test_a_seeded_endpoint_honours_hold_down_from_the_start() -> None:
    runner = ScriptedRunner()
    prober = Prober(time_scale=SCALE, jitter=False, runner=runner,
                    initial_health={("web", "198.18.1.1", 80): False})  # fmt: skip
    loop = asyncio.get_running_loop()
    await prober.start()
    try:
        t0 = loop.time()
        prober.sync({"web": svc("web", [("198.18.1.1", 80)], **{"hold-down": 10})})
        took = await wait_until(lambda: state_of(prober, "web", "198.18.1.1", 80) == UP, 3)
    finally:
        await prober.stop()
    assert loop.time() - t0 >= 10 * SCALE - 0.001 and took >= 10 * SCALE - 0.005


# -- the relay to the main loop -------------------------------------------------------------
@async_test
async def test_relay_never_blocks_the_publisher_and_keeps_order() -> None:
    bus = EventBus()
    seen: list[tuple[int, str]] = []
    bus.subscribe(lambda e: seen.append((e["n"], threading.current_thread().name)))
    relay = LoopRelay(bus, asyncio.get_running_loop(), maxlen=50)
    took: list[float] = []

    def publisher() -> None:
        for n in range(60):
            t = time.perf_counter()
            relay({"type": "x", "n": n})
            took.append(time.perf_counter() - t)

    t = threading.Thread(target=publisher, name="publisher")
    t.start()
    t.join(5)
    # The loop was busy in this test (not awaiting) the whole time: nothing delivered yet,
    # and the publisher did not wait for it.
    assert seen == [] and max(took) < 0.05
    await wait_until(lambda: len(seen) == 50, 2)
    main = threading.current_thread().name
    assert seen == [(n, main) for n in range(10, 60)]  # the oldest 10 dropped, order kept
    assert relay.dropped == 10


# -- HealthWiring ---------------------------------------------------------------------------
def _commit(service: ConfigService, doc: dict[str, Any]) -> None:
    path = f"/sluice:load-balancer/service[name='{doc['name']}']"
    with service.open_session("ops", "cli") as session:
        session.edit([{"op": "create", "path": path, "value": doc}])
        session.commit()


@async_test
async def test_wiring_probes_on_its_own_thread_while_the_main_loop_is_blocked(
    tmp_path: Path,
) -> None:
    """The main loop blocks (time.sleep, as a stalled front door would) while an endpoint
    dies: the prober keeps probing, takes it down in the datapath and shows it in the
    snapshot, all before the loop wakes; events reach the main bus afterwards, on the loop."""
    runner = ScriptedRunner()
    dp = RecordingReconciler(pinned={("web", "198.18.1.2", 8080): False})
    bus = EventBus()
    events: list[tuple[str, str, str]] = []
    bus.subscribe(lambda e: events.append((e["type"], e["new"], threading.current_thread().name)))
    state: dict[str, Any] = {}
    wiring = HealthWiring(
        dp, state, bus, prober_options={"runner": runner, "time_scale": SCALE, "jitter": False}
    )
    config = ConfigService(Store(tmp_path / "sluice.db"))
    loop = asyncio.get_running_loop()
    try:
        await wiring.start(config)
        web = {"name": "web", "vip": "198.18.0.10", "port": 80,
               "health-probe": {"type": "tcp", "interval": 1, "timeout": 1, "retries": 2},
               "endpoint": [{"address": "198.18.1.1", "port": 8080},
                            {"address": "198.18.1.2", "port": 8080}]}  # fmt: skip
        runner.alive["198.18.1.2"] = False
        await loop.run_in_executor(None, _commit, config, web)  # Diff on another thread
        await wait_until(lambda: runner.calls.get("198.18.1.1", 0) >= 2, 2)
        assert ("web", "198.18.1.2", 8080, False) in dp.calls  # seeded down at once
        assert state["endpoint"]("web", "198.18.1.1", 8080)["health"] == UP

        runner.alive["198.18.1.1"] = False
        before = runner.calls["198.18.1.1"]
        time.sleep(1.0)  # the main loop stalls for 50 intervals
        during = runner.calls["198.18.1.1"] - before
        assert during >= 25, during  # probed on schedule (about 50) while the loop slept
        assert ("web", "198.18.1.1", 8080, False) in dp.calls  # the datapath already knows
        assert state["endpoint"]("web", "198.18.1.1", 8080)["health"] == DOWN
        assert events == []  # the doors' bus hears of it on the main loop, not before
        await wait_until(lambda: ("service-state", "down", "MainThread") in events, 2)
    finally:
        await wiring.stop()
        config.store.close()
    assert runner.threads == {"prober"}
    assert not wiring.thread.alive
    names = {t for *_, t in events}
    assert names == {"MainThread"}
    kinds = [(k, new) for k, new, _ in events]
    # endpoint before the service change it caused
    assert kinds.index(("endpoint-state", DOWN)) < kinds.index(("service-state", "down"))


@async_test
async def test_wiring_without_pinned_health_starts_as_before(tmp_path: Path) -> None:
    runner = ScriptedRunner()
    dp = RecordingReconciler(pinned=None)  # pinned_health() raises: no datapath
    wiring = HealthWiring(
        dp, {}, EventBus(), prober_options={"runner": runner, "time_scale": SCALE}
    )
    config = ConfigService(Store(tmp_path / "sluice.db"))
    try:
        web = {"name": "web", "vip": "198.18.0.10", "port": 80,
               "health-probe": {"type": "tcp"},
               "endpoint": [{"address": "198.18.1.1", "port": 8080}]}  # fmt: skip
        _commit(config, web)  # before start: found by the start-up sync
        await wiring.start(config)
        await wait_until(lambda: dp.calls == [("web", "198.18.1.1", 8080, True)], 2)
        assert wiring.state["endpoint"]("web", "198.18.1.1", 8080)["health"] == UP
    finally:
        await wiring.stop()
        config.store.close()


@async_test
async def test_state_reads_from_other_threads_while_the_prober_churns() -> None:
    """endpoint_state/endpoints_up from another thread while endpoints come and go and
    change state on the prober's loop: no exception, no torn row (a row's probe type and
    health always belong together)."""
    runner = ScriptedRunner()
    prober = Prober(time_scale=SCALE / 4, jitter=False, runner=runner)
    eps = [(f"198.18.1.{i}", 80) for i in range(1, 101)]
    for address, _ in eps[::2]:
        runner.alive[address] = False
    stop = threading.Event()
    errors: list[BaseException] = []
    reads = 0

    def reader() -> None:
        nonlocal reads
        try:
            while not stop.is_set():
                for address, port in eps:
                    st = prober.endpoint_state("web", address, port)
                    assert st is None or (st["probe"] in ("tcp", "none")), st
                    assert st is None or st["probe"] == "tcp" or st["health"] == UP, st
                    reads += 1
                assert 0 <= prober.endpoints_up("web") <= len(eps)
        except BaseException as exc:  # reported to the test below
            errors.append(exc)

    await prober.start()
    t = threading.Thread(target=reader)
    t.start()
    try:
        loop = asyncio.get_running_loop()
        end = loop.time() + 1.0
        n = 0
        while loop.time() < end:
            n += 1
            kind = "tcp" if n % 2 else "none"
            prober.sync({"web": svc("web", eps[: 50 + n % 50], type=kind)})
            await asyncio.sleep(0.005)
    finally:
        stop.set()
        t.join(5)
        await prober.stop()
    assert errors == [] and reads > 1000, (errors, reads)


@async_test
async def test_a_datapath_started_after_the_prober_hears_every_endpoint(tmp_path: Path) -> None:
    """The daemon starts the prober with a stand-in reconciler when the datapath cannot
    start yet (a stored config that does not validate) and swaps the real one in later: it
    must learn the health of endpoints that went down meanwhile."""
    from appliance.reconciler import LoggingReconciler

    runner = ScriptedRunner()
    runner.alive["198.18.1.2"] = False
    wiring = HealthWiring(
        LoggingReconciler(), {}, EventBus(),
        prober_options={"runner": runner, "time_scale": SCALE, "jitter": False},
    )  # fmt: skip
    config = ConfigService(Store(tmp_path / "sluice.db"))
    try:
        web = {"name": "web", "vip": "198.18.0.10", "port": 80,
               "health-probe": {"type": "tcp", "interval": 1, "timeout": 1},
               "endpoint": [{"address": "198.18.1.1", "port": 8080},
                            {"address": "198.18.1.2", "port": 8080}]}  # fmt: skip
        _commit(config, web)
        await wiring.start(config)
        await wait_until(lambda: state_of(wiring.prober, "web", "198.18.1.2", 8080) == DOWN, 2)
        dp = RecordingReconciler(pinned={})
        # As DatapathStart does, from the config worker thread.
        t = threading.Thread(target=setattr, args=(wiring, "reconciler", dp))
        t.start()
        t.join()
        await wait_until(lambda: len(dp.calls) == 2, 2)
        assert sorted(dp.calls) == [("web", "198.18.1.1", 8080, True),
                                    ("web", "198.18.1.2", 8080, False)]  # fmt: skip
    finally:
        await wiring.stop()
        config.store.close()
