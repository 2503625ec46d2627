"""`sluice fw add|del|list|policy` and `sluice snat add|del|list`: firewall and egress SNAT
rules (/sluice:firewall, /sluice:snat), with their hit counters and warnings."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from appliance.control.client import ControlClient
from sluice.cli.output import fail, print_json, print_table

# Which flag sets which YANG leaf: errors from the daemon name both.
FLAG_OF = {
    "name": "NAME", "preference": "--pref", "source-prefix": "--src",
    "destination-prefix": "--dst", "protocol": "--proto", "source-port": "--sport",
    "source-port-end": "--sport", "destination-port": "--dport",
    "destination-port-end": "--dport", "ingress-interface": "--in", "service": "--service",
    "action": "--action", "mark": "--mark", "interface": "--interface",
    "snat-address": "--snat", "address": "--address", "default-policy": "POLICY",
    "snat-port": "--snat-port", "port": "--port", "icmp-type": "--icmp-type",
    "icmp-code": "--icmp-code",
}  # fmt: skip


def _ports(rule: dict[str, Any], leaf: str, text: str | None, flag: str) -> None:
    if text is None:
        return
    low, _, high = text.partition("-")
    try:
        rule[leaf] = int(low)
        if high:
            rule[f"{leaf}-end"] = int(high)
    except ValueError:
        raise ValueError(f"{flag} {text!r}: give PORT or LOW-HIGH") from None


def _match(args: argparse.Namespace) -> dict[str, Any]:
    rule: dict[str, Any] = {"name": args.name, "preference": args.pref}
    for attr, leaf in (("src", "source-prefix"), ("dst", "destination-prefix"),
                       ("proto", "protocol"), ("in_if", "ingress-interface")):  # fmt: skip
        if getattr(args, attr) is not None:
            rule[leaf] = getattr(args, attr)
    for attr, leaf in (("icmp_type", "icmp-type"), ("icmp_code", "icmp-code")):
        if getattr(args, attr) is not None:
            rule[leaf] = getattr(args, attr)
    _ports(rule, "source-port", args.sport, "--sport")
    _ports(rule, "destination-port", args.dport, "--dport")
    return rule


def _match_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("name")
    p.add_argument("--pref", type=int, required=True, help="preference: lower matches first")
    p.add_argument("--src", help="source prefix (IPv4 or IPv6)")
    p.add_argument("--dst", help="destination prefix")
    p.add_argument("--proto", help="tcp, udp, sctp, icmp, gre, esp, ah, ospf, vrrp, an IP "
                   "protocol number (1-255) or any")  # fmt: skip
    p.add_argument("--icmp-type", type=int, help="ICMP/ICMPv6 type (with --proto icmp)")
    p.add_argument("--icmp-code", type=int, help="ICMP code (with --icmp-type)")
    p.add_argument("--sport", help="source port or LOW-HIGH (tcp/udp)")
    p.add_argument("--dport", help="destination port or LOW-HIGH (tcp/udp)")
    p.add_argument("--in", dest="in_if", help="ingress interface")
    p.add_argument("-m", "--comment", default="")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    fw = sub.add_parser("fw", help="firewall rules and interface policies")
    verbs = fw.add_subparsers(dest="verb", metavar="VERB", required=True)
    add = verbs.add_parser("add", help="add a rule")
    _match_flags(add)
    add.add_argument("--service", help="match a service's VIP, protocol and port")
    add.add_argument(
        "--action",
        default="allow",
        help="allow (default), drop, reject, count, mark, redirect, snat, trap",
    )
    add.add_argument("--mark", type=int, help="the packet mark (action mark)")
    add.add_argument("--interface", help="out of (redirect) / copy to (trap)")
    add.add_argument("--snat", help="source address (action snat; default: masquerade)")
    add.add_argument("--snat-port", type=int,
                     help="fixed source port of action snat's TCP/UDP flows (default: one "
                     "allocated per flow)")  # fmt: skip
    add.set_defaults(func=cmd_add, table="firewall")
    snat = sub.add_parser("snat", help="egress source-NAT rules")
    snat_verbs = snat.add_subparsers(dest="verb", metavar="VERB", required=True)
    sadd = snat_verbs.add_parser("add", help="add a rule")
    _match_flags(sadd)
    sadd.add_argument("--address", help="source address (default: the egress interface's)")
    sadd.add_argument("--port", type=int,
                      help="fixed source port of TCP/UDP flows (loxilb toPort; default: one "
                      "allocated per flow)")  # fmt: skip
    sadd.set_defaults(func=cmd_add, table="snat")
    for verbs_, table in ((verbs, "firewall"), (snat_verbs, "snat")):
        delete = verbs_.add_parser("del", aliases=["delete"], help="delete a rule")
        delete.add_argument("name")
        delete.add_argument("-m", "--comment", default="")
        delete.set_defaults(func=cmd_del, table=table)
        ls = verbs_.add_parser("list", help="rules with hit counters and warnings")
        ls.add_argument("-o", "--output", choices=["table", "json"], default="table")
        ls.set_defaults(func=cmd_list, table=table)
    policy = verbs.add_parser("policy", help="an interface's default policy")
    policy.add_argument("interface")
    policy.add_argument("policy", help="allow, drop or reject")
    policy.set_defaults(func=cmd_policy)


def _warn(result: dict[str, Any]) -> None:
    for w in result.get("warnings") or []:
        print(f"warning: {w}", file=sys.stderr)


def cmd_add(client: ControlClient, args: argparse.Namespace) -> int:
    try:
        rule = _match(args)
    except ValueError as exc:
        return fail(str(exc))
    if args.table == "firewall":
        for attr, leaf in (("service", "service"), ("action", "action"), ("mark", "mark"),
                           ("interface", "interface"), ("snat", "snat-address"),
                           ("snat_port", "snat-port")):  # fmt: skip
            if getattr(args, attr) is not None:
                rule[leaf] = getattr(args, attr)
    else:
        for attr, leaf in (("address", "address"), ("port", "port")):
            if getattr(args, attr) is not None:
                rule[leaf] = getattr(args, attr)
    result = client.call("fw.add", table=args.table, rule=rule, comment=args.comment)
    print(f"{args.table} rule {args.name} added (commit {result['commit-id']})")
    _warn(result)
    return 0


def cmd_del(client: ControlClient, args: argparse.Namespace) -> int:
    result = client.call("fw.delete", table=args.table, name=args.name, comment=args.comment)
    print(f"{args.table} rule {args.name} deleted (commit {result['commit-id']})")
    return 0


def cmd_policy(client: ControlClient, args: argparse.Namespace) -> int:
    result = client.call("fw.policy", interface=args.interface, policy=args.policy)
    print(f"interface {args.interface}: default policy {args.policy} "
          f"(commit {result['commit-id']})")  # fmt: skip
    _warn(result)
    return 0


def _ports_text(rule: dict[str, Any], leaf: str) -> str | None:
    if rule.get(leaf) is None:
        return None
    end = rule.get(f"{leaf}-end")
    return f"{rule[leaf]}-{end}" if end is not None and end != rule[leaf] else str(rule[leaf])


def cmd_list(client: ControlClient, args: argparse.Namespace) -> int:
    res = client.call("fw.list", table=args.table)
    if args.output == "json":
        print_json(res)
        return 0
    last = "action" if args.table == "firewall" else "address"
    rows = [[r.get("preference"), r["name"], r.get("source-prefix"), r.get("destination-prefix"),
             r.get("protocol"), _ports_text(r, "source-port"), _ports_text(r, "destination-port"),
             r.get("ingress-interface"), r.get("service") if args.table == "firewall" else None,
             r.get(last), r.get("packets")] for r in res["rules"]]  # fmt: skip
    print_table(["pref", "name", "src", "dst", "proto", "sport", "dport", "in", "service", last,
                 "hits"], rows)  # fmt: skip
    if res["interfaces"]:
        print()
        print_table(["interface", "default-policy"],
                    [[i["name"], i.get("default-policy")] for i in res["interfaces"]])  # fmt: skip
    for w in res["warnings"]:
        print(f"warning: {w}")
    if res.get("error"):
        print(f"error: not programmed: {res['error']}")
    return 0
