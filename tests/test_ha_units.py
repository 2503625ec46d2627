"""HA pieces on their own: config rules, keepalived.conf, the notify FIFO, the VIP gate,
the ARP probe frames. No keepalived, no namespaces (tests/test_ha_pair.py has those)."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import pytest

from appliance.config import LOAD_BALANCER, Diff
from appliance.ha.gate import VipGate
from appliance.ha.keepalived_conf import Paths, render
from appliance.ha.notify_fifo import NotifyFifo, parse
from appliance.ha.settings import HA, HaSettings, check
from appliance.ha.vipcheck import ns_probe_frame, parse_na, parse_reply, probe_frame


def inst(**over: Any) -> dict[str, Any]:
    doc = {"name": "front", "virtual-router-id": 51, "priority": 100, "interface": "eth0",
           "peer": ["198.18.0.3"], "vip": ["198.18.0.10"], "advert-interval": 1000,
           "preempt": False}  # fmt: skip
    doc.update(over)
    return doc


def errors_of(*instances: dict[str, Any], **section: Any) -> list[tuple[str, str]]:
    return [(e.path, e.message) for e in check({HA: {"instance": list(instances), **section}})]


def test_a_good_pair_config_passes() -> None:
    assert errors_of(inst(), inst(name="v6", vip=["2001:db8::10"], peer=["2001:db8::3"])) == []


@pytest.mark.parametrize(
    ("over", "leaf", "words"),
    [
        ({"vip": ["198.18.0.10", "2001:db8::10"]}, "vip", "one address family"),
        ({"peer": ["2001:db8::3"]}, "peer", "address family"),
        ({"source-address": "2001:db8::2"}, "source-address", "address family"),
        ({"advert-interval": 105}, "advert-interval", "multiple of 10"),
        ({"return-interface": "eth1", "return-address": ["2001:db8:1::fe"]},
         "return-address", "address family"),
    ],
)  # fmt: skip
def test_bad_instance_is_refused_naming_the_field(over: dict[str, Any], leaf: str,
                                                  words: str) -> None:  # fmt: skip
    errors = errors_of(inst(**over))
    assert errors, over
    path, message = errors[0]
    assert path == f"/sluice:ha/instance[name='front']/{leaf}"
    assert words in message


def test_instances_may_not_share_a_vip_or_a_router_id() -> None:
    errors = errors_of(inst(), inst(name="other", vip=["198.18.0.10"]))
    assert ("/sluice:ha/instance[name='other']/vip",
            "198.18.0.10 is already in instance front") in errors  # fmt: skip
    assert any(p.endswith("[name='other']/virtual-router-id") for p, _ in errors)
    # Another link, or the other family, may reuse the id.
    assert errors_of(inst(), inst(name="b", interface="eth1", vip=["198.18.0.11"])) == []


def test_sync_address_needs_a_key() -> None:
    errors = errors_of(inst(), sync={"address": "198.18.0.2", "port": 7788})
    assert errors == [("/sluice:ha/sync/key",
                       "a sync key is required when the sync address is set")]  # fmt: skip


def test_keepalived_conf(tmp_path: Path) -> None:
    settings = HaSettings.from_section({"witness": "198.18.0.1", "instance": [
        inst(**{"advert-interval": 100, "return-interface": "eth1",
                "return-address": ["198.18.1.254"]})]})  # fmt: skip
    paths = Paths(tmp_path)
    text = render(settings, paths, "lb-a")
    assert f"vrrp_notify_fifo {paths.fifo}" in text
    for line in ("virtual_router_id 51", "priority 100", "advert_int 0.1", "version 3",
                 "nopreempt", "198.18.0.10/32 dev eth0", "198.18.1.254/32 dev eth1",
                 "sluice_fault weight 0", "sluice_peer_front weight 0",
                 "sluice_hold weight -99", f"file {paths.peer_file('front')}"):  # fmt: skip
        assert line in text, line
    assert "unicast_peer {\n        198.18.0.3\n    }" in text
    preempt = render(HaSettings.from_section({"instance": [inst(preempt=True)]}), paths, "a")
    assert "nopreempt" not in preempt
    # takeover: the highest priority, and preempting (once: the door renders it back).
    takeover = render(settings, paths, "lb-a", frozenset({"front"}))
    assert "priority 254" in takeover and "nopreempt" not in takeover


def test_notify_lines() -> None:
    assert parse('INSTANCE "front" MASTER 150\n') == ("front", "master")
    assert parse('INSTANCE "front" FAULT 150') == ("front", "fault")
    assert parse('GROUP "g" MASTER 0') is None
    assert parse("garbage") is None


def test_notify_fifo_survives_writer_restarts(tmp_path: Path) -> None:
    got: list[tuple[str, str]] = []
    seen = threading.Event()

    def on_role(name: str, role: str) -> None:
        got.append((name, role))
        if len(got) == 3:
            seen.set()

    fifo = NotifyFifo(tmp_path / "n.fifo", on_role)
    fifo.start()
    try:
        # keepalived closes and reopens its end on reload/restart: no EOF for the reader.
        for lines in (b'INSTANCE "a" BACKUP 100\nINSTANCE "a" MA', b'STER 100\n',
                      b'junk\nINSTANCE "a" FAULT 100\n'):  # fmt: skip
            fd = os.open(tmp_path / "n.fifo", os.O_WRONLY)
            os.write(fd, lines)
            os.close(fd)
        assert seen.wait(5), got
    finally:
        fifo.close()
    assert got == [("a", "backup"), ("a", "master"), ("a", "fault")]


class RecordingReconciler:
    """Stands in for the datapath reconciler (unit test): records what it is told."""

    def __init__(self) -> None:
        self.services: dict[str, dict[str, Any]] = {}
        self.errors: dict[str, str] = {}
        self.paused: list[str] = []

    def start(self, effective: dict[str, Any]) -> None:
        self.paused_at_start = list(self.paused)
        self.services = {s["name"]: s for s in effective[LOAD_BALANCER]["service"]}

    def set_paused(self, vips: list[str]) -> None:
        self.paused = list(vips)

    def apply(self, diff: Diff) -> None:
        for name in diff.services_removed:
            del self.services[name]
        for name, doc in diff.services_added.items():
            assert name not in self.services
            self.services[name] = doc
        for name, (_old, new) in diff.services_changed.items():
            assert name in self.services
            self.services[name] = new

    def close(self) -> None:
        pass


def svc(name: str, vip: str, port: int = 80) -> dict[str, Any]:
    return {"name": name, "vip": vip, "port": port, "protocol": "tcp"}


def test_gate_pauses_vips_while_not_master() -> None:
    """Unit (a recording fake stands in for the datapath reconciler): every service is
    programmed everywhere; the gate only pauses and releases the HA VIPs."""
    inner = RecordingReconciler()
    gate = VipGate(inner)
    doc = {HA: {"instance": [inst(vip=["198.18.0.10"])]},
           LOAD_BALANCER: {"service": [svc("web", "198.18.0.10"), svc("other", "198.18.0.20")]}}
    gate.start(doc)
    # Roles unknown at start: the HA VIP is paused before any service is programmed.
    assert inner.paused_at_start == ["198.18.0.10"]
    assert set(inner.services) == {"web", "other"}
    assert gate.errors is inner.errors  # the rest is the inner reconciler's
    assert gate.set_held([]) == {"paused": 0, "released": 1}  # master
    assert inner.paused == []
    # Commits go straight through, held or not.
    changed = svc("web", "198.18.0.10", 8080)
    gate.apply(Diff(services_changed={"web": (svc("web", "198.18.0.10"), changed)}))
    assert inner.services["web"]["port"] == 8080
    assert gate.set_held(["198.18.0.10"]) == {"paused": 1, "released": 0}  # backup
    assert inner.paused == ["198.18.0.10"] and set(inner.services) == {"web", "other"}
    assert gate.set_held(["198.18.0.10"]) == {"paused": 0, "released": 0}


def test_arp_probe_frame_and_reply() -> None:
    mac = bytes.fromhex("020000000001")
    frame = probe_frame(mac, "198.18.0.10")
    assert len(frame) == 42 and frame[:6] == b"\xff" * 6 and frame[12:14] == b"\x08\x06"
    assert frame[28:32] == b"\0\0\0\0"  # an RFC 5227 probe: no sender address
    assert parse_reply(frame) is None  # a request, not a reply
    other = bytes.fromhex("020000000002")
    reply = bytearray(frame)
    reply[20:22] = (2).to_bytes(2, "big")
    reply[22:28] = other
    reply[28:32] = bytes([198, 18, 0, 10])
    assert parse_reply(bytes(reply)) == ("198.18.0.10", other)


def test_ns_probe_frame_and_advertisement() -> None:
    """The IPv6 probe: a DAD-style solicitation (from ::) to the VIP's solicited-node group;
    an advertisement for the VIP names the node that holds it."""
    mac = bytes.fromhex("020000000001")
    frame = ns_probe_frame(mac, "2001:db8::10")
    assert frame[:6] == bytes.fromhex("3333ff000010") and frame[12:14] == b"\x86\xdd"
    assert frame[22:38] == bytes(16)  # source ::
    assert frame[38:54] == bytes.fromhex("ff0200000000000000000001ff000010")
    assert frame[54] == 135 and frame[62:78] == bytes.fromhex("20010db8" + "0" * 22 + "10")
    assert parse_na(frame) is None  # a solicitation, not an advertisement
    other = bytes.fromhex("020000000002")
    na = bytearray(frame)
    na[6:12], na[54] = other, 136
    assert parse_na(bytes(na)) == ("2001:db8::10", other)


def test_netconf_get_shows_the_roles() -> None:
    from lxml import etree

    from appliance.config.schema import get_schema
    from northbound.netconf.output import json_to_xml
    from northbound.netconf.schema_index import SchemaIndex
    from northbound.netconf.state import ha_state_doc

    sync = {"listening": "198.18.1.2:7788", "refused": {},
            "peers": {"198.18.1.3": {"connected": True, "flows": 12, "dumps": 1,
                                     "lag": {"last-ms": 0.5, "p50-ms": 0.41, "p99-ms": 5.5,
                                             "samples": 9}}},
            "sending": {"198.18.1.3": {"connected": True, "flows": 7}},
            "datapath": {"installed": 24, "unbound": 1, "refused-records": {"vip": 2}}}
    current = {"enabled": True, "witness-reachable": True,
               "last-failover": "2026-11-29T21:00:00Z", "synced": True, "sync": sync,
               "instances": [{"name": "front", "role": "master",
                              "since": "2026-11-29T21:00:00Z"}]}  # fmt: skip
    state = {HA: ha_state_doc(current)}
    config = {HA: {"instance": [inst()]}}
    idx = SchemaIndex(get_schema())
    data = etree.Element("data")
    json_to_xml(data, config, idx.top, idx.namespace, overlay=state)
    text = etree.tostring(data).decode()
    for piece in ("<role>master</role>", "<witness-reachable>true</witness-reachable>",
                  "<last-failover>2026-11-29T21:00:00Z</last-failover>",
                  "<synced>true</synced>", "<flows-installed>24</flows-installed>",
                  "<records-refused>2</records-refused>", "<address>198.18.1.3</address>",
                  "<flows-received>12</flows-received>", "<lag-p99>5.50</lag-p99>"):  # fmt: skip
        assert piece in text, text
    assert ha_state_doc({"enabled": False}) == {}
    only_sync = ha_state_doc({"enabled": False, "sync": sync})["state"]["sync"]
    assert only_sync["peer"][0]["flows-sent"] == 7


def test_gate_applies_egress_snat_only_while_master_of_everything() -> None:
    class SnatRecorder(RecordingReconciler):
        def __init__(self) -> None:
            super().__init__()
            self.snat: list[bool] = []

        def set_snat_active(self, active: bool) -> None:
            self.snat.append(active)

    inner = SnatRecorder()
    gate = VipGate(inner)
    gate.start({HA: {"instance": [inst(vip=["198.18.0.10"])]}, LOAD_BALANCER: {"service": []}})
    assert inner.snat == [False]  # roles unknown: not active
    gate.set_held([])
    assert inner.snat[-1] is True  # master
    gate.set_held(["198.18.0.10"])
    assert inner.snat[-1] is False  # backup
    alone = SnatRecorder()
    VipGate(alone).start({LOAD_BALANCER: {"service": []}})
    assert alone.snat == [True]  # no HA: this node applies it
