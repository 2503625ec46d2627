"""NETCONF reads stay bounded: XPath budget, O(N) state merge, merged duplicate filters,
and a hostile reader that cannot stall other sessions or the control socket."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import netconfkit as kit
import netkit
import pytest
from daemonkit import Daemon
from lxml import etree
from ncclient.operations import RPCError

from appliance.config.passwords import hash_password
from northbound.netconf.errors import RpcError
from northbound.netconf.output import merge_json, subtree_filter, xpath_filter
from northbound.netconf.schema_index import LIST, Node

NS = kit.SLUICE_NS
HOSTILE = "//*[count(//*[count(//*)>0])>0]"
PW = "pw-12345678"


def data_tree(n: int) -> etree._Element:
    data = etree.Element("data")
    lb = etree.SubElement(data, f"{{{NS}}}load-balancer", nsmap={None: NS})
    for i in range(n):
        s = etree.SubElement(lb, f"{{{NS}}}service")
        etree.SubElement(s, f"{{{NS}}}name").text = f"s{i}"
        etree.SubElement(s, f"{{{NS}}}port").text = "80"
        ep = etree.SubElement(s, f"{{{NS}}}endpoint")
        etree.SubElement(ep, f"{{{NS}}}address").text = f"198.19.{i // 250}.{i % 250 + 1}"
    return data


def keys_of(el: etree._Element) -> tuple[str, ...]:
    name = etree.QName(el).localname
    return ("name",) if name == "service" else ("address",) if name == "endpoint" else ()


def test_hostile_xpath_is_stopped_by_its_budget() -> None:
    data = data_tree(200)
    t0 = time.monotonic()
    with pytest.raises(RpcError) as err:
        xpath_filter(data, HOSTILE, {}, keys_of, budget=1.0)
    took = time.monotonic() - t0
    assert took < 2.0, took
    assert err.value.tag == "operation-failed"
    assert "exceeded its budget" in err.value.message
    assert err.value.info["bad-attribute"] == "select"


def test_xpath_errors_still_name_the_select() -> None:
    with pytest.raises(RpcError) as err:
        xpath_filter(data_tree(2), "count(//*)", {}, keys_of)
    assert "must select nodes" in err.value.message
    with pytest.raises(RpcError) as err:
        xpath_filter(data_tree(2), "//x:service", {}, keys_of)
    assert err.value.tag == "invalid-value" and err.value.info["bad-attribute"] == "select"


def test_xpath_selecting_everything_is_linear() -> None:
    data = data_tree(10_000)
    t0 = time.monotonic()
    xpath_filter(data, "//*", {}, keys_of, budget=5.0)
    assert time.monotonic() - t0 < 5.0  # ~0.5 s; the quadratic rebuild took 14 s unloaded
    assert len(data.findall(f"{{{NS}}}load-balancer/{{{NS}}}service")) == 10_000


def test_xpath_keeps_keys_once_and_ancestors() -> None:
    data = data_tree(3)
    xpath_filter(data, "/sl:load-balancer/sl:service[sl:name='s1']/sl:name | "
                 "//sl:service[sl:name='s1']/sl:endpoint", {"sl": NS}, keys_of)
    services = data.findall(f"{{{NS}}}load-balancer/{{{NS}}}service")
    assert len(services) == 1
    names = [etree.QName(c).localname for c in services[0]]
    assert names == ["name", "endpoint"]


def test_duplicate_subtree_filter_siblings_are_merged() -> None:
    data = data_tree(2000)
    flt = etree.Element("filter")
    lb = etree.SubElement(flt, f"{{{NS}}}load-balancer", nsmap={None: NS})
    for _ in range(20_000):  # a filter repeating one selection node
        s = etree.SubElement(lb, f"{{{NS}}}service")
        etree.SubElement(s, f"{{{NS}}}port")
    t0 = time.monotonic()
    subtree_filter(data, flt, keys_of)
    assert time.monotonic() - t0 < 5.0  # ~0.1 s; without the merge it took minutes
    services = data.findall(f"{{{NS}}}load-balancer/{{{NS}}}service")
    assert len(services) == 2000
    assert [etree.QName(c).localname for c in services[0]] == ["name", "port"]


def test_containment_duplicates_union_and_content_matches_stay_apart() -> None:
    data = data_tree(3)
    flt = etree.fromstring(
        f'<filter><load-balancer xmlns="{NS}">'
        "<service><name>s0</name><port/></service>"
        "<service><name>s2</name><endpoint/></service>"
        "<service><name>s2</name><endpoint/></service>"
        "</load-balancer></filter>")
    subtree_filter(data, flt, keys_of)
    got = {s.findtext(f"{{{NS}}}name"): [etree.QName(c).localname for c in s]
           for s in data.iter(f"{{{NS}}}service")}
    assert got == {"s0": ["name", "port"], "s2": ["name", "endpoint"]}


def test_state_merge_is_linear() -> None:
    svc = Node("service", LIST, True, keys=("name",))
    top = {"load-balancer": Node("load-balancer", "container", True, children={"service": svc})}
    n = 10_000
    base = {"sluice:load-balancer": {"service": [{"name": f"s{i}"} for i in range(n)]}}
    state = {"sluice:load-balancer": {"service": [{"name": f"s{i}", "state": {"packets": i}}
                                                  for i in reversed(range(n))]}}
    t0 = time.monotonic()
    merge_json(base, state, top)
    assert time.monotonic() - t0 < 2.0  # ~0.1 s; the nested search did not finish in 20 s
    rows = base["sluice:load-balancer"]["service"]
    assert len(rows) == n and rows[7]["state"] == {"packets": 7}


# -- a hostile session against a live server ----------------------------------------------
def services_xml(n: int) -> str:
    body = "".join(f"<service><name>s{i}</name><vip>198.18.{i // 250}.{i % 250 + 1}</vip>"
                   "<port>80</port></service>" for i in range(n))
    return f'<config><load-balancer xmlns="{NS}">{body}</load-balancer></config>'


def hostile_get(port: int, user: str, password: str, out: dict[str, Any]) -> None:
    from ncclient import manager

    t0 = time.monotonic()
    try:
        with manager.connect(host="127.0.0.1", port=port, username=user, password=password,
                             hostkey_verify=False, allow_agent=False, look_for_keys=False,
                             timeout=30) as m:
            out["connected"] = time.monotonic()
            m.get(filter=("xpath", HOSTILE))
    except RPCError as exc:
        out["error"] = (exc.tag, exc.message)
    except Exception as exc:  # recorded for the assertion
        out["other"] = repr(exc)
    out["took"] = time.monotonic() - t0


def test_hostile_session_does_not_stall_others(tmp_path: Path) -> None:
    h = kit.start(tmp_path, state={"service": lambda name: {"packets": 1}})
    try:
        with h.connect() as m:
            m.edit_config(services_xml(200), target="running")
        outs: list[dict[str, Any]] = [{} for _ in range(4)]  # more than the evaluation slots
        threads = [threading.Thread(target=hostile_get, args=(h.port, "viewer", kit.PASSWORD, o))
                   for o in outs]
        for t in threads:
            t.start()
        with h.connect() as other:
            kit.wait_for(lambda: all("connected" in o for o in outs), timeout=20)
            for _ in range(3):
                t0 = time.monotonic()
                other.get_config("running")
                assert time.monotonic() - t0 < 1.0
        for t in threads:
            t.join(20)
        tags = sorted(o.get("error", ("?",))[0] for o in outs)
        assert set(tags) <= {"operation-failed", "resource-denied"}, outs
        assert "operation-failed" in tags
        assert all(o["took"] < 10 for o in outs), outs
    finally:
        kit.stop(h)


# -- the same against the daemon: the control socket answers meanwhile ---------------------
def free_port() -> int:
    return netkit.free_port()


@pytest.fixture
def nc_daemon(tmp_path: Path) -> Iterator[tuple[Daemon, int]]:
    d = Daemon(tmp_path)
    d.start()
    try:
        port = free_port()
        viewer = {"name": "viewer", "role": "read-only", "password-hash": hash_password(PW)}
        services = [{"name": f"s{i}", "vip": f"198.18.{i // 250}.{i % 250 + 1}", "port": 80}
                    for i in range(200)]
        netconf = {"port": port, "address": ["127.0.0.1"]}
        doc = {"management": {"user": [viewer], "netconf": netconf},
               "load-balancer": {"service": services}}
        path = tmp_path / "apply.json"
        path.write_text(json.dumps(doc))
        res = d.cli("apply", "-f", str(path))
        assert res.returncode == 0, res.stderr
        yield d, port
    finally:
        d.stop()


def test_hostile_xpath_against_the_daemon(nc_daemon: tuple[Daemon, int]) -> None:
    d, port = nc_daemon
    out: dict[str, Any] = {}
    # The NETCONF door follows the commit: retry until it listens.
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        out.clear()
        hostile_get(port, "viewer", PW, out)
        if "connected" in out:
            break
    out.clear()
    t = threading.Thread(target=hostile_get, args=(port, "viewer", PW, out))
    t.start()
    kit.wait_for(lambda: "connected" in out, timeout=20)
    answered = 0
    with d.client() as c:
        while t.is_alive():
            t0 = time.monotonic()
            assert c.call("status")["services"] == 200
            assert time.monotonic() - t0 < 1.0
            answered += 1
            time.sleep(0.05)
    t.join(20)
    assert answered >= 1
    assert out.get("error", (None,))[0] == "operation-failed", out
    assert out["took"] < 10
    # SIGTERM is obeyed at once afterwards (no evaluation left running).
    assert d.proc is not None
    os.kill(d.proc.pid, signal.SIGTERM)
    assert d.proc.wait(10) == 0


def test_get_reads_state_from_the_snapshot_thread(tmp_path: Path) -> None:
    threads: set[str] = set()

    def service(name: str) -> dict[str, Any]:
        threads.add(threading.current_thread().name)
        return {"packets": 9}

    def datapath() -> dict[str, Any]:
        threads.add(threading.current_thread().name)
        return {"interfaces": {"veth0": []}, "maps": {"ct_map": {"entries": 40}}}

    h = kit.start(tmp_path, state={"service": service, "datapath": datapath})
    try:
        with h.connect() as m:
            m.edit_config(services_xml(3), target="running")
            data = m.get().data
            ns = {"sl": NS}
            assert data.xpath("//sl:service/sl:state/sl:packets/text()", namespaces=ns) == ["9"] * 3
            assert data.xpath("//sl:datapath/sl:state/sl:conntrack-entries/text()",
                              namespaces=ns) == ["40"]
        assert threads == {"state-snapshot"}
    finally:
        kit.stop(h)


def test_overlay_while_writing_equals_merge_then_write() -> None:
    from northbound.netconf.output import json_to_xml

    def leaves(*names: str, config: bool = True) -> dict[str, Node]:
        return {n: Node(n, "leaf", config) for n in names}

    def state(*names: str) -> Node:
        return Node("state", "container", False, children=leaves(*names, config=False))

    ep = Node("endpoint", LIST, True, keys=("address", "port"),
              children={**leaves("address", "port"), "state": state("health")})
    svc = Node("service", LIST, True, keys=("name",),
               children={"endpoint": ep, **leaves("name", "port"),
                         "state": state("packets", "oper-status")})
    dp_state = Node("state", "container", False,
                    children={"attached-interface": Node("attached-interface", "leaf-list",
                                                         False)})
    top = {"load-balancer": Node("load-balancer", "container", True, children={"service": svc}),
           "datapath": Node("datapath", "container", True, children={"state": dp_state})}

    def config() -> dict[str, Any]:
        return {"sluice:load-balancer": {"service": [
            {"port": 80, "name": "a", "endpoint": [{"address": "x", "port": 1},
                                                   {"address": "y", "port": 2}]},
            {"name": "b & <c>"}]}}

    state = {"sluice:load-balancer": {"service": [
        {"name": "b & <c>", "state": {"packets": 1}},
        {"name": "a", "endpoint": [{"address": "y", "port": 2, "state": {"health": "up"}}],
         "state": {"oper-status": "up"}}]},
        "sluice:datapath": {"state": {"attached-interface": ["v0", "v1"]}}}
    merged = config()
    merge_json(merged, state, top)
    a, b = etree.Element("data"), etree.Element("data")
    json_to_xml(a, merged, top, NS)
    json_to_xml(b, config(), top, NS, overlay=state)

    def canon(el: etree._Element) -> Any:
        return (etree.QName(el).localname, (el.text or "").strip(),
                sorted(canon(c) for c in el))

    assert canon(a) == canon(b)
    names = [etree.QName(c).localname for c in b[0][0]]
    assert names[0] == "name"  # list keys first


def test_xpath_evaluations_are_limited_without_waiting(monkeypatch: pytest.MonkeyPatch) -> None:
    import threading as th

    from northbound.netconf import xpathrun

    monkeypatch.setattr(xpathrun, "_slots", th.BoundedSemaphore(1))
    assert xpathrun._slots.acquire(blocking=False)  # one hostile filter running
    try:
        t0 = time.monotonic()
        with pytest.raises(RpcError) as err:
            xpath_filter(data_tree(2), "//*", {}, keys_of)
        assert time.monotonic() - t0 < 0.5
        assert err.value.tag == "resource-denied" and "try the filter again" in err.value.message
    finally:
        xpathrun._slots.release()
    xpath_filter(data_tree(2), "//*", {}, keys_of)  # a free slot: evaluated
