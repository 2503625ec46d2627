"""bpf/lb.c compiled in modules (bpf/lib/modules.h, appliance/datapath/program.py MODULES):
each feature's programs are loaded before the map write that makes the core program
tail-call there; a feature module's flow events reach the daemon's reader (the pinned ring,
not one of its own); what each service needs."""

from __future__ import annotations

from typing import Any

import pytest
from dpkit import SNAT4, VIP4, VIP6, LbNet, backend_addr, service, wait_for
from sctpkit import associate, serve_all
from test_datapath_ha import Events

from appliance.config import Diff
from appliance.datapath.driver import Driver
from appliance.datapath.program import FEATURES, MODULES, QOS_TAIL_CALLS, TAIL_CALLS

pytestmark = pytest.mark.datapath


def test_every_program_is_in_one_module_and_every_tail_call_target_in_one() -> None:
    names = [n for fns in MODULES.values() for n in fns]
    assert len(names) == len(set(names))
    assert set(TAIL_CALLS.values()) <= set(names) | set(QOS_TAIL_CALLS)
    assert "sluice_lb" in MODULES["core"]  # every flow: new ones too, without firewall rules
    assert MODULES["ipv6"] == ("sluice_lb6",)  # sluice_lb is IPv4's (bpf/lb.c)
    assert "sluice_fw_lb" in MODULES["fw"]  # new flows after the firewall's rules
    assert set(FEATURES) == set(MODULES) - {"core"}


def nat64(name: str) -> dict[str, Any]:
    doc = service(name, vip=VIP6, mode="full-nat", **{"snat-address": SNAT4})
    for n, ep in enumerate(doc["endpoint"], start=1):
        ep["address"] = backend_addr(n, 4)  # IPv4 endpoints behind an IPv6 VIP
    return doc


def test_what_each_service_needs() -> None:
    """Driver.features (no datapath: a unit test of the mapping)."""
    d = Driver.__new__(Driver)
    d.default_algorithm = "round-robin"
    assert d.features(service("web")) == []
    assert d.features(service("s", proto="sctp")) == ["sctp"]
    assert d.features(service("v6", vip=VIP6)) == ["ipv6"]
    assert d.features(nat64("x")) == ["xlat", "ipv6"]
    assert d.features(service("d", mode="dsr", **{"dsr-tunnel": "ip-in-ip"})) == ["l3dsr"]
    assert d.features(service("d", mode="dsr")) == []
    assert d.features(service("g", proto="udp", algorithm="gtp-teid")) == ["gtpu"]
    mixed = nat64("m")
    mixed["endpoint"][0]["address"] = backend_addr(1, 6)
    assert d.features(mixed) == ["xlat", "ipv6"]
    assert d.features({**nat64("s"), "protocol": "sctp"}) == ["sctp", "xlat", "ipv6"]
    nat46 = service("n", **{"snat-address": "198.18.0.254"})
    nat46["endpoint"][0]["address"] = backend_addr(1, 6)  # its replies: IPv6 packets
    assert d.features(nat46) == ["xlat", "ipv6"]
    multihomed = service("m", proto="sctp", **{"secondary-vip": ["2001:db8:f::1"]})
    assert d.features(multihomed) == ["sctp", "ipv6"]


def test_a_feature_loads_before_anything_sends_packets_there(
    lbnet: LbNet, monkeypatch: pytest.MonkeyPatch
) -> None:
    """need() runs before the service entry (services) and before fw_live (firewall)."""
    prog = lbnet.rec.program
    seen: list[tuple[str, int, int]] = []
    need = prog.need

    def spy(feature: str) -> None:
        live = prog.table("fw_live")
        seen.append((feature, sum(1 for _ in prog.table("svc_map")),
                     int(live[live.Key(0)].value) & 6))  # fmt: skip
        need(feature)
        assert feature in prog.modules

    monkeypatch.setattr(prog, "need", spy)
    lbnet.set(nat64("x6"))
    assert ("xlat", 0, 0) in seen and ("ipv6", 0, 0) in seen
    assert lbnet.curl(VIP6, 80) == "b1"  # translated by sluice_xlat
    rules = [{"name": "vip", "preference": 10, "service": "x6", "action": "allow"}]
    fw = {"rule": rules, "interface": [{"name": lbnet.interfaces[0], "default-policy": "drop"}]}
    lbnet.rec.apply(Diff(sections_changed={"sluice:firewall": (None, fw)}))
    assert lbnet.rec.firewall_state()["error"] is None
    assert ("fw", 1, 0) in seen  # before fw_live turned the firewall on
    assert lbnet.curl(VIP6, 80) == "b2"
    status = lbnet.rec.status()
    assert {"core", "xlat", "fw"} <= set(status["modules"])
    assert status["compile-seconds"] == pytest.approx(sum(status["modules"].values()), abs=0.05)


def test_a_flow_event_from_the_sctp_module_reaches_the_reader(lbnet: LbNet) -> None:
    """sluice_sctp (its own compile) creates the association's flow and emits its events
    into the pinned ring the core module's reader polls."""
    from appliance.datapath import layout as L

    serve_all(lbnet.backends)
    lbnet.set(service("st", port=3868, proto="sctp", ep_port=3869))
    events = Events()
    lbnet.rec.flows.start_events(events)
    try:
        got = associate(lbnet.client, [{"vip": VIP4, "port": 3868, "sport": 43101,
                                        "local": "198.18.0.1"}])  # fmt: skip
        assert got[0]["crc"]

        def sctp_events() -> list[tuple[int, Any]]:
            return [(k, e) for k, e in events.decoded(lbnet) if e.proto == 132]

        wait_for(lambda: any(k == L.FE_CREATED for k, _ in sctp_events()), timeout=5)
        e = next(e for k, e in sctp_events() if k == L.FE_CREATED)
        assert L.words_addr(e.t.vip.w, 4) == VIP4 and L.ntohs(e.t.vip_port) == 3868
        assert L.ntohs(e.t.client_port) == 43101 and L.ntohs(e.t.ep_port) == 3869
        wait_for(lambda: any(k == L.FE_STATE for k, _ in sctp_events()), timeout=5)
    finally:
        lbnet.rec.flows.stop_events(events)
