"""Bad input over NETCONF: each gets the right rpc-error (RFC 6241 appendix A), the session
survives where the RFC says it does, and running is unchanged."""

from __future__ import annotations

import asyncio
import json
import string
from collections.abc import Iterator
from pathlib import Path

import netconfkit as kit
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree
from ncclient.operations import RPCError

XC = "urn:ietf:params:xml:ns:netconf:base:1.0"
SL = kit.SLUICE_NS
BASE = "urn:ietf:params:xml:ns:netconf:base:1.0"
E = {"nc": BASE}

GOOD = (f'<load-balancer xmlns="{SL}"><service><name>web</name><vip>198.18.0.10</vip>'
        "<port>80</port><endpoint><address>198.18.1.1</address><port>8080</port></endpoint>"
        "</service></load-balancer>")


@pytest.fixture
def h(tmp_path: Path) -> Iterator[kit.Harness]:
    yield from kit.harness(tmp_path, max_message=64 * 1024)


def snapshot(h: kit.Harness) -> str:
    return json.dumps(h.service.running_doc(), sort_keys=True)


def seeded(h: kit.Harness) -> str:
    with h.connect() as m:
        m.edit_config(f"<config>{GOOD}</config>", target="running")
    return snapshot(h)


def edit_error(h: kit.Harness, body: str, target: str = "candidate") -> RPCError:
    """Send an edit-config that must fail; check the session is still usable after."""
    with h.connect() as m:
        with pytest.raises(RPCError) as info:
            m.edit_config(f"<config>{body}</config>", target=target)
        assert info.value.severity == "error"
        m.get_config("running")  # the session survives
        # test-then-set: the candidate is unchanged too
        assert m.get_config("candidate").data_xml == m.get_config("running").data_xml
    return info.value


@pytest.mark.parametrize(
    ("body", "tag", "path_end", "bad_element"),
    [
        # unknown element inside a service
        (GOOD.replace("<port>80</port>", "<port>80</port><colour>red</colour>"),
         "unknown-element", "service[sluice:name='web']", "colour"),
        # wrong namespace on the top element
        (GOOD.replace(SL, "urn:example:other"), "unknown-namespace", None, "load-balancer"),
        # value out of range (uint16 port)
        (GOOD.replace("<port>80</port>", "<port>70000</port>"), "invalid-value",
         "sluice:service[sluice:name='web']/sluice:port", None),
        # a service entry without its key
        (GOOD.replace("<name>web</name>", ""), "missing-element", None, "name"),
        # not an integer at all
        (GOOD.replace("<port>80</port>", "<port>eighty</port>"), "invalid-value", "port", None),
        # state data cannot be configured
        (GOOD.replace("<port>80</port>", "<port>80</port><state><endpoints-up>1</endpoints-up>"
                      "</state>"), "invalid-value", "state", None),
    ],
    ids=["unknown-element", "wrong-namespace", "out-of-range", "missing-key", "not-integer",
         "state-data"],
)
def test_bad_edit_config(h: kit.Harness, body: str, tag: str, path_end: str | None,
                         bad_element: str | None) -> None:
    before = snapshot(h)
    err = edit_error(h, body)
    assert err.tag == tag, err.message
    assert err.type == "application"
    if path_end:
        assert err.path and err.path.strip().endswith(path_end), err.path
    if bad_element:
        assert err.info and f"<bad-element>{bad_element}</bad-element>" in err.info.replace(
            "nc:", "")
    assert snapshot(h) == before


def test_delete_of_missing_is_data_missing(h: kit.Harness) -> None:
    before = seeded(h)
    body = (f'<load-balancer xmlns="{SL}" xmlns:xc="{XC}"><service xc:operation="delete">'
            "<name>nope</name></service></load-balancer>")
    err = edit_error(h, body)
    assert err.tag == "data-missing"
    assert "service[sluice:name='nope']" in err.path
    # remove of something missing is fine (RFC 6241: silently ignored)
    with h.connect() as m:
        m.edit_config("<config>" + body.replace('"delete"', '"remove"') + "</config>",
                      target="candidate")
    assert snapshot(h) == before


def test_create_of_existing_is_data_exists_and_bad_operation(h: kit.Harness) -> None:
    before = seeded(h)
    created = GOOD.replace("<service>", f'<service xmlns:xc="{XC}" xc:operation="create">')
    assert edit_error(h, created).tag == "data-exists"
    bad_op = GOOD.replace("<service>", f'<service xmlns:xc="{XC}" xc:operation="frobnicate">')
    err = edit_error(h, bad_op)
    assert err.tag == "bad-attribute" and err.type == "application"
    assert snapshot(h) == before


def test_validation_error_on_running_target_changes_nothing(h: kit.Harness) -> None:
    before = seeded(h)
    # full-nat without snat-address: a 'must' in the model, checked by libyang on commit
    body = GOOD.replace("<port>80</port>", "<port>80</port><mode>full-nat</mode>")
    err = edit_error(h, body, target="running")
    # RFC 7950 15.4: a failed must is operation-failed with the module's error-app-tag
    assert err.tag == "operation-failed"
    assert "snat-address" in err.message
    assert _app_tag(err) == "snat-address-required"
    assert snapshot(h) == before


def _app_tag(err: RPCError) -> str | None:
    found = err.xml.xpath("//nc:error-app-tag/text()", namespaces=E)
    return found[0] if found else None


@pytest.mark.parametrize(
    ("body", "path"),
    [
        (GOOD.replace("</service>", "</service>" + GOOD.split(">", 1)[1].split(
            "</load-balancer>")[0]), "/sluice:load-balancer/sluice:service[sluice:name='web']"),
        (GOOD.replace("</endpoint>", "</endpoint><endpoint><address>198.18.1.1</address>"
                      "<port>8080</port></endpoint>"),
         "/sluice:load-balancer/sluice:service[sluice:name='web']/sluice:endpoint"
         "[sluice:address='198.18.1.1'][sluice:port='8080']"),
    ],
    ids=["service", "endpoint"],
)
@pytest.mark.parametrize("op", ["merge", "replace"])
def test_duplicate_keys_in_one_edit_are_refused(h: kit.Harness, body: str, path: str,
                                                op: str) -> None:
    """Two entries with one key: refused naming the duplicate (not 'the last one wins')."""
    before = seeded(h)
    if op == "replace":
        body = body.replace("<service>", f'<service xmlns:xc="{XC}" xc:operation="replace">')
    err = edit_error(h, body)
    assert err.tag == "invalid-value" and "duplicate" in err.message
    assert err.path.strip() == path
    assert snapshot(h) == before


def test_libyang_error_path_has_the_root(h: kit.Harness) -> None:
    """libyang names a duplicate found in a stored value from the list's parent: the
    config service puts the /sluice:load-balancer root back."""
    err = h.service.schema.field_error(
        "Duplicate instance of \"endpoint\".: Data path: /sluice:service[name='w']/endpoint"
        "[address='198.18.1.1'][port='80']")
    assert err.path.startswith("/sluice:load-balancer/service[name='w']/endpoint")


def test_huge_values_are_not_echoed(h: kit.Harness) -> None:
    before = seeded(h)
    huge = "x" * 50_000  # under the harness's 64 kB message limit
    for body in (GOOD.replace("<port>80</port>", f"<port>80</port><description>{huge}"
                              "</description>"),
                 GOOD.replace("<port>80</port>", f"<port>{huge}</port>"),
                 GOOD.replace("198.18.0.10", huge)):
        async def go(body: str = body) -> bytes:
            async with kit.RawClient(h) as c:
                c.send(rpc(f"<edit-config><target><candidate/></target><config>{body}"
                           "</config></edit-config>"))
                return await c.recv()
        reply = asyncio.run(go())
        assert len(reply) < 4096, len(reply)
        assert err_fields(parse_reply(reply))["error-tag"] == "invalid-value"
    assert snapshot(h) == before


def test_edit_running_while_candidate_is_locked_is_in_use(h: kit.Harness) -> None:
    before = seeded(h)
    with h.connect() as a, h.connect("ops2") as b:
        a.lock("candidate")
        with pytest.raises(RPCError) as info:
            b.edit_config(f"<config>{GOOD.replace('80<', '81<')}</config>", target="running")
        assert info.value.tag == "in-use"
        assert a.session_id in info.value.info
    assert snapshot(h) == before


def test_error_options(h: kit.Harness) -> None:
    before = seeded(h)
    two = (f'<load-balancer xmlns="{SL}"><service><name>web</name><port>81</port></service>'
           "<service><name>x</name><port>99999</port></service></load-balancer>")
    with h.connect() as m:
        # rollback-on-error: nothing applied
        with pytest.raises(RPCError):
            m.edit_config(f"<config>{two}</config>", target="running",
                          error_option="rollback-on-error")
        assert snapshot(h) == before
        # continue-on-error: the good half lands in the candidate, the bad half is reported
        half = (f'<load-balancer xmlns="{SL}" xmlns:xc="{XC}"><service><name>web</name>'
                "<port>81</port></service><service xc:operation=\"delete\"><name>x</name>"
                "</service></load-balancer>")
        with pytest.raises(RPCError) as info:
            m.edit_config(f"<config>{half}</config>", target="candidate",
                          error_option="continue-on-error", test_option="set")
        assert info.value.tag == "data-missing"
        cand = m.get_config("candidate").data
        assert cand.xpath("//sl:service[sl:name='web']/sl:port/text()",
                          namespaces={"sl": SL}) == ["81"]
        m.discard_changes()
    assert snapshot(h) == before


# -- raw protocol errors ------------------------------------------------------------------------
def rpc(body: str, mid: str = "1") -> bytes:
    return f'<rpc xmlns="{BASE}" message-id="{mid}">{body}</rpc>'.encode()


def parse_reply(data: bytes) -> etree._Element:
    return etree.fromstring(data)


def err_fields(reply: etree._Element) -> dict[str, str]:
    err = reply.find("nc:rpc-error", E)
    assert err is not None, etree.tostring(reply)
    return {etree.QName(c).localname: (c.text or "").strip() for c in err}


def test_malformed_xml_keeps_the_session(h: kit.Harness) -> None:
    before = seeded(h)

    async def go() -> None:
        async with kit.RawClient(h) as c:
            c.send(b"<rpc message-id='1'><get-config><source><running/></source></rpc>")
            f = err_fields(parse_reply(await c.recv()))
            assert f["error-tag"] == "malformed-message" and f["error-type"] == "rpc"
            c.send(rpc("<get-config><source><running/></source></get-config>", "2"))
            reply = parse_reply(await c.recv())
            assert reply.get("message-id") == "2" and reply.find("nc:data", E) is not None
        async with kit.RawClient(h, chunked=False) as c:
            # base:1.0 peers do not know malformed-message (RFC 6241 appendix A)
            c.send(b"<<<not xml")
            f = err_fields(parse_reply(await c.recv()))
            assert f["error-tag"] == "operation-failed"
            c.send(rpc("<get/>", "3"))
            assert parse_reply(await c.recv()).get("message-id") == "3"

    asyncio.run(go())
    assert snapshot(h) == before


def test_protocol_level_errors(h: kit.Harness) -> None:
    async def go() -> None:
        async with kit.RawClient(h) as c:
            c.send(f'<rpc xmlns="{BASE}"><get/></rpc>'.encode())
            f = err_fields(parse_reply(await c.recv()))
            assert f["error-tag"] == "missing-attribute"
            c.send(rpc("<frobnicate/>", "5"))
            reply = parse_reply(await c.recv())
            assert reply.get("message-id") == "5"
            assert err_fields(reply)["error-tag"] == "operation-not-supported"
            # attributes of <rpc> come back on <rpc-reply>
            c.send(f'<rpc xmlns="{BASE}" message-id="6" xmlns:x="urn:x" x:tag="t"><get/></rpc>'
                   .encode())
            reply = parse_reply(await c.recv())
            assert reply.get("{urn:x}tag") == "t"
            c.send(rpc("<get-config><source><url>file:///etc/passwd</url></source>"
                       "</get-config>", "7"))
            assert err_fields(parse_reply(await c.recv()))["error-tag"] == \
                "operation-not-supported"

    asyncio.run(go())


def test_oversized_message_is_too_big_and_session_survives(h: kit.Harness) -> None:
    before = seeded(h)
    filler = "<description>" + "x" * 200 + "</description>"
    huge = GOOD.replace("<port>80</port>", "<port>80</port>" + filler * 400)

    async def go() -> None:
        async with kit.RawClient(h) as c:
            c.send(rpc(f"<edit-config><target><candidate/></target><config>{huge}</config>"
                       "</edit-config>"))
            f = err_fields(parse_reply(await c.recv()))
            assert f["error-tag"] == "too-big"
            c.send(rpc("<get/>", "9"))
            assert parse_reply(await c.recv()).get("message-id") == "9"

    asyncio.run(go())
    assert snapshot(h) == before


def test_wrong_framing_ends_the_session(h: kit.Harness) -> None:
    before = seeded(h)

    async def go() -> None:
        async with kit.RawClient(h) as c:
            # base:1.1 was negotiated; an end-of-message framed rpc is a framing error
            c.send_raw(rpc("<get/>") + b"]]>]]>")
            f = err_fields(parse_reply(await c.recv()))
            assert f["error-tag"] == "malformed-message"
            assert await c.closed()

    asyncio.run(go())
    assert snapshot(h) == before


def test_no_hello_ends_the_session(h: kit.Harness) -> None:
    async def go() -> None:
        async with kit.RawClient(h, chunked=False):
            pass
        # a peer that sends an rpc instead of its hello is dropped
        c2 = kit.RawClient(h, chunked=False)
        c2.HELLO_10 = rpc("<get/>")
        async with c2:
            assert await c2.closed()

    asyncio.run(go())


# -- fuzz ------------------------------------------------------------------------------------
NAMES = ["load-balancer", "service", "name", "vip", "port", "endpoint", "address", "weight",
         "mode", "protocol", "health-probe", "state", "management", "user", "role", "bogus",
         "allowed-source", "datapath", "interface", "system", "hostname"]
TEXT = st.one_of(
    st.sampled_from(["web", "80", "198.18.0.1", "2001:db8::1", "full-nat", "-1", "99999",
                     "true", "", "tcp", "x" * 70, "read-write"]),
    st.text(alphabet=string.printable, max_size=12),
)
OPS = st.sampled_from([None, None, None, "merge", "replace", "create", "delete", "remove",
                       "none", "bad"])


def _node(depth: int) -> st.SearchStrategy[etree._Element]:
    def build(name: str, ns: str, op: str | None, text: str, kids: list) -> etree._Element:
        el = etree.Element(f"{{{ns}}}{name}")
        if op:
            el.set(f"{{{XC}}}operation", op)
        if kids:
            el.extend(kids)
        else:
            el.text = "".join(ch for ch in text if ch.isprintable() or ch in "\t\n")
        return el

    kids = st.just([]) if depth == 0 else st.lists(_node(depth - 1), max_size=4)
    return st.builds(build, st.sampled_from(NAMES), st.sampled_from([SL, SL, SL, "urn:x"]),
                     OPS, TEXT, kids)


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(tree=st.lists(_node(3), min_size=1, max_size=3),
       default_op=st.sampled_from([None, "merge", "replace", "none"]))
def test_fuzz_edit_config_never_crashes(fuzz: tuple, tree: list, default_op: str | None) -> None:
    _, m = fuzz
    config = etree.Element("config")
    config.extend(tree)
    try:
        m.edit_config(etree.tostring(config).decode(), target="candidate",
                      default_operation=default_op)
    except RPCError as exc:
        assert not (exc.message or "").startswith("internal error"), exc.message
        assert exc.tag in ("unknown-element", "unknown-namespace", "invalid-value",
                           "missing-element", "bad-element", "bad-attribute", "data-missing",
                           "data-exists", "operation-failed", "in-use"), exc.tag
    m.discard_changes()


@pytest.fixture(scope="module")
def fuzz(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple]:
    gen = kit.harness(tmp_path_factory.mktemp("fuzz"))
    h = next(gen)
    m = h.connect()
    before = snapshot(h)
    yield h, m
    assert m.connected  # the one session survived every payload
    m.get_config("running")
    m.close_session()
    assert snapshot(h) == before
    gen.close()


@pytest.mark.parametrize(("attrs", "attribute"), [
    ('yang:insert="sideways"', "insert"),
    ("yang:key=\"[address='198.18.1.1'][port='8080']\"", "key"),
    ('yang:insert="before"', "key"),
    ('yang:insert="first" yang:value="x"', "value"),
])  # fmt: skip
def test_yang_insert_errors_name_the_attribute(h: kit.Harness, attrs: str,
                                               attribute: str) -> None:
    """RFC 7950 7.8.6 placement given wrong: bad-attribute/missing-attribute naming the
    attribute, nothing changed (tests/test_netconf.py places entries)."""
    before = seeded(h)
    body = GOOD.replace("<endpoint>", '<endpoint xmlns:yang="urn:ietf:params:xml:ns:yang:1" '
                        f"{attrs}><address>198.18.1.2</address><port>8080</port></endpoint>"
                        "<endpoint>")
    err = edit_error(h, body)
    assert err.tag in ("bad-attribute", "missing-attribute")
    assert f"<bad-attribute>{attribute}</bad-attribute>" in err.info.replace("nc:", "")
    assert "endpoint" in err.path
    assert snapshot(h) == before
