"""Stricter TCP (issue 18 item 6, bpf/lib/tcpstate.h) and the idle reset (tcpreset.py),
with real connections through the balancer and segments crafted with scapy in the client's
namespace:

- a mid-stream segment without a SYN opens no flow (unless the service picks flows up
  mid-stream);
- an RST closes a flow only with a sequence number in the window;
- a SYN flood does not evict established flows (the handshakes have a table of their own);
- a SYN reusing the ports of a finished flow starts a new flow;
- at the inactivity timeout both ends of an idle session are reset.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
from dpkit import CT_TABLES, SYN_TABLES, VIP4, VIP6, LbNet, ct_values, service, wait_for

pytestmark = pytest.mark.datapath

ECHO_PORT = 9000
CLIENT4 = "198.18.0.1"

# A held TCP connection in the client namespace, driven by lines on stdin:
#   "echo"   -> sends 4 bytes, prints "ok" when they came back (or "error <exc>")
#   "wait N" -> waits up to N s for the connection to end: "reset", "eof" or "timeout"
# It prints "port P" (its local port) once connected.
HELD = """
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
print("port", s.getsockname()[1], flush=True)
for line in sys.stdin:
    cmd = line.split()
    try:
        if cmd[0] == "echo":
            s.settimeout(5)
            s.sendall(b"ping")
            got = b""
            while len(got) < 4:
                chunk = s.recv(4 - len(got))
                if not chunk:
                    raise EOFError("closed")
                got += chunk
            print("ok" if got == b"ping" else "bad", flush=True)
        elif cmd[0] == "wait":
            s.settimeout(float(cmd[1]))
            print("eof" if s.recv(100) == b"" else "data", flush=True)
    except ConnectionResetError:
        print("reset", flush=True)
    except socket.timeout:
        print("timeout", flush=True)
    except Exception as exc:
        print("error", type(exc).__name__, exc, flush=True)
"""


class Held:
    """One held connection from the client namespace to ``vip``:``port``."""

    def __init__(self, lbnet: LbNet, vip: str, port: int) -> None:
        self.proc = lbnet.client.popen([sys.executable, "-c", HELD, vip, str(port)],
                                       stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                       text=True, bufsize=1)  # fmt: skip
        line = self._line(10)
        assert line.startswith("port "), line
        self.port = int(line.split()[1])

    def _line(self, timeout: float) -> str:
        import select

        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        assert ready, "the held connection's client did not answer"
        return self.proc.stdout.readline().strip()

    def ask(self, cmd: str, timeout: float = 10) -> str:
        assert self.proc.stdin is not None
        self.proc.stdin.write(cmd + "\n")
        self.proc.stdin.flush()
        return self._line(timeout)

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait(5)


@pytest.fixture
def echo_net(lbnet: LbNet) -> Iterator[LbNet]:
    for b in lbnet.backends:
        b.start_tcp_echo(ECHO_PORT)
    yield lbnet


def _scapy(lbnet: LbNet, code: str) -> None:
    """Run scapy ``code`` in the client namespace (sends only; raw sockets)."""
    script = "from scapy.all import IP, TCP, send, conf\nconf.verb = 0\n" + code
    res = lbnet.client.run([sys.executable, "-c", script], timeout=30)
    assert res.returncode == 0, res.stderr


def _send_rst(lbnet: LbNet, port: int, seq: int) -> None:
    """An RST from the client's ``port`` to the echo VIP with sequence number ``seq``."""
    _scapy(lbnet, f"send(IP(dst={VIP4!r})/TCP(sport={port}, dport={ECHO_PORT}, "
                  f"flags='R', seq={seq}))")  # fmt: skip


def _entries(lbnet: LbNet, port: int) -> list[Any]:
    """The ORIG entry (conntrack or handshake table) of the flow from the client's ``port``."""
    import socket

    out = []
    for name in CT_TABLES + SYN_TABLES:
        for v in lbnet.rec.program.table(name).values():
            if v.dir == 0 and v.t.client_port == socket.htons(port):
                out.append(v)
    return out


def _state(lbnet: LbNet, name: str, port: int) -> str | None:
    rows = [r for r in lbnet.rec.conntrack(name) if r["client"] == f"{CLIENT4}:{port}"]
    return rows[0]["state"] if rows else None


def test_a_mid_stream_ack_opens_no_flow(echo_net: LbNet) -> None:
    lbnet = echo_net
    lbnet.set(service("strict", port=ECHO_PORT, ep_port=ECHO_PORT),
              service("loose", vip="198.19.0.12", port=ECHO_PORT, ep_port=ECHO_PORT,
                      **{"tcp-midstream-pickup": True}))  # fmt: skip
    for vip, sport in ((VIP4, 47001), ("198.19.0.12", 47002)):
        _scapy(lbnet, f"send(IP(dst={vip!r})/TCP(sport={sport}, dport={ECHO_PORT}, "
                      "flags='A', seq=1000, ack=2000))")  # fmt: skip
    wait_for(lambda: lbnet.rec.conntrack("loose"))
    assert lbnet.rec.conntrack("strict") == []
    (row,) = lbnet.rec.conntrack("loose")
    # Picked up as established; the endpoint, knowing no such connection, may have reset it
    # already (an RST in the window: its sequence number is the ACK's acknowledgement).
    assert row["client"] == f"{CLIENT4}:47002" and row["state"] in ("established", "closed")
    # A real connection to the strict service still works.
    held = Held(lbnet, VIP4, ECHO_PORT)
    try:
        assert held.ask("echo") == "ok"
        assert _state(lbnet, "strict", held.port) == "established"
    finally:
        held.close()


def test_an_rst_closes_the_flow_only_in_the_window(echo_net: LbNet) -> None:
    lbnet = echo_net
    lbnet.set(service("e", port=ECHO_PORT, ep_port=ECHO_PORT))
    held = Held(lbnet, VIP4, ECHO_PORT)
    try:
        assert held.ask("echo") == "ok"
        (entry,) = _entries(lbnet, held.port)
        seq = int(entry.tcp_seq)
        for off in (10_000_000, 2**31, -5_000_000):  # far outside any window
            _send_rst(lbnet, held.port, (seq + off) % 2**32)
        time.sleep(0.2)
        assert _state(lbnet, "e", held.port) == "established"
        assert held.ask("echo") == "ok"  # the endpoint never saw them either
        (entry,) = _entries(lbnet, held.port)
        _send_rst(lbnet, held.port, int(entry.tcp_seq))
        wait_for(lambda: _state(lbnet, "e", held.port) == "closed")
        # The endpoint took the RST: its answer to more data is a reset (or, once the
        # closed flow has expired, the data opens no flow and goes unanswered).
        assert held.ask("echo", timeout=15).startswith(("reset", "error", "timeout"))
    finally:
        held.close()


@pytest.mark.parametrize("vip", [VIP4, VIP6])
def test_each_entry_holds_its_directions_numbers_exactly(echo_net: LbNet, vip: str) -> None:
    """Data both ways through the established path (lib/estab.h: ACK segments with payload):
    once the connection is quiet, each direction's next sequence number (its entry's
    tcp_seq: sequence + payload) is what the other side acknowledged (the other entry's
    tcp_ack), and 4 more echoes of 4 bytes moved each by exactly 16."""
    import socket

    lbnet = echo_net
    lbnet.set(service("e", vip=vip, port=ECHO_PORT, ep_port=ECHO_PORT, backends=(1,)))
    held = Held(lbnet, vip, ECHO_PORT)

    def quiet() -> tuple[int, int] | None:
        (orig,) = _entries(lbnet, held.port)
        (reply,) = [v for v in ct_values(lbnet.rec.program)
                    if v.dir == 1 and v.t.client_port == socket.htons(held.port)]  # fmt: skip
        if orig.tcp_seen != 3 or reply.tcp_seen != 3:
            return None
        if (orig.tcp_seq, orig.tcp_ack) != (reply.tcp_ack, reply.tcp_seq):
            return None
        return int(orig.tcp_seq), int(reply.tcp_seq)

    try:
        assert held.ask("echo") == "ok"
        before = wait_for(quiet, what="both entries' numbers to agree")
        for _ in range(4):
            assert held.ask("echo") == "ok"
        after = wait_for(quiet, what="both entries' numbers to agree again")
        assert [(a - b) % 2**32 for a, b in zip(after, before, strict=True)] == [16, 16]
    finally:
        held.close()


def test_the_rst_window_is_the_scaled_one(echo_net: LbNet) -> None:
    """Both SYNs carried a window scale (Linux's do): the datapath records it (walking the
    SYN's options) and judges an RST against the endpoint's real window, its window field
    shifted by its scale, not the field alone."""
    import socket

    lbnet = echo_net
    lbnet.set(service("e", port=ECHO_PORT, ep_port=ECHO_PORT))
    held = Held(lbnet, VIP4, ECHO_PORT)
    try:
        assert held.ask("echo") == "ok"
        (orig,) = _entries(lbnet, held.port)
        (reply,) = [v for v in ct_values(lbnet.rec.program)
                    if v.dir == 1 and v.t.client_port == socket.htons(held.port)]  # fmt: skip
        for entry in (orig, reply):
            assert entry.tcp_wscale & 0x80 and 0 < entry.tcp_wscale & 0xF <= 14, entry.tcp_wscale
        base, win = int(reply.tcp_ack), int(reply.tcp_win)  # the endpoint's receive window
        scaled = win << (reply.tcp_wscale & 0xF)
        assert scaled > 4 * win + 2000
        for off, closes in ((scaled + 1000, False), (2 * win + 1000, True)):
            _send_rst(lbnet, held.port, (base + off) % 2**32)
            if closes:  # beyond the unscaled window: dropped before the scale was known
                wait_for(lambda: _state(lbnet, "e", held.port) == "closed", timeout=3)
            else:
                time.sleep(0.3)
                assert _state(lbnet, "e", held.port) == "established"
    finally:
        held.close()


def _syn_flood(lbnet: LbNet, count: int) -> None:
    """``count`` SYNs to VIP4:ECHO_PORT from spoofed sources in 198.18.5.0/24 (nothing
    routes their SYN-ACKs back: the flows stay half open), one raw socket, no scapy loop."""
    script = f"""
import socket, struct
def csum(b):
    if len(b) % 2: b += b"\\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16: s = (s & 0xffff) + (s >> 16)
    return ~s & 0xffff
dst = socket.inet_aton({VIP4!r})
raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
n = 0
for a in range(1, 255):
    src = socket.inet_aton("198.18.5.%d" % a)
    for port in range(1024, 1024 + {count} // 254 + 1):
        tcp = struct.pack("!HHIIBBHHH", port, {ECHO_PORT}, 7, 0, 5 << 4, 2, 65535, 0, 0)
        c = csum(src + dst + struct.pack("!BBH", 0, 6, len(tcp)) + tcp)
        tcp = tcp[:16] + struct.pack("!H", c) + tcp[18:]
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40, 0, 0, 64, 6, 0, src, dst)
        raw.sendto(ip + tcp, ({VIP4!r}, 0))
        n += 1
        if n >= {count}:
            raise SystemExit(0)
"""
    res = lbnet.client.run([sys.executable, "-c", script], timeout=120)
    assert res.returncode == 0, res.stderr


def test_a_syn_flood_does_not_evict_established_flows(echo_net: LbNet) -> None:
    """The session program's ct_map holds 65,536 entries: 40,000 SYNs (two entries each
    if they went there) would push the held flows out of it."""
    lbnet = echo_net
    lbnet.set(service("e", port=ECHO_PORT, ep_port=ECHO_PORT))
    held = [Held(lbnet, VIP4, ECHO_PORT) for _ in range(3)]
    try:
        for h in held:
            assert h.ask("echo") == "ok"
        before = {h.port: _entries(lbnet, h.port)[0].ep_id for h in held}
        _syn_flood(lbnet, 40_000)
        from appliance.datapath import ctwalk

        # The flood went through the balancer, into the handshakes' table.
        assert sum(ctwalk.count(lbnet.rec.program.table(n)) for n in SYN_TABLES) > 1000
        for h in held:
            (entry,) = _entries(lbnet, h.port)
            assert entry.ep_id == before[h.port] and entry.state == 1
            assert h.ask("echo") == "ok"
    finally:
        for h in held:
            h.close()


# One HTTP/1.0 GET from a fixed local port, read to the server's FIN before closing: the
# client then keeps no TIME_WAIT (curl may close first once it has the whole body, and its
# TIME_WAIT then holds the port). Prints the body, or nothing when the port is still busy.
GET_FROM_PORT = """
import errno, socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try:
    s.bind(("", int(sys.argv[2])))
except OSError as exc:
    sys.exit(0 if exc.errno == errno.EADDRINUSE else 1)
s.settimeout(3)
s.connect((sys.argv[1], 80))
s.sendall(b"GET / HTTP/1.0\\r\\n\\r\\n")
data = b""
while chunk := s.recv(4096):
    data += chunk
s.close()
print(data.split(b"\\r\\n\\r\\n", 1)[1].decode().strip())
"""


def _get_from_port(lbnet: LbNet, port: int) -> str:
    res = lbnet.client.run([sys.executable, "-c", GET_FROM_PORT, VIP4, str(port)], timeout=10)
    assert res.returncode == 0, res.stderr
    return res.stdout.strip()


def test_a_syn_reusing_a_finished_flows_ports_starts_a_new_flow(lbnet: LbNet) -> None:
    """curl from one local port twice: the first flow ended with FINs both ways (the HTTP/1.0
    server closes first, so the client keeps no TIME_WAIT); the second SYN must be a new flow,
    balanced anew (round-robin: the next backend), not the old one's FIN state carried on."""
    lbnet.set(service("web"))
    first = _get_from_port(lbnet, 47100)
    wait_for(lambda: _state(lbnet, "web", 47100) == "fin-wait")
    second = wait_for(lambda: _get_from_port(lbnet, 47100), what="the second request")
    assert (first, second) == ("b1", "b2")
    assert lbnet.rec.service_state("web")["total-sessions"] == 2


@pytest.mark.parametrize("mode", ["default", "dsr", "ip-in-ip"])
def test_an_idle_session_is_reset_on_both_ends(echo_net: LbNet, mode: str) -> None:
    """Inactivity timeout 2 s, a conntrack sweep every second: within timeout + sweep
    interval (+ slack for a loaded machine) the client's socket is reset and the endpoint's
    connection is gone. DSR: the endpoint (VIP on its lo) gets the client's own RST, as a
    frame to its MAC (L2) or through the tunnel (L3-DSR, decapsulated by the test's TC
    program)."""
    from appliance.datapath.reconciler import DatapathReconciler

    lbnet = echo_net
    extra: dict[str, Any] = {}
    decap = None
    if mode == "dsr":
        lbnet.backends[0].run(["ip", "addr", "add", f"{VIP4}/32", "dev", "lo"], check=True)
        extra = {"mode": "dsr"}
    elif mode == "ip-in-ip":
        from test_datapath_l3dsr import attach_decap

        decap = attach_decap(lbnet.backends[:1])  # also puts the VIPs on its lo
        extra = {"mode": "dsr", "dsr-tunnel": "ip-in-ip"}
    lbnet.rec.close()
    lbnet.rec = DatapathReconciler(lbnet.rec.pin_root, netns=lbnet.lb.ns,
                                   program=lbnet.rec.program, gc_interval_s=1.0)  # fmt: skip
    dp = {"interface": [{"name": i, "hook": "tc"} for i in lbnet.interfaces]}
    lbnet.rec.start({"sluice:datapath": dp, "sluice:load-balancer": {"service": []}})
    lbnet.services = {}
    lbnet.set(service("e", port=ECHO_PORT, ep_port=ECHO_PORT, backends=(1,),
                      **{"inactivity-timeout": 2}, **extra))  # fmt: skip
    held = Held(lbnet, VIP4, ECHO_PORT)
    try:
        assert held.ask("echo") == "ok"
        backend = lbnet.backends[0]

        def backend_has_it() -> bool:
            res = backend.run(["ss", "-Htn", "state", "established", f"sport = :{ECHO_PORT}"])
            # The echo server listens on :: (the client shows as ::ffff:198.18.0.1).
            return f"{CLIENT4}]:{held.port}" in res.stdout

        assert backend_has_it()
        started = time.monotonic()
        assert held.ask("wait 10", timeout=15) == "reset"
        took = time.monotonic() - started
        assert 2.0 <= took < 2.0 + 1.0 + 3.0, took
        wait_for(lambda: not backend_has_it(), timeout=2)
        assert lbnet.rec.conntrack("e") == []
        assert lbnet.rec.driver is not None and lbnet.rec.driver.ct.idle_resets == 1
    finally:
        held.close()
        if decap is not None:
            decap.cleanup()


def test_through_the_cli_on_a_running_daemon(lb_daemon: tuple[LbNet, Any]) -> None:
    """`sluice lb add` takes --tcp-midstream-pickup (refused for UDP, naming the field, with
    nothing changed); an idle session of a service added with --inactivity-timeout is reset on
    both ends within timeout + the sweep interval (datapath conntrack-sweep-interval 1 s)."""
    net, d = lb_daemon
    dp = {"interface": [{"name": i} for i in net.interfaces], "conntrack-sweep-interval": 1}
    d.apply({"datapath": dp})
    # The interval in effect is shown with the rest of the datapath's status.
    wait_for(lambda: d.cli_json("dp", "status").get("conntrack-sweep-interval") == 1,
             timeout=10, what="dp status showing the sweep interval")  # fmt: skip
    assert "conntrack-sweep  1" in d.cli("dp", "status").stdout
    net.backends[0].start_tcp_echo(ECHO_PORT)
    bad = d.cli("lb", "add", "u", "--vip", VIP4, "--proto", "udp", "--port", "53",
                "--endpoints", "198.18.11.1:53", "--tcp-midstream-pickup")  # fmt: skip
    assert bad.returncode != 0 and "tcp-midstream-pickup" in bad.stderr, bad.stderr
    assert d.cli_json("lb", "list") == []
    ok = d.cli("lb", "add", "e", "--vip", VIP4, "--port", str(ECHO_PORT), "--endpoints",
               f"198.18.11.1:{ECHO_PORT}", "--inactivity-timeout", "2")  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    held = wait_for(lambda: _try_held(net), timeout=20, step=0.5)
    try:
        assert held.ask("echo") == "ok"
        started = time.monotonic()
        assert held.ask("wait 15", timeout=20) == "reset"
        assert time.monotonic() - started < 2.0 + 1.0 + 4.0
    finally:
        held.close()


def _try_held(net: LbNet) -> Held | None:
    try:
        return Held(net, VIP4, ECHO_PORT)
    except AssertionError:
        return None


def test_a_packet_after_the_timeout_does_not_save_the_session(echo_net: LbNet) -> None:
    """The client speaks again after the inactivity timeout but before the sweep: its data
    is dropped (the session is over), and the sweep still resets both ends (before, the
    datapath dropped the expired flow itself, silently, and the sweep found nothing)."""
    lbnet = echo_net
    lbnet.set(service("e", port=ECHO_PORT, ep_port=ECHO_PORT, backends=(1,),
                      **{"inactivity-timeout": 1}))  # fmt: skip
    held = Held(lbnet, VIP4, ECHO_PORT)
    try:
        assert held.ask("echo") == "ok"
        time.sleep(1.5)  # past the timeout; no sweep runs here (housekeeping off)
        assert held.proc.stdin is not None
        held.proc.stdin.write("echo\n")  # its answer would come back in under a second
        held.proc.stdin.flush()
        time.sleep(1.0)
        assert lbnet.rec.driver is not None
        lbnet.rec.driver.gc()
        assert held._line(10) == "reset"
        assert lbnet.rec.driver.ct.idle_resets == 1
    finally:
        held.close()
