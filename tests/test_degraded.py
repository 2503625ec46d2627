"""Degraded, not dead: a datapath that cannot load, or a stored config that no longer
validates, leaves the daemon serving every door with an alarm instead of a crash loop."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from daemonkit import Daemon

from appliance.config.document import SERVICE_KIND
from appliance.config.paths import service_path
from appliance.config.store import Store


def status(d: Daemon) -> dict:
    result = d.cli("status", "-o", "json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def store_a_config_that_no_longer_validates(workdir: Path) -> None:
    """What an older, laxer release could have stored: full-NAT without an SNAT address."""
    store = Store(workdir / "sluice.db")
    bad = {"name": "old", "vip": "198.18.0.10", "port": 80, "mode": "full-nat",
           "endpoint": [{"address": "198.18.1.1", "port": 8080}]}
    store.commit([(SERVICE_KIND, "old", bad)], user="test", interface="test",
                 comment="stored by an older release", summary={})
    store.close()


@pytest.mark.datapath
def test_a_datapath_that_cannot_load_leaves_every_door_up(tmp_path: Path) -> None:
    # Not a bpffs directory: pinning the maps fails, as a kernel without what bcc needs would.
    d = Daemon(tmp_path, datapath="on", pin_dir=tmp_path / "not-bpffs")
    d.start()
    try:
        st = status(d)
        alarms = {a["name"]: a for a in st["alarms"]}
        assert "datapath" in alarms and alarms["datapath"]["severity"] == "critical"
        assert st["datapath"]["enabled"] is False
        assert set(st["doors"]) == {"netconf", "snmp", "console-ssh", "http", "bgp", "ha"}
        assert "ALARM" in d.cli("status").stdout
        # The config can still be changed through the daemon.
        add = d.cli("lb", "add", "web", "--vip", "198.18.0.10", "--port", "80",
                    "--endpoints", "198.18.1.1:8080")
        assert add.returncode == 0, add.stderr
    finally:
        assert d.stop() == 0


def test_a_stored_config_that_no_longer_validates_is_reported_and_fixable(
    tmp_path: Path,
) -> None:
    store_a_config_that_no_longer_validates(tmp_path)
    d = Daemon(tmp_path)
    d.start()
    try:
        alarms = {a["name"]: a for a in status(d)["alarms"]}
        assert "config-invalid" in alarms and "snat" in alarms["config-invalid"]["text"]
        # Other work goes on meanwhile; the alarm stays while the bad service does.
        added = d.cli("lb", "add", "web", "--vip", "198.18.0.11", "--port", "80",
                      "--endpoints", "198.18.1.1:8080")
        assert added.returncode == 0, added.stderr
        assert "config-invalid" in {a["name"] for a in status(d)["alarms"]}
        # The operator fixes it through a door; the alarm clears.
        with d.client() as c:
            c.call("config.edit", changes=[{"op": "merge", "path": service_path("old"),
                                            "value": {"snat-address": "198.18.0.1"}}])
            c.call("config.commit", comment="fix")
        assert "config-invalid" not in {a["name"] for a in status(d)["alarms"]}
    finally:
        assert d.stop() == 0


def test_the_console_shows_the_alarm(tmp_path: Path) -> None:
    import asyncio

    from test_tui import screen_text

    from tui.app import SluiceConsole

    store_a_config_that_no_longer_validates(tmp_path)
    d = Daemon(tmp_path)
    d.start()

    async def body() -> None:
        app = SluiceConsole(d.socket, poll_interval=0.3)
        async with app.run_test(size=(80, 24)) as pilot:
            deadline = asyncio.get_running_loop().time() + 10
            while "ALARM config-invalid" not in screen_text(app):
                assert asyncio.get_running_loop().time() < deadline, screen_text(app)
                await pilot.pause(0.05)

    try:
        asyncio.run(body())
    finally:
        assert d.stop() == 0


def test_netconf_get_shows_the_active_alarms(tmp_path: Path) -> None:
    import netconfkit as kit

    from appliance.alarms import Alarms

    alarms = Alarms()
    alarms.raise_("datapath", "datapath failed to start: no bpffs", "critical")
    h = kit.start(tmp_path, state={"alarms": alarms.active})
    try:
        ns = {"sl": kit.SLUICE_NS}
        with h.connect() as m:
            data = m.get(filter=("subtree", f'<system xmlns="{kit.SLUICE_NS}"/>')).data
            assert data.xpath("//sl:system/sl:state/sl:alarm/sl:name/text()",
                              namespaces=ns) == ["datapath"]
            assert data.xpath("//sl:alarm/sl:severity/text()", namespaces=ns) == ["critical"]
            alarms.clear("datapath")
            data = m.get(filter=("subtree", f'<system xmlns="{kit.SLUICE_NS}"/>')).data
            assert not data.xpath("//sl:alarm", namespaces=ns)
    finally:
        kit.stop(h)
