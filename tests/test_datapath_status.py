"""A service the datapath failed to program is visible as state, not only in the log."""

from __future__ import annotations

import pytest
from dpkit import VIP4, LbNet, service

from appliance.config import Diff

pytestmark = pytest.mark.datapath


def test_a_programming_failure_shows_in_service_state_and_status(lbnet: LbNet) -> None:
    # The config refuses a VIP that is no address; a reconciler handed one anyway (no
    # validator, or a config from an older release) fails to program it.
    lbnet.set(service("web"))
    bad = service("s", vip="198.19.0.300", port=81)
    lbnet.rec.apply(Diff(services_added={"s": bad}))
    state = lbnet.rec.service_state("s")
    assert state["oper-status"] == "down" and state["endpoints-up"] == 0
    prog = state["programming"]
    assert prog["status"] == "failed" and "198.19.0.300" in prog["error"] and prog["attempts"] == 1
    lbnet.rec.apply(Diff())  # a later commit retries: still failing, counted
    assert lbnet.rec.service_state("s")["programming"]["attempts"] == 2
    assert lbnet.rec.status()["service-errors"]["s"]["error"] == prog["error"]
    assert lbnet.rec.service_state("web")["programming"] == {"status": "programmed"}
    # Fixed by the next commit: programmed, serving, the error gone.
    lbnet.rec.apply(Diff(services_changed={"s": (bad, service("s", port=81))}))
    assert lbnet.rec.service_state("s")["programming"] == {"status": "programmed"}
    assert lbnet.rec.status()["service-errors"] == {}
    assert lbnet.get(VIP4, port=81) == "b1"
    assert lbnet.rec.service_state("nope") is None
