"""Prometheus metrics from the state snapshot: /metrics and /netlox/v1/metrics.

One collector reads the snapshot's published `State` (never a provider, never a map walk)
and the config service's in-memory running config. The exposition text is built on a
worker thread (10,000 services × 32 endpoints are a third of a million samples, too much
for the event loop) and reused while the snapshot has not changed, so a burst of scrapes
costs one build. Sluice's own names (`sluice_*`) and loxilb's (`loxilb_*`, so dashboards
made for loxilb work) come from the same reading.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

UP = ("up",)
DOWN = ("down", "degraded")
# Per-endpoint series only up to this many endpoints: 10,000 services × 32 endpoints would
# be millions of samples per scrape (minutes to build, more than a Prometheus wants from
# one target). Above it the per-service series and the totals stay, and
# sluice_metrics_endpoint_series_omitted says the endpoint ones were left out.
ENDPOINT_SERIES_LIMIT = 10_000


def _num(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


class SnapshotCollector(Collector):
    def __init__(self, state: Callable[[], Any], config_service: Any,
                 doors: Callable[[], Mapping[str, Any]] | None = None) -> None:  # fmt: skip
        self.state = state
        self.config_service = config_service
        self.doors = doors

    def collect(self) -> Iterator[Metric]:
        st = self.state()
        services = list((getattr(self.config_service, "services_effective", None) or {})
                        .values())
        yield from self._services(st, services)
        yield from self._datapath(st)
        yield from self._control(st)

    def _services(self, st: Any, services: list[dict[str, Any]]) -> Iterator[Metric]:
        sl = ["service"]
        el = ["service", "endpoint"]
        s_pk = CounterMetricFamily("sluice_service_packets", "Packets forwarded", labels=sl)
        s_by = CounterMetricFamily("sluice_service_bytes", "Bytes forwarded", labels=sl)
        s_new = CounterMetricFamily("sluice_service_sessions", "Sessions created", labels=sl)
        s_act = GaugeMetricFamily("sluice_service_active_sessions", "Sessions in conntrack",
                                  labels=sl)
        s_up = GaugeMetricFamily("sluice_service_up", "1 when the service is up", labels=sl)
        s_eup = GaugeMetricFamily("sluice_service_endpoints_up", "Endpoints up", labels=sl)
        e_pk = CounterMetricFamily("sluice_endpoint_packets", "Packets forwarded", labels=el)
        e_by = CounterMetricFamily("sluice_endpoint_bytes", "Bytes forwarded", labels=el)
        e_act = GaugeMetricFamily("sluice_endpoint_active_sessions", "Sessions in conntrack",
                                  labels=el)
        e_up = GaugeMetricFamily("sluice_endpoint_up",
                                 "Endpoint health: 1 up, 0 down, absent unknown", labels=el)
        e_rtt = GaugeMetricFamily("sluice_endpoint_probe_rtt_seconds",
                                  "Round-trip time of the last successful probe", labels=el)
        lx_sb = CounterMetricFamily("loxilb_service_traffic_bytes", "Bytes per service",
                                    labels=sl)
        lx_sp = CounterMetricFamily("loxilb_service_traffic_packets", "Packets per service",
                                    labels=sl)
        lx_eb = CounterMetricFamily("loxilb_endpoint_traffic_bytes", "Bytes per endpoint",
                                    labels=["service", "dip"])
        flows = {"tcp": 0.0, "udp": 0.0, "sctp": 0.0}
        total_pk = total_by = new_flows = 0.0
        healthy = unhealthy = 0
        per_endpoint = sum(len(s.get("endpoint", ())) for s in services) <= (
            ENDPOINT_SERIES_LIMIT)
        for svc in services:
            name = svc["name"]
            lx_name = (svc.get("loxilb-rule") or {}).get("name") or name
            s = st.service(name)
            pk, by = _num(s.get("packets")), _num(s.get("bytes"))
            total_pk, total_by = total_pk + pk, total_by + by
            new_flows += _num(s.get("total-sessions"))
            proto = svc.get("protocol", "tcp")
            if proto in flows:
                flows[proto] += _num(s.get("active-sessions"))
            s_pk.add_metric([name], pk)
            s_by.add_metric([name], by)
            s_new.add_metric([name], _num(s.get("total-sessions")))
            s_act.add_metric([name], _num(s.get("active-sessions")))
            s_up.add_metric([name], 1.0 if s.get("oper-status") == "up" else 0.0)
            s_eup.add_metric([name], _num(s.get("endpoints-up")))
            lx_sb.add_metric([lx_name], by)
            lx_sp.add_metric([lx_name], pk)
            for ep in svc.get("endpoint", []):
                e = st.endpoint(name, ep["address"], ep["port"])
                health = e.get("health")
                healthy += health in UP
                unhealthy += health in DOWN
                if not per_endpoint:
                    continue
                label = [name, f"{ep['address']}:{ep['port']}"]
                e_pk.add_metric(label, _num(e.get("packets")))
                e_by.add_metric(label, _num(e.get("bytes")))
                e_act.add_metric(label, _num(e.get("active-sessions")))
                if health in UP or health in DOWN:
                    e_up.add_metric(label, 1.0 if health in UP else 0.0)
                if e.get("rtt-us") is not None:
                    e_rtt.add_metric(label, _num(e.get("rtt-us")) / 1e6)
                lx_eb.add_metric([lx_name, str(ep["address"])], _num(e.get("bytes")))
        yield from (s_pk, s_by, s_new, s_act, s_up, s_eup, lx_sb, lx_sp)
        if per_endpoint:
            yield from (e_pk, e_by, e_act, e_up, e_rtt, lx_eb)
        yield GaugeMetricFamily("sluice_metrics_endpoint_series_omitted",
                                f"1 when there are more than {ENDPOINT_SERIES_LIMIT} endpoints "
                                "and their own series are left out", value=0 if per_endpoint
                                else 1)
        yield GaugeMetricFamily("loxilb_lb_rules", "Load-balancer rules", value=len(services))
        yield GaugeMetricFamily("loxilb_healthy_endpoints", "Endpoints up", value=healthy)
        yield GaugeMetricFamily("loxilb_unhealthy_endpoints", "Endpoints down",
                                value=unhealthy)
        for proto, n in flows.items():
            yield GaugeMetricFamily(f"loxilb_active_flow_count_{proto}",
                                    f"Active {proto} flows", value=n)
        yield GaugeMetricFamily("loxilb_new_flows", "Flows created since start",
                                value=new_flows)
        yield CounterMetricFamily("loxilb_processed_packets", "Packets forwarded",
                                  value=total_pk)
        yield CounterMetricFamily("loxilb_processed_bytes", "Bytes forwarded", value=total_by)
        yield CounterMetricFamily("loxilb_fw_drop_packets", "Packets dropped by firewall "
                                  "rules (Sluice has none)", value=0)

    def _datapath(self, st: Any) -> Iterator[Metric]:
        entries = st.conntrack_entries
        ct = ((st.datapath.get("maps") or {}).get("ct_map") or {}) if st.datapath else {}
        capacity = ct.get("capacity") if isinstance(ct, Mapping) else None
        if entries is not None:
            yield GaugeMetricFamily("sluice_conntrack_entries",
                                    "Conntrack entries (two per flow)", value=entries)
            yield GaugeMetricFamily("loxilb_active_conntrack_entries",
                                    "Active conntrack entries", value=entries)
        if capacity is not None:
            yield GaugeMetricFamily("sluice_conntrack_capacity", "Conntrack table size",
                                    value=_num(capacity))
            yield GaugeMetricFamily("loxilb_conntrack_max_entries", "Conntrack table size",
                                    value=_num(capacity))

    def _control(self, st: Any) -> Iterator[Metric]:
        commit = getattr(self.config_service, "commit_id", None)
        yield CounterMetricFamily("sluice_config_commits", "Commits since the store was "
                                  "created (the last commit's id)", value=_num(commit or 0))
        if self.doors is None:
            return
        listening = GaugeMetricFamily("sluice_door_listening",
                                      "1 when the front door is listening", labels=["door"])
        sessions = GaugeMetricFamily("sluice_door_sessions", "Open sessions of the front door",
                                     labels=["door"])
        for name, status in (self.doors() or {}).items():
            listening.add_metric([name], 1.0 if status.get("state") == "listening" else 0.0)
            if "sessions" in status:
                sessions.add_metric([name], _num(status["sessions"]))
        yield listening
        yield sessions


class MetricsEndpoint:
    """The aiohttp handler: the exposition, rebuilt off the loop when the state changed."""

    def __init__(self, collector: SnapshotCollector) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(collector)
        self.collector = collector
        self._cached: tuple[Any, bytes] | None = None
        self._lock = threading.Lock()

    def _build(self) -> bytes:
        st = self.collector.state()
        key = (id(st), st.taken, getattr(self.collector.config_service, "commit_id", None))
        with self._lock:
            if self._cached is not None and self._cached[0] == key:
                return self._cached[1]
            text = generate_latest(self.registry)
            self._cached = (key, text)
            return text

    async def handle(self, request: web.Request) -> web.Response:
        body = await asyncio.to_thread(self._build)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
