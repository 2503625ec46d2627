"""NETCONF confirmed commit (RFC 6241 8.4): its revert undoes only its own change, is not
blocked by another session's lock, and survives a kill -9 of the daemon."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path

import netconfkit as kit
import netkit
import pytest
from daemonkit import Daemon
from ncclient import manager

LB_XML = (
    '<config><load-balancer xmlns="{ns}"><service><name>{name}</name><vip>{vip}</vip>'
    "<port>80</port><endpoint><address>198.18.1.1</address><port>8080</port></endpoint>"
    "</service></load-balancer></config>"
)


def service_xml(name: str, vip: str) -> str:
    return LB_XML.format(ns=kit.SLUICE_NS, name=name, vip=vip)


@pytest.fixture
def h(tmp_path: Path) -> Iterator[kit.Harness]:
    yield from kit.harness(tmp_path)


def cli_commit(h: kit.Harness, name: str, vip: str) -> None:
    """A commit through another front door (the control socket's session)."""
    with h.service.open_session("root", "cli") as s:
        s.edit([{"op": "create", "path": f"/sluice:load-balancer/service[name='{name}']",
                 "value": {"name": name, "vip": vip, "port": 80,
                           "endpoint": [{"address": "198.18.1.1", "port": 8080}]}}])
        s.commit()


def test_timeout_revert_keeps_a_cli_commit_made_since(h: kit.Harness) -> None:
    with h.connect() as m:
        m.edit_config(service_xml("trial", "198.18.0.1"), target="candidate")
        m.commit(confirmed=True, timeout="5")
        cli_commit(h, "from-cli", "198.18.0.2")
        assert "trial" in h.service.services  # still inside the confirm window
        kit.wait_for(lambda: "trial" not in h.service.services, timeout=15)
        assert "from-cli" in h.service.services
        assert h.service.confirmed is None


def test_a_lock_held_by_another_session_does_not_stop_the_revert(h: kit.Harness) -> None:
    with h.connect() as m, h.connect("ops2") as other:
        m.edit_config(service_xml("trial", "198.18.0.1"), target="candidate")
        m.commit(confirmed=True, timeout="4")
        other.lock("running")
        other.lock("candidate")
        assert "trial" in h.service.services  # locked inside the confirm window
        kit.wait_for(lambda: "trial" not in h.service.services, timeout=15)
        other.unlock("candidate")
        other.unlock("running")


def test_cancel_commit_under_another_sessions_lock(h: kit.Harness) -> None:
    with h.connect() as m, h.connect("ops2") as other:
        m.edit_config(service_xml("trial", "198.18.0.1"), target="candidate")
        m.commit(confirmed=True, timeout="60", persist="tok")
        other.lock("running")
        m.cancel_commit(persist_id="tok")
        assert "trial" not in h.service.services and h.service.confirmed is None


def _free_port() -> int:
    return netkit.free_port()


def test_kill_9_in_the_confirm_window_reverts_at_restart(tmp_path: Path) -> None:
    d = Daemon(tmp_path)
    d.start()
    try:
        port = _free_port()
        user = {"name": "oss", "role": "read-write", "password-hash": kit.FAST_HASH}
        doc = {"management": {"user": [user],
                              "netconf": {"port": port, "address": ["127.0.0.1"]}}}
        (tmp_path / "apply.json").write_text(json.dumps(doc))
        res = d.cli("apply", "-f", str(tmp_path / "apply.json"))
        assert res.returncode == 0, res.stderr

        def connect() -> manager.Manager | None:
            try:
                return manager.connect(host="127.0.0.1", port=port, username="oss",
                                       password=kit.PASSWORD, hostkey_verify=False,
                                       allow_agent=False, look_for_keys=False, timeout=10)
            except Exception:
                return None

        m = kit.wait_for(connect, timeout=20, interval=0.2)
        m.edit_config(service_xml("trial", "198.18.0.1"), target="candidate")
        m.commit(confirmed=True, timeout="600")
        names = [s["name"] for s in d.cli_json("lb", "list")]
        assert names == ["trial"]
        d.stop(signal.SIGKILL)
        d.start()
        assert d.cli_json("lb", "list") == []
        history = d.cli_json("config", "history")
        assert "reverted" in history[0]["comment"]
    finally:
        d.stop()


def test_cli_import_of_a_file_without_secrets_keeps_them(tmp_path: Path) -> None:
    """`sluice config import` shares the config service's edit path with NETCONF."""
    d = Daemon(tmp_path)
    d.start()
    try:
        users = {"user": [{"name": "oss", "role": "read-write", "password-hash": kit.FAST_HASH}]}
        snmp = {"community": [{"name": "nms", "secret": "community-secret"}]}
        (tmp_path / "apply.json").write_text(json.dumps({"management": users, "snmp": snmp}))
        assert d.cli("apply", "-f", str(tmp_path / "apply.json")).returncode == 0
        exported = json.loads(d.cli("config", "export").stdout)
        del exported["sluice:management"]["user"][0]["password-hash"]
        del exported["sluice:snmp"]["community"][0]["secret"]
        exported["sluice:system"] = {"hostname": "restored"}
        (tmp_path / "backup.json").write_text(json.dumps(exported))
        res = d.cli("config", "import", str(tmp_path / "backup.json"))
        assert res.returncode == 0, res.stderr
    finally:
        d.stop()
    from appliance.config import ConfigService
    from appliance.config.store import Store

    store = Store(d.db)
    try:
        doc = ConfigService(store).running_doc(with_secrets=True)
    finally:
        store.close()
    assert doc["sluice:system"] == {"hostname": "restored"}
    assert doc["sluice:management"]["user"][0]["password-hash"] == kit.FAST_HASH
    assert doc["sluice:snmp"]["community"][0]["secret"] == "community-secret"
