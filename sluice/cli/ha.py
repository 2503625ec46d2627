"""`sluice ha status|takeover|release|resume`: the HA pair's roles, and switching them."""

from __future__ import annotations

import argparse
from typing import Any

from appliance.control.client import ControlClient
from sluice.cli.output import print_json, print_table


def add_parsers(sub: argparse._SubParsersAction) -> None:
    ha = sub.add_parser("ha", help="the HA pair (VRRP roles)")
    verbs = ha.add_subparsers(dest="verb", metavar="VERB", required=True)
    status = verbs.add_parser("status", help="role per instance, peers, witness, last failover")
    status.add_argument("-o", "--output", choices=["table", "json"], default="table")
    status.set_defaults(func=cmd_status)
    takeover = verbs.add_parser("takeover", help="become master now (maintenance switchover)")
    takeover.add_argument("--instance", help="only this instance (default: all)")
    takeover.set_defaults(func=cmd_command, action="takeover")
    release = verbs.add_parser("release", help="step down and stay out until takeover/resume")
    release.set_defaults(func=cmd_command, action="release", instance=None)
    resume = verbs.add_parser("resume", help="after release: rejoin as backup")
    resume.set_defaults(func=cmd_command, action="resume", instance=None)


def _show(st: dict[str, Any]) -> None:
    if not st.get("enabled"):
        print("HA is not configured")
        return
    print_table(
        ["instance", "role", "since", "vips", "peers", "priority", "preempt"],
        [[i["name"], i["role"] + (" (takeover pending)" if i["takeover-pending"] else ""),
          i["since"] or "-", " ".join(i["vips"]), " ".join(i["peers"]), i["priority"],
          "yes" if i["preempt"] else "no"] for i in st["instances"]],
    )  # fmt: skip
    reach = {True: "reachable", False: "LOST", None: "not checked yet"}[st["witness-reachable"]]
    print(f"witness        {st['witness'] or '- (none: a partition can make two masters)'}"
          + (f" {reach}" if st["witness"] else ""))
    print(f"last failover  {st['last-failover'] or '-'}")
    if st["released"]:
        print("released       yes (sluice ha resume or takeover to rejoin)")
    ka = st["keepalived"]
    print(f"keepalived     pid {ka['pid'] or '-'}, restarts {ka['restarts']}"
          + (f", {ka['error']}" if ka["error"] else ""))


def cmd_status(client: ControlClient, args: argparse.Namespace) -> int:
    st = client.call("ha.status")
    if args.output == "json":
        print_json(st)
    else:
        _show(st)
    return 0


def cmd_command(client: ControlClient, args: argparse.Namespace) -> int:
    _show(client.call("ha.command", action=args.action, instance=args.instance))
    return 0
