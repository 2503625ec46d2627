"""Policers (bpf/qos.c, lib/policer.h) with real packets through the LB namespace.

A paced UDP sender on the client sends through a service (VIP -> backend 1) at a multiple
of the policer's rate for a short window; a receiver on the backend counts what arrives
per DSCP. The full accuracy run (10 s, iperf3 UDP and TCP) is bench/qos_accuracy.py.
"""

from __future__ import annotations

import sys
from typing import Any

import pytest
from dpkit import UDP_PORT, VIP4, VIP6, backend_addr, service
from qoskit import set_qos, udp_blast

pytestmark = pytest.mark.datapath

PORT = 6000
RATE = 4_000_000  # bit/s
SECS = 2.0


def udp_service(net: Any, vip: str = VIP4, name: str = "u") -> None:
    net.set(service(name, vip=vip, port=PORT, proto="udp", backends=(1,), ep_port=PORT))


def policer(name: str = "p", **kw: Any) -> dict[str, Any]:
    return {"name": name, "cir": RATE, "cbs": 8000, **kw}


def blast(net: Any, rate: float, vip: str = VIP4, dscp: int = 0) -> dict[int, list[int]]:
    listen = backend_addr(1, 6 if ":" in vip else 4)
    return udp_blast(net.client, net.backends[0], vip, listen, PORT, rate, SECS, dscp=dscp)


def rate_of(got: dict[int, list[int]], dscp: int | None = None) -> float:
    rows = got.values() if dscp is None else [got.get(dscp, [0, 0])]
    return sum(r[1] for r in rows) * 8 / SECS


def test_service_policer_drops_above_cir(qnet: Any) -> None:
    udp_service(qnet)
    # Without a policer everything arrives (the sender can do 2x the rate).
    free = rate_of(blast(qnet, 2 * RATE))
    assert free > 1.8 * RATE, free
    set_qos(qnet, {"policer": [policer()], "service": [{"name": "u", "policer": "p"}]})
    got = rate_of(blast(qnet, 2 * RATE))
    assert abs(got - RATE) < 0.12 * RATE, f"passed {got:.0f} bit/s, policer {RATE}"
    st = qnet.rec.qos_state()["policer"]["p"]
    assert st["green"]["packets"] > 0 and st["red"]["packets"] > 0, st
    # Removing the policer detaches the program.
    set_qos(qnet, None)
    assert qnet.rec.qos.attached == set()


def test_two_rate_marks_yellow_drops_red(qnet: Any) -> None:
    udp_service(qnet)
    pol = policer(type="two-rate", pir=2 * RATE, pbs=8000,
                  yellow={"action": "set-dscp", "dscp": 12})  # fmt: skip
    set_qos(qnet, {"policer": [pol], "service": [{"name": "u", "policer": "p"}]})
    got = blast(qnet, 3 * RATE)
    green, yellow = rate_of(got, 0), rate_of(got, 12)
    assert abs(green - RATE) < 0.15 * RATE, got
    assert abs(yellow - RATE) < 0.15 * RATE, got  # PIR - CIR, re-marked AF12
    assert set(got) <= {0, 12}, got
    st = qnet.rec.qos_state()["policer"]["p"]
    assert all(st[c]["packets"] > 0 for c in ("green", "yellow", "red")), st


def test_color_aware_keeps_precolor_ipv6(qnet: Any) -> None:
    udp_service(qnet, vip=VIP6, name="u6")
    pol = policer(type="two-rate", pir=2 * RATE, pbs=8000, **{"color-mode": "color-aware"},
                  **{"yellow-dscp": [12], "red-dscp": [14]},
                  yellow={"action": "set-dscp", "dscp": 12})  # fmt: skip
    set_qos(qnet, {"policer": [pol], "service": [{"name": "u6", "policer": "p"}]})
    # Arriving yellow at the CIR (well under PIR): never green, passed yellow.
    got = blast(qnet, RATE / 2, vip=VIP6, dscp=12)
    assert 0 not in got and rate_of(got, 12) > 0.4 * RATE, got
    # Arriving red: dropped whatever the buckets hold.
    got = blast(qnet, RATE / 4, vip=VIP6, dscp=14)
    assert not got, got


def test_interface_and_prefix_policers(qnet: Any) -> None:
    udp_service(qnet)
    ifname = qnet.interfaces[0]  # the LB's client-facing interface
    pol = policer(red={"action": "set-dscp", "dscp": 8})
    set_qos(qnet, {"policer": [pol],
                    "interface": [{"name": ifname, "direction": "ingress", "policer": "p"}]})
    got = blast(qnet, 2 * RATE)
    assert abs(rate_of(got, 0) - RATE) < 0.15 * RATE, got
    assert rate_of(got, 8) > 0.6 * RATE, got  # red, re-marked CS1, not dropped
    # The client's prefix instead: the same rate, red dropped.
    set_qos(qnet, {"policer": [policer()],
                    "client-prefix": [{"prefix": "198.18.0.0/24", "policer": "p"}]})
    got = rate_of(blast(qnet, 2 * RATE))
    assert abs(got - RATE) < 0.15 * RATE, got


def test_egress_interface_policer(qnet: Any) -> None:
    """A policer on the backend-facing interface's egress meters what the balancer sends
    out there (redirected by bpf/lb.c), not what comes in."""
    udp_service(qnet)
    pol = policer(red={"action": "set-dscp", "dscp": 8})
    set_qos(qnet, {"policer": [pol],
                    "interface": [{"name": qnet.interfaces[1], "direction": "egress",
                                   "policer": "p"}]})  # fmt: skip
    assert (qnet.interfaces[1], "egress") in qnet.rec.qos.attached
    got = blast(qnet, 2 * RATE)
    assert abs(rate_of(got, 0) - RATE) < 0.15 * RATE, got
    assert rate_of(got, 8) > 0.6 * RATE, got  # red, re-marked CS1 on the way out
    st = qnet.rec.qos_state()["policer"]["p"]
    assert st["green"]["packets"] > 0 and st["red"]["packets"] > 0, st
    # The client-facing interface's egress: the requests never leave there, nothing metered.
    set_qos(qnet, {"policer": [policer()],
                    "interface": [{"name": qnet.interfaces[0], "direction": "egress",
                                   "policer": "p"}]})  # fmt: skip
    got = rate_of(blast(qnet, 2 * RATE))
    assert got > 1.8 * RATE, got


def test_endpoint_policer(qnet: Any) -> None:
    udp_service(qnet)
    set_qos(qnet, {"policer": [policer()], "endpoint": [
        {"service": "u", "address": backend_addr(1), "port": PORT, "policer": "p"}]})
    got = rate_of(blast(qnet, 2 * RATE))
    assert abs(got - RATE) < 0.15 * RATE, got


# New flows (a socket each), one datagram each with DSCP argv[3]; prints how many got an
# answer from the backend's UDP echo.
FIRST_PACKETS = """
import socket, sys
vip, port, dscp, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
answered = 0
for i in range(n):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, dscp << 2)
    s.settimeout(0.5)
    s.sendto(b"first", (vip, port))
    try:
        answered += s.recv(100) == b"first"
    except socket.timeout:
        pass
    s.close()
print(answered)
"""


def test_endpoint_policer_meters_each_flows_first_packet(qnet: Any) -> None:
    """The endpoint is chosen by the balancer after the QoS program ran: the balancer hands
    a new flow's first packet back to the endpoint's policer (bpf/lib/qos_hook.h). A
    color-aware policer drops what arrives red: each new flow's one datagram is dropped,
    and counted red; arriving unmarked, they pass green."""
    qnet.set(service("e", port=UDP_PORT, proto="udp", backends=(1,), ep_port=UDP_PORT))
    pol = policer(**{"color-mode": "color-aware", "red-dscp": [14]})
    set_qos(qnet, {"policer": [pol], "endpoint": [
        {"service": "e", "address": backend_addr(1), "port": UDP_PORT, "policer": "p"}]})

    def first_packets(dscp: int, n: int = 5) -> int:
        res = qnet.client.run([sys.executable, "-c", FIRST_PACKETS, VIP4, str(UDP_PORT),
                               str(dscp), str(n)], timeout=20)  # fmt: skip
        assert res.returncode == 0, res.stderr
        return int(res.stdout)

    assert first_packets(14) == 0
    st = qnet.rec.qos_state()["policer"]["p"]
    assert st["red"]["packets"] == 5, st  # exactly the five first packets
    assert first_packets(0) == 5
    st = qnet.rec.qos_state()["policer"]["p"]
    assert st["green"]["packets"] >= 5, st
