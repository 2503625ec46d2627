"""The daemon's BGP component: the /bgp section, the services' health, the datapath's state
and the HA role in; the routes to announce out, to an Advertiser (ExaBGP by default).

It has the Door shape (start, reconfigure(section), close, status) so the DoorSupervisor
runs it like the front doors: it follows /bgp commits, shows in `sluice status`, and is
closed at shutdown (the speaker stops, its sessions close, the peers withdraw).

What it listens to, and why the work is on a thread of its own ("bgp-policy"): commits
(config worker thread), service up/down events and alarms (the event bus, any thread) and
role changes only mark the announcements dirty and wake that thread, which recomputes them
once for a whole burst (a rack of endpoints going down is one recomputation, not one per
event) and hands the result to the advertiser. Nothing here waits on the speaker.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from appliance.bgp import policy
from appliance.bgp.advertiser import Advertiser
from appliance.bgp.exabgp import ExaBGPAdvertiser
from appliance.bgp.model import SpeakerConfig, parse_section
from appliance.probes.service_state import EVENT_TYPE as SERVICE_EVENT

log = logging.getLogger(__name__)

ROLE_EVENT = "ha-role"  # {"type": "ha-role", "role": "master" | "backup" | None}
SESSION_EVENT = "bgp-neighbor"  # {"neighbor", "old", "new", "time"}: NETCONF, event log
# Raised while a session that was established is not (BGP4-MIB's backward transition);
# through the alarm it reaches `sluice status`, the console, NETCONF and an SNMP trap.
SESSION_ALARM = "bgp-session"
DATAPATH_ALARMS = ("datapath",)

AdvertiserFactory = Callable[[Path], Advertiser]


class BgpDoor:
    def __init__(self, ctx: Any, section: dict[str, Any],
                 advertiser_factory: AdvertiserFactory = ExaBGPAdvertiser) -> None:  # fmt: skip
        self.ctx = ctx
        self.config: SpeakerConfig | None = parse_section(section)
        self._factory = advertiser_factory
        self.advertiser: Advertiser | None = None
        self.role: str | None = None
        self.announced: list[str] = []
        self._down: set[str] = set()
        self._lock = threading.Lock()
        self._dirty = threading.Event()
        self._closing = threading.Event()
        self._thread: threading.Thread | None = None
        self._lost: dict[str, str] = {}  # sessions that were established and are not: state

    # -- the Door shape --------------------------------------------------------------------
    async def start(self) -> None:
        self._down = await asyncio.get_running_loop().run_in_executor(
            self.ctx.worker, self._initially_down)
        self.ctx.bus.subscribe(self._on_service_event, SERVICE_EVENT)
        self.ctx.bus.subscribe(self._on_alarm, "alarm")
        self.ctx.bus.subscribe(self._on_role_event, ROLE_EVENT)
        self.ctx.service.subscribe(self._on_commit)
        self.ctx.state["bgp"] = self.detail
        self.ctx.state["bgp-role"] = self.set_role
        self._thread = threading.Thread(target=self._policy_loop, name="bgp-policy",
                                        daemon=True)  # fmt: skip
        self._thread.start()
        if self.config is not None:
            self._start_advertiser(self.config)
        self._dirty.set()

    async def reconfigure(self, section: dict[str, Any]) -> None:
        config = parse_section(section)
        loop = asyncio.get_running_loop()
        with self._lock:
            self.config, advertiser = config, self.advertiser
        if config is None:
            if advertiser is not None:
                log.info("bgp: no neighbour configured; speaker stopped")
                self.advertiser = None
                await loop.run_in_executor(None, advertiser.stop)
            self._lost.clear()
            self._report_lost({})
        elif advertiser is None:
            self._start_advertiser(config)
        else:
            advertiser.configure(config)
        if config is not None:
            with self._lock:
                kept = {n.address for n in config.neighbors}
                self._lost = {n: st for n, st in self._lost.items() if n in kept}
                lost = dict(self._lost)
            self._report_lost(lost)
        self._dirty.set()

    async def close(self) -> None:
        self._closing.set()
        self._dirty.set()
        self.ctx.service.unsubscribe(self._on_commit)
        for callback in (self._on_service_event, self._on_alarm, self._on_role_event):
            self.ctx.bus.unsubscribe(callback)
        advertiser, self.advertiser = self.advertiser, None
        if advertiser is not None:
            await asyncio.get_running_loop().run_in_executor(None, advertiser.stop)

    def status(self) -> dict[str, Any]:
        advertiser = self.advertiser
        if advertiser is None:
            return {"state": "disabled"}
        speaker = advertiser.status()
        sessions = speaker.get("neighbor", [])
        up = sum(1 for s in sessions if s.get("session-state") == "established")
        out = {"state": speaker.get("speaker", "?"), "speaker": advertiser.name,
               "established": f"{up}/{len(sessions)}", "announced": len(self.announced)}
        if self.role:
            out["ha-role"] = self.role
        if speaker.get("error"):
            out["error"] = speaker["error"]
        return out

    def detail(self) -> dict[str, Any]:
        """`sluice bgp status` and the NETCONF state: sessions and announced prefixes."""
        advertiser = self.advertiser
        speaker = advertiser.status() if advertiser is not None else {"speaker": "disabled"}
        out: dict[str, Any] = {
            "speaker": speaker.get("speaker"),
            "neighbor": speaker.get("neighbor", []),
            "announced": [policy.prefix_of(v) for v in self.announced],
        }
        if self.config is not None:
            out.update({"local-as": self.config.local_as, "router-id": self.config.router_id})
        if self.role:
            out["ha-role"] = self.role
        if speaker.get("error"):
            out["error"] = speaker["error"]
        return out

    # -- the HA role hook ------------------------------------------------------------------
    def set_role(self, role: str | None) -> None:
        """"master", "backup", or None (no HA: plain attributes). Any thread."""
        if role is not None and role not in policy.ROLES:
            raise ValueError(f"role must be one of {', '.join(policy.ROLES)} or None, not {role!r}")
        if role != self.role:
            log.info("bgp: HA role", extra={"role": role or "-"})
            self.role = role
            self._dirty.set()

    # -- inputs ----------------------------------------------------------------------------
    def _start_advertiser(self, config: SpeakerConfig) -> None:
        advertiser = self._factory(Path(self.ctx.state_dir) / "bgp")
        advertiser.on_session = self._on_session
        advertiser.start(config)
        self.advertiser = advertiser

    def _on_session(self, neighbor: str, old: str, new: str) -> None:
        """A session changed (the advertiser's thread): an event, and the alarm."""
        self.ctx.bus.publish({"type": SESSION_EVENT, "neighbor": neighbor, "old": old,
                              "new": new, "time": _iso_now()})  # fmt: skip
        with self._lock:
            if new == "established":
                self._lost.pop(neighbor, None)
            elif old == "established" or neighbor in self._lost:
                self._lost[neighbor] = new
            configured = {n.address for n in self.config.neighbors} if self.config else set()
            lost = {n: st for n, st in self._lost.items() if n in configured}
        self._report_lost(lost)

    def _report_lost(self, lost: dict[str, str]) -> None:
        alarms = getattr(self.ctx, "alarms", None)
        if alarms is None:
            return
        if not lost:
            alarms.clear(SESSION_ALARM)
            return
        first = sorted(lost)[0]
        more = f" and {len(lost) - 1} more" if len(lost) > 1 else ""
        alarms.raise_(SESSION_ALARM, f"BGP session to {first}{more} lost "
                      f"({lost[first]})", "major")  # fmt: skip

    def _initially_down(self) -> set[str]:
        """Services with no endpoint the prober calls up (on the config worker thread)."""
        endpoint = self.ctx.state.get("endpoint")
        if endpoint is None:
            return set()
        down = set()
        for name, svc in self._services().items():
            eps = svc.get("endpoint", [])
            states = [(endpoint(name, ep["address"], ep["port"]) or {}).get("health")
                      for ep in eps]  # fmt: skip
            if eps and all(s == "down" for s in states):
                down.add(name)
        return down

    def _on_service_event(self, event: dict[str, Any]) -> None:
        name = str(event.get("service"))
        with self._lock:
            if event.get("new") == "down":
                self._down.add(name)
            else:
                self._down.discard(name)
        self._dirty.set()

    def _on_alarm(self, event: dict[str, Any]) -> None:
        self._dirty.set()

    def _on_role_event(self, event: dict[str, Any]) -> None:
        try:
            self.set_role(event.get("role"))
        except ValueError as exc:
            log.error("bgp: bad HA role event", extra={"error": str(exc)})

    def _on_commit(self, diff: Any) -> None:
        if diff.services_added or diff.services_changed or diff.services_removed:
            with self._lock:
                for name in diff.services_removed:
                    self._down.discard(name)
            self._dirty.set()

    # -- the policy thread -----------------------------------------------------------------
    def _datapath_up(self) -> bool:
        alarms = self.ctx.state.get("alarms")
        active = alarms() if alarms is not None else []
        return not any(a.get("name") in DATAPATH_ALARMS for a in active)

    def _policy_loop(self) -> None:
        while True:
            self._dirty.wait()
            if self._closing.is_set():
                return
            self._dirty.clear()
            try:
                self._recompute()
            except Exception:
                log.exception("bgp: announcements not recomputed")

    def _services(self) -> dict[str, Any]:
        service = self.ctx.service
        mutex = getattr(service, "_mutex", None)  # commits replace entries under it
        if mutex is None:
            return dict(service.services_effective)
        with mutex:
            return dict(service.services_effective)

    def _recompute(self) -> None:
        services = self._services()
        errors = self.ctx.state.get("programming-errors")
        with self._lock:
            down = set(self._down)
            config, advertiser = self.config, self.advertiser
        if errors is not None:
            down |= set(errors())  # not programmed: the datapath cannot carry it
        vips = policy.announced_vips(services, down, self._datapath_up())
        if vips != self.announced:
            added = sorted(set(vips) - set(self.announced))
            gone = sorted(set(self.announced) - set(vips))
            log.info("bgp announcements changed", extra={
                "announced": len(vips), "added": ",".join(added[:10]) or "-",
                "withdrawn": ",".join(gone[:10]) or "-"})  # fmt: skip
        self.announced = vips
        if advertiser is not None:
            advertiser.set_routes(policy.routes(config, vips, self.role))


def _iso_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
