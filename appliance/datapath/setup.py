"""How `sluice run` picks its reconciler: --datapath {auto,on,off}, --pin-dir, --cleanup.

auto: the eBPF datapath if this process can have it (root, bcc importable, bpffs
mounted), the logging reconciler otherwise, so the daemon still runs unprivileged for the
control-plane tests. on: the datapath or a clean failure. off: never.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path
from typing import Any

from appliance.datapath.program import DEFAULT_PIN_ROOT, DatapathUnavailable

log = logging.getLogger(__name__)

MODES = ("auto", "on", "off")
__all__ = ["DatapathUnavailable", "cleanup", "datapath_mode", "make_reconciler", "pin_root"]


def datapath_mode(arg: str | None) -> str:
    mode = arg or os.environ.get("SLUICE_DATAPATH") or "auto"
    if mode not in MODES:
        raise ValueError(f"--datapath must be one of {', '.join(MODES)}, not {mode!r}")
    return mode


def pin_root(arg: str | None) -> Path:
    return Path(arg or os.environ.get("SLUICE_PIN_DIR") or DEFAULT_PIN_ROOT)


def unavailable_reason() -> str | None:
    """Why the datapath cannot run in this process, or None if it can."""
    if os.geteuid() != 0:
        return "not root"
    if importlib.util.find_spec("bcc") is None:
        return "bcc (python3-bpfcc) is not importable"
    if not os.path.ismount("/sys/fs/bpf"):
        return "bpffs is not mounted at /sys/fs/bpf"
    return None


def make_reconciler(mode: str, pins: Path) -> tuple[Any, dict[str, Any]]:
    """(reconciler, state providers for the control socket) for ``mode``."""
    from appliance.reconciler import LoggingReconciler

    if mode == "off":
        return LoggingReconciler(), {}
    reason = unavailable_reason()
    if reason:
        if mode == "on":
            raise DatapathUnavailable(f"datapath requested but unavailable: {reason}")
        log.warning("datapath off", extra={"reason": reason})
        return LoggingReconciler(), {}
    from appliance.datapath.reconciler import DatapathReconciler

    rec = DatapathReconciler(pins)
    return rec, rec.state_providers()


def cleanup(db: Path, pins: Path) -> None:
    """Detach from the configured interfaces and remove the pinned maps."""
    from appliance.config import ConfigService
    from appliance.config.store import Store
    from appliance.datapath.reconciler import DatapathReconciler

    store = Store(db)
    try:
        effective = ConfigService(store).running_doc(effective=True)
    finally:
        store.close()
    DatapathReconciler.cleanup(effective, pins)
