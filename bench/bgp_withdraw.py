"""BGP: how fast vips reach the router, and how fast they leave it.

One appliance (a real `sluice run`, datapath off: the datapath plays no part in this) peers
with a BIRD 2 router (tests/bgpkit.py) in namespaces. --vips services, each its own vip, all
with the same one endpoint (a TCP probe every second, 2 retries, 1 s timeout: a probe bound
of 3 s). Measured, from the router's side (`birdc show route count`, polled every 20 ms):

- announce: from the end of the commit of all services (`sluice apply`, timed apart; the
  session already up) to the router holding every vip;
- endpoint death: from the endpoint's server stopping to the first vip and to the last vip
  gone from the router (--repeat times; the server restarts in between);
- daemon death: from `kill -9` of the daemon to every vip gone.

    .venv/bin/python bench/bgp_withdraw.py [--vips 1000] [--repeat 3]

Prints a Markdown table and writes bench/results/bgp_withdraw.json. Every wait is bounded.
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import netkit as kit  # noqa: E402
from bgpkit import Bird, appliance_peers, bgp_section, lb_addr, router_addr  # noqa: E402
from daemonkit import SLUICE, Daemon  # noqa: E402

BACKEND, PORT = "198.18.11.1", 8080
INTERVAL, TIMEOUT, RETRIES = 1, 1, 2


def vip(i: int) -> str:
    return f"198.19.{i // 250}.{i % 250 + 1}"


def routes(bird: Bird) -> int:
    text = bird.birdc("show", "route", "count")
    match = re.search(r"(\d+) of \d+ routes", text)
    return int(match.group(1)) if match else 0


def until(check: Any, timeout: float, what: str) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if check():
            return time.monotonic()
        time.sleep(0.02)
    raise TimeoutError(f"{what}: not within {timeout} s")


def run(n: int, repeat: int) -> dict[str, Any]:
    probe = {"type": "tcp", "interval": INTERVAL, "timeout": TIMEOUT, "retries": RETRIES,
             "successes-before-up": 1}  # fmt: skip
    services = [{"name": f"s{i}", "vip": vip(i), "port": 80, "health-probe": probe,
                 "endpoint": [{"address": BACKEND, "port": PORT}]} for i in range(n)]  # fmt: skip
    out: dict[str, Any] = {"vips": n, "probe_bound_s": INTERVAL * RETRIES + TIMEOUT}
    with kit.Topology() as topo, tempfile.TemporaryDirectory() as tmp:
        router, lb, backend = topo.host("rtr"), topo.host("lb1"), topo.host("b1")
        topo.link(router, lb, [f"{router_addr(1)}/24"], [f"{lb_addr(1)}/24"])
        topo.link(lb, backend, ["198.18.11.254/24"], [f"{BACKEND}/24"])
        peers = {k: v for k, v in appliance_peers(1).items() if ":" not in v[0]}
        bird = Bird(router, peers)
        server = backend.start_http_server(PORT)
        d = Daemon(Path(tmp), datapath="off", netns=lb.ns)
        d.start(timeout=60)
        try:
            section = bgp_section(1)
            section["neighbor"] = section["neighbor"][:1]
            d.apply({"bgp": section})
            until(lambda: set(bird.sessions().values()) == {"Established"}, 30, "session up")
            start = time.monotonic()
            apply = Path(tmp) / "services.json"  # not d.apply(): 10,000 take over its 60 s
            apply.write_text(json.dumps({"load-balancer": {"service": services}}))
            res = subprocess.run([*SLUICE, "apply", "-f", str(apply)], env=d.env,
                                 capture_output=True, text=True, timeout=900)  # fmt: skip
            assert res.returncode == 0, res.stderr
            committed = time.monotonic()
            out["commit_s"] = round(committed - start, 2)
            out["announce_s"] = round(until(lambda: routes(bird) == n, 300, "all announced")
                                      - committed, 2)  # fmt: skip
            first, last = [], []
            for _ in range(repeat):
                server.stop()
                died = time.monotonic()
                first.append(until(lambda: routes(bird) < n, 60, "a withdrawal") - died)
                last.append(until(lambda: routes(bird) == 0, 120, "all withdrawn") - died)
                server = backend.start_http_server(PORT)
                until(lambda: routes(bird) == n, 300, "all announced again")
            out["endpoint_death_first_s"] = [round(x, 2) for x in first]
            out["endpoint_death_all_s"] = [round(x, 2) for x in last]
            d.stop(signal.SIGKILL)
            killed = time.monotonic()
            out["daemon_kill_all_s"] = round(until(lambda: routes(bird) == 0, 60, "withdrawn")
                                             - killed, 2)  # fmt: skip
        finally:
            d.stop()
    return out


def table(res: dict[str, Any]) -> str:
    med = statistics.median
    return (
        "| vips | commit | then all announced | endpoint death → first vip gone | → all gone "
        "| daemon kill -9 → all gone |\n|---|---|---|---|---|---|\n"
        f"| {res['vips']} | {res['commit_s']} s | {res['announce_s']} s "
        f"| {med(res['endpoint_death_first_s']):.2f} s "
        f"(probe bound {res['probe_bound_s']} s) | {med(res['endpoint_death_all_s']):.2f} s "
        f"| {res['daemon_kill_all_s']} s |\n"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--vips", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    res = run(args.vips, args.repeat)
    print(table(res))
    results = ROOT / "bench" / "results"
    results.mkdir(exist_ok=True)
    (results / "bgp_withdraw.json").write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
