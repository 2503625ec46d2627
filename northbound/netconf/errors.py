"""rpc-error (RFC 6241 section 4.3 and appendix A) as data, and its XML."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from lxml import etree

from appliance.config import ConfigError, FieldError
from appliance.config.schema import shorten_values
from northbound.netconf.xmlutil import BASE_NS, qn, sub

# Appendix A: the error-types each tag may carry; the first is what this server sends.
_TYPE_OF_TAG = {
    "in-use": "protocol",
    "invalid-value": "application",
    "too-big": "rpc",
    "missing-attribute": "rpc",
    "bad-attribute": "rpc",
    "unknown-attribute": "rpc",
    "missing-element": "application",
    "bad-element": "application",
    "unknown-element": "application",
    "unknown-namespace": "application",
    "access-denied": "application",
    "lock-denied": "protocol",
    "resource-denied": "application",
    "rollback-failed": "application",
    "data-exists": "application",
    "data-missing": "application",
    "operation-not-supported": "protocol",
    "operation-failed": "application",
    "partial-operation": "application",
    "malformed-message": "rpc",
}

# error-path is an XPath in the reply's namespace context: the config service's data paths
# use the module name as prefix, bound here to the module namespace.
SLUICE_NS = "urn:sluice:yang:sluice"
NACM_NS = "urn:ietf:params:xml:ns:yang:ietf-netconf-acm"
# Module name in a data path → (prefix in error-path, namespace).
_PREFIXES = {"sluice": ("sluice", SLUICE_NS), "ietf-netconf-acm": ("nacm", NACM_NS)}
_STEP = re.compile(r"(?<=/)([A-Za-z_][\w.-]*)(?=[/\[]|$)")
_PRED = re.compile(r"\[([A-Za-z_][\w.-]*)=")


@dataclass
class RpcError(Exception):
    tag: str
    message: str = ""
    type: str = ""
    severity: str = "error"
    path: str = ""
    app_tag: str = ""
    info: dict[str, str] = field(default_factory=dict)
    session_ends: bool = False  # the session must close after this reply

    def __post_init__(self) -> None:
        if not self.type:
            self.type = _TYPE_OF_TAG.get(self.tag, "application")
        super().__init__(self.message or self.tag)

    def to_xml(self, parent: etree._Element) -> etree._Element:
        err = sub(parent, BASE_NS, "rpc-error")
        sub(err, BASE_NS, "error-type", self.type)
        sub(err, BASE_NS, "error-tag", self.tag)
        sub(err, BASE_NS, "error-severity", self.severity)
        if self.app_tag:
            sub(err, BASE_NS, "error-app-tag", self.app_tag)
        if self.path:
            path_el = etree.SubElement(err, qn(BASE_NS, "error-path"),
                                       nsmap=dict(_PREFIXES.values()))
            path_el.text = xpath_of(self.path) if self.path.startswith("/") else self.path
        if self.message:
            msg = sub(err, BASE_NS, "error-message", _short(self.message))
            msg.set("{http://www.w3.org/XML/1998/namespace}lang", "en")
        if self.info:
            info = sub(err, BASE_NS, "error-info")
            for name, value in self.info.items():
                sub(info, BASE_NS, name, value)
        return err


# An error message is for a person: past this it only echoes what the client sent.
MAX_MESSAGE = 1024


def _short(message: str) -> str:
    message = shorten_values(message)
    if len(message) <= MAX_MESSAGE:
        return message
    return f"{message[:MAX_MESSAGE]}... ({len(message)} characters)"


def xpath_of(path: str) -> str:
    """'/sluice:load-balancer/service[name='web']' → every step and key prefixed 'sluice:'
    (the prefix of the path's module: 'nacm:' for /ietf-netconf-acm:nacm)."""
    if not path.startswith("/"):
        return path
    module = path[1:].split(":", 1)[0] if ":" in path.split("/")[1] else "sluice"
    prefix = _PREFIXES.get(module, ("sluice", SLUICE_NS))[0]
    path = path.replace(f"/{module}:", "/", 1) if module in _PREFIXES else path
    out = _STEP.sub(lambda m: m.group(1) if ":" in m.group(1) else f"{prefix}:{m.group(1)}",
                    path)
    return _PRED.sub(lambda m: f"[{prefix}:{m.group(1)}=" if m.group(1) != "." else "[.=", out)


def from_field(err: FieldError, fallback_tag: str = "operation-failed") -> RpcError:
    tag = err.tag if err.tag in _TYPE_OF_TAG else fallback_tag
    info: dict[str, str] = {}
    path = err.path if err.path.startswith("/") else ""
    if tag in ("unknown-element", "missing-element", "bad-element") and path:
        info["bad-element"] = path.rstrip("/").rsplit("/", 1)[-1].split("[", 1)[0].split(":")[-1]
    if tag == "lock-denied":
        # RFC 6241: lock-denied carries the holder's session-id (0 when not NETCONF).
        m = re.search(r"session (\d+)", err.message)
        info["session-id"] = m.group(1) if m else "0"
    return RpcError(tag, err.message, path=xpath_of(path) if path else "", info=info,
                    app_tag=err.app_tag)


def from_config_error(exc: ConfigError) -> list[RpcError]:
    """One rpc-error per FieldError; the exception class decides the tag where a field has
    only the generic default."""
    out = []
    for err in exc.errors:
        tag = err.tag
        if tag == "invalid-value" and exc.tag not in ("invalid-value", "operation-failed"):
            tag = exc.tag
        out.append(from_field(FieldError(err.path, err.message or str(exc), tag, err.app_tag)))
    return out or [RpcError(exc.tag, str(exc))]


class RpcErrors(Exception):
    """Several rpc-errors in one reply (a validation with more than one problem)."""

    def __init__(self, errors: list[RpcError]) -> None:
        self.errors = errors
        super().__init__("; ".join(e.message for e in errors))
