"""kube-loxilb's calls end in real traffic: a rule created through the HTTP door carries
HTTP through the VIP to the endpoints, /metrics counters follow that traffic, and the
delete stops it. The daemon runs in the LB namespace; the client namespace calls the API
on the balancer's address with curl, as a cluster node would."""

from __future__ import annotations

import json
from pathlib import Path

import httpkit as hk
import netkit as kit
import pytest
from daemonkit import Daemon
from dpkit import HTTP_PORT, VIP4, backend_addr, build_lbnet, wait_for
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.datapath

API = "198.18.0.254"
NAME = "default_web:llb-inst0"
SERVICE = "lx-tcp-198.19.0.10-80"


def curl(net: object, method: str, path: str, body: bytes | None, tmp: Path,
         port: int) -> tuple[int, str, str]:  # fmt: skip
    """(status, content type, body) of one call from the client namespace, with the
    headers kube-loxilb sends (Content-Type on every method, the bare token)."""
    cmd = ["curl", "-sS", "--noproxy", "*", "--max-time", "10", "-X", method,
           "-H", "Content-Type: application/json", "-H", f"Authorization: {hk.RW_TOKEN}",
           "-w", "\n%{http_code} %{content_type}"]  # fmt: skip
    if body is not None:
        (tmp / "body.json").write_bytes(body)
        cmd += ["--data-binary", f"@{tmp / 'body.json'}"]
    res = net.client.run([*cmd, f"http://{API}:{port}{path}"], timeout=15)  # type: ignore[attr-defined]
    assert res.returncode == 0, res.stderr
    text, _, tail = res.stdout.rpartition("\n")
    status, _, ctype = tail.partition(" ")
    return int(status), ctype, text


def metrics(net: object, tmp: Path, port: int) -> dict[tuple[str, tuple], float]:
    status, _, text = curl(net, "GET", "/metrics", None, tmp, port)
    assert status == 200
    out = {}
    for family in text_string_to_metric_families(text + "\n"):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_rule_from_the_api_carries_traffic_and_metrics_follow(
    netkit: kit.Topology, tmp_path: Path
) -> None:
    pytest.importorskip("bcc", reason="needs bcc (python3-bpfcc)")
    net = build_lbnet(netkit, n_backends=2)
    d = Daemon(tmp_path, datapath="on", pin_dir=netkit.pin_dir("http"), netns=net.lb.ns)
    d.start(timeout=60)
    port = 11111
    try:
        d.apply({
            "datapath": {"interface": [{"name": i} for i in net.interfaces]},
            "management": {"user": hk.users(), "http": hk.http_section(port, API)},
        })  # fmt: skip
        wait_for(lambda: curl(net, "GET", "/netlox/v1", None, tmp_path, port)[0] == 200,
                 timeout=15, step=0.2)
        eps = [(backend_addr(1), HTTP_PORT), (backend_addr(2), HTTP_PORT)]
        body = hk.kube_create_body(VIP4, 80, eps, NAME)
        assert curl(net, "POST", "/netlox/v1/config/loadbalancer", body, tmp_path, port) == (
            200, "application/json", '{"result": "Success"}')

        # HTTP through the VIP reaches both endpoints (once the tcp probes say up).
        wait_for(lambda: {net.get(VIP4) for _ in range(4)} == {"b1", "b2"}, timeout=20,
                 step=0.5)
        before = metrics(net, tmp_path, port)
        for _ in range(10):
            assert net.get(VIP4) in ("b1", "b2")

        key = ("sluice_service_sessions_total", (("service", SERVICE),))
        lx_key = ("loxilb_service_traffic_packets_total", (("service", NAME),))

        def grown() -> dict | None:
            now = metrics(net, tmp_path, port)
            ok = now.get(key, 0) >= before.get(key, 0) + 10 and now.get(lx_key, 0) > before.get(
                lx_key, 0)
            return now if ok else None

        now = wait_for(grown, timeout=10, step=0.5)
        assert now[("loxilb_lb_rules", ())] == 1
        assert now[("sluice_metrics_endpoint_series_omitted", ())] == 0
        assert now[("loxilb_healthy_endpoints", ())] == 2
        assert now[("sluice_endpoint_up", (("endpoint", f"{backend_addr(1)}:{HTTP_PORT}"),
                                           ("service", SERVICE)))] == 1
        # /netlox/v1/metrics is the same exposition.
        assert curl(net, "GET", "/netlox/v1/metrics", None, tmp_path, port)[0] == 200

        # The listing shows endpoint state and counters from the same snapshot.
        status, ctype, text = curl(net, "GET", "/netlox/v1/config/loadbalancer/all", None,
                                   tmp_path, port)
        assert (status, ctype) == (200, "application/json")
        (rule,) = json.loads(text)["lbAttr"]
        assert {e["state"] for e in rule["endpoints"]} == {"active"}
        assert sum(int(e["counter"].split(":")[0]) for e in rule["endpoints"]) > 0

        # Deleting the rule (body and query as kube-loxilb sends them) stops the traffic.
        path = f"/netlox/v1/config/loadbalancer/externalipaddress/{VIP4}/port/80/protocol/tcp"
        assert curl(net, "DELETE", path + "?bgp=true&block=0", body, tmp_path, port)[0] == 200
        with pytest.raises(RuntimeError):
            net.get(VIP4, timeout=1)
    finally:
        d.stop()
