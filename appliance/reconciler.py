"""Where committed config meets the system: the hook the daemon calls with config changes.

`start(effective)` runs once with the whole running config at start-up (rebuild, idempotent);
`apply(diff)` runs after each commit. The datapath reconciler implements this; until it is
attached the daemon uses `LoggingReconciler`.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from appliance.config import LOAD_BALANCER, Diff

log = logging.getLogger(__name__)


class Reconciler(Protocol):
    def start(self, effective: dict[str, Any]) -> None: ...

    def apply(self, diff: Diff) -> None: ...

    def close(self) -> None: ...


class LoggingReconciler:
    """Records what would be programmed; the daemon's default before the datapath lands."""

    def start(self, effective: dict[str, Any]) -> None:
        services = effective.get(LOAD_BALANCER, {}).get("service", [])
        log.info("reconcile start", extra={"services": len(services)})

    def apply(self, diff: Diff) -> None:
        log.info("reconcile diff", extra={"commit": diff.commit_id, **_counts(diff)})

    def close(self) -> None:
        pass


def _counts(diff: Diff) -> dict[str, int]:
    return {
        "added": len(diff.services_added),
        "removed": len(diff.services_removed),
        "changed": len(diff.services_changed),
    }
