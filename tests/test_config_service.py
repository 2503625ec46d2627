"""The config service: edits, validation, commit, locks, history, rollback, secrets."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from appliance.config import (
    ConfigError,
    ConfigService,
    ConflictError,
    LockedError,
    NotFoundError,
    ValidationError,
)
from appliance.config.errors import AccessDenied, ExistsError
from appliance.config.paths import parse_path, service_path
from appliance.config.secrets import MASK
from appliance.config.store import Store

LB = "/sluice:load-balancer"


def web(name: str = "web", vip: str = "198.18.0.10", port: int = 80, **extra: object) -> dict:
    return {
        "name": name,
        "vip": vip,
        "port": port,
        "endpoint": [
            {"address": "198.18.1.1", "port": 8080},
            {"address": "198.18.1.2", "port": 8080, "weight": 3},
        ],
        **extra,
    }


def create(name: str, **kw: object) -> dict:
    return {"op": "create", "path": service_path(name), "value": web(name, **kw)}


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "config.db"


@pytest.fixture
def service(db: Path) -> ConfigService:
    svc = ConfigService(Store(db))
    yield svc
    svc.store.close()


def commit(service: ConfigService, changes: list[dict], comment: str = "") -> object:
    with service.open_session("tester", "test") as s:
        s.edit(changes)
        return s.commit(comment)


def test_create_commit_returns_diff_with_effective_values(service: ConfigService) -> None:
    diff = commit(service, [create("web")], "first")
    assert diff.commit_id == 1
    added = diff.services_added["web"]
    assert added["mode"] == "default"  # default filled in by libyang
    assert added["endpoint"][0]["weight"] == 1
    assert service.services["web"] == web("web")  # running keeps what the user said
    assert service.history()[0]["comment"] == "first"


def test_merge_one_leaf_deep_in_a_list(service: ConfigService) -> None:
    commit(service, [create("web")])
    path = f"{service_path('web')}/endpoint[address='198.18.1.1'][port='8080']"
    diff = commit(service, [{"op": "merge", "path": path, "value": {"weight": 9}}])
    old, new = diff.services_changed["web"]
    assert old["endpoint"][0]["weight"] == 1 and new["endpoint"][0]["weight"] == 9
    assert service.services["web"]["endpoint"][1]["weight"] == 3


def test_ipv6_vip_is_canonicalised(service: ConfigService) -> None:
    value = web("v6", vip="2001:DB8:0::10")
    value["endpoint"] = [{"address": "2001:db8:0:0::1", "port": 80}]
    commit(service, [{"op": "create", "path": service_path("v6"), "value": value}])
    assert service.services["v6"]["vip"] == "2001:db8::10"
    assert service.services["v6"]["endpoint"][0]["address"] == "2001:db8::1"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"port": 70000}, "port"),
        ({"mode": "full-nat"}, "snat-address"),
        ({"algorithm": "fastest"}, "algorithm"),
        ({"vip": "not-an-ip"}, "vip"),
        ({"bogus": 1}, "bogus"),
    ],
)
def test_bad_value_names_field_and_changes_nothing(
    service: ConfigService, change: dict, field: str
) -> None:
    commit(service, [create("web")])
    before = copy.deepcopy(service.running_doc())
    history = service.history()
    with pytest.raises(ValidationError) as info:
        commit(service, [{"op": "merge", "path": service_path("web"), "value": change}])
    assert field in str(info.value)
    assert info.value.errors[0].path.startswith(service_path("web"))
    assert service.running_doc() == before
    assert service.history() == history
    # and the store agrees after a restart
    assert ConfigService(service.store).running_doc() == before


def test_every_bad_service_is_reported(service: ConfigService) -> None:
    changes = [create("a", port=70000), create("b", vip="198.18.0.11"), create("c", port=-1)]
    with pytest.raises(ValidationError) as info:
        commit(service, changes)
    paths = [e.path for e in info.value.errors]
    assert any(p.startswith(service_path("a")) for p in paths)
    assert any(p.startswith(service_path("c")) for p in paths)
    assert not any(p.startswith(service_path("b")) for p in paths)
    assert service.services == {}


def test_overlapping_vip_port_is_refused(service: ConfigService) -> None:
    commit(service, [create("web")])
    with pytest.raises(ValidationError) as info:
        commit(service, [create("web2")])
    assert "already used by service 'web'" in str(info.value)
    ranged = web("range", port=70)
    ranged["port-range-end"] = 90
    with pytest.raises(ValidationError):
        commit(service, [{"op": "create", "path": service_path("range"), "value": ranged}])
    # two new services clashing with each other in one commit
    with pytest.raises(ValidationError):
        commit(service, [create("x", vip="198.18.0.20"), create("y", vip="198.18.0.20")])
    # moving a service away and another in, in one commit, is fine
    commit(
        service,
        [
            {"op": "merge", "path": service_path("web"), "value": {"port": 81}},
            create("web2"),
        ],
    )
    assert set(service.services) == {"web", "web2"}


def test_create_existing_and_delete_missing(service: ConfigService) -> None:
    commit(service, [create("web")])
    with pytest.raises(ExistsError):
        commit(service, [create("web")])
    with pytest.raises(NotFoundError) as info:
        commit(service, [{"op": "delete", "path": service_path("nope")}])
    assert info.value.errors[0].path == service_path("nope")
    commit(service, [{"op": "remove", "path": service_path("nope")}])  # remove is quiet
    assert service.history()[0]["id"] == 1  # nothing was committed


def test_edit_is_all_or_nothing(service: ConfigService) -> None:
    with service.open_session("t", "test") as s:
        s.edit([create("a")])
        with pytest.raises(ConfigError):
            s.edit([create("b", vip="198.18.0.11"), {"op": "delete", "path": service_path("zz")}])
        assert [x["name"] for x in s.candidate_doc()["sluice:load-balancer"]["service"]] == ["a"]


def test_candidate_is_per_session_and_discard(service: ConfigService) -> None:
    a = service.open_session("a", "test")
    b = service.open_session("b", "test")
    a.edit([create("web")])
    assert b.candidate_doc() == {}
    a.discard()
    assert a.commit().empty()
    a.close()
    b.close()


def test_conflicting_sessions(service: ConfigService) -> None:
    commit(service, [create("web")])
    a = service.open_session("a", "test")
    b = service.open_session("b", "test")
    a.edit([{"op": "merge", "path": service_path("web"), "value": {"port": 81}}])
    b.edit([{"op": "merge", "path": service_path("web"), "value": {"port": 82}}])
    a.commit()
    with pytest.raises(ConflictError) as info:
        b.commit()
    assert info.value.errors[0].path == service_path("web")
    assert service.services["web"]["port"] == 81


def test_locks(service: ConfigService) -> None:
    a = service.open_session("a", "test")
    b = service.open_session("b", "test")
    a.lock("running")
    with pytest.raises(LockedError) as info:
        b.lock("running")
    assert f"session {a.id}" in str(info.value)
    b.edit([create("web")])
    with pytest.raises(LockedError):
        b.commit()
    a.close()  # the owner going away releases its locks
    b.lock("running")
    b.commit()
    assert "web" in service.services
    with pytest.raises(LockedError):
        b.unlock("candidate")
    b.unlock("running")
    c = service.open_session("c", "test")
    c.lock("candidate")
    service.kill_session(c.id)
    assert service.lock_owner("candidate") is None
    with pytest.raises(ConfigError):
        c.lock("nonsense")
    b.close()


def test_read_only_session_cannot_edit(service: ConfigService) -> None:
    s = service.open_session("viewer", "test", read_only=True)
    with pytest.raises(AccessDenied):
        s.edit([create("web")])
    assert s.get("/") == {}


def test_get_paths_and_datastores(service: ConfigService) -> None:
    commit(service, [create("web")])
    with service.open_session("t", "test") as s:
        assert s.get(f"{service_path('web')}/port") == 80
        assert s.get(f"{service_path('web')}/mode", effective=True) == "default"
        ep = s.get(f"{service_path('web')}/endpoint[address='198.18.1.2'][port='8080']")
        assert ep["weight"] == 3
        with pytest.raises(NotFoundError):
            s.get(service_path("nope"))
        s.edit([create("new", vip="198.18.0.11")])
        assert len(s.get(f"{LB}/service", "candidate")) == 2
        assert len(s.get(f"{LB}/service", "running")) == 1
        assert s.get("/", "startup") == {}
        s.discard()
        s.copy_running_to_startup()
        assert s.get("/", "startup") == service.running_doc()
        s.delete_startup()
        assert s.get("/", "startup") == {}


def test_history_diff_and_rollback(service: ConfigService) -> None:
    commit(service, [create("web")], "one")
    commit(service, [create("api", vip="198.18.0.11")], "two")
    commit(service, [{"op": "delete", "path": service_path("web")}], "three")
    history = service.history()
    assert [h["comment"] for h in history] == ["three", "two", "one"]
    assert history[0]["summary"]["services-removed"] == 1
    changes = service.commit_diff(3)["changes"]
    assert changes == [{"kind": "service", "name": "web", "old": web("web"), "new": None}]
    with service.open_session("t", "test") as s:
        diff = s.rollback(1)
    assert set(service.services) == {"web"}
    assert diff.services_removed.keys() == {"api"} and diff.services_added.keys() == {"web"}
    assert service.history()[0]["comment"] == "rollback to commit 1"
    with service.open_session("t", "test") as s, pytest.raises(NotFoundError):
        s.rollback(99)


def test_running_survives_restart(db: Path, service: ConfigService) -> None:
    commit(service, [create("web"), create("api", vip="198.18.0.11")])
    commit(service, [{"op": "delete", "path": service_path("api")}])
    again = ConfigService(Store(db))
    assert again.running_doc() == service.running_doc()
    assert again.commit_id == 2
    # the overlap index is rebuilt too
    with pytest.raises(ValidationError):
        commit(again, [create("clash")])


def test_secrets_are_masked_and_mask_keeps_the_value(service: ConfigService) -> None:
    snmp = {"community": [{"name": "nms", "secret": "s3cret-community"}]}
    commit(service, [{"op": "merge", "path": "/sluice:snmp", "value": snmp}])
    exported = service.running_doc()
    assert exported["sluice:snmp"]["community"][0]["secret"] == MASK
    assert "s3cret" not in str(service.commit_diff(1))
    # re-importing the masked export keeps the stored secret
    with service.open_session("t", "test") as s:
        s.edit([{"op": "replace", "path": "/", "value": exported}])
        assert s.commit().empty()
    raw = service.running_doc(with_secrets=True)
    assert raw["sluice:snmp"]["community"][0]["secret"] == "s3cret-community"


def test_replace_whole_config(service: ConfigService) -> None:
    commit(service, [create("web"), create("api", vip="198.18.0.11")])
    doc = {"sluice:load-balancer": {"service": [web("only", vip="198.18.0.30")]}}
    diff = commit(service, [{"op": "replace", "path": "/", "value": doc}])
    assert set(diff.services_removed) == {"web", "api"}
    assert set(service.services) == {"only"}


def test_subscribers_get_the_diff_and_failures_are_contained(service: ConfigService) -> None:
    seen = []
    service.subscribe(lambda d: (_ for _ in ()).throw(RuntimeError("boom")))
    service.subscribe(seen.append)
    commit(service, [create("web")])
    assert len(seen) == 1 and "web" in seen[0].services_added


@pytest.mark.parametrize(
    "path",
    ["no-slash", "/other:load-balancer", "/sluice:load-balancer/service[name=unquoted]", "/a//b"],
)
def test_bad_paths(path: str) -> None:
    with pytest.raises(ConfigError):
        parse_path(path)


def test_list_step_with_wrong_keys(service: ConfigService) -> None:
    with service.open_session("t", "test") as s, pytest.raises(ConfigError) as info:
        s.edit([{"op": "merge", "path": f"{LB}/service[vip='198.18.0.1']", "value": {}}])
    assert "keyed by name" in str(info.value)


HASH_A = "$scrypt$ln=4,r=8,p=1$c2FsdGE=$aGFzaGE="
HASH_B = "$scrypt$ln=4,r=8,p=1$c2FsdGI=$aGFzaGI="
AUTH_KEY = "ab" * 32  # sha-256 localized key
PRIV_KEY = "cd" * 16  # aes-128


def _with_secrets(service: ConfigService) -> None:
    commit(
        service,
        [
            {
                "op": "merge",
                "path": "/sluice:management",
                "value": {"user": [{"name": "ops", "password-hash": HASH_A, "role": "read-write"}]},
            },
            {
                "op": "merge",
                "path": "/sluice:snmp",
                "value": {
                    "community": [{"name": "nms", "secret": "s3cret-community"}],
                    "usm-user": [{"name": "v3", "auth-key": AUTH_KEY, "priv-key": PRIV_KEY}],
                },
            },
        ],
    )


def _strip_secrets(doc: dict) -> dict:
    """What a NETCONF get-config backup holds: masked secrets are left out altogether."""
    doc = copy.deepcopy(doc)
    for user in doc["sluice:management"]["user"]:
        user.pop("password-hash", None)
    for entry in doc["sluice:snmp"]["community"] + doc["sluice:snmp"]["usm-user"]:
        for leaf in ("secret", "auth-key", "priv-key"):
            entry.pop(leaf, None)
    return doc


def test_replace_without_secrets_keeps_the_stored_ones(service: ConfigService) -> None:
    _with_secrets(service)
    raw = service.running_doc(with_secrets=True)
    backup = _strip_secrets(service.running_doc())
    backup["sluice:system"] = {"hostname": "restored"}
    commit(service, [{"op": "replace", "path": "/", "value": backup}], "restore")
    after = service.running_doc(with_secrets=True)
    assert after["sluice:system"] == {"hostname": "restored"}
    assert after["sluice:management"] == raw["sluice:management"]
    assert after["sluice:snmp"] == raw["sluice:snmp"]
    # replacing one section or one list entry without its secret keeps it too
    user = {"name": "ops", "role": "read-only"}
    path = "/sluice:management/user[name='ops']"
    commit(service, [{"op": "replace", "path": path, "value": user}])
    assert service.running_doc(with_secrets=True)["sluice:management"]["user"] == [
        {**user, "password-hash": HASH_A}
    ]


def test_a_secret_goes_only_when_deleted_explicitly(service: ConfigService) -> None:
    _with_secrets(service)
    path = "/sluice:management/user[name='ops']/password-hash"
    commit(service, [{"op": "delete", "path": path}])
    users = service.running_doc(with_secrets=True)["sluice:management"]["user"]
    assert users == [{"name": "ops", "role": "read-write"}]
    # within one edit: a replace that leaves it out, then an explicit delete
    commit(
        service,
        [{"op": "merge", "path": path.rsplit("/", 1)[0], "value": {"password-hash": HASH_B}}],
    )
    commit(
        service,
        [
            {"op": "replace", "path": "/sluice:management", "value": {"user": [{"name": "ops"}]}},
            {"op": "remove", "path": path},
        ],
    )
    assert service.running_doc(with_secrets=True)["sluice:management"]["user"] == [{"name": "ops"}]
    # a new value replaces the stored one
    commit(
        service,
        [{"op": "merge", "path": path.rsplit("/", 1)[0], "value": {"password-hash": HASH_B}}],
    )
    assert (
        service.running_doc(with_secrets=True)["sluice:management"]["user"][0]["password-hash"]
        == HASH_B
    )


def test_rollback_and_startup_copy_take_secrets_from_their_source(service: ConfigService) -> None:
    _with_secrets(service)
    first = service.commit_id
    with service.open_session("t", "test") as s:
        s.copy_running_to_startup()
    path = "/sluice:management/user[name='ops']"
    commit(service, [{"op": "merge", "path": path, "value": {"password-hash": HASH_B}}])
    with service.open_session("t", "test") as s:
        s.copy_startup_to_running()
    assert (
        service.running_doc(with_secrets=True)["sluice:management"]["user"][0]["password-hash"]
        == HASH_A
    )
    # a secret absent from the source goes: rollback restores exactly
    commit(service, [{"op": "delete", "path": f"{path}/password-hash"}])
    commit(service, [{"op": "merge", "path": path, "value": {"password-hash": HASH_B}}])
    no_hash = service.commit_id - 1
    with service.open_session("t", "test") as s:
        s.rollback(no_hash)
    assert (
        "password-hash"
        not in service.running_doc(with_secrets=True)["sluice:management"]["user"][0]
    )
    with service.open_session("t", "test") as s:
        s.rollback(first)
    assert (
        service.running_doc(with_secrets=True)["sluice:management"]["user"][0]["password-hash"]
        == HASH_A
    )
