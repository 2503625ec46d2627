"""edit-config <config> XML → the config service's change list.

The walk only *places* values: it names each node by a data path (list keys from the
schema), converts leaf text to the JSON encoding, and cuts the tree where the nc:operation
changes. Whether values are valid is for libyang inside the config service to say.

Where operations go:
- a node whose effective operation differs from the one covering it (the nearest ancestor
  that produced a change) becomes its own change, after its parent's;
- merge on a container is pushed down to its children (merge distributes), so merging
  <load-balancer> with 1,000 services is 1,000 service-scoped changes, not one change that
  rewrites every service;
- under delete/remove, children are only keys: nothing more is read.
"""

from __future__ import annotations

from typing import Any

from lxml import etree

from appliance.config.tree import OPERATIONS
from northbound.netconf import xpathns
from northbound.netconf.errors import RpcError
from northbound.netconf.schema_index import BOOL, CONTAINER, INT, LEAF, LEAF_LIST, LIST, Node
from northbound.netconf.xmlutil import BASE_NS, elements, local, ns_of

OPERATION_ATTR = f"{{{BASE_NS}}}operation"
# RFC 7950 7.8.6: insert/key place an entry of an ordered-by-user list (endpoint: its order
# is the priority algorithm's); value is a leaf-list's, and the model has no ordered one.
YANG_NS = "urn:ietf:params:xml:ns:yang:1"
INSERT_ATTR, KEY_ATTR, VALUE_ATTR = (f"{{{YANG_NS}}}{n}" for n in ("insert", "key", "value"))
ORDER_ATTRS = (INSERT_ATTR, KEY_ATTR, VALUE_ATTR)
WHERE = ("first", "last", "before", "after")
DEFAULT_OPERATIONS = ("merge", "replace", "none")
# Deeper than any path in the model: a guard against pathological nesting, not a limit.
MAX_DEPTH = 32

Change = dict[str, Any]


class EditTranslator:
    def __init__(self, top: dict[str, Node], namespace: str, module: str,
                 top_ns: dict[str, str] | None = None,
                 modules: dict[str, str] | None = None) -> None:
        """`top_ns`: namespace of each top-level node (default: all `namespace`);
        `modules`: module name → namespace of every module with configuration."""
        self.top = top
        self.namespace = namespace
        self.module = module
        self.top_ns = top_ns or dict.fromkeys(top, namespace)
        self.module_of_ns = {ns: m for m, ns in (modules or {module: namespace}).items()}

    def changes(self, config: etree._Element, default_operation: str = "merge") -> list[Change]:
        if default_operation not in DEFAULT_OPERATIONS:
            raise RpcError(
                "invalid-value",
                f"default-operation must be one of {', '.join(DEFAULT_OPERATIONS)}",
                type="protocol",
            )
        out: list[Change] = []
        for el in elements(config):
            node = self._schema_child(None, el, "/")
            module = self.module_of_ns[self.top_ns[node.name]]
            self._walk(el, node, f"/{module}:{node.name}", default_operation, "none", out, 1)
        return out

    # -- the walk ----------------------------------------------------------------------------
    def _walk(
        self,
        el: etree._Element,
        node: Node,
        path: str,
        inherited: str,
        covering: str,
        out: list[Change],
        depth: int,
    ) -> None:
        """Emit the changes for `el` (already matched to `node`, named `path`)."""
        if depth > MAX_DEPTH:
            raise RpcError("bad-element", "nesting too deep", path=path)
        op = self._operation(el, path) or inherited
        place: dict[str, str] = {}
        if node.kind == LIST:
            place = self._placement(el, path)
            path = path + self._predicates(el, node, path)
        elif any(el.get(a) is not None for a in ORDER_ATTRS):
            name = next(a for a in ORDER_ATTRS if el.get(a) is not None).rsplit("}", 1)[1]
            raise RpcError("bad-attribute", f"yang:{name} places an entry of an "
                           "ordered-by-user list (in this model: endpoint), not "
                           f"{node.name}", type="application", path=path,
                           info={"bad-attribute": name, "bad-element": local(el)})
        elif node.kind == LEAF_LIST:
            path = f"{path}[.={_quote(el.text or '')}]"
        if not node.config:
            raise RpcError(
                "invalid-value", f"{node.name} is state data and cannot be configured", path=path
            )
        if op in ("delete", "remove"):
            if op != covering:
                out.append({"op": op, "path": path, **place})
            return
        if op == "none" or (op == "merge" and node.kind == CONTAINER):
            # Navigation only: the children carry the changes.
            seen: set[str] = set()
            for ch in elements(el):
                cnode = self._schema_child(node, ch, path)
                cpath = f"{path}/{cnode.name}"
                self._once(seen, ch, cnode, cpath)
                self._walk(ch, cnode, cpath, op, covering, out, depth + 1)
            return
        if op == covering:
            return  # included in the ancestor's value by _value
        later: list[Change] = []
        value = self._value(el, node, path, op, later, depth)
        change: Change = {"op": op, "path": path, **place}
        if node.kind != LEAF_LIST:
            change["value"] = value
        out.append(change)
        out.extend(later)

    def _value(
        self,
        el: etree._Element,
        node: Node,
        path: str,
        op: str,
        later: list[Change],
        depth: int,
    ) -> Any:
        """The JSON value of `el` under operation `op`; children with another operation are
        left out and emitted into `later`."""
        if node.kind in (LEAF, LEAF_LIST):
            if elements(el):
                raise RpcError("bad-element", f"{node.name} is a leaf; it has no children",
                               path=path, info={"bad-element": node.name})
            if node.xpath:
                return self._xpath_value(el)
            return self._leaf_value(el.text or "", node, path)
        value: dict[str, Any] = {}
        seen: set[str] = set()
        for ch in elements(el):
            cnode = self._schema_child(node, ch, path)
            cpath = f"{path}/{cnode.name}"
            self._once(seen, ch, cnode, cpath)
            cop = self._operation(ch, cpath) or op
            placed = any(ch.get(a) is not None for a in ORDER_ATTRS)
            if cop != op or placed:
                # Its own change: another operation, or an entry placed (insert/key).
                self._walk(ch, cnode, cpath, cop, "" if placed else op, later, depth + 1)
                continue
            if not cnode.config:
                raise RpcError(
                    "invalid-value",
                    f"{cnode.name} is state data and cannot be configured",
                    path=cpath,
                )
            if cnode.kind == LIST:
                entry_path = cpath + self._predicates(ch, cnode, cpath)
                entry = self._value(ch, cnode, entry_path, op, later, depth + 1)
                value.setdefault(cnode.name, []).append(entry)
            elif cnode.kind == LEAF_LIST:
                leaf = self._leaf_value(ch.text or "", cnode, cpath)
                value.setdefault(cnode.name, []).append(leaf)
            else:
                if cnode.name in value:
                    raise RpcError("bad-element", f"{cnode.name} appears twice", path=cpath,
                                   info={"bad-element": cnode.name})
                value[cnode.name] = self._value(ch, cnode, cpath, op, later, depth + 1)
        return value

    # -- helpers -----------------------------------------------------------------------------
    def _once(self, seen: set[str], el: etree._Element, node: Node, path: str) -> None:
        """Refuse a list entry (or leaf-list value) named twice among siblings of one edit:
        two entries with one key would otherwise both apply and the last would win."""
        if node.kind == LIST:
            entry = path + self._predicates(el, node, path)
        elif node.kind == LEAF_LIST:
            entry = f"{path}[.={_quote(el.text or '')}]"
        else:
            return
        if entry in seen:
            raise RpcError("invalid-value", f"duplicate {node.name} entry in one edit: "
                           f"{entry.rsplit('/', 1)[-1]}", path=entry,
                           info={"bad-element": node.name})
        seen.add(entry)

    def _placement(self, el: etree._Element, list_path: str) -> dict[str, str]:
        """yang:insert / yang:key of a list entry (RFC 7950 7.8.6) as the config service's
        change members: "insert", and "point", the sibling entry's data path. That the list
        is ordered-by user and the point exists, the config service checks."""
        insert, key = el.get(INSERT_ATTR), el.get(KEY_ATTR)
        info = {"bad-element": local(el)}
        if el.get(VALUE_ATTR) is not None:
            raise RpcError("bad-attribute", "yang:value places a leaf-list value; a list "
                           "entry is placed with yang:key", type="application",
                           path=list_path, info={**info, "bad-attribute": "value"})
        if insert is None and key is None:
            return {}
        if insert is None:
            raise RpcError("bad-attribute", "yang:key goes with yang:insert before or after",
                           type="application", path=list_path,
                           info={**info, "bad-attribute": "key"})
        if insert not in WHERE:
            raise RpcError("bad-attribute", f"yang:insert must be one of {', '.join(WHERE)}",
                           type="application", path=list_path,
                           info={**info, "bad-attribute": "insert"})
        if insert in ("before", "after") and key is None:
            raise RpcError("missing-attribute", f"yang:insert={insert} needs yang:key (the "
                           "sibling entry's keys)", type="application", path=list_path,
                           info={**info, "bad-attribute": "key"})
        if key is not None and insert not in ("before", "after"):
            raise RpcError("bad-attribute", "yang:key goes with yang:insert before or after",
                           type="application", path=list_path,
                           info={**info, "bad-attribute": "key"})
        out = {"insert": insert}
        if key is not None:
            out["point"] = list_path + key.strip()
        return out

    def _operation(self, el: etree._Element, path: str) -> str | None:
        op = el.get(OPERATION_ATTR)
        if op is None:
            return None
        if op not in OPERATIONS:
            raise RpcError(
                "bad-attribute",
                f"operation {op!r} is not one of {', '.join(OPERATIONS)}",
                type="application",
                path=path,
                info={"bad-attribute": "operation", "bad-element": local(el)},
            )
        return op

    def _schema_child(self, node: Node | None, el: etree._Element, path: str) -> Node:
        name, ns = local(el), ns_of(el)
        if node is None:
            known = ns == self.top_ns.get(name, self.namespace)
        else:
            known = ns in self.module_of_ns
        if not known:
            raise RpcError(
                "unknown-namespace",
                f"{name}: namespace {ns or '(none)'} is not served here",
                type="application",
                path=path if path != "/" else "",
                info={"bad-element": name, "bad-namespace": ns or ""},
            )
        children = self.top if node is None else node.children
        found = children.get(name)
        if found is None:
            raise RpcError(
                "unknown-element",
                f"unknown element {name}" + (f" in {node.name}" if node else ""),
                path=path if path != "/" else "",
                info={"bad-element": name},
            )
        return found

    def _predicates(self, el: etree._Element, node: Node, path: str) -> str:
        found: dict[str, str] = {}
        for ch in elements(el):
            if ns_of(ch) in self.module_of_ns and local(ch) in node.keys:
                if local(ch) in found:
                    raise RpcError("bad-element", f"key {local(ch)} appears twice",
                                   path=path, info={"bad-element": local(ch)})
                found[local(ch)] = (ch.text or "").strip()
        for key in node.keys:
            if key not in found:
                raise RpcError(
                    "missing-element",
                    f"{node.name} entry without its key {key}",
                    path=path,
                    info={"bad-element": key},
                )
        return "".join(f"[{k}={_quote(found[k])}]" for k in node.keys)

    def _xpath_value(self, el: etree._Element) -> str:
        """An XPath's XML prefixes (bound in the request) → module names, as the JSON
        encoding (and the config service) name them."""
        modules = {p: self.module_of_ns[ns] for p, ns in el.nsmap.items()
                   if p and ns in self.module_of_ns}
        return xpathns.xml_to_json(el.text or "", modules)

    @staticmethod
    def _leaf_value(text: str, node: Node, path: str) -> Any:
        if node.value_type == INT:
            try:
                return int(text.strip())
            except ValueError:
                raise RpcError(
                    "invalid-value", f"{node.name}: {text!r} is not an integer", path=path
                ) from None
        if node.value_type == BOOL:
            if text.strip() not in ("true", "false"):
                raise RpcError(
                    "invalid-value", f"{node.name}: {text!r} is not true or false", path=path
                )
            return text.strip() == "true"
        return text


def _quote(value: str) -> str:
    if "'" not in value:
        return f"'{value}'"
    if '"' not in value:
        return f'"{value}"'
    raise RpcError("invalid-value", "a key value cannot contain both ' and \"")
