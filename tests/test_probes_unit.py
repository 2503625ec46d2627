"""Unit tests of the prober: packet builders, state machine, settings, event bus, scheduler.

No namespaces: the scheduler tests use a fake probe runner with scripted results and a
time scale of 1/50 (a configured 1 s interval runs every 20 ms); waits poll a condition
against a deadline.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
import threading
from typing import Any

import pytest
from probekit import async_test, wait_until

from appliance.checksum import internet_checksum
from appliance.config import Diff
from appliance.events import EventBus
from appliance.probes import Prober, ProbeResult, ProbeRunner, ProbeSpec
from appliance.probes.http import build_request, parse_status
from appliance.probes.icmp import echo_request
from appliance.probes.sctp import (
    CHUNK_ABORT,
    CHUNK_INIT,
    CHUNK_INIT_ACK,
    build_init,
    checksum_ok,
    crc32c,
    parse_reply,
    with_checksum,
)
from appliance.probes.settings import Timing, endpoint_key, targets_of
from appliance.probes.state import ADMIN_DISABLED, DEGRADED, DOWN, UP, Health

SCALE = 0.02  # 1 configured second = 20 ms


# -- SCTP packet and CRC32c ----------------------------------------------------------------
@pytest.mark.parametrize(
    ("data", "crc"),
    [
        (b"123456789", 0xE3069283),  # the CRC catalogue's check value for CRC-32C
        (bytes(32), 0x8A9136AA),  # RFC 3720 B.4 vectors
        (b"\xff" * 32, 0x62A8AB43),
        (bytes(range(32)), 0x46DD794E),
        (bytes(range(31, -1, -1)), 0x113FDB5C),
    ],
)
def test_crc32c_known_vectors(data: bytes, crc: int) -> None:
    assert crc32c(data) == crc


def test_sctp_checksum_matches_the_kernels_crc32c() -> None:
    """Cross-check against an independent implementation: the kernel's crc32c over AF_ALG
    (its digest is the little-endian CRC, the byte order SCTP puts on the wire)."""
    try:
        alg = socket.socket(socket.AF_ALG, socket.SOCK_SEQPACKET, 0)
        alg.bind(("hash", "crc32c"))
    except OSError as exc:
        pytest.skip(f"no kernel crc32c via AF_ALG: {exc}")
    packet = build_init(40000, 3868, 0x01020304, 0xA0B0C0D0)
    zeroed = packet[:8] + bytes(4) + packet[12:]
    op, _ = alg.accept()
    with alg, op:
        op.sendall(zeroed)
        kernel = op.recv(4)
    assert packet[8:12] == kernel


def test_sctp_init_layout() -> None:
    packet = build_init(40000, 3868, 0x01020304, 0xA0B0C0D0)
    assert len(packet) == 12 + 20
    src, dst, vtag = struct.unpack_from("!HHI", packet)
    assert (src, dst, vtag) == (40000, 3868, 0)  # INIT travels with verification tag 0
    ctype, flags, length, tag, rwnd, os_, mis, tsn = struct.unpack_from("!BBHIIHHI", packet, 12)
    assert (ctype, flags, length, tag, tsn) == (CHUNK_INIT, 0, 20, 0x01020304, 0xA0B0C0D0)
    assert rwnd > 0 and os_ >= 1 and mis >= 1
    assert checksum_ok(packet)
    # Little-endian CRC on the wire (RFC 9260 appendix A).
    assert packet[8:12] == struct.pack("<I", crc32c(packet[:8] + bytes(4) + packet[12:]))


def test_sctp_reply_parser() -> None:
    ack = with_checksum(
        struct.pack("!HHII", 3868, 40000, 0x01020304, 0)
        + struct.pack("!BBHIIHHI", CHUNK_INIT_ACK, 0, 20, 0x55, 65535, 1, 1, 7)
    )
    reply = parse_reply(ack)
    assert reply is not None
    assert (reply.src_port, reply.dst_port, reply.vtag, reply.chunk_type) == (
        3868,
        40000,
        0x01020304,
        CHUNK_INIT_ACK,
    )
    corrupt = ack[:20] + bytes([ack[20] ^ 1]) + ack[21:]
    assert parse_reply(corrupt) is None  # a bad CRC is dropped, as a receiver must
    assert parse_reply(ack[:10]) is None
    abort = with_checksum(struct.pack("!HHIIBBH", 3868, 40000, 0x01020304, 0, CHUNK_ABORT, 0, 4))
    parsed = parse_reply(abort)
    assert parsed is not None and parsed.chunk_type == CHUNK_ABORT


# -- ICMP and HTTP helpers ---------------------------------------------------------------
def test_icmp_echo_checksum_verifies() -> None:
    packet = echo_request(False, 0x1234, 7)
    assert packet[0] == 8 and internet_checksum(packet) == 0
    assert echo_request(True, 0x1234, 7)[0] == 128  # ICMPv6: the kernel fills the checksum


def test_http_request_and_status() -> None:
    spec = ProbeSpec("http", "2001:db8::2", 8080, 1.0, http_method="POST", request="x=1")
    req = build_request(spec)
    assert req.startswith(b"POST / HTTP/1.1\r\nHost: [2001:db8::2]:8080\r\n")
    assert req.endswith(b"Content-Length: 3\r\n\r\nx=1")
    assert b"Host: 198.18.0.2\r\n" in build_request(ProbeSpec("http", "198.18.0.2", 80, 1.0))
    assert parse_status(b"HTTP/1.1 204 No Content\r\n") == 204
    assert parse_status(b"HTTP/1.0 200\r\n") == 200
    for bad in (b"", b"SSH-2.0-OpenSSH\r\n", b"HTTP/1.1 2000 x\r\n"):
        with pytest.raises(ValueError):
            parse_status(bad)


# -- the state machine ----------------------------------------------------------------------
TIMING = Timing(interval=1, timeout=1, retries=3, rise=2, hold_down=0)


def feed(health: Health, results: str, timing: Timing = TIMING, t0: float = 0.0) -> list[str]:
    """Apply results ('+' ok, '-' fail) one per second; return the states after each."""
    out = []
    for i, r in enumerate(results):
        health.record(r == "+", 10, "" if r == "+" else "timeout", timing, t0 + i, t0 + i)
        out.append(health.state)
    return out


def test_up_degraded_down_up() -> None:
    h = Health(UP, 0)
    assert feed(h, "--+--") == [DEGRADED, DEGRADED, UP, DEGRADED, DEGRADED]
    assert feed(h, "-") == [DOWN]  # retries=3 consecutive failures
    assert feed(h, "+-++") == [DOWN, DOWN, DOWN, UP]  # rise=2 consecutive successes
    assert h.last_error == "timeout" and h.rtt_us == 10


def test_retries_one_goes_straight_down() -> None:
    h = Health(UP, 0)
    assert feed(h, "-", Timing(1, 1, 1, 1, 0)) == [DOWN]


def test_hold_down_keeps_a_flapping_endpoint_down() -> None:
    timing = Timing(interval=1, timeout=1, retries=1, rise=1, hold_down=5)
    h = Health(UP, 0)
    states = feed(h, "-+++++++", timing)  # down at t=0; successes from t=1
    assert states == [DOWN, DOWN, DOWN, DOWN, DOWN, UP, UP, UP]  # up at t=5, not before


def test_record_reports_each_change_once() -> None:
    h = Health(UP, 0)
    changes = [h.record(r == "+", None, "e", TIMING, i, i) for i, r in enumerate("---+++")]
    assert [c for c in changes if c] == [(UP, DEGRADED), (DEGRADED, DOWN), (DOWN, UP)]


# -- settings -----------------------------------------------------------------------------
def svc(name: str, endpoints: list[dict[str, Any]], **probe: Any) -> dict[str, Any]:
    """An effective-shaped service dict (defaults filled in, as the config service gives)."""
    hp = {
        "type": "tcp",
        "http-method": "GET",
        "http-path": "/",
        "expected-status": 200,
        "interval": 1,
        "timeout": 1,
        "retries": 2,
        "successes-before-up": 2,
        "hold-down": 0,
    }
    hp.update(probe)
    eps = [{"weight": 1, "admin-state": "enabled", **e} for e in endpoints]
    return {"name": name, "admin-state": "enabled", "health-probe": hp, "endpoint": eps}


def test_settings_endpoint_overrides_and_ports() -> None:
    s = svc(
        "web",
        [
            {"address": "198.18.1.1", "port": 8080},
            {"address": "198.18.1.2", "port": 8080, "health-probe": {"port": 9000, "retries": 5}},
            {"address": "2001:DB8::3", "port": 8080, "admin-state": "drain"},
        ],
        port=8081,
        interval=10,
    )
    t = targets_of(s)
    a = t[("web", "198.18.1.1", 8080)]
    b = t[("web", "198.18.1.2", 8080)]
    c = t[endpoint_key("web", "2001:db8::3", 8080)]
    assert (a.spec.port, a.timing.retries, a.timing.interval) == (8081, 2, 10)
    assert (b.spec.port, b.timing.retries) == (9000, 5)
    assert c.admin == "drain" and not c.probed and c.spec.address == "2001:db8::3"
    del s["health-probe"]["port"]
    assert targets_of(s)[("web", "198.18.1.1", 8080)].spec.port == 8080
    s["admin-state"] = "disabled"
    assert not any(tc.probed for tc in targets_of(s).values())


# -- event bus ------------------------------------------------------------------------------
@async_test
async def test_event_bus_callbacks_and_queues_across_threads() -> None:
    bus = EventBus()
    seen: list[dict[str, Any]] = []
    bus.subscribe(seen.append, "endpoint-state")
    q = bus.queue()
    small = bus.queue(maxsize=2)

    def broken(event: dict[str, Any]) -> None:
        raise RuntimeError("subscriber bug")

    bus.subscribe(broken)  # must not stop delivery to the others
    bus.publish({"type": "endpoint-state", "n": 1})
    bus.publish({"type": "other", "n": 2})
    t = threading.Thread(target=bus.publish, args=({"type": "endpoint-state", "n": 3},))
    t.start()
    t.join()
    got = [await asyncio.wait_for(q.get(), 2) for _ in range(3)]
    assert [e["n"] for e in got] == [1, 2, 3]
    assert [e["n"] for e in seen] == [1, 3]
    assert small.qsize() == 2 and bus.dropped == 1  # the oldest went, the newest stayed
    assert [small.get_nowait()["n"] for _ in range(2)] == [2, 3]
    bus.unsubscribe(q)
    bus.publish({"type": "x"})
    assert q.empty()


# -- scheduler with a fake runner -----------------------------------------------------------
class FakeRunner(ProbeRunner):
    """Scripted probe results by address; records every call with its loop time."""

    fast_tcp = False  # every probe goes through run()

    def __init__(self, delay: float = 0.0) -> None:
        super().__init__()
        self.alive: dict[str, bool] = {}
        self.calls: list[tuple[str, float]] = []
        self.delay = delay
        self.running = 0
        self.max_running = 0

    async def run(self, spec: ProbeSpec) -> ProbeResult:
        self.calls.append((spec.address, asyncio.get_running_loop().time()))
        self.running += 1
        self.max_running = max(self.max_running, self.running)
        try:
            if self.delay:
                await asyncio.sleep(self.delay)
        finally:
            self.running -= 1
        if self.alive.get(spec.address, True):
            return ProbeResult(True, 42, "")
        return ProbeResult(False, None, "connection refused")

    def count(self, address: str) -> int:
        return sum(1 for a, _ in self.calls if a == address)


def make_prober(runner: FakeRunner, **kw: Any) -> tuple[Prober, list[Any], list[Any]]:
    bus = EventBus()
    events: list[dict[str, Any]] = []
    bus.subscribe(events.append)
    changes: list[tuple[str, str, int, bool]] = []
    kw.setdefault("jitter", False)
    prober = Prober(
        bus,
        on_change=lambda *a: changes.append(a),
        time_scale=SCALE,
        runner=runner,
        **kw,
    )
    return prober, events, changes


def state_of(prober: Prober, service: str, address: str, port: int) -> str:
    st = prober.endpoint_state(service, address, port)
    return st["health"] if st else "?"


@async_test
async def test_down_and_up_with_one_event_per_change(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="appliance.probes")
    runner = FakeRunner()
    prober, events, changes = make_prober(runner)
    await prober.start()
    try:
        prober.sync({"web": svc("web", [{"address": "198.18.1.1", "port": 80}])})
        assert changes == [("web", "198.18.1.1", 80, True)]  # initial state told once
        await wait_until(lambda: runner.count("198.18.1.1") >= 2, 2)
        assert state_of(prober, "web", "198.18.1.1", 80) == UP and events == []
        runner.alive["198.18.1.1"] = False
        # retries=2: down after 2 failures, i.e. within interval x retries + timeout.
        took = await wait_until(lambda: state_of(prober, "web", "198.18.1.1", 80) == DOWN, 2)
        assert took <= (1 * 2 + 1) * SCALE + 0.2
        st = prober.endpoint_state("web", "198.18.1.1", 80)
        assert st is not None and st["last-error"] == "connection refused"
        runner.alive["198.18.1.1"] = True
        await wait_until(lambda: state_of(prober, "web", "198.18.1.1", 80) == UP, 2)
        n = runner.count("198.18.1.1")
        await wait_until(lambda: runner.count("198.18.1.1") >= n + 5, 2)  # steady: no events
    finally:
        await prober.stop()
    assert [(e["old"], e["new"]) for e in events] == [(UP, DEGRADED), (DEGRADED, DOWN), (DOWN, UP)]
    down = events[1]
    assert down["type"] == "endpoint-state" and down["error"] == "connection refused"
    assert (down["service"], down["address"], down["port"]) == ("web", "198.18.1.1", 80)
    assert down["time"].endswith("Z")
    assert changes[1:] == [("web", "198.18.1.1", 80, False), ("web", "198.18.1.1", 80, True)]
    logged = [r for r in caplog.records if r.getMessage() == "endpoint health changed"]
    assert [(r.old, r.new, r.levelname) for r in logged] == [  # type: ignore[attr-defined]
        (UP, DEGRADED, "INFO"),
        (DEGRADED, DOWN, "WARNING"),
        (DOWN, UP, "INFO"),
    ]


@async_test
async def test_hold_down_is_honoured_by_the_scheduler() -> None:
    runner = FakeRunner()
    prober, events, _ = make_prober(runner)
    loop = asyncio.get_running_loop()
    assert prober.bus is not None
    when: dict[str, float] = {}  # loop time of each transition, taken as it happens
    prober.bus.subscribe(lambda e: when.setdefault(e["new"], loop.time()))
    await prober.start()
    try:
        ep = {"address": "198.18.1.1", "port": 80}
        prober.sync(
            {"web": svc("web", [ep], retries=1, **{"successes-before-up": 1}, **{"hold-down": 10})}
        )
        runner.alive["198.18.1.1"] = False
        await wait_until(lambda: state_of(prober, "web", "198.18.1.1", 80) == DOWN, 2)
        runner.alive["198.18.1.1"] = True
        await wait_until(lambda: state_of(prober, "web", "198.18.1.1", 80) == UP, 2)
        probes_while_held = runner.count("198.18.1.1")
    finally:
        await prober.stop()
    # Probes succeeded all along (every 20 ms); hold-down kept it down for 10 x 20 ms. The
    # hold-down runs from the probe result, and the down event is stamped a moment after it
    # (on a loaded machine, milliseconds after): one probe interval of slack for that, which
    # still fails without a hold-down (up would follow the first success, 1-2 intervals on).
    assert when[UP] - when[DOWN] >= 10 * SCALE - SCALE
    assert probes_while_held >= 5
    assert [(e["old"], e["new"]) for e in events] == [(UP, DOWN), (DOWN, UP)]


@async_test
async def test_apply_touches_only_changed_services() -> None:
    runner = FakeRunner()
    prober, events, changes = make_prober(runner)
    await prober.start()
    try:
        web = svc("web", [{"address": "198.18.1.1", "port": 80}])
        db = svc(
            "db", [{"address": "198.18.2.1", "port": 5432}, {"address": "198.18.2.2", "port": 5432}]
        )
        prober.sync({"web": web, "db": db})
        runner.alive["198.18.1.1"] = False
        await wait_until(lambda: state_of(prober, "web", "198.18.1.1", 80) == DOWN, 2)
        web_target = prober._targets[("web", "198.18.1.1", 80)]
        gen = web_target.gen
        # Commit: db's second endpoint drained, a new service added; web untouched.
        db2 = svc(
            "db",
            [
                {"address": "198.18.2.1", "port": 5432},
                {"address": "198.18.2.2", "port": 5432, "admin-state": "drain"},
            ],
        )
        dns = svc("dns", [{"address": "198.18.3.1", "port": 53}], type="none")
        drained_before = runner.count("198.18.2.2")
        prober.apply(Diff(services_added={"dns": dns}, services_changed={"db": (db, db2)}))
        assert state_of(prober, "db", "198.18.2.2", 5432) == ADMIN_DISABLED
        assert state_of(prober, "db", "198.18.2.1", 5432) == UP
        assert state_of(prober, "dns", "198.18.3.1", 53) == UP  # type none: up, never probed
        assert prober._targets[("web", "198.18.1.1", 80)] is web_target and web_target.gen == gen
        assert state_of(prober, "web", "198.18.1.1", 80) == DOWN
        prober.apply(Diff(services_removed={"web": web}))
        assert prober.endpoint_state("web", "198.18.1.1", 80) is None
        calls = len(runner.calls)
        await wait_until(lambda: len(runner.calls) > calls + 5, 2)
        assert runner.count("198.18.3.1") == 0 and runner.count("198.18.2.2") == drained_before
        # A commit from another thread (the config worker) is handed to the loop.
        db3 = svc(
            "db", [{"address": "198.18.2.1", "port": 5432}, {"address": "198.18.2.2", "port": 5432}]
        )
        t = threading.Thread(target=prober.apply, args=(Diff(services_changed={"db": (db2, db3)}),))
        t.start()
        t.join()
        await wait_until(lambda: state_of(prober, "db", "198.18.2.2", 5432) == UP, 2)
        await wait_until(lambda: runner.count("198.18.2.2") > 0, 2)
        assert prober.endpoints_up("db") == 2
    finally:
        await prober.stop()
    admin = [e for e in events if e["address"] == "198.18.2.2"]
    assert [(e["old"], e["new"]) for e in admin] == [(UP, ADMIN_DISABLED), (ADMIN_DISABLED, UP)]
    assert ("db", "198.18.2.2", 5432, False) in changes


def test_jitter_spreads_first_probes_over_one_interval() -> None:
    """The first due times (read from the schedule itself, so machine load cannot skew
    the test) spread evenly over one interval instead of all falling due at once."""
    import random

    prober, _, _ = make_prober(FakeRunner(), jitter=True, rng=random.Random(5))
    eps = [{"address": f"198.18.{i // 250}.{i % 250 + 1}", "port": 80} for i in range(1000)]
    prober._now = lambda: 100.0  # type: ignore[method-assign]  # a fake clock
    prober.sync({"big": svc("big", eps, interval=5)})  # 5 x 20 ms = 100 ms interval
    interval = 5 * SCALE
    dues = [due for due, *_ in prober._heap]
    assert len(dues) == 1000
    assert min(dues) >= 100.0 and max(dues) <= 100.0 + interval
    buckets = [0] * 10
    for due in dues:
        buckets[min(9, int((due - 100.0) / interval * 10))] += 1
    assert min(buckets) > 60 and max(buckets) < 140, buckets  # about 100 each


@async_test
async def test_concurrency_is_bounded() -> None:
    runner = FakeRunner(delay=0.05)
    prober, _, _ = make_prober(runner, concurrency=8)
    eps = [{"address": f"198.18.0.{i + 1}", "port": 80} for i in range(50)]
    await prober.start()
    try:
        prober.sync({"s": svc("s", eps, interval=10, timeout=5)})
        await wait_until(lambda: len(runner.calls) >= 50, 5)
    finally:
        await prober.stop()
    assert runner.max_running == 8


@async_test
async def test_sync_replaces_the_whole_target_set() -> None:
    runner = FakeRunner()
    prober, _, _ = make_prober(runner)
    a = svc("a", [{"address": "198.18.1.1", "port": 80}])
    b = svc("b", [{"address": "198.18.1.2", "port": 80}])
    prober.sync({"a": a, "b": b})  # before start(): targets wait for the loop
    await prober.start()
    try:
        await wait_until(lambda: runner.count("198.18.1.2") > 0, 2)
        prober.sync({"a": a})
        assert prober.endpoint_state("b", "198.18.1.2", 80) is None and len(prober) == 1
    finally:
        await prober.stop()


# -- against the real config service --------------------------------------------------------
@async_test
async def test_prober_follows_config_service_commits(tmp_path: Any) -> None:
    """Effective dicts from a real ConfigService (sync at start-up, then each commit's Diff
    from the committing worker thread) resolve as the model says."""
    from appliance.config import ConfigService
    from appliance.config.store import Store

    service = ConfigService(Store(tmp_path / "sluice.db"))
    runner = FakeRunner()
    prober, events, _ = make_prober(runner)
    await prober.start()
    loop = asyncio.get_running_loop()
    try:
        prober.sync(service.services_effective)
        service.subscribe(prober.apply)
        path = "/sluice:load-balancer/service[name='web']"
        value = {
            "name": "web",
            "vip": "198.18.0.10",
            "port": 80,
            "health-probe": {"type": "http", "http-path": "/healthz", "interval": 3},
            "endpoint": [
                {"address": "198.18.1.1", "port": 8080},
                {"address": "198.18.1.2", "port": 8080, "health-probe": {"port": 9090}},
            ],
        }

        def commit(changes: list[dict[str, Any]]) -> None:
            with service.open_session("ops", "cli") as session:
                session.edit(changes)
                session.commit()

        await loop.run_in_executor(None, commit, [{"op": "create", "path": path, "value": value}])
        await wait_until(lambda: len(prober) == 2, 2)
        b = prober._targets[("web", "198.18.1.2", 8080)].cfg
        assert (b.spec.type, b.spec.port, b.spec.http_path, b.timing.interval) == (
            "http",
            9090,
            "/healthz",
            3 * SCALE,
        )
        await wait_until(lambda: runner.count("198.18.1.1") > 0, 2)
        ep = f"{path}/endpoint[address='198.18.1.1'][port='8080']/admin-state"
        await loop.run_in_executor(None, commit, [{"op": "merge", "path": ep, "value": "drain"}])
        await wait_until(lambda: state_of(prober, "web", "198.18.1.1", 8080) == ADMIN_DISABLED, 2)
        await loop.run_in_executor(None, commit, [{"op": "delete", "path": path}])
        await wait_until(lambda: len(prober) == 0, 2)
    finally:
        await prober.stop()
        service.store.close()
    assert [(e["address"], e["new"]) for e in events] == [("198.18.1.1", ADMIN_DISABLED)]


@async_test
async def test_stop_abandons_probes_and_start_resumes_them() -> None:
    runner = FakeRunner(delay=0.05)  # probes are in flight when stop() comes
    prober, _, _ = make_prober(runner)
    prober.sync({"a": svc("a", [{"address": "198.18.1.1", "port": 80}])})
    await prober.start()
    await wait_until(lambda: runner.running == 1, 2)
    await prober.stop()
    assert runner.running == 0  # cancelled, not left behind
    n = runner.count("198.18.1.1")
    await prober.start()
    try:
        await wait_until(lambda: runner.count("198.18.1.1") >= n + 2, 2)
    finally:
        await prober.stop()
