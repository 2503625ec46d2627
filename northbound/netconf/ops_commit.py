"""commit (with :confirmed-commit:1.1), cancel-commit, discard-changes.

A confirmed commit records the commit id running had *before* it. If no confirming commit
arrives within confirm-timeout, or the session that made it ends (without persist), or
cancel-commit is sent, running is rolled back to that id through the config service's own
rollback (a new commit, so history shows both). Only one confirmed commit is pending at a
time (RFC 6241 section 8.4); a follow-up confirmed commit extends it and keeps the original
rollback point.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lxml import etree

from appliance.config import ConfigError, Session
from northbound.netconf.errors import RpcError
from northbound.netconf.rpc import Dispatcher, call, text_of
from northbound.netconf.xmlutil import BASE_NS, child

if TYPE_CHECKING:
    from northbound.netconf.server import NetconfServer
    from northbound.netconf.session import NetconfSession

log = logging.getLogger(__name__)

DEFAULT_CONFIRM_TIMEOUT = 600


@dataclass
class Pending:
    owner: int  # NETCONF session id that issued it
    rollback_to: int  # commit id of running before the first confirmed commit (0: empty)
    persist: str | None
    timer: asyncio.TimerHandle | None = None


class ConfirmedCommits:
    def __init__(self, server: NetconfServer) -> None:
        self.server = server
        self.pending: Pending | None = None

    def _arm(self, timeout: float) -> None:
        assert self.pending is not None
        if self.pending.timer is not None:
            self.pending.timer.cancel()
        loop = asyncio.get_running_loop()
        self.pending.timer = loop.call_later(
            timeout, lambda: self.server.spawn(self.roll_back("timeout"))
        )

    async def roll_back(self, reason: str, session: Session | None = None) -> None:
        """Undo the pending confirmed commit. `session`: whose locks to act under."""
        pending, self.pending = self.pending, None
        if pending is None:
            return
        if pending.timer is not None:
            pending.timer.cancel()
        if session is None:
            owner = self.server.sessions.get(pending.owner)
            session = owner.config if owner is not None and not owner.config.closed else None
        try:
            await self.server.call(_rollback, self.server, session, pending.rollback_to)
            log.warning("confirmed commit rolled back",
                        extra={"reason": reason, "to_commit": pending.rollback_to})
        except ConfigError as exc:
            log.error("confirmed commit rollback failed",
                      extra={"reason": reason, "error": str(exc)})
        self.server.notify_confirmed_commit(pending.owner, "cancel" if reason == "cancel"
                                            else "timeout")


def _rollback(server: NetconfServer, session: Session | None, commit_id: int) -> None:
    own = session is None
    if own:
        session = server.config_service.open_session("netconf", "netconf-confirmed-commit")
    assert session is not None
    try:
        session.discard()  # running is about to change under the candidate anyway
        if commit_id:
            session.rollback(commit_id, "confirmed commit not confirmed")
        else:
            # Nothing was committed before: the previous running was empty.
            session.edit([{"op": "replace", "path": "/", "value": {}}])
            session.commit("confirmed commit not confirmed")
    finally:
        if own:
            session.close()


def _int(text: str | None, name: str, default: int) -> int:
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise RpcError("invalid-value", f"{name} must be a positive integer", type="protocol",
                       info={"bad-element": name})
    return value


async def commit(s: NetconfSession, op: etree._Element) -> None:
    cc: ConfirmedCommits = s.server.confirmed
    confirmed = child(op, "confirmed") is not None
    timeout = _int(text_of(op, "confirm-timeout"), "confirm-timeout", DEFAULT_CONFIRM_TIMEOUT)
    persist = text_of(op, "persist")
    persist_id = text_of(op, "persist-id")
    pending = cc.pending
    if pending is not None:
        # Only the issuing session (or whoever knows the persist token) may confirm/extend.
        if pending.persist is not None:
            if persist_id != pending.persist:
                raise RpcError("invalid-value", "a persistent confirmed commit is pending; "
                               "give its persist-id", type="protocol",
                               info={"bad-element": "persist-id"})
        elif pending.owner != s.id:
            raise RpcError("in-use", f"a confirmed commit of session {pending.owner} is pending",
                           type="protocol", info={"session-id": str(pending.owner)})
    elif persist_id is not None:
        raise RpcError("invalid-value", "no confirmed commit with that persist-id is pending",
                       type="protocol", info={"bad-element": "persist-id"})
    before = await call(s, _commit, s.server, s,
                        "netconf commit" + (" (confirmed)" if confirmed else ""))
    if confirmed:
        if pending is None:
            cc.pending = Pending(s.id, before, persist)
            event = "start"
        else:
            pending.owner, pending.persist = s.id, persist
            event = "extend"
        cc._arm(timeout)
        s.server.notify_confirmed_commit(s.id, event, timeout)
    elif pending is not None:
        if pending.timer is not None:
            pending.timer.cancel()
        cc.pending = None
        s.server.notify_confirmed_commit(s.id, "complete")


def _commit(server: NetconfServer, s: NetconfSession, comment: str) -> int:
    """Commit on the config worker; returns the commit id running had before."""
    before = server.config_service.commit_id or 0
    s.config.commit(comment)
    return before


async def cancel_commit(s: NetconfSession, op: etree._Element) -> None:
    cc: ConfirmedCommits = s.server.confirmed
    pending = cc.pending
    persist_id = text_of(op, "persist-id")
    if pending is None:
        raise RpcError("invalid-value", "no confirmed commit is pending", type="protocol")
    if pending.persist is not None:
        if persist_id != pending.persist:
            raise RpcError("invalid-value", "persist-id does not match", type="protocol",
                           info={"bad-element": "persist-id"})
    elif pending.owner != s.id:
        raise RpcError("in-use", f"the confirmed commit belongs to session {pending.owner}",
                       type="protocol", info={"session-id": str(pending.owner)})
    await cc.roll_back("cancel", s.config)


async def discard_changes(s: NetconfSession, op: etree._Element) -> None:
    await call(s, s.config.discard)


def register(d: Dispatcher) -> None:
    d.register(BASE_NS, "commit", commit, writes=True)
    d.register(BASE_NS, "cancel-commit", cancel_commit, writes=True)
    d.register(BASE_NS, "discard-changes", discard_changes)
