"""VipGate: the datapath answers for an HA instance's VIPs only on that instance's master.

A Reconciler wrapped around the datapath reconciler, outside the datapath package (which
it drives only through its public methods): every service is programmed on every node, and
the VIPs whose HA instance is not MASTER here are *paused* in the datapath
(`set_paused`, bpf/lib/ha.h): the TC program lets their packets pass untouched while their
services, endpoints and conntrack entries stay. So a backup holds the flows its peer
synced to it, bound to its own ids, and a takeover is one map write per VIP: the first
packet after it finds its flow with the original translation and endpoint.

Commits pass through unchanged. Everything else (health, state providers, errors) is the
inner reconciler's, reached through attribute delegation. An inner reconciler without
`set_paused` (no datapath) has nothing to pause.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
from collections.abc import Iterable
from typing import Any

from appliance.config import Diff
from appliance.ha.settings import HA, HaSettings

log = logging.getLogger(__name__)

Doc = dict[str, Any]


def norm(address: str) -> str:
    return str(ipaddress.ip_address(address))


class VipGate:
    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self._lock = threading.RLock()
        self._held: frozenset[str] = frozenset()

    def __getattr__(self, name: str) -> Any:  # errors, state_providers, health, ...
        if name == "inner":  # not set yet (copy, pickle): no recursion
            raise AttributeError(name)
        return getattr(self.inner, name)

    @property
    def held(self) -> frozenset[str]:
        return self._held

    def _pause(self) -> None:
        pause = getattr(self.inner, "set_paused", None)
        if pause is not None:
            pause(sorted(self._held))

    # -- Reconciler protocol -------------------------------------------------------------
    def start(self, effective: Doc) -> None:
        """Before roles are known every HA VIP is paused: a node answers for nothing until
        keepalived says it is master. The pause is in place before any service is."""
        settings = HaSettings.from_section(effective.get(HA))
        with self._lock:
            self._held = frozenset(norm(v) for i in settings.instances for v in i.vips)
            self._pause()
            self.inner.start(effective)
            self._snat_hook()
        if self._held:
            log.info("ha: vips paused until master", extra={"vips": ",".join(sorted(self._held))})

    def apply(self, diff: Diff) -> None:
        with self._lock:
            self.inner.apply(diff)

    def close(self) -> None:
        self.inner.close()

    def _snat_hook(self) -> None:
        """Egress SNAT (appliance/datapath/fwreconcile.py) only on the node that is master
        of every instance: a backup would translate flows the master also translates."""
        hook = getattr(self.inner, "set_snat_active", None)
        if hook is not None:
            hook(not self._held)

    # -- the HA roles ---------------------------------------------------------------------
    def set_held(self, vips: Iterable[str]) -> dict[str, int]:
        """Pause exactly `vips` in the datapath (answer again for the others). Returns how
        many VIPs were paused and released by this call."""
        with self._lock:
            new = frozenset(norm(v) for v in vips)
            old, self._held = self._held, new
            if new != old:
                self._pause()
            self._snat_hook()
            return {"paused": len(new - old), "released": len(old - new)}
