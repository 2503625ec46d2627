"""The config promises only what the datapath does: the datapath's validator, registered
with the config service, refuses at validate/commit what the maps cannot carry or the
program does not implement, naming the field, and leaves running untouched."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from appliance.config import ConfigService, ValidationError
from appliance.config.paths import LOAD_BALANCER, service_path
from appliance.config.store import Store
from appliance.datapath import layout as L
from appliance.datapath import validate
from appliance.datapath.tables import maglev_size


def svc(name: str, vip: str = "198.19.0.10", port: int = 80, n_eps: int = 2,
        **extra: Any) -> dict[str, Any]:  # fmt: skip
    v6 = ":" in vip and not extra.get("nat64")
    eps = [{"address": f"2001:db8:1::{i + 1:x}" if v6 else f"198.18.{1 + i // 250}.{1 + i % 250}",
            "port": 8080} for i in range(n_eps)]  # fmt: skip
    return {"name": name, "vip": vip, "port": port, "endpoint": eps, **extra}


@pytest.fixture
def config(tmp_path: Path) -> Iterator[ConfigService]:
    service = ConfigService(Store(tmp_path / "config.db"))
    service.add_validator(validate.check)  # what the daemon does
    yield service
    service.store.close()


def commit(service: ConfigService, changes: list[dict[str, Any]]) -> None:
    with service.open_session("tester", "test") as s:
        s.edit(changes)
        s.commit()


def create(doc: dict[str, Any]) -> dict[str, Any]:
    return {"op": "create", "path": service_path(doc["name"]), "value": doc}


def refused(service: ConfigService, changes: list[dict[str, Any]]) -> list[str]:
    """Commit ``changes``; it must be refused with running (and its commit id) unchanged.
    Returns the paths the errors name."""
    before, commit_id = service.running_doc(), service.commit_id
    with service.open_session("tester", "test") as s:
        s.edit(changes)
        with pytest.raises(ValidationError) as exc:
            s.validate()  # validate alone refuses too
        with pytest.raises(ValidationError) as exc:
            s.commit()
    assert service.running_doc() == before and service.commit_id == commit_id
    return [e.path for e in exc.value.errors]


def test_nat64_services_are_refused_naming_the_field(config: ConfigService) -> None:
    commit(config, [create(svc("web"))])
    commit(config, [create(svc("s", port=81, protocol="sctp"))])  # SCTP is carried now
    nat64 = svc("n", vip="2001:db8:ff::10", nat64=True, mode="full-nat",
                **{"snat-address": "198.19.0.100"})  # fmt: skip
    commit(config, [create(nat64)])  # tcp and udp are translated
    ping64 = {**nat64, "name": "p", "vip": "2001:db8:ff::11", "protocol": "icmp"}
    del ping64["port"]
    ping64["endpoint"] = [{**e, "port": 0} for e in ping64["endpoint"]]
    commit(config, [create(ping64)])  # and ICMP echo
    sctp64 = {**nat64, "name": "q", "vip": "2001:db8:ff::12", "protocol": "sctp"}
    assert refused(config, [create(sctp64)]) == [f"{service_path('q')}/nat64"]
    commit(config, [create(svc("t", port=82))])  # still open to what the datapath does


def test_an_xdp_hook_is_refused_with_policers_naming_the_interface(
    config: ConfigService,
) -> None:
    change = {"op": "merge", "path": "/sluice:datapath",
              "value": {"interface": [{"name": "eth0", "hook": "tc"},
                                      {"name": "eth1", "hook": "xdp"}]}}  # fmt: skip
    commit(config, [create(svc("web")), change])  # the XDP fast path (bpf/xdp.c)
    # A policer defined but not attached is nothing XDP bypasses.
    pol = {"name": "p", "cir": "1000000", "cbs": 10000}
    commit(config, [{"op": "merge", "path": "/sluice:qos", "value": {"policer": [pol]}}])
    attach = {"op": "merge", "path": "/sluice:qos",
              "value": {"service": [{"name": "web", "policer": "p"}]}}  # fmt: skip
    assert refused(config, [attach]) == ["/sluice:datapath/interface[name='eth1']/hook"]
    back = {"op": "merge", "path": "/sluice:datapath",
            "value": {"interface": [{"name": "eth1", "hook": "tc"}]}}  # fmt: skip
    commit(config, [attach, back])  # with hook tc the policer sees every packet


def test_too_many_endpoints_over_all_services_is_refused(
    config: ConfigService, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The real limit (523,775) takes 1,023 services of 512; the rule is the same at 10.
    monkeypatch.setattr(L, "LIMIT_ENDPOINTS", 10)
    commit(config, [create(svc("a", n_eps=6))])
    assert refused(config, [create(svc("b", port=81, n_eps=5))]) == [
        f"{service_path('b')}/endpoint"]  # fmt: skip
    commit(config, [create(svc("b", port=81, n_eps=4))])  # exactly the limit
    # Deleting one service makes room for another in the same commit.
    commit(
        config, [{"op": "delete", "path": service_path("a")}, create(svc("c", port=82, n_eps=6))]
    )
    disabled = svc("d", port=83, n_eps=30, **{"admin-state": "disabled"})
    commit(config, [create(disabled)])  # a disabled service is not in the datapath


def test_selection_table_space_is_refused_naming_the_service(
    config: ConfigService, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 32 endpoints: 8,059 Maglev slots, 8 pages; with 20 pages, two services (16 pages) fit
    # only without the rebuild headroom (8 more): the second one is refused.
    monkeypatch.setattr(L, "LIMIT_SEL_PAGES", 20)
    commit(config, [create(svc("m1", n_eps=32, algorithm="maglev"))])
    assert refused(config, [create(svc("m2", port=81, n_eps=32, algorithm="maglev"))]) == [
        f"{service_path('m2')}/algorithm"]  # fmt: skip
    commit(config, [create(svc("rr", port=81, n_eps=32))])  # round-robin: 32 slots, 1 page


def test_more_port_ranges_on_one_vip_than_the_datapath_holds(config: ConfigService) -> None:
    ranges = [create(svc(f"r{i}", port=1000 + 10 * i, **{"port-range-end": 1005 + 10 * i}))
              for i in range(L.LIMIT_RANGES)]  # fmt: skip
    commit(config, ranges)
    ninth = svc("r9", port=2000, **{"port-range-end": 2005})
    assert refused(config, [create(ninth)]) == [f"{service_path('r9')}/port-range-end"]
    commit(config, [create(svc("other", vip="198.19.0.11", port=2000,
                               **{"port-range-end": 2005}))])  # fmt: skip


def test_allowed_sources_beyond_the_map_are_refused(
    config: ConfigService, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(L, "LIMIT_ALLOW", 6)
    commit(config, [create(svc("a", **{"allowed-source": ["198.18.0.0/24", "198.18.1.0/24"]}))])
    three = ["198.18.2.0/24", "198.18.3.0/24", "198.18.4.0/24"]
    assert refused(config, [create(svc("b", port=81, **{"allowed-source": three}))]) == [
        f"{service_path('b')}/allowed-source"]  # fmt: skip


def _scale(n_services: int, n_eps: int) -> dict[str, Any]:
    eps = [{"address": f"198.18.1.{i + 1}", "port": 8080} for i in range(n_eps)]
    return {"sluice:load-balancer": {"service": [
        {"name": f"s{i}", "vip": "198.19.0.10", "port": 1 + i, "algorithm": "maglev",
         "endpoint": eps} for i in range(n_services)]}}  # fmt: skip


def test_the_advertised_scale_fits_and_the_next_tier_does_not() -> None:
    # The sizing math with the real limits: 10,000 Maglev services of 32 endpoints fit
    # (8 pages each, 80,000 + 8 of 131,072); of 33 they take 65,537 slots (66 pages) each,
    # and the 1,985th (s1984) would leave no room for a rebuild.
    assert maglev_size(32) == 8059 and L.sel_pages(8059) == 8
    assert validate.check(_scale(10_000, 32)) == []
    errors = validate.check(_scale(10_000, 33))
    assert [e.path for e in errors] == [f"{service_path('s1984')}/algorithm"]
    assert validate.check(_scale(L.LIMIT_SERVICES + 1, 1))[0].path == validate.LB_PATH


def leaves(service: ConfigService, changes: list[dict[str, Any]]) -> list[str]:
    """refused(), with a leaf-list entry's path shortened to its leaf-list."""
    return [p.split("[.=")[0] for p in refused(service, changes)]


def test_multihoming_and_gtp_teid_are_refused_where_the_datapath_cannot_do_them(
    config: ConfigService,
) -> None:
    """SCTP secondary addresses and the gtp-teid algorithm: the model's rules name the field
    (and the good shapes commit)."""
    mh = {"protocol": "sctp", "mode": "full-nat", "snat-address": "198.19.0.100",
          "secondary-vip": ["198.19.0.11"], "secondary-snat-address": ["198.19.0.101"]}  # fmt: skip
    commit(config, [create(svc("mh", port=36412, **mh))])
    bad = {**mh, "protocol": "tcp"}
    assert leaves(config, [create(svc("t", port=81, **bad))]) == [
        f"{service_path('t')}/secondary-vip"]  # fmt: skip
    bad = {**mh, "secondary-snat-address": []}
    del bad["secondary-snat-address"]
    assert leaves(config, [create(svc("c", port=82, **bad))]) == [
        f"{service_path('c')}/secondary-vip"]  # fmt: skip
    # Either family, whatever the VIP's (an IPv4 association with an IPv6 path), but each
    # pair (secondary-vip i, secondary-snat-address i) in one family.
    mixed = {**mh, "secondary-vip": ["2001:db8:ff::11", "198.19.0.12"],
             "secondary-snat-address": ["2001:db8:ff::101", "198.19.0.102"]}  # fmt: skip
    commit(config, [create(svc("mixed", port=36413, **mixed))])
    bad = {**mh, "secondary-vip": ["2001:db8:ff::11"]}
    assert leaves(config, [create(svc("f", port=83, **bad))]) == [
        f"{service_path('f')}/secondary-snat-address"]  # fmt: skip
    assert "must be of the family of secondary-vip 2001:db8:ff::11" in " ".join(
        e.message for e in validate.check({LOAD_BALANCER: {"service": [
            {"name": "f", **bad}]}}))  # fmt: skip
    commit(config, [create(svc("n3", port=2152, protocol="udp", algorithm="gtp-teid"))])
    assert leaves(config, [create(svc("g", port=84, algorithm="gtp-teid"))]) == [
        f"{service_path('g')}/algorithm"]  # fmt: skip
    assert leaves(config, [create(svc("h", port=2153, protocol="udp", algorithm="gtp-teid",
                                       mode="full-nat", **{"snat-address": "198.19.0.100"}))]) == [
        f"{service_path('h')}/algorithm"]  # fmt: skip
