"""What the NETCONF server sends is what its advertised modules define: <get> replies and
notifications validated by libyang against the served modules (not the ones the server
was written with), get-schema of every module, yang-library 1.1, with-defaults modes."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import netconfkit as kit
import pytest
from lxml import etree
from ncclient.xml_ import to_ele

from appliance import events
from northbound.netconf.modules import ServedModules

NS = {"sl": kit.SLUICE_NS}
WD = "urn:ietf:params:xml:ns:netconf:default:1.0"
SERVICE = (f'<config><load-balancer xmlns="{kit.SLUICE_NS}"><service><name>web</name>'
           "<vip>198.18.0.10</vip><port>80</port><mode>default</mode>"
           "<endpoint><address>198.18.1.1</address><port>8080</port></endpoint>"
           "</service></load-balancer></config>")


def state() -> dict:
    return {
        "sluice:load-balancer": {"service": [
            {"name": "web", "state": {"oper-status": "up", "endpoints-up": 1, "packets": "12",
                                      "probe": "http"},  # not in the model: left out
             "endpoint": [{"address": "198.18.1.1", "port": 8080,
                           "state": {"health": "up", "probe": {"kind": "http"}}}]},
            {"name": "gone", "state": {"oper-status": "down"}}]},
        "sluice:no-such-top": {"x": 1},
    }


@pytest.fixture(scope="module")
def served() -> ServedModules:
    return ServedModules()


@pytest.fixture
def h(tmp_path: Path) -> Iterator[kit.Harness]:
    bus = events.EventBus()
    yield from kit.harness(tmp_path, state_source=state, event_bus=bus)


def children_xml(data: etree._Element) -> str:
    return "".join(etree.tostring(c).decode() for c in data)


def test_get_reply_is_valid_against_the_advertised_modules(h: kit.Harness,
                                                           served: ServedModules) -> None:
    with h.connect() as m:
        m.edit_config(SERVICE, target="running")
        data = m.get().data
        # yang-library, netconf-state, config and state: all of it parses, strictly
        served.validate_data(children_xml(data))
        assert data.xpath("//sl:service[sl:name='web']/sl:state/sl:oper-status/text()",
                          namespaces=NS) == ["up"]
        assert "probe" not in etree.tostring(data).decode().replace("health-probe", "")
        # the check can fail: a node no module defines is refused
        bad = children_xml(data).replace("<oper-status>", "<probe>x</probe><oper-status>", 1)
        with pytest.raises(Exception, match="probe"):
            served.validate_data(bad)
        for ds in ("running", "candidate", "startup"):
            served.validate_data(children_xml(m.get_config(ds).data))


def test_schemas_and_yang_library(h: kit.Harness, served: ServedModules) -> None:
    with h.connect() as m:
        caps = list(m.server_capabilities)
        (yl,) = [c for c in caps if c.startswith(
            "urn:ietf:params:netconf:capability:yang-library:1.1")]
        content_id = re.search(r"content-id=([^&]+)", yl).group(1)
        assert content_id and "revision=2019-01-04" in yl
        data = m.get(filter=("subtree", '<yang-library xmlns="urn:ietf:params:xml:ns:yang:'
                             'ietf-yang-library"/>')).data
        assert data.xpath("//*[local-name()='content-id']/text()") == [content_id]
        for name in ("sluice", "sluice-events", "ietf-netconf-monitoring",
                     "ietf-netconf-notifications", "ietf-netconf", "ietf-netconf-acm",
                     "ietf-netconf-with-defaults", "ietf-yang-library"):
            text = m.get_schema(name).data
            assert re.search(rf"^module {name} \{{", text, re.M), name
            assert any(f"?module={name}&" in c for c in caps), name


def test_event_bus_events_are_notifications_of_the_model(h: kit.Harness,
                                                          served: ServedModules) -> None:
    bus = h.server.event_bus
    with h.connect() as m:
        m.create_subscription()
        bus.publish({"type": "no-definition", "x": 1})  # not sent: nothing defines it
        bus.publish({"type": "endpoint-state", "service": "web", "address": "198.18.1.1",
                     "port": 8080, "old": "up", "new": "down", "error": "timeout",
                     "time": "2026-11-29T10:00:00.000Z", "extra": "dropped"})
        bus.publish({"type": "alarm", "state": "raised", "name": "datapath",
                     "severity": "critical", "text": "gone", "since": "2026-11-29T10:00:00Z"})
        bus.publish({"type": "bgp-neighbor", "neighbor": "198.18.7.1", "old": "established",
                     "new": "down", "time": "2026-11-29T10:00:01Z"})
        bus.publish({"type": "ha-role", "role": "master", "instance": "front",
                     "instance-role": "master", "previous": "backup",
                     "time": "2026-11-29T10:00:02Z"})
        got = []
        for _ in range(4):
            n = m.take_notification(timeout=10)
            assert n is not None
            served.validate_notification(n.notification_xml)
            got.append(etree.QName(to_ele(n.notification_xml)[1]).localname)
        assert got == ["endpoint-state", "alarm", "bgp-neighbor", "ha-role"]
        assert "dropped" not in n.notification_xml


@pytest.mark.parametrize("ds", ["running", "candidate", "startup"])
def test_with_defaults_modes_on_every_datastore(h: kit.Harness, ds: str) -> None:
    with h.connect() as m:
        m.edit_config(SERVICE, target="running")
        m.copy_config(source="running", target="startup")

        def read(mode: str | None) -> etree._Element:
            return m.get_config(ds, with_defaults=mode).data if mode else m.get_config(ds).data

        def alg(data: etree._Element) -> list[str]:  # mode: set to its default value
            return data.xpath("//sl:service/sl:mode/text()", namespaces=NS)

        def proto(data: etree._Element) -> list[etree._Element]:
            return data.xpath("//sl:service/sl:protocol", namespaces=NS)

        explicit, trim = read(None), read("trim")
        assert alg(explicit) == ["default"] and not proto(explicit)  # as set
        assert alg(trim) == [] and not proto(trim)  # "default" is the default
        full = read("report-all")
        assert alg(full) == ["default"] and [p.text for p in proto(full)] == ["tcp"]
        assert not full.xpath("//*[@wd:default]", namespaces={"wd": WD})
        tagged = read("report-all-tagged")
        (p,) = proto(tagged)
        assert p.get(f"{{{WD}}}default") == "true"
        vip = tagged.xpath("//sl:service/sl:vip", namespaces=NS)[0]
        assert vip.get(f"{{{WD}}}default") is None


def test_netconf_state_lists_startup_only_when_advertised(h: kit.Harness) -> None:
    def datastores(m) -> list[str]:  # type: ignore[no-untyped-def]
        return m.get().data.xpath("//*[local-name()='datastore']/*[local-name()='name']"
                                  "/text()")

    with h.connect() as m:
        assert datastores(m) == ["running", "candidate"]
        m.edit_config(f'<config><system xmlns="{kit.SLUICE_NS}"><boot-from-startup>true'
                      "</boot-from-startup></system></config>", target="running")
        assert datastores(m) == ["running", "candidate", "startup"]
