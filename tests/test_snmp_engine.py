"""The SNMP engine's life against net-snmp: snmpEngineBoots persisted and incremented on
every start and reconfigure, coldStart when a commit switches SNMP on, v3 informs to
snmptrapd (engine-ID discovery, keys localized to the receiver), GETBULK edge cases.

The agent runs as the daemon runs it, under the door supervisor, in an asyncio loop on a
thread, over a real ConfigService; the state directory is the test's.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from snmpkit import (
    LoopThread,
    TrapReceiver,
    free_udp_port,
    localized_key,
    master_key,
    parse_walk,
    snmp,
)
from waiting import wait_for

from appliance.config import ConfigService
from appliance.config.store import Store
from appliance.doors import DoorContext, DoorSpec, DoorSupervisor
from appliance.events import EventBus
from northbound.snmp import SnmpAgent

ENGINE_ID = "80007ed90573756963652d7465737402"
COMMUNITY = "eng-ro"
AUTH_PASS, PRIV_PASS = "inform-auth-1", "inform-priv-1"
BOOTS = "1.3.6.1.6.3.10.2.1.2.0"  # SNMP-FRAMEWORK-MIB snmpEngineBoots.0
SYS_NAME = "1.3.6.1.2.1.1.5.0"
COLD_START = ".1.3.6.1.6.3.1.1.5.1"
CONFIG_COMMITTED = ".1.3.6.1.4.1.32473.0.3"


def user(master: bool) -> dict[str, Any]:
    u = {
        "name": "ops",
        "auth-protocol": "sha-256",
        "auth-key": localized_key(AUTH_PASS, ENGINE_ID),
        "priv-protocol": "aes-128",
        "priv-key": localized_key(PRIV_PASS, ENGINE_ID),
    }
    if master:
        u |= {"auth-master-key": master_key(AUTH_PASS), "priv-master-key": master_key(PRIV_PASS)}
    return u


class Agent:
    """One daemon life: a config service on `tmp`'s store and the SNMP door."""

    def __init__(self, tmp: Path, port: int) -> None:
        self.port = port
        self.config = ConfigService(Store(tmp / "config.db"))
        self.loop = LoopThread()
        ctx = DoorContext(self.config, None, {}, EventBus(), tmp, tmp / "sock")  # type: ignore[arg-type]
        self.supervisor = DoorSupervisor(ctx, [DoorSpec(
            "snmp", ("snmp",), lambda c, _s: SnmpAgent(c.service, {}, c.bus, cache_ttl=0.2,
                                                      state_dir=c.state_dir))])  # fmt: skip
        self.loop.run(self.supervisor.start())

    def commit(self, snmp_section: dict[str, Any]) -> None:
        with self.config.open_session("tester", "test") as s:
            s.edit([{"op": "replace", "path": "/sluice:snmp", "value": snmp_section}])
            s.commit("test")

    def get(self, *oids: str, auth: list[str] | None = None) -> dict[str, str]:
        args = auth or ["-v2c", "-c", COMMUNITY]
        res = snmp("snmpget", *args, "-t", "1", "-r", "1", "-OnqeU",
                   f"127.0.0.1:{self.port}", *oids)  # fmt: skip
        return parse_walk(res.stdout) if res.returncode == 0 else {}

    def boots(self) -> int | None:
        value = self.get(BOOTS).get(BOOTS)
        return int(value) if value and value.isdigit() else None

    def close(self) -> None:
        self.loop.run(self.supervisor.close())
        self.loop.stop()
        self.config.store.close()


def section(port: int, **extra: Any) -> dict[str, Any]:
    return {"enabled": True, "port": port, "listen-address": ["127.0.0.1"],
            "engine-id": ENGINE_ID, "community": [{"name": "ro", "secret": COMMUNITY}]} | extra


@pytest.fixture
def trapd(tmp_path: Path) -> Iterator[TrapReceiver]:
    (tmp_path / "trapd").mkdir()
    # The inform user is localized to snmptrapd's own engine ID (createUser without -e;
    # snmptrapd makes up the ID at its first start); the agent learns that ID by
    # discovery and localizes its master keys to it.
    receiver = TrapReceiver(
        tmp_path / "trapd",
        f"authCommunity log {COMMUNITY}\n"
        f"createUser ops SHA-256 {AUTH_PASS} AES {PRIV_PASS}\n"
        "authUser log ops\n",
    )
    yield receiver
    receiver.close()


def test_boots_persist_and_count_starts_and_reconfigures(
    tmp_path: Path, trapd: TrapReceiver
) -> None:
    port = free_udp_port()
    (tmp_path / "lb").mkdir()
    managers = [{"name": "trapd", "address": "127.0.0.1", "port": trapd.port,
                 "community": "ro"}]  # fmt: skip
    agent = Agent(tmp_path / "lb", port)
    try:
        # Off at start: no engine, no boots, no coldStart.
        assert agent.boots() is None
        # A commit switches SNMP on: the engine starts (boots 1) and says coldStart.
        agent.commit(section(port, manager=managers))
        assert wait_for(agent.boots, 8, "snmpEngineBoots") == 1
        trapd.wait_for(COLD_START, count=1)
        # A commit changing the snmp section rebuilds the engine: boots 2, coldStart again.
        second = {"name": "x", "secret": "other"}
        agent.commit(section(port, manager=managers,
                             community=[{"name": "ro", "secret": COMMUNITY}, second]))  # fmt: skip
        wait_for(lambda: agent.boots() == 2, 8, "snmpEngineBoots 2")
        trapd.wait_for(COLD_START, count=2)
        # A commit elsewhere in the config does not restart the engine.
        with agent.config.open_session("tester", "test") as s:
            s.edit([{"op": "merge", "path": "/sluice:system", "value": {"location": "r9"}}])
            s.commit("test")
        trapd.wait_for(CONFIG_COMMITTED, count=1)
        assert agent.boots() == 2
    finally:
        agent.close()
    assert (tmp_path / "lb" / "snmp-engine-boots").read_text().strip() == "2"
    # The next daemon start continues from the stored value, as USM replay protection
    # needs (an engine back at boots 1 would accept old recorded messages).
    agent = Agent(tmp_path / "lb", port)
    try:
        assert wait_for(agent.boots, 8, "snmpEngineBoots") == 3
        trapd.wait_for(COLD_START, count=3)
        # v3 discovery (what USM uses) reports the same boots: net-snmp's report-driven
        # time sync then succeeds with an authPriv user.
        res = snmp("snmpget", "-v3", "-l", "authNoPriv", "-u", "nobody", "-a", "SHA-256",
                   "-A", "whatever-pass", "-t", "1", "-r", "0", "-Dlcd_set_enginetime",
                   f"127.0.0.1:{port}", SYS_NAME)  # fmt: skip
        assert "boots=3," in res.stderr, res.stderr
    finally:
        agent.close()


def test_v3_inform_reaches_snmptrapd_after_discovery(tmp_path: Path, trapd: TrapReceiver) -> None:
    port = free_udp_port()
    (tmp_path / "lb").mkdir()
    agent = Agent(tmp_path / "lb", port)
    inform = {"name": "nms", "address": "127.0.0.1", "port": trapd.port,
              "notification-type": "inform", "usm-user": "ops"}  # fmt: skip
    try:
        # Without master keys a v3 inform cannot be authenticated to the receiver: the
        # commit is refused, naming the rule, and running config is unchanged.
        with pytest.raises(Exception) as err:
            agent.commit(section(port, **{"usm-user": [user(master=False)], "manager": [inform]}))
        assert "a v3 inform needs its usm-user's auth-master-key" in str(err.value)
        assert agent.config.running_doc().get("sluice:snmp", {}).get("enabled") is not True
        agent.commit(section(port, **{"usm-user": [user(master=True)], "manager": [inform]}))
        # snmptrapd only logs an inform it authenticated and decrypted with keys localized
        # to its own engine ID; it acknowledges it (the agent would otherwise retry).
        text = trapd.wait_for("INFORM, SNMP v3, user ops", timeout=10)
        assert COLD_START in text, text
        # The agent itself still answers the same user (keys localized to its engine ID).
        auth = ["-v3", "-l", "authPriv", "-u", "ops", "-a", "SHA-256", "-A", AUTH_PASS,
                "-x", "AES", "-X", PRIV_PASS]  # fmt: skip
        wait_for(lambda: agent.get(SYS_NAME, auth=auth), 8, "sysName over v3")
    finally:
        agent.close()


def test_getbulk_with_zero_repetitions_answers_an_empty_list(tmp_path: Path) -> None:
    port = free_udp_port()
    agent = Agent(tmp_path, port)
    try:
        agent.commit(section(port))
        wait_for(agent.boots, 8, "snmpEngineBoots")
        target = f"127.0.0.1:{port}"
        common = ["-v2c", "-c", COMMUNITY, "-t", "1", "-r", "0", "-OnqeU"]
        # max-repetitions 0, no non-repeaters: an empty varbind list, no error.
        res = snmp("snmpbulkget", *common, "-Cn0", "-Cr0", target, SYS_NAME)
        assert res.returncode == 0 and "Error in packet" not in res.stdout + res.stderr, res
        assert parse_walk(res.stdout) == {}
        # With a non-repeater: only its successor.
        res = snmp("snmpbulkget", *common, "-Cn1", "-Cr0", target, "1.3.6.1.2.1.1.4.0",
                   "1.3.6.1.2.1.1")  # fmt: skip
        assert res.returncode == 0, res
        assert list(parse_walk(res.stdout)) == [SYS_NAME]
    finally:
        agent.close()
