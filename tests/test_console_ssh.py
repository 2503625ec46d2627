"""The console over SSH: log in with a password and a PTY, see the dashboard, quit."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable
from pathlib import Path

import asyncssh
import netkit
from daemonkit import Daemon

from appliance.config.passwords import hash_password
from appliance.doors import DoorContext, DoorSpec, DoorSupervisor
from northbound.console_ssh import ConsoleSSHDoor, ConsoleSSHServer
from northbound.ssh import Backoff, Throttle, User


async def start_from_config(service: object, state_dir: Path) -> DoorSupervisor:
    """The console-ssh door as the daemon runs it: under the door supervisor."""
    ctx = DoorContext(service, None, {}, None, Path(state_dir), Path(state_dir) / "sock")  # type: ignore[arg-type]
    supervisor = DoorSupervisor(
        ctx, [DoorSpec("console-ssh", ("management", "console-ssh"), ConsoleSSHDoor)]
    )
    await supervisor.start()
    return supervisor


def console_door(supervisor: DoorSupervisor) -> ConsoleSSHDoor:
    return supervisor.doors["console-ssh"]  # type: ignore[return-value]


async def _read_until(process: asyncssh.SSHClientProcess, needle: bytes, timeout: float) -> bytes:
    seen = b""
    deadline = time.monotonic() + timeout
    while needle not in seen:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"{needle!r} not seen; got {seen[-2000:]!r}")
        try:
            chunk = await asyncio.wait_for(process.stdout.read(65536), left)
        except TimeoutError:
            continue
        if not chunk:
            raise AssertionError(f"console ended before {needle!r}; got {seen[-2000:]!r}")
        seen += chunk
    return seen


async def _login_and_quit(daemon: Daemon, state_dir: Path) -> None:
    bob_key = asyncssh.generate_private_key("ssh-ed25519")
    users = {
        "alice": User("alice", hash_password("s3cret", ln=4), (), read_only=False),
        "bob": User(
            "bob", None, (bob_key.export_public_key().decode().strip(),), read_only=True
        ),
    }
    server = ConsoleSSHServer(users.get, state_dir, 0, host="127.0.0.1", socket=daemon.socket)
    await server.start()
    try:
        with_bad = asyncssh.connect(
            "127.0.0.1", server.port, username="alice", password="wrong", known_hosts=None
        )
        try:
            await with_bad
            raise AssertionError("a wrong password logged in")
        except asyncssh.PermissionDenied:
            pass
        async with asyncssh.connect(
            "127.0.0.1", server.port, username="alice", password="s3cret", known_hosts=None
        ) as conn:
            process = await conn.create_process(
                term_type="xterm", term_size=(80, 24), encoding=None
            )
            seen = await _read_until(process, b"Recent events", 30)
            await _read_until(process, b"alice", 10)  # the status line names the login
            assert b"Services" in seen
            process.stdin.write(b"q")
            await asyncio.wait_for(process.wait(), 15)
            assert process.exit_status == 0
        # A read-only user with a key: the console says so (and hides the edit keys).
        async with asyncssh.connect(
            "127.0.0.1", server.port, username="bob", client_keys=[bob_key], known_hosts=None
        ) as conn:
            process = await conn.create_process(
                term_type="vt100", term_size=(80, 24), encoding=None
            )
            await _read_until(process, b"(read-only)", 30)
            process.stdin.write(b"\x03")  # Ctrl-C quits too (nothing uncommitted)
            await asyncio.wait_for(process.wait(), 15)
            assert process.exit_status == 0
        # No terminal, no console.
        async with asyncssh.connect(
            "127.0.0.1", server.port, username="bob", client_keys=[bob_key], known_hosts=None
        ) as conn:
            result = await conn.run(encoding=None)
            assert result.exit_status == 1 and b"needs a terminal" in result.stderr
    finally:
        await server.close()


def test_console_over_ssh(daemon: Daemon, tmp_path: Path) -> None:
    asyncio.run(_login_and_quit(daemon, tmp_path / "state"))
    assert (tmp_path / "state" / "ssh_host_ed25519_key").stat().st_mode & 0o077 == 0


def test_throttle_backs_off_per_address() -> None:
    now = [1000.0]
    throttle = Throttle(Backoff(free_failures=2), clock=lambda: now[0])
    for _ in range(2):
        assert not throttle.blocked("198.18.9.9")
        throttle.failed("198.18.9.9")
    # After 2 free failures: refused for 1 s, then 2 s after the next failure, …
    assert throttle.blocked("198.18.9.9") and not throttle.blocked("198.18.9.10")
    now[0] += 1.5
    assert not throttle.blocked("198.18.9.9")
    throttle.failed("198.18.9.9")
    now[0] += 1.5
    assert throttle.blocked("198.18.9.9")
    now[0] += 1.0
    assert not throttle.blocked("198.18.9.9")


def test_a_login_takes_back_only_its_own_failures() -> None:
    now = [1000.0]
    throttle = Throttle(Backoff(free_failures=2), clock=lambda: now[0])
    # alice mistypes once, then logs in: her failure is taken back.
    throttle.failed("198.18.9.9", "alice")
    throttle.succeeded("198.18.9.9", "alice")
    throttle.failed("198.18.9.9", "bob")
    assert not throttle.blocked("198.18.9.9", "bob")
    # Guessing bob's password, then logging in as alice, does not clear bob's count.
    throttle.failed("198.18.9.9", "bob")
    throttle.succeeded("198.18.9.9", "alice")
    assert throttle.blocked("198.18.9.9", "bob")
    assert throttle.blocked("198.18.9.10", "bob")  # per user, from anywhere
    assert throttle.blocked("198.18.9.9", "carol")  # per address, whatever the user


def test_throttle_counts_an_ipv6_slash_64_together() -> None:
    throttle = Throttle(Backoff(free_failures=2), clock=lambda: 1000.0)
    throttle.failed("2001:db8:1:2::1", "a")
    throttle.failed("2001:db8:1:2::2", "b")
    assert throttle.blocked("2001:db8:1:2::3", "c")
    assert not throttle.blocked("2001:db8:1:3::1", "c")


def test_parallel_attempts_cannot_outrun_the_throttle() -> None:
    throttle = Throttle(Backoff(free_failures=3), clock=lambda: 1000.0)
    # Attempts reserved while their checks run count at once.
    granted = [throttle.begin("198.18.9.9", f"u{i}") for i in range(10)]
    assert granted.count(True) == 3
    for i, ok in enumerate(granted):
        if ok:
            throttle.end("198.18.9.9", f"u{i}", ok=False)
    assert not throttle.begin("198.18.9.9", "u99")


def test_an_account_without_a_password_costs_a_real_check() -> None:
    import time as clock

    from northbound.ssh import check_password

    slow = User("admin", hash_password("x"), (), read_only=False)
    nopass = User("fresh", None, (), read_only=False)

    def cost(user: User | None) -> float:
        start = clock.perf_counter()
        assert not check_password(user, "guess")
        return clock.perf_counter() - start

    real = min(cost(slow) for _ in range(3))
    # A dummy scrypt of the same parameters: not a shortcut that lists such accounts.
    assert min(cost(nopass) for _ in range(3)) > real / 3
    assert min(cost(None) for _ in range(3)) > real / 3


def test_the_host_key_is_replaced_when_a_crash_left_it_empty(tmp_path: Path) -> None:
    from northbound.ssh import HOST_KEY_FILE, load_or_create_host_key

    tmp_path.mkdir(exist_ok=True)
    (tmp_path / HOST_KEY_FILE).write_bytes(b"")  # what a crash between create and write left
    key = load_or_create_host_key(tmp_path)
    assert load_or_create_host_key(tmp_path).public_data == key.public_data
    assert (tmp_path / HOST_KEY_FILE).stat().st_mode & 0o077 == 0
    assert not list(tmp_path.glob(f".{HOST_KEY_FILE}.*"))  # no temporary file left


def test_start_from_config(tmp_path: Path) -> None:
    class FakeService:
        def __init__(self, settings: dict) -> None:
            self.sections_effective = {"management": {"console-ssh": settings}}
            self.sections: dict = {}

        def subscribe(self, callback: object) -> None: ...

        def unsubscribe(self, callback: object) -> None: ...

    async def body() -> None:
        sup = await start_from_config(FakeService({"enabled": False}), tmp_path)
        assert console_door(sup).port is None
        await sup.close()
        sup = await start_from_config(
            FakeService({"enabled": True, "port": 0, "address": ["127.0.0.1"]}), tmp_path
        )
        port = console_door(sup).port
        assert port is not None and port > 0
        await sup.close()

    asyncio.run(body())


def _free_port() -> int:
    return netkit.free_port()


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_the_console_door_follows_commits_and_keeps_open_sessions(tmp_path: Path) -> None:
    from appliance.config import ConfigService
    from appliance.config.store import Store

    service = ConfigService(Store(tmp_path / "config.db"))
    first, second = _free_port(), _free_port()

    def commit(settings: dict) -> None:
        with service.open_session("test", "test") as s:
            s.edit([{"op": "merge", "path": "/sluice:management/console-ssh", "value": settings}])
            s.commit("console-ssh")

    async def until(cond: Callable[[], bool], timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while not cond():
            assert time.monotonic() < deadline, "condition not met"
            await asyncio.sleep(0.05)

    async def body() -> None:
        commit({"port": first, "address": ["127.0.0.1"]})
        with service.open_session("test", "test") as s:
            user = {"name": "alice", "password-hash": hash_password("s3cret", ln=4)}
            s.edit([{"op": "merge", "path": "/sluice:management", "value": {"user": [user]}}])
            s.commit("a user")
        sup = await start_from_config(service, tmp_path / "state")
        door = console_door(sup)
        try:
            assert door.port == first and _listening(first)
            async with asyncssh.connect(
                "127.0.0.1", first, username="alice", password="s3cret", known_hosts=None
            ) as conn:
                # The commit runs off the loop, as on the daemon's worker thread.
                await asyncio.to_thread(commit, {"port": second})
                await until(lambda: door.port == second and _listening(second))
                assert not _listening(first)
                # The connection made before the move still opens sessions.
                result = await asyncio.wait_for(conn.run(encoding=None), 10)
                assert b"terminal" in (result.stderr or b"") + (result.stdout or b"")
            await asyncio.to_thread(commit, {"enabled": False})
            await until(lambda: door.port is None and not _listening(second))
        finally:
            await sup.close()

    asyncio.run(body())
    service.store.close()


def test_parallel_attempts_without_failures_wait_their_turn() -> None:
    throttle = Throttle(Backoff(free_failures=3), clock=lambda: 1000.0)
    for i in range(3):
        assert throttle.begin("198.18.9.9", f"u{i}")
    # Held back only by checks still running: it waits, it is not refused.
    assert not throttle.begin("198.18.9.9", "u3")
    assert throttle.waiting_on_checks("198.18.9.9", "u3")
    for i in range(3):
        throttle.end("198.18.9.9", f"u{i}", ok=True)
    assert throttle.begin("198.18.9.9", "u3")
    throttle.end("198.18.9.9", "u3", ok=False)
    # Real failures refuse at once, whatever runs.
    for _ in range(3):
        throttle.failed("198.18.9.9", "x")
    assert not throttle.waiting_on_checks("198.18.9.9", "u4")
