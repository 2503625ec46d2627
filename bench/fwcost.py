"""The firewall's per-packet cost at 0, 1,000 and 10,000 rules (BPF_PROG_TEST_RUN).

    .venv/bin/python bench/fwcost.py [--quick] [--json PATH]

Runs the firewall's own program (sluice_fw in bpf/lb.c: what a new flow's first packet
goes through while rules exist) on a TCP SYN, warm (repeat mode: one call, N runs) and
cold (one run per call), in the load balancer's namespace of a dpkit topology, with the
rules committed through the real reconciler. Every rule drops, so a run changes nothing
and can be repeated. For each rule count: a packet matching the first rule, one matching
the last, and one matching none (the interface's default policy decides). ``shapes`` is
the number of distinct rule shapes (prefix lengths): the per-packet cost follows it, not
the number of rules. Also: how long the commit of the rule set took (compile + maps).
Established flows never reach this program (bench/pktcost.py measures them). With
``--protocol gre`` the rules match GRE and the program is sluice_fw_other (bpf/lib/
fw_other.h: protocols the balancer does not track) on a GRE packet.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import statistics
import struct
import sys
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import pktcost  # noqa: E402

DST, DPORT = "198.19.9.9", 80
TC_ACT_SHOT = 2


def source(i: int) -> str:
    return f"198.18.{100 + i // 256}.{i % 256}"


def rules(n: int, shapes: int = 1, protocol: str = "tcp") -> list[dict[str, Any]]:
    """``n`` drop rules from distinct sources; rule i's prefix is /32 - (i % shapes)."""
    out = []
    for i in range(n):
        plen = 32 - (i % shapes)
        rule = {"name": f"r{i}", "preference": i + 1, "source-prefix": f"{source(i)}/{plen}",
                "protocol": protocol, "action": "drop"}  # fmt: skip
        if protocol == "tcp":
            rule["destination-port"] = DPORT
        out.append(rule)
    return out


def gre_frame(src: str, dst: str) -> bytes:
    """Ethernet + IPv4 + GRE (transparent Ethernet bridging) + 32 bytes."""
    payload = b"\x00\x00\x65\x58" + bytes(32)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 1, 0x4000, 64, 47, 0,
                     ipaddress.ip_address(src).packed, ipaddress.ip_address(dst).packed)
    ip = ip[:10] + struct.pack("!H", pktcost._csum(ip)) + ip[12:]
    return pktcost.MAC_DST + pktcost.MAC_SRC + b"\x08\x00" + ip + payload


def commit(net: Any, rule_list: list[dict[str, Any]], policies: dict[str, str]) -> float:
    from appliance.config import Diff

    fw = {"rule": rule_list,
          "interface": [{"name": k, "default-policy": v} for k, v in policies.items()]}  # fmt: skip
    started = time.monotonic()
    net.rec.apply(Diff(sections_changed={"sluice:firewall": (None, fw)}))
    took = time.monotonic() - started
    state = net.rec.firewall_state()
    if state.get("error"):
        raise RuntimeError(state["error"])
    return took


def cost(fd: int, frame: bytes, ifindex: int, repeat: int, calls: int, cold_n: int
         ) -> dict[str, Any]:  # fmt: skip
    warm, verdict = [], -1
    for _ in range(calls):
        verdict, d = pktcost.test_run(fd, frame, ifindex, repeat)
        warm.append(d)
    cold = pktcost.cold(fd, lambda i: frame, ifindex, cold_n)
    return {"warm_ns": float(statistics.median(warm)), "cold_ns": cold["ns"], "verdict": verdict}


def measure(net: Any, prog: Any, counts: tuple[int, ...] = (0, 1000, 10000),
            shapes: tuple[int, ...] = (1, 8), repeat: int = 2000, calls: int = 5,
            cold_n: int = 200, protocol: str = "tcp") -> dict[str, Any]:  # fmt: skip
    """Figures for each (rule count, shapes). Runs in the LB's namespace."""
    prog.need("fw")  # its module (the first rule committed below would load it too)
    fd = prog.function("sluice_fw" if protocol == "tcp" else "sluice_fw_other").fd
    up = net.interfaces[0]
    ifindex = net.lb.ifindex(up)
    rows = []
    with pktcost.in_netns(net.lb.ns):
        for n in counts:
            for s in shapes if n else (1,):
                took = commit(net, rules(n, s, protocol), {up: "drop"})
                row: dict[str, Any] = {"rules": n, "shapes": s, "commit_s": round(took, 3)}
                cases = {"none": "198.18.99.1"}
                if n:
                    cases = {"first": source(0), "last": source(n - 1), **cases}
                for label, src in cases.items():
                    frame = (pktcost.tcp_frame(src, DST, 40000, DPORT, pktcost.SYN)
                             if protocol == "tcp" else gre_frame(src, DST))  # fmt: skip
                    row[label] = cost(fd, frame, ifindex, repeat, calls, cold_n)
                rows.append(row)
    commit(net, [], {})
    return {"rows": rows, "repeat": repeat, "calls": calls}


def table(res: dict[str, Any]) -> str:
    lines = ["| rules | shapes | commit (s) | first rule warm / cold (ns) | last rule | no match |",
             "|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for r in res["rows"]:

        def cell(k: str, r: dict[str, Any] = r) -> str:
            f = r.get(k)
            return f"{f['warm_ns']:.0f} / {f['cold_ns']:.0f}" if f else "–"

        lines.append(f"| {r['rules']} | {r['shapes']} | {r['commit_s']} | {cell('first')} | "
                     f"{cell('last')} | {cell('none')} |")  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer runs")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--protocol", choices=["tcp", "gre"], default="tcp")
    args = ap.parse_args()
    settings: dict[str, Any] = {"repeat": 500, "calls": 3, "cold_n": 50} if args.quick else {}
    settings["protocol"] = args.protocol
    with pktcost.bed() as (net, prog):
        res = measure(net, prog, **settings)
    print(table(res))
    if args.json:
        args.json.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
