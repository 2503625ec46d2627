"""Confirmed commit in the config service: kept in the store, reverted alone, lock-proof."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.config import ConfigService
from appliance.config.paths import service_path
from appliance.config.store import Store


def web(name: str, vip: str, port: int = 80, weight: int = 1) -> dict:
    return {
        "name": name,
        "vip": vip,
        "port": port,
        "endpoint": [{"address": "198.18.1.1", "port": 8080, "weight": weight}],
    }


@pytest.fixture
def service(tmp_path: Path) -> ConfigService:
    svc = ConfigService(Store(tmp_path / "config.db"))
    yield svc
    svc.store.close()


def commit(service: ConfigService, changes: list[dict], user: str = "cli", **kw: object) -> object:
    with service.open_session(user, user) as s:
        s.edit(changes)
        return s.commit(**kw)


def create(name: str, vip: str, **kw: object) -> dict:
    return {"op": "create", "path": service_path(name), "value": web(name, vip, **kw)}


def test_revert_undoes_only_the_confirmed_change(service: ConfigService) -> None:
    commit(service, [create("keep", "198.18.0.1"), create("moved", "198.18.0.2")])
    commit(
        service,
        [
            create("trial", "198.18.0.3"),
            {"op": "merge", "path": service_path("moved"), "value": {"port": 81}},
            {"op": "merge", "path": "/sluice:system", "value": {"hostname": "trial"}},
        ],
        user="netconf",
        confirm_timeout=60,
        owner="netconf session 1",
    )
    assert service.confirmed is not None and service.confirmed.commits == (2,)
    # other doors commit meanwhile: a new service, and a leaf of the same section
    commit(service, [create("cli", "198.18.0.4")])
    commit(service, [{"op": "merge", "path": "/sluice:system", "value": {"contact": "noc"}}])
    diff = service.revert_confirmed("timeout")
    assert set(diff.services_removed) == {"trial"} and set(diff.services_changed) == {"moved"}
    assert set(service.services) == {"keep", "moved", "cli"}
    assert service.services["moved"]["port"] == 80
    assert service.sections["system"] == {"contact": "noc"}
    assert service.confirmed is None and service.store.confirmed_commit() is None
    assert "reverted: timeout" in service.history(1)[0]["comment"]


def test_a_later_change_to_the_same_node_is_kept(service: ConfigService) -> None:
    commit(service, [create("web", "198.18.0.1")])
    ep = f"{service_path('web')}/endpoint[address='198.18.1.1'][port='8080']"
    commit(
        service,
        [{"op": "merge", "path": ep, "value": {"weight": 5}}, create("new", "198.18.0.9")],
        confirm_timeout=60,
    )
    commit(service, [{"op": "merge", "path": ep, "value": {"weight": 7}}])
    commit(service, [{"op": "merge", "path": service_path("new"), "value": {"port": 99}}])
    service.revert_confirmed("cancel")
    # both were touched again since: the later values win
    assert service.services["web"]["endpoint"][0]["weight"] == 7
    assert service.services["new"]["port"] == 99
    assert service.confirmed is None


def test_revert_is_not_blocked_by_a_lock(service: ConfigService) -> None:
    commit(service, [create("trial", "198.18.0.3")], confirm_timeout=60)
    holder = service.open_session("other", "netconf")
    holder.lock("running")
    holder.lock("candidate")
    service.revert_confirmed("timeout")
    assert "trial" not in service.services
    assert service.lock_owner("running") is holder
    holder.close()


def test_confirming_commit_ends_it_and_follow_up_extends(service: ConfigService) -> None:
    commit(service, [create("a", "198.18.0.1")], confirm_timeout=60)
    commit(service, [create("b", "198.18.0.2")], confirm_timeout=60)
    assert service.confirmed is not None and service.confirmed.commits == (1, 2)
    commit(service, [create("c", "198.18.0.3")], confirming=True)
    assert service.confirmed is None and service.store.confirmed_commit() is None
    assert service.revert_confirmed("timeout").empty()
    assert set(service.services) == {"a", "b", "c"}
    # an empty confirmed commit, then a follow-up with changes; revert undoes the follow-up
    with service.open_session("x", "x") as s:
        s.commit(confirm_timeout=60)
    assert service.confirmed is not None and service.confirmed.commits == ()
    commit(service, [create("d", "198.18.0.4")], confirm_timeout=60)
    service.revert_confirmed("cancel")
    assert set(service.services) == {"a", "b", "c"}


def test_a_restart_reverts_an_unconfirmed_commit(tmp_path: Path) -> None:
    db = tmp_path / "config.db"
    first = ConfigService(Store(db))
    commit(first, [create("keep", "198.18.0.1")])
    commit(first, [create("trial", "198.18.0.2")], confirm_timeout=600)
    commit(first, [create("later", "198.18.0.3")])
    # no close, no revert: as after kill -9
    again = ConfigService(Store(db))
    assert set(again.services) == {"keep", "later"}
    assert again.confirmed is None
    assert "restart" in again.history(1)[0]["comment"]
    assert set(ConfigService(Store(db)).services) == {"keep", "later"}


def test_a_revert_that_no_longer_validates_keeps_what_depends_on_it(
    service: ConfigService,
) -> None:
    commit(service, [create("a", "198.18.0.1")])
    commit(
        service,
        [{"op": "merge", "path": service_path("a"), "value": {"port": 81}}],
        confirm_timeout=60,
    )
    # port 80 is free now, and another door takes it
    commit(service, [create("b", "198.18.0.1")])
    service.revert_confirmed("timeout")
    assert service.services["a"]["port"] == 81 and service.services["b"]["port"] == 80
    assert service.confirmed is None


def test_list_entries_in_a_section_are_reverted_one_by_one(service: ConfigService) -> None:
    user = {"name": "ops", "role": "read-write"}
    commit(service, [{"op": "merge", "path": "/sluice:management", "value": {"user": [user]}}])
    trial = {"user": [{"name": "trial"}], "netconf": {"port": 1830}}
    commit(
        service,
        [{"op": "merge", "path": "/sluice:management", "value": trial}],
        confirm_timeout=60,
    )
    later = {"user": [{"name": "later"}]}
    commit(service, [{"op": "merge", "path": "/sluice:management", "value": later}])
    service.revert_confirmed("timeout")
    assert service.sections["management"] == {"user": [user, {"name": "later"}]}
