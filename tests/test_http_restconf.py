"""RESTCONF on a running daemon (datapath off): create, read, patch, replace and delete a
service in JSON and XML, query parameters, ETag/If-Match, errors with the path, roles,
YANG Patch, and the event stream receiving a commit notification."""

from __future__ import annotations

import http.client
import json
import queue
import socket
import threading
from collections.abc import Iterator

import httpkit as hk
import pytest
from daemonkit import Daemon
from lxml import etree

HOST = "127.0.0.1"
DATA = "/restconf/data"
LB = f"{DATA}/sluice:load-balancer"
JSON = "application/yang-data+json"
XML = "application/yang-data+xml"
NS = "urn:sluice:yang:sluice"


@pytest.fixture(scope="module")
def rc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Daemon, int]]:
    with hk.http_daemon(tmp_path_factory.mktemp("restconf"), HOST) as (d, port):
        yield d, port


def req(port: int, method: str, path: str, body: object = None, ctype: str = JSON,
        accept: str = JSON, token: str = hk.RW_TOKEN, headers: dict | None = None
        ) -> hk.Reply:  # fmt: skip
    data = None
    if body is not None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
    h = {"Authorization": f"Bearer {token}", "Accept": accept, **(headers or {})}
    if data is not None:
        h["Content-Type"] = ctype
    conn = http.client.HTTPConnection(HOST, port, timeout=10)
    try:
        conn.request(method, path, body=data, headers=h)
        r = conn.getresponse()
        return hk.Reply(r.status, {k.lower(): v for k, v in r.getheaders()}, r.read())
    finally:
        conn.close()


def svc(name: str, port: int = 80) -> dict:
    return {"name": name, "vip": "198.19.0.20", "port": port,
            "endpoint": [{"address": "198.18.11.1", "port": 8080}]}


def test_discovery(rc: tuple[Daemon, int]) -> None:
    _, port = rc
    meta = req(port, "GET", "/.well-known/host-meta")
    assert meta.status == 200 and b"rel='restconf' href='/restconf'" in meta.body
    root = req(port, "GET", "/restconf").json()["ietf-restconf:restconf"]
    assert root["yang-library-version"] == "2019-01-04"
    assert req(port, "GET", "/restconf/yang-library-version").json() == {
        "ietf-restconf:yang-library-version": "2019-01-04"}
    assert req(port, "GET", "/restconf/operations").json() == {"ietf-restconf:operations": {}}
    opts = req(port, "OPTIONS", LB)
    assert opts.status == 200 and "PATCH" in opts.headers["allow"]
    assert "yang-patch" in opts.headers["accept-patch"]
    lib = req(port, "GET", f"{DATA}/ietf-yang-library:yang-library")
    assert lib.status == 200 and b"sluice" in lib.body
    streams = req(port, "GET", f"{DATA}/ietf-restconf-monitoring:restconf-state").json()
    (stream,) = streams["ietf-restconf-monitoring:restconf-state"]["streams"]["stream"]
    assert stream["access"][0]["location"].endswith("/restconf/streams/NETCONF/json")


def test_json_create_read_patch_put_delete(rc: tuple[Daemon, int]) -> None:
    d, port = rc
    r = req(port, "POST", LB, {"sluice:service": [svc("rc-web")]})
    assert r.status == 201, r.body
    assert r.headers["location"].endswith(f"{LB}/service=rc-web")
    got = req(port, "GET", f"{LB}/service=rc-web")
    assert got.status == 200 and got.headers["content-type"] == JSON
    assert got.json()["sluice:service"][0]["port"] == 80
    etag = got.headers["etag"]
    assert got.headers["last-modified"]
    # Creating it again: 409 data-exists.
    again = req(port, "POST", LB, {"sluice:service": [svc("rc-web")]})
    assert again.status == 409
    assert again.json()["ietf-restconf:errors"]["error"][0]["error-tag"] == "data-exists"
    # PATCH with the current ETag merges; with a stale one it is refused, nothing changes.
    r = req(port, "PATCH", f"{LB}/service=rc-web", {"sluice:service": [{"name": "rc-web",
            "description": "patched"}]}, headers={"If-Match": etag})  # fmt: skip
    assert r.status == 204, r.body
    assert r.headers["etag"] != etag
    stale = req(port, "PATCH", f"{LB}/service=rc-web", {"sluice:service": [
        {"name": "rc-web", "description": "lost update"}]}, headers={"If-Match": etag})
    assert stale.status == 412
    leaf = req(port, "GET", f"{LB}/service=rc-web/description").json()
    assert leaf == {"sluice:description": "patched"}
    # If-None-Match with the current ETag: 304.
    cur = req(port, "GET", f"{LB}/service=rc-web").headers["etag"]
    assert req(port, "GET", f"{LB}/service=rc-web", headers={"If-None-Match": cur}).status == 304
    # PUT: 201 when new, 204 when replaced.
    assert req(port, "PUT", f"{LB}/service=rc-put", {"sluice:service": [svc("rc-put", 81)]}
               ).status == 201
    assert req(port, "PUT", f"{LB}/service=rc-put", {"sluice:service": [svc("rc-put", 82)]}
               ).status == 204
    assert req(port, "GET", f"{LB}/service=rc-put/port").json() == {"sluice:port": 82}
    # Query parameters.
    shallow = req(port, "GET", f"{LB}/service=rc-put?depth=1").json()["sluice:service"][0]
    assert shallow == {"name": "rc-put"}
    picked = req(port, "GET", f"{LB}/service=rc-put?fields=port;endpoint(address)").json()
    assert picked["sluice:service"][0] == {"name": "rc-put", "port": 82,
                                           "endpoint": [{"address": "198.18.11.1",
                                                         "port": 8080}]}
    explicit = req(port, "GET", f"{LB}/service=rc-put?content=config").json()
    assert "admin-state" not in explicit["sluice:service"][0]
    full = req(port, "GET", f"{LB}/service=rc-put?content=config&with-defaults=report-all")
    assert full.json()["sluice:service"][0]["admin-state"] == "enabled"
    trim = req(port, "GET", f"{LB}/service=rc-put?content=config&with-defaults=trim").json()
    assert "admin-state" not in trim["sluice:service"][0]
    assert req(port, "GET", f"{LB}/service=rc-put?depth=0").status == 400
    assert req(port, "GET", f"{LB}/service=rc-put?bogus=1").status == 400
    # The commit is the user's, with the resource in its comment.
    with d.client() as client:
        last = client.call("config.history", limit=1)[0]
    assert last["user"] == "kube" and "rc-put" in last["comment"]
    for name in ("rc-web", "rc-put"):
        assert req(port, "DELETE", f"{LB}/service={name}").status == 204
    assert req(port, "GET", f"{LB}/service=rc-web").status == 404
    assert req(port, "DELETE", f"{LB}/service=rc-web").status == 404


def test_xml_create_read_replace_delete(rc: tuple[Daemon, int]) -> None:
    _, port = rc
    body = (f'<service xmlns="{NS}"><name>rc-xml</name><vip>198.19.0.21</vip>'
            "<port>443</port><endpoint><address>198.18.11.1</address><port>8443</port>"
            "</endpoint></service>").encode()
    r = req(port, "POST", LB, body, ctype=XML, accept=XML)
    assert r.status == 201, r.body
    got = req(port, "GET", f"{LB}/service=rc-xml", accept=XML)
    assert got.status == 200 and got.headers["content-type"] == XML, got.body
    root = etree.fromstring(got.body)
    assert etree.QName(root).localname == "service"
    assert root.findtext(f"{{{NS}}}port") == "443"
    replaced = body.replace(b"<port>443</port>", b"<port>444</port>")
    assert req(port, "PUT", f"{LB}/service=rc-xml", replaced, ctype=XML).status == 204
    assert req(port, "GET", f"{LB}/service=rc-xml/port").json() == {"sluice:port": 444}
    whole = req(port, "GET", DATA + "?content=config", accept=XML)
    assert whole.status == 200 and b"rc-xml" in whole.body
    assert etree.QName(etree.fromstring(whole.body)).localname == "data"
    assert req(port, "DELETE", f"{LB}/service=rc-xml").status == 204


def test_errors_name_the_path_and_change_nothing(rc: tuple[Daemon, int]) -> None:
    d, port = rc
    with d.client() as client:
        before = client.call("status")["last-commit"]
    bad = svc("rc-bad")
    bad["endpoint"][0]["address"] = "2001:db8::1"  # not the VIP's family
    r = req(port, "POST", LB, {"sluice:service": [bad]})
    assert r.status == 400, r.body
    (err,) = r.json()["ietf-restconf:errors"]["error"]
    assert "service[name='rc-bad']" in err["error-path"], err
    r = req(port, "PUT", f"{LB}/service=rc-bad", {"sluice:service": [{**svc("rc-bad"),
                                                                     "port": 70000}]})
    assert r.status == 400 and "error-path" in r.json()["ietf-restconf:errors"]["error"][0]
    assert req(port, "GET", f"{LB}/nonsense").status == 400
    assert req(port, "GET", f"{DATA}/other:thing").status == 400
    assert req(port, "PUT", f"{LB}/service=rc-bad", {"sluice:service": [svc("other")]}
               ).status == 400  # key in the body differs from the URI's
    assert req(port, "POST", LB, b"{not json").status == 400
    xml_err = req(port, "POST", LB, b"<service", ctype=XML, accept=XML)
    assert xml_err.status == 400 and b"errors" in xml_err.body
    ro = req(port, "POST", LB, {"sluice:service": [svc("rc-ro")]}, token=hk.RO_TOKEN)
    assert ro.status == 403 and "ietf-restconf:errors" in ro.json()
    assert req(port, "GET", LB, token="wrong").status == 401
    with d.client() as client:
        assert client.call("status")["last-commit"] == before


def test_yang_patch_is_one_commit(rc: tuple[Daemon, int]) -> None:
    d, port = rc
    patch = {"ietf-yang-patch:yang-patch": {"patch-id": "two", "edit": [
        {"edit-id": "1", "operation": "create", "target": "/service=rc-p1",
         "value": {"sluice:service": [svc("rc-p1", 91)]}},
        {"edit-id": "2", "operation": "create", "target": "/service=rc-p2",
         "value": {"sluice:service": [svc("rc-p2", 92)]}},
    ]}}  # fmt: skip
    with d.client() as client:
        before = client.call("status")["last-commit"]
    r = req(port, "PATCH", LB, patch, ctype="application/yang-patch+json")
    assert r.status == 200, r.body
    assert r.json()["ietf-yang-patch:yang-patch-status"]["ok"] == [None]
    with d.client() as client:
        assert client.call("status")["last-commit"] == before + 1
    # A patch with one bad edit changes nothing.
    patch["ietf-yang-patch:yang-patch"]["edit"] = [
        {"edit-id": "1", "operation": "delete", "target": "/service=rc-p1"},
        {"edit-id": "2", "operation": "merge", "target": "/service=rc-p2/port",
         "value": {"sluice:port": 0}}]  # fmt: skip
    r = req(port, "PATCH", LB, patch, ctype="application/yang-patch+json")
    assert r.status == 400, r.body
    # The error is edit 2's (RFC 8072 edit-status), its path the port.
    (failed,) = r.json()["ietf-yang-patch:yang-patch-status"]["edit-status"]["edit"]
    assert failed["edit-id"] == "2"
    assert failed["errors"]["error"][0]["error-path"].endswith("service[name='rc-p2']/port")
    assert req(port, "GET", f"{LB}/service=rc-p1").status == 200
    for name in ("rc-p1", "rc-p2"):
        assert req(port, "DELETE", f"{LB}/service={name}").status == 204


def test_event_stream_gets_the_commit(rc: tuple[Daemon, int]) -> None:
    _, port = rc
    lines: queue.Queue[str] = queue.Queue()
    conn = http.client.HTTPConnection(HOST, port, timeout=15)
    conn.request("GET", "/restconf/streams/NETCONF/json",
                 headers={"Authorization": f"Bearer {hk.RO_TOKEN}"})
    resp = conn.getresponse()
    assert resp.status == 200 and resp.getheader("Content-Type") == "text/event-stream"

    def reader() -> None:
        try:
            while True:
                line = resp.readline()
                if not line:
                    return
                lines.put(line.decode())
        except (OSError, ValueError, AttributeError):  # the test closed the connection
            return

    threading.Thread(target=reader, daemon=True).start()
    assert lines.get(timeout=10).startswith(":")  # the stream's opening comment
    assert req(port, "POST", LB, {"sluice:service": [svc("rc-sse")]}).status == 201
    try:
        while True:
            line = lines.get(timeout=10)
            if line.startswith("data: "):
                event = json.loads(line[6:])
                change = event["ietf-restconf:notification"][
                    "ietf-netconf-notifications:netconf-config-change"]
                if any("rc-sse" in e["target"] for e in change["edit"]):
                    break
        assert change["changed-by"]["username"] == "kube"
        assert {"target": "/sluice:load-balancer/service[name='rc-sse']",
                "operation": "create"} in change["edit"]
    finally:
        if conn.sock is not None:  # wake the reader now, not at its timeout
            conn.sock.shutdown(socket.SHUT_RDWR)
        conn.close()
        req(port, "DELETE", f"{LB}/service=rc-sse")


def test_insert_point_and_yang_patch_insert_move(rc: tuple[Daemon, int]) -> None:
    """endpoint is the model's ordered-by-user list: POST/PUT place entries with insert/
    point (RFC 8040 4.8.5/4.8.6), YANG Patch insert/move (RFC 8072); refusals 400 naming
    the field, nothing committed."""
    d, port = rc
    svc_uri = f"{LB}/service=rc-ord"
    assert req(port, "POST", LB, {"sluice:service": [svc("rc-ord")]}).status == 201

    def ep(n: int) -> dict:
        return {"sluice:endpoint": [{"address": f"198.18.11.{n}", "port": 8080}]}

    def order() -> list[int]:
        got = req(port, "GET", f"{svc_uri}?content=config&fields=endpoint(address)").json()
        return [int(e["address"].rsplit(".", 1)[1])
                for e in got["sluice:service"][0]["endpoint"]]

    assert req(port, "POST", f"{svc_uri}?insert=first", ep(2)).status == 201
    assert order() == [2, 1]
    point = "/sluice:load-balancer/service=rc-ord/endpoint=198.18.11.2,8080"
    r = req(port, "POST", f"{svc_uri}?insert=after&point={point}", ep(3))
    assert r.status == 201, r.body
    assert order() == [2, 3, 1]
    r = req(port, "PUT", f"{svc_uri}/endpoint=198.18.11.1,8080?insert=before&point={point}",
            ep(1))
    assert r.status == 204, r.body
    assert order() == [1, 2, 3]
    patch = {"ietf-yang-patch:yang-patch": {"patch-id": "order", "edit": [
        {"edit-id": "a", "operation": "insert", "target": "/endpoint=198.18.11.4,8080",
         "where": "before", "point": "/endpoint=198.18.11.2,8080", "value": ep(4)},
        {"edit-id": "b", "operation": "move", "target": "/endpoint=198.18.11.3,8080",
         "where": "first"},
    ]}}  # fmt: skip
    r = req(port, "PATCH", svc_uri, patch, ctype="application/yang-patch+json")
    assert r.status == 200, r.body
    assert order() == [3, 1, 4, 2]
    with d.client() as client:
        before = client.call("status")["last-commit"]
    # Refusals: each 400 with the field named, nothing committed.
    bad = [
        ("POST", f"{LB}?insert=first", {"sluice:service": [svc("rc-ord2")]}, "ordered-by-user"),
        ("POST", f"{svc_uri}?insert=sideways", ep(5), "insert"),
        ("POST", f"{svc_uri}?insert=before", ep(5), "needs point"),
        ("POST", f"{svc_uri}?point={point}", ep(5), "point is only used"),
        ("POST", f"{svc_uri}?insert=after&point=/sluice:load-balancer/service=rc-ord/"
         "endpoint=198.18.11.9,8080", ep(5), "point entry"),
        ("POST", f"{svc_uri}?insert=after&point=/sluice:load-balancer/service=rc-web/"
         "endpoint=198.18.11.1,8080", ep(5), "same endpoint list"),
        ("POST", f"{svc_uri}?insert=after&point=/sluice:nothing", ep(5), "point"),
        ("PATCH", f"{svc_uri}?insert=first", ep(1), "insert"),
    ]
    for method, uri, body, words in bad:
        r = req(port, method, uri, body)
        assert r.status == 400, (uri, r.body)
        (err,) = r.json()["ietf-restconf:errors"]["error"]
        assert words in err["error-message"], (uri, err)
        if method != "PATCH":
            assert err["error-path"], err
    missing = req(port, "POST", f"{svc_uri}?insert=after&point=/sluice:load-balancer/service="
                  "rc-ord/endpoint=198.18.11.9,8080", ep(5)).json()
    (err,) = missing["ietf-restconf:errors"]["error"]
    assert (err["error-tag"], err["error-app-tag"]) == ("bad-attribute", "missing-instance")
    assert "endpoint[address='198.18.11.5'][port='8080']" in err["error-path"]
    # YANG Patch: a bad edit is reported under its edit-id (RFC 8072 edit-status).
    for edit, words in [
        ({"edit-id": "x", "operation": "move", "target": "/endpoint=198.18.11.9,8080",
          "where": "last"}, "does not exist"),
        ({"edit-id": "x", "operation": "move", "target": "/port", "where": "first"},
         "ordered-by-user"),
        ({"edit-id": "x", "operation": "insert", "target": "/endpoint=198.18.11.6,8080",
          "where": "after", "value": ep(6)}, "point"),
        ({"edit-id": "x", "operation": "merge", "target": "/endpoint=198.18.11.1,8080",
          "where": "first", "value": ep(1)}, "only go with insert and move"),
    ]:  # fmt: skip
        patch["ietf-yang-patch:yang-patch"]["edit"] = [edit]
        r = req(port, "PATCH", svc_uri, patch, ctype="application/yang-patch+json")
        assert r.status in (400, 404), r.body
        (status,) = r.json()["ietf-yang-patch:yang-patch-status"]["edit-status"]["edit"]
        assert status["edit-id"] == "x"
        assert words in status["errors"]["error"][0]["error-message"], status
    assert order() == [3, 1, 4, 2]
    with d.client() as client:
        assert client.call("status")["last-commit"] == before
    assert req(port, "DELETE", svc_uri).status == 204


def test_with_defaults_report_all_tagged(rc: tuple[Daemon, int]) -> None:
    """RFC 8040 4.8.9: leaves at their schema default are tagged — the
    ietf-netconf-with-defaults:default annotation in JSON, wd:default="true" in XML —
    and a value set by the user (even to the default) is not tagged unless it equals it."""
    _, port = rc
    uri = f"{LB}/service=rc-wd"
    assert req(port, "POST", LB, {"sluice:service": [{**svc("rc-wd"),
                                                      "admin-state": "disabled"}]}).status == 201
    try:
        q = "?content=config&with-defaults=report-all-tagged"
        (entry,) = req(port, "GET", uri + q).json()["sluice:service"]
        tagged = {"ietf-netconf-with-defaults:default": True}
        assert entry["advertise"] is True and entry["@advertise"] == tagged
        assert entry["admin-state"] == "disabled" and "@admin-state" not in entry
        assert "@port" not in entry and "@name" not in entry
        ep = entry["endpoint"][0]
        assert ep["@weight"] == tagged, ep
        leaf = req(port, "GET", f"{uri}/advertise{q}").json()
        assert leaf == {"sluice:advertise": True, "@sluice:advertise": tagged}
        xml = req(port, "GET", uri + q, accept=XML)
        assert xml.status == 200, xml.body
        root = etree.fromstring(xml.body)
        wd = "{urn:ietf:params:xml:ns:netconf:default:1.0}default"
        assert root.find(f"{{{NS}}}advertise").get(wd) == "true"
        assert root.find(f"{{{NS}}}admin-state").get(wd) is None
        assert root.find(f"{{{NS}}}port").get(wd) is None
        whole = req(port, "GET", DATA + q, accept=XML)
        assert whole.status == 200 and b'wd:default="true"' in whole.body
        data = req(port, "GET", DATA + q).json()["ietf-restconf:data"]
        (mine,) = [s for s in data["sluice:load-balancer"]["service"] if s["name"] == "rc-wd"]
        assert mine["@advertise"] == tagged
        # The other modes are unchanged, and a bad mode names the parameter.
        assert "@advertise" not in req(port, "GET", uri + "?with-defaults=report-all"
                                       ).json()["sluice:service"][0]
        bad = req(port, "GET", uri + "?with-defaults=everything")
        assert bad.status == 400
        assert "with-defaults" in bad.json()["ietf-restconf:errors"]["error"][0]["error-message"]
    finally:
        assert req(port, "DELETE", uri).status == 204
