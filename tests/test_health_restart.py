"""Health survives a daemon restart: an endpoint known dead gets no new flow right after it.

A real `sluice run --datapath on` in the LB namespace (tests/dpkit.py's lb_daemon), two
backends, b2's server dead and b2 down. The daemon stops and starts again on the same
database and pinned maps; as soon as it answers, requests through the VIP must all reach
b1. The probes are made slow (interval 5 s, retries 2) so that the prober alone could not
have found b2 dead again in that time: only health seeded from the pinned state passes.

Needs DatapathReconciler.pinned_health() (appliance/datapath/reconciler.py), which
appliance/health.py reads by name.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from daemonkit import Daemon
from dpkit import HTTP_PORT, VIP4, LbNet, backend_addr, probed_web, wait_for

pytestmark = [pytest.mark.datapath, pytest.mark.usefixtures("prober_mode")]



INTERVAL, TIMEOUT, RETRIES = 5, 1, 2





def test_an_endpoint_known_dead_gets_no_new_flow_after_a_restart(
    lb_daemon: tuple[LbNet, Daemon], tmp_path: Path
) -> None:
    from appliance.datapath.reconciler import DatapathReconciler

    # HealthWiring looks the method up by name and seeds nothing without it: a rename must
    # fail here, not pass silently.
    assert hasattr(DatapathReconciler, "pinned_health")
    net, d = lb_daemon
    d.apply({"datapath": {"interface": [{"name": i} for i in net.interfaces]}})
    net.backends[0].start_http_server(HTTP_PORT)  # b2 runs nothing: dead from the start
    web = probed_web("tcp", (1, 2), INTERVAL, TIMEOUT, RETRIES)
    d.apply({"load-balancer": {"service": [web]}})
    wait_for(lambda: d.health("web", backend_addr(2)) == "down", timeout=INTERVAL * 4, step=0.2)
    assert [net.get(VIP4) for _ in range(4)] == ["b1"] * 4

    assert d.stop() == 0
    d.start(timeout=60)
    restarted = time.monotonic()
    # Right away, before the prober could have probed b2 twice: no new flow to it.
    answers = [net.get(VIP4) for _ in range(6)]
    elapsed = time.monotonic() - restarted
    assert answers == ["b1"] * 6, answers
    assert elapsed < INTERVAL, f"too slow to prove anything: {elapsed:.1f} s"
    assert d.health("web", backend_addr(2)) == "down"

    # Still probed: b2 comes back by the usual rules.
    net.backends[1].start_http_server(HTTP_PORT)
    wait_for(lambda: d.health("web", backend_addr(2)) == "up", timeout=INTERVAL * 3, step=0.2)
    assert sorted(net.get(VIP4) for _ in range(4)) == ["b1", "b1", "b2", "b2"]
