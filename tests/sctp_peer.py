"""SCTP at packet level for the tests (this kernel has no SCTP sockets): scapy over raw sockets.

Run inside a test namespace:

    sctp_peer.py server NAME            answer INIT, COOKIE ECHO, DATA, HEARTBEAT, SHUTDOWN;
                                        one JSON line per packet received (chunk, addresses,
                                        whether its CRC32c was valid) on stdout
    sctp_peer.py client JSON            associations described by JSON (a list of
                                        {"vip", "port", "sport", ...}); prints one JSON result

The server's INIT ACK carries its NAME in the state cookie and every DATA is answered with a
SACK and a DATA "NAME:<payload>", so a client learns which endpoint it reached. Every wait is
bounded; the client exits non-zero on a timeout.
"""

from __future__ import annotations

import json
import os
import select
import socket
import struct
import sys
import time
from typing import Any

from scapy.layers.inet import IP
from scapy.layers.sctp import (
    SCTP,
    SCTPChunkAbort,
    SCTPChunkCookieAck,
    SCTPChunkCookieEcho,
    SCTPChunkData,
    SCTPChunkHeartbeatAck,
    SCTPChunkHeartbeatReq,
    SCTPChunkInit,
    SCTPChunkInitAck,
    SCTPChunkParamHeartbeatInfo,
    SCTPChunkParamIPv4Addr,
    SCTPChunkParamIPv6Addr,
    SCTPChunkParamStateCookie,
    SCTPChunkSACK,
    SCTPChunkShutdown,
    SCTPChunkShutdownAck,
    crc32c,
)

IPPROTO_SCTP = 132
IP_MTU_DISCOVER, IP_PMTUDISC_DONT = 10, 0  # linux/in.h (not in Python's socket module)
CHUNK_NAMES = {0: "data", 1: "init", 2: "init-ack", 3: "sack", 4: "heartbeat",
               5: "heartbeat-ack", 6: "abort", 7: "shutdown", 8: "shutdown-ack",
               10: "cookie-echo", 11: "cookie-ack", 14: "shutdown-complete"}  # fmt: skip


def crc_ok(raw: bytes) -> bool:
    """The packet's CRC32c is the one its bytes give (checksum field taken as zero)."""
    want = struct.unpack("!I", raw[8:12])[0]
    return crc32c(raw[:8] + b"\0\0\0\0" + raw[12:]) == want


class Raw:
    """Raw SCTP sockets of both families: receive (with the local address), send from a
    chosen local address."""

    def __init__(self) -> None:
        self.r4 = socket.socket(socket.AF_INET, socket.SOCK_RAW, IPPROTO_SCTP)
        self.r6 = socket.socket(socket.AF_INET6, socket.SOCK_RAW, IPPROTO_SCTP)
        self.r6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)
        self.senders: dict[str, socket.socket] = {}

    def recv(self, timeout: float) -> tuple[str, str, bytes] | None:
        """(source, local destination, SCTP bytes) or None after ``timeout``."""
        ready, _, _ = select.select([self.r4, self.r6], [], [], max(0.0, timeout))
        if not ready:
            return None
        if ready[0] is self.r4:
            data, _ = self.r4.recvfrom(65535)
            ip = IP(data)
            return ip.src, ip.dst, data[ip.ihl * 4:]
        data, anc, _, src = self.r6.recvmsg(65535, 256)
        dst = "::"
        for level, kind, value in anc:
            if level == socket.IPPROTO_IPV6 and kind == socket.IPV6_PKTINFO:
                dst = socket.inet_ntop(socket.AF_INET6, value[:16])
        return src[0], dst, data

    def send(self, local: str, peer: str, sctp: bytes) -> None:
        s = self.senders.get(local)
        if s is None:
            fam = socket.AF_INET6 if ":" in local else socket.AF_INET
            s = socket.socket(fam, socket.SOCK_RAW, IPPROTO_SCTP)
            if fam == socket.AF_INET:  # a packet bigger than the link goes in fragments
                s.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DONT)
            s.bind((local, 0))
            self.senders[local] = s
        s.sendto(sctp, (peer, 0))


def addr_param(a: str) -> Any:
    return SCTPChunkParamIPv6Addr(addr=a) if ":" in a else SCTPChunkParamIPv4Addr(addr=a)


def chunk_types(pkt: SCTP) -> list[int]:
    out, c = [], pkt.payload
    while c is not None and hasattr(c, "type"):
        out.append(int(c.type))
        c = c.payload if c.payload and len(c.payload) else None
    return out


def serve(name: str) -> None:
    raw = Raw()
    tags: dict[tuple[str, int], int] = {}  # (peer, peer port) -> the peer's tag
    tsn: dict[tuple[str, int], int] = {}
    print(json.dumps({"ready": True}), flush=True)
    while True:
        got = raw.recv(5.0)
        if got is None:
            continue
        src, dst, data = got
        if len(data) < 16:
            continue
        pkt = SCTP(data)
        types = chunk_types(pkt)
        key = (src, int(pkt.sport))
        params = []
        if types and types[0] in (1, 2):
            params = [p.addr for p in pkt.payload.params
                      if isinstance(p, SCTPChunkParamIPv4Addr | SCTPChunkParamIPv6Addr)]
        print(json.dumps({"src": src, "dst": dst, "sport": int(pkt.sport),
                          "dport": int(pkt.dport), "chunks": [CHUNK_NAMES.get(t, t) for t in types],
                          "crc": crc_ok(data), "tag": int(pkt.tag), "addrs": params}),
              flush=True)  # fmt: skip
        if not crc_ok(data) or not types:
            continue  # as a real stack: a bad checksum is dropped silently
        # The peer's tag: by its address and port, or (another path of a multihomed
        # association: another address) by its port alone.
        tag = tags.get(key) or next((t for (_, port), t in tags.items() if port == key[1]), 0)
        head = SCTP(sport=pkt.dport, dport=pkt.sport, tag=tag)
        out: Any = None
        c = pkt.payload
        if types[0] == 1:  # INIT
            tags[key] = int(c.init_tag)
            head.tag = tags[key]
            extra = [a for a in os.environ.get("SCTP_PEER_ADDRS", "").split(",") if a]
            which = os.environ.get("SCTP_PEER_FAMILY", "same")  # same, other or both
            mine = [addr_param(a) for a in extra
                    if which == "both" or ((":" in a) == (":" in dst)) == (which == "same")]
            cookie = SCTPChunkParamStateCookie(cookie=name.encode())
            out = head / SCTPChunkInitAck(init_tag=0x5000 + os.getpid() % 1000,
                                          a_rwnd=65535, n_out_streams=1, n_in_streams=1,
                                          init_tsn=1, params=[cookie, *mine])  # fmt: skip
        elif types[0] == 10:  # COOKIE ECHO (maybe with DATA)
            out = head / SCTPChunkCookieAck()
        elif types[0] == 4:  # HEARTBEAT
            out = head / SCTPChunkHeartbeatAck(params=c.params)
        elif types[0] == 7:  # SHUTDOWN
            out = head / SCTPChunkShutdownAck()
        if 0 in types:  # DATA: SACK it and answer with our name
            d = pkt[SCTPChunkData]
            n = tsn.get(key, 1)
            tsn[key] = n + 1
            reply = SCTPChunkSACK(cumul_tsn_ack=int(d.tsn), a_rwnd=65535) / SCTPChunkData(
                tsn=n, stream_id=0, stream_seq=0, proto_id=int(d.proto_id), beginning=1,
                ending=1, data=name.encode() + b":" + bytes(d.data))  # fmt: skip
            out = (out / reply) if out is not None else head / reply
        if out is not None:
            raw.send(dst, src, bytes(out))


class Client:
    def __init__(self, timeout: float) -> None:
        self.raw = Raw()
        self.timeout = timeout

    def wait(self, peer: str, sport: int, want: int) -> tuple[SCTP, bytes, str]:
        """The next packet from ``peer`` to our ``sport`` whose first chunk is ``want``."""
        deadline = time.monotonic() + self.timeout
        while True:
            got = self.raw.recv(deadline - time.monotonic())
            if got is None:
                raise TimeoutError(f"no {CHUNK_NAMES[want]} from {peer} to port {sport}")
            src, _dst, data = got
            if len(data) < 16:
                continue
            pkt = SCTP(data)
            if int(pkt.dport) == sport and chunk_types(pkt)[:1] == [want]:
                return pkt, data, src

    def associate(self, a: dict[str, Any]) -> dict[str, Any]:
        vip, port, sport, local = a["vip"], a["port"], a["sport"], a["local"]
        tag = int(a.get("init_tag", 0x1000 + sport))  # the tag this client chooses
        res: dict[str, Any] = {"sport": sport, "crc": True}
        if a.get("peer_tag"):  # an association set up by an earlier run: its paths only
            return self.paths(a, res, SCTP(sport=sport, dport=port, tag=int(a["peer_tag"])))
        if a.get("skip_init"):  # DATA on no association: expect no answer (a timeout)
            stray = SCTP(sport=sport, dport=port, tag=0x4242) / SCTPChunkData(
                tsn=1, stream_id=0, stream_seq=0, proto_id=60, beginning=1, ending=1,
                data=b"stray")  # fmt: skip
            self.raw.send(local, vip, bytes(stray))
            self.wait(vip, sport, 3)
            return res
        init = SCTP(sport=sport, dport=port, tag=0) / SCTPChunkInit(
            init_tag=tag, a_rwnd=65535, n_out_streams=1, n_in_streams=1, init_tsn=1,
            params=[addr_param(x) for x in a.get("addrs", [])])  # fmt: skip
        self.raw.send(local, vip, bytes(init))
        ack, data, src = self.wait(vip, sport, 2)
        res["crc"] &= crc_ok(data)
        res["init_ack_from"] = src
        res["init_ack_addrs"] = [p.addr for p in ack.payload.params
                                 if isinstance(p, SCTPChunkParamIPv4Addr | SCTPChunkParamIPv6Addr)]
        cookie = next(p.cookie for p in ack.payload.params
                      if isinstance(p, SCTPChunkParamStateCookie))  # fmt: skip
        peer_tag = int(ack.payload.init_tag)
        res["peer_tag"] = peer_tag
        head = SCTP(sport=sport, dport=port, tag=peer_tag)
        self.raw.send(local, vip, bytes(head / SCTPChunkCookieEcho(cookie=cookie)))
        _, data, _ = self.wait(vip, sport, 11)
        res["crc"] &= crc_ok(data)
        res["endpoint"] = cookie.decode()
        self.paths(a, res, head)
        if a.get("shutdown"):
            self.raw.send(local, vip, bytes(head / SCTPChunkShutdown(cumul_tsn_ack=1)))
            self.wait(vip, sport, 8)
        if a.get("abort"):  # on the primary path, or on the one given
            src_local, dst = a.get("abort_path", (local, vip))
            abort = head / SCTPChunkAbort()
            if a.get("abort_own_tag"):  # the T bit: our own tag (RFC 9260 8.5.1)
                abort = SCTP(sport=sport, dport=port, tag=tag) / SCTPChunkAbort(TCB=1)
            self.raw.send(src_local, dst, bytes(abort))
        return res

    def paths(self, a: dict[str, Any], res: dict[str, Any], head: SCTP) -> dict[str, Any]:
        """A HEARTBEAT (if asked) and a DATA on each path (local address, peer address)."""
        sport = a["sport"]
        for i, (src_local, dst) in enumerate(a.get("paths", [(a["local"], a["vip"])])):
            data_chunk = SCTPChunkData(tsn=1 + i, stream_id=0, stream_seq=i, proto_id=60,
                                       beginning=1, ending=1,
                                       data=b"hello %d" % i + b"." * int(a.get("pad", 0)))
            if a.get("heartbeat"):
                hb = SCTPChunkHeartbeatReq(params=[SCTPChunkParamHeartbeatInfo(data=b"hb%d" % i)])
                self.raw.send(src_local, dst, bytes(head / hb))
                _, data, src = self.wait(dst, sport, 5)
                res["crc"] &= crc_ok(data)
                res.setdefault("heartbeats", []).append(src)
            self.raw.send(src_local, dst, bytes(head / data_chunk))
            pkt, data, src = self.wait(dst, sport, 3)
            res["crc"] &= crc_ok(data)
            res.setdefault("echo_from", []).append(src)
            res.setdefault("echo", []).append(bytes(pkt[SCTPChunkData].data).decode())
        return res


def main() -> None:
    if sys.argv[1] == "server":
        serve(sys.argv[2])
        return
    spec = json.loads(sys.argv[2])
    client = Client(float(spec.get("timeout", 3.0)))
    print(json.dumps([client.associate(a) for a in spec["associations"]]), flush=True)


if __name__ == "__main__":
    main()
