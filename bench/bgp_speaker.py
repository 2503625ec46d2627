"""BGP speaker throughput: how long ExaBGP (as the daemon runs it) takes to get N vips to a
BIRD router, to change their attributes, and to withdraw them, with no daemon, prober or
commit in the way (bench/bgp_withdraw.py measures the whole path).

The appliance side is `appliance.bgp.exabgp.ExaBGPAdvertiser`, run in the appliance's
namespace (this script re-runs itself there with --inner); the router is BIRD 2
(tests/bgpkit.py), counted with `birdc show route count` every 20 ms. Each --lines value
is how many prefixes one `announce attributes ... nlri ...` command carries (1: one command
per prefix, as a naive speaker would send them); --compare runs each also with ExaBGP as
shipped (without appliance/bgp/speedups.py's remove_self), before the patched one.

    .venv/bin/python bench/bgp_speaker.py [--vips 10000] [--lines 1 1000] [--compare]

Prints a Markdown table and writes bench/results/bgp_speaker.json. Every wait is bounded.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

ROUTER_NS_ENV = "BENCH_ROUTER_NS"


def vip(i: int) -> str:
    return f"198.19.{i // 250}.{i % 250 + 1}"


def inner(args: argparse.Namespace) -> dict[str, Any]:
    """In the appliance's namespace: the advertiser, timed against the router's count."""
    from appliance.bgp import exabgp
    from appliance.bgp.model import Neighbor, Route, SpeakerConfig

    def count() -> int:
        res = subprocess.run(["ip", "netns", "exec", args.router_ns, "birdc", "-s", args.ctl,
                              "show", "route", "count"], capture_output=True, text=True,
                             timeout=10)  # fmt: skip
        match = re.search(r"(\d+) of \d+ routes", res.stdout)
        return int(match.group(1)) if match else 0

    def med_count(med: int) -> int:
        res = subprocess.run(["ip", "netns", "exec", args.router_ns, "birdc", "-s", args.ctl,
                              "show", "route", "where", f"bgp_med = {med}", "count"],
                             capture_output=True, text=True, timeout=10)  # fmt: skip
        match = re.search(r"(\d+) of \d+ routes", res.stdout)
        return int(match.group(1)) if match else 0

    def until(check: Any, timeout: float, what: str) -> float:
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if check():
                return round(time.monotonic() - start, 2)
            time.sleep(0.02)
        raise TimeoutError(f"{what}: not within {timeout} s")

    n = args.vips
    neighbor = Neighbor(address=args.router, remote_as=65000)
    config = SpeakerConfig(local_as=65001, router_id=args.me, neighbors=(neighbor,))
    out: dict[str, Any] = {"vips": n, "rows": []}
    from appliance.bgp.speedups import PLAIN_ENV

    runs = [(per_line, plain) for per_line in args.lines
            for plain in ((True, False) if args.compare else (False,))]  # fmt: skip
    for per_line, plain in runs:
        if plain:
            os.environ[PLAIN_ENV] = "1"  # the speaker inherits it
        else:
            os.environ.pop(PLAIN_ENV, None)
        exabgp.NLRI_PER_LINE = per_line
        adv = exabgp.ExaBGPAdvertiser(Path(tempfile.mkdtemp(prefix="bgp-bench-")))
        adv.start(config)
        try:
            until(lambda a=adv: any(s.get("session-state") == "established"
                                    for s in a.status()["neighbor"]),
                  120, "session up")  # fmt: skip
            routes = {neighbor.address: {f"{vip(i)}/32": Route(f"{vip(i)}/32", med=10)
                                         for i in range(n)}}  # fmt: skip
            row: dict[str, Any] = {"prefixes_per_command": per_line,
                                   "exabgp": "as shipped" if plain else "patched"}
            adv.set_routes(routes)
            row["announce_s"] = until(lambda: count() == n, 900, "all announced")
            changed = {neighbor.address: {p: Route(p, med=20) for p in routes[neighbor.address]}}
            adv.set_routes(changed)
            row["change_med_s"] = until(lambda: med_count(20) == n, 900, "all at MED 20")
            adv.set_routes({neighbor.address: {}})
            row["withdraw_s"] = until(lambda: count() == 0, 900, "all withdrawn")
            out["rows"].append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
        finally:
            adv.stop()
        until(lambda: count() == 0, 60, "router empty")
    return out


def outer(args: argparse.Namespace) -> dict[str, Any]:
    import netkit as kit
    from bgpkit import Bird, appliance_peers, lb_addr, router_addr

    with kit.Topology() as topo:
        router, lb = topo.host("rtr"), topo.host("lb1")
        topo.link(router, lb, [f"{router_addr(1)}/24"], [f"{lb_addr(1)}/24"])
        peers = {k: v for k, v in appliance_peers(1).items() if ":" not in v[0]}
        bird = Bird(router, peers)
        cmd = [*lb.exec_prefix(), sys.executable, __file__, "--inner", "--vips", str(args.vips),
               "--router-ns", router.ns, "--ctl", str(bird.ctl), "--router", router_addr(1),
               "--me", lb_addr(1), "--lines", *map(str, args.lines),
               *(["--compare"] if args.compare else [])]  # fmt: skip
        res = subprocess.run(cmd, stdout=subprocess.PIPE, timeout=3600)
        if res.returncode != 0:
            raise SystemExit(f"inner run failed ({res.returncode})")
        return json.loads(res.stdout)


def table(res: dict[str, Any]) -> str:
    lines = [f"| {res['vips']} vips: prefixes per command | ExaBGP | announce all "
             "| change the MED of all | withdraw all |", "|---|---|---|---|---|"]
    for r in res["rows"]:
        lines.append(f"| {r['prefixes_per_command']} | {r['exabgp']} | {r['announce_s']} s "
                     f"| {r['change_med_s']} s | {r['withdraw_s']} s |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--vips", type=int, default=10000)
    parser.add_argument("--lines", type=int, nargs="+", default=[1000])
    parser.add_argument("--compare", action="store_true",
                        help="also run ExaBGP as shipped (without appliance/bgp/speedups.py)")
    parser.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    for hidden in ("--router-ns", "--ctl", "--router", "--me"):
        parser.add_argument(hidden, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inner:
        print(json.dumps(inner(args)))
        return 0
    res = outer(args)
    print(table(res))
    results = ROOT / "bench" / "results"
    results.mkdir(exist_ok=True)
    (results / "bgp_speaker.json").write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
