"""The console against a real daemon: every screen, edits, commit, rollback, errors, quit."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
from daemonkit import Daemon

from tui.app import SluiceConsole
from tui.screens.confirm import CommitScreen, ConfirmScreen
from tui.screens.service_form import ServiceForm

SIZE = (80, 24)


def sync(fn: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run an async test body with asyncio.run (the project has no pytest async plugin)."""

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> None:
        asyncio.run(fn(*args, **kwargs))

    return run


def screen_text(app: SluiceConsole) -> str:
    """What the terminal shows, as plain text (textual has no public text capture)."""
    strips = app.screen._compositor.render_strips()
    return "\n".join("".join(seg.text for seg in strip).rstrip() for strip in strips)


async def until(pilot, cond: Callable[[], object], timeout: float = 8.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out; screen:\n{screen_text(pilot.app)}")
        await pilot.pause(0.05)


async def shows(pilot, text: str, timeout: float = 8.0) -> None:
    await until(pilot, lambda: text in screen_text(pilot.app), timeout)


def add_web(daemon: Daemon) -> None:
    with daemon.client() as c:
        c.call(
            "lb.add",
            service={
                "name": "web",
                "vip": "198.18.0.10",
                "port": 80,
                "endpoint": [
                    {"address": "198.18.1.1", "port": 8080},
                    {"address": "198.18.1.2", "port": 8080},
                ],
            },
            comment="first",
        )


def services(daemon: Daemon) -> dict[str, dict]:
    with daemon.client() as c:
        return {s["name"]: s for s in c.call("lb.list")}


def history(daemon: Daemon) -> list[dict]:
    with daemon.client() as c:
        return c.call("config.history")


def console(daemon: Daemon) -> SluiceConsole:
    return SluiceConsole(daemon.socket, poll_interval=0.3)


async def type_text(pilot, text: str) -> None:
    await pilot.press(*list(text))


@sync
async def test_dashboard_shows_health_services_and_events(daemon: Daemon) -> None:
    add_web(daemon)
    app = console(daemon)
    async with app.run_test(size=SIZE) as pilot:
        await shows(pilot, "198.18.0.10:80")
        await shows(pilot, "commit #1 by")  # the events arrive by their own poll
        text = screen_text(pilot.app)
        assert "connected" in text
        assert "services 1" in text and "endpoints 2" in text and "last commit #1" in text
        assert "commit #1 by" in text and "+web" in text  # recent events: the commit
        await shows(pilot, "Firewall: off (no rules)")  # asked after the services
        # Rates are "-" while the daemon reports no state (datapath off).
        assert "- 2 ep" in text
        await pilot.press("?")
        await shows(pilot, "roll back to the selected commit (asks)")
        await pilot.press("6")
        await shows(pilot, "Events (config commits")
        assert "commit #1 by" in screen_text(app)
        await pilot.press("7")
        await shows(pilot, "The datapath is not running in this daemon.")
        await shows(pilot, "tcp/80")  # the VIP table: 198.18.0.10 IPv4 tcp/80 web


@sync
async def test_add_edit_delete_commit(daemon: Daemon) -> None:
    app = console(daemon)
    async with app.run_test(size=SIZE) as pilot:
        await shows(pilot, "connected")
        await pilot.press("2", "a")
        await until(pilot, lambda: isinstance(app.screen, ServiceForm))
        await type_text(pilot, "api")
        await pilot.press("tab")
        await type_text(pilot, "198.18.0.20")
        await pilot.press("tab", "tab")
        await type_text(pilot, "443")
        for _ in range(4):
            await pilot.press("tab")
        await type_text(pilot, "198.18.1.5:8443:3")
        await pilot.press("ctrl+g")
        await until(pilot, lambda: not isinstance(app.screen, ServiceForm))
        await shows(pilot, "+ service api")  # the commit bar shows the pending diff
        assert services(daemon) == {}  # staged only
        await pilot.press("C")
        await until(pilot, lambda: isinstance(app.screen, CommitScreen))
        await type_text(pilot, "add api")
        await pilot.press("enter")
        await until(pilot, lambda: "api" in services(daemon))
        api = services(daemon)["api"]
        assert api["port"] == 443 and api["endpoint"][0]["weight"] == 3
        assert history(daemon)[0]["comment"] == "add api"

        # Edit: change the port, commit.
        await until(pilot, lambda: not app.pending or not app.pending["services"])
        await shows(pilot, "198.18.0.20")
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, ServiceForm))
        await pilot.press("tab", "tab")  # vip -> protocol -> port
        await pilot.press("ctrl+u")
        await type_text(pilot, "444")
        await pilot.press("ctrl+g")
        await until(pilot, lambda: not isinstance(app.screen, ServiceForm))
        await shows(pilot, "port 443→444")
        await pilot.press("C")
        await until(pilot, lambda: isinstance(app.screen, CommitScreen))
        await pilot.press("enter")
        await until(pilot, lambda: services(daemon)["api"]["port"] == 444)
        # The edit kept what the form does not show (the endpoint's weight).
        assert services(daemon)["api"]["endpoint"][0]["weight"] == 3

        # Delete (asks), then commit.
        await pilot.press("x")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("y")
        await shows(pilot, "- service api")
        await pilot.press("C")
        await until(pilot, lambda: isinstance(app.screen, CommitScreen))
        await pilot.press("enter")
        await until(pilot, lambda: services(daemon) == {})


@sync
async def test_bad_value_shows_inline_and_changes_nothing(daemon: Daemon) -> None:
    add_web(daemon)
    before = history(daemon)
    app = console(daemon)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("2")
        await shows(pilot, "198.18.0.10")
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, ServiceForm))
        await pilot.press("tab", "tab")
        await pilot.press("ctrl+u")
        await type_text(pilot, "99999")
        await pilot.press("ctrl+g")
        await shows(pilot, 'Value "99999" is out of type uint16')
        lines = screen_text(app).splitlines()
        port_row = next(i for i, line in enumerate(lines) if line.startswith("Port"))
        assert "99999" in lines[port_row + 1]  # the error sits right under the port field
        assert isinstance(app.screen, ServiceForm)
        # A must on the service names the leaf in its message: it lands on that field.
        await pilot.press("ctrl+u")
        await type_text(pilot, "80")
        await pilot.press("tab")
        mode = app.screen.query_one("#f-mode")
        mode.value = "full-nat"
        await pilot.press("ctrl+g")
        await shows(pilot, "snat-address is required when mode is full-nat")
        lines = screen_text(app).splitlines()
        snat_row = next(i for i, line in enumerate(lines) if line.startswith("SNAT address"))
        assert "snat-address is required" in lines[snat_row + 1]
        await pilot.press("escape")
        await until(pilot, lambda: not isinstance(app.screen, ServiceForm))
        await pilot.pause(0.5)
        assert app.pending == {"services": {}, "sections": {}}  # the bad edit was taken back
    assert services(daemon)["web"]["port"] == 80
    assert services(daemon)["web"]["mode"] == "default"
    assert history(daemon) == before


@sync
async def test_endpoints_admin_states(daemon: Daemon) -> None:
    add_web(daemon)
    app = console(daemon)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("2")
        await shows(pilot, "198.18.0.10")
        await pilot.press("e")
        await shows(pilot, "Endpoints of web")
        await shows(pilot, "198.18.1.2")
        text = screen_text(app)
        assert "health" in text and "rtt" in text and "last error" in text
        await pilot.press("r")  # drain the first endpoint
        await shows(pilot, "enabled→drain")
        await pilot.press("down", "o")  # disable the second
        await shows(pilot, "enabled→disabled")
        await pilot.press("C")
        await until(pilot, lambda: isinstance(app.screen, CommitScreen))
        await pilot.press("enter")
        await until(pilot, lambda: history(daemon)[0]["id"] == 2)
        eps = services(daemon)["web"]["endpoint"]
        assert [e["admin-state"] for e in eps] == ["drain", "disabled"]
        await pilot.press("n")  # enable the second again
        await shows(pilot, "disabled→enabled")
        await pilot.press("U")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("y")
        await until(pilot, lambda: "→" not in screen_text(app))
    assert services(daemon)["web"]["endpoint"][1]["admin-state"] == "disabled"


@sync
async def test_history_diff_and_rollback(daemon: Daemon) -> None:
    add_web(daemon)
    with daemon.client() as c:
        c.call("config.edit", changes=[{
            "op": "merge", "path": "/sluice:load-balancer/service[name='web']",
            "value": {"port": 81}}])  # fmt: skip
        c.call("config.commit", comment="port 81")
    app = console(daemon)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("5")
        await shows(pilot, "port 81")
        await shows(pilot, "port 80→81")  # diff of the newest commit
        await pilot.press("down")
        await shows(pilot, "+ service web")  # diff of commit 1
        await pilot.press("r")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        assert "Roll back to commit #1?" in screen_text(app)
        await pilot.press("n")
        await pilot.pause(0.3)
        assert len(history(daemon)) == 2
        await pilot.press("r")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("y")
        await until(pilot, lambda: len(history(daemon)) == 3)
        await shows(pilot, "rollback to commit 1")
    assert services(daemon)["web"]["port"] == 80


@sync
async def test_sessions_say_why_without_a_datapath(daemon: Daemon) -> None:
    app = console(daemon)  # daemonkit runs the daemon with the datapath off
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("4")
        await shows(pilot, "datapath is not running")
        await pilot.press("slash")
        await type_text(pilot, "web")
        await pilot.press("enter")
        await shows(pilot, "datapath is not running")


@sync
async def test_daemon_unreachable_then_back(daemon: Daemon) -> None:
    daemon.stop()
    app = console(daemon)
    async with app.run_test(size=SIZE) as pilot:
        await shows(pilot, "daemon not reachable")
        assert "retrying" in screen_text(app)
        await pilot.press("2")  # keys still work
        await shows(pilot, "daemon not reachable")
        await asyncio.get_running_loop().run_in_executor(None, daemon.start)
        await shows(pilot, "connected", timeout=10)


@sync
async def test_unreachable_socket_path(tmp_path: Path) -> None:
    app = SluiceConsole(tmp_path / "nothing.sock", poll_interval=0.3)
    async with app.run_test(size=SIZE) as pilot:
        await shows(pilot, "daemon not reachable")
        await pilot.press("q")  # nothing uncommitted: quits without asking
        await until(pilot, lambda: app.return_value == 0)


@sync
async def test_quit_asks_with_uncommitted_changes(daemon: Daemon) -> None:
    add_web(daemon)
    app = console(daemon)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("2")
        await shows(pilot, "198.18.0.10")
        await pilot.press("x")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("y")
        await shows(pilot, "- service web")
        await pilot.press("q")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        assert "1 uncommitted change(s) will be lost" in screen_text(app)
        await pilot.press("n")
        await pilot.pause(0.2)
        assert app.return_value is None
        await pilot.press("ctrl+c")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("y")
        await until(pilot, lambda: app.return_value == 0)
    assert "web" in services(daemon)  # quitting discarded, did not commit


@pytest.mark.parametrize("env", [{"NO_COLOR": "1"}, {"TEXTUAL_COLOR_SYSTEM": "standard"}])
@sync
async def test_monochrome_dashboard_80x24(
    daemon: Daemon, monkeypatch: pytest.MonkeyPatch, env: dict[str, str]
) -> None:
    add_web(daemon)
    monkeypatch.setenv("TERM", "vt100")
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    app = console(daemon)
    async with app.run_test(size=SIZE) as pilot:
        await shows(pilot, "198.18.0.10:80")
        await shows(pilot, "q Quit")
        lines = screen_text(app).split("\n")
        assert len(lines) == 24 and all(len(line) <= 80 for line in lines)
        assert lines[0].startswith("1 Dash") and "? Help" in lines[0]
        assert "q Quit" in lines[-1]


@sync
async def test_read_only_console_refuses_edits(daemon: Daemon) -> None:
    add_web(daemon)
    app = SluiceConsole(daemon.socket, poll_interval=0.3, read_only=True)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("2")
        await shows(pilot, "198.18.0.10")
        await shows(pilot, "(read-only)")
        await pilot.press("a")
        await pilot.pause(0.2)
        assert not isinstance(app.screen, ServiceForm)
        await pilot.press("x")
        await pilot.pause(0.2)
        assert not isinstance(app.screen, ConfirmScreen)


@sync
async def test_refused_commit_opens_the_form_with_the_error(daemon: Daemon) -> None:
    add_web(daemon)
    app = console(daemon)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("2")
        await shows(pilot, "198.18.0.10")
        # Staged behind the form's back (as a script on this session could): a bad port.
        await app.call(
            "config.edit",
            changes=[
                {
                    "op": "merge",
                    "path": "/sluice:load-balancer/service[name='web']",
                    "value": {"port": 70000},
                }
            ],
        )
        app.poll()
        await shows(pilot, "port 80→70000")
        await pilot.press("C")
        await until(pilot, lambda: isinstance(app.screen, CommitScreen))
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, ServiceForm))
        await shows(pilot, 'Value "70000" is out of type uint16')
        lines = screen_text(app).splitlines()
        port_row = next(i for i, line in enumerate(lines) if line.startswith("Port"))
        assert "70000" in lines[port_row + 1]
    assert services(daemon)["web"]["port"] == 80


@sync
async def test_hung_daemon_does_not_block_the_console(tmp_path: Path) -> None:
    # A "daemon" that accepts and never answers.
    path = tmp_path / "hung.sock"
    held: list[asyncio.StreamWriter] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_unix_server(accept, path=str(path))
    app = SluiceConsole(path, poll_interval=0.3, timeout=0.5)
    try:
        async with app.run_test(size=SIZE) as pilot:
            await shows(pilot, "did not answer hello")
            await pilot.press("2")  # the keys keep working meanwhile
            await until(pilot, lambda: app.current_mode == "services")
            await shows(pilot, "daemon not reachable")
            await pilot.press("q")
            await until(pilot, lambda: app.return_value == 0)
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()


@sync
async def test_the_form_takes_nat64_a_pool_midstream_pickup_and_a_tunnel(daemon: Daemon) -> None:
    from textual.widgets import Input, Select

    app = console(daemon)
    async with app.run_test(size=SIZE) as pilot:
        await shows(pilot, "connected")
        await pilot.press("2", "a")
        await until(pilot, lambda: isinstance(app.screen, ServiceForm))
        form = app.screen
        values = {"name": "app64", "vip": "2001:db8::64", "port": "80",
                  "snat-address": "198.19.0.100, 198.19.0.101",
                  "endpoint": "198.18.1.5:8080"}  # fmt: skip
        for field, value in values.items():
            form.query_one(f"#f-{field}", Input).value = value
        form.query_one("#f-mode", Select).value = "full-nat"
        form.query_one("#f-translation", Select).value = "nat64"
        form.query_one("#f-tcp-midstream-pickup", Select).value = "yes"
        await pilot.press("ctrl+g")
        await until(pilot, lambda: not isinstance(app.screen, ServiceForm))
        await shows(pilot, "+ service app64")  # staged and shown: the list has the keys again
        await pilot.press("C")
        await until(pilot, lambda: isinstance(app.screen, CommitScreen))
        await pilot.press("enter")
        await until(pilot, lambda: "app64" in services(daemon))
        svc = services(daemon)["app64"]
        assert svc["nat64"] is True and svc["snat-address"] == "198.19.0.100"
        assert svc["snat-pool"] == ["198.19.0.101"]
        assert svc["tcp-midstream-pickup"] is True
        # Shown again as entered; a DSR tunnel on a full-nat service is refused inline.
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, ServiceForm))
        form = app.screen
        assert form.query_one("#f-translation", Select).value == "nat64"
        assert form.query_one("#f-tcp-midstream-pickup", Select).value == "yes"
        assert form.query_one("#f-snat-address", Input).value == "198.19.0.100, 198.19.0.101"
        form.query_one("#f-dsr-tunnel", Select).value = "ip-in-ip"
        await pilot.press("ctrl+g")
        await until(pilot, lambda: "dsr-tunnel" in screen_text(app))
        assert isinstance(app.screen, ServiceForm)
