"""Selection tables built by the control plane (pure Python: no root, no bcc)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from appliance.datapath.tables import (
    MAGLEV_MAX,
    is_prime,
    maglev_size,
    maglev_table,
    weighted_sequence,
)


def _names(n: int) -> list[str]:
    return [f"198.18.1.{i}:8080" for i in range(1, n + 1)]


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
