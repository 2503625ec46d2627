"""QoS test kit: the QoS program once per session (``qos_program``) and the datapath net
using it (``qnet``), a paced UDP sender and a receiver that counts bytes per DSCP, and
captures (tcpdump into a pcap read back here) for the mirror tests.

The sender and the receiver run as `python3 -c` children in the test's namespaces, each
bounded in time; the receiver prints one JSON line: {dscp: [packets, ip_bytes]}.
"""

from __future__ import annotations

import json
import struct
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import netkit as kit
import pytest
from dpkit import LbNet

from appliance.config import Diff


@pytest.fixture(scope="session")
def qos_program(lb_program: Any) -> Iterator[Any]:
    """bpf/qos.c compiled once per session, on the balancer's test pin dir."""
    from appliance.datapath.qos import QosDatapath

    q = QosDatapath(lb_program.pin_root)
    q.load()
    yield q
    q.close()


@pytest.fixture
def qnet(lbnet: LbNet, qos_program: Any) -> LbNet:
    """The client/LB/backends net whose reconciler uses the session's QoS program."""
    lbnet.rec.qos = qos_program.sharing(lbnet.lb.ns)
    return lbnet


def set_qos(net: Any, qos: dict[str, Any] | None, mirror: dict[str, Any] | None = None) -> None:
    """A commit of /qos and /mirror through the net's reconciler."""
    diff = Diff(sections_changed={"qos": (None, qos), "mirror": (None, mirror)})
    net.rec.apply(diff)
    assert not net.rec.errors, net.rec.errors
    assert not net.rec.qos.errors, net.rec.qos.errors

RECEIVER = r"""
import json, socket, sys, time
fam = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
s = socket.socket(fam, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
if fam == socket.AF_INET:
    s.setsockopt(socket.IPPROTO_IP, socket.IP_RECVTOS, 1)
else:
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVTCLASS, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
hdr = 28 if fam == socket.AF_INET else 48
s.settimeout(0.2)
end = time.monotonic() + float(sys.argv[3])
print("ready", flush=True)
seen = {}
first = last = None
while time.monotonic() < end:
    try:
        data, anc, _f, _a = s.recvmsg(65535, 64)
    except socket.timeout:
        continue
    tos = 0
    for level, kind, val in anc:
        tos = val[0] if len(val) == 1 else int.from_bytes(val[:4], sys.byteorder)
    now = time.monotonic()
    first = first or now
    last = now
    row = seen.setdefault(tos >> 2, [0, 0])
    row[0] += 1
    row[1] += len(data) + hdr
print(json.dumps({"dscp": seen, "span": (last - first) if first else 0}), flush=True)
"""

SENDER = r"""
import socket, sys, time
dst, port, rate_bps, secs, size, dscp = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), \
    float(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
fam = socket.AF_INET6 if ":" in dst else socket.AF_INET
s = socket.socket(fam, socket.SOCK_DGRAM)
if fam == socket.AF_INET:
    s.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, dscp << 2)
else:
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_TCLASS, dscp << 2)
hdr = 28 if fam == socket.AF_INET else 48
payload = b"q" * (size - hdr)
gap = size * 8 / rate_bps
start = time.monotonic()
n = 0
while True:
    now = time.monotonic()
    if now - start >= secs:
        break
    due = start + n * gap
    if now < due:
        time.sleep(min(due - now, 0.002))
        continue
    try:
        s.sendto(payload, (dst, port))
    except OSError:
        pass
    n += 1
print(n, flush=True)
"""


def udp_blast(
    sender: kit.Host,
    receiver: kit.Host,
    dst: str,
    listen: str,
    port: int,
    rate_bps: float,
    secs: float,
    size: int = 1000,
    dscp: int = 0,
) -> dict[int, list[int]]:
    """Send ``size``-byte IP packets at ``rate_bps`` for ``secs`` from ``sender`` to
    ``dst``:``port``; return what ``receiver`` (listening on ``listen``) got per DSCP:
    {dscp: [packets, ip_bytes]}."""
    rx = receiver.popen(["python3", "-c", RECEIVER, listen, str(port), str(secs + 1.5)],
                        stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert rx.stdout is not None
        assert rx.stdout.readline().strip() == "ready"
        res = sender.run(["python3", "-c", SENDER, dst, str(port), str(rate_bps), str(secs),
                          str(size), str(dscp)], timeout=secs + 10)  # fmt: skip
        assert res.returncode == 0, res.stderr
        out, _ = rx.communicate(timeout=secs + 10)
    finally:
        if rx.poll() is None:
            rx.kill()
            rx.wait()
    doc = json.loads(out.strip().splitlines()[-1])
    return {int(k): v for k, v in doc["dscp"].items()}


# -- captures -----------------------------------------------------------------------------


class Capture:
    """tcpdump on ``ifname`` in ``host`` writing a pcap; stop() returns the frames."""

    def __init__(self, host: kit.Host, ifname: str, path: Path, bpf_filter: str = "",
                 direction: str | None = None) -> None:  # fmt: skip
        cmd = ["tcpdump", "-i", ifname, "-U", "-n", "-s", "0", "-w", str(path)]
        if direction:
            cmd += ["-Q", direction]
        if bpf_filter:
            cmd += bpf_filter.split()
        self.path = path
        self.proc = host.popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)
        # tcpdump says "listening on" once the socket is open.
        deadline = time.monotonic() + 5
        assert self.proc.stderr is not None
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if b"listening on" in line or not line:
                break

    def stop(self, until: Callable[[list[bytes]], bool] | None = None,
             timeout: float = 5.0) -> list[bytes]:  # fmt: skip
        """Stop once the frames written so far satisfy ``until`` (or at ``timeout``; a
        loaded machine may take a while to schedule tcpdump), and return them."""
        deadline = time.monotonic() + timeout
        while until is not None and time.monotonic() < deadline:
            if until(read_pcap(self.path)):
                break
            time.sleep(0.05)
        time.sleep(0.3)  # let the last frames reach the file (-U: written per packet)
        self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        return read_pcap(self.path)


def read_pcap(path: Path) -> list[bytes]:
    """The frames of a classic pcap file (what tcpdump -w writes)."""
    data = path.read_bytes() if path.exists() else b""
    if len(data) < 24:
        return []
    endian = "<" if data[:4] == b"\xd4\xc3\xb2\xa1" else ">"
    frames, off = [], 24
    while off + 16 <= len(data):
        _s, _us, incl, _orig = struct.unpack(endian + "IIII", data[off:off + 16])
        frames.append(data[off + 16:off + 16 + incl])
        off += 16 + incl
    return frames


def frames_summary(frames: list[bytes]) -> Any:
    return [f[:40].hex() for f in frames[:5]]
