"""NETCONF's shared candidate (RFC 6241 8.3): one candidate for every NETCONF session,
outliving them, with the RFC's lock semantics; the CLI's private candidates stay apart."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import netconfkit as kit
import pytest
from ncclient.operations import RPCError

from appliance.config import LockedError

NS = {"sl": kit.SLUICE_NS}


def service_xml(name: str, vip: str = "198.18.0.10") -> str:
    return (f'<config><load-balancer xmlns="{kit.SLUICE_NS}"><service><name>{name}</name>'
            f"<vip>{vip}</vip><port>80</port><endpoint><address>198.18.1.1</address>"
            "<port>8080</port></endpoint></service></load-balancer></config>")


@pytest.fixture
def h(tmp_path: Path) -> Iterator[kit.Harness]:
    yield from kit.harness(tmp_path)


def candidate_names(m) -> list[str]:  # type: ignore[no-untyped-def]
    return m.get_config("candidate").data.xpath("//sl:service/sl:name/text()", namespaces=NS)


def test_edit_in_one_session_commit_in_another(h: kit.Harness) -> None:
    with h.connect() as a:
        a.edit_config(service_xml("shared"), target="candidate")
    # a's session is gone; its edit is still in the one candidate
    with h.connect("ops2") as b:
        assert candidate_names(b) == ["shared"]
        b.commit()
        assert candidate_names(b) == ["shared"]
    assert "shared" in h.service.services
    assert h.service.history(1)[0]["user"] == "ops2"  # the committer, not "netconf"


def test_lock_semantics(h: kit.Harness) -> None:
    with h.connect() as a, h.connect("ops2") as b:
        a.edit_config(service_xml("pending"), target="candidate")
        # modified and not committed: nobody may lock it, not even the editor
        for m in (a, b):
            with pytest.raises(RPCError) as info:
                m.lock("candidate")
            assert info.value.tag == "lock-denied"
            assert "<session-id>0</session-id>" in info.value.info.replace("nc:", "")
        b.discard_changes()  # discards a's edit: the candidate is shared
        assert candidate_names(a) == []
        b.lock("candidate")
        # a locked candidate refuses everyone else's edits, discards and commits
        for call in (lambda: a.edit_config(service_xml("x"), target="candidate"),
                     a.discard_changes, a.commit,
                     lambda: a.copy_config(source="running", target="candidate")):
            with pytest.raises(RPCError) as info:
                call()
            assert info.value.tag == "in-use"
            assert b.session_id in info.value.info
        b.edit_config(service_xml("mine"), target="candidate")
        assert candidate_names(a) == ["mine"]  # others still read it
        # unlock discards what the holder did not commit (RFC 6241 8.3.5.2)
        b.unlock("candidate")
        assert candidate_names(a) == []
        b.lock("candidate")
        b.edit_config(service_xml("mine"), target="candidate")
        b.commit()
        b.unlock("candidate")
    assert "mine" in h.service.services and "x" not in h.service.services


def test_session_end_under_the_lock_discards(h: kit.Harness) -> None:
    a = h.connect()
    a.lock("candidate")
    a.edit_config(service_xml("orphan"), target="candidate")
    a.close_session()
    with h.connect("ops2") as b:
        assert candidate_names(b) == []
        b.lock("candidate")  # free and clean again
    assert "orphan" not in h.service.services


def test_cli_candidates_stay_private(h: kit.Harness) -> None:
    with h.connect() as m, h.service.open_session("root", "cli") as cli:
        cli.edit([{"op": "create", "path": "/sluice:load-balancer/service[name='cli']",
                   "value": {"name": "cli", "vip": "198.18.0.20", "port": 80,
                             "endpoint": [{"address": "198.18.1.1", "port": 8080}]}}])
        assert candidate_names(m) == []  # not NETCONF's candidate
        m.lock("candidate")  # the CLI's pending edit does not block the lock
        with pytest.raises(LockedError):
            cli.commit()  # a NETCONF candidate lock holds off the CLI's commits
        m.unlock("candidate")
        cli.commit()
        assert candidate_names(m) == ["cli"]  # the candidate shows running's changes
    assert "cli" in h.service.services


def test_read_only_user_reads_the_candidate_only(h: kit.Harness) -> None:
    with h.connect() as a, h.connect("viewer") as v:
        a.edit_config(service_xml("seen"), target="candidate")
        assert candidate_names(v) == ["seen"]
        with pytest.raises(RPCError) as info:
            v.discard_changes()
        assert info.value.tag == "access-denied"
        a.discard_changes()


def test_startup_is_advertised_and_booted_from_only_when_set(tmp_path: Path) -> None:
    """:startup (RFC 6241 8.7) only with /sluice:system/boot-from-startup, and then the
    next start makes running the saved startup config."""
    from appliance.config import ConfigService
    from appliance.config.store import Store

    startup_cap = "urn:ietf:params:netconf:capability:startup:1.0"
    gen = kit.harness(tmp_path)
    h = next(gen)
    try:
        with h.connect() as m:
            assert startup_cap not in m.server_capabilities
            m.edit_config(service_xml("saved"), target="running")
            m.edit_config(f'<config><system xmlns="{kit.SLUICE_NS}"><boot-from-startup>true'
                          "</boot-from-startup></system></config>", target="running")
            m.copy_config(source="running", target="startup")
            m.edit_config(service_xml("unsaved", vip="198.18.0.11"), target="running")
        with h.connect() as m:
            assert startup_cap in m.server_capabilities
    finally:
        gen.close()
    # A restart: the unsaved change is gone, the saved one is running.
    service = ConfigService(Store(tmp_path / "config.db"))
    try:
        assert service.boot_from_startup() is None
        assert set(service.services) == {"saved"}
        assert service.history(1)[0]["comment"] == "boot from startup"
        # booting again changes nothing more
        last = service.commit_id
        service.boot_from_startup()
        assert service.commit_id == last
    finally:
        service.store.close()
