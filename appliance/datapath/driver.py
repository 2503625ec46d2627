"""Config -> map contents. Works on the tables of a loaded ``Program`` (bcc stays there).

Write order keeps every service whole as seen by the datapath: endpoints first, then the
selection table into the idle generation, then the service entry (one map update flips
the generation and makes the service visible), then the old generation and removed
endpoints go. Deletion runs the other way round: service entry first.
"""

from __future__ import annotations

import hashlib
import heapq
import ipaddress
import logging
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from appliance.algorithm import STANDALONE_DEFAULT, service_algorithm
from appliance.datapath import ctwalk
from appliance.datapath import layout as L
from appliance.datapath.conntrack import Conntrack
from appliance.datapath.tables import maglev_size, maglev_table, weighted_sequence
from appliance.datapath.tcpreset import Resetter

log = logging.getLogger(__name__)

Doc = dict[str, Any]
# bpf/lib/nexthop.h: slot 0 of ep_nh_arr vouches for the generation in its nh.gen.
EP_NH_ON = 1
SvcKey = tuple[int, tuple[int, int, int, int], int, int]  # family, vip words, port, proto


@dataclass
class ServiceState:
    name: str
    id: int
    key: SvcKey
    gen: int = 0
    n_slots: int = 0
    eps: dict[tuple[str, int], int] = field(default_factory=dict)  # (address, port) -> id
    doc: Doc = field(default_factory=dict)
    eligible: int = 0
    programmed: bool = False
    allow: set[str] = field(default_factory=set)  # allowed-source prefixes in allow_map


def service_key(doc: Doc) -> SvcKey:
    family, words = L.addr_words(doc["vip"])
    proto = L.PROTOCOLS[doc.get("protocol", "tcp")]
    return family, words, int(doc.get("port") or 0), proto


def inactivity_timeout(doc: Doc) -> int:
    if doc.get("inactivity-timeout"):
        return int(doc["inactivity-timeout"])
    return L.DEFAULT_TIMEOUT.get(doc.get("protocol", "tcp"), L.DEFAULT_TIMEOUT_OTHER)


def _port_range(doc: Doc) -> tuple[int, int] | None:
    end = doc.get("port-range-end")
    if end and int(end) != int(doc.get("port") or 0):
        return int(doc["port"]), int(end)
    return None


class Driver:
    """Programs services into the maps and reads counters back (conntrack: ``self.ct``)."""

    def __init__(self, program: Any, netns: str | None = None) -> None:
        self.prog = program
        self.netns = netns
        self.t = {name: program.table(name) for name in (
            "svc_map", "range_map", "ep_map", "sel_map", "rr_map", "persist_map", "ifaddr_map",
            "allow_map", "ct_map", "syn_map", "ct4_map", "syn4_map", "svc_stats", "ep_stats",
            "ep_stats_arr", "svc_active",
            "ep_active",
            "nh_gen_map", "ep_nh_arr", "ep_arr", "sel_small_map", "snat_pool_map",
            "mh_map", "mh_peer_map", "mh_alt_map")}  # fmt: skip
        self._gen_lock = threading.Lock()
        # The sweep recounts endpoint gauges of configured endpoints only (ep_active is an
        # array: a removed endpoint's slot is there, zeroed, and must stay 0).
        self.ct = Conntrack(self.t, Resetter(netns), ep_ids=lambda: self._ep_ids)
        self.services: dict[str, ServiceState] = {}
        self.health: dict[tuple[str, str, int], bool] = {}
        # What the maps held when we started: service key -> (id, gen, n_slots) and
        # service id -> {(address, port): endpoint id}; reused so a restart changes nothing.
        self._found_svc: dict[SvcKey, tuple[int, int, int]] = {}
        self._found_eps: dict[int, dict[tuple[str, int], int]] = {}
        self._found_allow: dict[int, set[str]] = {}
        self._found_down: dict[int, set[tuple[str, int]]] = {}  # service id -> endpoints
        # The health found in the pins for the services adopted at start (see recover).
        self.pinned_health: dict[tuple[str, str, int], bool] = {}
        self._next_ep = 1
        self._next_svc = 1
        # Kept incrementally: 10,000 services x 32 endpoints must not cost O(n^2).
        self._svc_ids: set[int] = set()
        self._ep_ids: set[int] = set()
        # Free endpoint ids below EP_STATS_ARRAY, given out first (a min-heap): their
        # counters are in the per-CPU array the datapath reads without a hash lookup.
        self._low_free: list[int] = []
        self._ranges: dict[tuple[int, Any, int], dict[str, tuple[int, int]]] = {}
        # For services that set no algorithm; the reconciler sets it from /bgp.
        self.default_algorithm = STANDALONE_DEFAULT

    # -- ids -----------------------------------------------------------------------------
    def recover(self) -> None:
        """Read back what a previous daemon programmed (pinned maps survive it)."""
        for k, v in self.t["svc_map"].items():
            key = (int(k.family), tuple(k.vip.w), L.ntohs(k.port), int(k.proto))
            self._found_svc[key] = (int(v.id), int(v.gen), int(v.n_slots))  # type: ignore[index]
            self._svc_ids.add(int(v.id))
        for k, v in self.t["ep_map"].items():
            ep = (L.words_addr(v.addr.w, v.family), L.ntohs(v.port))
            self._found_eps.setdefault(int(v.svc_id), {})[ep] = int(k.value)
            if v.flags & L.EP_F_DOWN:
                self._found_down.setdefault(int(v.svc_id), set()).add(ep)
            self._ep_ids.add(int(k.value))
            self._next_ep = max(self._next_ep, int(k.value) + 1)
        self._low_free = [i for i in range(1, min(self._next_ep, L.EP_STATS_ARRAY))
                          if i not in self._ep_ids]  # fmt: skip
        self._adopt_hashed_counters()
        # The allow key holds no family, and an IPv6 prefix of /32 or shorter has words
        # 1..3 zero like an IPv4 one: take the family of the service it belongs to (the
        # model requires allowed sources of the VIP's family). Guessing from the bits read
        # 2001:db8::/32 back as 32.1.13.184/32, and the "stale" entry then deleted was the
        # key just written: every new flow of the service was dropped after a restart.
        families = {sid: key[0] for key, (sid, _, _) in self._found_svc.items()}
        for k in self.t["allow_map"]:
            sid = int(k.svc_id)
            fam = families.get(sid) or (6 if any(k.a.w[1:]) or k.prefixlen > 64 else 4)
            prefix = f"{L.words_addr(k.a.w, fam)}/{k.prefixlen - 32}"
            self._found_allow.setdefault(sid, set()).add(prefix)

    def _adopt_health(self, name: str, sid: int, doc: Doc) -> None:
        """A restarted daemon keeps the health the pins hold for a service it adopts: an
        endpoint known dead stays out of the table until the prober says otherwise (health
        unknown means up, and would send it new flows meanwhile)."""
        down = self._found_down.pop(sid, set())
        configured = {(ep["address"], int(ep["port"])) for ep in doc.get("endpoint", [])}
        for address, port in self._found_eps.get(sid, {}).keys() & configured:
            up = (address, port) not in down
            self.pinned_health[(name, address, port)] = up
            self.health.setdefault((name, address, port), up)

    def _alloc_svc_id(self) -> int:
        for _ in range(2):
            while self._next_svc < L.MAX_SERVICES and self._next_svc in self._svc_ids:
                self._next_svc += 1
            if self._next_svc < L.MAX_SERVICES:
                self._svc_ids.add(self._next_svc)
                return self._next_svc
            self._next_svc = 1  # wrap once and look for a hole
        raise RuntimeError("no free service id (MAX_SERVICES reached)")

    def _alloc_ep_id(self) -> int:
        ep_id = self._take_ep_id()
        if ep_id < L.EP_STATS_ARRAY:  # a fresh endpoint counts from zero (ids are reused)
            arr = self.t["ep_stats_arr"]
            arr[arr.Key(ep_id)] = arr.Leaf()
        return ep_id

    def _take_ep_id(self) -> int:
        while self._low_free:  # the lowest free id below EP_STATS_ARRAY first
            ep_id = heapq.heappop(self._low_free)
            if ep_id not in self._ep_ids:
                self._ep_ids.add(ep_id)
                return ep_id
        for _ in range(2):
            while self._next_ep < L.MAX_ENDPOINTS and self._next_ep in self._ep_ids:
                self._next_ep += 1
            if self._next_ep < L.MAX_ENDPOINTS:
                self._ep_ids.add(self._next_ep)
                return self._next_ep
            self._next_ep = 1  # wrap once and look for a hole
        raise RuntimeError("no free endpoint id (MAX_ENDPOINTS reached)")

    # -- programming ---------------------------------------------------------------------
    def algorithm(self, doc: Doc) -> str:
        """The service's own algorithm or the cluster default (appliance/algorithm.py)."""
        return service_algorithm(doc, self.default_algorithm)

    def features(self, doc: Doc) -> list[str]:
        """The program modules (appliance/datapath/program.py MODULES) whose tail-call
        targets a packet of this service may reach, beyond the core's: sluice_sctp for
        SCTP, sluice_xlat for an endpoint of the other family (NAT64/46, CT_F_XLAT),
        sluice_l3dsr for IP-in-IP DSR (SVC_F_IPIP), sluice_gtpu for gtp-teid; sluice_lb6 (the
        IPv6 balancer) for any IPv6 address of the service, the endpoints' included (their
        replies are IPv6 packets)."""
        out = []
        if doc.get("protocol") == "sctp":
            out.append("sctp")
        v6 = ":" in doc["vip"]  # an IPv6 address has one, an IPv4 one none (cheap: per commit)
        eps = doc.get("endpoint", [])
        if any((":" in ep["address"]) != v6 for ep in eps):
            out.append("xlat")
        others = (*doc.get("secondary-vip", []), *doc.get("secondary-snat-address", []))
        if v6 or any(":" in ep["address"] for ep in eps) or any(":" in a for a in others):
            out.append("ipv6")
        if doc.get("mode") == "dsr" and doc.get("dsr-tunnel") == "ip-in-ip":
            out.append("l3dsr")
        if self.algorithm(doc) == "gtp-teid":
            out.append("gtpu")
        return out

    def eligible(self, name: str, ep: Doc) -> bool:
        if ep.get("admin-state", "enabled") != "enabled":
            return False  # disabled and drain: no new flows
        return self.health.get((name, ep["address"], int(ep["port"])), True)

    def _selection(self, name: str, doc: Doc, ep_ids: list[int]) -> list[int]:
        """The slot table: endpoint ids (see bpf/lib/select.h)."""
        eps = doc.get("endpoint", [])
        algo = self.algorithm(doc)
        ok = [self.eligible(name, ep) for ep in eps]
        if algo in L.MAGLEV_TABLES:
            # Size from all configured endpoints, so health changes never resize the table
            # (a resize would move nearly every flow). Named by canonical address and port,
            # never by local ids, so every appliance builds the same table.
            names = [f"{ipaddress.ip_address(ep['address']).compressed}:{int(ep['port'])}"
                     for ep in eps]  # fmt: skip
            weights = [int(e.get("weight", 1)) if g else 0 for e, g in zip(eps, ok, strict=True)]
            return [ep_ids[i] for i in maglev_table(names, weights, maglev_size(len(eps)))]
        if algo in ("weighted", "hash", "persistence"):
            weights = [int(e.get("weight", 1)) if g else 0 for e, g in zip(eps, ok, strict=True)]
            return [ep_ids[i] for i in weighted_sequence(weights)]
        return [ep_ids[i] for i, good in enumerate(ok) if good]

    def program_service(self, name: str, doc: Doc) -> None:
        """Create or update one service (idempotent). Disabled services are removed."""
        if doc.get("admin-state", "enabled") != "enabled":
            self.remove_service(name)
            return
        if hasattr(self.prog, "need"):
            # Its feature's programs compile and load with the first service that needs
            # them, before the service entry that lets a packet tail-call there.
            for feature in self.features(doc):
                self.prog.need(feature)
        key = service_key(doc)
        old = self.services.get(name)
        if old is not None and old.key != key:
            self.remove_service(name)  # a new identity: a new service for the datapath
            old = None
        if old is None:
            found = self._found_svc.pop(key, None)
            if found:
                sid, gen, n_slots = found
                self._adopt_health(name, sid, doc)
                state = ServiceState(name, sid, key, gen, n_slots,
                                     eps=self._found_eps.pop(sid, {}),
                                     allow=self._found_allow.pop(sid, set()))  # fmt: skip
                # After an upgrade from the one-slot selection map, the table goes into the
                # *live* generation of our (empty) map: the older program, attached until
                # start() replaces it, keeps reading the live generation of its own map,
                # which a flip would point at nothing (new flows dropped meanwhile).
                state.programmed = not getattr(self.prog, "legacy_layout", False)
            else:
                state = ServiceState(name, self._alloc_svc_id(), key)
                self._reset_service_counters(state.id)
            self.services[name] = state
        else:
            state = old
        sid = state.id
        eps = doc.get("endpoint", [])

        # 1. endpoints
        wanted = [(ep["address"], int(ep["port"])) for ep in eps]
        ids = [state.eps.get(w) or self._alloc_ep_id() for w in wanted]
        for ep, ep_id in zip(eps, ids, strict=True):
            self._write_endpoint(name, sid, ep, ep_id)
        stale = {w: i for w, i in state.eps.items() if w not in wanted}
        state.eps = dict(zip(wanted, ids, strict=True))

        # 2. selection table into the idle generation
        table = self._selection(name, doc, ids)
        if L.sel_pages(len(table)) > L.MAX_SEL_PAGES // 8:
            raise ValueError(f"selection table of {name} too large ({len(table)} slots)")
        new_gen = 1 - state.gen if state.programmed else state.gen
        self._write_slots(sid, new_gen, table)

        # 2b. allowed sources (added before the entry, removed after it)
        allow = {str(ipaddress.ip_network(a, strict=False)) for a in doc.get("allowed-source", [])}
        for prefix in allow - state.allow:
            self.t["allow_map"][self._allow_key(sid, prefix)] = self.t["allow_map"].Leaf(1)

        self._write_multihome(sid, doc)  # SCTP secondary addresses (bpf/lib/sctp_mh.h)

        # 3. the service entry: one update makes everything above live
        state.doc = doc
        range_ = _port_range(doc)
        info = self.t["svc_map"].Leaf()
        info.id = sid
        info.mode = L.MODES[doc.get("mode", "default")]
        info.algo = L.ALGORITHMS[self.algorithm(doc)]
        info.flags = ((L.SVC_F_RANGE if range_ else 0) | (L.SVC_F_ALLOW if allow else 0)
                      | (L.SVC_F_MIDSTREAM if doc.get("tcp-midstream-pickup") else 0))
        if doc.get("mode") == "dsr" and doc.get("dsr-tunnel") == "ip-in-ip":
            info.flags |= L.SVC_F_IPIP  # L3-DSR (bpf/lib/l3dsr.h)
        info.gen = new_gen
        info.n_slots = len(table)
        info.timeout_s = inactivity_timeout(doc)
        info.persist_s = int(doc.get("persistence-timeout", 10800))
        if range_:
            info.range_lo, info.range_hi = range_
        if doc.get("snat-address"):
            info.snat.w[:] = L.addr_words(doc["snat-address"])[1]
        if self._write_snat_pool(sid, doc):
            info.flags |= L.SVC_F_POOL
        self.t["svc_map"][self._svc_key(key)] = info
        if range_ or name in self._ranges.get(self._range_id(key), {}):
            self._set_range(state, range_)

        # 4. what the old generation and removed endpoints held
        if state.programmed and new_gen != state.gen:
            self._delete_slots(sid, state.gen, state.n_slots)
        state.gen, state.n_slots, state.doc = new_gen, len(table), doc
        for prefix in state.allow - allow:
            self.t["allow_map"].pop(self._allow_key(sid, prefix), None)
        state.allow = allow
        state.eligible = len({i for i in table})
        state.programmed = True
        for ep_id in stale.values():
            self._delete_endpoint(ep_id)
        if stale:
            gone = set(stale.values())
            self._flush_ids(ep_ids=gone)

    def _write_snat_pool(self, sid: int, doc: Doc) -> bool:
        """Full-NAT's source addresses when there are more than one (snat-address first,
        then snat-pool): written before the service entry that points at them."""
        t = self.t["snat_pool_map"]
        pool = [doc["snat-address"], *doc.get("snat-pool", [])] if doc.get("snat-address") else []
        if doc.get("mode") != "full-nat" or len(pool) < 2:
            t.pop(t.Key(sid), None)
            return False
        v = t.Leaf()
        v.n = len(pool[: L.SNAT_POOL_MAX])
        for i, address in enumerate(pool[: L.SNAT_POOL_MAX]):
            v.a[i].w[:] = L.addr_words(address)[1]
        t[t.Key(sid)] = v
        return True

    def _write_multihome(self, sid: int, doc: Doc) -> None:
        """The service's SCTP secondary VIPs and SNAT addresses, or none."""
        table = self.t["mh_map"]
        vips, snats = doc.get("secondary-vip", []), doc.get("secondary-snat-address", [])
        n = min(len(vips), len(snats), L.MH_MAX)
        if not n:
            table.pop(table.Key(sid), None)
            return
        v = table.Leaf()
        v.n = n
        for i in range(n):
            family, v.vip[i].w[:] = L.addr_words(vips[i])
            v.snat[i].w[:] = L.addr_words(snats[i])[1]
            v.v6 |= (family == 6) << i  # each pair has one family, not always the VIP's
        table[table.Key(sid)] = v

    def remove_service(self, name: str) -> None:
        state = self.services.get(name)
        if state is None:
            return
        self.t["svc_map"].pop(self._svc_key(state.key), None)  # invisible from here on
        self.t["snat_pool_map"].pop(self.t["snat_pool_map"].Key(state.id), None)
        if name in self._ranges.get(self._range_id(state.key), {}):
            self._set_range(state, None)
        self._delete_slots(state.id, state.gen, state.n_slots)
        for prefix in state.allow:
            self.t["allow_map"].pop(self._allow_key(state.id, prefix), None)
        for ep_id in state.eps.values():
            self._delete_endpoint(ep_id)
        self.t["mh_map"].pop(self.t["mh_map"].Key(state.id), None)
        self._flush_ids(svc_ids={state.id})
        self._reset_service_counters(state.id)
        self._svc_ids.discard(state.id)
        del self.services[name]

    def remove_stale(self) -> None:
        """After start-up: drop what the maps hold that the config no longer has."""
        for key, (sid, gen, n_slots) in list(self._found_svc.items()):
            self.t["svc_map"].pop(self._svc_key(key), None)
            self.t["snat_pool_map"].pop(self.t["snat_pool_map"].Key(sid), None)
            self.t["mh_map"].pop(self.t["mh_map"].Key(sid), None)
            self._delete_slots(sid, gen, n_slots)
            self._flush_ids(svc_ids={sid})
            self._reset_service_counters(sid)
            self._svc_ids.discard(sid)
            self._write_ranges(key)  # ranges of services that are gone
        for eps in self._found_eps.values():
            for ep_id in eps.values():
                self._delete_endpoint(ep_id)
        for sid, prefixes in self._found_allow.items():
            for prefix in prefixes:
                self.t["allow_map"].pop(self._allow_key(sid, prefix), None)
        self._found_allow.clear()
        self._found_svc.clear()
        self._found_eps.clear()

    def set_health(self, name: str, address: str, port: int, up: bool) -> bool:
        """Record an endpoint's health; True if the service's table had to be rebuilt."""
        k = (name, address, int(port))
        if self.health.get(k, True) == up:
            self.health[k] = up
            return False
        self.health[k] = up
        state = self.services.get(name)
        if state is not None and state.doc:
            self.program_service(name, state.doc)
            return True
        return False

    def route_generation(self) -> int:
        t = self.t["nh_gen_map"]
        return int(t[t.Key(0)].value)

    def bump_route_generation(self, by_destination: bool = False) -> int:
        """Invalidate every next hop cached in conntrack and per endpoint
        (bpf/lib/nexthop.h): the next packet of each flow direction, and the next new flow
        to each endpoint, take the FIB again. Called on route, neighbour, link and rule
        changes; costs two map writes, whatever the number of flows.

        ``by_destination``: routing was just found to depend on the destination alone
        (appliance/netlink.py RoutingWatch), so new flows may take their endpoint's next
        hop from the per-endpoint cache in the new generation. Written after the
        generation: no packet sees the new generation vouched for before it exists."""
        with self._gen_lock:
            t = self.t["nh_gen_map"]
            gen = (self.route_generation() + 1) & 0xFFFFFFFF
            t[t.Key(0)] = t.Leaf(gen)
            ep = self.t["ep_nh_arr"]
            word = ep.Leaf()
            word.nh.ifindex = EP_NH_ON if by_destination else 0
            word.nh.gen = gen
            ep[ep.Key(0)] = word
            return gen

    def endpoint_next_hops(self) -> bool:
        """Whether new flows may take their endpoint's cached next hop now (slot 0 of
        ep_nh_arr vouches for the current generation)."""
        ep = self.t["ep_nh_arr"]
        word = ep[ep.Key(0)]
        return int(word.nh.ifindex) == EP_NH_ON and int(word.nh.gen) == self.route_generation()

    def refresh_interface_addresses(self, addrs: list[tuple[int, int, str]]) -> None:
        """One-arm: our own address per (ifindex, family), as netlink reported them."""
        t = self.t["ifaddr_map"]
        wanted: dict[tuple[int, int], str] = {}
        for index, version, address in addrs:
            wanted.setdefault((index, version), address)
        for k in list(t):
            if (int(k.ifindex), int(k.family)) not in wanted:
                t.pop(k, None)
        for (index, version), address in wanted.items():
            k = t.Key()
            k.ifindex, k.family = index, version
            v = t.Leaf()
            v.w[:] = L.addr_words(address)[1]
            t[k] = v

    # -- map helpers ---------------------------------------------------------------------
    def _svc_key(self, key: SvcKey) -> Any:
        family, words, port, proto = key
        k = self.t["svc_map"].Key()
        k.vip.w[:] = words
        k.port = L.htons(port)
        k.proto = proto
        k.family = family
        return k

    def _allow_key(self, sid: int, prefix: str) -> Any:
        net = ipaddress.ip_network(prefix)
        k = self.t["allow_map"].Key()
        k.prefixlen = 32 + net.prefixlen
        k.svc_id = sid
        k.a.w[:] = L.addr_words(str(net.network_address))[1]
        return k

    @staticmethod
    def _range_id(key: SvcKey) -> tuple[int, Any, int]:
        return key[0], key[1], key[3]

    def _set_range(self, state: ServiceState, range_: tuple[int, int] | None) -> None:
        ranges = self._ranges.setdefault(self._range_id(state.key), {})
        if range_ is None:
            ranges.pop(state.name, None)
        else:
            ranges[state.name] = range_
        self._write_ranges(state.key)

    def _write_ranges(self, key: SvcKey) -> None:
        """The port-range list of (vip, proto): every service's range on it."""
        family, words, _, proto = key
        t = self.t["range_map"]
        rk = t.Key()
        rk.vip.w[:] = words
        rk.proto, rk.family = proto, family
        ranges = sorted(self._ranges.get(self._range_id(key), {}).values())
        if not ranges:
            t.pop(rk, None)
            return
        if len(ranges) > L.MAX_RANGES:
            raise ValueError(f"more than {L.MAX_RANGES} port ranges on one vip and protocol")
        v = t.Leaf()
        v.n = len(ranges)
        for i, (lo, hi) in enumerate(ranges):
            v.lo[i], v.hi[i] = lo, hi
        t[rk] = v

    def _sel_keys(self, sid: int, gen: int, n_slots: int) -> Any:
        """The sel_map keys of a table of ``n_slots`` slots: one per page."""
        t = self.t["sel_map"]
        n = L.sel_pages(n_slots)
        keys = (t.Key * n)()
        bit = L.SEL_GEN_BIT if gen else 0
        for i in range(n):
            keys[i].svc_id = sid
            keys[i].page = i | bit
        return keys

    def _write_slots(self, sid: int, gen: int, table: list[int]) -> None:
        if not table:
            return
        if len(table) <= L.SEL_SMALL:  # what the datapath reads for a small table
            small = self.t["sel_small_map"]
            value = small.Leaf()
            value.ep[: len(table)] = table
            small[small.Key(sid * 2 + gen)] = value
        t = self.t["sel_map"]
        keys = self._sel_keys(sid, gen, len(table))
        n = len(keys)
        # The pages as one buffer of native u32, the last one padded with 0 (no endpoint).
        packed = struct.pack(f"={len(table)}I", *table) + bytes(4 * (n * L.SEL_PAGE - len(table)))
        values = (t.Leaf * n).from_buffer_copy(packed)
        try:
            t.items_update_batch(keys, values)  # one syscall per table
        except Exception:
            for k, v in zip(keys, values, strict=True):
                t[k] = v

    def _delete_slots(self, sid: int, gen: int, n: int) -> None:
        if n == 0:
            return
        t = self.t["sel_map"]
        keys = self._sel_keys(sid, gen, n)
        try:
            t.items_delete_batch(keys)  # one syscall; fails as a whole if a key is missing
        except Exception:
            for k in keys:
                t.pop(k, None)

    def _write_endpoint(self, name: str, sid: int, ep: Doc, ep_id: int) -> None:
        t = self.t["ep_map"]
        family, words = L.addr_words(ep["address"])
        v = t.Leaf()
        v.addr.w[:] = words
        v.port = L.htons(int(ep["port"]))
        v.flags = L.EP_F_ELIGIBLE if self.eligible(name, ep) else 0
        if self.health.get((name, ep["address"], int(ep["port"]))) is False:
            v.flags |= L.EP_F_DOWN  # kept apart from admin state: see _adopt_health
        v.family = family
        v.svc_id = sid
        t[t.Key(ep_id)] = v
        arr = self.t["ep_arr"]  # the datapath's copy (an array: ids are dense)
        arr[arr.Key(ep_id)] = v
        # Counters exist before the first packet (the datapath only updates in place);
        # the array's are there always (zeroed when the id is given out).
        st, act = self.t["ep_stats"], self.t["ep_active"]
        if ep_id >= L.EP_STATS_ARRAY and st.get(st.Key(ep_id)) is None:
            st[st.Key(ep_id)] = st.Leaf()
        if act.get(act.Key(ep_id)) is None:
            act[act.Key(ep_id)] = act.Leaf(0)

    def _delete_endpoint(self, ep_id: int) -> None:
        self._ep_ids.discard(ep_id)
        if ep_id < L.EP_STATS_ARRAY:
            heapq.heappush(self._low_free, ep_id)
        arr = self.t["ep_arr"]
        arr[arr.Key(ep_id)] = arr.Leaf()  # an array entry cannot go: zero is "no endpoint"
        for name in ("ep_map", self._ep_stats_table(ep_id), "ep_active"):
            t = self.t[name]
            t.pop(t.Key(ep_id), None)  # arrays: zeroed

    @staticmethod
    def _ep_stats_table(ep_id: int) -> str:
        """Where an endpoint's counters are (bpf/lib/stats.h)."""
        return "ep_stats_arr" if ep_id < L.EP_STATS_ARRAY else "ep_stats"

    def _adopt_hashed_counters(self) -> None:
        """Counters a program before ep_stats_arr kept in the hash (ids below
        EP_STATS_ARRAY) move to the array at start, so an upgrade keeps them counting on."""
        st, arr = self.t["ep_stats"], self.t["ep_stats_arr"]
        for k, v in list(st.items()):
            if int(k.value) < L.EP_STATS_ARRAY:
                arr[arr.Key(int(k.value))] = v
                st.pop(k, None)

    def _reset_service_counters(self, sid: int) -> None:
        st = self.t["svc_stats"]
        st[st.Key(sid)] = st.Leaf()
        for name in ("svc_active", "rr_map"):
            t = self.t[name]
            t[t.Key(sid)] = t.Leaf(0)

    # -- reading back --------------------------------------------------------------------
    def _sum(self, table: str, key: int) -> tuple[int, int, int]:
        t = self.t[table]
        per_cpu = t.get(t.Key(key))
        if per_cpu is None:
            return 0, 0, 0
        return (sum(c.packets for c in per_cpu), sum(c.bytes for c in per_cpu),
                sum(c.sessions for c in per_cpu))  # fmt: skip

    def _gauge(self, table: str, key: int) -> int:
        t = self.t[table]
        v = t.get(t.Key(key))
        return max(int(v.value), 0) if v is not None else 0

    def service_state(self, name: str) -> Doc | None:
        state = self.services.get(name)
        if state is None:
            return None
        packets, nbytes, sessions = self._sum("svc_stats", state.id)
        total = sum(1 for ep in state.doc.get("endpoint", []))
        up = sum(1 for ep in state.doc.get("endpoint", []) if self.eligible(name, ep))
        oper = "down" if up == 0 else "up" if up == total else "degraded"
        return {
            "oper-status": oper,
            "endpoints-up": up,
            "packets": packets,
            "bytes": nbytes,
            "active-sessions": self._gauge("svc_active", state.id),
            "total-sessions": sessions,
        }

    def selection(self, name: str) -> Doc | None:
        """The live selection table read back from the maps, as endpoint addresses: what
        the datapath picks from, not what we meant to write. Its digest is the same on
        every appliance that would send each flow to the same endpoint (maglev and hash;
        `sluice dp selection`). Reads the table's pages (8 for 32 endpoints): on demand,
        never polled."""
        state = self.services.get(name)
        if state is None:
            return None
        ids = self._read_slots(state.id, state.gen, state.n_slots)
        by_id = {i: f"{ipaddress.ip_address(a).compressed}:{p}" for (a, p), i in state.eps.items()}
        slots = [by_id.get(i, "") for i in ids]
        share: dict[str, int] = {}
        for ep in slots:
            share[ep] = share.get(ep, 0) + 1
        return {
            "service": name,
            "algorithm": self.algorithm(state.doc),
            "slots": len(slots),
            "digest": hashlib.sha256("\n".join(slots).encode()).hexdigest()[:16],
            "share": dict(sorted(share.items())),
        }

    def _read_slots(self, sid: int, gen: int, n_slots: int) -> list[int]:
        """Endpoint ids of the table the datapath reads (see bpf/lib/select.h sel_slot)."""
        if n_slots == 0:
            return []
        if n_slots <= L.SEL_SMALL:
            small = self.t["sel_small_map"]
            value = small.get(small.Key(sid * 2 + gen))
            return [int(v) for v in value.ep[:n_slots]] if value is not None else [0] * n_slots
        t = self.t["sel_map"]
        out: list[int] = []
        for key in self._sel_keys(sid, gen, n_slots):
            page = t.get(key)
            out += [int(v) for v in page.ep] if page is not None else [0] * L.SEL_PAGE
        return out[:n_slots]

    def endpoint_state(self, name: str, address: str, port: int) -> Doc | None:
        state = self.services.get(name)
        if state is None:
            return None
        ep_id = state.eps.get((address, int(port)))
        if ep_id is None:
            return None
        doc = next((e for e in state.doc.get("endpoint", [])
                    if e["address"] == address and int(e["port"]) == int(port)), {})  # fmt: skip
        if doc.get("admin-state", "enabled") == "disabled":
            health = "admin-disabled"
        else:
            health = {True: "up", False: "down", None: "unknown"}[
                self.health.get((name, address, int(port)))
            ]
        packets, nbytes, sessions = self._sum(self._ep_stats_table(ep_id), ep_id)
        return {
            "health": health,
            "packets": packets,
            "bytes": nbytes,
            "active-sessions": self._gauge("ep_active", ep_id),
            "total-sessions": sessions,
        }

    # -- conntrack (appliance/datapath/conntrack.py does the work) -------------------------
    def conntrack(
        self,
        service: str | None = None,
        limit: int | None = None,
        match: Callable[[Doc], bool] | None = None,
    ) -> list[Doc]:
        """One row per flow of ``service`` (all if None); see Conntrack.rows."""
        names = {s.id: s.name for s in self.services.values()}
        want = self.services[service].id if service in self.services else None
        if service is not None and want is None:
            return []
        return self.ct.rows(names, want, limit, match)

    def flush_conntrack(self, match: Any) -> int:
        """Delete every flow whose ``struct ct_entry`` satisfies ``match`` (both entries)."""
        return self.ct.flush(match)

    def _flush_ids(self, svc_ids: set[int] | None = None, ep_ids: set[int] | None = None) -> int:
        return self.ct.flush_ids(svc_ids, ep_ids)

    def gc(self) -> int:
        """Expire idle flows and recount the gauges; see Conntrack.gc."""
        return self.ct.gc()

    def fill(self) -> dict[str, dict[str, int]]:
        """Entries and capacity per map (hash maps are counted by walking them).

        "ct_map" and "syn_map" stand for both families' tables (ct4_map, syn4_map hold the
        IPv4 keys): entries of both, capacity of each (conntrack-capacity, per family)."""
        out = {}
        for name in ("svc_map", "range_map", "ep_map", "sel_map", "persist_map"):
            n = ctwalk.count(self.t[name])
            out[name] = {"entries": n, "capacity": self.prog.map_capacity(name)}
        for name, kind in (("ct_map", "ct"), ("syn_map", "syn")):
            out[name] = {"entries": self.ct.flow_tables.count(kind),
                         "capacity": self.prog.map_capacity(name)}  # fmt: skip
        return out
