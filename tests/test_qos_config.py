"""/qos and /mirror through the config service: the model's rules, the commit-time checks
(appliance/datapath/qos_plan.py) and the plan the datapath writes. No kernel needed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from appliance.config import ConfigError, ConfigService
from appliance.config.paths import service_path
from appliance.config.store import Store
from appliance.datapath import qos_plan as Q


@pytest.fixture
def service(tmp_path: Path) -> Iterator[ConfigService]:
    svc = ConfigService(Store(tmp_path / "config.db"))
    svc.add_validator(Q.check)
    with svc.open_session("tester", "test") as s:
        s.edit([{"op": "create", "path": service_path("web"), "value": {
            "name": "web", "vip": "198.18.0.10", "port": 80,
            "endpoint": [{"address": "198.18.1.1", "port": 8080}]}}])  # fmt: skip
        s.commit("web")
    yield svc
    svc.store.close()


def commit(service: ConfigService, path: str, value: dict[str, Any]) -> Any:
    with service.open_session("tester", "test") as s:
        s.edit([{"op": "merge", "path": path, "value": value}])
        return s.commit("")


def refused(service: ConfigService, path: str, value: dict[str, Any]) -> str:
    before = dict(service.sections)
    with pytest.raises(ConfigError) as info:
        commit(service, path, value)
    assert info.value.errors, info.value
    assert service.sections == before  # running unchanged
    return " | ".join(f"{e.path}: {e.message}" for e in info.value.errors)


POL = {"name": "p", "cir": "1000000", "cbs": 10000}  # uint64: a string in JSON


def test_policer_commits_with_defaults(service: ConfigService) -> None:
    diff = commit(service, "/sluice:qos", {"policer": [POL],
                                           "service": [{"name": "web", "policer": "p"}]})
    _old, new = diff.sections_changed["qos"]
    pol = new["policer"][0]
    assert pol["type"] == "single-rate" and pol["color-mode"] == "color-blind"
    assert pol["red"]["action"] == "drop" and pol["green"]["action"] == "transmit"


def test_model_refusals_name_the_field(service: ConfigService) -> None:
    msg = refused(service, "/sluice:qos", {"policer": [{**POL, "type": "two-rate"}]})
    assert "pir and pbs" in msg
    msg = refused(service, "/sluice:qos", {"policer": [{**POL, "type": "two-rate",
                                                         "pir": "500000", "pbs": 10000}]})
    assert "pir must be at least cir" in msg
    msg = refused(service, "/sluice:qos", {"policer": [{**POL, "cbs": 100}]})
    assert "cbs" in msg
    msg = refused(service, "/sluice:qos", {"policer": [{**POL, "red": {"action": "set-dscp"}}]})
    assert "red dscp" in msg
    msg = refused(service, "/sluice:qos", {"policer": [POL],
                                           "service": [{"name": "web", "policer": "nope"}]})
    assert "policer" in msg
    msg = refused(service, "/sluice:qos", {"policer": [POL], "interface": [
        {"name": "eth/0", "direction": "ingress", "policer": "p"}]})
    assert "interface name" in msg
    msg = refused(service, "/sluice:mirror", {"session": [{"name": "m", "type": "erspan"}]})
    assert "collector" in msg
    msg = refused(service, "/sluice:mirror", {"session": [{"name": "m", "type": "rspan",
                                                           "destination-interface": "eth9"}]})
    assert "vlan" in msg


def test_checks_refuse_unknown_objects_and_double_sources(service: ConfigService) -> None:
    msg = refused(service, "/sluice:qos", {"policer": [POL],
                                           "service": [{"name": "nosuch", "policer": "p"}]})
    assert "/sluice:qos/service[name='nosuch']/name" in msg and "no service" in msg
    msg = refused(service, "/sluice:qos", {"policer": [POL], "endpoint": [
        {"service": "web", "address": "198.18.1.9", "port": 8080, "policer": "p"}]})
    assert "/address" in msg and "no endpoint 198.18.1.9" in msg
    span = {"type": "span", "destination-interface": "mir0",
            "source-interface": [{"name": "eth0", "direction": "both"}]}
    msg = refused(service, "/sluice:mirror", {"session": [
        {"name": "a", **span}, {"name": "b", **span, "source-service": ["web"]}]})
    assert "already mirrored by session 'a'" in msg
    msg = refused(service, "/sluice:mirror", {"session": [
        {"name": "a", **span, "source-service": ["ghost"]}]})
    assert "no service 'ghost'" in msg
    msg = refused(service, "/sluice:mirror", {"session": [
        {"name": "e", "type": "erspan", "collector": "2001:db8:30::1",
         "source-address": "198.18.30.254", "source-interface": [{"name": "eth0"}]}]})  # fmt: skip
    assert "/sluice:mirror/session[name='e']/source-address" in msg and "family" in msg, msg


def test_plan_ids_stay_and_rates_become_bit_nanoseconds() -> None:
    pol_ids, mir_ids = Q.Ids(Q.MAX_POLICERS), Q.Ids(Q.MAX_MIRRORS)
    qos = {"policer": [{**POL, "name": "b"}, {**POL, "name": "a", "ebs": 5000}],
           "interface": [{"name": "eth0", "direction": "egress", "policer": "b"}],
           "client-prefix": [{"prefix": "198.18.0.7/24", "policer": "a"}]}  # fmt: skip
    mirror = {"session": [{"name": "m", "type": "erspan", "collector": "198.18.5.5",
                           "erspan-version": 3, "source-service": ["web"],
                           "source-interface": [{"name": "eth0", "direction": "both"}]}]}
    plan = Q.plan(qos, mirror, pol_ids, mir_ids)
    assert pol_ids.ids == {"a": 1, "b": 2}
    a = plan.policers[1]
    assert a.c_max == 10000 * 8 * Q.NSEC and a.e_max == 5000 * 8 * Q.NSEC
    assert a.c_max_ns == -(-(a.c_max + a.e_max) // 1_000_000)  # both buckets full by then
    assert a.action == (0, 0, 1)
    assert plan.interfaces == {("eth0", Q.DIR_OUT): [2, 1], ("eth0", Q.DIR_IN): [0, 1]}
    assert plan.prefixes == {"198.18.0.0/24": 1}
    assert plan.services == {"web": [0, 1]}
    assert plan.mirrors[1].type == Q.MIR_TYPES["erspan3"]
    assert plan.flags() == Q.QOS_HAVE_SVC | Q.QOS_HAVE_SRC
    # "a" goes away: "b" keeps id 2; a new "c" takes 3, not a's 1, which the running
    # generation still counts under until the switch (stable_ids.py).
    qos["policer"] = [{**POL, "name": "b"}, {**POL, "name": "c"}]
    qos["client-prefix"] = []
    Q.plan(qos, None, pol_ids, mir_ids)
    assert pol_ids.ids == {"b": 2, "c": 3}


def test_snmp_policer_table_and_netconf_state_from_the_snapshot() -> None:
    import time

    from northbound.netconf.state import state_doc
    from northbound.snmp import ber
    from northbound.snmp.model import POLICER_ENTRY, LbMib, Snapshot, StateReader

    colors = {"green": {"packets": 7, "bytes": 7000}, "yellow": {"packets": 0, "bytes": 0},
              "red": {"packets": 3, "bytes": 4500}}  # fmt: skip
    calls: list[int] = []

    def qos() -> dict[str, Any]:
        calls.append(1)
        return {"policer": {"p": colors}, "mirror": {"m": {"packets": 2, "bytes": 100}}}

    doc = {"sluice:qos": {"policer": [{**POL, "type": "two-rate", "cir": "4000000"}]}}
    reader = StateReader({"qos": qos}, ttl=0.05)
    try:
        deadline = time.monotonic() + 5
        while not reader.snapshot.current().qos and time.monotonic() < deadline:
            time.sleep(0.01)
        mib = LbMib(Snapshot.from_doc(doc), reader, time.monotonic(), lambda: 0)
        table = next(t for t in mib.tables() if t.prefix == POLICER_ENTRY)
        assert list(table.rows()) == [(1, ord("p"))]
        assert mib.policer_cell(2, 0) == ber.integer(2)
        assert mib.policer_cell(3, 0) == ber.unsigned32(4000)
        assert mib.policer_cell(4, 0) == ber.counter64(7)
        assert mib.policer_cell(9, 0) == ber.counter64(4500)
        state = state_doc(reader.snapshot.current())
    finally:
        reader.snapshot.stop()
    assert state["sluice:qos"] == {"policer": [{"name": "p", "state": colors}]}
    assert state["sluice:mirror"]["session"][0]["state"]["packets"] == 2
