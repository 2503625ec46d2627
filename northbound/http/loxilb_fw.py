"""loxilb's firewall calls (`/config/firewall`) <-> Sluice's firewall and SNAT rules: pure
functions. kube-loxilb uses them for egress SNAT (`opts.doSnat`); the other options map onto
/sluice:firewall actions. A rule made here is named ``lx-`` + a digest of its match
arguments, which is how a DELETE (it sends the same arguments as query parameters) finds it.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
from typing import Any

from appliance.firewall.model import NAME_OF
from appliance.firewall.model import PROTOCOLS as BY_NAME
from northbound.http.wire import ApiError

PREFIX = "lx-"
INT_ARGS = ("minSourcePort", "maxSourcePort", "minDestinationPort", "maxDestinationPort",
            "protocol", "preference")  # fmt: skip


def _int(args: dict[str, Any], key: str, hi: int) -> int:
    value = args.get(key.lower(), 0) or 0
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise ApiError(400, f"ruleArguments.{key}: not a number: {value!r}", "malformed") from None
    if not 0 <= n <= hi:
        raise ApiError(400, f"ruleArguments.{key}: must be in 0..{hi}, not {n}", "malformed")
    return n


def _prefix(args: dict[str, Any], key: str) -> str:
    value = str(args.get(key.lower()) or "")
    if not value:
        return ""
    try:
        net = ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise ApiError(400, f"ruleArguments.{key}: not a prefix: {value!r}", "malformed") from None
    return "" if net.prefixlen == 0 else str(net)


def normalise(args: Any) -> dict[str, Any]:
    """The match arguments in one canonical form (a POST body's or a DELETE's query)."""
    if not isinstance(args, dict):
        raise ApiError(400, "ruleArguments: an object is required", "malformed")
    args = {str(k).lower(): v for k, v in args.items()}  # Go matches keys in any case
    out: dict[str, Any] = {"sourceIP": _prefix(args, "sourceIP"),
                           "destinationIP": _prefix(args, "destinationIP"),
                           "portName": str(args.get("portname") or "")}  # fmt: skip
    for key in INT_ARGS:
        out[key] = _int(args, key, 255 if key == "protocol" else
                        0xFFFFFFFF if key == "preference" else 65535)  # fmt: skip
    return out


def rule_name(args: dict[str, Any]) -> str:
    digest = hashlib.sha1(json.dumps(args, sort_keys=True).encode()).hexdigest()[:16]
    return PREFIX + digest


def _match(args: dict[str, Any], name: str) -> dict[str, Any]:
    rule: dict[str, Any] = {"name": name, "preference": args["preference"]}
    if args["sourceIP"]:
        rule["source-prefix"] = args["sourceIP"]
    if args["destinationIP"]:
        rule["destination-prefix"] = args["destinationIP"]
    if args["protocol"]:  # any IP protocol number (0: any); named ones by their name
        rule["protocol"] = NAME_OF.get(args["protocol"], str(args["protocol"]))
    for side in ("Source", "Destination"):
        lo, hi = args[f"min{side}Port"], args[f"max{side}Port"]
        if lo or hi:
            leaf = f"{side.lower()}-port"
            rule[leaf] = lo
            if hi and hi != lo:
                rule[f"{leaf}-end"] = hi
    if args["portName"]:
        rule["ingress-interface"] = args["portName"]
    return rule


def to_rule(body: Any) -> tuple[str, dict[str, Any]]:
    """(table "firewall" or "snat", the rule) for a POST /config/firewall body."""
    if not isinstance(body, dict):
        raise ApiError(400, "body: an object is required", "malformed")
    body = {str(k).lower(): v for k, v in body.items()}
    args = normalise(body.get("rulearguments"))
    opts = body.get("opts") or {}
    if not isinstance(opts, dict):
        raise ApiError(400, "opts: an object is required", "malformed")
    opts = {str(k).lower(): v for k, v in opts.items()}
    rule = _match(args, rule_name(args))
    if opts.get("dosnat"):
        if opts.get("toport"):
            port = opts["toport"]
            if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
                raise ApiError(400, f"opts.toPort: a port 1..65535, not {port!r}", "malformed")
            rule["port"] = port
        if opts.get("toip"):
            rule["address"] = str(opts["toip"])
        return "snat", rule
    if opts.get("record"):
        raise ApiError(400, "opts.record: not supported (use trap with a capture interface)",
                       "unsupported")  # fmt: skip
    if opts.get("trap"):
        raise ApiError(400, "opts.trap: Sluice traps to a capture interface; configure it "
                       "with `sluice fw add --action trap --interface`", "unsupported")  # fmt: skip
    if opts.get("drop"):
        rule["action"] = "drop"
    elif opts.get("redirect"):
        rule["action"], rule["interface"] = "redirect", str(opts.get("redirectportname") or "")
    elif opts.get("mark"):
        rule["action"], rule["mark"] = "mark", _int(opts, "mark", 0xFFFFFFFF)
    else:
        rule["action"] = "allow"
    return "firewall", rule


def from_rule(table: str, rule: dict[str, Any], counter: str = "") -> dict[str, Any]:
    """A Sluice rule as loxilb lists it (GET /config/firewall/all)."""
    proto = rule.get("protocol") or 0
    number = BY_NAME[proto][0] if proto in BY_NAME else 0 if proto == "any" else int(proto)
    args = {
        "sourceIP": rule.get("source-prefix", "0.0.0.0/0"),
        "destinationIP": rule.get("destination-prefix", "0.0.0.0/0"),
        "minSourcePort": rule.get("source-port", 0),
        "maxSourcePort": rule.get("source-port-end", rule.get("source-port", 0)),
        "minDestinationPort": rule.get("destination-port", 0),
        "maxDestinationPort": rule.get("destination-port-end", rule.get("destination-port", 0)),
        "protocol": number, "portName": rule.get("ingress-interface", ""),
        "preference": rule.get("preference", 0),
    }  # fmt: skip
    action = rule.get("action", "snat" if table == "snat" else "allow")
    opts = {"allow": action in ("allow", "count", "mark"), "drop": action == "drop",
            "trap": action == "trap", "redirect": action == "redirect",
            "redirectPortName": rule.get("interface", "") if action == "redirect" else "",
            "mark": rule.get("mark", 0), "record": False, "doSnat": table == "snat",
            "toIP": rule.get("address", ""), "toPort": rule.get("port", 0), "onDefault": False,
            "counter": counter}  # fmt: skip
    return {"ruleArguments": args, "opts": opts}
