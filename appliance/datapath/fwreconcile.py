"""The firewall and SNAT part of the datapath reconciler: config -> rules -> compiled
tables -> maps (appliance/firewall, fwmaps). Runs where the reconciler runs (the config
worker thread, never the event loop); a 10,000-rule commit compiles and programs in one go.
"""

from __future__ import annotations

import logging
from typing import Any

from appliance import netlink
from appliance.config import Diff
from appliance.datapath.fwmaps import FirewallMaps
from appliance.datapath.program import DatapathUnavailable
from appliance.firewall.compile import compile_rules
from appliance.firewall.model import FIREWALL, LOAD_BALANCER, SNAT, parse

log = logging.getLogger(__name__)
SECTIONS = (FIREWALL, SNAT)


class FirewallReconciler:
    def __init__(self, program: Any, netns: str | None = None) -> None:
        self.maps = FirewallMaps(program)
        self.netns = netns
        self.sections: dict[str, Any] = {}
        self.error: str | None = None
        self.warnings: list[str] = []
        self.rules: list[Any] = []
        self._uses_services = False

    def start(self, effective: dict[str, Any], services: dict[str, dict[str, Any]]) -> None:
        self.maps.recover()
        self.sections = {s: effective.get(s) for s in SECTIONS}
        self.program(services)

    def apply(self, diff: Diff, services: dict[str, dict[str, Any]]) -> None:
        changed = False
        for section, (_old, new) in diff.sections_changed.items():
            key = "sluice:" + section.split(":")[-1]  # a commit's Diff names it "firewall"
            if key in SECTIONS:
                self.sections[key] = new
                changed = True
            elif section.split(":")[-1] == "datapath":
                changed = True  # interfaces (their indexes) may have changed
        if self._uses_services and (diff.services_added or diff.services_changed
                                    or diff.services_removed):  # fmt: skip
            changed = True
        if changed:
            self.program(services)

    def _ifindex(self, name: str) -> int | None:
        try:
            return netlink.ifindex(name, self.netns)
        except (OSError, LookupError):
            return None

    def program(self, services: dict[str, dict[str, Any]]) -> None:
        doc = {**self.sections, LOAD_BALANCER: {"service": list(services.values())}}
        rules, policies, errors = parse(doc)
        if errors:  # the validator refuses these at commit; a stored config may still hold them
            self.error = "; ".join(str(e) for e in errors)
            log.error("firewall not programmed", extra={"error": self.error})
            return
        self._uses_services = any(r.service for r in rules)
        ids = self.maps.assign_ids([(r.table, r.name) for r in rules])
        compiled = compile_rules(rules, ids, self._ifindex)
        if compiled.errors:
            self.error = "; ".join(str(e) for e in compiled.errors)
            log.error("firewall not programmed", extra={"error": self.error})
            return
        by_index = {}
        for name, policy in policies.items():
            index = self._ifindex(name)
            if index:
                by_index[index] = policy
            else:
                where = f"/sluice:firewall/interface[name='{name}']"
                compiled.warnings.append(f"{where}: no such interface: its policy applies "
                                         "once it exists")  # fmt: skip
        try:
            self.maps.program(compiled, by_index, any(r.action == "snat" for r in rules))
        except DatapathUnavailable as exc:  # sluice_fw did not load: the maps are unchanged
            self.error = str(exc)
            log.error("firewall not programmed", extra={"error": self.error})
            return
        self.rules, self.warnings, self.error = rules, compiled.warnings, None
        if compiled.warnings:  # one line: 10,000 overlapping rules must not flood the log
            log.warning("firewall rules: %d warnings (sluice fw list)", len(compiled.warnings),
                        extra={"first": compiled.warnings[:3]})  # fmt: skip

    def set_snat_active(self, active: bool) -> None:
        self.maps.set_snat_active(active)

    def state(self) -> dict[str, Any]:
        counters = self.maps.counters()
        rows = []
        for r in self.rules:
            packets, nbytes, sessions = counters.get((r.table, r.name), (0, 0, 0))
            rows.append({"table": r.table, "name": r.name, "preference": r.preference,
                         "action": r.action, "id": self.maps.ids.get((r.table, r.name)),
                         "packets": packets, "bytes": nbytes, "sessions": sessions})  # fmt: skip
        return {**self.maps.live(), "rules": rows, "warnings": list(self.warnings),
                "error": self.error}  # fmt: skip
