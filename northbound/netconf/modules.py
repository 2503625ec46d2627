"""The YANG modules the NETCONF server advertises, in a libyang context of their own.

One context holds every module a client may see: the configuration module and what it
imports, sluice-events (the event bus's notifications), ietf-netconf-monitoring (RFC 6022,
netconf-state and get-schema), ietf-netconf-notifications (RFC 6470), ietf-netconf and
ietf-netconf-with-defaults, and libyang's ietf-yang-library (RFC 8525). From it come the
module capabilities of the hello, the schemas get-schema serves, the yang-library data
(with a content-id that changes when any module does) and the check, in the tests, that
every node the server sends is defined by an advertised module.

Apart from the config service's context: loading modules into a context other threads
parse with is not safe, and the config service needs none of these.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import libyang
from libyang.util import c2str

from appliance.config.schema import YANG_DIR

MAIN = "sluice"
# Loaded (implemented) on top of the configuration module.
SERVED = (
    "ietf-netconf-acm",
    "sluice-events",
    "ietf-netconf-monitoring",
    "ietf-netconf-notifications",
    "ietf-netconf-with-defaults",
)
# libyang's own modules that are no business of a NETCONF client.
_INTERNAL = {"yang", "ietf-yang-schema-mount", "ietf-yang-structure-ext", "ietf-yang-metadata"}
YANG_LIBRARY_REVISION = "2019-01-04"


@dataclass(frozen=True)
class SchemaFile:
    identifier: str
    version: str
    namespace: str
    text: str


class ServedModules:
    def __init__(self, yang_dir: Path = YANG_DIR) -> None:
        self.ctx = libyang.Context(str(yang_dir))
        for name in (MAIN, *SERVED):
            self.ctx.load_module(name)
        self.schemas = self._collect()
        # Event-bus event type → the leaves its `notification` statement defines.
        events = self.ctx.get_module("sluice-events")
        self.event_leaves = {
            n.name(): {leaf.name() for leaf in n.children()}
            for n in events.children(types=(libyang.SNode.NOTIF,))
        }
        digest = hashlib.sha256()
        for sf in sorted(self.schemas.values(), key=lambda s: s.identifier):
            digest.update(f"{sf.identifier}@{sf.version}\n".encode())
            digest.update(sf.text.encode())
        # RFC 8525: changes whenever the set of modules (or any of them) changes.
        self.content_id = digest.hexdigest()[:16]

    def _collect(self) -> dict[str, SchemaFile]:
        out: dict[str, SchemaFile] = {}
        for module in self.ctx:
            name = module.name()
            if name in _INTERNAL:
                continue
            revs = [r.date() for r in module.revisions()]
            if module.filepath():
                with open(module.filepath(), encoding="utf-8") as f:
                    text = f.read()
            else:
                text = module.print_mem("yang")  # libyang's built-in modules have no file
            out[name] = SchemaFile(name, revs[0] if revs else "", c2str(module.cdata.ns), text)
        return out

    def yang_library_xml(self) -> str:
        """ietf-yang-library data (yang-library and the deprecated modules-state), XML."""
        data = self.ctx.get_yanglib_data(self.content_id)
        try:
            return data.print_mem("xml", with_siblings=True, pretty=False)
        finally:
            data.free()

    def capability(self) -> str:
        """RFC 8526 section 2 / RFC 7950 section 5.6.4."""
        return ("urn:ietf:params:netconf:capability:yang-library:1.1"
                f"?revision={YANG_LIBRARY_REVISION}&content-id={self.content_id}")

    def validate_data(self, xml: str) -> None:
        """Every node of `xml` (children of a <data>, as a <get> returns them) is defined by
        a served module, with a value of its type; raises libyang.LibyangError if not."""
        node = self.ctx.parse_data_mem(xml, "xml", parse_only=True, strict=True)
        if node is not None:
            node.free()

    def validate_notification(self, xml: str) -> None:
        """A whole <notification> (RFC 5277): its content is a `notification` statement of
        a served module, every leaf of its type; raises libyang.LibyangError if not."""
        self.ctx.parse_op_mem("xml", xml, libyang.DataType.NOTIF_NETCONF)
