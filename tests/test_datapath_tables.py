"""Selection tables built by the control plane (pure Python: no root, no bcc)."""

from __future__ import annotations

import math
import os
import random
import subprocess
import sys
import time
from collections import Counter

import pytest

from appliance.datapath.tables import (
    MAGLEV_MAX,
    is_prime,
    maglev_size,
    maglev_table,
    weighted_sequence,
)


def _names(n: int) -> list[str]:
    return [f"198.18.{1 + i // 250}.{i % 250}:8080" for i in range(1, n + 1)]


@pytest.mark.parametrize("n", [1, 2, 16, 17, 65, 256, 655])
def test_maglev_size_is_a_prime_of_at_least_100_slots_per_endpoint(n: int) -> None:
    size = maglev_size(n)
    assert is_prime(size) and size >= 100 * n and size <= MAGLEV_MAX


@pytest.mark.parametrize("n", [3, 5, 10, 16, 32])
def test_maglev_removing_one_endpoint_remaps_at_most_1_over_n_plus_2_percent(n: int) -> None:
    names = _names(n)
    size = maglev_size(n)
    table = maglev_table(names, [1] * n, size)
    assert sorted(set(table)) == list(range(n))
    for gone in range(n):
        rest = names[:gone] + names[gone + 1 :]
        assert maglev_size(n - 1) == size or n - 1 == 16  # same tier: the point of tiers
        if maglev_size(n - 1) != size:
            continue
        after = maglev_table(rest, [1] * (n - 1), size)
        moved = sum(1 for a, b in zip(table, after, strict=True) if names[a] != rest[b])
        assert moved / size <= 1 / n + 0.02, (n, gone, moved / size)


def test_maglev_health_down_is_the_same_as_weight_zero_and_moves_only_its_slots() -> None:
    names = _names(4)
    size = maglev_size(4)
    table = maglev_table(names, [1, 1, 1, 1], size)
    down = maglev_table(names, [1, 0, 1, 1], size)
    moved = sum(1 for a, b in zip(table, down, strict=True) if a != b)
    assert 1 not in down
    assert moved / size <= 1 / 4 + 0.02


def test_maglev_honours_weights() -> None:
    table = maglev_table(_names(3), [2, 1, 1], maglev_size(3))
    share = table.count(0) / len(table)
    assert 0.45 <= share <= 0.55  # 2 / (2 + 1 + 1)


def test_maglev_is_stable_across_processes() -> None:
    # blake2b, not hash(): a restarted daemon must build the very same table.
    code = (
        "from appliance.datapath.tables import maglev_table;"
        f"print(maglev_table({_names(3)!r}, [1, 1, 1], 16381)[:64])"
    )
    outs = {
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30,
                       env={**os.environ, "PYTHONHASHSEED": seed}, check=True).stdout
        for seed in ("1", "2")
    }  # fmt: skip
    assert outs == {f"{maglev_table(_names(3), [1, 1, 1], 16381)[:64]}\n"}


def test_weighted_sequence() -> None:
    seq = weighted_sequence([80, 20])
    assert seq.count(0) == 4 and seq.count(1) == 1 and len(seq) == 5
    assert weighted_sequence([3, 1, 0]) == [0, 0, 1, 0]
    assert weighted_sequence([0, 0]) == []
    assert weighted_sequence([1, 1, 1]) == [0, 1, 2]


def test_weighted_sequence_of_512_random_weights_is_fast_and_proportional() -> None:
    # Rebuilt at every health change under the datapath lock: the nginx loop (every weight
    # added at every slot) took 5 s here for 512 endpoints; the heap merge ~0.03 s.
    rnd = random.Random(512)
    weights = [rnd.randint(1, 255) for _ in range(512)]
    # This thread's CPU time: other work on a shared machine does not count, nor do the
    # threads other tests of this xdist worker left running (process_time counted them: CI
    # read 0.21 s once for a computation of ~0.03 s).
    started = time.thread_time()
    seq = weighted_sequence(weights)
    assert time.thread_time() - started < 0.2
    total = sum(weights)
    assert len(seq) == total  # gcd 1 here: one turn per unit of weight
    assert Counter(seq) == dict(enumerate(weights))
    # Smooth, not just right over the cycle: after any t slots every endpoint has had its
    # share t x w / total within 1.5 turns (the nginx sequence keeps the same kind of bound).
    seen = [0] * len(weights)
    for t, i in enumerate(seq, 1):
        seen[i] += 1
        if t % 61 == 0:
            lag = max(abs(seen[j] - t * w / total) for j, w in enumerate(weights))
            assert lag <= 1.5, (t, lag)


@pytest.mark.parametrize("seed", range(20))
def test_weighted_sequence_spreads_small_weights_evenly(seed: int) -> None:
    rnd = random.Random(seed)
    weights = [rnd.randint(0, 12) for _ in range(rnd.randint(1, 8))]
    seq = weighted_sequence(weights)
    g = math.gcd(*weights)
    assert Counter(seq) == {i: w // g for i, w in enumerate(weights) if w}
    total = len(seq)
    seen = [0] * len(weights)
    for t, i in enumerate(seq, 1):
        seen[i] += 1
        assert all(abs(seen[j] - t * (w // g if g else 0) / total) <= 1.5
                   for j, w in enumerate(weights)), (weights, seq)  # fmt: skip


def test_maglev_with_one_heavy_endpoint_among_many_light_ones_is_fast() -> None:
    # Turns used to be dealt by visiting every endpoint every round: with weights 255 and
    # 511 x 1, ~65,000 rounds x 512 endpoints, 0.86 s of CPU here; a heap of next turns
    # takes 0.12 s and deals the same turns in the same order (the same table).
    weights = [255] + [1] * 511
    started = time.process_time()
    table = maglev_table(_names(512), weights, MAGLEV_MAX)
    assert time.process_time() - started < 0.45
    assert 0.30 <= table.count(0) / MAGLEV_MAX <= 0.36  # 255 / (255 + 511) = 0.333
    assert len(set(table)) == 512


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_maglev_table_is_the_same_whatever_the_order_of_the_endpoints(seed: int) -> None:
    """Two appliances that list the same endpoints in another order (added in another
    order) build the same table: slot -> endpoint name, not slot -> local index."""
    rng = random.Random(seed)
    names = _names(32)
    weights = [rng.choice([0, 1, 1, 2, 5]) for _ in names]  # 0: down or weight 0
    size = maglev_size(len(names))
    first = [names[i] for i in maglev_table(names, weights, size)]
    order = list(range(len(names)))
    rng.shuffle(order)
    shuffled = [names[i] for i in order]
    again = maglev_table(shuffled, [weights[i] for i in order], size)
    assert [shuffled[i] for i in again] == first
    assert len(set(first)) == sum(1 for w in weights if w > 0)
