"""What the XML translation needs to know about each schema node, from libyang.

Schema paths are module-less and key-less, as in appliance.config.schema:
'load-balancer/service/endpoint/weight'. State (config false) nodes are indexed too, marked,
so edit-config can refuse them and get can print them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import libyang
from libyang.util import c2str

from appliance.config.schema import JSON_NUMBER_TYPES, Schema

CONTAINER, LIST, LEAF, LEAF_LIST = "container", "list", "leaf", "leaf-list"
# Types whose values are XPath expressions with prefixes (NACM's rule path).
XPATH_TYPES = {"xpath1.0", "node-instance-identifier"}
INT, BOOL, STR = "int", "bool", "str"

_INTS = JSON_NUMBER_TYPES  # the integer types JSON encodes as numbers


@dataclass
class Node:
    name: str
    kind: str
    config: bool
    keys: tuple[str, ...] = ()
    value_type: str = STR  # leaves: how the JSON encoding carries the value
    default: str | None = None  # leaves: the schema default, as the XML text says it
    # Leaves holding an XPath: its prefixes are module names in JSON; in XML they need
    # binding, so such a leaf is written with these xmlns declarations.
    xpath_xmlns: str = ""

    @property
    def xpath(self) -> bool:
        return bool(self.xpath_xmlns)
    children: dict[str, Node] = field(default_factory=dict)


class SchemaIndex:
    def __init__(self, schema: Schema) -> None:
        self.module_name = schema.module.name()
        self.namespace = c2str(schema.module.cdata.ns)  # the binding has no accessor
        self.prefix = schema.module.prefix()
        self.top: dict[str, Node] = {}
        # Every module with configuration in the datastore (sluice, ietf-netconf-acm):
        # module name → namespace, and the namespace of each top-level node.
        self.namespaces = {m.name(): c2str(m.cdata.ns) for m in schema.modules}
        self._xmlns = "".join(f' xmlns:{m}="{ns}"' for m, ns in self.namespaces.items())
        self.top_ns: dict[str, str] = {}
        for module in schema.modules:
            ns = self.namespaces[module.name()]
            for snode in module.children():
                node = self._build(snode, True)
                if node is not None:
                    self.top[node.name] = node
                    self.top_ns[node.name] = ns

    def _build(self, snode: Any, parent_config: bool) -> Node | None:
        config = parent_config and not snode.config_false()
        if isinstance(snode, libyang.SList):
            keys = tuple(k.name() for k in snode.keys())  # noqa: SIM118 - a method
            node = Node(snode.name(), LIST, config, keys=keys)
        elif isinstance(snode, libyang.SLeafList):
            node = Node(snode.name(), LEAF_LIST, config, value_type=_value_type(snode.type()))
        elif isinstance(snode, libyang.SLeaf):
            dflt = snode.default()
            node = Node(snode.name(), LEAF, config, value_type=_value_type(snode.type()),
                        default=None if dflt is None else _xml_text(dflt),
                        xpath_xmlns=self._xmlns if snode.type().name() in XPATH_TYPES else "")
        elif isinstance(snode, libyang.SContainer):
            node = Node(snode.name(), CONTAINER, config)
        else:
            return None  # actions, notifications: not data
        if hasattr(snode, "children"):
            for ch in snode.children():
                self._add_children(node, ch, config)
        return node

    def _add_children(self, node: Node, snode: Any, config: bool) -> None:
        if snode.nodetype() in (libyang.SNode.CHOICE, libyang.SNode.CASE):
            # choice and case are schema-only: their children sit directly in the data tree.
            for ch in snode.children():
                self._add_children(node, ch, config and not snode.config_false())
            return
        built = self._build(snode, config)
        if built is not None:
            node.children[built.name] = built


def _xml_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _value_type(ytype: Any) -> str:
    base = ytype.base()
    if base == libyang.Type.LEAFREF:
        target = ytype.leafref_type()
        base = target.base() if target is not None else base
    if base in _INTS:
        return INT
    if base == libyang.Type.BOOL:
        return BOOL
    # Strings, enumerations, unions of string types, 64-bit numbers (strings in JSON).
    return STR
