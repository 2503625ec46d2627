"""DatapathReconciler: the daemon's reconciler when the eBPF datapath is on.

start(effective) loads the program once, reads back what the pinned maps hold, programs
every service (reusing ids, so a restart changes no byte a flow depends on), removes what
the config no longer has, and attaches to the configured interfaces (filter replace: the
old program serves until the new one is in). apply(diff) programs only what changed. A
service that fails is reported, left as it was (see driver.py's write order) and retried
on the next apply and by the housekeeping thread.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from appliance import netlink
from appliance.algorithm import default_algorithm
from appliance.config import Diff
from appliance.config.errors import FieldError
from appliance.config.paths import BGP, DATAPATH, LOAD_BALANCER
from appliance.datapath.driver import Driver
from appliance.datapath.flows import FlowHooks
from appliance.datapath.fwreconcile import FirewallReconciler
from appliance.datapath.layout import DEFAULT_CT_CAPACITY
from appliance.datapath.program import DEFAULT_PIN_ROOT, Program
from appliance.datapath.qos import QOS_SECTIONS, QosDatapath
from appliance.datapath.validate import check
from appliance.datapath.xdp import XdpProgram

log = logging.getLogger(__name__)

LB = LOAD_BALANCER
DP = DATAPATH
HOUSEKEEPING_S = 5.0  # retry failed services
# Between conntrack sweeps (a full walk of the table): expiry, the idle TCP reset (which
# therefore comes up to this long after a session's inactivity timeout), the gauges. The
# config's /datapath/conntrack-sweep-interval (same default) sets it.
GC_INTERVAL_S = 30.0


def _interfaces(section: dict[str, Any] | None) -> list[str]:
    """Every datapath interface: the TC program is on each (behind XDP where hook is xdp)."""
    return [i["name"] for i in (section or {}).get("interface", [])]


def _xdp_interfaces(section: dict[str, Any] | None) -> list[str]:
    """The interfaces whose hook is xdp: the XDP fast path in front of TC (bpf/xdp.c)."""
    return [i["name"] for i in (section or {}).get("interface", []) if i.get("hook") == "xdp"]


class DatapathReconciler:
    def __init__(
        self,
        pin_root: Path = DEFAULT_PIN_ROOT,
        netns: str | None = None,
        program: Program | None = None,
        housekeeping: bool = True,
        follow_routes: bool = True,
        gc_interval_s: float | None = None,
        xdp: XdpProgram | None = None,
    ) -> None:
        self.pin_root = Path(pin_root)
        # Given here (tests), it wins over the config's conntrack-sweep-interval.
        self._gc_fixed = gc_interval_s
        self.gc_interval_s = gc_interval_s or GC_INTERVAL_S
        self.netns = netns
        self.program = program  # tests share one compiled program between topologies
        self._own_program = program is None
        # The XDP fast path: a module of the program, compiled on the first interface with
        # hook xdp (tests pass one to choose its mode).
        self.xdp = xdp
        self.xdp_interfaces: list[str] = []
        self.driver: Driver | None = None
        self.interfaces: list[str] = []
        self.pending: dict[str, dict[str, Any] | None] = {}  # name -> doc (None: remove)
        self.errors: dict[str, str] = {}
        # Services whose last programming failed: name -> error, since (epoch s), attempts.
        self.failures: dict[str, dict[str, Any]] = {}
        self.lock = threading.RLock()
        self._stop = threading.Event()
        self._housekeeping = housekeeping
        self._thread: threading.Thread | None = None
        self._routing: netlink.RoutingWatch | None = None
        self._follow_routes = follow_routes
        self.firewall: FirewallReconciler | None = None
        # HA (bpf/lib/ha.h): VIPs paused on this node, written before any service is.
        self.flows: FlowHooks | None = None
        self._paused: list[str] = []
        # Policers and mirrors (bpf/qos.c): compiled and attached only when configured.
        self.qos = QosDatapath(self.pin_root, netns)
        self.qos_sections: dict[str, dict[str, Any] | None] = {}

    # -- Reconciler protocol -------------------------------------------------------------
    def _set_sweep(self, dp: dict[str, Any] | None) -> None:
        if self._gc_fixed is None:
            self.gc_interval_s = float((dp or {}).get("conntrack-sweep-interval", GC_INTERVAL_S))

    def start(self, effective: dict[str, Any]) -> None:
        dp = effective.get(DP, {}) or {}
        self._set_sweep(dp)
        with self.lock:
            if self.program is None:
                self.program = Program(
                    self.pin_root, int(dp.get("conntrack-capacity", DEFAULT_CT_CAPACITY))
                )
                self.program.load()
            self.driver = Driver(self.program, self.netns)
            self.driver.default_algorithm = default_algorithm(effective.get(BGP))
            self.driver.recover()
            self.flows = FlowHooks(self.program)
            self.driver.ct.on_gone = self.flows.emit  # the sweep's expiries reach the peers
            self.flows.set_paused(self._paused)
            self._refresh_addresses()
            for svc in effective.get(LB, {}).get("service", []):
                self._program(svc["name"], svc)
            self.driver.remove_stale()
            self.firewall = FirewallReconciler(self.program, self.netns)
            self.firewall.start(effective, self._service_docs())
            self._set_interfaces(_interfaces(dp))
            self._set_xdp(_xdp_interfaces(dp))
            self.qos_sections = {k: effective.get(k) for k in QOS_SECTIONS}
            self._sync_qos()
        if self._follow_routes:
            # Next hops cached in conntrack follow route, neighbour and link changes; the
            # ones cached before we listened (a previous daemon, or nobody) are dropped.
            # New flows take their endpoint's cached next hop only while routing depends on
            # the destination alone (bpf/lib/nexthop.h): the watch says so at each bump.
            self._routing = netlink.RoutingWatch(self._routes_changed, self.netns)
            self._routing.start()
            self._routes_changed()
        if self._housekeeping:
            self._thread = threading.Thread(target=self._loop, name="datapath", daemon=True)
            self._thread.start()

    def _endpoint_next_hops(self) -> str:
        assert self.driver is not None
        if self.driver.endpoint_next_hops():
            return "on"
        why = self._routing.why_not if self._routing is not None else "routes not followed"
        return f"off ({why})" if why else "off"

    def _routes_changed(self) -> None:
        assert self.driver is not None and self._routing is not None
        self.driver.bump_route_generation(self._routing.by_destination)

    def apply(self, diff: Diff) -> None:
        with self.lock:
            for name in diff.services_removed:
                self.pending[name] = None
            for name, doc in diff.services_added.items():
                self.pending[name] = doc
            for name, (_old, new) in diff.services_changed.items():
                self.pending[name] = new
            for section, (_old, new) in diff.sections_changed.items():
                if section.split(":")[-1] == "bgp":
                    self._set_default_algorithm(default_algorithm(new))
            self._refresh_addresses()
            self._retry()
            for section, (_old, new) in diff.sections_changed.items():
                if section.split(":")[-1] == "datapath":
                    self._set_interfaces(_interfaces(new))
                    self._set_xdp(_xdp_interfaces(new))
                    self._set_sweep(new)
            if self.firewall is not None:
                self.firewall.apply(diff, self._service_docs())
            # Sections are named without the module prefix here, with it in documents.
            changed = {f"sluice:{k.split(':')[-1]}": new
                       for k, (_o, new) in diff.sections_changed.items()}  # fmt: skip
            qos = {k: new for k, new in changed.items() if k in QOS_SECTIONS}
            self.qos_sections.update(qos)
            if qos or diff.services_added or diff.services_removed or diff.services_changed:
                self._sync_qos()

    def _set_default_algorithm(self, algorithm: str) -> None:
        """/bgp gained or lost its neighbours: services that set no algorithm change to
        the new cluster default (appliance/algorithm.py); established flows keep their
        endpoint (conntrack), new ones follow the new table."""
        assert self.driver is not None
        if algorithm == self.driver.default_algorithm:
            return
        log.info("default algorithm now %s", algorithm)
        self.driver.default_algorithm = algorithm
        for name, state in self.driver.services.items():
            if "algorithm" not in state.doc:
                self.pending.setdefault(name, state.doc)  # a newer doc or removal wins

    def close(self) -> None:
        """Stop housekeeping, drop our fds; filters and pins stay so traffic keeps flowing."""
        self._stop.set()
        if self.flows is not None:
            self.flows.stop_events()
        if self._routing is not None:
            self._routing.close()
        if self._thread is not None:
            self._thread.join(timeout=10)
        with self.lock:
            self.qos.close()
            if self.program is not None and self._own_program:
                self.program.close()

    @staticmethod
    def validate(doc: dict[str, Any]) -> list[FieldError]:
        """What the datapath cannot carry in ``doc`` (whole effective config): register it
        with ``ConfigService.add_validator``. Also ``appliance.datapath.validate.check``,
        which needs no reconciler (the daemon must register it with the datapath off too)."""
        return check(doc)

    def _service_docs(self) -> dict[str, dict[str, Any]]:
        assert self.driver is not None
        return {name: s.doc for name, s in self.driver.services.items()}

    # -- firewall and SNAT ---------------------------------------------------------------
    def set_snat_active(self, active: bool) -> None:
        """HA hook: SNAT rules apply only on the node that carries the traffic."""
        with self.lock:
            if self.firewall is not None:
                self.firewall.set_snat_active(active)

    def firewall_state(self) -> dict[str, Any]:
        with self.lock:
            return self.firewall.state() if self.firewall is not None else {}

    # -- the health prober calls this -----------------------------------------------------
    def set_endpoint_health(self, service: str, address: str, port: int, up: bool) -> None:
        """Mark an endpoint up or down; a down endpoint leaves its service's selection table."""
        with self.lock:
            assert self.driver is not None
            try:
                self.driver.set_health(service, address, port, up)
            except Exception as exc:
                self._failed(service, self.driver.services[service].doc, exc)

    def pinned_health(self) -> dict[tuple[str, str, int], bool]:
        """(service, endpoint address, port) -> up, as the pinned maps held it when this
        reconciler started: what a previous daemon's prober last knew, for seeding ours.
        Empty before start() and for services the maps did not hold."""
        with self.lock:
            return dict(self.driver.pinned_health) if self.driver is not None else {}

    # -- HA (the VipGate and the sync call these; bpf/lib/ha.h) ----------------------------
    def set_paused(self, vips: list[str]) -> None:
        """Answer for none of ``vips``' packets (services, endpoints and flows stay)."""
        with self.lock:
            self._paused = list(vips)
            if self.flows is not None:
                self.flows.set_paused(self._paused)

    def flow_bindings(self) -> dict[str, Any]:
        """This node's ids for a flow of another node, by what both configs share:
        ``exact``: (family, vip bytes, proto, port) -> (service id, {(endpoint bytes,
        port): endpoint id}); ``ranges``: (family, vip bytes, proto) -> [(lo, hi, same)]."""
        import struct

        from appliance.datapath import layout as L

        exact: dict[tuple[int, bytes, int, int], tuple[int, dict[tuple[bytes, int], int]]] = {}
        ranges: dict[tuple[int, bytes, int], list[tuple[int, int, int, Any]]] = {}
        with self.lock:
            if self.driver is None:
                return {"exact": exact, "ranges": ranges}
            for state in self.driver.services.values():
                family, words, port, proto = state.key
                vip = struct.pack("=4I", *words)
                eps = {}
                for (address, ep_port), ep_id in state.eps.items():
                    eps[(struct.pack("=4I", *L.addr_words(address)[1]), ep_port)] = ep_id
                exact[(family, vip, proto, port)] = (state.id, eps)
                # SCTP alternate paths (bpf/lib/sctp_mh.h) run to the secondary VIPs.
                for sec in state.doc.get("secondary-vip", []) or []:
                    sfam, swords = L.addr_words(sec)
                    exact.setdefault((sfam, struct.pack("=4I", *swords), proto, port),
                                     (state.id, eps))  # fmt: skip
                end = state.doc.get("port-range-end")
                if end and int(end) != port:
                    ranges.setdefault((family, vip, proto), []).append(
                        (port, int(end), state.id, eps))
        return {"exact": exact, "ranges": ranges}

    # -- operational state (control socket providers) ------------------------------------
    def service_state(self, name: str) -> dict[str, Any] | None:
        """The service's oper state, with ``programming``: {"status": "programmed"} or
        {"status": "failed", "error", "since", "attempts"}. A failed service keeps what
        the datapath last carried for it; if it carries nothing, it is down. (Nested, so
        the doors that map scalar leaves onto the YANG state container leave it out.)"""
        with self.lock:
            if self.driver is None:
                return None
            state = self.driver.service_state(name)
            failure = self.failures.get(name)
            if failure is None:
                return None if state is None else {**state, "programming": {"status": "programmed"}}
            if state is None:  # never programmed: nothing carries its traffic
                state = {"oper-status": "down", "endpoints-up": 0, "packets": 0, "bytes": 0,
                         "active-sessions": 0, "total-sessions": 0}  # fmt: skip
            return {**state, "programming": {"status": "failed", **failure}}

    def endpoint_state(self, service: str, address: str, port: int) -> dict[str, Any] | None:
        with self.lock:
            if self.driver is None:
                return None
            return self.driver.endpoint_state(service, address, port)

    def selection(self, name: str) -> dict[str, Any] | None:
        """The service's live selection table, read back from the maps (driver.selection)."""
        with self.lock:
            return self.driver.selection(name) if self.driver is not None else None

    def status(self) -> dict[str, Any]:
        with self.lock:
            if self.driver is None or self.program is None:
                return {"enabled": True, "loaded": False}
            attached: dict[str, list[str]] = {}
            xdp: dict[str, dict[str, Any]] = {}
            for ifname in self.interfaces:
                try:
                    attached[ifname] = netlink.tc_filters(ifname, "ingress", netns=self.netns)
                    if ifname in self.xdp_interfaces:
                        xdp[ifname] = netlink.xdp_state(ifname, netns=self.netns)
                        if xdp[ifname]:  # "xdp:native": the console and CLI show it as is
                            attached[ifname].insert(0, f"xdp:{xdp[ifname]['mode']}")
                except (OSError, LookupError) as exc:
                    attached[ifname] = [f"error: {exc}"]
            return {
                "enabled": True,
                "loaded": True,
                "program": "sluice_lb",
                "pin-dir": str(self.pin_root),
                "compile-seconds": round(self.program.compile_seconds, 2),
                # bpf/lb.c's modules loaded so far (program.py MODULES) and their seconds.
                "modules": {m: round(t, 2) for m, t in self.program.module_seconds.items()},
                "interfaces": attached,
                "xdp": xdp,
                "xdp-packets": self.xdp.counters() if self.xdp is not None else {},
                "services": len(self.driver.services),
                "route-generation": self.driver.route_generation(),
                # New flows' next hop: per endpoint while routing is by destination alone.
                "endpoint-next-hops": self._endpoint_next_hops(),
                "conntrack-sweep-interval": self.gc_interval_s,
                "maps": self.driver.fill(),
                "pending": sorted(self.pending),
                "errors": dict(self.errors),
                "service-errors": {name: dict(f) for name, f in self.failures.items()},
                "firewall": self.firewall.state() if self.firewall is not None else {},
                "qos": self.qos.status(),
            }

    def conntrack(
        self,
        service: str | None = None,
        limit: int | None = None,
        match: Callable[[dict[str, Any]], bool] | None = None,
    ) -> list[dict[str, Any]]:
        with self.lock:
            return self.driver.conntrack(service, limit, match) if self.driver else []

    def stats(self) -> list[dict[str, Any]]:
        with self.lock:
            if self.driver is None:
                return []
            rows = []
            for name, state in sorted(self.driver.services.items()):
                rows.append({"service": name, **(self.driver.service_state(name) or {})})
                for address, port in state.eps:
                    ep = self.driver.endpoint_state(name, address, port) or {}
                    rows.append({"service": name, "endpoint": f"{address}:{port}", **ep})
            return rows

    def state_providers(self) -> dict[str, Any]:
        """What the ControlServer's ``state`` dict wants (see appliance/control/api.py)."""
        return {
            "service": self.service_state,
            "endpoint": self.endpoint_state,
            "datapath": self.status,
            "conntrack": self.conntrack,
            "stats": self.stats,
            "selection": self.selection,
            "firewall": self.firewall_state,
            "qos": self.qos_state,
        }

    def qos_state(self) -> dict[str, Any]:
        """Policer colors and mirror counters by name, and the QoS program's status."""
        with self.lock:
            return {"policer": self.qos.policer_state(), "mirror": self.qos.mirror_state(),
                    "status": self.qos.status()}  # fmt: skip

    # -- clean-up (sluice run --cleanup) --------------------------------------------------
    @staticmethod
    def cleanup(effective: dict[str, Any], pin_root: Path, netns: str | None = None) -> None:
        """Detach from the configured interfaces and remove the pinned maps."""
        for ifname in _interfaces(effective.get(DP)):
            try:
                netlink.detach_tc(ifname, "ingress", netns=netns)
            except (OSError, LookupError) as exc:
                log.warning("detach failed", extra={"interface": ifname, "error": str(exc)})
        for ifname in _xdp_interfaces(effective.get(DP)):
            try:
                netlink.detach_xdp(ifname, netns=netns)
            except (OSError, LookupError) as exc:
                log.warning("XDP detach failed", extra={"interface": ifname, "error": str(exc)})
        Program(pin_root).remove_pins()
        QosDatapath(pin_root, netns).remove()

    # -- internals -----------------------------------------------------------------------
    def _program(self, name: str, doc: dict[str, Any] | None) -> None:
        assert self.driver is not None
        try:
            if doc is None:
                self.driver.remove_service(name)
            else:
                self.driver.program_service(name, doc)
        except Exception as exc:
            self._failed(name, doc, exc)
        else:
            self.pending.pop(name, None)
            self.errors.pop(name, None)
            self.failures.pop(name, None)

    def _failed(self, name: str, doc: dict[str, Any] | None, exc: Exception) -> None:
        self.pending[name] = doc
        self.errors[name] = str(exc)
        if doc is None:  # a removal that failed: the service is gone from the config
            self.failures.pop(name, None)
        else:
            failure = self.failures.setdefault(name, {"since": round(time.time(), 3),
                                                      "attempts": 0})  # fmt: skip
            failure["error"] = str(exc)
            failure["attempts"] += 1
        log.error("datapath programming failed; will retry",
                  extra={"service": name, "error": str(exc)})  # fmt: skip

    def _retry(self) -> None:
        for name, doc in list(self.pending.items()):
            self._program(name, doc)

    def _refresh_addresses(self) -> None:
        assert self.driver is not None
        try:
            self.driver.refresh_interface_addresses(netlink.interface_addresses(self.netns))
        except OSError as exc:
            log.warning("reading interface addresses failed", extra={"error": str(exc)})

    def _sync_qos(self) -> None:
        assert self.driver is not None
        try:
            self.qos.sync(dict(self.qos_sections), self.driver.services)
            self.errors.pop("qos", None)
        except Exception as exc:  # the balancer runs on; the error is in status and alarms
            self.errors["qos"] = str(exc)
            log.error("qos programming failed", extra={"error": str(exc)})

    def _set_interfaces(self, wanted: list[str]) -> None:
        assert self.program is not None
        for ifname in self.interfaces:
            if ifname not in wanted:
                try:
                    self.program.detach(ifname, self.netns)
                except (OSError, LookupError) as exc:
                    log.warning("detach failed", extra={"interface": ifname, "error": str(exc)})
        attached = []
        for ifname in wanted:
            try:
                self.program.attach(ifname, self.netns)
                attached.append(ifname)
            except (OSError, LookupError) as exc:
                self.errors[f"interface {ifname}"] = str(exc)
                log.error("attach failed", extra={"interface": ifname, "error": str(exc)})
        self.interfaces = wanted

    def _set_xdp(self, wanted: list[str]) -> None:
        """The XDP fast path on exactly ``wanted`` (compiled on first need). The TC program
        is attached first (_set_interfaces), so whatever XDP passes is balanced."""
        assert self.program is not None
        for ifname in self.xdp_interfaces:
            if ifname not in wanted and self.xdp is not None:
                self.errors.pop(f"xdp {ifname}", None)
                try:
                    self.xdp.detach(ifname, self.netns)
                except (OSError, LookupError) as exc:
                    log.warning("XDP detach failed", extra={"interface": ifname,
                                                            "error": str(exc)})  # fmt: skip
        if wanted and self.xdp is None:
            self.xdp = XdpProgram(self.program)
        for ifname in wanted:
            try:
                assert self.xdp is not None
                mode = self.xdp.attach(ifname, self.netns)
                self.errors.pop(f"xdp {ifname}", None)
                log.info("XDP fast path attached", extra={"interface": ifname, "mode": mode})
            except Exception as exc:  # TC carries the interface's traffic meanwhile
                self.errors[f"xdp {ifname}"] = str(exc)
                log.error("XDP attach failed", extra={"interface": ifname, "error": str(exc)})
        self.xdp_interfaces = wanted

    def _loop(self) -> None:
        last_gc = time.monotonic()
        while not self._stop.wait(min(HOUSEKEEPING_S, self.gc_interval_s)):
            try:
                with self.lock:
                    if self.pending:
                        self._retry()
                # The sweep touches only maps, not the driver's Python state, so it runs
                # outside the lock: a commit never waits for a million-entry walk.
                if self.driver is not None and time.monotonic() - last_gc >= self.gc_interval_s:
                    last_gc = time.monotonic()
                    self.driver.gc()
            except Exception:
                log.exception("datapath housekeeping failed")
