"""Entry point of the `sluice` console script."""

from __future__ import annotations

import argparse
import sys

from appliance import __version__
from appliance.control.client import ControlClient, DaemonUnreachable, RemoteError
from appliance.control.protocol import socket_path
from sluice.cli import bgp, config_cmds, dp, fw, ha, lb, passwd, qos, run
from sluice.cli.output import EXIT_USAGE, fail, report_remote_error


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sluice", description="Sluice L4 load-balancer appliance")
    parser.add_argument("--version", action="version", version=f"sluice {__version__}")
    parser.add_argument(
        "--socket", help="control socket (default $SLUICE_SOCKET or /run/sluice/sluice.sock)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    run.add_parser(sub)

    console = sub.add_parser("console", help="open the operator console")
    # For the SSH console's children: make stdin (a PTY slave) the controlling terminal.
    console.add_argument("--take-tty", action="store_true", help=argparse.SUPPRESS)
    console.set_defaults(func=cmd_console, local=True)

    status = sub.add_parser("status", help="daemon status")
    status.add_argument("-o", "--output", choices=["table", "json"], default="table")
    status.set_defaults(func=cmd_status)

    lb.add_parsers(sub)
    config_cmds.add_parsers(sub)
    dp.add_parsers(sub)
    bgp.add_parsers(sub)
    ha.add_parsers(sub)
    fw.add_parsers(sub)
    qos.add_parsers(sub)
    passwd.add_parser(sub)
    return parser


def cmd_console(args: argparse.Namespace) -> int:
    # Lazy: textual is heavy and only the console needs it.
    from tui.app import run_console

    if args.take_tty:
        import fcntl
        import termios

        fcntl.ioctl(0, termios.TIOCSCTTY, 0)
    return run_console(socket_path(args.socket))


# Hidden (not in the parser, so not in --help): the daemon starts the probe worker
# (appliance/probes/process.py) through this binary, so that the PyInstaller bundle needs
# no second entry point.
PROBE_WORKER = "probe-worker"


def cmd_probe_worker() -> int:
    from appliance.probes.worker import main as worker_main

    return worker_main()


# Hidden too: the BGP speaker (ExaBGP) and its API bridge (appliance/bgp/child.py).
BGP_SPEAKER, BGP_BRIDGE = "bgp-speaker", "bgp-bridge"


def cmd_bgp_child(verb: str, arg: str) -> int:
    from appliance.bgp import child

    return child.speaker_main(arg) if verb == BGP_SPEAKER else child.bridge_main(arg)


def cmd_status(client: ControlClient, args: argparse.Namespace) -> int:
    from sluice.cli.output import print_json

    status = client.call("status")
    if args.output == "json":
        print_json(status)
    else:
        for key, value in status.items():
            if key == "doors" and isinstance(value, dict):
                for door, st in value.items():
                    detail = " ".join(f"{k}={v}" for k, v in st.items() if k != "state")
                    print(f"{'door ' + door:<12} {st.get('state', '?')} {detail}".rstrip())
            elif key == "heartbeat" and isinstance(value, dict):
                print(f"{'heartbeat':<12} {value.get('heartbeat-age-s')} s ago, worst lag "
                      f"{value.get('max-lag-ms')} ms (restart after {value.get('limit-s')} s)")
            elif key == "alarms" and isinstance(value, list):
                for alarm in value:
                    print(f"{'ALARM':<12} {alarm.get('severity')} {alarm.get('name')}: "
                          f"{alarm.get('text')}")
            else:
                print(f"{key:<12} {value}")
    return 0


def main(argv: list[str] | None = None) -> int:
    raw = sys.argv[1:] if argv is None else argv
    if raw == [PROBE_WORKER]:
        return cmd_probe_worker()
    if len(raw) == 2 and raw[0] in (BGP_SPEAKER, BGP_BRIDGE):
        return cmd_bgp_child(raw[0], raw[1])
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
        flags = {"lb": lb.FLAG_OF, "fw": fw.FLAG_OF, "snat": fw.FLAG_OF, "qos": qos.FLAG_OF,
                 "mirror": qos.FLAG_OF}.get(args.command)
        return report_remote_error(exc, flags)
    except BrokenPipeError:
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
