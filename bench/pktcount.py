"""The established path's work per packet, counted (not timed), this tree against another.

    .venv/bin/python bench/pktcount.py [--baseline REF] [--modes DNAT,DSR] [--json PATH]

For every mode (DNAT, full-NAT, DSR, one-arm), direction and IP family: the BPF
instructions one established TCP packet executes in ``sluice_lb``, its helper calls, the
64-byte memory lines it touches (data lines) and the 64-byte lines of bytecode it runs
through (code lines: what a cold packet fetches into the instruction cache, roughly);
bench/bpfcount.py, an interpreter over the loaded program's bytecode and its real maps.
The flow is made the way bench/pktcost.py makes it (SYN, SYN-ACK, ACK through
BPF_PROG_TEST_RUN), then the packet is interpreted instead of timed. The counts are exact
and repeatable: the machine's load does not move them, so an A/B on a busy machine says
whether the work changed (pktcost.py and pktpair.py say what it costs).

``--baseline REF``: REF's appliance/ and bpf/ measured the same way in a child process; the
table shows both and the difference. ~30 s per tree (the compile and the flows).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import pktcost  # noqa: E402

VERIFIED: dict[str, int] = {}  # the balancers' verified instructions, by measure()


def measure(modes: list[str], code: str | None = None) -> list[dict[str, Any]]:
    """Counts of every (mode, family, direction) in this process's tree (or --code's)."""
    import bpfcount

    settings = {"cold": 1, "warm_repeat": 1, "warm_calls": 1}
    rows = []
    with pktcost.bed(code=code) as (net, prog):
        m = pktcost.Meter(net, prog, settings)
        try:
            for label in modes:
                for v in (4, 6):
                    e = m.established(label, v)
                    for d in ("orig", "reply"):
                        if d in e:
                            rows.append({"mode": label, "version": v, "direction": d,
                                         "state": e["state"], **e[d]["count"]})  # fmt: skip
            # After the IPv6 figures: the IPv6 balancer's module loads with their service.
            for name in ("sluice_lb", *bpfcount.BALANCERS):
                with contextlib.suppress(KeyError, AttributeError):  # older: sluice_lb only
                    VERIFIED[name] = bpfcount.verified_insns(prog.function(name).fd)
        finally:
            m.close()
    return rows


def _listing(text: str, version: int) -> tuple[dict[int, str], dict[int, str]]:
    """bcc's DEBUG_SOURCE disassembly of sluice_lb -> (pc -> source line, pc -> insn)."""
    import re

    # The family's balancer (bpf/lb.c), or an older tree's sluice_lb.
    for name in (f"sluice_lb{version}\n", "sluice_lb\n"):
        if f"Disassembly of function {name}" in text:
            break
    text = text[text.find(f"Disassembly of function {name}") :]
    line_of: dict[int, str] = {}
    insn_text: dict[int, str] = {}
    current = "?"
    for ln in text.splitlines()[1:]:
        if ln.startswith("Disassembly of function"):
            break
        if ln.startswith(";"):
            current = re.sub(r"\s+", " ", ln[1:].split("// Line")[0]).strip()[:110]
            continue
        m = re.match(r"\s*(\d+):", ln)
        if m:
            line_of[int(m.group(1))] = current
            insn_text[int(m.group(1))] = ln.split("\t")[-1]
    return line_of, insn_text


@contextlib.contextmanager
def _with_listing(listing: Any) -> Iterator[None]:
    """bcc compiles with DEBUG_SOURCE inside the block, its stderr (the listing) into
    ``listing``."""
    from bcc import BPF

    init = BPF.__init__

    def with_source(self: Any, *a: Any, **kw: Any) -> None:
        kw["debug"] = kw.get("debug", 0) | 8
        init(self, *a, **kw)

    saved = os.dup(2)
    os.dup2(listing.fileno(), 2)
    BPF.__init__ = with_source
    try:
        yield
    finally:
        BPF.__init__ = init
        os.dup2(saved, 2)
        os.close(saved)


def profile(label: str, version: int, direction: str, top: int,
            code: str | None = None) -> str:  # fmt: skip
    """Where one packet's instructions go: executed instructions per source line of
    sluice_lb (bcc's disassembly with source lines), most first. PKTCOUNT_LISTING=path
    writes the whole listing, PKTCOUNT_TRACE=path the executed instructions in order."""
    import bpfcount

    with contextlib.ExitStack() as stack:
        listing = stack.enter_context(tempfile.TemporaryFile(mode="w+"))
        seen: list[Any] = []
        # Every compile inside: the IPv6 balancer's module loads with the first IPv6 service.
        with _with_listing(listing):
            net, prog = stack.enter_context(pktcost.bed(code=code))
            m = pktcost.Meter(net, prog, {"cold": 1, "warm_repeat": 1, "warm_calls": 1})
            stack.callback(m.close)
            counted = m.count

            def keep(frame: bytes, ifindex: int) -> dict[str, Any]:
                seen.append(bpfcount.balancer(prog, frame, ifindex))
                return counted(frame, ifindex)

            m.count = keep  # type: ignore[method-assign]
            e = m.established(label, version)
        res = seen[0 if direction == "orig" else -1]
        listing.seek(0)
        text = listing.read()
        if os.environ.get("PKTCOUNT_LISTING"):
            Path(os.environ["PKTCOUNT_LISTING"]).write_text(text)
        line_of, insn_text = _listing(text, version)
    per: Counter[str] = Counter()
    for pc, n in res.hot.items():
        per[line_of.get(pc, f"pc {pc}")] += n
    out = [f"{label} IPv{version} {direction}: {res.insns} instructions ({e['state']}), "
           f"{dict(res.helpers)}"]  # fmt: skip
    out += [f"{n:5d}  {ln}" for ln, n in per.most_common(top)]
    if os.environ.get("PKTCOUNT_TRACE"):
        trace, last = [], None
        for pc in sorted(res.hot):
            if line_of.get(pc) != last:
                last = line_of.get(pc)
                trace.append(f"; {last}")
            trace.append(f"{pc:6d} x{res.hot[pc]} {insn_text.get(pc, '')}")
        Path(os.environ["PKTCOUNT_TRACE"]).write_text("\n".join(trace) + "\n")
    return "\n".join(out)


def _key(r: dict[str, Any]) -> tuple[str, int, str]:
    return (r["mode"], r["version"], r["direction"])


def table(cur: list[dict[str, Any]], base: list[dict[str, Any]] | None, ref: str) -> str:
    name = {"orig": "client→backend", "reply": "reply"}
    if base is None:
        lines = ["| established TCP | IP | insns | helper calls | data lines | code lines "
                 "| helpers |", "|---|---|---:|---:|---:|---:|---|"]  # fmt: skip
        for r in cur:
            helpers = ", ".join(f"{k} {v}" for k, v in r["helpers"].items())
            lines.append(
                f"| {r['mode']} {name[r['direction']]} | IPv{r['version']} "
                f"| {r['insns']} | {r['helper_calls']} | {r['lines']} | {r['code_lines']} "
                f"| {helpers} |"
            )
        return "\n".join(lines)
    b = {_key(r): r for r in base}
    lines = [f"| established TCP | IP | insns {ref} | insns now | Δ | helper calls {ref} → now "
             f"| data lines {ref} → now | code lines {ref} → now | helpers that changed |",
             "|---|---|---:|---:|---:|---:|---:|---:|---|"]  # fmt: skip
    for r in cur:
        o = b.get(_key(r))
        if o is None:
            continue
        changed = []
        for h in sorted(set(r["helpers"]) | set(o["helpers"])):
            x, y = o["helpers"].get(h, 0), r["helpers"].get(h, 0)
            if x != y:
                changed.append(f"{h} {x}→{y}")
        lines.append(
            f"| {r['mode']} {name[r['direction']]} | IPv{r['version']} | {o['insns']} "
            f"| {r['insns']} | {r['insns'] - o['insns']:+d} "
            f"| {o['helper_calls']} → {r['helper_calls']} | {o['lines']} → {r['lines']} "
            f"| {o['code_lines']} → {r['code_lines']} | {', '.join(changed) or '—'} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--modes", default=",".join(pktcost.MODES))
    ap.add_argument("--baseline", metavar="REF", help="also count git REF's tree")
    ap.add_argument("--code", help=argparse.SUPPRESS)  # appliance/ + bpf/ from here
    ap.add_argument("--json", help="write the rows here")
    ap.add_argument(
        "--profile",
        metavar="MODE,V,DIR",
        help="instructions per source line of one figure (e.g. DNAT,4,orig)",
    )
    ap.add_argument("--top", type=int, default=60)
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("run as root (namespaces, eBPF)", file=sys.stderr)
        return 2
    modes = args.modes.split(",")
    if args.profile:
        label, v, d = args.profile.split(",")
        print(profile(label, int(v), d, args.top, args.code))
        return 0
    if args.code:
        os.environ["SLUICE_DATA_DIR"] = args.code
    base = None
    if args.baseline:
        with tempfile.TemporaryDirectory(prefix="pktcount-") as tmp:
            code = pktcost.export_ref(args.baseline, Path(tmp) / "base")
            out = Path(tmp) / "base.json"
            cmd = [sys.executable, __file__, "--modes", args.modes, "--code", str(code),
                   "--json", str(out)]  # fmt: skip
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
            if res.returncode:
                print(res.stderr[-2000:], file=sys.stderr)
                return 1
            base = json.loads(out.read_text())
    cur = measure(modes, args.code)
    if args.json:
        Path(args.json).write_text(json.dumps(cur, indent=1) + "\n")
    if not args.code:
        print(table(cur, base, args.baseline or ""))
        walked = ", ".join(f"{n} {v:,}" for n, v in VERIFIED.items() if v > 1000)
        print(f"\nInstructions verified (this tree): {walked} (the kernel's limit: 1,000,000)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
