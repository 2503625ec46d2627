"""`sluice ct list`, `sluice stats`, `sluice dp status`: the datapath's operational state."""

from __future__ import annotations

import argparse
from typing import Any

from appliance.control.client import ControlClient
from sluice.cli.output import print_json, print_table


def add_parsers(sub: argparse._SubParsersAction) -> None:
    ct = sub.add_parser("ct", help="connection tracking (sessions)")
    ct_verbs = ct.add_subparsers(dest="verb", metavar="VERB", required=True)
    ct_list = ct_verbs.add_parser("list", help="list sessions")
    ct_list.add_argument("--service", help="only this service's sessions")
    ct_list.add_argument("--limit", type=positive_int, metavar="N",
                         help="only the first N sessions (quick on a big table)")  # fmt: skip
    ct_list.add_argument("-o", "--output", choices=["table", "json"], default="table")
    ct_list.set_defaults(func=cmd_ct_list)

    stats = sub.add_parser("stats", help="packets, bytes and sessions per service and endpoint")
    stats.add_argument("-o", "--output", choices=["table", "json"], default="table")
    stats.set_defaults(func=cmd_stats)

    dp = sub.add_parser("dp", help="the eBPF datapath")
    dp_verbs = dp.add_subparsers(dest="verb", metavar="VERB", required=True)
    status = dp_verbs.add_parser("status", help="attached programs and map fill levels")
    status.add_argument("-o", "--output", choices=["table", "json"], default="table")
    status.set_defaults(func=cmd_dp_status)
    sel = dp_verbs.add_parser(
        "selection", help="a service's selection table as the datapath holds it (compare the "
        "digest between appliances: equal digests pick the same endpoint for every flow)")
    sel.add_argument("service")
    sel.add_argument("-o", "--output", choices=["table", "json"], default="table")
    sel.set_defaults(func=cmd_dp_selection)


def positive_int(text: str) -> int:
    """argparse type: a positive integer (argparse names the flag in its error)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, not {text!r}")
    return value


def cmd_dp_selection(client: ControlClient, args: argparse.Namespace) -> int:
    found: dict[str, Any] = client.call("dp.selection", service=args.service)
    if args.output == "json":
        print_json(found)
        return 0
    print(f"{found['service']}: {found['algorithm']}, {found['slots']} slots, "
          f"digest {found['digest']}")
    print_table(["endpoint", "slots"], [[ep or "(none)", n] for ep, n in found["share"].items()])
    return 0


def cmd_ct_list(client: ControlClient, args: argparse.Namespace) -> int:
    params: dict[str, Any] = {"service": args.service}
    if args.limit is not None:
        params["limit"] = args.limit
    rows: list[dict[str, Any]] = client.call("dp.conntrack", **params)
    if args.output == "json":
        print_json(rows)
        return 0
    print_table(
        ["service", "proto", "client", "vip", "endpoint", "snat", "state", "idle-s", "packets"],
        [[r["service"], r["protocol"], r["client"], r["vip"], r["endpoint"], r["snat"],
          r["state"] + (" (expired)" if r["expired"] else "")
          + (" (alternate path)" if r.get("alternate-path") else ""), r["idle-s"],
          "/".join(str(p) for p in r["packets"])] for r in rows],
    )  # fmt: skip
    return 0


def cmd_stats(client: ControlClient, args: argparse.Namespace) -> int:
    rows: list[dict[str, Any]] = client.call("dp.stats")
    if args.output == "json":
        print_json(rows)
        return 0
    print_table(
        ["service", "endpoint", "status", "packets", "bytes", "active", "total"],
        [[r["service"], r.get("endpoint"), r.get("oper-status") or r.get("health"),
          r.get("packets"), r.get("bytes"), r.get("active-sessions"), r.get("total-sessions")]
         for r in rows],
    )  # fmt: skip
    return 0


def cmd_dp_status(client: ControlClient, args: argparse.Namespace) -> int:
    status: dict[str, Any] = client.call("dp.status")
    if args.output == "json":
        print_json(status)
        return 0
    for key in ("enabled", "loaded", "program", "pin-dir", "compile-seconds", "services",
                "route-generation", "endpoint-next-hops", "conntrack-sweep-interval"):
        if key in status:
            label = {"conntrack-sweep-interval": "conntrack-sweep",
                     "endpoint-next-hops": "endpoint-nh"}.get(key, key)  # fmt: skip
            print(f"{label:<16} {status[key]}")
    if status.get("modules"):  # compiled and loaded so far, with their seconds
        print(f"{'modules':<16} " + ", ".join(f"{m} {t}s" for m, t in status["modules"].items()))
    for ifname, filters in status.get("interfaces", {}).items():
        # "xdp:native" / "xdp:generic" first where the XDP fast path is in front of TC.
        print(f"{'attached':<16} {ifname}: {','.join(filters) or '-'}")
    xdp = status.get("xdp-packets") or {}
    if xdp:
        print(f"{'xdp packets':<16} forwarded {xdp.get('forwarded', 0)}, "
              f"passed to tc {xdp.get('passed', 0)}")  # fmt: skip
    maps = status.get("maps", {})
    if maps:
        print_table(["map", "entries", "capacity"],
                    [[m, v["entries"], v["capacity"]] for m, v in maps.items()])  # fmt: skip
    for name, err in status.get("errors", {}).items():
        print(f"{'error':<16} {name}: {err}")
    return 0
