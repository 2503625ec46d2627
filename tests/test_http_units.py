"""Pure parts of the HTTP door: loxilb rule mapping, RESTCONF paths and fields, the metrics
collector over a hand-made state snapshot (no daemon, no kernel)."""

from __future__ import annotations

import time
import types
from types import MappingProxyType as MP

import pytest
from prometheus_client.parser import text_string_to_metric_families

from appliance.config.schema import get_schema
from appliance.snapshot import State
from northbound.http import loxilb_settings as settings
from northbound.http import metrics
from northbound.http.loxilb_model import to_rule, to_service
from northbound.http.restconf_codec import BodyProblem, parse_fields
from northbound.http.restconf_paths import PathProblem, parse, schema_tree
from northbound.http.wire import ApiError, fold_keys


def body(**args: object) -> dict:
    base = {"externalIP": "198.19.0.10", "port": 80, "protocol": "tcp", "name": "ns_a:x"}
    return fold_keys({"serviceArguments": {**base, **args},
                      "endpoints": [{"endpointIP": "198.18.11.1", "targetPort": 8080}]})


@pytest.mark.parametrize(("sel", "algorithm"), [(0, "round-robin"), (1, "hash"), (2, "weighted"),
                                                (3, "persistence"), (4, "least-connections")])
def test_sel_codes(sel: int, algorithm: str) -> None:
    name, doc, oper = to_service(body(sel=sel))
    assert (name, doc["algorithm"], oper) == ("lx-tcp-198.19.0.10-80", algorithm, 0)
    assert to_rule(doc)["serviceArguments"]["sel"] == sel


@pytest.mark.parametrize(("mode", "extra", "sluice"), [
    (0, {}, "default"), (1, {}, "one-arm"), (2, {}, "one-arm"),
    (2, {"privateIP": "198.19.0.100"}, "full-nat"), (3, {}, "dsr")])  # fmt: skip
def test_mode_codes(mode: int, extra: dict, sluice: str) -> None:
    _, doc, _ = to_service(body(mode=mode, **extra))
    assert doc["mode"] == sluice
    assert to_rule(doc)["serviceArguments"]["mode"] == mode  # given back as sent


@pytest.mark.parametrize("args", [{"sel": 5}, {"sel": 6}, {"mode": 4}, {"mode": 5},
                                  {"egress": True}, {"host": "a.example"}])
def test_unsupported_is_refused_not_approximated(args: dict) -> None:
    with pytest.raises(ApiError) as exc:
        to_service(body(**args))
    assert exc.value.code == 400 and next(iter(args)) in exc.value.message


def test_secondary_ips_are_sctp_multihoming() -> None:
    """loxilb's secondaryIPs: secondary VIPs, each its path's source towards the endpoints
    (loxilb's full-NAT sources from the service address); either family; round trip."""
    sec = [{"secondaryIP": "198.19.0.11"}, {"secondaryIP": "2001:db8:ff::11"}]
    args = {"protocol": "sctp", "port": 36412, "mode": 2, "privateIP": "198.19.0.100"}
    _, doc, _ = to_service(fold_keys({**body(**args), "secondaryIPs": sec}))
    assert doc["secondary-vip"] == doc["secondary-snat-address"] == [
        "198.19.0.11", "2001:db8:ff::11"]  # fmt: skip
    assert to_rule(doc)["secondaryIPs"] == sec
    for bad_args, bad_sec, field in (
        ({**args, "protocol": "tcp"}, sec, "secondaryIPs"),
        ({**args, "privateIP": ""}, sec, "secondaryIPs"),  # one-arm
        (args, [*sec, *({"secondaryIP": f"198.19.0.{20 + i}"} for i in range(3))],
         "secondaryIPs"),
        (args, [{"secondaryIP": "198.19.0.10"}], "secondaryIPs"),  # the externalIP
        (args, [{"secondaryIP": "198.19.0.999"}], "secondaryIPs[0].secondaryIP"),
    ):  # fmt: skip
        with pytest.raises(ApiError) as exc:
            to_service(fold_keys({**body(**bad_args), "secondaryIPs": bad_sec}))
        assert exc.value.code == 400 and exc.value.message.startswith(field), exc.value.message


def test_ipv6_rule_name_and_icmp() -> None:
    name, doc, _ = to_service(body(externalIP="2001:db8:ff::10", port=0, protocol="icmp"))
    assert name == "lx-icmp-2001_db8_ff__10-0" and "port" not in doc
    assert doc["endpoint"][0]["port"] == 0


def test_restconf_paths() -> None:
    top = schema_tree(get_schema().module)
    t = parse("/sluice:load-balancer/service=we%2Cb/endpoint=198.18.1.1,8080/weight", top)
    assert t.data_path() == ("/sluice:load-balancer/service[name='we,b']"
                             "/endpoint[address='198.18.1.1'][port='8080']/weight")
    assert t.uri() == "sluice:load-balancer/service=we%2Cb/endpoint=198.18.1.1,8080/weight"
    for bad in ("/load-balancer", "/other:x", "/sluice:load-balancer/nope",
                "/sluice:load-balancer/service=a,b", "/sluice:load-balancer/service/name"):
        with pytest.raises(PathProblem):
            parse(bad, top)


def test_fields_parser() -> None:
    assert parse_fields("a;b/c;d(e;f/g)") == {"a": {}, "b": {"c": {}},
                                              "d": {"e": {}, "f": {"g": {}}}}
    for bad in ("a(", "a;;b", "(a)", "a)"):
        with pytest.raises(BodyProblem):
            parse_fields(bad)


def _state(n: int, e: int) -> tuple[State, types.SimpleNamespace]:
    services, svc_state, ep_state = {}, {}, {}
    for i in range(n):
        name = f"s{i}"
        services[name] = {"name": name, "protocol": "tcp", "endpoint": [
            {"address": f"198.18.{j}.1", "port": 80} for j in range(e)]}
        svc_state[name] = MP({"packets": 5, "bytes": 500, "oper-status": "up"})
        for j in range(e):
            ep_state[(name, f"198.18.{j}.1", 80)] = MP({"packets": 1, "bytes": 100,
                                                        "health": "up" if j else "down"})
    return (State(time.monotonic(), MP(svc_state), MP(ep_state)),
            types.SimpleNamespace(services_effective=services, commit_id=7))


def scrape(st: State, cfg: object) -> dict:
    text = metrics.MetricsEndpoint(metrics.SnapshotCollector(lambda: st, cfg))._build()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text.decode()) for s in f.samples}


def test_metrics_from_a_snapshot(monkeypatch: pytest.MonkeyPatch) -> None:
    st, cfg = _state(3, 2)
    got = scrape(st, cfg)
    assert got[("sluice_service_packets_total", (("service", "s1"),))] == 5
    assert got[("loxilb_processed_packets_total", ())] == 15
    assert got[("loxilb_healthy_endpoints", ())] == 3
    assert got[("loxilb_unhealthy_endpoints", ())] == 3
    assert got[("sluice_endpoint_up", (("endpoint", "198.18.0.1:80"), ("service", "s0")))] == 0
    assert got[("sluice_config_commits_total", ())] == 7
    assert got[("sluice_metrics_endpoint_series_omitted", ())] == 0
    # Past the limit the endpoint series go, the totals stay.
    monkeypatch.setattr(metrics, "ENDPOINT_SERIES_LIMIT", 5)
    got = scrape(st, cfg)
    assert got[("sluice_metrics_endpoint_series_omitted", ())] == 1
    assert not any(name.startswith("sluice_endpoint_") for name, _ in got)
    assert got[("loxilb_healthy_endpoints", ())] == 3


HA = {"enabled": True, "instances": [
    {"name": "llb-inst0", "role": "backup", "vips": ["198.19.0.10"]},
    {"name": "other", "role": "master", "vips": []}]}  # fmt: skip


def test_cistate_maps_onto_the_appliances_ha() -> None:
    """The HA state here is the shape the HA door's `ha` provider returns (a dict, no
    keepalived): which request becomes a takeover, which is refused, which is stored."""
    assert settings.cistate_action(HA, "llb-inst0", "MASTER") == "takeover"
    assert settings.cistate_action(HA, "other", "MASTER") == "none"
    assert settings.cistate_action(HA, "llb-inst0", "BACKUP") == "none"
    with pytest.raises(ApiError) as exc:
        settings.cistate_action(HA, "other", "BACKUP")
    assert exc.value.code == 400 and "release" in exc.value.message
    assert settings.cistate_action(HA, "not-ha", "MASTER") is None
    assert settings.cistate_action({"enabled": False}, "llb-inst0", "MASTER") is None
    stored = {"cistate": [{"instance": "not-ha", "state": "BACKUP"},
                          {"instance": "other", "state": "BACKUP"}]}
    assert settings.cistate_list(stored, HA) == {"Attr": [
        {"instance": "llb-inst0", "state": "BACKUP", "vip": "198.19.0.10", "sync": 0},
        {"instance": "other", "state": "MASTER", "vip": "0.0.0.0", "sync": 0},
        {"instance": "not-ha", "state": "BACKUP", "vip": "0.0.0.0", "sync": 0}]}
