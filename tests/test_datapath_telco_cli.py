"""NAT64, NAT46 and L3-DSR through the CLI of a running daemon (`sluice run --datapath on`
in the LB namespace); bad flags are refused naming the flag, changing nothing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from dpkit import HTTP_PORT, SNAT4, VIP4, VIP6, LbNet, backend_addr
from test_datapath_l3dsr import attach_decap, outer

pytestmark = pytest.mark.datapath


def test_nat64_nat46_and_l3dsr_through_the_cli(lb_daemon: tuple[LbNet, Any],
                                                tmp_path: Path) -> None:  # fmt: skip
    net, d = lb_daemon
    path = tmp_path / "dp.json"
    path.write_text(json.dumps({"datapath": {"interface": [{"name": i} for i in net.interfaces]}}))
    assert d.cli("apply", "-f", str(path)).returncode == 0
    for b in net.backends:
        b.start_http_server(HTTP_PORT)
        b.start_http_server(81)
    bpf = attach_decap(net.backends)
    try:
        v4 = ",".join(f"{backend_addr(n)}:{HTTP_PORT}" for n in (1, 2))
        v6 = ",".join(f"[{backend_addr(n, 6)}]:{HTTP_PORT}" for n in (1, 2))
        dsr = ",".join(f"{backend_addr(n)}:81" for n in (1, 2))
        for args in (["web64", "--vip", VIP6, "--port", "80", "--endpoints", v4,
                      "--mode", "full-nat", "--snat", SNAT4, "--nat64"],
                     ["web46", "--vip", VIP4, "--port", "80", "--endpoints", v6,
                      "--mode", "one-arm", "--nat46"],
                     ["l3", "--vip", VIP4, "--port", "81", "--endpoints", dsr,
                      "--mode", "dsr", "--dsr-tunnel", "ip-in-ip"]):  # fmt: skip
            res = d.cli("lb", "add", *args)
            assert res.returncode == 0, res.stderr
        assert [net.curl(VIP6, 80) for _ in range(2)] == ["b1", "b2"]
        assert [net.curl(VIP4, 80) for _ in range(2)] == ["b1", "b2"]
        assert [net.curl(VIP4, 81) for _ in range(2)] == ["b1", "b2"]
        assert outer(bpf[b"seen"], 0)[0] > 0  # the DSR requests came through the tunnel
        assert d.cli_json("lb", "show", "web64")["nat64"] is True
        assert d.cli_json("lb", "show", "web46")["nat46"] is True
        assert d.cli_json("lb", "show", "l3")["dsr-tunnel"] == "ip-in-ip"
        shown = d.cli("lb", "show", "l3").stdout
        assert "dsr-tunnel" in shown and "ip-in-ip" in shown
    finally:
        bpf.cleanup()
    before = d.cli_json("config", "history")
    for args, flag in (
        (["--vip", VIP6, "--port", "82", "--endpoints", f"[{backend_addr(1, 6)}]:82",
          "--mode", "full-nat", "--snat", "2001:db8:ff::100", "--nat46"], "--nat46"),
        (["--vip", VIP4, "--port", "83", "--endpoints", f"{backend_addr(1)}:83",
          "--dsr-tunnel", "ip-in-ip"], "--dsr-tunnel"),
        (["--vip", VIP4, "--port", "84", "--endpoints", f"{backend_addr(1)}:84",
          "--mode", "dsr", "--dsr-tunnel", "gre"], "--dsr-tunnel"),
    ):  # fmt: skip
        res = d.cli("lb", "add", "bad", *args)
        assert res.returncode == 2 and flag in res.stderr, res.stderr
    assert d.cli_json("config", "history") == before
