"""RPC dispatch: operation element → handler, with the read-only check in one place.

A handler is `async def handler(session, op_element) -> list[Element] | None`; None means
<ok/>. It raises RpcError / RpcErrors for rpc-error replies. Handlers live in the ops_*
modules, one per group of operations, and register here by (namespace, name).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from lxml import etree

from appliance.config import ConfigError
from northbound.netconf.errors import RpcError, RpcErrors, from_config_error
from northbound.netconf.xmlutil import child, elements, local, ns_of

if TYPE_CHECKING:
    from northbound.netconf.session import NetconfSession

Handler = Callable[["NetconfSession", etree._Element], Awaitable[list[etree._Element] | None]]


class Dispatcher:
    def __init__(self) -> None:
        self._handlers: dict[tuple[str, str], tuple[Handler, bool]] = {}

    def register(self, ns: str, name: str, handler: Handler, *, writes: bool = False) -> None:
        """`writes`: the operation changes a datastore or a lock; read-only users are refused."""
        self._handlers[(ns, name)] = (handler, writes)

    def names(self) -> set[tuple[str, str]]:
        return set(self._handlers)

    async def dispatch(self, session: NetconfSession, rpc: etree._Element) -> Any:
        ops = elements(rpc)
        if len(ops) != 1:
            raise RpcError("missing-element" if not ops else "bad-element",
                           "an <rpc> holds exactly one operation", type="rpc",
                           info={"bad-element": "rpc"})
        op = ops[0]
        entry = self._handlers.get((ns_of(op) or "", local(op)))
        if entry is None:
            raise RpcError("operation-not-supported", f"operation {local(op)} is not supported",
                           type="protocol", info={"bad-element": local(op)})
        handler, writes = entry
        session.server.nacm.check_rpc(session.user, op)
        if writes and session.read_only:
            raise RpcError("access-denied",
                           f"user {session.user} is read-only: {local(op)} is not permitted",
                           type="protocol")
        return await handler(session, op)


async def call(session: NetconfSession, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
    """Run a config-service call on the config worker; ConfigError becomes rpc-errors."""
    server = session.server

    def as_session() -> Any:
        # The config service calls commit subscribers in the committing thread: this tells
        # the notifier which NETCONF session made the change (the worker is single-threaded).
        server.committing = session
        try:
            return fn(*args, **kw)
        finally:
            server.committing = None

    try:
        return await server.call(as_session)
    except ConfigError as exc:
        raise RpcErrors(from_config_error(exc)) from None


def check_unlocked(session: NetconfSession, *datastores: str) -> None:
    """in-use when another session holds a lock on one of `datastores` (RFC 6241 7.5)."""
    for ds in datastores:
        owner = session.server.config_service.lock_owner(ds)
        if owner is not None and owner is not session.config:
            raise RpcError("in-use", f"{ds} is locked by session {owner.id}", type="protocol",
                           info={"session-id": str(owner.id)})


def text_of(op: etree._Element, name: str, default: str | None = None,
            ns: str | None = None) -> str | None:
    el = child(op, name, ns) if ns else child(op, name)
    if el is None:
        return default
    return (el.text or "").strip()


def datastore(op: etree._Element, which: str, allowed: tuple[str, ...],
              allow_config: bool = False) -> str | etree._Element:
    """The datastore named in <target>/<source>: a name, or the inline <config> element."""
    holder = child(op, which)
    if holder is None:
        raise RpcError("missing-element", f"<{which}> is required", type="protocol",
                       info={"bad-element": which})
    inner = elements(holder)
    if len(inner) != 1:
        raise RpcError("missing-element" if not inner else "bad-element",
                       f"<{which}> names exactly one datastore", type="protocol",
                       info={"bad-element": which})
    name = local(inner[0])
    if name == "config" and allow_config:
        return inner[0]
    if name == "url":
        raise RpcError("operation-not-supported", "the :url capability is not supported",
                       type="protocol", info={"bad-element": "url"})
    if name not in allowed:
        raise RpcError("invalid-value", f"{which} {name} is not allowed here (use one of "
                       f"{', '.join(allowed)})", type="protocol", info={"bad-element": name})
    return name
