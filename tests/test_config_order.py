"""The config service places entries of an ordered-by-user list (the endpoint list): insert
first/last/before/after on create, replace and merge, and move; refusals name the target and
change nothing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance.config import ConfigError, ConfigService, NotFoundError
from appliance.config.paths import service_path
from appliance.config.store import Store

SVC = service_path("web")


def ep(n: int) -> dict:
    return {"address": f"198.18.1.{n}", "port": 8080}


def ep_path(n: int) -> str:
    return f"{SVC}/endpoint[address='198.18.1.{n}'][port='8080']"


@pytest.fixture
def service(tmp_path: Path) -> Iterator[ConfigService]:
    svc = ConfigService(Store(tmp_path / "config.db"))
    with svc.open_session("tester", "test") as s:
        s.edit([{"op": "create", "path": SVC, "value": {
            "name": "web", "vip": "198.18.0.10", "port": 80, "endpoint": [ep(1), ep(2)]}}])
        s.commit("")
    yield svc
    svc.store.close()


def order(service: ConfigService) -> list[int]:
    with service.open_session("tester", "test", read_only=True) as s:
        eps = s.get(SVC, "running")["endpoint"]
    return [int(e["address"].rsplit(".", 1)[1]) for e in eps]


def edit(service: ConfigService, *changes: dict) -> None:
    with service.open_session("tester", "test") as s:
        s.edit(list(changes))
        s.commit("")


def test_insert_places_new_entries(service: ConfigService) -> None:
    edit(service, {"op": "create", "path": ep_path(3), "value": ep(3), "insert": "first"})
    assert order(service) == [3, 1, 2]
    edit(service, {"op": "create", "path": ep_path(4), "value": ep(4), "insert": "after",
                   "point": ep_path(3)})
    assert order(service) == [3, 4, 1, 2]
    edit(service, {"op": "merge", "path": ep_path(5), "value": ep(5), "insert": "before",
                   "point": ep_path(2)})
    assert order(service) == [3, 4, 1, 5, 2]
    edit(service, {"op": "create", "path": ep_path(6), "value": ep(6), "insert": "last"})
    assert order(service) == [3, 4, 1, 5, 2, 6]


def test_move_and_replace_reorder_existing_entries(service: ConfigService) -> None:
    edit(service, {"op": "move", "path": ep_path(2), "insert": "first"})
    assert order(service) == [2, 1]
    edit(service, {"op": "replace", "path": ep_path(2), "value": {**ep(2), "weight": 5},
                   "insert": "after", "point": ep_path(1)})
    assert order(service) == [1, 2]
    with service.open_session("tester", "test", read_only=True) as s:
        assert s.get(ep_path(2) + "/weight", "running") == 5


@pytest.mark.parametrize(("change", "words"), [
    ({"op": "move", "path": ep_path(9), "insert": "first"}, "does not exist"),
    ({"op": "create", "path": ep_path(3), "value": ep(3), "insert": "after",
      "point": ep_path(9)}, "point entry"),
    ({"op": "create", "path": ep_path(3), "value": ep(3), "insert": "before"}, "needs a point"),
    ({"op": "create", "path": ep_path(3), "value": ep(3), "insert": "middle"}, "insert"),
    ({"op": "create", "path": ep_path(3), "value": ep(3), "insert": "first",
      "point": ep_path(1)}, "only used with"),
    ({"op": "create", "path": ep_path(3), "value": ep(3), "insert": "after",
      "point": service_path("other") + "/endpoint[address='198.18.1.1'][port='8080']"},
     "same endpoint list"),
    ({"op": "move", "path": ep_path(1), "insert": "before", "point": ep_path(1)}, "itself"),
    ({"op": "create", "path": service_path("b"), "value": {"name": "b", "vip": "198.18.0.11",
      "port": 80}, "insert": "first"}, "ordered-by-user"),
    ({"op": "delete", "path": ep_path(1), "insert": "first"}, "delete"),
    ({"op": "move", "path": ep_path(1)}, "where"),
])  # fmt: skip
def test_refusals_name_the_target_and_change_nothing(service: ConfigService, change: dict,
                                                     words: str) -> None:
    before = service.commit_id
    with pytest.raises(ConfigError) as err:
        edit(service, change)
    assert words in str(err.value.errors[0].message) or words in str(err.value), err.value
    assert err.value.errors[0].path
    assert service.commit_id == before and order(service) == [1, 2]


def test_missing_point_is_rfc7950_missing_instance(service: ConfigService) -> None:
    with pytest.raises(ConfigError) as err:
        edit(service, {"op": "create", "path": ep_path(3), "value": ep(3), "insert": "before",
                       "point": ep_path(7)})
    (e,) = err.value.errors
    assert (e.tag, e.app_tag, e.path) == ("bad-attribute", "missing-instance", ep_path(3))
    with pytest.raises(NotFoundError):
        edit(service, {"op": "move", "path": ep_path(8), "insert": "last"})
