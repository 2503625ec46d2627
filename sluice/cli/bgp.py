"""`sluice bgp status`: the BGP speaker, its sessions, the vips announced."""

from __future__ import annotations

import argparse

from appliance.control.client import ControlClient
from sluice.cli.output import print_json, print_table


def add_parsers(sub: argparse._SubParsersAction) -> None:
    bgp = sub.add_parser("bgp", help="BGP announcement of the vips")
    verbs = bgp.add_subparsers(dest="verb", metavar="VERB", required=True)
    status = verbs.add_parser("status", help="sessions (state, since, prefixes sent), vips")
    status.add_argument("-o", "--output", choices=["table", "json"], default="table")
    status.set_defaults(func=cmd_status)
    role = verbs.add_parser("role", help="set the HA role the announcements follow (not saved)")
    role.add_argument("role", choices=["master", "backup", "none"])
    role.set_defaults(func=cmd_role)


def cmd_status(client: ControlClient, args: argparse.Namespace) -> int:
    st = client.call("bgp.status")
    if args.output == "json":
        print_json(st)
        return 0
    head = f"speaker {st.get('speaker')}"
    if st.get("local-as"):
        head += f"  local-as {st['local-as']}  router-id {st.get('router-id')}"
    if st.get("ha-role"):
        head += f"  ha-role {st['ha-role']}"
    print(head)
    if st.get("error"):
        print(f"error   {st['error']}")
    if st.get("neighbor"):
        print_table(["neighbor", "remote-as", "state", "since", "prefixes-sent"],
                    [[n.get("address"), n.get("remote-as"), n.get("session-state"),
                      n.get("since", "-"), n.get("prefixes-sent", 0)]
                     for n in st["neighbor"]])  # fmt: skip
    announced = st.get("announced") or []
    print(f"announced {len(announced)}: {' '.join(announced[:20])}"
          + (" ..." if len(announced) > 20 else ""))
    return 0


def cmd_role(client: ControlClient, args: argparse.Namespace) -> int:
    st = client.call("bgp.role", role=None if args.role == "none" else args.role)
    print(f"ha-role {st.get('ha-role') or 'none'}")
    return 0
