"""The QoS program (bpf/qos.c): policers and mirror sessions, written from /qos and /mirror.

``QosDatapath.sync(sections, services)`` computes the plan (qos_plan.py), compiles the
program the first time something is configured (nothing is compiled or attached while
/qos and /mirror are empty, so the balancer's path is untouched), writes the maps, and
attaches the program with tcx (tcx.py) ahead of the balancer: on the interfaces named by
interface policers and mirror sources, and on every datapath interface when a service,
endpoint or client-prefix policer or a service mirror exists. Policer buckets start full
when a policer is (re)programmed; counters start at zero. A restarted daemon takes its
policers' and sessions' ids back from the pins (``qos_names``, stable_ids.py): one whose
config did not change keeps its buckets and counters.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import socket
import time
from pathlib import Path
from typing import Any

from appliance import resources
from appliance.config.paths import DATAPATH
from appliance.datapath import layout as L
from appliance.datapath import qos_plan as Q
from appliance.datapath import tcx
from appliance.datapath.program import JMP_INDEX, LAYOUT_SUFFIX, DatapathUnavailable, inline_source
from appliance.datapath.stable_ids import digest

log = logging.getLogger(__name__)

SOURCE = resources.bpf_dir() / "qos.c"
PROGRAMS = {"ingress": "sluice_qos_in", "egress": "sluice_qos_out"}
# Endpoint policers on a flow's first packet: the balancer (bpf/lb.c new_flow) tail-calls it
# once it chose the endpoint (bpf/lib/qos_hook.h); it goes into the balancer's jmp_map.
EP_PROGRAM = "sluice_qos_ep"
# ERSPAN copies of frames that cannot be wrapped in place (not IP, GSO aggregates) are
# cloned into the loopback's ingress, where this program wraps them (bpf/lib/mirror.h
# erspan_loop): attached there while an ERSPAN session exists.
LOOP_PROGRAM, LOOP_IF = "sluice_qos_mir", "lo"
ERSPAN_TYPES = (Q.MIR_TYPES["erspan2"], Q.MIR_TYPES["erspan3"])
QOS_SECTIONS = (Q.QOS, Q.MIRROR, DATAPATH)
PINS = ("qcfg", "qpol", "qpolst", "qmir2", "qmirst", "qmirseq", "qif", "qsvc", "qep", "qsrc",
        "qnames")
# Pins of an older layout, unlinked before loading ("qmir": struct mirror with IPv4 only).
LEGACY_PINS = ("qmir",)
KIND_POLICER, KIND_MIRROR = 1, 2  # qos_names key: kind << 16 | id
POLICER_CONFIG = ("flags", "cir", "pir", "c_max", "e_max", "c_max_ns", "e_max_ns", "yellow_dscp",
                  "red_dscp")  # fmt: skip
MIRROR_CONFIG = ("type", "sample", "vlan", "session", "ttl", "dscp", "ifindex", "family", "dst",
                 "src")  # fmt: skip


def _config(v: Any, fields: tuple[str, ...]) -> tuple[Any, ...]:
    """What a policer / mirror map value was configured with (not its running state)."""
    extra = (tuple(v.action), tuple(v.dscp)) if hasattr(v, "action") else ()
    values = (getattr(v, f) for f in fields)
    return tuple(tuple(x.w) if hasattr(x, "w") else int(x) for x in values) + extra
Doc = dict[str, Any]


def _route(dst: str, netns: str | None) -> tuple[str, str]:
    """(egress interface, preferred source) of the route to ``dst``."""
    from appliance.netlink import _rtnl  # one netlink opener for the core

    with _rtnl(netns) as ipr:
        msgs = ipr.route("get", dst=dst)
        if not msgs:
            raise LookupError(f"no route to {dst}")
        oif = msgs[0].get_attr("RTA_OIF")
        src = msgs[0].get_attr("RTA_PREFSRC") or ""
        links = ipr.get_links(oif)
        return links[0].get_attr("IFLA_IFNAME"), src


def _nudge_neighbour(dst: str, netns: str | None) -> None:
    """One UDP datagram to the collector's discard port: the kernel resolves its neighbour
    entry, which the program's FIB lookup needs (it cannot resolve one itself)."""

    family = socket.AF_INET6 if ":" in dst else socket.AF_INET

    def send() -> None:
        with socket.socket(family, socket.SOCK_DGRAM) as s, contextlib.suppress(OSError):
            s.sendto(b"", (dst, 9))

    tcx._in_netns(netns, send)


class QosDatapath:
    def __init__(self, pin_root: Path, netns: str | None = None) -> None:
        self.pin_root = Path(pin_root)
        self.netns = netns
        self.bpf: Any = None
        self.fds: dict[str, int] = {}
        self.pol_ids = Q.Ids(Q.MAX_POLICERS)
        self.mir_ids = Q.Ids(Q.MAX_MIRRORS)
        self.plan = Q.Plan()
        self.attached: set[tuple[str, str]] = set()  # (ifname, ingress|egress)
        self.errors: dict[str, str] = {}
        self.names: dict[str, dict[str, int]] = {"policer": {}, "mirror": {}}
        self._written: dict[str, set[Any]] = {}
        self._swept = False
        self.owns_program = True
        # A previous daemon's policers / sessions by id (their configs): kept as they are
        # (buckets, counters) when this config has them unchanged under the same name.
        self._pinned: dict[str, dict[int, tuple[Any, ...]]] = {"pol": {}, "mir": {}}

    def sharing(self, netns: str | None) -> QosDatapath:
        """A QosDatapath for ``netns`` on this one's loaded program (tests compile once);
        its maps start empty, and closing it leaves the program loaded."""
        other = QosDatapath(self.pin_root, netns)
        other.bpf, other.fds, other.owns_program = self.bpf, dict(self.fds), False
        if other.bpf is not None:
            other._clear_attachments()
        return other

    # -- program -------------------------------------------------------------------------
    def load(self) -> None:
        if self.bpf is not None:
            return
        from bcc import BPF

        for short in LEGACY_PINS:
            (self.pin_root / f"{short}{LAYOUT_SUFFIX}").unlink(missing_ok=True)
        text = f'#define PIN_ROOT "{self.pin_root}"\n' + inline_source(SOURCE)
        started = time.monotonic()
        try:
            self.bpf = BPF(text=text.encode())
            for direction, name in PROGRAMS.items():
                self.fds[direction] = self.bpf.load_func(name.encode(), BPF.SCHED_CLS).fd
            self.fds["loop"] = self.bpf.load_func(LOOP_PROGRAM.encode(), BPF.SCHED_CLS).fd
            ep = self.bpf.load_func(EP_PROGRAM.encode(), BPF.SCHED_CLS)
            jmp = self.bpf[b"jmp_map"]
            jmp[jmp.Key(JMP_INDEX[EP_PROGRAM])] = jmp.Leaf(ep.fd)
        except Exception as exc:
            self.bpf = None
            raise DatapathUnavailable(f"loading {SOURCE.name}: {exc}") from exc
        log.info("qos program loaded", extra={"seconds": round(time.monotonic() - started, 2)})
        # What a previous daemon attached stays in the pinned maps; this one starts from its
        # own config, so no attachment it did not write may remain. Its policers and
        # sessions are taken back by name (recover).
        self._clear_attachments()
        self.recover()

    def recover(self) -> None:
        """Ids of the previous daemon's policers and sessions, and what each was set to."""
        self.pol_ids, self.mir_ids = Q.Ids(Q.MAX_POLICERS), Q.Ids(Q.MAX_MIRRORS)
        found: dict[int, list[tuple[int, bytes]]] = {KIND_POLICER: [], KIND_MIRROR: []}
        for k, v in self.table("qos_names").items():
            found.setdefault(int(k.value) >> 16, []).append((int(k.value) & 0xFFFF,
                                                             bytes(v.digest)))  # fmt: skip
        self.pol_ids.recover(found[KIND_POLICER])
        self.mir_ids.recover(found[KIND_MIRROR])
        pol_t, mir_t = self.table("qos_pol"), self.table("qos_mir")
        self._pinned = {
            "pol": {i: _config(pol_t[pol_t.Key(i)], POLICER_CONFIG)
                    for i, _d in found[KIND_POLICER] if 0 < i < Q.MAX_POLICERS},
            "mir": {i: _config(mir_t[mir_t.Key(i)], MIRROR_CONFIG)
                    for i, _d in found[KIND_MIRROR] if 0 < i < Q.MAX_MIRRORS},
        }  # fmt: skip
        self._written = {}

    def _clear_attachments(self) -> None:
        for name in ("qos_if", "qos_svc", "qos_ep", "qos_src"):
            t = self.table(name)
            for key in [k for k, _v in t.items()]:
                t.pop(key, None)
        cfg = self.table("qos_cfg")
        cfg[cfg.Key(0)] = cfg.Leaf()

    def table(self, name: str) -> Any:
        return self.bpf[name.encode()]

    # -- sync ----------------------------------------------------------------------------
    def sync(self, sections: dict[str, Doc | None], services: dict[str, Any]) -> None:
        """Bring maps and attachments to what ``sections`` (qos, mirror, datapath) say.

        ``services``: the driver's ServiceState by name (ids of services, endpoints)."""
        plan = Q.plan(sections.get(Q.QOS), sections.get(Q.MIRROR), self.pol_ids, self.mir_ids)
        dp = sections.get(DATAPATH) or {}
        lb_ifaces = [i["name"] for i in dp.get("interface", []) if i.get("hook", "tc") == "tc"]
        self.errors = {}
        if plan.empty() and self.bpf is None:
            self._detach_all(set())
            self.plan = plan
            return
        if self.bpf is None:
            self.load()  # recovers the previous daemon's ids: plan again with them
            plan = Q.plan(sections.get(Q.QOS), sections.get(Q.MIRROR), self.pol_ids,
                          self.mir_ids)  # fmt: skip
        self.names = {"policer": dict(self.pol_ids.ids), "mirror": dict(self.mir_ids.ids)}
        self._write_names()
        self._write(plan, services)
        wanted: set[tuple[str, str]] = set()
        for (ifname, d) in plan.interfaces:
            wanted.add((ifname, "ingress" if d == Q.DIR_IN else "egress"))
        if plan.flags():
            wanted |= {(i, "ingress") for i in lb_ifaces}
        loop = any(m.type in ERSPAN_TYPES for m in plan.mirrors.values())
        if loop:
            wanted.add((LOOP_IF, "ingress"))
        self._detach_all(wanted)
        for ifname, direction in sorted(wanted - self.attached):
            fd = self.fds["loop"] if (ifname, direction) == (LOOP_IF, "ingress") else \
                self.fds[direction]
            try:
                tcx.attach(ifname, fd, direction, self.netns)
                self.attached.add((ifname, direction))
            except (OSError, LookupError) as exc:
                self.errors[f"interface {ifname} {direction}"] = str(exc)
                log.error("qos attach failed", extra={"interface": ifname, "error": str(exc)})
        self._write_cfg(plan, (LOOP_IF, "ingress") in self.attached)
        self.plan = plan

    def _write_names(self) -> None:
        t = self.table("qos_names")
        for kind, ids in ((KIND_POLICER, self.pol_ids), (KIND_MIRROR, self.mir_ids)):
            for i in ids.released:
                t.pop(t.Key(kind << 16 | i), None)
            for name, i in ids.ids.items():
                if i in ids.created:
                    v = t.Leaf()
                    v.digest[:] = digest(name)
                    t[t.Key(kind << 16 | i)] = v

    def _detach_all(self, keep: set[tuple[str, str]]) -> None:
        targets = set(self.attached)
        if not self._swept:
            # A previous daemon may have left ours on interfaces this config no longer has.
            self._swept = True
            for _i, ifname in tcx._in_netns(self.netns, socket.if_nameindex):
                targets |= {(ifname, "ingress"), (ifname, "egress")}
        for ifname, direction in targets - keep:
            try:
                tcx.detach(ifname, direction, self.netns)
            except OSError as exc:
                log.warning("qos detach failed", extra={"interface": ifname, "error": str(exc)})
            self.attached.discard((ifname, direction))

    def _ifindex(self, ifname: str) -> int:
        return tcx._in_netns(self.netns, lambda: socket.if_nametoindex(ifname))

    def _write(self, plan: Q.Plan, services: dict[str, Any]) -> None:
        pol_t, mir_t = self.table("qos_pol"), self.table("qos_mir")
        # Policers: rewritten (buckets full) only when their configuration changed.
        pinned_pol, pinned_mir = self._pinned["pol"], self._pinned["mir"]
        self._pinned = {"pol": {}, "mir": {}}  # only the first write after a restart
        for pid, p in plan.policers.items():
            if self.plan.policers.get(pid) == p and pid in self._written.get("pol", set()):
                continue
            v = pol_t.Leaf()
            v.flags, v.cir, v.pir = p.flags, p.cir, p.pir
            v.c_max, v.e_max, v.c_max_ns, v.e_max_ns = p.c_max, p.e_max, p.c_max_ns, p.e_max_ns
            v.tc, v.te, v.last_ns = p.c_max, p.e_max, 0
            v.yellow_dscp, v.red_dscp = p.yellow_dscp, p.red_dscp
            for c in range(3):
                v.action[c], v.dscp[c] = p.action[c], p.dscp[c]
            if pid in self.pol_ids.adopted and pinned_pol.get(pid) == _config(v, POLICER_CONFIG):
                continue  # the previous daemon's, unchanged: its buckets and counters go on
            pol_t[pol_t.Key(pid)] = v
            self._zero("qos_pol_st", pid)
        for pid in (self._written.get("pol", set()) | set(pinned_pol)) - set(plan.policers):
            pol_t[pol_t.Key(pid)] = pol_t.Leaf()
        self._written["pol"] = set(plan.policers)
        for mid, m in plan.mirrors.items():
            v = mir_t.Leaf()
            v.type, v.sample, v.vlan, v.session = m.type, m.sample, m.vlan, m.session
            v.ttl, v.dscp = m.ttl, m.dscp
            try:
                if m.collector:
                    oif, src = _route(m.collector, self.netns)
                    v.ifindex = self._ifindex(oif)
                    source = m.source or src
                    if not source:
                        raise LookupError(f"no source address towards {m.collector}")
                    v.family, v.dst.w[:] = L.addr_words(m.collector)
                    v.src.w[:] = L.addr_words(source)[1]
                    _nudge_neighbour(m.collector, self.netns)
                else:
                    v.ifindex = self._ifindex(m.ifname)
            except (OSError, LookupError) as exc:
                name = next((n for n, i in self.mir_ids.ids.items() if i == mid), str(mid))
                self.errors[f"mirror {name}"] = str(exc)
                v.type = 0  # programmed off until a commit finds the interface or route
            kept = mid in self.mir_ids.adopted and pinned_mir.get(mid) == _config(v, MIRROR_CONFIG)
            if self.plan.mirrors.get(mid) != m and not kept:
                self._zero("qos_mir_st", mid)
            mir_t[mir_t.Key(mid)] = v
        for mid in (self._written.get("mir", set()) | set(pinned_mir)) - set(plan.mirrors):
            mir_t[mir_t.Key(mid)] = mir_t.Leaf()
        self._written["mir"] = set(plan.mirrors)
        self._write_attachments(plan, services)
        self._write_cfg(plan, (LOOP_IF, "ingress") in self.attached)

    def _write_cfg(self, plan: Q.Plan, loop: bool) -> None:
        """Which attachment kinds exist; the loopback's ifindex while sluice_qos_mir is
        attached there (bpf/lib/mirror.h erspan_loop), else 0."""
        cfg = self.table("qos_cfg")
        v = cfg.Leaf()
        v.flags = plan.flags()
        v.loop_ifindex = self._ifindex(LOOP_IF) if loop else 0
        cfg[cfg.Key(0)] = v

    def _zero(self, table: str, ident: int) -> None:
        t = self.table(table)
        for k in range(4):
            t[t.Key(ident * 4 + k)] = t.Leaf()  # per-CPU: bcc zeroes every CPU's copy

    def _write_attachments(self, plan: Q.Plan, services: dict[str, Any]) -> None:
        qif, qsvc, qep, qsrc = (self.table(n) for n in ("qos_if", "qos_svc", "qos_ep", "qos_src"))
        ifs: dict[Any, tuple[int, int]] = {}
        for (ifname, d), (pol, mir) in plan.interfaces.items():
            try:
                ifs[(self._ifindex(ifname), d)] = (pol, mir)
            except OSError as exc:
                self.errors[f"interface {ifname}"] = str(exc)
        svcs: dict[int, tuple[int, int]] = {}
        for name, (pol, mir) in plan.services.items():
            st = services.get(name)
            if st is not None:
                svcs[int(st.id)] = (pol, mir)
        eps: dict[int, int] = {}
        for (name, addr, port), pol in plan.endpoints.items():
            st = services.get(name)
            if st is None:
                continue
            for (a, p), ep_id in st.eps.items():
                if ipaddress.ip_address(a).compressed == addr and int(p) == port:
                    eps[int(ep_id)] = pol
        srcs: dict[str, int] = dict(plan.prefixes)

        def put(t: Any, key: Any, pol: int, mir: int) -> None:
            v = t.Leaf()
            v.policer, v.mirror = pol, mir
            t[key] = v

        def if_key(k: tuple[int, int]) -> Any:
            key = qif.Key()
            key.ifindex, key.dir = k
            return key

        def src_key(prefix: str) -> Any:
            net = ipaddress.ip_network(prefix)
            family, words = L.addr_words(str(net.network_address))
            key = qsrc.Key()
            key.prefixlen, key.family = 32 + net.prefixlen, family
            for i, w in enumerate(words):
                key.a.w[i] = w
            return key

        for k, (pol, mir) in ifs.items():
            put(qif, if_key(k), pol, mir)
        for k in self._written.get("if", set()) - set(ifs):
            qif.pop(if_key(k), None)
        for sid, (pol, mir) in svcs.items():
            put(qsvc, qsvc.Key(sid), pol, mir)
        for sid in self._written.get("svc", set()) - set(svcs):
            qsvc.pop(qsvc.Key(sid), None)
        for eid, pol in eps.items():
            put(qep, qep.Key(eid), pol, 0)
        for eid in self._written.get("ep", set()) - set(eps):
            qep.pop(qep.Key(eid), None)
        for prefix, pol in srcs.items():
            put(qsrc, src_key(prefix), pol, 0)
        for prefix in self._written.get("src", set()) - set(srcs):
            qsrc.pop(src_key(prefix), None)
        self._written.update({"if": set(ifs), "svc": set(svcs), "ep": set(eps), "src": set(srcs)})

    # -- state ---------------------------------------------------------------------------
    def _sum(self, table: str, ident: int, k: int) -> tuple[int, int]:
        t = self.table(table)
        values = t.get(t.Key(ident * 4 + k)) or []
        return sum(int(v.packets) for v in values), sum(int(v.bytes) for v in values)

    def policer_state(self) -> dict[str, Doc]:
        """Per policer name: {green|yellow|red: {packets, bytes}}."""
        if self.bpf is None:
            return {}
        out = {}
        for name, pid in self.names["policer"].items():
            out[name] = {c: dict(zip(("packets", "bytes"), self._sum("qos_pol_st", pid, i),
                                     strict=True))
                         for i, c in enumerate(Q.COLORS)}  # fmt: skip
        return out

    def mirror_state(self) -> dict[str, Doc]:
        """Per session name: packets, bytes (copied), sampled-out, failed, not-carried."""
        if self.bpf is None:
            return {}
        out = {}
        for name, mid in self.names["mirror"].items():
            sent = self._sum("qos_mir_st", mid, 0)
            out[name] = {"packets": sent[0], "bytes": sent[1],
                         "sampled-out": self._sum("qos_mir_st", mid, 1)[0],
                         "failed": self._sum("qos_mir_st", mid, 2)[0],
                         "not-carried": self._sum("qos_mir_st", mid, 3)[0]}  # fmt: skip
        return out

    def status(self) -> Doc:
        return {
            "loaded": self.bpf is not None,
            "attached": sorted(f"{i} {d}" for i, d in self.attached),
            "errors": dict(self.errors),
        }

    def close(self) -> None:
        """Drop our fds; attachments and pins stay (traffic keeps being policed)."""
        if self.bpf is not None and self.owns_program:
            self.bpf.cleanup()
        self.bpf = None

    def remove(self) -> None:
        """Detach everywhere and remove our pins (``sluice run --cleanup``)."""
        self._swept = False
        self._detach_all(set())
        if self.bpf is not None:
            jmp = self.bpf[b"jmp_map"]
            with contextlib.suppress(KeyError, OSError):  # an empty slot
                del jmp[jmp.Key(JMP_INDEX[EP_PROGRAM])]
        for short in PINS:
            (self.pin_root / f"{short}{LAYOUT_SUFFIX}").unlink(missing_ok=True)
