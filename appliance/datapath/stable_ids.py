"""Small ids for named things (firewall rules, policers, mirror sessions) that outlive the
daemon: an id is the index of the thing's counters in a pinned per-CPU map, so a daemon that
restarts must give every name the id it had, or the counters start again from zero (or, worse,
land on another rule).

The pinned maps keep id -> a 16-byte digest of the name (``fw_names`` in bpf/lib/firewall.h,
``qos_names`` in bpf/lib/qos_maps.h). ``StableIds`` is pure: the caller hands it the pinned
(id, digest) pairs once at start (``recover``), and after each ``assign`` writes the digests
of ``created`` ids (their counters start at zero) and deletes the ``released`` ones.
"""

from __future__ import annotations

import hashlib
from collections.abc import Hashable, Iterable
from itertools import chain


def digest(name: Hashable) -> bytes:
    """16 bytes naming ``name`` (a string, or a tuple of strings such as (table, rule))."""
    text = "\0".join(name) if isinstance(name, tuple) else str(name)
    return hashlib.blake2b(text.encode(), digest_size=16).digest()


class StableIds:
    """Ids 1..limit-1: a name keeps its id while it exists, and across a restart."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.ids: dict[Hashable, int] = {}
        self.recovered: dict[bytes, int] = {}  # a previous daemon's ids, until claimed
        self.created: set[int] = set()  # by the last assign: new ids (counters from zero)
        self.released: set[int] = set()  # by the last assign: ids no name holds any more
        self.adopted: set[int] = set()  # by the last assign: ids taken back from the pins

    def recover(self, pinned: Iterable[tuple[int, bytes]]) -> None:
        self.recovered = {bytes(d): int(i) for i, d in pinned if 0 < int(i) < self.limit}

    def assign(self, names: Iterable[Hashable]) -> dict[Hashable, int]:
        names = list(names)
        wanted = set(names)
        self.created, self.adopted = set(), set()
        self.released = {i for n, i in self.ids.items() if n not in wanted}
        keep = {n: i for n, i in self.ids.items() if n in wanted}
        recovered, self.recovered = self.recovered, {}
        for n in names:
            if n not in keep and (i := recovered.pop(digest(n), None)) is not None:
                keep[n] = i
                self.adopted.add(i)
        self.released |= set(recovered.values())  # names gone while no daemon ran
        used = set(keep.values())
        # A released id is not handed out again while ids remain that nobody held: the
        # datapath still runs the old generation, whose rules count under the released ids,
        # until the new one is switched in, so a new name given one at once would inherit
        # the hits of a rule just deleted (the counter is zeroed before the switch).
        free = chain((i for i in range(1, self.limit) if i not in used and i not in self.released),
                     sorted(self.released - used))  # fmt: skip
        for n in names:
            if n not in keep:
                keep[n] = next(free)
                self.created.add(keep[n])
        self.released -= set(keep.values())
        self.ids = keep
        return dict(keep)
