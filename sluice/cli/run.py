"""`sluice run`: the daemon, with the datapath and the front doors of sluice/wiring.py."""

from __future__ import annotations

import argparse
import asyncio

from appliance.control.protocol import db_path, socket_path
from sluice.cli.output import fail


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
    from appliance.ha.gate import VipGate
    from appliance.logs import setup_logging
    from appliance.reconciler import LoggingReconciler
    from sluice.wiring import DOORS, ha_door

    setup_logging(args.log_level)
    try:
        if args.cleanup:
            with acquire_instance_lock(db_path(args.db)):  # never under a running daemon
                dpsetup.cleanup(db_path(args.db), dpsetup.pin_root(args.pin_dir))
            return 0
        datapath_error = None
        try:
            reconciler, state = dpsetup.make_reconciler(
                dpsetup.datapath_mode(args.datapath), dpsetup.pin_root(args.pin_dir)
            )
        except dpsetup.DatapathUnavailable as exc:
            # Degraded, not dead: every door still comes up and says why.
            reconciler, state, datapath_error = None, {}, str(exc)
        # The HA roles decide which VIPs the datapath answers for (appliance/ha/gate.py).
        gate = VipGate(reconciler or LoggingReconciler())
        asyncio.run(
            run_daemon(db_path(args.db), socket_path(args.socket), gate, state,
                       [*DOORS, ha_door(gate)], datapath_error=datapath_error)
        )
    except (AlreadyRunning, ValueError) as exc:
        return fail(str(exc), 1)
    return 0
