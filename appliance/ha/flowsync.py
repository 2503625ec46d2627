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
sent back: each flow is sent by the node that carries it. Every kind of flow is sent:
NAT64/NAT46 (the endpoint side in the other family), L3-DSR (the tunnel is made per packet
from the entry), firewall pass entries (no service: installed without ids), SCTP (its
verification tags ride in the TCP numbers' place, as in the entries; its alternate paths
are entries of their own, bound by their secondary VIP).
For TCP a record carries both directions' last segments: a state change's event carries
the REPLY entry's beside the ORIG entry (the datapath looks it up then; a created event has
none yet), walks pair each ORIG entry with its REPLY entry (up to PAIR_MAX waiting at
once; beyond, a record goes without the REPLY's numbers and the receiver's RST check for
that direction stays open until a packet fills them).

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
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator
from typing import Any

from appliance.datapath import layout as L
from appliance.datapath.conntrack import _timeout_for as _timeout_s
from appliance.ha.sync_codec import RECORD

log = logging.getLogger(__name__)

HEAD = struct.Struct("!BBBBBBHII")  # the record's head, then the 72-byte NAT tuple,
TUPLE = 72
TCP = struct.Struct("!IIHBx")  # then per direction (ORIG, REPLY): next seq, ack, window, seen
NO_TCP = bytes(TCP.size)
NO_TAG = bytes(4)  # struct ct_key vtag of every key but an SCTP flow's ORIG key
FE_TCP = struct.Struct("=IIHBx")  # struct fe_tcp (bpf/lib/ha.h), after an event's entry
assert FE_TCP.size == L.FE_TCP_SIZE
assert HEAD.size + TUPLE + 2 * TCP.size == RECORD.size
# The record's own flags (its head's 16-bit word after `dir`; the flags byte is the entry's):
REC_F_GONE = 1  # the flow is gone (delete it)
REC_F_NOSVC = 2  # no service owns it (egress SNAT, firewall pass): installed without ids
REC_FLAGS = REC_F_GONE | REC_F_NOSVC
# The entry flags a record may carry.
ENTRY_FLAGS = (L.CT_F_COUNTED | L.CT_F_DSR | L.CT_F_XLAT | L.CT_F_PASS | L.CT_F_IPIP
               | L.CT_F_LC | L.CT_F_MH_ALT)  # fmt: skip
L4_PORTS = (6, 17, 132)  # protocols whose conntrack keys carry ports (bpf/lib/conntrack.h)
PROTOCOLS = {6, 17, 1, 58, 132}
MAX_STATE = 15
MAX_TIMEOUT_S = 7 * 86400
TCP_SEEN = 3  # TCP_SEEN_SEQ | TCP_SEEN_ACK
REFRESH_S = 5.0
PAIR_MAX = 65536  # ORIG records (or REPLY numbers) a walk holds while it pairs them
# Entries a node does not send: a peer's (SYNCED), until a packet here makes them its own.
SKIP = L.CT_F_SYNCED
_FLAGS = 118  # struct ct_entry.flags (checked in FlowSync.__init__)
INSTALL_QUEUE = 64  # payloads waiting for the installer before the channel waits
ASSOCIATIONS = 65536  # SCTP primary flows remembered for their alternate paths (MH_PEERS)
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
        self._read = f([("t", f"{TUPLE}s"), ("last_ns", "Q"), ("svc_id", "I"),
                        ("timeout_s", "I"), ("dir", "B"), ("state", "B"), ("flags", "B"),
                        ("proto", "B"), ("family", "B"), ("fin_seen", "B"), ("tcp_seq", "I"),
                        ("tcp_ack", "I"), ("tcp_win", "H"), ("tcp_seen", "B")])  # fmt: skip
        self._write = f([("t", f"{TUPLE}s"), ("created_ns", "Q"), ("last_ns", "Q"),
                         ("svc_id", "I"), ("ep_id", "I"), ("timeout_s", "I"), ("dir", "B"),
                         ("state", "B"), ("flags", "B"), ("proto", "B"), ("family", "B"),
                         ("fin_seen", "B"), ("tcp_seq", "I"), ("tcp_ack", "I"),
                         ("tcp_win", "H"), ("tcp_seen", "B")])  # fmt: skip
        self._vsize = self.hooks.entry_size
        assert f([("flags", "B")]).size == self._vsize and _offset(f, "flags") == _FLAGS
        self.stats: Counter[str] = Counter()
        self.refused: Counter[str] = Counter()
        self.last_refresh_s = 0.0
        self.last_install: float | None = None
        self._unbound_logged = -60.0  # monotonic time of the last "unbound" warning
        self._inbox: queue.Queue[tuple[str, bytes] | None] = queue.Queue()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._bindings: dict[str, Any] | None = None
        self._bindings_at = 0.0
        # SCTP multihoming: the datapath links each alternate path to its association's
        # primary flow (mh_alt_map); a record of a path does not carry that link, but the
        # path's entries hold the association's verification tags and ports, as its
        # primary's do. (tags, ports) -> the primary's ORIG key, of the peers' records.
        self._assoc: OrderedDict[bytes, bytes] = OrderedDict()
        self._alt_waiting: OrderedDict[bytes, list[bytes]] = OrderedDict()  # its paths' keys

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> None:
        self._stop.clear()
        self.hooks.start_events(self._on_events)  # first: if it fails, no thread is left
        loops = (("ha-install", self._install_loop), ("ha-refresh", self._refresh_loop))
        for name, target in loops:
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)

    def close(self) -> None:
        self.hooks.stop_events(self._on_events)
        self._stop.set()
        self._inbox.put(None)
        for t in self._threads:
            t.join(timeout=5)
        self._threads.clear()

    # -- sending ------------------------------------------------------------------------------
    def _record(self, entry: bytes, now_ns: int, gone: bool = False) -> bytes:
        """The record of an ORIG entry; with the REPLY entry's TCP numbers when the event
        carries them (struct fe_tcp after the entry: a TCP state change)."""
        (t, last, sid, timeout_s, _, state, flags, proto, family, fin, seq, ack, win,
         seen) = self._read.unpack_from(entry)  # fmt: skip
        idle_ms = max(0, now_ns - last) // 1_000_000
        rflags = (REC_F_GONE if gone else 0) | (0 if sid else REC_F_NOSVC)
        reply = NO_TCP
        if proto == 6 and len(entry) >= self._vsize + FE_TCP.size:
            rseq, rack, rwin, rseen = FE_TCP.unpack_from(entry, self._vsize)
            if rseen & TCP_SEEN:
                reply = TCP.pack(rseq, rack, rwin, rseen & TCP_SEEN)
        return (HEAD.pack(family, proto, state, flags & ENTRY_FLAGS, fin, L.CT_DIR_ORIG,
                          rflags, timeout_s,
                          min(idle_ms, 0xFFFFFFFF)) + t
                + TCP.pack(seq, ack, win, seen & TCP_SEEN) + reply)  # fmt: skip

    def _on_events(self, batch: list[tuple[int, bytes]]) -> None:
        """On the datapath's "flow-events" thread (or the conntrack sweep's, for the
        flows it expires): one batch of events. Nothing about a peer's flow (SYNCED) goes
        back, not even its end here: the peer, which carries it, may know better."""
        now = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        out = b"".join(self._record(e, now, kind == L.FE_GONE) for kind, e in batch
                       if not e[_FLAGS] & SKIP)  # fmt: skip
        self.stats["events"] += len(batch)
        for i in range(0, len(out), MAX_PAYLOAD - MAX_PAYLOAD % RECORD.size):
            self.broadcast(out[i : i + MAX_PAYLOAD - MAX_PAYLOAD % RECORD.size])

    def _own_chunks(self, since_ns: int = 0) -> Iterator[bytes]:
        """Wire records of this node's own live ORIG entries last active after
        `since_ns`, a chunk of the table at a time. A TCP flow's record waits for its REPLY
        entry's numbers (or they wait for it) within the walk, PAIR_MAX at most."""
        vs = self._vsize
        read = self._read
        orig, tcp, dsr = L.CT_DIR_ORIG, 6, L.CT_F_DSR
        replies: dict[bytes, bytes] = {}  # tuple -> its REPLY entry's TCP numbers
        waiting: dict[bytes, bytes] = {}  # tuple -> its ORIG record, without them
        for _keys, values, n in self.hooks.walk():
            now = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
            out = []
            for i in range(n):
                (t, last, sid, timeout_s, d, state, flags, proto, family, fin, seq, ack, win,
                 seen) = read.unpack_from(values, i * vs)  # fmt: skip
                if d != orig:
                    # A peer's flow's (SYNCED) is never wanted. (Idle or not: its ORIG
                    # entry may be active, and a record without its numbers clears them.)
                    if proto == tcp and not flags & SKIP:
                        block = TCP.pack(seq, ack, win, seen & TCP_SEEN)
                        rec = waiting.pop(t, None)
                        if rec is not None:
                            out.append(rec + block)
                        elif len(replies) < PAIR_MAX:
                            replies[t] = block
                    continue
                if flags & SKIP or last <= since_ns:
                    continue
                idle = max(0, now - last)
                if idle > _timeout_s(state, proto, timeout_s) * 1_000_000_000:
                    continue  # expired: the peer needs no copy
                rflags = 0 if sid else REC_F_NOSVC
                rec = (HEAD.pack(family, proto, state, flags & ENTRY_FLAGS, fin, orig, rflags,
                                 timeout_s, idle // 1_000_000)
                       + t + TCP.pack(seq, ack, win, seen & TCP_SEEN))  # fmt: skip
                if proto != tcp or flags & dsr:
                    out.append(rec + NO_TCP)
                elif (block := replies.pop(t, None)) is not None:
                    out.append(rec + block)
                elif len(waiting) < PAIR_MAX:
                    waiting[t] = rec
                else:
                    out.append(rec + NO_TCP)
            if out:
                yield b"".join(out)
        if waiting:  # their REPLY entries were not met (gone meanwhile, or past PAIR_MAX)
            yield b"".join(rec + NO_TCP for rec in waiting.values())

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
        gone: list[tuple[bytes, bytes | None]] = []  # (ORIG key, REPLY key) of ended flows
        links: list[tuple[bytes, bytes]] = []  # SCTP: (alternate path's ORIG key, primary's)
        refused: Counter[str] = Counter()
        unbound = 0
        first_unbound: tuple[str, int, bytes, int, int] | None = None
        write = self._write
        for off in range(0, len(payload) - RECORD.size + 1, RECORD.size):
            family, proto, state, eflags, fin, _d, rflags, timeout_s, idle_ms = HEAD.unpack_from(
                payload, off)
            t = payload[off + HEAD.size : off + HEAD.size + TUPLE]
            otcp = TCP.unpack_from(payload, off + HEAD.size + TUPLE)
            rtcp = TCP.unpack_from(payload, off + HEAD.size + TUPLE + TCP.size)
            if proto == 132:  # SCTP: both entries keep both verification tags (sctp.h)
                rtcp = otcp
            bad = _check(family, proto, state, eflags, rflags, timeout_s, t, otcp[3] | rtcp[3])
            if bad:
                refused[bad] += 1
                continue
            client, vip, snat, ep = t[0:16], t[16:32], t[32:48], t[48:64]
            cport, vport, sport, eport = t[64:66], t[66:68], t[68:70], t[70:72]
            l4 = proto in L4_PORTS
            efam = 10 - family if eflags & L.CT_F_XLAT else family
            # SCTP's ORIG key carries the endpoint's verification tag (struct ct_key vtag,
            # native order as the datapath loaded it): the ORIG entry's tcp_seq.
            tag = struct.pack("=I", otcp[0]) if proto == 132 else NO_TAG
            okey = client + vip + cport + (vport if l4 else b"\0\0") + bytes(
                (proto, family, 0, 0)) + tag
            rkey = ep + snat + (eport + sport if l4 else sport + b"\0\0") + bytes(
                (proto, efam, 0, 0)) + NO_TAG
            dsr = eflags & L.CT_F_DSR
            assoc = (payload[off + HEAD.size + TUPLE : off + HEAD.size + TUPLE + 8] + cport
                     + vport if proto == 132 else b"")  # the tags, then the ports
            if rflags & REC_F_GONE:
                gone.append((okey, None if dsr else rkey))
                if assoc and not eflags & L.CT_F_MH_ALT:
                    self._assoc.pop(assoc, None)
                continue
            port = int.from_bytes(vport, "big") if l4 else 0
            sproto = 1 if proto == 58 else proto
            if eflags & L.CT_F_PASS or rflags & REC_F_NOSVC:  # no service: no ids
                bound = (0, {(ep, int.from_bytes(eport, "big") if l4 else 0): 0})
            else:
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
                if ep_id is None and proto == 132:
                    ep_id = 0  # an SCTP alternate path to an address the endpoint announced
            if ep_id is None:
                unbound += 1
                if first_unbound is None:
                    first_unbound = ("endpoint" if bound else "vip", family, vip, port, proto)
                continue
            last = now - idle_ms * 1_000_000
            flags = eflags | L.CT_F_SYNCED
            keys.append(okey)
            values.append(write.pack(t, last, last, sid, ep_id, timeout_s, L.CT_DIR_ORIG,
                                     state, flags, proto, family, fin, *otcp))  # fmt: skip
            if not dsr:
                keys.append(rkey)
                values.append(write.pack(t, last, last, sid, ep_id, timeout_s, L.CT_DIR_REPLY,
                                         state, flags, proto, family, fin, *rtcp))  # fmt: skip
            if assoc:
                self._link_path(assoc, okey, bool(eflags & L.CT_F_MH_ALT), links)
        if keys:
            self.hooks.install(b"".join(keys), b"".join(values))
        if links:
            self.hooks.link_alt_paths(links)
        doomed = self._doomed(gone)
        if doomed:
            self.hooks.delete(b"".join(doomed))
        self.stats["installed"] += len(keys)
        self.stats["deleted"] += len(doomed)
        self.stats["unbound"] += unbound
        self.last_install = time.time()
        if first_unbound is not None and time.monotonic() - self._unbound_logged > 10.0:
            self._unbound_logged = time.monotonic()
            what, fam, vip, port, proto = first_unbound
            log.warning("ha sync: flow records for no service or endpoint here (skipped)",
                        extra={"peer": peer, "field": what, "count": unbound,
                               "vip": L.words_addr(struct.unpack("=4I", vip), fam),
                               "port": port, "protocol": proto})  # fmt: skip
        if refused:
            self.refused.update(refused)
            log.warning("ha sync: flow records refused",
                        extra={"peer": peer, "refused": dict(refused)})  # fmt: skip
        return {"entries": len(keys), "deleted": len(doomed), "unbound": unbound,
                "refused": sum(refused.values())}  # fmt: skip

    def _link_path(self, assoc: bytes, okey: bytes, alternate: bool,
                   links: list[tuple[bytes, bytes]]) -> None:  # fmt: skip
        """An SCTP record: a primary flow is remembered (and linked to the paths that came
        before it: a dump walks in hash order); an alternate path is linked to its primary
        when known, else waits for it."""
        if not alternate:
            self._assoc[assoc] = okey
            self._assoc.move_to_end(assoc)
            if len(self._assoc) > ASSOCIATIONS:
                self._assoc.popitem(last=False)
            links += [(path, okey) for path in self._alt_waiting.pop(assoc, ())]
        elif (primary := self._assoc.get(assoc)) is not None:
            links.append((okey, primary))
        else:
            waiting = self._alt_waiting.setdefault(assoc, [])
            if okey not in waiting:
                waiting.append(okey)
            if len(self._alt_waiting) > ASSOCIATIONS:
                self._alt_waiting.popitem(last=False)

    def _doomed(self, gone: list[tuple[bytes, bytes | None]]) -> list[bytes]:
        """The keys of the ended flows to delete here: only a peer's copy that no packet has
        met here (both entries still SYNCED, or absent). A flow this node carries now (it
        moved here: ECMP, a failover) is its own; the peer's end of its stale copy must not
        cut it (this node's datapath and sweep end it when it ends here)."""
        if not gone:
            return []
        keys = [k for pair in gone for k in pair if k is not None]
        now = dict(zip(keys, self.hooks.flags(b"".join(keys)), strict=True))
        doomed: list[bytes] = []
        for okey, rkey in gone:
            pair = [okey] if rkey is None else [okey, rkey]
            if all(now[k] is None or now[k] & L.CT_F_SYNCED for k in pair):
                doomed += [k for k in pair if now[k] is not None]
            else:
                self.stats["gone-kept"] += 1
        return doomed

    def status(self) -> dict[str, Any]:
        return {
            **dict(self.stats),
            "refused-records": dict(self.refused),
            "ring-drops": self.hooks.drops(),
            "refresh-walk-s": round(self.last_refresh_s, 3),
            "install-backlog": self._inbox.qsize(),
        }


def _check(family: int, proto: int, state: int, eflags: int, rflags: int, timeout_s: int,
           t: bytes, tcp_seen: int = 0) -> str | None:  # fmt: skip
    """The field a record gets wrong, or None."""
    if family not in (4, 6):
        return "family"
    if proto not in PROTOCOLS:
        return "protocol"
    if state > MAX_STATE:
        return "state"
    if eflags & ~ENTRY_FLAGS:
        return "flags"
    if rflags & ~REC_FLAGS:
        return "record-flags"
    if eflags & L.CT_F_XLAT and proto not in (6, 17):
        return "flags"  # NAT64/46 translates TCP and UDP only
    if not 0 < timeout_s <= MAX_TIMEOUT_S and not (
            timeout_s == L.MH_ALT_TIMEOUT and eflags & L.CT_F_MH_ALT and proto == 132):
        return "timeout"  # (an SCTP alternate path lives as long as its association)
    efam = 10 - family if eflags & L.CT_F_XLAT else family
    v4 = [i for i, f in ((0, family), (16, family), (32, efam), (48, efam)) if f == 4]
    if any(t[i + 4 : i + 16] != bytes(12) for i in v4):
        return "address"
    if tcp_seen & ~TCP_SEEN or (tcp_seen and proto != 6):
        return "tcp-seen"
    return None



def _offset(fmt: Any, name: str) -> int:
    """Offset of field `name` in struct ct_entry, from its checked format."""
    import re

    m = re.match(r"=(\d+)x", fmt([(name, "B")]).format)
    return int(m.group(1)) if m else 0
