"""keepalived.conf from the HA settings: the only place that knows keepalived's syntax.

What the generated config does, and why:
- VRRPv3 with unicast peers (no multicast on telco links), `nopreempt` unless the instance
  asks for preemption (a returning node must not cause a second failover);
- roles come back through `vrrp_notify_fifo` (one line per change, no script forks);
- track files: `fault` (weight 0: a non-zero value puts every instance in FAULT: the
  witness is lost, or the operator released the node), one `peer-<instance>` per instance
  (weight 0: another node answers for the instance's VIPs, see vipcheck.py) and `hold` (a
  node not yet synced advertises priority 1, so it loses elections against a synced peer);
- `garp_master_repeat`: the new master repeats its gratuitous ARPs / unsolicited NAs, so
  a client that missed the first one still moves.

Overrides (`sluice ha takeover`): an instance in `takeover` is rendered with priority 254
and without `nopreempt`: it preempts the current master, whose adverts carry a lower
priority (a master always yields to a higher priority advert).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from appliance.ha.settings import HaSettings, Instance

TAKEOVER_PRIORITY = 254


@dataclass(frozen=True)
class Paths:
    """Where one appliance's keepalived files live (its state dir: two appliances on one
    machine never share a file)."""

    root: Path

    @property
    def conf(self) -> Path:
        return self.root / "keepalived.conf"

    @property
    def fifo(self) -> Path:
        return self.root / "notify.fifo"

    @property
    def fault_file(self) -> Path:
        return self.root / "fault"

    @property
    def hold_file(self) -> Path:
        return self.root / "hold"

    def peer_file(self, instance: str) -> Path:
        return self.root / f"peer-{instance}"

    @property
    def pid(self) -> Path:
        return self.root / "keepalived.pid"

    @property
    def vrrp_pid(self) -> Path:
        return self.root / "vrrp.pid"


def _advert(ms: int) -> str:
    return f"{ms / 1000:.2f}".rstrip("0").rstrip(".")


def _instance(inst: Instance, router_id: str, takeover: bool) -> list[str]:
    priority = TAKEOVER_PRIORITY if takeover else inst.priority
    lines = [
        f"vrrp_instance {inst.name} {{",
        "    state BACKUP",  # every node starts as backup; the election decides
        f"    interface {inst.interface}",
        f"    virtual_router_id {inst.vrid}",
        f"    priority {priority}",
        f"    advert_int {_advert(inst.advert_ms)}",
        "    version 3",
    ]
    if not (inst.preempt or takeover):
        lines.append("    nopreempt")
    if inst.source:
        lines.append(f"    unicast_src_ip {inst.source}")
    lines.append("    unicast_peer {")
    lines += [f"        {peer}" for peer in inst.peers]
    lines.append("    }")
    lines.append("    virtual_ipaddress {")
    prefix = 128 if inst.v6 else 32
    lines += [f"        {vip}/{prefix} dev {inst.interface}" for vip in inst.vips]
    lines += [f"        {address}/{prefix} dev {inst.return_interface}"
              for address in inst.return_addresses]  # fmt: skip
    lines.append("    }")
    lines += [
        "    track_file {",
        "        sluice_fault weight 0",
        f"        sluice_peer_{inst.name} weight 0",
        # Not synced: priority drops to 1 (the weight takes it down to 1, never below).
        f"        sluice_hold weight -{max(priority - 1, 0)}" if priority > 1 else "",
        "    }",
        "    garp_master_repeat 3",
        "    garp_master_refresh 10",
        "}",
    ]
    return [line for line in lines if line]


def render(settings: HaSettings, paths: Paths, router_id: str,
           takeover: frozenset[str] = frozenset()) -> str:  # fmt: skip
    """The whole keepalived.conf. `takeover`: instances to preempt the current master."""
    out = [
        "# Written by sluice from /sluice:ha; changes here are overwritten.",
        "global_defs {",
        # First: keepalived resolves the FIFO's user when it parses vrrp_notify_fifo, and
        # without a script user set before it (Debian has no keepalived_script user) a
        # reload silently drops the FIFO. No script is ever run.
        "    script_user root",
        f"    router_id {router_id}",
        f"    vrrp_notify_fifo {paths.fifo}",
        "    vrrp_garp_master_delay 1",
        "    vrrp_garp_master_repeat 3",
        "}",
        "vrrp_track_file sluice_fault {",
        f"    file {paths.fault_file}",
        "}",
        "vrrp_track_file sluice_hold {",
        f"    file {paths.hold_file}",
        "}",
    ]
    for inst in settings.instances:
        out += [f"vrrp_track_file sluice_peer_{inst.name} {{",
                f"    file {paths.peer_file(inst.name)}",
                "}"]  # fmt: skip
    for inst in settings.instances:
        out += _instance(inst, router_id, inst.name in takeover)
    return "\n".join(out) + "\n"
