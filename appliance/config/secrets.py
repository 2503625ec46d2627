"""Secrets in the config (SNMP communities and keys) are never shown in clear.

Leaves marked secret in the YANG module (nacm:default-deny-all or sl:secret) are replaced by
MASK in everything a front door reads or exports. An edit that hands MASK back (an exported
file re-imported, a form saved unchanged) keeps the stored value: MASK means "unchanged".
Passwords are not secrets here: only their scrypt hashes are ever stored.
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


def restore(name: str, new: dict[str, Any], old: dict[str, Any] | None, schema: Schema) -> Any:
    """Put back stored secrets where `new` carries MASK (matched by list keys)."""
    if not any(p.startswith(name + "/") for p in schema.secret_leaves):
        return new

    def put_back(parent: dict[str, Any], key: str, old_value: Any) -> None:
        if parent.get(key) == MASK:
            if old_value is None:
                del parent[key]
            else:
                parent[key] = old_value

    _walk(new, name, schema, put_back, old)
    return new


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
