"""loxilb's load-balancer rule (its REST API's JSON) ↔ a Sluice service.

Pure functions, no I/O: `to_service` checks a create body field by field and builds the
service document (refusing what Sluice cannot do rather than approximating it),
`to_rule` gives a service back in loxilb's shape. A rule is keyed, as in loxilb, by
(external IP, protocol, port); its Sluice service name is derived from that key, so the
delete calls find it without a scan. What loxilb's API sends that Sluice has no node for
(the client's rule name, its mode code, monitor/managed) is kept in the service's
`loxilb-rule` container and given back as sent; that container also marks the services
this API may list and delete (a service made through NETCONF is not kube-loxilb's).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any

from northbound.http.wire import ApiError

# loxilb `sel` codes → Sluice algorithms. 2 is loxilb's "priority": a weighted split by
# endpoint weight, which is Sluice's `weighted` (Sluice's `priority` is fail-over).
SEL_TO_ALGORITHM = {0: "round-robin", 1: "hash", 2: "weighted", 3: "persistence",
                    4: "least-connections"}  # fmt: skip
ALGORITHM_TO_SEL = {v: k for k, v in SEL_TO_ALGORITHM.items()} | {"maglev": 1}
UNSUPPORTED_SEL = {5: "n2 (GTP TEID hash)", 6: "n3 (GTP TEID hash)"}
# loxilb `mode` codes. Full-NAT without a privateIP translates the source to the
# balancer's own address towards the endpoint: that is Sluice's one-arm.
MODE_TO_SLUICE = {0: "default", 1: "one-arm", 2: "full-nat", 3: "dsr"}
SLUICE_TO_MODE = {"default": 0, "one-arm": 1, "full-nat": 2, "dsr": 3}
UNSUPPORTED_MODE = {4: "full-proxy", 5: "host-one-arm"}
PROTOCOLS = ("tcp", "udp", "sctp", "icmp")
PROBE_TYPES = ("ping", "tcp", "udp", "sctp", "http", "https", "none")
DEFAULT_PROBE = {"tcp": "tcp", "udp": "udp", "sctp": "sctp", "icmp": "ping"}
OPER_ADD, OPER_ATTACH, OPER_DETACH = 0, 1, 2
MAX_ENDPOINTS = 512  # the model's max-elements
MAX_SECONDARY_IPS = 4  # the model's max-elements of secondary-vip (SCTP multihoming)


def bad(field: str, message: str) -> ApiError:
    return ApiError(400, f"{field}: {message}", "malformed")


class Fields:
    """One JSON object's fields (keys folded to lower case), read with Go's zero values
    for absent and null, and a 400 naming the field for a wrong type or range."""

    def __init__(self, obj: Any, where: str) -> None:
        if obj is None:
            obj = {}
        if not isinstance(obj, dict):
            raise bad(where, "must be an object")
        self.obj, self.where = obj, where

    def _name(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def get(self, key: str) -> Any:
        return self.obj.get(key.lower())

    def str(self, key: str) -> str:
        value = self.get(key)
        if value is None:
            return ""
        if not isinstance(value, str):
            raise bad(self._name(key), "must be a string")
        return value

    def int(self, key: str, lo: int, hi: int) -> int:
        value = self.get(key)
        if value is None:
            return 0
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad(self._name(key), "must be an integer")
        if not lo <= value <= hi:
            raise bad(self._name(key), f"must be in {lo}..{hi}, not {value}")
        return value

    def bool(self, key: str) -> bool:
        value = self.get(key)
        if value is None:
            return False
        if not isinstance(value, bool):
            raise bad(self._name(key), "must be true or false")
        return value

    def list(self, key: str) -> list[Any]:
        value = self.get(key)
        if value is None:
            return []
        if not isinstance(value, list):
            raise bad(self._name(key), "must be a list")
        return value


def ip(text: str, field: str) -> str:
    try:
        return ipaddress.ip_address(text).compressed
    except ValueError:
        raise bad(field, f"not an IP address: {text!r}") from None


def protocol(text: str, field: str = "protocol") -> str:
    proto = (text or "tcp").lower()
    if proto not in PROTOCOLS:
        raise bad(field, f"protocol {text!r} is not supported (tcp, udp, sctp, icmp)")
    return proto


def service_name(vip: str, proto: str, port: int) -> str:
    """The Sluice service name of loxilb's rule key: lx-tcp-198.19.0.10-80,
    lx-udp-2001_db8__10-53 (':' is not allowed in a service name)."""
    return f"lx-{proto}-{vip.replace(':', '_')}-{port}"


def to_service(body: Mapping[str, Any]) -> tuple[str, dict[str, Any], int]:
    """(service name, service document, oper) of a create body (keys folded)."""
    args = Fields(body.get("servicearguments"), "serviceArguments")
    vip = ip(args.str("externalIP"), "serviceArguments.externalIP")
    proto = protocol(args.str("protocol"), "serviceArguments.protocol")
    port = args.int("port", 0, 65535)
    port_max = args.int("portMax", 0, 65535)
    if proto == "icmp":
        if port or port_max:
            raise bad("serviceArguments.port", "must be 0 for protocol icmp")
    elif port == 0:
        raise bad("serviceArguments.port", "is required (1..65535)")
    if port_max and port_max < port:
        raise bad("serviceArguments.portMax", f"must be at least port ({port})")
    oper = args.int("oper", 0, 2)
    sel = args.int("sel", 0, 255)
    if sel in UNSUPPORTED_SEL:
        raise ApiError(400, f"serviceArguments.sel: {sel} {UNSUPPORTED_SEL[sel]} is not "
                       "supported by Sluice", "unsupported")
    if sel not in SEL_TO_ALGORITHM:
        raise bad("serviceArguments.sel", f"unknown selection code {sel}")
    mode = args.int("mode", 0, 255)
    if mode in UNSUPPORTED_MODE:
        raise ApiError(400, f"serviceArguments.mode: {mode} {UNSUPPORTED_MODE[mode]} is not "
                       "supported by Sluice", "unsupported")
    if mode not in MODE_TO_SLUICE:
        raise bad("serviceArguments.mode", f"unknown mode code {mode}")
    for key, what in (("block", "block"), ("security", "security")):
        if args.int(key, 0, 2**32 - 1):
            raise ApiError(400, f"serviceArguments.{key}: a non-zero {what} is not supported "
                           "by Sluice", "unsupported")
    for key in ("proxyprotocolv2", "egress", "snat"):
        if args.bool(key):
            raise ApiError(400, f"serviceArguments.{key}: not supported by Sluice",
                           "unsupported")
    if args.str("host"):
        raise ApiError(400, "serviceArguments.host: host-based rules are not supported by "
                       "Sluice", "unsupported")
    secondary = [ip(Fields(entry, f"secondaryIPs[{i}]").str("secondaryIP"),
                    f"secondaryIPs[{i}].secondaryIP")
                 for i, entry in enumerate(Fields(body, "").list("secondaryIPs"))]  # fmt: skip
    private_ip = args.str("privateIP")
    name = service_name(vip, proto, port)
    doc: dict[str, Any] = {"name": name, "vip": vip, "protocol": proto,
                           "algorithm": SEL_TO_ALGORITHM[sel]}
    if proto != "icmp":
        doc["port"] = port
        if port_max > port:
            doc["port-range-end"] = port_max
    sluice_mode = MODE_TO_SLUICE[mode]
    if mode == 2:
        if private_ip:
            doc["snat-address"] = ip(private_ip, "serviceArguments.privateIP")
        else:
            sluice_mode = "one-arm"
    elif private_ip:
        raise bad("serviceArguments.privateIP", "is used only with mode 2 (full-NAT)")
    doc["mode"] = sluice_mode
    if secondary:
        # SCTP multihoming. loxilb's full-NAT sources its packets towards the endpoints
        # from the service's own address: each secondary IP is a secondary VIP and, on the
        # endpoints' side, that path's source address as well.
        if proto != "sctp" or sluice_mode != "full-nat":
            raise bad("secondaryIPs", "SCTP multihoming needs protocol sctp and mode 2 "
                      "(full-NAT) with a privateIP")
        if len(secondary) > MAX_SECONDARY_IPS:
            raise bad("secondaryIPs", f"at most {MAX_SECONDARY_IPS} secondary IPs")
        if len(set(secondary)) != len(secondary) or vip in secondary:
            raise bad("secondaryIPs", "each secondary IP once, none the externalIP")
        doc["secondary-vip"] = secondary
        doc["secondary-snat-address"] = secondary
    timeout = args.int("inactiveTimeOut", 0, 86400)
    if timeout:
        doc["inactivity-timeout"] = timeout
    sources = []
    for i, entry in enumerate(Fields(body, "").list("allowedSources")):
        prefix = Fields(entry, f"allowedSources[{i}]").str("prefix")
        try:
            sources.append(str(ipaddress.ip_network(prefix, strict=False)))
        except ValueError:
            raise bad(f"allowedSources[{i}].prefix", f"not a prefix: {prefix!r}") from None
    if sources:
        doc["allowed-source"] = sources
    monitor = args.bool("monitor")
    doc["health-probe"] = _probe(args, proto, monitor)
    doc["endpoint"] = _endpoints(Fields(body, "").list("endpoints"), proto, port)
    doc["advertise"] = args.bool("bgp")  # announced by the appliance's BGP speaker
    doc["loxilb-rule"] = {"name": args.str("name"), "mode": mode, "monitor": monitor,
                          "managed": args.bool("managed")}
    return name, doc, oper


def _probe(args: Fields, proto: str, monitor: bool) -> dict[str, Any]:
    ptype = args.str("probetype").lower()
    if ptype and ptype not in PROBE_TYPES:
        raise ApiError(400, f"serviceArguments.probetype: {ptype!r} is not supported "
                       f"({', '.join(PROBE_TYPES)})", "unsupported")
    if not monitor:
        return {"type": "none"}
    probe: dict[str, Any] = {"type": ptype or DEFAULT_PROBE[proto]}
    if port := args.int("probeport", 0, 65535):
        probe["port"] = port
    request, response = args.str("probereq"), args.str("proberesp")
    if probe["type"] in ("http", "https"):
        if request:
            if not request.startswith("/"):
                raise bad("serviceArguments.probereq", "an http(s) probe's request is a path "
                          "starting with '/'")
            probe["http-path"] = request
        if response:
            raise ApiError(400, "serviceArguments.proberesp: an expected body is not "
                           "supported for http(s) probes (the status is checked)", "unsupported")
    else:
        if request:
            probe["request"] = request
        if response:
            probe["expected-response"] = response
    if timeout := args.int("probeTimeout", 0, 60):
        probe["timeout"] = timeout
    if retries := args.int("probeRetries", 0, 10):
        probe["retries"] = retries
    return probe


def _endpoints(entries: list[Any], proto: str, port: int) -> list[dict[str, Any]]:
    if len(entries) > MAX_ENDPOINTS:
        raise bad("endpoints", f"at most {MAX_ENDPOINTS} endpoints per rule")
    out, seen = [], set()
    for i, entry in enumerate(entries):
        f = Fields(entry, f"endpoints[{i}]")
        address = ip(f.str("endpointIP"), f"endpoints[{i}].endpointIP")
        target = f.int("targetPort", 0, 65535)
        if proto == "icmp":
            target = 0
        elif target == 0:
            target = port  # loxilb: no target port means the service's own
        weight = f.int("weight", 0, 255) if f.get("weight") is not None else 1
        if (address, target) in seen:
            raise bad(f"endpoints[{i}]", f"{address}:{target} is listed twice")
        seen.add((address, target))
        out.append({"address": address, "port": target, "weight": weight})
    return out


def endpoint_key(ep: Mapping[str, Any]) -> tuple[str, int]:
    return str(ep["address"]), int(ep["port"])


def to_rule(svc: Mapping[str, Any], endpoint_state: Any = None) -> dict[str, Any]:
    """A service (explicit or effective values) in loxilb's list shape.
    `endpoint_state(service, address, port)` → a mapping with health and counters."""
    rule = svc.get("loxilb-rule") or {}
    probe = svc.get("health-probe") or {}
    ptype = probe.get("type", "none")
    mode = rule.get("mode", SLUICE_TO_MODE.get(svc.get("mode", "default"), 0))
    endpoints = []
    for ep in svc.get("endpoint", []):
        state = endpoint_state(svc["name"], ep["address"], ep["port"]) if endpoint_state else {}
        health = (state or {}).get("health", "")
        endpoints.append({
            "endpointIP": ep["address"], "targetPort": int(ep["port"]),
            "weight": int(ep.get("weight", 1)),
            "state": "inactive" if health in ("down", "admin-disabled") else "active",
            "counter": f"{int((state or {}).get('packets', 0))}:"
                       f"{int((state or {}).get('bytes', 0))}",
        })  # fmt: skip
    port = int(svc.get("port", 0))
    args = {
        "externalIP": svc["vip"], "port": port,
        "portMax": int(svc.get("port-range-end", 0)),
        "protocol": svc.get("protocol", "tcp"),
        "sel": ALGORITHM_TO_SEL.get(svc.get("algorithm", "round-robin"), 0),
        "mode": mode, "bgp": bool(svc.get("advertise", False)),
        "monitor": bool(rule.get("monitor", ptype != "none")),
        "inactiveTimeOut": int(svc.get("inactivity-timeout", 0)), "block": 0,
        "managed": bool(rule.get("managed", False)),
        "probetype": "" if ptype == "none" else ptype,
        "probeport": int(probe.get("port", 0)),
        "probereq": probe.get("http-path") or probe.get("request", "") if ptype != "none" else "",
        "proberesp": probe.get("expected-response", ""),
        "probeTimeout": int(probe.get("timeout", 0)) if ptype != "none" else 0,
        "probeRetries": int(probe.get("retries", 0)) if ptype != "none" else 0,
        "security": 0, "name": rule.get("name", svc["name"]), "oper": 0, "host": "",
        "proxyprotocolv2": False, "egress": False, "snat": False,
        "privateIP": svc.get("snat-address", ""),
    }  # fmt: skip
    return {
        "serviceArguments": args,
        "secondaryIPs": [{"secondaryIP": a} for a in svc.get("secondary-vip", [])],
        "allowedSources": [{"prefix": p} for p in svc.get("allowed-source", [])],
        "endpoints": endpoints,
    }
