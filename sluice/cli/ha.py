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
        print("HA is not configured" if not st.get("sync") else "HA: sync only (no VRRP)")
        _show_sync(st.get("sync"))
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
    print(f"synced         {'yes' if st.get('synced') else 'no (priority held at 1)'}")
    _show_sync(st.get("sync"))


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:g} ms"


def _show_sync(sync: dict[str, Any] | None) -> None:
    """The conntrack sync: per peer, the channel both ways and the lag of what it sends."""
    if not sync:
        return
    if "error" in sync and "listening" not in sync:
        print(f"sync           {sync['error']}")
        return
    print(f"sync           listening {sync['listening']}"
          + (f", refused {sync['refused']}" if sync.get("refused") else ""))
    peers = sorted(set(sync.get("peers", {})) | set(sync.get("sending", {})))
    rows = []
    for peer in peers:
        rx = sync.get("peers", {}).get(peer, {})
        tx = sync.get("sending", {}).get(peer, {})
        lag = rx.get("lag") or {}
        rows.append([peer, "up" if tx.get("connected") else "down",
                     "up" if rx.get("connected") else "down", tx.get("flows", 0),
                     rx.get("flows", 0), rx.get("dumps", 0), _ms(lag.get("p50-ms")),
                     _ms(lag.get("p99-ms")), tx.get("last_error") or rx.get("last_error") or ""])
    print_table(["peer", "out", "in", "sent", "received", "dumps in", "lag p50", "lag p99",
                 "last error"], rows)  # fmt: skip
    dp = sync.get("datapath")
    if dp:
        refused = sum(dp.get("refused-records", {}).values())
        print(f"flows          installed {dp.get('installed', 0)}, deleted {dp.get('deleted', 0)}"
              f", unbound {dp.get('unbound', 0)}, refused {refused}"
              f", ring drops {dp.get('ring-drops', 0)}"
              f", peer's ends kept (carried here) {dp.get('gone-kept', 0)}")


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
