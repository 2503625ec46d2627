"""The established path timed against another commit, call by call (paired), for a busy machine.

    .venv/bin/python bench/pktpair.py --baseline REF [--pairs 40] [--repeat 2000] [--json PATH]

bench/pktcost.py --baseline runs the two trees one after the other, ~30 s each, so a
machine that changes speed over seconds (this VM does, and other sessions load it) shows
up in the ratio. Here both trees are loaded at once, each in a child process with its own
namespaces and pins (bench/pktcost.py's bed), the same flow set up in both, and the parent
asks them in turn for one warm call (BPF_PROG_TEST_RUN repeat mode through the harness,
net of the harness's cost) -- A, B, B, A, A, B, ... -- so each pair of calls is a few
milliseconds apart. Per figure: each tree's best call, and the median and spread (10th to
90th percentile) of the per-pair ratios now / REF. The cold meter is paired the same way
(medians of blocks of single-packet calls).

Figures: every mode (DNAT, full-NAT, DSR, one-arm), direction and IP family of
bench/pktcost.py; the work per packet (instructions, helper calls) is bench/pktcount.py's.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import pktcost  # noqa: E402

NAME = {"orig": "client→backend", "reply": "reply"}


# -- the child: one tree, answering the parent line by line --------------------------------
def serve(code: str | None) -> int:
    # overheads(): the cold floor over 1,000 calls, the harness's warm cost over 5 calls
    settings = {"cold": 1000, "warm_repeat": 2000, "warm_calls": 5,
                "new_cold": 1, "new_repeat": 64, "new_calls": 1}  # fmt: skip
    out = sys.stdout
    with pktcost.bed(code=code) as (net, prog):
        m = pktcost.Meter(net, prog, settings)
        harness = m.harness
        frames: dict[str, tuple[bytes, int]] = {}
        floor = harness_ns = 0.0
        print("ready", file=out, flush=True)
        for line in sys.stdin:
            cmd, *args = line.split()
            with pktcost.in_netns(net.lb.ns):
                if cmd == "overheads":
                    o = m.overheads()
                    floor = o["floor"]["ns"]
                    harness_ns = {4: o["harness_est4"]["ns"], 6: o["harness_est6"]["ns"]}
                    reply: Any = {"floor": floor, "harness": harness_ns}
                elif cmd == "setup":
                    frames = _setup(m, args[0], int(args[1]))
                    reply = sorted(frames)
                elif cmd == "warm":
                    frame, ifindex = frames[args[0]]
                    w = harness.warm(m.entry(frame), frame, ifindex, int(args[1]), 1)
                    reply = {"ns": w["ns"], "verdict": w["verdict"]}
                elif cmd == "cold":
                    frame, ifindex = frames[args[0]]
                    c = pktcost.cold(m.entry(frame), lambda i, f=frame: f, ifindex, int(args[1]))
                    reply = {"ns": c["ns"], "verdict": c["verdict"]}
                else:
                    break
            print(json.dumps(reply), file=out, flush=True)
        m.close()
    return 0


def _setup(m: Any, label: str, version: int) -> dict[str, tuple[bytes, int]]:
    """A flow of ``label`` in ``version`` as bench/pktcost.py makes it (SYN, SYN-ACK, ACK),
    then one data packet each way (the next hop cached): frames by direction."""
    tcp, ACK, SYN, SYNACK = pktcost.tcp_frame, pktcost.ACK, pktcost.SYN, pktcost.SYNACK
    mode = pktcost.MODES[label]
    name = m._service(version, mode, "round-robin", 8)
    vip, client, cport = m.net.services[name]["vip"], pktcost.CLIENT[version], 40000
    m.run(tcp(client, vip, cport, pktcost.PORT, SYN), m.front)
    rows = m.net.rec.conntrack(name)
    if len(rows) != 1:
        raise RuntimeError(f"{label} IPv{version}: {len(rows)} flows after one SYN")
    ep, ep_port = pktcost._host_port(rows[0]["endpoint"])
    snat, snat_port = pktcost._host_port(rows[0]["snat"])
    frames = {"orig": (tcp(client, vip, cport, pktcost.PORT, ACK, b"x" * 64), m.front)}
    if mode != "dsr":
        m.run(tcp(ep, snat, ep_port, snat_port, SYNACK), m.back)
        frames["reply"] = (tcp(ep, snat, ep_port, snat_port, ACK, b"y" * 64), m.back)
    m.run(tcp(client, vip, cport, pktcost.PORT, ACK), m.front)
    for frame, ifindex in frames.values():
        m.run(frame, ifindex)
    return frames


# -- the parent -------------------------------------------------------------------------------
class Child:
    def __init__(self, code: str | None) -> None:
        cmd = [sys.executable, __file__, "--serve"] + (["--code", code] if code else [])
        self.p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  text=True)  # fmt: skip
        if self._line() != "ready":
            raise RuntimeError("a child did not start")

    def _line(self) -> str:
        assert self.p.stdout is not None
        line = self.p.stdout.readline()
        if not line:
            raise RuntimeError(f"a child ended (exit {self.p.wait()})")
        return line.strip()

    def ask(self, *words: Any) -> Any:
        assert self.p.stdin is not None
        self.p.stdin.write(" ".join(map(str, words)) + "\n")
        self.p.stdin.flush()
        return json.loads(self._line())

    def close(self) -> None:
        assert self.p.stdin is not None
        with contextlib.suppress(OSError):  # it may have ended already
            self.p.stdin.write("quit\n")
            self.p.stdin.close()
        self.p.wait(timeout=120)


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def paired(a: Child, b: Child, what: str, direction: str, n: int, arg: int,
           net: tuple[float, float]) -> dict[str, Any]:  # fmt: skip
    """``n`` pairs of calls, the order alternating: A's and B's net ns and the ratios."""
    xs, ys, ratios = [], [], []
    for i in range(n):
        first, second = (a, b) if i % 2 == 0 else (b, a)
        r1 = first.ask(what, direction, arg)
        r2 = second.ask(what, direction, arg)
        ra, rb = (r1, r2) if first is a else (r2, r1)
        x, y = max(ra["ns"] - net[0], 1.0), max(rb["ns"] - net[1], 1.0)
        xs.append(x)
        ys.append(y)
        ratios.append(y / x)
    return {"base_best": min(xs), "cur_best": min(ys), "base_median": statistics.median(xs),
            "cur_median": statistics.median(ys), "ratio_median": statistics.median(ratios),
            "ratio_p10": _pct(ratios, 0.1), "ratio_p90": _pct(ratios, 0.9),
            "best_ratio": min(ys) / min(xs), "pairs": n}  # fmt: skip


def run(ref: str, modes: list[str], pairs: int, repeat: int, cold_n: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="pktpair-") as tmp:
        code = pktcost.export_ref(ref, Path(tmp) / "base")
        a, b = Child(str(code)), Child(None)
        try:
            oa, ob = a.ask("overheads"), b.ask("overheads")
            rows = []
            for label in modes:
                for v in (4, 6):
                    if a.ask("setup", label, v) != b.ask("setup", label, v):
                        raise RuntimeError(f"{label} IPv{v}: the trees set up different flows")
                    for d in ("orig", "reply"):
                        if label == "DSR" and d == "reply":
                            continue
                        h = (oa["harness"][str(v)], ob["harness"][str(v)])
                        w = paired(a, b, "warm", d, pairs, repeat, h)
                        c = paired(a, b, "cold", d, max(pairs // 4, 6), cold_n,
                                   (oa["floor"], ob["floor"]))  # fmt: skip
                        rows.append({"mode": label, "version": v, "direction": d,
                                     "warm": w, "cold": c})  # fmt: skip
                        print(f"{label} IPv{v} {NAME[d]}: warm {w['base_best']:.0f} → "
                              f"{w['cur_best']:.0f}, pairs {w['ratio_median']:.2f}×",
                              file=sys.stderr, flush=True)  # fmt: skip
        finally:
            a.close()
            b.close()
    return {"baseline": ref, "rows": rows, "overheads": {"base": oa, "cur": ob},
            "pairs": pairs, "repeat": repeat, "load": os.getloadavg()}  # fmt: skip


def no_worse_aim(res: dict[str, Any], allowance: float) -> dict[str, Any]:
    """issue 15's "no mode worse than today" (bench/run.py --baseline), paired: the worst
    warm median of pairs over the established figures."""
    worst = max(res["rows"], key=lambda r: r["warm"]["ratio_median"])
    value = round(worst["warm"]["ratio_median"], 3)
    where = f"{worst['mode']} IPv{worst['version']} {NAME[worst['direction']]}"
    return {"aim": f"no established mode worse than {res['baseline']} (warm, paired calls: "
                   f"the worst median of pairs, {where}; ≤ {allowance} allows for noise)",
            "goal": allowance, "higher": False, "value": value,
            "met": value <= allowance}  # fmt: skip


def table(res: dict[str, Any]) -> str:
    ref = res["baseline"]
    lines = [f"| established TCP | IP | warm best {ref} | warm best now | warm ratio, median of "
             f"pairs (p10–p90) | cold {ref} | cold now | cold ratio (p10–p90) |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for r in res["rows"]:
        w, c = r["warm"], r["cold"]
        lines.append(
            f"| {r['mode']} {NAME[r['direction']]} | IPv{r['version']} | {w['base_best']:.0f} "
            f"| {w['cur_best']:.0f} | {w['ratio_median']:.2f}× ({w['ratio_p10']:.2f}–"
            f"{w['ratio_p90']:.2f}) | {c['base_median']:.0f} | {c['cur_median']:.0f} "
            f"| {c['ratio_median']:.2f}× ({c['ratio_p10']:.2f}–{c['ratio_p90']:.2f}) |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline", metavar="REF", default="a067195")
    ap.add_argument("--modes", default=",".join(pktcost.MODES))
    ap.add_argument("--pairs", type=int, default=40, help="warm call pairs per figure")
    ap.add_argument("--repeat", type=int, default=2000, help="runs per warm call")
    ap.add_argument("--cold", type=int, default=200, help="single-packet calls per cold call")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--code", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("run as root (namespaces, eBPF)", file=sys.stderr)
        return 2
    if args.serve:
        if args.code:
            os.environ["SLUICE_DATA_DIR"] = args.code
        return serve(args.code)
    load0 = os.getloadavg()[0]
    res = run(args.baseline, args.modes.split(","), args.pairs, args.repeat, args.cold)
    print(
        f"## Established packet, this tree against {args.baseline}, paired calls "
        f"({args.pairs} warm pairs × {args.repeat} runs; load {load0:.1f} → "
        f"{os.getloadavg()[0]:.1f})\n"
    )
    print(table(res))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
