"""Edit operations on a config document (libyang JSON encoding), NETCONF semantics.

Operations are those of RFC 6241 edit-config: merge, replace, create, delete, remove; and
`move` (RFC 8072's YANG Patch move: an existing entry of an ordered-by-user list changes
place). A `Placement` (RFC 7950 7.8.6 insert/key, RFC 8040 insert/point) puts the entry a
create, replace or merge makes, or a move moves, first, last, or before/after a sibling.
The document is plain dicts and lists; the schema only says which nodes are lists (with
their keys, and whether the user orders them) and leaf-lists. libyang validates the result
afterwards — this module never judges values, it only places them.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from appliance.config.errors import ConfigError, ExistsError, FieldError, NotFoundError
from appliance.config.paths import PathError, Step, format_path, module_of, parse_path
from appliance.config.schema import Schema

OPERATIONS = ("merge", "replace", "create", "delete", "remove")
MOVE = "move"
WHERE = ("first", "last", "before", "after")


@dataclass(frozen=True)
class Placement:
    """Where an entry of an ordered-by-user list goes: `where` is first, last, before or
    after; `point` the keys of the sibling entry it goes before/after."""

    where: str
    point: tuple[tuple[str, str], ...] = ()


def placement(insert: Any, point: Any, steps: list[Step]) -> Placement | None:
    """The Placement a change's "insert"/"point" ask for (point: the data path of a sibling
    entry of the target), or None when it asks for none. Errors name the target."""
    here = format_path(steps)
    if insert is None:
        if point is not None:
            raise PathError(here, "point is given without insert before/after")
        return None
    if insert not in WHERE:
        raise PathError(here, f"insert {insert!r} must be one of {', '.join(WHERE)}")
    if insert in ("first", "last"):
        if point is not None:
            raise PathError(here, f"point is only used with insert before/after, not {insert}")
        return Placement(insert)
    if point is None:
        raise PathError(here, f"insert {insert} needs a point (the sibling entry)")
    if not steps or not steps[-1].keys:
        raise PathError(here, "insert places an entry of a list; name the entry")
    try:
        psteps = parse_path(str(point))
    except PathError as exc:
        raise PathError(here, f"point: {exc.errors[0].message}") from None
    same_parent = [(s.name, s.keys) for s in psteps[:-1]] == \
        [(s.name, s.keys) for s in steps[:-1]]
    if not psteps or not same_parent or psteps[-1].name != steps[-1].name \
            or not psteps[-1].keys:
        raise PathError(here, f"point {point} is not an entry of the same "
                        f"{steps[-1].name} list as the target")
    if set(psteps[-1].key_dict().items()) == set(steps[-1].key_dict().items()):
        raise PathError(here, "an entry cannot be placed before or after itself")
    return Placement(insert, psteps[-1].keys)


def apply_edit(doc: dict[str, Any], steps: list[Step], op: str, value: Any, schema: Schema,
               place: Placement | None = None) -> None:
    """Apply one operation at the node named by `steps` (empty = the whole document)."""
    if op not in OPERATIONS and op != MOVE:
        raise PathError(format_path(steps), f"unknown operation {op!r}; use one of "
                        f"{', '.join((*OPERATIONS, MOVE))}")
    if (place is not None or op == MOVE) and op in ("delete", "remove"):
        raise PathError(format_path(steps), f"insert does not apply to {op}")
    if (place is not None or op == MOVE) and not _ordered_entry(steps, schema):
        raise PathError(format_path(steps), "insert and move place an entry of an "
                        "ordered-by-user list (here: endpoint); this is not one")
    if op == MOVE and place is None:
        raise PathError(format_path(steps), "move needs where (first, last, before, after)")
    if not steps:
        _edit_root(doc, op, value, schema)
        return
    parent: Any = doc
    spath = ""
    for i, step in enumerate(steps):
        last = i == len(steps) - 1
        key = f"{module_of(step.name)}:{step.name}" if i == 0 else step.name
        spath = step.name if i == 0 else f"{spath}/{step.name}"
        here = format_path(steps[: i + 1])
        info = schema.lists.get(spath)
        if info is not None and step.keys:
            keys = step.key_dict()
            if set(keys) != set(info.keys):
                raise PathError(here, f"list {step.name} is keyed by {', '.join(info.keys)}")
            entries = (
                parent.setdefault(key, [])
                if op not in ("delete", "remove")
                else parent.get(key, [])
            )
            idx = _find_entry(entries, keys)
            if last:
                _edit_entry(parent, key, entries, idx, keys, op, value, spath, here, schema)
                if place is not None:
                    _place(entries, keys, place, here)
                return
            if idx is None:
                if op in ("delete", MOVE):
                    target = format_path(steps)
                    raise NotFoundError(f"{target} does not exist", [_missing(target)])
                if op == "remove":
                    return
                entries.append(dict(keys))
                idx = len(entries) - 1
            parent = entries[idx]
            continue
        if spath in schema.leaf_lists and step.keys:
            if not last or [k for k, _ in step.keys] != ["."]:
                raise PathError(here, "a leaf-list value is selected with [.='value']")
            _edit_leaf_list_value(parent, key, step.keys[0][1], op, here)
            return
        if last:
            _edit_slot(parent, key, op, value, spath, here, schema)
            return
        if key not in parent:
            if op in ("delete", MOVE):
                target = format_path(steps)
                raise NotFoundError(f"{target} does not exist", [_missing(target)])
            if op == "remove":
                return
            parent[key] = {}
        parent = parent[key]
        if not isinstance(parent, dict):
            raise PathError(here, "is a leaf; it has no children")


def _ordered_entry(steps: list[Step], schema: Schema) -> bool:
    """Whether `steps` names an entry (keys given) of an ordered-by-user list."""
    if not steps or not steps[-1].keys:
        return False
    info = schema.lists.get("/".join(s.name for s in steps))
    return info is not None and info.ordered_by_user


def _place(entries: list[dict[str, Any]], keys: dict[str, str], place: Placement,
           here: str) -> None:
    """Move the entry `keys` (present) to where `place` says."""
    idx = _find_entry(entries, keys)
    assert idx is not None
    entry = entries.pop(idx)
    if place.where == "first":
        entries.insert(0, entry)
        return
    if place.where == "last":
        entries.append(entry)
        return
    at = _find_entry(entries, dict(place.point))
    if at is None:
        point = ", ".join(f"{k}={v}" for k, v in place.point)
        # RFC 7950 15.7: the point of an insert that does not exist.
        raise ConfigError(f"{here}: the point entry ({point}) does not exist",
                          [FieldError(here, f"the point entry ({point}) does not exist",
                                      "bad-attribute", "missing-instance")])
    entries.insert(at if place.where == "before" else at + 1, entry)


def _typed(text: str, spath: str, schema: Schema) -> Any:
    """A key taken from a path predicate, in its JSON type (numbers for integer leaves)."""
    if spath in schema.integer_leaves:
        try:
            return int(text)
        except ValueError:
            return text  # libyang will name the bad value
    return text


def _missing(path: str) -> FieldError:
    return FieldError(path, "does not exist", "data-missing")


def _edit_root(doc: dict[str, Any], op: str, value: Any, schema: Schema) -> None:
    if op in ("delete", "remove"):
        doc.clear()
        return
    if not isinstance(value, dict):
        raise PathError("/", "the whole configuration must be a JSON object")
    if op in ("replace", "create"):
        doc.clear()
        doc.update(copy.deepcopy(value))
        return
    for key, sub in value.items():
        name = key.split(":", 1)[1] if ":" in key else key
        mod = module_of(name)
        _edit_slot(doc, f"{mod}:{name}", "merge", sub, name, f"/{mod}:{name}", schema)


def _find_entry(entries: list[dict[str, Any]], keys: dict[str, str]) -> int | None:
    for i, entry in enumerate(entries):
        if all(str(entry.get(k)) == v for k, v in keys.items()):
            return i
    return None


def _edit_entry(
    parent: dict[str, Any],
    key: str,
    entries: list[dict[str, Any]],
    idx: int | None,
    keys: dict[str, str],
    op: str,
    value: Any,
    spath: str,
    here: str,
    schema: Schema,
) -> None:
    if op == MOVE:
        if idx is None:
            raise NotFoundError(f"{here} does not exist", [_missing(here)])
        return  # the caller places it
    if op in ("delete", "remove"):
        if idx is None:
            if op == "delete":
                raise NotFoundError(f"{here} does not exist", [_missing(here)])
            return
        del entries[idx]
        if not entries:
            parent.pop(key, None)
        return
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise PathError(here, "a list entry takes a JSON object")
    value = copy.deepcopy(value)
    for k, v in keys.items():
        if k in value and str(value[k]) != v:
            raise PathError(here, f"key {k}={value[k]!r} in the value differs from the path")
        value.setdefault(k, _typed(v, f"{spath}/{k}", schema))
    if op == "create" and idx is not None:
        raise ExistsError(
            f"{here} already exists", [FieldError(here, "already exists", "data-exists")]
        )
    if idx is None:
        entries.append(value)
    elif op == "replace":
        entries[idx] = value
    else:
        _merge_into(entries[idx], value, spath, schema)


def _edit_slot(
    parent: dict[str, Any], key: str, op: str, value: Any, spath: str, here: str, schema: Schema
) -> None:
    exists = key in parent
    if op in ("delete", "remove"):
        if not exists:
            if op == "delete":
                raise NotFoundError(f"{here} does not exist", [_missing(here)])
            return
        del parent[key]
        return
    if op == "create" and exists:
        raise ExistsError(
            f"{here} already exists", [FieldError(here, "already exists", "data-exists")]
        )
    value = copy.deepcopy(value)
    if spath in schema.lists:
        if not isinstance(value, list):
            raise PathError(here, "a list takes a JSON array of entries")
        if op == "replace" or not exists:
            parent[key] = value
        else:
            _merge_list(parent[key], value, schema.lists[spath].keys, spath, schema)
    elif spath in schema.leaf_lists:
        values = value if isinstance(value, list) else [value]
        if op == "replace" or not exists:
            parent[key] = values
        else:
            parent[key] = parent[key] + [v for v in values if v not in parent[key]]
    elif op == "merge" and exists and isinstance(parent[key], dict) and isinstance(value, dict):
        _merge_into(parent[key], value, spath, schema)
    else:
        parent[key] = value
    if isinstance(parent.get(key), list) and not parent[key]:
        del parent[key]


def _edit_leaf_list_value(parent: dict[str, Any], key: str, item: str, op: str, here: str) -> None:
    values = parent.get(key, [])
    present = [v for v in values if str(v) == item]
    if op in ("delete", "remove"):
        if not present and op == "delete":
            raise NotFoundError(f"{here} does not exist", [_missing(here)])
        remaining = [v for v in values if str(v) != item]
        if remaining:
            parent[key] = remaining
        else:
            parent.pop(key, None)
        return
    if op == "create" and present:
        raise ExistsError(
            f"{here} already exists", [FieldError(here, "already exists", "data-exists")]
        )
    if not present:
        parent[key] = [*values, item]


def _merge_into(target: dict[str, Any], value: dict[str, Any], spath: str, schema: Schema) -> None:
    for key, sub in value.items():
        _edit_slot(target, key, "merge", sub, f"{spath}/{key}", f"{spath}/{key}", schema)


def _merge_list(
    entries: list[dict[str, Any]],
    new: list[dict[str, Any]],
    keys: tuple[str, ...],
    spath: str,
    schema: Schema,
) -> None:
    for entry in new:
        if not isinstance(entry, dict) or any(k not in entry for k in keys):
            raise PathError(spath, f"each {spath.rsplit('/', 1)[-1]} entry needs {', '.join(keys)}")
        idx = _find_entry(entries, {k: str(entry[k]) for k in keys})
        if idx is None:
            entries.append(entry)
        else:
            _merge_into(entries[idx], entry, spath, schema)
