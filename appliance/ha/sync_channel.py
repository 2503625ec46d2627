"""The conntrack sync channel between HA peers (the datapath side: appliance/ha/flowsync.py).

Each node opens one TCP channel to each peer and streams its flows over it (`SyncSender`);
it receives the peer's flows on the channel the peer opened (`SyncServer`). On every
(re)connect the sender first sends a full dump (DUMP_BEGIN, FLOWS..., DUMP_END), then the
changes as they come, as conntrackd's FTFW does after a resync.

Frame: header `!4sBBHQI` (magic "SLSY", version, type, reserved, sequence, payload length),
payload, then HMAC-SHA256 over header and payload. A FLOWS payload starts with a
timestamp (`!Q`, the sender's CLOCK_REALTIME in ns when the oldest change in it was
queued), then the records: the receiver's sync lag is its arrival time minus that stamp
(outside dumps), so it is only as true as the two nodes' clocks agree (NTP).
The MAC key is per connection: HMAC-SHA256(pre-shared key, "sluice-sync" + server nonce +
client nonce), the nonces being the first 16 bytes each side sends, so a frame recorded
from one connection is refused on any other. Sequence numbers start at 0 per direction and
must go up by one: a gap or a replay closes the connection (the sender reconnects and
dumps again).

Everything a peer sends is distrusted: a wrong MAC (a wrong key), a bad magic, a frame
longer than MAX_PAYLOAD, a connection from an address that is not a configured peer, a
handshake slower than HANDSHAKE_S: the connection is closed, the reason logged and counted
(`stats()`), and nothing else in the daemon notices.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import ipaddress
import logging
import os
import struct
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from appliance.ha.sync_codec import RECORD, CodecError, FlowRecord, decode, encode

log = logging.getLogger(__name__)

MAGIC = b"SLSY"
VERSION = 2  # 2: records carry TCP sequence numbers and NAT64/46 flows (112 bytes)
HEADER = struct.Struct("!4sBBHQI")
MAC_LEN = 32
NONCE_LEN = 16
MAX_PAYLOAD = 1 << 20
BATCH = (MAX_PAYLOAD // RECORD.size) // 4  # records per FLOWS message
HANDSHAKE_S = 5.0
KEEPALIVE_S = 2.0
IDLE_S = 3 * KEEPALIVE_S + 1  # nothing heard for this long: the peer is gone
MAX_INBOUND = 8  # connections at once (peers are few; more is an attack)
RECONNECT_S = (0.2, 0.5, 1.0, 2.0, 5.0)
QUEUE = 65536  # FLOWS records waiting for a slow peer before it is resynced instead

STAMP = struct.Struct("!Q")  # a FLOWS payload's head: when its oldest change was queued
LAG_SAMPLES = 1024  # FLOWS messages the lag figures are taken over, per peer

HELLO, DUMP_BEGIN, FLOWS, DUMP_END, KEEPALIVE = 1, 2, 3, 4, 5
TYPES = {HELLO, DUMP_BEGIN, FLOWS, DUMP_END, KEEPALIVE}


class ChannelError(Exception):
    """The peer broke the protocol; the connection is closed."""


def session_key(key: bytes, server_nonce: bytes, client_nonce: bytes) -> bytes:
    return hmac.new(key, b"sluice-sync" + server_nonce + client_nonce, hashlib.sha256).digest()


def frame(key: bytes, seq: int, kind: int, payload: bytes = b"") -> bytes:
    header = HEADER.pack(MAGIC, VERSION, kind, 0, seq, len(payload))
    return header + payload + hmac.new(key, header + payload, hashlib.sha256).digest()


async def read_frame(reader: asyncio.StreamReader, key: bytes, expect_seq: int,
                     timeout: float) -> tuple[int, bytes]:  # fmt: skip
    """(type, payload) of the next frame; ChannelError when it is not what was expected."""
    try:
        header = await asyncio.wait_for(reader.readexactly(HEADER.size), timeout)
    except asyncio.IncompleteReadError as exc:
        raise ChannelError("connection closed" if not exc.partial else "truncated frame") from None
    magic, version, kind, _res, seq, length = HEADER.unpack(header)
    if magic != MAGIC or version != VERSION:
        raise ChannelError("not a sync frame (bad magic or version)")
    if length > MAX_PAYLOAD:
        raise ChannelError(f"frame of {length} bytes is over the {MAX_PAYLOAD} limit")
    try:
        rest = await asyncio.wait_for(reader.readexactly(length + MAC_LEN), timeout)
    except asyncio.IncompleteReadError:
        raise ChannelError("truncated frame") from None
    payload, mac = rest[:length], rest[length:]
    if not hmac.compare_digest(mac, hmac.new(key, header + payload, hashlib.sha256).digest()):
        raise ChannelError("bad message authentication (wrong key?)")
    if kind not in TYPES:
        raise ChannelError(f"unknown message type {kind}")
    if seq != expect_seq:
        raise ChannelError(f"sequence {seq}, expected {expect_seq} (gap or replay)")
    return kind, payload


@dataclass
class PeerStats:
    connected: bool = False
    flows: int = 0
    dumps: int = 0
    last_error: str | None = None
    refused: int = 0


OnFlows = Callable[[str, list[FlowRecord], bool], None]  # (peer, records, part of a dump)
# (peer, wire records undecoded, part of a dump): the receiver checks each record itself,
# off the loop; awaiting it is the channel's back-pressure.
OnPayload = Callable[[str, bytes, bool], Awaitable[None]]


class SyncServer:
    """Accepts the peers' channels and hands their decoded flows to `on_flows`."""

    def __init__(self, address: str, port: int, key: bytes, peers: Iterable[str],
                 on_flows: OnFlows, on_payload: OnPayload | None = None,
                 on_dump_end: Callable[[str], None] | None = None) -> None:  # fmt: skip
        self.address, self.port, self.key = address, port, key
        self.peers = {str(ipaddress.ip_address(p)) for p in peers}
        self.on_flows = on_flows
        self.on_payload = on_payload
        self.on_dump_end = on_dump_end
        self.stats: dict[str, PeerStats] = {}
        self.refused: dict[str, int] = {}  # reason -> connections refused
        self.lags: dict[str, deque[float]] = {}  # peer -> recent sync lags (ms)
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, self.address, self.port,
                                                  reuse_address=True)  # fmt: skip

    @property
    def bound_port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def _refuse(self, peer: str, reason: str) -> None:
        key = reason.split(" (")[0]
        self.refused[key] = self.refused.get(key, 0) + 1
        if peer in self.stats:
            self.stats[peer].last_error = reason
            self.stats[peer].refused += 1
        log.warning("ha sync: connection refused", extra={"peer": peer, "reason": reason})

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        peer = str(ipaddress.ip_address(writer.get_extra_info("peername")[0]))
        try:
            if len(self._tasks) > MAX_INBOUND:
                self._refuse(peer, "too many connections")
                return
            if peer not in self.peers:
                self._refuse(peer, "not a configured peer")
                return
            await self._serve(peer, reader, writer)
        except ChannelError as exc:
            self._refuse(peer, str(exc))
        except (OSError, TimeoutError) as exc:
            self._refuse(peer, f"connection failed ({exc or type(exc).__name__})")
        except CodecError as exc:
            self._refuse(peer, f"bad flow record ({exc})")
        finally:
            if peer in self.stats:
                self.stats[peer].connected = False
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            self._tasks.discard(task)

    async def _serve(self, peer: str, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> None:  # fmt: skip
        nonce = os.urandom(NONCE_LEN)
        writer.write(nonce)
        await writer.drain()
        try:
            theirs = await asyncio.wait_for(reader.readexactly(NONCE_LEN), HANDSHAKE_S)
        except asyncio.IncompleteReadError:
            raise ChannelError("closed during the handshake") from None
        key = session_key(self.key, nonce, theirs)
        kind, _ = await read_frame(reader, key, 0, HANDSHAKE_S)
        if kind != HELLO:
            raise ChannelError("first message is not HELLO")
        stats = self.stats.setdefault(peer, PeerStats())
        stats.connected, stats.last_error = True, None
        log.info("ha sync: peer connected", extra={"peer": peer})
        seq, in_dump = 1, False
        lags = self.lags.setdefault(peer, deque(maxlen=LAG_SAMPLES))
        while True:
            kind, payload = await read_frame(reader, key, seq, IDLE_S)
            seq += 1
            if kind == FLOWS:
                if len(payload) < STAMP.size:
                    raise CodecError("a FLOWS message without its timestamp")
                (stamp,) = STAMP.unpack_from(payload)
                payload = payload[STAMP.size :]
                if not in_dump:
                    lags.append(max(0.0, (time.time_ns() - stamp) / 1e6))
            if kind == DUMP_BEGIN:
                in_dump = True
            elif kind == DUMP_END:
                in_dump = False
                stats.dumps += 1
                if self.on_dump_end is not None:
                    self.on_dump_end(peer)
            elif kind == FLOWS and self.on_payload is not None:
                if len(payload) % RECORD.size:
                    raise CodecError(f"{len(payload)} bytes is not a whole number of records")
                stats.flows += len(payload) // RECORD.size
                await self.on_payload(peer, payload, in_dump)
            elif kind == FLOWS:
                records = decode(payload)
                stats.flows += len(records)
                self.on_flows(peer, records, in_dump)

    def lag(self, peer: str) -> dict[str, Any]:
        """Sync lag from `peer` (ms): the last FLOWS message's, and the median and 99th
        percentile of the last LAG_SAMPLES."""
        got = sorted(self.lags.get(peer, ()))
        if not got:
            return {"last-ms": None, "p50-ms": None, "p99-ms": None, "samples": 0}
        return {"last-ms": round(self.lags[peer][-1], 2),
                "p50-ms": round(got[len(got) // 2], 2),
                "p99-ms": round(got[min(len(got) - 1, int(len(got) * 0.99))], 2),
                "samples": len(got)}  # fmt: skip

    def status(self) -> dict[str, Any]:
        return {"listening": f"{self.address}:{self.port}", "refused": dict(self.refused),
                "peers": {p: {**vars(s), "lag": self.lag(p)}
                          for p, s in self.stats.items()}}  # fmt: skip


@dataclass
class SyncSender:
    """One node's channel to one peer: connect, HELLO, full dump, then the changes."""

    peer: str
    port: int
    key: bytes
    # This node's flows now (full resync): records, or runs of encoded records (bytes).
    # Pulled on a worker thread, a chunk at a time: a million flows never stall the loop.
    dump: Callable[[], Iterable[FlowRecord | bytes]]
    source: str | None = None
    stats: PeerStats = field(default_factory=PeerStats)
    # (when queued, CLOCK_REALTIME ns; encoded records)
    _queue: asyncio.Queue[tuple[int, bytes]] = field(default_factory=lambda: asyncio.Queue(QUEUE))
    _task: asyncio.Task[None] | None = None
    _resync: bool = False

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def send(self, record: FlowRecord) -> None:
        """A flow changed (on the loop). A peer too slow to keep up is dumped to again."""
        self.send_encoded(encode([record]))

    def send_encoded(self, records: bytes) -> None:
        """Encoded records (on the loop); see send."""
        try:
            self._queue.put_nowait((time.time_ns(), records))
        except asyncio.QueueFull:
            self._resync = True

    async def _run(self) -> None:
        attempt = 0
        while True:
            try:
                await self._session()
            except (OSError, TimeoutError, ChannelError, asyncio.IncompleteReadError) as exc:
                self.stats.last_error = str(exc) or type(exc).__name__
            self.stats.connected = False
            delay = RECONNECT_S[min(attempt, len(RECONNECT_S) - 1)]
            attempt += 1
            await asyncio.sleep(delay)

    async def _session(self) -> None:
        local = (self.source, 0) if self.source else None
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(self.peer, self.port, local_addr=local), HANDSHAKE_S)
        try:
            theirs = await asyncio.wait_for(reader.readexactly(NONCE_LEN), HANDSHAKE_S)
            nonce = os.urandom(NONCE_LEN)
            writer.write(nonce)
            key = session_key(self.key, theirs, nonce)
            seq = 0

            def put(kind: int, payload: bytes = b"") -> None:
                nonlocal seq
                writer.write(frame(key, seq, kind, payload))
                seq += 1

            put(HELLO)
            self.stats.connected, self.stats.last_error = True, None
            # Changes queued before the dump are in it: start the stream afresh.
            while not self._queue.empty():
                self._queue.get_nowait()
            self._resync = False
            put(DUMP_BEGIN)
            loop = asyncio.get_running_loop()
            chunks = iter(self.dump())
            while True:
                chunk = await loop.run_in_executor(None, _next_chunk, chunks)
                if chunk is None:
                    break
                for i in range(0, len(chunk), BATCH * RECORD.size):
                    part = chunk[i : i + BATCH * RECORD.size]
                    put(FLOWS, STAMP.pack(time.time_ns()) + part)
                    self.stats.flows += len(part) // RECORD.size
                    await writer.drain()
            put(DUMP_END)
            self.stats.dumps += 1
            await writer.drain()
            while not self._resync:
                try:
                    first = await asyncio.wait_for(self._queue.get(), KEEPALIVE_S)
                except TimeoutError:
                    put(KEEPALIVE)
                else:
                    stamp, blob = first
                    parts = [blob]
                    size = len(blob)
                    while size < BATCH * RECORD.size and not self._queue.empty():
                        parts.append(self._queue.get_nowait()[1])
                        size += len(parts[-1])
                    blob = b"".join(parts)
                    for i in range(0, len(blob), BATCH * RECORD.size):
                        put(FLOWS, STAMP.pack(stamp) + blob[i : i + BATCH * RECORD.size])
                    self.stats.flows += len(blob) // RECORD.size
                await writer.drain()
            raise ChannelError("peer fell behind: resyncing")
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


def _next_chunk(chunks: Iterable[FlowRecord | bytes]) -> bytes | None:
    """The next run of encoded records from a dump (on a worker thread); None at its end.
    Records are gathered BATCH at a time; bytes pass through as they are."""
    it = iter(chunks)
    batch: list[FlowRecord] = []
    for item in it:
        if isinstance(item, bytes):
            if batch:  # never mixed in practice; keep the order if it is
                return encode(batch) + item
            return item
        batch.append(item)
        if len(batch) >= BATCH:
            break
    return encode(batch) if batch else None
