"""BGP scale-out: how long an appliance's death interrupts the connections it carried.

The run of tests/test_bgp_failover.py (two appliances behind a BIRD router with ECMP,
sharing their flows over the HA sync channel; 50 long-lived TCP connections, each echoing a
line every 100 ms; all of lb1's links go down), timed:

- path gone: from lb1's links going down to the router's table holding lb2 alone;
- pause: the longest time between two echoes of a connection (the median over the 50, and
  the worst); connections reset or closed (the test requires 0).

    .venv/bin/python bench/bgp_failover.py [--repeat 3]

Prints a Markdown table and writes bench/results/bgp_failover.json. Every wait is bounded.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import netkit as kit  # noqa: E402
from test_bgp_failover import lose_an_appliance  # noqa: E402


def once() -> dict[str, float]:
    with kit.Topology() as topo, tempfile.TemporaryDirectory() as tmp:
        out = lose_an_appliance(topo, Path(tmp))
    gaps = [r["max_gap"] for r in out.rows]
    return {"path_gone_s": out.path_gone_s, "pause_p50_s": statistics.median(gaps),
            "pause_max_s": max(gaps), "ended": sum(1 for r in out.rows if r["error"]),
            "lb1_carried": out.carried}  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    if not shutil.which("bird"):
        print("needs BIRD 2 (scripts/setup installs it)", file=sys.stderr)
        return 2
    runs = [once() for _ in range(args.repeat)]
    print("| run | path gone at the router | pause p50 | pause max | ended | lb1 carried |")
    print("|---|---|---|---|---|---|")
    for i, r in enumerate(runs, start=1):
        print(f"| {i} | {r['path_gone_s']:.2f} s | {r['pause_p50_s']:.2f} s | "
              f"{r['pause_max_s']:.2f} s | {r['ended']} | {r['lb1_carried']} |")
    results = ROOT / "bench" / "results"
    results.mkdir(exist_ok=True)
    (results / "bgp_failover.json").write_text(json.dumps(runs, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
