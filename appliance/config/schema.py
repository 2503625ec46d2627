"""The YANG schema (appliance/yang/sluice.yang) as libyang sees it.

libyang does every check the model states; this module only loads the context once,
tells the edit engine which nodes are lists (and their keys) or leaf-lists, and turns
libyang's error text into `FieldError`s that name the data path.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import libyang
from _libyang import ffi
from libyang.log import configure_logging
from libyang.util import c2str, ly_array_iter

from appliance import resources
from appliance.config.errors import FieldError, ValidationError
from appliance.config.paths import MODULE, MODULES

YANG_DIR = resources.yang_dir()

_LOCATION = re.compile(r'(?:Data|Schema) location "([^"]+)"|Data path: (\S+)')

# libyang builds the data path of an error only when its logger is on; route it to a Python
# logger that does not propagate (the error is raised to the caller, not logged twice).
configure_logging(True, logging.ERROR)
logging.getLogger("libyang").propagate = False


@dataclass(frozen=True)
class ListInfo:
    keys: tuple[str, ...]
    ordered_by_user: bool


class Schema:
    """One libyang context for the sluice module; safe to share (calls are serialised)."""

    def __init__(self, yang_dir: Path = YANG_DIR) -> None:
        self.yang_dir = yang_dir
        self.ctx = libyang.Context(str(yang_dir))
        self.module = self.ctx.load_module(MODULE)
        # Implemented, not only imported: /nacm is configuration of its own module.
        self.modules = [self.module, *(self.ctx.load_module(m) for m in MODULES[1:])]
        self._lock = threading.Lock()
        self.lists: dict[str, ListInfo] = {}
        self.leaf_lists: set[str] = set()
        self.top_level: list[str] = []
        self.secret_leaves: set[str] = set()
        # JSON encodes these as numbers; path predicates carry them as text.
        self.integer_leaves: set[str] = set()
        for node in (n for m in self.modules for n in m.children()):
            if node.config_false():
                continue
            self.top_level.append(node.name())
            self._index(node, node.name())
        # A failed `must` is reported by libyang with its error-message only; RFC 7950 15.4
        # wants the statement's error-app-tag too: message → app-tag, from the compiled tree.
        self.must_app_tags: dict[str, str] = {}
        # libyang names some errors (a duplicate list entry) from the list's parent down,
        # without the top-level container: child name → its top-level node.
        self.top_of: dict[str, str] = {}
        for node in (n for m in self.modules for n in m.children()):
            self._collect_musts(node)
            if hasattr(node, "children"):
                for child in node.children():
                    self.top_of.setdefault(child.name(), node.name())
        # Services are edited apart from their section: do they hold secrets at all?
        self.service_secrets = any(
            p.startswith("load-balancer/service/") for p in self.secret_leaves
        )

    def _index(self, node: Any, path: str) -> None:
        if isinstance(node, libyang.SList):
            keys = tuple(k.name() for k in node.keys())  # noqa: SIM118 - SList.keys() is a method
            self.lists[path] = ListInfo(keys, bool(node.ordered()))
        elif isinstance(node, libyang.SLeafList):
            self.leaf_lists.add(path)
        elif isinstance(node, libyang.SLeaf):
            # /nacm is nacm:default-deny-all as a whole (libyang hands the extension down to
            # its leaves): NACM's own rules govern who reads it; no value in it is a secret.
            if _is_secret(node) and not path.startswith("nacm/"):
                self.secret_leaves.add(path)
            if node.type().base() in JSON_NUMBER_TYPES:
                self.integer_leaves.add(path)
        if hasattr(node, "children"):
            for child in node.children():
                if child.config_false():
                    continue
                if child.nodetype() in (libyang.SNode.CHOICE, libyang.SNode.CASE):
                    self._index(child, path)  # choice/case are not data nodes
                else:
                    self._index(child, f"{path}/{child.name()}")

    def _collect_musts(self, node: Any) -> None:
        kinds = {libyang.SNode.CONTAINER: "struct lysc_node_container *",
                 libyang.SNode.LIST: "struct lysc_node_list *",
                 libyang.SNode.LEAF: "struct lysc_node_leaf *",
                 libyang.SNode.LEAFLIST: "struct lysc_node_leaflist *"}
        ctype = kinds.get(node.nodetype())
        if ctype is not None:
            compiled = ffi.cast(ctype, node.cdata)
            for must in ly_array_iter(compiled.musts):
                if must.emsg and must.eapptag:
                    self.must_app_tags.setdefault(c2str(must.emsg).rstrip(":."),
                                                  c2str(must.eapptag))
        if hasattr(node, "children"):
            for child in node.children():
                self._collect_musts(child)

    def field_error(self, libyang_text: str) -> FieldError:
        """libyang's error text → FieldError: the full data path, the model's app-tag."""
        err = error_from_libyang(libyang_text)
        path = err.path
        first = path[1:].split("/", 1)[0].split("[", 1)[0]
        if path.startswith(f"/{MODULE}:") and first.split(":", 1)[1] not in self.top_level:
            top = self.top_of.get(first.split(":", 1)[1])
            if top is not None:
                path = f"/{MODULE}:{top}/" + path[len(f"/{MODULE}:"):]
        app_tag = self.must_app_tags.get(err.message)
        if app_tag is None and err.message.startswith("Must condition"):
            app_tag = "must-violation"  # RFC 7950 15.4, a `must` without its own app-tag
        if app_tag is not None:
            return FieldError(path, err.message, "operation-failed", app_tag)
        return FieldError(path, err.message, err.tag, err.app_tag)

    def with_defaults(self, doc: dict[str, Any]) -> dict[str, Any]:
        """`doc` with every default filled in, without validating it (a candidate may be
        invalid mid-edit); raises ValidationError only for a value of the wrong type."""
        text = json.dumps(doc)
        with self._lock:
            try:
                dnode = self.ctx.parse_data_mem(text, "json", strict=True, no_state=True,
                                                parse_only=True)
            except libyang.LibyangError as exc:
                raise ValidationError([self.field_error(str(exc))]) from None
            if dnode is None:
                return {}  # as validate() does for an empty document
            try:
                dnode.add_defaults(no_state=True)
                return json.loads(dnode.print_mem("json", with_siblings=True, pretty=False,
                                                  include_implicit_defaults=True))
            finally:
                dnode.free()

    def module_text(self) -> str:
        """The module source, for NETCONF get-schema and for shipping with the MIB."""
        return (self.yang_dir / f"{MODULE}.yang").read_text()

    def validate(self, doc: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """Validate a whole instance document (libyang JSON encoding).

        Returns (explicit, effective): the canonical document as the user set it, and the same
        with every default filled in. Raises ValidationError naming the path.
        """
        text = json.dumps(doc)
        with self._lock:
            try:
                dnode = self.ctx.parse_data_mem(text, "json", strict=True, no_state=True)
            except libyang.LibyangError as exc:
                raise ValidationError([self.field_error(str(exc))]) from None
            if dnode is None:
                return {}, {}
            try:
                explicit = json.loads(dnode.print_mem("json", with_siblings=True, pretty=False))
                effective = json.loads(
                    dnode.print_mem(
                        "json", with_siblings=True, pretty=False, include_implicit_defaults=True
                    )
                )
            finally:
                dnode.free()
        return explicit, effective


JSON_NUMBER_TYPES = {
    libyang.Type.INT8,
    libyang.Type.INT16,
    libyang.Type.INT32,
    libyang.Type.UINT8,
    libyang.Type.UINT16,
    libyang.Type.UINT32,
}


def _is_secret(node: Any) -> bool:
    return any(ext.name() in ("default-deny-all", "secret") for ext in node.extensions() or ())


def error_from_libyang(text: str) -> FieldError:
    """'failed to parse…: Value "x" is invalid…: Data path: /sluice:…' → FieldError."""
    path = ""
    match = _LOCATION.search(text)
    if match:
        path = match.group(1) or match.group(2)
        text = text[: match.start()]
    parts = [p.strip() for p in text.split(": ") if p.strip()]
    # libyang prefixes the call that failed ("failed to parse data tree"); keep the reason.
    parts = [p for p in parts if not p.lower().startswith("failed to")]
    message = shorten_values(": ".join(parts).rstrip(":.") or "invalid")
    tag = "missing-element" if "mandatory" in message.lower() else "invalid-value"
    if "unknown" in message.lower() or "not found" in message.lower():
        tag = "unknown-element"
    return FieldError(path, message, tag)


# A value quoted in an error longer than this is cut: a 200 kB value is not echoed back.
MAX_QUOTED = 64
_QUOTED = re.compile(rf'(["\'])((?:(?!\1).){{{MAX_QUOTED + 1},}})\1', re.DOTALL)


def shorten_values(message: str) -> str:
    """Cut long quoted values in an error message, saying how long they were (a value cut
    once is MAX_QUOTED long and is not cut again)."""
    return _QUOTED.sub(lambda m: f"{m[1]}{m[2][:MAX_QUOTED - 3]}...{m[1]} ({len(m[2])} characters)",
                       message)


_schema: Schema | None = None


def get_schema() -> Schema:
    """The process-wide schema (loading the context costs tens of milliseconds)."""
    global _schema
    if _schema is None:
        _schema = Schema()
    return _schema
