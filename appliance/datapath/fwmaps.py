"""Compiled firewall / SNAT tables -> the maps of bpf/lib/firewall.h, swapped atomically.

Every table exists in two generations; ``fw_live`` (one u32) says which one the datapath
reads. ``program`` fills the idle generation (shapes, keys in one batch, interface
policies, SNAT addresses, shape counts), flips ``fw_live`` with one write, then empties
the generation it left. A packet therefore sees the old rule set or the new one, never a
mix. Rule ids (the counters' index) stay with a rule's name while it exists, and across a
daemon restart (``fw_names``, stable_ids.py): a rule's counters go on where they were.
"""

from __future__ import annotations

import ipaddress
import logging
import struct
from typing import Any

from appliance.datapath import layout as L
from appliance.datapath.stable_ids import StableIds, digest
from appliance.firewall.compile import FW_MAX_RULES, FW_MAX_SNAT, FW_MAX_TUPLES, Compiled

log = logging.getLogger(__name__)

LIVE_GEN, LIVE_FW, LIVE_SNAT = 1, 2, 4  # bpf/lib/firewall.h FW_LIVE_*
POLICY_ACTIONS = {"allow": 0, "drop": 1, "reject": 2}
OWN_ID = 0  # bpf/lib/firewall.h FW_OWN_ID: the appliance's own flows let past a drop
MAPS = ("fw_live", "fw_gens", "fw_tuples", "fw_keys", "fw_ifpol", "fw_snat", "fw_stats",
        "fw_names")


def _words(value: int, family: int) -> tuple[int, int, int, int]:
    packed = value.to_bytes(4 if family == 4 else 16, "big")
    return struct.unpack("=4I", packed + bytes(16 - len(packed)))  # type: ignore[return-value]


def _mask(plen: int, family: int) -> int:
    bits = 32 if family == 4 else 128
    return ((1 << bits) - 1) ^ ((1 << (bits - plen)) - 1)


class FirewallMaps:
    def __init__(self, program: Any) -> None:
        self.prog = program
        self.t = {name: program.table(name) for name in MAPS}
        self.gen = 0
        self._ids = StableIds(FW_MAX_RULES)
        self.snat_active = True  # HA: only the active node applies SNAT
        self._snat_rules = False
        self._keys: dict[int, list[Any]] = {0: [], 1: []}
        self._ifpol: dict[int, list[int]] = {0: [], 1: []}

    def recover(self) -> None:
        """Pick up what a previous daemon left: the live generation and its keys."""
        live = self.t["fw_live"]
        self.gen = int(live[live.Key(0)].value) & LIVE_GEN
        for k in self.t["fw_keys"]:
            gen = int(k.tuple) // (2 * FW_MAX_TUPLES)
            self._keys[gen & 1].append(k)
        for k in self.t["fw_ifpol"]:
            self._ifpol[(int(k.value) >> 31) & 1].append(int(k.value))
        self._ids.recover((int(k.value), bytes(v.digest)) for k, v in self.t["fw_names"].items())

    @property
    def ids(self) -> dict[tuple[str, str], int]:
        return self._ids.ids  # type: ignore[return-value]

    # -- rule ids --------------------------------------------------------------------------
    def assign_ids(self, names: list[tuple[str, str]]) -> dict[tuple[str, str], int]:
        ids = self._ids.assign(names)
        stats, pinned = self.t["fw_stats"], self.t["fw_names"]
        for rid in self._ids.released:
            pinned.pop(pinned.Key(rid), None)
        for name, rid in ids.items():
            if rid in self._ids.created:
                stats[stats.Key(rid)] = stats.Leaf()  # a new rule counts from 0
                v = pinned.Leaf()
                v.digest[:] = digest(name)
                pinned[pinned.Key(rid)] = v
        return dict(self.ids)

    # -- programming -----------------------------------------------------------------------
    def program(self, compiled: Compiled, policies: dict[int, str], snat_rules: bool) -> None:
        """Raises DatapathUnavailable (maps unchanged) when sluice_fw does not load."""
        fw_on = bool(compiled.tables[0].entries) or any(p != "allow" for p in policies.values())
        if (fw_on or snat_rules) and hasattr(self.prog, "need"):
            # sluice_fw (program.py MODULES "fw") compiles with the first rule, before
            # fw_live sends new flows there: an empty slot would skip the firewall.
            self.prog.need("fw")
            # Rules see IPv6 packets in sluice_lb6 (the "ipv6" module): without it they
            # would pass unseen (lb.c sluice_lb).
            self.prog.need("ipv6")
        if fw_on and hasattr(self.prog, "need"):
            # SCTP's new flows reach the firewall from sluice_sctp (its own module): without
            # it, SCTP to a routed destination would pass the rules unseen.
            self.prog.need("sctp")
        new = 1 - self.gen
        self._clear(new)
        tuples, gens = self.t["fw_tuples"], self.t["fw_gens"]
        keys_t = self.t["fw_keys"]
        keys, values = [], []
        g = gens.Leaf()
        for t, table in compiled.tables.items():
            base = (new * 2 + t) * FW_MAX_TUPLES
            for i, (shape, min_pref) in enumerate(table.shapes):
                fam, slen, dlen, splen, dplen, use_if, use_proto = shape
                v = tuples.Leaf()
                v.smask.w[:] = _words(_mask(slen, fam), fam)
                v.dmask.w[:] = _words(_mask(dlen, fam), fam)
                v.spmask = L.htons(0xFFFF ^ ((1 << (16 - splen)) - 1))
                v.dpmask = L.htons(0xFFFF ^ ((1 << (16 - dplen)) - 1))
                v.min_pref = min_pref
                v.family, v.use_if, v.use_proto = fam, use_if, use_proto
                tuples[tuples.Key(base + i)] = v
            g.n_tuples[t] = len(table.shapes)
            for (i, key), (rid, pref, action, arg) in table.entries.items():
                fam = table.shapes[i][0][0]
                src, dst, sport, dport, ifindex, proto = key
                k = keys_t.Key()
                k.tuple = base + i
                k.ifindex = ifindex
                k.src.w[:] = _words(src, fam)
                k.dst.w[:] = _words(dst, fam)
                k.sport, k.dport = L.htons(sport), L.htons(dport)
                k.proto, k.family = proto, fam
                v = keys_t.Leaf()
                v.id, v.pref, v.arg, v.action = rid, pref, arg, action
                keys.append(k)
                values.append(v)
        if keys:
            karr = (keys_t.Key * len(keys))(*keys)
            varr = (keys_t.Leaf * len(values))(*values)
            try:
                keys_t.items_update_batch(karr, varr)  # one syscall for 10,000 rules
            except Exception:
                for k, v in zip(keys, values, strict=True):
                    keys_t[k] = v
        self._keys[new] = keys
        snat = self.t["fw_snat"]
        for i, address in enumerate(compiled.snat_addresses):
            a = snat.Leaf()
            a.w[:] = L.addr_words(address)[1]
            snat[snat.Key(new * FW_MAX_SNAT + i)] = a
        pol = self.t["fw_ifpol"]
        for ifindex, policy in policies.items():
            k = (new << 31) | ifindex
            pol[pol.Key(k)] = pol.Leaf(POLICY_ACTIONS[policy])
            self._ifpol[new].append(k)
        gens[gens.Key(new)] = g
        self._snat_rules = snat_rules
        self.gen = new
        self._write_live(fw_on)
        self._clear(1 - new)

    def set_snat_active(self, active: bool) -> None:
        """HA: SNAT only on the node that holds the traffic (the rest stays programmed)."""
        self.snat_active = active
        live = self.t["fw_live"]
        self._write_live(bool(int(live[live.Key(0)].value) & LIVE_FW))

    def _write_live(self, fw_on: bool) -> None:
        live = self.t["fw_live"]
        bits = self.gen | (LIVE_FW if fw_on else 0)
        if self._snat_rules and self.snat_active:
            bits |= LIVE_SNAT
        live[live.Key(0)] = live.Leaf(bits)

    def _clear(self, gen: int) -> None:
        keys_t = self.t["fw_keys"]
        keys = self._keys[gen]
        if keys:
            try:
                keys_t.items_delete_batch((keys_t.Key * len(keys))(*keys))
            except Exception:
                for k in keys:
                    keys_t.pop(k, None)
        self._keys[gen] = []
        pol = self.t["fw_ifpol"]
        for k in self._ifpol[gen]:
            pol.pop(pol.Key(k), None)
        self._ifpol[gen] = []
        gens = self.t["fw_gens"]
        gens[gens.Key(gen)] = gens.Leaf()

    # -- reading back ----------------------------------------------------------------------
    def counters(self) -> dict[tuple[str, str], tuple[int, int, int]]:
        """(table, rule name) -> (packets, bytes, sessions), summed over the CPUs."""
        stats = self.t["fw_stats"]
        out = {}
        for name, rid in self.ids.items():
            per_cpu = stats.get(stats.Key(rid))
            if per_cpu is None:
                out[name] = (0, 0, 0)
                continue
            out[name] = (sum(c.packets for c in per_cpu), sum(c.bytes for c in per_cpu),
                         sum(c.sessions for c in per_cpu))  # fmt: skip
        return out

    def live(self) -> dict[str, Any]:
        live = self.t["fw_live"]
        bits = int(live[live.Key(0)].value)
        own = self.t["fw_stats"].get(self.t["fw_stats"].Key(OWN_ID)) or []
        return {"generation": bits & LIVE_GEN, "firewall": bool(bits & LIVE_FW),
                "snat": bool(bits & LIVE_SNAT), "snat-active": self.snat_active,
                "keys": len(self._keys[self.gen]),
                "own-flows": sum(int(c.sessions) for c in own)}  # fmt: skip


def address_family(address: str) -> int:
    return ipaddress.ip_address(address).version
