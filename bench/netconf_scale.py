"""NETCONF scale: edit-config + commit of N services in one RPC, get-config of M services,
<get> of M services with operational state (from the snapshot), and the O(N^3) XPath filter
of the issue answered with an rpc-error within its budget.

The server runs on 127.0.0.1 in a background loop thread over a ConfigService on a
temporary store (tests/netconfkit.py); ncclient is the client, as an OSS would use it.
Times are wall-clock at the client, so they include SSH, framing, XML and ncclient's own
parsing (ncclient adds up to ~0.1 s per RPC: its transport thread polls).

    .venv/bin/python bench/netconf_scale.py [--edit 1000] [--total 10000]

Prints a Markdown table and writes bench/results/netconf_scale.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import netconfkit as kit


def service(i: int) -> str:
    a, b = divmod(i, 250)
    return (f"<service><name>s{i}</name><vip>198.18.{a}.{b + 1}</vip><port>80</port>"
            f"<endpoint><address>198.19.{a}.{b + 1}</address><port>8080</port></endpoint>"
            "</service>")


def config(first: int, last: int) -> str:
    body = "".join(service(i) for i in range(first, last))
    return f'<config><load-balancer xmlns="{kit.SLUICE_NS}">{body}</load-balancer></config>'


def fake_state() -> dict[str, Any]:
    """Providers as the datapath's, answering at once: the bench measures the door."""

    def service(name: str) -> dict[str, Any]:
        return {"oper-status": "up", "endpoints-up": 1, "packets": 10, "bytes": 1000,
                "active-sessions": 1, "total-sessions": 2}

    def endpoint(name: str, address: str, port: int) -> dict[str, Any]:
        return {"health": "up", "packets": 5, "bytes": 500}

    def datapath() -> dict[str, Any]:
        return {"interfaces": {"veth0": ["sluice_lb"]}, "maps": {"ct_map": {"entries": 0}}}

    return {"service": service, "endpoint": endpoint, "datapath": datapath}


def get_with_state(m: Any, total: int) -> dict[str, float]:
    ns = {"sl": kit.SLUICE_NS}
    deadline = time.monotonic() + 30
    while True:  # the snapshot refreshes in the background: wait until it covers them all
        t0 = time.perf_counter()
        reply = m.get()
        took = time.perf_counter() - t0
        states = len(reply.data.xpath("//sl:service/sl:state", namespaces=ns))
        if states == total or time.monotonic() > deadline:
            break
    assert states == total, states
    return {f"get {total} services with state": took}


def hostile_xpath(h: Any, m: Any) -> dict[str, float]:
    """The filter from the issue: answered with an rpc-error within the budget."""
    from ncclient.operations import RPCError

    t0 = time.perf_counter()
    try:
        m.get(filter=("xpath", "//*[count(//*[count(//*)>0])>0]"))
    except RPCError as exc:
        assert "budget" in exc.message, exc.message
    return {"get with the O(N^3) xpath filter (rpc-error)": time.perf_counter() - t0}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--edit", type=int, default=1000)
    ap.add_argument("--total", type=int, default=10000)
    args = ap.parse_args()
    rows: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        h = kit.start(Path(tmp), state=fake_state())
        try:
            with h.connect(timeout=120) as m:
                t0 = time.perf_counter()
                m.edit_config(config(0, args.edit), target="candidate")
                t1 = time.perf_counter()
                m.commit()
                t2 = time.perf_counter()
                rows[f"edit-config {args.edit} services (candidate)"] = t1 - t0
                rows[f"commit {args.edit} services"] = t2 - t1
                rows[f"edit-config + commit {args.edit} services"] = t2 - t0
                if args.total > args.edit:
                    m.edit_config(config(args.edit, args.total), target="candidate",
                                  test_option="set")
                    m.commit()
                t0 = time.perf_counter()
                reply = m.get_config("running")
                rows[f"get-config {args.total} services"] = time.perf_counter() - t0
                count = len(reply.data.xpath("//sl:service", namespaces={"sl": kit.SLUICE_NS}))
                assert count == max(args.total, args.edit), count
                rows.update(get_with_state(m, max(args.total, args.edit)))
                rows.update(hostile_xpath(h, m))
        finally:
            kit.stop(h)
    print("| operation | seconds |\n|---|---|")
    for name, secs in rows.items():
        print(f"| {name} | {secs:.2f} |")
    out = Path(__file__).resolve().parent / "results" / "netconf_scale.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"python": platform.python_version(), "results": rows}, indent=2))


if __name__ == "__main__":
    main()
