"""The HTTP door's loxilb API against a real `sluice run` (datapath off): kube-loxilb's
requests replayed byte for byte, errors in loxilb's envelope, auth and roles, and a
running config that rejected requests leave as it was."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpkit as hk
import pytest
from daemonkit import Daemon

HOST = "127.0.0.1"
LB = "/netlox/v1/config/loadbalancer"
VIP = "198.19.0.10"
EPS = [("198.18.11.1", 31436), ("198.18.12.1", 31436)]
NAME = "default_web:llb-inst0"


@pytest.fixture(scope="module")
def door(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Daemon, int]]:
    with hk.http_daemon(tmp_path_factory.mktemp("http"), HOST) as (d, port):
        yield d, port


def call(port: int, method: str, path: str, body: bytes | None = None,
         token: str | None = hk.RW_TOKEN) -> hk.Reply:  # fmt: skip
    return hk.go_request(HOST, port, method, path, body, token)


def ask(d: Daemon, method: str, **params: object) -> object:
    with d.client() as client:
        return client.call(method, **params)


def running(d: Daemon) -> str:
    return json.dumps(ask(d, "config.get", path="/"), sort_keys=True)


def test_kube_loxilb_contract(door: tuple[Daemon, int]) -> None:
    d, port = door
    # Liveness: any answer; this one is 200.
    assert call(port, "GET", "/netlox/v1").status == 200
    create = hk.kube_create_body(VIP, 80, EPS, NAME)
    r = call(port, "POST", LB, create)
    assert (r.status, r.body, r.headers["content-type"]) == (
        200, b'{"result": "Success"}', "application/json")
    assert json.loads(r.body) == {"result": "Success"}
    # The same rule again: an error whose text contains "exist" (kube-loxilb: success).
    again = call(port, "POST", LB, create)
    assert again.status != 200 and "exist" in again.json()["message"]
    assert set(again.json()) == {"code", "message", "result"} and again.json()["code"] == 409
    # kube-loxilb's client makes its error from "result": the whole message, with "exist".
    assert again.json()["result"] == again.json()["message"]

    listing = call(port, "GET", f"{LB}/all", b"")
    assert listing.status == 200 and listing.headers["content-type"] == "application/json"
    (rule,) = listing.json()["lbAttr"]
    args = rule["serviceArguments"]
    assert (args["externalIP"], args["port"], args["protocol"], args["name"]) == (
        VIP, 80, "tcp", NAME)
    assert (args["mode"], args["sel"], args["bgp"], args["monitor"], args["managed"]) == (
        2, 0, True, True, True)
    assert args["inactiveTimeOut"] == 1800 and args["probetype"] == "tcp"
    assert [(e["endpointIP"], e["targetPort"], e["weight"]) for e in rule["endpoints"]] == [
        (a, p, 1) for a, p in EPS]
    assert all(e["state"] in ("active", "inactive") and e["counter"] == "0:0"
               for e in rule["endpoints"])
    # In Sluice it is one service, in one-arm mode (full-NAT to the balancer's address).
    (svc,) = d.cli_json("lb", "list")
    assert svc["name"] == "lx-tcp-198.19.0.10-80" and svc["mode"] == "one-arm"
    # Attributed to the API user, with the rule name in the comment.
    last = ask(d, "config.history", limit=1)[0]
    assert last["user"] == "kube" and NAME in last["comment"], last

    # oper 1 attaches endpoints, oper 2 detaches them.
    attach = create.replace(b'"name":"', b'"oper":1,"name":"').replace(
        b"198.18.12.1", b"198.18.13.1")
    assert call(port, "POST", LB, attach).json() == {"result": "Success"}
    eps = {e["endpointIP"] for e in call(port, "GET", f"{LB}/all").json()["lbAttr"][0][
        "endpoints"]}
    assert eps == {"198.18.11.1", "198.18.12.1", "198.18.13.1"}
    detach = attach.replace(b'"oper":1', b'"oper":2')
    assert call(port, "POST", LB, detach).json() == {"result": "Success"}
    eps = {e["endpointIP"] for e in call(port, "GET", f"{LB}/all").json()["lbAttr"][0][
        "endpoints"]}
    assert eps == {"198.18.12.1"}

    # Delete by key, with the body and query kube-loxilb sends.
    path = f"{LB}/externalipaddress/{VIP}/port/80/protocol/tcp?bgp=true&block=0"
    r = call(port, "DELETE", path, create)
    assert (r.status, r.json()) == (200, {"result": "Success"})
    gone = call(port, "DELETE", path, create)
    assert gone.status == 404 and gone.json()["code"] == 404
    assert call(port, "GET", f"{LB}/all").json() == {"lbAttr": []}

    # Port range, then the portmax delete variant; name variant; DELETE all.
    ranged = hk.kube_create_body(VIP, 8000, EPS, "ns_range:llb-inst0").replace(
        b'"port":8000,', b'"port":8000,"portMax":8010,')
    assert call(port, "POST", LB, ranged).status == 200
    assert call(port, "GET", f"{LB}/all").json()["lbAttr"][0]["serviceArguments"][
        "portMax"] == 8010
    r = call(port, "DELETE", f"{LB}/externalipaddress/{VIP}/port/8000/portmax/8010/protocol/tcp")
    assert r.status == 200
    assert call(port, "POST", LB, hk.kube_create_body(VIP, 81, EPS, "ns_a:llb-inst0")).status == 200
    assert call(port, "POST", LB, hk.kube_create_body(VIP, 82, EPS, "ns_b:llb-inst0")).status == 200
    assert call(port, "DELETE", f"{LB}/name/ns_a:llb-inst0").status == 200
    names = [r["serviceArguments"]["name"] for r in call(port, "GET", f"{LB}/all").json()["lbAttr"]]
    assert names == ["ns_b:llb-inst0"]
    assert call(port, "DELETE", f"{LB}/all").json() == {"result": "Success"}
    assert call(port, "GET", f"{LB}/all").json() == {"lbAttr": []}


def test_cistate_and_bgp_are_stored(door: tuple[Daemon, int]) -> None:
    d, port = door
    body = b'{"instance":"llb-inst0","state":"MASTER","vip":"0.0.0.0"}'
    assert call(port, "POST", "/netlox/v1/config/cistate", body).status == 200
    got = call(port, "GET", "/netlox/v1/config/cistate/all").json()
    assert got == {"Attr": [{"instance": "llb-inst0", "state": "MASTER", "vip": "0.0.0.0",
                             "sync": 0}]}
    g = b'{"localAs":64512,"routerId":"198.18.0.254","setNextHopSelf":true,"listenPort":179}'
    assert call(port, "POST", "/netlox/v1/config/bgp/global", g).status == 200
    n = b'{"ipAddress":"198.18.0.1","remoteAs":64513,"remotePort":179,"setMultiHop":false}'
    assert call(port, "POST", "/netlox/v1/config/bgp/neigh", n).status == 200
    assert "exist" in call(port, "POST", "/netlox/v1/config/bgp/neigh", n).json()["message"]
    (nei,) = call(port, "GET", "/netlox/v1/config/bgp/neigh/all").json()["bgpNeiAttr"]
    assert (nei["ipAddress"], nei["remoteAs"]) == ("198.18.0.1", 64513)
    # BGP lands in the appliance's own BGP section; cistate in /sluice:loxilb.
    bgp = ask(d, "config.get", path="/sluice:bgp")
    assert (bgp["local-as"], bgp["router-id"]) == (64512, "198.18.0.254")
    assert bgp["neighbor"] == [{"address": "198.18.0.1", "remote-as": 64513, "port": 179}]
    assert ask(d, "config.get", path="/sluice:loxilb")["cistate"][0]["state"] == "MASTER"
    bad = b'{"localAs":64512,"routerId":"198.18.0.254","listenPort":1791}'
    r = call(port, "POST", "/netlox/v1/config/bgp/global", bad)
    assert r.status == 400 and "listenPort" in r.json()["message"]
    r = call(port, "DELETE", "/netlox/v1/config/bgp/neigh/198.18.0.1?remoteAs=64513", b"{}")
    assert r.status == 200
    assert call(port, "GET", "/netlox/v1/config/bgp/neigh/all").json() == {"bgpNeiAttr": []}
    for path in ("/netlox/v1/version", "/netlox/v1/config/conntrack/all",
                 "/netlox/v1/config/endpoint/all"):
        r = call(port, "GET", path)
        assert r.status == 200 and r.headers["content-type"] == "application/json", path


@pytest.mark.parametrize(("patch", "field"), [
    ((b'"sel":0', b'"sel":5'), "sel"),
    ((b'"mode":2', b'"mode":4'), "mode"),
    ((b'"externalIP":"198.19.0.10"', b'"externalIP":"198.19.0.999"'), "externalIP"),
    ((b'"port":80', b'"port":"80"'), "port"),
    ((b'"targetPort":31436', b'"targetPort":70000'), "targetPort"),
    ((b'"block":0', b'"block":3'), "block"),
    ((b'"secondaryIPs":[]', b'"secondaryIPs":[{"secondaryIP":"198.19.0.11"}]'), "secondaryIPs"),
    ((b'"serviceArguments":{', b'"serviceArguments":7,"x":{'), "serviceArguments"),
])  # fmt: skip
def test_bad_requests_name_the_field_and_change_nothing(
    door: tuple[Daemon, int], patch: tuple[bytes, bytes], field: str
) -> None:
    d, port = door
    before = running(d)
    body = hk.kube_create_body(VIP, 80, EPS, NAME).replace(*patch)
    r = call(port, "POST", LB, body)
    assert r.status == 400 and r.headers["content-type"] == "application/json", r.body
    err = r.json()
    assert err["code"] == 400 and field in err["message"], err
    assert field in err["result"], err  # what kube-loxilb logs
    assert running(d) == before
    assert call(port, "GET", "/netlox/v1").status == 200  # still serving


def test_model_errors_come_back_with_the_path(door: tuple[Daemon, int]) -> None:
    d, port = door
    before = running(d)
    # An IPv6 endpoint behind an IPv4 VIP: refused by the model's must, path named.
    body = hk.kube_create_body(VIP, 80, [("2001:db8::1", 80)], NAME)
    r = call(port, "POST", LB, body)
    assert r.status == 400 and "endpoint" in r.json()["message"], r.json()
    assert running(d) == before


def test_auth_and_roles(door: tuple[Daemon, int]) -> None:
    d, port = door
    before = running(d)
    body = hk.kube_create_body(VIP, 90, EPS, NAME)
    for token, status in ((None, 401), ("not-a-token", 401), (hk.RO_TOKEN, 403)):
        r = call(port, "POST", LB, body, token=token)
        assert r.status == status and r.json()["code"] == status, (token, r.body)
        if status == 401:
            assert "Basic" in r.headers["www-authenticate"]
    assert call(port, "GET", f"{LB}/all", token=None).status == 401
    assert call(port, "GET", f"{LB}/all", token=hk.RO_TOKEN).status == 200
    assert call(port, "DELETE", f"{LB}/all", token=hk.RO_TOKEN).status == 403
    # "Bearer <token>" works as well as the bare token.
    assert call(port, "GET", f"{LB}/all", token=f"Bearer {hk.RO_TOKEN}").status == 200
    # Basic authentication is refused over plain HTTP, even with the right password.
    import base64
    basic = "Basic " + base64.b64encode(f"kube:{hk.PASSWORD}".encode()).decode()
    r = call(port, "POST", LB, body, token=basic)
    assert r.status == 401 and "TLS" in r.json()["message"]
    assert running(d) == before


def test_tls_basic_auth_and_reconfigure(tmp_path: Path) -> None:
    d = Daemon(tmp_path)
    d.start()
    try:
        port = hk.free_port()
        cert, key = hk.self_signed(HOST)
        d.apply({"management": {"user": hk.users(),
                                "http": hk.http_section(port, tls=(cert, key))}})
        hk.wait_listening(HOST, port)
        import base64

        def auth(user: str, password: str) -> dict[str, str]:
            token = base64.b64encode(f"{user}:{password}".encode()).decode()
            return {"Authorization": f"Basic {token}", "Content-Type": "application/json"}

        body = hk.kube_create_body(VIP, 80, EPS, NAME)
        assert hk.https_request(HOST, port, "GET", f"{LB}/all",
                                headers=auth("kube", "wrong password")).status == 401
        assert hk.https_request(HOST, port, "POST", LB, body,
                                headers=auth("viewer", hk.PASSWORD)).status == 403
        assert d.cli_json("lb", "list") == []
        r = hk.https_request(HOST, port, "POST", LB, body, headers=auth("kube", hk.PASSWORD))
        assert (r.status, r.json()) == (200, {"result": "Success"})
        status = ask(d, "status")["doors"]["http"]
        assert status["state"] == "listening" and status["where"].startswith("https://")
        # Disabled by a commit: the listener goes away, the daemon goes on.
        d.apply({"management": {"http": {"enabled": False}}})
        hk.wait_closed(HOST, port)
        assert ask(d, "status")["doors"]["http"]["state"] == "disabled"
    finally:
        d.stop()


def test_plain_http_needs_addresses_and_tls_needs_a_key(daemon: Daemon) -> None:
    for section, tag in (({"enabled": True, "plain-http": True}, "address"),
                         ({"enabled": True}, "tls")):
        path = daemon.workdir / "bad.json"
        path.write_text(json.dumps({"management": {"http": section}}))
        res = daemon.cli("apply", "-f", str(path))
        assert res.returncode != 0 and tag in res.stderr, res.stderr


def test_token_from_the_cli(door: tuple[Daemon, int]) -> None:
    d, port = door
    res = d.cli("passwd", "tok", "--token", "--role", "read-write")
    assert res.returncode == 0, res.stderr
    token = res.stdout.strip()
    assert len(token) >= 40 and "shown" in res.stderr
    assert call(port, "GET", f"{LB}/all", token=token).status == 200
    # A new token replaces the old one at once.
    assert d.cli("passwd", "tok", "--token").returncode == 0
    assert call(port, "GET", f"{LB}/all", token=token).status == 401
