"""Capacity: the selection map holds the advertised scale (10,000 services x 32 endpoints,
Maglev included); here a few hundred Maglev services, more than the one-slot-per-entry
map held (~255), with a health change on the last one applied and checked with traffic.
bench/sel_scale.py programs the whole 10,000 and measures the pinned memory."""

from __future__ import annotations

import time

import pytest
from dpkit import VIP4, LbNet, backend_addr, service

from appliance.datapath import layout as L
from appliance.datapath.tables import maglev_size

pytestmark = pytest.mark.datapath

FILLER = 300  # Maglev services of 32 endpoints before the one that carries traffic


def test_hundreds_of_maglev_services_fit_and_a_health_change_still_applies(
    lbnet: LbNet,
) -> None:
    eps = [{"address": f"198.18.200.{i + 1}", "port": 8080, "weight": 1,
            "admin-state": "enabled"} for i in range(32)]  # fmt: skip
    fillers = [dict(service(f"m{i}", vip="198.19.1.1", port=1000 + i, algorithm="maglev"),
                    endpoint=eps) for i in range(FILLER)]  # fmt: skip
    started = time.monotonic()
    lbnet.set(*fillers)  # the kit asserts no service failed to program
    seconds = time.monotonic() - started
    live = service("live", algorithm="maglev")  # 3 real backends: 4,027 slots, 4 pages
    lbnet.set(live)
    fill = lbnet.rec.status()["maps"]["sel_map"]
    assert fill["entries"] == FILLER * L.sel_pages(maglev_size(32)) + L.sel_pages(4027)
    assert fill["capacity"] == L.MAX_SEL_PAGES
    answered = {lbnet.curl(VIP4, 80, local_port=42000 + i) for i in range(12)}
    assert answered == {"b1", "b2", "b3"}
    # A dead backend leaves the table: only possible if the new generation fits the map.
    lbnet.rec.set_endpoint_health("live", backend_addr(2), 8080, False)
    assert lbnet.rec.errors == {}
    answered = {lbnet.curl(VIP4, 80, local_port=43000 + i) for i in range(12)}
    assert answered == {"b1", "b3"}
    assert seconds < 60, seconds  # ~15 ms a service here; 10,000 take minutes (see bench)
