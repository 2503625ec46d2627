"""The datapath's HA hooks (bpf/lib/ha.h): per-VIP pause, flow events, raw flow install.

- ``set_paused(vips)``: the program answers for none of these VIPs' packets (TC_ACT_OK),
  while their services, endpoints and conntrack entries stay (a backup keeps the flows its
  peer synced to it, ready for the takeover).
- ``set_snat_ports(lo, hi)``: this node's full-NAT source ports (each node of a pair its
  own range, so synced translations never collide).
- ``start_events(callback)``: the program emits an event when a flow is created, changes
  state or is deleted by the datapath (the ORIG entry's bytes, then for a TCP state change
  the REPLY entry's TCP numbers); a thread ("flow-events")
  polls the ring buffer and hands the callback one batch (a list of (type, entry bytes))
  per wake-up. The established path pays one cached array load for all of it.
- ``emit(batch)``: events the control plane makes (the conntrack sweep's expiries: GONE),
  to the same consumers.
- ``walk()``: the entries of the conntrack tables (both families) in chunks of raw bytes
  (dumps, refresh).
- ``install(keys, values)`` / ``delete(keys)``: batched map writes of raw entries, keyed by
  struct ct_key (each into its family's table: appliance/datapath/cttables.py).

Raw bytes, not objects: a million flows must be cheap to dump and to install. What the
bytes mean to a peer is the HA sync codec's business (appliance/ha/), which decodes them
with the named-field formats of ``entry_format``.
"""

from __future__ import annotations

import contextlib
import ctypes as ct
import logging
import struct
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from appliance.datapath import ctwalk
from appliance.datapath import layout as L
from appliance.datapath.cttables import KEY_SIZE, FlowTables

log = logging.getLogger(__name__)

POLL_MS = 50  # the reader wakes at least this often (to notice close)
# (FE_* type, struct ct_entry bytes [+ struct fe_tcp: the REPLY entry's TCP numbers, in the
# ring's events; emit()'s carry the entry alone])
Batch = list[tuple[int, bytes]]


class FlowHooks:
    def __init__(self, program: Any) -> None:
        self.prog = program
        self.cfg = program.table("ha_cfg_map")
        self.pause = program.table("ha_pause_map")
        # The established tables (IPv4 and IPv6); self.ct: the one whose value layout the
        # formats read (every table holds struct ct_entry).
        self.ct = program.table("ct_map")
        self.tables = FlowTables(_ct_tables(program))
        self._lock = threading.Lock()
        self._paused: set[tuple[int, tuple[int, int, int, int]]] = set()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._callbacks: list[Callable[[Batch], None]] = []
        self._batch: Batch = []
        self.events = 0
        # Read back what a previous daemon left (pins): set_paused writes only differences.
        for k in self.pause:  # struct addr: the family is 6 when words 1..3 are used
            words = tuple(int(w) for w in k.w)
            self._paused.add((6 if any(words[1:]) else 4, words))  # type: ignore[arg-type]

    # -- ha_cfg ----------------------------------------------------------------------------
    def _cfg(self) -> Any:
        return self.cfg[self.cfg.Key(0)]

    def _set_flag(self, flag: int, on: bool) -> None:
        with self._lock:
            c = self._cfg()
            c.flags = (c.flags | flag) if on else (c.flags & ~flag)
            self.cfg[self.cfg.Key(0)] = c

    def set_snat_ports(self, lo: int | None, hi: int | None) -> None:
        """Full-NAT source ports lo..hi (inclusive); None: the default 1024..65535."""
        with self._lock:
            c = self._cfg()
            if lo is None or hi is None:
                c.port_min, c.port_span = 0, 0
            else:
                if not L.FNAT_PORT_MIN <= lo <= hi <= 65535:
                    raise ValueError(f"source-port range {lo}-{hi} is not within 1024-65535")
                c.port_min, c.port_span = lo, hi - lo + 1
            self.cfg[self.cfg.Key(0)] = c

    def snat_ports(self) -> tuple[int, int]:
        c = self._cfg()
        if not c.port_span:
            return L.FNAT_PORT_MIN, 65535
        return int(c.port_min), int(c.port_min) + int(c.port_span) - 1

    # -- pause -----------------------------------------------------------------------------
    def set_paused(self, vips: Iterable[str]) -> None:
        """Pause exactly ``vips`` (their packets pass untouched); the rest answer again."""
        wanted = {L.addr_words(v) for v in vips}
        with self._lock:
            # Added before the flag goes up, the flag down before the last one goes.
            for family, words in wanted - self._paused:
                self.pause[self._vip_key(family, words)] = self.pause.Leaf(1)
            c = self._cfg()
            c.flags = (c.flags | L.HA_F_PAUSED) if wanted else (c.flags & ~L.HA_F_PAUSED)
            self.cfg[self.cfg.Key(0)] = c
            for family, words in self._paused - wanted:
                self.pause.pop(self._vip_key(family, words), None)
            newly = wanted - self._paused
            self._paused = wanted
        if newly:
            self._mark_synced({struct.pack("=4I", *w) for _, w in newly})

    def _mark_synced(self, vips: set[bytes]) -> int:
        """Mark this node's flows to newly paused VIPs as a peer's (CT_F_SYNCED), both
        entries: the datapath checks the pause only for such flows (the established path
        of its own flows pays nothing for HA), and the node that is master now carries
        them, replies included."""
        vs = ct.sizeof(self.ct.Leaf)
        f = self.entry_format([("t.vip", "16s"), ("dir", "B"), ("flags", "B")])
        flags_off = ctwalk.offsets(self.ct.Leaf)["flags"][0]
        marked = 0
        for table, keys, values, n in self._walk_tables():
            t, ks = table.t, table.key_size
            pick_k, pick_v = [], []
            for i in range(n):
                vip, _d, flags = f.unpack_from(values, i * vs)
                if vip in vips and not flags & L.CT_F_SYNCED:  # both entries: both directions
                    v = bytearray(values[i * vs : (i + 1) * vs])
                    v[flags_off] = flags | L.CT_F_SYNCED
                    pick_k.append(keys[i * ks : (i + 1) * ks])
                    pick_v.append(bytes(v))
            if pick_k:
                m = len(pick_k)
                marked += ctwalk.update_existing(
                    t, (t.Key * m).from_buffer_copy(b"".join(pick_k)),
                    (t.Leaf * m).from_buffer_copy(b"".join(pick_v)))
        return marked

    def paused(self) -> list[str]:
        with self._lock:
            return sorted(L.words_addr(w, f) for f, w in self._paused)

    def _vip_key(self, family: int, words: tuple[int, int, int, int]) -> Any:
        k = self.pause.Key()  # struct addr (bpf/lib/ha.h: the packet's destination is the key)
        k.w[:] = words
        return k

    # -- flow events -----------------------------------------------------------------------
    def start_events(self, callback: Callable[[Batch], None]) -> None:
        """Add a consumer of event batches; the first one turns the events on."""
        with self._lock:
            self._callbacks.append(callback)
            if self._thread is not None:
                return
            # Once per program (bcc opens a ring once per BPF object); a later FlowHooks on
            # the same program (a reconciler started again) only redirects the records.
            self.prog.open_flow_events(self._on_event)
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="flow-events", daemon=True)
            self._thread.start()
        self._set_flag(L.HA_F_EVENTS, True)

    def stop_events(self, callback: Callable[[Batch], None] | None = None) -> None:
        """Remove a consumer (all: None); the last one turns the events off."""
        with self._lock:
            if callback is None:
                self._callbacks.clear()
            elif callback in self._callbacks:
                self._callbacks.remove(callback)
            if self._callbacks:
                return
            thread, self._thread = self._thread, None
        self._set_flag(L.HA_F_EVENTS, False)
        self._stop.set()
        if thread is not None:
            thread.join(timeout=5)

    def emit(self, batch: Batch) -> None:
        """Hand events the control plane made itself (the conntrack sweep's expiries) to
        the consumers, as the ring buffer's are; none while nobody listens."""
        for cb in list(self._callbacks):
            try:
                cb(batch)
            except Exception:
                log.exception("flow events: consumer failed")

    def drops(self) -> int:
        t = self.prog.table("fe_drops")
        v = t.get(t.Key(0))
        return sum(int(x.value) if hasattr(x, "value") else int(x) for x in v) if v else 0

    def _on_event(self, _ctx: Any, data: Any, size: int) -> int:
        raw = ct.string_at(data, size)
        # The ORIG entry, then (struct fe_tcp) the REPLY entry's TCP numbers.
        self._batch.append((int.from_bytes(raw[:4], "little"),
                            raw[L.FE_ENTRY : L.FE_REPLY + L.FE_TCP_SIZE]))  # fmt: skip
        return 0

    def _run(self) -> None:
        bpf = self.prog.bpf
        while not self._stop.is_set():
            try:
                bpf.ring_buffer_poll(POLL_MS)  # the callbacks fill self._batch
            except Exception:
                log.exception("flow events: poll failed")
                self._stop.wait(1.0)
                continue
            if not self._batch:
                continue
            batch, self._batch = self._batch, []
            self.events += len(batch)
            for cb in list(self._callbacks):
                try:
                    cb(batch)
                except Exception:
                    log.exception("flow events: consumer failed")

    # -- the table, raw -------------------------------------------------------------------
    def entry_format(self, fields: list[tuple[str, str]]) -> Any:
        """A struct.Struct over these named fields of struct ct_entry (checked layout)."""
        return ctwalk.unpacker(self.ct.Leaf, fields)

    @property
    def entry_size(self) -> int:
        return ct.sizeof(self.ct.Leaf)

    def _walk_tables(self) -> Iterator[tuple[Any, bytes, bytes, int]]:
        for table in self.tables:
            for keys, values, n in table.walk():
                yield table, keys, values, n

    def walk(self) -> Iterator[tuple[bytes, bytes, int]]:
        """(keys in their table's own form, values, n) chunks of the established tables
        (both families); callers read the values."""
        for _table, keys, values, n in self._walk_tables():
            yield keys, values, n

    def install(self, keys: bytes, values: bytes) -> int:
        """Write packed entries (struct ct_key keys; create or replace), each into its
        family's table, one batch syscall per 8,192."""
        vs = ct.sizeof(self.ct.Leaf)
        n = len(keys) // KEY_SIZE
        by: dict[str, tuple[Any, list[bytes], list[bytes]]] = {}
        for i in range(n):
            k = keys[i * KEY_SIZE : (i + 1) * KEY_SIZE]
            table = self.tables.table("ct", k[37])
            if table is None:
                continue
            _, ks, vals = by.setdefault(table.name, (table, [], []))
            ks.append(self.tables.own_key(table, k))
            vals.append(values[i * vs : (i + 1) * vs])
        for table, ks, vals in by.values():
            self._install(table.t, b"".join(ks), b"".join(vals))
        return n

    @staticmethod
    def _install(t: Any, keys: bytes, values: bytes) -> None:
        ks, vs = ct.sizeof(t.Key), ct.sizeof(t.Leaf)
        n = len(keys) // ks
        done = 0
        step = ctwalk.BATCH
        while done < n:
            m = min(step, n - done)
            karr = (t.Key * m).from_buffer_copy(keys, done * ks)
            varr = (t.Leaf * m).from_buffer_copy(values, done * vs)
            try:
                t.items_update_batch(karr, varr)
            except Exception:
                for i in range(m):
                    t[karr[i]] = varr[i]
            done += m

    def delete(self, keys: bytes) -> int:
        """Delete packed struct ct_key ``keys`` from their tables."""
        return self.tables.delete("ct", keys)

    def link_alt_paths(self, links: list[tuple[bytes, bytes]]) -> int:
        """SCTP multihoming (bpf/lib/sctp_mh.h mh_alt_map): each alternate path's ORIG key
        -> its association's primary ORIG key (packed struct ct_key both), so the path's
        packets keep the association alive and the sweep keeps the path."""
        try:
            t = self.prog.table("mh_alt_map")
        except KeyError:
            return 0  # a program without SCTP multihoming
        for path, primary in links:
            t[t.Key.from_buffer_copy(path)] = t.Leaf.from_buffer_copy(primary)
        return len(links)

    def flags(self, keys: bytes) -> list[int | None]:
        """The flags byte of each packed key's entry now (None: no entry); one lookup each
        (a peer's flow ends: few at a time, unlike dumps and installs)."""
        off = ctwalk.offsets(self.ct.Leaf)["flags"][0]
        out: list[int | None] = []
        for i in range(0, len(keys) - KEY_SIZE + 1, KEY_SIZE):
            leaf = self.tables.get("ct", keys[i : i + KEY_SIZE])
            out.append(None if leaf is None else bytes(leaf)[off])
        return out


def _ct_tables(program: Any) -> dict[str, Any]:
    """The established conntrack tables the program has (ct4_map: since layout _v5)."""
    out = {"ct_map": program.table("ct_map")}
    with contextlib.suppress(KeyError):
        out["ct4_map"] = program.table("ct4_map")
    return out
