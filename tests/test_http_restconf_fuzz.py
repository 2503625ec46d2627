"""hypothesis fuzzes the RESTCONF door of a running daemon (bounded: a few seconds).

- Requests of any shape (methods, resource identifiers, query parameters, content types,
  bodies from bytes to near-valid services) under {+restconf}/data: never a 5xx, every
  refusal an ietf-restconf:errors (or yang-patch-status) with a tag and a message, and a
  refused write commits nothing.
- A service valid but for one leaf (each leaf of the model's service and endpoint, given a
  value of the wrong type or out of range): 400, the error naming that leaf, nothing
  committed.
- Throughout, the daemon serves the other doors (the loxilb liveness call) and RESTCONF.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from typing import Any

import httpkit as hk
import libyang
import pytest
from daemonkit import Daemon
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from appliance.config.schema import get_schema

HOST = "127.0.0.1"
DATA = "/restconf/data"
LB = f"{DATA}/sluice:load-balancer"
TYPES = ["application/yang-data+json", "application/yang-data+xml",
         "application/yang-patch+json", "application/json", "text/plain", ""]
FUZZ = settings(max_examples=60, deadline=None, derandomize=True,
                suppress_health_check=list(HealthCheck))  # fmt: skip


@pytest.fixture(scope="module")
def rc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Daemon, int]]:
    with hk.http_daemon(tmp_path_factory.mktemp("rcfuzz"), HOST) as (d, port):
        r = send(port, "POST", LB, json.dumps({"sluice:service": [base("fz-keep", 90)]}),
                 TYPES[0])
        assert r.status == 201, r.body
        yield d, port


def send(port: int, method: str, path: str, body: str | bytes | None, ctype: str
         ) -> hk.Reply:  # fmt: skip
    headers = {"Authorization": f"Bearer {hk.RW_TOKEN}"}
    if ctype:
        headers["Content-Type"] = ctype
    data = body.encode() if isinstance(body, str) else body
    conn = http.client.HTTPConnection(HOST, port, timeout=10)
    try:
        conn.request(method, path, body=data, headers=headers)
        r = conn.getresponse()
        return hk.Reply(r.status, {k.lower(): v for k, v in r.getheaders()}, r.read())
    finally:
        conn.close()


def base(name: str, port: int = 80) -> dict[str, Any]:
    return {"name": name, "vip": "198.19.0.30", "port": port,
            "endpoint": [{"address": "198.18.11.1", "port": 8080}]}


def commits(d: Daemon) -> int:
    with d.client() as client:
        return int(client.call("status")["last-commit"] or 0)


def still_serving(port: int) -> None:
    assert hk.go_request(HOST, port, "GET", "/netlox/v1").status < 500
    assert send(port, "GET", f"{LB}/service=fz-keep/port", None, "").status == 200


def errors_of(r: hk.Reply) -> list[dict[str, Any]]:
    """The errors of a refusal, JSON or XML; asserts the RFC 8040 shape."""
    if r.headers.get("content-type", "").endswith("xml"):
        from lxml import etree

        root = etree.fromstring(r.body)
        ns = {"r": "urn:ietf:params:xml:ns:yang:ietf-restconf"}
        errs = [{etree.QName(c).localname: c.text for c in e}
                for e in root.xpath("//r:error", namespaces=ns)]
    else:
        doc = r.json()
        if "ietf-yang-patch:yang-patch-status" in doc:
            status = doc["ietf-yang-patch:yang-patch-status"]
            errs = list(status.get("errors", {}).get("error", []))
            for edit in status.get("edit-status", {}).get("edit", []):
                errs += edit["errors"]["error"]
        else:
            errs = doc["ietf-restconf:errors"]["error"]
    assert errs, r.body
    for e in errs:
        assert e.get("error-tag") and e.get("error-message"), e
    return errs


# -- any request ------------------------------------------------------------------------------
SEGMENTS = st.sampled_from([
    "sluice:load-balancer", "service=fz-keep", "service=fz-new", "service=", "service=a,b",
    "endpoint=198.18.11.1,8080", "endpoint=198.18.11.9,1", "endpoint=x", "port", "vip",
    "health-probe", "weight", "nope", "other:thing", "%ZZ", "..", "service=%2F", "=", ",",
    "sluice:", ":x", "%C3%A9t%C3%A9",
])  # fmt: skip
QUERY = st.lists(st.tuples(
    st.sampled_from(["depth", "fields", "content", "with-defaults", "insert", "point",
                     "start-time", "x", "filter"]),
    st.sampled_from(["1", "0", "unbounded", "99999", "port;vip", "endpoint(", ")", "all",
                     "config", "trim", "report-all-tagged", "first", "before", "nope", "",
                     "/sluice:load-balancer/service=fz-keep/endpoint=198.18.11.1,8080"]),
), max_size=3)  # fmt: skip
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.sampled_from(["name", "port", "vip", "endpoint", "sluice:service", "weight",
                         "ietf-yang-patch:yang-patch", "edit", "patch-id", "operation",
                         "target", "value", "address", "x"]), inner, max_size=4),
    max_leaves=12)  # fmt: skip


@st.composite
def bodies(draw: st.DrawFn) -> str | bytes | None:
    kind = draw(st.sampled_from(["none", "bytes", "json", "service", "xml"]))
    if kind == "none":
        return None
    if kind == "bytes":
        return draw(st.binary(max_size=64))
    if kind == "json":
        return json.dumps(draw(JSON_VALUES))
    if kind == "xml":
        return draw(st.sampled_from([
            "<service xmlns='urn:sluice:yang:sluice'><name>fz-x</name><port>0</port></service>",
            "<service><name>fz-x</name></service>", "<a", "<?xml version='1.0'?><x/>",
            "<!DOCTYPE x [<!ENTITY e SYSTEM 'file:///etc/passwd'>]><x>&e;</x>"]))
    svc = base("fz-new", 91)
    svc[draw(st.sampled_from(["port", "vip", "mode", "endpoint", "x"]))] = draw(JSON_VALUES)
    return json.dumps({"sluice:service": [svc]})


@FUZZ
@given(method=st.sampled_from(["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]),
       segments=st.lists(SEGMENTS, max_size=4), query=QUERY, ctype=st.sampled_from(TYPES),
       body=bodies())  # fmt: skip
def test_any_request_is_answered_and_refusals_change_nothing(
        rc: tuple[Daemon, int], method: str, segments: list[str],
        query: list[tuple[str, str]], ctype: str, body: str | bytes | None) -> None:  # fmt: skip
    d, port = rc
    path = "/".join([LB if segments[:1] != ["sluice:load-balancer"] else DATA, *segments])
    if query:
        path += "?" + "&".join(f"{k}={v}" for k, v in query)
    before = commits(d)
    r = send(port, method, path, body, ctype)
    assert r.status < 500, (method, path, body, r.status, r.body)
    if r.status >= 400:
        if method != "HEAD":
            errors_of(r)
        assert commits(d) == before, (method, path, body, r.body)
    if r.status < 300 and method in ("POST", "PUT", "PATCH", "DELETE"):
        # Accepted by chance: put the kept service back so later examples see it.
        send(port, "PUT", f"{LB}/service=fz-keep",
             json.dumps({"sluice:service": [base("fz-keep", 90)]}), TYPES[0])
    still_serving(port)


# -- one bad leaf ------------------------------------------------------------------------------
def service_leaves() -> list[tuple[tuple[str, ...], Any]]:
    """(path inside a service, the leaf's type) for every config leaf of service and of
    endpoint (the list key `name` aside), from the model."""
    schema = get_schema()
    lb = next(n for n in schema.module.children() if n.name() == "load-balancer")
    svc = next(n for n in lb.children() if n.name() == "service")
    out: list[tuple[tuple[str, ...], Any]] = []

    def walk(node: Any, at: tuple[str, ...]) -> None:
        for child in node.children():
            if child.nodetype() in (libyang.SNode.CHOICE, libyang.SNode.CASE):
                walk(child, at)
            elif child.config_false():
                continue
            elif isinstance(child, libyang.SLeaf):
                if (*at, child.name()) != ("name",):
                    out.append(((*at, child.name()), child.type()))
            elif isinstance(child, libyang.SList | libyang.SContainer):
                walk(child, (*at, child.name()))

    walk(svc, ())
    return out


LEAVES = service_leaves()


def bad_values(ytype: Any) -> list[Any]:
    base_type = ytype.base()
    common: list[Any] = [{"x": 1}, [[1]]]
    if base_type in (libyang.Type.UINT8, libyang.Type.UINT16, libyang.Type.UINT32,
                     libyang.Type.INT8, libyang.Type.INT16, libyang.Type.INT32):
        return [*common, -2**33, 2**40, "abc", 1.5, True]
    if base_type == libyang.Type.BOOL:
        return [*common, "maybe", 2]
    if base_type == libyang.Type.ENUM:
        return [*common, "no-such-value", 3]
    if base_type == libyang.Type.UNION:  # the address types
        return [*common, "999.1.1.1", "not-an-address", "198.18.0.1%eth0"]
    return common


@FUZZ
@given(data=st.data())
def test_one_bad_leaf_is_named_and_nothing_changes(rc: tuple[Daemon, int],
                                                   data: st.DataObject) -> None:
    d, port = rc
    path, ytype = data.draw(st.sampled_from(LEAVES))
    bad = data.draw(st.sampled_from(bad_values(ytype)))
    svc: dict[str, Any] = base("fz-bad", 92)
    node: Any = svc
    for step in path[:-1]:
        node = node["endpoint"][0] if step == "endpoint" else node.setdefault(step, {})
    node[path[-1]] = bad
    before = commits(d)
    r = send(port, "POST", LB, json.dumps({"sluice:service": [svc]}), TYPES[0])
    assert r.status == 400, (path, bad, r.status, r.body)
    (err, *_) = errors_of(r)
    said = f"{err.get('error-path', '')} {err['error-message']}"
    assert path[-1] in said, (path, bad, err)
    assert commits(d) == before
    still_serving(port)
