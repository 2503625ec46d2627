"""Undo one commit's change on top of whatever was committed since (a three-way revert).

A confirmed commit that is not confirmed must give back exactly what it changed, and nothing
that other front doors committed in the meantime. For each item (service or section) it
touched we know three values: `before` (before the confirmed commit), `after` (what it left)
and `current` (running now). Node by node:

- current == after: nobody touched it since, so it goes back to `before`;
- before == after: the confirmed commit did not change it, so `current` stays;
- both dicts (containers, list entries matched by their keys): decide child by child;
- otherwise a later commit changed a node the confirmed commit also changed: the later
  value wins (its author saw the confirmed change and chose on top of it) and the node is
  reported as a conflict.

Values are the explicit config (libyang JSON encoding); ABSENT stands for a node that is
not there.
"""

from __future__ import annotations

from typing import Any

from appliance.config.schema import Schema


class _Absent:
    def __repr__(self) -> str:
        return "ABSENT"


ABSENT: Any = _Absent()


def revert(
    after: Any,
    current: Any,
    before: Any,
    spath: str,
    path: str,
    schema: Schema,
    *,
    entry: bool = False,
) -> tuple[Any, list[str]]:
    """The value of one node once the change before→after is undone on top of `current`,
    and the data paths where a later commit's value was kept instead. `entry`: the node is
    a list entry, whose existence is itself a change (a container's is not)."""
    conflicts: list[str] = []
    value = _revert(after, current, before, spath, path, schema, conflicts, entry)
    return value, conflicts


def _revert(
    after: Any,
    current: Any,
    before: Any,
    spath: str,
    path: str,
    schema: Schema,
    conflicts: list[str],
    entry: bool = False,
) -> Any:
    if current == after:
        return before
    if before == after:
        return current
    values = (after, current, before)
    # A (non-presence) container that is absent is simply empty; a list entry is not.
    containers = all(isinstance(v, dict) or v is ABSENT for v in values)
    if not entry and containers and any(isinstance(v, dict) for v in values):
        after, current, before = ({} if v is ABSENT else v for v in values)
    if isinstance(after, dict) and isinstance(current, dict) and isinstance(before, dict):
        out: dict[str, Any] = {}
        names = list(current) + [k for k in before if k not in current]
        names += [k for k in after if k not in current and k not in before]
        for name in names:
            child = f"{spath}/{name}"
            a, c, b = after.get(name, ABSENT), current.get(name, ABSENT), before.get(name, ABSENT)
            info = schema.lists.get(child)
            if info is not None and all(isinstance(v, list) or v is ABSENT for v in (a, c, b)):
                value = _revert_list(a, c, b, info.keys, child, f"{path}/{name}", schema, conflicts)
            else:
                value = _revert(a, c, b, child, f"{path}/{name}", schema, conflicts)
            if value is not ABSENT:
                out[name] = value
        return out if out or entry else ABSENT
    conflicts.append(path)
    return current


def _revert_list(
    after: Any,
    current: Any,
    before: Any,
    keys: tuple[str, ...],
    spath: str,
    path: str,
    schema: Schema,
    conflicts: list[str],
) -> Any:
    """List entries matched by key; the current order is kept, returning entries go last."""

    def index(entries: Any) -> dict[tuple[str, ...], Any]:
        if entries is ABSENT:
            return {}
        return {tuple(str(e.get(k)) for k in keys): e for e in entries if isinstance(e, dict)}

    a, c, b = index(after), index(current), index(before)
    out = []
    for key in list(c) + [k for k in b if k not in c] + [k for k in a if k not in c and k not in b]:
        where = path + "".join(f"[{k}='{v}']" for k, v in zip(keys, key, strict=True))
        value = _revert(
            a.get(key, ABSENT),
            c.get(key, ABSENT),
            b.get(key, ABSENT),
            spath,
            where,
            schema,
            conflicts,
            True,
        )
        if value is not ABSENT:
            out.append(value)
    return out or ABSENT
