"""A read-only OID tree made of column-major tables, and the pysnmp controller serving it.

pysnmp's own MIB tree wants one managed object per cell; at 10,000 services that is hundreds
of thousands of pyasn1 objects to create and re-create on every change. Instead every part of
what the agent serves (a scalar group is a table with the one row `.0`) is a `Table`: a prefix,
its column numbers and a sorted list of row indexes. A cell's OID is prefix + column + index,
so GET is a bisect and GETNEXT is "next row in this column, else first row of the next
column": O(log rows) with no per-cell state, and values are made only when read, directly
as BER (ber.py) rather than as pyasn1 objects.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from pysnmp.proto.rfc1902 import ObjectName
from pysnmp.smi import error as smi_error
from pysnmp.smi.instrum import AbstractMibInstrumController

from northbound.snmp import ber

Oid = tuple[int, ...]
_UNSET = object()
# cell(column, row position) -> BER value TLV (ber.py), or None when the cell has no value.
CellFn = Callable[[int, int], Any]
# Rows may change between reads (interfaces come and go): rows() -> sorted index tuples.
RowsFn = Callable[[], Sequence[Oid]]


@dataclass
class Table:
    prefix: Oid
    columns: Sequence[int]
    rows: RowsFn
    # cell(column, row position) -> the value as a BER TLV (see ber.py), or None.
    cell: CellFn
    # Columns whose values come from the config only: their encoded varbinds are kept for
    # the life of the table (a config snapshot), so a walk re-encodes only live values.
    static: frozenset[int] = frozenset()
    _col_enc: dict[int, bytes] = field(default_factory=dict, repr=False)
    # Per static column, the encoded varbind of each row position (_UNSET until read).
    _static_vb: dict[int, list[Any]] = field(default_factory=dict, repr=False)
    _row_enc: dict[Oid, bytes] = field(default_factory=dict, repr=False)

    def _varbind(self, col: int, row: Oid, value: bytes) -> bytes:
        """The encoded varbind prefix.col.row = value; OID parts are encoded once each."""
        head = self._col_enc.get(col)
        if head is None:
            head = self._col_enc[col] = ber.oid_body((*self.prefix, col))
        tail = self._row_enc.get(row)
        if tail is None:
            if len(self._row_enc) > 500_000:  # bounded, whatever the rows function returns
                self._row_enc.clear()
            tail = self._row_enc[row] = ber.subids(row)
        oid_len = len(head) + len(tail)
        if oid_len < 0x80:
            inner = bytes((ber.OBJECT_ID, oid_len)) + head + tail + value
            if len(inner) < 0x80:
                return bytes((ber.SEQUENCE, len(inner))) + inner
            return ber.tlv(ber.SEQUENCE, inner)
        return ber.varbind(head + tail, value)

    def get(self, oid: Oid) -> bytes:
        """The value TLV at `oid` (which starts with prefix), or a noSuch* value."""
        rest = oid[len(self.prefix) :]
        if not rest or rest[0] not in self.columns:
            return ber.NO_SUCH_OBJECT
        rows = self.rows()
        index = rest[1:]
        pos = bisect.bisect_left(rows, index)
        if pos == len(rows) or rows[pos] != index:
            return ber.NO_SUCH_INSTANCE
        value = self.cell(rest[0], pos)
        return ber.NO_SUCH_INSTANCE if value is None else value

    def next(self, oid: Oid) -> tuple[Oid, bytes] | None:
        """The first cell after `oid` within this table as (OID, encoded varbind), or None."""
        return next(self.iter_after(oid), None)

    def iter_after(self, oid: Oid) -> Iterator[tuple[Oid, bytes]]:
        """The cells after `oid` within this table, in OID order, as (OID, encoded varbind).

        One bisect, then a plain scan: a bulk walk reads hundreds of cells per request and
        must not pay the search for each one.
        """
        n = len(self.prefix)
        head = oid[:n]
        if head > self.prefix:
            return
        rows = self.rows()
        if not rows:
            return
        if head < self.prefix or len(oid) == n:
            col_pos, row_pos = 0, 0
        else:
            col = oid[n]
            col_pos = bisect.bisect_left(self.columns, col)
            if col_pos < len(self.columns) and self.columns[col_pos] == col:
                # bisect_right also skips the row when oid lies under it (a, b) < (a, b, c).
                row_pos = bisect.bisect_right(rows, oid[n + 1 :])
            else:
                row_pos = 0
        cell, prefix, varbind = self.cell, self.prefix, self._varbind
        while col_pos < len(self.columns):
            col = self.columns[col_pos]
            if col in self.static:
                cache = self._static_vb.get(col)
                if cache is None or len(cache) != len(rows):
                    cache = self._static_vb[col] = [_UNSET] * len(rows)
                while row_pos < len(rows):
                    encoded = cache[row_pos]
                    if encoded is _UNSET:
                        value = cell(col, row_pos)
                        encoded = cache[row_pos] = (
                            None if value is None else varbind(col, rows[row_pos], value)
                        )
                    if encoded is not None:
                        yield (*prefix, col, *rows[row_pos]), encoded
                    row_pos += 1
            else:
                while row_pos < len(rows):
                    value = cell(col, row_pos)
                    if value is not None:
                        row = rows[row_pos]
                        yield (*prefix, col, *row), varbind(col, row, value)
                    row_pos += 1
            col_pos += 1
            row_pos = 0


@dataclass
class Tree:
    """Tables in OID order; they must not overlap."""

    tables: list[Table] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.tables.sort(key=lambda t: t.prefix)
        self._prefixes = [t.prefix for t in self.tables]

    def first_table(self, oid: Oid) -> int:
        """Position of the first table that can hold a cell after `oid`.

        The last table whose prefix sorts at or before `oid`: either oid lies inside it, or
        every table before it ends before oid. (A table nested in another, like ifTable in
        the ifNumber group, holds the outer one's last cells, so starting at the inner one
        skips nothing.)
        """
        return max(bisect.bisect_right(self._prefixes, oid) - 1, 0)

    def find(self, oid: Oid) -> Table | None:
        # Longest prefix: ifNumber's group (mib-2.2) contains ifTable (mib-2.2.2.1).
        best = None
        for table in self.tables:
            if oid[: len(table.prefix)] == table.prefix and (
                best is None or len(table.prefix) > len(best.prefix)
            ):
                best = table
        return best

    def get(self, oid: Oid) -> bytes:
        table = self.find(oid)
        return ber.NO_SUCH_OBJECT if table is None else table.get(oid)

    def iter_after(self, oid: Oid) -> Iterator[tuple[Oid, bytes, int]]:
        """Every cell after `oid`, with the position of its table."""
        for pos in range(self.first_table(oid), len(self.tables)):
            for found_oid, encoded in self.tables[pos].iter_after(oid):
                yield found_oid, encoded, pos

    def next(self, oid: Oid, start: int = 0) -> tuple[Oid, bytes, int] | None:
        """The first cell after `oid`, with the position of its table (to resume from)."""
        for pos in range(start, len(self.tables)):
            found = self.tables[pos].next(oid)
            if found is not None:
                return found[0], found[1], pos
        return None


class TreeController(AbstractMibInstrumController):
    """Serves a `Tree` to pysnmp's command responders, checking VACM per table.

    pysnmp's responders pass `acFun` (their VACM check) and expect the controller to call
    it. The check walks pysnmp's own VACM MIB and costs tens of microseconds, too much per
    cell over a 300,000-cell walk; since every view this agent configures contains whole
    tables, the answer is the same for every cell of a table, so it is cached per
    (principal, table) until the access configuration changes (`reset_access`).
    """

    def __init__(self, tree_fn: Callable[[], Tree]) -> None:
        self._tree_fn = tree_fn
        self._access: dict[tuple[Any, ...], bool] = {}
        self.reads = 0

    def reset_access(self) -> None:
        self._access.clear()

    def _allowed(self, table: Table, context: dict[str, Any], idx: int) -> bool:
        """True if the requester may read `table`; raises AuthorizationError if no access."""
        engine = context["snmpEngine"]
        ac_fun = context.get("acFun")
        if ac_fun is None:
            return True
        ctx = engine.observer.get_execution_context("rfc3412.receiveMessage:request")
        key = (
            ctx["securityModel"],
            bytes(ctx["securityName"]),
            int(ctx["securityLevel"]),
            bytes(ctx["contextName"]),
            ctx["pdu"].getTagSet(),
            table.prefix,
        )
        allowed = self._access.get(key)
        if allowed is None:
            try:
                # A value of None keeps pysnmp's v1 Counter64 rule out of the answer:
                # v1 has no access here at all (no VACM group for security model 1).
                not_in_view = ac_fun("read", (ObjectName(table.prefix), None), **context, idx=idx)
            except smi_error.AuthorizationError:
                # Not cached: cheap to refuse again, and a stale refusal would outlive a
                # configuration that grants access.
                raise
            allowed = self._access[key] = not not_in_view
        return allowed

    # Both readers answer (OID tuple, encoded varbind bytes) pairs: the responders in
    # responders.py send those without pyasn1 (see ber.py).
    def read_variables(self, *var_binds: Any, **context: Any) -> list[tuple[Oid, bytes]]:
        tree = self._tree_fn()
        out = []
        for idx, vb in enumerate(var_binds):
            oid = tuple(vb[0])
            table = tree.find(oid)
            if table is None or not self._allowed(table, context, idx):
                value = ber.NO_SUCH_OBJECT
            else:
                value = table.get(oid)
            out.append((oid, ber.varbind(ber.oid_body(oid), value)))
        self.reads += len(out)
        return out

    def read_next_variables(self, *var_binds: Any, **context: Any) -> list[tuple[Oid, bytes]]:
        tree = self._tree_fn()
        out = []
        for idx, vb in enumerate(var_binds):
            oid = tuple(vb[0])
            start = tree.first_table(oid)
            result: tuple[Oid, bytes] | None = None
            while True:
                found = tree.next(oid, start)
                if found is None:
                    break
                next_oid, encoded, start = found
                if self._allowed(tree.tables[start], context, idx):
                    result = (next_oid, encoded)
                    break
                # Whole table outside the view: jump past it.
                oid = (*tree.tables[start].prefix, 0xFFFFFFFF)
            out.append(result if result is not None else (oid, ber.end_of_view(oid)))
        self.reads += len(out)
        return out

    def read_next_run(
        self,
        name: Any,
        count: int,
        max_bytes: int,
        view: Callable[[Table], bool] | None = None,
        **context: Any,
    ) -> list[tuple[Oid, bytes]]:
        """Up to `count` successive cells after `name` within `max_bytes` of encoding.

        A GETBULK with one repeated varbind (every table walk) reads a run of cells: one
        search and a scan instead of a search per repetition. Ends with endOfMibView when the
        tree ends first. `view`, when given, decides access per table instead of pysnmp's
        VACM (the v2c fast path, fastpath.py).
        """
        tree = self._tree_fn()
        oid = tuple(name)
        out: list[tuple[Oid, bytes]] = []
        size = 0
        checked: dict[int, bool] = {}
        for next_oid, encoded, pos in tree.iter_after(oid):
            allowed = checked.get(pos)
            if allowed is None:
                table = tree.tables[pos]
                allowed = checked[pos] = (
                    view(table) if view is not None else self._allowed(table, context, 0)
                )
            if not allowed:
                continue
            size += len(encoded)
            if out and size > max_bytes:
                break
            out.append((next_oid, encoded))
            oid = next_oid
            if len(out) >= count:
                break
        else:
            if len(out) < count:
                out.append((oid, ber.end_of_view(oid)))
        self.reads += len(out)
        return out

    def write_variables(self, *var_binds: Any, **context: Any) -> list[tuple[Any, Any]]:
        # Nothing this agent serves is writable (configuration changes go through the
        # config service), so SET is refused whatever the access configuration says.
        raise smi_error.NotWritableError(idx=0, name=var_binds[0][0] if var_binds else None)


class TtlCache:
    """Values computed by a function, each kept for at most `ttl` seconds.

    The whole cache is dropped when its `ttl` window ends (rather than an expiry per entry):
    a lookup is then one dict access, which matters at hundreds of thousands per walk. Keys
    should be str or int: tuples would be new GC-tracked objects surviving into the older
    generations, whose full passes stall the event loop.
    """

    def __init__(self, fn: Callable[..., Any], ttl: float = 1.0) -> None:
        self._fn, self._ttl = fn, ttl
        self._items: dict[Any, Any] = {}
        self._until = 0.0

    def get(self, key: Any, *args: Any) -> Any:
        """The cached value for `key`, else fn(*args) (cached under `key`)."""
        now = time.monotonic()
        if now >= self._until:
            self._items = {}
            self._until = now + self._ttl
        items = self._items
        if key in items:
            return items[key]
        value = items[key] = self._fn(*args)
        return value

    def clear(self) -> None:
        self._items = {}
        self._until = 0.0
