"""RESTCONF message bodies: RFC 7951 JSON and YANG XML, in and out, through libyang.

A data resource's value travels as the config service holds it (libyang's JSON
encoding, unqualified below the top). To print XML, or JSON with defaults trimmed, the
value is wrapped back into its ancestors, parsed by libyang and the target node printed;
an XML body is wrapped into its ancestors the same way, parsed, and printed as JSON.
`depth` and `fields` prune the value before it is printed.
"""

from __future__ import annotations

import json
import threading
from typing import Any

import libyang
from libyang.util import c2str
from lxml import etree

from appliance.config.secrets import MASK
from northbound.http.restconf_paths import LEAF_LIST, LIST, SchemaNode, Target

JSON_TYPE = "application/yang-data+json"
XML_TYPE = "application/yang-data+xml"
RESTCONF_NS = "urn:ietf:params:xml:ns:yang:ietf-restconf"
MAX_FIELDS = 4096


class BodyProblem(Exception):
    """A body that cannot be read as the resource's value: 400 with `tag`."""

    def __init__(self, message: str, tag: str = "malformed-message") -> None:
        super().__init__(message)
        self.tag = tag


def error_body(errors: list[dict[str, Any]], fmt: str) -> bytes:
    """ietf-restconf:errors in JSON or XML (RFC 8040 7.1)."""
    if fmt == "xml":
        root = etree.Element(f"{{{RESTCONF_NS}}}errors", nsmap={None: RESTCONF_NS})
        for err in errors:
            el = etree.SubElement(root, f"{{{RESTCONF_NS}}}error")
            for k, v in err.items():
                etree.SubElement(el, f"{{{RESTCONF_NS}}}{k}").text = str(v)
        return etree.tostring(root)
    return json.dumps({"ietf-restconf:errors": {"error": errors}}).encode()


def drop_secrets(value: Any) -> Any:
    """Masked secrets are left out (as NETCONF does: nacm:default-deny-all)."""
    if isinstance(value, dict):
        return {k: drop_secrets(v) for k, v in value.items() if v != MASK}
    if isinstance(value, list):
        return [drop_secrets(v) for v in value if v != MASK]
    return value


# -- the value of the target, wrapped and unwrapped ------------------------------------------
def member(target: Target, value: Any) -> dict[str, Any]:
    """{"sluice:<node>": value} as a reply carries the target (a list entry in a list)."""
    node = target.node
    assert node is not None
    name = f"{target.module}:{node.name}"
    if node.kind in (LIST, LEAF_LIST) and target.is_entry:
        return {name: [value]}
    return {name: value}


def wrap(target: Target, value: Any) -> dict[str, Any]:
    """A whole instance document holding `value` at the target (ancestors with their keys)."""
    doc: Any = None
    for i in range(len(target.steps) - 1, -1, -1):
        node, values = target.steps[i]
        if i == len(target.steps) - 1:
            inner = value
            if node.kind in (LIST, LEAF_LIST) and values:
                inner = [value]
        else:
            inner = doc
            if node.kind == LIST:
                inner = [{**dict(zip(node.keys, _typed_keys(node, values), strict=True)),
                          **doc}]  # fmt: skip
        name = f"{target.module}:{node.name}" if i == 0 else node.name
        doc = {name: inner}
    return doc if doc is not None else value


def _typed_keys(node: SchemaNode, values: tuple[str, ...]) -> list[Any]:
    out: list[Any] = []
    for key, value in zip(node.keys, values, strict=True):
        leaf = node.children.get(key)
        number = leaf is not None and leaf.json_number and value.lstrip("-").isdigit()
        out.append(int(value) if number else value)
    return out


def unwrap(target: Target, doc: Any) -> Any:
    """The value at the target inside a whole document (the inverse of `wrap`)."""
    node_doc = doc
    for i, (node, values) in enumerate(target.steps):
        name = f"{target.module}:{node.name}" if i == 0 else node.name
        if not isinstance(node_doc, dict) or name not in node_doc:
            raise BodyProblem(f"the body holds no {node.name}")
        node_doc = node_doc[name]
        if node.kind in (LIST, LEAF_LIST) and values:
            if not isinstance(node_doc, list) or len(node_doc) != 1:
                raise BodyProblem(f"the body must hold exactly one {node.name}")
            node_doc = node_doc[0]
    return node_doc


class Printer:
    """libyang parse/print, serialised (one context shared with the config service)."""

    def __init__(self, schema: Any) -> None:
        self.schema = schema
        self.ctx = schema.ctx
        self._lock: threading.Lock = getattr(schema, "_lock", threading.Lock())
        self.namespace = c2str(schema.module.cdata.ns)  # the binding has no accessor

    def _parse(self, text: str, fmt: str) -> Any:
        return self.ctx.parse_data_mem(text, fmt, parse_only=True, strict=True)

    def xml_to_json(self, xml: str) -> Any:
        """Model-checked XML (top-level nodes, siblings) as the RFC 7951 JSON document."""
        with self._lock:
            try:
                root = self._parse(xml, "xml")
            except libyang.LibyangError as exc:
                raise BodyProblem(f"body does not match the model: {exc}",
                                  "invalid-value") from None
            try:
                text = root.print_mem("json", with_siblings=True, pretty=False) if root else "{}"
            finally:
                if root is not None:
                    root.free()
        return json.loads(text)

    def render(self, target: Target, value: Any, fmt: str, trim: bool = False) -> bytes:
        """The reply body for the target's value: "json" or "xml"."""
        if not target.steps:
            return self._datastore(value, fmt, trim)
        if fmt == "json" and not trim:
            return json.dumps(member(target, value)).encode()
        with self._lock:
            try:
                root = self._parse(json.dumps(wrap(target, value)), "json")
            except libyang.LibyangError as exc:
                raise BodyProblem(f"cannot print the value: {exc}", "operation-failed") from None
            try:
                node = root.find_path(target.data_path()) if root is not None else None
                if node is None:
                    return b"" if fmt == "xml" else b"{}"
                text = node.print_mem(fmt, with_siblings=False, pretty=False,
                                      trim_default_values=trim)
            finally:
                if root is not None:
                    root.free()
        # libyang prints the node itself, module-qualified: the reply's shape in both.
        return text.encode() if isinstance(text, str) else text

    def _datastore(self, doc: dict[str, Any], fmt: str, trim: bool) -> bytes:
        if fmt == "json" and not trim:
            return json.dumps({"ietf-restconf:data": doc}).encode()
        with self._lock:
            root = self._parse(json.dumps(doc), "json") if doc else None
            try:
                if root is None:
                    text = "" if fmt == "xml" else "{}"
                else:
                    text = root.print_mem(fmt, with_siblings=True, pretty=False,
                                          trim_default_values=trim)
            finally:
                if root is not None:
                    root.free()
        if fmt == "json":
            return json.dumps({"ietf-restconf:data": json.loads(text or "{}")}).encode()
        return f'<data xmlns="{RESTCONF_NS}">{text}</data>'.encode()

    def xml_value(self, target: Target, body: bytes) -> tuple[str, Any]:
        """(child name, value) of an XML body placed under `target` (its parent for PUT)."""
        try:
            el = etree.fromstring(body, parser=etree.XMLParser(resolve_entities=False,
                                                               no_network=True))
        except etree.XMLSyntaxError as exc:
            raise BodyProblem(f"body is not well-formed XML: {exc}") from None
        name = etree.QName(el).localname
        xml = etree.tostring(el).decode()
        for i in range(len(target.steps) - 1, -1, -1):
            snode, values = target.steps[i]
            keys = "".join(f"<{k}>{_esc(v)}</{k}>" for k, v in zip(snode.keys, values,
                                                                    strict=False))  # fmt: skip
            ns = f' xmlns="{self.namespace}"' if i == 0 else ""
            xml = f"<{snode.name}{ns}>{keys}{xml}</{snode.name}>"
        doc = self.xml_to_json(xml)
        inner = unwrap(target, doc) if target.steps else doc
        key = name if target.steps else f"{target.module}:{name}"
        if not isinstance(inner, dict) or key not in inner:
            raise BodyProblem(f"the body's {name} is not a child of this resource")
        return name, inner[key]


    def xml_datastore(self, body: bytes) -> dict[str, Any]:
        """The datastore's new content from an XML body, `<data xmlns="urn:ietf:params:xml:
        ns:yang:ietf-restconf">...</data>` (RFC 8040 4.5/4.6.1), as JSON (top-level members
        module-qualified)."""
        try:
            el = etree.fromstring(body, parser=etree.XMLParser(resolve_entities=False,
                                                               no_network=True))
        except etree.XMLSyntaxError as exc:
            raise BodyProblem(f"body is not well-formed XML: {exc}") from None
        if el.tag != f"{{{RESTCONF_NS}}}data":
            raise BodyProblem(f'the body must be <data xmlns="{RESTCONF_NS}">', "invalid-value")
        inner = "".join(etree.tostring(child).decode() for child in el)
        if not inner:
            return {}
        return dict(self.xml_to_json(inner))


def _esc(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def json_value(body: bytes) -> tuple[str, Any]:
    """(member name without its module, value) of a JSON body: one member, qualified."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BodyProblem(f"body is not JSON: {exc}") from None
    if not isinstance(doc, dict) or len(doc) != 1:
        raise BodyProblem("the body must be a JSON object with exactly one member")
    (name, value), = doc.items()
    return str(name).rpartition(":")[2], value


# -- depth and fields -------------------------------------------------------------------------
def prune_depth(value: Any, node: SchemaNode | None, depth: int) -> Any:
    """Keep `depth` levels of data nodes (the target is level 1); list keys always stay."""
    if not isinstance(value, dict | list) or node is None:
        return value
    if isinstance(value, list):
        return [prune_depth(v, node, depth) for v in value]
    if depth <= 1:
        return {k: v for k, v in value.items() if k in node.keys}
    out = {}
    for k, v in value.items():
        child = node.children.get(k.rpartition(":")[2])
        out[k] = prune_depth(v, child, depth - 1) if child is not None else v
    return out


def prune_datastore_depth(doc: dict[str, Any], top: dict[str, SchemaNode], depth: int) -> Any:
    if depth <= 1:
        return {}
    return {k: prune_depth(v, top.get(k.rpartition(":")[2]), depth - 1) for k, v in doc.items()}


def parse_fields(text: str) -> dict[str, Any]:
    """RFC 8040 4.8.3: "a;b/c;d(e;f/g)" → {"a": {}, "b": {"c": {}}, "d": {"e": {}, ...}}."""
    if len(text) > MAX_FIELDS:
        raise BodyProblem("fields is too long", "invalid-value")
    pos = 0

    def expr() -> dict[str, Any]:
        nonlocal pos
        tree: dict[str, Any] = {}
        while True:
            node = tree
            while True:
                start = pos
                while pos < len(text) and text[pos] not in "/;()":
                    pos += 1
                name = text[start:pos].rpartition(":")[2]
                if not name:
                    raise BodyProblem(f"fields: a node name is missing at {start}",
                                      "invalid-value")
                node = node.setdefault(name, {})
                if pos < len(text) and text[pos] == "/":
                    pos += 1
                    continue
                break
            if pos < len(text) and text[pos] == "(":
                pos += 1
                for k, v in expr().items():
                    node.setdefault(k, {}).update(v)
                if pos >= len(text) or text[pos] != ")":
                    raise BodyProblem("fields: unbalanced parentheses", "invalid-value")
                pos += 1
            if pos < len(text) and text[pos] == ";":
                pos += 1
                continue
            return tree

    tree = expr()
    if pos != len(text):
        raise BodyProblem(f"fields: unexpected {text[pos]!r} at {pos}", "invalid-value")
    return tree


def select_fields(value: Any, node: SchemaNode | None, tree: dict[str, Any]) -> Any:
    if not tree or node is None:
        return value
    if isinstance(value, list):
        return [select_fields(v, node, tree) for v in value]
    if not isinstance(value, dict):
        return value
    out = {}
    for k, v in value.items():
        local = k.rpartition(":")[2]
        if local in node.keys:
            out[k] = v
        elif local in tree:
            out[k] = select_fields(v, node.children.get(local), tree[local])
    return out
