"""Entry point of the `sluice` console script."""

from __future__ import annotations

import argparse
import asyncio
import sys

from appliance import __version__
from appliance.cli import config_cmds, dp, lb
from appliance.cli.output import EXIT_USAGE, fail, report_remote_error
from appliance.control.client import ControlClient, DaemonUnreachable, RemoteError
from appliance.control.protocol import db_path, socket_path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sluice", description="Sluice L4 load-balancer appliance")
    parser.add_argument("--version", action="version", version=f"sluice {__version__}")
    parser.add_argument(
        "--socket", help="control socket (default $SLUICE_SOCKET or /run/sluice/sluice.sock)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    run = sub.add_parser("run", help="run the daemon")
    run.add_argument(
        "--db", help="config database (default $SLUICE_DB or /var/lib/sluice/sluice.db)"
    )
    run.add_argument("--log-level", default=None, help="debug, info (default), warning, error")
    run.add_argument("--datapath", choices=["auto", "on", "off"], default=None,
                     help="eBPF datapath (default $SLUICE_DATAPATH or auto: on if possible)")
    run.add_argument("--pin-dir", default=None,
                     help="bpffs dir of the maps (default $SLUICE_PIN_DIR or /sys/fs/bpf/sluice)")
    run.add_argument("--cleanup", action="store_true",
                     help="detach the datapath and remove its pinned maps, then exit")
    run.set_defaults(func=cmd_run, local=True)

    console = sub.add_parser("console", help="open the operator console")
    console.set_defaults(func=cmd_console, local=True)

    status = sub.add_parser("status", help="daemon status")
    status.add_argument("-o", "--output", choices=["table", "json"], default="table")
    status.set_defaults(func=cmd_status)

    lb.add_parsers(sub)
    config_cmds.add_parsers(sub)
    dp.add_parsers(sub)
    return parser


def cmd_run(args: argparse.Namespace) -> int:
    from appliance.daemon import AlreadyRunning, acquire_instance_lock, run_daemon
    from appliance.datapath import setup as dpsetup
    from appliance.logs import setup_logging

    setup_logging(args.log_level)
    try:
        if args.cleanup:
            with acquire_instance_lock(db_path(args.db)):  # never under a running daemon
                dpsetup.cleanup(db_path(args.db), dpsetup.pin_root(args.pin_dir))
            return 0
        reconciler, state = dpsetup.make_reconciler(dpsetup.datapath_mode(args.datapath),
                                                    dpsetup.pin_root(args.pin_dir))  # fmt: skip
        asyncio.run(run_daemon(db_path(args.db), socket_path(args.socket), reconciler, state))
    except (AlreadyRunning, dpsetup.DatapathUnavailable, ValueError) as exc:
        return fail(str(exc), 1)
    return 0


def cmd_console(args: argparse.Namespace) -> int:
    # Lazy: textual is heavy and only the console needs it.
    from tui.app import run_console

    return run_console(socket_path(args.socket))


def cmd_status(client: ControlClient, args: argparse.Namespace) -> int:
    from appliance.cli.output import print_json

    status = client.call("status")
    if args.output == "json":
        print_json(status)
    else:
        for key, value in status.items():
            print(f"{key:<12} {value}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "local", False):
        return args.func(args)
    try:
        with ControlClient(args.socket) as client:
            return args.func(client, args)
    except DaemonUnreachable as exc:
        return fail(str(exc), 1)
    except RemoteError as exc:
        return report_remote_error(exc, lb.FLAG_OF if args.command == "lb" else None)
    except BrokenPipeError:
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
