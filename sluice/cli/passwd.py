"""`sluice passwd USER`: set an operator's password (the appliance's first-login step too).

The password is hashed here, in the CLI process, so the clear text never crosses the control
socket or reaches the config store; only the scrypt hash is committed.
"""

from __future__ import annotations

import argparse
import getpass
import sys

from appliance.config.paths import MODULE
from appliance.control.client import ControlClient
from sluice.cli.output import EXIT_USAGE, fail

MIN_LENGTH = 8


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("passwd", help="set an operator's password (creates the user if new)")
    p.add_argument("user", help="login name")
    p.add_argument("--role", choices=["read-only", "read-write"],
                   help="also set the role (default: keep it; a new user is read-only)")
    p.add_argument("--token", action="store_true",
                   help="instead of a password, make a new HTTP API token (shown once; "
                        "it replaces the user's previous one)")
    p.add_argument("--stdin", action="store_true",
                   help="read the password from the first line of stdin (no prompt)")
    p.set_defaults(func=cmd_passwd)  # fmt: skip


def read_password(from_stdin: bool) -> str | None:
    """The new password, asked twice on a terminal; None when the two differ."""
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("new password: ")
    if getpass.getpass("again: ") != first:
        return None
    return first


def cmd_passwd(client: ControlClient, args: argparse.Namespace) -> int:
    from appliance.config.passwords import hash_password, new_token

    if args.token:
        token, digest = new_token()
        entry = {"name": args.user, "api-token-hash": digest}
        if args.role:
            entry["role"] = args.role
        path = f"/{MODULE}:management/user[name='{args.user}']"
        client.call("config.edit", changes=[{"op": "merge", "path": path, "value": entry}])
        result = client.call("config.commit", comment=f"API token of {args.user} set")
        print(token)
        print(f"API token of {args.user} set (commit {result['commit-id']}); it is shown "
              "only now", file=sys.stderr)
        return 0
    password = read_password(args.stdin)
    if password is None:
        return fail("the passwords differ; nothing changed", EXIT_USAGE)
    if len(password) < MIN_LENGTH:
        return fail(f"a password needs at least {MIN_LENGTH} characters", EXIT_USAGE)
    entry = {"name": args.user, "password-hash": hash_password(password)}
    if args.role:
        entry["role"] = args.role
    path = f"/{MODULE}:management/user[name='{args.user}']"
    client.call("config.edit", changes=[{"op": "merge", "path": path, "value": entry}])
    result = client.call("config.commit", comment=f"password of {args.user} set")
    print(f"password of {args.user} set (commit {result['commit-id']})")
    return 0
