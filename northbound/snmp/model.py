"""SLUICE-LB-MIB and the system group as `Table`s over a config snapshot and state providers.

A `Snapshot` holds what the config says (built off the event loop: sorting 10,000 services and
their endpoints takes a while); cells are computed when read, from the snapshot for configured
values and from the operational-state snapshot (appliance/snapshot.py) for live ones.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import os
import platform
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from appliance import __version__
from appliance import snapshot as snapshots
from appliance.algorithm import STANDALONE_DEFAULT, default_algorithm, service_algorithm
from northbound.snmp import ber
from northbound.snmp.tree import Table

log = logging.getLogger(__name__)

ENTERPRISE = (1, 3, 6, 1, 4, 1, 32473)
NOTIFICATIONS = (*ENTERPRISE, 0)
GLOBAL = (*ENTERPRISE, 1, 1)
SERVICE_ENTRY = (*ENTERPRISE, 1, 2, 1)
ENDPOINT_ENTRY = (*ENTERPRISE, 1, 3, 1)
POLICER_ENTRY = (*ENTERPRISE, 1, 6, 1)
SECONDARY_ENTRY = (*ENTERPRISE, 1, 7, 1)  # sluiceSecondaryAddressEntry (SCTP multihoming)
NOTIFY_OBJECTS = (*ENTERPRISE, 1, 4)
BGP_PEER_ENTRY = (*ENTERPRISE, 1, 5, 1)
FW_RULE_ENTRY = (*ENTERPRISE, 1, 19, 1)  # sluiceFwRuleEntry
HA = (*ENTERPRISE, 1, 20)  # sluiceHa: the HA pair's roles and conntrack sync
HA_GLOBAL = (*HA, 1)
HA_INSTANCE_ENTRY = (*HA, 2, 1)
HA_SYNC_PEER_ENTRY = (*HA, 3, 1)
SYS_OBJECT_ID = (*ENTERPRISE, 3, 1)  # sluiceAppliance
SYSTEM = (1, 3, 6, 1, 2, 1, 1)

# Notification OIDs and their objects (SLUICE-LB-MIB).
ENDPOINT_STATE_CHANGE = (*NOTIFICATIONS, 1)
SERVICE_STATE_CHANGE = (*NOTIFICATIONS, 2)
CONFIG_COMMITTED = (*NOTIFICATIONS, 3)
EP_HEALTH_COL, EP_LAST_ERROR_COL = 6, 8
SVC_OPER_COL, SVC_EP_UP_COL = 10, 12
NOTIFY_PREVIOUS_HEALTH = (*NOTIFY_OBJECTS, 1, 0)
NOTIFY_COMMIT_ID = (*NOTIFY_OBJECTS, 2, 0)
NOTIFY_COMMIT_SUMMARY = (*NOTIFY_OBJECTS, 3, 0)

SERVICE_COLUMNS = tuple(range(2, 20))
ENDPOINT_COLUMNS = tuple(range(4, 14))
# Columns read from the config only (everything else comes from the state providers).
SERVICE_STATIC = frozenset((2, 3, 4, 5, 6, 7, 8, 9, 11, 17, 18, 19))
ENDPOINT_STATIC = frozenset((4, 5))
SECONDARY_COLUMNS = (2, 3, 4, 5)
GLOBAL_COLUMNS = (1, 2, 3, 4, 5, 6, 7)
FW_COLUMNS = (3, 4, 5, 6, 7)
FW_LISTS = {"firewall": 1, "snat": 2}
FW_ACTIONS = {"allow": 1, "drop": 2, "reject": 3, "count": 4, "mark": 5, "redirect": 6,
              "snat": 7, "trap": 8}  # fmt: skip
POLICER_COLUMNS = tuple(range(2, 10))
POLICER_STATIC = frozenset((2, 3))
COLORS = ("green", "yellow", "red")
SYSTEM_COLUMNS = (1, 2, 3, 4, 5, 6, 7)
BGP_PEER_COLUMNS = (3, 4, 5, 6, 7)
BGP_PEER_STATIC = frozenset((3,))
BGP_REMOTE_AS_COL, BGP_STATE_COL = 3, 4
HA_GLOBAL_COLUMNS = (1, 2, 3, 4, 5, 6, 7)
HA_INSTANCE_COLUMNS = (2, 3, 4, 5)
HA_INSTANCE_STATIC = frozenset((4, 5))
HA_SYNC_PEER_COLUMNS = tuple(range(3, 13))
HA_ROLES = {"init": 1, "backup": 2, "master": 3, "fault": 4, "stopped": 5}

ADMIN = {"enabled": 1, "disabled": 2, "drain": 3}
PROTOCOL = {"tcp": 1, "udp": 2, "sctp": 3, "icmp": 4}
MODE = {"default": 1, "one-arm": 2, "full-nat": 3, "dsr": 4}
DSR_TUNNEL = {"none": 1, "ip-in-ip": 2}
SWEEP_DEFAULT_S = 30  # /datapath/conntrack-sweep-interval's default
ALGORITHM = {
    "round-robin": 1,
    "weighted": 2,
    "hash": 3,
    "maglev": 4,
    "least-connections": 5,
    "priority": 6,
    "persistence": 7,
    "gtp-teid": 8,
}
OPER = {"up": 1, "down": 2, "degraded": 3, "disabled": 4, "unknown": 5}
# BGP4-MIB's bgpPeerState numbers. The speaker (ExaBGP) reports idle/down, connected (the
# TCP session is up: it sends its OPEN next, so opensent) and established.
BGP_STATE = {"idle": 1, "down": 1, "connect": 2, "active": 3, "connected": 4, "opensent": 4,
             "openconfirm": 5, "established": 6}  # fmt: skip
HEALTH = {"up": 1, "degraded": 2, "down": 3, "admin-disabled": 4, "unknown": 5}
U32 = 2**32 - 1
EPOCH_DATE_AND_TIME = bytes([0x07, 0xB2, 1, 1, 0, 0, 0, 0, ord("+"), 0, 0])
# sysServices: internet (3), end-to-end/transport (4) and applications (7) layers.
SYS_SERVICES = 4 + 8 + 64


def string_index(text: str) -> tuple[int, ...]:
    """A non-IMPLIED string index: length, then the octets."""
    raw = text.encode()
    return (len(raw), *raw)


def inet_index(address: str) -> tuple[tuple[int, ...], int, bytes]:
    """(InetAddressType, InetAddress) index part, the type and the packed address."""
    ip = ipaddress.ip_address(address)
    packed = ip.packed
    kind = 1 if ip.version == 4 else 2
    return (kind, len(packed), *packed), kind, packed


def date_and_time(value: Any) -> bytes:
    """SNMPv2-TC DateAndTime (11 octets, UTC) from an ISO 8601 string, datetime or epoch."""
    if value in (None, ""):
        return EPOCH_DATE_AND_TIME
    try:
        if isinstance(value, int | float):
            when = dt.datetime.fromtimestamp(value, dt.UTC)
        elif isinstance(value, dt.datetime):
            when = value if value.tzinfo else value.replace(tzinfo=dt.UTC)
        else:
            when = dt.datetime.fromisoformat(str(value))
            if when.tzinfo is None:
                when = when.replace(tzinfo=dt.UTC)
        when = when.astimezone(dt.UTC)
    except (ValueError, OverflowError, OSError):
        return EPOCH_DATE_AND_TIME
    return bytes(
        [
            when.year >> 8,
            when.year & 0xFF,
            when.month,
            when.day,
            when.hour,
            when.minute,
            when.second,
            when.microsecond // 100_000,
            ord("+"),
            0,
            0,
        ]
    )


def _num(state: Mapping[str, Any], key: str) -> int:
    try:
        return max(int(state.get(key) or 0), 0)
    except (TypeError, ValueError):
        return 0


_gauge = ber.gauge32


@dataclass
class ServiceRow:
    name: str
    svc: dict[str, Any]
    vip_type: int
    vip: bytes
    endpoints: list[EndpointRow] = field(default_factory=list)


@dataclass
class BgpPeerRow:
    address: str
    remote_as: int


def bgp_state(name: Any) -> int:
    """A session state as BGP4-MIB numbers it (idle for anything unknown)."""
    return BGP_STATE.get(str(name), 1)


def truth(value: Any) -> int:
    """SNMPv2-TC TruthValue's numbering: true(1), false(2)."""
    return 1 if value is True else 2


@dataclass
class EndpointRow:
    # The service's name, not its row: no reference cycle, so a replaced snapshot is freed
    # by reference counting at once instead of waiting for a full GC pass.
    service: str
    ep: dict[str, Any]
    address: str
    port: int
    addr_type: int
    # Cache key of the endpoint's state: a str, not a tuple (see TtlCache).
    key: str = ""

    def __post_init__(self) -> None:
        self.key = f"{self.service}|{self.address}|{self.port}"


@dataclass
class Snapshot:
    """The configured part of the tree, built from an effective config document."""

    commit_id: int = 0
    system: dict[str, Any] = field(default_factory=dict)
    datapath: dict[str, Any] = field(default_factory=dict)
    snmp: dict[str, Any] = field(default_factory=dict)
    service_index: list[tuple[int, ...]] = field(default_factory=list)
    services: list[ServiceRow] = field(default_factory=list)
    endpoint_index: list[tuple[int, ...]] = field(default_factory=list)
    endpoints: list[EndpointRow] = field(default_factory=list)
    by_name: dict[str, ServiceRow] = field(default_factory=dict)
    # SCTP multihoming: (service name index, position from 1) -> (vip, snat address).
    secondary_index: list[tuple[int, ...]] = field(default_factory=list)
    secondaries: list[tuple[str, str]] = field(default_factory=list)
    default_algorithm: str = STANDALONE_DEFAULT  # of services that set none
    bgp_index: list[tuple[int, ...]] = field(default_factory=list)
    bgp_peers: list[BgpPeerRow] = field(default_factory=list)
    fw_index: list[tuple[int, ...]] = field(default_factory=list)
    fw_rules: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # (list, rule)
    policer_index: list[tuple[int, ...]] = field(default_factory=list)
    policers: list[dict[str, Any]] = field(default_factory=list)
    # /ha: instances by name; sync peers by address (the normalised text, as the sync
    # channel's status names them).
    ha_instance_index: list[tuple[int, ...]] = field(default_factory=list)
    ha_instances: list[dict[str, Any]] = field(default_factory=list)
    ha_peer_index: list[tuple[int, ...]] = field(default_factory=list)
    ha_peers: list[str] = field(default_factory=list)

    @classmethod
    def from_doc(cls, doc: dict[str, Any], commit_id: int = 0) -> Snapshot:
        def section(name: str) -> dict[str, Any]:
            value = doc.get(f"sluice:{name}") or doc.get(name) or {}
            return value if isinstance(value, dict) else {}

        snap = cls(
            commit_id=commit_id or 0,
            system=section("system"),
            datapath=section("datapath"),
            snmp=section("snmp"),
            default_algorithm=default_algorithm(section("bgp")),
        )
        services = []
        endpoints = []
        for svc in section("load-balancer").get("service", []):
            name = svc["name"]
            _, vip_type, vip = inet_index(svc["vip"])
            row = ServiceRow(name, svc, vip_type, vip)
            name_idx = string_index(name)
            services.append((name_idx, row))
            for ep in svc.get("endpoint", []):
                addr_idx, kind, _ = inet_index(ep["address"])
                port = int(ep.get("port", 0))
                ep_row = EndpointRow(name, ep, ep["address"], port, kind)
                row.endpoints.append(ep_row)
                endpoints.append(((*name_idx, *addr_idx, port), ep_row))
        peers = []
        for n in section("bgp").get("neighbor", []):
            try:
                idx, _, _ = inet_index(n["address"])
                peers.append((idx, BgpPeerRow(n["address"], int(n.get("remote-as", 0)))))
            except (KeyError, ValueError, TypeError):
                continue  # not in a valid config; the row is left out rather than the table
        peers.sort(key=lambda item: item[0])
        snap.bgp_index = [i for i, _ in peers]
        snap.bgp_peers = [r for _, r in peers]
        secondaries = [((*name_idx, i + 1), pair)
                       for name_idx, row in services
                       for i, pair in enumerate(zip(row.svc.get("secondary-vip", []),
                                                    row.svc.get("secondary-snat-address", []),
                                                    strict=False))]  # fmt: skip
        secondaries.sort(key=lambda item: item[0])
        snap.secondary_index = [i for i, _ in secondaries]
        snap.secondaries = [pair for _, pair in secondaries]
        services.sort(key=lambda item: item[0])
        endpoints.sort(key=lambda item: item[0])
        snap.service_index = [i for i, _ in services]
        snap.services = [r for _, r in services]
        snap.endpoint_index = [i for i, _ in endpoints]
        snap.endpoints = [r for _, r in endpoints]
        snap.by_name = {r.name: r for r in snap.services}
        rules = [((FW_LISTS[t], *string_index(r["name"])), (t, r))
                 for t in FW_LISTS for r in section(t).get("rule", [])]  # fmt: skip
        rules.sort(key=lambda item: item[0])
        snap.fw_index = [i for i, _ in rules]
        snap.fw_rules = [r for _, r in rules]
        policers = sorted((string_index(p["name"]), p) for p in section("qos").get("policer", []))
        snap.policer_index = [i for i, _ in policers]
        snap.policers = [p for _, p in policers]
        ha = section("ha")
        instances = sorted((string_index(i["name"]), i) for i in ha.get("instance", []))
        snap.ha_instance_index = [i for i, _ in instances]
        snap.ha_instances = [i for _, i in instances]
        sync_peers = []
        for address in (ha.get("sync") or {}).get("peer", []):
            try:
                idx, _, _ = inet_index(address)
                sync_peers.append((idx, str(ipaddress.ip_address(address))))
            except (ValueError, TypeError):
                continue
        sync_peers.sort()
        snap.ha_peer_index = [i for i, _ in sync_peers]
        snap.ha_peers = [a for _, a in sync_peers]
        return snap


class StateReader:
    """Live values from the operational-state snapshot (`appliance.snapshot`).

    Never calls a provider: the snapshot's thread does, at its period (`ttl` when this
    builds it), so a GET or a walk on the event loop takes no datapath lock, walks no map
    and makes no netlink call. A missing or failing provider reads as an empty mapping, so
    counters show 0 and states unknown rather than errors.
    """

    def __init__(self, providers: Any, ttl: float = 1.0) -> None:
        self.snapshot = snapshots.for_providers(providers, period=ttl)
        self.providers = self.snapshot.providers
        self.ttl = ttl
        self._bgp: tuple[float, dict[str, Mapping[str, Any]]] = (-1e9, {})

    def bgp_peer(self, address: str) -> Mapping[str, Any]:
        """A BGP session's state (the BGP door's ``bgp`` provider: in-memory, no I/O, so
        read here rather than by the snapshot thread), at most once per ``ttl`` per walk."""
        read_at, peers = self._bgp
        now = time.monotonic()
        if now - read_at > self.ttl:
            peers = {}
            provider = self.providers.get("bgp")
            try:
                rows = provider().get("neighbor", []) if provider else []
                peers = {str(r.get("address")): r for r in rows if isinstance(r, Mapping)}
            except Exception:  # a failing provider reads as idle, not as an SNMP error
                log.debug("snmp: bgp provider failed", exc_info=True)
            self._bgp = (now, peers)
        return peers.get(address, {})

    def bgp_changed(self) -> None:
        """A session event: the next read asks the provider again."""
        self._bgp = (-1e9, {})

    def service(self, name: str) -> Mapping[str, Any]:
        return self.snapshot.current().service(name)

    def endpoint_state(self, row: EndpointRow) -> Mapping[str, Any]:
        return self.snapshot.current().endpoint(row.service, row.address, row.port)

    def datapath(self) -> Mapping[str, Any]:
        return self.snapshot.current().datapath

    def conntrack_entries(self) -> int:
        return self.snapshot.current().conntrack_entries or 0

    def policer(self, name: str) -> Mapping[str, Any]:
        return (self.snapshot.current().qos.get("policer") or {}).get(name) or {}

    def ha(self) -> Mapping[str, Any]:
        """The HA door's state() as the snapshot thread last read it ({} without HA)."""
        return self.snapshot.current().ha

    def clear(self) -> None:
        """An event says the last reading is stale: refresh now rather than at the period."""
        self.snapshot.poke()

    def track(self, snap: Snapshot) -> None:
        """Ask about the services and endpoints of this config snapshot (used when the
        operational snapshot has no config service of its own to list them)."""
        self.snapshot.track(lambda: ((r.name, ((e.address, e.port) for e in r.endpoints))
                                     for r in snap.services))

    # Derived service state, for when the service provider does not say it.
    def endpoint_health(self, row: EndpointRow) -> str:
        if row.ep.get("admin-state", "enabled") != "enabled":
            return "admin-disabled"
        state = self.endpoint_state(row)
        health = state.get("health")
        return health if health in HEALTH else "unknown"

    def endpoints_up(self, row: ServiceRow) -> int:
        state = self.service(row.name)
        if "endpoints-up" in state:
            return _num(state, "endpoints-up")
        return sum(1 for ep in row.endpoints if self.endpoint_health(ep) == "up")

    def oper_state(self, row: ServiceRow) -> str:
        if row.svc.get("admin-state", "enabled") != "enabled":
            return "disabled"
        state = self.service(row.name)
        if state.get("oper-status") in OPER:
            return state["oper-status"]
        if "endpoint" not in self.providers:
            return "unknown"
        enabled = [e for e in row.endpoints if e.ep.get("admin-state", "enabled") == "enabled"]
        up = sum(1 for e in enabled if self.endpoint_health(e) == "up")
        if up == 0:
            return "down"
        return "up" if up == len(enabled) else "degraded"


class LbMib:
    """System group, SLUICE-LB-MIB scalars and tables over one snapshot."""

    def __init__(
        self,
        snap: Snapshot,
        state: StateReader,
        started: float,
        commit_id: Callable[[], int],
    ) -> None:
        self.snap, self.state, self.started, self.commit_id = snap, state, started, commit_id
        self._fw_hits: tuple[Any, dict[tuple[str, str], Any]] = (None, {})
        state.track(snap)
        self.descr = (
            f"Sluice L4 load balancer {__version__} "
            f"(Linux {platform.release()} {platform.machine()})"
        )

    def ticks(self) -> int:
        return int((time.monotonic() - self.started) * 100) & U32

    def hostname(self) -> str:
        return str(self.snap.system.get("hostname") or socket.gethostname())

    def system_cell(self, col: int, pos: int) -> Any:
        s = self.snap.system
        if col == 1:
            return ber.octets(self.descr)
        if col == 2:
            return ber.object_id(SYS_OBJECT_ID)
        if col == 3:
            return ber.timeticks(self.ticks())
        if col == 4:
            return ber.octets(str(s.get("contact", "")))
        if col == 5:
            return ber.octets(self.hostname())
        if col == 6:
            return ber.octets(str(s.get("location", "")))
        return ber.integer(SYS_SERVICES)

    def global_cell(self, col: int, pos: int) -> Any:
        if col == 1:
            return ber.octets(__version__)
        if col == 2:
            return _gauge(min(self.state.conntrack_entries(), U32))
        if col == 3:
            return ber.unsigned32(min(int(self.snap.datapath.get("conntrack-capacity", 0)), U32))
        if col == 4:
            return _gauge(len(self.snap.services))
        if col == 5:
            return _gauge(len(self.snap.endpoints))
        if col == 7:  # the YANG default: appliance/datapath/reconciler.py GC_INTERVAL_S
            sweep = self.snap.datapath.get("conntrack-sweep-interval", SWEEP_DEFAULT_S)
            return ber.unsigned32(min(int(sweep), U32))
        return ber.unsigned32(min(self.commit_id() or 0, U32))

    def service_cell(self, col: int, pos: int) -> Any:
        row = self.snap.services[pos]
        svc = row.svc
        if col == 2:
            return ber.integer(ADMIN.get(svc.get("admin-state", "enabled"), 1))
        if col == 3:
            return ber.integer(row.vip_type)
        if col == 4:
            return ber.octets(row.vip)
        if col == 5:
            return ber.integer(PROTOCOL.get(svc.get("protocol", "tcp"), 1))
        if col == 6:
            return ber.unsigned32(int(svc.get("port", 0)))
        if col == 7:
            return ber.unsigned32(int(svc.get("port-range-end", svc.get("port", 0))))
        if col == 8:
            return ber.integer(MODE.get(svc.get("mode", "default"), 1))
        if col == 9:
            algorithm = service_algorithm(svc, self.snap.default_algorithm)
            return ber.integer(ALGORITHM.get(algorithm, 1))
        if col == 10:
            return ber.integer(OPER[self.state.oper_state(row)])
        if col == 11:
            return _gauge(len(row.endpoints))
        if col == 17:
            return ber.integer(2 if svc.get("nat64") else 3 if svc.get("nat46") else 1)
        if col == 18:
            return ber.integer(DSR_TUNNEL.get(svc.get("dsr-tunnel", "none"), 1))
        if col == 19:
            return ber.integer(1 if svc.get("tcp-midstream-pickup") in (True, "true") else 2)
        if col == 12:
            return _gauge(self.state.endpoints_up(row))
        state = self.state.service(row.name)
        if col == 13:
            return ber.counter64(_num(state, "packets"))
        if col == 14:
            return ber.counter64(_num(state, "bytes"))
        if col == 15:
            return _gauge(_num(state, "active-sessions"))
        return ber.counter64(_num(state, "total-sessions"))

    def endpoint_cell(self, col: int, pos: int) -> Any:
        row = self.snap.endpoints[pos]
        ep = row.ep
        if col == 4:
            return ber.unsigned32(int(ep.get("weight", 1)))
        if col == 5:
            return ber.integer(ADMIN.get(ep.get("admin-state", "enabled"), 1))
        if col == 6:
            return ber.integer(HEALTH[self.state.endpoint_health(row)])
        state = self.state.endpoint_state(row)
        if col == 7:
            return ber.octets(date_and_time(state.get("last-change")))
        if col == 8:
            return ber.octets(str(state.get("last-error") or "")[:255])
        if col == 9:
            return ber.unsigned32(min(_num(state, "rtt-us"), U32))
        if col == 10:
            return ber.counter64(_num(state, "packets"))
        if col == 11:
            return ber.counter64(_num(state, "bytes"))
        if col == 12:
            return _gauge(_num(state, "active-sessions"))
        return ber.counter64(_num(state, "total-sessions"))

    def bgp_cell(self, col: int, pos: int) -> Any:
        row = self.snap.bgp_peers[pos]
        if col == BGP_REMOTE_AS_COL:
            return ber.unsigned32(row.remote_as & U32)
        state = self.state.bgp_peer(row.address)
        name = state.get("session-state", "idle")
        if col == BGP_STATE_COL:
            return ber.integer(bgp_state(name))
        if col == 5:  # seconds in the established state (BGP4-MIB bgpPeerFsmEstablishedTime)
            if name != "established":
                return _gauge(0)
            try:
                since = dt.datetime.fromisoformat(str(state.get("since"))).timestamp()
            except ValueError:
                return _gauge(0)
            return _gauge(min(max(int(time.time() - since), 0), U32))
        if col == 6:
            return ber.octets(date_and_time(state.get("since")))
        return _gauge(min(_num(state, "prefixes-sent"), U32))
    def fw_cell(self, col: int, pos: int) -> Any:
        table, rule = self.snap.fw_rules[pos]
        if col == 3:
            return ber.unsigned32(min(int(rule.get("preference", 0)), U32))
        if col == 4:
            return ber.integer(FW_ACTIONS.get(rule.get("action", table), 1))
        fw = self.state.datapath().get("firewall") or {}
        if self._fw_hits[0] is not fw:  # one index per datapath reading, not per cell
            self._fw_hits = (fw, {(r["table"], r["name"]): r for r in fw.get("rules", ())})
        hits = self._fw_hits[1].get((table, rule["name"]), {})
        return ber.counter64(_num(hits, {5: "packets", 6: "bytes"}.get(col, "sessions")))

    def policer_cell(self, col: int, pos: int) -> Any:
        pol = self.snap.policers[pos]
        if col == 2:
            return ber.integer(2 if pol.get("type") == "two-rate" else 1)
        if col == 3:
            return ber.unsigned32(min(int(pol.get("cir", 0)) // 1000, U32))
        color = self.state.policer(pol["name"]).get(COLORS[(col - 4) // 2]) or {}
        return ber.counter64(_num(color, "packets" if col % 2 == 0 else "bytes"))

    def secondary_cell(self, col: int, pos: int) -> Any:
        vip, snat = self.snap.secondaries[pos]
        _, kind, packed = inet_index(vip if col in (2, 3) else snat)
        return ber.integer(kind) if col in (2, 4) else ber.octets(packed)

    def ha_global_cell(self, col: int, pos: int) -> Any:
        ha = self.state.ha()
        if col == 1:
            reachable = ha.get("witness-reachable")
            return ber.integer(3 if reachable is None else truth(reachable))
        if col == 2:
            return ber.integer(truth(ha.get("synced")))
        if col == 3:
            return ber.octets(date_and_time(ha.get("last-failover")))
        sync = ha.get("sync") or {}
        dp = sync.get("datapath") or {}
        if col == 4:
            return ber.counter64(_num(dp, "installed"))
        if col == 5:
            return ber.counter64(_num(dp, "unbound"))
        if col == 6:
            refused = dp.get("refused-records") or {}
            return ber.counter64(sum(_num(refused, k) for k in refused))
        return ber.counter64(_num(dp, "ring-drops"))

    def ha_instance_cell(self, col: int, pos: int) -> Any:
        inst = self.snap.ha_instances[pos]
        if col == 4:
            return ber.unsigned32(int(inst.get("virtual-router-id", 0)))
        if col == 5:
            return ber.unsigned32(int(inst.get("priority", 100)))
        state = next((i for i in self.state.ha().get("instances") or ()
                      if i.get("name") == inst["name"]), {})  # fmt: skip
        if col == 2:
            return ber.integer(HA_ROLES.get(str(state.get("role", "init")), 1))
        return ber.octets(date_and_time(state.get("since")))

    def ha_peer_cell(self, col: int, pos: int) -> Any:
        peer = self.snap.ha_peers[pos]
        sync = self.state.ha().get("sync") or {}
        rx = (sync.get("peers") or {}).get(peer) or {}
        tx = (sync.get("sending") or {}).get(peer) or {}
        if col == 3:
            return ber.integer(truth(rx.get("connected")))
        if col == 4:
            return ber.integer(truth(tx.get("connected")))
        if col == 5:
            return ber.counter64(_num(rx, "flows"))
        if col == 6:
            return ber.counter64(_num(tx, "flows"))
        lag = rx.get("lag") or {}
        if col in (7, 8):  # milliseconds (2 decimals) -> microseconds
            ms = lag.get("p50-ms" if col == 7 else "p99-ms")
            return _gauge(min(max(round(float(ms or 0) * 1000), 0), U32))
        if col == 9:
            return _gauge(min(_num(lag, "samples"), U32))
        if col == 10:
            return ber.counter32(_num(rx, "dumps") & U32)
        if col == 11:
            return ber.counter32(_num(tx, "dumps") & U32)
        error = rx.get("last_error") or tx.get("last_error") or ""  # PeerStats fields
        return ber.octets(str(error)[:255])

    def tables(self) -> list[Table]:
        snap = self.snap
        scalar_row = [(0,)]
        return [
            Table(SYSTEM, SYSTEM_COLUMNS, lambda: scalar_row, self.system_cell),
            Table(GLOBAL, GLOBAL_COLUMNS, lambda: scalar_row, self.global_cell),
            Table(
                SERVICE_ENTRY,
                SERVICE_COLUMNS,
                lambda: snap.service_index,
                self.service_cell,
                static=SERVICE_STATIC,
            ),
            Table(
                ENDPOINT_ENTRY,
                ENDPOINT_COLUMNS,
                lambda: snap.endpoint_index,
                self.endpoint_cell,
                static=ENDPOINT_STATIC,
            ),
            Table(
                SECONDARY_ENTRY,
                SECONDARY_COLUMNS,
                lambda: snap.secondary_index,
                self.secondary_cell,
                static=frozenset(SECONDARY_COLUMNS),
            ),
            Table(
                BGP_PEER_ENTRY,
                BGP_PEER_COLUMNS,
                lambda: snap.bgp_index,
                self.bgp_cell,
                static=BGP_PEER_STATIC,
            ),
            Table(
                POLICER_ENTRY,
                POLICER_COLUMNS,
                lambda: snap.policer_index,
                self.policer_cell,
                static=POLICER_STATIC,
            ),
            Table(
                FW_RULE_ENTRY,
                FW_COLUMNS,
                lambda: snap.fw_index,
                self.fw_cell,
                static=frozenset((3, 4)),
            ),
            Table(HA_GLOBAL, HA_GLOBAL_COLUMNS, lambda: scalar_row, self.ha_global_cell),
            Table(
                HA_INSTANCE_ENTRY,
                HA_INSTANCE_COLUMNS,
                lambda: snap.ha_instance_index,
                self.ha_instance_cell,
                static=HA_INSTANCE_STATIC,
            ),
            Table(
                HA_SYNC_PEER_ENTRY,
                HA_SYNC_PEER_COLUMNS,
                lambda: snap.ha_peer_index,
                self.ha_peer_cell,
            ),
        ]


def default_engine_id() -> bytes:
    """A stable engine ID when the config names none (RFC 3411 format 5, octets).

    USM keys are localized to the engine ID, so it must survive restarts: derive it from
    /etc/machine-id (or the host name) rather than letting pysnmp pick a random one.
    """
    import hashlib

    seed = b""
    for path in ("/etc/machine-id", "/var/lib/dbus/machine-id"):
        try:
            with open(path, "rb") as fh:
                seed = fh.read().strip()
        except OSError:
            continue
        if seed:
            break
    if not seed:
        seed = (os.uname().nodename or "sluice").encode()
    return (0x80000000 | 32473).to_bytes(4, "big") + b"\x05" + hashlib.sha256(seed).digest()[:12]
