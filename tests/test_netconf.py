"""NETCONF over SSH with ncclient as the client: the OSS provisioning life cycle."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import asyncssh
import netconfkit as kit
import netkit
import pytest
from lxml import etree
from ncclient.operations import RPCError
from ncclient.transport.errors import AuthenticationError

NS = {"sl": kit.SLUICE_NS}
LB = f'<load-balancer xmlns="{kit.SLUICE_NS}"/>'
XC = "urn:ietf:params:xml:ns:netconf:base:1.0"


def service_xml(name: str = "web", port: int = 80, vip: str = "198.18.0.10",
                op: str | None = None, weight: int | None = None) -> str:
    attr = f' xmlns:xc="{XC}" xc:operation="{op}"' if op else ""
    w = f"<weight>{weight}</weight>" if weight is not None else ""
    return (
        f'<config><load-balancer xmlns="{kit.SLUICE_NS}"><service{attr}><name>{name}</name>'
        f"<vip>{vip}</vip><port>{port}</port>"
        f"<endpoint><address>198.18.1.1</address><port>8080</port>{w}</endpoint>"
        f"</service></load-balancer></config>"
    )


@pytest.fixture
def h(tmp_path: Path) -> Iterator[kit.Harness]:
    yield from kit.harness(tmp_path)


def running_services(h: kit.Harness) -> dict:
    return {k: v for k, v in h.service.running_doc().items() if k == "sluice:load-balancer"}


def test_password_and_key_login_and_hello(h: kit.Harness) -> None:
    with h.connect() as m:
        caps = set(m.server_capabilities)
        assert "urn:ietf:params:netconf:base:1.1" in caps
        assert "urn:ietf:params:netconf:capability:candidate:1.0" in caps
        assert "urn:ietf:params:netconf:capability:confirmed-commit:1.1" in caps
        assert any(c.startswith("urn:sluice:yang:sluice?module=sluice") for c in caps)
        assert not any(":url:" in c for c in caps)
        assert int(m.session_id) > 0
    with h.connect("keyuser", key=True) as m:
        assert m.connected
    with pytest.raises(AuthenticationError):
        h.connect("keyuser", password="whatever")  # key-only user: no password login
    with pytest.raises(AuthenticationError):
        h.connect("nobody")


def test_host_key_generated_once_and_kept(h: kit.Harness, tmp_path: Path) -> None:
    path = tmp_path / "state" / "ssh_host_ed25519_key"
    assert path.exists() and path.stat().st_mode & 0o777 == 0o600
    first = path.read_bytes()
    # a second server on the same state directory reuses it
    from northbound.netconf import NetconfServer

    other = NetconfServer(h.service, tmp_path / "state", host="127.0.0.1", port=0)
    h.run(other.start())
    h.run(other.close())
    assert path.read_bytes() == first


def test_failed_logins_are_throttled(h: kit.Harness) -> None:
    for _ in range(3):
        with pytest.raises(AuthenticationError):
            h.connect(password="wrong")
    # the right password is refused while the address is backing off...
    with pytest.raises(AuthenticationError):
        h.connect()
    # ...and accepted once the pause is over (base delay 0.5 s in the harness)
    kit.wait_for(lambda: h.server.throttle.blocked_for("127.0.0.1", "ops") == 0, timeout=10)
    with h.connect() as m:
        assert m.connected


def test_only_the_netconf_subsystem_is_served(h: kit.Harness) -> None:
    async def try_shell() -> int | None:
        async with asyncssh.connect("127.0.0.1", h.port, username="ops", password=kit.PASSWORD,
                                    known_hosts=None, client_keys=None, agent_path=None) as c:
            result = await c.run("id", check=False, timeout=10)
            return result.exit_status

    assert asyncio.run(try_shell()) != 0


def test_get_schema_returns_module_and_imports(h: kit.Harness) -> None:
    with h.connect() as m:
        text = m.get_schema("sluice").data
        assert text.startswith("module sluice {")
        assert h.service.schema.module_text() == text
        assert "module ietf-inet-types" in m.get_schema("ietf-inet-types").data
        with pytest.raises(RPCError) as info:
            m.get_schema("no-such-module")
        assert info.value.tag == "invalid-value"


def test_service_lifecycle_on_candidate(h: kit.Harness) -> None:
    with h.connect() as m:
        m.edit_config(service_xml(), target="candidate")
        assert running_services(h) == {}  # not yet committed
        cand = m.get_config("candidate", filter=("subtree", LB)).data
        assert cand.xpath("//sl:service/sl:name/text()", namespaces=NS) == ["web"]
        m.validate(source="candidate")
        m.commit()
        assert h.service.services["web"]["port"] == 80

        # change one leaf deep in a list with merge
        m.edit_config(service_xml(port=81, weight=5), target="candidate")
        m.commit()
        svc = h.service.services["web"]
        assert svc["port"] == 81 and svc["endpoint"][0]["weight"] == 5

        # replace the service: the weight goes back to its default
        m.edit_config(service_xml(port=82, op="replace"), target="candidate")
        m.commit()
        assert "weight" not in h.service.services["web"]["endpoint"][0]

        # read back through get-config with defaults reported
        data = m.get_config("running", with_defaults="report-all").data
        assert data.xpath("//sl:service/sl:mode/text()", namespaces=NS) == ["default"]
        tagged = m.get_config("running", with_defaults="report-all-tagged").data
        (mode,) = tagged.xpath("//sl:service/sl:mode", namespaces=NS)
        assert mode.get("{urn:ietf:params:xml:ns:netconf:default:1.0}default") == "true"
        (port,) = tagged.xpath("//sl:service/sl:port", namespaces=NS)
        assert port.get("{urn:ietf:params:xml:ns:netconf:default:1.0}default") is None

        # delete it
        m.edit_config(
            f'<config><load-balancer xmlns="{kit.SLUICE_NS}" xmlns:xc="{XC}">'
            '<service xc:operation="delete"><name>web</name></service></load-balancer></config>',
            target="candidate",
        )
        m.commit()
        assert "web" not in h.service.services


def test_edit_running_directly_and_startup(h: kit.Harness) -> None:
    with h.connect() as m:
        m.edit_config(service_xml("direct"), target="running")
        assert "direct" in h.service.services
        m.copy_config(source="running", target="startup")
        startup = m.get_config("startup", filter=("subtree", LB)).data
        assert startup.xpath("//sl:service/sl:name/text()", namespaces=NS) == ["direct"]
        m.delete_config(target="startup")
        assert m.get_config("startup").data.xpath("//sl:service", namespaces=NS) == []


def test_filters_subtree_content_match_and_xpath(h: kit.Harness) -> None:
    with h.connect() as m:
        m.edit_config(service_xml("a", vip="198.18.0.1"), target="running")
        m.edit_config(service_xml("b", vip="198.18.0.2"), target="running")
        flt = (f'<load-balancer xmlns="{kit.SLUICE_NS}"><service><name>b</name><vip/></service>'
               "</load-balancer>")
        data = m.get_config("running", filter=("subtree", flt)).data
        assert data.xpath("//sl:service/sl:name/text()", namespaces=NS) == ["b"]
        assert data.xpath("//sl:service/sl:vip/text()", namespaces=NS) == ["198.18.0.2"]
        assert data.xpath("//sl:service/sl:port", namespaces=NS) == []
        data = m.get_config("running", filter=(
            "xpath", ({"sl": kit.SLUICE_NS}, "/sl:load-balancer/sl:service[sl:name='a']/sl:vip")
        )).data
        assert data.xpath("//sl:service/sl:name/text()", namespaces=NS) == ["a"]
        assert data.xpath("//sl:service/sl:vip/text()", namespaces=NS) == ["198.18.0.1"]


def test_get_has_config_and_monitoring_state(h: kit.Harness) -> None:
    with h.connect() as m:
        m.edit_config(service_xml(), target="running")
        data = m.get().data
        assert data.xpath("//sl:service/sl:name/text()", namespaces=NS) == ["web"]
        mon = {"m": "urn:ietf:params:xml:ns:yang:ietf-netconf-monitoring"}
        sids = data.xpath("//m:sessions/m:session/m:session-id/text()", namespaces=mon)
        assert m.session_id in sids
        assert "sluice" in data.xpath("//m:schemas/m:schema/m:identifier/text()", namespaces=mon)
        # secrets (password hashes) are never shown
        assert b"scrypt" not in etree.tostring(data)


def test_read_only_user_reads_but_cannot_write(h: kit.Harness) -> None:
    with h.connect("viewer") as m:
        m.get_config("running")
        m.get()
        for call in (
            lambda: m.edit_config(service_xml(), target="candidate"),
            lambda: m.commit(),
            lambda: m.copy_config(source="running", target="startup"),
            lambda: m.lock("running"),
        ):
            with pytest.raises(RPCError) as info:
                call()
            assert info.value.tag == "access-denied"
    assert running_services(h) == {}


def test_lock_contention_and_release_on_close(h: kit.Harness) -> None:
    a = h.connect()
    b = h.connect("ops2")
    try:
        a.lock("candidate")
        with pytest.raises(RPCError) as info:
            b.lock("candidate")
        assert info.value.tag == "lock-denied"
        assert info.value.info and a.session_id in info.value.info
        # b can neither edit nor commit while a holds the candidate lock
        with pytest.raises(RPCError) as info:
            b.edit_config(service_xml(), target="candidate")
        assert info.value.tag == "in-use"
        with pytest.raises(RPCError) as info:
            b.commit()
        assert info.value.tag == "in-use"
        with pytest.raises(RPCError) as info:
            b.unlock("candidate")
        assert info.value.tag == "operation-failed"
        a.unlock("candidate")
        b.lock("candidate")
        with pytest.raises(RPCError) as info:
            a.edit_config(service_xml(), target="candidate")
        assert info.value.tag == "in-use"
    finally:
        b.close_session()
    # b's lock went with its session
    a.lock("candidate")
    a.close_session()


def test_kill_session_frees_the_lock(h: kit.Harness) -> None:
    a = h.connect()
    b = h.connect("ops2")
    try:
        a.lock("running")
        with pytest.raises(RPCError):
            b.lock("running")
        b.kill_session(a.session_id)
        b.lock("running")
        kit.wait_for(lambda: not a.connected, timeout=5)
        with pytest.raises(RPCError) as info:
            b.kill_session(b.session_id)
        assert info.value.tag == "invalid-value"
    finally:
        b.close_session()


def test_confirmed_commit_rolls_back_when_not_confirmed(h: kit.Harness) -> None:
    with h.connect() as m:
        m.edit_config(service_xml("keep"), target="running")
        before = h.service.running_doc()
        m.edit_config(service_xml("trial", vip="198.18.0.99"), target="candidate")
        m.commit(confirmed=True, timeout="1")
        assert "trial" in h.service.services
        kit.wait_for(lambda: "trial" not in h.service.services, timeout=10)
        assert h.service.running_doc() == before


def test_confirmed_commit_confirmed_stays(h: kit.Harness) -> None:
    with h.connect() as m:
        m.edit_config(service_xml("trial"), target="candidate")
        m.commit(confirmed=True, timeout="1")
        m.commit()  # confirming commit
        # Nothing is left that could revert it: no timer, nothing pending in the store.
        assert h.server.confirmed.pending is None and h.service.confirmed is None
        assert "trial" in h.service.services


def test_confirmed_commit_rolls_back_when_session_ends_and_on_cancel(h: kit.Harness) -> None:
    m = h.connect()
    m.edit_config(service_xml("t1"), target="candidate")
    m.commit(confirmed=True, timeout="60")
    assert "t1" in h.service.services
    m.close_session()
    kit.wait_for(lambda: "t1" not in h.service.services, timeout=10)
    with h.connect() as m:
        m.edit_config(service_xml("t2"), target="candidate")
        m.commit(confirmed=True, timeout="60", persist="tok")
        m.cancel_commit(persist_id="tok")
        assert "t2" not in h.service.services


def test_notification_on_commit(h: kit.Harness) -> None:
    with h.connect() as listener, h.connect("ops2") as writer:
        listener.create_subscription()
        writer.edit_config(service_xml(), target="candidate")
        writer.commit()
        n = listener.take_notification(timeout=10)
        assert n is not None
        root = etree.fromstring(n.notification_xml.encode())
        ncn = {"n": "urn:ietf:params:xml:ns:yang:ietf-netconf-notifications"}
        assert root.xpath("//n:netconf-config-change/n:changed-by/n:username/text()",
                          namespaces=ncn) == ["ops2"]
        targets = root.xpath("//n:edit/n:target/text()", namespaces=ncn)
        assert targets == ["/sl:load-balancer/sl:service[sl:name='web']"]
        assert root.xpath("//n:edit/n:operation/text()", namespaces=ncn) == ["create"]
        # a commit from another front door (the CLI's session) is notified too
        with h.service.open_session("cli-user", "cli") as s:
            s.edit([{"op": "delete", "path": "/sluice:load-balancer/service[name='web']"}])
            s.commit()
        n = listener.take_notification(timeout=10)
        assert n is not None and "cli-user" in n.notification_xml
        assert "<operation>delete</operation>" in n.notification_xml


def test_yang_insert_places_endpoints(h: kit.Harness) -> None:
    """RFC 7950 7.8.6 on the endpoint list (ordered-by user): yang:insert first/last/
    before/after with yang:key, in a merge and in a service's create; refusals name the
    attribute and change nothing."""
    y = "urn:ietf:params:xml:ns:yang:1"

    def ep(n: int, insert: str | None = None, key: int | None = None) -> str:
        attrs = f' yang:insert="{insert}"' if insert else ""
        if key is not None:
            attrs += f" yang:key=\"[sl:address='198.18.1.{key}'][sl:port='8080']\""
        return (f"<endpoint{attrs}><address>198.18.1.{n}</address><port>8080</port>"
                "</endpoint>")

    def edit(*endpoints: str, op: str = "") -> None:
        attr = f' xmlns:xc="{XC}" xc:operation="{op}"' if op else ""
        m.edit_config(f'<config><load-balancer xmlns="{kit.SLUICE_NS}" xmlns:sl='
                      f'"{kit.SLUICE_NS}" xmlns:yang="{y}"><service{attr}><name>web</name>'
                      f"<vip>198.18.0.10</vip><port>80</port>{''.join(endpoints)}"
                      "</service></load-balancer></config>", target="running")

    def order() -> list[int]:
        return [int(e["address"].rsplit(".", 1)[1])
                for e in h.service.services["web"]["endpoint"]]

    with h.connect() as m:
        edit(ep(1), ep(2), ep(3, "first"), op="create")
        assert order() == [3, 1, 2]
        edit(ep(4, "after", 3))
        assert order() == [3, 4, 1, 2]
        edit(ep(2, "before", 4))  # an existing entry moves
        assert order() == [3, 2, 4, 1]
        edit(ep(3, "last"))
        assert order() == [2, 4, 1, 3]
        for bad, words in [(ep(5, "before"), "needs yang:key"),
                           (ep(5, "sideways"), "yang:insert must be"),
                           (ep(5, None, 1), "yang:key goes with"),
                           (ep(5, "after", 9), "does not exist")]:
            with pytest.raises(RPCError) as err:
                edit(bad)
            assert words in str(err.value), err.value
        with pytest.raises(RPCError) as err:
            m.edit_config(f'<config><load-balancer xmlns="{kit.SLUICE_NS}" xmlns:yang="{y}">'
                          '<service yang:insert="first"><name>web</name></service>'
                          "</load-balancer></config>", target="running")
        assert "ordered-by-user" in str(err.value)
        assert order() == [2, 4, 1, 3]


def test_replay_from_the_notification_log(h: kit.Harness) -> None:
    """RFC 5277 replay from the notification log RESTCONF's streams read too: startTime
    replays the logged commits, then replayComplete, then live ones; stopTime ends the
    subscription with notificationComplete; bad times are refused naming the element."""
    from datetime import UTC, datetime, timedelta

    from ncclient.operations import RPCError

    def stamp() -> str:
        return datetime.now(UTC).isoformat().replace("+00:00", "Z")

    def commit(op: str, name: str) -> None:
        path = f"/sluice:load-balancer/service[name='{name}']"
        value = {"name": name, "vip": "198.18.0.10", "port": 80,
                 "endpoint": [{"address": "198.18.1.1", "port": 8080}]}
        with h.service.open_session("cli-user", "cli") as s:
            s.edit([{"op": op, "path": path, **({"value": value} if op == "create" else {})}])
            s.commit()

    def kinds(m: object, count: int) -> list[str]:
        out = []
        for _ in range(count):
            n = m.take_notification(timeout=10)
            assert n is not None, out
            root = etree.fromstring(n.notification_xml.encode())
            content = root[1]
            name = etree.QName(content).localname
            ops = content.xpath("//n:operation/text()", namespaces={
                "n": "urn:ietf:params:xml:ns:yang:ietf-netconf-notifications"})
            out.append(f"{name}:{ops[0]}" if ops else name)
        return out

    t0 = stamp()
    commit("create", "rp")
    commit("delete", "rp")
    t1 = stamp()
    with h.connect() as m:
        m.create_subscription(start_time=t0, stop_time=t1)
        assert kinds(m, 4) == ["netconf-config-change:create", "netconf-config-change:delete",
                               "replayComplete", "notificationComplete"]
        commit("create", "rp")  # after stopTime: the subscription has ended
        assert m.take_notification(timeout=0.5) is None
        m.create_subscription()  # ended, so a new one is allowed
    with h.connect() as m:
        m.create_subscription(start_time=t1)
        assert kinds(m, 2) == ["netconf-config-change:create", "replayComplete"]
        commit("delete", "rp")
        assert kinds(m, 1) == ["netconf-config-change:delete"]  # live
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat().replace("+00:00", "Z")
    with h.connect() as m:
        for start, stop, words in [(future, None, "startTime is in the future"),
                                   (t1, t0, "stopTime is before startTime"),
                                   ("yesterday", None, "startTime")]:
            with pytest.raises(RPCError) as err:
                m.create_subscription(start_time=start, stop_time=stop)
            assert words in str(err.value), err.value


def test_operational_state_in_get(tmp_path: Path) -> None:
    def state() -> dict:
        return {"sluice:load-balancer": {"service": [
            {"name": "web", "state": {"oper-status": "up", "endpoints-up": 1,
                                      "packets": "12"},
             "endpoint": [{"address": "198.18.1.1", "port": 8080,
                           "state": {"health": "up"}}]}]}}

    h = kit.start(tmp_path, state_source=state)
    try:
        with h.connect() as m:
            m.edit_config(service_xml(), target="running")
            data = m.get(filter=("subtree", LB)).data
            svc = data.xpath("//sl:service", namespaces=NS)
            assert len(svc) == 1  # config and state of one entry are merged
            assert svc[0].xpath("sl:state/sl:oper-status/text()", namespaces=NS) == ["up"]
            assert svc[0].xpath("sl:endpoint/sl:state/sl:health/text()", namespaces=NS) == ["up"]
            assert svc[0].xpath("sl:vip/text()", namespaces=NS) == ["198.18.0.10"]
            # get-config never shows state
            cfg = m.get_config("running").data
            assert cfg.xpath("//sl:state", namespaces=NS) == []
    finally:
        kit.stop(h)


def free_port() -> int:
    return netkit.free_port()


def test_follow_config_moves_the_listener(tmp_path: Path) -> None:
    first, second = free_port(), free_port()
    # follow_config: the model, not the port=0 the harness passes, says where to listen
    h = kit.start(tmp_path, follow_config=True,
                  netconf={"port": first, "address": ["127.0.0.1"]})
    try:
        assert h.server.port == h.port == first
        with h.connect() as m:
            m.edit_config(
                f'<config><management xmlns="{kit.SLUICE_NS}"><netconf><port>{second}</port>'
                "</netconf></management></config>", target="running")
            kit.wait_for(lambda: h.server.port == second)
            assert m.connected  # the session that moved the port keeps going
            m.get_config("running")
        h.port = second
        with h.connect() as m:
            assert m.connected
        h.port = first
        with pytest.raises(Exception):  # noqa: B017 - refused: nothing listens there now
            h.connect(timeout=3)
    finally:
        kit.stop(h)


def test_state_providers_feed_get(tmp_path: Path) -> None:
    calls = []

    def service(name: str) -> dict:
        calls.append(name)
        return {"oper-status": "degraded", "endpoints-up": 0, "packets": 7}

    def endpoint(name: str, address: str, port: int) -> dict:
        return {"health": "down", "packets": 3}

    h = kit.start(tmp_path, state={"service": service, "endpoint": endpoint,
                                   "datapath": lambda: {"interfaces": {"veth0": []}}})
    try:
        with h.connect() as m:
            m.edit_config(service_xml(), target="running")
            data = m.get().data
            assert data.xpath("//sl:service/sl:state/sl:oper-status/text()",
                              namespaces=NS) == ["degraded"]
            assert data.xpath("//sl:endpoint/sl:state/sl:health/text()",
                              namespaces=NS) == ["down"]
            assert data.xpath("//sl:datapath/sl:state/sl:attached-interface/text()",
                              namespaces=NS) == ["veth0"]
            assert set(calls) == {"web"}  # read by the snapshot thread, not per get
    finally:
        kit.stop(h)


def _hashes(h: kit.Harness) -> dict[str, str | None]:
    users = h.service.running_doc(with_secrets=True)["sluice:management"]["user"]
    return {u["name"]: u.get("password-hash") for u in users}


def _backup(m: object) -> str:
    """A get-config backup as an operator keeps it: <config> around the data's children."""
    data = etree.fromstring(m.get_config(source="running").data_xml.encode())  # type: ignore[attr-defined]
    config = etree.Element(f"{{{XC}}}config", nsmap={None: XC})
    for el in data:
        config.append(el)
    return etree.tostring(config).decode()


def _copy_inline(m: object, config: str, target: str) -> None:
    """copy-config with an inline <config> source (ncclient's copy_config takes names only)."""
    rpc = etree.fromstring(
        f'<copy-config xmlns="{XC}"><target><{target}/></target>'
        f"<source>{config}</source></copy-config>"
    )
    m.dispatch(rpc)  # type: ignore[attr-defined]


def test_restoring_a_get_config_backup_keeps_every_password_hash(h: kit.Harness) -> None:
    before = _hashes(h)
    assert all(before[u] for u in ("ops", "ops2", "viewer"))
    with h.connect() as m:
        backup = _backup(m)
        assert "scrypt" not in backup  # the backup itself carries no secret
        m.edit_config(service_xml("web"), target="running")
        _copy_inline(m, backup, "running")
        assert "web" not in h.service.services and _hashes(h) == before
        m.edit_config(backup, target="running", default_operation="replace")
        assert _hashes(h) == before
        _copy_inline(m, backup, "candidate")
        m.commit()
        assert _hashes(h) == before
    with h.connect() as m:  # and the password still logs in
        assert m.connected


def test_copy_startup_to_running_takes_startup_secrets(h: kit.Harness) -> None:
    with h.connect() as m:
        m.copy_config(source="running", target="startup")
        saved = _hashes(h)
        path = "/sluice:management/user[name='ops2']"
        with h.service.open_session("cli-user", "cli") as s:
            s.edit([{"op": "merge", "path": path, "value": {"password-hash": kit.hash_password(
                "another", ln=4, r=8, p=1)}}])
            s.commit()
        assert _hashes(h)["ops2"] != saved["ops2"]
        m.validate(source="startup")
        m.copy_config(source="startup", target="candidate")
        m.commit()
        assert _hashes(h) == saved
        with h.service.open_session("cli-user", "cli") as s:
            s.edit([{"op": "merge", "path": path, "value": {"password-hash": kit.hash_password(
                "another", ln=4, r=8, p=1)}}])
            s.commit()
        m.copy_config(source="startup", target="running")
        assert _hashes(h) == saved
