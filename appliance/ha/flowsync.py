"""Conntrack sync between HA peers, datapath side: what this node sends and what it installs.

Sending. Three sources, all as wire records (`sync_codec.RECORD`, made straight from the
conntrack entry's bytes: the record's tail *is* the entry's NAT tuple):
- the datapath's flow events (created / state changed / gone; bpf/lib/ha.h), read by the
  datapath's "flow-events" thread and handed here a batch per wake-up;
- a full dump on every (re)connect of a peer (`dump_chunks`, a walk run off the loop);
- a refresh of the flows active since the last walk ("ha-refresh" thread, every
  REFRESH_S or four walks' time, whichever is longer), so a peer's copy of a long-lived
  flow never idles out while it is alive here, and an event lost to a full ring is
  repaired.
Entries installed from a peer (CT_F_SYNCED, until a packet meets them here) are never
sent back: each flow is sent by the node that carries it. NAT64/NAT46, L3-DSR and firewall
pass entries are not sent (see SKIP).

Receiving ("ha-install" thread, fed from the sync server with back-pressure): each record
is checked field by field (a bad one is refused, counted by field and logged; the rest of
the batch goes in), bound to this node's own service and endpoint ids by (VIP, protocol,
port) and endpoint address (a record for a service or endpoint this node does not have is
counted as unbound and skipped), and written with both its entries (ORIG and, unless DSR,
REPLY) in batched map updates. A record flagged GONE deletes both entries.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

from appliance.datapath import layout as L
from appliance.datapath.conntrack import _timeout_for as _timeout_s
from appliance.ha.sync_codec import RECORD

log = logging.getLogger(__name__)

HEAD = struct.Struct("!BBBBBBHII")  # the record's head; its tail is the 72-byte NAT tuple
TUPLE = 72
assert HEAD.size + TUPLE == RECORD.size
REC_F_GONE = 0x40  # record flag: the flow is gone (delete it)
ENTRY_FLAGS = L.CT_F_COUNTED | L.CT_F_DSR  # the entry flags a record may carry
L4_PORTS = (6, 17)  # protocols whose conntrack keys carry ports (bpf/lib/conntrack.h)
PROTOCOLS = {6, 17, 1, 58}
MAX_STATE = 15
MAX_TIMEOUT_S = 7 * 86400
REFRESH_S = 5.0
# Entries a node does not send: a peer's (SYNCED), and those the record cannot describe yet:
# NAT64/46 (XLAT: two families), firewall pass entries (PASS: no service to bind to),
# L3-DSR (IPIP: the tunnel is not in the record).
SKIP = L.CT_F_SYNCED | L.CT_F_XLAT | L.CT_F_PASS | L.CT_F_IPIP
_FLAGS = 118  # struct ct_entry.flags (checked in FlowSync.__init__)
INSTALL_QUEUE = 64  # payloads waiting for the installer before the channel waits
MAX_PAYLOAD = 256 * 1024  # bytes of records per payload handed to the channel


class FlowSync:
    """One node's flows to its peers and theirs into its conntrack map."""

    def __init__(self, datapath: Any, broadcast: Callable[[bytes], None]) -> None:
        """`datapath`: the reconciler (or the VipGate around it) with `flows` (FlowHooks)
        and `flow_bindings()`; `broadcast(payload)`: hands wire records to every peer's
        sender (called from worker threads; it must be thread-safe)."""
        self.dp = datapath
        self.hooks = datapath.flows
        self.broadcast = broadcast
        f = self.hooks.entry_format
        self._read = f([("t", f"{TUPLE}s"), ("last_ns", "Q"), ("timeout_s", "I"), ("dir", "B"),
                        ("state", "B"), ("flags", "B"), ("proto", "B"), ("family", "B"),
                        ("fin_seen", "B")])  # fmt: skip
        self._write = f([("t", f"{TUPLE}s"), ("created_ns", "Q"), ("last_ns", "Q"),
                         ("svc_id", "I"), ("ep_id", "I"), ("timeout_s", "I"), ("dir", "B"),
                         ("state", "B"), ("flags", "B"), ("proto", "B"), ("family", "B"),
                         ("fin_seen", "B")])  # fmt: skip
        self._vsize = self.hooks.entry_size
        assert f([("flags", "B")]).size == self._vsize and _offset(f, "flags") == _FLAGS
        self.stats: Counter[str] = Counter()
        self.refused: Counter[str] = Counter()
        self.last_refresh_s = 0.0
        self.last_install: float | None = None
        self._inbox: queue.Queue[tuple[str, bytes] | None] = queue.Queue()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._bindings: dict[str, Any] | None = None
        self._bindings_at = 0.0

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> None:
        self._stop.clear()
        loops = (("ha-install", self._install_loop), ("ha-refresh", self._refresh_loop))
        for name, target in loops:
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)
        self.hooks.start_events(self._on_events)

    def close(self) -> None:
        self.hooks.stop_events(self._on_events)
        self._stop.set()
        self._inbox.put(None)
        for t in self._threads:
            t.join(timeout=5)
        self._threads.clear()

    # -- sending ------------------------------------------------------------------------------
    def _record(self, entry: bytes, now_ns: int, gone: bool = False) -> bytes:
        t, last, timeout_s, _, state, flags, proto, family, fin = self._read.unpack_from(entry)
        idle_ms = max(0, now_ns - last) // 1_000_000
        rflags = (flags & ENTRY_FLAGS) | (REC_F_GONE if gone else 0)
        return HEAD.pack(family, proto, state, rflags, fin, L.CT_DIR_ORIG, 0, timeout_s,
                         min(idle_ms, 0xFFFFFFFF)) + t  # fmt: skip

    def _on_events(self, batch: list[tuple[int, bytes]]) -> None:
        """On the datapath's "flow-events" thread: one batch of events."""
        now = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        out = b"".join(self._record(e, now, kind == L.FE_GONE) for kind, e in batch
                       if not e[_FLAGS] & SKIP & ~L.CT_F_SYNCED)  # fmt: skip
        self.stats["events"] += len(batch)
        for i in range(0, len(out), MAX_PAYLOAD - MAX_PAYLOAD % RECORD.size):
            self.broadcast(out[i : i + MAX_PAYLOAD - MAX_PAYLOAD % RECORD.size])

    def _own_chunks(self, since_ns: int = 0) -> Iterator[bytes]:
        """Wire records of this node's own live ORIG entries last active after
        `since_ns`, a chunk of the table at a time."""
        vs = self._vsize
        read = self._read
        for _keys, values, n in self.hooks.walk():
            now = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
            out = []
            for i in range(n):
                off = i * vs
                t, last, timeout_s, d, state, flags, proto, family, fin = read.unpack_from(
                    values, off)
                if d != L.CT_DIR_ORIG or flags & SKIP or last <= since_ns:
                    continue
                idle = max(0, now - last)
                if idle > _timeout_s(state, proto, timeout_s) * 1_000_000_000:
                    continue  # expired: the peer needs no copy
                out.append(HEAD.pack(family, proto, state, flags & ENTRY_FLAGS, fin,
                                     L.CT_DIR_ORIG, 0, timeout_s, idle // 1_000_000) + t)
            if out:
                yield b"".join(out)

    def dump_chunks(self) -> Iterator[bytes]:
        """The full dump for a (re)connected peer (a generator: the channel pulls each
        chunk on a worker thread)."""
        self.stats["dumps"] += 1
        return self._own_chunks()

    def _refresh_loop(self) -> None:
        since = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        interval = REFRESH_S
        while not self._stop.wait(interval):
            started = time.monotonic()
            start_ns = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
            try:
                sent = 0
                for chunk in self._own_chunks(since):
                    sent += len(chunk) // RECORD.size
                    self.broadcast(chunk)
                self.stats["refreshed"] += sent
            except Exception:
                log.exception("ha sync: refresh walk failed")
            since = start_ns
            self.last_refresh_s = time.monotonic() - started
            interval = max(REFRESH_S, 4 * self.last_refresh_s)

    # -- receiving ----------------------------------------------------------------------------
    async def receive(self, peer: str, payload: bytes, dump: bool) -> None:
        """On the loop (the sync server): queue a peer's records for the installer; wait
        while it is behind (the peer's channel slows down, the loop does not)."""
        while self._inbox.qsize() >= INSTALL_QUEUE and not self._stop.is_set():
            await asyncio.sleep(0.005)
        self.stats["received"] += len(payload) // RECORD.size
        self._inbox.put((peer, payload))

    def _install_loop(self) -> None:
        while True:
            item = self._inbox.get()
            if item is None or self._stop.is_set():
                return
            items = [item]
            while len(items) < 16:  # several payloads, one pass of map writes
                try:
                    more = self._inbox.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._stop.set()
                    break
                items.append(more)
            for peer, payload in items:
                try:
                    self.install(peer, payload)
                except Exception:
                    log.exception("ha sync: installing flows failed", extra={"peer": peer})

    def bindings(self) -> dict[str, Any]:
        """This node's ids by (VIP, protocol, port), re-read at most every second."""
        now = time.monotonic()
        if self._bindings is None or now - self._bindings_at > 1.0:
            self._bindings = self.dp.flow_bindings()
            self._bindings_at = now
        return self._bindings

    def install(self, peer: str, payload: bytes) -> dict[str, int]:
        """Check, bind and write a run of wire records (any thread; the installer's)."""
        b = self.bindings()
        exact, ranges = b["exact"], b["ranges"]
        now = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        keys: list[bytes] = []
        values: list[bytes] = []
        doomed: list[bytes] = []
        refused: Counter[str] = Counter()
        unbound = 0
        write = self._write
        for off in range(0, len(payload) - RECORD.size + 1, RECORD.size):
            family, proto, state, rflags, fin, _d, _pad, timeout_s, idle_ms = HEAD.unpack_from(
                payload, off)
            t = payload[off + HEAD.size : off + RECORD.size]
            bad = _check(family, proto, state, rflags, timeout_s, t)
            if bad:
                refused[bad] += 1
                continue
            client, vip, snat, ep = t[0:16], t[16:32], t[32:48], t[48:64]
            cport, vport, sport, eport = t[64:66], t[66:68], t[68:70], t[70:72]
            l4 = proto in L4_PORTS
            pf = bytes((proto, family, 0, 0))
            okey = client + vip + cport + (vport if l4 else b"\0\0") + pf
            rkey = ep + snat + (eport + sport if l4 else sport + b"\0\0") + pf
            dsr = rflags & L.CT_F_DSR
            if rflags & REC_F_GONE:
                doomed.append(okey)
                if not dsr:
                    doomed.append(rkey)
                continue
            port = int.from_bytes(vport, "big") if l4 else 0
            sproto = 1 if proto == 58 else proto
            bound = exact.get((family, vip, sproto, port))
            if bound is None and l4:
                bound = next(((sid, eps) for lo, hi, sid, eps
                              in ranges.get((family, vip, sproto), ())
                              if lo <= port <= hi), None)  # fmt: skip
            ep_id = None
            if bound is not None:
                sid, eps = bound
                ep_id = eps.get((ep, int.from_bytes(eport, "big") if l4 else 0))
                if ep_id is None:
                    ep_id = eps.get((ep, 0))
            if ep_id is None:
                unbound += 1
                continue
            last = now - idle_ms * 1_000_000
            flags = (rflags & ENTRY_FLAGS) | L.CT_F_SYNCED
            keys.append(okey)
            values.append(write.pack(t, last, last, sid, ep_id, timeout_s, L.CT_DIR_ORIG,
                                     state, flags, proto, family, fin))  # fmt: skip
            if not dsr:
                keys.append(rkey)
                values.append(write.pack(t, last, last, sid, ep_id, timeout_s, L.CT_DIR_REPLY,
                                         state, flags, proto, family, fin))  # fmt: skip
        if keys:
            self.hooks.install(b"".join(keys), b"".join(values))
        if doomed:
            self.hooks.delete(b"".join(doomed))
        self.stats["installed"] += len(keys)
        self.stats["deleted"] += len(doomed)
        self.stats["unbound"] += unbound
        self.last_install = time.time()
        if refused:
            self.refused.update(refused)
            log.warning("ha sync: flow records refused",
                        extra={"peer": peer, "refused": dict(refused)})  # fmt: skip
        return {"entries": len(keys), "deleted": len(doomed), "unbound": unbound,
                "refused": sum(refused.values())}  # fmt: skip

    def status(self) -> dict[str, Any]:
        return {
            **dict(self.stats),
            "refused-records": dict(self.refused),
            "ring-drops": self.hooks.drops(),
            "refresh-walk-s": round(self.last_refresh_s, 3),
            "install-backlog": self._inbox.qsize(),
        }


def _check(family: int, proto: int, state: int, rflags: int, timeout_s: int,
           t: bytes) -> str | None:  # fmt: skip
    """The field a record gets wrong, or None."""
    if family not in (4, 6):
        return "family"
    if proto not in PROTOCOLS:
        return "protocol"
    if state > MAX_STATE:
        return "state"
    if rflags & ~(ENTRY_FLAGS | REC_F_GONE):
        return "flags"
    if not 0 < timeout_s <= MAX_TIMEOUT_S:
        return "timeout"
    if family == 4 and any(t[i + 4 : i + 16] != bytes(12) for i in (0, 16, 32, 48)):
        return "address"
    return None



def _offset(fmt: Any, name: str) -> int:
    """Offset of field `name` in struct ct_entry, from its checked format."""
    import re

    m = re.match(r"=(\d+)x", fmt([(name, "B")]).format)
    return int(m.group(1)) if m else 0
