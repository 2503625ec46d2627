"""Operational state for <get>: the operational-state snapshot → config false nodes (JSON).

The providers' answers (the datapath reconciler's `state_providers()`: `service(name)`,
`endpoint(name, address, port)`, `datapath()`) are dicts whose keys are already the YANG
state leaves (oper-status, endpoints-up, packets, health, ...). They are never called per
request: `appliance.snapshot` reads them in its own thread, and a <get> reads its latest
state (a map walk or a netlink call on the event loop stalls every session, and the netlink
one fails there).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from appliance import snapshot as snapshots
from appliance.config.paths import BGP, DATAPATH, LOAD_BALANCER, SYSTEM

log = logging.getLogger(__name__)

Doc = dict[str, Any]
# How long a <get> waits, in its worker thread, for a snapshot that predates the last commit
# (so a get right after an edit shows the new service's state) or was never taken.
FRESH_WAIT = 1.0
XDP_MODES = ("native", "generic")  # the model's xdp-interface/mode


def state_source(config_service: Any, providers: Any) -> Callable[[], Doc]:
    """A zero-argument callable building the state document; call it off the event loop.

    `providers`: an `appliance.snapshot.Snapshot`, or the daemon's provider dict (the one
    snapshot stored in it is used, built around the providers if there is none yet).
    """
    snap = snapshots.for_providers(providers, config_service=config_service)

    # Alarms are few and kept in memory (appliance/alarms.py): read them as they are now.
    alarms = providers.get("alarms") if isinstance(providers, Mapping) else None
    # So are the BGP sessions (appliance/bgp/door.py: the speaker's last reports).
    bgp = providers.get("bgp") if isinstance(providers, Mapping) else None
    # So are the HA roles (appliance/ha/door.py): a role change must show at once.
    ha = providers.get("ha") if isinstance(providers, Mapping) else None

    def build() -> Doc:
        state = snap.current()
        commit_id = getattr(config_service, "commit_id", None)
        if state.taken == 0 or (state.commit_id is not None and commit_id is not None
                                and state.commit_id < commit_id):
            state = snap.wait_fresh(state.taken, FRESH_WAIT)
        doc = state_doc(state, _configured(config_service))
        active = alarms() if alarms is not None else []
        if active:
            doc[SYSTEM] = {"state": {"alarm": [
                {k: a[k] for k in ("name", "severity", "text", "since") if k in a}
                for a in active]}}
        if bgp is not None:
            bgp_state = bgp_state_doc(bgp())
            if bgp_state:
                doc[BGP] = {"state": bgp_state}
        if ha is not None:
            ha_state = ha_state_doc(ha())
            if ha_state:
                doc["sluice:ha"] = ha_state
        return doc

    return build


def bgp_state_doc(detail: Mapping[str, Any]) -> Doc:
    """`sluice bgp status`'s answer as the model's /bgp/state."""
    out: Doc = {}
    if detail.get("speaker"):
        out["speaker"] = str(detail["speaker"])
    if detail.get("ha-role"):
        out["ha-role"] = str(detail["ha-role"])
    rows = []
    for n in detail.get("neighbor") or []:
        row = {"address": n["address"], "session-state": n.get("session-state", "idle"),
               "prefixes-sent": int(n.get("prefixes-sent", 0))}  # fmt: skip
        if n.get("since"):
            row["since"] = n["since"]
        rows.append(row)
    if rows:
        out["neighbor"] = rows
    if detail.get("announced"):
        out["announced"] = list(detail["announced"])
    return out if rows else {}


def ha_state_doc(current: Mapping[str, Any]) -> Doc:
    """/sluice:ha/state from the HA door's state(); {} when HA is not configured."""
    sync = _ha_sync_doc(current.get("sync"), current.get("synced"))
    if not current.get("enabled"):
        return {"state": {"sync": sync}} if sync else {}
    state: Doc = {"instance": [
        {"name": i["name"], "role": i["role"], **({"since": i["since"]} if i["since"] else {})}
        for i in current["instances"]]}
    if current.get("witness-reachable") is not None:
        state["witness-reachable"] = bool(current["witness-reachable"])
    if current.get("last-failover"):
        state["last-failover"] = current["last-failover"]
    if sync:
        state["sync"] = sync
    return {"state": state}


def _ha_sync_doc(sync: Mapping[str, Any] | None, synced: Any) -> Doc:
    """/sluice:ha/state/sync from the sync service's status (appliance/ha/sync.py)."""
    if not sync or "listening" not in sync:
        return {}
    out: Doc = {"synced": bool(synced)}
    dp = sync.get("datapath") or {}
    if dp:
        out["flows-installed"] = int(dp.get("installed", 0))
        out["flows-unbound"] = int(dp.get("unbound", 0))
        out["records-refused"] = sum(dp.get("refused-records", {}).values())
    rx, tx = sync.get("peers", {}), sync.get("sending", {})
    peers = []
    for address in sorted(set(rx) | set(tx)):
        r, t = rx.get(address, {}), tx.get(address, {})
        row: Doc = {"address": address, "receiving": bool(r.get("connected")),
                    "sending": bool(t.get("connected")),
                    "flows-received": int(r.get("flows", 0)),
                    "flows-sent": int(t.get("flows", 0))}  # fmt: skip
        lag = r.get("lag") or {}
        for leaf, key in (("lag-p50", "p50-ms"), ("lag-p99", "p99-ms")):
            if lag.get(key) is not None:
                row[leaf] = f"{lag[key]:.2f}"
        peers.append(row)
    if peers:
        out["peer"] = peers
    return out


def _configured(config_service: Any) -> set[str] | None:
    """Names of the running services (state of a service removed since is left out)."""
    effective = getattr(config_service, "services_effective", None)
    if not isinstance(effective, dict):
        return None
    mutex = getattr(config_service, "_mutex", None)
    if mutex is None:
        return set(effective)
    with mutex:
        return set(effective)


def state_doc(state: snapshots.State, configured: set[str] | None = None) -> Doc:
    """The state document of one snapshot: O(services + endpoints)."""
    endpoints: dict[str, list[Doc]] = {}
    for (name, address, port), ep_state in state.endpoints.items():
        counters = _counters(ep_state)
        if counters:
            endpoints.setdefault(name, []).append(
                {"address": address, "port": port, "state": counters})
    services = []
    for name in dict.fromkeys([*state.services, *endpoints]):
        if configured is not None and name not in configured:
            continue
        entry: Doc = {"name": name}
        counters = _counters(state.service(name))
        if counters:
            entry["state"] = counters
        if name in endpoints:
            entry["endpoint"] = endpoints[name]
        if len(entry) > 1:
            services.append(entry)
    doc: Doc = {}
    if services:
        doc[LOAD_BALANCER] = {"service": services}
    dp: Doc = {}
    interfaces = state.datapath.get("interfaces")
    if isinstance(interfaces, Mapping):
        dp["attached-interface"] = sorted(interfaces)
    xdp = state.datapath.get("xdp")
    if isinstance(xdp, Mapping) and xdp:
        dp["xdp-interface"] = [{"name": n, "mode": v["mode"]} for n, v in sorted(xdp.items())
                               if isinstance(v, Mapping) and v.get("mode") in XDP_MODES]
        packets = state.datapath.get("xdp-packets") or {}
        for key in ("forwarded", "passed"):
            if key in packets:
                dp[f"xdp-{key}-packets"] = int(packets[key])
    if state.conntrack_entries is not None:
        dp["conntrack-entries"] = state.conntrack_entries
    if dp:
        doc[DATAPATH] = {"state": dp}
    doc.update(qos_state_doc(state.qos))
    return doc


def qos_state_doc(qos: Mapping[str, Any]) -> Doc:
    """/qos/policer/state (colors) and /mirror/session/state from the ``qos`` provider."""
    doc: Doc = {}
    policers = [{"name": name, "state": {c: dict(v) for c, v in colors.items()}}
                for name, colors in sorted((qos.get("policer") or {}).items())]  # fmt: skip
    if policers:
        doc["sluice:qos"] = {"policer": policers}
    sessions = [{"name": name, "state": dict(counters)}
                for name, counters in sorted((qos.get("mirror") or {}).items())]  # fmt: skip
    if sessions:
        doc["sluice:mirror"] = {"session": sessions}
    return doc


def _counters(state: Mapping[str, Any]) -> Doc:
    # Only scalar leaves; anything nested is not part of the model's state containers.
    return {k: v for k, v in state.items() if isinstance(v, str | int | float | bool)}
