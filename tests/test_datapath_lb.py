"""Real packets through the TC load balancer: client ns -> lb ns (bpf/lb.c) -> backends."""

from __future__ import annotations

import pytest
from dpkit import VIP4, VIP6, LbNet, service

pytestmark = pytest.mark.datapath


def test_ipv4_tcp_round_robin_exact_order(lbnet: LbNet) -> None:
    lbnet.set(service("web4"))
    got = [lbnet.get(VIP4) for _ in range(6)]
    assert got == ["b1", "b2", "b3", "b1", "b2", "b3"]
    st = lbnet.rec.service_state("web4")
    assert st["total-sessions"] == 6 and st["packets"] > 6 * 4
    rows = lbnet.rec.conntrack("web4")
    assert len(rows) == 6 and {r["vip"] for r in rows} == {f"{VIP4}:80"}


def test_ipv6_tcp_udp_and_ping(lbnet: LbNet) -> None:
    lbnet.set(
        service("web6", vip=VIP6),
        service("udp6", vip=VIP6, port=53, proto="udp", ep_port=5353),
        service("ping6", vip=VIP6, proto="icmp", port=None),
    )
    assert [lbnet.get(VIP6) for _ in range(3)] == ["b1", "b2", "b3"]
    assert lbnet.client.udp_request(VIP6, 53, b"hello6") == b"hello6"
    assert lbnet.client.ping(VIP6, count=3)


def test_ipv4_udp_echo_and_ping(lbnet: LbNet) -> None:
    lbnet.set(
        service("udp4", port=53, proto="udp", ep_port=5353),
        service("ping4", proto="icmp", port=None),
    )
    for i in range(3):
        assert lbnet.client.udp_request(VIP4, 53, b"hi %d" % i) == b"hi %d" % i
    assert lbnet.client.ping(VIP4, count=3)
    rows = lbnet.rec.conntrack("ping4")
    assert rows and rows[0]["protocol"] == "icmp"


def test_weighted_80_20(lbnet: LbNet) -> None:
    # 50 connections; smooth weighted round-robin gives exactly 40/10, we allow +-5.
    svc = service("w", backends=(1, 2), algorithm="weighted")
    svc["endpoint"][0]["weight"], svc["endpoint"][1]["weight"] = 80, 20
    lbnet.set(svc)
    got = [lbnet.get(VIP4) for _ in range(50)]
    assert 35 <= got.count("b1") <= 45 and got.count("b1") + got.count("b2") == 50


def test_hash_keeps_a_flow_tuple_on_one_endpoint(lbnet: LbNet) -> None:
    lbnet.set(service("h", port=53, proto="udp", ep_port=5353, algorithm="hash"))
    ports = list(range(41000, 41012))
    lbnet.udp_from_ports(VIP4, 53, ports)
    first = lbnet.endpoint_by_client_port("h")
    lbnet.rec.driver.flush_conntrack(lambda e: True)  # forget the flows: only the hash is left
    lbnet.udp_from_ports(VIP4, 53, ports)
    assert lbnet.endpoint_by_client_port("h") == first
    assert sorted(first) == ports
    assert len(set(first.values())) >= 2  # and it does spread


def test_deleted_service_stops_answering(lbnet: LbNet) -> None:
    lbnet.set(service("gone"))
    assert lbnet.get(VIP4) == "b1"
    lbnet.set(remove=("gone",))
    with pytest.raises(RuntimeError):
        lbnet.get(VIP4, timeout=1)
    assert lbnet.rec.conntrack() == []
    assert sum(1 for _ in lbnet.rec.program.table("ep_map")) == 0


def test_traffic_matching_no_service_is_untouched(lbnet: LbNet) -> None:
    lbnet.set(service("web"))
    assert lbnet.client.ping("198.18.0.254")          # the LB itself
    assert lbnet.get("198.18.11.1", port=8080) == "b1"  # routed through the LB, not NATed
    assert lbnet.get("2001:db8:12::1", port=8080) == "b2"
    with pytest.raises(RuntimeError):
        lbnet.get(VIP4, port=81, timeout=1)            # same VIP, other port: no service
    assert [r["vip"] for r in lbnet.rec.conntrack()] == []


def test_restart_rebuild_is_idempotent_and_drops_what_config_lost(lbnet: LbNet) -> None:
    from appliance.datapath.reconciler import DatapathReconciler

    keep, drop = service("keep"), service("drop", port=81)
    lbnet.set(keep, drop)
    assert [lbnet.get(VIP4) for _ in range(2)] == ["b1", "b2"]
    ids = {k.value: v.svc_id for k, v in lbnet.rec.program.table("ep_map").items()}
    flows = len(lbnet.rec.conntrack("keep"))
    # A "restarted daemon": new reconciler over the same pinned maps, "drop" gone meanwhile.
    dp = {"interface": [{"name": i} for i in lbnet.interfaces]}
    rec = DatapathReconciler(lbnet.rec.pin_root, netns=lbnet.lb.ns, program=lbnet.rec.program,
                             housekeeping=False)  # fmt: skip
    rec.start({"sluice:datapath": dp, "sluice:load-balancer": {"service": [keep]}})
    lbnet.rec = rec
    assert rec.errors == {}
    assert len(rec.conntrack("keep")) == flows  # conntrack untouched
    now = {k.value: v.svc_id for k, v in rec.program.table("ep_map").items()}
    assert now == {k: v for k, v in ids.items() if v == rec.driver.services["keep"].id}
    assert lbnet.get(VIP4) == "b3"  # round-robin position kept, too
    with pytest.raises(RuntimeError):
        lbnet.get(VIP4, port=81, timeout=1)


REFUSED = """
import socket, sys
s = socket.socket(socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(2)
s.connect((sys.argv[1], 54))
s.send(b"anyone?")
try:
    s.recv(100)
except ConnectionRefusedError:
    print("refused")
except TimeoutError:
    print("timeout")
"""


@pytest.mark.parametrize("mode", ["default", "full-nat"])
def test_icmp_errors_are_translated_back_to_the_client(lbnet: LbNet, mode: str) -> None:
    # No server on 5999: the endpoint answers "port unreachable" quoting the translated
    # datagram; only if the balancer translates the quote does the client's connected
    # socket see ECONNREFUSED (else it times out).
    from dpkit import SNAT4, SNAT6

    extra4 = {"mode": mode, "snat-address": SNAT4} if mode == "full-nat" else {}
    extra6 = {"mode": mode, "snat-address": SNAT6} if mode == "full-nat" else {}
    lbnet.set(service("u4", port=54, proto="udp", ep_port=5999, **extra4),
              service("u6", vip=VIP6, port=54, proto="udp", ep_port=5999, **extra6))  # fmt: skip
    for vip in (VIP4, VIP6):
        res = lbnet.client.run(["python3", "-c", REFUSED, vip], timeout=10)
        assert res.stdout.strip() == "refused", (vip, res.stdout, res.stderr)
