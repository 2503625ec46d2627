"""`sluice lb …` and `sluice ep …`: services and their endpoints."""

from __future__ import annotations

import argparse
from typing import Any

from appliance.control.client import ControlClient
from appliance.control.endpoint_spec import EndpointSpecError, parse_endpoint
from sluice.cli.output import fail, print_json, print_table, warn_datapath_errors

# Which flag sets which YANG leaf: errors from the daemon name both.
FLAG_OF = {
    "name": "NAME",
    "vip": "--vip",
    "protocol": "--proto",
    "port": "--port",
    "port-range-end": "--port",
    "algorithm": "--algo",
    "mode": "--mode",
    "snat-address": "--snat",
    "snat-pool": "--snat-pool",
    "nat64": "--nat64",
    "nat46": "--nat46",
    "dsr-tunnel": "--dsr-tunnel",
    "secondary-vip": "--secondary-vip",
    "secondary-snat-address": "--secondary-snat",
    "allowed-source": "--allow",
    "persistence-timeout": "--persist-timeout",
    "inactivity-timeout": "--inactivity-timeout",
    "tcp-midstream-pickup": "--tcp-midstream-pickup",
    "endpoint": "--endpoints",
    "address": "--endpoints",
    "weight": "--endpoints",
    "type": "--probe",
    "interval": "--probe-interval",
    "timeout": "--probe-timeout",
    "retries": "--probe-retries",
    "request": "--probe-request",
    "expected-response": "--probe-response",
    "http-path": "--probe-path",
    "expected-status": "--probe-status",
}


def service_from_args(args: argparse.Namespace) -> dict[str, Any]:
    svc: dict[str, Any] = {"name": args.name, "vip": args.vip}
    if args.proto:
        svc["protocol"] = args.proto
    if args.port:
        low, _, high = args.port.partition("-")
        try:
            svc["port"] = int(low)
            if high:
                svc["port-range-end"] = int(high)
        except ValueError:
            raise EndpointSpecError(f"--port {args.port!r}: give PORT or LOW-HIGH") from None
    simple = {
        "algo": "algorithm",
        "mode": "mode",
        "snat": "snat-address",
        "dsr_tunnel": "dsr-tunnel",
        "persist_timeout": "persistence-timeout",
        "inactivity_timeout": "inactivity-timeout",
        "description": "description",
    }
    for attr, leaf in simple.items():
        if getattr(args, attr) is not None:
            svc[leaf] = getattr(args, attr)
    if args.nat64:
        svc["nat64"] = True
    if args.nat46:
        svc["nat46"] = True
    if args.snat_pool:
        svc["snat-pool"] = args.snat_pool
    if args.tcp_midstream_pickup:
        svc["tcp-midstream-pickup"] = True
    if args.allow:
        svc["allowed-source"] = args.allow
    for attr, leaf in (("secondary_vip", "secondary-vip"),
                       ("secondary_snat", "secondary-snat-address")):  # fmt: skip
        if getattr(args, attr):  # repeated and/or comma-separated, in order
            svc[leaf] = [a.strip() for v in getattr(args, attr) for a in v.split(",") if a.strip()]
    if args.endpoints:
        try:
            svc["endpoint"] = [parse_endpoint(s) for s in args.endpoints.split(",") if s.strip()]
        except EndpointSpecError as exc:
            raise EndpointSpecError(f"--endpoints {exc}") from None
    probe = {
        "probe": "type",
        "probe_port": "port",
        "probe_interval": "interval",
        "probe_timeout": "timeout",
        "probe_retries": "retries",
        "probe_request": "request",
        "probe_response": "expected-response",
        "probe_path": "http-path",
        "probe_status": "expected-status",
    }
    health = {leaf: getattr(args, a) for a, leaf in probe.items() if getattr(args, a) is not None}
    if health:
        svc["health-probe"] = health
    return svc


def add_parsers(sub: argparse._SubParsersAction) -> None:
    lb = sub.add_parser("lb", help="load-balancer services")
    verbs = lb.add_subparsers(dest="verb", metavar="VERB", required=True)

    add = verbs.add_parser("add", help="create a service")
    add.add_argument("name")
    add.add_argument("--vip", required=True, help="virtual IP (IPv4 or IPv6)")
    add.add_argument("--proto", help="tcp (default), udp, sctp or icmp")
    add.add_argument("--port", help="service port, or a range LOW-HIGH")
    add.add_argument("--endpoints", help="ADDR:PORT[:WEIGHT],… ([v6]:PORT for IPv6)")
    add.add_argument(
        "--algo",
        help="round-robin (default), weighted, hash, maglev, gtp-teid, "
        "least-connections, priority, persistence",
    )
    add.add_argument("--mode", help="default (DNAT), one-arm, full-nat, dsr")
    add.add_argument("--snat", help="source address for full-nat")
    add.add_argument("--snat-pool", action="append",
                     help="another full-nat source address (repeat; up to 7): NAT64/46 pools")
    add.add_argument("--nat64", action="store_true", help="IPv6 VIP to IPv4 endpoints")
    add.add_argument("--nat46", action="store_true", help="IPv4 VIP to IPv6 endpoints")
    add.add_argument("--dsr-tunnel", help="none (L2-DSR, default) or ip-in-ip (L3-DSR)")
    add.add_argument("--secondary-vip", action="append",
                     help="SCTP multihoming (full-nat): further VIPs, in order (repeat or A,B)")
    add.add_argument("--secondary-snat", action="append",
                     help="SCTP multihoming: further SNAT addresses, one per secondary VIP")
    add.add_argument("--allow", action="append", help="allowed source prefix (repeat)")
    add.add_argument("--persist-timeout", type=int, help="seconds (persistence algorithm)")
    add.add_argument("--inactivity-timeout", type=int, help="seconds idle before a flow ends")
    add.add_argument("--tcp-midstream-pickup", action="store_true",
                     help="TCP: any segment may start a session, not only a SYN "
                     "(asymmetric paths)")  # fmt: skip
    add.add_argument("--description")
    add.add_argument("--probe", help="ping, tcp, udp, sctp, http, https or none")
    add.add_argument("--probe-port", type=int)
    add.add_argument("--probe-interval", type=int, help="seconds")
    add.add_argument("--probe-timeout", type=int, help="seconds")
    add.add_argument("--probe-retries", type=int, help="failures before down")
    add.add_argument("--probe-request")
    add.add_argument("--probe-response")
    add.add_argument("--probe-path", help="HTTP path, e.g. /healthz")
    add.add_argument("--probe-status", type=int, help="expected HTTP status")
    add.add_argument("-m", "--comment", default="")
    add.set_defaults(func=cmd_lb_add)

    for verb, fn, helptext in (("list", cmd_lb_list, "list services"),):
        p = verbs.add_parser(verb, help=helptext)
        p.add_argument("-o", "--output", choices=["table", "json"], default="table")
        p.set_defaults(func=fn)
    show = verbs.add_parser("show", help="one service with its endpoints")
    show.add_argument("name")
    show.add_argument("-o", "--output", choices=["table", "json"], default="table")
    show.set_defaults(func=cmd_lb_show)
    delete = verbs.add_parser("del", aliases=["delete"], help="delete a service")
    delete.add_argument("name")
    delete.add_argument("-m", "--comment", default="")
    delete.set_defaults(func=cmd_lb_del)

    ep = sub.add_parser("ep", help="endpoints of services")
    ep_verbs = ep.add_subparsers(dest="verb", metavar="VERB", required=True)
    ep_list = ep_verbs.add_parser("list", help="endpoints with health")
    ep_list.add_argument("--service")
    ep_list.add_argument("-o", "--output", choices=["table", "json"], default="table")
    ep_list.set_defaults(func=cmd_ep_list)
    ep_set = ep_verbs.add_parser("set", help="admin state or weight of an endpoint")
    ep_set.add_argument("service")
    ep_set.add_argument("endpoint", help="ADDR:PORT ([v6]:PORT)")
    ep_set.add_argument("--state", help="enabled, disabled or drain")
    ep_set.add_argument("--weight", type=int)
    ep_set.set_defaults(func=cmd_ep_set)


def cmd_lb_add(client: ControlClient, args: argparse.Namespace) -> int:
    try:
        service = service_from_args(args)
    except EndpointSpecError as exc:
        return fail(str(exc))
    result = client.call("lb.add", service=service, comment=args.comment)
    print(f"service {args.name} added (commit {result['commit-id']})")
    warn_datapath_errors(result)
    return 0


def cmd_lb_del(client: ControlClient, args: argparse.Namespace) -> int:
    result = client.call("lb.delete", name=args.name, comment=args.comment)
    print(f"service {args.name} deleted (commit {result['commit-id']})")
    return 0


def _endpoints_text(svc: dict[str, Any]) -> str:
    eps = svc.get("endpoint", [])
    return f"{len(eps)}"


def _options_text(svc: dict[str, Any]) -> str:
    """The service's non-default datapath options, for `lb list` (`lb show` has them all)."""
    on = [leaf for leaf in ("nat64", "nat46", "tcp-midstream-pickup")
          if svc.get(leaf) in (True, "true")]  # fmt: skip
    if svc.get("dsr-tunnel", "none") != "none":
        on.append(str(svc["dsr-tunnel"]))
    if svc.get("snat-pool"):
        on.append(f"snat-pool({len(svc['snat-pool'])})")
    return ",".join(on) or "-"


def cmd_lb_list(client: ControlClient, args: argparse.Namespace) -> int:
    services = client.call("lb.list")
    if args.output == "json":
        print_json(services)
        return 0
    rows = []
    for s in services:
        port = s.get("port")
        if port is not None and "port-range-end" in s:
            port = f"{port}-{s['port-range-end']}"
        state = s.get("state") or {}
        rows.append(
            [
                s["name"],
                s["vip"],
                s.get("protocol"),
                port,
                s.get("mode"),
                s.get("algorithm"),
                _options_text(s),
                _endpoints_text(s),
                s.get("admin-state"),
                state.get("oper-status"),
                state.get("packets"),
                state.get("active-sessions"),
            ]
        )
    print_table(
        [
            "name",
            "vip",
            "proto",
            "port",
            "mode",
            "algorithm",
            "options",
            "endpoints",
            "admin",
            "oper",
            "packets",
            "sessions",
        ],
        rows,
    )
    return 0


def cmd_lb_show(client: ControlClient, args: argparse.Namespace) -> int:
    svc = client.call("lb.show", name=args.name)
    if args.output == "json":
        print_json(svc)
        return 0
    skip = {"endpoint", "health-probe", "state"}
    width = max(len(k) for k in svc)
    for key, value in svc.items():
        if key not in skip:
            text = ", ".join(map(str, value)) if isinstance(value, list) else value
            print(f"{key.ljust(width)}  {text}")
    probe = svc.get("health-probe", {})
    print(f"{'health-probe'.ljust(width)}  " + " ".join(f"{k}={v}" for k, v in probe.items()))
    print()
    print_table(
        ["address", "port", "weight", "admin"],
        [
            [e["address"], e["port"], e.get("weight"), e.get("admin-state")]
            for e in svc.get("endpoint", [])
        ],
    )
    return 0


def cmd_ep_list(client: ControlClient, args: argparse.Namespace) -> int:
    rows = client.call("ep.list", service=args.service)
    if args.output == "json":
        print_json(rows)
        return 0
    table = []
    for r in rows:
        st = r.get("state") or {}
        table.append(
            [
                r["service"],
                r["address"],
                r["port"],
                r.get("weight"),
                r.get("admin-state"),
                st.get("health", "unknown"),
                st.get("last-change"),
                st.get("rtt-us"),
                st.get("last-error"),
            ]
        )
    print_table(
        [
            "service",
            "address",
            "port",
            "weight",
            "admin",
            "health",
            "last-change",
            "rtt-us",
            "last-error",
        ],
        table,
    )
    return 0


def cmd_ep_set(client: ControlClient, args: argparse.Namespace) -> int:
    try:
        ep = parse_endpoint(args.endpoint)
    except EndpointSpecError as exc:
        return fail(f"ENDPOINT {exc}")
    params: dict[str, Any] = {"service": args.service, "address": ep["address"], "port": ep["port"]}
    if args.state is not None:
        params["admin-state"] = args.state
    if args.weight is not None:
        params["weight"] = args.weight
    if len(params) == 3:
        return fail("nothing to change: give --state and/or --weight")
    result = client.call("ep.set", **params)
    print(f"endpoint {args.endpoint} of {args.service} updated (commit {result['commit-id']})")
    warn_datapath_errors(result)
    return 0
