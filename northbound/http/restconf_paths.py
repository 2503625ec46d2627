"""RESTCONF resource identifiers (RFC 8040 3.5.3) ↔ the config service's data paths.

    /restconf/data/sluice:load-balancer/service=web/endpoint=198.18.1.1,8080/weight
    → /sluice:load-balancer/service[name='web']/endpoint[address='198.18.1.1'][port='8080']/weight

Segments are split on '/' and key values on ',' before percent-decoding, so an encoded
'/' or ',' inside a key is data. The schema walk knows every data node's kind and list
keys; a name that is not in the model is an error naming the segment.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import libyang

from appliance.config.paths import MODULE
from appliance.config.schema import JSON_NUMBER_TYPES

CONTAINER, LIST, LEAF, LEAF_LIST = "container", "list", "leaf", "leaf-list"


@dataclass
class SchemaNode:
    name: str
    kind: str
    config: bool
    keys: tuple[str, ...] = ()
    children: dict[str, SchemaNode] = field(default_factory=dict)
    json_number: bool = False  # a leaf JSON encodes as a number (uint16...)
    ordered: bool = False  # an ordered-by-user list or leaf-list (insert/point apply)


def schema_tree(module: Any) -> dict[str, SchemaNode]:
    """The module's data nodes (choice/case flattened), top level by name."""

    def walk(node: Any, config: bool) -> SchemaNode | None:
        kinds = {libyang.SNode.CONTAINER: CONTAINER, libyang.SNode.LIST: LIST,
                 libyang.SNode.LEAF: LEAF, libyang.SNode.LEAFLIST: LEAF_LIST}  # fmt: skip
        kind = kinds.get(node.nodetype())
        if kind is None:
            return None
        is_config = config and not node.config_false()
        out = SchemaNode(node.name(), kind, is_config)
        if kind == LEAF:
            out.json_number = node.type().base() in JSON_NUMBER_TYPES
        if kind == LIST:
            out.keys = tuple(k.name() for k in node.keys())  # noqa: SIM118 - a method
        if kind in (LIST, LEAF_LIST):
            out.ordered = bool(node.ordered())
        if hasattr(node, "children"):
            for child in _data_children(node):
                sub = walk(child, is_config)
                if sub is not None:
                    out.children[sub.name] = sub
        return out

    top = {}
    for node in _data_children(module):
        sub = walk(node, True)
        if sub is not None:
            top[sub.name] = sub
    return top


def _data_children(node: Any) -> list[Any]:
    out = []
    for child in node.children():
        if child.nodetype() in (libyang.SNode.CHOICE, libyang.SNode.CASE):
            out.extend(_data_children(child))
        else:
            out.append(child)
    return out


class PathProblem(Exception):
    """A resource identifier that names nothing in the model (RFC 8040: 400 invalid-value,
    or 404 when it is syntactically right but there is no such node)."""

    def __init__(self, message: str, status: int = 400, tag: str = "invalid-value") -> None:
        super().__init__(message)
        self.status, self.tag = status, tag


@dataclass
class Target:
    """What a resource identifier names."""

    steps: list[tuple[SchemaNode, tuple[str, ...]]]  # each node with its key values
    module: str = MODULE

    @property
    def node(self) -> SchemaNode | None:
        return self.steps[-1][0] if self.steps else None

    @property
    def is_entry(self) -> bool:
        """A list entry (keys given) or a leaf-list value."""
        return bool(self.steps) and bool(self.steps[-1][1])

    def data_path(self) -> str:
        """The config service's path ("/" for the datastore)."""
        if not self.steps:
            return "/"
        parts = []
        for i, (node, values) in enumerate(self.steps):
            name = f"{self.module}:{node.name}" if i == 0 else node.name
            if node.kind == LIST:
                name += "".join(f"[{k}={_quote(v)}]" for k, v in zip(node.keys, values,
                                                                     strict=True))
            elif node.kind == LEAF_LIST and values:
                name += f"[.={_quote(values[0])}]"
            parts.append(name)
        return "/" + "/".join(parts)

    def uri(self) -> str:
        """The resource identifier again (for Location headers)."""
        from urllib.parse import quote

        parts = []
        for i, (node, values) in enumerate(self.steps):
            name = f"{self.module}:{node.name}" if i == 0 else node.name
            if values:
                name += "=" + ",".join(quote(v, safe="") for v in values)
            parts.append(name)
        return "/".join(parts)

    def child(self, node: SchemaNode, values: tuple[str, ...]) -> Target:
        return Target([*self.steps, (node, values)], self.module)

    def children(self) -> dict[str, SchemaNode]:
        return self.node.children if self.node is not None else {}


def _quote(value: str) -> str:
    return f'"{value}"' if "'" in value else f"'{value}'"


def parse(raw: str, top: dict[str, SchemaNode], module: str = MODULE) -> Target:
    """`raw`: the still-encoded path after {+restconf}/data ("" for the datastore)."""
    target = Target([], module)
    raw = raw.strip("/")
    if not raw:
        return target
    children = top
    for i, segment in enumerate(raw.split("/")):
        name_part, eq, keys_part = segment.partition("=")
        name = unquote(name_part)
        prefix, colon, local = name.rpartition(":")
        if colon:
            if prefix != module:
                raise PathProblem(f"unknown module {prefix!r} in {name!r}", 400,
                                  "unknown-element")
            name = local
        elif i == 0:
            raise PathProblem(f"the first path segment must be module-qualified: "
                              f"{module}:{name}", 400, "invalid-value")
        node = children.get(name)
        if node is None:
            raise PathProblem(f"no node {name!r} here in the model (segment {i + 1})", 400,
                              "unknown-element")
        values: tuple[str, ...] = ()
        if eq:
            values = tuple(unquote(v) for v in keys_part.split(","))
            if node.kind == LIST and len(values) != len(node.keys):
                raise PathProblem(f"{node.name} needs {len(node.keys)} key value(s) "
                                  f"({', '.join(node.keys)}), got {len(values)}")
            if node.kind == LEAF_LIST and len(values) != 1:
                raise PathProblem(f"{node.name} takes one value")
            if node.kind not in (LIST, LEAF_LIST):
                raise PathProblem(f"{node.name} is a {node.kind}: it takes no key values")
        elif node.kind == LIST and i < len(raw.split("/")) - 1:
            raise PathProblem(f"{node.name} is a list: name an entry ({node.name}=key)")
        target.steps.append((node, values))
        children = node.children
    return target
