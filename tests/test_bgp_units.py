"""BGP without a network: the /bgp model and its refusals, the announcement policy, the
ExaBGP config and messages, and the BGP component driven by events (a recording
advertiser stands in for ExaBGP in the last part: a unit test, no speaker runs)."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from appliance.alarms import Alarms
from appliance.bgp import policy
from appliance.bgp.door import BgpDoor
from appliance.bgp.exabgp import announce_lines, diff_lines, render_config, withdraw_lines
from appliance.bgp.model import Route, SpeakerConfig, parse_section
from appliance.bgp.validate import check as bgp_check
from appliance.config import ConfigError, ConfigService
from appliance.config.store import Store
from appliance.doors import DoorContext
from appliance.events import EventBus

SECTION = {
    "local-as": 65001, "router-id": "198.18.7.2", "hold-time": 90,
    "neighbor": [
        {"address": "198.18.7.1", "remote-as": 65000, "port": 179},
        {"address": "2001:db8:7::1", "remote-as": 65000, "port": 1790, "multihop": 2,
         "password": "s3cret", "hold-time": 9, "local-address": "2001:db8:7::2",
         "export": {"community": ["65001:7", "65001:8"], "med": 50, "as-path-prepend": 2}},
    ],
}  # fmt: skip


def svc(name: str, vip: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "vip": vip, "port": 80, "admin-state": "enabled", "advertise": True,
            "endpoint": [{"address": "198.18.11.1", "port": 8080, "admin-state": "enabled"}],
            **extra}  # fmt: skip


# -- model and policy ----------------------------------------------------------------------


def test_section_parses_with_defaults_and_off_without_neighbours() -> None:
    config = parse_section(SECTION)
    assert config is not None
    v4, v6 = config.neighbors
    assert (v4.hold_time, v4.port, v4.version, v4.export.next_hop_self) == (90, 179, 4, True)
    assert (v6.hold_time, v6.port, v6.multihop, v6.password) == (9, 1790, 2, "s3cret")
    assert parse_section({"local-as": 65001, "router-id": "198.18.7.2"}) is None
    assert parse_section(None) is None


def test_vips_need_health_datapath_advertise_and_an_endpoint() -> None:
    services = {
        "web": svc("web", "198.19.0.10"),
        "web-tls": svc("web-tls", "198.19.0.10", port=443),  # shares web's vip
        "v6": svc("v6", "2001:db8:ff::10"),
        "quiet": svc("quiet", "198.19.0.11", advertise=False),
        "off": svc("off", "198.19.0.12", **{"admin-state": "disabled"}),
        "empty": {**svc("empty", "198.19.0.13"), "endpoint": []},
        "sick": svc("sick", "198.19.0.14"),
    }
    assert policy.announced_vips(services, {"sick"}, True) == ["198.19.0.10", "2001:db8:ff::10"]
    # One of two services on a vip down: the vip stays (the other still serves).
    assert "198.19.0.10" in policy.announced_vips(services, {"web", "sick"}, True)
    assert "198.19.0.10" not in policy.announced_vips(services, {"web", "web-tls"}, True)
    assert policy.announced_vips(services, set(), datapath_up=False) == []


def test_routes_per_family_with_export_attributes_and_roles() -> None:
    config = parse_section(SECTION)
    routes = policy.routes(config, ["198.19.0.10", "2001:db8:ff::10"])
    assert list(routes["198.18.7.1"]) == ["198.19.0.10/32"]
    assert list(routes["2001:db8:7::1"]) == ["2001:db8:ff::10/128"]
    r6 = routes["2001:db8:7::1"]["2001:db8:ff::10/128"]
    assert (r6.med, r6.local_pref, r6.as_path) == (50, None, (65001, 65001, 65001))
    assert r6.communities == ("65001:7", "65001:8")
    master = policy.routes(config, ["198.19.0.10"], "master")["198.18.7.1"]["198.19.0.10/32"]
    backup = policy.routes(config, ["198.19.0.10"], "backup")["198.18.7.1"]["198.19.0.10/32"]
    assert (master.local_pref, master.med) == (5000, 10)
    assert (backup.local_pref, backup.med) == (100, 20)
    # The role's MED wins over the configured one: it is what makes routers prefer the master.
    assert policy.routes(config, ["2001:db8:ff::10"], "backup")["2001:db8:7::1"][
        "2001:db8:ff::10/128"].med == 20


# -- ExaBGP: config file and messages ------------------------------------------------------


def test_exabgp_config_has_every_session_setting() -> None:
    config = parse_section(SECTION)
    assert config is not None
    text = render_config(config, ["/usr/bin/sluice", "bgp-bridge", "/run/x.sock"])
    assert "run /usr/bin/sluice bgp-bridge /run/x.sock;" in text
    assert "encoder json;" in text
    block6 = text[text.index("neighbor 2001:db8:7::1"):]
    for line in ("local-as 65001;", "peer-as 65000;", "router-id 198.18.7.2;", "hold-time 9;",
                 "connect 1790;", "outgoing-ttl 2;", 'md5-password "s3cret";',
                 "local-address 2001:db8:7::2;", "ipv6 unicast;", "neighbor-changes;"):
        assert line in block6, line  # fmt: skip
    block4 = text[text.index("neighbor 198.18.7.1"):text.index("neighbor 2001")]
    assert "local-address auto;" in block4 and "md5-password" not in block4


def test_messages_group_prefixes_by_attributes() -> None:
    plain = Route("198.19.0.10/32")
    rich = Route("198.19.0.10/32", med=10, local_pref=5000, communities=("65001:7",),
                  as_path=(65001, 65001))  # fmt: skip
    n = "198.18.7.1"
    assert announce_lines(n, [plain, Route("198.19.0.11/32")]) == [
        f"neighbor {n} announce attributes next-hop self nlri 198.19.0.10/32 198.19.0.11/32"]
    assert announce_lines(n, [rich]) == [
        f"neighbor {n} announce attributes next-hop self med 10 local-preference 5000 "
        "community [ 65001:7 ] as-path [ 65001 65001 ] nlri 198.19.0.10/32"]
    other = Route("198.19.0.11/32", next_hop="198.18.7.9")
    assert withdraw_lines(n, [plain, other]) == [
        f"neighbor {n} withdraw attributes next-hop self nlri 198.19.0.10/32",
        f"neighbor {n} withdraw attributes next-hop 198.18.7.9 nlri 198.19.0.11/32"]
    sent = {n: {plain.prefix: plain, other.prefix: other}}
    assert diff_lines(sent, sent) == []
    wanted = {n: {plain.prefix: rich}}
    assert diff_lines(sent, wanted) == withdraw_lines(n, [other]) + announce_lines(n, [rich])
    # A session that came back up gets everything again.
    assert diff_lines(sent, sent, frozenset({n})) == announce_lines(n, [plain, other])
    # Many vips: a few long lines, each under ExaBGP's 1 MB command limit.
    many = [Route(f"2001:db8:ff::{i:x}/128") for i in range(2500)]
    lines = announce_lines("2001:db8:7::1", many)
    assert len(lines) == 3 and all(len(line) < 1 << 20 for line in lines)
    assert sum(line.count("/128") for line in lines) == 2500


# -- refusals at commit --------------------------------------------------------------------


@pytest.fixture
def service(tmp_path: Path) -> Any:
    svc_ = ConfigService(Store(tmp_path / "c.db"))
    svc_.add_validator(bgp_check)
    yield svc_
    svc_.store.close()


def _commit_bgp(service: Any, value: dict[str, Any]) -> Any:
    with service.open_session("t", "test") as s:
        s.edit([{"op": "replace", "path": "/sluice:bgp", "value": value}])
        return s.commit("")


@pytest.mark.parametrize(("neighbor", "field", "words"), [
    ({"address": "198.18.7.300", "remote-as": 65000}, "neighbor/address", "198.18.7.300"),
    ({"address": "198.18.7.1", "remote-as": 0}, "remote-as", "range"),
    ({"address": "198.18.7.1", "remote-as": 4294967296}, "remote-as", "bounds"),
    ({"address": "198.18.7.1"}, "remote-as", "Mandatory"),
    ({"address": "224.0.0.5", "remote-as": 65000}, "/address", "unicast"),
    ({"address": "0.0.0.0", "remote-as": 65000}, "/address", "unicast"),
    ({"address": "fe80::1", "remote-as": 65000}, "/address", "link-local"),
    ({"address": "198.18.7.1", "remote-as": 65000, "local-address": "2001:db8::2"},
     "local-address", "family"),
    ({"address": "198.18.7.1", "remote-as": 65000, "password": 'a"b'}, "password", "pattern"),
    ({"address": "198.18.7.1", "remote-as": 65000, "export": {"next-hop-self": False}},
     "export", "next-hop is required"),
    ({"address": "198.18.7.1", "remote-as": 65000, "export": {"community": ["65001"]}},
     "community", ""),
])  # fmt: skip
def test_bad_neighbour_is_refused_naming_the_field(
    service: Any, neighbor: dict[str, Any], field: str, words: str
) -> None:
    value = {"local-as": 65001, "router-id": "198.18.7.2", "neighbor": [neighbor]}
    with pytest.raises(ConfigError) as err:
        _commit_bgp(service, value)
    paths = " ".join(e.path for e in err.value.errors)
    text = " ".join(e.message for e in err.value.errors)
    assert field in paths, err.value.errors
    assert words.lower() in (paths + " " + text).lower(), err.value.errors
    assert "bgp" not in service.sections_effective or not service.sections_effective[
        "bgp"].get("neighbor")


def test_identity_is_required_with_a_neighbour(service: Any) -> None:
    with pytest.raises(ConfigError, match="local-as and router-id are required"):
        _commit_bgp(service, {"neighbor": [{"address": "198.18.7.1", "remote-as": 65000}]})
    _commit_bgp(service, SECTION)
    assert service.sections_effective["bgp"]["neighbor"][1]["password"] == "s3cret"


def test_md5_refused_clearly_when_the_kernel_cannot_sign(
    service: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from appliance.bgp import validate

    monkeypatch.setattr(validate, "md5_supported", lambda: False)
    with pytest.raises(ConfigError) as err:
        _commit_bgp(service, SECTION)
    (error,) = err.value.errors
    assert error.path.endswith("neighbor[address='2001:db8:7::1']/password")
    assert "MD5" in error.message


# -- the component, with a recording advertiser ---------------------------------------------


class RecordingAdvertiser:
    name = "recording"

    def __init__(self, workdir: Path) -> None:
        self.routes: dict[str, dict[str, Route]] = {}
        self.configs: list[SpeakerConfig] = []
        self.stopped = False
        self.on_session: Any = None

    def start(self, config: SpeakerConfig) -> None:
        self.configs.append(config)

    def configure(self, config: SpeakerConfig) -> None:
        self.configs.append(config)

    def set_routes(self, routes: dict[str, dict[str, Route]]) -> None:
        self.routes = routes

    def stop(self) -> None:
        self.stopped = True

    def status(self) -> dict[str, Any]:
        return {"speaker": "running", "neighbor": []}


def _wait(check: Any, timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def test_component_follows_health_alarms_role_and_commits(tmp_path: Path) -> None:
    async def scenario() -> None:
        service = ConfigService(Store(tmp_path / "c.db"))
        bus, worker = EventBus(), ThreadPoolExecutor(1)
        alarms = Alarms(bus)
        state: dict[str, Any] = {"alarms": alarms.active}
        with service.open_session("t", "test") as s:
            s.edit([{"op": "create", "path": "/sluice:load-balancer/service[name='web']",
                     "value": svc("web", "198.19.0.10")}])  # fmt: skip
            s.commit("")
        ctx = DoorContext(service, worker, state, bus, tmp_path, tmp_path / "sock", alarms)
        door = BgpDoor(ctx, SECTION, advertiser_factory=RecordingAdvertiser)
        await door.start()
        adv = door.advertiser
        assert isinstance(adv, RecordingAdvertiser)

        def v4() -> dict[str, Route]:
            return adv.routes.get("198.18.7.1", {})

        _wait(lambda: "198.19.0.10/32" in v4())
        bus.publish({"type": "service-state", "service": "web", "old": "up", "new": "down"})
        _wait(lambda: not v4())
        bus.publish({"type": "service-state", "service": "web", "old": "down", "new": "up"})
        _wait(lambda: "198.19.0.10/32" in v4())
        alarms.raise_("datapath", "gone", "critical")
        _wait(lambda: not v4())
        alarms.clear("datapath")
        _wait(lambda: "198.19.0.10/32" in v4())
        door.set_role("master")
        _wait(lambda: v4().get("198.19.0.10/32", Route("")).med == 10)
        bus.publish({"type": "ha-role", "role": "backup"})
        _wait(lambda: v4().get("198.19.0.10/32", Route("")).med == 20)
        with pytest.raises(ValueError):
            door.set_role("leader")
        # A session that was established and drops: an event, and an alarm until it is back.
        events = bus.queue("bgp-neighbor")
        assert adv.on_session is not None
        adv.on_session("198.18.7.1", "connected", "established")
        assert not alarms.active()
        adv.on_session("198.18.7.1", "established", "down")
        (alarm,) = alarms.active()
        assert alarm["name"] == "bgp-session" and "198.18.7.1" in alarm["text"]
        adv.on_session("198.18.7.1", "down", "connected")
        assert alarms.active()
        adv.on_session("198.18.7.1", "connected", "established")
        assert not alarms.active()
        assert [(await events.get())["new"] for _ in range(4)] == [
            "established", "down", "connected", "established"]
        with service.open_session("t", "test") as s:
            s.edit([{"op": "delete", "path": "/sluice:load-balancer/service[name='web']"}])
            s.commit("")
        _wait(lambda: not v4())
        await door.reconfigure({"local-as": 65001, "router-id": "198.18.7.2"})
        assert adv.stopped and door.advertiser is None
        assert door.status() == {"state": "disabled"}
        await door.close()
        worker.shutdown()
        service.store.close()

    asyncio.run(scenario())


def test_netconf_get_shows_sessions_and_announced_vips() -> None:
    from lxml import etree

    from appliance.config.schema import get_schema
    from northbound.netconf.output import json_to_xml
    from northbound.netconf.schema_index import SchemaIndex
    from northbound.netconf.state import bgp_state_doc

    detail = {"speaker": "running", "ha-role": "master", "announced": ["198.19.0.10/32"],
              "neighbor": [{"address": "198.18.7.1", "remote-as": 65000,
                            "session-state": "established", "since": "2026-11-29T21:00:00Z",
                            "prefixes-sent": 1}]}  # fmt: skip
    state = {"sluice:bgp": {"state": bgp_state_doc(detail)}}
    config = {"sluice:bgp": {"local-as": 65001, "router-id": "198.18.7.2", "neighbor": [
        {"address": "198.18.7.1", "remote-as": 65000, "password": "********"}]}}
    idx = SchemaIndex(get_schema())
    data = etree.Element("data")
    json_to_xml(data, config, idx.top, idx.namespace, overlay=state)
    text = etree.tostring(data).decode()
    for piece in ("<session-state>established</session-state>", "<prefixes-sent>1</prefixes-sent>",
                  "<announced>198.19.0.10/32</announced>", "<ha-role>master</ha-role>",
                  "<speaker>running</speaker>"):
        assert piece in text, text  # fmt: skip
    assert "password" not in text
    assert bgp_state_doc({"speaker": "disabled", "neighbor": []}) == {}


# -- the cluster default algorithm ---------------------------------------------------------


def test_services_without_an_algorithm_run_maglev_when_bgp_has_a_neighbour() -> None:
    from appliance.algorithm import default_algorithm, default_for_doc, service_algorithm
    from appliance.datapath.validate import max_slots

    assert default_algorithm(None) == "round-robin"
    assert default_algorithm({"local-as": 65001, "router-id": "198.18.7.2"}) == "round-robin"
    assert default_algorithm(SECTION) == "maglev"
    assert default_for_doc({"sluice:bgp": SECTION}) == "maglev"
    plain, rr = svc("a", "198.19.0.10"), svc("b", "198.19.0.11", algorithm="round-robin")
    assert service_algorithm(plain, "maglev") == "maglev"
    assert service_algorithm(rr, "maglev") == "round-robin"  # an explicit one is kept
    assert service_algorithm(plain) == "round-robin"
    # The datapath's capacity check counts the table the service will really get.
    assert (max_slots(plain), max_slots(plain, "maglev")) == (1, 4027)


# -- the speaker's ExaBGP speed-up (appliance/bgp/speedups.py) ------------------------------

SPEEDUP_CHECK = """
import sys
from exabgp.environment import getenv
from exabgp.logger import log
log.init(getenv())
from exabgp.configuration.configuration import Configuration
from appliance.bgp import speedups

c = Configuration([sys.argv[1]])
assert c.reload(), c.error
neighbor = next(iter(c.neighbors.values()))

def parse(line):
    c.static.clear()
    assert c.partial("static", line), line
    c.scope.to_context()
    return c.scope.pop_routes()

for line in ("attributes next-hop self med 10 community [ 65001:7 ] nlri 198.19.0.1/32 "
             "198.19.0.2/32 198.19.0.3/32",
             "attributes next-hop 198.18.7.9 local-preference 5000 as-path [ 65001 65001 ] "
             "nlri 198.19.1.1/32 198.19.1.2/32"):
    changes = parse(line)
    before = [ch.extensive() for ch in changes]
    theirs = [neighbor.remove_self(ch) for ch in changes]
    ours = [speedups.remove_self(neighbor, ch) for ch in changes]
    assert [ch.extensive() for ch in changes] == before, "the caller's routes changed"
    for a, b in zip(theirs, ours, strict=True):
        assert a == b and a.index() == b.index(), (a, b)
        assert a.extensive() == b.extensive() and str(a.nlri.nexthop) == str(b.nlri.nexthop)
        assert a.attributes.index() == b.attributes.index(), (a.attributes, b.attributes)
    assert len({id(b.attributes) for b in ours}) == 1  # resolved once per attribute set
print("same")
"""


def test_the_speakers_remove_self_does_what_exabgps_does(tmp_path: Path) -> None:
    """The patched Neighbor.remove_self gives the routes ExaBGP's own gives (next-hop self
    resolved, explicit next hop kept, attributes equal), leaves the caller's routes alone,
    and resolves one attribute set once. In a child process: ExaBGP's logger and config
    parser are process-wide."""
    import subprocess
    import sys

    conf = tmp_path / "exabgp.conf"
    conf.write_text("neighbor 198.18.7.1 {\n router-id 198.18.7.2;\n local-address 198.18.7.2;\n"
                    " local-as 65001;\n peer-as 65000;\n family { ipv4 unicast; }\n}\n")
    res = subprocess.run([sys.executable, "-c", SPEEDUP_CHECK, str(conf)], capture_output=True,
                         text=True, timeout=60, cwd=Path(__file__).resolve().parent.parent)
    assert res.returncode == 0 and res.stdout.strip() == "same", res.stdout + res.stderr
