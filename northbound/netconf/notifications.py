"""RFC 5277 notifications: create-subscription on the NETCONF stream, and the events sent.

Events: ietf-netconf-notifications (RFC 6470) netconf-config-change on every commit (from
any front door), netconf-confirmed-commit, netconf-session-start/-end; and the event bus's
endpoint-state, service-state and alarm events, as the notifications of the sluice-events
module. Config changes and events come from the daemon's notification log
(appliance.notification_log), which RESTCONF's streams read too: `startTime` replays it
(then replayComplete), `stopTime` ends the subscription (notificationComplete). Session
and confirmed-commit notifications are sent live only (they are NETCONF's own, not logged).
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from lxml import etree

from appliance.notification_log import CONFIG_CHANGE, Notice, check_interval, parse_time
from northbound.netconf.errors import RpcError
from northbound.netconf.output import subtree_filter
from northbound.netconf.rpc import Dispatcher, text_of
from northbound.netconf.xmlutil import (
    BASE_NS,
    EVENTS_NS,
    NC_NOTIFICATIONS_NS,
    NOTIF_NS,
    child,
    qn,
    sub,
)

if TYPE_CHECKING:
    from northbound.netconf.session import NetconfSession

STREAM = "NETCONF"
# RFC 5277's own module (replayComplete, notificationComplete).
NC_NOTIFICATION_NS = "urn:ietf:params:xml:ns:netmod:notification"
SLUICE_PREFIX = "sl"
# A commit of 10,000 services is one notification, not a megabyte: list this many edits.
MAX_EDITS = 1000
_XML_NAME = re.compile(r"[^A-Za-z0-9_.-]")


@dataclass
class Subscription:
    filter: etree._Element | None
    stop: datetime | None = None  # stopTime: nothing later is sent; then it ends
    # While a replay is still to be sent (after the rpc-reply), live notifications wait
    # here, (notice or None, content), so they follow it.
    held: list[tuple[Notice | None, etree._Element]] | None = None
    replayed: int = 0  # the last replayed notice's seq: live ones up to it were sent


def now() -> str:
    return event_time(datetime.now(UTC))


def event_time(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def wrap(content: etree._Element, when: datetime | None = None) -> etree._Element:
    """<notification> around `content`, its eventTime `when` (default: now)."""
    notif = etree.Element(qn(NOTIF_NS, "notification"), nsmap={None: NOTIF_NS})
    sub(notif, NOTIF_NS, "eventTime", now() if when is None else event_time(when))
    notif.append(content)
    return notif


def passes(sub_: Subscription, content: etree._Element) -> etree._Element | None:
    """The content as this subscriber's filter leaves it; None when filtered out."""
    if sub_.filter is None:
        return content
    holder = etree.Element("holder")
    holder.append(copy.deepcopy(content))
    subtree_filter(holder, sub_.filter)
    return holder[0] if len(holder) else None


def _changed_by(parent: etree._Element, user: str | None, session_id: int,
                host: str | None) -> None:
    by = sub(parent, NC_NOTIFICATIONS_NS, "changed-by")
    if user is None:
        sub(by, NC_NOTIFICATIONS_NS, "server")
        return
    _session_params(by, user, session_id, host)


def _session_params(parent: etree._Element, user: str, session_id: int,
                    host: str | None) -> None:
    sub(parent, NC_NOTIFICATIONS_NS, "username", user)
    sub(parent, NC_NOTIFICATIONS_NS, "session-id", str(session_id))
    if host:
        sub(parent, NC_NOTIFICATIONS_NS, "source-host", host)


def config_change(edits: list[tuple[str, str, str]], namespace: str, user: str | None,
                  session_id: int, host: str | None) -> etree._Element:
    """`edits`: (kind, name, operation) as `appliance.notification_log.diff_edits` makes
    them from a commit's Diff."""
    root = etree.Element(qn(NC_NOTIFICATIONS_NS, "netconf-config-change"),
                         nsmap={None: NC_NOTIFICATIONS_NS, SLUICE_PREFIX: namespace})
    _changed_by(root, user, session_id, host)
    sub(root, NC_NOTIFICATIONS_NS, "datastore", "running")
    svc = f"/{SLUICE_PREFIX}:load-balancer/{SLUICE_PREFIX}:service"
    for kind, name, op in edits[:MAX_EDITS]:
        target = (f"{svc}[{SLUICE_PREFIX}:name={_lit(name)}]" if kind == "service"
                  else f"/{SLUICE_PREFIX}:{name}")
        edit = sub(root, NC_NOTIFICATIONS_NS, "edit")
        sub(edit, NC_NOTIFICATIONS_NS, "target", target)
        sub(edit, NC_NOTIFICATIONS_NS, "operation", op)
    return root


def _lit(value: str) -> str:
    return f"'{value}'" if "'" not in value else f'"{value}"'


def confirmed_commit(user: str, session_id: int, host: str | None, event: str,
                     timeout: int | None) -> etree._Element:
    root = etree.Element(qn(NC_NOTIFICATIONS_NS, "netconf-confirmed-commit"),
                         nsmap={None: NC_NOTIFICATIONS_NS})
    _session_params(root, user, session_id, host)
    sub(root, NC_NOTIFICATIONS_NS, "confirm-event", event)
    if timeout is not None and event in ("start", "extend"):
        sub(root, NC_NOTIFICATIONS_NS, "timeout", str(timeout))
    return root


def session_event(kind: str, user: str, session_id: int, host: str | None,
                  reason: str | None = None, killed_by: int | None = None) -> etree._Element:
    root = etree.Element(qn(NC_NOTIFICATIONS_NS, f"netconf-session-{kind}"),
                         nsmap={None: NC_NOTIFICATIONS_NS})
    _session_params(root, user, session_id, host)
    if kind == "end":
        if killed_by is not None:
            sub(root, NC_NOTIFICATIONS_NS, "killed-by", str(killed_by))
        sub(root, NC_NOTIFICATIONS_NS, "termination-reason", reason or "other")
    return root


def notice_content(notice: Notice, namespace: str, event_leaves: dict[str, set[str]],
                   by: tuple[str | None, int, str | None] | None = None
                   ) -> etree._Element | None:  # fmt: skip
    """A notification log notice as the content of a <notification>: netconf-config-change
    (by the notice's user, session-id 0 — RFC 6470's "not over NETCONF" — unless `by`
    gives (user, session-id, host)), or the sluice-events notification of a bus event (None
    for an event type sluice-events defines no notification for: not sent)."""
    if notice.kind == CONFIG_CHANGE:
        user, sid, host = by if by is not None else (notice.data.get("user"), 0, None)
        return config_change(notice.data["edits"], namespace, user, sid, host)
    fields = event_fields(notice, event_leaves)
    return None if fields is None else bus_event({"type": notice.data["type"], **fields})


def event_fields(notice: Notice, event_leaves: dict[str, set[str]]) -> dict[str, Any] | None:
    """A bus event's fields its sluice-events notification defines (None: it defines none
    for this event type, which is then not sent)."""
    leaves = event_leaves.get(str(notice.data.get("type")))
    if leaves is None:
        return None
    return {k: v for k, v in notice.data.items() if k in leaves and v is not None}


def control(name: str) -> etree._Element:
    """RFC 5277's replayComplete or notificationComplete."""
    return etree.Element(qn(NC_NOTIFICATION_NS, name), nsmap={None: NC_NOTIFICATION_NS})


def bus_event(event: dict[str, Any]) -> etree._Element:
    """An event-bus dict → <type-name xmlns=sluice-events>key/value children</type-name>."""
    name = _xml_name(str(event.get("type") or "event"))
    root = etree.Element(qn(EVENTS_NS, name), nsmap={None: EVENTS_NS})
    _fill(root, {k: v for k, v in event.items() if k != "type"})
    return root


def _fill(el: etree._Element, value: Any) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            items = v if isinstance(v, list) else [v]
            for item in items:
                _fill(sub(el, EVENTS_NS, _xml_name(str(k))), item)
    elif isinstance(value, bool):
        el.text = "true" if value else "false"
    elif value is not None:
        el.text = str(value)


def _xml_name(text: str) -> str:
    name = _XML_NAME.sub("-", text) or "event"
    return name if name[0].isalpha() or name[0] == "_" else f"e-{name}"


async def create_subscription(s: NetconfSession, op: etree._Element) -> None:
    stream = text_of(op, "stream", None, NOTIF_NS) or STREAM
    if stream != STREAM:
        raise RpcError("invalid-value", f"no stream {stream} (only {STREAM})", type="protocol",
                       info={"bad-element": "stream"})
    start = _time(op, "startTime")
    stop = _time(op, "stopTime")
    try:
        check_interval(start, stop)
    except ValueError as exc:
        bad = "startTime" if str(exc).startswith("start") else "stopTime"
        raise RpcError("bad-element", str(exc).replace("start-time", "startTime")
                       .replace("stop-time", "stopTime"), type="protocol",
                       info={"bad-element": bad}) from None
    if s.subscription is not None:
        raise RpcError("in-use", "this session already has a subscription", type="protocol")
    flt = child(op, "filter", NOTIF_NS)
    if flt is None:
        flt = child(op, "filter", BASE_NS)
    if flt is not None and flt.get("type", "subtree") != "subtree":
        raise RpcError("bad-attribute", "only subtree filters are supported here",
                       type="protocol", info={"bad-attribute": "type", "bad-element": "filter"})
    s.subscription = Subscription(copy.deepcopy(flt) if flt is not None else None, stop,
                                  held=[] if start is not None else None)
    if start is not None:  # sent after the rpc-reply (RFC 5277 2.1.1)
        s.after_reply.append(lambda: s.server.replay(s, start, stop))
    elif stop is not None:
        s.server.end_at(s, stop)


def _time(op: etree._Element, name: str) -> datetime | None:
    text = text_of(op, name, None, NOTIF_NS)
    if text is None:
        return None
    try:
        return parse_time(text)
    except ValueError as exc:
        raise RpcError("bad-element", f"{name}: {exc}", type="protocol",
                       info={"bad-element": name}) from None


def register(d: Dispatcher) -> None:
    d.register(NOTIF_NS, "create-subscription", create_subscription)
