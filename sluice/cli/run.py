"""`sluice run`: the composition root. It picks the datapath and the front doors and hands
them to the daemon; the only place that imports northbound/ and tui/ (lazily, so the
CLI's other commands stay light)."""

from __future__ import annotations

import argparse
import asyncio
from typing import TYPE_CHECKING

from appliance.control.protocol import db_path, socket_path
from sluice.cli.output import fail

if TYPE_CHECKING:  # the daemon's imports (libyang, bcc, probes) are not for every CLI call
    from appliance.daemon import Closable, DaemonContext, Frontend


async def start_netconf(ctx: DaemonContext) -> Closable:
    """NETCONF over SSH; listens where /sluice:management/netconf says (default port 830)."""
    from northbound.netconf import NetconfServer

    server = NetconfServer(
        ctx.service,
        ctx.state_dir,
        worker=ctx.worker,
        follow_config=True,
        state=ctx.state,
        event_bus=ctx.bus,
    )
    await server.start()
    return server


async def start_snmp(ctx: DaemonContext) -> Closable:
    """The SNMP agent; serves only when /sluice:snmp/enabled is true."""
    from northbound.snmp import SnmpAgent

    agent = SnmpAgent(ctx.service, ctx.state, ctx.bus)
    await agent.start()
    return agent


async def start_console_ssh(ctx: DaemonContext) -> Closable | None:
    """The operator console over SSH (/sluice:management/console-ssh, default port 2222)."""
    from tui.ssh_server import start_from_config

    return await start_from_config(
        ctx.service, ctx.state_dir, socket=ctx.socket, worker=ctx.worker
    )


FRONT_DOORS: list[tuple[str, Frontend]] = [
    ("netconf", start_netconf),
    ("snmp", start_snmp),
    ("console-ssh", start_console_ssh),
]


def add_parser(sub: argparse._SubParsersAction) -> None:
    run = sub.add_parser("run", help="run the daemon")
    run.add_argument("--db", help="config database (default $SLUICE_DB or "
                     "/var/lib/sluice/sluice.db)")  # fmt: skip
    run.add_argument("--log-level", default=None, help="debug, info (default), warning, error")
    run.add_argument("--datapath", choices=["auto", "on", "off"], default=None,
                     help="eBPF datapath (default $SLUICE_DATAPATH or auto: on if possible)")
    run.add_argument("--pin-dir", default=None,
                     help="bpffs directory for the pinned maps (default $SLUICE_PIN_DIR or "
                     "/sys/fs/bpf/sluice)")
    run.add_argument("--cleanup", action="store_true",
                     help="detach the datapath and remove its pinned maps, then exit")
    run.set_defaults(func=cmd_run, local=True)  # fmt: skip


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
        reconciler, state = dpsetup.make_reconciler(
            dpsetup.datapath_mode(args.datapath), dpsetup.pin_root(args.pin_dir)
        )
        asyncio.run(
            run_daemon(
                db_path(args.db), socket_path(args.socket), reconciler, state, FRONT_DOORS
            )
        )
    except (AlreadyRunning, dpsetup.DatapathUnavailable, ValueError) as exc:
        return fail(str(exc), 1)
    return 0
