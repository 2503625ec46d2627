"""get and get-config: datastores as XML, with subtree (and XPath) filters."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lxml import etree

from appliance.config import DATASTORES
from northbound.netconf import monitoring, xpathrun
from northbound.netconf.errors import RpcError
from northbound.netconf.output import TAG, TRIM, json_to_xml, subtree_filter, xpath_filter
from northbound.netconf.rpc import Dispatcher, call, datastore, text_of
from northbound.netconf.xmlutil import BASE_NS, WITH_DEFAULTS_NS, child, qn

if TYPE_CHECKING:
    from northbound.netconf.session import NetconfSession

# RFC 6243, on every datastore: the value read (defaults filled in or not), and how the
# XML shows leaves whose value is the schema default.
WITH_DEFAULTS = {
    "explicit": (False, None),
    "report-all": (True, None),
    "report-all-tagged": (True, TAG),
    "trim": (False, TRIM),
}


def _with_defaults(op: etree._Element) -> tuple[bool, str | None]:
    mode = text_of(op, "with-defaults", None, WITH_DEFAULTS_NS) or "explicit"
    if mode not in WITH_DEFAULTS:
        raise RpcError("invalid-value", f"with-defaults {mode} is not supported "
                       f"(use one of {', '.join(WITH_DEFAULTS)})", type="protocol",
                       info={"bad-element": "with-defaults"})
    return WITH_DEFAULTS[mode]


def _filter(s: NetconfSession, flt: etree._Element | None, data: etree._Element) -> None:
    """Runs in a worker thread: a filter over 10,000 services must not hold the loop."""
    if flt is None:
        return
    kind = flt.get("type", "subtree")
    if kind == "subtree":
        subtree_filter(data, flt, s.server.keys_of)
    elif kind == "xpath":
        select = flt.get("select")
        if not select:
            raise RpcError("missing-attribute", "an xpath filter needs select", type="protocol",
                           info={"bad-attribute": "select", "bad-element": "filter"})
        budget = getattr(s.server, "xpath_budget", xpathrun.DEFAULT_BUDGET)
        xpath_filter(data, select, flt.nsmap, s.server.keys_of, budget)
    else:
        raise RpcError("bad-attribute", f"filter type {kind!r} is not supported",
                       type="protocol", info={"bad-attribute": "type", "bad-element": "filter"})


async def get_config(s: NetconfSession, op: etree._Element) -> list[etree._Element]:
    source = datastore(op, "source", DATASTORES)
    assert isinstance(source, str)
    reader = s.candidate if source == "candidate" else s.config
    effective, defaults = _with_defaults(op)
    doc = await call(s, reader.get, "/", source, effective=effective)
    idx = s.server.index
    flt = child(op, "filter")

    def build() -> etree._Element:
        data = etree.Element(qn(BASE_NS, "data"), nsmap={None: BASE_NS})
        json_to_xml(data, doc, idx.top, idx.top_ns, defaults=defaults)
        s.server.nacm.filter_read(s.user, data)
        _filter(s, flt, data)
        return data

    return [await s.server.offload(build)]


async def get(s: NetconfSession, op: etree._Element) -> list[etree._Element]:
    effective, defaults = _with_defaults(op)
    doc = await call(s, s.config.get, "/", "running", effective=effective)
    idx = s.server.index
    source = s.server.state_source
    # These read the server's session table: built here, on the loop that changes it.
    extra = [monitoring.netconf_state(s.server), *monitoring.yang_library(s.server)]
    flt = child(op, "filter")

    def build() -> etree._Element:
        # Operational state (counters, health) from the snapshot, never from the datapath:
        # config false nodes in the same JSON encoding, merged by list keys while writing.
        state = dict(source() or {}) if source is not None else {}
        state.update(s.server.nacm.state())
        data = etree.Element(qn(BASE_NS, "data"), nsmap={None: BASE_NS})
        json_to_xml(data, doc, idx.top, idx.top_ns, overlay=state, defaults=defaults)
        for el in extra:
            data.append(el)
        s.server.nacm.filter_read(s.user, data)
        _filter(s, flt, data)
        return data

    return [await s.server.offload(build)]


def register(d: Dispatcher) -> None:
    d.register(BASE_NS, "get", get)
    d.register(BASE_NS, "get-config", get_config)
