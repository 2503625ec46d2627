"""What the speaker process (`sluice bgp-speaker`, appliance/bgp/child.py) changes in
ExaBGP so that 10,000 vips go out in seconds. Applied in that process only, before
ExaBGP starts; the daemon never imports ExaBGP.

Measured with bench/bgp_speaker.py (10,000 /32s to BIRD, 1,000 prefixes a command):
two thirds of ExaBGP's time went into `Neighbor.remove_self`, which deep-copies every
route it is given (its NLRI, and the attribute set that all the prefixes of one
`announce attributes ... nlri ...` command share: 2 million `deepcopy` calls for 30,000
routes) before putting it in the neighbour's outgoing RIB. The copy protects the route
when ExaBGP injects the same one into several neighbours with different next hops. Here
each ExaBGP process has exactly one neighbour (appliance/bgp/exabgp.py), so a shallow copy
of the route and of its NLRI does, and the resolved attribute set is made once per
attribute set, not once per prefix.

Pinned to exabgp==5.0.15 (pyproject.toml); a unit test compares the patched function
with ExaBGP's own on routes its own parser made, so an upgrade that changes what it does
fails the tests rather than announcing something else.
"""

from __future__ import annotations

import copy
import os
import weakref
from typing import Any

ASYNC_LIMIT = 100_000  # route changes ExaBGP applies per turn of its loop (its default: 50)
# Set (to anything) in the speaker's environment to run ExaBGP's own remove_self, for the
# benchmark's before/after (bench/bgp_speaker.py --compare).
PLAIN_ENV = "SLUICE_BGP_PLAIN_EXABGP"


def remove_self(neighbor: Any, change: Any) -> Any:
    """ExaBGP's Neighbor.remove_self (next-hop self → this session's address) without its
    deep copy: the change, its NLRI and (once per attribute set) its attributes are copied
    shallowly; nothing the caller holds is modified."""
    from exabgp.bgp.message.update.attribute import Attribute, NextHop

    out = copy.copy(change)
    out.nlri = copy.copy(change.nlri)
    if not change.nlri.nexthop.SELF:
        return out
    address = neighbor.ip_self(change.nlri.afi)
    out.nlri.nexthop = address
    attributes = change.attributes
    if Attribute.CODE.NEXT_HOP in attributes:
        cache = _resolved(neighbor)
        resolved = cache.get(id(attributes))
        if resolved is None or resolved[0]() is not attributes or resolved[1] != address:
            new = copy.copy(attributes)
            new[Attribute.CODE.NEXT_HOP] = NextHop(str(address), address.pack())
            for cached in ("_str", "_idx", "_json"):  # its text names the next hop
                if hasattr(new, cached):
                    setattr(new, cached, "")
            if hasattr(new, "_dict"):
                new._dict = {}
            resolved = (weakref.ref(attributes), address, new)
            cache[id(attributes)] = resolved
            if len(cache) > 64:  # one entry per command in flight is enough
                cache.pop(next(iter(cache)))
        out.attributes = resolved[2]
    return out


def _resolved(neighbor: Any) -> dict[int, tuple[Any, Any, Any]]:
    cache = neighbor.__dict__.get("_sluice_resolved")
    if cache is None:
        cache = neighbor.__dict__["_sluice_resolved"] = {}
    return cache


def apply() -> None:
    """Patch ExaBGP (in the speaker process, before it starts)."""
    from exabgp.bgp.neighbor import Neighbor
    from exabgp.reactor.asynchronous import ASYNC

    # ExaBGP applies a command's routes 50 per turn of its loop, and each turn also walks
    # what it has to send: 10,000 vips took it minutes. One turn per command instead.
    ASYNC.LIMIT = ASYNC_LIMIT
    if not os.environ.get(PLAIN_ENV):
        Neighbor.remove_self = remove_self
