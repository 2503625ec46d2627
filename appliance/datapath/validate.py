"""Refuse at commit what the datapath cannot carry (a config-service validator).

``check(doc)`` takes the whole effective config (libyang JSON: ``sluice:load-balancer``,
``sluice:datapath``) and returns one FieldError per problem, each naming the field. The
daemon registers it with ``ConfigService.add_validator`` whether the datapath runs or
not: a config accepted with the datapath off must still load when it is turned on. The
limits are layout.py's; this module is pure Python (no bcc).
"""

from __future__ import annotations

import ipaddress
from typing import Any

from appliance.algorithm import STANDALONE_DEFAULT, default_for_doc, service_algorithm
from appliance.config.errors import FieldError
from appliance.config.paths import DATAPATH, LOAD_BALANCER, service_path
from appliance.datapath import layout as L
from appliance.datapath.tables import maglev_size

Doc = dict[str, Any]
RESOURCE = "resource-denied"  # NETCONF error-tags
UNSUPPORTED = "operation-not-supported"
LB_PATH = "/sluice:load-balancer/service"


def max_slots(svc: Doc, default: str = STANDALONE_DEFAULT) -> int:
    """The biggest selection table ``svc`` can need, whatever the endpoints' health
    (``default``: the algorithm of services that set none, see appliance/algorithm.py)."""
    eps = svc.get("endpoint", [])
    algo = service_algorithm(svc, default)
    if algo in L.MAGLEV_TABLES:
        return maglev_size(len(eps)) if eps else 0  # sized from every configured endpoint
    if algo in ("weighted", "hash", "persistence"):
        return sum(int(e.get("weight", 1)) for e in eps)  # gcd 1 at worst
    return len(eps)


def _features(name: str, svc: Doc) -> list[FieldError]:
    errors = []
    path = service_path(name)
    if svc.get("protocol", "tcp") in L.UNSUPPORTED_PROTOCOLS:
        errors.append(FieldError(f"{path}/protocol",
                                 f"protocol {svc['protocol']} is not supported by the datapath yet",
                                 UNSUPPORTED))  # fmt: skip
    for leaf in ("nat64", "nat46"):
        if svc.get(leaf) in (True, "true") and svc.get("protocol", "tcp") not in ("tcp", "udp",
                                                                                   "icmp"):
            errors.append(FieldError(f"{path}/{leaf}", f"{leaf} translates tcp, udp and icmp "
                                     "(echo) services only (RFC 7915 header translation)",
                                     UNSUPPORTED))  # fmt: skip
    errors += _multihoming(path, svc)
    return errors


def _xdp_conflicts(doc: Doc) -> list[FieldError]:
    """``hook xdp`` with policers or mirrors: they run at TC (bpf/qos.c) and would never
    see the packets the XDP fast path forwards, so the pair is refused, not half done."""
    from appliance.datapath import qos_plan as Q

    xdp = [i["name"] for i in (doc.get(DATAPATH) or {}).get("interface", [])
           if i.get("hook") == "xdp"]  # fmt: skip
    if not xdp:
        return []
    try:
        plan = Q.plan(doc.get(Q.QOS), doc.get(Q.MIRROR), Q.Ids(Q.MAX_POLICERS),
                      Q.Ids(Q.MAX_MIRRORS))  # fmt: skip
    except Exception:  # QoS's own validator names what is wrong there
        return []
    if plan.empty():
        return []
    return [FieldError(f"/sluice:datapath/interface[name='{name}']/hook",
                       "hook xdp cannot be combined with policers or mirrors (they run at "
                       "TC and would not see what XDP forwards): use hook tc",
                       UNSUPPORTED) for name in xdp]  # fmt: skip


def _multihoming(path: str, svc: Doc) -> list[FieldError]:
    """SCTP secondary addresses come in pairs (secondary-vip i, secondary-snat-address i),
    each pair of one family (bpf/lib/sctp_mh.h): a path stays in one family end to end."""
    pairs = zip(svc.get("secondary-vip", []), svc.get("secondary-snat-address", []), strict=False)
    return [FieldError(f"{path}/secondary-snat-address",
                       f"secondary-snat-address {snat} (entry {i}) must be of the family of "
                       f"secondary-vip {vip} (entry {i}): each path is IPv4 or IPv6 end to end",
                       "invalid-value")
            for i, (vip, snat) in enumerate(pairs, start=1)
            if ipaddress.ip_address(vip).version != ipaddress.ip_address(snat).version]  # fmt: skip


def check(doc: Doc) -> list[FieldError]:
    """Every way ``doc`` asks more of the datapath than it does or holds."""
    errors: list[FieldError] = []
    for iface in (doc.get(DATAPATH) or {}).get("interface", []):
        if iface.get("hook", "tc") in L.UNSUPPORTED_HOOKS:
            errors.append(FieldError(
                f"/sluice:datapath/interface[name='{iface['name']}']/hook",
                f"hook {iface['hook']} is not supported by the datapath yet (use tc)",
                UNSUPPORTED))  # fmt: skip
    errors += _xdp_conflicts(doc)
    services = [s for s in (doc.get(LOAD_BALANCER) or {}).get("service", [])
                if s.get("admin-state", "enabled") == "enabled"]  # fmt: skip
    if len(services) > L.LIMIT_SERVICES:
        errors.append(FieldError(LB_PATH, f"{len(services)} enabled services; the datapath "
                                 f"holds at most {L.LIMIT_SERVICES}", RESOURCE))  # fmt: skip
    default = default_for_doc(doc)
    endpoints = allow = pages = 0
    longest_allow = biggest_pages = 0
    ranges: dict[tuple[str, str], int] = {}
    over: dict[str, str] = {}  # limit -> the first service that crossed it
    for svc in services:
        name = svc["name"]
        errors += _features(name, svc)
        n = len(svc.get("endpoint", []))
        if n > L.LIMIT_SERVICE_ENDPOINTS:
            errors.append(FieldError(f"{service_path(name)}/endpoint", f"{n} endpoints; the "
                                     f"datapath holds at most {L.LIMIT_SERVICE_ENDPOINTS} per "
                                     "service", RESOURCE))  # fmt: skip
        endpoints += n
        if endpoints > L.LIMIT_ENDPOINTS:
            over.setdefault("endpoint", name)
        prefixes = len(svc.get("allowed-source", []))
        allow += prefixes
        longest_allow = max(longest_allow, prefixes)
        if allow + longest_allow > L.LIMIT_ALLOW:
            over.setdefault("allowed-source", name)
        p = L.sel_pages(max_slots(svc, default))
        pages += p
        biggest_pages = max(biggest_pages, p)
        if pages + biggest_pages > L.LIMIT_SEL_PAGES:
            over.setdefault("algorithm", name)
        end = svc.get("port-range-end")
        if end is not None and int(end) != int(svc.get("port", 0)):
            key = (ipaddress.ip_address(svc["vip"]).compressed, svc.get("protocol", "tcp"))
            ranges[key] = ranges.get(key, 0) + 1
            if ranges[key] == L.LIMIT_RANGES + 1:
                errors.append(FieldError(
                    f"{service_path(name)}/port-range-end",
                    f"more than {L.LIMIT_RANGES} port-range services on {key[0]} {key[1]}; "
                    "the datapath holds at most that many per VIP and protocol",
                    RESOURCE))  # fmt: skip
    totals = {
        "endpoint": f"{endpoints} endpoints over all services; the datapath holds at most "
                    f"{L.LIMIT_ENDPOINTS}",
        "allowed-source": f"{allow} allowed-source prefixes over all services (plus "
                          f"{longest_allow} while one list is replaced); the datapath holds "
                          f"at most {L.LIMIT_ALLOW}",
        "algorithm": f"the selection tables of all services need up to {pages} pages of "
                     f"{L.SEL_PAGE} slots (plus {biggest_pages} while one is rebuilt); the "
                     f"datapath holds {L.LIMIT_SEL_PAGES} (a maglev service of up to 32 "
                     "endpoints takes 8, a weighted one its weights' sum in slots)",
    }  # fmt: skip
    for leaf, name in over.items():
        errors.append(FieldError(f"{service_path(name)}/{leaf}", totals[leaf], RESOURCE))
    return errors
