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
    # The datastore PATCHed (merge) in XML: <data> of RESTCONF's namespace.
    data = (f'<data xmlns="urn:ietf:params:xml:ns:yang:ietf-restconf"><load-balancer '
            f'xmlns="{NS}">{body.decode()}</load-balancer></data>').encode()
    assert req(port, "PATCH", DATA, data, ctype=XML).status == 204
    assert req(port, "GET", f"{LB}/service=rc-xml/port").json() == {"sluice:port": 443}
    bad = req(port, "PATCH", DATA, data.replace(b"<port>443</port>", b"<port>x</port>"),
              ctype=XML)
    assert bad.status == 400 and "port" in bad.json()["ietf-restconf:errors"]["error"][0][
        "error-message"]
    assert req(port, "PATCH", DATA, b"<data/>", ctype=XML).status == 400
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


class Sse:
    """An SSE client on a thread: each event's data (its 'data: ' lines joined) queued."""

    def __init__(self, port: int, path: str) -> None:
        self.events: queue.Queue[str | None] = queue.Queue()
        self.conn = http.client.HTTPConnection(HOST, port, timeout=15)
        self.conn.request("GET", path, headers={"Authorization": f"Bearer {hk.RO_TOKEN}"})
        self.resp = self.conn.getresponse()
        self.status = self.resp.status
        self.comment: queue.Queue[str] = queue.Queue()
        if self.status == 200:
            threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        data: list[str] = []
        try:
            while True:
                line = self.resp.readline().decode()
                if not line:
                    break
                if line.startswith(":"):
                    self.comment.put(line)
                elif line.startswith("data: "):
                    data.append(line[6:].rstrip("\n"))
                elif line == "\n" and data:
                    self.events.put("\n".join(data))
                    data = []
        except (OSError, ValueError, AttributeError):  # the test closed the connection
            pass
        self.events.put(None)  # the stream ended

    def next(self, timeout: float = 10) -> str | None:
        return self.events.get(timeout=timeout)

    def close(self) -> None:
        if self.conn.sock is not None:  # wake the reader now, not at its timeout
            self.conn.sock.shutdown(socket.SHUT_RDWR)
        self.conn.close()


def json_change(text: str) -> dict | None:
    event = json.loads(text)["ietf-restconf:notification"]
    return event.get("ietf-netconf-notifications:netconf-config-change")


def test_event_stream_gets_the_commit(rc: tuple[Daemon, int]) -> None:
    _, port = rc
    sse = Sse(port, "/restconf/streams/NETCONF/json")
    assert sse.status == 200 and sse.resp.getheader("Content-Type") == "text/event-stream"
    try:
        assert sse.comment.get(timeout=10).startswith(":")  # the stream's opening comment
        assert req(port, "POST", LB, {"sluice:service": [svc("rc-sse")]}).status == 201
        while True:
            text = sse.next()
            assert text is not None
            change = json_change(text)
            if change and any("rc-sse" in e["target"] for e in change["edit"]):
                break
        assert change["changed-by"]["username"] == "kube"
        assert {"target": "/sluice:load-balancer/service[name='rc-sse']",
                "operation": "create"} in change["edit"]
        validate_json_notification(text)
    finally:
        sse.close()
        req(port, "DELETE", f"{LB}/service=rc-sse")


def validate_json_notification(text: str) -> None:
    """The notification's content is a notification the served modules define (libyang)."""
    import libyang

    from northbound.netconf.modules import ServedModules

    inner = {k: v for k, v in json.loads(text)["ietf-restconf:notification"].items()
             if k != "eventTime"}
    ServedModules().ctx.parse_op_mem("json", json.dumps(inner), libyang.DataType.NOTIF_YANG)


def test_xml_event_stream(rc: tuple[Daemon, int]) -> None:
    """RFC 8040 6.4 XML encoding: an RFC 5277 <notification> per event, valid against the
    served modules (NETCONF's own builders)."""
    from northbound.netconf.modules import ServedModules

    _, port = rc
    sse = Sse(port, "/restconf/streams/NETCONF/xml")
    assert sse.status == 200
    try:
        assert sse.comment.get(timeout=10).startswith(":")
        assert req(port, "POST", LB, {"sluice:service": [svc("rc-xsse")]}).status == 201
        nc = "urn:ietf:params:xml:ns:netconf:notification:1.0"
        ncn = "urn:ietf:params:xml:ns:yang:ietf-netconf-notifications"
        while True:
            text = sse.next()
            assert text is not None
            root = etree.fromstring(text.encode())
            assert root.tag == f"{{{nc}}}notification" and root.findtext(f"{{{nc}}}eventTime")
            targets = root.xpath("//n:edit/n:target/text()", namespaces={"n": ncn})
            if any("rc-xsse" in t for t in targets):
                break
        assert root.findtext(f".//{{{ncn}}}username") == "kube"
        ServedModules().validate_notification(text)
    finally:
        sse.close()
        req(port, "DELETE", f"{LB}/service=rc-xsse")


def test_replay_from_the_log(rc: tuple[Daemon, int]) -> None:
    """start-time replays the notification log (then replayComplete); with stop-time the
    stream ends after notificationComplete; bad intervals are 400 naming the parameter."""
    from datetime import UTC, datetime, timedelta

    _, port = rc
    t0 = datetime.now(UTC).isoformat().replace("+00:00", "Z")  # after the last test's commits
    for i, name in enumerate(("rc-r1", "rc-r2")):
        assert req(port, "POST", LB, {"sluice:service": [svc(name, 180 + i)]}).status == 201
    t1 = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    assert req(port, "DELETE", f"{LB}/service=rc-r1").status == 204  # after stop-time
    states = req(port, "GET", f"{DATA}/ietf-restconf-monitoring:restconf-state").json()
    (stream,) = states["ietf-restconf-monitoring:restconf-state"]["streams"]["stream"]
    assert stream["replay-support"] is True and stream["replay-log-creation-time"] < t0
    assert [a["encoding"] for a in stream["access"]] == ["json", "xml"]
    for enc in ("json", "xml"):
        sse = Sse(port, f"/restconf/streams/NETCONF/{enc}?start-time={t0}&stop-time={t1}")
        assert sse.status == 200
        try:
            got = []
            while (text := sse.next()) is not None:
                got.append(text)
        finally:
            sse.close()
        if enc == "json":
            changes = [c for c in map(json_change, got) if c]
            assert [e["target"].split("'")[1] for c in changes for e in c["edit"]] == \
                ["rc-r1", "rc-r2"]
            tail = [next(k for k in json.loads(t)["ietf-restconf:notification"]
                         if k != "eventTime") for t in got[-2:]]
            assert tail == ["nc-notifications:replayComplete",
                            "nc-notifications:notificationComplete"]
        else:
            assert sum(b"rc-r1" in t.encode() for t in got) == 1
            assert sum(b"rc-r2" in t.encode() for t in got) == 1
            assert "replayComplete" in got[-2] and "notificationComplete" in got[-1]
    # Replay without stop-time goes on live after replayComplete.
    sse = Sse(port, f"/restconf/streams/NETCONF/json?start-time={t1}")
    try:
        first = sse.next()
        assert first is not None and "rc-r1" in first  # the delete, replayed
        assert "replayComplete" in (sse.next() or "")
        assert req(port, "DELETE", f"{LB}/service=rc-r2").status == 204
        live = sse.next()
        assert live is not None and "rc-r2" in live and "delete" in live
    finally:
        sse.close()
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat().replace("+00:00", "Z")
    for query, words in [(f"start-time={future}", "future"),
                         (f"stop-time={t1}", "needs start-time"),
                         (f"start-time={t1}&stop-time={t0}", "before start-time"),
                         ("start-time=yesterday", "start-time"),
                         ("start-time=2026-11-30T01:00:00", "time zone"),
                         ("filter=/x", "filter")]:  # fmt: skip
        r = req(port, "GET", f"/restconf/streams/NETCONF/json?{query}")
        assert r.status == 400, (query, r.body)
        assert words in r.json()["ietf-restconf:errors"]["error"][0]["error-message"], query
    assert req(port, "GET", "/restconf/streams/NETCONF/yaml").status == 404
    assert req(port, "GET", "/restconf/streams/OTHER/json").status == 404


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


def test_nacm_applies_to_restconf_and_the_loxilb_api(rc: tuple[Daemon, int]) -> None:
    """NACM's rules (RFC 8341, the ones NETCONF enforces) bind RESTCONF and the loxilb API:
    a denied write is 403 naming the node, nothing committed; a denied node is left out of a
    read; a denied notification is not streamed."""
    d, port = rc
    body = {**svc("rc-nacm", 95), "description": "secret plan"}
    assert req(port, "POST", LB, {"sluice:service": [body]}).status == 201
    lx = "lx-tcp-198.19.0.99-80"
    rules = {"rule-list": [
        {"name": "rw", "group": ["read-write"], "rule": [
            {"name": "keep", "module-name": "sluice", "access-operations": "create update delete",
             "path": "/sluice:load-balancer/service[name='rc-nacm']",
             "action": "deny"},
            {"name": "no-lx", "module-name": "sluice", "access-operations": "create",
             "path": f"/sluice:load-balancer/service[name='{lx}']",
             "action": "deny"}]},
        {"name": "ro", "group": ["read-only"], "rule": [
            {"name": "hide", "module-name": "sluice", "access-operations": "read",
             "path": "/sluice:load-balancer/service/description",
             "action": "deny"},
            {"name": "hide-lx", "module-name": "sluice", "access-operations": "read",
             "path": "/sluice:load-balancer/service[name='lx-tcp-198.19.0.98-80']",
             "action": "deny"},
            {"name": "quiet", "module-name": "ietf-netconf-notifications",
             "notification-name": "netconf-config-change", "access-operations": "read",
             "action": "deny"}]},
    ]}  # fmt: skip
    seen = hk.kube_create_body("198.19.0.98", 80, [("198.18.11.1", 8080)], "ns_y:i0")
    assert hk.go_request(HOST, port, "POST", "/netlox/v1/config/loadbalancer", seen
                         ).status == 200  # fmt: skip
    with d.client() as client:
        client.call("config.edit", changes=[{"op": "merge", "path": "/ietf-netconf-acm:nacm",
                                             "value": rules}])
        client.call("config.commit", comment="nacm for the test")
        before = client.call("status")["last-commit"]
    sse = Sse(port, "/restconf/streams/NETCONF/json")  # as the read-only user
    try:
        r = req(port, "PATCH", f"{LB}/service=rc-nacm", {"sluice:service": [
            {"name": "rc-nacm", "description": "changed"}]})
        assert r.status == 403, r.body
        (err,) = r.json()["ietf-restconf:errors"]["error"]
        assert err["error-tag"] == "access-denied" and "rc-nacm" in err["error-path"], err
        lx_body = hk.kube_create_body("198.19.0.99", 80, [("198.18.11.1", 8080)], "ns_x:i0")
        r = hk.go_request(HOST, port, "POST", "/netlox/v1/config/loadbalancer", lx_body)
        assert r.status == 403 and "NACM" in r.json()["result"], r.body
        with d.client() as client:
            assert client.call("status")["last-commit"] == before
        # The loxilb API's lists leave out the services a read rule hides.
        for token, listed in ((hk.RO_TOKEN, []), (hk.RW_TOKEN, ["198.19.0.98"])):
            r = hk.go_request(HOST, port, "GET", "/netlox/v1/config/loadbalancer/all",
                              token=token)
            assert [a["serviceArguments"]["externalIP"] for a in r.json()["lbAttr"]] == \
                listed, r.body
        got = req(port, "GET", f"{LB}/service=rc-nacm?content=config", token=hk.RO_TOKEN)
        assert got.status == 200, got.body
        assert "description" not in got.json()["sluice:service"][0]
        assert got.json()["sluice:service"][0]["port"] == 95
        full = req(port, "GET", f"{LB}/service=rc-nacm", token=hk.RO_TOKEN)  # with state
        assert full.status == 200 and "description" not in full.json()["sluice:service"][0]
        whole = req(port, "GET", DATA, token=hk.RO_TOKEN)
        assert whole.status == 200 and b"secret plan" not in whole.body and b"rc-nacm" in \
            whole.body
        mine = req(port, "GET", f"{LB}/service=rc-nacm?content=config").json()
        assert mine["sluice:service"][0]["description"] == "secret plan"
        # A commit the read-only user may not hear of: nothing on its stream.
        assert req(port, "POST", LB, {"sluice:service": [svc("rc-nacm2", 96)]}).status == 201
        with pytest.raises(queue.Empty):
            sse.next(timeout=1.5)
    finally:
        sse.close()
        with d.client() as client:
            client.call("config.edit", changes=[{"op": "delete",
                                                 "path": "/ietf-netconf-acm:nacm"}])
            client.call("config.commit", comment="no nacm")
        for name in ("rc-nacm", "rc-nacm2", "lx-tcp-198.19.0.98-80"):
            req(port, "DELETE", f"{LB}/service={name}")
