"""What a daemon restart must keep: a new reconciler over the same pinned maps (as a
restarted daemon gets them) must leave traffic exactly as the old one programmed it."""

from __future__ import annotations

import pytest
from dpkit import VIP4, VIP6, LbNet, service

pytestmark = pytest.mark.datapath


def test_ipv6_allowed_prefixes_of_32_bits_or_less_survive_a_restart(lbnet: LbNet) -> None:
    # The allow key holds no family: a /32 (or shorter) IPv6 prefix has address words 1..3
    # zero and looks like an IPv4 prefix. Read back as IPv4, it was "stale" and deleted,
    # and the service answered no new flow after the restart.
    acl = [
        service("v6-32", vip=VIP6, **{"allowed-source": ["2001:db8::/32"]}),
        service("v6-16", vip=VIP6, port=81, **{"allowed-source": ["2001::/16"]}),
        service("v6-64", vip=VIP6, port=82, **{"allowed-source": ["2001:db8::/64"]}),
        service("v4-24", **{"allowed-source": ["198.18.0.0/24"]}),
    ]
    lbnet.set(*acl)
    before = [lbnet.get(VIP6, port) for port in (80, 81, 82) for _ in range(2)]
    assert before == ["b1", "b2"] * 3
    assert lbnet.get(VIP4) == "b1"
    lbnet.restart(*acl)
    assert lbnet.rec.errors == {}
    after = [lbnet.get(VIP6, port) for port in (80, 81, 82) for _ in range(2)]
    assert after == ["b3", "b1"] * 3  # answered, round-robin position kept
    assert lbnet.get(VIP4) == "b2"
    assert sum(1 for _ in lbnet.rec.program.table("allow_map")) == 4
