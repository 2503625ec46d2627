"""NETCONF building blocks without SSH: framing, XML → changes, filters, password hashes."""

from __future__ import annotations

import pytest
from lxml import etree

from appliance.config.passwords import hash_password, verify_password
from appliance.config.schema import get_schema
from northbound.netconf.edit import EditTranslator
from northbound.netconf.errors import RpcError, xpath_of
from northbound.netconf.framing import TOO_BIG, Deframer, FramingError, encode
from northbound.netconf.output import json_to_xml, subtree_filter
from northbound.netconf.schema_index import SchemaIndex

SL = "urn:sluice:yang:sluice"
XC = "urn:ietf:params:xml:ns:netconf:base:1.0"


# -- framing ----------------------------------------------------------------------------------
def test_eom_framing_split_anywhere() -> None:
    stream = encode(b"<a/>", False) + encode(b"<b/>", False)
    for cut in range(len(stream)):
        d = Deframer()
        got = list(d.feed(stream[:cut])) + list(d.feed(stream[cut:]))
        assert got == [b"<a/>", b"<b/>"], cut


def test_chunked_framing_multi_chunk_and_split() -> None:
    stream = b"\n#3\n<a/\n#1\n>\n##\n" + encode(b"<bb/>", True)
    for cut in range(len(stream)):
        d = Deframer()
        d.switch_to_chunked()
        got = list(d.feed(stream[:cut])) + list(d.feed(stream[cut:]))
        assert got == [b"<a/>", b"<bb/>"], cut


@pytest.mark.parametrize("bad", [b"<rpc/>]]>]]>", b"\n#0\n", b"\n#01\nx\n##\n", b"\n#x\n"])
def test_chunked_framing_errors(bad: bytes) -> None:
    d = Deframer()
    d.switch_to_chunked()
    with pytest.raises(FramingError):
        list(d.feed(bad))


@pytest.mark.parametrize("chunked", [False, True])
def test_oversized_message_is_skipped_then_framing_continues(chunked: bool) -> None:
    d = Deframer(max_message=10)
    if chunked:
        d.switch_to_chunked()
    got = list(d.feed(encode(b"x" * 50, chunked) + encode(b"<ok/>", chunked)))
    assert got == [TOO_BIG, b"<ok/>"]


# -- XML → changes ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tr() -> EditTranslator:
    idx = SchemaIndex(get_schema())
    return EditTranslator(idx.top, idx.namespace, idx.module_name)


def cfg(body: str) -> etree._Element:
    return etree.fromstring(f'<config xmlns:xc="{XC}">{body}</config>')


def test_merge_is_pushed_down_to_list_entries(tr: EditTranslator) -> None:
    changes = tr.changes(cfg(
        f'<load-balancer xmlns="{SL}"><service><name>a</name><port>80</port>'
        "<nat64>true</nat64><allowed-source>198.18.0.0/16</allowed-source></service>"
        "<service><name>b</name></service></load-balancer>"
        f'<management xmlns="{SL}"><netconf><port>8300</port></netconf></management>'))
    assert changes == [
        {"op": "merge", "path": "/sluice:load-balancer/service[name='a']",
         "value": {"name": "a", "port": 80, "nat64": True, "allowed-source": ["198.18.0.0/16"]}},
        {"op": "merge", "path": "/sluice:load-balancer/service[name='b']",
         "value": {"name": "b"}},
        {"op": "merge", "path": "/sluice:management/netconf/port", "value": 8300},
    ]


def test_nested_operations_become_separate_changes_in_order(tr: EditTranslator) -> None:
    changes = tr.changes(cfg(
        f'<load-balancer xmlns="{SL}"><service xc:operation="replace"><name>a</name>'
        "<port>81</port><endpoint xc:operation=\"delete\"><address>198.18.1.1</address>"
        "<port>80</port></endpoint><allowed-source xc:operation=\"remove\">10.0.0.0/8"
        "</allowed-source></service></load-balancer>"))
    assert changes == [
        {"op": "replace", "path": "/sluice:load-balancer/service[name='a']",
         "value": {"name": "a", "port": 81}},
        {"op": "delete", "path": "/sluice:load-balancer/service[name='a']"
                                 "/endpoint[address='198.18.1.1'][port='80']"},
        {"op": "remove", "path": "/sluice:load-balancer/service[name='a']"
                                 "/allowed-source[.='10.0.0.0/8']"},
    ]


def test_default_operation_none_only_explicit(tr: EditTranslator) -> None:
    changes = tr.changes(cfg(
        f'<load-balancer xmlns="{SL}"><service><name>a</name><port>99</port>'
        '<description xc:operation="create">d</description></service></load-balancer>'),
        "none")
    assert changes == [{"op": "create",
                        "path": "/sluice:load-balancer/service[name='a']/description",
                        "value": "d"}]


@pytest.mark.parametrize(("body", "tag"), [
    (f'<load-balancer xmlns="{SL}"><service><port>1</port></service></load-balancer>',
     "missing-element"),
    (f'<load-balancer xmlns="{SL}"><wat/></load-balancer>', "unknown-element"),
    ('<load-balancer xmlns="urn:x"/>', "unknown-namespace"),
    (f'<load-balancer xmlns="{SL}"><service><name>a</name><port>x</port></service>'
     "</load-balancer>", "invalid-value"),
    (f'<system xmlns="{SL}" xc:operation="zap"/>', "bad-attribute"),
])
def test_translation_errors(tr: EditTranslator, body: str, tag: str) -> None:
    with pytest.raises(RpcError) as info:
        tr.changes(cfg(body))
    assert info.value.tag == tag


def test_error_path_is_prefixed_xpath() -> None:
    assert xpath_of("/sluice:load-balancer/service[name='web']/endpoint[address='a'][port='1']"
                    "/weight") == ("/sluice:load-balancer/sluice:service[sluice:name='web']"
                                   "/sluice:endpoint[sluice:address='a'][sluice:port='1']"
                                   "/sluice:weight")


# -- output and filters ------------------------------------------------------------------------
def test_json_to_xml_keys_first_masks_dropped_and_subtree_filter() -> None:
    idx = SchemaIndex(get_schema())
    data = etree.Element("data")
    json_to_xml(data, {
        "sluice:load-balancer": {"service": [
            {"vip": "198.18.0.1", "name": "a", "nat64": False},
            {"name": "b", "vip": "198.18.0.2"},
        ]},
        "sluice:management": {"user": [{"name": "u", "password-hash": "********"}]},
    }, idx.top, SL)
    text = etree.tostring(data).decode()
    assert "<service><name>a</name><vip>198.18.0.1</vip><nat64>false</nat64>" in text
    assert "password-hash" not in text
    flt = etree.fromstring(f'<filter><load-balancer xmlns="{SL}"><service><name>b</name>'
                           "</service></load-balancer></filter>")
    subtree_filter(data, flt)
    assert [e.text for e in data.iter(f"{{{SL}}}name")] == ["b"]
    assert data.find(f".//{{{SL}}}vip").text == "198.18.0.2"
    subtree_filter(data, etree.fromstring("<filter/>"))
    assert len(data) == 0  # an empty filter selects nothing


# -- passwords ---------------------------------------------------------------------------------
def test_password_hash_round_trip_and_malformed() -> None:
    h = hash_password("pw", ln=4)
    assert h.startswith("$scrypt$ln=4,r=8,p=1$")
    assert verify_password("pw", h)
    assert not verify_password("pW", h)
    assert not verify_password("pw", None)
    assert not verify_password("pw", "$scrypt$ln=99,r=8,p=1$AAAA$AAAA")
    assert not verify_password("pw", "plain")
    assert hash_password("pw", ln=4) != h  # salted
