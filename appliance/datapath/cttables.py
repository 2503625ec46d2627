"""The conntrack tables as one: the Python side of bpf/lib/ct_tables.h.

A flow's entries live in one of four LRU hashes: ``ct4_map`` (IPv4 keys, a compact 20-byte
``struct ct4_key``) and ``ct_map`` (IPv6 keys, the 44-byte ``struct ct_key``), and while a
TCP handshake runs ``syn4_map`` / ``syn_map``. The table of a key follows its family, so a
NAT64/46 flow has its ORIG entry in one table and its REPLY entry in the other.

Everything outside this module speaks the wide key (struct ct_key bytes, what the HA sync
codec and the conntrack sweep compute from an entry); ``FlowTables`` routes a wide key to
its table and narrows it there. Walks hand out each table's own keys (``FlowTable.keys``
says which; ``FlowTable.wide`` widens), so a million-flow walk converts only the few keys
a caller keeps. An older program or a test's stand-in without ct4_map keeps every family in
ct_map: then nothing is narrowed.
"""

from __future__ import annotations

import ctypes as ct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from appliance.datapath import ctwalk

KEY_SIZE = 44  # sizeof(struct ct_key)
KEY4_SIZE = 20  # sizeof(struct ct4_key)
FAMILY_OFF = 37  # struct ct_key family
_Z12 = bytes(12)

# (C map name, kind, compact): established tables first, as walks should visit them.
TABLES = (("ct_map", "ct", False), ("ct4_map", "ct", True), ("syn_map", "syn", False),
          ("syn4_map", "syn", True))  # fmt: skip


def narrow(key: bytes) -> bytes:
    """struct ct_key (an IPv4 one) -> struct ct4_key: the addresses' first words, then the
    key's last 12 bytes (ports, protocol, family, pad, tag) as they are."""
    return key[0:4] + key[16:20] + key[32:44]


def widen(key4: bytes) -> bytes:
    """struct ct4_key -> struct ct_key (IPv4 addresses in word 0, words 1..3 zero)."""
    return key4[0:4] + _Z12 + key4[4:8] + _Z12 + key4[8:20]


@dataclass(frozen=True)
class FlowTable:
    """One conntrack map: ``t`` the bcc table, ``kind`` "ct" or "syn", ``compact`` when
    its keys are struct ct4_key."""

    name: str
    t: Any
    kind: str
    compact: bool

    @property
    def key_size(self) -> int:
        return ct.sizeof(self.t.Key)

    def wide(self, key: bytes) -> bytes:
        """One of this table's keys as a struct ct_key."""
        return widen(key) if self.compact else key

    def walk(self) -> Iterator[ctwalk.Chunk]:
        """(keys in this table's own form, values, n) chunks."""
        return ctwalk.walk(self.t)


class FlowTables:
    """The conntrack maps of one program, chosen by kind and a key's family."""

    def __init__(self, tables: dict[str, Any]) -> None:
        self.tables = [FlowTable(name, tables[name], kind, compact)
                       for name, kind, compact in TABLES if name in tables]  # fmt: skip
        if not any(f.name == "ct_map" for f in self.tables):
            raise KeyError("ct_map")
        self._by: dict[tuple[str, int], FlowTable] = {}
        for f in self.tables:  # compact tables first: IPv4 goes there where there is one
            if f.compact:
                self._by[(f.kind, 4)] = f
        for f in self.tables:
            if not f.compact:
                self._by[(f.kind, 6)] = f
                self._by.setdefault((f.kind, 4), f)

    def __iter__(self) -> Iterator[FlowTable]:
        return iter(self.tables)

    def of_kind(self, kind: str) -> list[FlowTable]:
        return [f for f in self.tables if f.kind == kind]

    def table(self, kind: str, family: int) -> FlowTable | None:
        """The table where a key of ``family`` lives (None: no such kind here)."""
        return self._by.get((kind, 4 if family == 4 else 6))

    def own_key(self, f: FlowTable, key: bytes) -> bytes:
        return narrow(key) if f.compact else key

    def split(self, kind: str, keys: bytes) -> list[tuple[FlowTable, bytes]]:
        """Packed wide keys -> (table, packed keys in its form) per table."""
        out: dict[str, tuple[FlowTable, list[bytes]]] = {}
        for i in range(0, len(keys) - KEY_SIZE + 1, KEY_SIZE):
            k = keys[i : i + KEY_SIZE]
            f = self.table(kind, k[FAMILY_OFF])
            if f is None:
                continue
            out.setdefault(f.name, (f, []))[1].append(narrow(k) if f.compact else k)
        return [(f, b"".join(ks)) for f, ks in out.values()]

    def get(self, kind: str, key: bytes) -> Any:
        """The entry (a ctypes copy) under wide ``key``, None when there is none."""
        f = self.table(kind, key[FAMILY_OFF])
        if f is None:
            return None
        return f.t.get(f.t.Key.from_buffer_copy(self.own_key(f, key)))

    def delete(self, kind: str, keys: bytes) -> int:
        """Delete the packed wide ``keys`` (missing ones skipped); how many went."""
        return sum(ctwalk.delete(f.t, own) for f, own in self.split(kind, keys))

    def count(self, kind: str) -> int:
        return sum(ctwalk.count(f.t) for f in self.of_kind(kind))
