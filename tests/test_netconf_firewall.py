"""Firewall and SNAT rules over NETCONF: edit-config of /firewall and /snat, and a rule the
datapath cannot take refused with an rpc-error naming the leaf (running unchanged)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import netconfkit as kit
import pytest
from ncclient.operations import RPCError

from appliance.firewall.compile import check

SL = kit.SLUICE_NS
RULE = (f'<firewall xmlns="{SL}"><rule><name>ssh</name><preference>10</preference>'
        "<source-prefix>2001:db8::/64</source-prefix><protocol>tcp</protocol>"
        "<destination-port>22</destination-port><action>reject</action></rule>"
        "<interface><name>eth0</name><default-policy>drop</default-policy></interface>"
        f'</firewall><snat xmlns="{SL}"><rule><name>pods</name><preference>1</preference>'
        "<source-prefix>198.18.64.0/18</source-prefix><address>198.18.0.250</address></rule>"
        "</snat>")  # fmt: skip


@pytest.fixture
def h(tmp_path: Path) -> Iterator[kit.Harness]:
    for harness in kit.harness(tmp_path):
        harness.service.add_validator(check)  # as the daemon registers it
        yield harness


def test_edit_firewall_and_refuse_bad_rule(h: kit.Harness) -> None:
    with h.connect() as m:
        m.edit_config(f"<config>{RULE}</config>", target="running")
        got = m.get_config("running", filter=("subtree", f'<firewall xmlns="{SL}"/>')).data_xml
    assert "<name>ssh</name>" in got and "<default-policy>drop</default-policy>" in got
    doc = h.service.running_doc()
    assert doc["sluice:snat"]["rule"][0]["address"] == "198.18.0.250"
    before = json.dumps(doc, sort_keys=True)
    bad = (f'<firewall xmlns="{SL}"><rule><name>bad</name><preference>5</preference>'
           "<protocol>icmp</protocol><source-port>53</source-port></rule></firewall>")
    with h.connect() as m, pytest.raises(RPCError) as err:
        m.edit_config(f"<config>{bad}</config>", target="running")
    assert err.value.path.strip() == (
        "/sluice:firewall/sluice:rule[sluice:name='bad']/sluice:source-port")
    assert "tcp, udp" in err.value.message  # "ports need protocol tcp, udp or sctp"
    assert json.dumps(h.service.running_doc(), sort_keys=True) == before


def test_protocol_numbers_and_icmp_types_over_netconf(h: kit.Harness) -> None:
    """A protocol by number (the YANG union's uint8) and an ICMP type are taken; an
    icmp-type without protocol icmp, and protocol 256, are refused naming the leaf."""
    ok = (f'<firewall xmlns="{SL}"><rule><name>gre</name><preference>5</preference>'
          "<protocol>47</protocol><action>drop</action></rule>"
          "<rule><name>ra</name><preference>6</preference><protocol>icmp</protocol>"
          "<icmp-type>134</icmp-type><action>drop</action></rule></firewall>")
    with h.connect() as m:
        m.edit_config(f"<config>{ok}</config>", target="running")
    rules = {r["name"]: r for r in h.service.running_doc()["sluice:firewall"]["rule"]}
    assert rules["gre"]["protocol"] == "47" and rules["ra"]["icmp-type"] == 134
    before = json.dumps(h.service.running_doc(), sort_keys=True)
    for body, leaf in (("<protocol>udp</protocol><icmp-type>3</icmp-type>", "icmp-type"),
                       ("<protocol>256</protocol>", "protocol")):  # fmt: skip
        bad = (f'<firewall xmlns="{SL}"><rule><name>bad</name><preference>7</preference>'
               f"{body}</rule></firewall>")
        with h.connect() as m, pytest.raises(RPCError) as err:
            m.edit_config(f"<config>{bad}</config>", target="running")
        assert leaf in (err.value.path or "") + err.value.message, (leaf, err.value.message)
    assert json.dumps(h.service.running_doc(), sort_keys=True) == before
