"""Functional test of the per-packet meter (bench/pktcost.py, and the counter
bench/bpfcount.py it reports with): it runs on the loaded program, programs a service
through the reconciler, and returns sane numbers.

No timing asserts (the machine is shared): only that every figure exists, is positive and
bounded, and that the balancer translated and forwarded the packets it was timed on. The
full benchmark (bench/run.py, bench/pktcost.py) is not part of the suite.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
from dpkit import LbNet

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

pytestmark = pytest.mark.datapath

TINY = {"cold": 50, "warm_repeat": 200, "warm_calls": 2,
        "new_cold": 50, "new_repeat": 100, "new_calls": 2}  # fmt: skip


def test_pktcost_meter(lbnet: LbNet, lb_program: Any, xdp_program: Any) -> None:
    import pktcost

    pktcost.prepare(lbnet, endpoints=8)
    res = pktcost.measure(lbnet, lb_program, TINY, modes=["DNAT"],
                          algorithms=["round-robin"], sizes=(8,), xdp=xdp_program)  # fmt: skip
    assert 0 < res["floor_ns"] < 100_000
    assert all(0 < h < 100_000 for h in res["harness_ns"].values()), res["harness_ns"]
    assert [(e["mode"], e["version"]) for e in res["established"]] == [("DNAT", 4), ("DNAT", 6)]
    for e in res["established"]:
        assert e["state"] == "established", e
        for direction in ("orig", "reply"):
            for meter in ("cold", "warm"):
                fig = e[direction][meter]
                assert fig["verdict"] == pktcost.TC_ACT_REDIRECT, (e["version"], direction, fig)
                assert 0 < fig["ns"] < 100_000 and fig["net"] >= 0, fig
                # The same frames through the XDP fast path: forwarded by it, not passed.
                x = e["xdp"][direction][meter]
                assert x["verdict"] == pktcost.XDP_REDIRECT, (e["version"], direction, x)
                assert 0 < x["ns"] < 100_000 and x["net"] >= 0, x
            # The same packet counted (bench/bpfcount.py): the path the kernel took.
            c = e[direction]["count"]
            assert c["verdict"] == pktcost.TC_ACT_REDIRECT and c["tail_call"] is None, c
            assert 100 < c["insns"] < 5000 and c["helpers"].get("redirect") == 1, c
    assert "| DNAT | client→backend | IPv4 |" in pktcost.xdp_table(res)
    # What the verifier walked for the balancer (bench/pktcount.py prints it): its budget.
    import bpfcount

    lb_program.need("ipv6")
    for name in bpfcount.BALANCERS:  # IPv4's and IPv6's (bpf/lb.c)
        assert 10_000 < bpfcount.verified_insns(lb_program.function(name).fd) <= 1_000_000
    [new] = res["new"]
    assert new["warm"]["verdict"] == new["cold"]["verdict"] == pktcost.TC_ACT_REDIRECT, new
    assert 0 < new["cold"]["ns"] < 100_000 and 0 < new["warm"]["ns"] < 100_000, new
    # warm new flows are new: every run of the last call opened its own flow
    assert new["flows_last_call"] == TINY["new_repeat"], new
    assert lbnet.rec.conntrack() == [] and not any(s.startswith("pktcost") for s in lbnet.services)
    text = pktcost.tables(res) + pktcost.aims_table(pktcost.aims(res))
    assert "| DNAT | client→backend |" in text and "| round-robin |" in text
    # the A/B helpers (--baseline): a result against itself is no worse
    rows = pktcost.compare(pktcost.merge([res, res]), res)
    assert rows and all(r["ratio"] in (1.0, None) for r in rows), rows
    assert pktcost.no_worse_aim(rows, "itself")["met"] is True


def test_epnh_pair_meter(lbnet: LbNet, lb_program: Any) -> None:
    """bench/epnh_pair.py: the per-endpoint next hop switched off and on between calls, on
    the shared program (no timing asserts), and left on."""
    import epnh_pair
    import pktcost

    pktcost.prepare(lbnet, endpoints=8)
    [r] = epnh_pair.measure(lbnet, lb_program, ["round-robin"], [8], pairs=2, repeat=64)
    assert r["algorithm"] == "round-robin" and r["endpoints"] == 8, r
    assert 0 < r["on"] < 100_000 and 0 < r["off"] < 100_000 and r["p10"] <= r["p90"], r
    assert lbnet.rec.driver.endpoint_next_hops()
    assert lbnet.rec.conntrack() == []
