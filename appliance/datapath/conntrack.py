"""Conntrack read back: listing, flushing and expiry of the conntrack tables (ct4_map and
ct_map, IPv4 and IPv6, and syn4_map / syn_map, where TCP flows wait for their handshake to
complete: appliance/datapath/cttables.py), and the session gauges.

The datapath creates and refreshes flows; the control plane only reads the table (the
``ct list`` rows), deletes from it (service/endpoint removal, operator flushes, expiry of
flows the datapath has not met again) and recounts the active-session gauges. Everything
here walks the tables in chunks (``ctwalk``) and decodes entries with ``struct`` rather than
ctypes: a million-flow table must stay cheap to list and sweep.
"""

from __future__ import annotations

import contextlib
import ctypes as ct
import gc as cyclic_gc
import logging
import socket
import struct
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import compress
from typing import Any

from appliance.datapath import ctwalk
from appliance.datapath import layout as L
from appliance.datapath.cttables import FlowTable, FlowTables
from appliance.datapath.tcpreset import IdleSession, Resetter

log = logging.getLogger(__name__)

Doc = dict[str, Any]


def monotonic_ns() -> int:
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC)  # bpf_ktime_get_ns's clock


class Conntrack:
    """The conntrack tables and the active-session gauges (svc_active, ep_active) of one
    program.

    A flow's two entries are always in tables of the same kind: syn during a TCP handshake
    (bpf/lib/tcpstate.h), ct otherwise; of the family of each entry's key (a NAT64/46
    flow's two entries are in two tables)."""

    def __init__(self, tables: dict[str, Any], resetter: Resetter | None = None,
                 ep_ids: Callable[[], set[int]] | None = None) -> None:  # fmt: skip
        self.t = {name: tables[name] for name in ("ct_map", "svc_active", "ep_active")}
        # SCTP multihoming (bpf/lib/sctp_mh.h): alternate path -> primary flow, and the
        # peers' addresses by primary flow. Absent in older programs and tests' stand-ins.
        self.t.update({name: tables[name] for name in ("mh_alt_map", "mh_peer_map")
                       if name in tables})  # fmt: skip
        # The configured endpoint ids (the driver's): ep_active is an array, so an entry's
        # existence no longer says which ids are in use. None: every id (tests' stand-ins).
        self.ep_ids = ep_ids
        # Flow tables, established first (older programs, tests' stand-ins: ct_map only).
        self.flow_tables = FlowTables(tables)
        self.orphans_removed = 0  # REPLY entries without their flow, removed by gc()
        self.resetter = resetter  # idle TCP sessions: reset both ends (tcpreset.py)
        self.idle_resets = 0  # sessions reset at their inactivity timeout
        self.alt_paths_removed = 0  # SCTP alternate paths removed with their association
        # The ORIG entries gc() expired, as flow events (L.FE_GONE, entry bytes), a batch
        # per chunk: the HA sync tells its peers (appliance/datapath/flows.py FlowHooks.emit).
        self.on_gone: Callable[[list[tuple[int, bytes]]], None] | None = None

    def rows(
        self,
        names: dict[int, str],
        want: int | None = None,
        limit: int | None = None,
        match: Callable[[Doc], bool] | None = None,
    ) -> list[Doc]:
        """One row per flow (the client->VIP entry), expired ones included and marked.

        ``names`` maps service ids to names; ``want`` keeps one service id only.
        ``match(row)`` keeps only some rows; ``limit`` stops after that many (kept) rows,
        and then the walk ends as soon as it has them: a screenful out of a million flows
        costs a chunk or two, not a walk of the whole table.
        """
        with _gc_paused():
            if limit is None:
                rows = self._conntrack(want, names)
                return [r for r in rows if match(r)] if match else rows
            return self._conntrack_first(want, names, limit, match)

    def _conntrack_first(self, want: int | None, names: dict[int, str], limit: int,
                         match: Callable[[Doc], bool] | None) -> list[Doc]:  # fmt: skip
        """The first ``limit`` rows that ``match``, chunk by chunk. A flow's reply entry may be
        anywhere in the table, so its counters come from one lookup per row kept."""
        now = monotonic_ns()
        out: list[Doc] = []
        for f, _, values, n in self._walk_all():
            ctf = _ct_formats(f)
            vsize, row = ctf.size, ctf.row
            origs, reply_keys = [], []
            for i in range(n):
                off = i * vsize
                if values[off + _DIR] == L.CT_DIR_REPLY:
                    continue
                if want is not None and ctf.svc.unpack_from(values, off)[0] != want:
                    continue
                origs.append((row.unpack_from(values, off), _flow_id(values, off)))
                reply_keys.append(_reply_key(values, off))
                if match is None and len(out) + len(origs) >= limit:
                    break  # without a filter every row is kept: build no more than needed
            for r, rk in zip(_rows(origs, {}, names, now), reply_keys, strict=True):
                if match is not None and not match(r):
                    continue
                reply = self.flow_tables.get(f.kind, rk)
                if reply is not None:
                    r["packets"][1], r["bytes"][1] = int(reply.packets), int(reply.bytes)
                out.append(r)
                if len(out) >= limit:
                    return out
        return out

    def _walk_all(self) -> Iterator[tuple[FlowTable, bytes, bytes, int]]:
        """(table, keys in its own form, values, count) chunks of every flow table."""
        for f in self.flow_tables:
            for keys, values, n in f.walk():
                yield f, keys, values, n

    def _conntrack(self, want: int | None, names: dict[int, str]) -> list[Doc]:
        now = monotonic_ns()
        replies: dict[bytes, tuple[int, int]] = {}
        origs: list[tuple[Any, ...]] = []
        for f, _, values, n in self._walk_all():
            ctf = _ct_formats(f)
            vsize, row = ctf.size, ctf.row
            if want is None:
                picked: Any = range(n)
            else:
                # Filter on the 4-byte service id before decoding anything else.
                picked = [i for i, (sid,) in enumerate(ctf.svc.iter_unpack(values)) if sid == want]
            for i in picked:
                off = i * vsize
                if values[off + _DIR] == L.CT_DIR_REPLY:
                    replies[_flow_id(values, off)] = ctf.counters.unpack_from(values, off)
                else:
                    origs.append((row.unpack_from(values, off), _flow_id(values, off)))
        return _rows(origs, replies, names, now)

    def flush(self, match: Any) -> int:
        """Delete every conntrack entry (either direction) for which ``match(entry)`` holds.

        ``entry`` is a ctypes ``struct ct_entry`` (a copy: keeping it is safe). Callers that
        match on ids should use ``flush_ids``, which never builds a ctypes object.
        """
        gone = 0
        for f, keys, values, n in self._walk_all():
            entries = (f.t.Leaf * n).from_buffer_copy(values)
            ks = f.key_size
            doomed = b"".join(keys[i * ks : (i + 1) * ks] for i in range(n) if match(entries[i]))
            gone += len(doomed) // ks
            ctwalk.delete(f.t, doomed)  # per chunk: the walk tolerates deletes behind it
        return gone

    def flush_ids(self, svc_ids: set[int] | None = None, ep_ids: set[int] | None = None) -> int:
        """Delete the entries of these services or endpoints (both directions)."""
        svc_ids, ep_ids = svc_ids or set(), ep_ids or set()
        gone = 0
        for f, keys, values, _ in self._walk_all():
            ctf = _ct_formats(f)
            ks = f.key_size
            doomed = b"".join(keys[i * ks : (i + 1) * ks]
                              for i, (sid, eid) in enumerate(ctf.ids.iter_unpack(values))
                              if sid in svc_ids or eid in ep_ids)  # fmt: skip
            gone += len(doomed) // ks
            ctwalk.delete(f.t, doomed)
        return gone

    def gc(self) -> int:
        """Delete expired flows the datapath has not met again, and recount the gauges.

        Returns the number of flows deleted. The active-session gauges are *recounted*
        rather than decremented per deleted flow: the datapath decrements only for the flows
        it deletes itself, so flows the LRU evicts (table full) would leave them too high
        forever. Each pass sets every gauge to the number of live, still-counted flows
        (ORIG entries with CT_F_COUNTED) it saw, and gauges it saw no flow for to 0.

        The race, and why it is acceptable: the datapath keeps adjusting the gauges (atomic
        add) while we walk, and our write is a plain store, so a flow created or ended
        between the walk passing its bucket and our write is missed or counted once too
        often. The error is bounded by the flows that start or end during one pass (the
        gauge never drifts further), it is corrected by the next pass, and the gauges are
        a display value and a least-connections hint, not a limit: exactness would need the
        datapath to stop, which is not worth it. Gauges are only written where they differ
        from the count, so a steady table costs no writes and races less.
        """
        now = monotonic_ns()
        orig, counted, dsr = L.CT_DIR_ORIG, L.CT_F_COUNTED, L.CT_F_DSR
        est, tcp, sctp = 1, 6, 132
        svc_live: Counter[int] = Counter()
        ep_live: Counter[int] = Counter()
        gone = 0
        # Keys kept past the walk are wide (struct ct_key): FlowTables routes them.
        stale: list[tuple[str, bytes]] = []  # (kind, REPLY key) to check for orphans
        alts: list[tuple[bytes, bytes]] = []  # SCTP alternate paths: (ORIG key, REPLY key)
        ended: list[bytes] = []  # ORIG keys of SCTP flows deleted here (their peers' record)
        mh_alt = L.CT_F_MH_ALT
        idle: list[IdleSession] = []  # expired established TCP sessions: reset both ends
        on_gone = self.on_gone
        for f, keys, values, _ in self._walk_all():
            ctf = _ct_formats(f)
            ks, vsize, wide = f.key_size, ctf.size, f.wide
            doomed: list[bytes] = []  # this table's own keys
            doomed_replies: list[bytes] = []  # wide: maybe in the other family's table
            expired: list[tuple[int, bytes]] = []  # (FE_GONE, ORIG entry) for on_gone
            sids: list[int] = []
            eids: list[int] = []
            for i, (last, sid, eid, timeout_s, d, state, flags, proto) in enumerate(
                ctf.gc.iter_unpack(values)
            ):
                idle_limit = _timeout_for(state, proto, timeout_s) * 1_000_000_000
                if d != orig:
                    # State and idle time live in the ORIG entry. A REPLY entry that has
                    # not synced it for longer than the flow's idle limit may be an orphan
                    # (its ORIG entry evicted or lost): checked after the walk.
                    if now > last and now - last > idle_limit and len(stale) < ORPHAN_CHECKS:
                        stale.append((f.kind, wide(keys[i * ks : (i + 1) * ks])))
                    continue
                if now > last and now - last > idle_limit:
                    doomed.append(keys[i * ks : (i + 1) * ks])
                    if on_gone is not None:
                        expired.append((L.FE_GONE, values[i * vsize : (i + 1) * vsize]))
                    if not flags & dsr:  # DSR flows have no reply entry
                        doomed_replies.append(_reply_key(values, i * vsize))
                    if proto == sctp and not flags & mh_alt:
                        ended.append(wide(keys[i * ks : (i + 1) * ks]))
                    if proto == tcp and state == est and self.resetter is not None:
                        session = _idle_session(ctf, values, i * vsize, flags)
                        if session is not None:
                            idle.append(session)
                    gone += 1
                elif flags & mh_alt:
                    # Lives as long as its association: judged after the walk.
                    alts.append((wide(keys[i * ks : (i + 1) * ks]), _reply_key(values, i * vsize)))
                elif flags & counted:
                    sids.append(sid)
                    eids.append(eid)
            svc_live.update(sids)
            ep_live.update(eids)
            # Per chunk, right after reading it: the shorter the time between judging a flow
            # expired and deleting it, the smaller the chance a packet revived it meanwhile.
            ctwalk.delete(f.t, b"".join(doomed))
            self.flow_tables.delete(f.kind, b"".join(doomed_replies))
            if expired:
                try:
                    on_gone(expired)  # type: ignore[misc]
                except Exception:
                    log.exception("conntrack: reporting expired flows failed")
            if idle:
                # After the delete: a packet the RST provokes finds no flow (and, not being
                # a SYN, opens none).
                self.idle_resets += len(idle)
                self.resetter.reset(idle)  # type: ignore[union-attr]
                idle = []
        self._set_gauges("svc_active", svc_live)
        self._set_gauges("ep_active", ep_live, None if self.ep_ids is None else self.ep_ids())
        self.orphans_removed += self._drop_orphans(stale, now)
        self.alt_paths_removed += self._drop_alt_paths(alts, ended)
        return gone

    def _drop_alt_paths(self, alts: list[tuple[bytes, bytes]], ended: list[bytes]) -> int:
        """Remove the SCTP alternate paths (bpf/lib/sctp_mh.h mh_paths) whose association
        is over: its primary flow gone (expired, evicted, ended by a new INIT) or closed
        (ABORT, SHUTDOWN COMPLETE on any path). Alternate paths have no idle limit of their
        own (the association's primary flow has it, refreshed by every path's packets), so
        without this they would stay until the table is full. Also forgets the peers'
        addresses of the flows this sweep deleted."""
        alt_map, peers = self.t.get("mh_alt_map"), self.t.get("mh_peer_map")
        tables = self.flow_tables
        if peers is not None:
            for k in ended:
                peers.pop(peers.Key.from_buffer_copy(untagged(k)), None)
        if alt_map is None:
            return 0
        gone = 0
        closed = 3  # CT_CLOSED
        for orig, reply in alts:
            key = alt_map.Key.from_buffer_copy(orig)
            primary_key = alt_map.get(key)
            primary = None if primary_key is None else tables.get("ct", bytes(primary_key))
            if primary is not None and primary.state != closed:
                continue
            tables.delete("ct", orig + reply)
            alt_map.pop(key, None)
            if peers is not None and primary_key is not None:
                peers.pop(peers.Key.from_buffer_copy(untagged(bytes(primary_key))), None)
            gone += 1
        return gone

    def _drop_orphans(self, reply_keys: list[tuple[str, bytes]], now: int) -> int:
        """Delete the REPLY entries among ``reply_keys`` whose flow has no ORIG entry (or
        one translating another way): the LRU evicted it, or a flow was lost half made.
        The datapath never meets such an entry again (its flow's packets look up the ORIG
        key), so without this only table pressure would ever remove it. Each is read
        again first: a new flow may have taken the key since the walk."""
        gone = 0
        tables = self.flow_tables
        for kind, rk in reply_keys:
            f = tables.table(kind, rk[_KEY_FAMILY])
            if f is None:
                continue
            ctf = _ct_formats(f)
            reply = tables.get(kind, rk)
            if reply is None or reply.dir != L.CT_DIR_REPLY:
                continue
            raw = bytes(reply)
            last = ctf.last.unpack_from(raw)[0]
            limit = _timeout_for(reply.state, reply.proto, reply.timeout_s) * 1_000_000_000
            if not (now > last and now - last > limit):
                continue  # alive again, or a new flow's
            orig = tables.get(kind, _orig_key(raw))
            if orig is not None and _flow_id(bytes(orig), 0) == _flow_id(raw, 0):
                continue  # its flow is there (an idle one-way flow)
            gone += tables.delete(kind, rk)
        return gone

    def _set_gauges(self, name: str, live: Counter[int], in_use: set[int] | None = None) -> None:
        """Store ``live`` into the gauge map, only where it differs (see gc for the race).

        Only existing entries are written. With ``in_use`` (ep_active, an array: an id's
        slot exists whether or not it is in use) an id outside it gets 0, even while flows
        of its removed endpoint wait for their flush, and the walk stops after the highest
        id in use (ids are dense, from 1; the driver zeroes an id it frees).
        """
        t = self.t[name]
        fix_ids: list[int] = []
        fix_vals: list[int] = []
        # A snapshot: the config worker adds and removes ids while the sweep runs.
        used = None if in_use is None else set(in_use)
        top = max(used, default=0) if used is not None else None
        for keys, values, n in ctwalk.walk(t):
            ids = struct.unpack(f"={n}I", keys)  # __u32 keys
            vals = struct.unpack(f"={n}q", values)  # __s64 gauges
            current = dict(zip(ids, vals, strict=True))
            # 320,000 endpoint gauges: visit in Python only the nonzero ones and the ids
            # with live flows (compress and the set operations run in C).
            for gid in set(compress(ids, vals)) | (live.keys() & current.keys()):
                # An id not in use gets 0, whatever flows of it wait for their flush.
                want = live.get(gid, 0) if used is None or gid in used else 0
                if current[gid] != want:
                    fix_ids.append(gid)
                    fix_vals.append(want)
            if top is not None and ids[-1] >= top:
                break  # past the highest id in use (the driver zeroes an id it frees)
        if fix_ids:
            m = len(fix_ids)
            ctwalk.update_existing(t, (t.Key * m)(*fix_ids), (t.Leaf * m)(*fix_vals))


# The byte offsets conntrack handling relies on (bpf/lib/structs.h), checked against the
# ctypes layout bcc parsed from the C source the first time a table is used.
_CT_KEY = {"src": (0, 16), "dst": (16, 16), "sport": (32, 2), "dport": (34, 2),
           "proto": (36, 1), "family": (37, 1), "pad": (38, 2), "vtag": (40, 4)}  # fmt: skip
_KEY_SIZE = 44
_KEY_FAMILY = 37
# struct ct4_key (ct4_map, syn4_map): the tail of an IPv4 struct ct_key (cttables.narrow).
_CT4_KEY = {"src": (0, 4), "dst": (4, 4), "sport": (8, 2), "dport": (10, 2), "proto": (12, 1),
            "family": (13, 1), "pad": (14, 2), "vtag": (16, 4)}  # fmt: skip
_KEY4_SIZE = 20
_CT_ENTRY = {"t.client": (0, 16), "t.vip": (16, 16), "t.snat": (32, 16), "t.ep": (48, 16),
             "t.client_port": (64, 2), "t.vip_port": (66, 2), "t.snat_port": (68, 2),
             "t.ep_port": (70, 2), "dir": (116, 1), "flags": (118, 1), "proto": (119, 1),
             "family": (120, 1), "tcp_seq": (148, 4)}  # fmt: skip
_TUPLE = 72  # sizeof(struct nat_tuple): the translation, identical in a flow's two entries
_DIR, _FLAGS, _PROTO, _FAMILY = 116, 118, 119, 120
_VTAG = 148  # tcp_seq: an SCTP entry's endpoint verification tag, its ORIG key's vtag
_NO_TAG = bytes(4)
# REPLY entries checked for orphans per sweep (one or two lookups each): bounds a sweep's
# cost when many flows are one-way; the rest wait for the next sweep.
ORPHAN_CHECKS = 4096


def _ep_family(family: int, flags: int) -> int:
    """The family of a flow's endpoint side (ct_reply_family): NAT64/46 flows translate."""
    return 10 - family if flags & L.CT_F_XLAT else family


@dataclass(frozen=True)
class _CtFormats:
    """struct formats for a conntrack table's values (see ctwalk.unpacker)."""

    size: int
    row: struct.Struct  # what a conntrack() row shows
    counters: struct.Struct  # packets, bytes (what a REPLY entry adds to its flow's row)
    svc: struct.Struct  # svc_id only: the cheap service filter
    last: struct.Struct  # last_ns only
    reset: struct.Struct  # what the idle reset needs (tcpreset.IdleSession)
    ids: struct.Struct  # svc_id, ep_id
    gc: struct.Struct  # what expiry and the gauges need


_formats: dict[tuple[Any, Any], _CtFormats] = {}


def _ct_formats(table: FlowTable) -> _CtFormats:
    t = table.t
    f = _formats.get((t.Key, t.Leaf))
    if f is not None:
        return f
    key, entry = ctwalk.offsets(t.Key), ctwalk.offsets(t.Leaf)
    want_key, want_size = (_CT4_KEY, _KEY4_SIZE) if table.compact else (_CT_KEY, _KEY_SIZE)
    if (any(key.get(k) != v for k, v in want_key.items()) or ct.sizeof(t.Key) != want_size
            or any(entry.get(k) != v for k, v in _CT_ENTRY.items())):  # fmt: skip
        raise RuntimeError("struct ct_key / ct4_key / ct_entry changed: update conntrack.py's "
                           "offsets")  # fmt: skip
    f = _formats[(t.Key, t.Leaf)] = _CtFormats(
        size=ct.sizeof(t.Leaf),
        row=ctwalk.unpacker(t.Leaf, [
            ("t.client", "16s"), ("t.vip", "16s"), ("t.snat", "16s"), ("t.ep", "16s"),
            ("t.client_port", "H"), ("t.vip_port", "H"), ("t.snat_port", "H"),
            ("t.ep_port", "H"), ("created_ns", "Q"), ("last_ns", "Q"), ("packets", "Q"),
            ("bytes", "Q"), ("svc_id", "I"), ("timeout_s", "I"), ("dir", "B"),
            ("state", "B"), ("flags", "B"), ("proto", "B"), ("family", "B")]),
        counters=ctwalk.unpacker(t.Leaf, [("packets", "Q"), ("bytes", "Q")]),
        svc=ctwalk.unpacker(t.Leaf, [("svc_id", "I")]),
        last=ctwalk.unpacker(t.Leaf, [("last_ns", "Q")]),
        reset=ctwalk.unpacker(t.Leaf, [
            ("t.client", "16s"), ("t.vip", "16s"), ("t.snat", "16s"), ("t.ep", "16s"),
            ("t.client_port", "H"), ("t.vip_port", "H"), ("t.snat_port", "H"),
            ("t.ep_port", "H"), ("family", "B"), ("nh.ifindex", "I"), ("nh.dmac", "6s"),
            ("nh.smac", "6s"), ("tcp_seq", "I"), ("tcp_ack", "I"), ("tcp_seen", "B")]),
        ids=ctwalk.unpacker(t.Leaf, [("svc_id", "I"), ("ep_id", "I")]),
        gc=ctwalk.unpacker(t.Leaf, [
            ("last_ns", "Q"), ("svc_id", "I"), ("ep_id", "I"), ("timeout_s", "I"),
            ("dir", "B"), ("state", "B"), ("flags", "B"), ("proto", "B")]),
    )  # fmt: skip
    return f


def _reply_key(values: bytes, off: int) -> bytes:
    """The REPLY entry's struct ct_key from the ORIG entry at ``off`` (ct_reply_key in
    bpf/lib/conntrack.h): src = endpoint, dst = snat; ports endpoint -> snat port, or for
    ICMP the echo identifier (snat_port) and 0, in the endpoint's ICMP (NAT64/46)."""
    t = values[off : off + _TUPLE]  # client, vip, snat, ep (16 B each), 4 x __be16
    proto = values[off + _PROTO]
    ports = t[70:72] + t[68:70] if proto in L.PORT_PROTOCOLS else t[68:70] + b"\0\0"
    family = _ep_family(values[off + _FAMILY], values[off + _FLAGS])
    if proto in (1, 58):  # ICMP echo; NAT64/46: the endpoint family's ICMP (1 or 58)
        proto = 1 if family == 4 else 58
    return t[48:64] + t[32:48] + ports + bytes((proto, family, 0, 0)) + _NO_TAG


def _idle_session(ctf: _CtFormats, values: bytes, off: int, flags: int) -> IdleSession | None:
    """The idle reset's view of the ORIG entry at ``off``; None if the datapath has not seen
    both the client's sequence number and its acknowledgement."""
    (client, vip, snat, ep, cport, vport, sport, eport, family, nh_ifindex, nh_dmac, nh_smac,
     seq, ack, seen) = ctf.reset.unpack_from(values, off)  # fmt: skip
    if seen & (L.TCP_SEEN_SEQ | L.TCP_SEEN_ACK) != L.TCP_SEEN_SEQ | L.TCP_SEEN_ACK:
        return None
    ntohs = socket.ntohs
    xlat = bool(flags & L.CT_F_XLAT)  # NAT64/NAT46: the endpoint side is the other family
    return IdleSession(family, client, ntohs(cport), vip, ntohs(vport), snat, ntohs(sport), ep,
                       ntohs(eport), seq, ack, bool(flags & L.CT_F_DSR),
                       10 - family if xlat else family, bool(flags & L.CT_F_IPIP),
                       nh_ifindex, nh_dmac + nh_smac)  # fmt: skip


def _orig_key(values: bytes, off: int = 0) -> bytes:
    """The ORIG entry's struct ct_key from either entry at ``off`` (ct_orig_key_of):
    client -> VIP; ICMP: the echo identifier (client_port) and 0; SCTP: the endpoint's
    verification tag (both entries keep it in tcp_seq)."""
    t = values[off : off + _TUPLE]
    proto = values[off + _PROTO]
    ports = t[64:68] if proto in L.PORT_PROTOCOLS else t[64:66] + b"\0\0"
    tag = values[off + _VTAG : off + _VTAG + 4] if proto == 132 else _NO_TAG
    return t[0:16] + t[16:32] + ports + bytes((proto, values[off + _FAMILY], 0, 0)) + tag


def untagged(key: bytes) -> bytes:
    """A struct ct_key without its SCTP verification tag: how mh_peer_map is keyed (the
    peers' addresses are learned before the endpoint's tag is known)."""
    return key[:40] + _NO_TAG


def _flow_id(values: bytes, off: int) -> bytes:
    """Equal for a flow's two entries: the whole translation plus the protocol."""
    return values[off : off + _TUPLE] + values[off + _PROTO : off + _PROTO + 1]


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause CPython's cyclic garbage collector while building a big listing.

    A million-flow listing allocates three million containers (a dict and two lists per
    row, kept): each time the young generations fill, the collector rescans the growing
    heap, which measured as about half of conntrack()'s time. Nothing built here forms a
    cycle, so pausing loses nothing; reference counting still frees everything. Process-
    wide but short; a caller that found it already disabled leaves it so.
    """
    was_enabled = cyclic_gc.isenabled()
    cyclic_gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            cyclic_gc.enable()


def _rows(origs: list[tuple[Any, ...]], replies: dict[bytes, tuple[int, int]],
          names: dict[int, str], now: int) -> list[Doc]:  # fmt: skip
    """conntrack()'s rows from the decoded ORIG entries and the REPLY entries' counters."""
    ntohs = socket.ntohs
    shared: dict[tuple[bytes, int, int], str] = {}  # VIPs and endpoints: few, repeated

    def ep(a: bytes, port_be: int, fam: int) -> str:
        addr = _addr_str(a, fam)
        port = ntohs(port_be)
        return (f"[{addr}]:{port}" if fam == 6 else f"{addr}:{port}") if port else addr

    def ep_shared(a: bytes, port_be: int, fam: int) -> str:
        text = shared.get((a, port_be, fam))
        if text is None:
            text = shared[(a, port_be, fam)] = ep(a, port_be, fam)
        return text

    rows = []
    for e, fid in origs:
        (client, vip, snat, epa, cport, vport, sport, eport, created, last, packets, nbytes,
         sid, timeout_s, _, state, flags, proto, fam) = e  # fmt: skip
        efam = _ep_family(fam, flags)
        rp, rb = replies.get(fid, (0, 0))
        l4 = proto in L.PORT_PROTOCOLS
        to = _timeout_for(state, proto, timeout_s)
        client_text = ep(client, cport, fam)
        rows.append({
            "service": names.get(sid, str(sid)),
            "protocol": L.PROTOCOL_NAMES.get(proto, str(proto)),
            "client": client_text,
            "vip": ep_shared(vip, vport if l4 else 0, fam),
            "endpoint": ep_shared(epa, eport if l4 else 0, efam),
            # No source NAT (the usual case): the same text as the client's.
            "snat": client_text if snat == client and sport == cport else ep(snat, sport, efam),
            "state": L.CT_STATES.get(state, str(state)),
            "age-s": round((now - created) / 1e9, 1),
            "idle-s": round(max(now - last, 0) / 1e9, 1),
            "timeout-s": to,
            "expired": now > last and now - last > to * 1_000_000_000,
            "packets": [packets, rp],
            "bytes": [nbytes, rb],
        })  # fmt: skip
        if flags & L.CT_F_MH_ALT:
            # An SCTP association's alternate path: it lives as long as its association
            # (bpf/lib/sctp_mh.h), so it has no timeout of its own to show.
            rows[-1]["alternate-path"] = True
            rows[-1]["timeout-s"] = 0
    return rows


def _addr_str(a: bytes, family: int) -> str:
    """``struct addr`` bytes as text, as L.words_addr writes it, without ipaddress's cost
    (inet_ntop is C; ipaddress would dominate a million-row conntrack listing)."""
    if family == 4:
        return socket.inet_ntop(socket.AF_INET, a[:4])
    if a[:10] != bytes(10):
        return socket.inet_ntop(socket.AF_INET6, a)
    # ::/80 (IPv4-mapped and -compatible): inet_ntop writes a dotted quad, ipaddress hextets.
    return L.words_addr(struct.unpack("=4I", a), family)


def _timeout_for(state: int, proto: int, timeout_s: int) -> int:
    """The idle limit (s) of a flow in ``state`` (ct_timeout_ns in bpf/lib/conntrack.h)."""
    if state == 3:
        return L.TO_TCP_CLOSED
    if state == 2:
        return L.TO_TCP_FIN
    if state == 0:
        return L.TO_TCP_SYN if proto == 6 else min(timeout_s, L.TO_UNREPLIED)
    return timeout_s
