"""The conntrack sync channel: transport, framing, refusals (the datapath side is in
tests/test_datapath_ha.py).

The channel tests run sender and server in this process over loopback TCP; the last test
runs a real daemon in a namespace and attacks its sync port from another one.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path
from typing import Any

import netkit as kit
import pytest
from daemonkit import Daemon

from appliance.ha import sync_channel as ch
from appliance.ha.sync_codec import CodecError, FlowRecord, decode, encode

KEY = bytes.fromhex("00112233445566778899aabbccddeeff")
LOOP = "127.0.0.1"


def flow(n: int, v6: bool = False) -> FlowRecord:
    if v6:
        return FlowRecord(6, 17, f"2001:db8::{n + 1:x}", 40000 + n % 20000, "2001:db8:ff::10",
                          53, "2001:db8:1::1", 5353)  # fmt: skip
    return FlowRecord(4, 6, f"198.18.{n // 250}.{n % 250 + 1}", 40000 + n % 20000,
                      "198.19.0.10", 80, "198.18.11.1", 8080, snat="198.19.0.100",
                      snat_port=1024 + n % 60000, state=3, timeout_s=240, idle_ms=n)  # fmt: skip


def test_codec_round_trip_and_refusals() -> None:
    records = [flow(1), flow(2, v6=True), FlowRecord(4, 1, "198.18.0.1", 7, "198.19.0.10", 0,
                                                      "198.18.11.1", 0)]  # fmt: skip
    # TCP: both directions' last segments; NAT64: the endpoint side in the other family.
    records += [FlowRecord(4, 6, "198.18.0.1", 40000, "198.19.0.10", 80, "2001:db8:1::11",
                           8080, snat="2001:db8:1::fe", snat_port=40000, flags=1 | 4,
                           tcp_orig=(1000, 2000, 512, 3), tcp_reply=(2000, 1000, 65535, 3))]
    assert decode(encode(records)) == records
    with pytest.raises(CodecError):
        decode(encode(records)[:-1])
    with pytest.raises(CodecError):
        encode([FlowRecord(4, 6, "2001:db8::1", 1, "198.19.0.10", 80, "198.18.11.1", 80)])


class Receiver:
    def __init__(self) -> None:
        self.flows: list[FlowRecord] = []
        self.dumped: list[FlowRecord] = []

    def __call__(self, peer: str, records: list[FlowRecord], dump: bool) -> None:
        (self.dumped if dump else self.flows).extend(records)


async def until(check: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def _server(rx: Receiver, peers: tuple[str, ...] = (LOOP,)) -> ch.SyncServer:
    server = ch.SyncServer(LOOP, 0, KEY, peers, rx)
    await server.start()
    return server


def test_dump_then_changes_then_resync_on_reconnect() -> None:
    async def run() -> None:
        rx = Receiver()
        server = await _server(rx)
        mine = [flow(n) for n in range(2500)]  # several FLOWS messages
        sender = ch.SyncSender(LOOP, server.bound_port, KEY, lambda: mine)
        sender.start()
        try:
            await until(lambda: len(rx.dumped) == 2500)
            assert rx.dumped == mine
            for n in range(2500, 2510):
                sender.send(flow(n))
            await until(lambda: len(rx.flows) == 10)
            assert rx.flows == [flow(n) for n in range(2500, 2510)]
            # The server goes away and comes back: the sender reconnects and dumps again.
            port = server.bound_port
            await server.close()
            server = ch.SyncServer(LOOP, port, KEY, (LOOP,), rx)
            await server.start()
            await until(lambda: LOOP in server.stats and server.stats[LOOP].dumps == 1,
                        timeout=10)  # fmt: skip
            assert len(rx.dumped) == 5000 and sender.stats.dumps == 2
        finally:
            await sender.close()
            await server.close()

    asyncio.run(run())


def test_wrong_key_is_refused_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    async def run() -> None:
        rx = Receiver()
        server = await _server(rx)
        sender = ch.SyncSender(LOOP, server.bound_port, bytes(16), lambda: [flow(1)])
        sender.start()
        try:
            await until(lambda: server.refused.get("bad message authentication"))
            assert rx.dumped == [] and rx.flows == []
            assert LOOP not in server.stats or not server.stats[LOOP].connected
        finally:
            await sender.close()
            await server.close()

    with caplog.at_level(logging.WARNING, logger="appliance.ha.sync_channel"):
        asyncio.run(run())
    assert any("wrong key" in str(getattr(r, "reason", "")) for r in caplog.records)


async def _raw(port: int, data: bytes, read_nonce: bool = True) -> bytes:
    reader, writer = await asyncio.open_connection(LOOP, port)
    try:
        nonce = await reader.readexactly(ch.NONCE_LEN) if read_nonce else b""
        writer.write(data if not callable(data) else data(nonce))
        await writer.drain()
        return await asyncio.wait_for(reader.read(), 5)  # the server closes it
    finally:
        writer.close()


def test_garbage_gaps_and_strangers_are_refused_and_the_channel_serves_on() -> None:
    async def run() -> None:
        rx = Receiver()
        server = await _server(rx)
        port = server.bound_port
        try:
            await _raw(port, b"GET / HTTP/1.0\r\n\r\n" * 4)
            await _raw(port, bytes(range(256)) * 64)
            await _raw(port, b"\xff" * 16 + ch.HEADER.pack(ch.MAGIC, ch.VERSION, ch.FLOWS, 0, 0,
                                                           ch.MAX_PAYLOAD + 1))  # fmt: skip

            def replayed(server_nonce: bytes) -> bytes:  # a valid HELLO, then a skipped seq
                mine = b"\x01" * ch.NONCE_LEN
                key = ch.session_key(KEY, server_nonce, mine)
                return mine + ch.frame(key, 0, ch.HELLO) + ch.frame(key, 2, ch.KEEPALIVE)

            await _raw(port, replayed)  # type: ignore[arg-type]
            too_long = "frame of 1048577 bytes is over the 1048576 limit"
            assert {"not a sync frame", too_long, "sequence 2, expected 1"} <= set(server.refused)
            # A stranger (not a configured peer) is refused before any byte is read.
            other = ch.SyncServer(LOOP, 0, KEY, ("198.18.0.3",), rx)
            await other.start()
            assert await _raw(other.bound_port, b"", read_nonce=False) == b""
            assert other.refused == {"not a configured peer": 1}
            await other.close()
            # After all that, a good peer is served.
            sender = ch.SyncSender(LOOP, port, KEY, lambda: [flow(7)])
            sender.start()
            await until(lambda: rx.dumped == [flow(7)])
            await sender.close()
        finally:
            await server.close()

    asyncio.run(run())


@pytest.mark.datapath
def test_the_daemon_refuses_bad_sync_peers_and_serves_on(netkit: kit.Topology,
                                                         tmp_path: Path) -> None:  # fmt: skip
    lb, peer = netkit.host("lb"), netkit.host("peer")
    netkit.link(lb, peer, ["198.18.0.2/24"], ["198.18.0.3/24"])
    d = Daemon(tmp_path, netns=lb.ns)
    d.start()
    try:
        d.apply({"sluice:ha": {"sync": {"address": "198.18.0.2", "port": 7788,
                                        "peer": ["198.18.0.3"], "key": KEY.hex()}}})  # fmt: skip
        script = (
            "import socket,sys,time\n"
            "s=socket.create_connection(('198.18.0.2',7788),3); s.settimeout(3)\n"
            "s.recv(16); s.sendall(bytes(range(256))*40); time.sleep(0.2); s.close()\n"
            "s=socket.create_connection(('198.18.0.2',7788),3); s.sendall(b'\\x00'*3); s.close()\n"
        )
        res = peer.run(["python3", "-c", script], timeout=15)
        assert res.returncode == 0, res.stderr
        # The peer's own sender with the wrong key: a real client, refused too.
        wrong = (
            "import asyncio,sys\n"
            f"sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r})\n"
            "from appliance.ha import sync_channel as ch\n"
            "async def main():\n"
            " s=ch.SyncSender('198.18.0.2',7788,bytes(16),lambda:[],source='198.18.0.3')\n"
            " s.start(); await asyncio.sleep(1.5); await s.close()\n"
            "asyncio.run(main())\n"
        )
        res = peer.run(["python3", "-c", wrong], timeout=15)
        assert res.returncode == 0, res.stderr

        def refused() -> dict[str, int]:
            return d.cli_json("ha", "status")["sync"]["refused"]

        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and "bad message authentication" not in refused():
            time.sleep(0.1)
        assert {"not a sync frame", "bad message authentication"} <= set(refused())
        log = d.log.read_text()
        assert "ha sync: connection refused" in log and "wrong key" in log
        # The daemon serves on: status answers, a commit goes through.
        assert d.cli_json("status")["doors"]["ha"]["state"] == "sync-only"
        assert d.cli("lb", "add", "web", "--vip", "198.18.0.10", "--port", "80",
                     "--endpoints", "198.18.0.3:8080").returncode == 0
        assert json.loads(d.cli("ha", "status", "-o", "json").stdout)["sync"]["listening"] == \
            "198.18.0.2:7788"
    finally:
        d.stop()


def test_a_conntrack_entry_becomes_a_flow_record() -> None:
    from appliance.datapath import layout as L
    from appliance.ha.sync_codec import from_entry

    e = L.CtEntry()
    for name, address in (("client", "198.18.0.1"), ("vip", "198.19.0.10"),
                          ("snat", "198.19.0.100"), ("ep", "198.18.11.1")):  # fmt: skip
        getattr(e.t, name).w[:] = L.addr_words(address)[1]
    e.t.client_port, e.t.vip_port = L.htons(40000), L.htons(80)
    e.t.snat_port, e.t.ep_port = L.htons(1025), L.htons(8080)
    e.family, e.proto, e.state, e.timeout_s, e.last_ns = 4, 6, 3, 240, 1_000_000_000
    e.svc_id, e.ep_id, e.nh.ifindex = 7, 9, 3  # this node's own: not sent
    record = from_entry(e, now_ns=1_250_000_000)
    assert record == FlowRecord(4, 6, "198.18.0.1", 40000, "198.19.0.10", 80, "198.18.11.1",
                                8080, snat="198.19.0.100", snat_port=1025, state=3,
                                timeout_s=240, idle_ms=250)  # fmt: skip
    e.t.snat.w[:] = (0, 0, 0, 0)
    assert from_entry(e, now_ns=1_000_000_000).snat is None
