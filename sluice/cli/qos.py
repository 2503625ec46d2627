"""`sluice qos …` (policers and what they police) and `sluice mirror …` (mirror sessions)."""

from __future__ import annotations

import argparse
import re
from typing import Any

from appliance.control.client import ControlClient
from sluice.cli.output import print_json, print_table

# Which flag sets which YANG leaf: errors from the daemon name both.
FLAG_OF = {
    "cir": "--cir", "cbs": "--cbs", "ebs": "--ebs", "pir": "--pir", "pbs": "--pbs",
    "type": "--type", "color-mode": "--color-aware", "yellow-dscp": "--yellow-dscp",
    "red-dscp": "--red-dscp", "action": "--green/--yellow/--red", "dscp": "--green/--yellow/--red",
    "policer": "POLICER", "destination-interface": "--to", "vlan": "--vlan",
    "collector": "--collector", "source-address": "--source-address",
    "erspan-version": "--erspan-version", "session-id": "--session-id", "ttl": "--ttl",
    "sample": "--sample", "source-interface": "--interface", "source-service": "--service",
    "direction": "--interface", "prefix": "--client-prefix", "address": "--endpoint",
    "port": "--endpoint", "service": "--service", "name": "NAME",
}  # fmt: skip
SUFFIX = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9}
DSCP_NAMES = {"ef": 46, "be": 0, "default": 0, "va": 44}
DSCP_NAMES |= {f"cs{n}": 8 * n for n in range(8)}
DSCP_NAMES |= {f"af{c}{d}": 8 * c + 2 * d for c in range(1, 5) for d in range(1, 4)}


def rate(text: str) -> int:
    """argparse type: bits/s with an optional k/M/G suffix (10M, 1.5G)."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([kKmMgG]?)(?:bit|bps)?", text.strip())
    if not m:
        raise argparse.ArgumentTypeError(f"not a rate: {text!r} (e.g. 10M, 1.5G, 64000)")
    return int(float(m.group(1)) * SUFFIX[m.group(2).lower()])


def size(text: str) -> int:
    """argparse type: bytes with an optional k/M suffix (binary: 64k = 65536)."""
    m = re.fullmatch(r"(\d+)([kKmM]?)[bB]?", text.strip())
    if not m:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 64k, 1M, 1500)")
    return int(m.group(1)) * {"": 1, "k": 1024, "m": 1024 * 1024}[m.group(2).lower()]


def dscp(text: str) -> int:
    """argparse type: a DSCP value 0..63 or a name (ef, af11..af43, cs0..cs7)."""
    value = DSCP_NAMES.get(text.strip().lower())
    if value is None:
        try:
            value = int(text)
        except ValueError:
            value = -1
    if not 0 <= value <= 63:
        raise argparse.ArgumentTypeError(f"not a DSCP: {text!r} (0..63, ef, af11..af43, cs0..cs7)")
    return value


def dscp_list(text: str) -> list[int]:
    return [dscp(t) for t in text.split(",") if t.strip()]


def action(text: str) -> dict[str, Any]:
    """argparse type: transmit, drop, or dscp:VALUE (re-mark)."""
    word, _, value = text.partition(":")
    if word in ("transmit", "drop") and not value:
        return {"action": word}
    if word in ("dscp", "set-dscp") and value:
        return {"action": "set-dscp", "dscp": dscp(value)}
    raise argparse.ArgumentTypeError(f"not an action: {text!r} (transmit, drop, dscp:VALUE)")


def interface_dir(text: str) -> dict[str, str]:
    """IFNAME[:ingress|egress|both] (mirror sources; policers take ingress or egress)."""
    name, _, direction = text.partition(":")
    direction = direction or "ingress"
    if not name or direction not in ("ingress", "egress", "both"):
        raise argparse.ArgumentTypeError(f"not IFNAME[:ingress|egress|both]: {text!r}")
    return {"name": name, "direction": direction}


def endpoint(text: str) -> dict[str, Any]:
    """SERVICE,ADDRESS:PORT ([v6]:PORT for IPv6)."""
    svc, _, ep = text.partition(",")
    m = re.fullmatch(r"\[([0-9a-fA-F:.]+)\]:(\d+)|([0-9.]+):(\d+)", ep.strip())
    if not svc or not m:
        raise argparse.ArgumentTypeError(f"not SERVICE,ADDRESS:PORT: {text!r}")
    addr = m.group(1) or m.group(3)
    port = int(m.group(2) or m.group(4))
    return {"service": svc, "address": addr, "port": port}


def add_parsers(sub: argparse._SubParsersAction) -> None:
    qos = sub.add_parser("qos", help="policers (RFC 2697/2698) and what they police")
    verbs = qos.add_subparsers(dest="verb", metavar="VERB", required=True)

    lst = verbs.add_parser("list", help="policers with their color counters, attachments")
    lst.add_argument("-o", "--output", choices=["table", "json"], default="table")
    lst.set_defaults(func=cmd_qos_list)

    pol = verbs.add_parser("policer", help="create, change or delete a policer")
    pverbs = pol.add_subparsers(dest="pverb", metavar="VERB", required=True)
    add = pverbs.add_parser("set", help="create or replace a policer (buckets start full)")
    add.add_argument("name")
    add.add_argument("--type", choices=["single-rate", "two-rate"],
                     help="single-rate (RFC 2697, default) or two-rate (RFC 2698)")
    add.add_argument("--cir", type=rate, required=True, help="committed rate, bit/s (10M)")
    add.add_argument("--cbs", type=size, required=True, help="committed burst, bytes (64k)")
    add.add_argument("--ebs", type=size, help="excess burst, bytes (single-rate)")
    add.add_argument("--pir", type=rate, help="peak rate, bit/s (two-rate)")
    add.add_argument("--pbs", type=size, help="peak burst, bytes (two-rate)")
    add.add_argument("--color-aware", action="store_true",
                     help="the packet's DSCP gives its pre-color (--yellow-dscp, --red-dscp)")
    add.add_argument("--yellow-dscp", type=dscp_list, help="DSCPs arriving yellow (af12,af13)")
    add.add_argument("--red-dscp", type=dscp_list, help="DSCPs arriving red")
    for color, default in (("green", "transmit"), ("yellow", "transmit"), ("red", "drop")):
        add.add_argument(f"--{color}", type=action, metavar="ACTION",
                         help=f"transmit, drop or dscp:VALUE (default {default})")
    add.add_argument("-m", "--comment", default="")
    add.set_defaults(func=cmd_policer_set)
    delete = pverbs.add_parser("delete", help="delete a policer (detach it first)")
    delete.add_argument("name")
    delete.add_argument("-m", "--comment", default="")
    delete.set_defaults(func=cmd_policer_delete)

    for verb, helptext in (("attach", "police something with a policer"),
                           ("detach", "stop policing something")):  # fmt: skip
        p = verbs.add_parser(verb, help=helptext)
        if verb == "attach":
            p.add_argument("policer", metavar="POLICER")
        what = p.add_mutually_exclusive_group(required=True)
        what.add_argument("--interface", type=interface_dir, metavar="IF[:ingress|egress]")
        what.add_argument("--service", metavar="SERVICE")
        what.add_argument("--endpoint", type=endpoint, metavar="SERVICE,ADDR:PORT")
        what.add_argument("--client-prefix", metavar="PREFIX")
        p.add_argument("-m", "--comment", default="")
        p.set_defaults(func=cmd_attach if verb == "attach" else cmd_detach)

    mir = sub.add_parser("mirror", help="mirror sessions (SPAN, RSPAN, ERSPAN)")
    mverbs = mir.add_subparsers(dest="verb", metavar="VERB", required=True)
    mlist = mverbs.add_parser("list", help="sessions with their counters")
    mlist.add_argument("-o", "--output", choices=["table", "json"], default="table")
    mlist.set_defaults(func=cmd_mirror_list)
    mset = mverbs.add_parser("set", help="create or replace a mirror session")
    mset.add_argument("name")
    mset.add_argument("--type", choices=["span", "rspan", "erspan"], required=True)
    mset.add_argument("--to", help="span/rspan: the interface copies leave by")
    mset.add_argument("--vlan", type=int, help="rspan: VLAN of the copies (1..4094)")
    mset.add_argument("--collector", help="erspan: IPv4 address copies are sent to")
    mset.add_argument("--source-address", help="erspan: outer source (default: the route's)")
    mset.add_argument("--erspan-version", type=int, choices=[2, 3], help="erspan type (2)")
    mset.add_argument("--session-id", type=int, help="erspan session id (0..1023, default 1)")
    mset.add_argument("--ttl", type=int, help="erspan outer TTL (64)")
    mset.add_argument("--dscp", type=dscp, help="erspan outer DSCP (0)")
    mset.add_argument("--sample", type=int, help="copy one packet in N (1: all)")
    mset.add_argument("--interface", type=interface_dir, action="append",
                      metavar="IF[:ingress|egress|both]", help="mirror an interface (repeat)")
    mset.add_argument("--service", action="append", help="mirror a service (repeat)")
    mset.add_argument("-m", "--comment", default="")
    mset.set_defaults(func=cmd_mirror_set)
    mdel = mverbs.add_parser("delete", help="delete a mirror session")
    mdel.add_argument("name")
    mdel.add_argument("-m", "--comment", default="")
    mdel.set_defaults(func=cmd_mirror_delete)


def _committed(result: dict[str, Any]) -> int:
    print(f"committed {result.get('commit-id')}")
    return 0


def policer_from_args(args: argparse.Namespace) -> dict[str, Any]:
    pol: dict[str, Any] = {"name": args.name, "cir": args.cir, "cbs": args.cbs}
    for attr in ("type", "ebs", "pir", "pbs"):
        if getattr(args, attr) is not None:
            pol[attr] = getattr(args, attr)
    if args.color_aware:
        pol["color-mode"] = "color-aware"
    if args.yellow_dscp:
        pol["yellow-dscp"] = args.yellow_dscp
    if args.red_dscp:
        pol["red-dscp"] = args.red_dscp
    for color in ("green", "yellow", "red"):
        if getattr(args, color) is not None:
            pol[color] = getattr(args, color)
    return pol


def cmd_policer_set(client: ControlClient, args: argparse.Namespace) -> int:
    return _committed(client.call("qos.set-policer", policer=policer_from_args(args),
                                  comment=args.comment))  # fmt: skip


def cmd_policer_delete(client: ControlClient, args: argparse.Namespace) -> int:
    return _committed(client.call("qos.delete-policer", name=args.name, comment=args.comment))


def _target(args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    if args.interface:
        if args.interface["direction"] == "both":
            raise SystemExit("error: --interface: a policer takes ingress or egress")
        return "interface", args.interface
    if args.service:
        return "service", {"name": args.service}
    if args.endpoint:
        return "endpoint", args.endpoint
    return "client-prefix", {"prefix": args.client_prefix}


def cmd_attach(client: ControlClient, args: argparse.Namespace) -> int:
    kind, keys = _target(args)
    return _committed(client.call("qos.attach", kind=kind, keys=keys, policer=args.policer,
                                  comment=args.comment))  # fmt: skip


def cmd_detach(client: ControlClient, args: argparse.Namespace) -> int:
    kind, keys = _target(args)
    return _committed(client.call("qos.detach", kind=kind, keys=keys, comment=args.comment))


def _rate(bits: Any) -> str:
    value = int(bits)
    for unit, scale in (("G", 10**9), ("M", 10**6), ("k", 10**3)):
        if value >= scale and value % (scale // 1000 or 1) == 0:
            return f"{value / scale:g}{unit}"
    return str(value)


def cmd_qos_list(client: ControlClient, args: argparse.Namespace) -> int:
    doc = client.call("qos.show")
    if args.output == "json":
        print_json(doc)
        return 0
    rows = []
    for p in doc.get("policer", []):
        st = p.get("state", {})
        rows.append([p["name"], p.get("type"), _rate(p["cir"]), p["cbs"],
                     _rate(p["pir"]) if p.get("pir") else "-", p.get("pbs") or p.get("ebs"),
                     p.get("color-mode", "").replace("color-", ""),
                     "/".join(p.get(c, {}).get("action", "-") for c in ("green", "yellow", "red")),
                     *(st.get(c, {}).get("packets", 0) for c in ("green", "yellow", "red"))])
    print_table(["policer", "type", "cir", "cbs", "pir", "ebs/pbs", "mode", "actions g/y/r",
                 "green", "yellow", "red"], rows)  # fmt: skip
    attached = []
    for kind in ("interface", "service", "endpoint", "client-prefix"):
        for a in doc.get(kind, []):
            what = {"interface": lambda a: f"{a['name']} {a['direction']}",
                    "service": lambda a: a["name"],
                    "endpoint": lambda a: f"{a['service']} {a['address']}:{a['port']}",
                    "client-prefix": lambda a: a["prefix"]}[kind](a)  # fmt: skip
            attached.append([kind, what, a["policer"]])
    if attached:
        print()
        print_table(["attached to", "which", "policer"], attached)
    return 0


def cmd_mirror_set(client: ControlClient, args: argparse.Namespace) -> int:
    sess: dict[str, Any] = {"name": args.name, "type": args.type}
    simple = {"to": "destination-interface", "vlan": "vlan", "collector": "collector",
              "source_address": "source-address", "erspan_version": "erspan-version",
              "session_id": "session-id", "ttl": "ttl", "dscp": "dscp", "sample": "sample"}
    for attr, leaf in simple.items():
        if getattr(args, attr) is not None:
            sess[leaf] = getattr(args, attr)
    if args.interface:
        sess["source-interface"] = args.interface
    if args.service:
        sess["source-service"] = args.service
    return _committed(client.call("mirror.set", session=sess, comment=args.comment))


def cmd_mirror_delete(client: ControlClient, args: argparse.Namespace) -> int:
    return _committed(client.call("mirror.delete", name=args.name, comment=args.comment))


def cmd_mirror_list(client: ControlClient, args: argparse.Namespace) -> int:
    doc = client.call("mirror.show")
    if args.output == "json":
        print_json(doc)
        return 0
    rows = []
    for s in doc.get("session", []):
        st = s.get("state", {})
        to = s.get("collector") or s.get("destination-interface")
        if s["type"] == "rspan":
            to = f"{to} vlan {s.get('vlan')}"
        elif s["type"] == "erspan":
            to = f"{to} v{s.get('erspan-version', 2)} id {s.get('session-id', 1)}"
        sources = [f"{i['name']}:{i.get('direction', 'ingress')}"
                   for i in s.get("source-interface", [])]  # fmt: skip
        sources += [f"service {n}" for n in s.get("source-service", [])]
        rows.append([s["name"], s["type"], to, ",".join(sources) or "-", s.get("sample", 1),
                     st.get("packets", 0), st.get("sampled-out", 0),
                     st.get("failed", 0) + st.get("not-carried", 0)])
    print_table(["session", "type", "to", "sources", "1-in", "copied", "sampled-out",
                 "not-copied"], rows)  # fmt: skip
    return 0
