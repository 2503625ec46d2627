"""A config document split into *items*: one per service, one per top-level section.

The document itself is libyang JSON encoding ({"sluice:load-balancer": {"service": [...]},
"sluice:datapath": {...}}). Services are split out of load-balancer so that an edit,
a validation, a store write and a diff touch only the services that changed.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from appliance.config.paths import MODULE, module_of

LB = "load-balancer"
SERVICE_KIND = "service"
SECTION_KIND = "section"

Items = tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]  # (sections, services)


def build_doc(
    sections: dict[str, dict[str, Any]], services: Iterable[dict[str, Any]]
) -> dict[str, Any]:
    """Join sections and services into one document (items are shared, not copied)."""
    doc: dict[str, Any] = {
        f"{module_of(name)}:{name}": content for name, content in sections.items()
    }
    svcs = list(services)
    if svcs:
        lb = dict(doc.get(f"{MODULE}:{LB}", {}))
        lb["service"] = svcs
        doc[f"{MODULE}:{LB}"] = lb
    return doc


def split_doc(doc: dict[str, Any]) -> Items:
    """The inverse of build_doc: (sections by name, services by name)."""
    sections: dict[str, dict[str, Any]] = {}
    services: dict[str, dict[str, Any]] = {}
    for key, content in doc.items():
        name = key.split(":", 1)[1] if ":" in key else key
        if name == LB:
            content = dict(content)
            for svc in content.pop("service", []):
                services[str(svc.get("name"))] = svc
            if content:
                sections[name] = content
        elif content not in (None, {}):
            sections[name] = content
    return sections, services


def items_of(sections: dict[str, Any], services: dict[str, Any]) -> list[tuple[str, str, Any]]:
    """The (kind, key, doc) rows the store keeps."""
    rows = [(SECTION_KIND, name, content) for name, content in sections.items()]
    rows += [(SERVICE_KIND, name, svc) for name, svc in services.items()]
    return rows


def from_items(rows: Iterable[tuple[str, str, Any]]) -> Items:
    sections: dict[str, dict[str, Any]] = {}
    services: dict[str, dict[str, Any]] = {}
    for kind, key, content in rows:
        (services if kind == SERVICE_KIND else sections)[key] = content
    return sections, services
