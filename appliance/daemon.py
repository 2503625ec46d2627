"""`sluice run`: the daemon. One asyncio loop; config work on one worker thread.

Start-up: take the single-instance lock on the database, open the store, load and validate
running, hand it to the reconciler, serve the control socket. SIGTERM/SIGINT shut down
cleanly (socket removed, lock released).
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import signal
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any

from appliance import __version__
from appliance.config import ConfigService
from appliance.config.store import Store
from appliance.control.server import ControlServer
from appliance.reconciler import LoggingReconciler, Reconciler

log = logging.getLogger(__name__)


class AlreadyRunning(Exception):
    pass


def acquire_instance_lock(db: Path) -> IO[str]:
    """An exclusive flock beside the database; a second daemon on the same db is refused."""
    db.parent.mkdir(parents=True, exist_ok=True)
    handle = open(f"{db}.lock", "a+")  # noqa: SIM115 - held for the daemon's lifetime
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise AlreadyRunning(
            f"another sluice daemon (pid {holder}) is already using {db}"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


async def run_daemon(
    db: Path,
    socket: Path,
    reconciler: Reconciler | None = None,
    state: dict[str, Any] | None = None,
) -> None:
    """Run until SIGTERM/SIGINT. ``state``: operational-state providers for the control
    socket (the datapath reconciler's ``state_providers()``)."""
    lock = acquire_instance_lock(db)
    worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="config")
    loop = asyncio.get_running_loop()
    reconciler = reconciler or LoggingReconciler()
    try:
        store = await loop.run_in_executor(worker, Store, db)
        service = await loop.run_in_executor(worker, ConfigService, store)
        await loop.run_in_executor(
            worker, reconciler.start, service.running_doc(effective=True, with_secrets=True)
        )
        service.subscribe(reconciler.apply)
        server = ControlServer(service, socket, worker, state)
        await server.start()
        log.info(
            "sluice daemon ready",
            extra={"version": __version__, "db": str(db), "socket": str(socket)},
        )
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        log.info("sluice daemon stopping")
        await server.close()
        await loop.run_in_executor(worker, reconciler.close)
        await loop.run_in_executor(worker, store.close)
    finally:
        worker.shutdown(wait=True)
        lock.close()
