"""The order test files are handed to the two pytest-xdist workers: longest first.

``make test`` runs the suite in two workers, a whole file at a time (``--dist loadfile``,
so a file's module-scoped daemon is started once). xdist hands the files out in the order
collected (``--no-loadscope-reorder``; its default puts the files with the most tests first,
which left the few long multi-appliance tests to the end, one worker busy, the other idle).
Longest first is the classic fix for that tail: what is left at the end is short.

A file's length is estimated from its tests' markers: ``slow`` (multi-appliance, bundle
builds: tens of seconds), ``datapath`` (namespaces, programs, traffic: seconds), the rest
(units: a fraction of a second). Files keep their tests in their own order.

Loaded from ``tests/conftest.py`` (``pytest_plugins``).
"""

from __future__ import annotations

import pytest

# Rough seconds per test on a quiet 2-core machine, by marker.
SECONDS = {"slow": 20.0, "datapath": 2.0}
OTHER = 0.3


def estimate(item: pytest.Item) -> float:
    for marker, seconds in SECONDS.items():
        if item.get_closest_marker(marker) is not None:
            return seconds
    return OTHER


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    files: dict[str, list[pytest.Item]] = {}
    for item in items:
        files.setdefault(item.nodeid.split("::", 1)[0], []).append(item)
    cost = {path: sum(estimate(i) for i in group) for path, group in files.items()}
    # Stable: equal estimates keep the collected order, and every worker sorts alike (xdist
    # checks that all workers collected the same list).
    order = sorted(files, key=lambda path: -cost[path])
    items[:] = [item for path in order for item in files[path]]
