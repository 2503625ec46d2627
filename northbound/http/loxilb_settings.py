"""loxilb's cistate (HA instance roles) and BGP calls ↔ the appliance.

cistate: for an instance of the appliance's own HA (/sluice:ha, VRRP), the role reported
is the one VRRP elected, and a MASTER request is a takeover of that instance; Sluice's HA
cannot step one instance down to BACKUP (only the whole node: `sluice ha release`), so
such a request is refused unless the instance is backup already. For an instance Sluice's
HA does not run, the state is stored in /sluice:loxilb and reported as set. BGP global
settings and neighbours are the appliance's own speaker's (/sluice:bgp). This is the one
module that knows where these calls go.
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


def _ha_instances(ha: Mapping[str, Any] | None) -> dict[str, Mapping[str, Any]]:
    if not ha or not ha.get("enabled"):
        return {}
    return {str(i["name"]): i for i in ha.get("instances", [])}


def _ha_state(role: str) -> str:
    return {"master": "MASTER", "backup": "BACKUP", "fault": "FAULT",
            "stopped": "STOP"}.get(role, "NOT_DEFINED")  # fmt: skip


def cistate_list(section: Mapping[str, Any] | None,
                 ha: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The HA instances' roles as VRRP elected them, then the stored states of the others."""
    running = _ha_instances(ha)
    attrs = [{"instance": name, "state": _ha_state(str(i.get("role", ""))),
              "vip": (list(i.get("vips") or []) or ["0.0.0.0"])[0], "sync": 0}
             for name, i in running.items()]  # fmt: skip
    attrs += [{"instance": e["instance"], "state": e["state"], "vip": e.get("vip", "0.0.0.0"),
               "sync": 0} for e in (section or {}).get("cistate", [])
              if e["instance"] not in running]  # fmt: skip
    return {"Attr": attrs}


def cistate_action(ha: Mapping[str, Any] | None, instance: str, state: str) -> str | None:
    """What a cistate request asks of the appliance's HA: "takeover", "none" (already so),
    or None when HA does not run that instance (the state is then stored)."""
    running = _ha_instances(ha).get(instance)
    if running is None:
        return None
    role = _ha_state(str(running.get("role", "")))
    if state == "MASTER":
        return "none" if role == "MASTER" else "takeover"
    if state == role or (state == "BACKUP" and role != "MASTER"):
        return "none"
    raise ApiError(400, f"state: {instance} is {role} by VRRP; Sluice's HA cannot set one "
                   f"instance to {state} (`sluice ha release` steps the whole node down)",
                   "unsupported")


# -- BGP: mapped onto the appliance's own speaker (/sluice:bgp) ------------------------------
BGP_SECTION = "/sluice:bgp"
# loxilb's setMultiHop is a switch; Sluice's multihop is the session's TTL: the switch on
# is the widest TTL, as BGP speakers default it when multihop is enabled without one.
MULTIHOP_TTL = 255


def bgp_global_change(body: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """(path, value) for /sluice:bgp from POST /config/bgp/global. The announced VIPs are
    originated by the appliance, so their next hop is always its own session address:
    setNextHopSelf true or false announces the same routes."""
    f = Fields(body, "")
    f.bool("setNextHopSelf")  # type-checked; see above
    entry: dict[str, Any] = {}
    local_as = f.int("localAs", 0, 2**32 - 1)
    if local_as:
        entry["local-as"] = local_as
    router_id = f.str("routerId")
    if router_id:
        rid = ip(router_id, "routerId")
        if ":" in rid:
            raise bad("routerId", "must be an IPv4 address")
        entry["router-id"] = rid
    listen = f.int("listenPort", 0, 65535)
    if listen not in (0, 179):
        raise ApiError(400, f"listenPort: {listen}: Sluice's BGP speaker uses port 179",
                       "unsupported")
    return BGP_SECTION, entry


def bgp_global_list(section: Mapping[str, Any] | None) -> dict[str, Any]:
    g = section or {}
    if not g.get("local-as") and not g.get("router-id"):
        return {"attr": []}
    return {"attr": [{"localAs": g.get("local-as", 0), "routerId": g.get("router-id", ""),
                      "setNextHopSelf": True, "listenPort": 179}]}  # fmt: skip


def neighbor_path(address: str) -> str:
    return f"{BGP_SECTION}/neighbor[address='{address}']"


def bgp_neighbor_change(body: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    f = Fields(body, "")
    address = ip(f.str("ipAddress"), "ipAddress")
    remote_as = f.int("remoteAs", 0, 2**32 - 1)
    if not remote_as:
        raise bad("remoteAs", "is required")
    entry: dict[str, Any] = {"address": address, "remote-as": remote_as,
                             "port": f.int("remotePort", 0, 65535) or 179}
    if f.bool("setMultiHop"):
        entry["multihop"] = MULTIHOP_TTL
    return neighbor_path(address), entry


def bgp_neighbor_list(section: Mapping[str, Any] | None,
                      sessions: list[Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """The neighbours of /sluice:bgp, with their session state from the speaker."""
    live = {str(s.get("address")): s for s in sessions or []}
    attrs = []
    for n in (section or {}).get("neighbor", []):
        s = live.get(n["address"], {})
        state = str(s.get("session-state") or s.get("state") or "idle")
        attrs.append({"ipAddress": n["address"], "remoteAs": n.get("remote-as", 0),
                      "remotePort": n.get("port", 179),
                      "setMultiHop": "multihop" in n,
                      "state": state.capitalize(),
                      "updowntime": str(s.get("since") or s.get("up-since") or "never")})
    return {"bgpNeiAttr": attrs}


def neighbor_exists(section: Mapping[str, Any] | None, address: str) -> bool:
    return any(n.get("address") == address for n in (section or {}).get("neighbor", []))


def not_found(what: str) -> ApiError:
    return ApiError(404, f"{what} not found", "not found")
