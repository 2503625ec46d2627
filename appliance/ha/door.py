"""HaDoor: the HA pair's roles, as a door of the daemon (section /sluice:ha).

It writes keepalived.conf from the section, runs keepalived as a supervised child
(appliance/ha/keepalived.py), reads role changes from the notify FIFO and turns them into
what the datapath answers for (appliance/ha/gate.py: an instance's VIPs only while it is
MASTER here). It checks the witness itself (ICMP echo from the daemon, not a keepalived
script): lost → the `fault` track file → every instance FAULT → VIPs released. Operators
read the roles (`sluice ha status`, NETCONF state, the console's status line, a NETCONF
notification per change) and switch them for maintenance (`sluice ha takeover`,
`release`, `resume`).

Threads: keepalived's supervisor ("ha-super"), the FIFO reader ("ha-fifo": a role change
reprograms the datapath there, never on the event loop); the witness check is a task on
the daemon's loop (one echo per interval).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

from appliance.doors import DoorContext, Section
from appliance.ha.keepalived import KeepalivedProcess
from appliance.ha.keepalived_conf import Paths, render
from appliance.ha.notify_fifo import NotifyFifo
from appliance.ha.settings import HaSettings, SyncSettings
from appliance.ha.sync import SyncService
from appliance.ha.vipcheck import Target, VipCheck

log = logging.getLogger(__name__)

ACTIONS = ("takeover", "release", "resume")


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class HaDoor:
    def __init__(self, ctx: DoorContext, section: Section, gate: Any = None) -> None:
        self.ctx = ctx
        self.gate = gate  # VipGate (None: no datapath to gate, roles only)
        self.settings = HaSettings.from_section(section)
        self.paths = Paths(Path(ctx.state_dir) / "ha")
        self.roles: dict[str, dict[str, Any]] = {}
        self.last_failover: str | None = None
        self.witness_ok: bool | None = None
        self.released = False
        self.takeover: set[str] = set()
        # False from the start of a sync channel with peers until a peer's full dump has
        # arrived: meanwhile the `hold` track file keeps this node's priority at 1.
        self.synced = True
        # Instances whose VIPs another node answers for (vipcheck.py): held in FAULT here.
        self.peer_holds: dict[str, str] = {}  # instance -> the other node's MAC
        self.standby: set[str] = set()  # of those, the ones this node stands back for
        self.vipcheck: VipCheck | None = None
        self._vip_rounds: dict[str, tuple[int, int]] = {}  # instance -> (seen, silent) in a row
        self.keepalived: KeepalivedProcess | None = None
        self.fifo: NotifyFifo | None = None
        self.error: str | None = None
        self._witness_task: asyncio.Task[None] | None = None
        self.sync: SyncService | None = None
        self.sync_error: str | None = None
        self._lock = threading.RLock()
        ctx.state["ha"] = self.state
        ctx.state["ha-command"] = self.command

    @classmethod
    def with_gate(cls, gate: Any) -> Any:
        """A DoorSpec factory bound to the daemon's VipGate (the composition root's)."""
        return lambda ctx, section: cls(ctx, section, gate)

    # -- Door -----------------------------------------------------------------------------
    async def start(self) -> None:
        self._set_snat_ports(self.settings.sync.snat_ports)
        await self._set_sync(self.settings.sync)
        if self.settings.enabled:
            await asyncio.get_running_loop().run_in_executor(None, self._enable)
            self._start_checks()
        else:
            # The datapath is never touched from the loop (netlink, map writes).
            await asyncio.get_running_loop().run_in_executor(None, self._apply_held)

    async def reconfigure(self, section: Section) -> None:
        new = HaSettings.from_section(section)
        loop = asyncio.get_running_loop()
        self._set_snat_ports(new.sync.snat_ports)
        await self._set_sync(new.sync)
        await self._stop_checks()
        if not new.enabled:
            await loop.run_in_executor(None, self._disable)
            with self._lock:
                self.settings = new
            await loop.run_in_executor(None, self._apply_held)
            return
        with self._lock:
            old, self.settings = self.settings, new
            names = {i.name for i in new.instances}
            for name in list(self.roles):
                if name not in names:
                    del self.roles[name]
            self.takeover &= names
            self.peer_holds = {n: m for n, m in self.peer_holds.items() if n in names}
            self.standby &= names
        if old.witness != new.witness:
            self.witness_ok = None
        if self.keepalived is None:
            await loop.run_in_executor(None, self._enable)
        else:
            await loop.run_in_executor(None, self._write_files_and_reload)
        await loop.run_in_executor(None, self._apply_held)
        self._start_checks()

    async def close(self) -> None:
        await self._set_sync(SyncSettings())
        await self._stop_checks()
        await asyncio.get_running_loop().run_in_executor(None, self._disable)
        # The pinned datapath forwards on after the daemon: it must not answer for VIPs
        # this node no longer holds (keepalived has released them).
        if self.gate is not None and self.settings.enabled:
            await asyncio.get_running_loop().run_in_executor(
                None, self.gate.set_held, self._all_vips()
            )

    async def _set_sync(self, new: SyncSettings) -> None:
        """(Re)start the sync channel when its settings changed; None: no channel."""
        old = self.sync.settings if self.sync is not None else SyncSettings()
        if new == old and (self.sync is not None or not new.address):
            return
        if self.sync is not None:
            await self.sync.close()
            self.sync = None
        self.sync_error = None
        self._set_synced(not (new.address and new.key and new.peers))
        if new.address and new.key:
            sync = SyncService(new, self.gate, self._on_synced)
            try:
                await sync.start()
            except OSError as exc:  # the address is not (yet) ours: say so, serve on
                self.sync_error = f"sync channel cannot listen: {exc}"
                log.error("ha sync: cannot listen", extra={"error": str(exc)})
                await sync.close()
                return
            self.sync = sync

    def _on_synced(self, peer: str) -> None:
        """On the loop: a peer's full dump is in (its flows are installed or queued)."""
        if not self.synced:
            log.info("ha sync: synced", extra={"peer": peer})
            self._set_synced(True)

    def _set_synced(self, synced: bool) -> None:
        with self._lock:
            if synced == self.synced:
                return
            self.synced = synced
            if self.settings.enabled and self.paths.root.exists():
                self._write_track_files()  # keepalived watches it: no reload

    def _set_snat_ports(self, ports: tuple[int, int] | None) -> None:
        """This node's full-NAT source ports (one map write). Kept when the daemon stops:
        the pinned program forwards on."""
        hooks = getattr(self.gate, "flows", None) if self.gate is not None else None
        if hooks is not None:
            try:
                hooks.set_snat_ports(*(ports or (None, None)))
            except (OSError, ValueError) as exc:
                log.error("ha: snat ports not set", extra={"error": str(exc)})

    def status(self) -> dict[str, Any]:
        if not self.settings.enabled and self.sync is not None:
            return {"state": "sync-only"}
        if not self.settings.enabled:
            return {"state": "disabled"}
        kp = self.keepalived
        out: dict[str, Any] = {"state": "running" if kp and kp.pid else "starting"}
        out["roles"] = ",".join(f"{n}={r['role']}" for n, r in sorted(self.roles.items()))
        if kp is not None and kp.error:
            out["state"], out["error"] = "retrying", kp.error
        return out

    # -- keepalived and its files ---------------------------------------------------------
    def _enable(self) -> None:
        self.paths.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._write_files()
        if self.fifo is None:
            self.fifo = NotifyFifo(self.paths.fifo, self._on_role)
            self.fifo.start()
        self.keepalived = KeepalivedProcess(self.paths, on_exit=self._on_keepalived_exit)
        self.keepalived.start()

    def _disable(self) -> None:
        if self.keepalived is not None:
            self.keepalived.stop()
            self.keepalived = None
        if self.fifo is not None:
            self.fifo.close()
            self.fifo = None
        with self._lock:
            for role in self.roles.values():
                role.update(role="stopped", since=_now())

    def _router_id(self) -> str:
        return (socket.gethostname() or "sluice")[:32]

    def _write_files(self) -> None:
        with self._lock:
            self._write_track_files()
            text = render(self.settings, self.paths, self._router_id(),
                          frozenset(self.takeover))  # fmt: skip
        write_atomic(self.paths.conf, text)

    def _write_track_files(self) -> None:
        """fault: the witness is lost (or not yet seen) or the operator released the node;
        hold: not synced yet (priority down to 1)."""
        witness_lost = self.settings.witness is not None and not self.witness_ok
        fault = 1 if (witness_lost or self.released) else 0
        write_atomic(self.paths.fault_file, f"{fault}\n")
        write_atomic(self.paths.hold_file, f"{0 if self.synced else 1}\n")
        for inst in self.settings.instances:
            standby = inst.name in self.standby and inst.name not in self.takeover
            write_atomic(self.paths.peer_file(inst.name), f"{1 if standby else 0}\n")

    def _write_files_and_reload(self) -> None:
        self._write_files()
        if self.keepalived is not None:
            self.keepalived.reload()

    def _on_keepalived_exit(self, why: str) -> None:
        """keepalived died (its VIPs are gone with it): answer for none until it says."""
        with self._lock:
            for role in self.roles.values():
                role.update(role="stopped", since=_now())
        self._apply_held()

    # -- roles ----------------------------------------------------------------------------
    def _all_vips(self) -> list[str]:
        return [v for i in self.settings.instances for v in i.vips]

    def _held_vips(self) -> list[str]:
        with self._lock:
            return [v for i in self.settings.instances
                    if self.roles.get(i.name, {}).get("role") != "master" for v in i.vips]

    def _apply_held(self) -> None:
        if self.gate is not None:
            counts = self.gate.set_held(self._held_vips())
            if counts["paused"] or counts["released"]:
                log.info("ha: datapath follows the roles", extra=counts)

    def _on_role(self, instance: str, role: str) -> None:
        """On the FIFO thread: one line from keepalived."""
        with self._lock:
            if instance not in {i.name for i in self.settings.instances}:
                return
            old = self.roles.get(instance, {}).get("role", "init")
            now = _now()
            self.roles[instance] = {"role": role, "since": now}
            if role == "master" and old != "master":
                self.last_failover = now
            if role == "master":
                # A fresh master judges the VIP anew: the old master answering for a moment
                # during the handover is not a second master.
                self.standby.discard(instance)
                self._vip_rounds[instance] = (0, 0)
            done_takeover = role == "master" and instance in self.takeover
            if done_takeover:
                self.takeover.discard(instance)
        log.warning("ha: role change", extra={"instance": instance, "from": old, "to": role})
        self._apply_held()
        if self.ctx.bus is not None:
            # "role" is the node's (what the BGP door follows); the instance's is apart.
            with self._lock:
                node = "master" if any(r.get("role") == "master"
                                       for r in self.roles.values()) else "backup"  # fmt: skip
            self.ctx.bus.publish({"type": "ha-role", "role": node, "instance": instance,
                                  "instance-role": role, "previous": old,
                                  "time": _now()})  # fmt: skip
        if done_takeover:  # back to the configured priority and nopreempt
            self._write_files_and_reload()

    # -- split-brain guards: the witness, and the VIP answered elsewhere ---------------------
    def _start_checks(self) -> None:
        if self.settings.witness is not None and self._witness_task is None:
            self._witness_task = asyncio.ensure_future(self._watch_witness())
        if self.vipcheck is None:
            s = self.settings
            targets = [Target(i.name, i.interface, i.vips[0]) for i in s.instances]
            self.vipcheck = VipCheck(targets, s.witness_interval_ms / 1000, self._on_vip_round)
            self.vipcheck.start()

    async def _stop_checks(self) -> None:
        task, self._witness_task = self._witness_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        check, self.vipcheck = self.vipcheck, None
        if check is not None:
            await asyncio.get_running_loop().run_in_executor(None, check.stop)

    def _on_vip_round(self, instance: str, mac: bytes | None) -> None:
        """On the vipcheck thread, every round. Another node answers for the instance's
        VIPs: stand back (FAULT) at once if this node is not master; if it is (two
        masters), the lower MAC yields after `witness-misses` rounds in a row, so the old
        master's last answers during a handover do not count. Nobody has answered for
        `witness-misses` rounds: rejoin the election."""
        misses = self.settings.witness_misses
        with self._lock:
            seen, silent = self._vip_rounds.get(instance, (0, 0))
            seen, silent = (seen + 1, 0) if mac is not None else (0, silent + 1)
            self._vip_rounds[instance] = (seen, silent)
            before = instance in self.standby
            if mac is not None:
                self.peer_holds[instance] = mac.hex(":")
                own = self._own_mac(instance)
                master = self.roles.get(instance, {}).get("role") == "master"
                if not master or (seen >= misses and (own is None or own < mac)):
                    self.standby.add(instance)
            elif silent >= misses:
                self.peer_holds.pop(instance, None)
                self.standby.discard(instance)
            if (instance in self.standby) == before:
                return
            self._write_track_files()
        log.info("ha: " + ("standing back: another node answers for the vips" if not before
                           else "vips free: rejoining the election"),
                 extra={"instance": instance, "mac": mac.hex(":") if mac else "-"})  # fmt: skip

    def _own_mac(self, instance: str) -> bytes | None:
        check = self.vipcheck
        inst = next((i for i in self.settings.instances if i.name == instance), None)
        if check is None or inst is None:
            return None
        return check.macs.get(inst.interface)

    async def _watch_witness(self) -> None:
        from appliance.probes.base import ProbeSpec
        from appliance.probes.icmp import Pinger

        settings = self.settings
        assert settings.witness is not None
        interval = settings.witness_interval_ms / 1000
        spec = ProbeSpec(type="ping", address=settings.witness, port=0, timeout=interval)
        pinger = Pinger()
        misses = 0
        loop = asyncio.get_running_loop()
        try:
            while True:
                started = loop.time()
                result = await pinger.ping(spec)
                misses = 0 if result.ok else misses + 1
                now_ok: bool | None = self.witness_ok
                if result.ok:
                    now_ok = True
                elif misses >= settings.witness_misses:
                    now_ok = False
                if now_ok is not None and now_ok != self.witness_ok:
                    self._witness_changed(now_ok, result.error)
                await asyncio.sleep(max(0.0, interval - (loop.time() - started)))
        finally:
            pinger.close()

    def _witness_changed(self, ok: bool, error: str) -> None:
        with self._lock:
            self.witness_ok = ok
            self._write_track_files()
        log.warning("ha: witness " + ("reachable" if ok else "lost: this node may not be master"),
                    extra={"witness": self.settings.witness, "error": error or "-"})
        if self.ctx.bus is not None:
            self.ctx.bus.publish({"type": "ha-witness", "witness": self.settings.witness,
                                  "reachable": ok})  # fmt: skip

    # -- operations -----------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """What `sluice ha status`, NETCONF state and the console read."""
        with self._lock:
            s = self.settings
            kp = self.keepalived
            return {
                "enabled": s.enabled,
                "instances": [
                    {"name": i.name, "role": self._role(i.name),
                     "vrrp-state": self.roles.get(i.name, {}).get("role", "init"),
                     "since": self.roles.get(i.name, {}).get("since"),
                     "peer-holds-vips": self.peer_holds.get(i.name),
                     "virtual-router-id": i.vrid, "priority": i.priority,
                     "interface": i.interface, "vips": list(i.vips), "peers": list(i.peers),
                     "preempt": i.preempt, "takeover-pending": i.name in self.takeover}
                    for i in s.instances
                ],
                "witness": s.witness,
                "witness-reachable": self.witness_ok,
                "released": self.released,
                "synced": self.synced,
                "last-failover": self.last_failover,
                "sync": (self.sync.status() if self.sync is not None
                         else {"error": self.sync_error} if self.sync_error else None),
                "keepalived": {"pid": kp.pid if kp else None,
                               "restarts": kp.restarts if kp else 0,
                               "error": kp.error if kp else None},
            }

    def _node_fault(self) -> bool:
        return self.released or (self.settings.witness is not None and not self.witness_ok)

    def _role(self, instance: str) -> str:
        """keepalived's state, except that standing back for a peer that answers for the
        VIPs (FAULT by the peer track file alone) is what an operator calls backup."""
        role = self.roles.get(instance, {}).get("role", "init")
        if role == "fault" and instance in self.standby and not self._node_fault():
            return "backup"
        return role

    def command(self, action: str, instance: str | None = None) -> dict[str, Any]:
        """takeover: become master (preempting the peer once; `instance`: only that one);
        release: the whole node steps down and stays out (FAULT) until takeover or resume;
        resume: rejoin as backup. Any thread."""
        if action not in ACTIONS:
            raise ValueError(f"action must be one of {', '.join(ACTIONS)}, not {action!r}")
        with self._lock:
            if not self.settings.enabled:
                raise ValueError("HA is not configured (/sluice:ha has no instance)")
            names = [i.name for i in self.settings.instances]
            if instance is not None and instance not in names:
                raise LookupError(f"no HA instance {instance!r} (configured: {', '.join(names)})")
            if action == "release":
                self.released = True
            elif action == "resume":
                self.released = False
            else:
                self.released = False
                chosen = [instance] if instance else names
                self.takeover |= {
                    n for n in chosen if self.roles.get(n, {}).get("role") != "master"
                }
        if action == "takeover":
            self._write_files_and_reload()
        else:
            with self._lock:
                self._write_track_files()  # keepalived watches them: no reload
        log.warning("ha: operator " + action, extra={"instance": instance or "*"})
        return self.state()
