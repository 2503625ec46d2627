"""loxilb's cistate (HA instance roles) and BGP calls ↔ the config's /sluice:loxilb section.

Stored and reported, not acted on: Sluice has no HA roles or BGP speaker of its own yet.
This is the one module that knows where they live; when the model gains its own HA and
BGP sections, the mapping changes here and nowhere else.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from northbound.http.loxilb_model import Fields, bad, ip
from northbound.http.wire import ApiError

SECTION = "/sluice:loxilb"
STATES = ("MASTER", "BACKUP", "FAULT", "STOP", "NOT_DEFINED")


def cistate_change(body: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """(path, value) of a cistate entry from POST /config/cistate."""
    f = Fields(body, "")
    instance = f.str("instance") or "llb-inst0"
    if len(instance) > 63:
        raise bad("instance", "at most 63 characters")
    state = f.str("state").upper()
    if state not in STATES:
        raise bad("state", f"must be one of {', '.join(STATES)}, not {f.str('state')!r}")
    entry: dict[str, Any] = {"instance": instance, "state": state}
    vip = f.str("vip")
    if vip:
        entry["vip"] = ip(vip, "vip")
    return f"{SECTION}/cistate[instance='{instance}']", entry


def cistate_list(section: Mapping[str, Any] | None) -> dict[str, Any]:
    attrs = [{"instance": e["instance"], "state": e["state"], "vip": e.get("vip", "0.0.0.0"),
              "sync": 0} for e in (section or {}).get("cistate", [])]  # fmt: skip
    return {"Attr": attrs}


def bgp_global_change(body: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    f = Fields(body, "")
    entry: dict[str, Any] = {
        "local-as": f.int("localAs", 0, 2**32 - 1),
        "set-next-hop-self": f.bool("setNextHopSelf"),
        "listen-port": f.int("listenPort", 0, 65535) or 179,
    }
    router_id = f.str("routerId")
    if router_id:
        rid = ip(router_id, "routerId")
        if ":" in rid:
            raise bad("routerId", "must be an IPv4 address")
        entry["router-id"] = rid
    return f"{SECTION}/bgp/global", entry


def bgp_global_list(section: Mapping[str, Any] | None) -> dict[str, Any]:
    g = ((section or {}).get("bgp") or {}).get("global")
    if not g:
        return {"attr": []}
    return {"attr": [{"localAs": g.get("local-as", 0), "routerId": g.get("router-id", ""),
                      "setNextHopSelf": g.get("set-next-hop-self", False),
                      "listenPort": g.get("listen-port", 179)}]}  # fmt: skip


def neighbor_path(address: str) -> str:
    return f"{SECTION}/bgp/neighbor[address='{address}']"


def bgp_neighbor_change(body: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    f = Fields(body, "")
    address = ip(f.str("ipAddress"), "ipAddress")
    remote_as = f.int("remoteAs", 0, 2**32 - 1)
    if not remote_as:
        raise bad("remoteAs", "is required")
    entry = {"address": address, "remote-as": remote_as,
             "remote-port": f.int("remotePort", 0, 65535) or 179,
             "multi-hop": f.bool("setMultiHop")}  # fmt: skip
    return neighbor_path(address), entry


def bgp_neighbor_list(section: Mapping[str, Any] | None) -> dict[str, Any]:
    attrs = [{"ipAddress": n["address"], "remoteAs": n.get("remote-as", 0),
              "remotePort": n.get("remote-port", 179), "setMultiHop": n.get("multi-hop", False),
              "state": "Idle", "updowntime": "never"}
             for n in ((section or {}).get("bgp") or {}).get("neighbor", [])]  # fmt: skip
    return {"bgpNeiAttr": attrs}


def neighbor_exists(section: Mapping[str, Any] | None, address: str) -> bool:
    return any(n.get("address") == address
               for n in ((section or {}).get("bgp") or {}).get("neighbor", []))


def not_found(what: str) -> ApiError:
    return ApiError(404, f"{what} not found", "not found")
