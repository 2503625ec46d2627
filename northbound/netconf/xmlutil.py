"""Namespaces and safe XML parsing for the NETCONF server."""

from __future__ import annotations

from lxml import etree

BASE_NS = "urn:ietf:params:xml:ns:netconf:base:1.0"
NOTIF_NS = "urn:ietf:params:xml:ns:netconf:notification:1.0"
MONITORING_NS = "urn:ietf:params:xml:ns:yang:ietf-netconf-monitoring"
NC_NOTIFICATIONS_NS = "urn:ietf:params:xml:ns:yang:ietf-netconf-notifications"
YANG_LIBRARY_NS = "urn:ietf:params:xml:ns:yang:ietf-yang-library"
WITH_DEFAULTS_NS = "urn:ietf:params:xml:ns:yang:ietf-netconf-with-defaults"
# Event-bus events have no YANG notification statement yet; they are sent in this namespace.
EVENTS_NS = "urn:sluice:yang:sluice-events"

# No entities, no DTD fetches, no network, bounded depth: a NETCONF peer is untrusted input.
_PARSER = etree.XMLParser(
    resolve_entities=False,
    no_network=True,
    load_dtd=False,
    huge_tree=False,
    remove_blank_text=False,
    remove_comments=True,
    remove_pis=True,
)


class MalformedXML(Exception):
    pass


def parse(data: bytes) -> etree._Element:
    """Parse one message; MalformedXML for anything that is not one well-formed element."""
    if b"<!DOCTYPE" in data or b"<!ENTITY" in data:
        # RFC 6241 messages never carry a DTD; refusing it closes the entity-expansion door.
        raise MalformedXML("DTDs and entity declarations are not allowed")
    try:
        root = etree.fromstring(data, _PARSER)
    except (etree.XMLSyntaxError, ValueError) as exc:
        raise MalformedXML(str(exc)) from None
    if root is None:
        raise MalformedXML("empty message")
    return root


def qn(ns: str, name: str) -> str:
    return f"{{{ns}}}{name}"


def local(el: etree._Element) -> str:
    return etree.QName(el).localname


def ns_of(el: etree._Element) -> str | None:
    return etree.QName(el).namespace


def sub(parent: etree._Element, ns: str, name: str, text: str | None = None) -> etree._Element:
    child = etree.SubElement(parent, qn(ns, name))
    if text is not None:
        child.text = text
    return child


def tostring(el: etree._Element) -> bytes:
    return etree.tostring(el, encoding="UTF-8", xml_declaration=True)


def child(el: etree._Element, name: str, ns: str = BASE_NS) -> etree._Element | None:
    """The first child called `name` in `ns` (or in no namespace: some clients omit it)."""
    for c in el:
        if isinstance(c.tag, str) and local(c) == name and ns_of(c) in (ns, None):
            return c
    return None


def elements(el: etree._Element) -> list[etree._Element]:
    """Element children only (comments and processing instructions are not data)."""
    return [c for c in el if isinstance(c.tag, str)]
