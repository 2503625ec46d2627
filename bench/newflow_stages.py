"""Where a new flow's time goes: the new-flow path timed stage by stage.

    sudo .venv/bin/python bench/newflow_stages.py [--algorithms A,B] [--sizes 8,256]
                                                  [--calls 3] [--repeat 2048]

The real program (bpf/lb.c), built once more with NF_STAGES defined: the markers of
bpf/lib/nf_stages.h then add the time between them to per-CPU slots (empty otherwise).
New flows go through the warm meter of bench/pktcost.py (the harness gives each run a
fresh source port: a SYN from a new flow, IPv4 DNAT), in the same bed (namespaces, real
reconciler, endpoints on the backend link). Per stage: ns per new flow, the marker's own
cost (two markers back to back) taken off, the median over the calls and their range.
The stages add up to more than bench/pktcost.py's figure by about a marker per stage
(printed): read them as shares, and compare stages within one run.

Each call starts from empty conntrack tables (as pktcost's warm new-flow figure does), so its
SYNs are inserted into a SYN table (syn4_map for IPv4) far from full: a normal new flow's
cost. The table's fill before and after each call is printed. ``--syn-full`` adds, beside
each figure, the same flows into a SYN table filled to capacity first by other clients' SYNs (a SYN
flood): every insert then evicts (the LRU's shrink path), labelled "SYN table full".
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import pktcost  # noqa: E402

# bpf/lib/nf_stages.h: slot -> what the time up to that marker was spent on.
STAGES = {
    1: "parse, clock, conntrack misses (both tables)",
    2: "service lookup and checks",
    3: "endpoint selection + its record",
    4: "entry built (scratch slot)",
    13: "REPLY key checked in the other table (main for a SYN)",
    5: "REPLY entry inserted (SYN table for a SYN)",
    6: "TCP numbers, SYN options",
    7: "FIB lookup",
    8: "next hop stored",
    9: "ORIG entry inserted",
    10: "flow event, gauges, counters",
    11: "NAT + redirect",
}
SELF = 12


def _build_with_stages() -> None:
    """Every Program built in this process defines NF_STAGES (the bench's own build)."""
    from appliance.datapath.program import Program

    text = Program._text

    def staged(self: Any, module: str) -> str:
        return "#define NF_STAGES 1\n" + text(self, module)

    Program._text = staged  # type: ignore[method-assign]


def entries(prog: Any, name: str) -> int:
    """How many entries map ``name`` holds (one batch walk)."""
    try:
        return sum(1 for _ in prog.table(name).items_lookup_batch())
    except Exception:  # an empty map (ENOENT at once) or a tree without it
        return 0


def syn_table(prog: Any) -> str:
    """The SYN table IPv4 flows use: syn4_map under the compact key (an older tree: syn_map)."""
    try:
        prog.table("syn4_map")
    except KeyError:
        return "syn_map"
    return "syn4_map"


def fill_syn_table(meter: Any, vip: str) -> None:
    """Fill the SYN table to capacity with SYNs of another client (198.18.0.2): more flows than
    it holds (two entries each), so it is full and recycling when the measured flows come."""
    cap = meter.prog.table(syn_table(meter.prog)).max_entries
    other = pktcost.tcp_frame("198.18.0.2", vip, 1024, pktcost.PORT, pktcost.SYN)
    meter.harness.warm(meter.entry(other), other, meter.front, min(cap, 60000), 1, new_flows=True)


def measure(algorithms: list[str], sizes: list[int], calls: int, repeat: int,
            code: str | None = None, log: Any = pktcost._log,
            syn_full: bool = False) -> list[dict[str, Any]]:  # fmt: skip
    """Per (algorithm, endpoints): each call's warm total and per-stage sums per flow.
    ``code``: another tree's appliance/ + bpf/ (as bench/pktcost.py --code). ``syn_full``:
    each figure once more with the SYN table filled first (a SYN flood), labelled."""
    sys.path.insert(0, str(BENCH.parent))
    if code:
        os.environ["SLUICE_DATA_DIR"] = code
        sys.path.insert(0, code)
    _build_with_stages()
    out = []
    with pktcost.bed(code=code) as (net, prog):
        meter = pktcost.Meter(net, prog, pktcost.SETTINGS["quick"])
        slots = prog.bpf[b"nf_stages"]
        syn_map = syn_table(prog)
        try:
            for algo in algorithms:
                for n in sizes:
                    log(f"{algo}, {n} endpoints")
                    name = meter._service(4, "default", algo, n)
                    syn = pktcost.tcp_frame(pktcost.CLIENT[4], net.services[name]["vip"],
                                            1024, pktcost.PORT, pktcost.SYN)  # fmt: skip
                    for full in (False, True) if syn_full else (False,):
                        per_call = []
                        with pktcost.in_netns(net.lb.ns):
                            for _ in range(calls):
                                meter.clear_ct()
                                if full:
                                    fill_syn_table(meter, net.services[name]["vip"])
                                before = entries(prog, syn_map)
                                slots.clear()
                                w = meter.harness.warm(meter.entry(syn), syn, meter.front,
                                                       repeat, 1, new_flows=True)  # fmt: skip
                                sums = {k.value: sum(v) / repeat for k, v in slots.items()}
                                per_call.append({"total": w["ns"], "sums": sums,
                                                 "syn": (before, entries(prog, syn_map))})
                        out.append({"algorithm": algo, "endpoints": n, "calls": per_call,
                                    "syn_full": full,
                                    "syn_capacity": prog.table(syn_map).max_entries})
                        meter.clear_ct()
        finally:
            meter.close()
    return out


def table(res: list[dict[str, Any]]) -> str:
    """One column per (algorithm, endpoints): each stage's median ns [min-max]."""
    cols = [f"{r['algorithm']} {r['endpoints']}" + (" (SYN table full)" if r.get("syn_full")
                                                     else "") for r in res]  # fmt: skip
    lines = ["| stage (ns per new flow) | " + " | ".join(cols) + " |",
             "|---|" + "---:|" * len(cols)]  # fmt: skip

    def cell(r: dict[str, Any], slot: int) -> str:
        vals = [c["sums"].get(slot, 0.0) - (c["sums"].get(SELF, 0.0) if slot != SELF else 0.0)
                for c in r["calls"]]  # fmt: skip
        return f"{statistics.median(vals):.0f} ({min(vals):.0f}–{max(vals):.0f})"

    for slot, what in STAGES.items():
        lines.append(f"| {slot} {what} | " + " | ".join(cell(r, slot) for r in res) + " |")
    lines.append("| a marker's own cost (taken off each stage) | "
                 + " | ".join(cell(r, SELF) for r in res) + " |")  # fmt: skip
    lines.append("| whole run, instrumented (warm meter, harness included) | "
                 + " | ".join(f"{statistics.median(c['total'] for c in r['calls']):.0f}"
                              for r in res) + " |")  # fmt: skip
    lines.append("| SYN table entries before → after a call (of its capacity) | "
                 + " | ".join(f"{r['calls'][-1]['syn'][0]} → {r['calls'][-1]['syn'][1]} "
                              f"(of {r['syn_capacity']})" for r in res) + " |")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--algorithms", default="round-robin,maglev,least-connections")
    ap.add_argument("--sizes", default="8,32,256")
    ap.add_argument("--calls", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=2048, help="new flows per call")
    ap.add_argument("--syn-full", action="store_true",
                    help="also measure with the SYN table full first (a SYN flood's cost)")
    ap.add_argument("--code", help=argparse.SUPPRESS)  # appliance/ + bpf/ from here (A/B)
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("run as root (namespaces, eBPF)", file=sys.stderr)
        return 2
    started = time.monotonic()
    load0 = os.getloadavg()[0]
    res = measure(args.algorithms.split(","), [int(x) for x in args.sizes.split(",")],
                  args.calls, args.repeat, args.code, syn_full=args.syn_full)  # fmt: skip
    print(f"## New-flow stages (IPv4 DNAT SYN, warm, {args.calls} calls × {args.repeat} "
          f"flows; load average {load0:.2f} → {os.getloadavg()[0]:.2f}; "
          f"{time.monotonic() - started:.0f} s)\n")
    print(table(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
