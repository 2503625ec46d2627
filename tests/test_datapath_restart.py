"""What a daemon restart must keep: a new reconciler over the same pinned maps (as a
restarted daemon gets them) must leave traffic exactly as the old one programmed it."""

from __future__ import annotations

import pytest
from dpkit import VIP4, VIP6, LbNet, backend_addr, service

pytestmark = pytest.mark.datapath


def test_ipv6_allowed_prefixes_of_32_bits_or_less_survive_a_restart(lbnet: LbNet) -> None:
    # The allow key holds no family: a /32 (or shorter) IPv6 prefix has address words 1..3
    # zero and looks like an IPv4 prefix. Read back as IPv4, it was "stale" and deleted,
    # and the service answered no new flow after the restart.
    acl = [
        service("v6-32", vip=VIP6, **{"allowed-source": ["2001:db8::/32"]}),
        service("v6-16", vip=VIP6, port=81, **{"allowed-source": ["2001::/16"]}),
        service("v6-64", vip=VIP6, port=82, **{"allowed-source": ["2001:db8::/64"]}),
        service("v4-24", **{"allowed-source": ["198.18.0.0/24"]}),
    ]
    lbnet.set(*acl)
    before = [lbnet.get(VIP6, port) for port in (80, 81, 82) for _ in range(2)]
    assert before == ["b1", "b2"] * 3
    assert lbnet.get(VIP4) == "b1"
    lbnet.restart(*acl)
    assert lbnet.rec.errors == {}
    after = [lbnet.get(VIP6, port) for port in (80, 81, 82) for _ in range(2)]
    assert after == ["b3", "b1"] * 3  # answered, round-robin position kept
    assert lbnet.get(VIP4) == "b2"
    assert sum(1 for _ in lbnet.rec.program.table("allow_map")) == 4


def test_a_restart_keeps_endpoints_known_dead_out_and_reports_the_pinned_health(
    lbnet: LbNet,
) -> None:
    # Until the prober catches up after a restart, an endpoint known dead must get no new
    # flows; the prober is seeded from pinned_health().
    web = service("web")
    lbnet.set(web)
    lbnet.rec.set_endpoint_health("web", backend_addr(2), 8080, False)
    assert lbnet.rec.errors == {}
    assert {lbnet.curl(VIP4, 80, local_port=44000 + i) for i in range(6)} == {"b1", "b3"}
    lbnet.restart(web)
    assert lbnet.rec.errors == {}
    answered = [lbnet.curl(VIP4, 80, local_port=45000 + i) for i in range(6)]
    assert set(answered) == {"b1", "b3"}, answered
    assert lbnet.rec.pinned_health() == {
        ("web", backend_addr(1), 8080): True,
        ("web", backend_addr(2), 8080): False,
        ("web", backend_addr(3), 8080): True,
    }
    assert lbnet.rec.endpoint_state("web", backend_addr(2), 8080)["health"] == "down"
    lbnet.rec.set_endpoint_health("web", backend_addr(2), 8080, True)  # the prober's word
    assert {lbnet.curl(VIP4, 80, local_port=46000 + i) for i in range(6)} == {"b1", "b2", "b3"}
    # A second restart: the endpoint is up in the pins now.
    lbnet.restart(web)
    assert lbnet.rec.pinned_health()[("web", backend_addr(2), 8080)] is True


def test_pinned_health_of_a_disabled_endpoint_survives_and_stays_apart(lbnet: LbNet) -> None:
    # Disabled (admin) is config, not health: down-and-disabled comes back down, and
    # up-but-disabled comes back up once enabled, whatever the datapath's eligible flag.
    web = service("web")
    lbnet.set(web)
    lbnet.rec.set_endpoint_health("web", backend_addr(1), 8080, False)
    web_off = service("web")
    for ep in web_off["endpoint"][:2]:
        ep["admin-state"] = "disabled"
    lbnet.set(web_off)
    lbnet.restart(web_off)
    health = lbnet.rec.pinned_health()
    assert health[("web", backend_addr(1), 8080)] is False
    assert health[("web", backend_addr(2), 8080)] is True
    lbnet.set(service("web"))  # both enabled again: b1 still down, b2 up
    assert {lbnet.curl(VIP4, 80, local_port=47000 + i) for i in range(6)} == {"b2", "b3"}


def test_after_an_upgrade_from_the_older_selection_map_the_live_generation_is_kept(
    lbnet: LbNet,
) -> None:
    # An older program (one selection slot per entry) may still be attached while start()
    # programs: its tables are in its own map at the live generation, so ours are written
    # there too, with no flip. (Here the same program stands in for the older one.)
    web = service("web")
    lbnet.set(web)
    lbnet.set(web)  # a rebuild: the live generation is 1 now
    gen = lbnet.rec.driver.services["web"].gen
    assert lbnet.get(VIP4) == "b1"
    lbnet.rec.program.legacy_layout = True
    try:
        lbnet.restart(web)
    finally:
        lbnet.rec.program.legacy_layout = False
    assert lbnet.rec.errors == {}
    assert lbnet.rec.driver.services["web"].gen == gen == 1
    assert [lbnet.get(VIP4) for _ in range(2)] == ["b2", "b3"]
    lbnet.set(service("web", backends=(1, 3)))  # the next rebuild flips as usual
    assert lbnet.rec.driver.services["web"].gen == 0
    assert sorted(lbnet.get(VIP4) for _ in range(2)) == ["b1", "b3"]


def test_rule_and_policer_counters_survive_a_restart(qnet: LbNet) -> None:
    """A restarted daemon takes the firewall rules' and the policers' ids back from the pins
    (fw_names, qos_names): their counters go on from where they were, an unchanged policer
    keeps its buckets; a rule or policer renamed or changed starts from zero."""
    from qoskit import set_qos, udp_blast
    from test_datapath_firewall import hits, set_fw

    net = qnet
    udp = service("u", port=6000, proto="udp", backends=(1,), ep_port=6000)
    net.set(udp)
    rules = [{"name": "to-b1", "preference": 10, "destination-prefix": f"{backend_addr(1)}/32",
              "action": "count"},
             {"name": "to-b2", "preference": 20, "destination-prefix": f"{backend_addr(2)}/32",
              "action": "allow"}]  # fmt: skip
    set_fw(net, rules)
    for i in range(3):
        assert net.client.udp_request(backend_addr(1), 5353, b"%d" % i, timeout=2) == b"%d" % i
    assert net.client.udp_request(backend_addr(2), 5353, b"x", timeout=2) == b"x"
    pol = {"name": "p", "cir": 4_000_000, "cbs": 8000}
    qos = {"policer": [pol], "service": [{"name": "u", "policer": "p"}]}
    set_qos(net, qos)

    def blast() -> None:
        udp_blast(net.client, net.backends[0], VIP4, backend_addr(1), 6000, 8_000_000, 1.0)

    blast()
    fw_before = {r["name"]: (r["id"], r["packets"]) for r in net.rec.firewall_state()["rules"]}
    pol_before = net.rec.qos_state()["policer"]["p"]
    assert fw_before["to-b1"][1] >= 3 and pol_before["red"]["packets"] > 0, pol_before
    rules[1]["name"] = "to-b2-renamed"
    net.restart(udp, sections={"sluice:firewall": {"rule": rules},
                               "sluice:qos": qos})  # fmt: skip
    assert net.rec.errors == {}, net.rec.errors
    after = {r["name"]: (r["id"], r["packets"]) for r in net.rec.firewall_state()["rules"]}
    assert after["to-b1"] == fw_before["to-b1"], after  # same id, same count
    assert after["to-b2-renamed"][1] == 0, after  # a new name is a new rule
    assert net.rec.qos_state()["policer"]["p"] == pol_before
    # Counting goes on from there.
    assert net.client.udp_request(backend_addr(1), 5353, b"again", timeout=2) == b"again"
    assert hits(net, "to-b1") == fw_before["to-b1"][1] + 1
    blast()
    green = net.rec.qos_state()["policer"]["p"]["green"]["packets"]
    assert green > pol_before["green"]["packets"]
    # A changed policer starts afresh (buckets full, counters zero).
    set_qos(net, {**qos, "policer": [{**pol, "cir": 2_000_000}]})
    assert net.rec.qos_state()["policer"]["p"]["green"]["packets"] == 0
