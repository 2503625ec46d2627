"""Every probe type against real servers in network namespaces, and the prober end to end.

Topology: host "prober" (198.18.0.1, 2001:db8::1) linked to host "backend" (198.18.0.2,
2001:db8::2). Probes run on an event loop whose thread entered the prober namespace
(tests/probekit.py); the backend's servers are netkit's (tcp/udp echo, http) or, where the
kit has none, run in-process on a loop inside the backend namespace (TLS server, and a fake
SCTP responder, since this kernel has no SCTP: it answers INIT from a raw socket).
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import itertools
import random
import socket
import ssl
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from netkit import Topology
from probekit import NsLoop, wait_until

from appliance.events import EventBus
from appliance.probes import DOWN, UP, Prober, ProbeRunner, ProbeSpec
from appliance.probes.rawsock import RawSocket
from appliance.probes.sctp import (
    CHUNK_ABORT,
    CHUNK_INIT,
    CHUNK_INIT_ACK,
    IPPROTO_SCTP,
    parse_reply,
    with_checksum,
)

pytestmark = pytest.mark.datapath

V4, V6 = "198.18.0.2", "2001:db8::2"
SCALE = 0.05  # prober end to end: 1 configured second = 50 ms


class Net:
    def __init__(self, topo: Topology) -> None:
        self.topo = topo
        self.prober = topo.host("prober")
        self.backend = topo.host("backend")
        self.link = topo.link(
            self.prober,
            self.backend,
            ["198.18.0.1/24", "2001:db8::1/64"],
            ["198.18.0.2/24", "2001:db8::2/64"],
        )

    def backend_link(self, up: bool) -> None:
        ifname = self.link.ifname(self.backend)
        # Without this, `link down` flushes the backend's IPv6 addresses for good.
        self.backend.run(["sysctl", "-q", "-w", "net.ipv6.conf.all.keep_addr_on_down=1"])
        self.backend.run(["ip", "link", "set", ifname, "up" if up else "down"], check=True)


@pytest.fixture
def net(netkit: Topology) -> Net:
    return Net(netkit)


@pytest.fixture
def prober_loop(net: Net) -> Iterator[NsLoop]:
    with NsLoop(net.prober) as ns:
        yield ns


def probe(ns: NsLoop, type_: str, address: str, port: int = 0, **kw: Any) -> Any:
    """Run one probe from the prober namespace; a runner per call keeps tests independent."""

    async def go() -> Any:
        runner = ProbeRunner()
        try:
            return await runner.run(ProbeSpec(type_, address, port, kw.pop("timeout", 1.0), **kw))
        finally:
            runner.close()

    return ns.run(go())


def test_tcp_probe(net: Net, prober_loop: NsLoop) -> None:
    server = net.backend.start_tcp_echo(7000)
    for addr in (V4, V6):
        res = probe(prober_loop, "tcp", addr, 7000)
        assert res.ok and res.rtt_us is not None and res.rtt_us > 0, res
    ok = probe(prober_loop, "tcp", V4, 7000, request="hello", expected_response="hello")
    assert ok.ok, ok
    wrong = probe(prober_loop, "tcp", V4, 7000, request="hello", expected_response="bye")
    assert not wrong.ok
    server.stop()
    dead = probe(prober_loop, "tcp", V4, 7000)
    assert not dead.ok and dead.error == "connection refused"


def test_udp_probe(net: Net, prober_loop: NsLoop) -> None:
    server = net.backend.start_udp_echo(7001)
    for addr in (V4, V6):
        res = probe(prober_loop, "udp", addr, 7001, request="ping", expected_response="ping")
        assert res.ok, res
    silent_ok = probe(prober_loop, "udp", V4, 7001, request="x", timeout=0.3)
    assert silent_ok.ok  # answered, and no ICMP port-unreachable
    wrong = probe(prober_loop, "udp", V4, 7001, request="ping", expected_response="pong")
    assert not wrong.ok and "unexpected response" in wrong.error
    server.stop()
    for addr in (V4, V6):
        closed = probe(prober_loop, "udp", addr, 7001, timeout=1.0)
        assert not closed.ok and closed.error == "connection refused", closed


def test_http_probe(net: Net, prober_loop: NsLoop) -> None:
    server = net.backend.start_http_server(8080, body="backend-ok")
    for addr in (V4, V6):
        res = probe(prober_loop, "http", addr, 8080, expected_response="backend-ok")
        assert res.ok, res
    assert probe(prober_loop, "http", V4, 8080, http_method="HEAD").ok is False  # 501
    status = probe(prober_loop, "http", V4, 8080, expected_status=204)
    assert not status.ok and status.error == "status 200, expected 204"
    body = probe(prober_loop, "http", V4, 8080, expected_response="maintenance")
    assert not body.ok and "body does not contain" in body.error
    server.stop()
    assert not probe(prober_loop, "http", V4, 8080).ok


# -- HTTPS: a CA, a server and a client certificate made here -------------------------------
def make_pki(tmp: Path) -> dict[str, str]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def write(stem: str, key: Any, cert: x509.Certificate) -> tuple[str, str]:
        k, c = tmp / f"{stem}.key", tmp / f"{stem}.pem"
        k.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        c.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return str(k), str(c)

    def ca(cn: str) -> tuple[Any, x509.Certificate]:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(name(cn))
            .issuer_name(name(cn))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256())
        )
        return key, cert

    def leaf(cn: str, ca_key: Any, ca_cert: x509.Certificate, server: bool) -> Any:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(name(cn))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
        )
        if server:
            sans = [x509.IPAddress(ipaddress.ip_address(a)) for a in (V4, V6)]
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return key, builder.sign(ca_key, hashes.SHA256())

    ca_key, ca_cert = ca("sluice test CA")
    other_key, other_cert = ca("some other CA")
    out = {}
    _, out["ca"] = write("ca", ca_key, ca_cert)
    _, out["other-ca"] = write("other-ca", other_key, other_cert)
    out["server-key"], out["server-cert"] = write("server", *leaf("backend", ca_key, ca_cert, True))
    out["client-key"], out["client-cert"] = write("client", *leaf("prober", ca_key, ca_cert, False))
    return out


async def https_server(pki: dict[str, str], port: int) -> asyncio.AbstractServer:
    """HTTPS that requires a client certificate from the test CA and answers 200 'secure'."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=pki["ca"])
    ctx.load_cert_chain(pki["server-cert"], pki["server-key"])
    ctx.verify_mode = ssl.CERT_REQUIRED

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(5):
                while (await reader.readline()) not in (b"\r\n", b""):
                    pass
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\nConnection: close\r\n\r\n")
                writer.write(b"secure")
                await writer.drain()
        except (OSError, TimeoutError):
            pass  # failed handshakes (the negative cases) land here
        finally:
            writer.transport.abort()

    # host None: one socket per family (asyncio makes "::" IPv6-only).
    return await asyncio.start_server(handle, None, port, ssl=ctx)


def test_https_probe(net: Net, prober_loop: NsLoop, tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    client = {"client_certificate": pki["client-cert"], "client_key": pki["client-key"]}
    with NsLoop(net.backend) as backend:
        server = backend.run(https_server(pki, 8443))
        try:
            for addr in (V4, V6):
                res = probe(
                    prober_loop, "https", addr, 8443, ca_bundle=pki["ca"],
                    expected_response="secure", **client,
                )  # fmt: skip
                assert res.ok, res
            wrong_ca = probe(prober_loop, "https", V4, 8443, ca_bundle=pki["other-ca"], **client)
            assert not wrong_ca.ok and wrong_ca.error.startswith("certificate:"), wrong_ca
            no_client_cert = probe(prober_loop, "https", V4, 8443, ca_bundle=pki["ca"])
            assert not no_client_cert.ok, no_client_cert
            status = probe(
                prober_loop, "https", V4, 8443, ca_bundle=pki["ca"], expected_status=204, **client
            )
            assert not status.ok and status.error == "status 200, expected 204"
        finally:
            # asyncio servers are not thread-safe: close it on its own loop.
            backend.call(server.close)
            backend.run(server.wait_closed())
    assert not probe(prober_loop, "https", V4, 8443, ca_bundle=pki["ca"], **client).ok


def test_ping_probe(net: Net, prober_loop: NsLoop) -> None:
    for addr in (V4, V6):
        res = probe(prober_loop, "ping", addr)
        assert res.ok and res.rtt_us is not None, res
    assert not probe(prober_loop, "ping", "198.18.0.77", timeout=0.3).ok  # nobody there
    net.backend_link(False)
    for addr in (V4, V6):
        res = probe(prober_loop, "ping", addr, timeout=0.3)
        assert not res.ok, res
    net.backend_link(True)
    assert probe(prober_loop, "ping", V4, timeout=2.0).ok


# -- SCTP: a fake responder, since this kernel has no SCTP ----------------------------------
class FakeSctpServer:
    """Answers INIT with INIT-ACK on `listening` ports and with ABORT on the others, from a
    raw socket (RFC 9260 5.1 and 8.4): just enough of SCTP for the probe to meet a peer."""

    def __init__(self, listening: set[int]) -> None:
        self.listening = listening
        self.socks = [
            RawSocket(socket.AF_INET, IPPROTO_SCTP, self._on_packet(4)),
            RawSocket(socket.AF_INET6, IPPROTO_SCTP, self._on_packet(6)),
        ]
        self.inits = 0

    def _on_packet(self, family: int) -> Any:
        def handler(data: bytes, src: str) -> None:
            reply = parse_reply(data)
            if reply is None or reply.chunk_type != CHUNK_INIT or len(data) < 32:
                return
            self.inits += 1
            initiate_tag = struct.unpack_from("!I", data, 16)[0]
            header = struct.pack("!HHII", reply.dst_port, reply.src_port, initiate_tag, 0)
            if reply.dst_port in self.listening:
                cookie = struct.pack("!HH4s", 7, 8, b"ckie")  # State Cookie parameter
                chunk = struct.pack(
                    "!BBHIIHHI", CHUNK_INIT_ACK, 0, 20 + len(cookie),
                    random.randrange(1, 1 << 32), 65535, 1, 1, 1,
                ) + cookie  # fmt: skip
            else:
                chunk = struct.pack("!BBH", CHUNK_ABORT, 0, 4)
            self.socks[0 if family == 4 else 1].send(with_checksum(header + chunk), src)

        return handler

    def close(self) -> None:
        for s in self.socks:
            s.close()


def test_sctp_probe(net: Net, prober_loop: NsLoop) -> None:
    with NsLoop(net.backend) as backend:
        server = backend.call(lambda: FakeSctpServer({3868}))
        try:
            for addr in (V4, V6):
                # A generous budget: the peer is Python on a raw socket, slow on a loaded box.
                res = probe(prober_loop, "sctp", addr, 3868, timeout=5.0)
                assert res.ok and res.rtt_us is not None, res
                closed = probe(prober_loop, "sctp", addr, 3869, timeout=5.0)
                assert not closed.ok and closed.error == "abort (port closed)", closed
            assert backend.call(lambda: server.inits) == 4
        finally:
            backend.call(server.close)
    silent = probe(prober_loop, "sctp", V4, 3868, timeout=0.3)
    assert not silent.ok and silent.error == "timeout"


# -- the prober end to end ----------------------------------------------------------------
def service(name: str, probe_: dict[str, Any], endpoints: list[tuple[str, int]]) -> dict[str, Any]:
    hp = {
        "http-method": "GET",
        "http-path": "/",
        "expected-status": 200,
        "interval": 1,
        "timeout": 1,
        "retries": 2,
        "successes-before-up": 2,
        "hold-down": 0,
        **probe_,
    }
    return {
        "name": name,
        "admin-state": "enabled",
        "health-probe": hp,
        "endpoint": [{"address": a, "port": p, "admin-state": "enabled"} for a, p in endpoints],
    }


def test_prober_follows_servers_and_link(net: Net, prober_loop: NsLoop) -> None:
    """Endpoints go down within interval x retries + timeout of dying, come back after
    recovery, and every change is one event and one datapath call."""
    tcp = net.backend.start_tcp_echo(7000)
    net.backend.start_http_server(8080, body="ok")
    net.backend.start_udp_echo(7001)
    services = {
        "tcp": service("tcp", {"type": "tcp"}, [(V4, 7000), (V6, 7000), (V4, 7999)]),
        "web": service("web", {"type": "http", "expected-response": "ok"}, [(V4, 8080)]),
        "dns": service(
            "dns", {"type": "udp", "request": "q", "expected-response": "q"}, [(V6, 7001)]
        ),
        "icmp": service("icmp", {"type": "ping"}, [(V4, 0), (V6, 0)]),
    }
    bus = EventBus()
    events: list[dict[str, Any]] = []
    bus.subscribe(events.append)
    calls: list[tuple[str, str, int, bool]] = []
    prober = Prober(bus, on_change=lambda *a: calls.append(a), time_scale=SCALE)

    def state(svc: str, addr: str, port: int) -> str:
        st = prober.endpoint_state(svc, addr, port)
        return st["health"] if st else "?"

    def all_states() -> dict[tuple[str, str, int], str]:
        return {
            (n, ep["address"], ep["port"]): state(n, ep["address"], ep["port"])
            for n, s in services.items()
            for ep in s["endpoint"]
        }

    async def until(pred: Any, timeout: float) -> float:
        return await wait_until(pred, timeout)

    prober_loop.run(prober.start())
    try:
        prober_loop.call(lambda: prober.sync(services))
        # The dead port goes down; everything else stays up.
        prober_loop.run(until(lambda: state("tcp", V4, 7999) == DOWN, 5))
        n = len(events)
        live = {k: v for k, v in prober_loop.call(all_states).items() if k[2] != 7999}
        assert set(live.values()) == {UP}, live
        st = prober_loop.call(lambda: prober.endpoint_state("tcp", V4, 7000))
        assert st is not None and st["rtt-us"] > 0 and st["last-change"].endswith("Z")

        # Server stopped: down within interval x retries + timeout (plus scheduling slack).
        tcp.stop()
        took = prober_loop.run(until(lambda: state("tcp", V4, 7000) == DOWN, 5))
        assert took <= (1 * 2 + 1) * SCALE + 0.25, took
        prober_loop.run(until(lambda: state("tcp", V6, 7000) == DOWN, 5))
        assert prober_loop.call(lambda: state("web", V4, 8080)) == UP

        # Server back: up again after successes-before-up probes.
        net.backend.start_tcp_echo(7000)
        prober_loop.run(until(lambda: state("tcp", V4, 7000) == UP, 5))
        prober_loop.run(until(lambda: state("tcp", V6, 7000) == UP, 5))

        # Link down: every endpoint goes down; link up: all but the dead port come back.
        net.backend_link(False)
        prober_loop.run(until(lambda: set(all_states().values()) == {DOWN}, 5))
        net.backend_link(True)
        prober_loop.run(until(lambda: list(all_states().values()).count(UP) == len(live), 10))
    finally:
        prober_loop.run(prober.stop())
    assert n >= 2  # tcp:7999 went up -> degraded -> down
    # Exactly one event per change: consecutive events of an endpoint chain old -> new.
    by_ep: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
    for e in events:
        by_ep.setdefault((e["service"], e["address"], e["port"]), []).append(e)
    for key, evs in by_ep.items():
        for a, b in itertools.pairwise(evs):
            assert a["new"] == b["old"] and a["new"] != a["old"], (key, evs)
        ups_downs = [(c[3]) for c in calls if c[:3] == key]
        # First call: the initial state; then one per serving/not-serving flip.
        flips = sum(
            1 for e in evs if (e["old"] in ("up", "degraded")) != (e["new"] in ("up", "degraded"))
        )
        assert len(ups_downs) == 1 + flips, (key, ups_downs, evs)
    web_events = by_ep[("web", V4, 8080)]
    assert [e["new"] for e in web_events][-2:] == [DOWN, UP]
