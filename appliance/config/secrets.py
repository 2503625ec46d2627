"""Secrets in the config (SNMP communities and keys) are never shown in clear.

Leaves marked secret in the YANG module (nacm:default-deny-all or sl:secret) are replaced by
MASK in everything a front door reads or exports (NETCONF leaves them out altogether). So a
client's edit that hands MASK back, or leaves a secret out of a node it replaces (an
exported file or a get-config backup restored), keeps the stored value: only an explicit
delete/remove of the leaf, or of a node above it, drops a secret. Copies between datastores
inside the appliance (rollback, startup to running) carry the real values and are exact.
Password hashes are secrets too: they are stored, never shown.
"""

from __future__ import annotations

import copy
from typing import Any

from appliance.config.schema import Schema

MASK = "********"


def mask(doc: dict[str, Any], schema: Schema) -> dict[str, Any]:
    """A copy-free mask of a whole document (the document must be the caller's own copy)."""
    if not schema.secret_leaves:
        return doc
    for key, content in doc.items():
        name = key.split(":", 1)[-1]
        doc[key] = mask_section(name, content, schema)
    return doc


def mask_section(name: str, content: Any, schema: Schema) -> Any:
    if content is None or not any(p.startswith(name + "/") for p in schema.secret_leaves):
        return content
    content = copy.deepcopy(content)
    _walk(content, name, schema, lambda parent, key, _old: parent.__setitem__(key, MASK))
    return content


def restore(
    name: str,
    new: dict[str, Any],
    old: dict[str, Any] | None,
    schema: Schema,
    *,
    keep_absent: bool = True,
) -> Any:
    """Put back stored secrets where `new` carries MASK, and (`keep_absent`) where `new` has
    the node a secret sits in but not the secret itself. List entries match by their keys."""
    if not any(p.startswith(name + "/") for p in schema.secret_leaves):
        return new
    _restore(new, old, name, schema, keep_absent)
    return new


def _restore(new: Any, old: Any, spath: str, schema: Schema, keep_absent: bool) -> None:
    if not isinstance(new, dict):
        return
    old = old if isinstance(old, dict) else {}
    names = list(new)
    if keep_absent:
        names += [k for k in old if k not in new and f"{spath}/{k}" in schema.secret_leaves]
    for key in names:
        child = f"{spath}/{key}"
        if child in schema.secret_leaves:
            if new.get(key, MASK) != MASK:
                continue  # a new value from the client
            if key in old:
                new[key] = old[key]
            else:
                new.pop(key, None)  # MASK with nothing stored: nothing to keep
            continue
        value = new[key]
        if child in schema.lists and isinstance(value, list):
            keys = schema.lists[child].keys
            olds = old.get(key) if isinstance(old.get(key), list) else []
            for entry in value:
                if not isinstance(entry, dict):
                    continue
                match = next((o for o in olds if all(o.get(k) == entry.get(k) for k in keys)), None)
                _restore(entry, match, child, schema, keep_absent)
        elif isinstance(value, dict):
            _restore(value, old.get(key), child, schema, keep_absent)


def _walk(node: Any, spath: str, schema: Schema, visit: Any, old: Any = None) -> None:
    if isinstance(node, dict):
        for key, value in list(node.items()):
            child = f"{spath}/{key}"
            old_child = old.get(key) if isinstance(old, dict) else None
            if child in schema.secret_leaves:
                visit(node, key, old_child)
            elif child in schema.lists and isinstance(value, list):
                keys = schema.lists[child].keys
                for entry in value:
                    match = None
                    if isinstance(old_child, list):
                        match = next(
                            (o for o in old_child if all(o.get(k) == entry.get(k) for k in keys)),
                            None,
                        )
                    _walk(entry, child, schema, visit, match)
            elif isinstance(value, dict):
                _walk(value, child, schema, visit, old_child)
