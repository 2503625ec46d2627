"""NACM (RFC 8341) over NETCONF: /nacm in the datastore (the IETF module), role groups,
rules for operations, data and notifications, the defaults, and a mid-session demotion."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import netconfkit as kit
import pytest
from lxml import etree
from ncclient.operations import RPCError
from ncclient.xml_ import to_ele

from appliance import events

NACM_NS = "urn:ietf:params:xml:ns:yang:ietf-netconf-acm"
NS = {"sl": kit.SLUICE_NS, "nacm": NACM_NS}


def service(name: str, vip: str) -> str:
    return (f'<config><load-balancer xmlns="{kit.SLUICE_NS}"><service><name>{name}</name>'
            f"<vip>{vip}</vip><port>80</port><endpoint><address>198.18.1.1</address>"
            "<port>8080</port></endpoint></service></load-balancer></config>")


def nacm(body: str) -> str:
    return f'<config><nacm xmlns="{NACM_NS}">{body}</nacm></config>'


RULES = nacm(f"""
<groups><group><name>limited</name><user-name>ops2</user-name></group></groups>
<rule-list><name>limits</name><group>limited</group>
 <rule><name>deny-locked</name><module-name>sluice</module-name>
  <path xmlns:s="{kit.SLUICE_NS}">/s:load-balancer/s:service[s:name='locked']</path>
  <access-operations>create update delete</access-operations><action>deny</action></rule>
 <rule><name>hide-locked-vip</name><module-name>sluice</module-name>
  <path xmlns:s="{kit.SLUICE_NS}">/s:load-balancer/s:service[s:name='locked']/s:vip</path>
  <access-operations>read</access-operations><action>deny</action></rule>
 <rule><name>hide-datapath</name><module-name>sluice</module-name>
  <path xmlns:s="{kit.SLUICE_NS}">/s:datapath</path>
  <access-operations>read</access-operations><action>deny</action></rule>
 <rule><name>no-kill</name><module-name>ietf-netconf</module-name>
  <rpc-name>kill-session</rpc-name><access-operations>exec</access-operations>
  <action>deny</action></rule>
 <rule><name>no-config-change</name><module-name>ietf-netconf-notifications</module-name>
  <notification-name>netconf-config-change</notification-name>
  <access-operations>read</access-operations><action>deny</action></rule>
</rule-list>""")
DATAPATH = (f'<config><datapath xmlns="{kit.SLUICE_NS}"><interface><name>veth0</name>'
            "</interface></datapath></config>")


@pytest.fixture
def h(tmp_path: Path) -> Iterator[kit.Harness]:
    yield from kit.harness(tmp_path, event_bus=events.EventBus())


def has(m, path: str, source: str = "running") -> bool:  # type: ignore[no-untyped-def]
    return bool(m.get_config(source).data.xpath(path, namespaces=NS))


def test_defaults_with_roles_only(h: kit.Harness) -> None:
    with h.connect() as admin, h.connect("viewer") as viewer:
        admin.edit_config(nacm("<read-default>permit</read-default>"), target="running")
        assert "nacm" in h.service.sections  # /nacm is in the datastore
        assert has(admin, "//nacm:nacm")  # the read-write role may read it
        assert not has(viewer, "//nacm:nacm")  # nacm:default-deny-all
        admin.edit_config(service("web", "198.18.0.10"), target="running")
        assert has(viewer, "//sl:service")  # read-default permit
        with pytest.raises(RPCError) as info:
            viewer.kill_session(admin.session_id)  # default-deny-all operation
        assert info.value.tag == "access-denied"
        admin.edit_config(nacm("<read-default>deny</read-default>"), target="running")
        assert not has(viewer, "//sl:service")
        assert has(admin, "//sl:service")


def test_rules_for_data_operations_and_notifications(h: kit.Harness) -> None:
    with h.connect() as admin, h.connect("ops2") as ops2:
        admin.edit_config(DATAPATH, target="running")
        admin.edit_config(RULES, target="running")
        path = h.service.sections["nacm"]["rule-list"][0]["rule"][0]["path"]
        assert path == "/sluice:load-balancer/service[name='locked']"  # JSON form
        (back,) = admin.get_config("running").data.xpath("//nacm:rule[nacm:name='deny-locked']"
                                                          "/nacm:path", namespaces=NS)
        assert back.text == "/sluice:load-balancer/sluice:service[sluice:name='locked']"
        assert back.nsmap["sluice"] == kit.SLUICE_NS  # XML: every step prefixed and bound
        # data writes: the locked service is refused, naming it; others are not
        ops2.edit_config(service("free", "198.18.0.11"), target="running")
        with pytest.raises(RPCError) as info:
            ops2.edit_config(service("locked", "198.18.0.12"), target="candidate")
        assert info.value.tag == "access-denied"
        assert info.value.path.strip() == \
            "/sluice:load-balancer/sluice:service[sluice:name='locked']"
        admin.edit_config(service("locked", "198.18.0.12"), target="running")
        with pytest.raises(RPCError):
            ops2.edit_config(f'<config><load-balancer xmlns="{kit.SLUICE_NS}" '
                             'xmlns:xc="urn:ietf:params:xml:ns:netconf:base:1.0">'
                             '<service xc:operation="delete"><name>locked</name></service>'
                             "</load-balancer></config>", target="running")
        assert {"free", "locked"} <= set(h.service.services)
        # data reads: datapath is left out for ops2 only, and one node deep in a list
        assert has(admin, "//sl:datapath") and not has(ops2, "//sl:datapath")
        locked_vip = "//sl:service[sl:name='locked']/sl:vip"
        assert has(admin, locked_vip) and not has(ops2, locked_vip)
        assert has(ops2, "//sl:service[sl:name='locked']/sl:port")
        assert has(ops2, "//sl:service[sl:name='free']/sl:vip")
        assert not ops2.get().data.xpath("//sl:datapath", namespaces=NS)
        # protocol operations
        with pytest.raises(RPCError) as info:
            ops2.kill_session(admin.session_id)
        assert info.value.tag == "access-denied"
        # notifications: no config-change for ops2; an alarm still reaches it
        ops2.create_subscription()
        admin.edit_config(service("more", "198.18.0.13"), target="running")
        h.server.event_bus.publish({"type": "alarm", "state": "raised", "name": "x",
                                    "severity": "major", "text": "t",
                                    "since": "2026-11-29T10:00:00Z"})
        n = ops2.take_notification(timeout=10)
        assert n is not None
        assert etree.QName(to_ele(n.notification_xml)[1]).localname == "alarm"
        # the counters, in <get>
        counters = admin.get().data.xpath("//nacm:nacm/nacm:denied-data-writes/text()",
                                          namespaces=NS)
        assert int(counters[0]) >= 2
        # enable-nacm false: nothing is checked any more
        admin.edit_config(nacm("<enable-nacm>false</enable-nacm>"), target="running")
        assert has(ops2, "//sl:datapath")
        ops2.edit_config(service("locked", "198.18.0.14"), target="running")


def test_demotion_mid_session(h: kit.Harness) -> None:
    with h.connect() as admin, h.connect("ops2") as ops2:
        admin.edit_config(nacm("<read-default>permit</read-default>"), target="running")
        assert has(ops2, "//nacm:nacm")  # the read-write group's built-in rule-list
        admin.edit_config(f'<config><management xmlns="{kit.SLUICE_NS}"><user>'
                          "<name>ops2</name><role>read-only</role></user></management>"
                          "</config>", target="running")
        # the same session, next operation: no longer in the read-write group
        assert not has(ops2, "//nacm:nacm")
        with pytest.raises(RPCError) as info:
            ops2.edit_config(service("x", "198.18.0.20"), target="candidate")
        assert info.value.tag == "access-denied"
        with pytest.raises(RPCError) as info:
            ops2.edit_config(nacm("<enable-nacm>false</enable-nacm>"), target="running")
        assert info.value.tag == "access-denied"
    assert h.service.sections["nacm"].get("enable-nacm") is None


def test_bad_rules_are_refused_by_the_model(h: kit.Harness) -> None:
    with h.connect() as admin:
        before = h.service.running_doc()
        with pytest.raises(RPCError) as info:
            admin.edit_config(nacm("<rule-list><name>r</name><rule><name>x</name>"
                                   "<action>maybe</action></rule></rule-list>"),
                              target="running")
        assert info.value.tag == "invalid-value"
        assert "nacm:action" in info.value.path
        assert h.service.running_doc() == before
