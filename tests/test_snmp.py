"""SNMP agent against net-snmp as the real peer: snmpget/snmpwalk/snmpbulkwalk and snmptrapd.

The agent runs in an asyncio loop on a thread (as in the daemon's loop), configured through a
real ConfigService on a temporary store; state comes from a fake provider the tests change.
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from snmpkit import (
    ENGINE_ID,
    FakeState,
    LoopThread,
    TrapReceiver,
    free_udp_port,
    have_std_mibs,
    have_tools,
    localized_key,
    parse_walk,
    snmp,
    string_index,
    v3_args,
)
from waiting import wait_for

from appliance import netlink
from appliance.config import ConfigService
from appliance.config.paths import service_path
from appliance.config.store import Store
from appliance.doors import DoorContext, DoorSpec, DoorSupervisor
from appliance.events import EventBus
from northbound.snmp import MIB_DIR, SnmpAgent


def test_the_real_peers_are_installed() -> None:
    """net-snmp's tools, snmptrapd and smilint are installed by scripts/setup: missing,
    they fail the suite instead of turning the SNMP tests into skips."""
    for tool in ("snmpget", "snmpwalk", "snmpbulkwalk", "snmptrapd", "smilint"):
        assert have_tools(tool), f"{tool} is not installed (scripts/setup installs it)"

ENT = "1.3.6.1.4.1.32473"
SVC = f"{ENT}.1.2.1"
EP = f"{ENT}.1.3.1"
COMMUNITY = "s3cret-ro"
AUTH_PASS, PRIV_PASS = "authpass123", "privpass123"
# Numeric OIDs, "OID value" lines, enums as numbers, no units.
OUT = "-OnqeU"
ALLOWED_PREFIXES = ("1.3.6.1.2.1.1.", "1.3.6.1.2.1.2.", "1.3.6.1.2.1.31.", f"{ENT}.",
                    "1.3.6.1.6.3.10.2.1.")


def snmp_section(port: int, **extra: Any) -> dict[str, Any]:
    return {
        "enabled": True,
        "port": port,
        "listen-address": ["127.0.0.1", "::1"],
        "engine-id": ENGINE_ID,
        "community": [{"name": "ro", "secret": COMMUNITY}],
        "usm-user": [
            {
                "name": "ops",
                "auth-protocol": "sha-256",
                "auth-key": localized_key(AUTH_PASS, ENGINE_ID),
                "priv-protocol": "aes-128",
                "priv-key": localized_key(PRIV_PASS, ENGINE_ID),
                "security-level": "auth-priv",
            }
        ],
        **extra,
    }


SERVICES = [
    {
        "name": "web",
        "vip": "198.18.0.10",
        "port": 80,
        "algorithm": "maglev",
        "endpoint": [
            {"address": "198.18.1.1", "port": 8080},
            {"address": "198.18.1.2", "port": 8080, "weight": 3},
        ],
    },
    {
        "name": "dns6",
        "vip": "2001:db8::53",
        "protocol": "udp",
        "port": 53,
        "endpoint": [{"address": "2001:db8::1", "port": 53}],
    },
]


def commit(service: ConfigService, changes: list[dict[str, Any]]) -> Any:
    with service.open_session("tester", "test") as s:
        s.edit(changes)
        return s.commit("test")


class Harness:
    def __init__(self, tmp: Path, *, managers: list[dict[str, Any]] | None = None) -> None:
        self.port = free_udp_port()
        self.config = ConfigService(Store(tmp / "config.db"))
        extra = {"manager": managers} if managers else {}
        commit(
            self.config,
            [
                {"op": "merge", "path": "/sluice:snmp", "value": snmp_section(self.port, **extra)},
                {
                    "op": "merge",
                    "path": "/sluice:system",
                    "value": {
                        "hostname": "lb1",
                        "contact": "noc@example.org",
                        "location": "rack 7",
                    },
                },
                {
                    "op": "merge",
                    "path": "/sluice:datapath",
                    "value": {"interface": [{"name": "lo"}, {"name": "absent0"}]},
                },
                *[{"op": "create", "path": service_path(s["name"]), "value": s} for s in SERVICES],
            ],
        )
        self.state = FakeState()
        self.bus = EventBus()
        self.loop = LoopThread()
        # As the daemon runs it: the SNMP door under the door supervisor, which hands it
        # every change of /sluice:snmp.
        providers = self.state.providers()
        ctx = DoorContext(self.config, None, providers, self.bus, tmp, tmp / "sock")  # type: ignore[arg-type]
        self.supervisor = DoorSupervisor(ctx, [DoorSpec(
            "snmp", ("snmp",),
            lambda c, _section: SnmpAgent(c.service, providers, c.bus, cache_ttl=0.2))])
        self.loop.run(self.supervisor.start())
        self.agent: SnmpAgent = self.supervisor.doors["snmp"]  # type: ignore[assignment]

    @property
    def v2c(self) -> list[str]:
        return ["-v2c", "-c", COMMUNITY, "-t", "2", "-r", "1"]

    def target(self, v6: bool = False) -> str:
        return f"udp6:[::1]:{self.port}" if v6 else f"127.0.0.1:{self.port}"

    def walk(
        self, *auth: str, root: str = ".1", v6: bool = False, bulk: bool = True
    ) -> dict[str, str]:
        tool = "snmpbulkwalk" if bulk else "snmpwalk"
        res = snmp(tool, *auth, OUT, self.target(v6), root)
        assert res.returncode == 0, res.stderr
        return parse_walk(res.stdout)

    def get(self, oid: str) -> str:
        res = snmp("snmpget", *self.v2c, OUT, self.target(), oid)
        assert res.returncode == 0, res.stderr
        return parse_walk(res.stdout)[oid]

    def close(self) -> None:
        self.loop.run(self.supervisor.close())
        self.loop.stop()
        self.config.store.close()


@pytest.fixture(scope="module")
def h(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    harness = Harness(tmp_path_factory.mktemp("snmp"))
    yield harness
    harness.close()


def ep_index(service: str, address: str, port: int) -> str:
    import ipaddress

    ip = ipaddress.ip_address(address)
    kind = 1 if ip.version == 4 else 2
    return (
        f"{string_index(service)}.{kind}.{len(ip.packed)}."
        + ".".join(str(b) for b in ip.packed)
        + f".{port}"
    )


def check_tree(tree: dict[str, str]) -> None:
    """The whole walk: only the allowed subtrees, and values matching the config."""
    assert tree, "empty walk"
    outside = [oid for oid in tree if not oid.startswith(ALLOWED_PREFIXES)]
    assert not outside, f"served outside the view: {outside[:5]}"
    # system group
    assert "Sluice" in tree["1.3.6.1.2.1.1.1.0"]
    assert tree["1.3.6.1.2.1.1.2.0"].lstrip(".") == f"{ENT}.3.1"
    assert tree["1.3.6.1.2.1.1.4.0"] == "noc@example.org"
    assert tree["1.3.6.1.2.1.1.5.0"] == "lb1"
    assert tree["1.3.6.1.2.1.1.6.0"] == "rack 7"
    # IF-MIB: every interface of this namespace (not only the configured lo), by ifIndex.
    links = {link["index"]: link["name"] for link in netlink.links()}
    assert tree["1.3.6.1.2.1.2.1.0"] == str(len(links))
    for index, name in links.items():
        assert tree[f"1.3.6.1.2.1.2.2.1.2.{index}"] == name
        assert tree[f"1.3.6.1.2.1.31.1.1.1.1.{index}"] == name
    assert tree["1.3.6.1.2.1.2.2.1.2.1"] == "lo"
    assert int(tree["1.3.6.1.2.1.31.1.1.1.6.1"]) > 0  # ifHCInOctets
    # globals
    assert tree[f"{ENT}.1.1.2.0"] == "7"  # ct_map entries, from the real status shape
    assert tree[f"{ENT}.1.1.3.0"] == "1048576"  # default capacity
    assert tree[f"{ENT}.1.1.4.0"] == "2"
    assert tree[f"{ENT}.1.1.5.0"] == "3"
    # services, indexed by name
    web, dns = string_index("web"), string_index("dns6")
    assert tree[f"{SVC}.3.{web}"] == "1"  # ipv4
    assert tree[f"{SVC}.4.{web}"].replace(" ", "").upper() == "C612000A"  # 198.18.0.10
    assert tree[f"{SVC}.5.{web}"] == "1"  # tcp
    assert tree[f"{SVC}.6.{web}"] == "80"
    assert tree[f"{SVC}.9.{web}"] == "4"  # maglev
    assert tree[f"{SVC}.11.{web}"] == "2"
    assert tree[f"{SVC}.3.{dns}"] == "2"  # ipv6
    assert tree[f"{SVC}.5.{dns}"] == "2"  # udp
    # endpoints, indexed by (service, address type, address, port)
    e2 = ep_index("web", "198.18.1.2", 8080)
    assert tree[f"{EP}.4.{e2}"] == "3"
    assert tree[f"{EP}.4.{ep_index('dns6', '2001:db8::1', 53)}"] == "1"


def test_smilint_clean() -> None:
    res = subprocess.run(
        ["smilint", "-l", "4", str(MIB_DIR / "SLUICE-LB-MIB.txt")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    out = res.stdout + res.stderr
    if "failed to locate MIB module" in out:
        pytest.skip("standard MIB modules (SNMPv2-SMI, INET-ADDRESS-MIB...) not installed")
    assert res.returncode == 0 and not out.strip(), out


def test_v2c_walk_whole_tree(h: Harness) -> None:
    check_tree(h.walk(*h.v2c))


def have_ipv6() -> bool:
    try:
        free_udp_port(socket.AF_INET6)
    except OSError:
        return False
    return True


@pytest.mark.skipif(not have_ipv6(), reason="no IPv6 loopback")
def test_v2c_getnext_walk_over_ipv6_matches_bulk(h: Harness) -> None:
    bulk = h.walk(*h.v2c, root=ENT)
    plain = h.walk(*h.v2c, root=ENT, v6=True, bulk=False)
    # Counters of lo move between walks; the LB subtree does not.
    assert plain == bulk
    assert h.walk(*h.v2c, root=ENT, v6=True) == bulk  # the v2c fast path over IPv6 too


def test_v3_authpriv_walk_whole_tree(h: Harness) -> None:
    check_tree(h.walk(*v3_args("ops", AUTH_PASS, PRIV_PASS), "-t", "2", "-r", "1"))


@pytest.mark.skipif(not have_std_mibs(), reason="standard MIB modules not installed")
def test_names_resolve_with_the_mib(h: Harness) -> None:
    res = snmp(
        "snmpwalk",
        "-v2c",
        "-c",
        COMMUNITY,
        "-t",
        "2",
        "-r",
        "1",
        h.target(),
        "SLUICE-LB-MIB::sluiceServiceTable",
    )
    assert res.returncode == 0, res.stderr
    assert 'sluiceServiceProtocol."web" = INTEGER: tcp(1)' in res.stdout
    assert 'sluiceServiceVip."dns6" = Hex-STRING: 20 01 0D B8' in res.stdout


def test_counters_follow_the_state_provider(h: Harness) -> None:
    web = string_index("web")
    e1 = ep_index("web", "198.18.1.1", 8080)
    h.state.services["web"] = {
        "packets": 10,
        "bytes": 1000,
        "active-sessions": 2,
        "total-sessions": 5,
    }
    h.state.endpoints[("web", "198.18.1.1", 8080)] = {
        "health": "up",
        "packets": 4,
        "bytes": 400,
        "rtt-us": 250,
        "last-change": "2026-11-23T19:00:00Z",
    }
    # Live values come from the state snapshot, refreshed in the background.
    wait_for(lambda: h.get(f"{SVC}.13.{web}") == "10", what="the 10-endpoint count")
    assert h.get(f"{EP}.6.{e1}") == "1"  # up
    assert h.get(f"{EP}.9.{e1}") == "250"
    # DateAndTime: rendered with its display hint when the MIB loads, in hex otherwise.
    changed = h.get(f"{EP}.7.{e1}")
    assert changed.startswith("2026-11-23,19:0:0.0") or changed.replace(" ", "").upper().startswith(
        "07EA0B1713000000"
    ), changed
    h.state.services["web"]["packets"] = 2**40  # past 32 bits: Counter64
    h.state.services["web"]["bytes"] = 123456789012
    wait_for(lambda: h.get(f"{SVC}.13.{web}") == str(2**40), what="the 2**40 counter")
    assert h.get(f"{SVC}.14.{web}") == "123456789012"
    # One endpoint up, one unknown: degraded; endpoints-up counted from endpoint health.
    assert h.get(f"{SVC}.10.{web}") == "3"
    assert h.get(f"{SVC}.12.{web}") == "1"


def test_wrong_credentials_get_nothing(h: Harness) -> None:
    oid = "1.3.6.1.2.1.1.5.0"
    quick = ["-t", "0.5", "-r", "0", "-On"]
    bad = [
        ["-v2c", "-c", "wrong"],
        ["-v1", "-c", COMMUNITY],  # v1 is not served
        v3_args("ops", "wrong-pass-1", PRIV_PASS),
        v3_args("ops", AUTH_PASS, "wrong-pass-2"),
        v3_args("nobody", AUTH_PASS, PRIV_PASS),
        ["-v3", "-l", "noAuthNoPriv", "-u", "ops"],
    ]
    for args in bad:
        res = snmp("snmpget", *args, *quick, h.target(), oid)
        assert res.returncode != 0 and "lb1" not in res.stdout, (args, res.stdout, res.stderr)


SNMP_ENGINE = "1.3.6.1.6.3.10.2.1"  # snmpEngineID .1, Boots .2, Time .3, MaxMessageSize .4


def test_engine_tables_are_not_reachable(h: Harness) -> None:
    # snmpCommunityTable, usmUserTable, vacm: pysnmp's own MIB must never answer. Of
    # snmpModules only the snmpEngine group is served (from the agent's own tree).
    engine_group = {f"{SNMP_ENGINE}.{c}.0" for c in (1, 2, 3, 4)}
    for root in ("1.3.6.1.6.3", "1.3.6.1.6.3.18.1.1", "1.3.6.1.6.3.15.1.2.2"):
        res = snmp("snmpwalk", *h.v2c, OUT, h.target(), root)
        assert COMMUNITY not in res.stdout
        walked = parse_walk(res.stdout)
        served = {oid for oid, v in walked.items() if "No more variables" not in v} - engine_group
        assert not [oid for oid in served if oid.startswith("1.3.6.1.6.3")], res.stdout
    res = snmp("snmpget", *h.v2c, OUT, h.target(), *sorted(engine_group))
    assert res.returncode == 0, res.stderr
    engine = parse_walk(res.stdout)
    assert engine[f"{SNMP_ENGINE}.1.0"].replace(" ", "").lower() == ENGINE_ID
    assert int(engine[f"{SNMP_ENGINE}.2.0"]) >= 1
    assert engine[f"{SNMP_ENGINE}.4.0"] == "65507"


def test_set_is_refused(h: Harness) -> None:
    res = snmp(
        "snmpset",
        "-v2c",
        "-c",
        COMMUNITY,
        "-t",
        "1",
        "-r",
        "0",
        h.target(),
        "1.3.6.1.2.1.1.5.0",
        "s",
        "evil",
    )
    assert res.returncode != 0
    assert h.get("1.3.6.1.2.1.1.5.0") == "lb1"


def quick_get(community: str, target: str, oid: str) -> subprocess.CompletedProcess[str]:
    return snmp("snmpget", "-v2c", "-c", community, "-t", "0.3", "-r", "0", OUT, target, oid)


def test_commit_reconfigures(h: Harness) -> None:
    name = "added"
    commit(
        h.config,
        [
            {
                "op": "create",
                "path": service_path(name),
                "value": {
                    "name": name,
                    "vip": "198.18.0.20",
                    "port": 443,
                    "endpoint": [{"address": "198.18.2.1", "port": 443}],
                },
            }
        ],
    )
    oid = f"{SVC}.6.{string_index(name)}"
    # The index is rebuilt in a worker thread after the commit: poll for the value itself
    # ("No Such Instance" is an answer too, just not the one we wait for).
    def port_value() -> str | None:
        value = parse_walk(quick_get(COMMUNITY, h.target(), oid).stdout).get(oid)
        return value if value == "443" else None

    wait_for(port_value, what="the new service's port")
    assert h.get(f"{ENT}.1.1.4.0") == "3"
    try:
        # A changed community secret replaces the old one once the commit is applied.
        commit(
            h.config,
            [
                {
                    "op": "replace",
                    "path": "/sluice:snmp/community[name='ro']",
                    "value": {"name": "ro", "secret": "rotated"},
                }
            ],
        )
        wait_for(lambda: quick_get("rotated", h.target(), "1.3.6.1.2.1.1.5.0").returncode == 0,
                 what="the new community accepted")
        assert quick_get(COMMUNITY, h.target(), "1.3.6.1.2.1.1.5.0").returncode != 0
    finally:
        # Leave the module's agent as the other tests expect it.
        commit(
            h.config,
            [
                {
                    "op": "replace",
                    "path": "/sluice:snmp/community[name='ro']",
                    "value": {"name": "ro", "secret": COMMUNITY},
                },
                {"op": "delete", "path": service_path(name)},
            ],
        )
        wait_for(lambda: quick_get(COMMUNITY, h.target(), "1.3.6.1.2.1.1.5.0").returncode == 0,
                 what="the old community back")


# -- notifications ---------------------------------------------------------------------------
def trap_receiver(tmp: Path) -> TrapReceiver:
    return TrapReceiver(
        tmp,
        f"authCommunity log {COMMUNITY}\n"
        f"createUser -e 0x{ENGINE_ID} ops SHA-256 {AUTH_PASS} AES {PRIV_PASS}\n"
        "authUser log ops\n",
    )


def test_notifications_reach_snmptrapd(tmp_path: Path) -> None:
    receiver = trap_receiver(tmp_path)
    managers = [
        {
            "name": "nms-v2c",
            "address": "127.0.0.1",
            "port": receiver.port,
            "notification-type": "inform",
            "community": "ro",
        },
        {
            "name": "nms-v3",
            "address": "127.0.0.1",
            "port": receiver.port,
            "notification-type": "trap",
            "usm-user": "ops",
        },
    ]
    (tmp_path / "agent").mkdir()
    harness = Harness(tmp_path / "agent", managers=managers)
    try:
        # coldStart at start, through both managers.
        cold = ".1.3.6.1.6.3.1.1.5.1"
        text = receiver.wait_for(cold, count=2)
        assert f"INFORM, SNMP v2c, community {COMMUNITY}|" in text, text
        assert "TRAP2, SNMP v3, user ops" in text, text

        h_state = harness.state
        for addr in ("198.18.1.1", "198.18.1.2"):
            h_state.endpoints[("web", addr, 8080)] = {"health": "up"}
        # The agent reads health from the state snapshot: wait until it has both.
        current = harness.agent.state.snapshot.current
        wait_for(lambda: all(current().endpoint("web", a, 8080).get("health") == "up"
                                for a in ("198.18.1.1", "198.18.1.2")))  # fmt: skip

        def event(addr: str, old: str, new: str) -> None:
            harness.bus.publish(
                {
                    "type": "endpoint-state",
                    "service": "web",
                    "address": addr,
                    "port": 8080,
                    "old": old,
                    "new": new,
                    "last-error": "connect refused" if new == "down" else "",
                }
            )

        ep_trap = f".{ENT}.0.1"
        svc_trap = f".{ENT}.0.2"
        event("198.18.1.1", "up", "down")
        text = receiver.wait_for(ep_trap, count=2)
        assert "connect refused" in text
        e1 = ep_index("web", "198.18.1.1", 8080)
        assert f".{EP}.6.{e1}" in text
        assert svc_trap not in text  # web still has a healthy endpoint

        event("198.18.1.2", "up", "down")  # last healthy endpoint gone: service down
        text = receiver.wait_for(svc_trap, count=2)
        assert (
            f".{SVC}.10.{string_index('web')} = INTEGER: 2" in text
            or f".{SVC}.10.{string_index('web')} = INTEGER: down(2)" in text
        ), text
        event("198.18.1.1", "down", "up")  # and back up
        receiver.wait_for(svc_trap, count=4)

        commit(
            harness.config,
            [{"op": "merge", "path": "/sluice:system", "value": {"location": "rack 8"}}],
        )
        text = receiver.wait_for(f".{ENT}.0.3", count=2)
        assert "sections changed: system" in text

        # An alarm (the daemon runs degraded) reaches the NMS as sluiceAlarm.
        from appliance.alarms import Alarms

        Alarms(harness.bus).raise_("datapath", "datapath failed to start: no bpffs")
        text = receiver.wait_for(f".{ENT}.0.4", count=2)
        assert "datapath failed to start: no bpffs" in text, text

        # An HA role change reaches the NMS as sluiceHaRoleChange.
        harness.bus.publish({"type": "ha-role", "role": "master", "instance": "front",
                             "instance-role": "master", "previous": "backup"})  # fmt: skip
        text = receiver.wait_for(f".{ENT}.0.5", count=2)
        assert "front" in text and f".{ENT}.1.4.8.0 = INTEGER: master(3)" in text, text

        # BGP: the peer table (after BGP4-MIB's bgpPeerTable) from /bgp and the BGP door's
        # provider, and the established / backward-transition traps.
        commit(harness.config, [{"op": "merge", "path": "/sluice:bgp", "value": {
            "local-as": 65001, "router-id": "198.18.7.2",
            "neighbor": [{"address": "198.18.7.1", "remote-as": 65000},
                         {"address": "2001:db8:7::1", "remote-as": 4200000000}]}}])  # fmt: skip
        since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 30))
        sessions = [{"address": "198.18.7.1", "session-state": "established", "since": since,
                     "prefixes-sent": 3},
                    {"address": "2001:db8:7::1", "session-state": "connected", "since": since}]
        harness.agent.state.providers["bgp"] = lambda: {"speaker": "running",
                                                        "neighbor": sessions}  # fmt: skip
        wait_for(lambda: len(harness.agent.snapshot.bgp_peers) == 2, what="the two peer rows")
        peers = harness.walk(*harness.v2c, root=f"{ENT}.1.5")
        v4, v6 = "1.4.198.18.7.1", "2.16.32.1.13.184.0.7" + ".0" * 9 + ".1"
        row = f"{ENT}.1.5.1"
        assert peers[f"{row}.3.{v4}"] == "65000" and peers[f"{row}.3.{v6}"] == "4200000000"
        assert peers[f"{row}.4.{v4}"] == "6" and peers[f"{row}.4.{v6}"] == "4"  # opensent
        assert 29 <= int(peers[f"{row}.5.{v4}"]) < 300 and peers[f"{row}.5.{v6}"] == "0"
        assert peers[f"{row}.7.{v4}"] == "3" and peers[f"{row}.7.{v6}"] == "0"
        assert peers[f"{row}.6.{v4}"].startswith(since[:10])  # DateAndTime, as net-snmp shows it

        def session(neighbor: str, old: str, new: str) -> None:
            harness.bus.publish({"type": "bgp-neighbor", "neighbor": neighbor, "old": old,
                                 "new": new, "time": since})  # fmt: skip

        established, backward = f".{ENT}.0.6", f".{ENT}.0.7"
        session("198.18.7.1", "connected", "established")
        text = receiver.wait_for(established, count=2)
        assert f".{row}.4.{v4} = INTEGER: established(6)" in text, text
        remote_as = text.split(f".{row}.3.{v4} = ", 1)[1][:20]  # the peer's AS in the trap
        assert "65000" in remote_as, text
        session("198.18.7.1", "established", "down")
        text = receiver.wait_for(backward, count=2)
        assert f".{ENT}.1.4.10.0 = INTEGER: established(6)" in text, text
        session("2001:db8:7::1", "idle", "connected")  # up, short of established: no trap
        session("2001:db8:7::1", "connected", "established")
        text = receiver.wait_for(established, count=4)
        assert text.count(backward) == 2, text
    finally:
        harness.close()
        receiver.close()


def test_ha_role_and_sync_tables(tmp_path: Path) -> None:
    """sluiceHa: the HA door's state (roles, witness, last failover, the sync per peer) as
    an NMS walks it; rows from /sluice:ha, values from the door's ``ha`` provider. The
    same objects are walked on a real pair in tests/test_ha_failover.py."""
    harness = Harness(tmp_path)
    try:
        commit(harness.config, [{"op": "merge", "path": "/sluice:ha", "value": {
            "instance": [{"name": "front", "virtual-router-id": 51, "priority": 150,
                          "interface": "eth0", "peer": ["198.18.0.3"], "vip": ["198.18.0.10"]},
                         {"name": "front6", "virtual-router-id": 52, "interface": "eth0",
                          "peer": ["2001:db8::3"], "vip": ["2001:db8::10"]}],
            "sync": {"address": "198.18.1.2", "peer": ["198.18.1.3", "2001:db8:1::3"],
                     "key": "00112233445566778899aabbccddeeff"}}}])  # fmt: skip
        state = {
            "enabled": True, "witness-reachable": True, "synced": True,
            "last-failover": "2026-11-30T07:01:02Z",
            "instances": [{"name": "front", "role": "master", "since": "2026-11-30T07:01:02Z"},
                          {"name": "front6", "role": "backup", "since": None}],
            "sync": {"listening": "198.18.1.2:7788", "refused": {},
                     "peers": {"198.18.1.3": {"connected": True, "flows": 1200, "dumps": 2,
                                              "last_error": None, "refused": 0,
                                              "lag": {"p50-ms": 0.61, "p99-ms": 4.3,
                                                      "samples": 812}}},
                     "sending": {"198.18.1.3": {"connected": True, "flows": 3400, "dumps": 3,
                                                "last_error": None},
                                 "2001:db8:1::3": {"connected": False, "flows": 0, "dumps": 0,
                                                   "last_error": "connection refused"}},
                     "datapath": {"installed": 1190, "unbound": 10, "ring-drops": 4,
                                  "refused-records": {"vip": 1, "timeout": 2}}},
        }  # fmt: skip
        harness.agent.state.providers["ha"] = lambda: state
        harness.agent.state.clear()
        wait_for(lambda: len(harness.agent.snapshot.ha_peers) == 2, what="the two peer rows")
        wait_for(lambda: harness.agent.state.ha().get("synced"), what="the ha provider read")
        ha = harness.walk(*harness.v2c, root=f"{ENT}.1.20")
        glob = f"{ENT}.1.20.1"
        assert [ha[f"{glob}.{c}.0"] for c in range(1, 8)] == ["1", "1", ha[f"{glob}.3.0"],
                                                                 "1190", "10", "3", "4"], ha
        assert ha[f"{glob}.3.0"].startswith("2026-11-30,7:1:2"), ha  # DateAndTime, UTC
        inst, front, front6 = f"{ENT}.1.20.2.1", string_index("front"), string_index("front6")
        assert ha[f"{inst}.2.{front}"] == "3" and ha[f"{inst}.2.{front6}"] == "2"  # roles
        assert ha[f"{inst}.4.{front}"] == "51" and ha[f"{inst}.5.{front}"] == "150"
        assert ha[f"{inst}.5.{front6}"] == "100"  # the YANG default
        peer = f"{ENT}.1.20.3.1"
        v4, v6 = "1.4.198.18.1.3", "2.16.32.1.13.184.0.1" + ".0" * 9 + ".3"
        assert [ha[f"{peer}.{c}.{v4}"] for c in range(3, 13)] == [
            "1", "1", "1200", "3400", "610", "4300", "812", "2", "3", ""], ha
        assert [ha[f"{peer}.{c}.{v6}"] for c in range(3, 13)] == [
            "2", "2", "0", "0", "0", "0", "0", "0", "0", "connection refused"], ha
        # A role change is read at once (the trap's event pokes the state snapshot).
        state = {**state, "instances": [{"name": "front", "role": "fault", "since": None}]}
        harness.bus.publish({"type": "ha-role", "role": "backup", "instance": "front",
                             "instance-role": "fault", "previous": "master"})  # fmt: skip
        oid = f"{inst}.2.{front}"
        wait_for(lambda: harness.get(oid) == "4", timeout=3, what="the new role")
        assert harness.get(f"{inst}.2.{front6}") == "1"  # no longer reported: init
    finally:
        harness.close()


# -- the v2c GETBULK fast path (fastpath.py) ------------------------------------------------
def bulk_request(community: str, oid: tuple[int, ...], max_rep: int, non_rep: int = 0) -> bytes:
    from northbound.snmp import ber

    varbinds = ber.tlv(0x30, ber.tlv(0x30, ber.object_id(oid) + b"\x05\x00"))
    pdu = ber.integer(4242) + ber.integer(non_rep) + ber.integer(max_rep) + varbinds
    return ber.tlv(0x30, ber.integer(1) + ber.octets(community) + ber.tlv(0xA5, pdu))


def test_v2c_fast_path_answers_as_pysnmp_does(h: Harness) -> None:
    engine = h.agent._engine
    assert engine is not None and engine.fast is not None
    before = engine.fast.answered
    fast = h.walk(*h.v2c, root=ENT)
    assert engine.fast.answered > before  # the walk went through the fast path
    original = engine.fast.answer
    engine.fast.answer = lambda msg: None  # type: ignore[method-assign]
    try:
        slow = h.walk(*h.v2c, root=ENT)
    finally:
        engine.fast.answer = original  # type: ignore[method-assign]
    assert fast == slow and len(fast) > 20
    # An unknown community is not answered by either path.
    res = snmp("snmpbulkwalk", "-v2c", "-c", "wrong", "-t", "0.5", "-r", "0", OUT, h.target(),
               ENT)  # fmt: skip
    assert res.returncode != 0 and ENT not in res.stdout.replace(".1.3", "1.3")


def test_v2c_fast_path_survives_malformed_requests(h: Harness) -> None:
    good = bulk_request(COMMUNITY, (1, 3, 6, 1, 2, 1, 1), 5)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(2)
        sock.sendto(good, ("127.0.0.1", h.port))
        answer = sock.recv(65535)
        assert answer[0] == 0x30 and b"\xa2" in answer and b"lb1" in answer
        # Every truncation, a flipped length, junk, a huge max-repetitions, non-repeaters
        # (handed to pysnmp): none may stop the agent.
        bad = [good[:n] for n in range(1, len(good))]
        bad += [good[:1] + b"\x84\xff\xff\xff\xff" + good[2:], b"\x30\x03\x02\x01\x01",
                b"\xff" * 40, bulk_request(COMMUNITY, (1, 3, 6, 1, 2, 1, 1), 2**31 - 1),
                bulk_request(COMMUNITY, (1, 3, 6, 1, 2, 1, 1), 3, non_rep=1)]  # fmt: skip
        for msg in bad:
            sock.sendto(msg, ("127.0.0.1", h.port))
    assert h.get("1.3.6.1.2.1.1.5.0") == "lb1"


def test_snmptable_reads_the_tables_over_v2c_and_v3(h: Harness) -> None:
    """net-snmp's snmptable (GETBULK by default) with the shipped MIB, both versions."""
    for auth in (h.v2c, [*v3_args("ops", AUTH_PASS, PRIV_PASS), "-t", "2", "-r", "1"]):
        res = snmp("snmptable", *auth, "-Cb", "-Cf", "|", "-Ci", h.target(),
                   "SLUICE-LB-MIB::sluiceServiceTable")  # fmt: skip
        assert res.returncode == 0, res.stderr
        lines = res.stdout.splitlines()
        header = next(line for line in lines if line.startswith("index|"))
        rows = {line.split("|")[0]: dict(zip(header.split("|"), line.split("|"), strict=True))
                for line in lines if line.startswith('"')}  # fmt: skip
        assert set(rows) == {'"web"', '"dns6"'}, res.stdout
        assert rows['"web"']["Protocol"] in ("tcp", "1") and rows['"web"']["Port"] == "80"
        assert rows['"dns6"']["Protocol"] in ("udp", "2")
        assert rows['"web"']["EndpointsTotal"] == "2"
        res = snmp("snmptable", *auth, "-Cb", "-Cf", "|", "-Ci", h.target(),
                   "SLUICE-LB-MIB::sluiceEndpointTable")  # fmt: skip
        assert res.returncode == 0, res.stderr
        assert sum(1 for line in res.stdout.splitlines() if line.startswith('"')) == 3
