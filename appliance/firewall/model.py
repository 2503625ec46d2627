"""The firewall and SNAT rules of a config, as objects: /sluice:firewall and /sluice:snat.

A rule that names a service matches that service's VIP, protocol and port (range). Rules
without an address prefix (and without a service) match both families. Everything the
model cannot say (families that disagree, ports without TCP/UDP, a range that ends before
it starts, an action without its argument) is a FieldError naming the leaf.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from appliance.config.errors import FieldError

Doc = dict[str, Any]
Net = ipaddress.IPv4Network | ipaddress.IPv6Network
FIREWALL = "sluice:firewall"
SNAT = "sluice:snat"
LOAD_BALANCER = "sluice:load-balancer"

# bpf/lib/firewall.h FW_* actions
ACTIONS = {"allow": 0, "drop": 1, "reject": 2, "count": 3, "mark": 4, "redirect": 5,
           "snat": 6, "trap": 7}  # fmt: skip
POLICIES = ("allow", "drop", "reject")
PROTOCOLS = {"tcp": (6, 6), "udp": (17, 17), "sctp": (132, 132), "icmp": (1, 58),
             "gre": (47, 47), "esp": (50, 50), "ah": (51, 51), "ospf": (89, 89),
             "vrrp": (112, 112)}  # (v4, v6) fmt: skip
# A number that has a name above is that name (6 is tcp, 1 and 58 are icmp).
NAME_OF = {6: "tcp", 17: "udp", 132: "sctp", 1: "icmp", 58: "icmp", 47: "gre", 50: "esp",
           51: "ah", 89: "ospf", 112: "vrrp"}  # fmt: skip
PORT_PROTOCOLS = ("tcp", "udp", "sctp")
ANY_PORTS = (0, 65535)


def rule_path(table: str, name: str) -> str:
    return f"/sluice:{table}/rule[name='{name}']"


@dataclass(frozen=True)
class Rule:
    table: str  # "firewall" or "snat"
    name: str
    preference: int
    action: str
    src: Net | None = None
    dst: Net | None = None
    protocol: str | int | None = None  # a PROTOCOLS name, or another IP protocol number
    sport: tuple[int, int] = ANY_PORTS
    dport: tuple[int, int] = ANY_PORTS
    interface: str | None = None  # ingress interface
    service: str | None = None
    mark: int = 0
    out_interface: str | None = None  # redirect / trap
    snat_address: str | None = None  # None with action snat: masquerade
    snat_port: int = 0  # action snat: the fixed source port of TCP/UDP flows (0: allocated)
    icmp_type: int | None = None
    icmp_code: int | None = None

    @property
    def path(self) -> str:
        return rule_path(self.table, self.name)

    def families(self) -> tuple[int, ...]:
        for net in (self.src, self.dst):
            if net is not None:
                return (net.version,)
        if self.snat_address:
            return (ipaddress.ip_address(self.snat_address).version,)
        return (4, 6)

    def order(self) -> tuple[int, str, str]:
        return self.preference, self.table, self.name

    def numbers(self) -> tuple[int, int]:
        """The protocol number matched in IPv4 and IPv6 (0, 0: any protocol)."""
        if self.protocol is None:
            return 0, 0
        if isinstance(self.protocol, int):
            return self.protocol, self.protocol
        return PROTOCOLS[self.protocol]


def protocol_of(value: Any) -> str | int | None:
    """The protocol leaf's value (a name, a number, or its text) as Rule.protocol."""
    if value is None or value == "any":
        return None
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, int):
        return NAME_OF.get(value, value)
    return str(value)


def _net(value: str | None) -> Net | None:
    return ipaddress.ip_network(value, strict=False) if value else None


def _ports(doc: Doc, leaf: str) -> tuple[int, int] | None:
    if doc.get(leaf) is None:
        return None
    lo = int(doc[leaf])
    end = doc.get(f"{leaf}-end")
    return lo, int(end) if end is not None else lo


def _service_fields(svc: Doc) -> tuple[Net, str, tuple[int, int] | None]:
    vip = ipaddress.ip_address(svc["vip"])
    net = ipaddress.ip_network(f"{vip}/{vip.max_prefixlen}")
    proto = svc.get("protocol", "tcp")
    port = svc.get("port")
    if proto in PORT_PROTOCOLS and port:
        end = svc.get("port-range-end")
        return net, proto, (int(port), int(end) if end else int(port))
    return net, proto, None


def parse(doc: Doc) -> tuple[list[Rule], dict[str, str], list[FieldError]]:
    """(rules of both tables by preference, interface -> default policy, errors)."""
    errors: list[FieldError] = []
    services = {s["name"]: s for s in (doc.get(LOAD_BALANCER) or {}).get("service", [])}
    rules: list[Rule] = []
    fw = doc.get(FIREWALL) or {}
    for r in fw.get("rule", []):
        rule = _rule("firewall", r, services, errors)
        if rule is not None:
            rules.append(rule)
    for r in (doc.get(SNAT) or {}).get("rule", []):
        rule = _rule("snat", {**r, "action": "snat", "snat-address": r.get("address"),
                              "snat-port": r.get("port")}, services, errors)  # fmt: skip
        if rule is not None:
            rules.append(rule)
    policies = {i["name"]: i.get("default-policy", "allow") for i in fw.get("interface", [])}
    rules.sort(key=Rule.order)
    return rules, policies, errors


def _rule(table: str, r: Doc, services: dict[str, Doc], errors: list[FieldError]) -> Rule | None:
    name = r["name"]
    path = rule_path(table, name)
    before = len(errors)
    src, dst = _net(r.get("source-prefix")), _net(r.get("destination-prefix"))
    proto = protocol_of(r.get("protocol"))
    if isinstance(proto, int) and not 1 <= proto <= 255:
        errors.append(FieldError(f"{path}/protocol", f"protocol {proto}: a number is 1..255"))
    sport, dport = _ports(r, "source-port"), _ports(r, "destination-port")
    service = r.get("service")
    if service is not None:
        svc = services.get(service)
        if svc is None:
            errors.append(FieldError(f"{path}/service", f"no service named {service!r}"))
        else:
            vnet, vproto, vports = _service_fields(svc)
            if dst is not None and not vnet.subnet_of(dst):  # type: ignore[arg-type]
                errors.append(FieldError(f"{path}/destination-prefix",
                                         f"service {service} has vip "
                                         f"{vnet.network_address}, outside {dst}"))  # fmt: skip
            if proto is not None and proto != vproto:
                errors.append(FieldError(f"{path}/protocol", f"service {service} is {vproto}"))
            dst, proto = vnet, vproto
            if vports is not None:
                if dport is not None and (dport[0] < vports[0] or dport[1] > vports[1]):
                    errors.append(FieldError(f"{path}/destination-port", f"service {service} "
                                             f"listens on {vports[0]}-{vports[1]}"))  # fmt: skip
                dport = dport or vports
    for leaf, rng in (("source-port", sport), ("destination-port", dport)):
        if rng is None:
            continue
        if rng[1] < rng[0]:
            errors.append(FieldError(f"{path}/{leaf}-end", f"{leaf}-end {rng[1]} is below "
                                     f"{leaf} {rng[0]}"))  # fmt: skip
        if proto not in PORT_PROTOCOLS and (service is None or leaf == "source-port"):
            errors.append(FieldError(f"{path}/{leaf}", "ports need protocol tcp, udp or sctp"))
    if src is not None and dst is not None and src.version != dst.version:
        errors.append(FieldError(f"{path}/destination-prefix", f"{dst} is IPv{dst.version} "
                                 f"and source-prefix {src} IPv{src.version}"))  # fmt: skip
    action = r.get("action", "allow")
    if action == "mark" and r.get("mark") is None:
        errors.append(FieldError(f"{path}/mark", "action mark needs a mark value"))
    if action in ("redirect", "trap") and not r.get("interface"):
        errors.append(FieldError(f"{path}/interface", f"action {action} needs an interface"))
    icmp_type, icmp_code = r.get("icmp-type"), r.get("icmp-code")
    if icmp_type is not None and proto != "icmp":
        errors.append(FieldError(f"{path}/icmp-type", "icmp-type needs protocol icmp"))
    if icmp_code is not None and icmp_type is None:
        errors.append(FieldError(f"{path}/icmp-code", "icmp-code needs icmp-type"))
    if r.get("snat-port") is not None and proto not in (None, "tcp", "udp"):
        leaf_name = "port" if table == "snat" else "snat-port"
        errors.append(FieldError(f"{path}/{leaf_name}", f"a source port needs protocol tcp, "
                                 f"udp or any, not {proto}"))  # fmt: skip
    snat = r.get("snat-address")
    if snat:
        fam = ipaddress.ip_address(snat).version
        for net, leaf in ((src, "source-prefix"), (dst, "destination-prefix")):
            if net is not None and net.version != fam:
                leaf_name = "address" if table == "snat" else "snat-address"
                errors.append(FieldError(f"{path}/{leaf_name}",
                                         f"{snat} is IPv{fam} and {leaf} {net} "
                                         f"IPv{net.version}"))  # fmt: skip
                break
    if len(errors) > before:
        return None
    return Rule(table=table, name=name, preference=int(r.get("preference", 0)), action=action,
                src=src, dst=dst, protocol=proto, sport=sport or ANY_PORTS,
                dport=dport or ANY_PORTS, interface=r.get("ingress-interface"),
                service=service, mark=int(r.get("mark") or 0),
                out_interface=r.get("interface"), snat_address=snat,
                snat_port=int(r.get("snat-port") or 0),
                icmp_type=None if icmp_type is None else int(icmp_type),
                icmp_code=None if icmp_code is None else int(icmp_code))  # fmt: skip
