"""The review's correctness fixes (issue 18 item 7), each through the real program:

- IPv6 NAT keeps a CHECKSUM_COMPLETE skb->csum true (BPF_F_IPV6 for the pseudo-header fix,
  the hop limit reported): the kernel's BPF_PROG_TEST_RUN checks the sum after the run
  (BPF_F_TEST_SKB_CHECKSUM_COMPLETE). Real packets through veth cannot show this: they
  arrive CHECKSUM_PARTIAL or NONE, and a receiver that finds a bad complete sum silently
  sums the packet again.
- Two VIPs sharing an endpoint, one client port (DNAT): the second flow must not take the
  first one's reply entry.
- A REPLY entry whose ORIG entry is gone (LRU eviction, a flow lost half made) is removed
  by the conntrack sweep.
- Round-robin takes its slot with one atomic fetch-add (no two CPUs on one slot).
"""

from __future__ import annotations

import ctypes as ct
import sys
from pathlib import Path
from typing import Any

import pytest
from dpkit import HTTP_PORT, SNAT6, VIP4, VIP6, LbNet, backend_addr, service, wait_for

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

pytestmark = pytest.mark.datapath

CLIENT6 = "2001:db8::1"


def _run(lbnet: LbNet, frame: bytes, ifname: str, flags: int = 0) -> int:
    import pktcost

    with pktcost.in_netns(lbnet.lb.ns):
        first = lbnet.rec.program.entry(frame[12:14] == b"\x86\xdd")  # what TC runs first
        verdict, _ = pktcost.test_run(first.fd, frame, lbnet.lb.ifindex(ifname), flags=flags)
    return verdict


@pytest.mark.parametrize("mode", ["default", "full-nat"])
def test_ipv6_nat_keeps_a_complete_checksum_true(lbnet: LbNet, mode: str) -> None:
    import pktcost
    from pktcost import ACK, SYN, SYNACK, tcp_frame

    complete = pktcost.BPF_F_TEST_SKB_CHECKSUM_COMPLETE
    extra = {"source-nat-address": SNAT6} if mode == "full-nat" else {}
    lbnet.set(service("v6", vip=VIP6, backends=(1,), mode=mode, **extra))
    front, back = lbnet.interfaces[0], lbnet.interfaces[1]
    ok = 7  # TC_ACT_REDIRECT
    # The first packet: NAT, then the FIB and bpf_redirect_neigh (hop limit by store_bytes).
    assert _run(lbnet, tcp_frame(CLIENT6, VIP6, 41000, 80, SYN), front, complete) == ok
    row = wait_for(lambda: lbnet.rec.conntrack("v6"))[0]
    snat, _, sport = row["snat"].rpartition(":")
    ep = backend_addr(1, 6)
    reply = tcp_frame(ep, snat.strip("[]"), HTTP_PORT, int(sport), SYNACK)
    assert _run(lbnet, reply, back, complete) == ok
    data = tcp_frame(CLIENT6, VIP6, 41000, 80, ACK, b"x" * 100)
    # Then the cached next hop: NAT, hop limit and MACs written in one pass.
    for _ in range(3):
        assert _run(lbnet, data, front, complete) == ok
        back_data = tcp_frame(ep, snat.strip("[]"), HTTP_PORT, int(sport), ACK, b"y" * 100)
        assert _run(lbnet, back_data, back, complete) == ok


def _reuse_port_client(vip: str, port: int, local_port: int, second_vip: str) -> str:
    """A client script: one connection from ``local_port`` to vip, then a second one from
    the same port to second_vip (allowed to fail), then the first one used again."""
    return f"""
import socket
def conn(dst, timeout):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("198.18.0.1", {local_port}))
    s.settimeout(timeout)
    s.connect((dst, {port}))
    return s
a = conn({vip!r}, 3)
a.sendall(b"GET / HTTP/1.0\\r\\nHost: x\\r\\n\\r\\n")
try:
    b = conn({second_vip!r}, 1.5)
    print("second: connected")
except OSError as exc:
    print("second:", type(exc).__name__)
data = b""
while True:
    chunk = a.recv(4096)
    if not chunk:
        break
    data += chunk
print("first:", data.split(b"\\r\\n\\r\\n", 1)[-1].decode())
"""


def test_two_vips_sharing_an_endpoint_keep_their_own_reply_entries(lbnet: LbNet) -> None:
    """Client port P to VIP A (endpoint b1), then P to VIP B (same endpoint): b1 would see
    one tuple for both. The second flow is refused; the first keeps its replies (before,
    the second overwrote its reply entry and the first one's answer came back as VIP B)."""
    vip_b = "198.19.0.11"
    lbnet.set(service("a", backends=(1,)), service("b", vip=vip_b, backends=(1,)))
    res = lbnet.client.run(["python3", "-c", _reuse_port_client(VIP4, 80, 45000, vip_b)],
                           timeout=15)  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "first: b1" in res.stdout, res.stdout
    assert "second: connected" not in res.stdout, res.stdout
    rows = lbnet.rec.conntrack("a")
    assert [r["client"] for r in rows] == ["198.18.0.1:45000"]


def test_an_orphan_reply_entry_is_swept(lbnet: LbNet, monkeypatch: pytest.MonkeyPatch) -> None:
    """A flow whose ORIG entry is gone (what the LRU or a lost creation race leaves): its
    REPLY entry must not stay forever."""
    from appliance.datapath import conntrack

    lbnet.set(service("u", proto="udp", port=5353, ep_port=5353, backends=(1,)))
    lbnet.udp_from_ports(VIP4, 5353, [46001, 46002])
    table = lbnet.rec.program.table("ct4_map")  # IPv4 flows (bpf/lib/ct_tables.h)
    entries = {bytes(k): v for k, v in table.items()}
    assert len(entries) == 4
    orig_46001 = [k for k, v in entries.items()
                  if v.dir == 0 and v.t.client_port == socket_htons(46001)]  # fmt: skip
    assert len(orig_46001) == 1
    del table[table.Key.from_buffer_copy(orig_46001[0])]
    assert len(list(table.items())) == 3
    driver = lbnet.rec.driver
    assert driver is not None
    driver.gc()  # now: nothing is idle yet
    assert len(list(table.items())) == 3
    later = conntrack.monotonic_ns() + 3600 * 10**9
    monkeypatch.setattr(conntrack, "monotonic_ns", lambda: later)
    driver.gc()  # an hour on: the orphan goes, and the idle flow with both entries too
    assert list(table.items()) == []
    assert driver.ct.orphans_removed == 1


def socket_htons(port: int) -> int:
    import socket

    return socket.htons(port)


def test_round_robin_takes_its_slot_with_one_atomic_fetch_add(lb_program: Any) -> None:
    """BPF_ATOMIC | BPF_FETCH (opcode 0xdb, imm BPF_ADD | BPF_FETCH) on the rr counter: the
    slot comes from the add itself, so two CPUs never read the same counter value."""
    insns = lb_program.bpf.dump_func(b"sluice_lb")  # new flows: lb.c start_flow
    fetch_adds = [i for i in range(0, len(insns), 8) if insns[i] == 0xDB
                  and int.from_bytes(insns[i + 4 : i + 8], "little") == 0x01]  # fmt: skip
    assert fetch_adds
    table = lb_program.table("rr_map")
    assert ct.sizeof(table.Leaf) == 8
