"""What a compact IPv4 conntrack key would save: LRU hash operations timed by key size.

    .venv/bin/python bench/ctkey.py [--rounds 5] [--fill 0.5] [--sizes 44,20,16] [--json PATH]

The conntrack key (`struct ct_key`, bpf/lib/structs.h) is 44 bytes for both families. An
IPv4-only key would be 16 bytes (addresses, ports, protocol) or 20 (with SCTP's
verification tag). The kernel hashes the whole key (jhash, 12 bytes a round) and compares
it byte for byte in the bucket walk, inside the map helper, where bench/bpfcount.py counts
nothing; so this script times it.

One small bcc program per key size, each with its own two LRU hashes of the datapath's
sizes and value size (`ct` 1,048,576 and `syn` 131,072 entries of a 160-byte ct_entry),
`ct` filled to ``--fill`` of its capacity with distinct IPv4 flows. Each test-run call
(BPF_PROG_TEST_RUN, repeat mode, a SCHED_CLS program on a dummy frame) runs OPS map
operations per run, the key built from a counter the way the datapath builds it:

- ``hit``: lookups of present keys, spread over the table (a busy appliance's packets);
- ``hit1``: the same present key again and again (what pktpair's warm figure sees);
- ``miss``: lookups of absent keys (a new flow's first checks);
- ``newflow``: one flow's conntrack work start to end, as lb.c does it for a TCP flow:
  three misses (ct ORIG, syn ORIG, ct REPLY), two syn inserts, at the handshake's end two
  syn lookups, two ct inserts and two syn deletes, and two ct deletes when it ends
  (11 operations; reported per flow, not per operation);
- ``loop``: the same loop and key building without a map operation (the floor).

Sizes run in alternating order each round (A B C, C B A, ...), several calls each; the
figure is each size's median over rounds of its best call, in ns per operation (per flow
for ``newflow``), and the difference to the first size. The machine is shared: the load
average is printed before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import pktcost  # noqa: E402

CT_CAPACITY = 1 << 20
SYN_CAPACITY = CT_CAPACITY // 8
VALUE_SIZE = 160          # sizeof(struct ct_entry)
OPS = 16                  # map operations per run (the loop's length)
KINDS = ("loop", "hit", "hit1", "miss", "newflow")

# Keys: the 44-byte ct_key (IPv4 in word 0 of 16-byte addresses), and two compact ones.
KEY_STRUCTS = {
    44: """struct key { __be32 src[4]; __be32 dst[4]; __be16 sport, dport; __u8 proto, family;
                        __u16 pad; __be32 vtag; };""",
    20: """struct key { __be32 src, dst; __be16 sport, dport; __u8 proto, pad1; __u16 pad2;
                        __be32 vtag; };""",
    16: """struct key { __be32 src, dst; __be16 sport, dport; __u8 proto, pad1; __u16 pad2; };""",
}

# The key of flow i: sources 198.18.0.0/15 (131,072) x source ports from 1024, one VIP.
# `r` is the reply direction (endpoint -> SNAT address), as in lb.c.
PROGRAM = r"""
#include <uapi/linux/bpf.h>
#include <uapi/linux/pkt_cls.h>

KEY_STRUCT
struct value { __u8 b[VALUE_SIZE]; };

BPF_TABLE("lru_hash", struct key, struct value, ct, CT_CAPACITY);
BPF_TABLE("lru_hash", struct key, struct value, syn, SYN_CAPACITY);
BPF_ARRAY(ctr, __u64, 4);       // 0: fill, 1: hit/miss walk, 2: new flows
BPF_ARRAY(zero, struct value, 1);

static __always_inline void mk(struct key *k, __u32 i, int r)
{
    __builtin_memset(k, 0, sizeof(*k));
    __u32 a = bpf_htonl(0xC6120000 | (i & 0x1ffff)), b = bpf_htonl(0xC6130001);
    __u16 ap = bpf_htons(1024 + (i >> 17)), bp = bpf_htons(80);
    if (r) { __u32 t = a; a = b; b = t; __u16 tp = ap; ap = bp; bp = tp; }
#if KEY_SIZE == 44
    k->src[0] = a; k->dst[0] = b; k->family = 4;
#else
    k->src = a; k->dst = b;
#endif
    k->sport = ap; k->dport = bp; k->proto = 6;
}

static __always_inline __u64 *counter(__u32 n)
{
    return ctr.lookup(&n);
}

// One present flow per run: ctr[0] counts up (run with repeat = the number to fill).
int fill(struct __sk_buff *skb)
{
    __u64 *c = counter(0);
    struct value *v = zero.lookup(&(__u32){0});
    if (!c || !v)
        return TC_ACT_SHOT;
    struct key k;
    mk(&k, *c, 0);
    *c += 1;
    return ct.update(&k, v) ? TC_ACT_SHOT : TC_ACT_OK;
}

// Spread over the filled flows: a large odd step modulo FILL.
#define WALK(j) ((__u32)(((base + (j)) * 2654435761ULL) % FILL))

int op_loop(struct __sk_buff *skb)
{
    __u64 *c = counter(1);
    if (!c)
        return TC_ACT_SHOT;
    __u64 base = *c, acc = 0;
    *c = base + OPS;
    #pragma unroll
    for (int j = 0; j < OPS; j++) {
        struct key k;
        mk(&k, WALK(j), 0);
        acc += k.sport ^ ((__u32 *)&k)[0];
    }
    return acc == 1 ? TC_ACT_SHOT : TC_ACT_OK;
}

int op_hit(struct __sk_buff *skb)
{
    __u64 *c = counter(1);
    if (!c)
        return TC_ACT_SHOT;
    __u64 base = *c, n = 0;
    *c = base + OPS;
    #pragma unroll
    for (int j = 0; j < OPS; j++) {
        struct key k;
        mk(&k, WALK(j), 0);
        n += ct.lookup(&k) != 0;
    }
    return n == OPS ? TC_ACT_OK : TC_ACT_SHOT;
}

int op_hit1(struct __sk_buff *skb)
{
    __u64 n = 0;
    #pragma unroll
    for (int j = 0; j < OPS; j++) {
        struct key k;
        mk(&k, 7, 0);
        n += ct.lookup(&k) != 0;
    }
    return n == OPS ? TC_ACT_OK : TC_ACT_SHOT;
}

int op_miss(struct __sk_buff *skb)
{
    __u64 *c = counter(1);
    if (!c)
        return TC_ACT_SHOT;
    __u64 base = *c, n = 0;
    *c = base + OPS;
    #pragma unroll
    for (int j = 0; j < OPS; j++) {
        struct key k;
        mk(&k, FILL + WALK(j), 0);
        n += ct.lookup(&k) != 0;
    }
    return n == 0 ? TC_ACT_OK : TC_ACT_SHOT;
}

// A TCP flow's conntrack operations from SYN to its end (lb.c: ct_find's two misses,
// ct_claim's check and syn insert, the ORIG syn insert, tcp_promote, ct_delete_flow).
int op_newflow(struct __sk_buff *skb)
{
    __u64 *c = counter(2);
    struct value *v = zero.lookup(&(__u32){0});
    if (!c || !v)
        return TC_ACT_SHOT;
    __u32 i = 2 * FILL + (*c % (1 << 20));
    *c += 1;
    struct key ok, rk;
    mk(&ok, i, 0);
    mk(&rk, i, 1);
    // Each outcome tested where it comes (the verifier refuses OR-ing map pointers).
    if (ct.lookup(&ok) || syn.lookup(&ok) || ct.lookup(&rk))
        return TC_ACT_SHOT;
    if (syn.insert(&rk, v) || syn.insert(&ok, v))
        return TC_ACT_SHOT;
    struct value *o = syn.lookup(&ok);
    if (!o)
        return TC_ACT_SHOT;
    struct value *r = syn.lookup(&rk);
    if (!r)
        return TC_ACT_SHOT;
    int bad = ct.insert(&rk, r) != 0;
    bad |= ct.insert(&ok, o) != 0;
    syn.delete(&rk);
    syn.delete(&ok);
    ct.delete(&rk);
    ct.delete(&ok);
    return bad ? TC_ACT_SHOT : TC_ACT_OK;
}
"""

FRAME = bytes(14) + bytes(46)   # any frame: the programs do not read it


def load(size: int, fill: int) -> dict[str, Any]:
    """Compile the program for one key size, fill its ct table; {kind: prog fd, ...}."""
    from bcc import BPF

    text = PROGRAM.replace("KEY_STRUCT", KEY_STRUCTS[size])
    cflags = [f"-DKEY_SIZE={size}", f"-DVALUE_SIZE={VALUE_SIZE}", f"-DOPS={OPS}",
              f"-DCT_CAPACITY={CT_CAPACITY}", f"-DSYN_CAPACITY={SYN_CAPACITY}",
              f"-DFILL={fill}U"]  # fmt: skip
    b = BPF(text=text, cflags=cflags)
    fns = {kind: b.load_func(f"op_{kind}", BPF.SCHED_CLS).fd for kind in KINDS}
    f = b.load_func("fill", BPF.SCHED_CLS).fd
    left = fill
    while left:
        n = min(left, 100_000)
        verdict, _ = pktcost.test_run(f, FRAME, 1, repeat=n)
        if verdict != 0:
            raise RuntimeError(f"key {size}: filling the table failed")
        left -= n
    for kind, fd in fns.items():  # each program checks its own outcome (0: as expected)
        if pktcost.test_run(fd, FRAME, 1)[0] != 0:
            raise RuntimeError(f"key {size}: {kind} did not see what it expects")
    return {"bpf": b, "fds": fns}


def per_op(kind: str, ns_per_run: float) -> float:
    return ns_per_run if kind == "newflow" else ns_per_run / OPS


def measure(sizes: list[int], fill: float, rounds: int, calls: int,
            repeat: int) -> dict[str, Any]:  # fmt: skip
    n_fill = int(CT_CAPACITY * fill)
    progs = {s: load(s, n_fill) for s in sizes}
    best: dict[str, dict[int, list[float]]] = {k: {s: [] for s in sizes} for k in KINDS}
    load_before = os.getloadavg()
    for r in range(rounds):
        for kind in KINDS:
            order = sizes if (r + KINDS.index(kind)) % 2 == 0 else sizes[::-1]
            for s in order:
                fd = progs[s]["fds"][kind]
                reps = repeat // OPS
                got = []
                for _ in range(calls):
                    verdict, ns = pktcost.test_run(fd, FRAME, 1, repeat=reps)
                    if verdict != 0:
                        raise RuntimeError(f"key {s}: {kind} went wrong in the timed run")
                    got.append(per_op(kind, ns))
                best[kind][s].append(min(got))
        print(f"round {r + 1}/{rounds} done", file=sys.stderr)
    out: dict[str, Any] = {
        "sizes": sizes, "fill": n_fill, "rounds": rounds, "calls": calls,
        "load_before": [round(x, 2) for x in load_before],
        "load_after": [round(x, 2) for x in os.getloadavg()],
        "kinds": {},
    }  # fmt: skip
    base = sizes[0]
    for kind in KINDS:
        row = {}
        for s in sizes:
            v = best[kind][s]
            d = [a - b for a, b in zip(best[kind][base], v, strict=True)]
            row[s] = {"median": statistics.median(v), "min": min(v), "max": max(v),
                      "saved_median": statistics.median(d), "saved_min": min(d),
                      "saved_max": max(d)}  # fmt: skip
        out["kinds"][kind] = row
    return out


def table(res: dict[str, Any]) -> str:
    sizes = res["sizes"]
    base = sizes[0]
    lines = [
        f"ct filled with {res['fill']:,} flows of {CT_CAPACITY:,}; {res['rounds']} rounds x "
        f"{res['calls']} calls; load average {res['load_before']} -> {res['load_after']}",
        "ns per operation (newflow: per flow, 11 operations); median of rounds' best calls "
        f"(min-max); saved = {base}-byte key minus this one, per round",
        "| kind | " + " | ".join(f"key {s}" for s in sizes) + " | "
        + " | ".join(f"saved by {s}" for s in sizes[1:]) + " |",
        "|---|" + "---:|" * (2 * len(sizes) - 1),
    ]
    for kind, row in res["kinds"].items():
        cells = [f"{row[s]['median']:.1f} ({row[s]['min']:.1f}-{row[s]['max']:.1f})"
                 for s in sizes]  # fmt: skip
        saved = [f"{row[s]['saved_median']:.1f} ({row[s]['saved_min']:.1f}-"
                 f"{row[s]['saved_max']:.1f})" for s in sizes[1:]]  # fmt: skip
        lines.append(f"| {kind} | " + " | ".join(cells + saved) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--calls", type=int, default=5, help="timed calls per size per round")
    ap.add_argument("--repeat", type=int, default=40_000,
                    help="operations per call (newflow: this / 16 flows)")
    ap.add_argument("--fill", type=float, default=0.5, help="ct table's fill fraction")
    ap.add_argument("--sizes", default="44,20,16", help="key sizes; the first is the base")
    ap.add_argument("--json", help="also write the figures here")
    a = ap.parse_args()
    sizes = [int(s) for s in a.sizes.split(",")]
    if any(s not in KEY_STRUCTS for s in sizes):
        ap.error(f"--sizes: each of {sorted(KEY_STRUCTS)}")
    if not 0 < a.fill < 0.5 + 0.4:
        ap.error("--fill: between 0 and 0.9 (new flows need free entries)")
    t0 = time.monotonic()
    res = measure(sizes, a.fill, a.rounds, a.calls, a.repeat)
    res["seconds"] = round(time.monotonic() - t0, 1)
    print(table(res))
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
