"""Which selection algorithm a service runs: its own, or the cluster default.

A service that sets `algorithm` runs it. One that does not runs the default, which
depends on /bgp: with a BGP neighbour configured the appliance is (or may be) one of
several behind a router's ECMP, and a flow the router moves to another appliance must
reach the same endpoint there, so the default is Maglev (the same table on every node for
the same config, see appliance/datapath/tables.py). Without BGP the default is
round-robin. The YANG leaf therefore has no `default` statement; every reader that shows
or programs the algorithm asks here.
"""

from __future__ import annotations

from typing import Any

from appliance.config.paths import BGP

STANDALONE_DEFAULT = "round-robin"
CLUSTER_DEFAULT = "maglev"


def default_algorithm(bgp_section: dict[str, Any] | None) -> str:
    """The algorithm of services that set none, given the (effective) /bgp section."""
    return CLUSTER_DEFAULT if (bgp_section or {}).get("neighbor") else STANDALONE_DEFAULT


def default_for_doc(doc: dict[str, Any]) -> str:
    """`default_algorithm` of a whole configuration document."""
    return default_algorithm(doc.get(BGP))


def service_algorithm(svc: dict[str, Any], default: str = STANDALONE_DEFAULT) -> str:
    """The algorithm a service runs."""
    return svc.get("algorithm") or default
