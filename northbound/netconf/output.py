"""Config documents (libyang JSON encoding) → XML, and RFC 6241 subtree filtering.

Serialised by hand rather than through libyang: what the config service returns has secrets
masked, which libyang would (rightly) refuse as invalid values. Masked leaves are left out
of the XML altogether — nacm:default-deny-all means "not readable", and a mask sent to a
client is a value that fails the model's own pattern.
"""

from __future__ import annotations

import copy
from typing import Any

from lxml import etree

from appliance.config.secrets import MASK
from northbound.netconf import xpathns, xpathrun
from northbound.netconf.errors import RpcError
from northbound.netconf.schema_index import LIST, Node
from northbound.netconf.xmlutil import elements, local, ns_of

WD_NS = "urn:ietf:params:xml:ns:netconf:default:1.0"
# RFC 8040 4.8.9 (RFC 7952 metadata): a default leaf's JSON annotation.
WD_ANNOTATION = "ietf-netconf-with-defaults:default"
TRIM, TAG = "trim", "tag"


def is_default(node: Node | None, item: Any) -> bool:
    """RFC 6243: whether `item` (JSON encoding) is the value the schema gives `node` by
    default — the leaves report-all-tagged marks and trim leaves out."""
    return (node is not None and node.default is not None
            and not isinstance(item, dict | list) and _text(item) == node.default)


def element_xml(name: str, value: Any, node: Node | None, namespace: str,
                defaults: str | None = None) -> str:
    """One data node as XML text in `namespace` (each entry, for a list's entries): what a
    RESTCONF reply for one resource holds. `defaults` as in `json_to_xml`."""
    out: list[str] = []
    declare = f' xmlns="{namespace.translate(_ESCAPE)}"'
    if defaults == TAG:
        declare += f' xmlns:wd="{WD_NS}"'
    for item in value if isinstance(value, list) else [value]:
        first = len(out)
        _element(out, name, item, node, None, defaults)
        if len(out) > first:
            out[first] = out[first].replace(f"<{name}", f"<{name}{declare}", 1)
    return "".join(out)


def tag_defaults_json(members: dict[str, Any], children: dict[str, Node]) -> dict[str, Any]:
    """`members` (JSON encoding; `children` their schema nodes by local name) with every leaf
    at its schema default annotated `"@leaf": {"ietf-netconf-with-defaults:default": true}`
    (RFC 8040 4.8.9 report-all-tagged, the JSON twin of wd:default="true")."""
    out: dict[str, Any] = {}
    for key, sub in members.items():
        cnode = children.get(key.rpartition(":")[2])
        if cnode is not None and isinstance(sub, dict):
            sub = tag_defaults_json(sub, cnode.children)
        elif cnode is not None and isinstance(sub, list) and cnode.kind == LIST:
            sub = [tag_defaults_json(e, cnode.children) if isinstance(e, dict) else e
                   for e in sub]
        out[key] = sub
        if is_default(cnode, sub):
            out["@" + key] = {WD_ANNOTATION: True}
    return out


def json_to_xml(parent: etree._Element, doc: dict[str, Any], top: dict[str, Node],
                namespace: str | dict[str, str], overlay: dict[str, Any] | None = None,
                defaults: str | None = None) -> None:
    """Append the XML of a whole document (top-level keys 'module:name') to `parent`.

    `overlay` (e.g. operational state, same encoding) is merged in while writing, list
    entries matched by key: what `merge_json` does, without building the merged document.
    Written as text and parsed once, rather than one SubElement call per node.
    `namespace`: of every top-level node, or by top-level node name.
    `defaults` (RFC 6243): TRIM leaves out leaves whose value is the schema default, TAG
    marks them wd:default="true" (report-all-tagged).
    """
    overlay = overlay or {}
    wd = f' xmlns:wd="{WD_NS}"' if defaults == TAG else ""
    for key in [*doc, *(k for k in overlay if k not in doc)]:
        value, extra = doc.get(key), overlay.get(key)
        name = key.split(":", 1)[-1]
        if value is None and (extra is None or name not in top):
            continue
        ns = namespace if isinstance(namespace, str) else namespace.get(name, "")
        out = [f'<{name} xmlns="{ns.translate(_ESCAPE)}"{wd}>']
        if value is None:
            _emit(out, extra, top.get(name), None, defaults)
        else:
            _emit(out, value, top.get(name), extra, defaults)
        out.append(f"</{name}>")
        parent.append(etree.fromstring("".join(out).encode(), _OWN_TEXT))


# Our own output, not a peer's: the safe settings, and no size limit on a text node.
_OWN_TEXT = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False,
                            huge_tree=True)
_ESCAPE = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"})


def _emit(out: list[str], value: Any, node: Node | None, extra: Any,
          defaults: str | None = None) -> None:
    if not isinstance(value, dict):
        text = _text(value)
        if node is not None and node.xpath_xmlns:
            text = xpathns.json_to_xml(text)
        out.append(text.translate(_ESCAPE))
        return
    children = node.children if node is not None else {}
    names: Any = value
    if node is not None and node.kind == LIST:
        # RFC 7950 7.8.5: key leaves come first, in key order.
        names = [k for k in node.keys if k in value] + [n for n in value if n not in node.keys]
    if isinstance(extra, dict):
        names = [*names, *(n for n in extra if n not in value)]
    else:
        extra = None
    for name in names:
        cnode = children.get(name)
        if cnode is None and node is not None:
            continue  # state the model does not define is not sent: clients validate
        sub = value.get(name)
        more = extra.get(name) if extra is not None else None
        if sub is None:
            sub, more = more, None
        if isinstance(sub, list):
            matched, rest = _by_key(sub, more, cnode)
            for item, item_extra in zip(sub, matched, strict=True):
                _element(out, name, item, cnode, item_extra, defaults)
            for item in rest:
                _element(out, name, item, cnode, None, defaults)
        else:
            _element(out, name, sub, cnode, more, defaults)


def _element(out: list[str], name: str, item: Any, node: Node | None, extra: Any,
             defaults: str | None = None) -> None:
    if item is None or item == MASK:
        return
    if defaults and is_default(node, item):
        if defaults == TRIM:
            return
        out.append(f'<{name} wd:default="true">')
    elif node is not None and node.xpath_xmlns:
        out.append(f"<{name}{node.xpath_xmlns}>")
    else:
        out.append(f"<{name}>")
    _emit(out, item, node, extra, defaults)
    out.append(f"</{name}>")


def _by_key(items: list[Any], extra: Any, node: Node | None) -> tuple[list[Any], list[Any]]:
    """For each of `items`, its entry in the `extra` list (same keys), and the extra
    entries matching none: one pass over each list."""
    if not isinstance(extra, list) or node is None or node.kind != LIST:
        return [None] * len(items), []
    keys = node.keys
    index = {tuple(e.get(k) for k in keys): e for e in extra if isinstance(e, dict)}
    matched = []
    for item in items:
        key = tuple(item.get(k) for k in keys) if isinstance(item, dict) else None
        matched.append(index.pop(key, None) if key is not None else None)
    return matched, list(index.values())


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list) and value == [None]:
        return ""  # YANG empty type in JSON
    return str(value)


# -- subtree filter (RFC 6241 section 6) ------------------------------------------------------
def subtree_filter(data: etree._Element, flt: etree._Element, keys_of: Any = None) -> None:
    """Filter `data`'s children in place by the children of the <filter> element.

    `keys_of(element)` returns the key names of a list entry element (kept in the output so
    entries stay identifiable), or () when unknown.
    """
    _normalize(flt)
    selected = _filter_siblings(elements(data), elements(flt), keys_of)
    for ch in list(data):
        data.remove(ch)
    for ch in selected:
        data.append(ch)


def _matches(d: etree._Element, f: etree._Element) -> bool:
    fns = ns_of(f)
    return local(d) == local(f) and (fns is None or fns == ns_of(d))


def _is_content_match(f: etree._Element) -> bool:
    return not elements(f) and bool((f.text or "").strip())


def _filter_siblings(
    data: list[etree._Element], flt: list[etree._Element], keys_of: Any
) -> list[etree._Element]:
    if not flt:
        return []  # RFC 6241 6.4.2: an empty filter selects nothing
    by_name: dict[str, list[etree._Element]] = {}
    for f in flt:
        by_name.setdefault(local(f), []).append(f)
    out: list[etree._Element] = []
    for d in data:
        result: etree._Element | None = None
        for f in by_name.get(local(d), ()):
            if not _matches(d, f):
                continue
            r = _filter_node(d, f, keys_of)
            if r is not None:
                result = r if result is None else _union(result, r)
        if result is not None:
            out.append(result)
    return out


def _normalize(flt: etree._Element) -> None:
    """Merge duplicate siblings at every level of the filter, once, before any matching."""
    kids = elements(flt)
    merged = _merge_duplicates(kids)
    if len(merged) != len(kids) or any(a is not b for a, b in zip(merged, kids, strict=True)):
        for c in list(flt):
            flt.remove(c)
        flt.extend(merged)
    for c in merged:
        _normalize(c)


def _merge_duplicates(flt: list[etree._Element]) -> list[etree._Element]:
    """Sibling filter nodes naming the same node, merged (RFC 6241 6.2.5 allows repeats).

    A filter repeating `<service/>` 100,000 times would otherwise cost 100,000 matches per
    data node. A selection node takes the whole subtree, so it subsumes its namesakes;
    containment nodes without content matches are merged into one (the union of what they
    select); the rest (which restrict by content) are only deduplicated.
    """
    groups: dict[tuple[str | None, str], list[etree._Element]] = {}
    for f in flt:
        groups.setdefault((ns_of(f), local(f)), []).append(f)
    out: list[etree._Element] = []
    for group in groups.values():
        if len(group) == 1:
            out.extend(group)
            continue
        content = [f for f in group if _is_content_match(f)]
        selection = [f for f in group if not elements(f) and not _is_content_match(f)]
        plain, restricted = [], []
        for f in group:
            kids = elements(f)
            if kids:
                (restricted if any(_is_content_match(c) for c in kids) else plain).append(f)
        out.extend(_dedupe(content))
        if selection:
            out.append(selection[0])
            continue
        if plain:
            merged = etree.Element(plain[0].tag, nsmap=plain[0].nsmap)
            for f in plain:
                merged.extend(elements(f))
            out.append(merged)
        out.extend(_dedupe(restricted))
    return out


def _dedupe(nodes: list[etree._Element]) -> list[etree._Element]:
    seen: set[bytes] = set()
    out = []
    for f in nodes:
        key = etree.tostring(f)
        if key not in seen:
            seen.add(key)
            out.append(f)
    return out


def _filter_node(d: etree._Element, f: etree._Element, keys_of: Any) -> etree._Element | None:
    fchildren = elements(f)
    if not fchildren:
        if _is_content_match(f):
            return d if (d.text or "").strip() == (f.text or "").strip() else None
        return d  # selection node: the whole subtree
    content = [c for c in fchildren if _is_content_match(c)]
    others = [c for c in fchildren if not _is_content_match(c)]
    dchildren = elements(d)
    for c in content:
        if not any(_matches(x, c) and (x.text or "").strip() == c.text.strip() for x in dchildren):
            return None
    if not others:
        return d  # only content-match nodes: the whole matching entry
    keep_names = {local(c) for c in content}
    keep_names.update(keys_of(d) if keys_of else ())
    selected = _filter_siblings(dchildren, others, keys_of)
    if not selected and others:
        return None
    out = etree.Element(d.tag, nsmap=d.nsmap)
    chosen = {id(x) for x in selected}
    for x in dchildren:
        if local(x) in keep_names and id(x) not in chosen:
            out.append(_copy(x))
    for x in selected:
        out.append(_copy(x) if x.getparent() is not None else x)
    return out


def _copy(el: etree._Element) -> etree._Element:
    return copy.deepcopy(el)


def _union(a: etree._Element, b: etree._Element) -> etree._Element:
    """Two filter branches selected parts of one node: keep a's children, add b's new ones."""
    seen = {etree.tostring(x) for x in a}
    for x in list(b):
        if etree.tostring(x) not in seen:
            a.append(_copy(x))
    return a


# -- XPath filter (RFC 6241 section 8.9) ------------------------------------------------------
def xpath_filter(data: etree._Element, select: str, nsmap: dict[str | None, str],
                 keys_of: Any = None, budget: float = xpathrun.DEFAULT_BUDGET) -> None:
    """Keep the nodes `select` picks, with their ancestors (and list keys) and descendants.

    Each top-level node is evaluated as a document of its own, so an absolute path such as
    '/sl:load-balancer/sl:service[sl:name="web"]' starts at the module's top node, as NETCONF
    clients write it (in the reply tree the root element is <data>). The evaluation gets
    `budget` seconds (see xpathrun); past it the request fails and the daemon goes on.
    Blocking: call it from a worker thread.
    """
    namespaces = {k: v for k, v in nsmap.items() if k}
    try:
        xpath = etree.XPath(select, namespaces=namespaces)
    except etree.XPathSyntaxError as exc:
        raise RpcError("invalid-value", f"bad xpath {select!r}: {exc}", type="protocol",
                       info={"bad-attribute": "select", "bad-element": "filter"}) from None
    tops = list(data)
    for ch in tops:
        data.remove(ch)
    try:
        picked = xpathrun.select_nodes(tops, xpath, budget)
    except xpathrun.BudgetExceeded as exc:
        raise RpcError("operation-failed", f"the xpath filter exceeded its budget of "
                       f"{budget:g} s of evaluation ({exc}): select {select!r} is too costly "
                       "for this data; narrow it (fewer // steps inside predicates)",
                       info={"bad-attribute": "select", "bad-element": "filter"}) from None
    except xpathrun.Busy as exc:
        raise RpcError("resource-denied", f"{exc}: try the filter again later",
                       info={"bad-element": "filter"}) from None
    except xpathrun.EvalError as exc:
        raise RpcError("invalid-value", f"bad xpath {select!r}: {exc}", type="protocol",
                       info={"bad-attribute": "select", "bad-element": "filter"}) from None
    except xpathrun.NotNodes:
        raise RpcError("invalid-value", "the xpath must select nodes, not a value",
                       type="protocol", info={"bad-element": "filter"}) from None
    for nodes in picked:
        _rebuild(data, nodes, keys_of)


def _rebuild(data: etree._Element, nodes: list[etree._Element], keys_of: Any) -> None:
    """Copy each selected node under shallow copies of its ancestors: O(selected x depth).

    `nodes` are in document order, so a selected ancestor comes before its descendants,
    which are then already in its copy.
    """
    chosen = set(nodes)
    made: dict[etree._Element, etree._Element] = {}
    keys_copied: dict[etree._Element, set[etree._Element]] = {}
    for node in nodes:
        chain = list(node.iterancestors())
        if any(a in chosen for a in chain):
            continue
        parent_out = data
        for anc in reversed(chain):
            shallow = made.get(anc)
            if shallow is None:
                shallow = etree.SubElement(parent_out, anc.tag, nsmap=anc.nsmap)
                copied = keys_copied.setdefault(anc, set())
                for key in keys_of(anc) if keys_of else ():
                    for kid in anc:
                        if isinstance(kid.tag, str) and etree.QName(kid).localname == key:
                            shallow.append(copy.deepcopy(kid))
                            copied.add(kid)
                made[anc] = shallow
            parent_out = shallow
        parent = node.getparent()
        if parent is not None and node in keys_copied.get(parent, ()):
            continue  # a key copied with its entry and then selected itself: one copy
        parent_out.append(copy.deepcopy(node))


def merge_json(base: dict[str, Any], extra: dict[str, Any], top: dict[str, Node]) -> None:
    """Merge `extra` (e.g. operational state) into `base`, matching list entries by key."""
    for key, value in extra.items():
        name = key.split(":", 1)[-1]
        if key in base:
            _merge_value(base, key, value, top.get(name))
        else:
            base[key] = value


def _merge_value(parent: dict[str, Any], key: str, value: Any, node: Node | None) -> None:
    old = parent.get(key)
    if node is not None and node.kind == LIST and isinstance(old, list) and isinstance(value, list):
        # Index the existing entries by key once: O(len(old) + len(value)), not their product
        # (at 10,000 services the nested search took ~46 s).
        keys = node.keys
        index = {tuple(o.get(k) for k in keys): o for o in old if isinstance(o, dict)}
        for entry in value:
            match = index.get(tuple(entry.get(k) for k in keys))
            if match is None:
                old.append(entry)
                index[tuple(entry.get(k) for k in keys)] = entry
            else:
                for k, v in entry.items():
                    _merge_value(match, k, v, node.children.get(k))
    elif isinstance(old, dict) and isinstance(value, dict):
        for k, v in value.items():
            _merge_value(old, k, v, node.children.get(k) if node else None)
    else:
        parent[key] = value
