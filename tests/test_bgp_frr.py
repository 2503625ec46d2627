"""The README's FRR peer, run: two appliances (real `sluice run`, datapath off: only BGP
matters here) peer over IPv4 and IPv6 with FRR's bgpd (Debian `frr`, configured as the
README shows: `no bgp ebgp-requires-policy`, `maximum-paths 4`):

- all four sessions Established in FRR's summary;
- FRR's BGP table holds each vip with two paths, one per appliance, both used (multipath),
  with the next hops of the appliances;
- HA roles: the master's path (MED 10) is FRR's only best path, the backup's (MED 20) is
  not used;
- roles off again: ECMP again; the service deleted on one appliance: that appliance's path
  goes, the other's stays (and the other vip keeps both).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import netkit as kit
import pytest
from bgpkit import Frr, appliance_peers, bgp_section, lb_addr, require_frr, router_addr, wait
from daemonkit import Daemon

pytestmark = pytest.mark.slow

VIP4, VIP6 = "198.19.0.10", "2001:db8:ff::10"


def _services() -> list[dict[str, Any]]:
    # No health probe: health unknown counts as up, so the vips are announced at once.
    return [{"name": "web", "vip": VIP4, "port": 80,
             "endpoint": [{"address": "198.18.11.1", "port": 8080}]},
            {"name": "web6", "vip": VIP6, "port": 80,
             "endpoint": [{"address": "2001:db8:11::1", "port": 8080}]}]  # fmt: skip


def test_two_appliances_peer_with_frr(netkit: kit.Topology, tmp_path: Path) -> None:
    require_frr()
    router = netkit.host("rtr")
    lbs = []
    for n in (1, 2):
        lb = netkit.host(f"lb{n}")
        netkit.link(router, lb, [f"{router_addr(n)}/24", f"{router_addr(n, 6)}/64"],
                    [f"{lb_addr(n)}/24", f"{lb_addr(n, 6)}/64"])  # fmt: skip
        lbs.append(lb)
    frr = Frr(router, appliance_peers(1, 2))
    daemons = [Daemon(tmp_path / f"lb{n}", netns=lbs[n - 1].ns) for n in (1, 2)]
    try:
        for n, d in enumerate(daemons, start=1):
            d.workdir.mkdir()
            d.start(timeout=60)
            d.apply({"bgp": bgp_section(n), "load-balancer": {"service": _services()}})
        wait(lambda: frr.sessions() == dict.fromkeys(
            [lb_addr(1), lb_addr(2), lb_addr(1, 6), lb_addr(2, 6)], "Established"),
             60, "four sessions Established in FRR")  # fmt: skip

        def hops(prefix: str, **want: bool) -> list[str]:
            return [p["next-hop"] for p in frr.paths(prefix)
                    if all(p[k] == v for k, v in want.items())]  # fmt: skip

        # ECMP: both appliances' paths in use (one best, the other multipath beside it).
        for prefix, version in ((f"{VIP4}/32", 4), (f"{VIP6}/128", 6)):
            both = sorted([lb_addr(1, version), lb_addr(2, version)])
            wait(lambda p=prefix, b=both: hops(p, multipath=True) == b, 30,
                 f"{prefix}: two multipaths")  # fmt: skip

        # HA roles: only the master's path is used (MED 10 against 20).
        assert daemons[0].cli("bgp", "role", "backup").returncode == 0
        assert daemons[1].cli("bgp", "role", "master").returncode == 0
        # (FRR flags paths multipath only while more than one is used.)
        wait(lambda: hops(f"{VIP4}/32", best=True) == [lb_addr(2)]
             and hops(f"{VIP4}/32", multipath=True) in ([], [lb_addr(2)]), 30,
             "only lb2's path used")  # fmt: skip
        assert {p["next-hop"]: p["med"] for p in frr.paths(f"{VIP4}/32")} == {
            lb_addr(1): 20, lb_addr(2): 10}

        for d in daemons:
            assert d.cli("bgp", "role", "none").returncode == 0
        wait(lambda: hops(f"{VIP4}/32", multipath=True) == [lb_addr(1), lb_addr(2)], 30,
             "ECMP again")  # fmt: skip

        # The service deleted on lb1: its paths go, lb2's stay.
        assert daemons[0].cli("lb", "delete", "web").returncode == 0
        wait(lambda: hops(f"{VIP4}/32") == [lb_addr(2)], 30, "lb1's path withdrawn")
        assert hops(f"{VIP6}/128", multipath=True) == [lb_addr(1, 6), lb_addr(2, 6)]
    finally:
        for d in daemons:
            d.stop()
