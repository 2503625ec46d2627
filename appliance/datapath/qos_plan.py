"""What the QoS program's maps should hold for a config: pure Python, no bcc.

``plan(qos, mirror, ...)`` turns the /qos and /mirror sections into policer and mirror
entries (by id) and their attachments, with ids kept stable across commits (``Ids``).
``check(doc)`` is the commit-time validator: what the YANG model cannot say (a service
or endpoint that does not exist, a source mirrored twice, capacities), each error naming
its field. ``appliance/datapath/qos.py`` writes a plan into the maps.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

from appliance.config.errors import FieldError
from appliance.config.paths import LOAD_BALANCER, MODULE
from appliance.datapath.stable_ids import StableIds

Doc = dict[str, Any]
QOS = f"{MODULE}:qos"
MIRROR = f"{MODULE}:mirror"

# bpf/lib/qos_maps.h
MAX_POLICERS = 1024
MAX_MIRRORS = 64
MAX_QOS_IF = 256
MAX_QOS_EP = 65536
MAX_QOS_SRC = 16384
QOS_HAVE_SVC, QOS_HAVE_EP, QOS_HAVE_SRC = 1, 2, 4
DIR_IN, DIR_OUT = 0, 1
POL_F_TRTCM, POL_F_AWARE = 1, 2
ACTIONS = {"transmit": 0, "drop": 1, "set-dscp": 2}
COLORS = ("green", "yellow", "red")
MIR_TYPES = {"span": 1, "rspan": 2, "erspan2": 3, "erspan3": 4}
NSEC = 1_000_000_000


@dataclass
class PolicerEntry:
    flags: int
    cir: int
    pir: int
    c_max: int  # bit-ns
    e_max: int
    c_max_ns: int
    e_max_ns: int
    yellow_dscp: int  # bit n: DSCP n
    red_dscp: int
    action: tuple[int, int, int]
    dscp: tuple[int, int, int]


@dataclass
class MirrorEntry:
    type: int
    ifname: str = ""  # SPAN/RSPAN: the destination interface
    collector: str = ""  # ERSPAN
    source: str = ""  # ERSPAN outer source ("" : from the route)
    sample: int = 1
    vlan: int = 0
    session: int = 0
    ttl: int = 64
    dscp: int = 0


@dataclass
class Plan:
    policers: dict[int, PolicerEntry] = field(default_factory=dict)
    mirrors: dict[int, MirrorEntry] = field(default_factory=dict)
    # (ifname, DIR_*) -> [policer id, mirror id]
    interfaces: dict[tuple[str, int], list[int]] = field(default_factory=dict)
    services: dict[str, list[int]] = field(default_factory=dict)  # service name -> [pol, mir]
    endpoints: dict[tuple[str, str, int], int] = field(default_factory=dict)  # -> policer
    prefixes: dict[str, int] = field(default_factory=dict)  # normalised prefix -> policer

    def flags(self) -> int:
        return ((QOS_HAVE_SVC if self.services else 0) | (QOS_HAVE_EP if self.endpoints else 0)
                | (QOS_HAVE_SRC if self.prefixes else 0))  # fmt: skip

    def empty(self) -> bool:
        return not (self.interfaces or self.services or self.endpoints or self.prefixes)


# Stable small ids for names (1..limit-1): a name keeps its id while it exists, and across
# a daemon restart once recovered from the pins (qos.py).
Ids = StableIds


def _mask(values: list[Any]) -> int:
    m = 0
    for v in values:
        m |= 1 << int(v)
    return m


def policer_entry(p: Doc) -> PolicerEntry:
    two = p.get("type", "single-rate") == "two-rate"
    cir = int(p["cir"])
    c_max = int(p["cbs"]) * 8 * NSEC
    if two:
        pir = int(p["pir"])
        e_max = int(p["pbs"]) * 8 * NSEC
        c_ns, e_ns = -(-c_max // cir), -(-e_max // pir)
    else:
        pir = 0
        e_max = int(p.get("ebs", 0)) * 8 * NSEC
        # One rate fills C then E: both are full after (CBS + EBS) / CIR.
        c_ns = e_ns = -(-(c_max + e_max) // cir)
    aware = p.get("color-mode", "color-blind") == "color-aware"
    acts = tuple(ACTIONS[(p.get(c) or {}).get("action", "drop" if c == "red" else "transmit")]
                 for c in COLORS)  # fmt: skip
    dscps = tuple(int((p.get(c) or {}).get("dscp", 0)) for c in COLORS)
    return PolicerEntry(
        flags=(POL_F_TRTCM if two else 0) | (POL_F_AWARE if aware else 0),
        cir=cir, pir=pir, c_max=c_max, e_max=e_max, c_max_ns=c_ns, e_max_ns=e_ns,
        yellow_dscp=_mask(p.get("yellow-dscp", [])) if aware else 0,
        red_dscp=_mask(p.get("red-dscp", [])) if aware else 0,
        action=acts, dscp=dscps,  # type: ignore[arg-type]
    )  # fmt: skip


def mirror_entry(s: Doc) -> MirrorEntry:
    kind = s["type"]
    if kind == "erspan":
        kind = f"erspan{int(s.get('erspan-version', 2))}"
    return MirrorEntry(
        type=MIR_TYPES[kind],
        ifname=s.get("destination-interface", "") if s["type"] != "erspan" else "",
        collector=s.get("collector", ""),
        source=s.get("source-address", ""),
        sample=int(s.get("sample", 1)),
        vlan=int(s.get("vlan", 0)),
        session=int(s.get("session-id", 1)),
        ttl=int(s.get("ttl", 64)),
        dscp=int(s.get("dscp", 0)),
    )


def plan(qos: Doc | None, mirror: Doc | None, pol_ids: Ids, mir_ids: Ids) -> Plan:
    qos, mirror = qos or {}, mirror or {}
    out = Plan()
    pols = {p["name"]: p for p in qos.get("policer", [])}
    pid = pol_ids.assign(sorted(pols))
    for name, p in pols.items():
        out.policers[pid[name]] = policer_entry(p)
    sessions = {s["name"]: s for s in mirror.get("session", [])}
    mid = mir_ids.assign(sorted(sessions))
    for name, s in sessions.items():
        out.mirrors[mid[name]] = mirror_entry(s)
    for a in qos.get("interface", []):
        d = DIR_IN if a["direction"] == "ingress" else DIR_OUT
        out.interfaces.setdefault((a["name"], d), [0, 0])[0] = pid[a["policer"]]
    for a in qos.get("service", []):
        out.services.setdefault(a["name"], [0, 0])[0] = pid[a["policer"]]
    for a in qos.get("endpoint", []):
        key = (a["service"], ipaddress.ip_address(a["address"]).compressed, int(a["port"]))
        out.endpoints[key] = pid[a["policer"]]
    for a in qos.get("client-prefix", []):
        out.prefixes[str(ipaddress.ip_network(a["prefix"], strict=False))] = pid[a["policer"]]
    for name, s in sessions.items():
        for src in s.get("source-interface", []):
            direction = src.get("direction", "ingress")
            dirs = [DIR_IN, DIR_OUT] if direction == "both" else [
                DIR_IN if direction == "ingress" else DIR_OUT]
            for d in dirs:
                out.interfaces.setdefault((src["name"], d), [0, 0])[1] = mid[name]
        for svc in s.get("source-service", []):
            out.services.setdefault(svc, [0, 0])[1] = mid[name]
    return out


# -- commit-time checks ---------------------------------------------------------------------


def _qpath(rest: str) -> str:
    return f"/{QOS}/{rest}"


def check(doc: Doc) -> list[FieldError]:
    """What the model cannot refuse: unknown services/endpoints, double sources, sizes."""
    qos, mirror = doc.get(QOS) or {}, doc.get(MIRROR) or {}
    if not qos and not mirror:
        return []
    errors: list[FieldError] = []
    services = {s["name"]: s for s in (doc.get(LOAD_BALANCER) or {}).get("service", [])}
    if len(qos.get("policer", [])) >= MAX_POLICERS:
        errors.append(FieldError(_qpath("policer"), f"at most {MAX_POLICERS - 1} policers",
                                 "resource-denied"))  # fmt: skip
    if len(mirror.get("session", [])) >= MAX_MIRRORS:
        errors.append(FieldError(f"/{MIRROR}/session", f"at most {MAX_MIRRORS - 1} sessions",
                                 "resource-denied"))  # fmt: skip
    if len(qos.get("endpoint", [])) > MAX_QOS_EP:
        errors.append(FieldError(_qpath("endpoint"), f"at most {MAX_QOS_EP} endpoint policers",
                                 "resource-denied"))  # fmt: skip
    if len(qos.get("client-prefix", [])) > MAX_QOS_SRC:
        errors.append(FieldError(_qpath("client-prefix"),
                                 f"at most {MAX_QOS_SRC} client-prefix policers",
                                 "resource-denied"))  # fmt: skip
    for a in qos.get("service", []):
        if a["name"] not in services:
            errors.append(FieldError(_qpath(f"service[name='{a['name']}']/name"),
                                     f"no service {a['name']!r} in /load-balancer"))  # fmt: skip
    for a in qos.get("endpoint", []):
        where = _qpath(f"endpoint[service='{a['service']}'][address='{a['address']}']"
                       f"[port='{a['port']}']")  # fmt: skip
        svc = services.get(a["service"])
        if svc is None:
            errors.append(FieldError(f"{where}/service",
                                     f"no service {a['service']!r} in /load-balancer"))
            continue
        want = (ipaddress.ip_address(a["address"]), int(a["port"]))
        eps = {(ipaddress.ip_address(e["address"]), int(e.get("port", 0)))
               for e in svc.get("endpoint", [])}  # fmt: skip
        if want not in eps:
            errors.append(FieldError(f"{where}/address", f"service {a['service']!r} has no "
                                     f"endpoint {a['address']} port {a['port']}"))  # fmt: skip
    seen: dict[tuple[str, str], str] = {}
    for s in mirror.get("session", []):
        base = f"/{MIRROR}/session[name='{s['name']}']"
        for src in s.get("source-interface", []):
            direction = src.get("direction", "ingress")
            for d in (["ingress", "egress"] if direction == "both" else [direction]):
                other = seen.setdefault(("if:" + src["name"], d), s["name"])
                if other != s["name"]:
                    errors.append(FieldError(
                        f"{base}/source-interface[name='{src['name']}']/direction",
                        f"{src['name']} {d} is already mirrored by session {other!r}"))
        for svc in s.get("source-service", []):
            if svc not in services:
                errors.append(FieldError(f"{base}/source-service",
                                         f"no service {svc!r} in /load-balancer"))
            other = seen.setdefault(("svc:" + svc, ""), s["name"])
            if other != s["name"]:
                errors.append(FieldError(f"{base}/source-service",
                                         f"service {svc!r} is already mirrored by session "
                                         f"{other!r}"))  # fmt: skip
        collector = s.get("collector") if s["type"] == "erspan" else None
        if collector and ipaddress.ip_address(collector).is_unspecified:
            errors.append(FieldError(f"{base}/collector", "not a unicast address"))
        source = s.get("source-address") if collector else None
        if source and ipaddress.ip_address(source).version != ipaddress.ip_address(
                collector).version:  # fmt: skip
            errors.append(FieldError(f"{base}/source-address", f"{source} is not of the "
                                     f"collector {collector}'s family"))  # fmt: skip
    ifaces = {(a["name"], a["direction"]) for a in qos.get("interface", [])}
    ifaces |= {k for k in seen if k[0].startswith("if:")}
    if len(ifaces) > MAX_QOS_IF:
        errors.append(FieldError(_qpath("interface"), f"at most {MAX_QOS_IF} interface "
                                 "attachments (policers and mirror sources)",
                                 "resource-denied"))  # fmt: skip
    return errors
