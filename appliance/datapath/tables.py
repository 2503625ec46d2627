"""Selection tables the control plane builds for the datapath (pure Python, no bcc).

The datapath only picks a slot (bpf/lib/select.h); what a slot holds is decided here:
the plain endpoint order, a smooth weighted round-robin sequence, or a Maglev table.
"""

from __future__ import annotations

import hashlib
import heapq
from collections.abc import Iterator, Sequence
from functools import reduce
from itertools import cycle, islice
from math import gcd

MAGLEV_MAX = 65537
# Table sizes come in tiers, not "smallest prime >= k x N": a size that follows the
# endpoint count would change when an endpoint is added or removed, and a new size moves
# nearly every flow. Measured here (N = 3..32, each endpoint removed in turn): 100 x N
# slots moved up to 1/N + 3.5% of the slots; 4027 slots up to 16 endpoints and 8059 up to
# 32 (>= 250 x N) stay under 1/N + 2% (worst 1.65% resp. 1.79%), load within 1%.
# The sizes fill whole sel_map pages (layout.SEL_PAGE = 1008: 4 resp. 8 pages), and keep
# 10,000 services of 32 endpoints at 8 x 4 KiB each (~330 MB); 65537 for 10,000 would
# need ~2.7 GB. Bigger services (33..512 endpoints) take 65537 (>= 100 x N up to 655).
MAGLEV_TIERS = ((16, 4027), (32, 8059))  # (up to N endpoints, prime size)


def maglev_size(n_endpoints: int) -> int:
    """4027 slots up to 16 endpoints, 8059 up to 32, else 65537."""
    for most, size in MAGLEV_TIERS:
        if n_endpoints <= most:
            return size
    return MAGLEV_MAX


def is_prime(n: int) -> bool:
    """For the tests, and for anyone changing MAGLEV_TIERS."""
    if n < 2:
        return False
    if n % 2 == 0:
        return n == 2
    i = 3
    while i * i <= n:
        if n % i == 0:
            return False
        i += 2
    return True


def _h(name: str, salt: bytes) -> int:
    # hashlib, not hash(): Python's str hash is salted per process, and the table must be
    # the same after a daemon restart so established Maglev flows keep their endpoint.
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8, key=salt).digest(), "big")


def maglev_table(names: Sequence[str], weights: Sequence[int], size: int) -> list[int]:
    """The Maglev lookup table: slot -> index into ``names``.

    Each endpoint walks its own permutation of the slots (offset, skip from two hashes of
    its name) and claims the next free slot on its turn. Weights: an endpoint takes turns in
    proportion to its weight (credit scheme), so a weight-2 endpoint fills ~2x the slots.
    Zero-weight endpoints get nothing. ``size`` must be prime.

    The table depends only on the set of (name, weight) pairs, not on their order: turns
    are taken in the order of the names, so appliances that list the same endpoints in a
    different order (added one by one in another order) build the same table, and a flow
    that a router's ECMP moves between them reaches the same endpoint.
    """
    rank = sorted(range(len(names)), key=names.__getitem__)
    if rank != list(range(len(names))):
        by_rank = _maglev_in_order([names[i] for i in rank], [weights[i] for i in rank], size)
        return [rank[r] for r in by_rank]
    return _maglev_in_order(names, weights, size)


def _maglev_in_order(names: Sequence[str], weights: Sequence[int], size: int) -> list[int]:
    """maglev_table with turns in the order given (names sorted by the caller)."""
    live = [i for i, w in enumerate(weights) if w > 0]
    if not live:
        return []
    # Where each endpoint's permutation stands (offset + k x skip, mod size) and its step.
    pos = [_h(n, b"offset") % size for n in names]
    skip = [_h(n, b"skip") % (size - 1) + 1 for n in names]
    wmax = max(weights[i] for i in live)
    # Turns in rounds: each round every endpoint gains its weight in credit and takes a
    # turn per wmax of credit, in index order; so turn j of endpoint i falls in round
    # ceil((j + 1) x wmax / w_i) - 1. A heap of (round, index) yields the turns in that
    # order without visiting, every round, the endpoints that have none (one heavy
    # endpoint among 511 light ones cost 0.8 s that way).
    table = [-1] * size
    # The hot loop of a table build (~70,000 probes for 8,059 slots): additions instead
    # of a multiplication and a modulo per probe.
    for i in islice(_turns(live, weights, wmax), size):
        c, step = pos[i], skip[i]
        while table[c] >= 0:
            c += step
            if c >= size:
                c -= size
        table[c] = i
        c += step
        pos[i] = c - size if c >= size else c
    return table


def _turns(live: list[int], weights: Sequence[int], wmax: int) -> Iterator[int]:
    """Endpoint indices in turn order, endlessly (see maglev_table)."""
    if all(weights[i] == wmax for i in live):
        yield from cycle(live)  # equal weights: one turn each per round, no heap needed
    taken = dict.fromkeys(live, 0)
    heap = [(-(-wmax // weights[i]) - 1, i) for i in live]
    heapq.heapify(heap)
    while True:
        i = heap[0][1]
        yield i
        taken[i] += 1
        heapq.heapreplace(heap, (-(-(taken[i] + 1) * wmax // weights[i]) - 1, i))


def weighted_sequence(weights: Sequence[int]) -> list[int]:
    """Smooth weighted round-robin: indices into ``weights``, one full cycle.

    Weights are divided by their gcd so the cycle is as short as possible; 80/20 gives the
    5-slot cycle [0, 0, 1, 0, 0], well interleaved. Zero weights are left out.

    An endpoint of weight w takes its k-th turn (k = 0..w-1) at the virtual time
    (k + 1/2) / w of the cycle, and the cycle is those turns in time order (ties: lower
    index first). Each endpoint's turns are spread evenly over the cycle, so any window of
    slots holds every endpoint in proportion to its weight, within one turn. The cycle is
    merged with a heap holding each endpoint's next turn: O(S log N) for S slots and N
    endpoints. (The nginx formulation, which adds every weight at every slot, cost
    O(S x N): 5 s for 512 endpoints of random weights, under the datapath lock, at every
    health change.) On the cases the tests pin down ([3, 1], [4, 1], equal weights) both
    give the same sequence.
    """
    live = [(i, w) for i, w in enumerate(weights) if w > 0]
    if not live:
        return []
    g = reduce(gcd, (w for _, w in live))
    # Turn k of weight w at (2k + 1) / 2w. Floats compare these exactly enough: IEEE
    # division rounds correctly, so equal fractions give equal floats (ties stay ties),
    # and two different ones (denominators <= 510) differ by >= 2**-18, far above 2**-52.
    span = [2 * (w // g) for _, w in live]
    heap = [(1 / d, i, 1, d) for (i, _), d in zip(live, span, strict=True)]
    heapq.heapify(heap)
    total = sum(span) // 2
    out = [0] * total
    for slot in range(total):
        _, i, odd, d = heap[0]
        out[slot] = i
        odd += 2
        if odd < d:
            heapq.heapreplace(heap, (odd / d, i, odd, d))
        else:
            heapq.heappop(heap)  # its last turn in the cycle
    return out
