"""Smoke test of the benchmark code: the BPF_PROG_TEST_RUN per-packet cost measurement.

The full side-by-side benchmark (bench/run.py) is not part of the test suite; this only
checks that the cost measurement runs on the loaded program and gives sane numbers.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
from dpkit import VIP4, LbNet, service

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

pytestmark = pytest.mark.datapath


def test_prog_test_run_cost(lbnet: LbNet, lb_program: Any) -> None:
    import dpcost

    def set_service(algo: str, vip: str) -> None:
        lbnet.set(service("cost", vip=vip, algorithm=algo))

    res = dpcost.measure(
        lb_program.fn.fd, lbnet.lb.ns, lbnet.lb.ifindex(lbnet.interfaces[0]), set_service,
        lambda: lb_program.table("ct_map").items_delete_batch(), "198.18.0.1", VIP4,
        algorithms=["maglev"], packets=200,
    )  # fmt: skip
    for kind in ("established", "new"):
        cost = res["maglev"][kind]
        assert cost["samples"] == 200
        assert 0 < cost["median_ns"] < 100_000, cost
        assert cost["verdict"] == dpcost.TC_ACT_REDIRECT, cost  # translated and forwarded
    assert 0 <= res["floor_ns"] < res["maglev"]["new"]["median_ns"]
