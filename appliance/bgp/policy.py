"""Which vips are announced to which neighbour, with which attributes: a pure function.

A vip is announced while at least one service on it has `advertise` true, is enabled, has
an enabled endpoint and is not known down (no healthy endpoint), and while the datapath is
up. Several services may share a vip (ports 80 and 443): one serving is enough, since
withdrawing the vip would cut the others off too.

HA roles (keepalived on a pair): the master announces with LOCAL_PREF 5000 / MED 10, the
backup with 100 / 20, so routers prefer the master without splitting traffic (loxilb's
values). LOCAL_PREF only travels on iBGP sessions; on eBGP the MED decides (between paths
from the same neighbouring AS).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection, Mapping
from typing import Any

from appliance.bgp.model import Neighbor, Route, SpeakerConfig

ROLES = ("master", "backup")
# role -> (LOCAL_PREF, MED)
ROLE_ATTRIBUTES: dict[str, tuple[int, int]] = {"master": (5000, 10), "backup": (100, 20)}


def announced_vips(
    services: Mapping[str, Mapping[str, Any]], down: Collection[str], datapath_up: bool
) -> list[str]:
    """The vips to announce (canonical text), sorted: O(services)."""
    if not datapath_up:
        return []
    vips: set[str] = set()
    for name, svc in services.items():
        if not svc.get("advertise", True) or svc.get("admin-state", "enabled") != "enabled":
            continue
        if name in down:
            continue
        if not any(ep.get("admin-state", "enabled") == "enabled"
                   for ep in svc.get("endpoint", [])):  # fmt: skip
            continue
        vips.add(str(ipaddress.ip_address(svc["vip"])))
    return sorted(vips, key=lambda v: (":" in v, v))


def prefix_of(vip: str) -> str:
    return f"{vip}/{128 if ':' in vip else 32}"


def route_for(neighbor: Neighbor, vip: str, local_as: int, role: str | None) -> Route:
    exp = neighbor.export
    local_pref, med = None, exp.med
    if role in ROLE_ATTRIBUTES:
        local_pref, med = ROLE_ATTRIBUTES[role]
    as_path = (local_as,) * (1 + exp.as_path_prepend) if exp.as_path_prepend else ()
    return Route(
        prefix=prefix_of(vip),
        next_hop=None if exp.next_hop_self else exp.next_hop,
        med=med,
        local_pref=local_pref,
        communities=exp.communities,
        as_path=as_path,
    )


def routes(
    config: SpeakerConfig | None, vips: list[str], role: str | None = None
) -> dict[str, dict[str, Route]]:
    """neighbour address -> prefix -> Route: each vip to every neighbour of its family."""
    if config is None:
        return {}
    out: dict[str, dict[str, Route]] = {}
    for neighbor in config.neighbors:
        family = [v for v in vips if (":" in v) == (neighbor.version == 6)]
        out[neighbor.address] = {
            prefix_of(v): route_for(neighbor, v, config.local_as, role) for v in family
        }
    return out
