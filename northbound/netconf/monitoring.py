"""ietf-netconf-monitoring (RFC 6022): netconf-state in <get>, and get-schema; yang-library.

The schemas offered are every module advertised (northbound/netconf/modules.py), so a
client can compile the model and the protocol modules.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from lxml import etree

from appliance.config import DATASTORES
from northbound.netconf.errors import RpcError
from northbound.netconf.rpc import Dispatcher, text_of
from northbound.netconf.xmlutil import MONITORING_NS, qn, sub

if TYPE_CHECKING:
    from northbound.netconf.server import NetconfServer
    from northbound.netconf.session import NetconfSession


def _time(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def netconf_state(server: NetconfServer) -> etree._Element:
    root = etree.Element(qn(MONITORING_NS, "netconf-state"), nsmap={None: MONITORING_NS})
    caps = sub(root, MONITORING_NS, "capabilities")
    for cap in server.capabilities():
        sub(caps, MONITORING_NS, "capability", cap)
    stores = sub(root, MONITORING_NS, "datastores")
    # RFC 6022: startup is listed when :startup is advertised (boot-from-startup).
    names = [d for d in DATASTORES if d != "startup"
             or server.config_service.boots_from_startup()]
    for name in names:
        ds = sub(stores, MONITORING_NS, "datastore")
        sub(ds, MONITORING_NS, "name", name)
        owner = server.config_service.lock_owner(name)
        if owner is not None:
            locks = sub(ds, MONITORING_NS, "locks")
            glock = sub(locks, MONITORING_NS, "global-lock")
            sub(glock, MONITORING_NS, "locked-by-session", str(owner.id))
            nc = server.sessions.get(owner.id)
            when = nc.locked_at.get(name) if nc else None
            sub(glock, MONITORING_NS, "locked-time", _time(when or datetime.now(UTC)))
    schemas = sub(root, MONITORING_NS, "schemas")
    for sf in server.schemas.values():
        el = sub(schemas, MONITORING_NS, "schema")
        sub(el, MONITORING_NS, "identifier", sf.identifier)
        sub(el, MONITORING_NS, "version", sf.version)
        sub(el, MONITORING_NS, "format", "yang")
        sub(el, MONITORING_NS, "namespace", sf.namespace)
        sub(el, MONITORING_NS, "location", "NETCONF")
    sessions = sub(root, MONITORING_NS, "sessions")
    for s in list(server.sessions.values()):
        el = sub(sessions, MONITORING_NS, "session")
        sub(el, MONITORING_NS, "session-id", str(s.id))
        sub(el, MONITORING_NS, "transport", "netconf-ssh")
        sub(el, MONITORING_NS, "username", s.user)
        sub(el, MONITORING_NS, "source-host", s.peer)
        sub(el, MONITORING_NS, "login-time", _time(s.login_time))
        for key in ("in-rpcs", "in-bad-rpcs", "out-rpc-errors", "out-notifications"):
            sub(el, MONITORING_NS, key, str(s.stats.get(key, 0)))
    return root


def yang_library(server: NetconfServer) -> list[etree._Element]:
    """libyang's own yang-library data for the context, without file locations (they name
    paths on the appliance, which a client has no use for)."""
    text = server.yang_library_xml()
    if not text:
        return []
    wrapper = etree.fromstring(f"<w>{text}</w>".encode())
    out = []
    for el in list(wrapper):
        # yang-library 'location' and modules-state 'schema' are file:// URLs here.
        doomed = list(el.iter("{*}location"))
        if etree.QName(el).localname == "modules-state":
            doomed += [m.find("{*}schema") for m in el.iter("{*}module")]
        for node in doomed:
            if node is not None:
                node.getparent().remove(node)
        out.append(el)
    return out


async def get_schema(s: NetconfSession, op: etree._Element) -> list[etree._Element]:
    ident = text_of(op, "identifier", None, MONITORING_NS)
    if not ident:
        raise RpcError("missing-element", "get-schema needs an identifier", type="protocol",
                       info={"bad-element": "identifier"})
    version = text_of(op, "version", None, MONITORING_NS)
    fmt = text_of(op, "format", None, MONITORING_NS)
    sf = s.server.schemas.get(ident)
    if sf is None or (version and version != sf.version):
        raise RpcError("invalid-value", f"no schema {ident}" + (f"@{version}" if version else ""),
                       type="protocol", info={"bad-element": "identifier"})
    if fmt and fmt.split(":")[-1] != "yang":
        raise RpcError("invalid-value", f"format {fmt} is not available (yang only)",
                       type="protocol", info={"bad-element": "format"})
    data = etree.Element(qn(MONITORING_NS, "data"), nsmap={None: MONITORING_NS})
    data.text = sf.text
    return [data]


def register(d: Dispatcher) -> None:
    d.register(MONITORING_NS, "get-schema", get_schema)
