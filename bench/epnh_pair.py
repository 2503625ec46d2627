"""What the per-endpoint next hop saves a new flow, timed in pairs on one loaded program.

    sudo .venv/bin/python bench/epnh_pair.py [--algorithms round-robin,maglev] [--sizes 8,256]
                                             [--pairs 20] [--repeat 4096]

bench/pktcost.py's warm new-flow meter (a SYN from a fresh source port per run, IPv4 DNAT,
its bed), with the per-endpoint next-hop cache (bpf/lib/nexthop.h ep_nh_arr) switched on and
off between calls by slot 0's word alone (the generation unchanged, so the cached next hops
stay valid): off, every new flow asks the FIB as before the cache existed. Calls alternate
A, B, B, A, ... a few milliseconds apart, so a machine that changes speed over seconds moves
both. Per figure: each side's best call (ns per new flow, net of the harness), the median of
the per-pair differences (off - on) and their 10th-90th percentile.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import pktcost  # noqa: E402


def switch(prog: Any, on: bool) -> None:
    """Slot 0 of ep_nh_arr says "on" (or not) for the generation it already holds."""
    t = prog.table("ep_nh_arr")
    word = t[t.Key(0)]
    word.nh.ifindex = 1 if on else 0
    t[t.Key(0)] = word


def measure(net: Any, prog: Any, algorithms: list[str], sizes: list[int], pairs: int,
            repeat: int) -> list[dict[str, Any]]:  # fmt: skip
    """Per (algorithm, endpoints) in ``net`` / ``prog`` (pktcost's bed, or a test's net
    after ``pktcost.prepare``): both sides' best call and the paired differences."""
    out = []
    meter = pktcost.Meter(net, prog, pktcost.SETTINGS["quick"])
    try:
        assert net.rec.driver.endpoint_next_hops(), "routing in the bed is not by destination"
        with pktcost.in_netns(net.lb.ns):
            harness = meter.harness.warm(meter.harness.null.fd, pktcost.tcp_frame(
                pktcost.CLIENT[4], f"{pktcost.VIP[4]}1", 1024, pktcost.PORT, pktcost.SYN),
                meter.front, repeat, 3, new_flows=True)["ns"]  # fmt: skip
        for algo in algorithms:
            for n in sizes:
                name = meter._service(4, "default", algo, n)
                syn = pktcost.tcp_frame(pktcost.CLIENT[4], net.services[name]["vip"], 1024,
                                        pktcost.PORT, pktcost.SYN)  # fmt: skip
                got: dict[bool, list[float]] = {True: [], False: []}
                with pktcost.in_netns(net.lb.ns):
                    switch(prog, True)  # one call to fill the cache
                    meter.harness.warm(meter.entry(syn), syn, meter.front, repeat, 1,
                                       new_flows=True)  # fmt: skip
                    for i in range(pairs):
                        for on in (True, False) if i % 2 == 0 else (False, True):
                            switch(prog, on)
                            meter.clear_ct()
                            w = meter.harness.warm(meter.entry(syn), syn, meter.front, repeat, 1,
                                                   new_flows=True)  # fmt: skip
                            got[on].append(w["ns"] - harness)
                switch(prog, True)
                diffs = sorted(off - on for on, off in zip(got[True], got[False], strict=True))
                out.append({"algorithm": algo, "endpoints": n, "on": min(got[True]),
                            "off": min(got[False]), "saved": statistics.median(diffs),
                            "p10": diffs[len(diffs) // 10],
                            "p90": diffs[len(diffs) * 9 // 10]})  # fmt: skip
                meter.clear_ct()
    finally:
        meter.close()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--algorithms", default="round-robin,maglev,least-connections")
    ap.add_argument("--sizes", default="8,256")
    ap.add_argument("--pairs", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=4096, help="new flows per call")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("run as root (namespaces, eBPF)", file=sys.stderr)
        return 2
    load0 = os.getloadavg()[0]
    with pktcost.bed() as (net, prog):
        res = measure(net, prog, args.algorithms.split(","),
                      [int(x) for x in args.sizes.split(",")], args.pairs, args.repeat)
    print(f"## New flow with and without the per-endpoint next hop ({args.pairs} pairs × "
          f"{args.repeat} flows; load average {load0:.2f} → {os.getloadavg()[0]:.2f})\n")
    print("| new flow (IPv4 DNAT SYN) | best, cache on | best, cache off (FIB) | "
          "saved per flow, median of pairs [p10–p90] |")
    print("|---|---:|---:|---:|")
    for r in res:
        print(f"| {r['algorithm']} {r['endpoints']} | {r['on']:.0f} | {r['off']:.0f} | "
              f"{r['saved']:.0f} [{r['p10']:.0f}–{r['p90']:.0f}] |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
