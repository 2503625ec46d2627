"""VipGate: the datapath answers for an HA instance's VIPs only on that instance's master.

A Reconciler wrapped around the datapath reconciler, outside the datapath package (which
it drives only through its public `start`/`apply`): services whose VIP is *held* (its HA
instance is not MASTER here) are kept out of the datapath — withdrawn through an ordinary
`apply` of a removal — and put back, as an addition, when the role becomes MASTER. Commits
go through the same filter, so a service changed while held is programmed with its newest
config when its VIP is released. Everything else (health, state providers, errors) is the
inner reconciler's, reached through attribute delegation.

A withdrawn service loses its conntrack entries on this node (the driver flushes a removed
service's flows): on a backup they carry nothing yet. With the conntrack sync (issue #16
item 2) a backup must keep the entries it receives; the gate will then pause services
instead of removing them.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
from collections.abc import Iterable
from typing import Any

from appliance.config import LOAD_BALANCER, Diff
from appliance.ha.settings import HA, HaSettings

log = logging.getLogger(__name__)

Doc = dict[str, Any]


def norm(address: str) -> str:
    return str(ipaddress.ip_address(address))


class VipGate:
    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self._lock = threading.RLock()
        self._services: dict[str, Doc] = {}  # every configured service, held or not
        self._passed: set[str] = set()  # names the inner reconciler has
        self._held: frozenset[str] = frozenset()
        self._started = False

    def __getattr__(self, name: str) -> Any:  # errors, state_providers, health, ...
        if name == "inner":  # not set yet (copy, pickle): no recursion
            raise AttributeError(name)
        return getattr(self.inner, name)

    @property
    def held(self) -> frozenset[str]:
        return self._held

    def _is_held(self, doc: Doc) -> bool:
        return bool(self._held) and norm(doc["vip"]) in self._held

    # -- Reconciler protocol -------------------------------------------------------------
    def start(self, effective: Doc) -> None:
        """Before roles are known every HA VIP is held: a node answers for nothing until
        keepalived says it is master."""
        settings = HaSettings.from_section(effective.get(HA))
        with self._lock:
            self._held = frozenset(norm(v) for i in settings.instances for v in i.vips)
            lb = dict(effective.get(LOAD_BALANCER) or {})
            services = list(lb.get("service", []))
            self._services = {s["name"]: s for s in services}
            passed = [s for s in services if not self._is_held(s)]
            self._passed = {s["name"] for s in passed}
            lb["service"] = passed
            self.inner.start({**effective, LOAD_BALANCER: lb})
            self._started = True
            self._snat_hook()
        if self._held:
            log.info("ha: vips held until master", extra={"vips": ",".join(sorted(self._held))})

    def apply(self, diff: Diff) -> None:
        with self._lock:
            out = Diff(commit_id=diff.commit_id, sections_changed=diff.sections_changed)
            for name, doc in diff.services_removed.items():
                self._services.pop(name, None)
                if name in self._passed:
                    self._passed.discard(name)
                    out.services_removed[name] = doc
            for name, doc in diff.services_added.items():
                self._services[name] = doc
                self._route(name, None, doc, out)
            for name, (old, new) in diff.services_changed.items():
                self._services[name] = new
                self._route(name, old, new, out)
            self.inner.apply(out)

    def close(self) -> None:
        self.inner.close()

    def _snat_hook(self) -> None:
        """Egress SNAT (appliance/datapath/fwreconcile.py) only on the node that is master
        of every instance: a backup would translate flows the master also translates."""
        hook = getattr(self.inner, "set_snat_active", None)
        if hook is not None:
            hook(not self._held)

    def _route(self, name: str, old: Doc | None, new: Doc, out: Diff) -> None:
        if self._is_held(new):
            if name in self._passed:
                self._passed.discard(name)
                out.services_removed[name] = old if old is not None else new
        elif name in self._passed:
            out.services_changed[name] = (old if old is not None else new, new)
        else:
            self._passed.add(name)
            out.services_added[name] = new

    # -- the HA roles ---------------------------------------------------------------------
    def set_held(self, vips: Iterable[str]) -> dict[str, int]:
        """Hold exactly `vips` (withdraw their services, put back the others'); one apply.
        Returns how many services were withdrawn and released."""
        with self._lock:
            self._held = frozenset(norm(v) for v in vips)
            out = Diff()
            for name, doc in self._services.items():
                held = self._is_held(doc)
                if held and name in self._passed:
                    self._passed.discard(name)
                    out.services_removed[name] = doc
                elif not held and name not in self._passed:
                    self._passed.add(name)
                    out.services_added[name] = doc
            if self._started and not out.empty():
                self.inner.apply(out)
            if self._started:
                self._snat_hook()
            return {"withdrawn": len(out.services_removed), "released": len(out.services_added)}
