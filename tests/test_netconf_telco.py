"""NETCONF accepts and shows SCTP multihoming (secondary addresses) and the gtp-teid
algorithm, and refuses their misuse naming the field."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import netconfkit as kit
import pytest
from lxml import etree
from ncclient.operations import RPCError

NS = {"sl": kit.SLUICE_NS}

MH = (
    f'<config><load-balancer xmlns="{kit.SLUICE_NS}"><service><name>{{name}}</name>'
    "<vip>198.19.0.10</vip><protocol>{proto}</protocol><port>36412</port>"
    "<mode>full-nat</mode><snat-address>198.19.0.100</snat-address>"
    "<secondary-vip>198.19.0.11</secondary-vip><secondary-vip>198.19.0.12</secondary-vip>"
    "<secondary-snat-address>198.19.0.101</secondary-snat-address>"
    "<secondary-snat-address>198.19.0.102</secondary-snat-address>"
    "<endpoint><address>198.18.1.1</address><port>36412</port></endpoint>"
    "</service></load-balancer></config>"
)
N3 = (
    f'<config><load-balancer xmlns="{kit.SLUICE_NS}"><service><name>n3</name>'
    "<vip>198.19.0.20</vip><protocol>{proto}</protocol><port>2152</port>"
    "<algorithm>gtp-teid</algorithm>"
    "<endpoint><address>198.18.1.1</address><port>2152</port></endpoint>"
    "</service></load-balancer></config>"
)


@pytest.fixture
def h(tmp_path: Path) -> Iterator[kit.Harness]:
    yield from kit.harness(tmp_path)


def test_secondary_addresses_and_gtp_teid_over_netconf(h: kit.Harness) -> None:
    with h.connect() as m:
        m.edit_config(MH.replace("{name}", "ngap").format(proto="sctp"), target="running")
        m.edit_config(N3.format(proto="udp"), target="running")
        data = etree.fromstring(m.get_config("running").data_xml.encode())
        svc = data.find(".//sl:service[sl:name='ngap']", NS)
        assert [e.text for e in svc.findall("sl:secondary-vip", NS)] == [
            "198.19.0.11", "198.19.0.12"]  # fmt: skip
        assert [e.text for e in svc.findall("sl:secondary-snat-address", NS)] == [
            "198.19.0.101", "198.19.0.102"]  # fmt: skip
        assert data.find(".//sl:service[sl:name='n3']/sl:algorithm", NS).text == "gtp-teid"
        before = m.get_config("running").data_xml
        for body, leaf in ((MH.replace("{name}", "bad").format(proto="tcp"), "secondary-vip"),
                           (N3.format(proto="tcp").replace("n3<", "n3b<")
                            .replace("198.19.0.20", "198.19.0.21"), "algorithm")):  # fmt: skip
            with pytest.raises(RPCError) as info:
                m.edit_config(body, target="running")
            assert leaf in (info.value.path or "") + str(info.value), info.value
        assert m.get_config("running").data_xml == before
