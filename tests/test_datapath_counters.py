"""Endpoint counters (bpf/lib/stats.h): ids below EP_STATS_ARRAY count in a per-CPU array
(no hash lookup per packet), the others in the per-CPU hash; both read back the same way,
a reused id counts from zero, and a restart over counters an older program kept in the
hash moves them to the array. Real UDP flows through namespaces."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
from dpkit import VIP4, LbNet, backend_addr, service

from appliance.datapath import layout as L

pytestmark = pytest.mark.datapath

EP = (backend_addr(1), 5353)
BENCH = Path(__file__).resolve().parent.parent / "bench"


def _udp(name: str, port: int) -> dict:
    return service(name, port=port, proto="udp", ep_port=EP[1], backends=(1,))


def _ep_id(lbnet: LbNet, name: str) -> int:
    return lbnet.rec.driver.services[name].eps[EP]


def _flows_match_counters(lbnet: LbNet, name: str, port: int, first: int, n: int) -> None:
    """n one-datagram flows to ``name``: its endpoint's counters are exactly what its flows'
    own entries counted (every datagram and its echo)."""
    lbnet.udp_from_ports(VIP4, port, list(range(first, first + n)))
    st = lbnet.rec.endpoint_state(name, *EP)
    rows = lbnet.rec.conntrack(name)
    assert len(rows) == n
    assert st["packets"] == 2 * n == sum(sum(r["packets"]) for r in rows)
    assert st["bytes"] == sum(sum(r["bytes"]) for r in rows) > 0
    assert st["total-sessions"] == n


def test_endpoint_counters_in_the_array_in_the_hash_and_reused(lbnet: LbNet) -> None:
    drv = lbnet.rec.driver
    lbnet.set(_udp("low", 53))
    low = _ep_id(lbnet, "low")
    assert low < L.EP_STATS_ARRAY
    _flows_match_counters(lbnet, "low", 53, 42000, 5)

    # An id from EP_STATS_ARRAY up (a table with 65,535 endpoints already): the hash.
    drv._low_free.clear()
    drv._next_ep = L.EP_STATS_ARRAY + 7
    lbnet.set(_udp("high", 54))
    assert _ep_id(lbnet, "high") == L.EP_STATS_ARRAY + 7
    _flows_match_counters(lbnet, "high", 54, 43000, 4)

    # The freed low id is given out again first, and counts from zero.
    lbnet.set(remove=("low",))
    lbnet.set(_udp("again", 55))
    assert _ep_id(lbnet, "again") == low
    _flows_match_counters(lbnet, "again", 55, 44000, 3)


def test_restart_moves_counters_an_older_program_hashed_into_the_array(lbnet: LbNet) -> None:
    svc = _udp("old", 53)
    lbnet.set(svc)
    ep_id = _ep_id(lbnet, "old")
    st = lbnet.rec.program.table("ep_stats")  # where an older program counted every id
    v = st.Leaf()
    v[0].packets, v[0].bytes, v[0].sessions = 11, 1100, 3
    st[st.Key(ep_id)] = v
    arr = lbnet.rec.program.table("ep_stats_arr")
    arr[arr.Key(ep_id)] = arr.Leaf()

    lbnet.restart(svc)
    got = lbnet.rec.endpoint_state("old", *EP)
    assert (got["packets"], got["bytes"], got["total-sessions"]) == (11, 1100, 3)
    assert st.get(st.Key(ep_id)) is None
    lbnet.udp_from_ports(VIP4, 53, [45000])
    assert lbnet.rec.endpoint_state("old", *EP)["packets"] == 13


def test_an_established_packet_makes_one_hashed_lookup(lbnet: LbNet, lb_program: Any) -> None:
    """The established path's only hashed map lookup is the conntrack's: the counters are
    arrays (counted by bench/bpfcount.py on the loaded program)."""
    sys.path.insert(0, str(BENCH))
    import pktcost

    pktcost.prepare(lbnet, endpoints=8)
    m = pktcost.Meter(lbnet, lb_program, {"cold": 1, "warm_repeat": 10, "warm_calls": 1})
    try:
        for mode in ("DNAT", "DSR"):
            e = m.established(mode, 4)
            c = e["orig"]["count"]
            assert c["verdict"] == pktcost.TC_ACT_REDIRECT, c
            assert c["helpers"].get("map_lookup_elem") == 1, c  # ct_map; the rest inlined
    finally:
        m.close()
